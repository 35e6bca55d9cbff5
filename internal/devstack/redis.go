package devstack

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// localRedisAddr is where a developer's own Redis usually listens; using it
// keeps sessions across dev server restarts and lets redis-cli inspect them.
const localRedisAddr = "127.0.0.1:6379"

// redisProbeTimeout bounds the local-server probe so a dev start never waits
// noticeably when no Redis is installed.
const redisProbeTimeout = 300 * time.Millisecond

// Redis is the Redis the dev server uses: the developer's local server when
// one answers, else an in-process miniredis on a free loopback port.
type Redis struct {
	url  string
	mini *miniredis.Miniredis // nil when the local server is used
}

// StartRedis uses the local Redis if it answers PING on 127.0.0.1:6379 within
// about 300ms, else starts an in-process miniredis.
func StartRedis(ctx context.Context, logger *slog.Logger) (*Redis, error) {
	return startRedis(ctx, logger, localRedisAddr)
}

// startRedis is StartRedis with the probed address injectable, so tests can
// exercise both the local-server path and the fallback.
func startRedis(ctx context.Context, logger *slog.Logger, probeAddr string) (*Redis, error) {
	if logger == nil {
		logger = slog.Default()
	}
	err := probeRedis(ctx, probeAddr, redisProbeTimeout)
	if err == nil {
		logger.Info("using local Redis", "addr", probeAddr)
		return &Redis{url: "redis://" + probeAddr + "/0"}, nil
	}

	m := miniredis.NewMiniRedis()
	// miniredis is made for unit tests and by default never expires keys on
	// its own; a dev server needs session and rate-limit TTLs to run out
	// with the wall clock like a real Redis.
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("devstack: start miniredis: %w", err)
	}
	r := &Redis{url: "redis://" + m.Addr() + "/0", mini: m}
	logger.Info("started in-process Redis (miniredis); its data is lost on exit",
		"addr", m.Addr(), "local_redis", probeAddr, "local_redis_error", err.Error())
	return r, nil
}

// probeRedis reports nil when a Redis server at addr answers PING with PONG.
// A server that demands a password answers -NOAUTH, which counts as not
// usable: the dev stack has no credentials to give it.
func probeRedis(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("write PING: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	if reply := strings.TrimRight(line, "\r\n"); reply != "+PONG" {
		return fmt.Errorf("unexpected PING reply %q", reply)
	}
	return nil
}

// URL is a redis:// URL for go-redis's ParseURL.
func (r *Redis) URL() string { return r.url }

// Embedded reports whether this is the in-process miniredis rather than the
// developer's local server.
func (r *Redis) Embedded() bool { return r.mini != nil }

// Close stops the in-process server; the developer's local server is left
// running, since the dev stack did not start it.
func (r *Redis) Close() error {
	if r.mini != nil {
		r.mini.Close()
	}
	return nil
}
