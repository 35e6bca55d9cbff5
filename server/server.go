// Package server is NXG's HTTP face: one handler serving every Connect
// service as Connect (JSON and binary), gRPC and gRPC-Web, plus health,
// readiness and gRPC reflection, behind CORS and request ids; and the
// http.Server settings that carry it over HTTP/1.1, h2c or TLS 1.3.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	connectcors "connectrpc.com/cors"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/validate"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/rs/cors"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"golang.org/x/net/http2"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/ticket"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/checkin"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/requestid"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// maxMessageBytes caps one request message. The largest legitimate message
// is far smaller (photos go to S3 directly), so anything bigger is refused
// before it is buffered.
const maxMessageBytes = 1 << 20

// Options is what the API handler needs.
type Options struct {
	Pool *pgxpool.Pool
	// Mongo caches outside services' answers (internal/aicache): workout
	// and meal plans an identical request is answered from.
	Mongo     *mongo.Database
	Logger    *slog.Logger
	Readiness *Readiness
	// Metrics records per-procedure counts and latencies; required.
	Metrics *MetricsInterceptor
	// CORSOrigins are the browser origins allowed to call the API; none
	// means browsers on other origins are refused.
	CORSOrigins []string
	// UnaryTimeout bounds a unary RPC whose client set no deadline.
	UnaryTimeout time.Duration
	// ClientInfo works out clients' IPs; nil trusts no proxy.
	ClientInfo *clientinfo.Resolver
	// RateLimits are the general per-address, per-account and per-device
	// limits; nil applies the defaults.
	RateLimits *RateLimits

	// Identity holds what authentication and the account services need.
	Identity Identity
	// Floor holds what check-in, machines, devices and live streams need.
	Floor Floor
}

// Floor is what the gym floor's services and streams need.
type Floor struct {
	// Hub delivers the notifications of every process's writes.
	Hub *realtime.Hub
	// Codes issues and verifies the branches' entrance codes.
	Codes *checkin.Codes
	// Settings tune sessions, machines and streams.
	Settings floor.Settings
	// Draining is cancelled when the server starts shutting down: live
	// streams end then, so the HTTP server's drain does not wait on them.
	Draining context.Context
	// Lag measures how far the machine feed runs behind the database;
	// nil measures nothing.
	Lag *FeedLag
}

func (f Floor) complete() bool {
	return f.Hub != nil && f.Codes != nil && f.Draining != nil
}

// Identity is the set of stores and keys behind accounts and sessions.
type Identity struct {
	Tokens       *token.Issuer
	Sessions     *session.Store
	Passwords    *password.Hasher
	LoginLimiter *ratelimit.LoginLimiter
	Limiter      *ratelimit.Limiter
	Audit        *audit.Log
	MasterKeys   *fieldcrypt.MasterKeys
	Storage      *storage.Client
	// River inserts jobs (exports, erasures) in the callers' transactions.
	River *river.Client[pgx.Tx]
	// JWKS is the public key set served at /.well-known/jwks.json.
	JWKS []byte
	// Tickets issues and redeems the single-use tickets that open /ws.
	Tickets *ticket.Store
	// Authenticator turns access tokens into principals, caching what it
	// verified. Every entry point of a process shares one: the RPC
	// interceptor, the WebSocket upgrade and the stream guard, which tells
	// it of revocations made by other processes. Nil makes NewHandler
	// build one over Tokens and Sessions.
	Authenticator *auth.Authenticator
}

// authenticator is the process's Authenticator. NewHandler sets it before
// anything asks, so every entry point shares one. An Identity put together
// by hand (services mounted alone in tests) gets one of its own per call,
// without caches: there is nothing to share them with.
func (id Identity) authenticator() *auth.Authenticator {
	if id.Authenticator != nil {
		return id.Authenticator
	}
	return auth.New(auth.Config{Tokens: id.Tokens, Sessions: id.Sessions, TokenCacheSize: -1, SessionCacheTTL: -1})
}

func (id Identity) complete() bool {
	return id.Tokens != nil && id.Sessions != nil && id.Passwords != nil && id.LoginLimiter != nil &&
		id.Limiter != nil && id.Audit != nil && id.MasterKeys != nil && id.Storage != nil &&
		id.River != nil && len(id.JWKS) > 0 && id.Tickets != nil
}

// publicProcedures need no access token.
var publicProcedures = []string{
	nxgv1connect.GymServiceListBranchesProcedure,
	nxgv1connect.GymServiceGetBranchProcedure,
	nxgv1connect.AuthServiceRegisterProcedure,
	nxgv1connect.AuthServiceLoginProcedure,
	nxgv1connect.AuthServiceRefreshProcedure,
	nxgv1connect.AuthServiceDeviceLoginProcedure,
}

// NewHandler returns the API handler.
func NewHandler(opts Options) (http.Handler, error) {
	if opts.Pool == nil || opts.Logger == nil || opts.Readiness == nil || opts.Metrics == nil || !opts.Identity.complete() || !opts.Floor.complete() {
		return nil, errors.New("server: Pool, Logger, Readiness, Metrics and every Identity and Floor dependency are required")
	}
	if opts.ClientInfo == nil {
		opts.ClientInfo = clientinfo.NewResolver(nil)
	}
	if opts.UnaryTimeout <= 0 {
		opts.UnaryTimeout = 30 * time.Second
	}
	if opts.Identity.Authenticator == nil {
		opts.Identity.Authenticator = auth.NewAuthenticator(opts.Identity.Tokens, opts.Identity.Sessions)
	}

	handlerOpts := handlerOptions(opts)
	guard := newStreamGuard(opts.Floor.Hub, opts.Floor.Settings, opts.Floor.Draining, opts.Logger).
		checkSessions(opts.Identity.Sessions).
		forgetSessionsIn(opts.Identity.Authenticator)
	gymSessions := NewGymSessionService(opts.Pool, opts.Identity, opts.Floor, guard, opts.Logger)
	machines := NewMachineService(opts.Pool, opts.Identity, opts.Floor, guard, opts.Logger)
	workouts := NewWorkoutService(opts.Pool, opts.Identity, opts.Floor, guard, opts.Mongo, opts.Logger)

	mux := http.NewServeMux()
	services := []struct {
		name  string
		mount func() (string, http.Handler)
	}{
		{nxgv1connect.GymServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewGymServiceHandler(NewGymService(opts.Pool), handlerOpts...)
		}},
		{nxgv1connect.AuthServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewAuthServiceHandler(NewAuthService(opts.Pool, opts.Identity, opts.Logger), handlerOpts...)
		}},
		{nxgv1connect.ProfileServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewProfileServiceHandler(NewProfileService(opts.Pool, opts.Identity, opts.Logger), handlerOpts...)
		}},
		{nxgv1connect.AuditServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewAuditServiceHandler(NewAuditService(opts.Pool, opts.Identity), handlerOpts...)
		}},
		{nxgv1connect.MembershipServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewMembershipServiceHandler(NewMembershipService(opts.Pool, opts.Identity), handlerOpts...)
		}},
		{nxgv1connect.GymSessionServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewGymSessionServiceHandler(gymSessions, handlerOpts...)
		}},
		{nxgv1connect.MachineServiceName, func() (string, http.Handler) {
			// The machine codecs send each machine change encoded once to
			// every watcher, and batching lets a watcher that has fallen
			// behind send its queued changes with one write.
			path, h := nxgv1connect.NewMachineServiceHandler(machines, slices.Concat(handlerOpts, machines.handlerOptions())...)
			return path, withStreamBatching(h)
		}},
		{nxgv1connect.WorkoutServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewWorkoutServiceHandler(workouts, handlerOpts...)
		}},
		{nxgv1connect.DeviceServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewDeviceServiceHandler(NewDeviceService(opts.Pool, opts.Identity, opts.Floor, opts.Logger), handlerOpts...)
		}},
		{nxgv1connect.NutritionServiceName, func() (string, http.Handler) {
			return nxgv1connect.NewNutritionServiceHandler(NewNutritionService(opts.Pool, opts.Identity, opts.Mongo, opts.Logger), handlerOpts...)
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
	mux.Handle("GET /.well-known/jwks.json", jwksHandler(opts.Identity.JWKS))
	mux.Handle("GET /ws", newWebSocketHandler(opts, gymSessions, machines, workouts, guard))

	return withRequestID(opts.ClientInfo.Middleware(withCORS(opts.CORSOrigins, mux))), nil
}

// handlerOptions are the options every Connect service is mounted with.
func handlerOptions(opts Options) []connect.HandlerOption {
	// Interceptors run outermost first. The access log and metrics sit
	// outside the error mapper so they record the code the client got; the
	// Sentry hub is set up before the mapper so it can report faults with
	// request context. Then authentication, rate limits (which need the
	// user) and validation, just before the handler.
	return []connect.HandlerOption{
		connect.WithInterceptors(
			newAccessLogInterceptor(opts.Logger),
			opts.Metrics,
			newSentryInterceptor(),
			newErrorInterceptor(opts.Logger),
			newTimeoutInterceptor(opts.UnaryTimeout),
			newAuthInterceptor(opts.Identity.authenticator(), publicProcedures),
			newRateLimitInterceptor(opts.Identity.Limiter, opts.RateLimits, opts.Logger),
			validate.NewInterceptor(),
		),
		connect.WithReadMaxBytes(maxMessageBytes),
		connect.WithCompressMinBytes(1024),
	}
}

// jwksHandler publishes the public keys that verify access tokens, for
// other services and clients that verify tokens themselves.
func jwksHandler(jwks []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		// Short enough that a rotated-in key is picked up well within the
		// 15 minutes an old token lives.
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(jwks)
	})
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
	// HTTP/2 is served by golang.org/x/net/http2 rather than the copy
	// bundled in net/http, for one setting the bundled copy does not
	// offer: its write scheduler. The bundled round-robin scheduler finds
	// the next frame to write by walking every open stream of the
	// connection, idle or not; with a couple of hundred watching streams
	// per connection that walk was a tenth of the server's CPU at 5,000
	// watchers. The random scheduler looks only at the streams that have
	// frames queued. Server streams need no priorities between them.
	if err := http2.ConfigureServer(srv, &http2.Server{
		NewWriteScheduler: func() http2.WriteScheduler { return http2.NewRandomWriteScheduler() },
	}); err != nil {
		// Only a TLS configuration HTTP/2 cannot use fails here, and ours
		// is TLS 1.3 only; net/http's own HTTP/2 serves if it ever does.
		logger.Warn("http2: keeping net/http's own HTTP/2 server", "error", err)
	}
	return srv
}
