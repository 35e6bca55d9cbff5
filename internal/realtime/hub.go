package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults for Options.
const (
	DefaultBuffer          = 256
	DefaultApplicationName = "nxg-realtime"
	DefaultHealthCheck     = 30 * time.Second
	DefaultMinBackoff      = 250 * time.Millisecond
	DefaultMaxBackoff      = 10 * time.Second
	connectTimeout         = 10 * time.Second
)

// Backoff bounds the wait between reconnection attempts. The wait doubles
// from Min up to Max (each with jitter) and resets after a good connection.
type Backoff struct {
	Min, Max time.Duration
}

// Options configure a Hub.
type Options struct {
	// DatabaseURL is where the dedicated listener connection goes.
	DatabaseURL string
	// Channels are LISTENed to; Subscribe accepts only these.
	Channels []string
	// Buffer is each subscription's buffer, in events (0 → 256). A
	// subscriber with a full buffer when an event arrives is dropped.
	Buffer int
	// Logger gets connection losses and drops (nil → slog.Default()).
	Logger *slog.Logger
	// ReconnectBackoff bounds waits between reconnections
	// (zero fields → 250ms and 10s).
	ReconnectBackoff Backoff
	// ApplicationName is set on the listener connection, so it can be
	// found in pg_stat_activity ("" → "nxg-realtime").
	ApplicationName string
	// HealthCheck is how long the listener waits idle before it pings the
	// server to detect a dead connection (0 → 30s).
	HealthCheck time.Duration
}

// Stats are counters of a Hub since it was created.
type Stats struct {
	Subscribers int    // open subscriptions now
	Delivered   uint64 // events put in subscriber buffers
	Dropped     uint64 // subscribers dropped as slow consumers
	Connects    uint64 // successful (re)connections of the listener
}

// Hub owns the listener connection and the subscriptions of one process.
// Create it with NewHub, start Run once, and Subscribe from any goroutine.
type Hub struct {
	opts     Options
	channels map[string]bool
	log      *slog.Logger

	mu      sync.Mutex
	subs    map[string]map[*Subscription]struct{} // by channel
	nsubs   int
	stopped bool

	started   atomic.Bool
	ready     atomic.Bool
	delivered atomic.Uint64
	dropped   atomic.Uint64
	connects  atomic.Uint64
}

// NewHub returns a hub for opts. It panics on an invalid channel name:
// channel names are constants of the program, not input.
func NewHub(opts Options) *Hub {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReconnectBackoff.Min <= 0 {
		opts.ReconnectBackoff.Min = DefaultMinBackoff
	}
	if opts.ReconnectBackoff.Max < opts.ReconnectBackoff.Min {
		opts.ReconnectBackoff.Max = max(DefaultMaxBackoff, opts.ReconnectBackoff.Min)
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = DefaultApplicationName
	}
	if opts.HealthCheck <= 0 {
		opts.HealthCheck = DefaultHealthCheck
	}
	h := &Hub{
		opts:     opts,
		channels: make(map[string]bool, len(opts.Channels)),
		log:      opts.Logger.With("component", "realtime"),
		subs:     make(map[string]map[*Subscription]struct{}, len(opts.Channels)),
	}
	for _, c := range opts.Channels {
		if err := ValidChannel(c); err != nil {
			panic(err)
		}
		h.channels[c] = true
		h.subs[c] = make(map[*Subscription]struct{})
	}
	h.opts.Channels = slices.Clone(opts.Channels)
	return h
}

// Ready reports whether the listener is connected and listening.
func (h *Hub) Ready() bool { return h.ready.Load() }

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	n := h.nsubs
	h.mu.Unlock()
	return Stats{Subscribers: n, Delivered: h.delivered.Load(), Dropped: h.dropped.Load(), Connects: h.connects.Load()}
}

// Subscription receives the events of one channel that pass its filter.
type Subscription struct {
	hub     *Hub
	channel string
	filter  func(Event) bool
	ch      chan Event

	// Guarded by hub.mu.
	closed bool
	err    error
}

// Subscribe returns a subscription to channel. filter, if not nil, chooses
// the events delivered (e.g. one branch's); it runs on the hub's goroutine
// under the hub's lock for every event of the channel, so it must be cheap,
// must not block and must not call the hub. Resync events bypass the filter.
//
// Subscribing to a channel the hub does not listen to, or after Run has
// returned, gives a subscription already closed, whose Err says why.
func (h *Hub) Subscribe(channel string, filter func(Event) bool) *Subscription {
	s := &Subscription{hub: h, channel: channel, filter: filter, ch: make(chan Event, h.opts.Buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.channels[channel]:
		s.closeLocked(fmt.Errorf("%w: %q", ErrUnknownChannel, channel))
	case h.stopped:
		s.closeLocked(ErrHubStopped)
	default:
		h.subs[channel][s] = struct{}{}
		h.nsubs++
	}
	return s
}

// Events returns the channel of events. It is closed when the subscriber is
// dropped, the hub stops, or Close is called.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Err tells why Events was closed: ErrSlowConsumer when dropped for falling
// behind, ErrHubStopped when the hub stopped, nil after Close (or while the
// subscription is open).
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Close ends the subscription: no event is delivered after it returns,
// buffered events are discarded, and the hub forgets it. It is safe to call
// more than once and from any goroutine.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	if !s.closed {
		h.removeLocked(s)
		s.closeLocked(nil)
	}
	h.mu.Unlock()
	// Free the buffer now rather than when the last reference goes.
	for {
		select {
		case _, ok := <-s.ch:
			if !ok {
				return // closed and empty
			}
		default:
			return
		}
	}
}

// removeLocked forgets s; h.mu must be held and s open.
func (h *Hub) removeLocked(s *Subscription) {
	if m := h.subs[s.channel]; m != nil {
		if _, ok := m[s]; ok {
			delete(m, s)
			h.nsubs--
		}
	}
}

// closeLocked closes s's channel with err; h.mu must be held.
func (s *Subscription) closeLocked(err error) {
	s.closed = true
	s.err = err
	close(s.ch)
}

// dispatch fans ev out to the channel's subscribers. It never blocks.
func (h *Hub) dispatch(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[ev.Channel] {
		if s.filter != nil && !s.filter(ev) {
			continue
		}
		h.sendLocked(s, ev)
	}
}

// sendLocked puts ev in s's buffer, or drops s if it is full.
func (h *Hub) sendLocked(s *Subscription, ev Event) {
	select {
	case s.ch <- ev:
		h.delivered.Add(1)
	default:
		h.removeLocked(s)
		s.closeLocked(ErrSlowConsumer)
		h.dropped.Add(1)
		h.log.Warn("realtime subscriber dropped: buffer full", "channel", s.channel, "buffer", cap(s.ch))
	}
}

// resyncAll tells every subscriber it may have missed events.
func (h *Hub) resyncAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for channel, m := range h.subs {
		for s := range m {
			h.sendLocked(s, Event{Channel: channel, Resync: true})
		}
	}
}

// stop closes every subscription with ErrHubStopped and refuses new ones.
func (h *Hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	for _, m := range h.subs {
		for s := range m {
			h.removeLocked(s)
			s.closeLocked(ErrHubStopped)
		}
	}
}

// Run holds the dedicated listener connection and dispatches notifications
// until ctx ends; then it closes every open subscription (Err =
// ErrHubStopped) and returns nil. On connection loss it reconnects with
// backoff; after every (re)connection every current subscriber gets a
// Resync event, sent once LISTEN is active so a snapshot read after it
// misses nothing. Run may be called once per hub; it fails at once only if
// DatabaseURL cannot be parsed.
func (h *Hub) Run(ctx context.Context) error {
	if !h.started.CompareAndSwap(false, true) {
		return errors.New("realtime: Hub.Run called twice")
	}
	defer h.stop()
	cfg, err := pgx.ParseConfig(h.opts.DatabaseURL)
	if err != nil {
		return fmt.Errorf("realtime: parse database URL: %w", err)
	}
	cfg.RuntimeParams["application_name"] = h.opts.ApplicationName
	// Deliver notifications straight to subscribers, including those that
	// arrive while a health-check ping runs; pgx would otherwise queue them.
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		h.dispatch(Event{Channel: n.Channel, Payload: []byte(n.Payload)})
	}

	backoff := h.opts.ReconnectBackoff.Min
	for {
		connected, err := h.session(ctx, cfg)
		h.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			backoff = h.opts.ReconnectBackoff.Min
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		h.log.Warn("realtime listener disconnected; reconnecting", "error", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, h.opts.ReconnectBackoff.Max)
	}
}

// session connects, listens and dispatches until the connection fails or
// ctx ends. connected reports whether LISTEN succeeded.
func (h *Hub) session(ctx context.Context, cfg *pgx.ConnConfig) (connected bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	for _, c := range h.opts.Channels {
		if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{c}.Sanitize()); err != nil {
			return false, fmt.Errorf("listen %s: %w", c, err)
		}
	}
	h.ready.Store(true)
	n := h.connects.Add(1)
	h.log.Info("realtime listener connected", "channels", len(h.opts.Channels), "connects", n)
	h.resyncAll()

	pg := conn.PgConn()
	for {
		wctx, cancel := context.WithTimeout(ctx, h.opts.HealthCheck)
		err := pg.WaitForNotification(wctx) // dispatches through OnNotification
		cancel()
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		if !errors.Is(err, context.DeadlineExceeded) || pg.IsClosed() {
			return true, err
		}
		// Idle for HealthCheck: make sure the server is still there.
		pctx, cancel := context.WithTimeout(ctx, connectTimeout)
		err = pg.Ping(pctx)
		cancel()
		if err != nil {
			return true, fmt.Errorf("health check: %w", err)
		}
	}
}
