package mealdetector

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

// Name is the service's name in config, metrics and breaker states.
const Name = "mealdetector"

// Client calls the meal detector through the shared resilient wrapper.
type Client struct {
	base *integrations.Client
}

// New wraps a client configured for the detector (Config.Name "mealdetector").
func New(c *integrations.Client) *Client { return &Client{base: c} }

// Detect asks what food a photo shows. idempotencyKey names this logical
// call: the wrapper sends it on every attempt, and a later call with the same
// key and request gets the same answer. The request is validated first
// (ErrInvalidRequest) and the detection after (ErrInvalidResponse); other
// failures are *integrations.Error (a 422 with Code "image_unreadable",
// "image_too_large" or "unsupported_media_type" means the photo itself is
// the problem).
func (c *Client) Detect(ctx context.Context, idempotencyKey string, req DetectRequest) (*Detection, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var d Detection
	if err := c.base.Do(ctx, http.MethodPost, "/v1/detections", idempotencyKey, req, &d); err != nil {
		return nil, fmt.Errorf("mealdetector: detect: %w", err)
	}
	if err := ValidateDetection(&d); err != nil {
		return nil, err
	}
	return &d, nil
}
