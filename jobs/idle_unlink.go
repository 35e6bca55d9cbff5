package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/floor"
)

// IdleUnlinkArgs asks for a machine link to be ended if its machine has
// reported no activity for the branch's idle limit. LinkMachine inserts it
// in the linking transaction, due when the link would first be idle.
type IdleUnlinkArgs struct {
	LinkID uuid.UUID `json:"link_id"`
}

// Kind is the stable job kind name stored with every job.
func (IdleUnlinkArgs) Kind() string { return "idle_unlink" }

// InsertOpts puts idle unlinks on the default queue: they free machines
// members are waiting for, so they must not wait behind slow work.
func (IdleUnlinkArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueDefault, MaxAttempts: 10}
}

// IdleUnlinkWorker ends machine links left idle.
//
// Every set the machine reports moves the link's last_activity_at, so when
// the job comes due the link may have been active since it was scheduled:
// the job then snoozes until the new idle deadline instead of scheduling
// another job per set. A link already ended (the member unlinked, the
// session ended) makes the job a no-op, so running it twice is harmless.
type IdleUnlinkWorker struct {
	river.WorkerDefaults[IdleUnlinkArgs]
	Pool     *pgxpool.Pool
	Settings floor.Settings
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Timeout bounds one run: it is a couple of small queries.
func (w *IdleUnlinkWorker) Timeout(*river.Job[IdleUnlinkArgs]) time.Duration {
	return 30 * time.Second
}

// Work ends the link if it is idle, or snoozes until it would be.
func (w *IdleUnlinkWorker) Work(ctx context.Context, job *river.Job[IdleUnlinkArgs]) error {
	if w.Pool == nil {
		return fmt.Errorf("idle unlink worker is not configured (pool)")
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	var snooze time.Duration
	err := db.WithTx(ctx, w.Pool, func(tx pgx.Tx) error {
		l, err := queries.MachineLinkGetWithIdle(ctx, tx, job.Args.LinkID)
		if db.IsNotFound(err) {
			return nil // the link, its machine or its member is gone
		}
		if err != nil {
			return fmt.Errorf("read link: %w", err)
		}
		if l.EndedAt.Valid {
			return nil
		}
		due := l.LastActivityAt.Add(w.Settings.IdleUnlinkAfter(l.IdleUnlinkMinutes))
		if wait := due.Sub(now()); wait > 0 {
			// River snoozes in whole seconds at best; round up so the
			// next run finds the link idle rather than snoozing again.
			snooze = wait.Truncate(time.Second) + time.Second
			return nil
		}
		if _, err := floor.EndLink(ctx, tx, l.ID, floor.LinkEndIdle); err != nil && !errors.Is(err, floor.ErrAlreadyEnded) {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if snooze > 0 {
		return river.JobSnooze(snooze)
	}
	return nil
}
