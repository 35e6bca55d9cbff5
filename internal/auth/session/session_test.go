package session

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// clock is a settable test clock, safe for concurrent use.
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

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	r     *testkit.Redis
	store *Store
	clock *clock
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	r := testkit.NewRedis(t)
	c := newClock()
	if opts.Now == nil {
		opts.Now = c.Now
	}
	return &fixture{r: r, store: NewStore(r.Client, r.Prefix, opts), clock: c}
}

func (f *fixture) create(t testing.TB, userID string) (Session, string) {
	t.Helper()
	sess, tok, err := f.store.Create(context.Background(), userID, "member", "Pixel 9", "203.0.113.7", "nxg-android/1.0")
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return sess, tok
}

func mustAlive(t testing.TB, s *Store, sid string, want bool) {
	t.Helper()
	got, err := s.Alive(context.Background(), sid)
	if err != nil {
		t.Fatalf("Alive(%s): %v", sid, err)
	}
	if got != want {
		t.Fatalf("Alive(%s) = %v, want %v", sid, got, want)
	}
}

// keys returns every key under the fixture's prefix.
func (f *fixture) keys(t testing.TB) []string {
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

// values returns every string stored under the fixture's prefix: key names,
// hash fields and values, set members, string values.
func (f *fixture) values(t testing.TB) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, k := range f.keys(t) {
		out = append(out, k)
		typ, err := f.r.Client.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "string":
			out = append(out, f.r.Client.Get(ctx, k).Val())
		case "hash":
			for fk, fv := range f.r.Client.HGetAll(ctx, k).Val() {
				out = append(out, fk, fv)
			}
		case "zset":
			out = append(out, f.r.Client.ZRange(ctx, k, 0, -1).Val()...)
		default:
			t.Fatalf("key %s has unexpected type %s", k, typ)
		}
	}
	return out
}

func TestCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AliveGetList", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "user-1")
		if len(tok) != 43 || strings.ContainsAny(tok, "+/=") {
			t.Fatalf("token %q is not 43 chars of unpadded base64url", tok)
		}
		id, err := uuid.Parse(sess.ID)
		if err != nil || id.Version() != 7 {
			t.Fatalf("session id %q is not a UUIDv7 (%v)", sess.ID, err)
		}
		now := f.clock.Now()
		if !sess.CreatedAt.Equal(now) || !sess.LastSeenAt.Equal(now) || !sess.ExpiresAt.Equal(now.Add(DefaultRefreshTTL)) {
			t.Fatalf("times = %v / %v / %v, want created=seen=%v, expires +7d", sess.CreatedAt, sess.LastSeenAt, sess.ExpiresAt, now)
		}
		mustAlive(t, f.store, sess.ID, true)

		got, err := f.store.Get(ctx, sess.ID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got != sess {
			t.Fatalf("Get = %+v, want %+v", got, sess)
		}
		want := Session{ID: sess.ID, UserID: "user-1", Role: "member", DeviceName: "Pixel 9", IP: "203.0.113.7",
			UserAgent: "nxg-android/1.0", CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(DefaultRefreshTTL)}
		if got != want {
			t.Fatalf("Get = %+v, want %+v", got, want)
		}

		list, err := f.store.List(ctx, "user-1")
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(list) != 1 || list[0] != sess {
			t.Fatalf("List = %+v, want [%+v]", list, sess)
		}
		if other, _ := f.store.List(ctx, "user-2"); len(other) != 0 {
			t.Fatalf("List(other user) = %+v, want none", other)
		}
	})

	t.Run("EmptyUserRefused", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		if _, _, err := f.store.Create(ctx, "", "member", "", "", ""); err == nil {
			t.Fatal("Create with empty user id succeeded")
		}
	})

	t.Run("LongClientStringsTruncated", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		ua := strings.Repeat("é", 1000) // 2 bytes each
		sess, _, err := f.store.Create(ctx, "u", "member", strings.Repeat("d", 1000), "1.2.3.4", ua)
		if err != nil {
			t.Fatal(err)
		}
		if len(sess.DeviceName) != maxDeviceNameBytes || len(sess.UserAgent) != maxUserAgentBytes {
			t.Fatalf("lengths %d/%d, want %d/%d", len(sess.DeviceName), len(sess.UserAgent), maxDeviceNameBytes, maxUserAgentBytes)
		}
		got, err := f.store.Get(ctx, sess.ID)
		if err != nil || got != sess {
			t.Fatalf("Get = %+v, %v; want %+v", got, err, sess)
		}
	})

	t.Run("ListNewestFirst", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		var ids []string
		for range 3 {
			s, _ := f.create(t, "u")
			ids = append(ids, s.ID)
			f.clock.Advance(time.Second)
		}
		list, err := f.store.List(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 || list[0].ID != ids[2] || list[1].ID != ids[1] || list[2].ID != ids[0] {
			t.Fatalf("List order = %v, want newest first %v", sessionIDs(list), []string{ids[2], ids[1], ids[0]})
		}
	})

	t.Run("MaxSessionsEvictsLeastRecentlySeen", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{MaxSessionsPerUser: 3})
		var sess []Session
		var toks []string
		for range 3 {
			s, tok := f.create(t, "u")
			sess, toks = append(sess, s), append(toks, tok)
			f.clock.Advance(2 * time.Minute)
		}
		// The oldest is used again, so the second becomes least recently seen.
		if err := f.store.Touch(ctx, sess[0].ID, "198.51.100.1"); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(time.Minute)
		newest, _ := f.create(t, "u")

		mustAlive(t, f.store, sess[1].ID, false)
		if _, _, err := f.store.Refresh(ctx, toks[1]); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("refresh of evicted session: %v, want ErrRefreshInvalid", err)
		}
		for _, id := range []string{sess[0].ID, sess[2].ID, newest.ID} {
			mustAlive(t, f.store, id, true)
		}
		list, err := f.store.List(ctx, "u")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Fatalf("List has %d sessions, want 3: %v", len(list), sessionIDs(list))
		}
		// Another user is not affected by this user's cap.
		other, _ := f.create(t, "v")
		mustAlive(t, f.store, other.ID, true)
		mustAlive(t, f.store, sess[0].ID, true)
	})

	t.Run("ExpiredIndexEntriesPruned", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{MaxSessionsPerUser: 2})
		old1, _ := f.create(t, "u")
		old2, _ := f.create(t, "u")
		f.clock.Advance(DefaultRefreshTTL + time.Second)
		mustAlive(t, f.store, old1.ID, false)
		if _, err := f.store.Get(ctx, old2.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get expired: %v, want ErrNotFound", err)
		}
		list, err := f.store.List(ctx, "u")
		if err != nil || len(list) != 0 {
			t.Fatalf("List = %v, %v; want empty", sessionIDs(list), err)
		}
		if n := f.r.Client.Exists(ctx, f.store.sessKey(old1.ID), f.store.sessKey(old2.ID)).Val(); n != 0 {
			t.Fatalf("%d expired records left after List", n)
		}
		// Create also prunes: two new sessions fit under the cap of 2.
		a, _ := f.create(t, "u")
		b, _ := f.create(t, "u")
		mustAlive(t, f.store, a.ID, true)
		mustAlive(t, f.store, b.ID, true)
		if n := f.r.Client.ZCard(ctx, f.store.userKey("u")).Val(); n != 2 {
			t.Fatalf("index holds %d entries, want 2", n)
		}
	})
}

func sessionIDs(ss []Session) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RotatesAndExtends", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		f.clock.Advance(3 * time.Hour)
		got, tok2, err := f.store.Refresh(ctx, tok)
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if tok2 == "" || tok2 == tok {
			t.Fatalf("new token %q not rotated", tok2)
		}
		now := f.clock.Now()
		if got.ID != sess.ID || got.UserID != "u" || got.Role != "member" || !got.CreatedAt.Equal(sess.CreatedAt) ||
			!got.LastSeenAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(DefaultRefreshTTL)) {
			t.Fatalf("Refresh session = %+v", got)
		}
		if g, _ := f.store.Get(ctx, sess.ID); g != got {
			t.Fatalf("Get after refresh = %+v, want %+v", g, got)
		}
		// The session TTL now runs from the refresh.
		if ttl := f.r.Client.PTTL(ctx, f.store.sessKey(sess.ID)).Val(); ttl < DefaultRefreshTTL-time.Minute {
			t.Fatalf("session TTL %v after refresh, want ~%v", ttl, DefaultRefreshTTL)
		}
		// The new token works in turn.
		if _, tok3, err := f.store.Refresh(ctx, tok2); err != nil || tok3 == "" {
			t.Fatalf("second refresh: %v", err)
		}
	})

	t.Run("ReuseRevokesFamily", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		other, otherTok := f.create(t, "u")
		_, tok2, err := f.store.Refresh(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		got, tok3, err := f.store.Refresh(ctx, tok)
		if !errors.Is(err, ErrRefreshReused) || errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("reuse: err = %v, want ErrRefreshReused", err)
		}
		if tok3 != "" {
			t.Fatal("reuse returned a token")
		}
		if got.ID != sess.ID || got.UserID != "u" || got.DeviceName != "Pixel 9" {
			t.Fatalf("reuse returned session %+v, want the revoked one for auditing", got)
		}
		if e, ok := apperr.As(err); !ok || e.Code != apperr.CodeUnauthenticated {
			t.Fatalf("reuse error %v is not an apperr Unauthenticated", err)
		}
		mustAlive(t, f.store, sess.ID, false)
		if _, _, err := f.store.Refresh(ctx, tok2); !errors.Is(err, ErrRefreshInvalid) && !errors.Is(err, ErrRefreshReused) {
			t.Fatalf("new token after reuse: %v, want refused", err)
		}
		// Presenting the used token again: family gone, so plain invalid.
		if _, _, err := f.store.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("used token of dead family: %v, want ErrRefreshInvalid", err)
		}
		// The user's other session is untouched.
		mustAlive(t, f.store, other.ID, true)
		if _, _, err := f.store.Refresh(ctx, otherTok); err != nil {
			t.Fatalf("other session's refresh: %v", err)
		}
		if list, _ := f.store.List(ctx, "u"); len(list) != 1 || list[0].ID != other.ID {
			t.Fatalf("List = %v, want only %s", sessionIDs(list), other.ID)
		}
	})

	t.Run("ConcurrentSameTokenOneWins", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		const n = 20
		var (
			wg       sync.WaitGroup
			start    = make(chan struct{})
			success  atomic.Int32
			mu       sync.Mutex
			newToks  []string
			failures []error
		)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, nt, err := f.store.Refresh(ctx, tok)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					success.Add(1)
					newToks = append(newToks, nt)
					return
				}
				failures = append(failures, err)
			}()
		}
		close(start)
		wg.Wait()
		if success.Load() != 1 || len(failures) != n-1 {
			t.Fatalf("%d successes, %d failures; want 1 and %d", success.Load(), len(failures), n-1)
		}
		for _, err := range failures {
			if !errors.Is(err, ErrRefreshInvalid) && !errors.Is(err, ErrRefreshReused) {
				t.Fatalf("failure %v is neither invalid nor reused", err)
			}
		}
		// At most one token of the family works afterwards (strict reuse
		// detection revokes the family, so usually none does).
		working := 0
		for _, nt := range append(newToks, tok) {
			if _, _, err := f.store.Refresh(ctx, nt); err == nil {
				working++
			}
		}
		if working > 1 {
			t.Fatalf("%d tokens still work, want at most 1", working)
		}
		alive, _ := f.store.Alive(ctx, sess.ID)
		t.Logf("session alive after the race: %v", alive)
	})

	t.Run("ExpiredByClock", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		f.clock.Advance(DefaultRefreshTTL)
		if _, _, err := f.store.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("expired token: %v, want ErrRefreshInvalid", err)
		}
		mustAlive(t, f.store, sess.ID, false)
		if n := f.r.Client.Exists(ctx, f.store.sessKey(sess.ID)).Val(); n != 0 {
			t.Fatal("expired session record not deleted on refresh")
		}
	})

	t.Run("UsedTokenOfExpiredFamilyInvalid", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		if _, _, err := f.store.Refresh(ctx, tok); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(DefaultRefreshTTL + time.Millisecond)
		if got, _, err := f.store.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("used token of expired family: %v (%+v), want ErrRefreshInvalid", err, got)
		}
		mustAlive(t, f.store, sess.ID, false)
	})

	t.Run("ExpiredByRedisTTL", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{RefreshTTL: 2 * time.Second, Now: time.Now})
		sess, tok := f.create(t, "u")
		deadline := time.Now().Add(10 * time.Second)
		for f.r.Client.Exists(ctx, f.store.sessKey(sess.ID), f.store.userKey("u")).Val() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("session keys did not expire within 10s of a 2s TTL")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, _, err := f.store.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("expired token: %v, want ErrRefreshInvalid", err)
		}
		mustAlive(t, f.store, sess.ID, false)
		if keys := f.keys(t); len(keys) != 0 {
			t.Fatalf("keys left after expiry: %v", keys)
		}
	})

	t.Run("MalformedWithoutRoundTrip", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		_, tok := f.create(t, "u")
		var calls atomic.Int32
		f.r.Client.AddHook(countHook{&calls})
		bad := []string{
			"",
			"short",
			tok + "A",                 // too long
			strings.Repeat("A", 4096), // far too long
			"!" + tok[1:],             // not base64url
			"+" + tok[1:],             // standard alphabet, not url
			tok[:42] + "=",            // padding
			tok[:42] + "B",            // non-canonical trailing bits (43rd char must encode 2 bits)
			strings.Repeat("\x00", 43),
		}
		for _, b := range bad {
			if _, _, err := f.store.Refresh(ctx, b); !errors.Is(err, ErrRefreshInvalid) {
				t.Fatalf("Refresh(%q) = %v, want ErrRefreshInvalid", b, err)
			}
		}
		if c := calls.Load(); c != 0 {
			t.Fatalf("%d Redis commands for malformed tokens, want 0", c)
		}
		// A well-formed unknown token does ask Redis, and is invalid.
		unknown, _ := newToken()
		if _, _, err := f.store.Refresh(ctx, unknown); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("unknown token: %v, want ErrRefreshInvalid", err)
		}
		if calls.Load() == 0 {
			t.Fatal("hook saw no command: the zero count above proves nothing")
		}
	})
}

// countHook counts the commands a client sends.
type countHook struct{ n *atomic.Int32 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int32(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("OwnSession", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, tok := f.create(t, "u")
		ok, err := f.store.Revoke(ctx, "u", sess.ID)
		if err != nil || !ok {
			t.Fatalf("Revoke = %v, %v; want true", ok, err)
		}
		mustAlive(t, f.store, sess.ID, false)
		if _, _, err := f.store.Refresh(ctx, tok); !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("refresh after revoke: %v, want ErrRefreshInvalid", err)
		}
		if _, err := f.store.Get(ctx, sess.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after revoke: %v, want ErrNotFound", err)
		}
		if ok, _ := f.store.Revoke(ctx, "u", sess.ID); ok {
			t.Fatal("second Revoke reported true")
		}
		if keys := f.keys(t); len(keys) != 0 {
			t.Fatalf("keys left after revoking the only session: %v", keys)
		}
	})

	t.Run("OtherUsersSessionRefused", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		victim, tok := f.create(t, "victim")
		ok, err := f.store.Revoke(ctx, "attacker", victim.ID)
		if err != nil || ok {
			t.Fatalf("Revoke(other user's) = %v, %v; want false", ok, err)
		}
		mustAlive(t, f.store, victim.ID, true)
		if _, _, err := f.store.Refresh(ctx, tok); err != nil {
			t.Fatalf("victim's refresh after refused revoke: %v", err)
		}
	})

	t.Run("UnknownOrMalformedID", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		for _, id := range []string{"", "nope", uuid.Must(uuid.NewV7()).String(), "../../x"} {
			if ok, err := f.store.Revoke(ctx, "u", id); ok || err != nil {
				t.Fatalf("Revoke(%q) = %v, %v", id, ok, err)
			}
			mustAlive(t, f.store, id, false)
			if _, err := f.store.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(%q) = %v, want ErrNotFound", id, err)
			}
			if err := f.store.Touch(ctx, id, "1.2.3.4"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Touch(%q) = %v, want ErrNotFound", id, err)
			}
		}
	})

	t.Run("ExpiredSessionNotRevoked", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, _ := f.create(t, "u")
		f.clock.Advance(DefaultRefreshTTL + time.Second)
		if ok, err := f.store.Revoke(ctx, "u", sess.ID); ok || err != nil {
			t.Fatalf("Revoke(expired) = %v, %v; want false", ok, err)
		}
	})

	t.Run("AllExceptCurrent", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		var ids []string
		for range 4 {
			s, _ := f.create(t, "u")
			ids = append(ids, s.ID)
		}
		bystander, _ := f.create(t, "someone-else")
		n, err := f.store.RevokeAll(ctx, "u", ids[2])
		if err != nil || n != 3 {
			t.Fatalf("RevokeAll = %d, %v; want 3", n, err)
		}
		for i, id := range ids {
			mustAlive(t, f.store, id, i == 2)
		}
		mustAlive(t, f.store, bystander.ID, true)
		list, _ := f.store.List(ctx, "u")
		if len(list) != 1 || list[0].ID != ids[2] {
			t.Fatalf("List = %v, want [%s]", sessionIDs(list), ids[2])
		}

		n, err = f.store.RevokeAll(ctx, "u", "")
		if err != nil || n != 1 {
			t.Fatalf("RevokeAll(all) = %d, %v; want 1", n, err)
		}
		mustAlive(t, f.store, ids[2], false)
		if n, _ := f.store.RevokeAll(ctx, "u", ""); n != 0 {
			t.Fatalf("RevokeAll on nothing = %d", n)
		}
	})

	t.Run("AllCountsOnlyLive", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		f.create(t, "u")
		f.clock.Advance(DefaultRefreshTTL)
		live, _ := f.create(t, "u")
		n, err := f.store.RevokeAll(ctx, "u", "")
		if err != nil || n != 1 {
			t.Fatalf("RevokeAll = %d, %v; want 1", n, err)
		}
		mustAlive(t, f.store, live.ID, false)
		if keys := f.keys(t); len(keys) != 0 {
			t.Fatalf("keys left: %v", keys)
		}
	})
}

func TestTouch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("AtMostOncePerMinute", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, _ := f.create(t, "u")
		f.clock.Advance(30 * time.Second)
		if err := f.store.Touch(ctx, sess.ID, "198.51.100.2"); err != nil {
			t.Fatal(err)
		}
		if g, _ := f.store.Get(ctx, sess.ID); !g.LastSeenAt.Equal(sess.LastSeenAt) || g.IP != sess.IP {
			t.Fatalf("Touch within a minute wrote: %+v", g)
		}
		f.clock.Advance(30 * time.Second)
		if err := f.store.Touch(ctx, sess.ID, "198.51.100.2"); err != nil {
			t.Fatal(err)
		}
		g, _ := f.store.Get(ctx, sess.ID)
		if !g.LastSeenAt.Equal(f.clock.Now()) || g.IP != "198.51.100.2" {
			t.Fatalf("Touch after a minute: %+v", g)
		}
		if !g.ExpiresAt.Equal(sess.ExpiresAt) {
			t.Fatal("Touch moved the expiry; only Refresh may")
		}
		score := f.r.Client.ZScore(ctx, f.store.userKey("u"), sess.ID).Val()
		if int64(score) != f.clock.Now().UnixMilli() {
			t.Fatalf("index score %v, want %d", score, f.clock.Now().UnixMilli())
		}
	})

	t.Run("DeadSession", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		sess, _ := f.create(t, "u")
		f.clock.Advance(DefaultRefreshTTL)
		if err := f.store.Touch(ctx, sess.ID, "1.2.3.4"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Touch(expired) = %v, want ErrNotFound", err)
		}
	})
}

func TestStorage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// exercise creates a variety of keys: sessions, refreshed and reused
	// families, touched sessions; it returns every plaintext token issued.
	exercise := func(t *testing.T, f *fixture) []string {
		var toks []string
		s1, t1 := f.create(t, "u1")
		_, t2 := f.create(t, "u1")
		_, t3 := f.create(t, "u2")
		toks = append(toks, t1, t2, t3)
		f.clock.Advance(2 * time.Minute)
		if err := f.store.Touch(ctx, s1.ID, "192.0.2.1"); err != nil {
			t.Fatal(err)
		}
		_, t4, err := f.store.Refresh(ctx, t2)
		if err != nil {
			t.Fatal(err)
		}
		_, t5, err := f.store.Refresh(ctx, t4)
		if err != nil {
			t.Fatal(err)
		}
		_, t6, err := f.store.Refresh(ctx, t3)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.store.Refresh(ctx, t3); !errors.Is(err, ErrRefreshReused) {
			t.Fatal(err)
		}
		return append(toks, t4, t5, t6)
	}

	t.Run("EveryKeyHasTTL", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		exercise(t, f)
		keys := f.keys(t)
		kinds := map[string]bool{}
		for _, k := range keys {
			ttl, err := f.r.Client.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl <= 0 || ttl > DefaultRefreshTTL {
				t.Errorf("key %s has TTL %v, want in (0, 7d]", k, ttl)
			}
			rest := strings.TrimPrefix(k, f.r.Prefix)
			kinds[rest[:strings.IndexByte(rest, ':')]] = true
		}
		for _, want := range []string{"sess", "user-sess", "rt", "rt-used"} {
			if !kinds[want] {
				t.Errorf("no %s key was created; kinds seen: %v", want, kinds)
			}
		}
	})

	t.Run("NoPlaintextTokens", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, Options{})
		toks := exercise(t, f)
		for _, v := range f.values(t) {
			for _, tok := range toks {
				if strings.Contains(v, tok) {
					t.Fatalf("stored value %q contains a plaintext refresh token", v)
				}
				// Nor the raw bytes, in case someone stores them undecoded.
				raw, _ := tokenEncoding.DecodeString(tok)
				if strings.Contains(v, string(raw)) {
					t.Fatalf("stored value %q contains raw token bytes", v)
				}
			}
		}
	})

	t.Run("RedisDown", func(t *testing.T) {
		t.Parallel()
		client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
		defer client.Close()
		s := NewStore(client, "x:", Options{})
		tok, _ := newToken()
		sid := uuid.Must(uuid.NewV7()).String()
		checks := map[string]error{}
		_, _, checks["Create"] = s.Create(ctx, "u", "member", "", "", "")
		_, _, checks["Refresh"] = s.Refresh(ctx, tok)
		_, checks["Alive"] = s.Alive(ctx, sid)
		_, checks["Get"] = s.Get(ctx, sid)
		checks["Touch"] = s.Touch(ctx, sid, "")
		_, checks["List"] = s.List(ctx, "u")
		_, checks["Revoke"] = s.Revoke(ctx, "u", sid)
		_, checks["RevokeAll"] = s.RevokeAll(ctx, "u", "")
		for op, err := range checks {
			if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrRefreshInvalid) {
				t.Errorf("%s with Redis down: %v, want a connection error", op, err)
			}
			if _, ok := apperr.As(err); ok {
				t.Errorf("%s: Redis failure surfaced as an apperr: %v", op, err)
			}
		}
	})
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	s := NewStore(nil, "p:", Options{})
	if s.ttl != DefaultRefreshTTL || s.max != DefaultMaxSessionsPerUser || s.now == nil {
		t.Fatalf("defaults: ttl %v max %d", s.ttl, s.max)
	}
	if ErrRefreshInvalid == ErrRefreshReused || errors.Is(ErrRefreshReused, ErrRefreshInvalid) {
		t.Fatal("sentinels are not distinct")
	}
	if got := truncate("aé", 2); got != "a" {
		t.Fatalf("truncate split a rune: %q", got)
	}
}

func BenchmarkAlive(b *testing.B) {
	f := newFixture(b, Options{})
	sess, _ := f.create(b, "u")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ok, err := f.store.Alive(ctx, sess.ID)
		if err != nil || !ok {
			b.Fatalf("Alive = %v, %v", ok, err)
		}
	}
}

func BenchmarkRefresh(b *testing.B) {
	f := newFixture(b, Options{})
	_, tok := f.create(b, "u")
	ctx := context.Background()
	for b.Loop() {
		var err error
		if _, tok, err = f.store.Refresh(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
