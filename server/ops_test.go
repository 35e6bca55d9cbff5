package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxg-fitness/nxg/internal/testkit"
)

// opsProbeArgs is a job kind that exists only so the test can see it listed
// by River UI; it is never worked.
type opsProbeArgs struct {
	Note string `json:"note"`
}

func (opsProbeArgs) Kind() string { return "ops_test_probe" }

const (
	opsTestUser     = "ops"
	opsTestPassword = "correct horse battery staple"
)

type opsTestBundle struct {
	server   *httptest.Server
	river    *river.Client[pgx.Tx]
	registry *prometheus.Registry
}

func setupOps(t *testing.T) *opsTestBundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	// Cancelling stops River UI's background count cachers before the test
	// database is dropped.
	t.Cleanup(cancel)

	db := testkit.NewDatabase(t)
	// An insert-only client (no queues, no workers) is enough: River UI
	// reads jobs through the client's driver and never needs it started.
	riverClient, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{})
	if err != nil {
		t.Fatalf("new River client: %v", err)
	}

	registry := prometheus.NewRegistry()
	probe := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nxg_ops_test_probe_total",
		Help: "A counter the ops test registers to find it on /metrics.",
	})
	registry.MustRegister(probe)
	probe.Add(3)

	handler, err := NewOpsHandler(ctx, OpsConfig{
		Registry: registry,
		River:    riverClient,
		User:     opsTestUser,
		Password: opsTestPassword,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("NewOpsHandler: %v", err)
	}
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return &opsTestBundle{server: server, river: riverClient, registry: registry}
}

// get fetches path from the ops server, with Basic credentials when user is
// not empty, and returns the response with its body read.
func (b *opsTestBundle) get(t *testing.T, path, user, password string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.server.URL+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	res, err := b.server.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body of GET %s: %v", path, err)
	}
	return res, string(body)
}

// requireOpsUnauthorized checks the response is a Basic challenge for our realm,
// which is what makes a browser prompt for credentials.
func requireOpsUnauthorized(t *testing.T, res *http.Response) {
	t.Helper()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status = %d, want 401", res.StatusCode)
	}
	if got, want := res.Header.Get("WWW-Authenticate"), `Basic realm="nxg-ops"`; got != want {
		t.Fatalf("WWW-Authenticate = %q, want %q", got, want)
	}
}

func TestOpsHandler(t *testing.T) {
	t.Parallel()

	t.Run("MetricsNeedNoAuth", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)
		res, body := b.get(t, "/metrics", "", "")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200; body: %s", res.StatusCode, body)
		}
		if !strings.Contains(body, "nxg_ops_test_probe_total 3") {
			t.Fatalf("/metrics lacks the registered probe counter; body:\n%s", body)
		}
		// The scrape counters are added to the same registry, so a second
		// scrape sees the first.
		_, body = b.get(t, "/metrics", "", "")
		if !strings.Contains(body, `promhttp_metric_handler_requests_total{code="200"} 1`) {
			t.Fatalf("/metrics lacks its own scrape counter; body:\n%s", body)
		}
	})

	t.Run("MetricsOnlyGet", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)
		res, err := b.server.Client().Post(b.server.URL+"/metrics", "text/plain", nil)
		if err != nil {
			t.Fatalf("POST /metrics: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("POST /metrics status = %d, want 405", res.StatusCode)
		}
	})

	t.Run("RiverUIRequiresAuth", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)

		res, _ := b.get(t, "/riverui/", "", "")
		requireOpsUnauthorized(t, res)

		res, _ = b.get(t, "/riverui/", opsTestUser, "wrong")
		requireOpsUnauthorized(t, res)

		res, _ = b.get(t, "/riverui/", "intruder", opsTestPassword)
		requireOpsUnauthorized(t, res)

		// The API is behind the same gate as the pages.
		res, _ = b.get(t, "/riverui/api/jobs?state=available", "", "")
		requireOpsUnauthorized(t, res)
	})

	t.Run("RiverUIServesPage", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)
		res, body := b.get(t, "/riverui/", opsTestUser, opsTestPassword)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200; body: %s", res.StatusCode, body)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("Content-Type = %q, want text/html", ct)
		}
		if !strings.Contains(strings.ToLower(body), "<html") {
			t.Fatalf("body is not an HTML page:\n%s", body)
		}
		// The single-page app must be told its prefix, or it would load its
		// assets and API from the ops port's root and get 404s.
		if !strings.Contains(body, "/riverui") {
			t.Fatalf("page does not mention its /riverui prefix:\n%s", body)
		}
	})

	t.Run("RiverUIListsJobs", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)
		inserted, err := b.river.Insert(t.Context(), opsProbeArgs{Note: "hello"}, nil)
		if err != nil {
			t.Fatalf("insert job: %v", err)
		}

		res, body := b.get(t, "/riverui/api/jobs?state=available", opsTestUser, opsTestPassword)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, want 200; body: %s", res.StatusCode, body)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("Content-Type = %q, want application/json", ct)
		}
		var list struct {
			Data []struct {
				ID    int64  `json:"id"`
				Kind  string `json:"kind"`
				State string `json:"state"`
				Args  string `json:"args"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("decode job list: %v; body: %s", err, body)
		}
		if len(list.Data) != 1 {
			t.Fatalf("listed %d jobs, want 1; body: %s", len(list.Data), body)
		}
		job := list.Data[0]
		if job.ID != inserted.Job.ID || job.Kind != "ops_test_probe" || job.State != "available" {
			t.Fatalf("listed job = %+v, want id %d kind ops_test_probe state available", job, inserted.Job.ID)
		}
		if !strings.Contains(job.Args, "hello") {
			t.Fatalf("listed job args = %q, want the inserted note", job.Args)
		}
	})

	t.Run("PprofRequiresAuth", func(t *testing.T) {
		t.Parallel()
		b := setupOps(t)

		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
			res, _ := b.get(t, path, "", "")
			requireOpsUnauthorized(t, res)
			res, _ = b.get(t, path, opsTestUser, "wrong")
			requireOpsUnauthorized(t, res)
		}

		res, body := b.get(t, "/debug/pprof/", opsTestUser, opsTestPassword)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("index status = %d, want 200; body: %s", res.StatusCode, body)
		}
		if !strings.Contains(body, "goroutine") {
			t.Fatalf("pprof index does not list profiles:\n%s", body)
		}

		res, body = b.get(t, "/debug/pprof/heap", opsTestUser, opsTestPassword)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("heap status = %d, want 200", res.StatusCode)
		}
		if len(body) == 0 {
			t.Fatal("heap profile is empty")
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Fatalf("heap Content-Type = %q, want application/octet-stream", ct)
		}
	})

	t.Run("RejectsMissingConfig", func(t *testing.T) {
		t.Parallel()
		registry := prometheus.NewRegistry()
		if _, err := NewOpsHandler(t.Context(), OpsConfig{Registry: registry, User: "u", Password: "p"}); err == nil {
			t.Fatal("NewOpsHandler without a River client succeeded, want an error")
		}
		// A River client can be built without a started database; the
		// password check must come before anything touches it.
		client, err := river.NewClient(riverpgxv5.New(nil), &river.Config{})
		if err != nil {
			t.Fatalf("new River client: %v", err)
		}
		if _, err := NewOpsHandler(t.Context(), OpsConfig{Registry: registry, River: client, User: "u"}); err == nil {
			t.Fatal("NewOpsHandler without a password succeeded, want an error")
		}
		if _, err := NewOpsHandler(t.Context(), OpsConfig{River: client, User: "u", Password: "p"}); err == nil {
			t.Fatal("NewOpsHandler without a registry succeeded, want an error")
		}
	})
}
