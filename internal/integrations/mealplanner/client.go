package mealplanner

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

// Name is the service's name in config, metrics and breaker states.
const Name = "mealplanner"

// Client calls the meal planner through the shared resilient wrapper.
type Client struct {
	base *integrations.Client
}

// New wraps a client configured for the planner (Config.Name "mealplanner").
func New(c *integrations.Client) *Client { return &Client{base: c} }

// CreatePlan asks for a meal plan. idempotencyKey names this logical call:
// the wrapper sends it on every attempt, and a later call with the same key
// and request gets the same answer. The request is validated first
// (ErrInvalidRequest) and the plan after (ErrInvalidResponse); other
// failures are *integrations.Error.
func (c *Client) CreatePlan(ctx context.Context, idempotencyKey string, req MealPlanRequest) (*MealPlan, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var p MealPlan
	if err := c.base.Do(ctx, http.MethodPost, "/v1/meal-plans", idempotencyKey, req, &p); err != nil {
		return nil, fmt.Errorf("mealplanner: create plan: %w", err)
	}
	if err := ValidateMealPlan(req, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
