package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/nxg-fitness/nxg/internal/logging"
)

func TestLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := logging.New(&buf, slog.LevelWarn)
	logger.Info("hidden")
	logging.RedisLogger{Logger: logger}.Printf(context.Background(), "dial %s failed", "127.0.0.1:1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q (%v)", buf.String(), err)
	}
	if line["msg"] != "dial 127.0.0.1:1 failed" || line["component"] != "redis" || line["level"] != "WARN" {
		t.Fatalf("line = %v", line)
	}
}
