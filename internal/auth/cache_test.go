package auth

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cacheFixture is an Authenticator with both caches over a real Redis, with
// the clocks of tokens, sessions and the session cache in the test's hands.
type cacheFixture struct {
	authn    *Authenticator
	tokens   *token.Issuer
	sessions *session.Store
	redis    *testkit.Redis
	// tokenClock drives the token issuer (and so token expiry) and the
	// session store; cacheClock drives the session cache's TTL.
	tokenClock, cacheClock *testClock
}

func newCacheFixture(t testing.TB, sessionOpts session.Options, cfg Config) *cacheFixture {
	t.Helper()
	f := &cacheFixture{
		tokenClock: &testClock{t: time.Now().Truncate(time.Second)},
		cacheClock: &testClock{t: time.Now()},
		redis:      testkit.NewRedis(t),
	}
	ring, err := token.ParseKeyRing([]byte(testkit.AuthEnv(t)["NXG_JWT_KEYS"]))
	if err != nil {
		t.Fatal(err)
	}
	f.tokens, err = token.NewIssuer(token.IssuerConfig{Keys: ring, Issuer: "https://auth.test", Audience: "auth-test", Now: f.tokenClock.now})
	if err != nil {
		t.Fatal(err)
	}
	if sessionOpts.Now == nil {
		sessionOpts.Now = f.tokenClock.now
	}
	f.sessions = session.NewStore(f.redis.Client, f.redis.Prefix, sessionOpts)
	cfg.Tokens, cfg.Sessions, cfg.Now = f.tokens, f.sessions, f.cacheClock.now
	f.authn = New(cfg)
	return f
}

// signIn starts a session of a new member (or of userID when given) and
// returns its access token with the claims.
func (f *cacheFixture) signIn(t testing.TB, userID ...uuid.UUID) (string, token.Claims) {
	t.Helper()
	uid := uuid.Must(uuid.NewV7())
	if len(userID) > 0 {
		uid = userID[0]
	}
	sess, _, err := f.sessions.Create(context.Background(), uid.String(), string(token.RoleMember), "phone", "192.0.2.1", "test")
	if err != nil {
		t.Fatal(err)
	}
	tok, claims, err := f.tokens.Issue(uid.String(), sess.ID, token.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	return tok, claims
}

// dropBehindTheCache deletes a session in Redis without going through the
// store, as another process's revocation looks to this one: the store's
// OnRevoke listeners hear nothing.
func (f *cacheFixture) dropBehindTheCache(t testing.TB, sessionID string) {
	t.Helper()
	if err := f.redis.Client.Del(context.Background(), f.redis.Prefix+"sess:"+sessionID).Err(); err != nil {
		t.Fatal(err)
	}
}

func (f *cacheFixture) tokenCached(tok string) bool {
	return f.authn.verified.Contains(sha256.Sum256([]byte(tok)))
}

func requireAccepted(t testing.TB, a *Authenticator, tok, what string) Principal {
	t.Helper()
	p, err := a.Authenticate(context.Background(), "Bearer "+tok)
	if err != nil {
		t.Fatalf("%s: Authenticate = %v, want accepted", what, err)
	}
	return p
}

// requireRefused checks that tok is refused with want's code and message.
func requireRefused(t testing.TB, a *Authenticator, tok string, want *apperr.Error, what string) {
	t.Helper()
	_, err := a.Authenticate(context.Background(), "Bearer "+tok)
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code != want.Code || ae.Message != want.Message {
		t.Fatalf("%s: Authenticate = %v, want %v", what, err, want)
	}
}

func TestTokenCache(t *testing.T) {
	t.Parallel()

	t.Run("SamePrincipalFromTheCache", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{})
		d := Device{ID: uuid.Must(uuid.NewV7()), BranchID: uuid.Must(uuid.NewV7()), Kind: DeviceMachine, MachineID: uuid.Must(uuid.NewV7())}
		sess, _, err := f.sessions.Create(context.Background(), d.ID.String(), string(token.RoleDevice), "console", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := f.tokens.IssueDevice(d.ID.String(), sess.ID, d.Claims())
		if err != nil {
			t.Fatal(err)
		}
		first := requireAccepted(t, f.authn, tok, "first use")
		if !f.tokenCached(tok) {
			t.Fatal("a verified token was not cached")
		}
		// Whatever a caller does to its principal stays out of the cache.
		first.Device.Kind = "tampered"
		second := requireAccepted(t, f.authn, tok, "cached use")
		if second.UserID != d.ID || second.SessionID != sess.ID || second.Role != token.RoleDevice ||
			second.Device == nil || *second.Device != d {
			t.Fatalf("cached principal %+v (device %+v), want device %+v in session %s", second, second.Device, d, sess.ID)
		}
		if second.Device == first.Device {
			t.Fatal("two calls share one Device")
		}
	})

	t.Run("ExpiredTokenRefusedThoughCached", func(t *testing.T) {
		t.Parallel()
		// A session cache as long as the token's life, so that only the
		// token's own expiry can refuse it.
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Hour})
		tok, claims := f.signIn(t)
		requireAccepted(t, f.authn, tok, "fresh token")
		// Exactly as Verify would: up to the clock-skew allowance...
		f.tokenClock.advance(claims.ExpiresAt.Sub(f.tokenClock.now()) + token.ClockSkew - time.Second)
		requireAccepted(t, f.authn, tok, "token inside the skew allowance")
		if !f.tokenCached(tok) {
			t.Fatal("token not cached")
		}
		// ...and not a second more, though the token is cached.
		f.tokenClock.advance(time.Second)
		requireRefused(t, f.authn, tok, errNoCredentials, "expired cached token")
		if f.tokenCached(tok) {
			t.Fatal("an expired token stays cached")
		}
		if _, err := f.tokens.Verify(tok); err == nil {
			t.Fatal("Verify accepts the token the cache refused: the two disagree on expiry")
		}
	})

	t.Run("BadTokensNotCached", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{})
		tok, _ := f.signIn(t)
		head, _, _ := strings.Cut(tok, ".")
		bad := []string{
			"nonsense",
			tok[:len(tok)-4] + "AAAA", // signature broken
			head + ".e30.AAAA",        // claims replaced
			tok + "x",
		}
		for _, b := range bad {
			requireRefused(t, f.authn, b, errNoCredentials, "bad token "+b)
			requireRefused(t, f.authn, b, errNoCredentials, "bad token again "+b)
		}
		if n := f.authn.verified.Len(); n != 0 {
			t.Fatalf("%d bad tokens cached", n)
		}
		requireAccepted(t, f.authn, tok, "the good token")
		if n := f.authn.verified.Len(); n != 1 {
			t.Fatalf("%d tokens cached, want the good one", n)
		}
	})

	t.Run("Bounded", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{TokenCacheSize: 2})
		for range 5 {
			tok, _ := f.signIn(t)
			requireAccepted(t, f.authn, tok, "token")
		}
		if n := f.authn.verified.Len(); n != 2 {
			t.Fatalf("%d tokens cached, want the cap of 2", n)
		}
	})
}

func TestSessionCache(t *testing.T) {
	t.Parallel()

	t.Run("AliveReusedForTheTTLOnly", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Second})
		tok, claims := f.signIn(t)
		requireAccepted(t, f.authn, tok, "live session")
		// Ended where this process cannot see it: the cache answers
		// until its TTL runs out, and not after.
		f.dropBehindTheCache(t, claims.SessionID)
		f.cacheClock.advance(999 * time.Millisecond)
		requireAccepted(t, f.authn, tok, "inside the TTL")
		f.cacheClock.advance(time.Millisecond)
		requireRefused(t, f.authn, tok, errSessionEnded, "past the TTL")
	})

	t.Run("DisabledAsksRedisEveryTime", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: -1})
		tok, claims := f.signIn(t)
		requireAccepted(t, f.authn, tok, "live session")
		f.dropBehindTheCache(t, claims.SessionID)
		requireRefused(t, f.authn, tok, errSessionEnded, "ended session")
	})

	t.Run("DeadSessionNotCached", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Hour})
		tok, claims := f.signIn(t)
		f.dropBehindTheCache(t, claims.SessionID)
		requireRefused(t, f.authn, tok, errSessionEnded, "ended session")
		if n := f.authn.alive.len(); n != 0 {
			t.Fatalf("%d sessions cached after a refusal", n)
		}
	})

	// Every way the store ends sessions drops them from the cache before
	// the call returns, though the cache's TTL is an hour.
	for name, end := range map[string]func(t *testing.T, f *cacheFixture, uid uuid.UUID, sid string){
		"Revoke": func(t *testing.T, f *cacheFixture, uid uuid.UUID, sid string) {
			if ok, err := f.sessions.Revoke(context.Background(), uid.String(), sid); err != nil || !ok {
				t.Fatalf("Revoke = %v, %v", ok, err)
			}
		},
		"RevokeAll": func(t *testing.T, f *cacheFixture, uid uuid.UUID, _ string) {
			if n, err := f.sessions.RevokeAll(context.Background(), uid.String(), ""); err != nil || n != 2 {
				t.Fatalf("RevokeAll = %v, %v", n, err)
			}
		},
		"CreateEvictingIt": func(t *testing.T, f *cacheFixture, uid uuid.UUID, _ string) {
			// The fixture allows two sessions per user: a third evicts the
			// least recently seen, which is the first.
			f.signIn(t, uid)
		},
	} {
		t.Run("EndedBy"+name, func(t *testing.T) {
			t.Parallel()
			f := newCacheFixture(t, session.Options{MaxSessionsPerUser: 2}, Config{SessionCacheTTL: time.Hour})
			uid := uuid.Must(uuid.NewV7())
			tok, claims := f.signIn(t, uid)
			f.tokenClock.advance(time.Millisecond) // the first is the least recently seen
			other, _ := f.signIn(t, uid)
			requireAccepted(t, f.authn, tok, "live session")
			requireAccepted(t, f.authn, other, "the user's other session")
			end(t, f, uid, claims.SessionID)
			requireRefused(t, f.authn, tok, errSessionEnded, "ended session on the next call")
		})
	}

	t.Run("RefreshTokenReuseEndsTheCachedSession", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Hour})
		uid := uuid.Must(uuid.NewV7())
		sess, refresh, err := f.sessions.Create(context.Background(), uid.String(), string(token.RoleMember), "phone", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := f.tokens.Issue(uid.String(), sess.ID, token.RoleMember)
		if err != nil {
			t.Fatal(err)
		}
		requireAccepted(t, f.authn, tok, "live session")
		if _, _, err := f.sessions.Refresh(context.Background(), refresh); err != nil {
			t.Fatal(err)
		}
		requireAccepted(t, f.authn, tok, "after a rotation")
		if _, _, err := f.sessions.Refresh(context.Background(), refresh); !errors.Is(err, session.ErrRefreshReused) {
			t.Fatalf("Refresh with a rotated token = %v, want reuse", err)
		}
		requireRefused(t, f.authn, tok, errSessionEnded, "session ended by reuse")
	})

	t.Run("ForgetSessions", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Hour})
		uid := uuid.Must(uuid.NewV7())
		a, aClaims := f.signIn(t, uid)
		b, bClaims := f.signIn(t, uid)
		c, cClaims := f.signIn(t)
		for _, tok := range []string{a, b, c} {
			requireAccepted(t, f.authn, tok, "live session")
		}
		for _, sid := range []string{aClaims.SessionID, bClaims.SessionID, cClaims.SessionID} {
			f.dropBehindTheCache(t, sid)
		}
		// A revocation naming one session drops that one only...
		f.authn.ForgetSessions(uid.String(), aClaims.SessionID)
		requireRefused(t, f.authn, a, errSessionEnded, "named session")
		requireAccepted(t, f.authn, b, "the subject's other session, still cached")
		// ...one naming none drops every session of the subject...
		f.authn.ForgetSessions(uid.String())
		requireRefused(t, f.authn, b, errSessionEnded, "every session of the subject")
		requireAccepted(t, f.authn, c, "another subject's session, still cached")
		// ...and missed revocations drop everything.
		f.authn.ForgetAllSessions()
		requireRefused(t, f.authn, c, errSessionEnded, "after ForgetAllSessions")
	})

	t.Run("StopCachingSessions", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Hour})
		tok, claims := f.signIn(t)
		requireAccepted(t, f.authn, tok, "live session")
		f.authn.StopCachingSessions()
		requireAccepted(t, f.authn, tok, "live session, asked again")
		if n := f.authn.alive.len(); n != 0 {
			t.Fatalf("%d sessions cached after StopCachingSessions", n)
		}
		f.dropBehindTheCache(t, claims.SessionID)
		requireRefused(t, f.authn, tok, errSessionEnded, "ended session")
	})

	t.Run("AliveAnsweredBeforeAForgetIsNotCached", func(t *testing.T) {
		t.Parallel()
		// Redis said alive; then, before the answer is stored, a
		// revocation is heard. Storing it would outlive the revocation.
		c := newLivenessCache(8, time.Hour, time.Now)
		hit, gen := c.alive("s1")
		if hit {
			t.Fatal("hit in an empty cache")
		}
		c.forget("u1", "s1")
		c.put("u1", "s1", gen)
		if hit, _ := c.alive("s1"); hit {
			t.Fatal("an answer older than a revocation was cached")
		}
		_, gen = c.alive("s1")
		c.put("u1", "s1", gen)
		if hit, _ := c.alive("s1"); !hit {
			t.Fatal("a fresh answer was not cached")
		}
	})

	t.Run("BoundedAndIndexedBySubject", func(t *testing.T) {
		t.Parallel()
		c := newLivenessCache(2, time.Hour, time.Now)
		for _, sid := range []string{"s1", "s2", "s3"} {
			_, gen := c.alive(sid)
			c.put("u1", sid, gen)
		}
		if n := c.len(); n != 2 {
			t.Fatalf("%d sessions cached, want the cap of 2", n)
		}
		if n := len(c.bySubject["u1"]); n != 2 {
			t.Fatalf("subject index holds %d sessions, want 2", n)
		}
		c.forget("u1")
		if c.len() != 0 || len(c.bySubject) != 0 {
			t.Fatalf("after forgetting the subject: %d entries, index %v", c.len(), c.bySubject)
		}
	})

	t.Run("RedisFailureFailsClosed", func(t *testing.T) {
		t.Parallel()
		f := newCacheFixture(t, session.Options{}, Config{SessionCacheTTL: time.Second})
		tok, _ := f.signIn(t)
		opts, err := redis.ParseURL(f.redis.URL)
		if err != nil {
			t.Fatal(err)
		}
		client := redis.NewClient(opts)
		sessions := session.NewStore(client, f.redis.Prefix, session.Options{})
		authn := New(Config{Tokens: f.tokens, Sessions: sessions, SessionCacheTTL: time.Second, Now: f.cacheClock.now})
		requireAccepted(t, authn, tok, "live session")
		if err := client.Close(); err != nil {
			t.Fatal(err)
		}
		f.cacheClock.advance(time.Second)
		_, err = authn.Authenticate(context.Background(), "Bearer "+tok)
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Code != apperr.CodeUnavailable {
			t.Fatalf("Authenticate with Redis gone = %v, want unavailable", err)
		}
	})
}

// BenchmarkAuthenticate measures what authenticating one RPC costs, with
// and without the caches, against the test Redis.
func BenchmarkAuthenticate(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"Uncached", Config{TokenCacheSize: -1, SessionCacheTTL: -1}},
		{"TokenCached", Config{SessionCacheTTL: -1}},
		{"Cached", Config{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newCacheFixture(b, session.Options{}, bc.cfg)
			// On the real clock, so the session cache expires as in
			// production: one Redis round trip per session a second.
			bc.cfg.Tokens, bc.cfg.Sessions = f.tokens, f.sessions
			f.authn = New(bc.cfg)
			tok, _ := f.signIn(b)
			header := "Bearer " + tok
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.authn.Authenticate(ctx, header); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
