package devstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// quietLogger keeps these tests' output to failures; the package's other
// tests show the stand-ins' logs.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %q: %v", url, err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestStartRedisUsesLocalServer(t *testing.T) {
	ctx := context.Background()
	// An independent server plays the developer's local Redis at an address
	// of the test's choosing.
	local := miniredis.RunT(t)

	r, err := startRedis(ctx, quietLogger(), local.Addr())
	if err != nil {
		t.Fatalf("startRedis: %v", err)
	}
	if r.Embedded() {
		t.Fatal("Embedded() = true, want the local server to be used")
	}
	if want := "redis://" + local.Addr() + "/0"; r.URL() != want {
		t.Fatalf("URL() = %q, want %q", r.URL(), want)
	}

	c := redisClient(t, r.URL())
	if err := c.Set(ctx, "nxg:probe", "local", 0).Err(); err != nil {
		t.Fatalf("SET through URL(): %v", err)
	}
	if got, err := local.Get("nxg:probe"); err != nil || got != "local" {
		t.Fatalf("local server has nxg:probe = %q, %v; want the value written through URL()", got, err)
	}

	// Close must leave a server it did not start alone.
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("local server stopped answering after Close: %v", err)
	}
}

func TestStartRedisFallsBackToMiniredis(t *testing.T) {
	ctx := context.Background()

	closedPort := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return addr
	}
	// silentServer accepts connections and never answers, like a port held
	// by something that is not Redis.
	silentServer := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				// Read and drop until the prober hangs up.
				go func() {
					_, _ = io.Copy(io.Discard, conn)
					_ = conn.Close()
				}()
			}
		}()
		return ln.Addr().String()
	}
	passwordServer := func(t *testing.T) string {
		m := miniredis.RunT(t)
		m.RequireAuth("secret")
		return m.Addr()
	}

	for _, tc := range []struct {
		name      string
		probeAddr func(t *testing.T) string
		wantErr   string
	}{
		{"NothingListening", closedPort, "connection refused"},
		{"SilentServer", silentServer, "timeout"},
		{"PasswordProtected", passwordServer, "NOAUTH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.probeAddr(t)
			if err := probeRedis(ctx, addr, redisProbeTimeout); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("probeRedis(%s) = %v, want an error containing %q", addr, err, tc.wantErr)
			}

			start := time.Now()
			r, err := startRedis(ctx, quietLogger(), addr)
			if err != nil {
				t.Fatalf("startRedis: %v", err)
			}
			t.Cleanup(func() { _ = r.Close() })
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("fallback took %s; the probe should give up after about %s", elapsed, redisProbeTimeout)
			}
			if !r.Embedded() {
				t.Fatal("Embedded() = false, want the in-process fallback")
			}
			if !strings.HasPrefix(r.URL(), "redis://127.0.0.1:") || strings.Contains(r.URL(), addr) {
				t.Fatalf("URL() = %q, want a fresh loopback port other than %s", r.URL(), addr)
			}

			c := redisClient(t, r.URL())
			if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
				t.Fatalf("GET k = %q, %v; want v", got, err)
			}
		})
	}
}

// TestEmbeddedRedisExpiresKeys checks the fallback behaves like a real server
// for TTLs: miniredis only expires keys by the wall clock when told to, and
// sessions and rate limits rely on it.
func TestEmbeddedRedisExpiresKeys(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()

	r, err := startRedis(ctx, quietLogger(), addr)
	if err != nil {
		t.Fatalf("startRedis: %v", err)
	}
	c := redisClient(t, r.URL())
	if err := c.Set(ctx, "session", "alive", 150*time.Millisecond).Err(); err != nil {
		t.Fatalf("SET with TTL: %v", err)
	}
	if err := c.Set(ctx, "forever", "x", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	if err := c.Get(ctx, "session").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET session after its TTL = %v, want redis.Nil", err)
	}
	if got := c.Get(ctx, "forever").Val(); got != "x" {
		t.Fatalf("GET forever = %q, want x", got)
	}

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", strings.TrimSuffix(strings.TrimPrefix(r.URL(), "redis://"), "/0"), time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the in-process server still accepts connections after Close")
	}
}

// TestStartRedisDefault runs the real probe of 127.0.0.1:6379: whichever
// path it takes must match what a direct probe sees and give a working URL.
func TestStartRedisDefault(t *testing.T) {
	ctx := context.Background()
	localUp := probeRedis(ctx, localRedisAddr, time.Second) == nil

	r, err := StartRedis(ctx, quietLogger())
	if err != nil {
		t.Fatalf("StartRedis: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if r.Embedded() == localUp {
		t.Fatalf("Embedded() = %v while a Redis on %s answers = %v", r.Embedded(), localRedisAddr, localUp)
	}
	if localUp && r.URL() != "redis://"+localRedisAddr+"/0" {
		t.Fatalf("URL() = %q, want the local server", r.URL())
	}
	if err := redisClient(t, r.URL()).Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s: %v", r.URL(), err)
	}
}
