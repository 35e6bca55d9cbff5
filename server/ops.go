package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"
)

// opsRealm names the protected area in the Basic challenge, so a browser
// shows operators which credentials it wants.
const opsRealm = "nxg-ops"

// riverUIPrefix is where River UI lives on the ops port. River UI needs to
// know it too, because its single-page app builds asset and API URLs from it.
const riverUIPrefix = "/riverui"

// OpsConfig is what the ops port needs.
type OpsConfig struct {
	// Registry is the process's metrics registry, served on /metrics. The
	// caller registers the Go and process collectors on it; the ops handler
	// only adds promhttp's own scrape counters.
	Registry *prometheus.Registry
	// River is the client whose jobs and queues River UI shows. It does not
	// have to be started: River UI reads and changes jobs through the
	// client's driver, which holds the database pool.
	River *river.Client[pgx.Tx]
	// User and Password guard River UI and pprof with HTTP Basic auth. Both
	// are required: an ops port with an empty password would hand job
	// control and heap dumps to anyone who can reach it.
	User, Password string
	// Logger receives River UI's and promhttp's errors; nil means
	// slog.Default().
	Logger *slog.Logger
}

// NewOpsHandler returns the handler for the private ops port:
//
//   - GET /metrics: the Prometheus exposition of cfg.Registry, without auth,
//     because scrapers rarely carry credentials and the port is not public.
//   - /riverui/: River UI (embedded assets, JSON API under /riverui/api/),
//     behind Basic auth, because it can cancel, retry and delete jobs.
//   - /debug/pprof/: the net/http/pprof handlers, behind Basic auth, because
//     profiles and heap dumps reveal memory contents.
//
// River UI runs background services (cached job counts); they are started
// here with ctx and stop when ctx is done, so ctx should live as long as the
// process serves the ops port. They only need the database, not a started
// River client.
func NewOpsHandler(ctx context.Context, cfg OpsConfig) (http.Handler, error) {
	if cfg.Registry == nil {
		return nil, errors.New("ops: metrics registry is required")
	}
	if cfg.River == nil {
		return nil, errors.New("ops: River client is required")
	}
	if cfg.User == "" || cfg.Password == "" {
		return nil, errors.New("ops: user and password are required to protect River UI and pprof")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}

	ui, err := riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(cfg.River, nil),
		Logger:    logger.With("component", "riverui"),
		Prefix:    riverUIPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("ops: create River UI handler: %w", err)
	}
	if err := ui.Start(ctx); err != nil {
		return nil, fmt.Errorf("ops: start River UI: %w", err)
	}

	auth := opsBasicAuth(cfg.User, cfg.Password)
	mux := http.NewServeMux()

	// InstrumentMetricHandler adds scrape counters to the same registry, so
	// a failing or slow scrape is itself visible; it reuses them if a second
	// ops handler is built over the registry (tests do).
	mux.Handle("GET /metrics", promhttp.InstrumentMetricHandler(cfg.Registry,
		promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
			// One broken collector should cost its own series, not the whole
			// scrape and every alert that depends on it.
			ErrorHandling: promhttp.ContinueOnError,
			ErrorLog:      slog.NewLogLogger(logger.With("component", "promhttp").Handler(), slog.LevelError),
			Registry:      cfg.Registry,
		})))

	// River UI strips its own prefix, so it is mounted with the full path.
	// The pattern without a method lets its POST/PUT/PATCH job and queue
	// actions through.
	mux.Handle(riverUIPrefix+"/", auth(ui))

	// pprof is registered on this mux by hand: importing net/http/pprof also
	// registers on http.DefaultServeMux, but nothing in NXG serves that mux,
	// so profiles are reachable only here, behind auth. Index serves the
	// named profiles (heap, goroutine, allocs, ...) under its prefix.
	mux.Handle("/debug/pprof/", auth(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", auth(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", auth(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", auth(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", auth(http.HandlerFunc(pprof.Trace)))

	return mux, nil
}

// opsBasicAuth returns middleware admitting only requests with the given Basic
// credentials. Both the user and the password are compared in constant time,
// and always both, so response timing says nothing about which one was wrong
// or how much of it matched. Comparing SHA-256 digests rather than the raw
// strings keeps the comparison constant-time in the length as well, since
// subtle.ConstantTimeCompare returns early on a length mismatch.
func opsBasicAuth(user, password string) func(http.Handler) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPassword := sha256.Sum256([]byte(password))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			gotUser, gotPassword, ok := r.BasicAuth()
			gotUserSum := sha256.Sum256([]byte(gotUser))
			gotPasswordSum := sha256.Sum256([]byte(gotPassword))
			userMatch := subtle.ConstantTimeCompare(gotUserSum[:], wantUser[:])
			passwordMatch := subtle.ConstantTimeCompare(gotPasswordSum[:], wantPassword[:])
			if !ok || userMatch&passwordMatch != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="`+opsRealm+`"`)
				http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
