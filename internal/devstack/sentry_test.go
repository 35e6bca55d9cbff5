package devstack_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/nxg-fitness/nxg/internal/devstack"
)

func startSentry(t *testing.T) *devstack.Sentry {
	t.Helper()
	s, err := devstack.StartSentry(testLogger(t))
	if err != nil {
		t.Fatalf("StartSentry: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Sentry.Close: %v", err)
		}
	})
	return s
}

// quotaError is a typed error, so the test can check the type Sentry shows.
type quotaError struct{ machine string }

func (e *quotaError) Error() string { return "machine " + e.machine + " over quota" }

// TestSentry captures through the official SDK and checks the capture kept
// what Sentry would show.
func TestSentry(t *testing.T) {
	s := startSentry(t)
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:         s.DSN(),
		Environment: "test",
		Release:     "nxg@1.2.3",
	})
	if err != nil {
		t.Fatalf("sentry.NewClient(%s): %v", s.DSN(), err)
	}
	hub := sentry.NewHub(client, sentry.NewScope())
	hub.Scope().SetTag("branch", "b1")

	excID := hub.CaptureException(fmt.Errorf("record set: %w", &quotaError{machine: "m7"}))
	msgID := hub.CaptureMessage("leaderboard rollover skipped")
	if excID == nil || msgID == nil {
		t.Fatal("the SDK dropped an event before sending it")
	}
	if !hub.Flush(5 * time.Second) {
		t.Fatal("Flush timed out: the capture did not accept the events")
	}

	events := s.Events()
	if len(events) != 2 {
		t.Fatalf("captured %d events, want 2: %+v", len(events), events)
	}
	byID := map[string]devstack.SentryEvent{}
	for _, e := range events {
		byID[e.EventID] = e
	}
	exc, ok := byID[string(*excID)]
	if !ok {
		t.Fatalf("no event with the exception's id %s in %+v", *excID, events)
	}
	if exc.Level != "error" || exc.ExceptionType != "*fmt.wrapError" || exc.ExceptionValue != "record set: machine m7 over quota" {
		t.Fatalf("exception event = level %q, %q: %q", exc.Level, exc.ExceptionType, exc.ExceptionValue)
	}
	// The wrapped cause is kept in the chain, with its own type.
	foundCause := false
	for _, x := range exc.Exceptions {
		if x.Type == "*devstack_test.quotaError" && x.Value == "machine m7 over quota" {
			foundCause = true
		}
	}
	if !foundCause {
		t.Fatalf("exception chain %+v lacks the *devstack_test.quotaError cause", exc.Exceptions)
	}
	if exc.Tags["branch"] != "b1" || exc.Environment != "test" || exc.Release != "nxg@1.2.3" || exc.Endpoint != "envelope" {
		t.Fatalf("exception event = %+v, want tag branch=b1, environment test, release nxg@1.2.3 via the envelope endpoint", exc)
	}
	msg, ok := byID[string(*msgID)]
	if !ok || msg.Message != "leaderboard rollover skipped" || msg.Level != "info" || msg.ExceptionType != "" {
		t.Fatalf("message event = %+v (found %v), want level info and the message", msg, ok)
	}

	// GET /events serves the same events as JSON.
	resp, err := http.Get(eventsURL(t, s))
	if err != nil {
		t.Fatalf("GET /events: %v", err)
	}
	defer resp.Body.Close()
	var served []devstack.SentryEvent
	if err := json.NewDecoder(resp.Body).Decode(&served); err != nil {
		t.Fatalf("decode /events: %v", err)
	}
	if len(served) != 2 || served[0].EventID != events[0].EventID || served[1].ExceptionValue != events[1].ExceptionValue {
		t.Fatalf("/events = %+v, want %+v", served, events)
	}
}

// TestSentryProtocol covers what the SDK above does not send: the legacy
// store endpoint, gzip bodies, the other exception and tag shapes, and
// refusals.
func TestSentryProtocol(t *testing.T) {
	s := startSentry(t)
	dsn, err := url.Parse(s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	key := dsn.User.Username()
	base := eventsURL(t, s)[:len(eventsURL(t, s))-len("/events")]
	auth := "Sentry sentry_version=7, sentry_client=test/1.0, sentry_key=" + key

	post := func(t *testing.T, path, auth string, gz bool, body string) int {
		t.Helper()
		var buf bytes.Buffer
		if gz {
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write([]byte(body))
			_ = zw.Close()
		} else {
			buf.WriteString(body)
		}
		req, err := http.NewRequest(http.MethodPost, base+path, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("X-Sentry-Auth", auth)
		}
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	storeEvent := `{"event_id":"aaaa","level":"warning","exception":{"values":[{"type":"ValueError","value":"bad weight"}]},"tags":[["gym","g1"]]}`
	if code := post(t, "/api/1/store/", auth, true, storeEvent); code != http.StatusOK {
		t.Fatalf("gzip store = %d, want 200", code)
	}
	// An envelope with a session item (ignored), then an event item without
	// a length, whose message is a logentry.
	envelope := `{"event_id":"bbbb","dsn":"` + s.DSN() + `"}` + "\n" +
		`{"type":"session","length":13}` + "\n" + `{"sid":"abc"}` + "\n" +
		`{"type":"event"}` + "\n" + `{"logentry":{"formatted":"slow query"},"level":"warning"}` + "\n"
	if code := post(t, "/api/1/envelope/", "", false, envelope); code != http.StatusOK {
		t.Fatalf("envelope authorised by its DSN = %d, want 200", code)
	}

	for _, tc := range []struct {
		name, path, auth, body string
		want                   int
	}{
		{"WrongKey", "/api/1/store/", "Sentry sentry_key=nope", storeEvent, http.StatusUnauthorized},
		{"NoKey", "/api/1/envelope/", "", `{"event_id":"cccc"}` + "\n" + `{"type":"event"}` + "\n{}\n", http.StatusUnauthorized},
		{"OtherProject", "/api/2/store/", auth, storeEvent, http.StatusNotFound},
		{"BadEvent", "/api/1/store/", auth, `{"exception":"nope"}`, http.StatusBadRequest},
		{"ShortItem", "/api/1/envelope/", auth, `{}` + "\n" + `{"type":"event","length":100}` + "\n{}", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := post(t, tc.path, tc.auth, false, tc.body); code != tc.want {
				t.Fatalf("status = %d, want %d", code, tc.want)
			}
		})
	}

	events := s.Events()
	if len(events) != 2 {
		t.Fatalf("captured %d events, want the 2 accepted ones: %+v", len(events), events)
	}
	store, env := events[0], events[1]
	if store.EventID != "aaaa" || store.Level != "warning" || store.ExceptionType != "ValueError" ||
		store.ExceptionValue != "bad weight" || store.Tags["gym"] != "g1" || store.Endpoint != "store" {
		t.Fatalf("store event = %+v", store)
	}
	if env.EventID != "bbbb" || env.Message != "slow query" || env.Level != "warning" || env.Endpoint != "envelope" {
		t.Fatalf("envelope event = %+v, want id from the envelope header and the logentry text", env)
	}
}

func eventsURL(t *testing.T, s *devstack.Sentry) string {
	t.Helper()
	u, err := url.Parse(s.DSN())
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	u.User, u.Path = nil, "/events"
	return u.String()
}
