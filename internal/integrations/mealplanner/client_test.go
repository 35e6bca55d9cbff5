package mealplanner_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/integrations"
	mp "github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

func TestCreatePlan(t *testing.T) {
	ctx := context.Background()
	sim, err := devstack.StartMealPlanner(testkit.Logger(t, slog.LevelInfo))
	if err != nil {
		t.Fatalf("StartMealPlanner: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	base, err := integrations.New(integrations.Config{
		Name: mp.Name, BaseURL: sim.URL(), APIKey: sim.APIKey(), MaxAttempts: 3,
		BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatalf("integrations.New: %v", err)
	}
	client := mp.New(base)
	req := mp.MealPlanRequest{Days: 7, KcalTarget: 2100, ProteinG: 130, Diet: mp.DietVegan, Exclusions: []string{"soy", "peanut"}}

	p, err := client.CreatePlan(ctx, "meal-plan-1", req)
	if err != nil {
		t.Fatalf("CreatePlan: %v", err)
	}
	if len(p.Days) != 7 {
		t.Fatalf("plan has %d days, want 7", len(p.Days))
	}
	again, err := client.CreatePlan(ctx, "meal-plan-1", req)
	if err != nil || !reflect.DeepEqual(p, again) {
		t.Fatalf("replay under the same key = %v; want the same plan", err)
	}
	if reqs := sim.Requests(); len(reqs) != 2 || !reqs[1].Replayed {
		t.Fatalf("simulator saw %+v, want the second call replayed", reqs)
	}

	// The same key with another request is the caller's bug.
	other := req
	other.KcalTarget = 2500
	var ie *integrations.Error
	if _, err := client.CreatePlan(ctx, "meal-plan-1", other); !errors.As(err, &ie) || ie.Code != "idempotency_key_reused" || ie.Retryable {
		t.Fatalf("reused key = %v, want a final idempotency_key_reused", err)
	}

	sim.SetKnobs(devstack.SimKnobs{Absurd: true})
	if _, err := client.CreatePlan(ctx, "meal-plan-2", req); !errors.Is(err, mp.ErrInvalidResponse) {
		t.Fatalf("CreatePlan against an absurd planner = %v, want ErrInvalidResponse", err)
	}
}
