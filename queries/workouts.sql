-- WorkoutService (server/workout.go), the plan job (jobs/workout_plan.go)
-- and the machine sets that land in workouts (internal/floor).

-- ExercisesList pages the catalogue by (name, id), optionally filtered.
-- name: ExercisesList :many
SELECT * FROM exercises
WHERE (sqlc.narg('muscle_group')::text IS NULL OR sqlc.narg('muscle_group')::text = ANY(muscle_groups))
  AND (sqlc.narg('equipment')::text IS NULL OR equipment = sqlc.narg('equipment')::text)
  AND (sqlc.narg('after_name')::text IS NULL
       OR (name, id) > (sqlc.narg('after_name')::text, sqlc.narg('after_id')::text))
ORDER BY name, id
LIMIT @row_limit;

-- name: ExercisesAll :many
SELECT * FROM exercises ORDER BY id;

-- name: ExerciseGet :one
SELECT * FROM exercises WHERE id = @id;

-- ExercisesForMachineType lists the exercises a machine type performs, by id.
-- name: ExercisesForMachineType :many
SELECT * FROM exercises WHERE @machine_type::text = ANY(machine_types) ORDER BY id;

-- name: WorkoutPlanByClientRequest :one
SELECT * FROM workout_plans WHERE user_id = @user_id AND client_request_id = @client_request_id;

-- name: WorkoutPlanInsert :one
INSERT INTO workout_plans (user_id, client_request_id, goal, days_per_week, session_minutes, equipment,
                           notes, status, from_cache, name, days, cache_key, ready_at)
VALUES (@user_id, sqlc.narg('client_request_id'), @goal, @days_per_week, @session_minutes, @equipment,
        @notes, @status, @from_cache, @name, sqlc.narg('days'), @cache_key, sqlc.narg('ready_at'))
ON CONFLICT (user_id, client_request_id) DO NOTHING
RETURNING *;

-- name: WorkoutPlanGet :one
SELECT * FROM workout_plans WHERE id = @id;

-- name: WorkoutPlanGetForUpdate :one
SELECT * FROM workout_plans WHERE id = @id FOR UPDATE;

-- WorkoutPlanList pages a member's plans newest first by (requested_at, id).
-- name: WorkoutPlanList :many
SELECT * FROM workout_plans
WHERE user_id = @user_id
  AND (sqlc.narg('before_time')::timestamptz IS NULL
       OR (requested_at, id) < (sqlc.narg('before_time')::timestamptz, sqlc.narg('before_id')::uuid))
ORDER BY requested_at DESC, id DESC
LIMIT @row_limit;

-- name: WorkoutPlansAll :many
SELECT * FROM workout_plans WHERE user_id = @user_id ORDER BY requested_at, id;

-- WorkoutPlanSetReady stores the planner's (or the cache's) plan.
-- name: WorkoutPlanSetReady :one
UPDATE workout_plans
SET status = 'ready', stale = false, failure_reason = '', name = @name, days = @days,
    from_cache = @from_cache, ready_at = now()
WHERE id = @id
RETURNING *;

-- WorkoutPlanSetStale shows an earlier plan while the planner is down.
-- name: WorkoutPlanSetStale :exec
UPDATE workout_plans
SET status = 'ready', stale = true, failure_reason = @failure_reason, name = @name, days = @days
WHERE id = @id AND (status = 'pending' OR stale);

-- WorkoutPlanSetPendingReason says why a plan is still pending.
-- name: WorkoutPlanSetPendingReason :exec
UPDATE workout_plans SET failure_reason = @failure_reason
WHERE id = @id AND status = 'pending';

-- WorkoutPlanFail gives up on a plan the planner did not (validly) answer.
-- A stale plan keeps the earlier days it shows.
-- name: WorkoutPlanFail :exec
UPDATE workout_plans SET status = 'failed', failure_reason = @failure_reason
WHERE id = @id AND (status = 'pending' OR stale);

-- name: WorkoutPlanClearActive :exec
UPDATE workout_plans SET active = false WHERE user_id = @user_id AND active;

-- name: WorkoutPlanSetActive :one
UPDATE workout_plans SET active = true WHERE id = @id RETURNING *;

-- name: WorkoutPlanActive :one
SELECT * FROM workout_plans WHERE user_id = @user_id AND active;

-- WorkoutOpen finds a member's open workout.
-- name: WorkoutOpen :one
SELECT * FROM workouts WHERE user_id = @user_id AND completed_at IS NULL;

-- WorkoutInsert opens a workout; it returns nothing when one is open already.
-- name: WorkoutInsert :one
INSERT INTO workouts (user_id, plan_id, day_index)
VALUES (@user_id, sqlc.narg('plan_id'), @day_index)
ON CONFLICT (user_id) WHERE completed_at IS NULL DO NOTHING
RETURNING *;

-- name: WorkoutGet :one
SELECT * FROM workouts WHERE id = @id;

-- WorkoutGetForShare reads a workout and keeps it from being completed
-- until the transaction ends, so a set is never logged into a completed one.
-- name: WorkoutGetForShare :one
SELECT * FROM workouts WHERE id = @id FOR SHARE;

-- name: WorkoutComplete :one
UPDATE workouts SET completed_at = now()
WHERE id = @id AND completed_at IS NULL
RETURNING *;

-- WorkoutStats counts a workout's sets and sums their volume.
-- name: WorkoutStats :one
SELECT count(*)::integer AS set_count, coalesce(sum(reps * weight_kg), 0)::float8 AS volume_kg
FROM workout_sets WHERE workout_id = @workout_id;

-- WorkoutList pages a member's workouts started in [since, until) newest
-- first by (started_at, id), with their set counts and volumes.
-- name: WorkoutList :many
SELECT sqlc.embed(w),
       (SELECT count(*) FROM workout_sets s WHERE s.workout_id = w.id)::integer AS set_count,
       (SELECT coalesce(sum(s.reps * s.weight_kg), 0) FROM workout_sets s WHERE s.workout_id = w.id)::float8 AS volume_kg
FROM workouts w
WHERE w.user_id = @user_id
  AND w.started_at >= @since
  AND w.started_at < @until
  AND (sqlc.narg('before_time')::timestamptz IS NULL
       OR (w.started_at, w.id) < (sqlc.narg('before_time')::timestamptz, sqlc.narg('before_id')::uuid))
ORDER BY w.started_at DESC, w.id DESC
LIMIT @row_limit;

-- name: WorkoutsAll :many
SELECT * FROM workouts WHERE user_id = @user_id ORDER BY started_at, id;

-- WorkoutSetInsert logs a set; it returns nothing when the workout already
-- has a set with the client_set_id.
-- name: WorkoutSetInsert :one
INSERT INTO workout_sets (workout_id, user_id, exercise_id, reps, weight_kg, duration_seconds,
                          distance_m, rpe, client_set_id, source)
VALUES (@workout_id, @user_id, @exercise_id, @reps, @weight_kg, @duration_seconds,
        @distance_m, @rpe, @client_set_id, 'app')
ON CONFLICT (workout_id, client_set_id) DO NOTHING
RETURNING *;

-- name: WorkoutSetByClientID :one
SELECT * FROM workout_sets WHERE workout_id = @workout_id AND client_set_id = @client_set_id;

-- name: WorkoutSetGet :one
SELECT * FROM workout_sets WHERE id = @id;

-- name: WorkoutSetsOfWorkout :many
SELECT * FROM workout_sets WHERE workout_id = @workout_id ORDER BY logged_at, id;

-- name: WorkoutSetsAll :many
SELECT * FROM workout_sets WHERE user_id = @user_id ORDER BY logged_at, id;

-- WorkoutHistory summarises a member's sets since a time, per exercise and
-- UTC day, newest first: the recent history the planner is sent.
-- name: WorkoutHistory :many
SELECT exercise_id,
       to_char((logged_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day,
       count(*)::integer AS sets,
       max(reps)::integer AS best_reps,
       max(weight_kg)::float8 AS best_weight_kg
FROM workout_sets
WHERE user_id = @user_id AND logged_at >= @since
GROUP BY exercise_id, day
ORDER BY day DESC, exercise_id
LIMIT @row_limit;

-- WorkoutLatestWeight is the encrypted weight of a member's latest body
-- measurement that has one.
-- name: WorkoutLatestWeight :one
SELECT weight_kg_enc FROM body_metrics
WHERE user_id = @user_id AND weight_kg_enc IS NOT NULL
ORDER BY measured_at DESC, id DESC
LIMIT 1;

-- WorkoutOpenForMachineSets opens a workout for each member of the machine
-- sets who has none open; members with one open keep it.
-- name: WorkoutOpenForMachineSets :exec
INSERT INTO workouts (user_id)
SELECT DISTINCT ms.user_id FROM machine_sets ms WHERE ms.id = ANY(@machine_set_ids::uuid[])
ORDER BY ms.user_id
ON CONFLICT (user_id) WHERE completed_at IS NULL DO NOTHING;

-- WorkoutLandMachineSets copies machine sets into their members' open
-- workouts, each on the first exercise (by id) its machine's type performs.
-- A set whose machine type performs no exercise of the catalogue is left out.
-- The workouts are share-locked, as LogSet does: a workout being completed
-- at the same moment is re-checked once that commits, and a set never lands
-- in a completed workout (it stays in the member's machine sets).
-- name: WorkoutLandMachineSets :many
INSERT INTO workout_sets (workout_id, user_id, exercise_id, reps, weight_kg, duration_seconds,
                          distance_m, calories, client_set_id, source, machine_id, machine_set_id)
SELECT w.id, ms.user_id, ex.id, ms.reps, ms.weight_kg, ms.duration_seconds,
       ms.distance_m, ms.calories, 'machine/' || ms.id::text, 'machine', ms.machine_id, ms.id
FROM machine_sets ms
JOIN machines m ON m.id = ms.machine_id
JOIN workouts w ON w.user_id = ms.user_id AND w.completed_at IS NULL
CROSS JOIN LATERAL (
    SELECT e.id FROM exercises e WHERE m.machine_type = ANY(e.machine_types) ORDER BY e.id LIMIT 1
) ex
WHERE ms.id = ANY(@machine_set_ids::uuid[])
ORDER BY ms.recorded_at, ms.id
FOR SHARE OF w
ON CONFLICT DO NOTHING
RETURNING *;

-- WorkoutMachineMember is the member linked to a machine now, if any.
-- name: WorkoutMachineMember :one
SELECT l.user_id, m.machine_type FROM machines m
JOIN machine_links l ON l.id = m.current_link_id AND l.ended_at IS NULL
WHERE m.id = @machine_id;
