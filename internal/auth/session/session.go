// Package session keeps NXG's auth sessions and their refresh-token families
// in Redis (design doc, "Where state lives" and "Security").
//
// A session is born at sign-in with its first refresh token. Refresh tokens
// are opaque: 256 bits from crypto/rand, encoded base64url without padding
// (43 characters), shown to the client once and stored only as the hex
// SHA-256 of their 32 raw bytes. Every use rotates the token; the tokens of
// one session form its family. Presenting a token that was already rotated
// away while the session lives is reuse: the whole session is revoked at
// once and Refresh reports ErrRefreshReused so the caller writes an audit
// row. A session lives as long as its newest refresh token (RefreshTTL,
// 7 days by default).
//
// # Key layout
//
// Every key lives under the prefix given to NewStore (written p here):
//
//	p+"sess:"+sid           hash    the session record: uid, role, dev, ip, ua,
//	                                created, seen, exp (unix ms), gen (rotation
//	                                count) and rt (SHA-256 hex of the current
//	                                refresh token). TTL = ExpiresAt - now.
//	p+"user-sess:"+uid      zset    the user's session ids scored by last seen
//	                                (unix ms). TTL pushed out to the longest
//	                                session lifetime on Create and Refresh;
//	                                entries of dead sessions are pruned by
//	                                Create, List and RevokeAll.
//	p+"rt:"+sha256hex       string  "sid:gen" for a session's current token.
//	                                TTL RefreshTTL.
//	p+"rt-used:"+sha256hex  string  sid, for every token rotated away, so
//	                                reuse is detected. TTL RefreshTTL.
//
// Nothing lives without a TTL, and no value holds a plaintext token.
//
// Every mutation is one Lua script, so it is atomic: of two concurrent
// refreshes with the same token exactly one rotates it, and the other then
// presents a used token (and so revokes the family). Alive, the check made on
// every authenticated request, is a single HGET.
//
// Expiry is checked twice: Redis TTLs remove dead keys, and the record's exp
// field is compared with Options.Now, so an injected clock behaves like real
// time passing.
//
// The scripts derive session keys from the values they read, so the store
// needs one Redis primary (standalone or Sentinel-managed, which
// redis.UniversalClient covers); it is not Redis Cluster-safe.
//
// Losing Redis logs every user out and loses nothing else (design doc).
// Errors talking to Redis are returned wrapped; they are not apperr errors
// and so surface as internal faults.
package session

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
)

const (
	// DefaultRefreshTTL is the lifetime of a refresh token, and so of a
	// session that is not refreshed.
	DefaultRefreshTTL = 7 * 24 * time.Hour
	// DefaultMaxSessionsPerUser bounds the live sessions of one user;
	// creating one more evicts the least recently seen.
	DefaultMaxSessionsPerUser = 50
	// TouchInterval is how often Touch writes at most, per session.
	TouchInterval = time.Minute

	// tokenBytes is the entropy of a refresh token; tokenLen its encoded length.
	tokenBytes = 32
	tokenLen   = 43 // base64.RawURLEncoding.EncodedLen(32)

	// Bounds on client-supplied strings stored in the record.
	maxDeviceNameBytes = 128
	maxUserAgentBytes  = 512
	maxIPBytes         = 64
)

// The sentinels below are *apperr.Error values, so the error mapper turns
// them into Connect codes directly; compare them with errors.Is (identity)
// and never modify them.
var (
	// ErrRefreshInvalid: the refresh token is unknown, expired, malformed, or
	// belongs to a session that is gone.
	ErrRefreshInvalid = &apperr.Error{Code: apperr.CodeUnauthenticated, Message: "refresh token is invalid or expired"}
	// ErrRefreshReused: the token was already used; its session has just been
	// revoked. Refresh returns the session alongside, for the audit row.
	ErrRefreshReused = &apperr.Error{Code: apperr.CodeUnauthenticated, Message: "refresh token was already used; the session has been revoked"}
	// ErrNotFound: no live session has that id.
	ErrNotFound = &apperr.Error{Code: apperr.CodeNotFound, Message: "session not found"}
)

var tokenEncoding = base64.RawURLEncoding.Strict()

// Session is one signed-in device of a user.
type Session struct {
	ID         string
	UserID     string
	Role       string
	DeviceName string
	IP         string
	UserAgent  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

// Options tune a Store; the zero value gives the production defaults.
type Options struct {
	// RefreshTTL is the refresh-token lifetime (0 → DefaultRefreshTTL).
	RefreshTTL time.Duration
	// Now is the clock (nil → time.Now). Times are kept to the millisecond.
	Now func() time.Time
	// MaxSessionsPerUser bounds a user's live sessions (≤0 →
	// DefaultMaxSessionsPerUser); Create evicts the least recently seen.
	MaxSessionsPerUser int
}

// Store keeps sessions in Redis. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	ttl    time.Duration
	now    func() time.Time
	max    int

	// revokedMu guards onRevoke, the listeners told of every session this
	// Store ends (see OnRevoke).
	revokedMu sync.RWMutex
	onRevoke  []func(userID string, sessionIDs ...string)
}

// OnRevoke registers fn to be told, synchronously and before the ending
// call returns, of the sessions this Store ends: by Revoke, RevokeAll, the
// eviction of Create and the reuse detection of Refresh. sessionIDs names
// them, or is empty when every session of userID may have ended. It is
// what lets a process-local cache of live sessions (auth.Authenticator)
// drop them at once, whichever code path ended them. fn may be told of a
// session that was not alive, or when the Store failed halfway: it must
// only drop what it holds, never act on the news otherwise. Other
// processes learn of revocations through floor.ChannelRevocations.
func (s *Store) OnRevoke(fn func(userID string, sessionIDs ...string)) {
	s.revokedMu.Lock()
	defer s.revokedMu.Unlock()
	s.onRevoke = append(s.onRevoke, fn)
}

// revoked tells the OnRevoke listeners that sessions of userID ended.
func (s *Store) revoked(userID string, sessionIDs ...string) {
	s.revokedMu.RLock()
	defer s.revokedMu.RUnlock()
	for _, fn := range s.onRevoke {
		fn(userID, sessionIDs...)
	}
}

// NewStore returns a Store that puts every key under prefix.
func NewStore(client redis.UniversalClient, prefix string, opts Options) *Store {
	if opts.RefreshTTL <= 0 {
		opts.RefreshTTL = DefaultRefreshTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxSessionsPerUser <= 0 {
		opts.MaxSessionsPerUser = DefaultMaxSessionsPerUser
	}
	return &Store{rdb: client, prefix: prefix, ttl: opts.RefreshTTL, now: opts.Now, max: opts.MaxSessionsPerUser}
}

func (s *Store) sessKey(sid string) string   { return s.prefix + "sess:" + sid }
func (s *Store) userKey(uid string) string   { return s.prefix + "user-sess:" + uid }
func (s *Store) tokenKey(hash string) string { return s.prefix + "rt:" + hash }
func (s *Store) usedKey(hash string) string  { return s.prefix + "rt-used:" + hash }
func (s *Store) nowMS() int64                { return s.now().UnixMilli() }
func (s *Store) ttlMS() int64                { return max(s.ttl.Milliseconds(), 1) }
func validSessionID(sid string) bool         { return len(sid) == 36 && uuid.Validate(sid) == nil }
func msTime(ms int64) time.Time              { return time.UnixMilli(ms).UTC() }
func wrap(op string, err error) error        { return fmt.Errorf("session: %s: %w", op, err) }
func newTokenHash(raw []byte) string         { sum := sha256.Sum256(raw); return hex.EncodeToString(sum[:]) }

// newToken returns a fresh refresh token and the hash under which it is stored.
func newToken() (plain, hash string) {
	var b [tokenBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes instead)
	return tokenEncoding.EncodeToString(b[:]), newTokenHash(b[:])
}

// hashToken checks a presented token's shape and returns its stored hash;
// malformed input is refused before any round trip to Redis.
func hashToken(tok string) (string, bool) {
	if len(tok) != tokenLen {
		return "", false
	}
	raw, err := tokenEncoding.DecodeString(tok)
	if err != nil || len(raw) != tokenBytes {
		return "", false
	}
	return newTokenHash(raw), true
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Lua helpers shared by the scripts. kill deletes a session record, its
// current-token key and its index entry; it returns 1 when a record existed.
const luaHelpers = `
local function kill(p, sid)
  local sk = p .. 'sess:' .. sid
  local f = redis.call('HMGET', sk, 'uid', 'rt')
  if not f[1] then return 0 end
  if f[2] then redis.call('DEL', p .. 'rt:' .. f[2]) end
  redis.call('ZREM', p .. 'user-sess:' .. f[1], sid)
  redis.call('DEL', sk)
  return 1
end
local function extend(key, ttl)
  local pt = redis.call('PTTL', key)
  if pt < ttl then redis.call('PEXPIRE', key, ttl) end
end
local function alive(exp, now)
  return exp and tonumber(exp) > now
end
`

// createScript: KEYS sess, user-sess, rt; ARGV p, sid, uid, role, dev, ip,
// ua, now, ttl, hash, max. Returns the number of sessions evicted.
var createScript = redis.NewScript(luaHelpers + `
local p, sid = ARGV[1], ARGV[2]
local now, ttl, maxn = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[11])
local live = {}
for _, s in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if alive(redis.call('HGET', p .. 'sess:' .. s, 'exp'), now) then
    table.insert(live, s)
  else
    kill(p, s)
    redis.call('ZREM', KEYS[2], s)
  end
end
local evicted = 0
for i = 1, #live + 1 - maxn do
  evicted = evicted + kill(p, live[i])
end
redis.call('HSET', KEYS[1], 'uid', ARGV[3], 'role', ARGV[4], 'dev', ARGV[5], 'ip', ARGV[6], 'ua', ARGV[7],
  'created', now, 'seen', now, 'exp', now + ttl, 'gen', 1, 'rt', ARGV[10])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[3], sid .. ':1', 'PX', ttl)
redis.call('ZADD', KEYS[2], now, sid)
extend(KEYS[2], ttl)
return evicted
`)

// refreshScript: KEYS rt:old, rt-used:old, rt:new; ARGV p, oldhash, newhash,
// now, ttl. Returns {"ok", record} | {"reused", record} | {"invalid"}.
var refreshScript = redis.NewScript(luaHelpers + `
local p, h, nh = ARGV[1], ARGV[2], ARGV[3]
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local sid, gen = string.sub(cur, 1, sep - 1), string.sub(cur, sep + 1)
  local sk = p .. 'sess:' .. sid
  local f = redis.call('HMGET', sk, 'uid', 'exp', 'gen', 'rt')
  if not f[1] or not alive(f[2], now) or f[3] ~= gen or f[4] ~= h then
    redis.call('DEL', KEYS[1])
    if f[1] and not alive(f[2], now) then kill(p, sid) end
    return {'invalid'}
  end
  local ngen = tonumber(gen) + 1
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], sid, 'PX', ttl)
  redis.call('SET', KEYS[3], sid .. ':' .. ngen, 'PX', ttl)
  redis.call('HSET', sk, 'seen', now, 'exp', now + ttl, 'gen', ngen, 'rt', nh)
  redis.call('PEXPIRE', sk, ttl)
  local uk = p .. 'user-sess:' .. f[1]
  redis.call('ZADD', uk, now, sid)
  extend(uk, ttl)
  return {'ok', sid, redis.call('HGETALL', sk)}
end
local used = redis.call('GET', KEYS[2])
if used then
  local sk = p .. 'sess:' .. used
  local rec = redis.call('HGETALL', sk)
  if #rec == 0 then return {'invalid'} end
  local live = alive(redis.call('HGET', sk, 'exp'), now)
  kill(p, used)
  if not live then return {'invalid'} end
  return {'reused', used, rec}
end
return {'invalid'}
`)

// touchScript: KEYS sess; ARGV p, sid, now, ip, interval.
// Returns 0 (not alive), 1 (too soon, unchanged) or 2 (updated).
var touchScript = redis.NewScript(luaHelpers + `
local p, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'uid', 'exp', 'seen')
if not f[1] or not alive(f[2], now) then return 0 end
if now - tonumber(f[3]) < tonumber(ARGV[5]) then return 1 end
redis.call('HSET', KEYS[1], 'seen', now, 'ip', ARGV[4])
redis.call('ZADD', p .. 'user-sess:' .. f[1], 'XX', now, sid)
return 2
`)

// listScript: KEYS user-sess; ARGV p, now. Returns {sid, record, ...} of the
// live sessions, most recently seen first, and prunes the dead.
var listScript = redis.NewScript(luaHelpers + `
local p, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, s in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local sk = p .. 'sess:' .. s
  if alive(redis.call('HGET', sk, 'exp'), now) then
    table.insert(out, s)
    table.insert(out, redis.call('HGETALL', sk))
  else
    kill(p, s)
    redis.call('ZREM', KEYS[1], s)
  end
end
return out
`)

// revokeScript: KEYS sess; ARGV p, sid, uid, now. Returns 1 when a live
// session of uid was revoked.
var revokeScript = redis.NewScript(luaHelpers + `
local p, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'uid', 'exp')
if not f[1] or f[1] ~= ARGV[3] then return 0 end
local live = alive(f[2], now)
kill(p, sid)
if live then return 1 end
return 0
`)

// revokeAllScript: KEYS user-sess; ARGV p, uid, except, now. Returns the
// number of live sessions revoked.
var revokeAllScript = redis.NewScript(luaHelpers + `
local p, uid, except, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = 0
for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if s ~= except then
    local f = redis.call('HMGET', p .. 'sess:' .. s, 'uid', 'exp')
    if f[1] == uid then
      if alive(f[2], now) then n = n + 1 end
      kill(p, s)
    end
    redis.call('ZREM', KEYS[1], s)
  end
end
return n
`)

// Create starts a session and returns it with its first refresh token
// (plaintext, shown once). When the user already has MaxSessionsPerUser live
// sessions, the least recently seen are revoked to make room.
func (s *Store) Create(ctx context.Context, userID, role, deviceName, ip, userAgent string) (Session, string, error) {
	if userID == "" {
		return Session{}, "", errors.New("session: create: empty user id")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Session{}, "", wrap("create: session id", err)
	}
	sid := id.String()
	deviceName = truncate(deviceName, maxDeviceNameBytes)
	ip = truncate(ip, maxIPBytes)
	userAgent = truncate(userAgent, maxUserAgentBytes)
	plain, hash := newToken()
	now := s.nowMS()
	evicted, err := createScript.Run(ctx, s.rdb,
		[]string{s.sessKey(sid), s.userKey(userID), s.tokenKey(hash)},
		s.prefix, sid, userID, role, deviceName, ip, userAgent, now, s.ttlMS(), hash, s.max,
	).Int()
	// Evicting the least recently seen sessions ends them. A failed call
	// may have evicted some before failing, so listeners hear of it too.
	if err != nil || evicted > 0 {
		s.revoked(userID)
	}
	if err != nil {
		return Session{}, "", wrap("create", err)
	}
	return Session{
		ID: sid, UserID: userID, Role: role, DeviceName: deviceName, IP: ip, UserAgent: userAgent,
		CreatedAt: msTime(now), LastSeenAt: msTime(now), ExpiresAt: msTime(now + s.ttlMS()),
	}, plain, nil
}

// Refresh rotates a refresh token. A valid current token yields a new token
// and the session with LastSeenAt and ExpiresAt moved on. A token already
// rotated away whose session is still alive revokes that session and
// returns ErrRefreshReused together with the session (for the audit row).
// Anything else — unknown, expired, malformed — is ErrRefreshInvalid.
func (s *Store) Refresh(ctx context.Context, refreshToken string) (Session, string, error) {
	hash, ok := hashToken(refreshToken)
	if !ok {
		return Session{}, "", ErrRefreshInvalid
	}
	plain, newHash := newToken()
	res, err := refreshScript.Run(ctx, s.rdb,
		[]string{s.tokenKey(hash), s.usedKey(hash), s.tokenKey(newHash)},
		s.prefix, hash, newHash, s.nowMS(), s.ttlMS(),
	).Slice()
	if err != nil {
		return Session{}, "", wrap("refresh", err)
	}
	status, _ := res[0].(string)
	switch status {
	case "ok", "reused":
		if len(res) != 3 {
			return Session{}, "", wrap("refresh", fmt.Errorf("unexpected script reply %v", res))
		}
		sid, _ := res[1].(string)
		sess, err := decodeRecord(sid, res[2])
		if err != nil {
			return Session{}, "", wrap("refresh", err)
		}
		if status == "reused" {
			s.revoked(sess.UserID, sid)
			return sess, "", ErrRefreshReused
		}
		return sess, plain, nil
	default:
		return Session{}, "", ErrRefreshInvalid
	}
}

// Alive reports whether the session exists and has not expired. It is one
// HGET, cheap enough for every authenticated request.
func (s *Store) Alive(ctx context.Context, sessionID string) (bool, error) {
	if !validSessionID(sessionID) {
		return false, nil
	}
	exp, err := s.rdb.HGet(ctx, s.sessKey(sessionID), "exp").Int64()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, wrap("alive", err)
	}
	return exp > s.nowMS(), nil
}

// Get returns a live session, or ErrNotFound.
func (s *Store) Get(ctx context.Context, sessionID string) (Session, error) {
	if !validSessionID(sessionID) {
		return Session{}, ErrNotFound
	}
	rec, err := s.rdb.HGetAll(ctx, s.sessKey(sessionID)).Result()
	if err != nil {
		return Session{}, wrap("get", err)
	}
	if len(rec) == 0 {
		return Session{}, ErrNotFound
	}
	sess, err := fromMap(sessionID, rec)
	if err != nil {
		return Session{}, wrap("get", err)
	}
	if !sess.ExpiresAt.After(msTime(s.nowMS())) {
		return Session{}, ErrNotFound
	}
	return sess, nil
}

// Touch records activity: LastSeenAt and IP, written at most once per
// TouchInterval per session (one round trip; a no-op inside the interval).
// A dead session gives ErrNotFound.
func (s *Store) Touch(ctx context.Context, sessionID string, ip string) error {
	if !validSessionID(sessionID) {
		return ErrNotFound
	}
	n, err := touchScript.Run(ctx, s.rdb, []string{s.sessKey(sessionID)},
		s.prefix, sessionID, s.nowMS(), truncate(ip, maxIPBytes), TouchInterval.Milliseconds(),
	).Int()
	if err != nil {
		return wrap("touch", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// List returns the user's live sessions, most recently seen first, and
// prunes index entries whose session has expired.
func (s *Store) List(ctx context.Context, userID string) ([]Session, error) {
	res, err := listScript.Run(ctx, s.rdb, []string{s.userKey(userID)}, s.prefix, s.nowMS()).Slice()
	if err != nil {
		return nil, wrap("list", err)
	}
	out := make([]Session, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		sid, _ := res[i].(string)
		sess, err := decodeRecord(sid, res[i+1])
		if err != nil {
			return nil, wrap("list", err)
		}
		out = append(out, sess)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].LastSeenAt.Equal(out[j].LastSeenAt) {
			return out[i].LastSeenAt.After(out[j].LastSeenAt)
		}
		return out[i].CreatedAt.After(out[j].CreatedAt)
	})
	return out, nil
}

// Revoke ends one session of the user at once. It reports false when the
// session is not the user's or not alive (and then changes nothing of
// another user's).
func (s *Store) Revoke(ctx context.Context, userID, sessionID string) (bool, error) {
	if !validSessionID(sessionID) {
		return false, nil
	}
	n, err := revokeScript.Run(ctx, s.rdb, []string{s.sessKey(sessionID)},
		s.prefix, sessionID, userID, s.nowMS()).Int()
	// Told even on failure: the script may have run before the error.
	s.revoked(userID, sessionID)
	if err != nil {
		return false, wrap("revoke", err)
	}
	return n == 1, nil
}

// RevokeAll ends every session of the user but except ("" ends all) and
// returns how many live sessions it ended.
func (s *Store) RevokeAll(ctx context.Context, userID string, except string) (int, error) {
	n, err := revokeAllScript.Run(ctx, s.rdb, []string{s.userKey(userID)},
		s.prefix, userID, except, s.nowMS()).Int()
	// Told even on failure: the script may have run before the error.
	s.revoked(userID)
	if err != nil {
		return 0, wrap("revoke all", err)
	}
	return n, nil
}

// decodeRecord turns a flat HGETALL reply from a script into a Session.
func decodeRecord(sid string, v any) (Session, error) {
	flat, ok := v.([]any)
	if !ok || len(flat)%2 != 0 {
		return Session{}, fmt.Errorf("malformed session record %v", v)
	}
	m := make(map[string]string, len(flat)/2)
	for i := 0; i < len(flat); i += 2 {
		k, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		m[k] = val
	}
	return fromMap(sid, m)
}

func fromMap(sid string, m map[string]string) (Session, error) {
	var ms [3]int64
	for i, f := range [...]string{"created", "seen", "exp"} {
		n, err := strconv.ParseInt(m[f], 10, 64)
		if err != nil {
			return Session{}, fmt.Errorf("session %s: field %s: %w", sid, f, err)
		}
		ms[i] = n
	}
	return Session{
		ID: sid, UserID: m["uid"], Role: m["role"], DeviceName: m["dev"], IP: m["ip"], UserAgent: m["ua"],
		CreatedAt: msTime(ms[0]), LastSeenAt: msTime(ms[1]), ExpiresAt: msTime(ms[2]),
	}, nil
}
