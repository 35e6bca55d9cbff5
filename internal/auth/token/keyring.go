package token

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// maxKIDLen bounds the length of a key id. Key ids end up in every token
// header, so they are kept short and printable.
const maxKIDLen = 128

// signingKey is one Ed25519 key of a KeyRing.
type signingKey struct {
	kid  string
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// KeyRing holds Ed25519 signing keys by kid; the first key signs, all verify.
//
// A KeyRing is immutable after ParseKeyRing and safe for concurrent use.
type KeyRing struct {
	keys       []signingKey                 // keys[0] signs
	byKID      map[string]ed25519.PublicKey // every key verifies
	publicJWKS []byte                       // cached PublicJWKS output
}

// ParseKeyRing reads a JWK Set JSON ({"keys":[...]}) of private OKP Ed25519
// keys, each with a unique, non-empty "kid". If a key carries "alg" it must be
// "EdDSA" (or the fully-specified "Ed25519"); if it carries "use" it must be
// "sig".
//
// The key listed FIRST signs new tokens; every key in the set verifies.
//
// Rotation, without logging anyone out:
//  1. generate a new key (nxg-dev) and PREPEND it to the set, keeping the old
//     key after it; deploy. New tokens are signed by the new key, tokens
//     signed by the old key still verify.
//  2. wait until every token signed by the old key has expired, i.e. at least
//     the access-token lifetime (15 min) plus the clock skew after the
//     deployment finished everywhere;
//  3. remove the old key from the set; deploy.
//
// During step 1, clients and other services that cache
// /.well-known/jwks.json see both keys.
func ParseKeyRing(jwksJSON []byte) (*KeyRing, error) {
	// Require the JWK Set shape: jwk.Parse would also accept a single bare
	// JWK, which is not what the configuration format promises.
	var shape struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(jwksJSON, &shape); err != nil {
		return nil, fmt.Errorf("token: key ring is not a JWK Set JSON object: %w", err)
	}
	if shape.Keys == nil {
		return nil, errors.New(`token: key ring has no "keys" member`)
	}
	if len(shape.Keys) == 0 {
		return nil, errors.New("token: key ring is empty")
	}

	set, err := jwk.Parse(jwksJSON)
	if err != nil {
		return nil, fmt.Errorf("token: parse key ring: %w", err)
	}
	if set.Len() != len(shape.Keys) {
		return nil, fmt.Errorf("token: key ring: parsed %d of %d keys", set.Len(), len(shape.Keys))
	}

	ring := &KeyRing{byKID: make(map[string]ed25519.PublicKey, set.Len())}
	for idx := range set.Len() {
		key, _ := set.Key(idx)
		sk, err := signingKeyFromJWK(key)
		if err != nil {
			return nil, fmt.Errorf("token: key ring key #%d: %w", idx, err)
		}
		if _, dup := ring.byKID[sk.kid]; dup {
			return nil, fmt.Errorf("token: key ring: duplicate kid %q", sk.kid)
		}
		ring.byKID[sk.kid] = sk.pub
		ring.keys = append(ring.keys, sk)
	}

	ring.publicJWKS, err = buildPublicJWKS(ring.keys)
	if err != nil {
		return nil, err
	}
	return ring, nil
}

func signingKeyFromJWK(key jwk.Key) (signingKey, error) {
	kid, ok := key.KeyID()
	if !ok || kid == "" {
		return signingKey{}, errors.New(`missing "kid"`)
	}
	if err := checkKID(kid); err != nil {
		return signingKey{}, err
	}
	if kty := key.KeyType(); kty != jwa.OKP() {
		return signingKey{}, fmt.Errorf("kid %q: key type %q is not OKP (Ed25519 required)", kid, kty.String())
	}
	okp, ok := key.(jwk.OKPPrivateKey)
	if !ok {
		return signingKey{}, fmt.Errorf(`kid %q: not a private key (no "d")`, kid)
	}
	if crv, ok := okp.Crv(); !ok || crv != jwa.Ed25519() {
		return signingKey{}, fmt.Errorf("kid %q: curve %q is not Ed25519", kid, crv.String())
	}
	if alg, ok := key.Algorithm(); ok {
		switch alg.String() {
		case jwa.EdDSA().String(), jwa.EdDSAEd25519().String():
		default:
			return signingKey{}, fmt.Errorf("kid %q: alg %q is not EdDSA", kid, alg.String())
		}
	}
	if use, ok := key.KeyUsage(); ok && use != "" && use != jwk.ForSignature.String() {
		return signingKey{}, fmt.Errorf("kid %q: use %q is not %q", kid, use, jwk.ForSignature.String())
	}

	// Export rebuilds the key from the seed "d" and checks that "x" matches.
	var priv ed25519.PrivateKey
	if err := jwk.Export(key, &priv); err != nil {
		return signingKey{}, fmt.Errorf("kid %q: %w", kid, err)
	}
	if len(priv) != ed25519.PrivateKeySize {
		return signingKey{}, fmt.Errorf("kid %q: bad Ed25519 private key size %d", kid, len(priv))
	}
	pub, ok := priv.Public().(ed25519.PublicKey)
	if !ok {
		return signingKey{}, fmt.Errorf("kid %q: cannot derive public key", kid)
	}
	return signingKey{kid: kid, priv: priv, pub: pub}, nil
}

// checkKID keeps key ids short and printable ASCII (no quotes/backslashes),
// so they are safe in headers, logs and JSON.
func checkKID(kid string) error {
	if len(kid) > maxKIDLen {
		return fmt.Errorf("kid longer than %d bytes", maxKIDLen)
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("kid %q must be printable ASCII without spaces, quotes or backslashes", kid)
		}
	}
	return nil
}

// buildPublicJWKS builds the public JWK Set from the raw public keys only, so
// nothing from the private configuration (d, custom members) can leak.
func buildPublicJWKS(keys []signingKey) ([]byte, error) {
	set := jwk.NewSet()
	for _, sk := range keys {
		pk, err := jwk.Import(sk.pub)
		if err != nil {
			return nil, fmt.Errorf("token: public key %q: %w", sk.kid, err)
		}
		if err := setKeyMeta(pk, sk.kid); err != nil {
			return nil, err
		}
		if err := set.AddKey(pk); err != nil {
			return nil, fmt.Errorf("token: public key %q: %w", sk.kid, err)
		}
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("token: marshal public JWKS: %w", err)
	}
	return out, nil
}

func setKeyMeta(k jwk.Key, kid string) error {
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		return fmt.Errorf("token: set kid: %w", err)
	}
	if err := k.Set(jwk.AlgorithmKey, jwa.EdDSA()); err != nil {
		return fmt.Errorf("token: set alg: %w", err)
	}
	if err := k.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
		return fmt.Errorf("token: set use: %w", err)
	}
	return nil
}

// GenerateKeyRingJSON makes a JWK Set with one fresh Ed25519 private key
// (kid = RFC 7638 SHA-256 thumbprint, base64url; alg EdDSA; use sig), for
// nxg-dev to persist. To rotate, prepend its key to an existing set (see
// ParseKeyRing).
func GenerateKeyRingJSON() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("token: generate Ed25519 key: %w", err)
	}
	key, err := jwk.Import(priv)
	if err != nil {
		return nil, fmt.Errorf("token: import Ed25519 key: %w", err)
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("token: thumbprint: %w", err)
	}
	if err := setKeyMeta(key, base64.RawURLEncoding.EncodeToString(tp)); err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(key); err != nil {
		return nil, fmt.Errorf("token: add key: %w", err)
	}
	out, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("token: marshal key ring: %w", err)
	}
	return out, nil
}

// PublicJWKS returns the public keys as a JWK Set JSON for
// GET /.well-known/jwks.json: kty, crv, x, kid, alg, use — never "d".
func (k *KeyRing) PublicJWKS() ([]byte, error) {
	if k == nil || len(k.keys) == 0 {
		return nil, errors.New("token: empty key ring")
	}
	return append([]byte(nil), k.publicJWKS...), nil
}

// SigningKeyID returns the kid of the key that signs new tokens.
func (k *KeyRing) SigningKeyID() string {
	if k == nil || len(k.keys) == 0 {
		return ""
	}
	return k.keys[0].kid
}

// KeyIDs returns the kids of all keys in the ring, signing key first.
func (k *KeyRing) KeyIDs() []string {
	if k == nil {
		return nil
	}
	ids := make([]string, len(k.keys))
	for i, sk := range k.keys {
		ids[i] = sk.kid
	}
	return ids
}
