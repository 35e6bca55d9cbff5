package app

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/integrations"
	"github.com/nxg-fitness/nxg/internal/integrations/mealdetector"
	"github.com/nxg-fitness/nxg/internal/integrations/mealplanner"
	"github.com/nxg-fitness/nxg/internal/integrations/workoutplanner"
)

// aiClients are the clients of the outside AI services, each behind the
// shared resilient wrapper (timeouts, retries, a circuit breaker, metrics).
// Only River jobs on the ai queue call them.
type aiClients struct {
	workoutPlanner *workoutplanner.Client
	mealDetector   *mealdetector.Client
	mealPlanner    *mealplanner.Client
	// set holds the three for /readyz's breaker states.
	set *integrations.Set
}

// buildAI builds the outside services' clients, registering their metrics
// on reg.
func buildAI(cfg config.AIConfig, reg prometheus.Registerer) (aiClients, error) {
	metrics, err := integrations.NewMetrics(reg)
	if err != nil {
		return aiClients{}, fmt.Errorf("integration metrics: %w", err)
	}
	set := integrations.NewSet()
	client := func(name string, sc config.ServiceConfig) (*integrations.Client, error) {
		c, err := integrations.New(integrations.Config{
			Name:             name,
			BaseURL:          sc.URL,
			APIKey:           sc.APIKey.Reveal(),
			Timeout:          sc.Timeout,
			MaxAttempts:      sc.MaxAttempts,
			FailureThreshold: sc.FailureThreshold,
			OpenTimeout:      sc.OpenTimeout,
		}, metrics)
		if err != nil {
			return nil, fmt.Errorf("%s client: %w", name, err)
		}
		set.Add(c)
		return c, nil
	}
	planner, err := client(workoutplanner.Name, cfg.WorkoutPlanner)
	if err != nil {
		return aiClients{}, err
	}
	detector, err := client(mealdetector.Name, cfg.MealDetector)
	if err != nil {
		return aiClients{}, err
	}
	mealPlanner, err := client(mealplanner.Name, cfg.MealPlanner)
	if err != nil {
		return aiClients{}, err
	}
	return aiClients{
		workoutPlanner: workoutplanner.New(planner),
		mealDetector:   mealdetector.New(detector),
		mealPlanner:    mealplanner.New(mealPlanner),
		set:            set,
	}, nil
}
