-- name: MealUploadInsert :one
INSERT INTO meal_photo_uploads (id, user_id, object_key, content_type, size_bytes, expires_at)
VALUES (@id, @user_id, @object_key, @content_type, @size_bytes, @expires_at)
RETURNING *;

-- name: MealUploadGet :one
SELECT * FROM meal_photo_uploads WHERE id = @id AND user_id = @user_id;

-- name: MealUploadsForUser :many
SELECT * FROM meal_photo_uploads WHERE user_id = @user_id ORDER BY created_at, id;

-- MealAnalysisInsert creates the upload's analysis, or does nothing when it
-- has one (AnalyzeMealPhoto then reads that one).
-- name: MealAnalysisInsert :one
INSERT INTO meal_analyses (user_id, upload_id)
VALUES (@user_id, @upload_id)
ON CONFLICT (upload_id) DO NOTHING
RETURNING *;

-- name: MealAnalysisByUpload :one
SELECT * FROM meal_analyses WHERE upload_id = @upload_id AND user_id = @user_id;

-- name: MealAnalysisGet :one
SELECT * FROM meal_analyses WHERE id = @id AND user_id = @user_id;

-- name: MealAnalysisGetForJob :one
SELECT a.*, u.object_key, u.content_type, u.size_bytes
FROM meal_analyses a
JOIN meal_photo_uploads u ON u.id = a.upload_id
WHERE a.id = @id;

-- MealAnalysisSetPending records why a pending analysis is still waiting;
-- a finished one is left alone.
-- name: MealAnalysisSetPending :exec
UPDATE meal_analyses SET failure_reason = @failure_reason, updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealAnalysisSetReady :exec
UPDATE meal_analyses
SET status = 'ready', failure_reason = '', items_enc = @items_enc, ready_at = now(), updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealAnalysisSetFailed :exec
UPDATE meal_analyses SET status = 'failed', failure_reason = @failure_reason, updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealAnalysesForUser :many
SELECT * FROM meal_analyses WHERE user_id = @user_id ORDER BY requested_at, id;

-- MealInsert records a meal, or does nothing when the member already has
-- one with this client_meal_id (LogMeal then returns that one).
-- name: MealInsert :one
INSERT INTO meals (user_id, client_meal_id, eaten_at, meal_type, items_enc, analysis_id)
VALUES (@user_id, @client_meal_id, @eaten_at, @meal_type, @items_enc, @analysis_id)
ON CONFLICT (user_id, client_meal_id) WHERE client_meal_id <> '' DO NOTHING
RETURNING *;

-- name: MealByClientID :one
SELECT * FROM meals WHERE user_id = @user_id AND client_meal_id = @client_meal_id;

-- name: MealGetForUpdate :one
SELECT * FROM meals WHERE id = @id AND user_id = @user_id FOR UPDATE;

-- name: MealUpdate :one
UPDATE meals
SET eaten_at = @eaten_at, meal_type = @meal_type, items_enc = @items_enc, updated_at = now()
WHERE id = @id AND user_id = @user_id
RETURNING *;

-- name: MealDelete :exec
DELETE FROM meals WHERE id = @id AND user_id = @user_id;

-- MealsList pages newest first by (eaten_at, id) within [since, until).
-- name: MealsList :many
SELECT * FROM meals
WHERE user_id = @user_id
  AND eaten_at >= @since
  AND eaten_at < @until
  AND (sqlc.narg('before_time')::timestamptz IS NULL
       OR (eaten_at, id) < (sqlc.narg('before_time')::timestamptz, sqlc.narg('before_id')::uuid))
ORDER BY eaten_at DESC, id DESC
LIMIT @row_limit;

-- MealsBetween lists a day's meals in the order eaten.
-- name: MealsBetween :many
SELECT * FROM meals
WHERE user_id = @user_id AND eaten_at >= @since AND eaten_at < @until
ORDER BY eaten_at, id;

-- name: MealsForUser :many
SELECT * FROM meals WHERE user_id = @user_id ORDER BY eaten_at, id;

-- name: MacroTargetsGet :one
SELECT * FROM macro_targets WHERE user_id = @user_id;

-- name: MacroTargetsUpsert :one
INSERT INTO macro_targets (user_id, kcal, protein_g, carbs_g, fat_g, from_profile)
VALUES (@user_id, @kcal, @protein_g, @carbs_g, @fat_g, @from_profile)
ON CONFLICT (user_id) DO UPDATE
SET kcal = EXCLUDED.kcal,
    protein_g = EXCLUDED.protein_g,
    carbs_g = EXCLUDED.carbs_g,
    fat_g = EXCLUDED.fat_g,
    from_profile = EXCLUDED.from_profile,
    updated_at = now()
RETURNING *;

-- NutritionLatestWeight is the member's most recent body metrics row that
-- has a weight.
-- name: NutritionLatestWeight :one
SELECT weight_kg_enc FROM body_metrics
WHERE user_id = @user_id AND weight_kg_enc IS NOT NULL
ORDER BY measured_at DESC, id DESC
LIMIT 1;

-- name: MealPlanRequestInsert :one
INSERT INTO meal_plan_requests (user_id, client_request_id, days, kcal_target, protein_g, carbs_g, fat_g,
                                diet, exclusions, cache_key, status, from_cache, plan, ready_at)
VALUES (@user_id, @client_request_id, @days, @kcal_target, @protein_g, @carbs_g, @fat_g,
        @diet, @exclusions, @cache_key, @status, @from_cache, @plan, @ready_at)
ON CONFLICT (user_id, client_request_id) WHERE client_request_id <> '' DO NOTHING
RETURNING *;

-- name: MealPlanRequestByClientID :one
SELECT * FROM meal_plan_requests WHERE user_id = @user_id AND client_request_id = @client_request_id;

-- name: MealPlanRequestGet :one
SELECT * FROM meal_plan_requests WHERE id = @id AND user_id = @user_id;

-- name: MealPlanRequestGetForJob :one
SELECT * FROM meal_plan_requests WHERE id = @id;

-- MealPlanRequestSetWaiting records why a request still waits, or serves
-- the member's earlier plan marked stale meanwhile (plan non-null).
-- name: MealPlanRequestSetWaiting :exec
UPDATE meal_plan_requests
SET failure_reason = @failure_reason,
    stale = @stale,
    plan = CASE WHEN @stale::boolean THEN @plan ELSE plan END,
    updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealPlanRequestSetReady :exec
UPDATE meal_plan_requests
SET status = 'ready', failure_reason = '', stale = false, plan = @plan, ready_at = now(), updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealPlanRequestSetFailed :exec
UPDATE meal_plan_requests SET status = 'failed', failure_reason = @failure_reason, updated_at = now()
WHERE id = @id AND status = 'pending';

-- name: MealPlanRequestsForUser :many
SELECT * FROM meal_plan_requests WHERE user_id = @user_id ORDER BY requested_at, id;
