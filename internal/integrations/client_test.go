package integrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

// hit is one request the fake service received.
type hit struct {
	at          time.Time
	method      string
	path        string
	key         string
	apiKey      string
	userAgent   string
	contentType string
	body        string
}

// fakeService is an outside service over real HTTP whose answers a test
// scripts: respond gets the 0-based number of the request.
type fakeService struct {
	srv     *httptest.Server
	mu      sync.Mutex
	hits    []hit
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	n := len(f.hits)
	f.hits = append(f.hits, hit{
		at: time.Now(), method: r.Method, path: r.URL.Path,
		key: r.Header.Get("Idempotency-Key"), apiKey: r.Header.Get("X-Api-Key"),
		userAgent: r.Header.Get("User-Agent"), contentType: r.Header.Get("Content-Type"),
		body: string(body),
	})
	respond := f.respond
	f.mu.Unlock()
	respond(n, w, r)
}

func (f *fakeService) Hits() []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hit(nil), f.hits...)
}

func (f *fakeService) SetRespond(respond func(n int, w http.ResponseWriter, r *http.Request)) {
	f.mu.Lock()
	f.respond = respond
	f.mu.Unlock()
}

type testBundle struct {
	svc    *fakeService
	client *integrations.Client
	reg    *prometheus.Registry
}

const (
	testService = "testsvc"
	testAPIKey  = "key-123"
)

// setup starts a fake service answering with respond and a client for it
// whose waits are short, so tests run fast; adjust changes the config.
func setup(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request), adjust func(*integrations.Config)) *testBundle {
	t.Helper()
	svc := &fakeService{respond: respond}
	svc.srv = httptest.NewServer(svc)
	t.Cleanup(svc.srv.Close)
	cfg := integrations.Config{
		Name:             testService,
		BaseURL:          svc.srv.URL,
		APIKey:           testAPIKey,
		Timeout:          2 * time.Second,
		MaxAttempts:      4,
		BackoffInitial:   time.Millisecond,
		BackoffMax:       5 * time.Millisecond,
		MaxRetryAfter:    5 * time.Second,
		FailureThreshold: 100, // out of the way unless a test is about the breaker
		OpenTimeout:      200 * time.Millisecond,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	reg := prometheus.NewRegistry()
	m, err := integrations.NewMetrics(reg)
	if err != nil {
		t.Fatalf("NewMetrics: %v", err)
	}
	c, err := integrations.New(cfg, m)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &testBundle{svc: svc, client: c, reg: reg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": message}})
}

// failing answers status (with the documented error body) to the first n
// requests and 200 {"id":"ok"} afterwards.
func failing(n, status int, header http.Header) func(int, http.ResponseWriter, *http.Request) {
	return func(i int, w http.ResponseWriter, _ *http.Request) {
		if i < n {
			for k, v := range header {
				w.Header()[k] = v
			}
			writeError(w, status, "unavailable", "try later")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": "ok"})
	}
}

// succeeding answers 200 {"id":"ok"} to every request.
var succeeding = failing(0, 0, nil)

func always(status int) func(int, http.ResponseWriter, *http.Request) {
	return failing(1<<30, status, nil)
}

type reply struct {
	ID string `json:"id"`
}

type planRequest struct {
	Goal string `json:"goal"`
	Days int    `json:"days_per_week"`
}

func asError(t *testing.T, err error) *integrations.Error {
	t.Helper()
	var e *integrations.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *integrations.Error", err, err)
	}
	return e
}

// metricValue reads one counter or gauge series from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func calls(t *testing.T, b *testBundle, outcome string) float64 {
	t.Helper()
	return metricValue(t, b.reg, "nxg_integration_calls_total", map[string]string{"service": testService, "outcome": outcome})
}

func TestRetriesRetryableStatusWithTheSameIdempotencyKey(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, failing(2, status, nil), nil)

			var out reply
			err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "call-1", planRequest{Goal: "strength", Days: 3}, &out)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if out.ID != "ok" {
				t.Errorf("out = %+v, want the 200 body decoded", out)
			}
			hits := b.svc.Hits()
			if len(hits) != 3 {
				t.Fatalf("service saw %d requests, want 3 (two failures, one success)", len(hits))
			}
			for i, h := range hits {
				if h.key != "call-1" {
					t.Errorf("attempt %d: Idempotency-Key = %q, want call-1 on every attempt", i, h.key)
				}
				if h.apiKey != testAPIKey || h.userAgent != "nxg-backend" || h.contentType != "application/json" {
					t.Errorf("attempt %d: X-Api-Key %q, User-Agent %q, Content-Type %q", i, h.apiKey, h.userAgent, h.contentType)
				}
				if h.method != http.MethodPost || h.path != "/v1/plans" {
					t.Errorf("attempt %d: %s %s, want POST /v1/plans", i, h.method, h.path)
				}
				if h.body != `{"goal":"strength","days_per_week":3}` {
					t.Errorf("attempt %d: body %q, want the same JSON on every attempt", i, h.body)
				}
			}
			if got := calls(t, b, "success"); got != 1 {
				t.Errorf("calls{success} = %v, want 1", got)
			}
			if got := metricValue(t, b.reg, "nxg_integration_attempts_total", map[string]string{"service": testService}); got != 3 {
				t.Errorf("attempts = %v, want 3", got)
			}
			if got := metricValue(t, b.reg, "nxg_integration_retries_total", map[string]string{"service": testService}); got != 2 {
				t.Errorf("retries = %v, want 2", got)
			}
		})
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, always(http.StatusServiceUnavailable), func(c *integrations.Config) { c.MaxAttempts = 3 })

	err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, err)
	if e.Status != http.StatusServiceUnavailable || !e.Retryable || e.Code != "unavailable" || e.Service != testService {
		t.Errorf("err = %+v, want a retryable 503 from %s", e, testService)
	}
	if n := len(b.svc.Hits()); n != 3 {
		t.Errorf("service saw %d requests, want MaxAttempts = 3", n)
	}
	if got := calls(t, b, "failure"); got != 1 {
		t.Errorf("calls{failure} = %v, want 1", got)
	}
}

func TestDoesNotRetryNonRetryableStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		code      string
		retryable bool
		outcome   string
	}{
		{http.StatusBadRequest, "invalid_request", false, "client_error"},
		{http.StatusUnauthorized, "unauthorized", false, "client_error"},
		{http.StatusNotFound, "not_found", false, "client_error"},
		{http.StatusUnprocessableEntity, "idempotency_key_reused", false, "client_error"},
		// A 500 is not retried within the call, but a later job may succeed.
		{http.StatusInternalServerError, "internal", true, "failure"},
		{http.StatusNotImplemented, "not_implemented", false, "failure"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				writeError(w, tt.status, tt.code, "field days_per_week: must be 1..7")
			}, nil)

			err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", map[string]int{"days_per_week": 9}, &reply{})
			e := asError(t, err)
			if n := len(b.svc.Hits()); n != 1 {
				t.Errorf("service saw %d requests, want 1 (no retry)", n)
			}
			if e.Status != tt.status || e.Code != tt.code || e.Message != "field days_per_week: must be 1..7" {
				t.Errorf("err = %+v, want status %d, code %s and the service's message", e, tt.status, tt.code)
			}
			if e.Retryable != tt.retryable {
				t.Errorf("Retryable = %v, want %v", e.Retryable, tt.retryable)
			}
			if got := calls(t, b, tt.outcome); got != 1 {
				t.Errorf("calls{%s} = %v, want 1", tt.outcome, got)
			}
		})
	}
}

func TestRetriesConnectionErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, succeeding, func(c *integrations.Config) { c.MaxAttempts = 3 })
	b.svc.srv.Close() // nothing listens any more: every attempt is refused

	err := b.client.Do(context.Background(), http.MethodGet, "/v1/plans/1", "", nil, nil)
	e := asError(t, err)
	if e.Status != 0 || !e.Retryable || e.Err == nil {
		t.Errorf("err = %+v, want a retryable transport error", e)
	}
	if got := metricValue(t, b.reg, "nxg_integration_attempts_total", map[string]string{"service": testService}); got != 3 {
		t.Errorf("attempts = %v, want 3", got)
	}
}

func TestHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			// One second is the smallest Retry-After the header can say; the
			// backoff alone (≤ 5ms here) could never produce such a gap.
			b := setup(t, failing(1, status, http.Header{"Retry-After": {"1"}}), nil)

			if err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil); err != nil {
				t.Fatalf("Do: %v", err)
			}
			hits := b.svc.Hits()
			if len(hits) != 2 {
				t.Fatalf("service saw %d requests, want 2", len(hits))
			}
			if gap := hits[1].at.Sub(hits[0].at); gap < time.Second {
				t.Errorf("second attempt came %s after the first, want ≥ the 1s Retry-After", gap)
			}
		})
	}
}

func TestRetryAfterBeyondMaxEndsTheCall(t *testing.T) {
	t.Parallel()
	b := setup(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "120")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "slow down")
	}, nil) // MaxRetryAfter is 5s

	err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, err)
	if !e.Retryable || e.RetryAfter != 120*time.Second || e.Status != http.StatusTooManyRequests || e.Code != "rate_limited" {
		t.Errorf("err = %+v, want a retryable 429 rate_limited with RetryAfter 2m", e)
	}
	if n := len(b.svc.Hits()); n != 1 {
		t.Errorf("service saw %d requests, want 1: a wait that long belongs to the job", n)
	}
}

func TestRetryAfterIsReportedWhenAttemptsRunOut(t *testing.T) {
	t.Parallel()
	b := setup(t, failing(1, http.StatusServiceUnavailable, http.Header{"Retry-After": {"3"}}), func(c *integrations.Config) { c.MaxAttempts = 1 })

	e := asError(t, b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil))
	if !e.Retryable || e.RetryAfter != 3*time.Second {
		t.Errorf("err = %+v, want retryable with the service's RetryAfter 3s", e)
	}
}

func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; the client's attempt timeout must end it
	}, func(c *integrations.Config) {
		c.Timeout = 100 * time.Millisecond
		c.MaxAttempts = 2
	})

	err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, err)
	if !e.Retryable || e.Status != 0 || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(e.Message, "no answer within 100ms") {
		t.Errorf("err = %v, want a retryable attempt timeout", err)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want 2: a timed-out attempt is retried", n)
	}
}

func TestCallerCancelStopsTheWait(t *testing.T) {
	t.Parallel()
	answered := make(chan struct{}, 1)
	b := setup(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "4") // within MaxRetryAfter: the call would wait 4s
		writeError(w, http.StatusTooManyRequests, "rate_limited", "slow down")
	}, func(c *integrations.Config) {
		// The caller cancels once the client has finished with the 429, that
		// is while it waits out the Retry-After.
		c.HTTPClient = &http.Client{Transport: notifyOnBodyClose{base: http.DefaultTransport, closed: answered}}
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-answered
		cancel()
	}()

	err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, err)
	if !errors.Is(err, context.Canceled) || !e.Retryable || e.Status != http.StatusTooManyRequests || e.RetryAfter != 4*time.Second {
		t.Errorf("err = %+v, want context.Canceled carrying the 429 that was being waited out", e)
	}
	if n := len(b.svc.Hits()); n != 1 {
		t.Errorf("service saw %d requests, want 1: the wait must end with the context", n)
	}
	if got := calls(t, b, "canceled"); got != 1 {
		t.Errorf("calls{canceled} = %v, want 1", got)
	}
}

// notifyOnBodyClose is a transport that reports when a response body is
// closed, which the client does when it is done with an attempt.
type notifyOnBodyClose struct {
	base   http.RoundTripper
	closed chan<- struct{}
}

func (n notifyOnBodyClose) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := n.base.RoundTrip(r)
	if err == nil {
		resp.Body = notifyingBody{ReadCloser: resp.Body, closed: n.closed}
	}
	return resp, err
}

type notifyingBody struct {
	io.ReadCloser
	closed chan<- struct{}
}

func (b notifyingBody) Close() error {
	err := b.ReadCloser.Close()
	select {
	case b.closed <- struct{}{}:
	default:
	}
	return err
}

func TestCallerCancelDuringAttemptDoesNotCountAgainstTheBreaker(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	b := setup(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	}, func(c *integrations.Config) { c.FailureThreshold = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-entered
		cancel()
	}()

	err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if s := b.client.State(); s != "closed" {
		t.Errorf("State = %s, want closed: the caller gave up, the service did not fail", s)
	}
}

func TestContextAlreadyDoneSendsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, succeeding, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := len(b.svc.Hits()); n != 0 {
		t.Errorf("service saw %d requests, want 0", n)
	}
}
