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
	"github.com/nxg-fitness/nxg/internal/fieldcrypt"
)

// MasterKeyRewrapArgs asks for every user's data key to be re-wrapped under
// the primary master key. This completes a master key rotation: once it has
// run after a deploy that prepended a new key to NXG_MASTER_KEY, no data key
// depends on the old master key any more and it can be removed.
type MasterKeyRewrapArgs struct{}

// Kind is the stable job kind name stored with every job.
func (MasterKeyRewrapArgs) Kind() string { return "master_key_rewrap" }

// InsertOpts: maintenance queue, at most one per hour.
func (MasterKeyRewrapArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByPeriod: time.Hour}}
}

// rewrapBatch is how many users one transaction re-wraps: small enough to
// hold row locks only briefly.
const rewrapBatch = 500

// MasterKeyRewrapWorker re-wraps data keys. Only the wrapping changes: the
// data keys themselves, and so every ciphertext, stay as they are. A key
// already under the primary is left alone, so re-runs are cheap no-ops.
type MasterKeyRewrapWorker struct {
	river.WorkerDefaults[MasterKeyRewrapArgs]
	Pool       *pgxpool.Pool
	MasterKeys *fieldcrypt.MasterKeys
}

// Timeout allows for large user tables; the work is resumable anyway.
func (w *MasterKeyRewrapWorker) Timeout(*river.Job[MasterKeyRewrapArgs]) time.Duration {
	return 30 * time.Minute
}

// Work walks every user in id order, a batch per transaction.
func (w *MasterKeyRewrapWorker) Work(ctx context.Context, job *river.Job[MasterKeyRewrapArgs]) error {
	if w.Pool == nil || w.MasterKeys == nil {
		return errors.New("master key rewrap worker is not configured (pool, master keys)")
	}
	var after uuid.UUID
	var rewrapped, failed int
	for {
		type result struct {
			n, rewrapped, failed int
			last                 uuid.UUID
		}
		res, err := db.WithTxV(ctx, w.Pool, func(tx pgx.Tx) (result, error) {
			rows, err := queries.UserDataKeyBatch(ctx, tx, dbsqlc.UserDataKeyBatchParams{AfterID: after, RowLimit: rewrapBatch})
			if err != nil {
				return result{}, fmt.Errorf("read data keys: %w", err)
			}
			r := result{n: len(rows), last: after}
			for _, row := range rows {
				r.last = row.ID
				wrapped, changed, err := w.MasterKeys.Rewrap(row.ID.String(), row.DataKey)
				if err != nil {
					// A key no master key in the ring opens cannot be fixed
					// here; it is counted and reported, and the others go on.
					r.failed++
					continue
				}
				if !changed {
					continue
				}
				if err := queries.UserDataKeySet(ctx, tx, dbsqlc.UserDataKeySetParams{ID: row.ID, DataKey: wrapped}); err != nil {
					return result{}, fmt.Errorf("store data key: %w", err)
				}
				r.rewrapped++
			}
			return r, nil
		})
		if err != nil {
			return err
		}
		rewrapped += res.rewrapped
		failed += res.failed
		after = res.last
		if res.n < rewrapBatch {
			break
		}
	}
	_ = river.RecordOutput(ctx, map[string]int{"rewrapped": rewrapped, "unreadable": failed})
	if failed > 0 {
		// Retrying will not help, but failing the job makes the problem
		// visible in River UI and the logs instead of passing silently.
		return fmt.Errorf("%d data keys could not be unwrapped by any master key in NXG_MASTER_KEY (primary %s)", failed, w.MasterKeys.PrimaryID())
	}
	return nil
}
