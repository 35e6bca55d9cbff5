package audit_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

type testBundle struct {
	db  *testkit.Database
	log *audit.Log
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	log, err := audit.New(bytes.Repeat([]byte{7}, audit.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return &testBundle{db: testkit.NewDatabase(t), log: log}
}

func (b *testBundle) record(t *testing.T, e audit.Event) {
	t.Helper()
	if err := db.WithTx(context.Background(), b.db.Pool, func(tx pgx.Tx) error {
		return b.log.Record(context.Background(), tx, e)
	}); err != nil {
		t.Fatal(err)
	}
}

func (b *testBundle) verify(t *testing.T) audit.Report {
	t.Helper()
	rep, err := b.log.Verify(context.Background(), b.db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func event(actor uuid.UUID, action string) audit.Event {
	return audit.Event{
		ActorID: actor, Action: action, TargetType: "user", TargetID: actor.String(),
		Result: audit.ResultSuccess, IP: "203.0.113.9", UserAgent: "NXG/1.0 (iOS)", RequestID: "req-1",
		Details: map[string]string{"device": "iPhone", "b": "2"},
	}
}

func TestLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("ConcurrentWritersFormOneChain", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() { b.record(t, event(uuid.New(), "auth.login")) })
		}
		wg.Wait()
		rep := b.verify(t)
		if !rep.OK() || rep.Rows != 12 || len(rep.Head) != 64 {
			t.Fatalf("report = %+v", rep)
		}
	})

	t.Run("RolledBackActionLeavesNoRow", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.record(t, event(uuid.New(), "auth.login"))
		_ = db.WithTx(ctx, b.db.Pool, func(tx pgx.Tx) error {
			if err := b.log.Record(ctx, tx, event(uuid.New(), "auth.logout")); err != nil {
				t.Fatal(err)
			}
			return context.Canceled // the action failed: its audit row goes with it
		})
		b.record(t, event(uuid.New(), "auth.refresh"))
		if rep := b.verify(t); !rep.OK() || rep.Rows != 2 {
			t.Fatalf("report = %+v", rep)
		}
	})

	t.Run("AppendOnlyIsEnforcedByTheDatabase", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.record(t, event(uuid.New(), "auth.login"))
		for _, stmt := range []string{
			`UPDATE audit_events SET action = 'auth.nothing'`,
			`UPDATE audit_events SET ip = '198.51.100.1'`,
			`DELETE FROM audit_events`,
			`TRUNCATE audit_events`,
		} {
			_, err := b.db.Pool.Exec(ctx, stmt)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "append-only") {
				t.Fatalf("%s: %v, want refused as append-only (insufficient_privilege)", stmt, err)
			}
		}
	})

	t.Run("TamperingIsDetected", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, a := range []string{"auth.login", "auth.refresh", "auth.logout", "profile.update"} {
			b.record(t, event(uuid.New(), a))
		}
		// Someone with full database access switches the guard off.
		if _, err := b.db.Pool.Exec(ctx, `ALTER TABLE audit_events DISABLE TRIGGER USER`); err != nil {
			t.Fatal(err)
		}
		if _, err := b.db.Pool.Exec(ctx, `UPDATE audit_events SET result = 'failure' WHERE action = 'auth.refresh'`); err != nil {
			t.Fatal(err)
		}
		if _, err := b.db.Pool.Exec(ctx, `DELETE FROM audit_events WHERE action = 'auth.logout'`); err != nil {
			t.Fatal(err)
		}
		rep := b.verify(t)
		if rep.OK() || rep.Rows != 3 {
			t.Fatalf("tampered trail verified: %+v", rep)
		}
		reasons := ""
		for _, p := range rep.Problems {
			reasons += p.Reason + "\n"
		}
		if !strings.Contains(reasons, "was edited") || !strings.Contains(reasons, "does not link") {
			t.Fatalf("problems = %s", reasons)
		}
	})

	t.Run("ErasureKeepsTheChainVerifiable", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		gone, kept := uuid.New(), uuid.New()
		b.record(t, event(gone, "auth.login"))
		b.record(t, audit.Event{ActorID: kept, Action: "staff.read_member", TargetType: "user", TargetID: gone.String(), Result: audit.ResultSuccess, IP: "192.0.2.1"})
		b.record(t, event(kept, "auth.login"))
		n, err := b.log.EraseSubject(ctx, b.db.Pool, gone)
		if err != nil || n != 2 {
			t.Fatalf("EraseSubject = %d, %v; want 2 rows", n, err)
		}
		var leftovers int
		if err := b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE actor_id = $1 OR target_id = $2 OR (actor_id IS NULL AND ip IS NOT NULL)`, gone, gone.String()).Scan(&leftovers); err != nil {
			t.Fatal(err)
		}
		if leftovers != 0 {
			t.Fatalf("%d rows still name the erased user", leftovers)
		}
		var staffIP string
		if err := b.db.Pool.QueryRow(ctx, `SELECT ip FROM audit_events WHERE actor_id = $1 AND action = 'staff.read_member'`, kept).Scan(&staffIP); err != nil || staffIP != "192.0.2.1" {
			t.Fatalf("the staff member's own row lost its IP: %q %v", staffIP, err)
		}
		if rep := b.verify(t); !rep.OK() || rep.Rows != 3 {
			t.Fatalf("after erasure: %+v", rep)
		}
		var ref string
		if err := b.db.Pool.QueryRow(ctx, `SELECT actor_ref FROM audit_events WHERE action = 'auth.login' AND actor_id IS NULL`).Scan(&ref); err != nil || ref != b.log.Pseudonym(gone.String()) {
			t.Fatalf("pseudonym = %q (%v)", ref, err)
		}
	})

	t.Run("SwappedIdentityIsDetected", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.record(t, event(uuid.New(), "auth.login"))
		if _, err := b.db.Pool.Exec(ctx, `ALTER TABLE audit_events DISABLE TRIGGER USER`); err != nil {
			t.Fatal(err)
		}
		if _, err := b.db.Pool.Exec(ctx, `UPDATE audit_events SET actor_id = $1`, uuid.New()); err != nil {
			t.Fatal(err)
		}
		if rep := b.verify(t); rep.OK() || !strings.Contains(rep.Problems[0].Reason, "actor_id") {
			t.Fatalf("report = %+v", rep)
		}
	})

	t.Run("AnotherKeyCannotVerify", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.record(t, event(uuid.New(), "auth.login"))
		other, err := audit.New(bytes.Repeat([]byte{8}, audit.KeySize))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := other.Verify(ctx, b.db.Pool)
		if err != nil || rep.OK() {
			t.Fatalf("verified with another key: %+v %v", rep, err)
		}
	})

	t.Run("EmptyTrailVerifies", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if rep := b.verify(t); !rep.OK() || rep.Rows != 0 || rep.Head != "" {
			t.Fatalf("report = %+v", rep)
		}
	})

	t.Run("Validation", func(t *testing.T) {
		t.Parallel()
		if _, err := audit.New([]byte("short")); err == nil {
			t.Fatal("a short key was accepted")
		}
		b := setup(t)
		err := db.WithTx(ctx, b.db.Pool, func(tx pgx.Tx) error {
			return b.log.Record(ctx, tx, audit.Event{})
		})
		if err == nil {
			t.Fatal("an event without action was recorded")
		}
		// A very long user agent is cut on a rune boundary, not refused.
		long := audit.Event{Action: "auth.login", Result: audit.ResultFailure, UserAgent: strings.Repeat("é", 400)}
		b.record(t, long)
		if rep := b.verify(t); !rep.OK() {
			t.Fatalf("report = %+v", rep)
		}
	})

	t.Run("Pseudonyms", func(t *testing.T) {
		t.Parallel()
		log, _ := audit.New(bytes.Repeat([]byte{7}, audit.KeySize))
		a, a2, c := log.Pseudonym("x"), log.Pseudonym("x"), log.Pseudonym("y")
		if a != a2 || a == c || !strings.HasPrefix(a, "p_") || strings.Contains(a, "x") || log.Pseudonym("") != "" {
			t.Fatalf("pseudonyms %q %q %q", a, a2, c)
		}
	})
}
