package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type loginFixture struct {
	r     *testkit.Redis
	l     *LoginLimiter
	clock *clock
}

func newLoginFixture(t testing.TB, cfg LoginConfig) *loginFixture {
	t.Helper()
	r := testkit.NewRedis(t)
	c := newClock()
	cfg.Now = c.Now
	return &loginFixture{r: r, l: NewLoginLimiter(r.Client, r.Prefix, cfg), clock: c}
}

func (f *loginFixture) fail(t testing.TB, email, ip string) {
	t.Helper()
	if err := f.l.Fail(context.Background(), email, ip); err != nil {
		t.Fatalf("Fail(%q, %q): %v", email, ip, err)
	}
}

func (f *loginFixture) keys(t testing.TB) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	iter := f.r.Client.Scan(ctx, 0, f.r.Prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustAllow(t testing.TB, l *LoginLimiter, email, ip string) {
	t.Helper()
	if err := l.Allow(context.Background(), email, ip); err != nil {
		t.Fatalf("Allow(%q, %q) = %v, want allowed", email, ip, err)
	}
}

// mustRefuse checks a login refusal and returns its RetryAfter.
func mustRefuse(t testing.TB, l *LoginLimiter, email, ip string) time.Duration {
	t.Helper()
	err := l.Allow(context.Background(), email, ip)
	e, ok := apperr.As(err)
	if !ok || e.Code != apperr.CodeResourceExhausted {
		t.Fatalf("Allow(%q, %q) = %v, want ResourceExhausted", email, ip, err)
	}
	if e.Message != LoginRefusedMessage || e.Field != "" {
		t.Fatalf("refusal message %q (field %q), want %q", e.Message, e.Field, LoginRefusedMessage)
	}
	if e.RetryAfter <= 0 {
		t.Fatalf("RetryAfter = %v, want > 0", e.RetryAfter)
	}
	return e.RetryAfter
}

func TestLoginLimiter(t *testing.T) {
	t.Parallel()

	t.Run("SixthFailureRefused", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		for i := range 5 {
			mustAllow(t, f.l, "ana@example.com", "192.0.2.1")
			f.fail(t, "ana@example.com", "192.0.2.1")
			f.clock.Advance(time.Duration(i+1) * time.Second)
		}
		// Even from another IP, and even if the password would be right:
		// Allow is asked before the password is checked.
		mustRefuse(t, f.l, "ana@example.com", "198.51.100.9")
	})

	t.Run("SuccessDoesNotClear", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		for range 3 {
			f.fail(t, "bo@example.com", "192.0.2.1")
		}
		// A successful sign-in: Allow passes, nothing is recorded.
		mustAllow(t, f.l, "bo@example.com", "192.0.2.1")
		for range 2 {
			f.fail(t, "bo@example.com", "192.0.2.1")
		}
		mustRefuse(t, f.l, "bo@example.com", "192.0.2.1")
	})

	t.Run("RetryAfterExactAndWindowSlides", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		start := f.clock.Now()
		offsets := []time.Duration{0, 2 * time.Minute, 3 * time.Minute, 7*time.Minute + 250*time.Millisecond, 9 * time.Minute}
		for _, off := range offsets {
			f.clock.Set(start.Add(off))
			f.fail(t, "cy@example.com", "192.0.2.1")
		}
		f.clock.Set(start.Add(10 * time.Minute))
		if got, want := mustRefuse(t, f.l, "cy@example.com", "192.0.2.1"), 5*time.Minute; got != want {
			t.Fatalf("RetryAfter = %v, want window - (now - oldest) = %v", got, want)
		}
		// One millisecond before the oldest failure leaves: still refused, 1ms to go.
		f.clock.Set(start.Add(15*time.Minute - time.Millisecond))
		if got := mustRefuse(t, f.l, "cy@example.com", "192.0.2.1"); got != time.Millisecond {
			t.Fatalf("RetryAfter = %v, want 1ms", got)
		}
		// The oldest leaves the window: exactly one more attempt.
		f.clock.Set(start.Add(15 * time.Minute))
		mustAllow(t, f.l, "cy@example.com", "192.0.2.1")
		f.fail(t, "cy@example.com", "192.0.2.1")
		// Now the oldest in the window is the one at +2m.
		if got, want := mustRefuse(t, f.l, "cy@example.com", "192.0.2.1"), 2*time.Minute; got != want {
			t.Fatalf("RetryAfter = %v, want %v", got, want)
		}
		// Past the whole window: clean slate.
		f.clock.Set(start.Add(15*time.Minute + 15*time.Minute))
		mustAllow(t, f.l, "cy@example.com", "192.0.2.1")
	})

	t.Run("OverfullWindowWaitsForEnough", func(t *testing.T) {
		t.Parallel()
		// Concurrent attempts can record more than the limit; the refusal
		// then lasts until enough failures (not just the oldest) have left.
		f := newLoginFixture(t, LoginConfig{AccountLimit: 2, IPLimit: 100})
		start := f.clock.Now()
		for i := range 4 {
			f.clock.Set(start.Add(time.Duration(i) * time.Minute))
			f.fail(t, "di@example.com", "192.0.2.1")
		}
		if got, want := mustRefuse(t, f.l, "di@example.com", "192.0.2.1"), 15*time.Minute-time.Minute; got != want {
			t.Fatalf("RetryAfter = %v, want %v (until the failure at +2m leaves)", got, want)
		}
		f.clock.Set(start.Add(17 * time.Minute))
		mustAllow(t, f.l, "di@example.com", "192.0.2.1")
		if n := f.r.Client.ZCard(context.Background(), f.l.accountKey("di@example.com")).Val(); n > 2 {
			t.Fatalf("account set holds %d entries, want at most the limit", n)
		}
	})

	t.Run("OtherEmailUnaffected", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		for range 5 {
			f.fail(t, "ed@example.com", "192.0.2.1")
		}
		mustRefuse(t, f.l, "ed@example.com", "192.0.2.1")
		mustAllow(t, f.l, "fay@example.com", "192.0.2.1")
	})

	t.Run("IPLimitAcrossEmails", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{IPLimit: 12})
		for i := range 12 {
			email := fmt.Sprintf("user%d@example.com", i)
			mustAllow(t, f.l, email, "203.0.113.5")
			f.fail(t, email, "203.0.113.5")
		}
		// A fresh account from that IP is refused; from elsewhere it is fine.
		mustRefuse(t, f.l, "fresh@example.com", "203.0.113.5")
		mustAllow(t, f.l, "fresh@example.com", "203.0.113.6")
		mustAllow(t, f.l, "user0@example.com", "203.0.113.6")
	})

	t.Run("IPv6CountedPer64", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{IPLimit: 3})
		for i := range 3 {
			f.fail(t, fmt.Sprintf("v%d@example.com", i), fmt.Sprintf("2001:db8:1:2::%x", i+1))
		}
		mustRefuse(t, f.l, "x@example.com", "2001:db8:1:2:ffff::1")
		mustAllow(t, f.l, "x@example.com", "2001:db8:1:3::1")
		if f.l.ipKey("::ffff:192.0.2.1") != f.l.ipKey("192.0.2.1") {
			t.Fatal("IPv4-mapped IPv6 not counted as the IPv4 address")
		}
		if k := f.l.ipKey("not an ip\r\n"); strings.ContainsAny(k, " \r\n") {
			t.Fatalf("unparsable IP leaks into the key: %q", k)
		}
	})

	t.Run("EmailNormalised", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		variants := []string{"Gil@Example.com", " gil@example.com", "GIL@EXAMPLE.COM\t", "gil@example.com ", "gil@example.com"}
		for _, v := range variants {
			f.fail(t, v, "192.0.2.1")
		}
		for _, v := range variants {
			mustRefuse(t, f.l, v, "192.0.2.2")
		}
	})

	t.Run("RawEmailNeverStored", func(t *testing.T) {
		t.Parallel()
		f := newLoginFixture(t, LoginConfig{})
		f.fail(t, "Hana.Secret@Example.com", "192.0.2.1")
		ctx := context.Background()
		keys := f.keys(t)
		if len(keys) != 2 {
			t.Fatalf("keys = %v, want one account and one IP key", keys)
		}
		for _, k := range keys {
			members := f.r.Client.ZRange(ctx, k, 0, -1).Val()
			for _, s := range append(members, k) {
				low := strings.ToLower(s)
				if strings.Contains(low, "hana") || strings.Contains(low, "example") || strings.Contains(s, "@") {
					t.Fatalf("stored %q reveals the email", s)
				}
			}
			if ttl := f.r.Client.PTTL(ctx, k).Val(); ttl <= 0 || ttl > DefaultWindow {
				t.Fatalf("key %s TTL %v, want in (0, 15m]", k, ttl)
			}
		}
	})

	t.Run("HashKeyChangesAccountKey", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		a := NewLoginLimiter(r.Client, r.Prefix, LoginConfig{})
		b := NewLoginLimiter(r.Client, r.Prefix, LoginConfig{HashKey: []byte("k1")})
		c := NewLoginLimiter(r.Client, r.Prefix, LoginConfig{HashKey: []byte("k2")})
		ka, kb, kc := a.accountKey("x@y.z"), b.accountKey("x@y.z"), c.accountKey("x@y.z")
		if ka == kb || kb == kc || kb != b.accountKey(" X@Y.Z ") {
			t.Fatalf("keys %s %s %s", ka, kb, kc)
		}
	})

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		l := NewLoginLimiter(nil, "p:", LoginConfig{})
		if l.cfg.AccountLimit != 5 || l.cfg.IPLimit != 50 || l.cfg.Window != 15*time.Minute || l.cfg.Now == nil {
			t.Fatalf("defaults = %+v", l.cfg)
		}
	})

	t.Run("RedisDown", func(t *testing.T) {
		t.Parallel()
		l := NewLoginLimiter(downClient(t), "p:", LoginConfig{})
		for name, err := range map[string]error{
			"Allow": l.Allow(context.Background(), "a@b.c", "192.0.2.1"),
			"Fail":  l.Fail(context.Background(), "a@b.c", "192.0.2.1"),
		} {
			if err == nil {
				t.Fatalf("%s with Redis down succeeded", name)
			}
			if _, ok := apperr.As(err); ok {
				t.Fatalf("%s: Redis failure surfaced as an apperr: %v", name, err)
			}
		}
	})
}

func downClient(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("BurstBeyondRateRefused", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		l := NewLimiter(r.Client, r.Prefix)
		limit := Limit{Rate: 5, Period: time.Minute}
		for i := range 5 {
			if err := l.Allow(ctx, "user:1", limit); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		err := l.Allow(ctx, "user:1", limit)
		e, ok := apperr.As(err)
		if !ok || e.Code != apperr.CodeResourceExhausted || e.Message != LimitRefusedMessage {
			t.Fatalf("6th request: %v, want ResourceExhausted", err)
		}
		// One token comes back every Period/Rate = 12s.
		if e.RetryAfter <= 0 || e.RetryAfter > 12*time.Second {
			t.Fatalf("RetryAfter = %v, want in (0, 12s]", e.RetryAfter)
		}
		// Keys are independent.
		if err := l.Allow(ctx, "user:2", limit); err != nil {
			t.Fatalf("other key: %v", err)
		}
		// Every key is under the prefix and expires.
		var keys []string
		iter := r.Client.Scan(ctx, 0, r.Prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
			if ttl := r.Client.TTL(ctx, iter.Val()).Val(); ttl <= 0 {
				t.Fatalf("key %s has TTL %v", iter.Val(), ttl)
			}
		}
		if len(keys) != 2 || !strings.HasPrefix(keys[0], r.Prefix+"rl:") {
			t.Fatalf("keys = %v, want two under %srl:", keys, r.Prefix)
		}
	})

	t.Run("ExplicitBurst", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		l := NewLimiter(r.Client, r.Prefix)
		limit := Limit{Rate: 1, Period: time.Hour, Burst: 3}
		for i := range 3 {
			if err := l.Allow(ctx, "reg:192.0.2.1", limit); err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
		}
		e, ok := apperr.As(l.Allow(ctx, "reg:192.0.2.1", limit))
		if !ok || e.RetryAfter < 59*time.Minute || e.RetryAfter > time.Hour {
			t.Fatalf("4th request: %+v, want refused for ~1h", e)
		}
	})

	t.Run("InvalidLimit", func(t *testing.T) {
		t.Parallel()
		l := NewLimiter(downClient(t), "p:")
		for _, lim := range []Limit{{}, {Rate: 1}, {Period: time.Second}, {Rate: 1, Period: time.Second, Burst: -1}} {
			err := l.Allow(ctx, "k", lim)
			if err == nil || !strings.Contains(err.Error(), "invalid limit") {
				t.Fatalf("Allow(%+v) = %v, want invalid limit", lim, err)
			}
		}
	})

	t.Run("RedisDown", func(t *testing.T) {
		t.Parallel()
		l := NewLimiter(downClient(t), "p:")
		err := l.Allow(ctx, "k", Limit{Rate: 1, Period: time.Second})
		if err == nil {
			t.Fatal("Allow with Redis down succeeded")
		}
		if _, ok := apperr.As(err); ok {
			t.Fatalf("Redis failure surfaced as an apperr: %v", err)
		}
	})

	t.Run("PrefixedRewritesOnlyItsKeys", func(t *testing.T) {
		t.Parallel()
		r := testkit.NewRedis(t)
		p := prefixed{r.Client, r.Prefix + "rl:"}
		if err := r.Client.Set(ctx, r.Prefix+"rl:x", "1", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if n := p.Del(ctx, "rate:x").Val(); n != 1 {
			t.Fatalf("Del through prefixed removed %d keys, want 1", n)
		}
		if v := p.EvalRO(ctx, "return KEYS[1]", []string{"rate:y"}).Val(); v != r.Prefix+"rl:y" {
			t.Fatalf("EvalRO saw key %v", v)
		}
		sha := p.ScriptLoad(ctx, "return KEYS[1]").Val()
		if v := p.EvalShaRO(ctx, sha, []string{"rate:z"}).Val(); v != r.Prefix+"rl:z" {
			t.Fatalf("EvalShaRO saw key %v", v)
		}
	})
}

func BenchmarkLoginAllow(b *testing.B) {
	f := newLoginFixture(b, LoginConfig{})
	for range 3 {
		f.fail(b, "bench@example.com", "192.0.2.1")
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := f.l.Allow(ctx, "bench@example.com", "192.0.2.1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	r := testkit.NewRedis(b)
	l := NewLimiter(r.Client, r.Prefix)
	ctx := context.Background()
	limit := Limit{Rate: 1 << 30, Period: time.Second}
	for b.Loop() {
		if err := l.Allow(ctx, "bench", limit); err != nil {
			b.Fatal(err)
		}
	}
}
