// Package requestid carries the id of the request being served through a
// context, so logs, error messages, audit rows and Sentry events of one
// request can be tied together.
package requestid

import (
	"context"

	"github.com/google/uuid"
)

// Header is the HTTP header that carries the id in and out.
const Header = "X-Request-Id"

type ctxKey struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// From returns the request id in ctx, or "" outside a request.
func From(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// New makes a fresh id: a UUIDv7, so ids sort by time in log searches.
func New() string {
	return uuid.Must(uuid.NewV7()).String()
}

// Valid reports whether an id sent by a client may be reused as ours: short
// and made of characters safe in logs and headers. Anything else is replaced
// so clients cannot inject into log lines.
func Valid(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
