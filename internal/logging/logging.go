// Package logging builds the process logger: structured JSON lines on
// standard output, which log shippers parse without configuration.
package logging

import (
	"io"
	"log/slog"
)

// New returns a JSON logger writing to w at level.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
