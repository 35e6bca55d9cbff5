-- name: ProfileGet :one
SELECT * FROM profiles WHERE user_id = @user_id;

-- ProfileUpsert writes the whole row; the handler merges the update mask
-- into the current values first, inside the same transaction.
-- name: ProfileUpsert :one
INSERT INTO profiles (user_id, date_of_birth_enc, sex_enc, height_cm_enc, phone_enc,
                      fitness_goal, activity_level, unit_system, timezone, home_branch_id)
VALUES (@user_id, @date_of_birth_enc, @sex_enc, @height_cm_enc, @phone_enc,
        @fitness_goal, @activity_level, @unit_system, @timezone, @home_branch_id)
ON CONFLICT (user_id) DO UPDATE
SET date_of_birth_enc = EXCLUDED.date_of_birth_enc,
    sex_enc = EXCLUDED.sex_enc,
    height_cm_enc = EXCLUDED.height_cm_enc,
    phone_enc = EXCLUDED.phone_enc,
    fitness_goal = EXCLUDED.fitness_goal,
    activity_level = EXCLUDED.activity_level,
    unit_system = EXCLUDED.unit_system,
    timezone = EXCLUDED.timezone,
    home_branch_id = EXCLUDED.home_branch_id,
    updated_at = now()
RETURNING *;

-- name: BodyMetricsInsert :one
INSERT INTO body_metrics (user_id, measured_at, weight_kg_enc, body_fat_percent_enc,
                          muscle_mass_kg_enc, resting_heart_rate_bpm_enc)
VALUES (@user_id, @measured_at, @weight_kg_enc, @body_fat_percent_enc,
        @muscle_mass_kg_enc, @resting_heart_rate_bpm_enc)
RETURNING *;

-- BodyMetricsList pages newest first by (measured_at, id) within [since, until).
-- name: BodyMetricsList :many
SELECT * FROM body_metrics
WHERE user_id = @user_id
  AND measured_at >= @since
  AND measured_at < @until
  AND (sqlc.narg('before_time')::timestamptz IS NULL
       OR (measured_at, id) < (sqlc.narg('before_time')::timestamptz, sqlc.narg('before_id')::uuid))
ORDER BY measured_at DESC, id DESC
LIMIT @row_limit;

-- name: BodyMetricsAll :many
SELECT * FROM body_metrics WHERE user_id = @user_id ORDER BY measured_at, id;

-- name: PrivacyGet :one
SELECT * FROM privacy_settings WHERE user_id = @user_id;

-- name: PrivacyUpsert :one
INSERT INTO privacy_settings (user_id, appear_on_leaderboards, share_analytics, marketing_notifications)
VALUES (@user_id, @appear_on_leaderboards, @share_analytics, @marketing_notifications)
ON CONFLICT (user_id) DO UPDATE
SET appear_on_leaderboards = EXCLUDED.appear_on_leaderboards,
    share_analytics = EXCLUDED.share_analytics,
    marketing_notifications = EXCLUDED.marketing_notifications,
    updated_at = now()
RETURNING *;
