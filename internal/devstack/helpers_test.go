package devstack_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgAdminURL is the maintenance database tests create their throwaway
// databases from.
const pgAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// testDatabaseURL creates an empty database for one test and drops it when
// the test ends, so FerretDB's schemas never leak between runs.
func testDatabaseURL(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgAdminURL)
	if err != nil {
		t.Fatalf("PostgreSQL is not running on 127.0.0.1:5432: start it with "+
			"`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (%v)", err)
	}
	defer conn.Close(context.Background())

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "nxg_devstack_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	// Registered now, so it runs after the cleanups of whatever the test
	// starts on this database (cleanups run last-in, first-out).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgAdminURL)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		// FORCE ends connections a stand-in may still hold, so a failed test
		// never leaves the database behind.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// testLogger sends the stand-ins' logs to the test log, and drops lines
// logged after the test ended (a late server goroutine would otherwise make
// testing panic).
func testLogger(t *testing.T) *slog.Logger { return testkit.Logger(t, slog.LevelDebug) }
