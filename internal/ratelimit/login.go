// Package ratelimit holds NXG's request limits, kept in Redis so that every
// server instance shares them (design doc, "Security").
//
// LoginLimiter is the exact sliding-window limit on failed sign-ins: at most
// AccountLimit failures per account and IPLimit per client IP within any
// Window. Limiter is the general per-key limit (per user, per IP, per
// registration IP) on every RPC, a thin wrapper over
// github.com/go-redis/redis_rate (GCRA).
//
// # Key layout
//
// Every key lives under the prefix given to the constructor (written p):
//
//	p+"login:acct:"+hex(H(normalised email))  zset  failure times (unix ms), member unique per failure
//	p+"login:ip:"+ip-or-hash                  zset  same, per client IP (IPv6 by /64)
//	p+"rl:"+key                               string  GCRA state of Limiter (redis_rate), its own TTL
//
// H is SHA-256, or HMAC-SHA256 under LoginConfig.HashKey when one is given
// (then a Redis dump does not let anyone confirm a guessed address). The raw
// email never reaches Redis. Login keys expire one Window after their newest
// failure.
//
// # When Redis fails
//
// Every method returns the Redis error wrapped (not an *apperr.Error), and
// never decides by itself whether to let the request through: the caller
// chooses to fail open (general limits, where availability matters more) or
// closed (sign-in, where a brute force must not slip through an outage).
package ratelimit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

// Defaults of LoginConfig.
const (
	DefaultAccountLimit = 5
	DefaultIPLimit      = 50
	DefaultWindow       = 15 * time.Minute
)

// LoginRefusedMessage is shown when either login limit is hit. It is the same
// for the account and the IP limit, and for accounts that do not exist.
const LoginRefusedMessage = "too many failed sign-in attempts; try again later"

// LoginConfig sets the login limits; zero fields take the defaults.
type LoginConfig struct {
	// AccountLimit is the failures allowed per account per Window (0 → 5).
	AccountLimit int
	// IPLimit is the failures allowed per client IP per Window (0 → 50).
	IPLimit int
	// Window is the sliding window (0 → 15 minutes), kept to the millisecond.
	Window time.Duration
	// Now is the clock (nil → time.Now).
	Now func() time.Time
	// HashKey, when set, keys accounts by HMAC-SHA256 of the normalised
	// email under it instead of plain SHA-256.
	HashKey []byte
}

// LoginLimiter limits failed sign-in attempts with exact sliding windows.
// It is safe for concurrent use.
type LoginLimiter struct {
	rdb    redis.UniversalClient
	prefix string
	cfg    LoginConfig
}

// NewLoginLimiter returns a LoginLimiter putting its keys under prefix.
func NewLoginLimiter(client redis.UniversalClient, prefix string, cfg LoginConfig) *LoginLimiter {
	if cfg.AccountLimit <= 0 {
		cfg.AccountLimit = DefaultAccountLimit
	}
	if cfg.IPLimit <= 0 {
		cfg.IPLimit = DefaultIPLimit
	}
	if cfg.Window < time.Millisecond {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &LoginLimiter{rdb: client, prefix: prefix, cfg: cfg}
}

// NormalizeEmail is the form under which an email is counted: surrounding
// space trimmed, lower-cased.
func NormalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

func (l *LoginLimiter) accountKey(email string) string {
	e := []byte(NormalizeEmail(email))
	var sum []byte
	if len(l.cfg.HashKey) > 0 {
		m := hmac.New(sha256.New, l.cfg.HashKey)
		m.Write(e)
		sum = m.Sum(nil)
	} else {
		s := sha256.Sum256(e)
		sum = s[:]
	}
	return l.prefix + "login:acct:" + hex.EncodeToString(sum)
}

// ipKey counts IPv4 addresses one by one and IPv6 addresses by /64 (what one
// subscriber usually holds). Anything unparsable is hashed, so a hostile
// value can neither grow nor shape the key.
func (l *LoginLimiter) ipKey(ip string) string {
	addr, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		sum := sha256.Sum256([]byte(ip))
		return l.prefix + "login:ip:raw:" + hex.EncodeToString(sum[:16])
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return l.prefix + "login:ip:" + p.String()
	}
	return l.prefix + "login:ip:" + addr.String()
}

// loginAllowScript: KEYS account, ip; ARGV now, window, accountLimit,
// ipLimit (ms, ms, n, n). Prunes failures older than the window, counts,
// compares; returns 0 when allowed, else the ms until an attempt is allowed
// again (exact: when enough failures have left the window).
var loginAllowScript = redis.NewScript(`
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local n = redis.call('ZCARD', key)
  if n >= limit then
    local e = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    local w = tonumber(e[2]) + window - now
    if w < 1 then w = 1 end
    if w > wait then wait = w end
  end
end
return wait
`)

// loginFailScript: KEYS account, ip; ARGV now, window, accountLimit,
// ipLimit, member. Records one failure on both keys, keeping only the newest
// limit entries (enough to answer Allow exactly) and a TTL of one window.
var loginFailScript = redis.NewScript(`
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, ARGV[5])
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
  redis.call('PEXPIRE', key, window)
end
return 0
`)

// Allow says whether a sign-in attempt for email from ip may be checked at
// all. When the account or the IP has used up its failures in the window it
// returns an *apperr.Error with CodeResourceExhausted, LoginRefusedMessage
// and RetryAfter set to the exact time until the next attempt is allowed.
// A correct password does not get past it, and successes are not recorded.
// Redis failures come back wrapped, for the caller to fail closed.
func (l *LoginLimiter) Allow(ctx context.Context, email, ip string) error {
	wait, err := loginAllowScript.Run(ctx, l.rdb,
		[]string{l.accountKey(email), l.ipKey(ip)},
		l.cfg.Now().UnixMilli(), l.cfg.Window.Milliseconds(), l.cfg.AccountLimit, l.cfg.IPLimit,
	).Int64()
	if err != nil {
		return fmt.Errorf("ratelimit: login allow: %w", err)
	}
	if wait > 0 {
		return apperr.ResourceExhausted(time.Duration(wait)*time.Millisecond, LoginRefusedMessage)
	}
	return nil
}

// Fail records a failed attempt against both the account and the IP.
func (l *LoginLimiter) Fail(ctx context.Context, email, ip string) error {
	now := l.cfg.Now().UnixMilli()
	var id [8]byte
	_, _ = rand.Read(id[:])
	member := strconv.FormatInt(now, 10) + "-" + hex.EncodeToString(id[:])
	err := loginFailScript.Run(ctx, l.rdb,
		[]string{l.accountKey(email), l.ipKey(ip)},
		now, l.cfg.Window.Milliseconds(), l.cfg.AccountLimit, l.cfg.IPLimit, member,
	).Err()
	if err != nil {
		return fmt.Errorf("ratelimit: login fail: %w", err)
	}
	return nil
}
