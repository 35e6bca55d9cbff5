package integrations_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nxg-fitness/nxg/internal/integrations"
)

func breakerGauge(t *testing.T, b *testBundle) float64 {
	t.Helper()
	return metricValue(t, b.reg, "nxg_integration_breaker_state", map[string]string{"service": testService})
}

// waitForProbe waits out the open breaker for as long as its refusal said.
// gobreaker's clock cannot be injected; OpenTimeout is kept short instead.
func waitForProbe(t *testing.T, refused error) {
	t.Helper()
	e := asError(t, refused)
	time.Sleep(e.RetryAfter + 20*time.Millisecond)
}

func TestBreakerOpensFailsFastAndRecovers(t *testing.T) {
	t.Parallel()
	b := setup(t, always(http.StatusServiceUnavailable), func(c *integrations.Config) {
		c.FailureThreshold = 3
		c.MaxAttempts = 1
		c.OpenTimeout = 200 * time.Millisecond
	})
	ctx := context.Background()

	for i := range 3 {
		if err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil); err == nil {
			t.Fatalf("call %d succeeded against a 503", i)
		}
	}
	if s := b.client.State(); s != "open" {
		t.Fatalf("State after 3 failures = %s, want open", s)
	}
	if g := breakerGauge(t, b); g != 2 {
		t.Errorf("breaker gauge = %v, want 2 (open)", g)
	}

	refused := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, refused)
	if !errors.Is(refused, integrations.ErrCircuitOpen) || !e.Retryable || e.Status != 0 {
		t.Errorf("err = %+v, want a retryable ErrCircuitOpen", e)
	}
	if e.RetryAfter <= 0 || e.RetryAfter > 200*time.Millisecond {
		t.Errorf("RetryAfter = %s, want the time until the probe, in (0, 200ms]", e.RetryAfter)
	}
	if n := len(b.svc.Hits()); n != 3 {
		t.Errorf("service saw %d requests, want 3: an open breaker sends nothing", n)
	}
	if got := calls(t, b, "circuit_open"); got != 1 {
		t.Errorf("calls{circuit_open} = %v, want 1", got)
	}

	waitForProbe(t, refused)
	// The gauge must show half-open without a call: the scrape asks the breaker.
	if g := breakerGauge(t, b); g != 1 {
		t.Errorf("breaker gauge after OpenTimeout = %v, want 1 (half-open)", g)
	}
	b.svc.SetRespond(succeeding)
	var out reply
	if err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, &out); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if n := len(b.svc.Hits()); n != 4 {
		t.Errorf("service saw %d requests, want 4 (the probe)", n)
	}
	if s := b.client.State(); s != "closed" {
		t.Errorf("State after a successful probe = %s, want closed", s)
	}
	if g := breakerGauge(t, b); g != 0 {
		t.Errorf("breaker gauge = %v, want 0 (closed)", g)
	}
}

func TestOpenBreakerStopsTheRetriesOfACallInProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, always(http.StatusServiceUnavailable), func(c *integrations.Config) {
		c.FailureThreshold = 2
		c.MaxAttempts = 5
		c.OpenTimeout = 200 * time.Millisecond
	})

	err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	e := asError(t, err)
	// The second 503 opened the breaker: the call ends with it at once, and
	// says when the breaker will let a probe through.
	if e.Status != http.StatusServiceUnavailable || !e.Retryable || e.RetryAfter <= 0 || e.RetryAfter > 200*time.Millisecond {
		t.Errorf("err = %+v, want the retryable 503 with RetryAfter = time until the probe", e)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want 2 (the threshold), not MaxAttempts", n)
	}
	if got := metricValue(t, b.reg, "nxg_integration_retries_total", map[string]string{"service": testService}); got != 1 {
		t.Errorf("retries = %v, want 1: no wait after the failure that opened the breaker", got)
	}

	// A call arriving meanwhile is refused without a request.
	err = b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k2", nil, nil)
	if !errors.Is(err, integrations.ErrCircuitOpen) {
		t.Errorf("err = %v, want ErrCircuitOpen", err)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want still 2", n)
	}
}

func TestServerErrorCountsAgainstTheBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t, always(http.StatusInternalServerError), func(c *integrations.Config) { c.FailureThreshold = 2 })

	for range 2 {
		_ = b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	}
	if s := b.client.State(); s != "open" {
		t.Errorf("State after two 500s = %s, want open", s)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want 2 (500 is not retried within a call)", n)
	}
}

func TestClientErrorsDoNotOpenTheBreaker(t *testing.T) {
	t.Parallel()
	statuses := []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusUnprocessableEntity, http.StatusNotFound, http.StatusBadRequest}
	b := setup(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		writeError(w, statuses[n%len(statuses)], "invalid_request", "no")
	}, func(c *integrations.Config) { c.FailureThreshold = 2 })

	for range statuses {
		err := b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
		if errors.Is(err, integrations.ErrCircuitOpen) {
			t.Fatalf("err = %v: a 4xx opened the breaker", err)
		}
	}
	if s := b.client.State(); s != "closed" {
		t.Errorf("State = %s, want closed", s)
	}
	if n := len(b.svc.Hits()); n != len(statuses) {
		t.Errorf("service saw %d requests, want %d", n, len(statuses))
	}
}

func TestClientErrorResetsTheConsecutiveFailures(t *testing.T) {
	t.Parallel()
	// 503, 400, 503: never two failures in a row, because a 400 shows the
	// service is up and answering.
	script := []int{http.StatusServiceUnavailable, http.StatusBadRequest, http.StatusServiceUnavailable}
	b := setup(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		writeError(w, script[n], "x", "x")
	}, func(c *integrations.Config) {
		c.FailureThreshold = 2
		c.MaxAttempts = 1
	})

	for range script {
		_ = b.client.Do(context.Background(), http.MethodPost, "/v1/plans", "k", nil, nil)
	}
	if s := b.client.State(); s != "closed" {
		t.Errorf("State = %s, want closed", s)
	}
}

func TestFailedProbeReopensTheBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t, always(http.StatusBadGateway), func(c *integrations.Config) {
		c.FailureThreshold = 1
		c.MaxAttempts = 3
		c.OpenTimeout = 100 * time.Millisecond
	})
	ctx := context.Background()

	_ = b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	refused := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	if !errors.Is(refused, integrations.ErrCircuitOpen) {
		t.Fatalf("err = %v, want ErrCircuitOpen", refused)
	}
	waitForProbe(t, refused)

	e := asError(t, b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil))
	if e.Status != http.StatusBadGateway || e.RetryAfter <= 0 || e.RetryAfter > 100*time.Millisecond {
		t.Errorf("err = %+v, want the probe's 502 with RetryAfter = time until the next probe", e)
	}
	if s := b.client.State(); s != "open" {
		t.Errorf("State after a failed probe = %s, want open", s)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want 2 (first failure, failed probe)", n)
	}
}

func TestHalfOpenLetsOneProbeThrough(t *testing.T) {
	t.Parallel()
	probing := make(chan struct{})
	release := make(chan struct{})
	b := setup(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 0 {
			writeError(w, http.StatusServiceUnavailable, "unavailable", "down")
			return
		}
		close(probing)
		<-release
		writeJSON(w, http.StatusOK, map[string]string{"id": "ok"})
	}, func(c *integrations.Config) {
		c.FailureThreshold = 1
		c.MaxAttempts = 1
		c.OpenTimeout = 100 * time.Millisecond
		c.Timeout = 750 * time.Millisecond
	})
	ctx := context.Background()
	_ = b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil)
	waitForProbe(t, b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil))

	probeDone := make(chan error, 1)
	go func() { probeDone <- b.client.Do(ctx, http.MethodPost, "/v1/plans", "probe", nil, nil) }()
	<-probing
	err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "second", nil, nil)
	e := asError(t, err)
	if !errors.Is(err, integrations.ErrCircuitOpen) || e.RetryAfter != 750*time.Millisecond {
		t.Errorf("err = %+v, want ErrCircuitOpen with RetryAfter = the attempt timeout while the probe runs", e)
	}
	close(release)
	if err := <-probeDone; err != nil {
		t.Fatalf("probe: %v", err)
	}
	if s := b.client.State(); s != "closed" {
		t.Errorf("State = %s, want closed", s)
	}
	if n := len(b.svc.Hits()); n != 2 {
		t.Errorf("service saw %d requests, want 2 (the failure and the one probe)", n)
	}
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	b := setup(t, failing(1, http.StatusServiceUnavailable, nil), func(c *integrations.Config) {
		c.FailureThreshold = 1
		c.MaxAttempts = 3
	})

	// The first attempt's 503 opens the breaker (threshold 1), which ends
	// that call as a failure; the next call is refused by the breaker.
	ctx := context.Background()
	if err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k", nil, nil); err == nil {
		t.Fatal("first call succeeded against a 503")
	}
	if err := b.client.Do(ctx, http.MethodPost, "/v1/plans", "k2", nil, nil); !errors.Is(err, integrations.ErrCircuitOpen) {
		t.Fatalf("err = %v, want ErrCircuitOpen", err)
	}
	want := `
# HELP nxg_integration_attempts_total HTTP requests sent to outside services (each attempt of a call).
# TYPE nxg_integration_attempts_total counter
nxg_integration_attempts_total{service="testsvc"} 1
# HELP nxg_integration_breaker_state Circuit breaker state per outside service: 0 closed, 1 half-open, 2 open.
# TYPE nxg_integration_breaker_state gauge
nxg_integration_breaker_state{service="testsvc"} 2
# HELP nxg_integration_calls_total Logical calls to outside services, by how they ended.
# TYPE nxg_integration_calls_total counter
nxg_integration_calls_total{outcome="canceled",service="testsvc"} 0
nxg_integration_calls_total{outcome="circuit_open",service="testsvc"} 1
nxg_integration_calls_total{outcome="client_error",service="testsvc"} 0
nxg_integration_calls_total{outcome="failure",service="testsvc"} 1
nxg_integration_calls_total{outcome="success",service="testsvc"} 0
# HELP nxg_integration_retries_total Retries of calls to outside services (waits before another attempt).
# TYPE nxg_integration_retries_total counter
nxg_integration_retries_total{service="testsvc"} 0
`
	if err := testutil.GatherAndCompare(b.reg, strings.NewReader(want),
		"nxg_integration_attempts_total", "nxg_integration_breaker_state",
		"nxg_integration_calls_total", "nxg_integration_retries_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(b.reg, "nxg_integration_call_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration histogram series = %d (%v), want 2 (failure, circuit_open)", n, err)
	}
	if got := metricValue(t, b.reg, "nxg_integration_call_duration_seconds", map[string]string{"service": testService, "outcome": "circuit_open"}); got != 1 {
		t.Errorf("duration observations = %v, want 1", got)
	}
}
