package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Execer is what a Coalescer sends its notifications through: a
// *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// ErrCoalescerFull is returned by Coalescer.Add when MaxPending distinct
// keys already wait for the next flush.
var ErrCoalescerFull = errors.New("realtime: coalescer full; update not notified")

// CoalescerOptions configure a Coalescer.
type CoalescerOptions struct {
	// DB sends the notifications (normally the pool).
	DB Execer
	// Channel is where they go.
	Channel string
	// Window is how often pending updates are flushed (0 → 250ms).
	Window time.Duration
	// MaxPending bounds the distinct keys waiting for a flush (0 → 10000);
	// reaching it triggers a flush at once.
	MaxPending int
	// Logger gets flush failures (nil → slog.Default()).
	Logger *slog.Logger
}

// Coalescer merges notifications on a hot write path (e.g. machine
// heartbeats) into one NOTIFY per window instead of one per row: NOTIFY
// takes a cluster-wide lock at commit, so per-row notifications serialize
// all such writers.
//
// Writers commit WITHOUT notifying, then call Add(key, v): within a window
// only the latest v per key is kept. Every Window, Run sends the pending
// values as JSON arrays ([v1, v2, ...], in first-added order, each array
// at most MaxPayload bytes, several arrays if needed) in one statement, so
// subscribers of Channel decode a batch. Because the notification is sent
// after the writer's commit, a reader never sees it before the data; it is
// lost if the process dies before the flush, which is acceptable for the
// streams this serves (the next update or a Resync snapshot repairs it).
type Coalescer struct {
	opts CoalescerOptions
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	order   []string
	pending map[string]json.RawMessage
}

// NewCoalescer returns a coalescer; start its Run. It panics on an invalid
// channel name.
func NewCoalescer(opts CoalescerOptions) *Coalescer {
	if err := ValidChannel(opts.Channel); err != nil {
		panic(err)
	}
	if opts.Window <= 0 {
		opts.Window = 250 * time.Millisecond
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Coalescer{
		opts:    opts,
		log:     opts.Logger.With("component", "realtime", "channel", opts.Channel),
		kick:    make(chan struct{}, 1),
		pending: make(map[string]json.RawMessage),
	}
}

// Add records v as the latest update for key, to be notified at the next
// flush. It never blocks: it fails with ErrPayloadTooLarge when v encodes to
// more than MaxPayload-2 bytes, and with ErrCoalescerFull when MaxPending
// other keys already wait.
func (c *Coalescer) Add(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("realtime: encode payload for %s: %w", c.opts.Channel, err)
	}
	if len(b) > MaxPayload-2 { // room for the array brackets
		return fmt.Errorf("%w: %d bytes on %s", ErrPayloadTooLarge, len(b), c.opts.Channel)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.pending[key]; !ok {
		if len(c.pending) >= c.opts.MaxPending {
			return ErrCoalescerFull
		}
		c.order = append(c.order, key)
	}
	c.pending[key] = b
	if len(c.pending) >= c.opts.MaxPending {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Run flushes every Window until ctx ends, then flushes once more (with a
// short deadline of its own) and returns nil.
func (c *Coalescer) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := c.Flush(fctx); err != nil {
				c.log.Warn("realtime coalescer final flush failed", "error", err)
			}
			return nil
		case <-t.C:
		case <-c.kick:
		}
		if err := c.Flush(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("realtime coalescer flush failed", "error", err)
		}
	}
}

// Flush sends the pending updates now, in one statement (one commit, one
// NOTIFY lock). On failure the updates are discarded, not retried: they are
// superseded by later ones.
func (c *Coalescer) Flush(ctx context.Context) error {
	c.mu.Lock()
	order, pending := c.order, c.pending
	if len(order) == 0 {
		c.mu.Unlock()
		return nil
	}
	c.order, c.pending = nil, make(map[string]json.RawMessage, len(pending))
	c.mu.Unlock()

	payloads := batchPayloads(order, pending)
	_, err := c.opts.DB.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i", c.opts.Channel, payloads)
	if err != nil {
		return fmt.Errorf("realtime: coalesced notify %s: %w", c.opts.Channel, err)
	}
	return nil
}

// batchPayloads packs the values into JSON arrays of at most MaxPayload bytes.
func batchPayloads(order []string, pending map[string]json.RawMessage) []string {
	var out []string
	buf := make([]byte, 0, MaxPayload)
	for _, k := range order {
		v := pending[k]
		if len(buf) > 0 && len(buf)+1+len(v)+1 > MaxPayload {
			out = append(out, string(append(buf, ']')))
			buf = buf[:0]
		}
		if len(buf) == 0 {
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, v...)
	}
	if len(buf) > 0 {
		out = append(out, string(append(buf, ']')))
	}
	return out
}
