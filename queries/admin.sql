-- Queries of account administration: `nxg admin create-user` and the dev
-- accounts of cmd/nxg-dev.

-- AdminUserCreate inserts an account whose id the caller chose (the data
-- key is wrapped for the id) unless the email is taken: then it returns no
-- row, and the caller decides whether that is an error.
-- name: AdminUserCreate :one
INSERT INTO users (id, email, password_hash, display_name, role, data_key)
VALUES (@id, @email, @password_hash, @display_name, @role, @data_key)
ON CONFLICT (email) DO NOTHING
RETURNING *;

-- AdminUserGetByEmailForUpdate finds an account by email, closed or not
-- (a closed account still holds its email until erased), and locks it for
-- the rest of the transaction.
-- name: AdminUserGetByEmailForUpdate :one
SELECT * FROM users WHERE email = @email FOR NO KEY UPDATE;

-- name: AdminUserSetRole :exec
UPDATE users SET role = @role, updated_at = now() WHERE id = @id AND role <> @role;

-- AdminProfileEnsure gives an account its empty profile unless it has one.
-- name: AdminProfileEnsure :exec
INSERT INTO profiles (user_id) VALUES (@user_id) ON CONFLICT (user_id) DO NOTHING;

-- AdminPrivacyEnsure gives an account its privacy settings, all off
-- (privacy by default), unless it has them.
-- name: AdminPrivacyEnsure :exec
INSERT INTO privacy_settings (user_id, appear_on_leaderboards, share_analytics, marketing_notifications)
VALUES (@user_id, false, false, false)
ON CONFLICT (user_id) DO NOTHING;

-- AdminBranchesExisting returns which of the given branch ids exist, and
-- keeps them from being deleted until the transaction ends.
-- name: AdminBranchesExisting :many
SELECT id FROM branches WHERE id = ANY(@ids::uuid[]) ORDER BY id FOR KEY SHARE;

-- AdminStaffBranchesClear removes every staff branch of an account, before
-- the new set is added with StaffBranchAdd.
-- name: AdminStaffBranchesClear :exec
DELETE FROM staff_branches WHERE user_id = @user_id;

-- AdminBranchIDByName finds a branch by its unique name (the demo seed
-- knows branches by name).
-- name: AdminBranchIDByName :one
SELECT id FROM branches WHERE name = @name;
