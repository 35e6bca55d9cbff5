// Package testkit gives tests real, isolated backing services: a fresh
// PostgreSQL database per test cloned from a migrated template, and Redis
// with a per-test key prefix. There are no mocks here by design: tests of
// NXG run against the same servers production uses.
package testkit

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver pgtestdb opens
	"github.com/peterldowns/pgtestdb"

	"github.com/nxg-fitness/nxg/db"
)

// PostgresAddr is where tests expect PostgreSQL; TEST_PG_HOST / TEST_PG_PORT
// override it.
func postgresHostPort() (string, string) {
	host, port := os.Getenv("TEST_PG_HOST"), os.Getenv("TEST_PG_PORT")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5432"
	}
	return host, port
}

// PostgresHint tells a developer how to start the PostgreSQL the tests need.
const PostgresHint = "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` " +
	"(trust auth, user postgres), or point TEST_PG_HOST/TEST_PG_PORT at one"

// requirePostgres fails the test at once, with the way to fix it, when no
// PostgreSQL answers; otherwise pgtestdb would fail later with a vaguer error.
func requirePostgres(t testing.TB) {
	t.Helper()
	host, port := postgresHostPort()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 2*time.Second)
	if err != nil {
		t.Fatalf("PostgreSQL is not answering on %s:%s: %v\n%s", host, port, err, PostgresHint)
	}
	conn.Close()
}

// migrator builds pgtestdb's template database with NXG's real migrations
// (River's and ours), once per schema version across all test packages.
type migrator struct{}

func (migrator) Hash() (string, error) { return db.MigrationsFingerprint() }

func (migrator) Migrate(ctx context.Context, _ *sql.DB, conf pgtestdb.Config) error {
	pool, err := pgxpool.New(ctx, conf.URL())
	if err != nil {
		return err
	}
	defer pool.Close()
	return db.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// Database is one test's private, migrated database.
type Database struct {
	// URL connects to it (as the unprivileged test role).
	URL string
	// Pool is open on it and closed when the test ends.
	Pool *pgxpool.Pool
}

// NewDatabase returns a fresh database holding the full schema, cloned from
// the template in milliseconds, and dropped when the test passes.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	requirePostgres(t)
	host, port := postgresHostPort()
	conf := pgtestdb.Custom(t, pgtestdb.Config{
		DriverName: "pgx",
		Host:       host,
		Port:       port,
		User:       "postgres",
		Database:   "postgres",
		Options:    "sslmode=disable",
		// Servers under test may hold LISTEN connections or River
		// producers that outlive the test body by a moment.
		ForceTerminateConnections: true,
	}, migrator{})
	pool, err := pgxpool.New(context.Background(), conf.URL())
	if err != nil {
		t.Fatalf("open pool on test database: %v", err)
	}
	t.Cleanup(pool.Close)
	return &Database{URL: conf.URL(), Pool: pool}
}

// AdminURL connects to the server's maintenance database as the superuser,
// for tests that must create or drop databases themselves.
func AdminURL() string {
	host, port := postgresHostPort()
	return fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", net.JoinHostPort(host, port))
}
