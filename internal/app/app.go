// Package app assembles the NXG server from its configuration: stores,
// River, the API and ops HTTP servers; and runs it until asked to stop, then
// shuts it down in order. Both binaries (cmd/nxg and cmd/nxg-dev) use it, so
// development runs exactly the production wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/getsentry/sentry-go"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/ticket"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/checkin"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/logging"
	"github.com/nxg-fitness/nxg/internal/push"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/jobs"
	"github.com/nxg-fitness/nxg/server"
)

// Version is the build's version, set with -ldflags at release time.
var Version = "dev"

// App is one running NXG process.
type App struct {
	cfg    config.Config
	logger *slog.Logger

	Pool     *pgxpool.Pool
	Redis    *redis.Client
	Mongo    *mongo.Client
	MongoDB  *mongo.Database
	Storage  *storage.Client
	Push     *push.Client
	River    *river.Client[pgx.Tx]
	Registry *prometheus.Registry

	masterKeys *fieldcrypt.MasterKeys
	auditLog   *audit.Log
	sessions   *session.Store
	identity   server.Identity

	// hub is the process's one listener connection, fanning out the
	// gym floor's notifications to live streams; stopHub ends it after the
	// streams have drained, and hubDone closes when it has stopped.
	hub     *realtime.Hub
	stopHub context.CancelFunc
	hubDone chan struct{}
	// stopStreams ends every live stream at the start of a shutdown, so the
	// HTTP drain does not wait for streams that would never end by themselves.
	stopStreams context.CancelFunc

	readiness *server.Readiness
	// stopOps ends River UI's background queries; they must stop before the
	// pool they read through closes.
	stopOps      context.CancelFunc
	riverRunning atomic.Bool
	draining     atomic.Bool

	api, ops                 *http.Server
	apiListener, opsListener net.Listener
}

// New connects to every dependency and builds the servers. It binds the
// listeners too, so a port already in use fails start-up and tests can ask
// for port 0 and read the chosen address. On error everything opened so far
// is closed.
func New(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			a.closeStores()
		}
	}()

	a.Pool, err = db.Open(ctx, cfg.DatabaseURL.Reveal(), db.PoolConfig{MaxConns: cfg.DatabaseMaxConns, ApplicationName: "nxg"})
	if err != nil {
		return nil, err
	}

	redisOpts, err := redis.ParseURL(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	redis.SetLogger(logging.RedisLogger{Logger: logger})
	a.Redis = redis.NewClient(redisOpts)
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Redis.Ping(pingCtx).Err(); err != nil {
		return nil, fmt.Errorf("connect to redis at %s: %w", redisOpts.Addr, err)
	}

	// The MongoDB driver connects lazily and reconnects by itself; only the
	// jobs that cache outside answers use it, so its absence must not stop
	// the API from serving.
	a.Mongo, err = mongo.Connect(options.Client().ApplyURI(cfg.MongoURL.Reveal()).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		return nil, fmt.Errorf("MONGO_URL: %w", err)
	}
	a.MongoDB = a.Mongo.Database(cfg.MongoDatabase)

	a.Storage, err = storage.New(ctx, storage.Config{
		Endpoint:        cfg.S3.Endpoint,
		Bucket:          cfg.S3.Bucket,
		Region:          cfg.S3.Region,
		AccessKeyID:     cfg.S3.AccessKeyID,
		SecretAccessKey: cfg.S3.SecretAccessKey.Reveal(),
		UsePathStyle:    cfg.S3.UsePathStyle,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w", err)
	}
	a.Push, err = push.New(ctx, push.Config{
		ProjectID:       cfg.Firebase.ProjectID,
		CredentialsFile: cfg.Firebase.CredentialsFile,
		Endpoint:        cfg.Firebase.Endpoint,
	})
	if err != nil {
		return nil, fmt.Errorf("firebase: %w", err)
	}

	if err := a.buildIdentity(cfg); err != nil {
		return nil, err
	}

	a.Registry = prometheus.NewRegistry()
	a.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	ai, err := buildAI(cfg.AI, a.Registry)
	if err != nil {
		return nil, err
	}

	workers, err := jobs.Workers(jobs.Deps{
		Mongo:       a.MongoDB,
		Pool:        a.Pool,
		Redis:       a.Redis,
		RedisPrefix: redisPrefix,
		Storage:     a.Storage,
		Sessions:    a.sessions,
		MasterKeys:  a.masterKeys,
		Audit:       a.auditLog,
		Floor:       floorSettings(cfg.Floor),
		AI: jobs.AI{
			WorkoutPlanner: ai.workoutPlanner,
			MealDetector:   ai.mealDetector,
			MealPlanner:    ai.mealPlanner,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("river workers: %w", err)
	}
	a.River, err = river.NewClient(riverpgxv5.New(a.Pool), &river.Config{
		Logger:       logger.With("component", "river"),
		Queues:       jobs.Queues(),
		Workers:      workers,
		PeriodicJobs: jobs.PeriodicJobs(floorSettings(cfg.Floor)),
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}

	metrics, err := server.NewMetricsInterceptor(a.Registry)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	feedLag, err := server.NewFeedLag(a.Registry)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}

	a.hub = realtime.NewHub(realtime.Options{
		DatabaseURL: cfg.DatabaseURL.Reveal(),
		Channels:    floor.Channels,
		Logger:      logger,
	})
	checkinKey, err := cfg.Auth.CheckinKeyBytes()
	if err != nil {
		return nil, err
	}
	codes, err := checkin.NewCodes(checkinKey, nil)
	if err != nil {
		return nil, fmt.Errorf("NXG_CHECKIN_KEY: %w", err)
	}
	streamsCtx, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	a.stopStreams = stopStreams

	a.readiness = server.NewReadiness(2*time.Second,
		server.Check{Name: "postgres", Fn: a.Pool.Ping},
		server.Check{Name: "realtime", Fn: a.checkHub},
		server.Check{Name: "redis", Fn: func(ctx context.Context) error { return a.Redis.Ping(ctx).Err() }},
		server.Check{Name: "river", Fn: a.checkRiver},
		server.Check{Name: "shutdown", Fn: a.checkNotDraining},
	)
	// An outside service being down degrades features (stale plans, pending
	// analyses) but not the API: its breaker state informs, never fails,
	// readiness.
	a.readiness.AddInfo("integrations", func() any { return ai.set.BreakerStates() })

	trusted, err := clientinfo.ParsePrefixes(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("NXG_TRUSTED_PROXIES: %w", err)
	}
	a.identity.River = a.River
	apiHandler, err := server.NewHandler(server.Options{
		Pool:         a.Pool,
		Mongo:        a.MongoDB,
		Logger:       logger,
		Readiness:    a.readiness,
		Metrics:      metrics,
		CORSOrigins:  cfg.CORSOrigins,
		UnaryTimeout: cfg.UnaryTimeout,
		ClientInfo:   clientinfo.NewResolver(trusted),
		RateLimits:   ptr(server.PerSecondLimits(cfg.RateLimitPerIP, cfg.RateLimitPerUser, cfg.RateLimitPerDevice)),
		Identity:     a.identity,
		Floor: server.Floor{
			Hub:      a.hub,
			Codes:    codes,
			Settings: floorSettings(cfg.Floor),
			Draining: streamsCtx,
			Lag:      feedLag,
		},
	})
	if err != nil {
		return nil, err
	}
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	a.stopOps = stopOps
	opsHandler, err := server.NewOpsHandler(opsCtx, server.OpsConfig{
		Registry: a.Registry,
		River:    a.River,
		User:     cfg.OpsUser,
		Password: cfg.OpsPassword.Reveal(),
		Logger:   logger.With("component", "ops"),
	})
	if err != nil {
		return nil, fmt.Errorf("ops handler: %w", err)
	}

	a.api = server.NewHTTPServer(cfg.HTTPAddr, apiHandler, cfg.TLSEnabled(), logger)
	a.ops = server.NewHTTPServer(cfg.OpsAddr, opsHandler, false, logger)
	if a.apiListener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("listen on NXG_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	if a.opsListener, err = net.Listen("tcp", cfg.OpsAddr); err != nil {
		a.apiListener.Close()
		return nil, fmt.Errorf("listen on NXG_OPS_ADDR %s: %w", cfg.OpsAddr, err)
	}
	// Sentry is global to the process, so it is set up last: a failed New
	// leaves no reporting client behind.
	if cfg.SentryDSN != "" {
		if err := sentry.Init(sentry.ClientOptions{
			Dsn:              cfg.SentryDSN.Reveal(),
			Environment:      cfg.SentryEnvironment,
			Release:          "nxg@" + Version,
			AttachStacktrace: true,
			SendDefaultPII:   false,
			BeforeSend:       scrubSentryEvent,
		}); err != nil {
			a.apiListener.Close()
			a.opsListener.Close()
			return nil, fmt.Errorf("SENTRY_DSN: %w", err)
		}
	}
	return a, nil
}

// scrubSentryEvent keeps personal data and credentials out of Sentry:
// events carry the request id, procedure and user id (set by the
// interceptors) and nothing of the HTTP request, whose headers hold bearer
// tokens and whose bodies hold passwords and personal fields.
func scrubSentryEvent(event *sentry.Event, _ *sentry.EventHint) *sentry.Event {
	event.Request = nil
	event.User = sentry.User{ID: event.User.ID}
	event.ServerName = ""
	return event
}

// redisPrefix namespaces every key NXG writes in Redis, so the instance can
// share a Redis with other software.
const redisPrefix = "nxg:"

// buildIdentity makes the keys and stores behind accounts and sessions.
// Config validation has parsed every key already; errors here mean the
// environment changed in between, and are reported the same way.
func (a *App) buildIdentity(cfg config.Config) error {
	ring, err := cfg.Auth.KeyRing()
	if err != nil {
		return err
	}
	publicJWKS, err := ring.PublicJWKS()
	if err != nil {
		return fmt.Errorf("NXG_JWT_KEYS: %w", err)
	}
	tokens, err := token.NewIssuer(token.IssuerConfig{Keys: ring, Issuer: cfg.Auth.JWTIssuer, Audience: cfg.Auth.JWTAudience})
	if err != nil {
		return err
	}
	if a.masterKeys, err = cfg.Auth.MasterKeys(); err != nil {
		return err
	}
	auditKey, err := cfg.Auth.AuditKeyBytes()
	if err != nil {
		return err
	}
	if a.auditLog, err = audit.New(auditKey); err != nil {
		return err
	}
	a.sessions = session.NewStore(a.Redis, redisPrefix, session.Options{})
	a.identity = server.Identity{
		Tokens:       tokens,
		Sessions:     a.sessions,
		Passwords:    password.NewHasher(password.Options{}),
		LoginLimiter: ratelimit.NewLoginLimiter(a.Redis, redisPrefix, ratelimit.LoginConfig{}),
		Limiter:      ratelimit.NewLimiter(a.Redis, redisPrefix),
		Audit:        a.auditLog,
		MasterKeys:   a.masterKeys,
		Storage:      a.Storage,
		JWKS:         publicJWKS,
		Tickets:      ticket.NewStore(a.Redis, redisPrefix, ticket.Options{}),
	}
	return nil
}

// APIAddr is the address the API listens on.
func (a *App) APIAddr() string { return a.apiListener.Addr().String() }

// OpsAddr is the address the ops endpoints listen on.
func (a *App) OpsAddr() string { return a.opsListener.Addr().String() }

func ptr[T any](v T) *T { return &v }

// floorSettings carries the gym floor's configuration to the services and
// jobs that use it.
func floorSettings(c config.FloorConfig) floor.Settings {
	return floor.Settings{
		SessionTimeoutOverride: c.SessionTimeoutOverride,
		IdleUnlinkOverride:     c.IdleUnlinkOverride,
		MachineOfflineAfter:    c.MachineOfflineAfter,
		MaxStreamsPerUser:      c.MaxStreamsPerUser,
		MaxStreamsPerDevice:    c.MaxStreamsPerDevice,
	}.WithDefaults()
}

// checkHub fails readiness while the listener connection is down: streams
// served by this process would miss changes.
func (a *App) checkHub(context.Context) error {
	if !a.hub.Ready() {
		return errors.New("realtime listener is not connected")
	}
	return nil
}

func (a *App) checkRiver(context.Context) error {
	if !a.riverRunning.Load() {
		return errors.New("river is not running")
	}
	select {
	case <-a.River.Stopped():
		return errors.New("river has stopped")
	default:
		return nil
	}
}

func (a *App) checkNotDraining(context.Context) error {
	if a.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// Run starts River and both servers and blocks until ctx is cancelled (the
// process got SIGINT or SIGTERM) or a server fails, then shuts down in order:
// mark not ready, stop accepting and drain HTTP, stop River softly then
// hard, and close the stores. It returns the first failure, if any.
func (a *App) Run(ctx context.Context) error {
	defer a.closeStores()

	if err := a.River.Start(context.WithoutCancel(ctx)); err != nil {
		a.apiListener.Close()
		a.opsListener.Close()
		return fmt.Errorf("start river: %w", err)
	}
	a.riverRunning.Store(true)

	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	a.stopHub, a.hubDone = stopHub, make(chan struct{})
	go func() {
		defer close(a.hubDone)
		if err := a.hub.Run(hubCtx); err != nil {
			a.logger.Error("realtime hub stopped", "error", err)
		}
	}()

	serveErr := make(chan error, 2)
	go func() { serveErr <- a.serve(a.api, a.apiListener, a.cfg.TLSEnabled(), "api") }()
	go func() { serveErr <- a.serve(a.ops, a.opsListener, false, "ops") }()
	a.logger.InfoContext(ctx, "nxg is serving", "api", a.APIAddr(), "ops", a.OpsAddr(), "version", Version)

	var runErr error
	select {
	case <-ctx.Done():
		a.logger.Info("shutdown requested")
	case runErr = <-serveErr:
		a.logger.Error("server failed; shutting down", "error", runErr)
	}
	if err := a.shutdown(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

func (a *App) serve(srv *http.Server, ln net.Listener, tlsEnabled bool, name string) error {
	var err error
	if tlsEnabled {
		err = srv.ServeTLS(ln, a.cfg.TLSCertFile, a.cfg.TLSKeyFile)
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", name, err)
}

// shutdown stops everything within the configured timeout. HTTP drains
// first so no request is cut while it still needs River or the database;
// River gets the remaining time to finish running jobs before they are
// cancelled (they are retried later, elsewhere).
func (a *App) shutdown() error {
	a.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()

	var errs []error
	// Live streams end first (clients reconnect to another instance), so
	// the drain below only waits for unary calls.
	a.stopStreams()
	httpCtx, httpCancel := context.WithTimeout(ctx, a.cfg.ShutdownTimeout/2)
	defer httpCancel()
	if err := a.api.Shutdown(httpCtx); err != nil {
		a.logger.Warn("api did not drain in time; closing connections", "error", err)
		errs = append(errs, a.api.Close())
	}
	a.stopHub()
	<-a.hubDone
	// The ops port gets its own short drain: a scrape or a River UI page
	// should not be cut just because the API used the whole budget.
	opsCtx, opsCancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer opsCancel()
	if err := a.ops.Shutdown(opsCtx); err != nil {
		errs = append(errs, a.ops.Close())
	}

	softCtx, softCancel := context.WithTimeout(ctx, a.cfg.ShutdownTimeout/4)
	defer softCancel()
	if err := a.River.Stop(softCtx); err != nil {
		a.logger.Warn("river did not stop in time; cancelling running jobs", "error", err)
		if err := a.River.StopAndCancel(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop river: %w", err))
		}
	}
	a.riverRunning.Store(false)
	sentry.Flush(2 * time.Second)
	a.logger.Info("nxg stopped")
	return errors.Join(errs...)
}

// closeStores closes what New opened; it is safe on a partly built App.
func (a *App) closeStores() {
	if a.stopStreams != nil {
		a.stopStreams()
	}
	if a.stopOps != nil {
		a.stopOps()
		a.stopOps = nil
	}
	if a.Mongo != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Mongo.Disconnect(ctx)
		a.Mongo = nil
	}
	if a.Redis != nil {
		_ = a.Redis.Close()
		a.Redis = nil
	}
	if a.Pool != nil {
		a.Pool.Close()
		a.Pool = nil
	}
}
