// Package server is NXG's HTTP face: one handler serving every Connect
// service as Connect (JSON and binary), gRPC and gRPC-Web, plus health,
// readiness and gRPC reflection, behind CORS and request ids; and the
// http.Server settings that carry it over HTTP/1.1, h2c or TLS 1.3.
package server

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/cors"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// maxMessageBytes caps one request message. The largest legitimate message
// is far smaller (photos go to S3 directly), so anything bigger is refused
// before it is buffered.
const maxMessageBytes = 1 << 20

// Options is what the API handler needs.
type Options struct {
	Pool      *pgxpool.Pool
	Logger    *slog.Logger
	Readiness *Readiness
	// Metrics records per-procedure counts and latencies; required.
	Metrics *MetricsInterceptor
	// CORSOrigins are the browser origins allowed to call the API; none
	// means browsers on other origins are refused.
	CORSOrigins []string
	// UnaryTimeout bounds a unary RPC whose client set no deadline.
	UnaryTimeout time.Duration
}

// NewHandler returns the API handler.
func NewHandler(opts Options) (http.Handler, error) {
	if opts.Pool == nil || opts.Logger == nil || opts.Readiness == nil || opts.Metrics == nil {
		return nil, errors.New("server: Pool, Logger, Readiness and Metrics are required")
	}
	if opts.UnaryTimeout <= 0 {
		opts.UnaryTimeout = 30 * time.Second
	}

	handlerOpts := handlerOptions(opts)

	mux := http.NewServeMux()
	services := []struct {
		name  string
		mount func() (string, http.Handler)
	}{
		{nxgv1connect.GymServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewGymServiceHandler(NewGymService(opts.Pool), handlerOpts...)
		}},
	}
	names := make([]string, 0, len(services))
	for _, s := range services {
		mux.Handle(s.mount())
		names = append(names, s.name)
	}

	reflector := grpcreflect.NewStaticReflector(names...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(opts.Readiness))
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /readyz", opts.Readiness)

	return withRequestID(withCORS(opts.CORSOrigins, mux)), nil
}

// handlerOptions are the options every Connect service is mounted with.
func handlerOptions(opts Options) []connect.HandlerOption {
	// Interceptors run outermost first. The access log and metrics sit
	// outside the error mapper so they record the code the client got; the
	// Sentry hub is set up before the mapper so it can report faults with
	// request context; validation runs innermost, just before the handler.
	return []connect.HandlerOption{
		connect.WithInterceptors(
			newAccessLogInterceptor(opts.Logger),
			opts.Metrics,
			newSentryInterceptor(),
			newErrorInterceptor(opts.Logger),
			newTimeoutInterceptor(opts.UnaryTimeout),
			validate.NewInterceptor(),
		),
		connect.WithReadMaxBytes(maxMessageBytes),
		connect.WithCompressMinBytes(1024),
	}
}

// withCORS lets the listed browser origins (the staff dashboard) call the
// API with the headers Connect and gRPC-Web use. With no origins configured
// no CORS headers are sent at all, so browsers refuse cross-origin calls.
func withCORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		AllowedMethods: connectcors.AllowedMethods(),
		AllowedHeaders: append(connectcors.AllowedHeaders(),
			"Authorization", "Idempotency-Key", requestid.Header),
		ExposedHeaders: append(connectcors.ExposedHeaders(), requestid.Header),
		// Browsers cache a preflight for at most 2 hours anyway.
		MaxAge: 7200,
	}).Handler(next)
}

// NewHTTPServer returns the http.Server for the API. It speaks HTTP/1.1 and
// HTTP/2: cleartext h2c without TLS (behind a TLS-terminating load
// balancer), or TLS 1.3 only when tlsEnabled. There is deliberately no
// ReadTimeout or WriteTimeout: they would cut server streams that live for
// hours; unary RPCs get deadlines from the timeout interceptor and slow
// clients are bounded by ReadHeaderTimeout and IdleTimeout.
func NewHTTPServer(addr string, handler http.Handler, tlsEnabled bool, logger *slog.Logger) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if tlsEnabled {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		Addr:              addr,
		Handler:           handler,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{
			// Bounds how many streams (watching clients, machines) one
			// connection may hold open.
			MaxConcurrentStreams: 250,
		},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if tlsEnabled {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS13}
	}
	return srv
}
