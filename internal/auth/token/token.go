// Package token issues and verifies NXG access tokens.
//
// Access tokens are JWTs (RFC 7519 / RFC 9068) signed with EdDSA (Ed25519)
// via github.com/lestrrat-go/jwx/v3. They live 15 minutes and carry
// iss, aud, sub (user or device id), sid (session id), role, exp, iat, nbf
// and jti; the protected header carries alg "EdDSA", typ "at+jwt" and kid.
//
// Signing keys come from configuration as a JWK Set (see ParseKeyRing); the
// first key signs and every key verifies, so keys rotate without logging
// anybody out. The public half is served as /.well-known/jwks.json
// (KeyRing.PublicJWKS).
//
// A valid token only proves what the issuer said 15 minutes ago at most:
// callers must still check that the session (sid) is alive (design doc,
// "Security"), so that logout and revocation take effect at once.
package token

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

const (
	// DefaultTTL is the access-token lifetime.
	DefaultTTL = 15 * time.Minute
	// ClockSkew is the leeway applied to exp, nbf and iat on verification.
	ClockSkew = 30 * time.Second
	// MaxTokenBytes bounds the size of a token Verify is willing to parse;
	// longer input is refused before any decoding (cheap DoS guard).
	MaxTokenBytes = 8 << 10
	// HeaderType is the "typ" protected header of access tokens (RFC 9068).
	HeaderType = "at+jwt"

	claimSessionID     = "sid"
	claimRole          = "role"
	claimDeviceBranch  = "branch_id"
	claimDeviceKind    = "device_kind"
	claimDeviceMachine = "machine_id"
)

// ErrInvalidToken is returned, wrapped with the reason, for every token that
// Verify rejects. The reason is for logs only: callers map this error to
// "unauthenticated" without revealing it.
var ErrInvalidToken = errors.New("invalid access token")

// Role is the authorization role carried in a token.
type Role string

// Known roles. Any other value is rejected by Issue and Verify.
const (
	RoleMember Role = "member"
	RoleStaff  Role = "staff"
	RoleAdmin  Role = "admin"
	// RoleDevice is for machine tokens (gym equipment, kiosks); Subject is
	// then the device id.
	RoleDevice Role = "device"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleMember, RoleStaff, RoleAdmin, RoleDevice:
		return true
	}
	return false
}

// Claims are the claims of an access token.
type Claims struct {
	Subject   string // user id (or device id for devices)
	SessionID string
	Role      Role
	TokenID   string // jti, random
	IssuedAt  time.Time
	NotBefore time.Time
	ExpiresAt time.Time
	// Device describes the device of a RoleDevice token; nil for every
	// other role. A device token always carries it, so a request signed in
	// as a device knows its branch and kind without reading the database.
	Device *DeviceClaims
}

// DeviceClaims are what a device token says about its device.
type DeviceClaims struct {
	// BranchID is the branch the device belongs to (a UUID).
	BranchID string
	// Kind is "machine", "nfc_reader" or "kiosk".
	Kind string
	// MachineID is the machine of a console; empty for other kinds.
	MachineID string
}

// valid reports why d cannot be carried by a token, or nil.
func (d DeviceClaims) valid() error {
	if d.BranchID == "" {
		return errors.New("empty device branch")
	}
	switch d.Kind {
	case "machine":
		if d.MachineID == "" {
			return errors.New("a machine console without a machine")
		}
	case "nfc_reader", "kiosk":
		if d.MachineID != "" {
			return fmt.Errorf("a %s with a machine", d.Kind)
		}
	default:
		return fmt.Errorf("unknown device kind %q", d.Kind)
	}
	return nil
}

// IssuerConfig configures an Issuer.
type IssuerConfig struct {
	Keys     *KeyRing
	Issuer   string           // "iss"; required
	Audience string           // "aud"; required
	TTL      time.Duration    // 0 → 15m (DefaultTTL)
	Now      func() time.Time // nil → time.Now
}

// Issuer issues and verifies access tokens. It is safe for concurrent use.
type Issuer struct {
	keys     *KeyRing
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time

	// parseOpts holds, per kid, the complete (immutable) option list for
	// jwt.Parse: the key pinned to EdDSA plus every validator.
	parseOpts map[string][]jwt.ParseOption
}

// NewIssuer checks cfg and returns an Issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if cfg.Keys == nil || len(cfg.Keys.keys) == 0 {
		return nil, errors.New("token: IssuerConfig.Keys is required")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("token: IssuerConfig.Issuer is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("token: IssuerConfig.Audience is required")
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("token: IssuerConfig.TTL %s is negative", cfg.TTL)
	}
	i := &Issuer{
		keys:     cfg.Keys,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		ttl:      cfg.TTL,
		now:      cfg.Now,
	}
	if i.ttl == 0 {
		i.ttl = DefaultTTL
	}
	if i.ttl < time.Second {
		return nil, fmt.Errorf("token: IssuerConfig.TTL %s is below one second", cfg.TTL)
	}
	if i.now == nil {
		i.now = time.Now
	}

	validate := []jwt.ParseOption{
		jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(i.now)),
		jwt.WithAcceptableSkew(ClockSkew),
		jwt.WithIssuer(i.issuer),
		jwt.WithAudience(i.audience),
		jwt.WithRequiredClaim(jwt.SubjectKey),
		jwt.WithRequiredClaim(jwt.JwtIDKey),
		jwt.WithRequiredClaim(jwt.IssuedAtKey),
		jwt.WithRequiredClaim(jwt.NotBeforeKey),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(claimSessionID),
		jwt.WithRequiredClaim(claimRole),
		// A token signed by one of our keys under an older, longer TTL
		// configuration is not accepted for longer than the current TTL.
		jwt.WithMaxDelta(i.ttl, jwt.ExpirationKey, jwt.IssuedAtKey),
	}
	i.parseOpts = make(map[string][]jwt.ParseOption, len(cfg.Keys.keys))
	for _, sk := range cfg.Keys.keys {
		opts := make([]jwt.ParseOption, 0, len(validate)+1)
		// Raw ed25519.PublicKey + single WithKey: jwx takes its fast path
		// (jws.VerifyCompactFast), which also cross-checks the header alg
		// and refuses "crit"/"b64".
		opts = append(opts, jwt.WithKey(jwa.EdDSA(), sk.pub))
		opts = append(opts, validate...)
		i.parseOpts[sk.kid] = opts
	}
	return i, nil
}

// Issue signs a new access token for subject in session sessionID with role,
// using the newest key of the ring. It returns the compact JWT and its
// claims. Times are whole seconds (JWT NumericDate), and
// ExpiresAt − IssuedAt is exactly the TTL. Device tokens are issued with
// IssueDevice, which adds what the device is.
func (i *Issuer) Issue(subject, sessionID string, role Role) (token string, claims Claims, err error) {
	if role == RoleDevice {
		return "", Claims{}, errors.New("token: device tokens are issued with IssueDevice")
	}
	return i.issue(subject, sessionID, role, nil)
}

// IssueDevice signs a RoleDevice token for the device deviceID in session
// sessionID, carrying the device's branch, kind and machine.
func (i *Issuer) IssueDevice(deviceID, sessionID string, device DeviceClaims) (token string, claims Claims, err error) {
	if err := device.valid(); err != nil {
		return "", Claims{}, fmt.Errorf("token: %w", err)
	}
	return i.issue(deviceID, sessionID, RoleDevice, &device)
}

func (i *Issuer) issue(subject, sessionID string, role Role, device *DeviceClaims) (token string, claims Claims, err error) {
	if subject == "" {
		return "", Claims{}, errors.New("token: empty subject")
	}
	if sessionID == "" {
		return "", Claims{}, errors.New("token: empty session id")
	}
	if !role.Valid() {
		return "", Claims{}, fmt.Errorf("token: unknown role %q", role)
	}
	jti, err := newTokenID()
	if err != nil {
		return "", Claims{}, err
	}
	now := i.now().UTC().Truncate(time.Second)
	claims = Claims{
		Subject:   subject,
		SessionID: sessionID,
		Role:      role,
		TokenID:   jti,
		IssuedAt:  now,
		NotBefore: now,
		ExpiresAt: now.Add(i.ttl),
		Device:    device,
	}

	builder := jwt.NewBuilder().
		Issuer(i.issuer).
		Audience([]string{i.audience}).
		Subject(subject).
		IssuedAt(claims.IssuedAt).
		NotBefore(claims.NotBefore).
		Expiration(claims.ExpiresAt).
		JwtID(jti).
		Claim(claimSessionID, sessionID).
		Claim(claimRole, string(role))
	if device != nil {
		builder = builder.Claim(claimDeviceBranch, device.BranchID).Claim(claimDeviceKind, device.Kind)
		if device.MachineID != "" {
			builder = builder.Claim(claimDeviceMachine, device.MachineID)
		}
	}
	tok, err := builder.Build()
	if err != nil {
		return "", Claims{}, fmt.Errorf("token: build claims: %w", err)
	}

	sk := i.keys.keys[0]
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, HeaderType); err != nil {
		return "", Claims{}, fmt.Errorf("token: set typ: %w", err)
	}
	if err := hdr.Set(jws.KeyIDKey, sk.kid); err != nil {
		return "", Claims{}, fmt.Errorf("token: set kid: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), sk.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", Claims{}, fmt.Errorf("token: sign: %w", err)
	}
	if len(signed) > MaxTokenBytes {
		return "", Claims{}, fmt.Errorf("token: token of %d bytes exceeds %d (subject or session id too long)", len(signed), MaxTokenBytes)
	}
	return string(signed), claims, nil
}

// Verify returns the claims of a valid token, or an error wrapping
// ErrInvalidToken with the reason (for logs; callers map it to
// unauthenticated without revealing the reason).
//
// A token is valid when: it is at most MaxTokenBytes long and in JWS compact
// form; its protected header has alg "EdDSA" (nothing else is ever tried),
// typ "at+jwt" (or "application/at+jwt", case-insensitively, RFC 9068 §4) and
// the kid of a key in the ring; the signature verifies with that key; iss and
// aud match; exp, nbf and iat hold within ClockSkew; and sub, sid, jti are
// non-empty strings and role is a known role.
func (i *Issuer) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, invalid("empty token")
	}
	if len(token) > MaxTokenBytes {
		return Claims{}, invalid("token of %d bytes exceeds %d", len(token), MaxTokenBytes)
	}
	if !isCompactJWS(token) {
		return Claims{}, invalid("not a JWS compact serialization")
	}
	raw := []byte(token)

	// Inspect the protected header before touching any key. jwt.Parse does
	// not expose the header, hence this separate (cheap) jws.Parse.
	msg, err := jws.Parse(raw, jws.WithCompact())
	if err != nil {
		return Claims{}, invalidErr(err, "parse JWS")
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return Claims{}, invalid("%d signatures", len(sigs))
	}
	hdr := sigs[0].ProtectedHeaders()
	if hdr == nil {
		return Claims{}, invalid("no protected header")
	}
	alg, ok := hdr.Algorithm()
	if !ok {
		return Claims{}, invalid("missing alg")
	}
	if alg.String() != jwa.EdDSA().String() {
		return Claims{}, invalid("alg %q not allowed", alg.String())
	}
	typ, ok := hdr.Type()
	if !ok {
		return Claims{}, invalid("missing typ")
	}
	if !validType(typ) {
		return Claims{}, invalid("typ %q is not %q", typ, HeaderType)
	}
	kid, ok := hdr.KeyID()
	if !ok || kid == "" {
		return Claims{}, invalid("missing kid")
	}
	opts, ok := i.parseOpts[kid]
	if !ok {
		return Claims{}, invalid("unknown kid %q", kid)
	}

	tok, err := jwt.Parse(raw, opts...)
	if err != nil {
		return Claims{}, invalidErr(err, "kid %q", kid)
	}
	return claimsOf(tok)
}

// Current reports whether claims that Verify accepted earlier are still
// inside their validity window on the issuer's clock, judged exactly as
// Verify judges exp, nbf and iat (whole seconds, ClockSkew either side). A
// cache of verified tokens asks it on every hit, so that a cached token
// stops working at the very moment Verify would start refusing it.
func (i *Issuer) Current(c Claims) bool {
	now := i.now().Truncate(time.Second)
	return now.Before(c.ExpiresAt.Add(ClockSkew)) &&
		!now.Before(c.NotBefore.Add(-ClockSkew)) &&
		!now.Before(c.IssuedAt.Add(-ClockSkew))
}

func claimsOf(tok jwt.Token) (Claims, error) {
	var c Claims
	var ok bool
	if c.Subject, ok = tok.Subject(); !ok || c.Subject == "" {
		return Claims{}, invalid("empty sub")
	}
	if c.TokenID, ok = tok.JwtID(); !ok || c.TokenID == "" {
		return Claims{}, invalid("empty jti")
	}
	if err := tok.Get(claimSessionID, &c.SessionID); err != nil {
		return Claims{}, invalidErr(err, "sid")
	}
	if c.SessionID == "" {
		return Claims{}, invalid("empty sid")
	}
	var role string
	if err := tok.Get(claimRole, &role); err != nil {
		return Claims{}, invalidErr(err, "role")
	}
	c.Role = Role(role)
	if !c.Role.Valid() {
		return Claims{}, invalid("unknown role %q", role)
	}
	device, err := deviceClaimsOf(tok)
	if err != nil {
		return Claims{}, err
	}
	// A device token without its device, or a person's token carrying
	// one, was not made by Issue or IssueDevice: refuse both.
	switch {
	case c.Role == RoleDevice && device == nil:
		return Claims{}, invalid("device token without device claims")
	case c.Role != RoleDevice && device != nil:
		return Claims{}, invalid("%s token with device claims", c.Role)
	}
	c.Device = device
	// Presence is enforced by jwt.WithRequiredClaim; ok is always true here.
	c.IssuedAt, _ = tok.IssuedAt()
	c.NotBefore, _ = tok.NotBefore()
	c.ExpiresAt, _ = tok.Expiration()
	c.IssuedAt, c.NotBefore, c.ExpiresAt = c.IssuedAt.UTC(), c.NotBefore.UTC(), c.ExpiresAt.UTC()
	return c, nil
}

// deviceClaimsOf reads the device claims of tok: nil when it carries none.
func deviceClaimsOf(tok jwt.Token) (*DeviceClaims, error) {
	var d DeviceClaims
	present := false
	for _, c := range []struct {
		name string
		dst  *string
	}{{claimDeviceBranch, &d.BranchID}, {claimDeviceKind, &d.Kind}, {claimDeviceMachine, &d.MachineID}} {
		if !tok.Has(c.name) {
			continue
		}
		present = true
		if err := tok.Get(c.name, c.dst); err != nil {
			return nil, invalidErr(err, "%s", c.name)
		}
	}
	if !present {
		return nil, nil
	}
	if err := d.valid(); err != nil {
		return nil, invalidErr(err, "device claims")
	}
	return &d, nil
}

// isCompactJWS reports whether s looks like header.payload.signature using
// only the base64url alphabet (no padding, whitespace or JSON), with a
// non-empty header and payload. An empty signature passes here (an
// alg "none" token is then rejected on its header), but jws.Parse is never
// fed anything that is not shaped like a compact JWS.
func isCompactJWS(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			dots++
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	if dots != 2 {
		return false
	}
	h, rest, _ := strings.Cut(s, ".")
	p, _, _ := strings.Cut(rest, ".")
	return h != "" && p != ""
}

func validType(typ string) bool {
	return strings.EqualFold(typ, HeaderType) || strings.EqualFold(typ, "application/"+HeaderType)
}

func newTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("token: random jti: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidToken}, args...)...)
}

func invalidErr(err error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format+": %w", append(append([]any{ErrInvalidToken}, args...), err)...)
}
