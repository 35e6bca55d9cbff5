package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// guardTest is a stream guard over a real hub and a real session store.
type guardTest struct {
	db       *testkit.Database
	identity *identityFixture
	floor    Floor
	guard    *streamGuard
	drain    context.CancelFunc
}

func setupGuard(t *testing.T, settings floor.Settings) *guardTest {
	t.Helper()
	db := testkit.NewDatabase(t)
	g := &guardTest{db: db, identity: newIdentity(t, db), floor: newFloor(t, db)}
	draining, drain := context.WithCancel(context.Background())
	t.Cleanup(drain)
	g.drain = drain
	g.guard = newStreamGuard(g.floor.Hub, settings, draining, slog.New(slog.DiscardHandler)).checkSessions(g.identity.Sessions)
	return g
}

// principal starts a live session of a new subject (or of subject when
// given) with role and returns who it is.
func (g *guardTest) principal(t testing.TB, role token.Role, subject ...uuid.UUID) auth.Principal {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if len(subject) > 0 {
		id = subject[0]
	}
	sess, _, err := g.identity.Sessions.Create(context.Background(), id.String(), string(role), "guard test", "192.0.2.1", "guard-test")
	if err != nil {
		t.Fatal(err)
	}
	p := auth.Principal{UserID: id, SessionID: sess.ID, Role: role}
	if role == token.RoleDevice {
		p.Device = &auth.Device{ID: id, BranchID: uuid.Must(uuid.NewV7()), Kind: auth.DeviceKiosk}
	}
	return p
}

func (g *guardTest) admit(t testing.TB, ctx context.Context, p auth.Principal) context.Context {
	t.Helper()
	sctx, release, err := g.guard.admit(ctx, p)
	if err != nil {
		t.Fatalf("admit %s: %v", p.UserID, err)
	}
	t.Cleanup(release)
	return sctx
}

func (g *guardTest) notify(t testing.TB, r floor.Revocation) {
	t.Helper()
	if err := floor.NotifyRevocation(context.Background(), g.db.Pool, r); err != nil {
		t.Fatal(err)
	}
}

// requireEnded waits for ctx to end and checks what streamEnd makes of it.
func requireEnded(t testing.TB, ctx context.Context, code connect.Code, msg string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
	err := streamEnd(ctx)
	if code == 0 {
		if err != nil {
			t.Fatalf("streamEnd = %v, want nil", err)
		}
		return
	}
	requireAuthCode(t, apiErrorOf(err), code, msg)
}

func requireOpen(t testing.TB, ctx context.Context, what string) {
	t.Helper()
	if ctx.Err() != nil {
		t.Fatalf("%s ended: %v", what, context.Cause(ctx))
	}
	if err := streamEnd(ctx); err != nil {
		t.Fatalf("streamEnd of an open stream = %v", err)
	}
}

// barrier sends a revocation of nobody's stream and waits until the guard
// has handled it: the hub delivers in order, so everything sent before
// has been handled too.
func (g *guardTest) barrier(t testing.TB) {
	t.Helper()
	p := g.principal(t, token.RoleMember)
	ctx := g.admit(t, context.Background(), p)
	g.notify(t, floor.Revocation{Subject: p.UserID})
	requireEnded(t, ctx, connect.CodeUnauthenticated, "session ended")
}

func TestStreamGuard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CapsPerAccountAndDevice", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{MaxStreamsPerUser: 2, MaxStreamsPerDevice: 1})
		member := g.principal(t, token.RoleMember)
		// The cap is per account, whichever session opens the streams.
		phone := g.principal(t, token.RoleMember, member.UserID)
		_, release, err := g.guard.admit(ctx, member)
		if err != nil {
			t.Fatal(err)
		}
		g.admit(t, ctx, phone)
		_, _, err = g.guard.admit(ctx, member)
		ce := requireAuthCode(t, apiErrorOf(err), connect.CodeResourceExhausted, "MaxStreamsPerUser")
		if len(ce.Details()) == 0 {
			t.Fatal("resource_exhausted without retry info")
		}
		// Another account has its own allowance.
		g.admit(t, ctx, g.principal(t, token.RoleStaff))
		release()
		release() // releasing twice is harmless
		g.admit(t, ctx, member)

		device := g.principal(t, token.RoleDevice)
		g.admit(t, ctx, device)
		_, _, err = g.guard.admit(ctx, device)
		requireAuthCode(t, apiErrorOf(err), connect.CodeResourceExhausted, "MaxStreamsPerDevice")
	})

	t.Run("DefaultCaps", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		member := g.principal(t, token.RoleMember)
		for range 8 {
			g.admit(t, ctx, member)
		}
		_, _, err := g.guard.admit(ctx, member)
		requireAuthCode(t, apiErrorOf(err), connect.CodeResourceExhausted, "8 live streams")
	})

	t.Run("ClientGoneIsNoError", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		cctx, cancel := context.WithCancel(ctx)
		sctx := g.admit(t, cctx, g.principal(t, token.RoleMember))
		requireOpen(t, sctx, "the stream")
		cancel()
		requireEnded(t, sctx, 0, "")
	})

	t.Run("RevocationOfTheSubjectEndsAllItsStreams", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		device := g.principal(t, token.RoleDevice)
		other := g.principal(t, token.RoleDevice)
		a, b := g.admit(t, ctx, device), g.admit(t, ctx, device)
		untouched := g.admit(t, ctx, other)
		g.notify(t, floor.Revocation{Subject: device.UserID})
		requireEnded(t, a, connect.CodeUnauthenticated, "session ended")
		requireEnded(t, b, connect.CodeUnauthenticated, "session ended")
		g.barrier(t)
		requireOpen(t, untouched, "another device's stream")
	})

	t.Run("RevocationOfOneSessionEndsOnlyItsStreams", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		phone := g.principal(t, token.RoleMember)
		laptop := g.principal(t, token.RoleMember, phone.UserID)
		onPhone, onLaptop := g.admit(t, ctx, phone), g.admit(t, ctx, laptop)
		if _, err := g.identity.Sessions.Revoke(ctx, phone.UserID.String(), phone.SessionID); err != nil {
			t.Fatal(err)
		}
		g.notify(t, floor.Revocation{Subject: phone.UserID, SessionID: phone.SessionID})
		requireEnded(t, onPhone, connect.CodeUnauthenticated, "session ended")
		g.barrier(t)
		requireOpen(t, onLaptop, "the other session's stream")
	})

	t.Run("RevocationRechecksTheSubjectsOtherSessions", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		kept := g.principal(t, token.RoleMember)
		ended := g.principal(t, token.RoleMember, kept.UserID)
		unnamed := g.principal(t, token.RoleMember, kept.UserID)
		onKept, onUnnamed := g.admit(t, ctx, kept), g.admit(t, ctx, unnamed)
		// A password change ended every session but one; the revocation
		// names only one of those it ended.
		if _, err := g.identity.Sessions.RevokeAll(ctx, kept.UserID.String(), kept.SessionID); err != nil {
			t.Fatal(err)
		}
		g.notify(t, floor.Revocation{Subject: kept.UserID, SessionID: ended.SessionID})
		requireEnded(t, onUnnamed, connect.CodeUnauthenticated, "session ended")
		g.barrier(t)
		requireOpen(t, onKept, "the session kept")
	})

	t.Run("DrainingEndsEveryStream", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		a := g.admit(t, ctx, g.principal(t, token.RoleMember))
		b := g.admit(t, ctx, g.principal(t, token.RoleDevice))
		g.drain()
		requireEnded(t, a, connect.CodeUnavailable, "server is shutting down; reconnect")
		requireEnded(t, b, connect.CodeUnavailable, "server is shutting down; reconnect")
		_, _, err := g.guard.admit(ctx, g.principal(t, token.RoleMember))
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnavailable, "shutting down")
	})

	t.Run("DeadSessionNotAdmitted", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{MaxStreamsPerUser: 1})
		p := g.principal(t, token.RoleMember)
		if _, err := g.identity.Sessions.RevokeAll(ctx, p.UserID.String(), ""); err != nil {
			t.Fatal(err)
		}
		_, _, err := g.guard.admit(ctx, p)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "session ended")
		// The refused stream did not use up the allowance.
		live := g.principal(t, token.RoleMember, p.UserID)
		g.admit(t, ctx, live)
	})

	t.Run("ResyncRechecksSessions", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		revoked := g.principal(t, token.RoleMember)
		alive := g.principal(t, token.RoleMember)
		onRevoked, onAlive := g.admit(t, ctx, revoked), g.admit(t, ctx, alive)
		// The session ends while the guard is not told (the notification
		// was lost with the listener's connection); the hub reconnects
		// and the guard asks the store.
		if _, err := g.identity.Sessions.RevokeAll(ctx, revoked.UserID.String(), ""); err != nil {
			t.Fatal(err)
		}
		connects := g.floor.Hub.Stats().Connects
		if _, err := g.db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, realtime.DefaultApplicationName); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the hub to reconnect", func() bool { return g.floor.Hub.Stats().Connects > connects && g.floor.Hub.Ready() })
		requireEnded(t, onRevoked, connect.CodeUnauthenticated, "session ended")
		g.barrier(t)
		requireOpen(t, onAlive, "a live session's stream")
	})

	t.Run("DroppedSubscriptionRechecksSessions", func(t *testing.T) {
		t.Parallel()
		db := testkit.NewDatabase(t)
		identity := newIdentity(t, db)
		// A hub with one-event buffers, and a store that the test can hold
		// up: while the guard waits on it, the next revocations overflow
		// the guard's buffer and the hub drops its subscription.
		hub := realtime.NewHub(realtime.Options{DatabaseURL: db.URL, Channels: floor.Channels, Buffer: 1, Logger: slog.New(slog.DiscardHandler)})
		hctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = hub.Run(hctx) }()
		t.Cleanup(func() { stop(); <-done })
		waitUntil(t, "the hub to connect", hub.Ready)
		held := &heldSessions{store: identity.Sessions, gate: make(chan struct{})}
		guard := newStreamGuard(hub, floor.Settings{}, ctx, slog.New(slog.DiscardHandler)).checkSessions(held)
		g := &guardTest{db: db, identity: identity, guard: guard}

		missed := g.principal(t, token.RoleMember)
		kept := g.principal(t, token.RoleMember)
		onMissed, onKept := g.admit(t, ctx, missed), g.admit(t, ctx, kept)
		held.hold()
		// A revocation naming a session makes the guard check the
		// subject's other sessions: it stops in the held store.
		g.notify(t, floor.Revocation{Subject: kept.UserID, SessionID: uuid.NewString()})
		waitUntil(t, "the guard to wait on the store", held.waiting)
		// missed's sessions end in the store, and the guard is not told
		// (RevokeAll sends no notification). Of the next two, the first
		// fills the buffer and the second overflows it. No more are sent:
		// one still on its way when the guard subscribes again would fill
		// the new one-event buffer, and the revocation below would
		// overflow it and be lost.
		if _, err := identity.Sessions.RevokeAll(ctx, missed.UserID.String(), ""); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			g.notify(t, floor.Revocation{Subject: uuid.Must(uuid.NewV7())})
		}
		waitUntil(t, "the hub to drop the guard", func() bool { return hub.Stats().Dropped > 0 })
		held.release()
		// Only the re-check can end missed's stream. The guard subscribes
		// again before it re-checks, so from here it listens again.
		requireEnded(t, onMissed, connect.CodeUnauthenticated, "session ended")
		requireOpen(t, onKept, "a live session's stream")
		g.notify(t, floor.Revocation{Subject: kept.UserID})
		requireEnded(t, onKept, connect.CodeUnauthenticated, "session ended")
	})

	t.Run("HubStoppedEndsStreams", func(t *testing.T) {
		t.Parallel()
		db := testkit.NewDatabase(t)
		identity := newIdentity(t, db)
		hub := realtime.NewHub(realtime.Options{DatabaseURL: db.URL, Channels: floor.Channels, Logger: slog.New(slog.DiscardHandler)})
		hctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = hub.Run(hctx) }()
		t.Cleanup(func() { stop(); <-done })
		waitUntil(t, "the hub to connect", hub.Ready)
		g := &guardTest{db: db, identity: identity,
			guard: newStreamGuard(hub, floor.Settings{}, ctx, slog.New(slog.DiscardHandler)).checkSessions(identity.Sessions)}
		sctx := g.admit(t, ctx, g.principal(t, token.RoleMember))
		stop()
		<-done
		requireEnded(t, sctx, connect.CodeUnavailable, "reconnect")
		_, _, err := g.guard.admit(ctx, g.principal(t, token.RoleMember))
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnavailable, "reconnect")
	})

	t.Run("StoreFailureRefusesAdmission", func(t *testing.T) {
		t.Parallel()
		g := setupGuard(t, floor.Settings{})
		p := g.principal(t, token.RoleMember)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		// The store cannot answer a cancelled request: the stream is not
		// admitted, and does not count against the allowance.
		_, _, err := g.guard.admit(cctx, p)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnavailable, "retry shortly")
		for range 8 {
			g.admit(t, ctx, p)
		}
	})
}

// heldSessions is the real session store with a gate the test can close:
// while held, Alive waits until released.
type heldSessions struct {
	store interface {
		Alive(context.Context, string) (bool, error)
	}
	gate chan struct{}

	mu      sync.Mutex
	held    bool
	blocked bool
}

func (h *heldSessions) hold() { h.mu.Lock(); h.held = true; h.mu.Unlock() }

func (h *heldSessions) release() { close(h.gate) }

func (h *heldSessions) waiting() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.blocked }

func (h *heldSessions) Alive(ctx context.Context, sid string) (bool, error) {
	h.mu.Lock()
	held := h.held
	if held {
		h.blocked = true
	}
	h.mu.Unlock()
	if held {
		<-h.gate
	}
	return h.store.Alive(ctx, sid)
}
