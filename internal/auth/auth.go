// Package auth ties the pieces of authentication together: it turns the
// bearer token of a request into the Principal acting, checking both the
// token's signature and that its session is still alive in Redis, so
// logout and revocation take effect on the very next request.
//
// Both checks are cached, because they are most of the cost of a small
// RPC: a token verified once is not verified again until it expires, and a
// session found alive is taken to be alive for a second at most. A
// revocation drops the session from the cache at once: in the process that
// ends it through the session store's OnRevoke, and in the other processes
// when their stream guard hears of it (ForgetSessions).
package auth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/token"
)

// Principal is who is calling.
type Principal struct {
	// UserID is the account's id; for a device it is the device's id.
	UserID    uuid.UUID
	SessionID string
	Role      token.Role
	// Device is set when a device (Role device) is calling.
	Device *Device
}

// Device is the calling device: which branch it belongs to and what it is.
type Device struct {
	ID       uuid.UUID
	BranchID uuid.UUID
	// Kind is "machine", "nfc_reader" or "kiosk" (devices.kind).
	Kind string
	// MachineID is the machine of a console; uuid.Nil for other kinds.
	MachineID uuid.UUID
}

// Device kinds, as stored in devices.kind.
const (
	DeviceMachine   = "machine"
	DeviceNFCReader = "nfc_reader"
	DeviceKiosk     = "kiosk"
)

// IsDevice reports whether a device is calling.
func (p Principal) IsDevice() bool { return p.Role == token.RoleDevice && p.Device != nil }

// IsMember reports whether a member account is calling.
func (p Principal) IsMember() bool { return p.Role == token.RoleMember }

// IsAdmin reports whether the caller is an admin.
func (p Principal) IsAdmin() bool { return p.Role == token.RoleAdmin }

// IsStaff reports whether the caller is staff or an admin.
func (p Principal) IsStaff() bool { return p.Role == token.RoleStaff || p.Role == token.RoleAdmin }

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the caller in ctx; ok is false for public RPCs.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// MustPrincipal returns the caller of an authenticated RPC. The auth
// interceptor guarantees one; its absence means the RPC was wrongly listed
// as public, which is refused rather than served anonymously.
func MustPrincipal(ctx context.Context) (Principal, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return Principal{}, errNoCredentials
	}
	return p, nil
}

var (
	errNoCredentials = apperr.Unauthenticated("missing or invalid access token; send Authorization: Bearer <access_token>")
	errSessionEnded  = apperr.Unauthenticated("the session has ended; sign in again")
)

// Authenticator verifies bearer tokens. A process needs one, shared by
// every entry point, so that its caches serve them all and a revocation
// reaches the one place it must. It is safe for concurrent use.
type Authenticator struct {
	tokens   *token.Issuer
	sessions *session.Store
	// verified remembers verified tokens by their SHA-256, so the process
	// keeps digests of the bearer tokens it has seen rather than the
	// tokens; nil when disabled. A token is immutable and signed: once
	// verified it says the same thing until it expires, which is checked
	// on every hit (token.Issuer.Current).
	verified *lru.Cache[[sha256.Size]byte, verifiedToken]
	// alive remembers sessions found alive; nil when disabled.
	alive *livenessCache
}

// verifiedToken is what a verified token says: its claims, whose validity
// window is checked on every use, and the principal they make.
type verifiedToken struct {
	claims    token.Claims
	principal Principal
}

// Config configures an Authenticator. Tokens and Sessions are needed to
// authenticate anything; the zero value of the rest gives the production
// defaults.
type Config struct {
	Tokens   *token.Issuer
	Sessions *session.Store
	// TokenCacheSize is how many verified tokens are remembered
	// (0 → DefaultTokenCacheSize, < 0 → none).
	TokenCacheSize int
	// SessionCacheTTL is how long a session found alive is reused without
	// asking Redis (0 → DefaultSessionCacheTTL, < 0 → never).
	SessionCacheTTL time.Duration
	// SessionCacheSize is how many live sessions are remembered
	// (0 → DefaultSessionCacheSize).
	SessionCacheSize int
	// Now is the clock of SessionCacheTTL (nil → time.Now). Token expiry
	// is judged on the token issuer's own clock.
	Now func() time.Time
}

// NewAuthenticator returns an Authenticator over the token issuer and the
// session store, with the default caches.
func NewAuthenticator(tokens *token.Issuer, sessions *session.Store) *Authenticator {
	return New(Config{Tokens: tokens, Sessions: sessions})
}

// New returns an Authenticator configured by cfg. With a session cache it
// registers with cfg.Sessions (OnRevoke), so that sessions the store ends
// are dropped from the cache before the ending call returns.
func New(cfg Config) *Authenticator {
	a := &Authenticator{tokens: cfg.Tokens, sessions: cfg.Sessions}
	if cfg.TokenCacheSize == 0 {
		cfg.TokenCacheSize = DefaultTokenCacheSize
	}
	if cfg.TokenCacheSize > 0 {
		// A positive size is all lru.New checks.
		a.verified, _ = lru.New[[sha256.Size]byte, verifiedToken](cfg.TokenCacheSize)
	}
	if cfg.SessionCacheTTL == 0 {
		cfg.SessionCacheTTL = DefaultSessionCacheTTL
	}
	if cfg.SessionCacheSize <= 0 {
		cfg.SessionCacheSize = DefaultSessionCacheSize
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionCacheTTL > 0 && cfg.Sessions != nil {
		a.alive = newLivenessCache(cfg.SessionCacheSize, cfg.SessionCacheTTL, cfg.Now)
		cfg.Sessions.OnRevoke(a.alive.forget)
	}
	return a
}

// ForgetSessions drops the cached liveness of the sessions of subject
// named, or of all its sessions when none are named, so their next request
// asks Redis. The stream guard calls it for every revocation it hears of,
// which is how a revocation made by another process reaches this one.
func (a *Authenticator) ForgetSessions(subject string, sessionIDs ...string) {
	if a.alive != nil {
		a.alive.forget(subject, sessionIDs...)
	}
}

// ForgetAllSessions drops every cached liveness result: for when
// revocations may have been missed (the notifications resynced).
func (a *Authenticator) ForgetAllSessions() {
	if a.alive != nil {
		a.alive.forgetAll(false)
	}
}

// StopCachingSessions drops every cached liveness result and caches none
// from now on: for when revocations can no longer be heard at all, so
// that every request asks Redis again.
func (a *Authenticator) StopCachingSessions() {
	if a.alive != nil {
		a.alive.forgetAll(true)
	}
}

// Authenticate checks an Authorization header value. Every failure a
// client can cause is the same unauthenticated error, so a caller learns
// nothing about why a token failed; a Redis failure is unavailable (fail
// closed: a dead session must never be let through).
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (Principal, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Principal{}, errNoCredentials
	}
	p, err := a.verify(strings.TrimSpace(tok))
	if err != nil {
		return Principal{}, err
	}
	if err := a.checkAlive(ctx, p); err != nil {
		return Principal{}, err
	}
	return p, nil
}

// verify returns the principal a token names, verifying it only when it
// is not cached. Only tokens that verify are cached, so forged or broken
// tokens cannot crowd out good ones.
func (a *Authenticator) verify(tok string) (Principal, error) {
	var key [sha256.Size]byte
	if a.verified != nil {
		key = sha256.Sum256([]byte(tok))
		if v, ok := a.verified.Get(key); ok {
			if a.tokens.Current(v.claims) {
				return v.principal.clone(), nil
			}
			// Expired: Verify would refuse it now, and forever after.
			a.verified.Remove(key)
			return Principal{}, errNoCredentials
		}
	}
	claims, err := a.tokens.Verify(tok)
	if err != nil {
		return Principal{}, &apperr.Error{Code: apperr.CodeUnauthenticated, Message: errNoCredentials.Message, Cause: err}
	}
	uid, err := uuid.Parse(claims.Subject)
	if err != nil {
		return Principal{}, errNoCredentials
	}
	p := Principal{UserID: uid, SessionID: claims.SessionID, Role: claims.Role}
	if claims.Device != nil {
		d, err := deviceOf(uid, *claims.Device)
		if err != nil {
			return Principal{}, &apperr.Error{Code: apperr.CodeUnauthenticated, Message: errNoCredentials.Message, Cause: err}
		}
		p.Device = d
	}
	if a.verified != nil {
		a.verified.Add(key, verifiedToken{claims: claims, principal: p.clone()})
	}
	return p, nil
}

// checkAlive refuses p unless its session is alive: remembered alive for
// less than the cache's TTL, or else alive in Redis. A Redis failure is
// unavailable, never a session let through.
func (a *Authenticator) checkAlive(ctx context.Context, p Principal) error {
	var generation uint64
	if a.alive != nil {
		var hit bool
		if hit, generation = a.alive.alive(p.SessionID); hit {
			return nil
		}
	}
	alive, err := a.sessions.Alive(ctx, p.SessionID)
	if err != nil {
		return apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
	}
	if !alive {
		return errSessionEnded
	}
	if a.alive != nil {
		a.alive.put(p.UserID.String(), p.SessionID, generation)
	}
	return nil
}

// clone returns p with its own copy of the device, so that no caller can
// change what the token cache holds.
func (p Principal) clone() Principal {
	if p.Device != nil {
		d := *p.Device
		p.Device = &d
	}
	return p
}

// deviceOf turns a verified token's device claims into the calling Device.
// The issuer only signs UUIDs here, so a failure means a token made by
// something else with our key: it is refused like any bad token.
func deviceOf(id uuid.UUID, c token.DeviceClaims) (*Device, error) {
	branch, err := uuid.Parse(c.BranchID)
	if err != nil {
		return nil, fmt.Errorf("device token branch_id: %w", err)
	}
	d := &Device{ID: id, BranchID: branch, Kind: c.Kind}
	if c.MachineID != "" {
		if d.MachineID, err = uuid.Parse(c.MachineID); err != nil {
			return nil, fmt.Errorf("device token machine_id: %w", err)
		}
	}
	return d, nil
}

// DeviceClaims are the token claims that describe d, for IssueDevice.
func (d Device) Claims() token.DeviceClaims {
	c := token.DeviceClaims{BranchID: d.BranchID.String(), Kind: d.Kind}
	if d.MachineID != uuid.Nil {
		c.MachineID = d.MachineID.String()
	}
	return c
}
