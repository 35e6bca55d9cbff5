// Package logging builds the process logger: structured JSON lines on
// standard output, which log shippers parse without configuration.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

// New returns a JSON logger writing to w at level.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// RedisLogger routes go-redis's own messages (dial failures, pool
// warnings) into the structured log instead of bare lines on stderr.
type RedisLogger struct {
	Logger *slog.Logger
}

// Printf implements go-redis's logging interface.
func (l RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Logger.WarnContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}
