package server

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/grpchealth"
)

// Check is one dependency readiness depends on. Fn returns nil when the
// dependency answers.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Readiness decides whether this instance should receive traffic: every
// check must pass within CheckTimeout. It serves GET /readyz and the
// grpc.health.v1 Check for the whole server.
type Readiness struct {
	checks       []Check
	checkTimeout time.Duration

	mu   sync.RWMutex
	info map[string]func() any
}

// NewReadiness builds readiness from checks run concurrently, each bounded
// by timeout so one hung dependency cannot hang a load balancer's probe.
func NewReadiness(timeout time.Duration, checks ...Check) *Readiness {
	return &Readiness{checks: checks, checkTimeout: timeout, info: map[string]func() any{}}
}

// AddInfo adds a section to /readyz's body that informs operators without
// affecting readiness (circuit breaker states, for instance).
func (r *Readiness) AddInfo(name string, fn func() any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.info[name] = fn
}

// checkResult is one check's line in /readyz.
type checkResult struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// readyReport is the JSON body of /readyz.
type readyReport struct {
	Status string                 `json:"status"`
	Checks map[string]checkResult `json:"checks"`
	Info   map[string]any         `json:"info,omitempty"`
}

// Evaluate runs every check and reports whether all passed.
func (r *Readiness) Evaluate(ctx context.Context) (bool, readyReport) {
	report := readyReport{Status: "ready", Checks: make(map[string]checkResult, len(r.checks))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range r.checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, r.checkTimeout)
			defer cancel()
			res := checkResult{Status: "ok"}
			if err := c.Fn(cctx); err != nil {
				res = checkResult{Status: "failing", Error: err.Error()}
			}
			mu.Lock()
			report.Checks[c.Name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	ok := true
	for _, res := range report.Checks {
		if res.Status != "ok" {
			ok = false
			report.Status = "not_ready"
		}
	}
	r.mu.RLock()
	if len(r.info) > 0 {
		report.Info = make(map[string]any, len(r.info))
		for _, name := range slices.Sorted(maps.Keys(r.info)) {
			report.Info[name] = r.info[name]()
		}
	}
	r.mu.RUnlock()
	return ok, report
}

// ServeHTTP answers GET /readyz: 200 when ready, 503 otherwise, with a JSON
// body naming each check's state.
func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	ok, report := r.Evaluate(req.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(report)
}

// Check implements grpchealth.Checker: the whole server ("") and each of
// our services are serving exactly when the server is ready.
func (r *Readiness) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if ok, _ := r.Evaluate(ctx); !ok {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// healthz answers GET /healthz: the process is alive and serving HTTP. It
// checks no dependency on purpose, so an orchestrator never restarts a
// healthy process because the database blinked.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}
