package auth

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Defaults of the Authenticator's caches (Config).
const (
	// DefaultTokenCacheSize is how many verified tokens are remembered:
	// comfortably more than the devices and people one process serves at
	// once, at a few hundred bytes each.
	DefaultTokenCacheSize = 16 << 10
	// DefaultSessionCacheTTL is how long a session found alive is taken to
	// be alive without asking Redis again. Revocations drop entries at
	// once (ForgetSessions); the TTL only bounds how long a revocation
	// this process never heard of can go unnoticed.
	DefaultSessionCacheTTL = time.Second
	// DefaultSessionCacheSize bounds the sessions remembered alive.
	DefaultSessionCacheSize = 16 << 10
)

// livenessCache remembers, for a short TTL, the sessions Redis said are
// alive. Only positive answers are kept: a dead session stays dead.
// Entries are indexed by subject too, so that a revocation of every session
// of an account or device drops them without a scan.
type livenessCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries *simplelru.LRU[string, livenessEntry] // by session id
	// bySubject indexes entries by subject; kept in step by the LRU's
	// eviction callback, which runs under mu.
	bySubject map[string]map[string]struct{}
	// generation counts the forgets. A lookup that missed carries the
	// generation it saw to put, which stores nothing if a forget happened
	// in between: otherwise an Alive answered by Redis just before a
	// revocation could be stored just after its forget, and outlive it.
	generation uint64
	// stopped is set once revocations can no longer be heard: nothing is
	// cached from then on.
	stopped bool
}

type livenessEntry struct {
	subject string
	until   time.Time
}

// newLivenessCache returns a cache of at most size (> 0) sessions.
func newLivenessCache(size int, ttl time.Duration, now func() time.Time) *livenessCache {
	c := &livenessCache{ttl: ttl, now: now, bySubject: make(map[string]map[string]struct{})}
	// A positive size is all simplelru.NewLRU checks.
	c.entries, _ = simplelru.NewLRU(size, c.evicted)
	return c
}

// evicted keeps bySubject in step with the LRU; mu is held.
func (c *livenessCache) evicted(sessionID string, e livenessEntry) {
	if m := c.bySubject[e.subject]; m != nil {
		delete(m, sessionID)
		if len(m) == 0 {
			delete(c.bySubject, e.subject)
		}
	}
}

// alive reports whether sessionID was found alive less than the TTL ago.
// On a miss it returns the generation to hand to put.
func (c *livenessCache) alive(sessionID string) (hit bool, generation uint64) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries.Get(sessionID)
	if ok && now.Before(e.until) {
		return true, 0
	}
	if ok {
		c.entries.Remove(sessionID)
	}
	return false, c.generation
}

// put remembers that Redis found sessionID of subject alive, unless a
// forget happened since the lookup that returned generation.
func (c *livenessCache) put(subject, sessionID string, generation uint64) {
	until := c.now().Add(c.ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || generation != c.generation {
		return
	}
	if old, ok := c.entries.Peek(sessionID); ok && old.subject != subject {
		c.entries.Remove(sessionID)
	}
	c.entries.Add(sessionID, livenessEntry{subject: subject, until: until})
	m := c.bySubject[subject]
	if m == nil {
		m = make(map[string]struct{})
		c.bySubject[subject] = m
	}
	m[sessionID] = struct{}{}
}

// forget drops the named sessions, or every session of subject when none
// are named.
func (c *livenessCache) forget(subject string, sessionIDs ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	if len(sessionIDs) == 0 {
		for sid := range c.bySubject[subject] {
			c.entries.Remove(sid)
		}
		return
	}
	for _, sid := range sessionIDs {
		c.entries.Remove(sid)
	}
}

// forgetAll drops every entry; with stop, nothing is cached any more.
func (c *livenessCache) forgetAll(stop bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	c.stopped = c.stopped || stop
	c.entries.Purge()
	clear(c.bySubject)
}

// len is the number of sessions remembered, for tests.
func (c *livenessCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries.Len()
}
