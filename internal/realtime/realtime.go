// Package realtime turns PostgreSQL NOTIFY into in-process event streams.
//
// Writers call [Notify] inside the transaction that changes the data, with a
// small JSON payload (ids, version, kind; never whole rows: PostgreSQL caps
// a payload at 8000 bytes). PostgreSQL delivers a notification only when the
// transaction commits, and never when it rolls back.
//
// Each process runs one [Hub]: it holds ONE dedicated listener connection
// (opened with pgx.Connect, outside the pool, so it never starves or is
// starved by queries), LISTENs to every configured channel, and fans each
// notification out to in-process [Subscription]s. Every instance listens, so
// a client connected to any instance sees every write.
//
// Memory is bounded everywhere: each subscription has a fixed buffer, the hub
// never blocks on a subscriber, and a subscriber whose buffer is full is
// dropped (its channel closed, [Subscription.Err] = [ErrSlowConsumer]); it
// must resubscribe and re-read a snapshot. When the listener connection is
// (re)established, every current subscriber receives an Event with Resync
// set: it may have missed events and should re-send a snapshot.
//
// NOTIFY takes a global lock at commit. Hot write paths (many machine
// heartbeats) should not send one NOTIFY per row: use a [Coalescer], which
// merges many updates into one NOTIFY per window.
package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// MaxPayload is the largest encoded payload Notify accepts, in bytes. It
// stays below PostgreSQL's 8000-byte limit with a margin.
const MaxPayload = 7900

var (
	// ErrSlowConsumer is the Err of a subscription dropped because its
	// buffer was full when an event arrived.
	ErrSlowConsumer = errors.New("realtime: subscriber fell behind and was dropped; resubscribe for a fresh snapshot")
	// ErrPayloadTooLarge is returned by Notify and the Coalescer when an
	// encoded payload exceeds MaxPayload.
	ErrPayloadTooLarge = errors.New("realtime: notification payload too large")
	// ErrInvalidChannel is returned for channel names that do not match
	// ^[a-z_][a-z0-9_]{0,62}$.
	ErrInvalidChannel = errors.New("realtime: invalid channel name")
	// ErrUnknownChannel is the Err of a subscription to a channel the hub
	// was not configured to listen to.
	ErrUnknownChannel = errors.New("realtime: hub does not listen to this channel")
	// ErrHubStopped is the Err of subscriptions still open when Hub.Run
	// returns, and of subscriptions made after that.
	ErrHubStopped = errors.New("realtime: hub stopped")
)

var channelRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ValidChannel reports an error wrapping ErrInvalidChannel when name is not a
// valid channel name.
func ValidChannel(name string) error {
	if !channelRE.MatchString(name) {
		return fmt.Errorf("%w: %q (want ^[a-z_][a-z0-9_]{0,62}$)", ErrInvalidChannel, name)
	}
	return nil
}

// Event is one notification.
type Event struct {
	// Channel is the channel it was sent on.
	Channel string
	// Payload is the JSON the writer sent. It is shared by every subscriber
	// of the event: read it, never modify it. Nil on a Resync event.
	Payload []byte
	// Resync is set on the synthetic event the hub sends to every
	// subscriber when the listener connection was (re)established: events
	// may have been missed, so streams should re-send a snapshot.
	Resync bool
}

// Notify sends the JSON encoding of v on channel inside tx, with
// SELECT pg_notify($1, $2). Listeners receive it when tx commits, and never
// if it rolls back. It fails with ErrPayloadTooLarge if the encoding is
// longer than MaxPayload bytes.
func Notify(ctx context.Context, tx pgx.Tx, channel string, v any) error {
	payload, err := encodePayload(channel, v)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload); err != nil {
		return fmt.Errorf("realtime: notify %s: %w", channel, err)
	}
	return nil
}

func encodePayload(channel string, v any) (string, error) {
	if err := ValidChannel(channel); err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("realtime: encode payload for %s: %w", channel, err)
	}
	if len(b) > MaxPayload {
		return "", fmt.Errorf("%w: %d bytes on %s (max %d); send ids and let readers fetch rows", ErrPayloadTooLarge, len(b), channel, MaxPayload)
	}
	return string(b), nil
}
