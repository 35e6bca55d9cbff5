package integrations

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Metrics are the Prometheus metrics of every integration client, labelled
// by service. One Metrics is shared by all clients of a process.
//
//	nxg_integration_calls_total{service,outcome}     logical calls by how they ended:
//	                                                 success, client_error, failure,
//	                                                 circuit_open, canceled
//	nxg_integration_attempts_total{service}          HTTP requests sent
//	nxg_integration_retries_total{service}           waits before another attempt
//	nxg_integration_call_duration_seconds{service,outcome}
//	                                                 logical call time, retries included
//	nxg_integration_breaker_state{service}           0 closed, 1 half-open, 2 open
type Metrics struct {
	calls    *prometheus.CounterVec
	attempts *prometheus.CounterVec
	retries  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	breakers *breakerStates
}

// NewMetrics creates the metrics and registers them on reg (nil → not
// registered, for tools and tests that do not expose them).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxg_integration_calls_total",
			Help: "Logical calls to outside services, by how they ended.",
		}, []string{"service", "outcome"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxg_integration_attempts_total",
			Help: "HTTP requests sent to outside services (each attempt of a call).",
		}, []string{"service"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxg_integration_retries_total",
			Help: "Retries of calls to outside services (waits before another attempt).",
		}, []string{"service"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nxg_integration_call_duration_seconds",
			Help:    "Duration of logical calls to outside services, retries and waits included.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60},
		}, []string{"service", "outcome"}),
		breakers: &breakerStates{
			gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "nxg_integration_breaker_state",
				Help: "Circuit breaker state per outside service: 0 closed, 1 half-open, 2 open.",
			}, []string{"service"}),
			refresh: map[string]func(){},
		},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.attempts, m.retries, m.duration, m.breakers} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("integrations: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// addService creates the service's series at zero, so dashboards and alerts
// see them before the first call, and remembers how to bring its breaker
// state up to date.
func (m *Metrics) addService(service string, refreshState func()) {
	for _, o := range allOutcomes {
		m.calls.WithLabelValues(service, string(o))
	}
	m.attempts.WithLabelValues(service)
	m.retries.WithLabelValues(service)
	m.setBreakerState(service, gobreaker.StateClosed)
	m.breakers.mu.Lock()
	m.breakers.refresh[service] = refreshState
	m.breakers.mu.Unlock()
}

func (m *Metrics) observeCall(service string, o outcome, d time.Duration) {
	m.calls.WithLabelValues(service, string(o)).Inc()
	m.duration.WithLabelValues(service, string(o)).Observe(d.Seconds())
}

func (m *Metrics) setBreakerState(service string, s gobreaker.State) {
	// gobreaker's states are numbered 0 closed, 1 half-open, 2 open: the
	// gauge's documented values.
	m.breakers.gauge.WithLabelValues(service).Set(float64(s))
}

// breakerStates is the breaker state gauge, set by gobreaker's
// OnStateChange. gobreaker only notices that an open breaker's time is up
// when someone asks, so before each scrape it asks every breaker: the gauge
// shows half-open on time even when no call came by.
type breakerStates struct {
	gauge   *prometheus.GaugeVec
	mu      sync.Mutex
	refresh map[string]func()
}

func (b *breakerStates) Describe(ch chan<- *prometheus.Desc) { b.gauge.Describe(ch) }

func (b *breakerStates) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	for _, refresh := range b.refresh {
		refresh()
	}
	b.mu.Unlock()
	b.gauge.Collect(ch)
}
