// Package fieldcrypt encrypts personal data at rest with envelope encryption
// and per-user data keys, so that erasing a user is destroying one key
// (crypto-shredding).
//
// Two layers:
//
//   - MasterKeys is the ring of key-encryption keys from config
//     (NXG_MASTER_KEY or a keyset file). The first key is primary and wraps
//     new data keys; every key in the ring can unwrap. Rotation is: put the
//     new key first, keep the old one after it, run Rewrap over all stored
//     wrapped keys, then drop the old key from the ring.
//   - DataKey is one user's random 256-bit key. It is stored only wrapped
//     (a bytea beside the user row) and encrypts that user's sensitive
//     columns. Deleting the wrapped key makes every ciphertext of that user
//     unreadable, including copies in backups and replicas.
//
// Both layers use AES-256-GCM from the standard library with random 96-bit
// nonces (cipher.NewGCMWithRandomNonce); only the envelope format is ours.
// Random nonces limit each key to 2^32 encryptions: a master key wraps one
// data key per user and per rotation, and a data key encrypts one user's
// profile writes, both far below that.
//
// The associated data binds every ciphertext to where it belongs, so a
// database writer cannot move ciphertext between users or columns:
//
//	wrapped data key: AAD = "nxg-dek/v1/" + userID
//	field value:      AAD = "nxg-field/v1/" + userID + "/" + column
//
// Formats (all integers are single bytes):
//
//	wrapped data key: version(1) || len(id) || id || nonce(12) || sealed key(32) || tag(16)
//	field value:      version(1) || nonce(12) || ciphertext || tag(16)
//
// The master key itself is never used as an AES key: the key-encryption key
// is derived from it with HKDF-SHA-256 (info "nxg-fieldcrypt/v1/kek"), so
// the same secret can later feed other derived keys (for example a blind
// index for phone lookups) without key reuse across purposes.
//
// Key material never appears in errors, fmt output or slog output: DataKey
// and MasterKeys implement fmt.Formatter, fmt.Stringer, fmt.GoStringer and
// slog.LogValuer with redacted values, and hold only cipher.AEAD values (no
// raw key slices) so even reflection-based printers find only pointers.
package fieldcrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
)

// ErrDecrypt means a ciphertext or wrapped key cannot be opened: it was
// tampered with, truncated, belongs to another user or column, or its key
// was destroyed. The cause is deliberately not distinguished further.
var ErrDecrypt = errors.New("fieldcrypt: cannot decrypt")

// ErrKeyNotFound means a wrapped data key names a master key id that is not
// in the ring: typically an old master key was removed before Rewrap had
// moved every data key to the primary. Errors wrapping it name the id.
var ErrKeyNotFound = errors.New("fieldcrypt: master key not in the key ring")

const (
	// formatVersion is the first byte of every wrapped key and field value.
	formatVersion byte = 1

	// keySize is the size of master keys and data keys: AES-256.
	keySize = 32

	// nonceSize and tagSize are those of AES-GCM as NewGCMWithRandomNonce
	// uses it; the nonce is prepended to the sealed bytes.
	nonceSize = 12
	tagSize   = 16

	// redacted stands in for key material in every printed form.
	redacted = "REDACTED"

	dekAADPrefix   = "nxg-dek/v1/"
	fieldAADPrefix = "nxg-field/v1/"
	kekInfo        = "nxg-fieldcrypt/v1/kek"
)

// newAEAD returns AES-256-GCM with random nonces for key. It does not keep
// key: the AES key schedule is computed from a copy, so callers may clear it.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != keySize {
		return nil, errors.New("fieldcrypt: internal error: key is not 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}
