-- DataExportCreate returns the export in progress for the user, creating
-- one when there is none, so asking twice never builds two archives.
-- name: DataExportCreate :one
INSERT INTO data_exports (user_id) VALUES (@user_id)
ON CONFLICT (user_id) WHERE status = 'pending' DO NOTHING
RETURNING *;

-- name: DataExportPending :one
SELECT * FROM data_exports WHERE user_id = @user_id AND status = 'pending';

-- name: DataExportGet :one
SELECT * FROM data_exports WHERE id = @id AND user_id = @user_id;

-- name: DataExportGetByID :one
SELECT * FROM data_exports WHERE id = @id;

-- name: DataExportReady :exec
UPDATE data_exports
SET status = 'ready', object_key = @object_key, completed_at = now(), expires_at = @expires_at
WHERE id = @id AND status = 'pending';

-- name: DataExportFail :exec
UPDATE data_exports
SET status = 'failed', failure_reason = @failure_reason, completed_at = now()
WHERE id = @id AND status = 'pending';

-- name: DataExportListByUser :many
SELECT * FROM data_exports WHERE user_id = @user_id ORDER BY created_at;

-- DataExportExpireDue marks archives past their expiry; the retention job
-- deletes their objects.
-- name: DataExportExpireDue :many
UPDATE data_exports SET status = 'expired'
WHERE status = 'ready' AND expires_at < now()
RETURNING *;
