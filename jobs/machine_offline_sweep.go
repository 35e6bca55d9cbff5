package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/internal/floor"
)

// A silent console shows offline between offlineAfter and offlineAfter
// plus one sweep interval after its last heartbeat. The interval is a
// sixth of offlineAfter, so that lateness stays small next to the setting
// whatever it is: with the default 60 s it is 10 s, and a setting of a few
// seconds in development or tests is honoured within a second or so
// rather than 10 s late. It is clamped to [1 s, 10 s]: more often than
// once a second would only load the database, and a long setting must not
// leave consoles shown online long after they went quiet.
const (
	machineOfflineSweepMinInterval = time.Second
	machineOfflineSweepMaxInterval = 10 * time.Second
)

// MachineOfflineSweepInterval is how often the sweep runs when consoles
// are shown offline after offlineAfter of silence (0 → the default 60 s).
func MachineOfflineSweepInterval(offlineAfter time.Duration) time.Duration {
	if offlineAfter <= 0 {
		offlineAfter = floor.Settings{}.WithDefaults().MachineOfflineAfter
	}
	return min(max(offlineAfter/6, machineOfflineSweepMinInterval), machineOfflineSweepMaxInterval)
}

// MachineOfflineSweepArgs asks for machines whose console stopped sending
// heartbeats to be shown offline.
type MachineOfflineSweepArgs struct{}

// Kind is the stable job kind name stored with every job.
func (MachineOfflineSweepArgs) Kind() string { return "machine_offline_sweep" }

// InsertOpts puts the sweep on the default queue, which is never held up by
// long maintenance work, and tries it once: a failed sweep is superseded by
// the next one a few seconds later, so retries would only pile up.
func (MachineOfflineSweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueDefault, MaxAttempts: 1}
}

// MachineOfflineSweepWorker marks offline the machines whose console has
// been silent for longer than OfflineAfter, and tells every watcher of
// their branches in the same transaction.
// Machines without a console (never seen) are left alone. Running it twice
// finds nothing more to do the second time: it is idempotent.
type MachineOfflineSweepWorker struct {
	river.WorkerDefaults[MachineOfflineSweepArgs]
	Pool *pgxpool.Pool
	// OfflineAfter is how long a console may stay silent (0 → 60s).
	OfflineAfter time.Duration
}

// Timeout bounds one sweep; it is a single indexed update.
func (w *MachineOfflineSweepWorker) Timeout(*river.Job[MachineOfflineSweepArgs]) time.Duration {
	return 30 * time.Second
}

// Work sweeps once.
func (w *MachineOfflineSweepWorker) Work(ctx context.Context, _ *river.Job[MachineOfflineSweepArgs]) error {
	if w.Pool == nil {
		return fmt.Errorf("machine offline sweep worker is not configured (pool)")
	}
	after := w.OfflineAfter
	if after <= 0 {
		after = floor.Settings{}.WithDefaults().MachineOfflineAfter
	}
	var swept int
	err := db.WithTx(ctx, w.Pool, func(tx pgx.Tx) error {
		rows, err := queries.ConsoleMachinesSweepOffline(ctx, tx, after.Seconds())
		if err != nil {
			return fmt.Errorf("mark silent machines offline: %w", err)
		}
		swept = len(rows)
		byBranch := map[uuid.UUID][]floor.MachineVersion{}
		var branches []uuid.UUID
		for _, r := range rows {
			if _, ok := byBranch[r.BranchID]; !ok {
				branches = append(branches, r.BranchID)
			}
			byBranch[r.BranchID] = append(byBranch[r.BranchID], floor.MachineVersion{ID: r.ID, Version: r.Version})
		}
		for _, b := range branches {
			// NotifyMachines splits a big branch's machines into as many
			// notifications as their payloads need.
			if err := floor.NotifyMachines(ctx, tx, b, byBranch[b]...); err != nil {
				return fmt.Errorf("notify machines gone offline: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	river.RecordOutput(ctx, map[string]int{"offline": swept}) //nolint:errcheck // output is informational
	return nil
}
