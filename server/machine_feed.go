package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
)

const (
	// machineFeedBuffer bounds how far a watcher may fall behind before
	// it is dropped as a slow consumer: a pass hands a watcher nothing
	// while machineFeedQueued deliveries are still queued for it, and a
	// watcher found so in more passes in a row than its buffer has places
	// is cut off. It also sizes the buffer, for the resync markers that go
	// to every watcher at once. It counts deliveries, not machines: one
	// change may touch every machine of a big branch (the offline sweep
	// after a network cut, staff acting in bulk), and a healthy watcher
	// must receive that whole.
	machineFeedBuffer = 256
	// machineFeedBatch is the most notifications the feed merges into one
	// query when they queue up behind a slow load.
	machineFeedBatch = 256
	// machineFeedLoadTimeout bounds one load of changed machines, so a stuck
	// database cannot stall the feed forever.
	machineFeedLoadTimeout = 5 * time.Second
	// machineFeedStep is the most deliveries one step of a branch's
	// fan-out makes before it rests (see branchFanOut): enough for a
	// step's writes to go out as one burst (steps of 256 made each write
	// cost about a quarter more on the benchmark machine, the client
	// being woken for each), few enough that a step holds the processor,
	// and the feed's lock, for a few milliseconds only.
	machineFeedStep = 500
	// A step's own time divided by machineFeedRestShare is the least rest
	// after it, for when deliveries cost more than the pace allows for:
	// the fan-out then still leaves a quarter of the time to the rest of
	// the process.
	machineFeedRestShare = 3
	// machineFeedMinPass is the least time from the start of one pass over
	// a busy branch's watchers (machineFeedBusyWatchers or more) to the
	// start of the next: each watcher gets at most one delivery in that
	// time, however fast the branch changes and however quickly a pass
	// could be made. A phone shows nothing faster, and the changes that
	// come meanwhile share the delivery's write, which is most of what a
	// message costs: at 1,000 watchers the pace alone would write every
	// change on its own.
	machineFeedMinPass      = 25 * time.Millisecond
	machineFeedBusyWatchers = 200
	// machineFeedQueued is how many deliveries may wait for a watcher's
	// goroutine before passes go by it (see stepLocked): two, so that a
	// goroutine that is merely late, running after the step that woke it,
	// still gets the next pass's changes in that pass, while one that is
	// stuck writing to a slow client gets nothing more queued.
	machineFeedQueued = 2
	// machineEventsRemembered is how many recent events the codec can find
	// by their Machine message (see eventFor). Older events are still sent
	// correctly, only encoded per stream.
	machineEventsRemembered = 4096
)

// machineFeed turns ChannelMachines notifications into machine events for
// this process's watchers. It holds one hub subscription for the whole
// process, loads each changed machine once, and hands the same event (and
// so the same encoded bytes) to every watcher of the machine's branch: the
// cost of a change grows with the number of watchers only by a channel send.
type machineFeed struct {
	pool   *pgxpool.Pool
	hub    *realtime.Hub
	log    *slog.Logger
	buffer int

	start sync.Once

	// pace returns the least time a step and its rest take per delivery
	// made (a feedPacer's at); tests set a fixed one.
	pace func(now time.Time) time.Duration
	// stepSize is machineFeedStep; tests set it.
	stepSize int
	// lag measures how far the feed runs behind the database; nil
	// measures nothing.
	lag *FeedLag

	mu       sync.Mutex
	branches map[uuid.UUID]*branchFanOut // by branch, while it has watchers
	versions map[uuid.UUID]int64         // highest version delivered, by machine
	stopped  error                       // set once the hub stopped

	// recent maps the Machine message of recent events to its event, so a
	// codec handed a WatchMachinesResponse can reuse the event's bytes.
	// Only the feed goroutine writes it; streams read it concurrently.
	recent     sync.Map // *nxgv1.Machine → *machineEvent
	recentRing []*nxgv1.Machine
	recentNext int
}

// machineEvent is one machine after a change, or a resync marker, shared
// by every subscriber that receives it. Events reach a subscriber in
// deliveries: the slice of every machine of its branch that one load of
// notifications found changed (in the order loaded), or a resync alone.
type machineEvent struct {
	// Machine is the machine after the change. It is shared by every
	// subscriber: read-only.
	Machine *nxgv1.Machine
	// Resync says events may have been missed: send a fresh snapshot.
	Resync bool

	branch  uuid.UUID
	id      uuid.UUID
	version int64
	// committed is the machine's updated_at: when the change was written.
	committed time.Time

	protoOnce sync.Once
	proto     []byte
	jsonOnce  sync.Once
	json      []byte
}

// protoBytes returns the Machine's binary encoding, computed once however
// many streams send it.
func (e *machineEvent) protoBytes() []byte {
	e.protoOnce.Do(func() {
		b, err := proto.Marshal(e.Machine)
		if err != nil {
			// A Machine holds only strings, enums, numbers and a
			// timestamp: it always encodes.
			panic(fmt.Sprintf("server: encode machine: %v", err))
		}
		e.proto = b
	})
	return e.proto
}

// jsonBytes returns the Machine's protojson encoding, computed once.
func (e *machineEvent) jsonBytes() []byte {
	e.jsonOnce.Do(func() {
		b, err := protojson.Marshal(e.Machine)
		if err != nil {
			panic(fmt.Sprintf("server: encode machine as JSON: %v", err))
		}
		e.json = b
	})
	return e.json
}

// machineSubscription is one watcher of a branch's machines.
type machineSubscription struct {
	feed   *machineFeed
	branch uuid.UUID
	// ch carries deliveries. A delivery's slice and its events are shared
	// by every watcher of the branch: read-only.
	ch chan []*machineEvent

	// Guarded by feed.mu.
	closed bool
	err    error
	index  int // position in its branchFanOut's subs while open
	// handed is the branch's change number up to which the watcher has
	// been handed changes (see branchFanOut).
	handed uint64
	// skipped counts the passes in a row that found it still busy.
	skipped int
	// direct, while set, takes the subscription's deliveries in place of
	// ch (see directDelivery).
	direct directDelivery
}

// directDelivery sends a watcher's deliveries from the feed's own
// goroutine, while the watcher's goroutine sleeps. Waking thousands of
// goroutines for every step of a pass, each to make one write, costs the
// server several times the write itself; a watcher whose connection can
// be written without blocking lets the feed make that write instead.
//
// A watcher enters direct delivery when it has nothing queued and nothing
// left to write (machineSubscription.goDirect). The feed calls deliverNow
// with f.mu held, so deliverNow must never block: what it cannot finish at
// once goes back to the watcher's goroutine through ch, and the watcher
// stays out of direct delivery until it enters again.
type directDelivery interface {
	deliverNow(events []*machineEvent) directResult
}

// directResult is what deliverNow did with a delivery.
type directResult int

const (
	// deliveredNow: the delivery was written to the client in full.
	deliveredNow directResult = iota
	// deliveredUnflushed: the delivery was accepted, but part of it is
	// still waiting to be written; the watcher's goroutine must finish the
	// write (it is sent an empty delivery) before anything else.
	deliveredUnflushed
	// notDelivered: nothing was done (a resync, or the connection was busy
	// with another write); the watcher's goroutine must handle the delivery.
	notDelivered
)

// goDirect hands the subscription's deliveries to d until d cannot take
// one at once, and reports whether it did: it does not when a delivery is
// queued already (the watcher must handle it first, to keep the order) or
// the subscription has ended.
func (s *machineSubscription) goDirect(d directDelivery) bool {
	f := s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.closed || s.direct != nil || len(s.ch) > 0 {
		return false
	}
	s.direct = d
	return true
}

// newMachineFeed returns the feed of hub's machine notifications. It
// subscribes to the hub on the first subscribe and stops when the hub does.
func newMachineFeed(pool *pgxpool.Pool, hub *realtime.Hub, logger *slog.Logger) *machineFeed {
	return &machineFeed{
		pool:       pool,
		hub:        hub,
		log:        logger.With("component", "machine_feed"),
		buffer:     machineFeedBuffer,
		pace:       newFeedPacer().at,
		stepSize:   machineFeedStep,
		branches:   make(map[uuid.UUID]*branchFanOut),
		versions:   make(map[uuid.UUID]int64),
		recentRing: make([]*nxgv1.Machine, machineEventsRemembered),
	}
}

// subscribe returns a subscription to the changes of branch's machines.
// Changes committed after it returns are delivered, so a snapshot read
// after subscribing misses nothing.
func (f *machineFeed) subscribe(branch uuid.UUID) *machineSubscription {
	f.start.Do(func() {
		// Subscribing to the hub here, before any watcher is registered,
		// means no notification committed after this subscribe returns is
		// missed.
		sub := f.hub.Subscribe(floor.ChannelMachines, nil)
		go f.run(sub)
	})
	s := &machineSubscription{feed: f, branch: branch, ch: make(chan []*machineEvent, f.buffer)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped != nil {
		s.closeLocked(f.stopped)
		return s
	}
	b := f.branches[branch]
	if b == nil {
		b = &branchFanOut{id: branch}
		f.branches[branch] = b
	}
	// Changes loaded before the subscription are in the snapshot the
	// watcher reads after it.
	s.index, s.handed = len(b.subs), b.end()
	b.subs = append(b.subs, s)
	return s
}

// Events returns the subscription's deliveries: each a slice of events,
// which the receiver must not modify. An empty delivery comes only after
// direct delivery was left with a write unfinished: it asks the receiver
// to finish that write. Events is closed when the subscriber is dropped,
// the feed stops, or Close is called.
func (s *machineSubscription) Events() <-chan []*machineEvent { return s.ch }

// Err tells why Events was closed: realtime.ErrSlowConsumer when dropped
// for falling behind, realtime.ErrHubStopped when the hub stopped, nil
// after Close or while open.
func (s *machineSubscription) Err() error {
	s.feed.mu.Lock()
	defer s.feed.mu.Unlock()
	return s.err
}

// Close ends the subscription. It is safe to call more than once.
func (s *machineSubscription) Close() {
	f := s.feed
	f.mu.Lock()
	if !s.closed {
		f.removeLocked(s)
		s.closeLocked(nil)
	}
	f.mu.Unlock()
}

func (s *machineSubscription) closeLocked(err error) {
	s.closed = true
	s.direct = nil
	s.err = err
	close(s.ch)
}

// removeLocked forgets s, moving the branch's last watcher into its
// place; f.mu must be held and s open.
func (f *machineFeed) removeLocked(s *machineSubscription) {
	b := f.branches[s.branch]
	list := b.subs
	last := len(list) - 1
	list[s.index] = list[last]
	list[s.index].index = s.index
	list[last] = nil
	if last == 0 {
		// A step still scheduled for b finds it gone and stops.
		delete(f.branches, s.branch)
		return
	}
	b.subs = list[:last]
}

// snapshot returns every machine of branch, ordered by name then id.
func (f *machineFeed) snapshot(ctx context.Context, branch uuid.UUID) ([]*nxgv1.Machine, error) {
	rows, err := dbsqlc.New().MachineListByBranch(ctx, f.pool, branch)
	if err != nil {
		return nil, fmt.Errorf("load machines of branch: %w", err)
	}
	out := make([]*nxgv1.Machine, len(rows))
	for i, r := range rows {
		out[i] = machineProto(r)
	}
	return out, nil
}

// run delivers the hub's machine notifications until the hub stops. When
// the feed itself falls behind the hub it resubscribes and tells every
// watcher to resync, since notifications were lost.
func (f *machineFeed) run(sub *realtime.Subscription) {
	for {
		f.consume(sub)
		err := sub.Err()
		if !errors.Is(err, realtime.ErrSlowConsumer) {
			if err == nil {
				err = realtime.ErrHubStopped
			}
			f.stop(err)
			return
		}
		f.log.Warn("machine feed fell behind the hub; resubscribing and resyncing watchers")
		sub = f.hub.Subscribe(floor.ChannelMachines, nil)
		f.resync()
	}
}

// consume handles sub's events until its channel closes. Notifications
// that queued up while a load ran are merged into one load.
func (f *machineFeed) consume(sub *realtime.Subscription) {
	events := sub.Events()
	batch := make([]realtime.Event, 0, machineFeedBatch)
	for {
		ev, ok := <-events
		if !ok {
			return
		}
		batch = append(batch[:0], ev)
	more:
		for len(batch) < machineFeedBatch {
			select {
			case ev, ok := <-events:
				if !ok {
					break more
				}
				batch = append(batch, ev)
			default:
				break more
			}
		}
		f.handle(batch)
	}
}

// handle loads and delivers the machines a batch of notifications names.
func (f *machineFeed) handle(batch []realtime.Event) {
	resync := false
	wanted := make(map[uuid.UUID]int64)
	for _, ev := range batch {
		if ev.Resync {
			resync = true
			continue
		}
		var changed floor.MachinesChanged
		if err := json.Unmarshal(ev.Payload, &changed); err != nil {
			f.log.Error("machine feed: bad notification payload", "error", err, "payload", string(ev.Payload))
			continue
		}
		for _, m := range changed.Machines {
			wanted[m.ID] = max(wanted[m.ID], m.Version)
		}
	}
	if resync {
		// Watchers re-read a snapshot, which covers the changes of this
		// batch too; those are still delivered below, and a watcher skips
		// versions its snapshot already had.
		f.resync()
	}
	ids := f.undelivered(wanted)
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), machineFeedLoadTimeout)
	rows, err := dbsqlc.New().MachineListByIDs(ctx, f.pool, ids)
	cancel()
	if err != nil {
		// The changes cannot be delivered: watchers must re-read.
		f.log.Error("machine feed: load changed machines; resyncing watchers", "error", err)
		f.resync()
		return
	}
	f.deliver(rows)
}

// undelivered returns the machines of wanted whose notified version is
// newer than the one delivered.
func (f *machineFeed) undelivered(wanted map[uuid.UUID]int64) []uuid.UUID {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]uuid.UUID, 0, len(wanted))
	for id, v := range wanted {
		if v > f.versions[id] {
			ids = append(ids, id)
		}
	}
	return ids
}

// deliver builds one event per machine not delivered at its version and
// hands each branch's events, in the order loaded, to the watchers of that
// branch as one delivery: a change to hundreds of machines takes one place
// in a watcher's buffer, not hundreds.
func (f *machineFeed) deliver(rows []dbsqlc.Machine) {
	byBranch := make(map[uuid.UUID][]*machineEvent)
	f.mu.Lock()
	for _, r := range rows {
		if r.Version <= f.versions[r.ID] {
			continue
		}
		f.versions[r.ID] = r.Version
		ev := &machineEvent{Machine: machineProto(r), branch: r.BranchID, id: r.ID, version: r.Version, committed: r.UpdatedAt}
		byBranch[r.BranchID] = append(byBranch[r.BranchID], ev)
	}
	f.mu.Unlock()
	for branch, events := range byBranch {
		f.lag.loaded(events)
		// Remembered before any watcher can send them, so the codecs find
		// their shared bytes.
		for _, ev := range events {
			f.remember(ev)
		}
		f.publish(branch, events)
	}
}

// branchFanOut hands one branch's changes to its watchers, at a pace.
//
// Every delivery costs the server about the same, a write to the
// watcher's client, whether it carries one change or ten; with thousands
// of watchers of a busy branch those writes are most of the server's
// work. Handing each change to every watcher at once would make that
// work arrive in bursts that take the processor for tens of milliseconds:
// the next changes, the writers' own commits and every other request wait
// behind a burst, and the last watcher of a burst waits for all the
// others. So the watchers are served in steps of at most step deliveries,
// each followed by a rest (at least pace a delivery, step and rest
// together, and at least a third of the step's own time), and each watcher, when its turn comes, is handed every
// change it has not had yet as one delivery. A pass over all the watchers
// of a branch with n watchers takes about n×pace: a change reaches every
// watcher within one pass of its loading, the server makes at most one
// write per watcher per pass however fast the branch changes, and between
// steps the rest of the process runs. A branch with few watchers is
// served at once, in a single step; on a busy one a pass also lasts at
// least machineFeedMinPass. A watcher whose client reads slowly, still
// busy with its last delivery when its turn comes, is passed over: its
// changes wait and go out together later (see stepLocked), so a slow
// client gets fewer, bigger deliveries rather than a queue.
//
// The branch's changes wait in log until every watcher has been handed
// them. Watchers are visited in the order they subscribed: over HTTP/2 the
// connection's writer looks for the next stream with a frame to send in
// the order its streams opened, so waking them in that same order lets it
// find each frame at once (a cost that otherwise grew with the square of
// the streams per connection). Dropping a watcher moves the last one into
// its place; one moved behind the pass is served in the next pass.
type branchFanOut struct {
	id   uuid.UUID
	subs []*machineSubscription
	// log holds the branch's changes in the order loaded, from the first
	// that some watcher has not been handed: log[i] is the branch's change
	// number base+i. Slices of it are handed to watchers, so it is only
	// ever appended to or replaced, never written over.
	log  []*machineEvent
	base uint64
	// next is the position in subs the pass in progress serves next.
	next int
	// stepping is set while a step is due: new changes then wait for it.
	stepping bool
	// restUntil is the end of the rest after the last step.
	restUntil time.Time
	// passStart is when the pass in progress, or the last one, began,
	// and passMade how many deliveries it has made.
	passStart time.Time
	passMade  int
}

// end is the number the branch's next change will get.
func (b *branchFanOut) end() uint64 { return b.base + uint64(len(b.log)) }

// publish adds a load's changes to branch (in the order loaded) and starts
// handing them to the branch's watchers. It never blocks: watchers are
// served at once when the branch's fan-out is idle and rested, in its
// next step otherwise.
func (f *machineFeed) publish(branch uuid.UUID, events []*machineEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.branches[branch]
	if b == nil {
		// Nobody watches the branch here: handed to everyone there is.
		f.lag.handedOut(events)
		return
	}
	b.log = append(b.log, events...)
	if b.stepping {
		return
	}
	b.stepping = true
	if time.Now().Before(b.restUntil) {
		f.stepAt(b, b.restUntil)
		return
	}
	f.stepLocked(b)
}

// stepAt makes b's next step at t.
func (f *machineFeed) stepAt(b *branchFanOut, t time.Time) {
	time.AfterFunc(time.Until(t), func() { f.step(b) })
}

// step makes b's next step, unless b lost its last watcher meanwhile.
func (f *machineFeed) step(b *branchFanOut) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.branches[b.id] != b {
		return
	}
	f.stepLocked(b)
}

// stepLocked serves b's watchers from its pass's next position until it
// has made f.stepSize deliveries or reached the end of the pass, then
// schedules the next step after a rest, unless every watcher has every
// change; f.mu held.
func (f *machineFeed) stepLocked(b *branchFanOut) {
	start := time.Now()
	if b.next == 0 {
		b.passStart, b.passMade = start, 0
	}
	end := b.end()
	made := 0
	for made < f.stepSize && b.next < len(b.subs) {
		s := b.subs[b.next]
		if s.handed >= end {
			b.next++
			continue
		}
		if len(s.ch) >= min(machineFeedQueued, cap(s.ch)) {
			// Its goroutine has yet to take the deliveries it has (its
			// client reads slowly): the changes wait in the log and go
			// out together when it has. A slow client gets fewer, bigger
			// deliveries instead of a queue, and a client that has
			// stopped reading is cut off after cap(ch) passes.
			if s.skipped++; s.skipped > cap(s.ch) {
				f.dropLocked(s, "still busy with a delivery after as many passes as its buffer has places")
				continue // the last watcher took its place
			}
			b.next++
			continue
		}
		s.skipped = 0
		// Capped, so that nothing appended to the slice can reach the
		// log's later changes.
		from := int(s.handed - b.base)
		delivery := b.log[from:len(b.log):len(b.log)]
		s.handed = end
		made++
		if f.sendLocked(s, delivery) {
			b.next++
		}
		// Otherwise s was dropped and the last watcher took its place.
	}
	b.passMade += made
	passEnded := b.next >= len(b.subs)
	if passEnded {
		f.endPassLocked(b)
	}
	now := time.Now()
	pace := f.pace(start)
	f.lag.paced(pace)
	b.restUntil = latest(start.Add(time.Duration(made)*pace), now.Add(now.Sub(start)/machineFeedRestShare))
	if passEnded && (len(b.subs) >= machineFeedBusyWatchers || b.passMade == 0) {
		// The next pass waits for the least pass time: on a busy
		// branch always, and on any branch after a pass that found
		// every watcher with changes still busy, which the next pass
		// would find again at once.
		b.restUntil = latest(b.restUntil, b.passStart.Add(machineFeedMinPass))
	}
	if len(b.log) == 0 {
		b.stepping = false
		return
	}
	f.stepAt(b, b.restUntil)
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// endPassLocked ends a pass over b's watchers: the changes every watcher
// has been handed leave the log, and the next pass starts from the first
// watcher; f.mu held.
func (f *machineFeed) endPassLocked(b *branchFanOut) {
	b.next = 0
	handed := b.end()
	for _, s := range b.subs {
		handed = min(handed, s.handed)
	}
	done := int(handed - b.base)
	f.lag.handedOut(b.log[:done])
	if done == len(b.log) {
		b.log = nil
	} else {
		// A copy: watchers still hold slices of the old array.
		b.log = slices.Clone(b.log[done:])
	}
	b.base = handed
}

// fanOutLocked sends a delivery to every watcher of list at once; f.mu
// held. Only resync markers go this way. Dropping a watcher moves the last
// one into its place, so after a drop the same position is served again.
func (f *machineFeed) fanOutLocked(list []*machineSubscription, events []*machineEvent) {
	for i, n := 0, len(list); i < n; {
		if f.sendLocked(list[i], events) {
			i++
			continue
		}
		n--
	}
}

// resync tells every watcher that events may have been missed, with a
// delivery of a resync marker alone.
func (f *machineFeed) resync() {
	events := []*machineEvent{{Resync: true}}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.branches {
		f.fanOutLocked(b.subs, events)
	}
}

// sendLocked puts a delivery in s's buffer and reports true, or drops s
// if its buffer is full and reports false; f.mu held.
func (f *machineFeed) sendLocked(s *machineSubscription, events []*machineEvent) bool {
	if s.direct != nil {
		switch s.direct.deliverNow(events) {
		case deliveredNow:
			return true
		case deliveredUnflushed:
			events = nil
		}
		s.direct = nil
	}
	select {
	case s.ch <- events:
		return true
	default:
		f.dropLocked(s, "buffer full")
		return false
	}
}

// dropLocked cuts s off as a slow consumer; f.mu held. The branch's last
// watcher takes its place.
func (f *machineFeed) dropLocked(s *machineSubscription, why string) {
	f.removeLocked(s)
	s.closeLocked(realtime.ErrSlowConsumer)
	f.log.Warn("machine watcher dropped: "+why, "branch", s.branch, "buffer", cap(s.ch))
}

// stop closes every subscription with err and refuses new ones.
func (f *machineFeed) stop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = err
	for _, b := range f.branches {
		for _, s := range b.subs {
			s.closeLocked(err)
		}
	}
	clear(f.branches)
}

// remember makes ev findable by its Machine message for a while.
func (f *machineFeed) remember(ev *machineEvent) {
	if old := f.recentRing[f.recentNext]; old != nil {
		f.recent.Delete(old)
	}
	f.recentRing[f.recentNext] = ev.Machine
	f.recentNext = (f.recentNext + 1) % len(f.recentRing)
	f.recent.Store(ev.Machine, ev)
}

// eventFor returns the recent event whose Machine message is m, if any.
func (f *machineFeed) eventFor(m *nxgv1.Machine) (*machineEvent, bool) {
	if m == nil {
		return nil, false
	}
	v, ok := f.recent.Load(m)
	if !ok {
		return nil, false
	}
	return v.(*machineEvent), true
}

// machineProto converts a machines row to its message.
func machineProto(m dbsqlc.Machine) *nxgv1.Machine {
	return &nxgv1.Machine{
		Id:        m.ID.String(),
		BranchId:  m.BranchID.String(),
		Name:      m.Name,
		Type:      nxgv1.MachineType(nxgv1.MachineType_value["MACHINE_TYPE_"+strings.ToUpper(m.MachineType)]),
		Status:    machineStatusProto(m.Status.String),
		NfcTag:    m.NfcTag,
		UpdatedAt: timestamppb.New(m.UpdatedAt),
		Version:   m.Version,
	}
}

// machineStatusProto converts a machines.status value to its enum.
func machineStatusProto(s string) nxgv1.MachineStatus {
	return nxgv1.MachineStatus(nxgv1.MachineStatus_value["MACHINE_STATUS_"+strings.ToUpper(s)])
}

// machineStatusText is how a status reads in an error message: "machine
// X is in use".
func machineStatusText(s string) string {
	if s == "maintenance" {
		return "in maintenance"
	}
	return strings.ReplaceAll(s, "_", " ")
}
