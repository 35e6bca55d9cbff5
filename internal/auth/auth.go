// Package auth ties the pieces of authentication together: it turns the
// bearer token of a request into the Principal acting, checking both the
// token's signature and that its session is still alive in Redis, so
// logout and revocation take effect on the very next request.
package auth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

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

// Authenticator verifies bearer tokens.
type Authenticator struct {
	tokens   *token.Issuer
	sessions *session.Store
}

// NewAuthenticator returns an Authenticator over the token issuer and the
// session store.
func NewAuthenticator(tokens *token.Issuer, sessions *session.Store) *Authenticator {
	return &Authenticator{tokens: tokens, sessions: sessions}
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
	claims, err := a.tokens.Verify(strings.TrimSpace(tok))
	if err != nil {
		return Principal{}, &apperr.Error{Code: apperr.CodeUnauthenticated, Message: errNoCredentials.Message, Cause: err}
	}
	uid, err := uuid.Parse(claims.Subject)
	if err != nil {
		return Principal{}, errNoCredentials
	}
	alive, err := a.sessions.Alive(ctx, claims.SessionID)
	if err != nil {
		return Principal{}, apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
	}
	if !alive {
		return Principal{}, errSessionEnded
	}
	p := Principal{UserID: uid, SessionID: claims.SessionID, Role: claims.Role}
	if claims.Device != nil {
		d, err := deviceOf(uid, *claims.Device)
		if err != nil {
			return Principal{}, &apperr.Error{Code: apperr.CodeUnauthenticated, Message: errNoCredentials.Message, Cause: err}
		}
		p.Device = d
	}
	return p, nil
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
