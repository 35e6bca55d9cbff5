package workoutplanner

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

// Name is the service's name in config, metrics and breaker states.
const Name = "workoutplanner"

// Client calls the workout planner through the shared resilient wrapper.
type Client struct {
	base *integrations.Client
}

// New wraps a client configured for the planner (Config.Name "workoutplanner").
func New(c *integrations.Client) *Client { return &Client{base: c} }

// CreatePlan asks for a plan. idempotencyKey names this logical call: the
// wrapper sends it on every attempt, and a later call with the same key and
// request gets the same answer from the service. The request is validated
// first (ErrInvalidRequest) and the plan after (ErrInvalidResponse); other
// failures are *integrations.Error.
func (c *Client) CreatePlan(ctx context.Context, idempotencyKey string, req PlanRequest) (*Plan, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var p Plan
	if err := c.base.Do(ctx, http.MethodPost, "/v1/plans", idempotencyKey, req, &p); err != nil {
		return nil, fmt.Errorf("workoutplanner: create plan: %w", err)
	}
	if err := ValidatePlan(req, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
