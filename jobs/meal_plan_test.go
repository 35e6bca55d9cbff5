package jobs_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/internal/aicache"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/internal/testkit/mongotest"
	"github.com/nxg-fitness/nxg/jobs"
)

func TestMealPlanWorker(t *testing.T) {
	ctx := context.Background()
	f := newNutritionFixture(t)
	mdb := mongotest.New(t, f.db.URL)
	cache := aicache.New(mdb, jobs.MealPlanCollection)
	sim, err := devstack.StartMealPlanner(testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	base, err := integrations.New(integrations.Config{
		Name: mealplanner.Name, BaseURL: sim.URL(), APIKey: sim.APIKey(), MaxAttempts: 2,
		BackoffInitial: time.Millisecond, BackoffMax: 2 * time.Millisecond, FailureThreshold: 100,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.SyncBuffer{}
	w := &jobs.MealPlanWorker{Pool: f.db.Pool, Mongo: mdb, Planner: mealplanner.New(base), Logger: slog.New(slog.NewJSONHandler(logs, nil))}

	request := func(t *testing.T, kcal float64) uuid.UUID {
		t.Helper()
		var id uuid.UUID
		if err := f.db.Pool.QueryRow(ctx, `INSERT INTO meal_plan_requests (user_id, days, kcal_target, diet, exclusions, cache_key)
			VALUES ($1, 3, $2, 'vegetarian', '{peanut}', $3) RETURNING id`, f.user, kcal, uuid.NewString()).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	work := func(t *testing.T, id uuid.UUID, attempt int) error {
		t.Helper()
		return w.Work(ctx, &river.Job[jobs.MealPlanArgs]{
			JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: jobs.MealPlanMaxAttempts},
			Args:   jobs.MealPlanArgs{RequestID: id, UserID: f.user},
		})
	}
	type row struct {
		status, reason, key string
		stale               bool
		plan                []byte
	}
	read := func(t *testing.T, id uuid.UUID) row {
		t.Helper()
		var r row
		if err := f.db.Pool.QueryRow(ctx, `SELECT status, failure_reason, cache_key, stale, plan FROM meal_plan_requests WHERE id = $1`, id).
			Scan(&r.status, &r.reason, &r.key, &r.stale, &r.plan); err != nil {
			t.Fatal(err)
		}
		return r
	}

	var first uuid.UUID
	t.Run("ready, cached, within 5% of the target", func(t *testing.T) {
		first = request(t, 2200)
		if err := work(t, first, 1); err != nil {
			t.Fatalf("Work: %v", err)
		}
		r := read(t, first)
		if r.status != "ready" || r.stale {
			t.Fatalf("row %+v", r)
		}
		var p mealplanner.MealPlan
		if err := json.Unmarshal(r.plan, &p); err != nil || len(p.Days) != 3 {
			t.Fatalf("plan %s: %v", r.plan, err)
		}
		for _, d := range p.Days {
			if math.Abs(d.Kcal-2200)/2200 > 0.05 {
				t.Fatalf("day %d has %g kcal, want within 5%% of 2200", d.DayIndex, d.Kcal)
			}
		}
		entry, hit, err := cache.Get(ctx, r.key)
		if err != nil || !hit || entry.UserID != f.user.String() {
			t.Fatalf("cache after a plan: %+v, %v, %v", entry, hit, err)
		}
		if reqs := sim.Requests(); len(reqs) != 1 || reqs[0].IdempotencyKey != jobs.MealPlanIdempotencyKey(first) {
			t.Fatalf("planner saw %+v", reqs)
		}
	})

	t.Run("outage serves the latest cached plan as stale, then fails after the last attempt", func(t *testing.T) {
		id := request(t, 2500)
		sim.SetKnobs(devstack.SimKnobs{Outage: true})
		t.Cleanup(func() { sim.SetKnobs(devstack.SimKnobs{}) })
		if err := work(t, id, 1); err == nil {
			t.Fatal("Work during an outage succeeded")
		}
		r := read(t, id)
		if r.status != "pending" || !r.stale || len(r.plan) == 0 || !strings.Contains(r.reason, "most recent plan") {
			t.Fatalf("during outage: %+v", r)
		}
		if err := work(t, id, jobs.MealPlanMaxAttempts); err != nil {
			t.Fatalf("last attempt: %v", err)
		}
		if r := read(t, id); r.status != "failed" || !strings.Contains(r.reason, "could not be reached") {
			t.Fatalf("after the last attempt: %+v", r)
		}
		for _, q := range sim.Requests()[1:] {
			if q.IdempotencyKey != jobs.MealPlanIdempotencyKey(id) {
				t.Fatalf("retry sent key %q, want %q", q.IdempotencyKey, jobs.MealPlanIdempotencyKey(id))
			}
		}
	})

	t.Run("absurd plan rejected and logged", func(t *testing.T) {
		id := request(t, 1800)
		sim.SetKnobs(devstack.SimKnobs{Absurd: true})
		t.Cleanup(func() { sim.SetKnobs(devstack.SimKnobs{}) })
		if err := work(t, id, 1); err != nil {
			t.Fatalf("Work: %v", err)
		}
		if r := read(t, id); r.status != "failed" || r.plan != nil || !strings.Contains(r.reason, "discarded") {
			t.Fatalf("absurd: %+v", r)
		}
		if !strings.Contains(logs.String(), "meal planner answer rejected") {
			t.Fatalf("log lacks the rejection: %s", logs.String())
		}
	})
}
