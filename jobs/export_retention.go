package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/storage"
)

// ExportRetentionArgs asks for GDPR export archives past their expiry to be
// marked expired and deleted from S3.
type ExportRetentionArgs struct{}

// Kind is the stable job kind name stored with every job.
func (ExportRetentionArgs) Kind() string { return "export_retention" }

// InsertOpts puts the sweep on the maintenance queue, at most once per half
// hour however many processes or operators ask for it.
func (ExportRetentionArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       QueueMaintenance,
		MaxAttempts: 5,
		UniqueOpts:  river.UniqueOpts{ByPeriod: 30 * time.Minute},
	}
}

// ExportRetentionWorker expires ready exports whose expires_at has passed
// and deletes their archives.
//
// Marking and deleting happen in one transaction that commits only when
// every archive is deleted: if S3 fails, the rows stay ready and the next
// run (or a retry) deletes them, so no archive outlives its row. Deleting an
// archive already gone (the user was erased) succeeds, and a second run
// finds nothing due: the sweep is idempotent.
type ExportRetentionWorker struct {
	river.WorkerDefaults[ExportRetentionArgs]
	Pool    *pgxpool.Pool
	Storage *storage.Client
}

// Timeout bounds one run so a hung S3 cannot hold a maintenance slot.
func (w *ExportRetentionWorker) Timeout(*river.Job[ExportRetentionArgs]) time.Duration {
	return 5 * time.Minute
}

// Work expires due exports and deletes their archives.
func (w *ExportRetentionWorker) Work(ctx context.Context, job *river.Job[ExportRetentionArgs]) error {
	if w.Pool == nil || w.Storage == nil {
		return fmt.Errorf("export retention worker is not configured (pool, storage)")
	}
	var expired int
	err := db.WithTx(ctx, w.Pool, func(tx pgx.Tx) error {
		due, err := queries.DataExportExpireDue(ctx, tx)
		if err != nil {
			return fmt.Errorf("expire due exports: %w", err)
		}
		for _, e := range due {
			if !e.ObjectKey.Valid || e.ObjectKey.String == "" {
				continue
			}
			// The key is a whole object name; as a prefix it matches that object.
			if _, err := w.Storage.DeletePrefix(ctx, e.ObjectKey.String); err != nil {
				return fmt.Errorf("delete archive of export %s: %w", e.ID, err)
			}
		}
		expired = len(due)
		return nil
	})
	if err != nil {
		return err
	}
	river.RecordOutput(ctx, map[string]int{"expired": expired}) //nolint:errcheck // output is informational
	return nil
}
