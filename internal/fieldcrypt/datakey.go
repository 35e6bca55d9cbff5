package fieldcrypt

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"log/slog"
)

// DataKey encrypts one user's fields. It is bound to the user it was made
// or unwrapped for, so every ciphertext it makes or opens is bound to that
// user. It is safe for concurrent use.
type DataKey struct {
	userID string
	// aead is keyed with the data key; the raw key is not kept as a slice.
	aead cipher.AEAD
}

// minFieldLen is the size of a sealed empty value.
const minFieldLen = 1 + nonceSize + tagSize

func newDataKey(userID string, raw []byte) (*DataKey, error) {
	aead, err := newAEAD(raw)
	if err != nil {
		return nil, err
	}
	return &DataKey{userID: userID, aead: aead}, nil
}

// UserID returns the user this key belongs to.
func (k *DataKey) UserID() string { return k.userID }

func (k *DataKey) check(column string) error {
	if k == nil || k.aead == nil {
		return errors.New("fieldcrypt: nil DataKey; get one from MasterKeys.NewDataKey or Unwrap")
	}
	if column == "" {
		return errors.New("fieldcrypt: empty column name")
	}
	return nil
}

func (k *DataKey) aad(column string) []byte {
	return []byte(fieldAADPrefix + k.userID + "/" + column)
}

// Seal encrypts plaintext for this key's user and column
// (AAD = "nxg-field/v1/" + userID + "/" + column). The output is
// version byte || 12-byte random nonce || ciphertext || 16-byte tag, so
// sealing the same plaintext twice gives different bytes.
func (k *DataKey) Seal(column string, plaintext []byte) ([]byte, error) {
	if err := k.check(column); err != nil {
		return nil, err
	}
	out := make([]byte, 1, minFieldLen+len(plaintext))
	out[0] = formatVersion
	return k.aead.Seal(out, nil, plaintext, k.aad(column)), nil
}

// Open decrypts a value sealed by Seal for the same user and column. Any
// other input, including a value of another user or column, is ErrDecrypt.
// An empty plaintext comes back as a non-nil empty slice.
func (k *DataKey) Open(column string, ciphertext []byte) ([]byte, error) {
	if err := k.check(column); err != nil {
		return nil, err
	}
	if len(ciphertext) < minFieldLen {
		return nil, fmt.Errorf("%w: value is %d bytes, too short", ErrDecrypt, len(ciphertext))
	}
	if ciphertext[0] != formatVersion {
		return nil, fmt.Errorf("%w: value has unknown format version %d", ErrDecrypt, ciphertext[0])
	}
	plaintext, err := k.aead.Open(nil, nil, ciphertext[1:], k.aad(column))
	if err != nil {
		return nil, ErrDecrypt
	}
	if plaintext == nil {
		plaintext = []byte{}
	}
	return plaintext, nil
}

// SealString is Seal for nullable text columns: "" seals to nil, which the
// database stores as NULL, so an absent value stays absent (and costs no
// ciphertext).
func (k *DataKey) SealString(column, s string) ([]byte, error) {
	if err := k.check(column); err != nil {
		return nil, err
	}
	if s == "" {
		return nil, nil
	}
	return k.Seal(column, []byte(s))
}

// OpenString is Open for nullable text columns: nil (NULL), or an empty
// bytea, opens to "".
func (k *DataKey) OpenString(column string, b []byte) (string, error) {
	if err := k.check(column); err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", nil
	}
	p, err := k.Open(column, b)
	if err != nil {
		return "", err
	}
	return string(p), nil
}

// The printing methods have value receivers so a copied DataKey is redacted
// too; a nil *DataKey prints as <nil> through fmt.

// String names the user only.
func (k DataKey) String() string {
	return fmt.Sprintf("fieldcrypt.DataKey(user=%s, key=%s)", k.userID, redacted)
}

// GoString is like String: key material is never printed, not even by %#v.
func (k DataKey) GoString() string {
	return fmt.Sprintf("fieldcrypt.DataKey{userID:%q, key:%s}", k.userID, redacted)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %x, %d, ...) print the
// redacted form; without it %d or %x would walk the struct by reflection.
func (k DataKey) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, k.String())
}

// LogValue logs the user id, never the key.
func (k DataKey) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user_id", k.userID),
		slog.String("key", redacted),
	)
}
