package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

const (
	testIssuer   = "https://auth.nxg.test"
	testAudience = "nxg-api"
)

// t0 is the fixed "now" of the tests; it has a sub-second part on purpose.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// testKey is an Ed25519 key with its kid, as a private JWK and raw.
type testKey struct {
	kid  string
	priv ed25519.PrivateKey
	jwk  jwk.Key
}

func newTestKey(t testing.TB, kid string) testKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	return testKey{kid: kid, priv: priv, jwk: k}
}

// setJSON marshals keys (jwk.Key or raw JSON objects) as a JWK Set.
func setJSON(t testing.TB, keys ...any) []byte {
	t.Helper()
	list := make([]any, len(keys))
	for i, k := range keys {
		switch k := k.(type) {
		case testKey:
			list[i] = k.jwk
		default:
			list[i] = k
		}
	}
	b, err := json.Marshal(map[string]any{"keys": list})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ringOf(t testing.TB, keys ...testKey) *KeyRing {
	t.Helper()
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = k
	}
	ring, err := ParseKeyRing(setJSON(t, args...))
	if err != nil {
		t.Fatalf("ParseKeyRing: %v", err)
	}
	return ring
}

// clock is an adjustable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

func newTestIssuer(t testing.TB, ring *KeyRing, clk *clock) *Issuer {
	t.Helper()
	iss, err := NewIssuer(IssuerConfig{Keys: ring, Issuer: testIssuer, Audience: testAudience, Now: clk.Now})
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return iss
}

func decodeSegment(t testing.TB, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("decode segment: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal segment %s: %v", b, err)
	}
	return m
}

func encodeSegment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// validClaims returns the claim set Issue would produce at now.
func validClaims(now time.Time) map[string]any {
	now = now.Truncate(time.Second)
	return map[string]any{
		"iss":  testIssuer,
		"aud":  []string{testAudience},
		"sub":  "user-1",
		"sid":  "session-1",
		"role": "member",
		"jti":  "jti-1",
		"iat":  now.Unix(),
		"nbf":  now.Unix(),
		"exp":  now.Add(DefaultTTL).Unix(),
	}
}

func validHeader(kid string) map[string]any {
	return map[string]any{"typ": HeaderType, "kid": kid}
}

// signRaw signs claims with alg/key under exactly the given protected
// header members (plus "alg", which jws always sets).
func signRaw(t testing.TB, alg jwa.SignatureAlgorithm, key any, header, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	for k, v := range header {
		if err := hdr.Set(k, v); err != nil {
			t.Fatalf("set header %s: %v", k, err)
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatalf("jws.Sign: %v", err)
	}
	return string(out)
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

func TestIssueVerify(t *testing.T) {
	k := newTestKey(t, "k1")
	clk := &clock{now: t0}
	iss := newTestIssuer(t, ringOf(t, k), clk)

	for _, role := range []Role{RoleMember, RoleStaff, RoleAdmin} {
		t.Run(strings.ToUpper(string(role[:1]))+string(role[1:]), func(t *testing.T) {
			tok, issued, err := iss.Issue("user-42", "sess-7", role)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			if issued.Subject != "user-42" || issued.SessionID != "sess-7" || issued.Role != role || issued.TokenID == "" {
				t.Fatalf("issued claims = %+v", issued)
			}
			if want := t0.Truncate(time.Second); !issued.IssuedAt.Equal(want) || !issued.NotBefore.Equal(want) {
				t.Fatalf("iat/nbf = %v/%v, want %v", issued.IssuedAt, issued.NotBefore, want)
			}
			if d := issued.ExpiresAt.Sub(issued.IssuedAt); d != 15*time.Minute {
				t.Fatalf("exp - iat = %v, want exactly 15m", d)
			}

			got, err := iss.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != issued.Subject || got.SessionID != issued.SessionID || got.Role != issued.Role || got.TokenID != issued.TokenID ||
				!got.IssuedAt.Equal(issued.IssuedAt) || !got.NotBefore.Equal(issued.NotBefore) || !got.ExpiresAt.Equal(issued.ExpiresAt) {
				t.Fatalf("Verify claims = %+v, want %+v", got, issued)
			}
			if d := got.ExpiresAt.Sub(got.IssuedAt); d != 15*time.Minute {
				t.Fatalf("verified exp - iat = %v, want exactly 15m", d)
			}

			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("token has %d parts", len(parts))
			}
			hdr := decodeSegment(t, parts[0])
			if hdr["alg"] != "EdDSA" || hdr["typ"] != "at+jwt" || hdr["kid"] != "k1" {
				t.Fatalf("header = %v, want alg EdDSA, typ at+jwt, kid k1", hdr)
			}
			if len(hdr) != 3 {
				t.Fatalf("header has extra members: %v", hdr)
			}
			payload := decodeSegment(t, parts[1])
			for _, c := range []string{"iss", "aud", "sub", "sid", "role", "exp", "iat", "nbf", "jti"} {
				if _, ok := payload[c]; !ok {
					t.Errorf("payload lacks %q: %v", c, payload)
				}
			}
			if payload["iss"] != testIssuer || payload["sub"] != "user-42" || payload["sid"] != "sess-7" || payload["role"] != string(role) {
				t.Fatalf("payload = %v", payload)
			}
			if exp, iat := payload["exp"].(float64), payload["iat"].(float64); exp-iat != 900 {
				t.Fatalf("payload exp - iat = %v, want 900", exp-iat)
			}
		})
	}

	t.Run("UniqueTokenIDs", func(t *testing.T) {
		seen := map[string]bool{}
		for range 100 {
			_, c, err := iss.Issue("u", "s", RoleMember)
			if err != nil {
				t.Fatal(err)
			}
			if seen[c.TokenID] {
				t.Fatalf("duplicate jti %q", c.TokenID)
			}
			seen[c.TokenID] = true
		}
	})

	t.Run("ValidWithinSkew", func(t *testing.T) {
		tok, c, err := iss.Issue("u", "s", RoleMember)
		if err != nil {
			t.Fatal(err)
		}
		defer clk.Set(t0)
		for _, now := range []time.Time{
			c.IssuedAt.Add(-29 * time.Second), // issuer's clock slightly ahead
			c.ExpiresAt.Add(-time.Second),
			c.ExpiresAt.Add(29 * time.Second), // verifier's clock slightly ahead
		} {
			clk.Set(now)
			if _, err := iss.Verify(tok); err != nil {
				t.Errorf("at %v: %v", now, err)
			}
		}
		clk.Set(c.ExpiresAt.Add(ClockSkew))
		if _, err := iss.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("at exp+skew: err = %v, want ErrInvalidToken", err)
		}
	})

	t.Run("ApplicationMediaTypeAccepted", func(t *testing.T) {
		tok := signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"typ": "application/at+jwt", "kid": "k1"}, validClaims(t0))
		if _, err := iss.Verify(tok); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})

	t.Run("HandSignedControl", func(t *testing.T) {
		// The bad-token corpus below uses signRaw; make sure a correct
		// token built the same way verifies, so each rejection is due to
		// the one thing that was changed.
		tok := signRaw(t, jwa.EdDSA(), k.priv, validHeader("k1"), validClaims(t0))
		c, err := iss.Verify(tok)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if c.Subject != "user-1" || c.Role != RoleMember || c.SessionID != "session-1" || c.TokenID != "jti-1" {
			t.Fatalf("claims = %+v", c)
		}
	})
}

func TestIssueRejects(t *testing.T) {
	iss := newTestIssuer(t, ringOf(t, newTestKey(t, "k1")), &clock{now: t0})
	cases := []struct {
		name     string
		sub, sid string
		role     Role
	}{
		{"EmptySubject", "", "s", RoleMember},
		{"EmptySession", "u", "", RoleMember},
		{"UnknownRole", "u", "s", Role("root")},
		{"EmptyRole", "u", "s", Role("")},
		{"CapitalizedRole", "u", "s", Role("Admin")},
		{"Oversized", strings.Repeat("u", MaxTokenBytes), "s", RoleMember},
		{"DeviceWithoutDeviceClaims", "u", "s", RoleDevice},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tok, _, err := iss.Issue(tc.sub, tc.sid, tc.role); err == nil {
				t.Fatalf("Issue succeeded: %s", tok)
			}
		})
	}
}

func TestNewIssuer(t *testing.T) {
	ring := ringOf(t, newTestKey(t, "k1"))
	bad := []struct {
		name string
		cfg  IssuerConfig
	}{
		{"NilKeys", IssuerConfig{Issuer: testIssuer, Audience: testAudience}},
		{"EmptyRing", IssuerConfig{Keys: &KeyRing{}, Issuer: testIssuer, Audience: testAudience}},
		{"NoIssuer", IssuerConfig{Keys: ring, Audience: testAudience}},
		{"NoAudience", IssuerConfig{Keys: ring, Issuer: testIssuer}},
		{"NegativeTTL", IssuerConfig{Keys: ring, Issuer: testIssuer, Audience: testAudience, TTL: -time.Minute}},
		{"SubSecondTTL", IssuerConfig{Keys: ring, Issuer: testIssuer, Audience: testAudience, TTL: time.Millisecond}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewIssuer(tc.cfg); err == nil {
				t.Fatal("NewIssuer succeeded")
			}
		})
	}

	t.Run("DefaultsToTimeNow", func(t *testing.T) {
		iss, err := NewIssuer(IssuerConfig{Keys: ring, Issuer: testIssuer, Audience: testAudience})
		if err != nil {
			t.Fatal(err)
		}
		before := time.Now().Truncate(time.Second)
		tok, c, err := iss.Issue("u", "s", RoleStaff)
		if err != nil {
			t.Fatal(err)
		}
		if c.IssuedAt.Before(before) || c.IssuedAt.After(time.Now()) {
			t.Fatalf("iat %v not around now", c.IssuedAt)
		}
		if _, err := iss.Verify(tok); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})

	t.Run("CustomTTL", func(t *testing.T) {
		clk := &clock{now: t0}
		iss, err := NewIssuer(IssuerConfig{Keys: ring, Issuer: testIssuer, Audience: testAudience, TTL: 5 * time.Minute, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		tok, c, err := iss.Issue("u", "s", RoleStaff)
		if err != nil {
			t.Fatal(err)
		}
		if d := c.ExpiresAt.Sub(c.IssuedAt); d != 5*time.Minute {
			t.Fatalf("exp - iat = %v", d)
		}
		if _, err := iss.Verify(tok); err != nil {
			t.Fatal(err)
		}
		// A 15-minute token signed by the same key is refused by an
		// issuer configured for 5 minutes.
		long := signRaw(t, jwa.EdDSA(), ringKeyPriv(ring, "k1"), validHeader("k1"), validClaims(t0))
		if _, err := iss.Verify(long); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("longer-lived token: err = %v", err)
		}
	})
}

func mustPublicJWK(t testing.TB, k testKey) jwk.Key {
	t.Helper()
	pk, err := jwk.PublicKeyOf(k.jwk)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func ringKeyPriv(r *KeyRing, kid string) ed25519.PrivateKey {
	for _, k := range r.keys {
		if k.kid == kid {
			return k.priv
		}
	}
	return nil
}

func TestVerifyRejects(t *testing.T) {
	k := newTestKey(t, "k1")
	stranger := newTestKey(t, "k1") // same kid, different key, not in the ring
	other := newTestKey(t, "k9")    // not in the ring
	clk := &clock{now: t0}
	iss := newTestIssuer(t, ringOf(t, k), clk)

	good, _, err := iss.Issue("user-1", "session-1", RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	claims := validClaims(t0)
	hdr := validHeader("k1")
	pub := k.priv.Public().(ed25519.PublicKey)

	// tampered: member → admin, header and signature kept.
	payload := decodeSegment(t, parts[1])
	payload["role"] = "admin"
	tampered := parts[0] + "." + encodeSegment(t, payload) + "." + parts[2]

	// alg confusion: HS256 keyed with the Ed25519 public key bytes.
	hs256 := signRaw(t, jwa.HS256(), []byte(pub), hdr, claims)

	// oversized but otherwise valid: signed by the ring key.
	oversized := signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "pad", strings.Repeat("x", 9<<10)))
	if len(oversized) <= MaxTokenBytes {
		t.Fatalf("oversized token is only %d bytes", len(oversized))
	}

	garbage := make([]byte, 300)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	refresh := make([]byte, 32)
	if _, err := rand.Read(refresh); err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name  string
		token string
		now   time.Time // zero: t0
	}
	cases := []tc{
		{"AlgNone", encodeSegment(t, map[string]any{"alg": "none"}) + "." + parts[1] + ".", time.Time{}},
		{"AlgNoneWithTypAndKid", encodeSegment(t, map[string]any{"alg": "none", "typ": HeaderType, "kid": "k1"}) + "." + parts[1] + ".", time.Time{}},
		{"AlgNoneKeptSignature", encodeSegment(t, map[string]any{"alg": "none", "typ": HeaderType, "kid": "k1"}) + "." + parts[1] + "." + parts[2], time.Time{}},
		{"AlgMissing", encodeSegment(t, map[string]any{"typ": HeaderType, "kid": "k1"}) + "." + parts[1] + "." + parts[2], time.Time{}},
		{"HS256WithPublicKey", hs256, time.Time{}},
		{"ES256Header", encodeSegment(t, map[string]any{"alg": "ES256", "typ": HeaderType, "kid": "k1"}) + "." + parts[1] + "." + parts[2], time.Time{}},
		{"SignedByKeyNotInRingSameKid", signRaw(t, jwa.EdDSA(), stranger.priv, hdr, claims), time.Time{}},
		{"UnknownKid", signRaw(t, jwa.EdDSA(), other.priv, validHeader("k9"), claims), time.Time{}},
		{"UnknownKidRingKey", signRaw(t, jwa.EdDSA(), k.priv, validHeader("k2"), claims), time.Time{}},
		{"MissingKid", signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"typ": HeaderType}, claims), time.Time{}},
		{"EmptyKid", signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"typ": HeaderType, "kid": ""}, claims), time.Time{}},
		{"EmbeddedJWKAttackerKey", signRaw(t, jwa.EdDSA(), other.priv, with(hdr, "jwk", mustPublicJWK(t, other)), claims), time.Time{}},
		{"JKUHeader", signRaw(t, jwa.EdDSA(), other.priv, with(hdr, "jku", "https://evil.test/jwks.json"), claims), time.Time{}},
		{"WrongTyp", signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"typ": "JWT", "kid": "k1"}, claims), time.Time{}},
		{"RefreshTyp", signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"typ": "rt+jwt", "kid": "k1"}, claims), time.Time{}},
		{"MissingTyp", signRaw(t, jwa.EdDSA(), k.priv, map[string]any{"kid": "k1"}, claims), time.Time{}},
		{"CritHeader", signRaw(t, jwa.EdDSA(), k.priv, with(hdr, "crit", []string{"exp"}, "exp", 1), claims), time.Time{}},
		{"WrongIss", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "iss", "https://evil.test")), time.Time{}},
		{"MissingIss", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "iss", nil)), time.Time{}},
		{"WrongAud", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "aud", []string{"other-api"})), time.Time{}},
		{"WrongAudString", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "aud", "other-api")), time.Time{}},
		{"MissingAud", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "aud", nil)), time.Time{}},
		{"ExpiredBeyondSkew", good, t0.Truncate(time.Second).Add(DefaultTTL + ClockSkew + time.Second)},
		{"NotYetValidBeyondSkew", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "nbf", t0.Add(ClockSkew+time.Second).Unix())), time.Time{}},
		{"IssuedInFutureBeyondSkew", good, t0.Add(-ClockSkew - time.Second)},
		{"MissingExp", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "exp", nil)), time.Time{}},
		{"MissingNbf", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "nbf", nil)), time.Time{}},
		{"MissingIat", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "iat", nil)), time.Time{}},
		{"LifetimeTooLong", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "exp", t0.Add(24*time.Hour).Unix())), time.Time{}},
		{"MissingSub", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "sub", nil)), time.Time{}},
		{"EmptySub", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "sub", "")), time.Time{}},
		{"MissingSid", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "sid", nil)), time.Time{}},
		{"EmptySid", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "sid", "")), time.Time{}},
		{"NumericSid", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "sid", 42)), time.Time{}},
		{"MissingJti", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "jti", nil)), time.Time{}},
		{"MissingRole", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "role", nil)), time.Time{}},
		{"UnknownRole", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "role", "superuser")), time.Time{}},
		{"RoleArray", signRaw(t, jwa.EdDSA(), k.priv, hdr, with(claims, "role", []string{"admin"})), time.Time{}},
		{"TamperedPayload", tampered, time.Time{}},
		{"TamperedHeader", encodeSegment(t, map[string]any{"alg": "EdDSA", "typ": HeaderType, "kid": "k1", "x": 1}) + "." + parts[1] + "." + parts[2], time.Time{}},
		{"SignatureFromOtherToken", parts[0] + "." + parts[1] + "." + strings.Split(signRaw(t, jwa.EdDSA(), k.priv, hdr, claims), ".")[2], time.Time{}},
		{"TruncatedSignature", good[:len(good)-5], time.Time{}},
		{"TruncatedNoSignature", parts[0] + "." + parts[1] + ".", time.Time{}},
		{"TruncatedTwoParts", parts[0] + "." + parts[1], time.Time{}},
		{"TruncatedHalf", good[:len(good)/2], time.Time{}},
		{"ExtraSegment", good + ".AAAA", time.Time{}},
		{"Whitespace", " " + good, time.Time{}},
		{"TrailingNewline", good + "\n", time.Time{}},
		{"BearerPrefix", "Bearer " + good, time.Time{}},
		{"Empty", "", time.Time{}},
		{"Dots", "..", time.Time{}},
		{"RandomGarbage", string(garbage), time.Time{}},
		{"RandomBase64", base64.RawURLEncoding.EncodeToString(garbage[:100]) + "." + base64.RawURLEncoding.EncodeToString(garbage[100:200]) + "." + base64.RawURLEncoding.EncodeToString(garbage[200:]), time.Time{}},
		{"RefreshTokenLike", hex.EncodeToString(refresh), time.Time{}},
		{"JSONPayload", `{"alg":"none"}`, time.Time{}},
		{"JWSJSONSerialization", fmt.Sprintf(`{"payload":%q,"protected":%q,"signature":%q}`, parts[1], parts[0], parts[2]), time.Time{}},
		{"Oversized", oversized, time.Time{}},
		{"OversizedPadding", good + strings.Repeat("A", 9<<10), time.Time{}},
	}
	if len(hex.EncodeToString(refresh)) != 64 {
		t.Fatal("refresh-like token is not 64 hex chars")
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := c.now
			if now.IsZero() {
				now = t0
			}
			clk.Set(now)
			defer clk.Set(t0)
			got, err := iss.Verify(c.token)
			if err == nil {
				t.Fatalf("Verify accepted the token: %+v", got)
			}
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want errors.Is ErrInvalidToken", err)
			}
			if got != (Claims{}) {
				t.Fatalf("claims returned with error: %+v", got)
			}
			t.Logf("rejected: %v", err)
		})
	}

	t.Run("GoodTokenStillValid", func(t *testing.T) {
		if _, err := iss.Verify(good); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("OtherIssuerSameKeys", func(t *testing.T) {
		// Same keys, different audience: tokens are not interchangeable.
		other, err := NewIssuer(IssuerConfig{Keys: ringOf(t, k), Issuer: testIssuer, Audience: "nxg-admin", Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Verify(good); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRotation(t *testing.T) {
	oldKey := newTestKey(t, "old")
	newKey := newTestKey(t, "new")
	clk := &clock{now: t0}

	before := newTestIssuer(t, ringOf(t, oldKey), clk)
	during := newTestIssuer(t, ringOf(t, newKey, oldKey), clk)
	after := newTestIssuer(t, ringOf(t, newKey), clk)

	oldTok, _, err := before.Issue("u", "s", RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	newTok, _, err := during.Issue("u", "s", RoleMember)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("NewestKeySigns", func(t *testing.T) {
		if kid := decodeSegment(t, strings.Split(newTok, ".")[0])["kid"]; kid != "new" {
			t.Fatalf("kid = %v, want new", kid)
		}
		if kid := decodeSegment(t, strings.Split(oldTok, ".")[0])["kid"]; kid != "old" {
			t.Fatalf("kid = %v, want old", kid)
		}
		if got := during.keys.SigningKeyID(); got != "new" {
			t.Fatalf("SigningKeyID = %q", got)
		}
		if got := during.keys.KeyIDs(); len(got) != 2 || got[0] != "new" || got[1] != "old" {
			t.Fatalf("KeyIDs = %v", got)
		}
	})
	t.Run("OldTokensStillVerify", func(t *testing.T) {
		if _, err := during.Verify(oldTok); err != nil {
			t.Fatal(err)
		}
		if _, err := during.Verify(newTok); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("NotYetDeployedInstanceRejectsNewKey", func(t *testing.T) {
		if _, err := before.Verify(newTok); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("RemovedKeyRejected", func(t *testing.T) {
		if _, err := after.Verify(oldTok); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("err = %v", err)
		}
		if _, err := after.Verify(newTok); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPublicJWKS(t *testing.T) {
	k1, k2 := newTestKey(t, "k1"), newTestKey(t, "k2")
	ring := ringOf(t, k1, k2)
	clk := &clock{now: t0}
	iss := newTestIssuer(t, ring, clk)

	pubJSON, err := ring.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("NoPrivateParts", func(t *testing.T) {
		var raw struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(pubJSON, &raw); err != nil {
			t.Fatal(err)
		}
		if len(raw.Keys) != 2 {
			t.Fatalf("%d keys, want 2: %s", len(raw.Keys), pubJSON)
		}
		for i, key := range raw.Keys {
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
				if _, ok := key[private]; ok {
					t.Fatalf("key #%d has private member %q: %s", i, private, pubJSON)
				}
			}
			if key["kty"] != "OKP" || key["crv"] != "Ed25519" || key["alg"] != "EdDSA" || key["use"] != "sig" || key["x"] == nil {
				t.Fatalf("key #%d = %v", i, key)
			}
		}
		if raw.Keys[0]["kid"] != "k1" || raw.Keys[1]["kid"] != "k2" {
			t.Fatalf("kids = %v, %v", raw.Keys[0]["kid"], raw.Keys[1]["kid"])
		}
		if strings.Contains(string(pubJSON), `"d"`) {
			t.Fatalf(`JWKS contains "d": %s`, pubJSON)
		}
		// The private seeds must not appear in any encoding.
		for _, k := range []testKey{k1, k2} {
			seed := k.priv.Seed()
			for _, enc := range []string{base64.RawURLEncoding.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), hex.EncodeToString(seed)} {
				if strings.Contains(string(pubJSON), enc) {
					t.Fatalf("JWKS contains a private seed")
				}
			}
		}
	})

	t.Run("ParsesAsPublicSet", func(t *testing.T) {
		set, err := jwk.Parse(pubJSON)
		if err != nil {
			t.Fatal(err)
		}
		if set.Len() != 2 {
			t.Fatalf("Len = %d", set.Len())
		}
		for i := range set.Len() {
			key, _ := set.Key(i)
			if priv, err := jwk.IsPrivateKey(key); err != nil || priv {
				t.Fatalf("key #%d: private=%v err=%v", i, priv, err)
			}
		}
		if _, err := ParseKeyRing(pubJSON); err == nil {
			t.Fatal("ParseKeyRing accepted the public JWKS as signing keys")
		}
	})

	t.Run("ClientVerifiesWithJWKS", func(t *testing.T) {
		set, err := jwk.Parse(pubJSON)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := iss.Issue("user-9", "sess-9", RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set),
			jwt.WithIssuer(testIssuer), jwt.WithAudience(testAudience),
			jwt.WithClock(jwt.ClockFunc(clk.Now)))
		if err != nil {
			t.Fatalf("jwt.Parse with JWKS: %v", err)
		}
		if sub, _ := parsed.Subject(); sub != "user-9" {
			t.Fatalf("sub = %q", sub)
		}
		var role string
		if err := parsed.Get("role", &role); err != nil || role != "admin" {
			t.Fatalf("role = %q, %v", role, err)
		}
		// A token signed by the second key verifies too.
		tok2 := signRaw(t, jwa.EdDSA(), k2.priv, validHeader("k2"), validClaims(t0))
		if _, err := jwt.Parse([]byte(tok2), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(clk.Now))); err != nil {
			t.Fatalf("k2 token: %v", err)
		}
	})

	t.Run("ReturnsCopy", func(t *testing.T) {
		a, _ := ring.PublicJWKS()
		a[0] = 'X'
		b, _ := ring.PublicJWKS()
		if b[0] != '{' {
			t.Fatal("PublicJWKS returned shared buffer")
		}
	})
}

func TestGenerateKeyRingJSON(t *testing.T) {
	b, err := GenerateKeyRingJSON()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := ParseKeyRing(b)
	if err != nil {
		t.Fatalf("ParseKeyRing(generated): %v\n%s", err, b)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Keys) != 1 {
		t.Fatalf("%d keys", len(raw.Keys))
	}
	key := raw.Keys[0]
	if key["kty"] != "OKP" || key["crv"] != "Ed25519" || key["d"] == nil || key["x"] == nil || key["alg"] != "EdDSA" || key["use"] != "sig" {
		t.Fatalf("generated key = %v", key)
	}

	// kid is the RFC 7638 thumbprint of the public key.
	pub, err := jwk.Parse(mustPublic(t, ring))
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := pub.Key(0)
	tp, err := pk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawURLEncoding.EncodeToString(tp); key["kid"] != want || ring.SigningKeyID() != want {
		t.Fatalf("kid = %v, want thumbprint %s", key["kid"], want)
	}

	b2, err := GenerateKeyRingJSON()
	if err != nil {
		t.Fatal(err)
	}
	ring2, err := ParseKeyRing(b2)
	if err != nil {
		t.Fatal(err)
	}
	if ring2.SigningKeyID() == ring.SigningKeyID() {
		t.Fatal("two generated rings share a key")
	}

	iss := newTestIssuer(t, ring, &clock{now: t0})
	tok, _, err := iss.Issue("u", "s", RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Verify(tok); err != nil {
		t.Fatal(err)
	}
}

func mustPublic(t testing.TB, r *KeyRing) []byte {
	t.Helper()
	b, err := r.PublicJWKS()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseKeyRingRejects(t *testing.T) {
	k1 := newTestKey(t, "k1")
	k1dup := newTestKey(t, "k1")

	noKid := newTestKey(t, "x")
	if err := noKid.jwk.Remove(jwk.KeyIDKey); err != nil {
		t.Fatal(err)
	}

	rsaPriv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withKid := func(raw any, kid string) jwk.Key {
		k, err := jwk.Import(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Set(jwk.KeyIDKey, kid); err != nil {
			t.Fatal(err)
		}
		return k
	}
	rsaKey := withKid(rsaPriv, "rsa")
	ecKey := withKid(ecPriv, "ec")
	octKey := withKid([]byte("0123456789abcdef0123456789abcdef"), "oct")
	pubOnly := withKid(k1.priv.Public(), "pub")

	// OKP but X25519.
	x25519 := map[string]any{"kty": "OKP", "crv": "X25519", "kid": "x",
		"x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo",
		"d": "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo"}

	// Ed25519 whose x does not belong to d.
	var mismatched map[string]any
	{
		b, _ := json.Marshal(k1.jwk)
		_ = json.Unmarshal(b, &mismatched)
		other, _ := json.Marshal(newTestKey(t, "o").jwk)
		var o map[string]any
		_ = json.Unmarshal(other, &o)
		mismatched["x"] = o["x"]
		mismatched["kid"] = "mismatch"
	}
	// Valid key with a disallowed alg / use.
	var wrongAlg, encUse, quoteKid, longKid map[string]any
	for _, m := range []*map[string]any{&wrongAlg, &encUse, &quoteKid, &longKid} {
		b, _ := json.Marshal(newTestKey(t, "z").jwk)
		_ = json.Unmarshal(b, m)
	}
	wrongAlg["alg"] = "ES256"
	encUse["use"] = "enc"
	quoteKid["kid"] = `a"b`
	longKid["kid"] = strings.Repeat("k", maxKIDLen+1)

	cases := []struct {
		name string
		json []byte
	}{
		{"NotJSON", []byte("not json")},
		{"Empty", nil},
		{"JSONNull", []byte("null")},
		{"JSONArray", []byte("[]")},
		{"NoKeysMember", []byte("{}")},
		{"EmptySet", []byte(`{"keys":[]}`)},
		{"BareJWK", mustJSON(t, k1.jwk)},
		{"KeyWithoutKid", setJSON(t, noKid)},
		{"EmptyKid", setJSON(t, map[string]any{"kty": "OKP", "crv": "Ed25519", "kid": "", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"})},
		{"RSAKey", setJSON(t, rsaKey)},
		{"ECP256Key", setJSON(t, ecKey)},
		{"SymmetricKey", setJSON(t, octKey)},
		{"X25519Key", setJSON(t, x25519)},
		{"PublicOnlyKey", setJSON(t, pubOnly)},
		{"PublicOnlyAfterPrivate", setJSON(t, k1, pubOnly)},
		{"DuplicateKid", setJSON(t, k1, k1dup)},
		{"SameKeyTwice", setJSON(t, k1, k1)},
		{"MismatchedXAndD", setJSON(t, mismatched)},
		{"WrongAlg", setJSON(t, wrongAlg)},
		{"EncryptionUse", setJSON(t, encUse)},
		{"QuoteInKid", setJSON(t, quoteKid)},
		{"LongKid", setJSON(t, longKid)},
		{"GoodThenRSA", setJSON(t, k1, rsaKey)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ring, err := ParseKeyRing(tc.json)
			if err == nil {
				t.Fatalf("ParseKeyRing accepted it: kids %v", ring.KeyIDs())
			}
			t.Logf("rejected: %v", err)
		})
	}

	t.Run("RFC8037Example", func(t *testing.T) {
		// RFC 8037 §A.1 private key, with a kid.
		ring, err := ParseKeyRing([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"rfc8037",
			"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
			"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if ring.SigningKeyID() != "rfc8037" {
			t.Fatalf("kid = %q", ring.SigningKeyID())
		}
	})
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConcurrentUse(t *testing.T) {
	iss := newTestIssuer(t, ringOf(t, newTestKey(t, "a"), newTestKey(t, "b")), &clock{now: t0})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				sub := fmt.Sprintf("u%d-%d", g, i)
				tok, _, err := iss.Issue(sub, "s", RoleMember)
				if err != nil {
					errs <- err
					return
				}
				c, err := iss.Verify(tok)
				if err != nil {
					errs <- err
					return
				}
				if c.Subject != sub {
					errs <- fmt.Errorf("subject %q, want %q", c.Subject, sub)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func FuzzVerify(f *testing.F) {
	k := newTestKey(f, "fuzz")
	iss := newTestIssuer(f, ringOf(f, k), &clock{now: t0})
	good, _, err := iss.Issue("user-1", "session-1", RoleMember)
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	f.Add(good)
	f.Add(signRaw(f, jwa.EdDSA(), k.priv, validHeader("fuzz"), with(validClaims(t0), "role", "device", "sub", "kiosk-1")))
	device, _, err := iss.IssueDevice("console-1", "session-1", DeviceClaims{BranchID: "b", Kind: "machine", MachineID: "m"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(device)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(encodeSegment(f, map[string]any{"alg": "none", "typ": HeaderType, "kid": "fuzz"}) + "." + parts[1] + ".")
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add(strings.Repeat("0", 64))
	f.Add("\x00\xff garbage {}")

	f.Fuzz(func(t *testing.T, s string) {
		c, err := iss.Verify(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("error does not wrap ErrInvalidToken: %v", err)
			}
			if c != (Claims{}) {
				t.Fatalf("claims returned with error: %+v", c)
			}
			return
		}
		if !c.Role.Valid() {
			t.Fatalf("accepted token with role %q", c.Role)
		}
		if c.Subject == "" || c.SessionID == "" || c.TokenID == "" {
			t.Fatalf("accepted token with empty sub/sid/jti: %+v", c)
		}
		if len(s) > MaxTokenBytes {
			t.Fatalf("accepted %d-byte token", len(s))
		}
		if (c.Role == RoleDevice) != (c.Device != nil) {
			t.Fatalf("accepted a %s token with device claims %+v", c.Role, c.Device)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	iss := newTestIssuer(b, ringOf(b, newTestKey(b, "new"), newTestKey(b, "old")), &clock{now: t0})
	tok, _, err := iss.Issue("user-1", "session-1", RoleMember)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyReject(b *testing.B) {
	// Cost of rejecting a well-formed token from an unknown key (no
	// signature check is attempted).
	iss := newTestIssuer(b, ringOf(b, newTestKey(b, "k1")), &clock{now: t0})
	tok := signRaw(b, jwa.EdDSA(), newTestKey(b, "k9").priv, validHeader("k9"), validClaims(t0))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Verify(tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	iss := newTestIssuer(b, ringOf(b, newTestKey(b, "new"), newTestKey(b, "old")), &clock{now: t0})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := iss.Issue("user-1", "session-1", RoleMember); err != nil {
			b.Fatal(err)
		}
	}
}
