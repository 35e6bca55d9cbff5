package server

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
)

// liftGeneralLimits raises the general per-IP and per-user limits for one
// benchmark. Every benchmark request comes from one user on 127.0.0.1, so
// the production limits (interceptor_ratelimit.go) would refuse it after a
// burst; raising them keeps their Redis round trips in the measured path.
// Benchmarks run after every test has finished, so nothing else sees the
// change.
func liftGeneralLimits(b *testing.B) {
	saved := defaultRateLimits
	lifted := ratelimit.Limit{Rate: 1_000_000, Period: 1e9}
	defaultRateLimits = RateLimits{PerIP: lifted, PerUser: lifted, PerDevice: lifted}
	b.Cleanup(func() { defaultRateLimits = saved })
}

// BenchmarkLogin measures a successful sign-in through the whole request
// path: the login limiter, one argon2id verification (19 MiB, t=2, which
// dominates), a Redis session, a signed access token and the audit row.
//
//	go test ./server -run '^$' -bench 'Login|AuthenticatedRPC' -benchmem
func BenchmarkLogin(b *testing.B) {
	liftGeneralLimits(b)
	h := setupAuthHarness(b)
	h.register(b, "bench@example.com")
	ctx := context.Background()
	req := &nxgv1.LoginRequest{Email: "bench@example.com", Password: authTestPassword, DeviceName: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.client.Login(ctx, connect.NewRequest(req)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticatedRPC measures the cheapest authenticated call,
// ListSessions: access-token verification (Ed25519), the live-session check
// in Redis (one HGET), the general limits and the session list itself.
func BenchmarkAuthenticatedRPC(b *testing.B) {
	liftGeneralLimits(b)
	h := setupAuthHarness(b)
	reg := h.register(b, "bench@example.com")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.client.ListSessions(ctx, authBearer(&nxgv1.ListSessionsRequest{}, reg.GetAccessToken())); err != nil {
			b.Fatal(err)
		}
	}
}
