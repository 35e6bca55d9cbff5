-- DeviceCreate registers a device (server/device.go). Only the SHA-256 of
-- its secret is stored.
-- name: DeviceCreate :one
INSERT INTO devices (branch_id, kind, machine_id, name, secret_hash, created_by)
VALUES (@branch_id, @kind, sqlc.narg('machine_id')::uuid, @name, @secret_hash, sqlc.narg('created_by')::uuid)
RETURNING *;

-- DeviceGet reads a device.
-- name: DeviceGet :one
SELECT * FROM devices WHERE id = @id;

-- DeviceGetForUpdate reads a device and holds it until the transaction
-- ends, so two revocations of the same device take turns.
-- name: DeviceGetForUpdate :one
SELECT * FROM devices WHERE id = @id FOR UPDATE;

-- DeviceRevoke revokes a device now; it finds nothing if it was revoked already.
-- name: DeviceRevoke :one
UPDATE devices SET revoked_at = now(), revoked_by = sqlc.narg('revoked_by')::uuid
WHERE id = @id AND revoked_at IS NULL
RETURNING *;

-- DeviceRecordLogin notes a device's sign-in. It finds nothing once the
-- device is revoked, and waits for a revocation in progress (which holds
-- the row), so a sign-in racing with RevokeDevice learns of it.
-- name: DeviceRecordLogin :one
UPDATE devices SET last_login_at = now() WHERE id = @id AND revoked_at IS NULL RETURNING *;

-- DeviceListByBranch pages through a branch's devices newest first, by
-- (created_at, id). The first page passes NULL cursors; later pages pass the
-- last row of the previous page.
-- name: DeviceListByBranch :many
SELECT * FROM devices d
WHERE d.branch_id = @branch_id
  AND (@include_revoked::boolean OR d.revoked_at IS NULL)
  AND (sqlc.narg('after_created_at')::timestamptz IS NULL
       OR (d.created_at, d.id) < (sqlc.narg('after_created_at')::timestamptz, sqlc.narg('after_id')::uuid))
ORDER BY d.created_at DESC, d.id DESC
LIMIT @row_limit;

-- DeviceMachineBranch returns the branch of a machine a console is
-- registered for.
-- name: DeviceMachineBranch :one
SELECT branch_id FROM machines WHERE id = @id;
