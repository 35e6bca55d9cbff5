package integrations_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func TestErrorBodiesThatAreNotJSONAreTolerated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		contentType string
		body        string
		wantMessage string
	}{
		{"GatewayHTML", "text/html", "<html>\n\t<h1>502 Bad Gateway</h1>\x00</html>", "<html> <h1>502 Bad Gateway</h1> </html>"},
		{"Empty", "", "", "Bad Request"},
		{"JSONOfAnotherShape", "application/json", `{"detail":"nope"}`, `{"detail":"nope"}`},
		// Far beyond the bounded read: only the beginning is kept.
		{"Huge", "text/plain", strings.Repeat("x", 1<<20), strings.Repeat("x", 300) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(tt.body))
			}, nil)

			e := asError(t, b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil))
			if e.Status != http.StatusBadRequest || e.Code != "" || e.Message != tt.wantMessage {
				t.Errorf("err = status %d code %q message %q, want 400 with message %q", e.Status, e.Code, e.Message, tt.wantMessage)
			}
		})
	}
}

func TestSuccessBodies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		status  int
		body    string
		out     bool
		wantErr string // "" → success
	}{
		{"Decoded", http.StatusOK, `{"id":"wp_1"}`, true, ""},
		{"Discarded", http.StatusOK, `not even json`, false, ""},
		{"NoContent", http.StatusNoContent, ``, true, ""},
		{"TooLarge", http.StatusOK, `{"id":"` + strings.Repeat("a", 2048) + `"}`, true, "response body exceeds 1024 bytes"},
		{"TooLargeEvenWhenDiscarded", http.StatusOK, strings.Repeat("a", 2048), false, "response body exceeds 1024 bytes"},
		{"NotJSON", http.StatusOK, `<html>`, true, "response body is not the expected JSON"},
		{"WrongShape", http.StatusOK, `{"id":42}`, true, "response body is not the expected JSON"},
		{"Empty", http.StatusOK, ``, true, "empty response body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}, func(c *integrations.Config) { c.MaxResponseBytes = 1024 })

			var out reply
			var outp any
			if tt.out {
				outp = &out
			}
			err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, outp)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if tt.name == "Decoded" && out.ID != "wp_1" {
					t.Errorf("out = %+v", out)
				}
				return
			}
			e := asError(t, err)
			if e.Message != tt.wantErr || e.Retryable || e.Status != tt.status {
				t.Errorf("err = %+v, want a non-retryable %q", e, tt.wantErr)
			}
			if n := len(b.svc.Hits()); n != 1 {
				t.Errorf("service saw %d requests, want 1: a broken answer is not retried", n)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		key    string
		ok     bool
	}{
		{"PostWithKey", http.MethodPost, "wpr_0123456789abcdef", true},
		{"PostWithMaximalKey", http.MethodPost, strings.Repeat("k", 128), true},
		{"GetWithoutKey", http.MethodGet, "", true},
		{"PostWithoutKey", http.MethodPost, "", false},
		{"TooLong", http.MethodPost, strings.Repeat("k", 129), false},
		{"Space", http.MethodPost, "a key", false},
		{"NotASCII", http.MethodPost, "clé", false},
		{"HeaderInjection", http.MethodPost, "k\r\nX-Evil: 1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, succeeding, nil)

			err := b.client.Do(context.Background(), tt.method, "/v1/x", tt.key, nil, nil)
			hits := b.svc.Hits()
			if tt.ok {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if len(hits) != 1 || hits[0].key != tt.key {
					t.Errorf("hits = %+v, want one request with Idempotency-Key %q", hits, tt.key)
				}
				return
			}
			e := asError(t, err)
			if e.Retryable || len(hits) != 0 {
				t.Errorf("err = %+v with %d requests, want a non-retryable refusal sending nothing", e, len(hits))
			}
			if got := calls(t, b, "client_error"); got != 1 {
				t.Errorf("calls{client_error} = %v, want 1", got)
			}
		})
	}
}

func TestNewIdempotencyKeyIsUniqueAndAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t, succeeding, nil)
	k1, k2 := integrations.NewIdempotencyKey(), integrations.NewIdempotencyKey()
	if k1 == k2 {
		t.Fatalf("two keys are equal: %q", k1)
	}
	if err := b.client.Do(context.Background(), http.MethodPost, "/v1/x", k1, nil, nil); err != nil {
		t.Errorf("Do with a generated key: %v", err)
	}
}

func TestPathIsJoinedToBaseURL(t *testing.T) {
	t.Parallel()
	b := setup(t, succeeding, nil)
	b2, err := integrations.New(integrations.Config{Name: "slash", BaseURL: b.svc.srv.URL + "/api/"}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, c := range []struct {
		client *integrations.Client
		path   string
	}{{b.client, "v1/plans"}, {b.client, "/v1/plans"}, {b2, "/v1/plans"}} {
		if err := c.client.Do(context.Background(), http.MethodGet, c.path, "", nil, nil); err != nil {
			t.Fatalf("Do: %v", err)
		}
	}
	hits := b.svc.Hits()
	for i, want := range []string{"/v1/plans", "/v1/plans", "/api/v1/plans"} {
		if hits[i].path != want {
			t.Errorf("request %d went to %s, want %s", i, hits[i].path, want)
		}
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	b := setup(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}, nil)

	e := asError(t, b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", map[string]int{"a": 1}, nil))
	if e.Status != http.StatusFound || e.Retryable {
		t.Errorf("err = %+v, want a non-retryable 302", e)
	}
	if n := len(b.svc.Hits()); n != 1 {
		t.Errorf("service saw %d requests, want 1: the redirect must not be followed", n)
	}
}

func TestUnmarshallableBodyIsRefusedLocally(t *testing.T) {
	t.Parallel()
	b := setup(t, succeeding, nil)
	err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", map[string]any{"f": func() {}}, nil)
	e := asError(t, err)
	if e.Err == nil || e.Retryable || len(b.svc.Hits()) != 0 {
		t.Errorf("err = %+v, want a local refusal wrapping the marshal error", e)
	}
	if errors.Is(err, integrations.ErrCircuitOpen) {
		t.Errorf("err = %v must not look like an open breaker", err)
	}
}
