-- name: BranchGet :one
SELECT * FROM branches WHERE id = @id;

-- BranchList pages through branches ordered by (name, id). The first page
-- passes NULL cursors; later pages pass the last row of the previous page.
-- name: BranchList :many
SELECT * FROM branches
WHERE sqlc.narg('after_name')::text IS NULL
   OR (name, id) > (sqlc.narg('after_name')::text, sqlc.narg('after_id')::uuid)
ORDER BY name, id
LIMIT @row_limit;

-- name: BranchOpeningHoursList :many
SELECT * FROM branch_opening_hours
WHERE branch_id = ANY(@branch_ids::uuid[])
ORDER BY branch_id, weekday, opens_at;

-- BranchUpsert creates a branch or updates the one with the same name; the
-- demo seed and the staff dashboard both rely on names being unique.
-- name: BranchUpsert :one
INSERT INTO branches (name, address, timezone, capacity)
VALUES (@name, @address, @timezone, @capacity)
ON CONFLICT (name) DO UPDATE
SET address = EXCLUDED.address,
    timezone = EXCLUDED.timezone,
    capacity = EXCLUDED.capacity,
    updated_at = CASE
        WHEN (branches.address, branches.timezone, branches.capacity)
             IS DISTINCT FROM (EXCLUDED.address, EXCLUDED.timezone, EXCLUDED.capacity)
        THEN now() ELSE branches.updated_at END
RETURNING *;

-- name: BranchOpeningHoursDelete :exec
DELETE FROM branch_opening_hours WHERE branch_id = @branch_id;

-- name: BranchOpeningHoursInsert :exec
INSERT INTO branch_opening_hours (branch_id, weekday, opens_at, closes_at)
VALUES (@branch_id, @weekday, @opens_at, @closes_at);
