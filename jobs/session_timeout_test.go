package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// floorFixture is a member at a branch with one machine, in a fresh database.
type floorFixture struct {
	tdb     *testkit.Database
	user    uuid.UUID
	branch  uuid.UUID
	machine uuid.UUID
}

func setupFloor(t *testing.T) *floorFixture {
	t.Helper()
	ctx := context.Background()
	f := &floorFixture{tdb: testkit.NewDatabase(t), user: uuid.Must(uuid.NewV7())}
	if _, err := f.tdb.Pool.Exec(ctx, `INSERT INTO users (id, email, password_hash, display_name, role, data_key)
		VALUES ($1, $2, 'x', 'Timeout Member', 'member', '\x00')`, f.user, f.user.String()+"@timeout.test"); err != nil {
		t.Fatal(err)
	}
	if err := f.tdb.Pool.QueryRow(ctx, `INSERT INTO branches (name, address, timezone, capacity)
		VALUES ('NXG Timeout', '1 Clock Lane', 'Europe/London', 50) RETURNING id`).Scan(&f.branch); err != nil {
		t.Fatal(err)
	}
	if err := f.tdb.Pool.QueryRow(ctx, `INSERT INTO machines (branch_id, name, machine_type, nfc_tag)
		VALUES ($1, 'Rower 1', 'rower', $2) RETURNING id`, f.branch, "tag-"+f.user.String()).Scan(&f.machine); err != nil {
		t.Fatal(err)
	}
	return f
}

// openSession opens a session expiring at expiresAt with the machine
// linked to it, as check-in and linking leave them.
func (f *floorFixture) openSession(t *testing.T, expiresAt time.Time) (session, link uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	err := db.WithTx(ctx, f.tdb.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO gym_sessions (user_id, branch_id, method, started_at, expires_at)
			VALUES ($1, $2, 'qr', $3, $4) RETURNING id`, f.user, f.branch, expiresAt.Add(-time.Hour), expiresAt).Scan(&session); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `INSERT INTO machine_links (machine_id, user_id, gym_session_id)
			VALUES ($1, $2, $3) RETURNING id`, f.machine, f.user, session).Scan(&link); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE machines SET current_link_id = $1 WHERE id = $2`, link, f.machine)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return session, link
}

// sessionEnd returns the session's end reason ("" while open).
func (f *floorFixture) sessionEnd(t *testing.T, session uuid.UUID) string {
	t.Helper()
	var reason *string
	if err := f.tdb.Pool.QueryRow(context.Background(), `SELECT end_reason FROM gym_sessions WHERE id = $1`, session).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if reason == nil {
		return ""
	}
	return *reason
}

// requireUnlinked checks the link ended because its session did and the
// machine is free again.
func (f *floorFixture) requireUnlinked(t *testing.T, link uuid.UUID) {
	t.Helper()
	var reason *string
	var current *uuid.UUID
	var status string
	if err := f.tdb.Pool.QueryRow(context.Background(), `SELECT l.end_reason, m.current_link_id, m.status
		FROM machine_links l JOIN machines m ON m.id = l.machine_id WHERE l.id = $1`, link).Scan(&reason, &current, &status); err != nil {
		t.Fatal(err)
	}
	if reason == nil || *reason != floor.LinkEndSessionEnded || current != nil || status != "available" {
		t.Fatalf("link end_reason = %v, machine current_link_id = %v, status %s; want session_ended, none, available", reason, current, status)
	}
}

// workTimeout runs one timeout job through River's test worker.
func workTimeout(t *testing.T, f *floorFixture, w *jobs.SessionTimeoutWorker, session uuid.UUID) *rivertest.WorkResult {
	t.Helper()
	ctx := context.Background()
	worker := rivertest.NewWorker(t, riverpgxv5.New(f.tdb.Pool), &river.Config{Logger: testLogger(t)}, w)
	tx, err := f.tdb.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	res, err := worker.Work(ctx, t, tx, jobs.SessionTimeoutArgs{SessionID: session}, nil)
	if err != nil {
		t.Fatalf("work: %v", err)
	}
	return res
}

func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("EndsSessionWithShortenedOverride", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		// What NXG_SESSION_TIMEOUT_OVERRIDE does at check-in: the session
		// lasts the override instead of the branch's 240 minutes.
		settings := floor.Settings{SessionTimeoutOverride: 1500 * time.Millisecond}
		length := settings.SessionLength(240)
		if length != 1500*time.Millisecond {
			t.Fatalf("SessionLength = %v, want the override", length)
		}
		expiresAt := time.Now().Add(length)
		session, link := f.openSession(t, expiresAt)

		workers, err := jobs.Workers(jobs.Deps{Pool: f.tdb.Pool, Floor: settings})
		if err != nil {
			t.Fatal(err)
		}
		client, err := river.NewClient(riverpgxv5.New(f.tdb.Pool), &river.Config{
			Logger:            testLogger(t),
			Queues:            map[string]river.QueueConfig{jobs.QueueDefault: {MaxWorkers: 2}},
			Workers:           workers,
			FetchCooldown:     20 * time.Millisecond,
			FetchPollInterval: 50 * time.Millisecond,
			TestOnly:          true,
		})
		if err != nil {
			t.Fatal(err)
		}
		// Inserted the way StartSession does: in a transaction, scheduled
		// at the session's expiry.
		if err := db.WithTx(ctx, f.tdb.Pool, func(tx pgx.Tx) error {
			_, err := client.InsertTx(ctx, tx, jobs.SessionTimeoutArgs{SessionID: session}, &river.InsertOpts{ScheduledAt: expiresAt})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := client.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = client.Stop(stopCtx)
		})

		// River's scheduler promotes due jobs every few seconds: poll
		// generously rather than assume how soon.
		deadline := time.Now().Add(30 * time.Second)
		for f.sessionEnd(t, session) == "" {
			if time.Now().After(deadline) {
				t.Fatal("session not ended by the timeout job within 30s")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got := f.sessionEnd(t, session); got != floor.SessionEndTimeout {
			t.Fatalf("end_reason = %q, want timeout", got)
		}
		var endedAt time.Time
		if err := f.tdb.Pool.QueryRow(ctx, `SELECT ended_at FROM gym_sessions WHERE id = $1`, session).Scan(&endedAt); err != nil {
			t.Fatal(err)
		}
		if endedAt.Before(expiresAt.Add(-time.Millisecond)) {
			t.Fatalf("ended at %v, before its expiry %v", endedAt, expiresAt)
		}
		f.requireUnlinked(t, link)
	})

	t.Run("NoOpAfterEarlierEnd", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		session, link := f.openSession(t, time.Now().Add(-time.Second))
		if err := db.WithTx(ctx, f.tdb.Pool, func(tx pgx.Tx) error {
			_, err := floor.EndSession(ctx, tx, session, floor.SessionEndMember, uuid.Nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		res := workTimeout(t, f, &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool}, session)
		if res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("event = %v, want completed", res.EventKind)
		}
		if got := f.sessionEnd(t, session); got != floor.SessionEndMember {
			t.Fatalf("end_reason = %q, want the member's own end kept", got)
		}
		f.requireUnlinked(t, link)
	})

	t.Run("DueSessionEndsAtOnce", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		session, link := f.openSession(t, time.Now().Add(-time.Second))
		res := workTimeout(t, f, &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool}, session)
		if res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("event = %v, want completed", res.EventKind)
		}
		if got := f.sessionEnd(t, session); got != floor.SessionEndTimeout {
			t.Fatalf("end_reason = %q, want timeout", got)
		}
		f.requireUnlinked(t, link)
		// Running it again (River is at least once) changes nothing.
		res = workTimeout(t, f, &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool}, session)
		if res.EventKind != river.EventKindJobCompleted || f.sessionEnd(t, session) != floor.SessionEndTimeout {
			t.Fatalf("second run: event %v, end_reason %q", res.EventKind, f.sessionEnd(t, session))
		}
	})

	t.Run("SnoozesUntilExpiry", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		now := time.Now()
		expiresAt := now.Add(20 * time.Minute)
		session, _ := f.openSession(t, expiresAt)
		res := workTimeout(t, f, &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool, Now: func() time.Time { return now }}, session)
		if res.EventKind != river.EventKindJobSnoozed || res.Job.State != rivertype.JobStateScheduled {
			t.Fatalf("event = %v, state %v; want snoozed and scheduled", res.EventKind, res.Job.State)
		}
		if d := res.Job.ScheduledAt.Sub(expiresAt); d < -time.Second || d > time.Second {
			t.Fatalf("snoozed until %v, want about %v", res.Job.ScheduledAt, expiresAt)
		}
		if got := f.sessionEnd(t, session); got != "" {
			t.Fatalf("end_reason = %q, want the session still open", got)
		}
	})

	t.Run("MissingSessionIsNoOp", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		res := workTimeout(t, f, &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool}, uuid.Must(uuid.NewV7()))
		if res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("event = %v, want completed", res.EventKind)
		}
	})

	t.Run("WithoutPoolFails", func(t *testing.T) {
		t.Parallel()
		w := &jobs.SessionTimeoutWorker{}
		err := w.Work(ctx, &river.Job[jobs.SessionTimeoutArgs]{Args: jobs.SessionTimeoutArgs{SessionID: uuid.Must(uuid.NewV7())}})
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want a configuration error", err)
		}
	})

	t.Run("DatabaseFailureIsRetried", func(t *testing.T) {
		t.Parallel()
		f := setupFloor(t)
		session, _ := f.openSession(t, time.Now().Add(-time.Second))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		w := &jobs.SessionTimeoutWorker{Pool: f.tdb.Pool}
		if err := w.Work(cctx, &river.Job[jobs.SessionTimeoutArgs]{Args: jobs.SessionTimeoutArgs{SessionID: session}}); err == nil {
			t.Fatal("Work with a cancelled context succeeded; want an error so River retries")
		}
		if got := f.sessionEnd(t, session); got != "" {
			t.Fatalf("end_reason = %q after a failed run, want open", got)
		}
	})
}
