package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

const (
	opsPassword = "ops-Pa55word-cmd-9d1"
	dbPassword  = "db-Pa55word-cmd-4e7"
)

func TestRunUsage(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{
		"NoArgs":         nil,
		"UnknownCommand": {"frobnicate"},
		"TwoCommands":    {"migrate", "serve"},
		"Flag":           {"--help"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, map[string]string{}, strings.NewReader(""), &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Fatalf("run(%q) = %v, want errUsage", args, err)
			}
			if !strings.HasPrefix(stderr.String(), "usage: nxg <command>") ||
				!strings.Contains(stderr.String(), "serve") || !strings.Contains(stderr.String(), "migrate") {
				t.Errorf("stderr = %q, want the usage naming serve and migrate", stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
}

func TestRunServeWithoutConfiguration(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := run(ctx, []string{"serve"}, map[string]string{}, strings.NewReader(""), &stdout, &stderr)
	if err == nil {
		t.Fatal("serve with an empty environment succeeded")
	}
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Errorf("error is %T, want *config.Error", err)
	}
	for _, name := range []string{"DATABASE_URL", "REDIS_URL", "MONGO_URL", "NXG_OPS_USER", "NXG_OPS_PASSWORD", "S3_BUCKET", "FIREBASE_PROJECT_ID", "NXG_AUDIT_KEY", "NXG_CHECKIN_KEY", "NXG_JWT_KEYS", "NXG_MASTER_KEY"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
	if stdout.Len() != 0 || stderr.Len() != 0 {
		t.Errorf("run wrote stdout %q, stderr %q; main prints the error, run must not", stdout.String(), stderr.String())
	}
}

// freshDatabaseURL creates an empty database (no schema at all) and returns
// a URL for it carrying a password, which trust authentication ignores but
// the logs must never show. The database is dropped when the test ends.
func freshDatabaseURL(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, testkit.AdminURL())
	if err != nil {
		t.Fatalf("connect to %s: %v\n%s", testkit.AdminURL(), err, testkit.PostgresHint)
	}
	defer admin.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "nxg_cmdtest_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testkit.AdminURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(testkit.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), dbPassword)
	u.Path = "/" + name
	return u.String()
}

// logLine is the part of a JSON log line the tests read.
type logLine struct {
	Level  string         `json:"level"`
	Msg    string         `json:"msg"`
	Config map[string]any `json:"config"`
}

func TestRunMigrate(t *testing.T) {
	t.Parallel()
	dbURL := freshDatabaseURL(t)
	environ := map[string]string{
		"DATABASE_URL":        dbURL,
		"REDIS_URL":           "redis://127.0.0.1:6379/0",
		"MONGO_URL":           "mongodb://127.0.0.1:27017",
		"NXG_OPS_USER":        "ops",
		"NXG_OPS_PASSWORD":    opsPassword,
		"S3_BUCKET":           "nxg-test",
		"FIREBASE_PROJECT_ID": "nxg-test",
		"NXG_FCM_ENDPOINT":    "http://127.0.0.1:1",
	}
	maps.Copy(environ, testkit.AuthEnv(t))
	maps.Copy(environ, testkit.AIEnv())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	migrate := func() []logLine {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(ctx, []string{"migrate"}, environ, strings.NewReader(""), &stdout, &stderr); err != nil {
			t.Fatalf("migrate: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("stderr = %q, want nothing", stderr.String())
		}
		for _, secret := range []string{opsPassword, dbPassword} {
			if strings.Contains(stdout.String(), secret) {
				t.Errorf("stdout reveals the secret %q:\n%s", secret, stdout.String())
			}
		}
		var lines []logLine
		sc := bufio.NewScanner(&stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l logLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("stdout line is not JSON: %v\n%s", err, sc.Text())
			}
			lines = append(lines, l)
		}
		return lines
	}
	count := func(lines []logLine, msg string) int {
		n := 0
		for _, l := range lines {
			if l.Msg == msg {
				n++
			}
		}
		return n
	}

	lines := migrate()

	t.Run("LogsConfigurationMasked", func(t *testing.T) {
		if len(lines) == 0 || lines[0].Msg != "configuration" {
			t.Fatalf("first log line = %+v, want the configuration", lines)
		}
		cfg := lines[0].Config
		if cfg["ops_password"] != "*****" {
			t.Errorf("config.ops_password = %#v, want *****", cfg["ops_password"])
		}
		dbLogged, _ := cfg["database_url"].(string)
		if !strings.Contains(dbLogged, "xxxxx@") || !strings.Contains(dbLogged, "nxg_cmdtest_") {
			t.Errorf("config.database_url = %q, want the database named and the password masked", dbLogged)
		}
	})

	t.Run("AppliesMigrations", func(t *testing.T) {
		if n := count(lines, "database is up to date"); n != 1 {
			t.Errorf("%d \"database is up to date\" lines, want 1", n)
		}
		if lines[len(lines)-1].Msg != "database is up to date" {
			t.Errorf("last log line = %q, want \"database is up to date\"", lines[len(lines)-1].Msg)
		}
		if count(lines, "applied schema migration") == 0 || count(lines, "applied river migration") == 0 {
			t.Errorf("no applied-migration lines logged for an empty database: %+v", lines)
		}
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		for _, table := range []string{"branches", "branch_opening_hours", "machines", "river_job", "river_queue", "goose_db_version"} {
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil || !exists {
				t.Errorf("table %s exists = %v, %v; want true", table, exists, err)
			}
		}
	})

	t.Run("SecondRunIsANoOp", func(t *testing.T) {
		again := migrate()
		if n := count(again, "database is up to date"); n != 1 {
			t.Errorf("%d \"database is up to date\" lines, want 1", n)
		}
		if n := count(again, "applied schema migration") + count(again, "applied river migration"); n != 0 {
			t.Errorf("second migrate applied %d migrations, want 0: %+v", n, again)
		}
	})
}

func TestRunMigrateUnreachableDatabase(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	environ := map[string]string{
		"DATABASE_URL":        "postgres://postgres:" + dbPassword + "@127.0.0.1:1/nxg",
		"REDIS_URL":           "redis://127.0.0.1:6379/0",
		"MONGO_URL":           "mongodb://127.0.0.1:27017",
		"NXG_OPS_USER":        "ops",
		"NXG_OPS_PASSWORD":    opsPassword,
		"S3_BUCKET":           "nxg-test",
		"FIREBASE_PROJECT_ID": "nxg-test",
		"NXG_FCM_ENDPOINT":    "http://127.0.0.1:1",
	}
	maps.Copy(environ, testkit.AuthEnv(t))
	maps.Copy(environ, testkit.AIEnv())
	err := run(context.Background(), []string{"migrate"}, environ, strings.NewReader(""), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1/nxg") {
		t.Fatalf("migrate against a closed port = %v, want an error naming 127.0.0.1:1/nxg", err)
	}
	if strings.Contains(err.Error(), dbPassword) || strings.Contains(stdout.String(), dbPassword) {
		t.Errorf("password revealed: error %q, stdout %q", err, stdout.String())
	}
}
