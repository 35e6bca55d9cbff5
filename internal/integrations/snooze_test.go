package integrations_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func TestSnoozeFor(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"not an outside failure", errors.New("disk full"), 0, false},
		{"a failure to retry normally", &integrations.Error{Service: "s", Status: 500, Retryable: true}, 0, false},
		{"Retry-After", &integrations.Error{Service: "s", Status: 429, RetryAfter: 30 * time.Second}, 30 * time.Second, true},
		{"a very long Retry-After", &integrations.Error{Service: "s", Status: 503, RetryAfter: 2 * time.Hour}, integrations.MaxSnooze, true},
		{"open breaker", &integrations.Error{Service: "s", RetryAfter: 10 * time.Millisecond, Err: integrations.ErrCircuitOpen}, time.Second, true},
		{"wrapped", fmt.Errorf("plan: %w", &integrations.Error{Service: "s", RetryAfter: 5 * time.Second}), 5 * time.Second, true},
	} {
		got, ok := integrations.SnoozeFor(tc.err)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: SnoozeFor = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
