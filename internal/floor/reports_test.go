package floor

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

func TestCheckSet(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, machine string
		set           SetValues
		field         string // empty: plausible
	}{
		{"StrengthSet", "chest_press", SetValues{Reps: 12, WeightKg: 60, DurationSeconds: 40, Calories: 8}, ""},
		{"RepsOnly", "leg_press", SetValues{Reps: 10, WeightKg: 140}, ""},
		{"Run", "treadmill", SetValues{DurationSeconds: 1800, DistanceM: 5000, Calories: 350}, ""},
		{"Ride", "bike", SetValues{DurationSeconds: 3600, DistanceM: 40000}, ""},
		{"Row", "rower", SetValues{DurationSeconds: 420, DistanceM: 2000, Reps: 200}, ""},
		{"UnknownTypeIsStrength", "rack", SetValues{Reps: 5, WeightKg: 200}, ""},
		{"NoWork", "chest_press", SetValues{WeightKg: 60}, "set.reps"},
		{"WeightOnCardio", "treadmill", SetValues{DurationSeconds: 60, WeightKg: 10}, "set.weight_kg"},
		{"DistanceOnStrength", "lat_pulldown", SetValues{Reps: 10, DistanceM: 5}, "set.distance_m"},
		{"DistanceWithoutDuration", "rower", SetValues{Reps: 10, DistanceM: 100}, "set.duration_seconds"},
		{"TooFastRun", "treadmill", SetValues{DurationSeconds: 60, DistanceM: 800}, "set.distance_m"},
		{"TooFastRow", "rower", SetValues{DurationSeconds: 60, DistanceM: 500}, "set.distance_m"},
		{"FastRideIsFine", "bike", SetValues{DurationSeconds: 60, DistanceM: 800}, ""},
		{"TooManyCalories", "elliptical", SetValues{DurationSeconds: 60, Calories: 41}, "set.calories"},
		{"CaloriesWithoutDuration", "cable", SetValues{Reps: 10, Calories: 5}, "set.calories"},
		{"TooManyRepsPerSecond", "cable", SetValues{Reps: 100, DurationSeconds: 30}, "set.reps"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckSet(c.machine, c.set)
			if c.field == "" {
				if err != nil {
					t.Fatalf("CheckSet = %v, want plausible", err)
				}
				return
			}
			e, ok := apperr.As(err)
			if !ok || e.Code != apperr.CodeInvalidArgument || e.Field != c.field {
				t.Fatalf("CheckSet = %#v, want invalid_argument on %s", err, c.field)
			}
		})
	}
}

// reportsFixture is a fresh database with a branch, and a listener on the
// machines and members channels.
type reportsFixture struct {
	db       *testkit.Database
	branch   uuid.UUID
	listener *pgx.Conn
}

func newReportsFixture(t testing.TB) *reportsFixture {
	t.Helper()
	ctx := context.Background()
	f := &reportsFixture{db: testkit.NewDatabase(t)}
	if err := f.db.Pool.QueryRow(ctx,
		`INSERT INTO branches (name, address, timezone, capacity) VALUES ('Reports', 'Report street', 'Europe/London', 50) RETURNING id`,
	).Scan(&f.branch); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, f.db.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+ChannelMachines+"; LISTEN "+ChannelMembers); err != nil {
		t.Fatal(err)
	}
	f.listener = conn
	return f
}

// reporter returns a Reporter over the fixture's pool, closed when the test ends.
func (f *reportsFixture) reporter(t testing.TB, opts ReporterOptions) *Reporter {
	t.Helper()
	opts.Logger = testkit.Logger(t, 0)
	r := NewReporter(f.db.Pool, opts)
	t.Cleanup(r.Close)
	return r
}

// machine inserts a machine of type typ whose console is online.
func (f *reportsFixture) machine(t testing.TB, typ string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := f.db.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag, last_seen_at) VALUES ($1, $2, $3, $2, now()) RETURNING id`,
		f.branch, "m-"+uuid.NewString(), typ).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

type testLink struct{ user, session, link uuid.UUID }

// link checks a new member in and links them to machine.
func (f *reportsFixture) link(t testing.TB, machine uuid.UUID) testLink {
	t.Helper()
	ctx := context.Background()
	var l testLink
	err := pgx.BeginFunc(ctx, f.db.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx,
			`INSERT INTO users (email, password_hash, display_name, role, data_key) VALUES ($1, 'x', 'Linked Member', 'member', '\x00') RETURNING id`,
			"u-"+uuid.NewString()+"@reports.test").Scan(&l.user); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx,
			`INSERT INTO gym_sessions (user_id, branch_id, method, expires_at) VALUES ($1, $2, 'qr', now() + interval '1 hour') RETURNING id`,
			l.user, f.branch).Scan(&l.session); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx,
			`INSERT INTO machine_links (machine_id, user_id, gym_session_id, last_activity_at) VALUES ($1, $2, $3, now() - interval '5 minutes') RETURNING id`,
			machine, l.user, l.session).Scan(&l.link); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE machines SET current_link_id = $1 WHERE id = $2`, l.link, machine)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	f.drain(t)
	return l
}

type machineRow struct {
	status  string
	version int64
	online  bool
	fault   bool
}

func (f *reportsFixture) row(t testing.TB, id uuid.UUID) machineRow {
	t.Helper()
	var m machineRow
	if err := f.db.Pool.QueryRow(context.Background(), `SELECT status, version, online, fault FROM machines WHERE id = $1`, id).
		Scan(&m.status, &m.version, &m.online, &m.fault); err != nil {
		t.Fatal(err)
	}
	return m
}

// notifications collects what arrives until the channels have been quiet
// for quiet.
func (f *reportsFixture) notifications(t testing.TB, quiet time.Duration) []*pgconn.Notification {
	t.Helper()
	var out []*pgconn.Notification
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		n, err := f.listener.WaitForNotification(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
}

// drain discards the notifications of the set-up.
func (f *reportsFixture) drain(t testing.TB) { f.notifications(t, 50*time.Millisecond) }

// split sorts notifications into machines changes and member events.
func split(t testing.TB, ns []*pgconn.Notification) (machines []MachinesChanged, members []MemberEvent) {
	t.Helper()
	for _, n := range ns {
		switch n.Channel {
		case ChannelMachines:
			var m MachinesChanged
			if err := json.Unmarshal([]byte(n.Payload), &m); err != nil {
				t.Fatal(err)
			}
			machines = append(machines, m)
		case ChannelMembers:
			var m MemberEvent
			if err := json.Unmarshal([]byte(n.Payload), &m); err != nil {
				t.Fatal(err)
			}
			members = append(members, m)
		}
	}
	return machines, members
}

// reportAll sends every report at once, each from its own goroutine, and
// returns the outcomes in order.
func reportAll(r *Reporter, reps []Report) []reportOutcome {
	outs := make([]reportOutcome, len(reps))
	var wg sync.WaitGroup
	for i, rep := range reps {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			outs[i].res, outs[i].err = r.Report(ctx, rep)
		})
	}
	wg.Wait()
	return outs
}

func requireCode(t testing.TB, err error, code apperr.Code, contains string) {
	t.Helper()
	e, ok := apperr.As(err)
	if !ok || e.Code != code || !strings.Contains(e.Error(), contains) {
		t.Fatalf("error = %v, want code %d containing %q", err, code, contains)
	}
}

func setReport(machine uuid.UUID, clientID string, v SetValues) Report {
	v.ClientSetID = clientID
	return Report{Machine: machine, Kind: ReportSet, Set: v}
}

func TestReporter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	press := SetValues{Reps: 10, WeightKg: 50, DurationSeconds: 30, Calories: 5}

	t.Run("HeartbeatBringsOfflineMachineBack", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		m := f.machine(t, "treadmill")
		if _, err := f.db.Pool.Exec(ctx, `UPDATE machines SET online = false, last_seen_at = now() - interval '5 minutes' WHERE id = $1`, m); err != nil {
			t.Fatal(err)
		}
		f.drain(t)
		before := f.row(t, m)
		r := f.reporter(t, ReporterOptions{})
		res, err := r.Report(ctx, Report{Machine: m, Kind: ReportHeartbeat})
		if err != nil {
			t.Fatal(err)
		}
		after := f.row(t, m)
		if !after.online || after.status != "available" || after.version != before.version+1 || res.Machine.Version != after.version {
			t.Fatalf("after heartbeat %+v (result v%d), before %+v", after, res.Machine.Version, before)
		}
		machines, _ := split(t, f.notifications(t, 300*time.Millisecond))
		if len(machines) != 1 || machines[0].Branch != f.branch || !slices.Equal(machines[0].Machines, []MachineVersion{{m, after.version}}) {
			t.Fatalf("notified %+v", machines)
		}
		var recent bool
		if err := f.db.Pool.QueryRow(ctx, `SELECT last_seen_at > now() - interval '10 seconds' FROM machines WHERE id = $1`, m).Scan(&recent); err != nil || !recent {
			t.Fatalf("last_seen_at recent = %v, %v", recent, err)
		}

		// A heartbeat of a machine already online changes nothing visible:
		// no new version, no notification.
		if _, err := r.Report(ctx, Report{Machine: m, Kind: ReportHeartbeat}); err != nil {
			t.Fatal(err)
		}
		if got := f.row(t, m); got.version != after.version {
			t.Errorf("version moved to %d on a plain heartbeat", got.version)
		}
		if ns := f.notifications(t, 200*time.Millisecond); len(ns) != 0 {
			t.Errorf("plain heartbeat notified %v", ns)
		}
	})

	t.Run("OneBatchOneNotificationPerBranch", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		const n = 10
		var reps []Report
		var ids []uuid.UUID
		for range n {
			m := f.machine(t, "bike")
			ids = append(ids, m)
			reps = append(reps, Report{Machine: m, Kind: ReportStatus, Fault: true})
		}
		f.drain(t)
		// A batch starts when it is full, so n reports with MaxBatch n and a
		// long window are exactly one transaction.
		r := f.reporter(t, ReporterOptions{MaxBatch: n, Window: time.Minute, Writers: 1})
		for i, o := range reportAll(r, reps) {
			if o.err != nil || !o.res.Machine.Fault || o.res.Machine.Status.String != "maintenance" {
				t.Fatalf("report %d = %+v, %v", i, o.res.Machine, o.err)
			}
		}
		if s := r.Stats(); s.Batches != 1 || s.Reports != n {
			t.Fatalf("stats %+v, want one batch of %d", s, n)
		}
		machines, _ := split(t, f.notifications(t, 300*time.Millisecond))
		if len(machines) != 1 || len(machines[0].Machines) != n {
			t.Fatalf("notified %+v, want one notification naming %d machines", machines, n)
		}
		for _, mv := range machines[0].Machines {
			if !slices.Contains(ids, mv.ID) || mv.Version != f.row(t, mv.ID).version {
				t.Errorf("notified %+v", mv)
			}
		}
	})

	t.Run("ManyConcurrentReportsFewTransactions", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		var reps []Report
		for range 20 {
			m := f.machine(t, "rower")
			for range 10 {
				reps = append(reps, Report{Machine: m, Kind: ReportHeartbeat})
			}
		}
		r := f.reporter(t, ReporterOptions{Window: 50 * time.Millisecond})
		for i, o := range reportAll(r, reps) {
			if o.err != nil {
				t.Fatalf("report %d: %v", i, o.err)
			}
		}
		if s := r.Stats(); s.Reports != uint64(len(reps)) || s.Batches > uint64(len(reps))/10 {
			t.Fatalf("stats %+v for %d reports, want at most a tenth as many transactions", s, len(reps))
		}
	})

	t.Run("SetsLinksAndRefusals", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		press1, press2 := f.machine(t, "chest_press"), f.machine(t, "chest_press")
		tread, free := f.machine(t, "treadmill"), f.machine(t, "leg_press")
		l1, l2, lt := f.link(t, press1), f.link(t, press2), f.link(t, tread)
		var activityBefore time.Time
		if err := f.db.Pool.QueryRow(ctx, `SELECT last_activity_at FROM machine_links WHERE id = $1`, l1.link).Scan(&activityBefore); err != nil {
			t.Fatal(err)
		}
		reps := []Report{
			setReport(press1, "a", press),                                                  // 0 stored
			setReport(press2, "a", press),                                                  // 1 stored (same client id, other machine)
			setReport(press1, "a", press),                                                  // 2 same key in the same batch: duplicate
			setReport(tread, "w", SetValues{DurationSeconds: 60, WeightKg: 5}),             // 3 implausible
			setReport(free, "x", press),                                                    // 4 nobody linked
			{Machine: uuid.New(), Kind: ReportHeartbeat},                                   // 5 no such machine
			{Machine: press2, Kind: ReportHeartbeat},                                       // 6 fine
			setReport(tread, "run", SetValues{DurationSeconds: 600, DistanceM: 2000}),      // 7 stored
			setReport(tread, "sprint", SetValues{DurationSeconds: 10, DistanceM: 200}),     // 8 implausible
			{Machine: free, Kind: ReportStatus, Fault: false},                              // 9 fine
			setReport(press2, "b", SetValues{Reps: 12, WeightKg: 40, DurationSeconds: 20}), // 10 stored
		}
		r := f.reporter(t, ReporterOptions{MaxBatch: len(reps), Window: time.Minute, Writers: 1})
		outs := reportAll(r, reps)
		if s := r.Stats(); s.Batches != 1 || s.Fallbacks != 0 {
			t.Fatalf("stats %+v, want one batch without fallback", s)
		}
		// Reports 0 and 2 carry the same key and are sent at the same
		// moment, so either may reach the batch first: that one is stored,
		// the other answered as its duplicate.
		if outs[2].err == nil && !outs[2].res.Duplicate {
			outs[0], outs[2] = outs[2], outs[0]
		}
		for _, i := range []int{0, 1, 7, 10} {
			if outs[i].err != nil || outs[i].res.Duplicate || outs[i].res.Set.ID == uuid.Nil {
				t.Fatalf("report %d = %+v, %v; want stored", i, outs[i].res, outs[i].err)
			}
		}
		if o := outs[2]; o.err != nil || !o.res.Duplicate || o.res.Set.ID != outs[0].res.Set.ID {
			t.Fatalf("same key twice = %+v, %v; want the first one's set as a duplicate", o.res, o.err)
		}
		requireCode(t, outs[3].err, apperr.CodeInvalidArgument, "set.weight_kg")
		requireCode(t, outs[4].err, apperr.CodeFailedPrecondition, "no member is linked")
		requireCode(t, outs[5].err, apperr.CodeFailedPrecondition, "no longer exists")
		requireCode(t, outs[8].err, apperr.CodeInvalidArgument, "set.distance_m")
		if outs[6].err != nil || outs[9].err != nil {
			t.Fatalf("heartbeat %v, status %v", outs[6].err, outs[9].err)
		}

		s := outs[0].res.Set
		if s.UserID != l1.user || s.GymSessionID != l1.session || s.LinkID != l1.link || s.MachineID != press1 ||
			s.Reps != press.Reps || s.WeightKg != press.WeightKg || s.DurationSeconds != press.DurationSeconds || s.Calories != press.Calories {
			t.Errorf("stored %+v", s)
		}
		if s := outs[1].res.Set; s.UserID != l2.user || s.LinkID != l2.link {
			t.Errorf("stored on press2 %+v", s)
		}
		if s := outs[7].res.Set; s.UserID != lt.user || s.DistanceM != 2000 {
			t.Errorf("stored on treadmill %+v", s)
		}
		var count int
		if err := f.db.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_sets`).Scan(&count); err != nil || count != 4 {
			t.Fatalf("machine_sets holds %d (%v), want 4", count, err)
		}
		var activityAfter time.Time
		if err := f.db.Pool.QueryRow(ctx, `SELECT last_activity_at FROM machine_links WHERE id = $1`, l1.link).Scan(&activityAfter); err != nil || !activityAfter.After(activityBefore) {
			t.Fatalf("link activity %v -> %v (%v)", activityBefore, activityAfter, err)
		}

		// Each new set is announced to its member once; nothing changed
		// visibly on the machines.
		machines, members := split(t, f.notifications(t, 300*time.Millisecond))
		if len(machines) != 0 {
			t.Errorf("machines notified %+v", machines)
		}
		want := []MemberEvent{
			{User: l1.user, Kind: MemberSetReported, ID: outs[0].res.Set.ID},
			{User: l2.user, Kind: MemberSetReported, ID: outs[1].res.Set.ID},
			{User: lt.user, Kind: MemberSetReported, ID: outs[7].res.Set.ID},
			{User: l2.user, Kind: MemberSetReported, ID: outs[10].res.Set.ID},
		}
		byID := func(a, b MemberEvent) int { return strings.Compare(a.ID.String(), b.ID.String()) }
		slices.SortFunc(want, byID)
		slices.SortFunc(members, byID)
		if !slices.Equal(members, want) {
			t.Errorf("member events %+v, want %+v", members, want)
		}

		// A retry in a later batch is answered from the stored set, even
		// after the member unlinked, and announced to nobody.
		if _, err := f.db.Pool.Exec(ctx, `UPDATE machines SET current_link_id = NULL WHERE id = $1; `, press1); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.Pool.Exec(ctx, `UPDATE machine_links SET ended_at = now(), end_reason = 'member' WHERE id = $1`, l1.link); err != nil {
			t.Fatal(err)
		}
		f.drain(t)
		r = f.reporter(t, ReporterOptions{})
		again, err := r.Report(ctx, setReport(press1, "a", SetValues{Reps: 99, DurationSeconds: 60}))
		if err != nil || !again.Duplicate || again.Set.ID != outs[0].res.Set.ID || again.Set.Reps != press.Reps {
			t.Fatalf("retry = %+v, %v", again, err)
		}
		_, err = r.Report(ctx, setReport(press1, "new", press))
		requireCode(t, err, apperr.CodeFailedPrecondition, "no member is linked")
		if _, members := split(t, f.notifications(t, 200*time.Millisecond)); len(members) != 0 {
			t.Errorf("retry announced %+v", members)
		}
	})

	t.Run("FaultEndsLinkAndClears", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		m := f.machine(t, "cable")
		l := f.link(t, m)
		before := f.row(t, m)
		if before.status != "in_use" {
			t.Fatalf("linked machine is %s", before.status)
		}
		r := f.reporter(t, ReporterOptions{})
		res, err := r.Report(ctx, Report{Machine: m, Kind: ReportStatus, Fault: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Machine.Fault || res.Machine.Status.String != "maintenance" || res.Machine.CurrentLinkID.Valid {
			t.Fatalf("machine after fault %+v", res.Machine)
		}
		var reason string
		if err := f.db.Pool.QueryRow(ctx, `SELECT end_reason FROM machine_links WHERE id = $1 AND ended_at IS NOT NULL`, l.link).Scan(&reason); err != nil || reason != LinkEndMaintenance {
			t.Fatalf("link end reason %q, %v", reason, err)
		}
		machines, members := split(t, f.notifications(t, 300*time.Millisecond))
		if len(members) != 1 || members[0] != (MemberEvent{User: l.user, Kind: MemberMachineUnlinked, ID: l.link}) {
			t.Errorf("member events %+v", members)
		}
		last := machines[len(machines)-1].Machines
		if len(last) != 1 || last[0] != (MachineVersion{m, res.Machine.Version}) {
			t.Errorf("machines notified %+v, last should name version %d", machines, res.Machine.Version)
		}

		res, err = r.Report(ctx, Report{Machine: m, Kind: ReportStatus})
		if err != nil || res.Machine.Fault || res.Machine.Status.String != "available" {
			t.Fatalf("machine after clearing %+v, %v", res.Machine, err)
		}
	})

	t.Run("FailedBatchFallsBackToOneByOne", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		m := f.machine(t, "smith")
		f.link(t, m)
		// A client set id the database refuses (the proto's limit is not
		// applied here) fails the batch's insert, and with it the batch.
		reps := []Report{
			setReport(m, strings.Repeat("x", 65), press),
			setReport(m, "ok", press),
			{Machine: m, Kind: ReportHeartbeat},
		}
		r := f.reporter(t, ReporterOptions{MaxBatch: len(reps), Window: time.Minute, Writers: 1})
		outs := reportAll(r, reps)
		if outs[0].err == nil {
			t.Fatal("a set the database refuses was stored")
		}
		if _, ok := apperr.As(outs[0].err); ok {
			t.Errorf("database failure reported as a client error: %v", outs[0].err)
		}
		if outs[1].err != nil || outs[1].res.Set.ID == uuid.Nil || outs[2].err != nil {
			t.Fatalf("the others failed: %v, %v", outs[1].err, outs[2].err)
		}
		if s := r.Stats(); s.Fallbacks != 1 || s.Batches != 2 {
			t.Fatalf("stats %+v, want one fallback writing two reports alone", s)
		}
	})

	t.Run("BackpressureAndClose", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		m := f.machine(t, "rack")
		r := NewReporter(f.db.Pool, ReporterOptions{QueueSize: 2, Writers: 1, Logger: testkit.Logger(t, 0)})
		// The writer is started by hand below, once the queue is full.
		r.start.Do(func() {})
		results := make(chan error, 2)
		for _, rep := range []Report{{Machine: m, Kind: ReportHeartbeat}, {Machine: m, Kind: ReportStatus, Fault: true}} {
			go func() {
				_, err := r.Report(ctx, rep)
				results <- err
			}()
		}
		waitFor(t, "two reports to queue", func() bool { return len(r.queue) == 2 })
		_, err := r.Report(ctx, Report{Machine: m, Kind: ReportHeartbeat})
		requireCode(t, err, apperr.CodeResourceExhausted, "too many machine reports")

		// Close refuses new reports at once, and returns once the queued
		// ones are written.
		closed := make(chan struct{})
		go func() {
			r.Close()
			close(closed)
		}()
		waitFor(t, "Close to refuse reports", func() bool {
			r.mu.RLock()
			defer r.mu.RUnlock()
			return r.closed
		})
		_, err = r.Report(ctx, Report{Machine: m, Kind: ReportHeartbeat})
		requireCode(t, err, apperr.CodeUnavailable, "shutting down")
		r.startWriters()
		<-closed
		for range 2 {
			if err := <-results; err != nil {
				t.Fatal(err)
			}
		}
		if !f.row(t, m).fault {
			t.Error("the queued status report was not written")
		}
		r.Close() // twice is fine
	})

	t.Run("CallerGivesUp", func(t *testing.T) {
		t.Parallel()
		f := newReportsFixture(t)
		m := f.machine(t, "rack")
		r := f.reporter(t, ReporterOptions{Window: time.Minute, MaxBatch: 3, Writers: 1})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := r.Report(cctx, Report{Machine: m, Kind: ReportHeartbeat}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled report = %v", err)
		}
		// The abandoned report is dropped from its batch (full at three).
		outs := reportAll(r, []Report{{Machine: m, Kind: ReportStatus}, {Machine: m, Kind: ReportHeartbeat}})
		for _, o := range outs {
			if o.err != nil {
				t.Fatal(o.err)
			}
		}
		if s := r.Stats(); s.Reports != 3 || s.Batches != 1 {
			t.Errorf("stats %+v, want three answered in one batch", s)
		}
	})

	t.Run("CloseUnused", func(t *testing.T) {
		t.Parallel()
		r := NewReporter(nil, ReporterOptions{})
		r.Close()
		_, err := r.Report(ctx, Report{Kind: ReportHeartbeat})
		requireCode(t, err, apperr.CodeUnavailable, "shutting down")
	})
}

// waitFor polls cond every 5ms for up to 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkReporter measures the reports a Reporter writes per second, and
// their latency, with many consoles reporting at once against the real
// database: heartbeats, with one report in ten a fault switching on or off
// (a visible change that is notified).
func BenchmarkReporter(b *testing.B) {
	f := newReportsFixture(b)
	const consoles = 1000
	machines := make([]uuid.UUID, consoles)
	for i := range machines {
		machines[i] = f.machine(b, "treadmill")
	}
	if _, err := f.listener.Exec(context.Background(), "UNLISTEN *"); err != nil {
		b.Fatal(err)
	}
	r := NewReporter(f.db.Pool, ReporterOptions{Logger: testkit.Logger(b, 4)})
	defer r.Close()

	var mu sync.Mutex
	latencies := make([]time.Duration, 0, b.N)
	var failures int
	b.SetParallelism(max(1, 1024/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	var next sync.Mutex
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			next.Lock()
			i := n
			n++
			next.Unlock()
			rep := Report{Machine: machines[i%consoles], Kind: ReportHeartbeat}
			if i%10 == 0 {
				rep = Report{Machine: machines[i%consoles], Kind: ReportStatus, Fault: (i/consoles)%2 == 0}
			}
			t0 := time.Now()
			_, err := r.Report(context.Background(), rep)
			local = append(local, time.Since(t0))
			if err != nil {
				mu.Lock()
				failures++
				mu.Unlock()
			}
		}
		mu.Lock()
		latencies = append(latencies, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if failures > 0 {
		b.Fatalf("%d reports failed", failures)
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(p*float64(len(latencies))))].Microseconds()) / 1000
	}
	s := r.Stats()
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "reports/s")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(s.Reports)/float64(max(1, s.Batches)), "reports/tx")
}
