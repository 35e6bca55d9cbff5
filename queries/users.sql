-- name: UserCreate :one
INSERT INTO users (email, password_hash, display_name, role, data_key)
VALUES (@email, @password_hash, @display_name, @role, @data_key)
RETURNING *;

-- name: UserGet :one
SELECT * FROM users WHERE id = @id AND deleted_at IS NULL;

-- UserGetForErasure also finds closed accounts, which the erasure job needs.
-- name: UserGetForErasure :one
SELECT * FROM users WHERE id = @id;

-- name: UserGetByEmail :one
SELECT * FROM users WHERE email = @email AND deleted_at IS NULL;

-- name: UserSetPassword :exec
UPDATE users SET password_hash = @password_hash, password_changed_at = now(), updated_at = now()
WHERE id = @id;

-- UserRehashPassword upgrades a hash made with weaker parameters, only if it
-- did not change meanwhile.
-- name: UserRehashPassword :exec
UPDATE users SET password_hash = @new_hash WHERE id = @id AND password_hash = @old_hash;

-- name: UserSetDisplayName :exec
UPDATE users SET display_name = @display_name, updated_at = now() WHERE id = @id;

-- name: UserMarkDeleted :execrows
UPDATE users SET deleted_at = now(), updated_at = now() WHERE id = @id AND deleted_at IS NULL;

-- name: UserDelete :execrows
DELETE FROM users WHERE id = @id;

-- name: UserUpsertByEmail :one
INSERT INTO users (email, password_hash, display_name, role, data_key)
VALUES (@email, @password_hash, @display_name, @role, @data_key)
ON CONFLICT (email) DO UPDATE SET role = EXCLUDED.role, updated_at = now()
RETURNING *;

-- name: StaffBranchAdd :exec
INSERT INTO staff_branches (user_id, branch_id) VALUES (@user_id, @branch_id)
ON CONFLICT DO NOTHING;

-- name: StaffBranchList :many
SELECT branch_id FROM staff_branches WHERE user_id = @user_id ORDER BY branch_id;
