package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// idleUnlinkFloor is a member linked to a machine, inserted directly.
type idleUnlinkFloor struct {
	db      *testkit.Database
	machine uuid.UUID
	link    uuid.UUID
}

func setupIdleUnlink(t *testing.T) *idleUnlinkFloor {
	t.Helper()
	ctx := context.Background()
	d := testkit.NewDatabase(t)
	f := &idleUnlinkFloor{db: d}
	var user, branch, session uuid.UUID
	steps := []struct {
		sql  string
		args []any
		into *uuid.UUID
	}{
		{`INSERT INTO users (email, password_hash, display_name, role, data_key) VALUES ('idle@example.com', 'x', 'Idle', 'member', '\x00') RETURNING id`, nil, &user},
		{`INSERT INTO branches (name, address, timezone, capacity, idle_unlink_minutes) VALUES ('Idle gym', 'x', 'Europe/London', 50, 10) RETURNING id`, nil, &branch},
	}
	for _, s := range steps {
		if err := d.Pool.QueryRow(ctx, s.sql, s.args...).Scan(s.into); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Pool.QueryRow(ctx, `INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, 'Rower', 'rower', 'IDLE-TAG') RETURNING id`, branch).Scan(&f.machine); err != nil {
		t.Fatal(err)
	}
	if err := d.Pool.QueryRow(ctx, `INSERT INTO gym_sessions (user_id, branch_id, method, expires_at) VALUES ($1, $2, 'qr', now() + interval '4 hours') RETURNING id`, user, branch).Scan(&session); err != nil {
		t.Fatal(err)
	}
	if err := d.Pool.QueryRow(ctx, `INSERT INTO machine_links (machine_id, user_id, gym_session_id) VALUES ($1, $2, $3) RETURNING id`, f.machine, user, session).Scan(&f.link); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE machines SET current_link_id = $1 WHERE id = $2`, f.link, f.machine); err != nil {
		t.Fatal(err)
	}
	return f
}

// state returns the link's end reason ("" while open) and the machine's status.
func (f *idleUnlinkFloor) state(t *testing.T) (reason, status string) {
	t.Helper()
	if err := f.db.Pool.QueryRow(context.Background(),
		`SELECT coalesce(l.end_reason, ''), m.status FROM machine_links l JOIN machines m ON m.id = l.machine_id WHERE l.id = $1`, f.link).Scan(&reason, &status); err != nil {
		t.Fatal(err)
	}
	return reason, status
}

func TestIdleUnlink(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SnoozesWhileActiveThenEnds", func(t *testing.T) {
		t.Parallel()
		f := setupIdleUnlink(t)
		now := time.Now()
		w := &jobs.IdleUnlinkWorker{Pool: f.db.Pool, Settings: floor.Settings{IdleUnlinkOverride: time.Minute}, Now: func() time.Time { return now }}
		job := &river.Job[jobs.IdleUnlinkArgs]{Args: jobs.IdleUnlinkArgs{LinkID: f.link}}

		// Just linked: the job snoozes until the idle limit would pass.
		err := w.Work(ctx, job)
		var snooze *river.JobSnoozeError
		if !errors.As(err, &snooze) || snooze.Duration < 55*time.Second || snooze.Duration > 62*time.Second {
			t.Fatalf("Work = %v, want a snooze of about a minute", err)
		}
		if reason, status := f.state(t); reason != "" || status != "in_use" {
			t.Fatalf("after snooze: reason %q, status %q", reason, status)
		}

		// A minute later with no activity, the link ends as idle and the
		// machine is free.
		now = now.Add(2 * time.Minute)
		if err := w.Work(ctx, job); err != nil {
			t.Fatal(err)
		}
		if reason, status := f.state(t); reason != floor.LinkEndIdle || status != "available" {
			t.Fatalf("after idle: reason %q, status %q", reason, status)
		}
		// Running again (River is at least once) changes nothing.
		if err := w.Work(ctx, job); err != nil {
			t.Fatal(err)
		}
		if reason, _ := f.state(t); reason != floor.LinkEndIdle {
			t.Fatalf("after rerun: reason %q", reason)
		}
	})

	t.Run("BranchLimitWithoutOverride", func(t *testing.T) {
		t.Parallel()
		f := setupIdleUnlink(t)
		now := time.Now().Add(5 * time.Minute)
		w := &jobs.IdleUnlinkWorker{Pool: f.db.Pool, Now: func() time.Time { return now }}
		job := &river.Job[jobs.IdleUnlinkArgs]{Args: jobs.IdleUnlinkArgs{LinkID: f.link}}
		// Five minutes into the branch's ten: five more to wait.
		var snooze *river.JobSnoozeError
		if err := w.Work(ctx, job); !errors.As(err, &snooze) || snooze.Duration < 4*time.Minute || snooze.Duration > 6*time.Minute {
			t.Fatalf("Work = %v, want a snooze of about five minutes", err)
		}
	})

	t.Run("EndedOrMissingLinkIsNoOp", func(t *testing.T) {
		t.Parallel()
		f := setupIdleUnlink(t)
		if _, err := f.db.Pool.Exec(ctx, `UPDATE machine_links SET ended_at = now(), end_reason = 'member' WHERE id = $1`, f.link); err != nil {
			t.Fatal(err)
		}
		w := &jobs.IdleUnlinkWorker{Pool: f.db.Pool, Settings: floor.Settings{IdleUnlinkOverride: time.Nanosecond}}
		for _, id := range []uuid.UUID{f.link, uuid.New()} {
			if err := w.Work(ctx, &river.Job[jobs.IdleUnlinkArgs]{Args: jobs.IdleUnlinkArgs{LinkID: id}}); err != nil {
				t.Fatalf("Work(%s) = %v", id, err)
			}
		}
		if reason, _ := f.state(t); reason != floor.LinkEndMember {
			t.Fatalf("reason = %q, want the member's", reason)
		}
		if err := (&jobs.IdleUnlinkWorker{}).Work(ctx, &river.Job[jobs.IdleUnlinkArgs]{}); err == nil {
			t.Fatal("an unconfigured worker succeeded")
		}
	})

	t.Run("RunsInRiverWithShortenedLimit", func(t *testing.T) {
		t.Parallel()
		f := setupIdleUnlink(t)
		settings := floor.Settings{IdleUnlinkOverride: time.Second}
		workers, err := jobs.Workers(jobs.Deps{Pool: f.db.Pool, Floor: settings})
		if err != nil {
			t.Fatal(err)
		}
		client, err := river.NewClient(riverpgxv5.New(f.db.Pool), &river.Config{
			Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2}},
			Workers:           workers,
			FetchPollInterval: 100 * time.Millisecond,
			TestOnly:          true,
		})
		if err != nil {
			t.Fatal(err)
		}
		events, cancelEvents := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
		defer cancelEvents()
		if err := client.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = client.Stop(context.Background()) }()
		// Inserted due now, as if the link were a second old: the job
		// snoozes briefly at most, then ends the link.
		if _, err := client.Insert(ctx, jobs.IdleUnlinkArgs{LinkID: f.link}, nil); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(15 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Job.State == rivertype.JobStateCompleted {
					if reason, status := f.state(t); reason != floor.LinkEndIdle || status != "available" {
						t.Fatalf("after the job: reason %q, status %q", reason, status)
					}
					return
				}
				t.Fatalf("job failed: %v", ev.Job.Errors)
			case <-deadline:
				reason, status := f.state(t)
				t.Fatalf("job did not complete within 15s (reason %q, status %q)", reason, status)
			}
		}
	})
}
