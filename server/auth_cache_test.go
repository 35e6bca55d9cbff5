package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/realtime"
)

// withSessionCache gives the API an Authenticator that keeps sessions
// alive for ttl: long enough that only a revocation, never the TTL, can end
// them inside a test.
func withSessionCache(ttl time.Duration) func(*Options) {
	return func(o *Options) {
		o.Identity.Authenticator = auth.New(auth.Config{Tokens: o.Identity.Tokens, Sessions: o.Identity.Sessions, SessionCacheTTL: ttl})
	}
}

// otherProcess starts another API server over b's database and Redis, as a
// second process of the deployment sees them: its own realtime hub, and its
// own session store, so that it learns of b's revocations only through
// the revocation notifications (secondInstance shares b's store, whose
// revocation listeners would tell it directly). Its Authenticator keeps
// sessions cached for ttl.
func (b *apiTestBundle) otherProcess(t testing.TB, ttl time.Duration) *httptest.Server {
	t.Helper()
	metrics, err := NewMetricsInterceptor(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(b.logs, nil))
	id := b.identity.Identity
	id.Sessions = session.NewStore(b.identity.redis.Client, b.identity.redis.Prefix, session.Options{Now: func() time.Time { return b.identity.now() }})
	id.Authenticator = auth.New(auth.Config{Tokens: id.Tokens, Sessions: id.Sessions, SessionCacheTTL: ttl})
	handler, err := NewHandler(Options{
		Pool:      b.db.Pool,
		Logger:    logger,
		Readiness: NewReadiness(time.Second, Check{Name: "postgres", Fn: b.db.Pool.Ping}),
		Metrics:   metrics,
		Identity:  id,
		Floor:     newFloor(t, b.db),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Config = NewHTTPServer("", handler, false, logger)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// endBehindTheServer deletes a session in Redis without any revocation
// being made or told: only the server's cache still knows it alive.
func (b *apiTestBundle) endBehindTheServer(t testing.TB, sessionID string) {
	t.Helper()
	r := b.identity.redis
	if err := r.Client.Del(context.Background(), r.Prefix+"sess:"+sessionID).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestAuthCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CachedSessionServesAgain", func(t *testing.T) {
		t.Parallel()
		// The premise of the tests below: with an hour-long cache, a
		// session ended where the server cannot see it is still served,
		// so a refusal in them comes from the revocation itself.
		h := setupAuthHarness(t, withSessionCache(time.Hour))
		reg := h.register(t, "cached@nxg.test")
		h.requireAlive(t, reg.GetAccessToken(), "signed in")
		h.endBehindTheServer(t, reg.GetSessionId())
		h.requireAlive(t, reg.GetAccessToken(), "cached session")
	})

	// Every way an account's session ends is refused on the very next
	// call in the process that ended it, though the cache's TTL is an hour.
	for name, end := range map[string]func(t *testing.T, h *authHarness, victim, actor *nxgv1.LoginResponse){
		"Logout": func(t *testing.T, h *authHarness, victim, _ *nxgv1.LoginResponse) {
			if _, err := h.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, victim.GetAccessToken())); err != nil {
				t.Fatal(err)
			}
		},
		"LogoutAll": func(t *testing.T, h *authHarness, _, actor *nxgv1.LoginResponse) {
			if _, err := h.client.LogoutAll(ctx, authBearer(&nxgv1.LogoutAllRequest{}, actor.GetAccessToken())); err != nil {
				t.Fatal(err)
			}
		},
		"RevokeSession": func(t *testing.T, h *authHarness, victim, actor *nxgv1.LoginResponse) {
			if _, err := h.client.RevokeSession(ctx, authBearer(&nxgv1.RevokeSessionRequest{SessionId: victim.GetSessionId()}, actor.GetAccessToken())); err != nil {
				t.Fatal(err)
			}
		},
		"ChangePassword": func(t *testing.T, h *authHarness, _, actor *nxgv1.LoginResponse) {
			if _, err := h.client.ChangePassword(ctx, authBearer(&nxgv1.ChangePasswordRequest{
				CurrentPassword: authTestPassword, NewPassword: authTestNewPassword,
			}, actor.GetAccessToken())); err != nil {
				t.Fatal(err)
			}
		},
		"DeleteAccount": func(t *testing.T, h *authHarness, _, actor *nxgv1.LoginResponse) {
			if _, err := h.profileClient(actor.GetAccessToken()).DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: authTestPassword})); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name+"RefusedOnTheNextCall", func(t *testing.T) {
			t.Parallel()
			h := setupAuthHarness(t, withSessionCache(time.Hour))
			h.register(t, "ended@nxg.test")
			victim := h.login(t, "ended@nxg.test", authTestPassword, "Phone")
			actor := h.login(t, "ended@nxg.test", authTestPassword, "Laptop")
			h.requireAlive(t, victim.GetAccessToken(), "victim before")
			h.requireAlive(t, actor.GetAccessToken(), "actor before")
			end(t, h, victim, actor)
			h.requireRejected(t, victim.GetAccessToken(), "ended session")
		})
	}

	t.Run("RevokedDeviceRefusedOnItsNextCall", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, withSessionCache(time.Hour))
		branch := b.insertBranch(t, "NXG Cache")
		staff := auditTestUser(t, b, token.RoleStaff)
		addStaffBranch(t, b, staff.ID, branch)
		id, tok := b.signInDevice(t, staff.Token, branch, "kiosk", "")
		machines := nxgv1connect.NewMachineServiceClient(http.DefaultClient, b.server.URL)
		list := func() error {
			_, err := machines.ListMachines(ctx, authBearer(&nxgv1.ListMachinesRequest{BranchId: branch}, tok))
			return err
		}
		for range 2 {
			if err := list(); err != nil {
				t.Fatalf("device's ListMachines: %v", err)
			}
		}
		if _, err := b.deviceClient().RevokeDevice(ctx, authBearer(&nxgv1.RevokeDeviceRequest{DeviceId: id}, staff.Token)); err != nil {
			t.Fatal(err)
		}
		requireAuthCode(t, list(), connect.CodeUnauthenticated, "session has ended")
	})

	t.Run("LogoutReachesAnotherProcess", func(t *testing.T) {
		t.Parallel()
		a := setupAuthHarness(t)
		// B caches sessions for 10 s: only the revocation notification
		// can make it refuse within the 5 s allowed. The bound is half
		// the cache's life, not a speed: it passes on a loaded machine
		// and still tells the notification from the cache's expiry.
		b := nxgv1connect.NewAuthServiceClient(http.DefaultClient, a.otherProcess(t, 10*time.Second).URL)
		onB := func(tok string) error {
			_, err := b.ListSessions(ctx, authBearer(&nxgv1.ListSessionsRequest{}, tok))
			return err
		}
		cached := a.register(t, "cached-on-b@nxg.test")
		leaving := a.register(t, "leaving@nxg.test")
		for _, tok := range []string{cached.GetAccessToken(), leaving.GetAccessToken()} {
			if err := onB(tok); err != nil {
				t.Fatalf("B: %v", err)
			}
		}
		// B does cache: a session ended without a revocation is still
		// served there.
		a.endBehindTheServer(t, cached.GetSessionId())
		if err := onB(cached.GetAccessToken()); err != nil {
			t.Fatalf("B refuses a session it should still have cached: %v", err)
		}

		if _, err := a.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, leaving.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		loggedOut := time.Now()
		for {
			err := onB(leaving.GetAccessToken())
			if err != nil {
				requireAuthCode(t, err, connect.CodeUnauthenticated, "session has ended")
				break
			}
			if time.Since(loggedOut) > 5*time.Second {
				t.Fatal("B still serves a session logged out on A 5s ago")
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("B refused the logged-out session %v after the logout", time.Since(loggedOut))
	})

	t.Run("ReconnectForgetsEveryCachedSession", func(t *testing.T) {
		t.Parallel()
		var fl Floor
		h := setupAuthHarness(t, withSessionCache(time.Hour), func(o *Options) { fl = o.Floor })
		reg := h.register(t, "missed@nxg.test")
		h.requireAlive(t, reg.GetAccessToken(), "signed in")
		// The session ends while the process is not listening (the
		// notification was lost with the hub's connection): once the hub
		// is back, nothing cached before is trusted.
		h.endBehindTheServer(t, reg.GetSessionId())
		h.requireAlive(t, reg.GetAccessToken(), "cached session")
		connects := fl.Hub.Stats().Connects
		if _, err := h.db.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, realtime.DefaultApplicationName); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the hub to reconnect", func() bool { return fl.Hub.Stats().Connects > connects && fl.Hub.Ready() })
		waitUntil(t, "the cached session to be refused", func() bool {
			_, err := h.listSessions(reg.GetAccessToken())
			return connect.CodeOf(err) == connect.CodeUnauthenticated
		})
	})
}
