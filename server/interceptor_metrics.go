package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
)

// rpcDurationBuckets span what an API call can reasonably take: 5 ms for a
// cached read up to 10 s, past which a phone has long given up. Anything
// slower lands in +Inf, which is itself the signal.
var rpcDurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// metricsCodeOK is the code label of a call that succeeded. Connect has no
// code for success, and "ok" reads naturally next to its snake_case codes.
const metricsCodeOK = "ok"

// MetricsInterceptor records Prometheus metrics for every RPC the server
// handles: how many ended with which code, how long they took, and how many
// streams are open. It is a no-op on the client side, because NXG's own
// outgoing calls are measured where they are made (integrations wrapper).
//
// Put it first (outermost) in the handler's interceptor list: it then times
// the whole chain, and it sees the codes the client is actually sent,
// including panics turned into internal errors and requests rejected by
// authentication, rate limiting or validation.
type MetricsInterceptor struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  *prometheus.GaugeVec
}

var _ connect.Interceptor = (*MetricsInterceptor)(nil)

// NewMetricsInterceptor creates the RPC metrics and registers them on reg.
// A registration error (e.g. the names are already taken) is returned rather
// than panicking, so a misconfigured process fails at startup with a message;
// on error nothing stays registered, so the caller may retry on another
// registry.
func NewMetricsInterceptor(reg prometheus.Registerer) (*MetricsInterceptor, error) {
	if reg == nil {
		return nil, errors.New("metrics interceptor: registerer is required")
	}
	m := &MetricsInterceptor{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nxg_rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code (\"ok\" on success).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nxg_rpc_duration_seconds",
			Help:    "Time to handle an RPC, by procedure; for a stream, its whole lifetime.",
			Buckets: rpcDurationBuckets,
		}, []string{"procedure"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nxg_rpc_streams_active",
			Help: "Streaming RPCs being handled now, by procedure.",
		}, []string{"procedure"}),
	}
	collectors := []prometheus.Collector{m.requests, m.duration, m.streams}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			// Undo the registrations that succeeded so a failed constructor
			// leaves the registry as it found it.
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("metrics interceptor: register RPC metrics: %w", err)
		}
	}
	return m, nil
}

// WrapUnary records the outcome and duration of a unary call handled by this
// server; calls made by a client pass through untouched.
func (m *MetricsInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		res, err := next(ctx, req)
		m.observe(req.Spec().Procedure, start, err)
		return res, err
	}
}

// WrapStreamingClient passes client streams through: see MetricsInterceptor.
func (m *MetricsInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler counts a stream as active while its handler runs, and
// records its outcome and lifetime when it returns.
func (m *MetricsInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		procedure := conn.Spec().Procedure
		active := m.streams.WithLabelValues(procedure)
		active.Inc()
		// The deferred Dec also runs if the handler panics, so a panicking
		// stream cannot leave the gauge permanently raised.
		defer active.Dec()
		start := time.Now()
		err := next(ctx, conn)
		m.observe(procedure, start, err)
		return err
	}
}

// observe records one finished call. The procedure label comes from the
// handler's spec, never from the request path, so its values are bounded by
// the services we mount and a scanner cannot blow up the series count.
func (m *MetricsInterceptor) observe(procedure string, start time.Time, err error) {
	code := metricsCodeOK
	if err != nil {
		// connect.CodeOf gives "unknown" for errors that are not
		// *connect.Error, which is also what Connect sends the client for
		// them, so the metric matches what callers saw.
		code = connect.CodeOf(err).String()
	}
	m.requests.WithLabelValues(procedure, code).Inc()
	m.duration.WithLabelValues(procedure).Observe(time.Since(start).Seconds())
}
