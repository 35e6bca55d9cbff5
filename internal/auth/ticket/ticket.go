// Package ticket issues the single-use tickets that open a WebSocket for a
// signed-in caller. Browsers cannot set an Authorization header on a
// WebSocket, and an access token in a URL ends up in proxy logs and browser
// history for its whole 15 minutes; a ticket is worth one connection for
// 30 seconds instead.
//
// A ticket is 256 bits from crypto/rand, encoded base64url without padding
// (43 characters) and shown to the client once. Redis keeps it under
// prefix+"ws-ticket:"+hex(SHA-256(raw)) with the caller's identity as JSON
// and a TTL; Redeem reads and deletes it in one GETDEL, so two connections
// racing with the same ticket cannot both win.
package ticket

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
)

// DefaultTTL is how long an unused ticket works.
const DefaultTTL = 30 * time.Second

const (
	ticketBytes = 32
	ticketLen   = 43 // base64url of 32 bytes, no padding
)

// ErrInvalid is returned by Redeem for a ticket that is malformed, unknown,
// expired or used already; callers cannot and need not tell these apart.
var ErrInvalid = errors.New("ticket: invalid, expired or already used")

var encoding = base64.RawURLEncoding

// Store keeps tickets in Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	now    func() time.Time
}

// Options tune a Store; the zero value gives the defaults.
type Options struct {
	// TTL is how long an unused ticket works (0 → DefaultTTL).
	TTL time.Duration
	// Now is the clock of the expiry reported to clients (nil → time.Now);
	// Redis itself expires the ticket.
	Now func() time.Time
}

// NewStore returns a Store that puts every key under prefix.
func NewStore(client redis.UniversalClient, prefix string, opts Options) *Store {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{rdb: client, prefix: prefix, ttl: opts.TTL, now: opts.Now}
}

// grant is what a ticket stands for, as stored.
type grant struct {
	Subject   uuid.UUID `json:"sub"`
	SessionID string    `json:"sid"`
	Role      string    `json:"role"`
	Device    *device   `json:"dev,omitempty"`
}

type device struct {
	Branch  uuid.UUID `json:"b"`
	Kind    string    `json:"k"`
	Machine uuid.UUID `json:"m,omitzero"`
}

func (s *Store) key(hash string) string { return s.prefix + "ws-ticket:" + hash }

func hashOf(raw []byte) string { sum := sha256.Sum256(raw); return hex.EncodeToString(sum[:]) }

// Issue stores a new ticket for p and returns it with its expiry.
func (s *Store) Issue(ctx context.Context, p auth.Principal) (string, time.Time, error) {
	if p.UserID == uuid.Nil || p.SessionID == "" || !p.Role.Valid() {
		return "", time.Time{}, fmt.Errorf("ticket: issue for incomplete principal %+v", p)
	}
	g := grant{Subject: p.UserID, SessionID: p.SessionID, Role: string(p.Role)}
	if p.Device != nil {
		g.Device = &device{Branch: p.Device.BranchID, Kind: p.Device.Kind, Machine: p.Device.MachineID}
	}
	value, err := json.Marshal(g)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ticket: encode: %w", err)
	}
	var raw [ticketBytes]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails (it crashes instead)
	expires := s.now().Add(s.ttl)
	if err := s.rdb.Set(ctx, s.key(hashOf(raw[:])), value, s.ttl).Err(); err != nil {
		return "", time.Time{}, fmt.Errorf("ticket: store: %w", err)
	}
	return encoding.EncodeToString(raw[:]), expires, nil
}

// Redeem uses up a ticket and returns the principal it was issued to. The
// caller must still check that the principal's session is alive: the
// session may have ended in the seconds since the ticket was made.
func (s *Store) Redeem(ctx context.Context, ticket string) (auth.Principal, error) {
	if len(ticket) != ticketLen {
		return auth.Principal{}, ErrInvalid
	}
	raw, err := encoding.DecodeString(ticket)
	if err != nil || len(raw) != ticketBytes {
		return auth.Principal{}, ErrInvalid
	}
	value, err := s.rdb.GetDel(ctx, s.key(hashOf(raw))).Bytes()
	if errors.Is(err, redis.Nil) {
		return auth.Principal{}, ErrInvalid
	}
	if err != nil {
		return auth.Principal{}, fmt.Errorf("ticket: redeem: %w", err)
	}
	var g grant
	if err := json.Unmarshal(value, &g); err != nil {
		return auth.Principal{}, fmt.Errorf("ticket: stored value: %w", err)
	}
	p := auth.Principal{UserID: g.Subject, SessionID: g.SessionID, Role: token.Role(g.Role)}
	if g.Device != nil {
		p.Device = &auth.Device{ID: g.Subject, BranchID: g.Device.Branch, Kind: g.Device.Kind, MachineID: g.Device.Machine}
	}
	return p, nil
}
