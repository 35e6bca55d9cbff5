-- UserDataKeyBatch locks the next batch of users' wrapped data keys for
-- re-wrapping under the primary master key. SKIP LOCKED lets the job pass
-- over accounts that a request is changing right now; the next run gets them.
-- name: UserDataKeyBatch :many
SELECT id, data_key FROM users
WHERE id > @after_id
ORDER BY id
LIMIT @row_limit
FOR UPDATE SKIP LOCKED;

-- name: UserDataKeySet :exec
UPDATE users SET data_key = @data_key WHERE id = @id;
