-- Queries of the ProfileService beyond the shared ones in profiles.sql.

-- ProfileOwnerGetForUpdate reads the signed-in user's account and locks it
-- for the rest of the transaction, so that concurrent read-merge-write
-- updates of one user's profile or privacy settings run one after the
-- other even before their rows exist (FOR UPDATE on a missing row locks
-- nothing). NO KEY UPDATE does not block inserts that merely reference the
-- user (body metrics, sessions' audit rows), only other writers of it.
-- name: ProfileOwnerGetForUpdate :one
SELECT * FROM users WHERE id = @id AND deleted_at IS NULL FOR NO KEY UPDATE;

-- ProfileGetForUpdate reads the current profile to merge an update into.
-- name: ProfileGetForUpdate :one
SELECT * FROM profiles WHERE user_id = @user_id FOR UPDATE;

-- PrivacyGetForUpdate reads the current settings to merge an update into.
-- name: PrivacyGetForUpdate :one
SELECT * FROM privacy_settings WHERE user_id = @user_id FOR UPDATE;

-- ProfileHomeBranchCheck finds a branch chosen as a home branch and keeps
-- it from being deleted until the transaction ends, so the check cannot go
-- stale before the profile row that references it is written.
-- name: ProfileHomeBranchCheck :one
SELECT id FROM branches WHERE id = @id FOR KEY SHARE;
