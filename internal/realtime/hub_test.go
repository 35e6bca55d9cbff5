package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/internal/testkit"
)

const wait = 10 * time.Second

type msg struct {
	ID     int    `json:"id"`
	Branch string `json:"branch,omitempty"`
}

// startHub runs a hub on url until the test ends and waits until it listens.
func startHub(t testing.TB, url string, opts Options) *Hub {
	t.Helper()
	opts.DatabaseURL = url
	if opts.Channels == nil {
		opts.Channels = []string{"events", "other"}
	}
	if opts.Logger == nil {
		opts.Logger = testkit.Logger(t, slog.LevelWarn)
	}
	if opts.ReconnectBackoff == (Backoff{}) {
		opts.ReconnectBackoff = Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	h := NewHub(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("Run did not return after cancel")
		}
	})
	waitFor(t, "hub ready", h.Ready)
	return h
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// send commits one transaction notifying each of vs on channel.
func send(t testing.TB, pool *pgxpool.Pool, channel string, vs ...any) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, v := range vs {
		if err := Notify(ctx, tx, channel, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func recv(t testing.TB, s *Subscription) Event {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		if !ok {
			t.Fatalf("subscription closed: %v", s.Err())
		}
		return ev
	case <-time.After(wait):
		t.Fatalf("no event within %s", wait)
	}
	panic("unreachable")
}

func recvMsg(t testing.TB, s *Subscription) msg {
	t.Helper()
	ev := recv(t, s)
	if ev.Resync {
		t.Fatalf("unexpected resync event on %s", ev.Channel)
	}
	var m msg
	if err := json.Unmarshal(ev.Payload, &m); err != nil {
		t.Fatalf("payload %q: %v", ev.Payload, err)
	}
	return m
}

// recvClosed waits for the subscription's channel to close, discarding
// buffered events, and returns how many there were.
func recvClosed(t testing.TB, s *Subscription) int {
	t.Helper()
	n := 0
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-s.Events():
			if !ok {
				return n
			}
			n++
		case <-deadline:
			t.Fatalf("subscription not closed within %s", wait)
		}
	}
}

func TestCommittedEventsArriveRolledBackDoNot(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{})
	sub := h.Subscribe("events", nil)
	defer sub.Close()
	ctx := context.Background()

	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := Notify(ctx, tx, "events", msg{ID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	send(t, db.Pool, "other", msg{ID: 99}) // another channel: not delivered here
	send(t, db.Pool, "events", msg{ID: 2}, msg{ID: 3})

	// Notifications are delivered in commit order: had the rolled-back one
	// been sent, it would come first.
	ev := recv(t, sub)
	if ev.Channel != "events" || string(ev.Payload) != `{"id":2}` {
		t.Fatalf("first event = %+v, want id 2 on events", ev)
	}
	if m := recvMsg(t, sub); m.ID != 3 {
		t.Fatalf("second event id = %d, want 3", m.ID)
	}
}

func TestEveryInstanceReceivesEveryEvent(t *testing.T) {
	db := testkit.NewDatabase(t)
	h1 := startHub(t, db.URL, Options{ApplicationName: "nxg-realtime-1"})
	h2 := startHub(t, db.URL, Options{ApplicationName: "nxg-realtime-2"})
	s1, s2 := h1.Subscribe("events", nil), h2.Subscribe("events", nil)
	defer s1.Close()
	defer s2.Close()
	for i := range 20 {
		send(t, db.Pool, "events", msg{ID: i})
	}
	for _, s := range []*Subscription{s1, s2} {
		for i := range 20 {
			if m := recvMsg(t, s); m.ID != i {
				t.Fatalf("got id %d, want %d", m.ID, i)
			}
		}
	}
}

func TestFilter(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{})
	onlyA := h.Subscribe("events", func(ev Event) bool {
		return strings.Contains(string(ev.Payload), `"branch":"a"`)
	})
	all := h.Subscribe("events", nil)
	defer onlyA.Close()
	defer all.Close()
	send(t, db.Pool, "events", msg{ID: 1, Branch: "a"}, msg{ID: 2, Branch: "b"}, msg{ID: 3, Branch: "a"})
	for _, want := range []int{1, 2, 3} {
		if m := recvMsg(t, all); m.ID != want {
			t.Fatalf("all: got %d, want %d", m.ID, want)
		}
	}
	for _, want := range []int{1, 3} { // 2 was filtered out
		if m := recvMsg(t, onlyA); m.ID != want || m.Branch != "a" {
			t.Fatalf("onlyA: got %+v, want id %d", m, want)
		}
	}
}

func TestSlowConsumerIsDropped(t *testing.T) {
	db := testkit.NewDatabase(t)
	const buffer = 4
	h := startHub(t, db.URL, Options{Buffer: buffer})
	slow := h.Subscribe("events", nil) // never reads
	fast := h.Subscribe("events", nil)
	defer fast.Close()
	for i := range 3 * buffer {
		send(t, db.Pool, "events", msg{ID: i})
		if m := recvMsg(t, fast); m.ID != i {
			t.Fatalf("fast: got %d, want %d", m.ID, i)
		}
	}
	if n := recvClosed(t, slow); n != buffer {
		t.Fatalf("slow subscriber had %d buffered events, want %d", n, buffer)
	}
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Fatalf("slow.Err() = %v, want ErrSlowConsumer", slow.Err())
	}
	st := h.Stats()
	if st.Dropped != 1 || st.Subscribers != 1 {
		t.Fatalf("stats = %+v, want 1 dropped, 1 subscriber", st)
	}
	slow.Close() // harmless after a drop
	if !errors.Is(slow.Err(), ErrSlowConsumer) {
		t.Fatalf("Close after drop changed Err to %v", slow.Err())
	}
}

func TestCloseStopsDelivery(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{})
	closed := h.Subscribe("events", nil)
	open := h.Subscribe("events", nil)
	defer open.Close()
	send(t, db.Pool, "events", msg{ID: 1})
	recvMsg(t, open)
	// closed has event 1 buffered; Close discards it.
	closed.Close()
	closed.Close()
	if _, ok := <-closed.Events(); ok {
		t.Fatal("event received after Close")
	}
	if err := closed.Err(); err != nil {
		t.Fatalf("Err after Close = %v, want nil", err)
	}
	if n := h.Stats().Subscribers; n != 1 {
		t.Fatalf("hub still holds %d subscribers, want 1", n)
	}
	send(t, db.Pool, "events", msg{ID: 2})
	if m := recvMsg(t, open); m.ID != 2 {
		t.Fatalf("open: got %d, want 2", m.ID)
	}
}

func TestConcurrentCloseDuringDispatch(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{Buffer: 1024})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := h.Subscribe("events", func(Event) bool { return true })
				select {
				case <-s.Events():
				case <-stop:
				case <-time.After(time.Millisecond):
				}
				s.Close()
			}
		})
	}
	watch := h.Subscribe("events", nil)
	defer watch.Close()
	for i := range 50 {
		send(t, db.Pool, "events", msg{ID: i})
	}
	for i := range 50 {
		if m := recvMsg(t, watch); m.ID != i {
			t.Fatalf("got %d, want %d", m.ID, i)
		}
	}
	close(stop)
	wg.Wait()
	if n := h.Stats().Subscribers; n != 1 {
		t.Fatalf("hub holds %d subscribers, want 1", n)
	}
}

func TestPayloadLimit(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{})
	sub := h.Subscribe("events", nil)
	defer sub.Close()
	ctx := context.Background()
	tx, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)

	big := strings.Repeat("x", MaxPayload-1) // + 2 quotes = MaxPayload+1
	if err := Notify(ctx, tx, "events", big); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("Notify(%d bytes) = %v, want ErrPayloadTooLarge", len(big)+2, err)
	}
	if err := Notify(ctx, tx, "Bad-Channel", 1); !errors.Is(err, ErrInvalidChannel) {
		t.Fatalf("Notify(bad channel) = %v, want ErrInvalidChannel", err)
	}
	if err := Notify(ctx, tx, "events", func() {}); err == nil {
		t.Fatal("Notify(unencodable) succeeded")
	}
	// The largest accepted payload goes through intact, and the failures
	// above did not spoil the transaction.
	max := strings.Repeat("y", MaxPayload-2)
	if err := Notify(ctx, tx, "events", max); err != nil {
		t.Fatalf("Notify(%d bytes): %v", MaxPayload, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ev := recv(t, sub)
	if len(ev.Payload) != MaxPayload || string(ev.Payload) != `"`+max+`"` {
		t.Fatalf("payload of %d bytes, want %d", len(ev.Payload), MaxPayload)
	}
}

func TestReconnectSendsResync(t *testing.T) {
	db := testkit.NewDatabase(t)
	const app = "nxg-realtime-reconnect"
	h := startHub(t, db.URL, Options{ApplicationName: app})
	sub := h.Subscribe("events", nil)
	defer sub.Close()
	other := h.Subscribe("other", func(Event) bool { return false }) // Resync bypasses filters
	defer other.Close()

	send(t, db.Pool, "events", msg{ID: 1})
	recvMsg(t, sub)

	var killed int
	err := db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		   FROM pg_stat_activity
		  WHERE datname = current_database() AND (query LIKE 'LISTEN%' OR application_name = $1)`, app).Scan(&killed)
	if err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d listener backends, want 1", killed)
	}

	for _, s := range []*Subscription{sub, other} {
		ev := recv(t, s)
		if !ev.Resync || ev.Payload != nil {
			t.Fatalf("after reconnect got %+v, want a Resync event", ev)
		}
	}
	if !h.Ready() {
		t.Fatal("Ready() = false after the resync")
	}
	if n := h.Stats().Connects; n != 2 {
		t.Fatalf("Connects = %d, want 2", n)
	}
	send(t, db.Pool, "events", msg{ID: 2})
	if m := recvMsg(t, sub); m.ID != 2 {
		t.Fatalf("after reconnect got %d, want 2", m.ID)
	}
}

func TestIdleHealthCheckKeepsConnection(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{HealthCheck: 10 * time.Millisecond})
	sub := h.Subscribe("events", nil)
	defer sub.Close()
	for i := range 5 {
		<-time.After(30 * time.Millisecond) // idle: several health-check pings run
		send(t, db.Pool, "events", msg{ID: i})
		if m := recvMsg(t, sub); m.ID != i {
			t.Fatalf("got %d, want %d", m.ID, i)
		}
	}
	if n := h.Stats().Connects; n != 1 {
		t.Fatalf("Connects = %d: health checks broke the connection", n)
	}
}

func TestRunReturnsOnCancel(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := NewHub(Options{DatabaseURL: db.URL, Channels: []string{"events"}, Logger: testkit.Logger(t, slog.LevelWarn)})
	sub := h.Subscribe("events", nil) // before Run: gets a Resync once listening
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	if ev := recv(t, sub); !ev.Resync {
		t.Fatalf("first event of an early subscriber = %+v, want Resync", ev)
	}
	if !h.Ready() {
		t.Fatal("not ready after the resync")
	}
	if err := h.Run(ctx); err == nil {
		t.Fatal("second Run succeeded")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
	if h.Ready() {
		t.Fatal("Ready after Run returned")
	}
	recvClosed(t, sub)
	if !errors.Is(sub.Err(), ErrHubStopped) {
		t.Fatalf("Err = %v, want ErrHubStopped", sub.Err())
	}
	late := h.Subscribe("events", nil)
	recvClosed(t, late)
	if !errors.Is(late.Err(), ErrHubStopped) {
		t.Fatalf("late Err = %v, want ErrHubStopped", late.Err())
	}
}

func TestRunWithoutDatabaseStopsOnCancel(t *testing.T) {
	// A URL nobody answers: Run retries with backoff, never becomes ready,
	// and still returns promptly on cancel.
	h := NewHub(Options{
		DatabaseURL:      "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
		Channels:         []string{"events"},
		Logger:           testkit.Logger(t, slog.LevelError),
		ReconnectBackoff: Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Run did not return after cancel")
	}
	if h.Ready() {
		t.Fatal("Ready without a database")
	}
}

func TestSubscribeUnknownChannelAndBadNames(t *testing.T) {
	h := NewHub(Options{Channels: []string{"events"}})
	s := h.Subscribe("nope", nil)
	if _, ok := <-s.Events(); ok {
		t.Fatal("subscription to unknown channel delivered")
	}
	if !errors.Is(s.Err(), ErrUnknownChannel) {
		t.Fatalf("Err = %v, want ErrUnknownChannel", s.Err())
	}
	for _, bad := range []string{"", "Events", "9x", "a-b", "a b", `a"b`, strings.Repeat("a", 64)} {
		if ValidChannel(bad) == nil {
			t.Errorf("ValidChannel(%q) = nil", bad)
		}
	}
	for _, good := range []string{"_", "machines", "branch_42", strings.Repeat("a", 63)} {
		if err := ValidChannel(good); err != nil {
			t.Errorf("ValidChannel(%q) = %v", good, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("NewHub accepted an invalid channel")
		}
	}()
	NewHub(Options{Channels: []string{"bad-name"}})
}

func TestCoalescer(t *testing.T) {
	db := testkit.NewDatabase(t)
	h := startHub(t, db.URL, Options{Channels: []string{"heartbeats"}})
	sub := h.Subscribe("heartbeats", nil)
	defer sub.Close()
	c := NewCoalescer(CoalescerOptions{DB: db.Pool, Channel: "heartbeats", Window: time.Hour, MaxPending: 3})
	ctx := context.Background()

	for i := range 10 { // latest per key wins
		if err := c.Add("m1", msg{ID: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Add("m2", msg{ID: 100}); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("big", strings.Repeat("z", MaxPayload)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("Add(big) = %v, want ErrPayloadTooLarge", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ev := recv(t, sub)
	if string(ev.Payload) != `[{"id":9},{"id":100}]` {
		t.Fatalf("coalesced payload = %s", ev.Payload)
	}
	if err := c.Flush(ctx); err != nil { // nothing pending: no notify
		t.Fatal(err)
	}

	// Reaching MaxPending flushes at once, without waiting for the window.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	for i := range 3 {
		if err := c.Add(fmt.Sprint("k", i), msg{ID: i}); err != nil && !errors.Is(err, ErrCoalescerFull) {
			t.Fatal(err)
		}
	}
	if ev := recv(t, sub); string(ev.Payload) != `[{"id":0},{"id":1},{"id":2}]` {
		t.Fatalf("early flush payload = %s", ev.Payload)
	}
	// Run's final flush sends what is left.
	if err := c.Add("last", msg{ID: 7}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, sub); string(ev.Payload) != `[{"id":7}]` {
		t.Fatalf("final flush payload = %s", ev.Payload)
	}
}

func TestCoalescerFull(t *testing.T) {
	c := NewCoalescer(CoalescerOptions{Channel: "x", MaxPending: 2})
	if c.Add("a", 1) != nil || c.Add("b", 2) != nil {
		t.Fatal("Add failed below the limit")
	}
	if err := c.Add("c", 3); !errors.Is(err, ErrCoalescerFull) {
		t.Fatalf("Add beyond limit = %v", err)
	}
	if err := c.Add("a", 4); err != nil { // existing key: still accepted
		t.Fatal(err)
	}
}

func TestBatchPayloads(t *testing.T) {
	pending := map[string]json.RawMessage{}
	var order []string
	item := json.RawMessage(`"` + strings.Repeat("v", 998) + `"`) // 1000 bytes
	for i := range 20 {
		k := fmt.Sprint(i)
		order = append(order, k)
		pending[k] = item
	}
	out := batchPayloads(order, pending)
	total := 0
	for _, p := range out {
		if len(p) > MaxPayload {
			t.Fatalf("batch of %d bytes", len(p))
		}
		var vs []string
		if err := json.Unmarshal([]byte(p), &vs); err != nil {
			t.Fatal(err)
		}
		total += len(vs)
	}
	if total != 20 || len(out) != 3 {
		t.Fatalf("%d items in %d batches, want 20 in 3", total, len(out))
	}
	one := json.RawMessage(`"` + strings.Repeat("w", MaxPayload-4) + `"`)
	if out := batchPayloads([]string{"a"}, map[string]json.RawMessage{"a": one}); len(out) != 1 || len(out[0]) != MaxPayload {
		t.Fatalf("largest single item: %d batches", len(out))
	}
}

// BenchmarkFanout measures one committed NOTIFY reaching 100 subscribers
// end to end (PostgreSQL round trip included).
func BenchmarkFanout(b *testing.B) {
	db := testkit.NewDatabase(b)
	h := startHub(b, db.URL, Options{Logger: testkit.Logger(b, slog.LevelError)})
	subs := make([]*Subscription, 100)
	for i := range subs {
		subs[i] = h.Subscribe("events", nil)
		defer subs[i].Close()
	}
	ctx := context.Background()
	payload := `{"id":1,"kind":"machine.updated","version":3}`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.Pool.Exec(ctx, "SELECT pg_notify('events', $1)", payload); err != nil {
			b.Fatal(err)
		}
		timeout := time.NewTimer(wait)
		for _, s := range subs {
			select {
			case <-s.Events():
			case <-timeout.C:
				b.Fatal("event not delivered")
			}
		}
		timeout.Stop()
	}
}

// BenchmarkDispatch measures the in-process part alone: one event put in
// 100 subscribers' buffers (and read back).
func BenchmarkDispatch(b *testing.B) {
	h := NewHub(Options{Channels: []string{"events"}})
	subs := make([]*Subscription, 100)
	for i := range subs {
		subs[i] = h.Subscribe("events", nil)
	}
	ev := Event{Channel: "events", Payload: []byte(`{"id":1}`)}
	b.ReportAllocs()
	for b.Loop() {
		h.dispatch(ev)
		for _, s := range subs {
			<-s.Events()
		}
	}
}
