package workoutplanner_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	wp "github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

type testBundle struct {
	sim    *devstack.WorkoutPlanner
	base   *integrations.Client
	client *wp.Client
}

// setup starts the simulator cmd/nxg-dev serves and a client for it with
// short waits, so retries and the breaker play out in milliseconds.
func setup(t *testing.T, tweak func(*integrations.Config)) *testBundle {
	t.Helper()
	sim, err := devstack.StartWorkoutPlanner(testkit.Logger(t, slog.LevelInfo))
	if err != nil {
		t.Fatalf("StartWorkoutPlanner: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := integrations.Config{
		Name: wp.Name, BaseURL: sim.URL(), APIKey: sim.APIKey(),
		Timeout: 5 * time.Second, MaxAttempts: 4, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		FailureThreshold: 5, OpenTimeout: time.Minute,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	base, err := integrations.New(cfg, nil)
	if err != nil {
		t.Fatalf("integrations.New: %v", err)
	}
	return &testBundle{sim: sim, base: base, client: wp.New(base)}
}

var catalogue = []wp.CatalogueExercise{
	{ID: "ex_bench_press", Name: "Bench press", Equipment: "barbell", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_back_squat", Name: "Back squat", Equipment: "barbell", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_barbell_row", Name: "Barbell row", Equipment: "barbell", MuscleGroups: []string{"back", "biceps"}},
	{ID: "ex_push_up", Name: "Push-up", Equipment: "bodyweight", MuscleGroups: []string{"chest", "triceps"}},
	{ID: "ex_pull_up", Name: "Pull-up", Equipment: "bodyweight", MuscleGroups: []string{"lats", "biceps"}},
	{ID: "ex_lunge", Name: "Walking lunge", Equipment: "bodyweight", MuscleGroups: []string{"quads", "glutes"}},
	{ID: "ex_treadmill_run", Name: "Treadmill run", Equipment: "treadmill", MuscleGroups: []string{"cardio"}},
}

var request = wp.PlanRequest{
	Goal: wp.GoalStrength, DaysPerWeek: 3, SessionMinutes: 60, Equipment: []string{"barbell", "treadmill"},
	Profile:   wp.Profile{Sex: "male", Age: 40, HeightCm: 180, WeightKg: 82, Experience: "beginner"},
	History:   []wp.HistoryEntry{{ExerciseID: "ex_bench_press", Date: "2026-11-20", Sets: 4, BestReps: 8, BestWeightKg: 60}},
	Catalogue: catalogue,
}

func TestCreatePlan(t *testing.T) {
	ctx := context.Background()

	t.Run("Success", func(t *testing.T) {
		b := setup(t, nil)
		p, err := b.client.CreatePlan(ctx, "plan-1", request)
		if err != nil {
			t.Fatalf("CreatePlan: %v", err)
		}
		if len(p.Days) != 3 || p.PlanID == "" {
			t.Fatalf("plan = %+v", p)
		}
		reqs := b.sim.Requests()
		if len(reqs) != 1 || reqs[0].IdempotencyKey != "plan-1" || reqs[0].APIKey != b.sim.APIKey() || reqs[0].Path != "/v1/plans" {
			t.Fatalf("simulator saw %+v", reqs)
		}
	})

	t.Run("InvalidRequestNotSent", func(t *testing.T) {
		b := setup(t, nil)
		bad := request
		bad.DaysPerWeek = 8
		if _, err := b.client.CreatePlan(ctx, "plan-1", bad); !errors.Is(err, wp.ErrInvalidRequest) {
			t.Fatalf("CreatePlan with 8 days = %v, want ErrInvalidRequest", err)
		}
		if n := len(b.sim.Requests()); n != 0 {
			t.Fatalf("an invalid request reached the service (%d requests)", n)
		}
	})

	t.Run("AbsurdRejected", func(t *testing.T) {
		b := setup(t, nil)
		b.sim.SetKnobs(devstack.SimKnobs{Absurd: true})
		p, err := b.client.CreatePlan(ctx, "plan-1", request)
		var fe *wp.FieldError
		if !errors.Is(err, wp.ErrInvalidResponse) || !errors.As(err, &fe) || fe.Field == "" || p != nil {
			t.Fatalf("CreatePlan against an absurd planner = %v, %v; want ErrInvalidResponse naming a field", p, err)
		}
		t.Logf("rejected: %v", err)
	})

	t.Run("RateLimitThenSuccess", func(t *testing.T) {
		b := setup(t, nil)
		b.sim.SetKnobs(devstack.SimKnobs{RateLimitBurst: 2, RetryAfterSeconds: 1})
		start := time.Now()
		if _, err := b.client.CreatePlan(ctx, "plan-429", request); err != nil {
			t.Fatalf("CreatePlan through a 429 burst: %v", err)
		}
		if took := time.Since(start); took < 2*time.Second {
			t.Fatalf("the call took %v, want at least the two Retry-After seconds", took)
		}
		reqs := b.sim.Requests()
		if len(reqs) != 3 {
			t.Fatalf("simulator saw %d requests, want 2 rate-limited and 1 answered", len(reqs))
		}
		for i, r := range reqs {
			want := http.StatusTooManyRequests
			if i == 2 {
				want = http.StatusOK
			}
			if r.IdempotencyKey != "plan-429" || r.Status != want {
				t.Errorf("attempt %d: key %q status %d, want plan-429 and %d", i, r.IdempotencyKey, r.Status, want)
			}
		}
	})

	t.Run("OutageOpensBreaker", func(t *testing.T) {
		const openTimeout = 300 * time.Millisecond
		b := setup(t, func(c *integrations.Config) {
			c.MaxAttempts, c.FailureThreshold, c.OpenTimeout = 2, 3, openTimeout
		})
		b.sim.SetKnobs(devstack.SimKnobs{Outage: true})

		// Two attempts fail in the first call and the third attempt, in the
		// second call, opens the breaker, which stops that call's retry.
		for i := range 2 {
			var ie *integrations.Error
			if _, err := b.client.CreatePlan(ctx, "outage", request); !errors.As(err, &ie) || !ie.Retryable {
				t.Fatalf("call %d in an outage = %v, want a retryable *integrations.Error", i, err)
			}
		}
		if n := len(b.sim.Requests()); n != 3 {
			t.Fatalf("simulator saw %d requests before the breaker opened, want the threshold of 3", n)
		}
		if s := b.base.State(); s != "open" {
			t.Fatalf("breaker %s after 3 failures, want open", s)
		}

		// While open, calls fail fast and nothing reaches the service.
		_, err := b.client.CreatePlan(ctx, "outage-2", request)
		var ie *integrations.Error
		if !errors.Is(err, integrations.ErrCircuitOpen) || !errors.As(err, &ie) || ie.RetryAfter <= 0 || ie.RetryAfter > openTimeout {
			t.Fatalf("call with the breaker open = %v, want ErrCircuitOpen with the wait until the probe", err)
		}
		if n := len(b.sim.Requests()); n != 3 {
			t.Fatalf("simulator saw %d requests while the breaker was open, want still 3", n)
		}

		// The outage ends; after the open timeout one probe goes through and
		// its success closes the breaker.
		b.sim.SetKnobs(devstack.SimKnobs{})
		time.Sleep(ie.RetryAfter + 20*time.Millisecond)
		if _, err := b.client.CreatePlan(ctx, "outage-3", request); err != nil {
			t.Fatalf("probe after the outage: %v", err)
		}
		if s := b.base.State(); s != "closed" {
			t.Fatalf("breaker %s after a successful probe, want closed", s)
		}
		reqs := b.sim.Requests()
		if len(reqs) != 4 || reqs[3].Status != http.StatusOK || reqs[3].IdempotencyKey != "outage-3" {
			t.Fatalf("simulator saw %+v, want the probe as the fourth request", reqs)
		}
	})
}
