package integrations

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"
)

// maxIdempotencyKeyLen is the longest key the services accept
// (docs/integrations.md).
const maxIdempotencyKeyLen = 128

// NewIdempotencyKey returns a fresh random key, for a logical call that
// nothing else identifies. Prefer a key derived from the work (a request's
// id) when the call may be repeated by a later job attempt.
func NewIdempotencyKey() string { return uuid.NewString() }

// checkIdempotencyKey enforces the services' rule (1–128 printable ASCII)
// a little more strictly, without spaces, because a header value's edges
// are trimmed in transit and the key must arrive exactly as sent.
func checkIdempotencyKey(method, key string) error {
	if key == "" {
		if method == http.MethodPost {
			return errors.New("required for POST")
		}
		return nil
	}
	if len(key) > maxIdempotencyKeyLen {
		return fmt.Errorf("longer than %d characters", maxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] <= ' ' || key[i] > '~' {
			return fmt.Errorf("character %d is not printable ASCII", i)
		}
	}
	return nil
}
