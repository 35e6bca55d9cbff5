package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/ticket"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/checkin"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/storage"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// identityFixture is the real identity stack of one test: keys generated
// for it, sessions and limits in the test's Redis prefix, objects in an
// in-process S3, and an insert-only River client over the test database.
type identityFixture struct {
	Identity
	redis *testkit.Redis
	s3    *devstack.S3
	// now is the clock of tokens and sessions; tests may move it.
	now func() time.Time
}

func newIdentity(t testing.TB, db *testkit.Database) *identityFixture {
	t.Helper()
	ctx := context.Background()
	r := testkit.NewRedis(t)
	f := &identityFixture{redis: r, now: time.Now}
	clock := func() time.Time { return f.now() }

	env := testkit.AuthEnv(t)
	ring, err := token.ParseKeyRing([]byte(env["NXG_JWT_KEYS"]))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := token.NewIssuer(token.IssuerConfig{Keys: ring, Issuer: "https://test.nxg", Audience: "nxg-test", Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := ring.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	master, err := fieldcrypt.ParseMasterKeys(env["NXG_MASTER_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	auditKey, err := base64.StdEncoding.DecodeString(env["NXG_AUDIT_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	auditLog, err := audit.New(auditKey)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := devstack.StartS3(ctx, t.TempDir(), "nxg-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	f.s3 = s3
	store, err := storage.New(ctx, storage.Config{
		Endpoint: s3.Endpoint(), Bucket: s3.Bucket, Region: s3.Region,
		AccessKeyID: s3.AccessKeyID, SecretAccessKey: s3.SecretAccessKey, UsePathStyle: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	riverClient, err := river.NewClient(riverpgxv5.New(db.Pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}

	f.Identity = Identity{
		Tokens:       tokens,
		Sessions:     session.NewStore(r.Client, r.Prefix, session.Options{Now: clock}),
		Passwords:    password.NewHasher(password.Options{}),
		LoginLimiter: ratelimit.NewLoginLimiter(r.Client, r.Prefix, ratelimit.LoginConfig{Now: clock}),
		Limiter:      ratelimit.NewLimiter(r.Client, r.Prefix),
		Audit:        auditLog,
		MasterKeys:   master,
		Storage:      store,
		River:        riverClient,
		JWKS:         jwks,
		Tickets:      ticket.NewStore(r.Client, r.Prefix, ticket.Options{Now: clock}),
	}
	return f
}

// jobsOfKind returns the args of the jobs of kind inserted so far.
func jobsOfKind(t testing.TB, db *testkit.Database, kind string) []json.RawMessage {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT args FROM river_job WHERE kind = $1 ORDER BY id`, kind)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[json.RawMessage])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// newFloor returns the gym floor's dependencies over db: a running hub on
// the database's own listener connection, entrance codes under a fresh key,
// and a drain context cancelled when the test ends.
func newFloor(t testing.TB, db *testkit.Database) Floor {
	t.Helper()
	hub := realtime.NewHub(realtime.Options{DatabaseURL: db.URL, Channels: floor.Channels, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitUntil(t, "the realtime hub to connect", hub.Ready)
	key, err := base64.StdEncoding.DecodeString(testkit.AuthEnv(t)["NXG_CHECKIN_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	codes, err := checkin.NewCodes(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return Floor{Hub: hub, Codes: codes, Settings: floor.Settings{}.WithDefaults(), Draining: ctx}
}

// waitUntil polls cond every 10ms for up to 10s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
