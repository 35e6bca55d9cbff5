// Command nxg-dev runs the whole NXG backend on a developer's machine with one
// command: `go run ./cmd/nxg-dev`.
//
// PostgreSQL comes from DATABASE_URL (default: the local server, database
// nxg, created if missing). Every other dependency that is not configured is
// started in-process on a free loopback port: Redis (or the local server if
// one answers), the MongoDB API (FerretDB over the same PostgreSQL), S3, an
// FCM stand-in and a Sentry-compatible capture. Migrations run, a demo gym and
// one demo account per role are seeded, and the production server wiring
// (internal/app) starts on top.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/app"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/demodata"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/logging"
)

// Defaults for a developer's machine; every one can be overridden by setting
// the variable.
const (
	defaultDatabaseURL = "postgres://postgres@localhost:5432/nxg"
	defaultDataDir     = "./.nxg-dev"
	defaultHTTPAddr    = ":8080"
	defaultOpsAddr     = "127.0.0.1:9090"
	defaultOpsUser     = "ops"
	defaultOpsPassword = "nxg-dev-ops"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, env.ToMap(os.Environ()), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nxg-dev:", err)
		os.Exit(1)
	}
}

// run is main without the process, so tests can start a dev server.
func run(ctx context.Context, environ map[string]string, stdout, stderr io.Writer) error {
	databaseURL := valueOr(environ, "DATABASE_URL", defaultDatabaseURL)
	dataDir := valueOr(environ, "NXG_DEV_DATA_DIR", defaultDataDir)
	logger := logging.New(stdout, slog.LevelInfo)

	if err := ensureDatabase(ctx, databaseURL); err != nil {
		return err
	}

	stack, err := devstack.Start(ctx, devstack.Options{
		DataDir:     dataDir,
		DatabaseURL: databaseURL,
		Logger:      logger.With("component", "devstack"),
		Configured:  environ,
	})
	if err != nil {
		return fmt.Errorf("start dev stand-ins: %w", err)
	}
	defer stack.Close()

	keys, err := devKeys(dataDir)
	if err != nil {
		return fmt.Errorf("dev keys: %w", err)
	}
	cfgEnv := devEnvironment(environ, stack.Env(), keys, databaseURL)
	cfg, err := config.Parse(cfgEnv)
	if err != nil {
		return err
	}
	logger = logging.New(stdout, cfg.LogLevel)

	pool, err := db.Open(ctx, databaseURL, db.PoolConfig{ApplicationName: "nxg-dev-setup"})
	if err != nil {
		return err
	}
	err = db.Migrate(ctx, pool, logger)
	if err == nil {
		err = demodata.Seed(ctx, pool)
	}
	if err == nil {
		err = seedAccounts(ctx, pool, cfg)
	}
	pool.Close()
	if err != nil {
		return err
	}

	a, err := app.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	printBanner(stderr, a, cfg, stack)
	return a.Run(ctx)
}

// seedAccounts creates the demo sign-ins (one per role) with the same
// master key the server uses, so their profiles are readable.
func seedAccounts(ctx context.Context, pool *pgxpool.Pool, cfg config.Config) error {
	keys, err := cfg.Auth.MasterKeys()
	if err != nil {
		return err
	}
	return demodata.SeedAccounts(ctx, pool, password.NewHasher(password.Options{}), keys)
}

func valueOr(environ map[string]string, key, def string) string {
	if v := environ[key]; v != "" {
		return v
	}
	return def
}

// devEnvironment is the configuration the dev server parses: the user's own
// variables win, then the stand-ins' addresses and the dev keys, then
// development defaults.
func devEnvironment(environ, standIns, keys map[string]string, databaseURL string) map[string]string {
	out := map[string]string{
		"DATABASE_URL":       databaseURL,
		"NXG_HTTP_ADDR":      valueOr(environ, "NXG_HTTP_ADDR", ""),
		"NXG_OPS_ADDR":       valueOr(environ, "NXG_OPS_ADDR", ""),
		"NXG_OPS_USER":       defaultOpsUser,
		"NXG_OPS_PASSWORD":   defaultOpsPassword,
		"NXG_CORS_ORIGINS":   "http://localhost:3000,http://localhost:5173",
		"SENTRY_ENVIRONMENT": "development",
	}
	if out["NXG_HTTP_ADDR"] == "" {
		out["NXG_HTTP_ADDR"] = freeOrAny(defaultHTTPAddr)
	}
	if out["NXG_OPS_ADDR"] == "" {
		out["NXG_OPS_ADDR"] = freeOrAny(defaultOpsAddr)
	}
	for k, v := range keys {
		if environ[k+"_FILE"] == "" {
			out[k] = v
		}
	}
	for k, v := range standIns {
		out[k] = v
	}
	for k, v := range environ {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// freeOrAny returns addr when it can be bound, else a free port on the same
// host, so a second dev server next to the first starts without setup.
func freeOrAny(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		return addr
	}
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, "0")
}

// ensureDatabase creates the database named in databaseURL when the server
// answers but the database does not exist yet, and explains how to get a
// server when none answers.
func ensureDatabase(ctx context.Context, databaseURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name: no such database
		return fmt.Errorf("cannot reach PostgreSQL at %s: %w\n\n"+
			"Start a local server with\n"+
			"  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"+
			"or point DATABASE_URL at one (PostgreSQL 15 or newer).", redact(databaseURL), err)
	}
	// pgx's own parser reads every form of URL it accepts (a path, a
	// dbname parameter, or none, meaning the user's name).
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	name := cfg.Database
	if name == "" {
		name = cfg.User
	}
	cfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect to the postgres database to create %q: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: another dev server won the race
			return nil
		}
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "DATABASE_URL"
	}
	return u.Redacted()
}

// printBanner shows a newcomer where everything is and how to call the API.
func printBanner(w io.Writer, a *app.App, cfg config.Config, stack *devstack.Stack) {
	api := "http://" + loopback(a.APIAddr())
	ops := "http://" + loopback(a.OpsAddr())
	redisKind := "configured"
	if stack.Redis != nil {
		redisKind = "local server"
		if stack.Redis.Embedded() {
			redisKind = "embedded miniredis"
		}
	}
	fmt.Fprintf(w, `
NXG dev server is up.

  API (Connect, gRPC, gRPC-Web)  %[1]s
  Health                         %[1]s/healthz   %[1]s/readyz
  Metrics                        %[2]s/metrics
  River UI                       %[2]s/riverui/      (user %[3]s, password %[4]s)
  pprof                          %[2]s/debug/pprof/
  PostgreSQL                     %[5]s
  Redis (%[6]s)%[7]s %[8]s
  MongoDB API                    %[9]s
  S3                             %[10]s  (bucket %[11]s)
  FCM                            %[12]s
  Sentry                         %[13]s
  Workout planner                %[17]s
  Meal detector                  %[18]s
  Meal planner                   %[19]s

Accounts:%[14]s

Try it:
  curl -s -H 'Content-Type: application/json' -d '{}' %[1]s/nxg.v1.GymService/ListBranches
  curl -s -H 'Content-Type: application/json' -d '{"email":"%[15]s","password":"%[16]s"}' %[1]s/nxg.v1.AuthService/Login
  curl -s '%[1]s/nxg.v1.GymService/ListBranches?connect=v1&encoding=json&message=%%7B%%7D'
  go tool -modfile=tools/go.mod buf curl --protocol grpc --http2-prior-knowledge %[1]s/nxg.v1.GymService/ListBranches

`, api, ops, cfg.OpsUser, cfg.OpsPassword.Reveal(), redact(cfg.DatabaseURL.Reveal()),
		redisKind, pad(len(redisKind)), redact(cfg.RedisURL.Reveal()), redact(cfg.MongoURL.Reveal()),
		orDefault(cfg.S3.Endpoint, "AWS"), cfg.S3.Bucket, orDefault(cfg.Firebase.Endpoint, "Google FCM"),
		sentryLine(cfg, stack), accountLines(), demodata.Accounts[0].Email, demodata.Accounts[0].Password,
		cfg.AI.WorkoutPlanner.URL, cfg.AI.MealDetector.URL, cfg.AI.MealPlanner.URL)
}

// accountLines lists the demo sign-ins, one a line.
func accountLines() string {
	var b strings.Builder
	for _, a := range demodata.Accounts {
		fmt.Fprintf(&b, "\n  %s / %s (%s)", a.Email, a.Password, a.Role)
	}
	return b.String()
}

func sentryLine(cfg config.Config, stack *devstack.Stack) string {
	switch {
	case stack.Sentry != nil:
		u, err := url.Parse(stack.Sentry.DSN())
		if err != nil {
			return "embedded capture"
		}
		return "http://" + u.Host + "/events  (captured events)"
	case cfg.SentryDSN != "":
		return "configured"
	default:
		return "off"
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func pad(n int) string {
	const width = 22
	if n >= width {
		return ""
	}
	return fmt.Sprintf("%*s", width-n, "")
}

// loopback turns a wildcard listen address into one a browser can open.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
