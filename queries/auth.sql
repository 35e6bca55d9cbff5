-- UserCreateWithID inserts an account whose id the caller chose: the data
-- key is wrapped for the user id, so the id must exist before the row does.
-- name: UserCreateWithID :one
INSERT INTO users (id, email, password_hash, display_name, role, data_key)
VALUES (@id, @email, @password_hash, @display_name, @role, @data_key)
RETURNING *;

-- ProfileCreateDefault gives a new account its empty profile.
-- name: ProfileCreateDefault :exec
INSERT INTO profiles (user_id) VALUES (@user_id);

-- PrivacyCreateDefault gives a new account its privacy settings, all off
-- (privacy by default).
-- name: PrivacyCreateDefault :exec
INSERT INTO privacy_settings (user_id, appear_on_leaderboards, share_analytics, marketing_notifications)
VALUES (@user_id, false, false, false);
