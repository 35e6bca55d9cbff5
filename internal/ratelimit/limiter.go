package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// LimitRefusedMessage is shown when a general limit is hit.
const LimitRefusedMessage = "too many requests; try again later"

// Limit allows Rate events per Period, with bursts of up to Burst events
// (0 → Rate).
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// Limiter enforces general per-key limits (GCRA, via redis_rate). Time comes
// from the Redis server, so every instance agrees; it cannot be injected.
// It is safe for concurrent use.
type Limiter struct {
	rl *redis_rate.Limiter
}

// NewLimiter returns a Limiter putting its keys under prefix.
func NewLimiter(client redis.UniversalClient, prefix string) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(prefixed{client, prefix + "rl:"})}
}

// Allow consumes one event for key under limit. When refused it returns an
// *apperr.Error with CodeResourceExhausted and RetryAfter from the limiter.
// A Redis failure comes back wrapped: the caller decides to fail open or
// closed. A Limit with a non-positive Rate or Period is a programming error
// and is reported as such.
func (l *Limiter) Allow(ctx context.Context, key string, limit Limit) error {
	if limit.Rate <= 0 || limit.Period <= 0 || limit.Burst < 0 {
		return fmt.Errorf("ratelimit: invalid limit %+v for %q", limit, key)
	}
	if limit.Burst == 0 {
		limit.Burst = limit.Rate
	}
	res, err := l.rl.Allow(ctx, key, redis_rate.Limit{Rate: limit.Rate, Period: limit.Period, Burst: limit.Burst})
	if err != nil {
		return fmt.Errorf("ratelimit: allow %q: %w", key, err)
	}
	if res.Allowed > 0 {
		return nil
	}
	return apperr.ResourceExhausted(max(res.RetryAfter, time.Millisecond), LimitRefusedMessage)
}

// redisRatePrefix is the key prefix redis_rate hard-codes.
const redisRatePrefix = "rate:"

// prefixed gives redis_rate a client whose keys land under our prefix
// instead of the library's fixed "rate:", so that the Limiter's keys live
// with the rest of ours (and tests' keys stay isolated). It implements only
// the methods redis_rate uses, so a library upgrade that needs more fails to
// compile rather than writing unprefixed keys.
type prefixed struct {
	c      redis.UniversalClient
	prefix string
}

func (p prefixed) keys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = p.prefix + strings.TrimPrefix(k, redisRatePrefix)
	}
	return out
}

func (p prefixed) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.c.Eval(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalSha(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalRO(ctx, script, p.keys(keys), args...)
}

func (p prefixed) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.c.EvalShaRO(ctx, sha1, p.keys(keys), args...)
}

func (p prefixed) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return p.c.Del(ctx, p.keys(keys)...)
}

func (p prefixed) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return p.c.ScriptExists(ctx, hashes...)
}

func (p prefixed) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return p.c.ScriptLoad(ctx, script)
}
