package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"

	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// sweepTestBundle is a fresh database with two branches and a listener on
// the machines channel.
type sweepTestBundle struct {
	db       *testkit.Database
	branches [2]uuid.UUID
	listener *pgx.Conn
}

func setupSweep(t *testing.T) *sweepTestBundle {
	t.Helper()
	ctx := context.Background()
	b := &sweepTestBundle{db: testkit.NewDatabase(t)}
	for i := range b.branches {
		if err := b.db.Pool.QueryRow(ctx,
			`INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, 'Sweep street', 'Europe/London', 50) RETURNING id`,
			"Sweep "+uuid.NewString()).Scan(&b.branches[i]); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, b.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+floor.ChannelMachines); err != nil {
		t.Fatal(err)
	}
	b.listener = conn
	return b
}

// machine inserts a machine of branch whose console was last seen ago
// (never, when ago is negative) and which is online or not.
func (b *sweepTestBundle) machine(t *testing.T, branch uuid.UUID, ago time.Duration, online bool) uuid.UUID {
	t.Helper()
	var seen any
	if ago >= 0 {
		seen = time.Now().Add(-ago)
	}
	var id uuid.UUID
	if err := b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag, online, last_seen_at)
		 VALUES ($1, $2, 'treadmill', $2, $3, $4) RETURNING id`,
		branch, "m-"+uuid.NewString(), online, seen).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

type sweptMachine struct {
	online  bool
	version int64
}

func (b *sweepTestBundle) state(t *testing.T, id uuid.UUID) sweptMachine {
	t.Helper()
	var s sweptMachine
	if err := b.db.Pool.QueryRow(context.Background(), `SELECT online, version FROM machines WHERE id = $1`, id).Scan(&s.online, &s.version); err != nil {
		t.Fatal(err)
	}
	return s
}

// notifications collects what arrives on the machines channel until it has
// been quiet for quiet.
func (b *sweepTestBundle) notifications(t *testing.T, quiet time.Duration) []floor.MachinesChanged {
	t.Helper()
	var out []floor.MachinesChanged
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		n, err := b.listener.WaitForNotification(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var mc floor.MachinesChanged
		if err := json.Unmarshal([]byte(n.Payload), &mc); err != nil {
			t.Fatalf("payload %q: %v", n.Payload, err)
		}
		out = append(out, mc)
	}
}

func TestMachineOfflineSweep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("MarksSilentConsolesOfflineOnceAndNotifiesPerBranch", func(t *testing.T) {
		t.Parallel()
		b := setupSweep(t)
		silentA1 := b.machine(t, b.branches[0], 2*time.Minute, true)
		silentA2 := b.machine(t, b.branches[0], 61*time.Second, true)
		silentB := b.machine(t, b.branches[1], time.Hour, true)
		fresh := b.machine(t, b.branches[0], 5*time.Second, true)
		noConsole := b.machine(t, b.branches[1], -1, true)
		alreadyOffline := b.machine(t, b.branches[1], time.Hour, false)
		before := map[uuid.UUID]sweptMachine{}
		for _, id := range []uuid.UUID{silentA1, silentA2, silentB, fresh, noConsole, alreadyOffline} {
			before[id] = b.state(t, id)
		}

		w := &jobs.MachineOfflineSweepWorker{Pool: b.db.Pool, OfflineAfter: time.Minute}
		if err := w.Work(ctx, &river.Job[jobs.MachineOfflineSweepArgs]{}); err != nil {
			t.Fatal(err)
		}
		for _, id := range []uuid.UUID{silentA1, silentA2, silentB} {
			got := b.state(t, id)
			if got.online || got.version != before[id].version+1 {
				t.Errorf("silent machine %s = %+v, want offline at version %d", id, got, before[id].version+1)
			}
		}
		for _, id := range []uuid.UUID{fresh, noConsole, alreadyOffline} {
			if got := b.state(t, id); got != before[id] {
				t.Errorf("machine %s = %+v, want untouched %+v", id, got, before[id])
			}
		}
		var status string
		if err := b.db.Pool.QueryRow(ctx, `SELECT status FROM machines WHERE id = $1`, silentA1).Scan(&status); err != nil || status != "offline" {
			t.Errorf("status = %q, %v; want offline", status, err)
		}

		got := b.notifications(t, 500*time.Millisecond)
		if len(got) != 2 {
			t.Fatalf("notifications = %+v, want one per branch", got)
		}
		byBranch := map[uuid.UUID][]floor.MachineVersion{}
		for _, n := range got {
			byBranch[n.Branch] = n.Machines
		}
		wantA := []floor.MachineVersion{{ID: silentA1, Version: before[silentA1].version + 1}, {ID: silentA2, Version: before[silentA2].version + 1}}
		sortVersions := func(v []floor.MachineVersion) {
			slices.SortFunc(v, func(a, b floor.MachineVersion) int { return strings.Compare(a.ID.String(), b.ID.String()) })
		}
		sortVersions(wantA)
		sortVersions(byBranch[b.branches[0]])
		if !slices.Equal(byBranch[b.branches[0]], wantA) {
			t.Errorf("branch A notified %+v, want %+v", byBranch[b.branches[0]], wantA)
		}
		if want := []floor.MachineVersion{{ID: silentB, Version: before[silentB].version + 1}}; !slices.Equal(byBranch[b.branches[1]], want) {
			t.Errorf("branch B notified %+v, want %+v", byBranch[b.branches[1]], want)
		}

		// A second sweep finds nothing and says nothing.
		if err := w.Work(ctx, &river.Job[jobs.MachineOfflineSweepArgs]{}); err != nil {
			t.Fatal(err)
		}
		if got := b.notifications(t, 300*time.Millisecond); len(got) != 0 {
			t.Errorf("second sweep notified %+v", got)
		}
	})

	t.Run("DefaultsToSixtySeconds", func(t *testing.T) {
		t.Parallel()
		b := setupSweep(t)
		recent := b.machine(t, b.branches[0], 30*time.Second, true)
		old := b.machine(t, b.branches[0], 90*time.Second, true)
		w := &jobs.MachineOfflineSweepWorker{Pool: b.db.Pool}
		if err := w.Work(ctx, &river.Job[jobs.MachineOfflineSweepArgs]{}); err != nil {
			t.Fatal(err)
		}
		if !b.state(t, recent).online || b.state(t, old).online {
			t.Errorf("recent online = %v, old online = %v; want true, false", b.state(t, recent).online, b.state(t, old).online)
		}
	})

	t.Run("ThroughRiver", func(t *testing.T) {
		t.Parallel()
		b := setupSweep(t)
		silent := b.machine(t, b.branches[0], 10*time.Second, true)
		workers, err := jobs.Workers(jobs.Deps{Pool: b.db.Pool, Floor: floor.Settings{MachineOfflineAfter: 5 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		worker := rivertest.NewWorker(t, riverpgxv5.New(b.db.Pool), &river.Config{Logger: testLogger(t)}, &jobs.MachineOfflineSweepWorker{
			Pool: b.db.Pool, OfflineAfter: 5 * time.Second,
		})
		tx, err := b.db.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		res, err := worker.Work(ctx, t, tx, jobs.MachineOfflineSweepArgs{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.EventKind != river.EventKindJobCompleted {
			t.Fatalf("job %s", res.EventKind)
		}
		if b.state(t, silent).online {
			t.Error("silent machine still online")
		}
		opts := jobs.MachineOfflineSweepArgs{}.InsertOpts()
		if opts.Queue != jobs.QueueDefault || opts.MaxAttempts != 1 {
			t.Errorf("InsertOpts = %+v", opts)
		}
		client, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{
			Logger: testLogger(t), Queues: jobs.Queues(), Workers: workers, PeriodicJobs: jobs.PeriodicJobs(floor.Settings{MachineOfflineAfter: 5 * time.Second}),
		})
		if err != nil {
			t.Fatal(err)
		}
		if !client.PeriodicJobs().RemoveByID(jobs.MachineOfflineSweepArgs{}.Kind()) {
			t.Error("the sweep is not scheduled")
		}
	})

	t.Run("BigBranchIsNotifiedInSeveralNotifications", func(t *testing.T) {
		t.Parallel()
		b := setupSweep(t)
		// More consoles than one NOTIFY payload can name, all silent at
		// once, as after a network cut.
		const silent = 320
		rows, err := b.db.Pool.Query(ctx,
			`INSERT INTO machines (branch_id, name, machine_type, nfc_tag, online, last_seen_at)
			 SELECT $1, 'bulk-' || g || '-' || $2, 'bike', 'bulk-' || g || '-' || $2, true, now() - interval '5 minutes'
			 FROM generate_series(1, $3) AS g RETURNING id`,
			b.branches[0], uuid.NewString(), silent)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			t.Fatal(err)
		}
		w := &jobs.MachineOfflineSweepWorker{Pool: b.db.Pool, OfflineAfter: time.Minute}
		if err := w.Work(ctx, &river.Job[jobs.MachineOfflineSweepArgs]{}); err != nil {
			t.Fatal(err)
		}
		got := b.notifications(t, 500*time.Millisecond)
		if len(got) < 2 {
			t.Fatalf("%d notifications for %d machines, want several", len(got), silent)
		}
		notified := map[uuid.UUID]int{}
		for _, n := range got {
			if n.Branch != b.branches[0] {
				t.Fatalf("notification of branch %s", n.Branch)
			}
			for _, m := range n.Machines {
				notified[m.ID]++
			}
		}
		for _, id := range ids {
			if notified[id] != 1 || b.state(t, id).online {
				t.Fatalf("machine %s notified %d times, online %v; want once and offline", id, notified[id], b.state(t, id).online)
			}
		}
	})

	t.Run("ScheduleFollowsOfflineAfter", func(t *testing.T) {
		t.Parallel()
		b := setupSweep(t)
		// A console that falls silent as River starts: the run on start
		// finds it fresh, so only a later run, one derived interval (1 s)
		// apart, marks it offline; the fixed 10 s of the default would not
		// within the deadline.
		const offlineAfter = 2 * time.Second
		settings := floor.Settings{MachineOfflineAfter: offlineAfter}
		console := b.machine(t, b.branches[0], 0, true)
		workers, err := jobs.Workers(jobs.Deps{Pool: b.db.Pool, Floor: settings})
		if err != nil {
			t.Fatal(err)
		}
		client, err := river.NewClient(riverpgxv5.New(b.db.Pool), &river.Config{
			Logger: testLogger(t), Queues: jobs.Queues(), Workers: workers, PeriodicJobs: jobs.PeriodicJobs(settings),
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		if err := client.Start(runCtx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			stopCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
			defer stop()
			_ = client.Stop(stopCtx)
		}()
		started := time.Now()
		deadline := started.Add(offlineAfter + 4*jobs.MachineOfflineSweepInterval(offlineAfter))
		for b.state(t, console).online {
			if time.Now().After(deadline) {
				t.Fatalf("console still online %v after River started, with offline after %v", time.Since(started), offlineAfter)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("console shown offline %v after it fell silent", time.Since(started))
	})

	t.Run("Unconfigured", func(t *testing.T) {
		t.Parallel()
		w := &jobs.MachineOfflineSweepWorker{}
		if err := w.Work(ctx, &river.Job[jobs.MachineOfflineSweepArgs]{}); err == nil {
			t.Error("sweep without a pool succeeded")
		}
		if got := w.Timeout(nil); got <= 0 {
			t.Errorf("Timeout = %v", got)
		}
	})
}

func TestMachineOfflineSweepInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		offlineAfter, want time.Duration
	}{
		{0, 10 * time.Second}, // the default 60 s
		{-time.Second, 10 * time.Second},
		{time.Minute, 10 * time.Second},
		{time.Hour, 10 * time.Second}, // at most 10 s
		{30 * time.Second, 5 * time.Second},
		{12 * time.Second, 2 * time.Second},
		{6 * time.Second, time.Second},
		{3 * time.Second, time.Second}, // at least 1 s
		{100 * time.Millisecond, time.Second},
	} {
		if got := jobs.MachineOfflineSweepInterval(tc.offlineAfter); got != tc.want {
			t.Errorf("MachineOfflineSweepInterval(%v) = %v, want %v", tc.offlineAfter, got, tc.want)
		}
	}
}
