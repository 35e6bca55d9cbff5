package jobs_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/internal/testkit/mongotest"
	"github.com/nxg-fitness/nxg/jobs"
)

// soonRetries retries a failed job after 10ms: River makes a job due
// within its scheduler interval available at once.
type soonRetries struct{}

func (soonRetries) NextRetry(*rivertype.JobRow) time.Time {
	return time.Now().Add(10 * time.Millisecond)
}

// planFixture is a member in a fresh database, the plan cache in FerretDB
// over it, the planner simulator and a River client working the ai queue.
type planFixture struct {
	tdb     *testkit.Database
	user    uuid.UUID
	planner *devstack.WorkoutPlanner
	cache   *aicache.Cache
	river   *river.Client[pgx.Tx]
}

func setupPlanJob(t *testing.T) *planFixture {
	t.Helper()
	ctx := context.Background()
	f := &planFixture{tdb: testkit.NewDatabase(t), user: uuid.Must(uuid.NewV7())}
	mdb := mongotest.New(t, f.tdb.URL)
	f.cache = aicache.New(mdb, jobs.WorkoutPlanCollection)
	if _, err := f.tdb.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key)
		VALUES ($1, $2, 'x', 'Plan Member', 'member', '\x00')`, f.user, f.user.String()+"@plan.test"); err != nil {
		t.Fatal(err)
	}
	planner, err := devstack.StartWorkoutPlanner(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = planner.Close() })
	f.planner = planner
	metrics, err := integrations.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	base, err := integrations.New(integrations.Config{
		Name: workoutplanner.Name, BaseURL: planner.URL(), APIKey: planner.APIKey(),
		Timeout: 5 * time.Second, MaxAttempts: 1, FailureThreshold: 1000,
	}, metrics)
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.WorkoutPlanWorker{
		Pool: f.tdb.Pool, Mongo: mdb, Planner: workoutplanner.New(base), Logger: testLogger(t),
	})
	f.river, err = river.NewClient(riverpgxv5.New(f.tdb.Pool), &river.Config{
		Logger:            testLogger(t),
		Queues:            map[string]river.QueueConfig{jobs.QueueAI: {MaxWorkers: 2}},
		Workers:           workers,
		RetryPolicy:       soonRetries{},
		FetchCooldown:     10 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		TestOnly:          true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.river.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = f.river.Stop(stopCtx)
	})
	return f
}

// request inserts a pending plan row and its job, the way
// RequestWorkoutPlan does, and returns the row's id.
func (f *planFixture) request(t *testing.T, days int, opts *river.InsertOpts) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var id uuid.UUID
	err := db.WithTx(ctx, f.tdb.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO workout_plans (user_id, goal, days_per_week, session_minutes, equipment, status)
			VALUES ($1, 'increase_strength', $2, 45, '{dumbbell,bodyweight}', 'pending') RETURNING id`, f.user, days).Scan(&id); err != nil {
			return err
		}
		_, err := f.river.InsertTx(ctx, tx, jobs.WorkoutPlanArgs{PlanID: id}, opts)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type planRow struct {
	status, reason string
	stale, cached  bool
	days           []jobs.WorkoutPlanDay
}

// wait polls the row until cond holds, for up to 15s.
func (f *planFixture) wait(t *testing.T, id uuid.UUID, cond func(planRow) bool) planRow {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var r planRow
		var days []byte
		if err := f.tdb.Pool.QueryRow(context.Background(), `SELECT status, failure_reason, stale, from_cache, days FROM workout_plans WHERE id = $1`, id).
			Scan(&r.status, &r.reason, &r.stale, &r.cached, &days); err != nil {
			t.Fatal(err)
		}
		var err error
		if r.days, err = jobs.DecodeWorkoutPlanDays(days); err != nil {
			t.Fatal(err)
		}
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("plan %s stuck at %+v", id, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkoutPlanJob(t *testing.T) {
	t.Parallel()
	f := setupPlanJob(t)
	ctx := context.Background()

	// Recent history the planner should hear of: one bench press set.
	if _, err := f.tdb.Pool.Exec(ctx, `WITH w AS (INSERT INTO workouts (user_id, completed_at) VALUES ($1, now()) RETURNING id)
		INSERT INTO workout_sets (workout_id, user_id, exercise_id, reps, weight_kg, client_set_id, source)
		SELECT id, $1, 'dumbbell-bench-press', 10, 22.5, 'h1', 'app' FROM w`, f.user); err != nil {
		t.Fatal(err)
	}

	first := f.request(t, 3, nil)
	row := f.wait(t, first, func(r planRow) bool { return r.status == jobs.WorkoutPlanReady })
	if row.stale || row.cached || len(row.days) != 3 || row.days[0].Exercises[0].ExerciseName == "" {
		t.Fatalf("planned row = %+v", row)
	}
	reqs := f.planner.Requests()
	if len(reqs) != 1 || reqs[0].IdempotencyKey != "workout-plan-"+first.String() {
		t.Fatalf("planner requests = %d, key %q", len(reqs), reqs[0].IdempotencyKey)
	}
	var sent workoutplanner.PlanRequest
	if err := json.Unmarshal(reqs[0].Body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Goal != workoutplanner.GoalStrength || sent.DaysPerWeek != 3 || !slices.Equal(sent.Equipment, []string{"bodyweight", "dumbbell"}) {
		t.Fatalf("sent request = %+v", sent)
	}
	for _, e := range sent.Catalogue {
		if e.Equipment != "bodyweight" && e.Equipment != "dumbbell" {
			t.Fatalf("catalogue sent includes %s needing %s, not asked for", e.ID, e.Equipment)
		}
	}
	if len(sent.History) != 1 || sent.History[0].ExerciseID != "dumbbell-bench-press" || sent.History[0].BestWeightKg != 22.5 {
		t.Fatalf("history sent = %+v", sent.History)
	}
	entries, err := f.cache.ForUser(ctx, f.user.String())
	if err != nil || len(entries) != 1 || entries[0].ExpiresAt.Sub(entries[0].CreatedAt) != jobs.WorkoutPlanCacheTTL {
		t.Fatalf("cache entries = %+v, %v; want one expiring after the TTL", entries, err)
	}

	t.Run("CacheHitCallsNothing", func(t *testing.T) {
		id := f.request(t, 3, nil)
		row := f.wait(t, id, func(r planRow) bool { return r.status == jobs.WorkoutPlanReady })
		if !row.cached || len(row.days) != 3 {
			t.Fatalf("row = %+v, want from the cache", row)
		}
		if n := len(f.planner.Requests()); n != 1 {
			t.Fatalf("planner called %d times, want still 1", n)
		}
	})

	t.Run("OutageStaleThenFailed", func(t *testing.T) {
		f.planner.SetKnobs(devstack.SimKnobs{Outage: true})
		defer f.planner.SetKnobs(devstack.SimKnobs{})
		id := f.request(t, 2, &river.InsertOpts{MaxAttempts: 3})
		row := f.wait(t, id, func(r planRow) bool { return r.status == jobs.WorkoutPlanFailed })
		// The earlier plan it showed while retrying stays, marked stale.
		if row.reason != jobs.WorkoutPlanReasonFailed || !row.stale || len(row.days) != 3 {
			t.Fatalf("row = %+v, want failed with the earlier plan marked stale", row)
		}
		var keys []string
		for _, r := range f.planner.Requests()[1:] {
			keys = append(keys, r.IdempotencyKey)
		}
		distinct := slices.Compact(slices.Clone(keys))
		if len(keys) != 3 || len(distinct) != 1 || distinct[0] != "workout-plan-"+id.String() {
			t.Fatalf("keys sent = %v, want one per attempt, all the same", keys)
		}
	})

	t.Run("RetryAfterSnoozes", func(t *testing.T) {
		// A 429 asking for longer than the client waits within a call
		// snoozes the job instead of spending an attempt.
		f.planner.SetKnobs(devstack.SimKnobs{RateLimitBurst: 1, RetryAfterSeconds: 30})
		defer f.planner.SetKnobs(devstack.SimKnobs{})
		id := f.request(t, 4, nil)
		deadline := time.Now().Add(15 * time.Second)
		for {
			var state string
			var attempt int
			var scheduled time.Time
			if err := f.tdb.Pool.QueryRow(ctx, `SELECT state, attempt, scheduled_at FROM river_job WHERE kind = 'workout_plan' AND args->>'plan_id' = $1`, id.String()).
				Scan(&state, &attempt, &scheduled); err != nil {
				t.Fatal(err)
			}
			if state == string(rivertype.JobStateScheduled) {
				if d := time.Until(scheduled); d < 20*time.Second {
					t.Fatalf("snoozed for %v, want the Retry-After of 30s", d)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job state %s after 15s, want snoozed", state)
			}
			time.Sleep(20 * time.Millisecond)
		}
		row := f.wait(t, id, func(planRow) bool { return true })
		if !row.stale || row.reason != jobs.WorkoutPlanReasonStale {
			t.Fatalf("row while snoozed = %+v, want the earlier plan marked stale", row)
		}
	})
}

// TestWorkoutGDPR checks the profile snapshot the planner gets decrypts the
// member's profile, and that plans, workouts and sets are in the member's
// export and gone after erasure.
func TestWorkoutGDPR(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupGDPR(t, false)
	u := b.seedUser(t, "lifter")
	var planID, workoutID uuid.UUID
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO workout_plans (user_id, goal, days_per_week, session_minutes, status, name, days, active, ready_at)
		VALUES ($1, 'build_muscle', 1, 45, 'ready', 'Push day', '[{"day_index":0,"title":"Push","exercises":[]}]', true, now()) RETURNING id`, u.ID).Scan(&planID); err != nil {
		t.Fatal(err)
	}
	if err := b.tdb.Pool.QueryRow(ctx, `INSERT INTO workouts (user_id, plan_id) VALUES ($1, $2) RETURNING id`, u.ID, planID).Scan(&workoutID); err != nil {
		t.Fatal(err)
	}
	b.exec(t, `INSERT INTO workout_sets (workout_id, user_id, exercise_id, reps, weight_kg, client_set_id, source)
		VALUES ($1, $2, 'push-up', 20, 0, 'app-1', 'app')`, workoutID, u.ID)

	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	profile, err := jobs.WorkoutPlanProfile(ctx, b.tdb.Pool, b.keys, u.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	// Born 1990-04-17: 36 on 2026-11-26; the latest weight is the second.
	want := workoutplanner.Profile{Sex: "female", Age: 36, HeightCm: 172.5, WeightKg: 79.95, Experience: workoutplanner.ExperienceIntermediate}
	if profile != want {
		t.Fatalf("profile snapshot = %+v, want %+v", profile, want)
	}

	if _, err := workExport(t, b, b.exportWorker(at), jobs.DataExportArgs{ExportID: u.PendingExport, UserID: u.ID}, nil); err != nil {
		t.Fatalf("export: %v", err)
	}
	var archive struct {
		Workouts struct {
			Plans []struct {
				ID   uuid.UUID       `json:"id"`
				Days json.RawMessage `json:"days"`
			} `json:"plans"`
			Workouts []struct {
				ID     uuid.UUID  `json:"id"`
				PlanID *uuid.UUID `json:"plan_id"`
			} `json:"workouts"`
			Sets []struct {
				ExerciseID string `json:"exercise_id"`
				Reps       int32  `json:"reps"`
			} `json:"sets"`
		} `json:"workouts"`
	}
	if err := json.Unmarshal(download(t, b, jobs.ExportObjectKey(u.ID, u.PendingExport)), &archive); err != nil {
		t.Fatal(err)
	}
	w := archive.Workouts
	if len(w.Plans) != 1 || w.Plans[0].ID != planID || len(w.Plans[0].Days) == 0 ||
		len(w.Workouts) != 1 || w.Workouts[0].ID != workoutID || *w.Workouts[0].PlanID != planID ||
		len(w.Sets) != 1 || w.Sets[0].ExerciseID != "push-up" || w.Sets[0].Reps != 20 {
		t.Fatalf("exported workouts = %+v", w)
	}

	if err := b.erasureRegistry().Erase(ctx, u.ID); err != nil {
		t.Fatalf("erase: %v", err)
	}
	for _, table := range []string{"workout_plans", "workouts", "workout_sets"} {
		var n int
		if err := b.tdb.Pool.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE user_id = $1", u.ID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s holds %d rows of the erased user (%v)", table, n, err)
		}
	}
}
