package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	"github.com/nxg-fitness/nxg/internal/erasure"
)

// AccountErasureArgs asks for a closed account to be erased everywhere.
type AccountErasureArgs struct {
	UserID uuid.UUID `json:"user_id" river:"unique"`
}

// Kind is the stable job kind name stored with every job.
func (AccountErasureArgs) Kind() string { return "account_erasure" }

// InsertOpts: one erasure per user; it retries for days rather than give up,
// because an erasure that never finishes breaks a legal promise.
func (AccountErasureArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 25, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// AccountErasureWorker erases a closed account with the erasure registry
// (internal/erasure): sessions and other Redis keys, waiting jobs, MongoDB
// documents, S3 objects, PostgreSQL rows with the users row and its data key
// last, and the person's identity in the audit trail, which then gets its
// closing gdpr.account_erased row.
//
// Every eraser is idempotent, so the worker is: a retry after a partial
// failure resumes, and a run after success changes nothing.
type AccountErasureWorker struct {
	river.WorkerDefaults[AccountErasureArgs]
	// DB reads the account before erasing (a pool).
	DB dbsqlc.DBTX
	// Erasure is the registry run; erasure.Default in production.
	Erasure *erasure.Registry
}

// Timeout bounds one attempt; a user's data is small, but S3 and MongoDB
// may be slow, and a hung store must not hold a maintenance slot forever.
func (w *AccountErasureWorker) Timeout(*river.Job[AccountErasureArgs]) time.Duration {
	return 10 * time.Minute
}

// Work erases the account. It refuses (cancels) an account that is not
// closed: only DeleteAccount, which marks deleted_at in the transaction that
// inserts this job, may cause an erasure, so a stray job cannot destroy a
// live account. An account whose row is already gone is a re-run: the
// erasers finish whatever a failed attempt left.
func (w *AccountErasureWorker) Work(ctx context.Context, job *river.Job[AccountErasureArgs]) error {
	userID := job.Args.UserID
	if userID == uuid.Nil {
		return river.JobCancel(errors.New("account erasure without a user id"))
	}
	if w.DB == nil || w.Erasure == nil {
		return errors.New("account erasure worker is not configured (database, erasure registry)")
	}
	user, err := queries.UserGetForErasure(ctx, w.DB, userID)
	switch {
	case err == nil && !user.DeletedAt.Valid:
		return river.JobCancel(fmt.Errorf("account %s is not closed; refusing to erase it", userID))
	case err != nil && !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("read account %s: %w", userID, err)
	}
	if err := w.Erasure.Erase(ctx, userID); err != nil {
		return err
	}
	river.RecordOutput(ctx, map[string]any{"erased": w.Erasure.Names()}) //nolint:errcheck // output is informational
	return nil
}

// queries are the sqlc queries the workers run.
var queries = dbsqlc.New()
