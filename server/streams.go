package server

import (
	"context"
	"log/slog"

	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
)

// streamGuard admits live streams and ends them when they must stop.
// SCAFFOLD: replaced by the real guard (per-principal caps, revocation, drain).
type streamGuard struct {
	draining context.Context
}

func newStreamGuard(hub *realtime.Hub, settings floor.Settings, draining context.Context, logger *slog.Logger) *streamGuard {
	return &streamGuard{draining: draining}
}

// admit registers a stream of p. It fails with resource_exhausted when p
// already holds its cap of streams on this process. The returned context is
// cancelled when ctx ends, the server drains, or p's session (or device) is
// revoked. release must be called when the stream ends.
func (g *streamGuard) admit(ctx context.Context, p auth.Principal) (context.Context, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.draining, cancel)
	return ctx, func() { stop(); cancel() }, nil
}

// streamEnd turns the end of a guarded stream's context into the error the
// handler returns: nil when the client went away, unavailable when the
// server is draining, unauthenticated when the session or device was revoked.
func streamEnd(ctx context.Context) error {
	return nil
}
