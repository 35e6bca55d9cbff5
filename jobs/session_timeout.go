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
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/floor"
)

// SessionTimeoutArgs ends a gym session once its time is up. StartSession
// inserts it in the check-in's transaction, scheduled at the session's
// expires_at.
type SessionTimeoutArgs struct {
	SessionID uuid.UUID `json:"session_id" river:"unique"`
}

// Kind is the stable job kind name stored with every job.
func (SessionTimeoutArgs) Kind() string { return "session_timeout" }

// InsertOpts: one job per session. Timeouts share the default queue with
// other quick work and never wait behind slow calls to outside services.
func (SessionTimeoutArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueDefault, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// SessionTimeoutWorker ends a gym session with reason timeout when its
// expires_at has passed, unlinking the machine the member holds, all in one
// transaction (floor.EndSession). It is idempotent: a session that ended
// earlier (the member checked out, staff ended it, a check-in elsewhere
// superseded it) or that is gone makes the job a no-op, and a session whose
// expires_at is still ahead (the job ran early, or its expiry moved) is
// snoozed until then.
type SessionTimeoutWorker struct {
	river.WorkerDefaults[SessionTimeoutArgs]
	Pool *pgxpool.Pool
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

var sessionTimeoutQueries = dbsqlc.New()

// Work ends the session or snoozes until it is due.
func (w *SessionTimeoutWorker) Work(ctx context.Context, job *river.Job[SessionTimeoutArgs]) error {
	if w.Pool == nil {
		return errors.New("session timeout: no database pool configured")
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	wait, err := db.WithTxV(ctx, w.Pool, func(tx pgx.Tx) (time.Duration, error) {
		s, err := sessionTimeoutQueries.GymSessionGetForUpdate(ctx, tx, job.Args.SessionID)
		if db.IsNotFound(err) {
			return 0, nil // erased with its member
		}
		if err != nil {
			return 0, fmt.Errorf("read session: %w", err)
		}
		if s.EndedAt.Valid {
			return 0, nil
		}
		if wait := s.ExpiresAt.Sub(now()); wait > 0 {
			return wait, nil
		}
		_, err = floor.EndSession(ctx, tx, s.ID, floor.SessionEndTimeout, uuid.Nil)
		if errors.Is(err, floor.ErrAlreadyEnded) {
			return 0, nil
		}
		return 0, err
	})
	if err != nil {
		return err
	}
	if wait > 0 {
		return river.JobSnooze(wait)
	}
	return nil
}
