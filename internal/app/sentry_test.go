package app

import (
	"net/http"
	"testing"

	"github.com/getsentry/sentry-go"
)

func TestScrubSentryEvent(t *testing.T) {
	t.Parallel()
	req, _ := http.NewRequest(http.MethodPost, "http://api/nxg.v1.AuthService/Login", nil)
	req.Header.Set("Authorization", "Bearer secret-token")
	event := &sentry.Event{
		Request:    sentry.NewRequest(req),
		User:       sentry.User{ID: "u1", Email: "member@nxg.dev", IPAddress: "203.0.113.9"},
		ServerName: "api-7",
		Tags:       map[string]string{"request_id": "r1", "procedure": "/nxg.v1.AuthService/Login"},
	}
	out := scrubSentryEvent(event, nil)
	if out.Request != nil || out.User.Email != "" || out.User.IPAddress != "" || out.ServerName != "" {
		t.Fatalf("personal data left in the event: %+v", out)
	}
	if out.User.ID != "u1" || out.Tags["request_id"] != "r1" || out.Tags["procedure"] == "" {
		t.Fatalf("identifiers lost: %+v", out)
	}
}
