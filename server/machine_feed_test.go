package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// feedTestBranch inserts a branch straight into db and returns its id.
func feedTestBranch(t testing.TB, d *testkit.Database, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := d.Pool.QueryRow(context.Background(),
		`INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, 'x', 'Europe/London', 100) RETURNING id`, name).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// feedTestMachine inserts a machine of branch and returns its id.
func feedTestMachine(t testing.TB, d *testkit.Database, branch uuid.UUID, name string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := d.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, $2, 'rower', $3) RETURNING id`,
		branch, name, "tag-"+uuid.NewString()).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// feedTestToggle flips machines into or out of maintenance and notifies,
// in one transaction, as a staff change does.
func feedTestToggle(t testing.TB, d *testkit.Database, branch uuid.UUID, maintenance bool, machines ...uuid.UUID) {
	t.Helper()
	feedTestToggleNotifying(t, d, branch, maintenance, len(machines), machines...)
}

// feedTestToggleNotifying is feedTestToggle with at most perNotification
// machines named in each notification: a change to more machines than one
// NOTIFY payload can name is sent as several in the same transaction.
// It returns how many notifications were sent.
func feedTestToggleNotifying(t testing.TB, d *testkit.Database, branch uuid.UUID, maintenance bool, perNotification int, machines ...uuid.UUID) int {
	t.Helper()
	ctx := context.Background()
	notifications := 0
	err := db.WithTx(ctx, d.Pool, func(tx pgx.Tx) error {
		notifications = 0
		var changed []floor.MachineVersion
		for _, id := range machines {
			m, err := dbsqlc.New().MachineSetMaintenance(ctx, tx, dbsqlc.MachineSetMaintenanceParams{ID: id, Maintenance: maintenance})
			if err != nil {
				return err
			}
			changed = append(changed, floor.MachineVersion{ID: m.ID, Version: m.Version})
		}
		for part := range slices.Chunk(changed, perNotification) {
			if err := floor.NotifyMachines(ctx, tx, branch, part...); err != nil {
				return err
			}
			notifications++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return notifications
}

// watcherCount is how many watchers branch has in feed.
func watcherCount(feed *machineFeed, branch uuid.UUID) int {
	feed.mu.Lock()
	defer feed.mu.Unlock()
	if b := feed.branches[branch]; b != nil {
		return len(b.subs)
	}
	return 0
}

// nextDelivery waits up to 10s for the subscription's next delivery.
func nextDelivery(t testing.TB, s *machineSubscription) []*machineEvent {
	t.Helper()
	select {
	case evs, ok := <-s.Events():
		if !ok {
			t.Fatalf("subscription closed: %v", s.Err())
		}
		if len(evs) == 0 {
			t.Fatal("empty delivery")
		}
		return evs
	case <-time.After(10 * time.Second):
		t.Fatal("no machine event within 10s")
		return nil
	}
}

// nextMachineEvent waits up to 10s for the subscription's next delivery
// and requires it to hold one event.
func nextMachineEvent(t testing.TB, s *machineSubscription) *machineEvent {
	t.Helper()
	evs := nextDelivery(t, s)
	if len(evs) != 1 {
		t.Fatalf("delivery of %d events, want 1", len(evs))
	}
	return evs[0]
}

func TestMachineFeed(t *testing.T) {
	t.Parallel()

	t.Run("DeliversEachVersionOnceToItsBranch", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		fl := newFloor(t, d)
		feed := newMachineFeed(d.Pool, fl.Hub, slog.New(slog.DiscardHandler))
		reg := prometheus.NewRegistry()
		lag, err := NewFeedLag(reg)
		if err != nil {
			t.Fatal(err)
		}
		feed.lag = lag
		branch := feedTestBranch(t, d, "Feed A")
		other := feedTestBranch(t, d, "Feed B")
		rower := feedTestMachine(t, d, branch, "Rower")
		elsewhere := feedTestMachine(t, d, other, "Bike")

		sub := feed.subscribe(branch)
		defer sub.Close()
		otherSub := feed.subscribe(other)
		defer otherSub.Close()

		feedTestToggle(t, d, branch, true, rower)
		ev := nextMachineEvent(t, sub)
		if ev.Resync || ev.Machine.GetId() != rower.String() || ev.Machine.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE || ev.version != 2 {
			t.Fatalf("event = %+v", ev)
		}

		// A second notification of a version already delivered sends
		// nothing; the next real change does.
		err = db.WithTx(context.Background(), d.Pool, func(tx pgx.Tx) error {
			return floor.NotifyMachines(context.Background(), tx, branch, floor.MachineVersion{ID: rower, Version: 2})
		})
		if err != nil {
			t.Fatal(err)
		}
		feedTestToggle(t, d, other, true, elsewhere)
		if ev := nextMachineEvent(t, otherSub); ev.Machine.GetId() != elsewhere.String() {
			t.Fatalf("other branch event = %+v", ev)
		}
		feedTestToggle(t, d, branch, false, rower)
		ev = nextMachineEvent(t, sub)
		if ev.version != 3 || ev.Machine.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
			t.Fatalf("after the duplicate, event = %+v (version %d), want version 3", ev.Machine, ev.version)
		}
		select {
		case ev := <-sub.Events():
			t.Fatalf("unexpected event %+v", ev)
		default:
		}
		// Each change delivered, and only those, was measured at both
		// stages, from its commit: well under the test's own timeout.
		for _, stage := range []string{feedStageLoaded, feedStageHandedOut} {
			if count, sum := feedLagStage(t, reg, stage); count != 3 || sum <= 0 || sum > 30 {
				t.Fatalf("%s lag: %d observations summing to %v s, want the 3 changes delivered", stage, count, sum)
			}
		}

		// The shared encodings are the machine's.
		var fromProto, fromJSON nxgv1.Machine
		if err := proto.Unmarshal(ev.protoBytes(), &fromProto); err != nil || !proto.Equal(&fromProto, ev.Machine) {
			t.Fatalf("protoBytes decode to %v (%v)", &fromProto, err)
		}
		if err := protojson.Unmarshal(ev.jsonBytes(), &fromJSON); err != nil || !proto.Equal(&fromJSON, ev.Machine) {
			t.Fatalf("jsonBytes decode to %v (%v)", &fromJSON, err)
		}
		if got, ok := feed.eventFor(ev.Machine); !ok || got != ev {
			t.Fatal("eventFor does not find the event by its machine")
		}
		if _, ok := feed.eventFor(proto.Clone(ev.Machine).(*nxgv1.Machine)); ok {
			t.Fatal("eventFor found an event for a copy of its machine")
		}
	})

	t.Run("DirectDelivery", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		fl := newFloor(t, d)
		feed := newMachineFeed(d.Pool, fl.Hub, slog.New(slog.DiscardHandler))
		branch := feedTestBranch(t, d, "Feed Direct")
		m := feedTestMachine(t, d, branch, "Rower")
		sub := feed.subscribe(branch)
		defer sub.Close()
		sink := &recordingDirect{got: make(chan []*machineEvent, 10)}
		queued := func() int {
			feed.mu.Lock()
			defer feed.mu.Unlock()
			return len(sub.ch)
		}

		// Taken at once: the watcher's goroutine is not sent anything.
		if !sub.goDirect(sink) {
			t.Fatal("goDirect refused an idle subscription")
		}
		if sub.goDirect(sink) {
			t.Fatal("goDirect accepted a subscription already direct")
		}
		feedTestToggle(t, d, branch, true, m)
		if evs := <-sink.got; len(evs) != 1 || evs[0].id != m {
			t.Fatalf("direct delivery = %v", evs)
		}
		if n := queued(); n != 0 {
			t.Fatalf("%d deliveries queued for a watcher in direct delivery", n)
		}

		// Accepted but not all written: the watcher is sent an empty
		// delivery to finish the write, and later deliveries queue.
		sink.result.Store(int32(deliveredUnflushed))
		feedTestToggle(t, d, branch, false, m)
		<-sink.got
		if evs, ok := <-sub.Events(); !ok || len(evs) != 0 {
			t.Fatalf("after an unfinished direct write the watcher got %v (open %v), want an empty delivery", evs, ok)
		}
		feedTestToggle(t, d, branch, true, m)
		if ev := nextMachineEvent(t, sub); ev.id != m || ev.version != 4 {
			t.Fatalf("queued delivery = %+v", ev)
		}
		select {
		case evs := <-sink.got:
			t.Fatalf("the sink was called again after leaving direct delivery: %v", evs)
		default:
		}

		// Refused: the same delivery queues, whole.
		sink.result.Store(int32(notDelivered))
		if !sub.goDirect(sink) {
			t.Fatal("goDirect refused after the queue was drained")
		}
		feedTestToggle(t, d, branch, false, m)
		<-sink.got
		if ev := nextMachineEvent(t, sub); ev.version != 5 {
			t.Fatalf("refused direct delivery queued %+v", ev)
		}

		// Nothing may overtake a queued delivery.
		feedTestToggle(t, d, branch, true, m)
		waitUntil(t, "the delivery to queue", func() bool { return queued() == 1 })
		if sub.goDirect(sink) {
			t.Fatal("goDirect accepted a subscription with a delivery queued")
		}
		nextMachineEvent(t, sub)

		// Closing ends direct delivery.
		if !sub.goDirect(sink) {
			t.Fatal("goDirect refused an idle subscription")
		}
		sub.Close()
		if sub.goDirect(sink) {
			t.Fatal("goDirect accepted a closed subscription")
		}
	})

	t.Run("SlowSubscriberIsDroppedOthersAreNot", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		fl := newFloor(t, d)
		feed := newMachineFeed(d.Pool, fl.Hub, slog.New(slog.DiscardHandler))
		branch := feedTestBranch(t, d, "Feed Slow")
		machines := make([]uuid.UUID, 5)
		for i := range machines {
			machines[i] = feedTestMachine(t, d, branch, fmt.Sprintf("M%d", i))
		}
		feed.buffer = 3
		slow := feed.subscribe(branch)
		feed.buffer = 100
		fast := feed.subscribe(branch)
		defer fast.Close()

		// One change to every machine is one delivery: it fits the slow
		// subscriber's buffer however many machines it names.
		feedTestToggle(t, d, branch, true, machines...)
		if evs := nextDelivery(t, fast); len(evs) != len(machines) {
			t.Fatalf("fast subscriber got %d events in the delivery, want %d", len(evs), len(machines))
		}
		// Then four changes, each delivered before the next is made: the
		// slow subscriber gets the first queued behind the bulk one, is
		// passed over by the others, and is cut off after as many passes
		// as its buffer has places.
		for _, m := range machines[:4] {
			feedTestToggle(t, d, branch, false, m)
			if ev := nextMachineEvent(t, fast); ev.Machine.GetId() != m.String() {
				t.Fatalf("fast subscriber got %v, want machine %s", ev.Machine, m)
			}
		}
		waitUntil(t, "the slow subscriber to be dropped", func() bool { return slow.Err() != nil })
		if !errors.Is(slow.Err(), realtime.ErrSlowConsumer) {
			t.Fatalf("slow Err = %v", slow.Err())
		}
		// What it had buffered is still readable, then its channel ends.
		var sizes []int
		for evs := range slow.Events() {
			sizes = append(sizes, len(evs))
		}
		if !slices.Equal(sizes, []int{len(machines), 1}) {
			t.Fatalf("slow subscriber read deliveries of %v events, want [%d 1]", sizes, len(machines))
		}
		slow.Close() // after a drop, Close is harmless
		if fast.Err() != nil {
			t.Fatalf("fast Err = %v", fast.Err())
		}
	})

	t.Run("ResyncAndHubStop", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		hub := realtime.NewHub(realtime.Options{DatabaseURL: d.URL, Channels: floor.Channels, Logger: slog.New(slog.DiscardHandler)})
		feed := newMachineFeed(d.Pool, hub, slog.New(slog.DiscardHandler))
		branch := feedTestBranch(t, d, "Feed Resync")

		// Subscribed before the hub runs: the hub's Resync on connecting
		// reaches the feed's watchers.
		sub := feed.subscribe(branch)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = hub.Run(ctx)
		}()
		defer func() { cancel(); <-done }()
		if ev := nextMachineEvent(t, sub); !ev.Resync {
			t.Fatalf("first event = %+v, want a resync", ev)
		}

		// A notification the feed cannot read is logged and skipped.
		if err := db.WithTx(ctx, d.Pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_notify($1, 'not json')`, floor.ChannelMachines)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		m := feedTestMachine(t, d, branch, "After garbage")
		feedTestToggle(t, d, branch, true, m)
		if ev := nextMachineEvent(t, sub); ev.Machine.GetId() != m.String() {
			t.Fatalf("event = %+v", ev)
		}

		cancel()
		<-done
		waitUntil(t, "the watcher to end with the hub", func() bool { return sub.Err() != nil })
		if !errors.Is(sub.Err(), realtime.ErrHubStopped) {
			t.Fatalf("Err = %v, want ErrHubStopped", sub.Err())
		}
		late := feed.subscribe(branch)
		if _, ok := <-late.Events(); ok || !errors.Is(late.Err(), realtime.ErrHubStopped) {
			t.Fatalf("subscribe after stop: Err = %v", late.Err())
		}
	})

	t.Run("FeedFallingBehindTheHubResyncsWatchers", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		// A hub buffer of one: a burst of notifications overflows the
		// feed's own subscription while it loads the first.
		hub := realtime.NewHub(realtime.Options{DatabaseURL: d.URL, Channels: floor.Channels, Buffer: 1, Logger: slog.New(slog.DiscardHandler)})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = hub.Run(ctx)
		}()
		defer func() { cancel(); <-done }()
		waitUntil(t, "the hub to connect", hub.Ready)
		feed := newMachineFeed(d.Pool, hub, slog.New(slog.DiscardHandler))
		branch := feedTestBranch(t, d, "Feed Behind")
		sub := feed.subscribe(branch)
		defer sub.Close()

		if err := db.WithTx(ctx, d.Pool, func(tx pgx.Tx) error {
			for i := range 200 {
				// Distinct payloads: PostgreSQL folds identical ones.
				if err := floor.NotifyMachines(ctx, tx, branch, floor.MachineVersion{ID: uuid.New(), Version: int64(i + 1)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if ev := nextMachineEvent(t, sub); !ev.Resync {
			t.Fatalf("event = %+v, want a resync", ev)
		}
		// The feed resubscribed: later changes still arrive. A change made
		// while the end of the burst still overflows the feed may be lost,
		// with a resync in its place, so the change is repeated until one
		// arrives as an event.
		m := feedTestMachine(t, d, branch, "After the burst")
		deadline := time.Now().Add(10 * time.Second)
		for maintenance := true; ; maintenance = !maintenance {
			if time.Now().After(deadline) {
				t.Fatal("no change delivered after the feed fell behind")
			}
			feedTestToggle(t, d, branch, maintenance, m)
			select {
			case evs, ok := <-sub.Events():
				if !ok {
					t.Fatalf("watcher dropped: %v", sub.Err())
				}
				for _, ev := range evs {
					if !ev.Resync && ev.Machine.GetId() == m.String() {
						return
					}
				}
			case <-time.After(time.Second):
			}
		}
	})

	t.Run("BulkChangeReachesHealthyWatchersWhole", func(t *testing.T) {
		t.Parallel()
		d := testkit.NewDatabase(t)
		fl := newFloor(t, d)
		feed := newMachineFeed(d.Pool, fl.Hub, slog.New(slog.DiscardHandler))
		branch := feedTestBranch(t, d, "Feed Bulk")
		// More machines than a watcher's buffer has places: were each a
		// delivery of its own, one change to them all would drop every
		// watcher of the branch.
		const bulk = 300
		if bulk <= machineFeedBuffer {
			t.Fatalf("the test needs more machines than the buffer's %d places", machineFeedBuffer)
		}
		machines := make([]uuid.UUID, bulk)
		for i := range machines {
			machines[i] = feedTestMachine(t, d, branch, fmt.Sprintf("Bulk %03d", i))
		}
		watchers := []*machineSubscription{feed.subscribe(branch), feed.subscribe(branch)}
		for _, w := range watchers {
			defer w.Close()
		}

		// One transaction; as many machines per notification as a NOTIFY
		// payload has room for (a payload cannot name 300).
		notifications := feedTestToggleNotifying(t, d, branch, true, 100, machines...)
		for i, w := range watchers {
			got := map[string]int64{}
			deliveries := 0
			for len(got) < bulk {
				for _, ev := range nextDelivery(t, w) {
					if ev.Resync {
						t.Fatalf("watcher %d got a resync", i)
					}
					if _, dup := got[ev.Machine.GetId()]; dup {
						t.Fatalf("watcher %d got machine %s twice", i, ev.Machine.GetId())
					}
					got[ev.Machine.GetId()] = ev.version
				}
				deliveries++
			}
			if deliveries > notifications {
				t.Errorf("watcher %d got %d deliveries for %d notifications", i, deliveries, notifications)
			}
			for _, m := range machines {
				if got[m.String()] != 2 {
					t.Fatalf("watcher %d: machine %s at version %d, want 2", i, m, got[m.String()])
				}
			}
			if err := w.Err(); err != nil {
				t.Fatalf("watcher %d: %v", i, err)
			}
		}
	})

	t.Run("MachineProto", func(t *testing.T) {
		t.Parallel()
		now := time.Now()
		m := machineProto(dbsqlc.Machine{
			ID: uuid.New(), BranchID: uuid.New(), Name: "Leg press", MachineType: "leg_press", NfcTag: "t",
			UpdatedAt: now, Version: 7, Status: pgtype.Text{String: "in_use", Valid: true},
		})
		if m.GetType() != nxgv1.MachineType_MACHINE_TYPE_LEG_PRESS || m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_IN_USE ||
			m.GetVersion() != 7 || !m.GetUpdatedAt().AsTime().Equal(now.Truncate(time.Nanosecond)) {
			t.Fatalf("machine = %v", m)
		}
	})
}

// benchFeed returns a feed with n watchers of one branch and no hub: the
// benchmark drives publish directly, as the feed goroutine does.
func benchFeed(b *testing.B, n int) (*machineFeed, []*machineSubscription, uuid.UUID) {
	b.Helper()
	feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
	feed.start.Do(func() {}) // no hub subscription
	branch := uuid.New()
	subs := make([]*machineSubscription, n)
	for i := range subs {
		subs[i] = feed.subscribe(branch)
	}
	return feed, subs, branch
}

func benchMachine(branch uuid.UUID, version int64) *nxgv1.Machine {
	return &nxgv1.Machine{
		Id: uuid.NewString(), BranchId: branch.String(), Name: "Treadmill 12", Type: nxgv1.MachineType_MACHINE_TYPE_TREADMILL,
		Status: nxgv1.MachineStatus_MACHINE_STATUS_IN_USE, NfcTag: "NXG-TAG-000012", UpdatedAt: timestamppb.Now(), Version: version,
	}
}

// BenchmarkMachineFeedFanOut measures handing one delivery (here of one
// event) to 10,000 watchers of a branch, in one step and without rests:
// the feed's share of the per-delivery CPU budget. A delivery costs the
// same however many events it holds.
func BenchmarkMachineFeedFanOut(b *testing.B) {
	const watchers = 10_000
	feed, subs, branch := benchFeed(b, watchers)
	feed.stepSize = watchers
	ev := &machineEvent{Machine: benchMachine(branch, 1), branch: branch}
	fanOut := feed.branches[branch]
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// One change and one step: the whole pass, as publish makes it
		// when the branch's fan-out is rested.
		feed.mu.Lock()
		fanOut.log = append(fanOut.log, ev)
		feed.stepLocked(fanOut)
		feed.mu.Unlock()
		if (i+1)%machineFeedBuffer == 0 {
			// Keep buffers from filling, outside the measured time.
			b.StopTimer()
			for _, s := range subs {
				for len(s.ch) > 0 {
					<-s.ch
				}
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*watchers), "ns/delivery")
	for _, s := range subs {
		if s.Err() != nil {
			b.Fatalf("a watcher was dropped: %v", s.Err())
		}
	}
}

// BenchmarkWatchMachinesEncode compares encoding one change per stream with
// Connect's default codecs against the machine codecs, which reuse the
// event's bytes encoded once.
func BenchmarkWatchMachinesEncode(b *testing.B) {
	feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
	branch := uuid.New()
	ev := &machineEvent{Machine: benchMachine(branch, 1), branch: branch}
	feed.remember(ev)
	ev.protoBytes()
	ev.jsonBytes()
	msg := &nxgv1.WatchMachinesResponse{Sequence: 123456, Event: &nxgv1.WatchMachinesResponse_Machine{Machine: ev.Machine}}
	buf := make([]byte, 0, 1024)
	run := func(name string, enc func([]byte) ([]byte, error)) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := enc(buf[:0])
				if err != nil {
					b.Fatal(err)
				}
				buf = out
			}
		})
	}
	run("DefaultProto", func(dst []byte) ([]byte, error) { return proto.MarshalOptions{}.MarshalAppend(dst, msg) })
	run("SharedProto", func(dst []byte) ([]byte, error) { return (&machineProtoCodec{feed: feed}).MarshalAppend(dst, msg) })
	run("DefaultJSON", func(dst []byte) ([]byte, error) { return protojson.MarshalOptions{}.MarshalAppend(dst, msg) })
	run("SharedJSON", func(dst []byte) ([]byte, error) {
		return (&machineJSONCodec{feed: feed, name: "json"}).MarshalAppend(dst, msg)
	})
}

func TestMachineCodecs(t *testing.T) {
	t.Parallel()
	feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
	branch := uuid.New()
	ev := &machineEvent{Machine: benchMachine(branch, 4), branch: branch}
	feed.remember(ev)
	shared := &nxgv1.WatchMachinesResponse{Sequence: 300, Event: &nxgv1.WatchMachinesResponse_Machine{Machine: ev.Machine}}
	copied := &nxgv1.WatchMachinesResponse{Sequence: 300, Event: &nxgv1.WatchMachinesResponse_Machine{Machine: proto.Clone(ev.Machine).(*nxgv1.Machine)}}
	other := &nxgv1.GetMachineResponse{Machine: ev.Machine}
	protoCodec := &machineProtoCodec{feed: feed}
	jsonCodec := &machineJSONCodec{feed: feed, name: "json"}

	for _, msg := range []proto.Message{shared, copied, other} {
		b, err := protoCodec.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := proto.Marshal(msg); string(b) != string(want) {
			t.Fatalf("proto codec wrote %x, want %x", b, want)
		}
		got := msg.ProtoReflect().New().Interface()
		if err := protoCodec.Unmarshal(b, got); err != nil || !proto.Equal(got, msg) {
			t.Fatalf("proto round trip = %v (%v)", got, err)
		}

		j, err := jsonCodec.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		got = msg.ProtoReflect().New().Interface()
		if err := jsonCodec.Unmarshal(j, got); err != nil || !proto.Equal(got, msg) {
			t.Fatalf("JSON round trip of %s = %v (%v)", j, got, err)
		}
	}
	// The first message at sequence 0 omits the field, as protojson does.
	zero := &nxgv1.WatchMachinesResponse{Event: &nxgv1.WatchMachinesResponse_Machine{Machine: ev.Machine}}
	if j, _ := jsonCodec.Marshal(zero); string(j) != `{"machine":`+string(ev.jsonBytes())+`}` {
		t.Fatalf("JSON of sequence 0 = %s", j)
	}
	if _, err := protoCodec.Marshal("not a message"); err == nil {
		t.Fatal("proto codec marshalled a string")
	}
	if _, err := jsonCodec.Marshal(42); err == nil {
		t.Fatal("JSON codec marshalled an int")
	}
	if err := protoCodec.Unmarshal(nil, "x"); err == nil {
		t.Fatal("proto codec unmarshalled into a string")
	}
	if err := jsonCodec.Unmarshal(nil, &nxgv1.GetMachineRequest{}); err == nil {
		t.Fatal("JSON codec accepted an empty body")
	}
	if err := jsonCodec.Unmarshal([]byte("{}"), "x"); err == nil {
		t.Fatal("JSON codec unmarshalled into a string")
	}
	if !protoCodec.IsBinary() || jsonCodec.IsBinary() || protoCodec.Name() != "proto" || jsonCodec.Name() != "json" {
		t.Fatal("codec names or kinds are wrong")
	}
}

func TestMachineFeedPacing(t *testing.T) {
	t.Parallel()
	// newFeed returns a feed driven through publish, without a hub, whose
	// steps make at most step deliveries and rest pace a delivery.
	newFeed := func(step int, pace time.Duration) *machineFeed {
		feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
		feed.start.Do(func() {}) // no hub subscription
		feed.stepSize = step
		feed.pace = func(time.Time) time.Duration { return pace }
		return feed
	}
	event := func(branch uuid.UUID, version int64) *machineEvent {
		return &machineEvent{Machine: benchMachine(branch, version), branch: branch, version: version, committed: time.Now()}
	}
	subscribeN := func(feed *machineFeed, branch uuid.UUID, n int) []*machineSubscription {
		subs := make([]*machineSubscription, n)
		for i := range subs {
			subs[i] = feed.subscribe(branch)
			t.Cleanup(subs[i].Close)
		}
		return subs
	}
	// receive waits for s's next delivery and requires it to be want,
	// the same events in the same order, in a slice with no room to grow
	// into the feed's later changes.
	receive := func(t *testing.T, name string, s *machineSubscription, want ...*machineEvent) time.Time {
		t.Helper()
		select {
		case got, ok := <-s.Events():
			if !ok {
				t.Fatalf("%s: subscription closed: %v", name, s.Err())
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: delivery of %d events, want %d in order", name, len(got), len(want))
			}
			if cap(got) != len(got) {
				t.Fatalf("%s: delivery has capacity %d beyond its %d events", name, cap(got), len(got))
			}
			return time.Now()
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no delivery within 5s", name)
			return time.Time{}
		}
	}
	// idle waits for the branch's fan-out to stop and requires it to
	// hold no change and no watcher to have a delivery left.
	idle := func(t *testing.T, feed *machineFeed, branch uuid.UUID, subs ...*machineSubscription) {
		t.Helper()
		waitUntil(t, "the fan-out to stop", func() bool {
			feed.mu.Lock()
			defer feed.mu.Unlock()
			b := feed.branches[branch]
			return b == nil || !b.stepping
		})
		feed.mu.Lock()
		defer feed.mu.Unlock()
		if b := feed.branches[branch]; b != nil && (len(b.log) != 0 || b.next != 0) {
			t.Fatalf("idle fan-out holds %d changes, next position %d", len(b.log), b.next)
		}
		for i, s := range subs {
			if n := len(s.ch); n != 0 {
				t.Fatalf("watcher %d has %d deliveries left", i, n)
			}
		}
	}

	t.Run("QuietBranchIsServedAtOnce", func(t *testing.T) {
		t.Parallel()
		feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
		feed.start.Do(func() {})
		branch := uuid.New()
		s := feed.subscribe(branch)
		defer s.Close()
		first := event(branch, 1)
		feed.publish(branch, []*machineEvent{first})
		select {
		case got := <-s.Events():
			if len(got) != 1 || got[0] != first {
				t.Fatalf("delivery = %d events, want the change", len(got))
			}
		default:
			t.Fatal("a change to a branch with one watcher was not delivered at once")
		}
		// The next change follows after a rest of one pace at most.
		second := event(branch, 2)
		feed.publish(branch, []*machineEvent{second})
		receive(t, "the watcher", s, second)
		idle(t, feed, branch, s)
	})

	t.Run("BusyBranchIsServedInPacedSteps", func(t *testing.T) {
		t.Parallel()
		// Six watchers, two deliveries a step, 50 ms a delivery: a pass
		// is three steps, each 100 ms after the one before. The test's
		// second publish must come before the second step; 100 ms leaves
		// room for a loaded machine.
		const pace = 50 * time.Millisecond
		feed := newFeed(2, pace)
		branch := uuid.New()
		subs := subscribeN(feed, branch, 6)
		first, second := event(branch, 1), event(branch, 2)

		start := time.Now()
		feed.publish(branch, []*machineEvent{first})
		// publish made the first step itself: the first two watchers
		// have the change, the others wait for their steps.
		for i, s := range subs {
			if want := min(1, max(0, 2-i)); len(s.ch) != want {
				t.Fatalf("watcher %d has %d deliveries right after publish, want %d", i, len(s.ch), want)
			}
		}
		// A change loaded meanwhile travels with the first to the
		// watchers the pass has yet to serve, and reaches the first two
		// in the next pass.
		feed.publish(branch, []*machineEvent{second})
		for i := 2; i < 6; i++ {
			at := receive(t, fmt.Sprintf("watcher %d", i), subs[i], first, second)
			if step := i / 2; at.Sub(start) < time.Duration(2*step)*pace {
				t.Fatalf("watcher %d served %v after the change, before its step at %v", i, at.Sub(start), time.Duration(2*step)*pace)
			}
		}
		for i := range 2 {
			receive(t, fmt.Sprintf("watcher %d", i), subs[i], first)
			if at := receive(t, fmt.Sprintf("watcher %d", i), subs[i], second); at.Sub(start) < 6*pace {
				t.Fatalf("watcher %d got the second change %v after the first, before the next pass at %v", i, at.Sub(start), 6*pace)
			}
		}
		idle(t, feed, branch, subs...)
	})

	t.Run("BusyBranchPassesAreSpacedByTheLeastPassTime", func(t *testing.T) {
		t.Parallel()
		// No pace at all: only the least pass time spaces the passes.
		feed := newFeed(machineFeedStep, 0)
		branch := uuid.New()
		subs := subscribeN(feed, branch, machineFeedBusyWatchers)
		first, second, third := event(branch, 1), event(branch, 2), event(branch, 3)
		start := time.Now()
		feed.publish(branch, []*machineEvent{first})
		feed.publish(branch, []*machineEvent{second})
		feed.publish(branch, []*machineEvent{third})
		receive(t, "the first watcher", subs[0], first)
		// The changes that came during the least pass time share the
		// next delivery.
		if at := receive(t, "the first watcher", subs[0], second, third); at.Sub(start) < machineFeedMinPass {
			t.Fatalf("second pass %v after the first, before the least pass time %v", at.Sub(start), machineFeedMinPass)
		}
		for _, s := range subs[1:] {
			receive(t, "a watcher", s, first)
			receive(t, "a watcher", s, second, third)
		}
		idle(t, feed, branch, subs...)
	})

	t.Run("BusyWatcherIsPassedOverAndGetsTheChangesTogether", func(t *testing.T) {
		t.Parallel()
		feed := newFeed(machineFeedStep, 0)
		branch := uuid.New()
		subs := subscribeN(feed, branch, 2)
		slow, quick := subs[0], subs[1]
		changes := []*machineEvent{event(branch, 1), event(branch, 2), event(branch, 3), event(branch, 4)}
		for _, ev := range changes {
			feed.publish(branch, []*machineEvent{ev})
			receive(t, "the quick watcher", quick, ev)
		}
		// The slow watcher took nothing: two deliveries wait for it, and
		// the later changes passed it over.
		if n := len(slow.ch); n != machineFeedQueued {
			t.Fatalf("the slow watcher has %d deliveries queued, want %d", n, machineFeedQueued)
		}
		// Once it has taken them, it gets the others in one delivery.
		receive(t, "the slow watcher", slow, changes[0])
		receive(t, "the slow watcher", slow, changes[1])
		receive(t, "the slow watcher", slow, changes[2], changes[3])
		idle(t, feed, branch, subs...)
	})

	t.Run("WatcherThatStopsTakingDeliveriesIsCutOff", func(t *testing.T) {
		t.Parallel()
		feed := newFeed(machineFeedStep, 0)
		feed.buffer = 2
		branch := uuid.New()
		subs := subscribeN(feed, branch, 2)
		stalled, reader := subs[0], subs[1]
		// Two changes fill what may wait for it.
		for v := range int64(machineFeedQueued) {
			ev := event(branch, v+1)
			feed.publish(branch, []*machineEvent{ev})
			receive(t, "the reader", reader, ev)
		}
		// One more: the stalled watcher is passed over in the pass that
		// hands it to the reader, and again in passes that find it alone
		// and still busy, each after the least pass time, until more
		// passes than its buffer has places.
		start := time.Now()
		later := event(branch, machineFeedQueued+1)
		feed.publish(branch, []*machineEvent{later})
		receive(t, "the reader", reader, later)
		waitUntil(t, "the stalled watcher to be cut off", func() bool { return stalled.Err() != nil })
		if !errors.Is(stalled.Err(), realtime.ErrSlowConsumer) {
			t.Fatalf("stalled Err = %v, want ErrSlowConsumer", stalled.Err())
		}
		if waited := time.Since(start); waited < machineFeedMinPass {
			t.Fatalf("cut off after %v: the passes that found it busy were not spaced", waited)
		}
		if reader.Err() != nil {
			t.Fatalf("reader Err = %v", reader.Err())
		}
		idle(t, feed, branch, reader)
	})

	t.Run("WatcherMovedBehindThePassIsServedInTheNext", func(t *testing.T) {
		t.Parallel()
		feed := newFeed(2, 5*time.Millisecond)
		branch := uuid.New()
		subs := subscribeN(feed, branch, 5)
		change := event(branch, 1)
		feed.publish(branch, []*machineEvent{change})
		// The first step served positions 0 and 1. Closing the watcher at
		// position 0 moves the last one, not served yet, behind the pass.
		subs[0].Close()
		for i := 1; i < 5; i++ {
			receive(t, fmt.Sprintf("watcher %d", i), subs[i], change)
		}
		idle(t, feed, branch, subs[1:]...)
	})

	t.Run("EachChangeIsHandedOutOnce", func(t *testing.T) {
		t.Parallel()
		feed := newFeed(1, time.Millisecond)
		reg := prometheus.NewRegistry()
		lag, err := NewFeedLag(reg)
		if err != nil {
			t.Fatal(err)
		}
		feed.lag = lag
		branch := uuid.New()
		subs := subscribeN(feed, branch, 3)
		changes := []*machineEvent{event(branch, 1), event(branch, 2), event(branch, 3)}
		for _, ev := range changes {
			feed.publish(branch, []*machineEvent{ev})
		}
		for i, s := range subs {
			got := 0
			for got < len(changes) {
				select {
				case evs := <-s.Events():
					for _, ev := range evs {
						if ev != changes[got] {
							t.Fatalf("watcher %d: change %d out of order", i, got)
						}
						got++
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("watcher %d got %d of %d changes", i, got, len(changes))
				}
			}
		}
		idle(t, feed, branch, subs...)
		// A change of a branch nobody here watches is handed out to
		// everyone who does: nobody.
		feed.publish(uuid.New(), []*machineEvent{event(branch, 4)})
		if count, _ := feedLagStage(t, reg, feedStageHandedOut); count != 4 {
			t.Fatalf("handed out %d times, want once for each of the 4 changes", count)
		}
	})

	t.Run("BranchThatLosesItsWatchersStopsStepping", func(t *testing.T) {
		t.Parallel()
		feed := newFeed(1, 20*time.Millisecond)
		branch := uuid.New()
		subs := subscribeN(feed, branch, 3)
		feed.publish(branch, []*machineEvent{event(branch, 1)})
		for _, s := range subs {
			s.Close()
		}
		// The step still scheduled finds the branch gone; a watcher that
		// comes later gets only what changes after it subscribed.
		time.Sleep(50 * time.Millisecond)
		late := feed.subscribe(branch)
		defer late.Close()
		later := event(branch, 2)
		feed.publish(branch, []*machineEvent{later})
		receive(t, "the later watcher", late, later)
		idle(t, feed, branch, late)
	})
}

// recordingDirect is a directDelivery that records what it is given and
// answers result (a directResult; deliveredNow at first).
type recordingDirect struct {
	result atomic.Int32
	got    chan []*machineEvent
}

func (r *recordingDirect) deliverNow(events []*machineEvent) directResult {
	r.got <- events
	return directResult(r.result.Load())
}
