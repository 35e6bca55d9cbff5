package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/encoding/protojson"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
)

// Phases of a watch run. Latencies are recorded only while measuring and
// draining, so the snapshots and stragglers of the opening phase do not
// count.
const (
	phaseOpening int32 = iota
	phaseMeasuring
	phaseDone
)

// machineTrack is what one subscriber saw of one machine.
type machineTrack struct {
	// base is the version in the subscriber's first snapshot: every change
	// above it is expected on this subscriber.
	base int64
	// received has bit v-base-1 set for each version v that arrived as a
	// change message.
	received []uint64
	// maxSeen is the highest version that arrived as a change.
	maxSeen int64
	// covered is the highest version of a later snapshot (after a
	// reconnect or a server-side resync): it carries the state of every
	// change up to it, though not the change messages themselves.
	covered int64
}

func (t *machineTrack) mark(v int64) (duplicate bool) {
	off := v - t.base - 1
	if off < 0 {
		return false
	}
	word, bit := int(off/64), uint(off%64)
	for len(t.received) <= word {
		t.received = append(t.received, 0)
	}
	if t.received[word]&(1<<bit) != 0 {
		return true
	}
	t.received[word] |= 1 << bit
	return false
}

func (t *machineTrack) has(v int64) bool {
	off := v - t.base - 1
	if off < 0 {
		return true // before this subscriber's snapshot: not expected of it
	}
	word, bit := int(off/64), uint(off%64)
	return word < len(t.received) && t.received[word]&(1<<bit) != 0
}

// subscriber is one WatchMachines watcher and its bookkeeping. Only its own
// goroutine touches the fields below mu-free until it has stopped.
type subscriber struct {
	index int
	wire  Mix

	ready     bool // got its first snapshot
	tracks    []machineTrack
	lastSeq   uint64
	seqGaps   uint64
	dups      uint64
	outOfOrd  uint64
	unknown   uint64 // changes of machines not in the first snapshot
	stale     uint64 // changes at or below the version the snapshot already had
	other     uint64 // frames that are neither a snapshot nor a change
	resyncs   uint64 // snapshots after the first
	opens     uint64 // successful opens (first snapshot received)
	drops     uint64 // streams that ended while the run was on
	connected atomic.Bool
	delivered atomic.Uint64 // change messages received while measuring
}

// watchRun holds every subscriber and the shared counters.
type watchRun struct {
	cfg        Config
	env        *environment
	machineIdx map[string]int

	phase     atomic.Int32
	latency   Histogram // every change message received while measuring, to its arrival
	latConn   Histogram // the Connect streams' share
	latWS     Histogram // the WebSockets' share
	latRead   Histogram // every change message, to when the tool read it
	subs      []*subscriber
	readyCh   chan struct{}
	readyLeft atomic.Int64

	h2c      []*http.Client
	h2cConns []*arrivalHolder // the connection of each h2c client
	// connectArrivals ties the Connect streams to their connections'
	// frame trackers, which stamp each message with its own arrival.
	connectArrivals streamRegistry
	// connectLatest counts Connect messages whose own arrival was not
	// known, for which the connection's latest arrival stood in.
	connectLatest atomic.Uint64
	streams       []nxgv1connect.MachineServiceClient
	wsClient      *http.Client

	errMu      sync.Mutex
	errs       map[string]uint64 // open failures and stream ends, by kind
	firstOther string
}

func newWatchRun(cfg Config, env *environment) *watchRun {
	r := &watchRun{cfg: cfg, env: env, machineIdx: map[string]int{}, errs: map[string]uint64{}, readyCh: make(chan struct{})}
	for i, m := range env.Machines {
		r.machineIdx[m.GetId()] = i
	}
	// The tool's own codec decodes change messages cheaply (decode.go).
	opts := []connect.ClientOption{connect.WithCodec(watchCodec{})}
	if cfg.GRPC {
		opts = append(opts, connect.WithGRPC())
	}
	nConnect := 0
	for i := range cfg.Subscribers {
		if cfg.wireOf(i) == MixConnect {
			nConnect++
		}
	}
	for range (nConnect + cfg.StreamsPerConn - 1) / cfg.StreamsPerConn {
		holder := &arrivalHolder{}
		c := h2cClientDialing(arrivalDialer(holder, &r.connectArrivals))
		r.h2c = append(r.h2c, c)
		r.h2cConns = append(r.h2cConns, holder)
		r.streams = append(r.streams, nxgv1connect.NewMachineServiceClient(c, cfg.Addr, opts...))
	}
	// WebSockets need HTTP/1.1 (the upgrade), one connection each; each
	// dial puts its connection in the holder of the subscriber dialling.
	r.wsClient = &http.Client{Transport: &http.Transport{
		DialContext:         arrivalDialer(nil, nil),
		MaxIdleConnsPerHost: -1,
	}}
	connectSeen := 0
	for i := range cfg.Subscribers {
		s := &subscriber{index: i, wire: cfg.wireOf(i), tracks: make([]machineTrack, len(env.Machines))}
		if s.wire == MixConnect {
			s.index = connectSeen // its position among the Connect streams picks its connection
			connectSeen++
		}
		r.subs = append(r.subs, s)
	}
	r.readyLeft.Store(int64(cfg.Subscribers))
	if cfg.Subscribers == 0 {
		close(r.readyCh)
	}
	return r
}

func (r *watchRun) countErr(kind string) {
	r.errMu.Lock()
	r.errs[kind]++
	r.errMu.Unlock()
}

// errKind names an error for the report's tally without its unique parts.
func errKind(wire Mix, err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg := ce.Message()
		if len(msg) > 60 {
			msg = msg[:60]
		}
		return fmt.Sprintf("%s: %s: %s", wire, ce.Code(), msg)
	}
	if s := websocket.CloseStatus(err); s != -1 {
		var ws websocket.CloseError
		errors.As(err, &ws)
		return fmt.Sprintf("%s: close %d %s", wire, s, truncate(ws.Reason, 60))
	}
	msg := err.Error()
	// Addresses and ports differ per connection; keep the tail that says what happened.
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return fmt.Sprintf("%s: %s", wire, truncate(msg, 60))
}

// open starts every subscriber, paced at cfg.OpenRate, and waits until each
// has its first snapshot or the open timeout passes. It returns how many
// are ready.
func (r *watchRun) open(ctx context.Context, wg *sync.WaitGroup) int {
	var tick <-chan time.Time
	if r.cfg.OpenRate > 0 {
		// Open in small batches every 10 ms rather than one a tick: a
		// ticker cannot fire thousands of times a second reliably.
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	perTick := max(1, r.cfg.OpenRate/100)
	for i, s := range r.subs {
		if tick != nil && i > 0 && i%perTick == 0 {
			select {
			case <-tick:
			case <-ctx.Done():
				return r.readyCount()
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.runSubscriber(ctx, s)
		}()
	}
	timer := time.NewTimer(r.cfg.OpenTimeout)
	defer timer.Stop()
	select {
	case <-r.readyCh:
	case <-timer.C:
	case <-ctx.Done():
	}
	return r.readyCount()
}

func (r *watchRun) readyCount() int {
	return r.cfg.Subscribers - int(r.readyLeft.Load())
}

// runSubscriber keeps one subscriber watching until ctx ends, reconnecting
// (to a fresh snapshot) whenever its stream ends.
func (r *watchRun) runSubscriber(ctx context.Context, s *subscriber) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		var err error
		if s.wire == MixConnect {
			err = r.watchConnect(ctx, s)
		} else {
			err = r.watchWS(ctx, s)
		}
		s.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		r.countErr(errKind(s.wire, err))
		if r.phase.Load() != phaseOpening {
			s.drops++
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (r *watchRun) watchConnect(ctx context.Context, s *subscriber) error {
	client := r.streams[s.index/r.cfg.StreamsPerConn]
	conn := r.h2cConns[s.index/r.cfg.StreamsPerConn]
	token, arrivals := r.connectArrivals.open()
	defer r.connectArrivals.close(token)
	req := bearer(&nxgv1.WatchMachinesRequest{BranchId: r.env.Branch.GetId()}, r.env.Token)
	req.Header().Set(streamTokenHeader, token)
	stream, err := client.WatchMachines(ctx, req)
	if err != nil {
		return err
	}
	defer stream.Close()
	first := true
	for stream.Receive() {
		msg := stream.Msg()
		now := time.Now()
		// Every message takes its own arrival, in order, whatever it is.
		arrived := arrivals.pop()
		if arrived.IsZero() {
			// The connection carries every stream of its client: its
			// latest arrival is this message's or later, so the latency
			// is never understated.
			arrived = conn.lastArrival()
			r.connectLatest.Add(1)
		}
		switch ev := msg.GetEvent().(type) {
		case *nxgv1.WatchMachinesResponse_Snapshot:
			r.onSnapshot(s, first, msg.GetSequence(), ev.Snapshot.GetMachines())
		case *nxgv1.WatchMachinesResponse_Machine:
			if first {
				return errors.New("stream did not start with a snapshot")
			}
			m := ev.Machine
			r.onChange(s, msg.GetSequence(), m.GetId(), m.GetVersion(), m.GetUpdatedAt().AsTime(), received{at: now, arrived: arrived})
		default:
			s.other++
		}
		first = false
	}
	if err := stream.Err(); err != nil {
		return err
	}
	return errors.New("stream ended without an error")
}

// subscribeFrame is the first WebSocket message: watch the branch's machines.
func subscribeFrame(branchID string) []byte {
	return []byte(`{"subscribe":"machines","branch_id":` + strconv.Quote(branchID) + `}`)
}

func (r *watchRun) wsURL() string {
	return "ws" + strings.TrimPrefix(strings.TrimSuffix(r.cfg.Addr, "/"), "http") + "/ws"
}

func (r *watchRun) watchWS(ctx context.Context, s *subscriber) error {
	holder := &arrivalHolder{}
	dialCtx, cancel := context.WithTimeout(withArrivalHolder(ctx, holder), 30*time.Second)
	conn, _, err := websocket.Dial(dialCtx, r.wsURL(), &websocket.DialOptions{
		HTTPClient:      r.wsClient,
		HTTPHeader:      http.Header{"Authorization": {"Bearer " + r.env.Token}},
		CompressionMode: websocket.CompressionDisabled,
	})
	cancel()
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(4 << 20)
	if err := conn.Write(ctx, websocket.MessageText, subscribeFrame(r.env.Branch.GetId())); err != nil {
		return err
	}
	var parser fastjson.Parser
	// One buffer per connection, reused for every frame: conn.Read would
	// allocate a fresh one per message, and at hundreds of thousands of
	// messages a second the tool's own garbage would skew what it measures.
	var buf bytes.Buffer
	// Reads take a context that never ends, and the run's end closes the
	// connection instead: the library arms a timer for every read whose
	// context can end, which at these rates costs the tool a tenth of its
	// CPU.
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseNow() })
	defer stop()
	first := true
	for {
		_, rd, err := conn.Reader(context.Background())
		if err != nil {
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(rd); err != nil {
			return err
		}
		// The last read holds the frame's last byte: its arrival is the
		// frame's.
		now := received{at: time.Now(), arrived: holder.lastArrival()}
		if err := r.onWSFrame(s, &parser, buf.Bytes(), first, now); err != nil {
			return err
		}
		first = false
	}
}

// onWSFrame handles one WebSocket frame: the protojson of a
// WatchMachinesResponse. Snapshots are decoded with protojson itself, which
// also checks the frames are what the contract says; changes, the hot path,
// are read by scanWSChange (decode.go), or with a fast JSON parser for just
// the fields measured when a frame is not in the shape the scanner expects.
func (r *watchRun) onWSFrame(s *subscriber, parser *fastjson.Parser, data []byte, first bool, now received) error {
	if !first {
		if c, ok := scanWSChange(data); ok {
			r.onChange(s, c.seq, c.id, c.version, c.updatedAt, now)
			return nil
		}
	}
	v, err := parser.ParseBytes(data)
	if err != nil {
		return fmt.Errorf("frame is not JSON: %w", err)
	}
	if v.Exists("snapshot") {
		var msg nxgv1.WatchMachinesResponse
		if err := protojson.Unmarshal(data, &msg); err != nil {
			return fmt.Errorf("snapshot frame is not a WatchMachinesResponse: %w", err)
		}
		r.onSnapshot(s, first, msg.GetSequence(), msg.GetSnapshot().GetMachines())
		return nil
	}
	m := v.Get("machine")
	if m == nil {
		s.other++
		r.noteOther(data)
		if first {
			return fmt.Errorf("first frame is not a snapshot: %s", truncate(string(data), 200))
		}
		return nil
	}
	if first {
		return errors.New("stream did not start with a snapshot")
	}
	change, err := parseWSChange(v, m)
	if err != nil {
		return err
	}
	r.onChange(s, change.seq, change.id, change.version, change.updatedAt, now)
	return nil
}

// wsChange is the part of a change frame the tool measures.
type wsChange struct {
	seq       uint64
	id        string
	version   int64
	updatedAt time.Time
}

// parseWSChange reads a change frame. protojson writes 64-bit integers as
// strings and field names in lowerCamelCase; it also accepts the original
// names and plain numbers, so both are read.
func parseWSChange(frame, m *fastjson.Value) (wsChange, error) {
	var c wsChange
	var err error
	if c.seq, err = jsonUint(frame.Get("sequence")); err != nil {
		return c, fmt.Errorf("sequence: %w", err)
	}
	c.id = string(m.GetStringBytes("id"))
	if c.id == "" {
		return c, errors.New("change frame without machine.id")
	}
	ver, err := jsonUint(m.Get("version"))
	if err != nil {
		return c, fmt.Errorf("machine.version: %w", err)
	}
	c.version = int64(ver)
	ts := m.GetStringBytes("updatedAt")
	if ts == nil {
		ts = m.GetStringBytes("updated_at")
	}
	if c.updatedAt, err = time.Parse(time.RFC3339Nano, string(ts)); err != nil {
		return c, fmt.Errorf("machine.updatedAt: %w", err)
	}
	return c, nil
}

// jsonUint reads a protojson 64-bit integer: a string of digits or a number.
// A missing value is protojson's default, zero.
func jsonUint(v *fastjson.Value) (uint64, error) {
	if v == nil {
		return 0, nil
	}
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return strconv.ParseUint(string(b), 10, 64)
	case fastjson.TypeNumber:
		return v.Uint64()
	default:
		return 0, fmt.Errorf("%s is not an integer", v.Type())
	}
}

func (r *watchRun) noteOther(data []byte) {
	r.errMu.Lock()
	if r.firstOther == "" {
		r.firstOther = truncate(string(data), 200)
	}
	r.errMu.Unlock()
}

// onSnapshot records a snapshot: the first sets what the subscriber
// expects from then on; later ones (after a reconnect or a resync) cover
// the changes up to their versions.
func (r *watchRun) onSnapshot(s *subscriber, firstOnStream bool, seq uint64, machines []*nxgv1.Machine) {
	if firstOnStream {
		s.lastSeq = seq
	} else {
		r.checkSeq(s, seq)
	}
	if !s.ready {
		for _, m := range machines {
			if i, ok := r.machineIdx[m.GetId()]; ok {
				s.tracks[i].base = m.GetVersion()
				s.tracks[i].maxSeen = m.GetVersion()
			}
		}
		s.ready = true
		if r.readyLeft.Add(-1) == 0 {
			close(r.readyCh)
		}
	} else {
		s.resyncs++
		for _, m := range machines {
			if i, ok := r.machineIdx[m.GetId()]; ok && m.GetVersion() > s.tracks[i].covered {
				s.tracks[i].covered = m.GetVersion()
			}
		}
	}
	s.opens++
	s.connected.Store(true)
}

func (r *watchRun) checkSeq(s *subscriber, seq uint64) {
	if seq != s.lastSeq+1 {
		s.seqGaps++
	}
	s.lastSeq = seq
}

// received is when a message reached the tool: when its last byte arrived
// at the socket (zero if the kernel gave no stamp) and when the tool read
// it.
type received struct {
	at      time.Time
	arrived time.Time
}

// arrival is when the message arrived, or when it was read if that is
// unknown.
func (r received) arrival() time.Time {
	if r.arrived.IsZero() {
		return r.at
	}
	return r.arrived
}

// onChange records one change message.
func (r *watchRun) onChange(s *subscriber, seq uint64, machineID string, version int64, updatedAt time.Time, now received) {
	r.checkSeq(s, seq)
	i, ok := r.machineIdx[machineID]
	if !ok {
		s.unknown++
		return
	}
	t := &s.tracks[i]
	if version <= t.base {
		s.stale++
		return
	}
	if t.mark(version) {
		s.dups++
		return
	}
	if version < t.maxSeen {
		s.outOfOrd++
	} else {
		t.maxSeen = version
	}
	if r.phase.Load() == phaseOpening {
		return
	}
	s.delivered.Add(1)
	r.latRead.Record(now.at.Sub(updatedAt))
	lat := now.arrival().Sub(updatedAt)
	r.latency.Record(lat)
	if s.wire == MixConnect {
		r.latConn.Record(lat)
	} else {
		r.latWS.Record(lat)
	}
}

// connectedCount is how many subscribers hold a live stream now.
func (r *watchRun) connectedCount() int {
	n := 0
	for _, s := range r.subs {
		if s.connected.Load() {
			n++
		}
	}
	return n
}

func (r *watchRun) deliveredCount() uint64 {
	var n uint64
	for _, s := range r.subs {
		n += s.delivered.Load()
	}
	return n
}

func (r *watchRun) close() {
	for _, c := range r.h2c {
		c.CloseIdleConnections()
	}
	r.wsClient.CloseIdleConnections()
}
