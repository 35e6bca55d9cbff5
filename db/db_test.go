package db_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// insertBranch writes one branch named name through q.
func insertBranch(ctx context.Context, q interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, name string) error {
	_, err := q.Exec(ctx, `INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, '1 Test St', 'UTC', 10)`, name)
	return err
}

// branchExists reports whether a committed branch named name exists.
func branchExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM branches WHERE name = $1`, name).Scan(&n); err != nil {
		t.Fatalf("count branches named %q: %v", name, err)
	}
	return n == 1
}

func TestWithTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CommitsOnNil", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		if err := db.WithTx(ctx, pool, func(tx pgx.Tx) error {
			return insertBranch(ctx, tx, "Committed")
		}); err != nil {
			t.Fatalf("WithTx: %v", err)
		}
		if !branchExists(t, pool, "Committed") {
			t.Fatal("row written in a transaction whose body returned nil is absent")
		}
	})

	t.Run("RollsBackOnError", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		errBody := errors.New("body failed")
		err := db.WithTx(ctx, pool, func(tx pgx.Tx) error {
			if err := insertBranch(ctx, tx, "RolledBack"); err != nil {
				return err
			}
			return fmt.Errorf("after insert: %w", errBody)
		})
		if !errors.Is(err, errBody) {
			t.Fatalf("WithTx = %v, want the body's error", err)
		}
		if err.Error() != "after insert: body failed" {
			t.Errorf("WithTx error = %q, want the body's error unchanged", err)
		}
		if branchExists(t, pool, "RolledBack") {
			t.Fatal("row written before the body failed was committed")
		}
	})

	t.Run("RollsBackOnPanic", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		recovered := func() (r any) {
			defer func() { r = recover() }()
			_ = db.WithTx(ctx, pool, func(tx pgx.Tx) error {
				if err := insertBranch(ctx, tx, "Panicked"); err != nil {
					t.Errorf("insert: %v", err)
				}
				panic("boom")
			})
			return nil
		}()
		if recovered != "boom" {
			t.Fatalf("recovered %v, want the body's panic to propagate", recovered)
		}
		if branchExists(t, pool, "Panicked") {
			t.Fatal("row written before the body panicked was committed")
		}
		// The connection went back to the pool usable, not stuck in a
		// transaction.
		if err := db.WithTx(ctx, pool, func(tx pgx.Tx) error { return insertBranch(ctx, tx, "After") }); err != nil {
			t.Fatalf("WithTx after a panic: %v", err)
		}
		if !branchExists(t, pool, "After") {
			t.Fatal("row of the transaction after the panic is absent")
		}
	})

	t.Run("NestedRollsBackOnlyTheSavepoint", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		errInner := errors.New("inner failed")
		err := db.WithTx(ctx, pool, func(tx pgx.Tx) error {
			if err := insertBranch(ctx, tx, "Outer"); err != nil {
				return err
			}
			err := db.WithTx(ctx, tx, func(inner pgx.Tx) error {
				if err := insertBranch(ctx, inner, "Inner"); err != nil {
					return err
				}
				return errInner
			})
			if !errors.Is(err, errInner) {
				return fmt.Errorf("nested WithTx = %v, want the inner error", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("outer WithTx: %v", err)
		}
		if !branchExists(t, pool, "Outer") {
			t.Error("outer row is absent")
		}
		if branchExists(t, pool, "Inner") {
			t.Error("row of the failed nested transaction was committed")
		}
	})

	t.Run("CommitFailureIsReturned", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		if _, err := pool.Exec(ctx, `CREATE TABLE deferred_fk (
			id int PRIMARY KEY,
			parent int REFERENCES deferred_fk (id) DEFERRABLE INITIALLY DEFERRED)`); err != nil {
			t.Fatal(err)
		}
		got, err := db.WithTxV(ctx, pool, func(tx pgx.Tx) (int, error) {
			// Checked only at COMMIT.
			_, err := tx.Exec(ctx, `INSERT INTO deferred_fk VALUES (1, 99)`)
			return 7, err
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
			t.Fatalf("WithTxV = %v, want a foreign key violation (23503) from COMMIT", err)
		}
		if !strings.HasPrefix(err.Error(), "commit transaction: ") {
			t.Errorf("error = %q, want it to say the commit failed", err)
		}
		if got != 0 {
			t.Errorf("WithTxV returned %d with a failed commit, want the zero value", got)
		}
	})

	t.Run("BeginFailureIsReturned", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		called := false
		err := db.WithTx(cctx, pool, func(pgx.Tx) error { called = true; return nil })
		if err == nil || !strings.HasPrefix(err.Error(), "begin transaction: ") || !errors.Is(err, context.Canceled) {
			t.Fatalf("WithTx with a cancelled context = %v, want begin transaction: context canceled", err)
		}
		if called {
			t.Error("body ran although the transaction never began")
		}
	})
}

func TestWithTxV(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testkit.NewDatabase(t).Pool

	t.Run("ReturnsTheValue", func(t *testing.T) {
		id, err := db.WithTxV(ctx, pool, func(tx pgx.Tx) (uuid.UUID, error) {
			var id uuid.UUID
			err := tx.QueryRow(ctx, `INSERT INTO branches (name, address, timezone, capacity)
				VALUES ('Valued', '1 Test St', 'Europe/London', 25) RETURNING id`).Scan(&id)
			return id, err
		})
		if err != nil {
			t.Fatalf("WithTxV: %v", err)
		}
		var name string
		if err := pool.QueryRow(ctx, `SELECT name FROM branches WHERE id = $1`, id).Scan(&name); err != nil || name != "Valued" {
			t.Fatalf("branch %s: name %q, %v; want the committed row", id, name, err)
		}
	})

	t.Run("ZeroValueOnError", func(t *testing.T) {
		got, err := db.WithTxV(ctx, pool, func(tx pgx.Tx) (string, error) {
			return "partial", errors.New("nope")
		})
		if err == nil || err.Error() != "nope" || got != "" {
			t.Fatalf("WithTxV = %q, %v; want \"\", nope", got, err)
		}
	})
}

func TestWithReadTxV(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RefusesWrites", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		_, err := db.WithReadTxV(ctx, pool, func(tx pgx.Tx) (int, error) {
			return 1, insertBranch(ctx, tx, "Written")
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("write in a read transaction = %v, want a PostgreSQL error", err)
		}
		if pgErr.Code != "25006" || !strings.Contains(pgErr.Message, "read-only transaction") {
			t.Fatalf("error = %s %q, want 25006 read-only transaction", pgErr.Code, pgErr.Message)
		}
		if branchExists(t, pool, "Written") {
			t.Fatal("a read-only transaction wrote a row")
		}
	})

	t.Run("IsReadOnlyRepeatableRead", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		got, err := db.WithReadTxV(ctx, pool, func(tx pgx.Tx) (string, error) {
			var iso, ro string
			err := tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')`).Scan(&iso, &ro)
			return iso + "/" + ro, err
		})
		if err != nil || got != "repeatable read/on" {
			t.Fatalf("isolation/read_only = %q, %v; want repeatable read/on", got, err)
		}
	})

	t.Run("SeesOneSnapshot", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		if err := insertBranch(ctx, pool, "Before"); err != nil {
			t.Fatal(err)
		}
		counts, err := db.WithReadTxV(ctx, pool, func(tx pgx.Tx) ([2]int, error) {
			var c [2]int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM branches`).Scan(&c[0]); err != nil {
				return c, err
			}
			// Another connection commits a row meanwhile.
			if err := insertBranch(ctx, pool, "Concurrent"); err != nil {
				return c, err
			}
			err := tx.QueryRow(ctx, `SELECT count(*) FROM branches`).Scan(&c[1])
			return c, err
		})
		if err != nil {
			t.Fatalf("WithReadTxV: %v", err)
		}
		if counts != [2]int{1, 1} {
			t.Fatalf("counts inside the read transaction = %v, want [1 1]: the snapshot must not move", counts)
		}
		if !branchExists(t, pool, "Concurrent") {
			t.Fatal("the concurrent insert was not committed")
		}
	})
}

func TestIsNotFound(t *testing.T) {
	t.Parallel()
	if !db.IsNotFound(pgx.ErrNoRows) {
		t.Error("IsNotFound(pgx.ErrNoRows) = false")
	}
	if !db.IsNotFound(fmt.Errorf("get branch %s: %w", "x", pgx.ErrNoRows)) {
		t.Error("IsNotFound(wrapped ErrNoRows) = false")
	}
	if !db.IsNotFound(fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", pgx.ErrNoRows))) {
		t.Error("IsNotFound(doubly wrapped ErrNoRows) = false")
	}
	for _, err := range []error{nil, errors.New("no rows in result set"), fmt.Errorf("%v", pgx.ErrNoRows), pgx.ErrTxClosed} {
		if db.IsNotFound(err) {
			t.Errorf("IsNotFound(%v) = true", err)
		}
	}

	t.Run("FromARealQuery", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		var name string
		err := pool.QueryRow(context.Background(), `SELECT name FROM branches WHERE id = nxg_uuidv7()`).Scan(&name)
		if !db.IsNotFound(fmt.Errorf("get branch: %w", err)) {
			t.Fatalf("IsNotFound(%v) = false for a query that found nothing", err)
		}
	})
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("Idempotent", func(t *testing.T) {
		t.Parallel()
		pool := testkit.NewDatabase(t).Pool
		state := func() (maxVersion int64, rows int, riverVersions int) {
			t.Helper()
			if err := pool.QueryRow(ctx, `SELECT max(version_id), count(*) FROM goose_db_version`).Scan(&maxVersion, &rows); err != nil {
				t.Fatalf("read goose_db_version: %v", err)
			}
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_migration`).Scan(&riverVersions); err != nil {
				t.Fatalf("read river_migration: %v", err)
			}
			return
		}
		v0, rows0, river0 := state()
		if v0 < 1 || river0 < 1 {
			t.Fatalf("test database is not migrated: goose max %d, river versions %d", v0, river0)
		}
		var logs bytes.Buffer
		logger := slog.New(slog.NewJSONHandler(&logs, nil))
		for i := range 2 {
			if err := db.Migrate(ctx, pool, logger); err != nil {
				t.Fatalf("Migrate run %d on a migrated database: %v", i+1, err)
			}
		}
		v1, rows1, river1 := state()
		if v1 != v0 || rows1 != rows0 || river1 != river0 {
			t.Fatalf("after Migrate: goose max %d rows %d, river %d; want unchanged %d, %d, %d", v1, rows1, river1, v0, rows0, river0)
		}
		if strings.Contains(logs.String(), "applied") {
			t.Errorf("Migrate of an up-to-date database logged applied migrations:\n%s", logs.String())
		}
	})

	// Migrate documents that several processes may run it at once (say,
	// replicas each running `nxg migrate` on deploy).
	t.Run("ConcurrentOnAnEmptyDatabase", func(t *testing.T) {
		t.Parallel()
		pool := emptyDatabase(t)
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Go(func() {
				errs[i] = db.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent Migrate %d: %v", i, err)
			}
		}
	})
}

// emptyDatabase creates a database with no tables and returns a pool on it;
// both go when the test ends.
func emptyDatabase(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testkit.AdminURL())
	if err != nil {
		t.Fatalf("connect as admin: %v\n%s", err, testkit.PostgresHint)
	}
	defer admin.Close(ctx)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "nxg_dbtest_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), testkit.AdminURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, _ := url.Parse(testkit.AdminURL())
	u.Path = "/" + name
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func TestMigrationsFingerprint(t *testing.T) {
	t.Parallel()
	a, err := db.MigrationsFingerprint()
	if err != nil {
		t.Fatalf("MigrationsFingerprint: %v", err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) {
		t.Fatalf("fingerprint %q is not a hex SHA-256", a)
	}
	for range 3 {
		b, err := db.MigrationsFingerprint()
		if err != nil || b != a {
			t.Fatalf("second fingerprint = %q, %v; want %q", b, err, a)
		}
	}
}

func TestUUIDv7(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testkit.NewDatabase(t).Pool
	var prev uuid.UUID
	for i := range 5 {
		if i > 0 {
			time.Sleep(2 * time.Millisecond)
		}
		var id uuid.UUID
		var dbNow time.Time
		if err := pool.QueryRow(ctx, `SELECT nxg_uuidv7(), clock_timestamp()`).Scan(&id, &dbNow); err != nil {
			t.Fatalf("SELECT nxg_uuidv7(): %v", err)
		}
		if id.Version() != 7 {
			t.Errorf("nxg_uuidv7() = %s has version %d, want 7", id, id.Version())
		}
		if id.Variant() != uuid.RFC4122 {
			t.Errorf("nxg_uuidv7() = %s has variant %v, want RFC 4122", id, id.Variant())
		}
		sec, nsec := id.Time().UnixTime()
		if d := dbNow.Sub(time.Unix(sec, nsec)); d < 0 || d > time.Second {
			t.Errorf("nxg_uuidv7() = %s carries time %v, want the server's clock %v", id, time.Unix(sec, nsec).UTC(), dbNow.UTC())
		}
		if i > 0 && bytes.Compare(id[:], prev[:]) <= 0 {
			t.Errorf("nxg_uuidv7() = %s does not sort after the previous %s", id, prev)
		}
		prev = id
	}

	t.Run("IsTheDefaultID", func(t *testing.T) {
		var id uuid.UUID
		if err := pool.QueryRow(ctx, `INSERT INTO branches (name, address, timezone, capacity)
			VALUES ('Defaulted', '1 Test St', 'UTC', 1) RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if id.Version() != 7 {
			t.Fatalf("default branch id %s has version %d, want 7", id, id.Version())
		}
	})
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		pool, err := db.Open(ctx, "postgres://postgres:open-Secret-1@127.0.0.1:1/x", db.PoolConfig{})
		if err == nil {
			pool.Close()
			t.Fatal("Open of an unreachable server succeeded")
		}
		if !strings.Contains(err.Error(), "127.0.0.1:1/x") {
			t.Errorf("error %q does not name the server 127.0.0.1:1/x", err)
		}
		if strings.Contains(err.Error(), "open-Secret-1") {
			t.Errorf("error %q reveals the password", err)
		}
	})

	t.Run("MalformedURL", func(t *testing.T) {
		t.Parallel()
		_, err := db.Open(ctx, "postgres://[::1", db.PoolConfig{})
		if err == nil || !strings.HasPrefix(err.Error(), "parse database url: ") {
			t.Fatalf("Open of a malformed URL = %v, want parse database url: ...", err)
		}
	})

	t.Run("AppliesPoolConfig", func(t *testing.T) {
		t.Parallel()
		tdb := testkit.NewDatabase(t)
		pool, err := db.Open(ctx, tdb.URL, db.PoolConfig{MaxConns: 3, ApplicationName: "nxg-dbtest"})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer pool.Close()
		if got := pool.Config().MaxConns; got != 3 {
			t.Errorf("MaxConns = %d, want 3", got)
		}
		var app string
		if err := pool.QueryRow(ctx, `SELECT current_setting('application_name')`).Scan(&app); err != nil || app != "nxg-dbtest" {
			t.Errorf("application_name = %q, %v; want nxg-dbtest", app, err)
		}
		// The schema is there: Open connected to the database asked for.
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM branches`).Scan(&n); err != nil {
			t.Errorf("query branches through the opened pool: %v", err)
		}
	})
}
