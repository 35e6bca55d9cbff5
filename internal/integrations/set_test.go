package integrations_test

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func TestSetBreakerStates(t *testing.T) {
	t.Parallel()
	down := setup(t, always(http.StatusServiceUnavailable), func(c *integrations.Config) {
		c.Name = "mealdetector"
		c.FailureThreshold = 1
		c.MaxAttempts = 1
	})
	up := setup(t, succeeding, func(c *integrations.Config) { c.Name = "workoutplanner" })
	_ = down.client.Do(context.Background(), http.MethodPost, "/v1/detections", "k", nil, nil)

	var s integrations.Set // the zero Set is usable
	s.Add(down.client)
	s.Add(up.client)
	s.Add(nil)
	want := map[string]string{"mealdetector": "open", "workoutplanner": "closed"}
	if got := s.BreakerStates(); !maps.Equal(got, want) {
		t.Errorf("BreakerStates = %v, want %v", got, want)
	}
	if got := s.Names(); !slices.Equal(got, []string{"mealdetector", "workoutplanner"}) {
		t.Errorf("Names = %v", got)
	}
	if c, ok := s.Client("workoutplanner"); !ok || c != up.client {
		t.Errorf("Client(workoutplanner) = %v, %v", c, ok)
	}
	if got := integrations.NewSet().BreakerStates(); len(got) != 0 {
		t.Errorf("empty Set's BreakerStates = %v, want empty", got)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  integrations.Config
		ok   bool
	}{
		{"Minimal", integrations.Config{Name: "svc", BaseURL: "http://127.0.0.1:1"}, true},
		{"HTTPS", integrations.Config{Name: "svc", BaseURL: "https://api.example.com/v2/"}, true},
		{"NoName", integrations.Config{BaseURL: "http://127.0.0.1:1"}, false},
		{"NoBaseURL", integrations.Config{Name: "svc"}, false},
		{"RelativeURL", integrations.Config{Name: "svc", BaseURL: "/v1"}, false},
		{"OtherScheme", integrations.Config{Name: "svc", BaseURL: "ftp://host"}, false},
		{"Query", integrations.Config{Name: "svc", BaseURL: "http://host?x=1"}, false},
		{"NegativeTimeout", integrations.Config{Name: "svc", BaseURL: "http://host", Timeout: -1}, false},
		{"NegativeAttempts", integrations.Config{Name: "svc", BaseURL: "http://host", MaxAttempts: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := integrations.New(tt.cfg, nil)
			if tt.ok != (err == nil) {
				t.Fatalf("New: err = %v, want ok = %v", err, tt.ok)
			}
			if tt.ok && (c.Name() != "svc" || c.State() != "closed") {
				t.Errorf("Name %q State %q", c.Name(), c.State())
			}
		})
	}
}

func TestNewMetricsRefusesASecondRegistration(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := integrations.NewMetrics(reg); err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	if _, err := integrations.NewMetrics(reg); err == nil {
		t.Error("second NewMetrics on one registry succeeded; its metrics would never be exported")
	}
}
