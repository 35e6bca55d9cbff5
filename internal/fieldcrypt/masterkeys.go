package fieldcrypt

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode"
)

// maxIDLen is the longest master key id; it also fits the one-byte length
// in the wrapped key header.
const maxIDLen = 16

// MasterKeys is the ring of key-encryption keys. The first is primary (wraps
// new data keys); all unwrap. It is safe for concurrent use and immutable
// after ParseMasterKeys.
type MasterKeys struct {
	// keys[0] is the primary. A ring holds a handful of keys at most, so
	// lookups scan the slice.
	keys []masterKey
}

type masterKey struct {
	id string
	// aead is keyed with the HKDF-derived key-encryption key; neither the
	// master secret nor the derived key is kept as a slice.
	aead cipher.AEAD
}

// ParseMasterKeys parses "id1:base64key1,id2:base64key2": each key exactly
// 32 bytes after standard base64 decoding, ids 1–16 characters of
// [a-z0-9-], the first listed is primary. Entries may also be separated by
// whitespace or newlines, so a keyset file can list one per line.
// Errors name the entry and what is wrong without printing key material.
func ParseMasterKeys(spec string) (*MasterKeys, error) {
	entries := strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(entries) == 0 {
		return nil, errors.New(`fieldcrypt: master keys: none given; want "id:base64key[,id:base64key...]" (generate one with GenerateMasterKeySpec)`)
	}
	m := &MasterKeys{keys: make([]masterKey, 0, len(entries))}
	for i, entry := range entries {
		n := i + 1
		id, encoded, ok := strings.Cut(entry, ":")
		if !ok {
			// The entry is probably a bare key: do not echo it.
			return nil, fmt.Errorf(`fieldcrypt: master keys: entry %d has no ":"; want "id:base64key"`, n)
		}
		if err := checkID(id); err != nil {
			// A bad id may be a key pasted in the wrong place: do not echo it.
			return nil, fmt.Errorf("fieldcrypt: master keys: entry %d: %w", n, err)
		}
		if m.find(id) != nil {
			return nil, fmt.Errorf("fieldcrypt: master keys: entry %d: id %q is listed twice", n, id)
		}
		aead, err := parseKey(encoded)
		if err != nil {
			return nil, fmt.Errorf("fieldcrypt: master keys: entry %d (id %q): %w", n, id, err)
		}
		m.keys = append(m.keys, masterKey{id: id, aead: aead})
	}
	return m, nil
}

// checkID reports whether id is a valid master key id. Its error never
// contains id itself.
func checkID(id string) error {
	if id == "" {
		return errors.New("id is empty; want 1–16 characters of a-z, 0-9 and '-'")
	}
	if len(id) > maxIDLen {
		return fmt.Errorf("id is %d characters; want 1–16 characters of a-z, 0-9 and '-'", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("id has a character other than a-z, 0-9 and '-' at position %d", i+1)
		}
	}
	return nil
}

// parseKey decodes one base64 master key and returns the AEAD keyed with
// its derived key-encryption key. Its errors never contain the key.
func parseKey(encoded string) (cipher.AEAD, error) {
	if encoded == "" {
		return nil, errors.New("key is empty; want 32 bytes in standard base64")
	}
	secret, err := base64.StdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		// base64.CorruptInputError holds only an offset, but say it in our
		// own words so no decoder message can ever carry input.
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("key is not valid standard base64 (bad data at character %d)", int64(ce)+1)
		}
		return nil, errors.New("key is not valid standard base64")
	}
	defer clear(secret)
	if len(secret) != keySize {
		return nil, fmt.Errorf("key is %d bytes after base64 decoding; want %d", len(secret), keySize)
	}
	kek, err := hkdf.Key(sha256.New, secret, nil, kekInfo, keySize)
	if err != nil {
		return nil, fmt.Errorf("derive key-encryption key: %w", err)
	}
	defer clear(kek)
	return newAEAD(kek)
}

// GenerateMasterKeySpec returns a fresh "id:base64key" spec with 32 random
// bytes, suitable for NXG_MASTER_KEY (nxg-dev persists one). To rotate,
// prepend a new spec to the existing ones: "new:...,old:...".
func GenerateMasterKeySpec(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", fmt.Errorf("fieldcrypt: generate master key: %w", err)
	}
	secret := make([]byte, keySize)
	rand.Read(secret) // never fails; crashes the program if the OS has no randomness
	defer clear(secret)
	return id + ":" + base64.StdEncoding.EncodeToString(secret), nil
}

// PrimaryID returns the id of the primary master key, the one that wraps
// new data keys ("" for an empty ring).
func (m *MasterKeys) PrimaryID() string {
	if m == nil || len(m.keys) == 0 {
		return ""
	}
	return m.keys[0].id
}

// IDs returns the ids in the ring, primary first.
func (m *MasterKeys) IDs() []string {
	if m == nil {
		return nil
	}
	ids := make([]string, len(m.keys))
	for i, k := range m.keys {
		ids[i] = k.id
	}
	return ids
}

func (m *MasterKeys) find(id string) *masterKey {
	for i := range m.keys {
		if m.keys[i].id == id {
			return &m.keys[i]
		}
	}
	return nil
}

func (m *MasterKeys) check() error {
	if m == nil || len(m.keys) == 0 {
		return errors.New("fieldcrypt: empty master key ring; build it with ParseMasterKeys")
	}
	return nil
}

func checkUserID(userID string) error {
	if userID == "" {
		return errors.New("fieldcrypt: empty user id")
	}
	return nil
}

// NewDataKey makes a fresh 32-byte data key for userID and returns it both
// ready to use and wrapped under the primary master key
// (AAD = "nxg-dek/v1/" + userID). Store wrapped (never log it); keep dek
// only as long as the request needs it.
func (m *MasterKeys) NewDataKey(userID string) (dek *DataKey, wrapped []byte, err error) {
	if err := m.check(); err != nil {
		return nil, nil, err
	}
	if err := checkUserID(userID); err != nil {
		return nil, nil, err
	}
	raw := make([]byte, keySize)
	rand.Read(raw) // never fails; crashes the program if the OS has no randomness
	defer clear(raw)
	dek, err = newDataKey(userID, raw)
	if err != nil {
		return nil, nil, err
	}
	return dek, m.wrap(userID, raw), nil
}

// Unwrap opens a data key that was wrapped for userID. It returns an error
// wrapping ErrKeyNotFound when the key was wrapped under a master key that
// is not in the ring, and one wrapping ErrDecrypt when wrapped is malformed,
// tampered with, or belongs to another user.
func (m *MasterKeys) Unwrap(userID string, wrapped []byte) (*DataKey, error) {
	raw, _, err := m.unwrap(userID, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	return newDataKey(userID, raw)
}

// Rewrap re-wraps a data key under the current primary master key, for the
// rotation job. It returns the input unchanged and false when the key is
// already under the primary; either way the key is first checked to open
// for userID, so a corrupt or misplaced key is reported, not carried along.
func (m *MasterKeys) Rewrap(userID string, wrapped []byte) ([]byte, bool, error) {
	raw, id, err := m.unwrap(userID, wrapped)
	if err != nil {
		return nil, false, err
	}
	defer clear(raw)
	if id == m.PrimaryID() {
		return wrapped, false, nil
	}
	return m.wrap(userID, raw), true, nil
}

// wrap seals raw under the primary master key. The ring must be non-empty
// and userID non-empty.
func (m *MasterKeys) wrap(userID string, raw []byte) []byte {
	primary := m.keys[0]
	out := make([]byte, 0, 2+len(primary.id)+nonceSize+keySize+tagSize)
	out = append(out, formatVersion, byte(len(primary.id)))
	out = append(out, primary.id...)
	return primary.aead.Seal(out, nil, raw, []byte(dekAADPrefix+userID))
}

// unwrap returns the raw data key in wrapped and the id of the master key
// it was wrapped under. The caller must clear the returned key.
func (m *MasterKeys) unwrap(userID string, wrapped []byte) (raw []byte, id string, err error) {
	if err := m.check(); err != nil {
		return nil, "", err
	}
	if err := checkUserID(userID); err != nil {
		return nil, "", err
	}
	id, sealed, err := parseWrapped(wrapped)
	if err != nil {
		return nil, "", err
	}
	k := m.find(id)
	if k == nil {
		return nil, "", fmt.Errorf("%w: data key is wrapped under master key %q; add it back to the ring until Rewrap has moved every data key to the primary", ErrKeyNotFound, id)
	}
	raw, err = k.aead.Open(nil, nil, sealed, []byte(dekAADPrefix+userID))
	if err != nil {
		return nil, "", ErrDecrypt
	}
	if len(raw) != keySize { // impossible: parseWrapped checked the length
		clear(raw)
		return nil, "", ErrDecrypt
	}
	return raw, id, nil
}

// parseWrapped splits a wrapped key into master key id and sealed bytes
// (nonce || sealed key || tag). Malformed input is ErrDecrypt; the id is
// checked to be well-formed, so errors that name it print only safe text.
func parseWrapped(wrapped []byte) (id string, sealed []byte, err error) {
	if len(wrapped) < 2 {
		return "", nil, fmt.Errorf("%w: wrapped key is %d bytes, too short", ErrDecrypt, len(wrapped))
	}
	if wrapped[0] != formatVersion {
		return "", nil, fmt.Errorf("%w: wrapped key has unknown format version %d", ErrDecrypt, wrapped[0])
	}
	idLen := int(wrapped[1])
	if want := 2 + idLen + nonceSize + keySize + tagSize; len(wrapped) != want {
		return "", nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrDecrypt, len(wrapped), want)
	}
	id = string(wrapped[2 : 2+idLen])
	if checkID(id) != nil {
		return "", nil, fmt.Errorf("%w: wrapped key has a malformed master key id", ErrDecrypt)
	}
	return id, wrapped[2+idLen:], nil
}

// String describes the ring by its ids only.
func (m MasterKeys) String() string {
	return fmt.Sprintf("fieldcrypt.MasterKeys(primary=%s, ids=%v, keys=%s)", m.PrimaryID(), m.IDs(), redacted)
}

// GoString is like String: key material is never printed, not even by %#v.
func (m MasterKeys) GoString() string {
	return fmt.Sprintf("fieldcrypt.MasterKeys{primary:%q, ids:%#v, keys:%s}", m.PrimaryID(), m.IDs(), redacted)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %x, %d, ...) print the
// redacted form; without it %d or %x would walk the struct by reflection.
func (m MasterKeys) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, m.GoString())
		return
	}
	io.WriteString(f, m.String())
}

// LogValue logs the ids and primary, never the keys.
func (m MasterKeys) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("primary", m.PrimaryID()),
		slog.Any("ids", m.IDs()),
		slog.String("keys", redacted),
	)
}
