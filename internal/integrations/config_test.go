package integrations_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func TestConfigLogValueHidesTheKey(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	logger.Info("client", "config", integrations.Config{Name: "workoutplanner", BaseURL: "https://planner.example.com", APIKey: "sk-live-secret"})
	logger.Info("client", "config", integrations.Config{Name: "mealplanner"})
	logged := out.String()
	if strings.Contains(logged, "sk-live-secret") {
		t.Fatalf("the API key reached the log: %s", logged)
	}
	if !strings.Contains(logged, `"api_key":"[redacted]"`) || !strings.Contains(logged, `"base_url":"https://planner.example.com"`) {
		t.Fatalf("log = %s, want the URL and a redacted key", logged)
	}
	if !strings.Contains(logged, `"name":"mealplanner","base_url":"","api_key":""`) {
		t.Fatalf("log = %s, want no key shown as none", logged)
	}
}
