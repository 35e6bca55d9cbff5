package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
)

// createTicket calls AuthService.CreateWebSocketTicket with accessToken.
func (b *apiTestBundle) createTicket(accessToken string) (*nxgv1.CreateWebSocketTicketResponse, error) {
	res, err := b.authClient().CreateWebSocketTicket(context.Background(), authBearer(&nxgv1.CreateWebSocketTicketRequest{}, accessToken))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// wsRequest is a WebSocket upgrade request as authenticateStream sees it.
func wsRequest(ticket, authorization string) *http.Request {
	target := "/ws"
	if ticket != "" {
		target += "?ticket=" + url.QueryEscape(ticket)
	}
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	return r
}

// apiErrorOf is err as a client would receive it.
func apiErrorOf(err error) error {
	if e, ok := apperr.As(err); ok {
		return toConnectError(e)
	}
	return err
}

func TestDeviceLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SignsInAsTheDevice", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		reg, err := f.registerDevice(f.staffA.Token, f.branchA, "machine", f.machineA)
		if err != nil {
			t.Fatal(err)
		}
		id := reg.GetDevice().GetId()
		login, err := f.deviceLogin(id, reg.GetDeviceSecret())
		if err != nil {
			t.Fatal(err)
		}
		if login.GetAccessToken() == "" || login.GetSessionId() == "" || login.GetAccessTokenExpiresAt() == nil ||
			login.GetDevice().GetId() != id || login.GetDevice().GetLastLoginAt() == nil {
			t.Fatalf("DeviceLogin = %v", login)
		}
		p, err := auth.NewAuthenticator(f.identity.Tokens, f.identity.Sessions).Authenticate(ctx, "Bearer "+login.GetAccessToken())
		if err != nil {
			t.Fatal(err)
		}
		want := auth.Device{ID: uuid.MustParse(id), BranchID: uuid.MustParse(f.branchA), Kind: auth.DeviceMachine, MachineID: uuid.MustParse(f.machineA)}
		if !p.IsDevice() || p.IsStaff() || p.IsMember() || p.IsAdmin() || p.UserID != want.ID || p.SessionID != login.GetSessionId() || *p.Device != want {
			t.Fatalf("principal = %+v (device %+v), want device %+v", p, p.Device, want)
		}
		// The session is the device's: its subject is the device id and
		// its role "device".
		sess, err := f.identity.Sessions.Get(ctx, login.GetSessionId())
		if err != nil {
			t.Fatal(err)
		}
		if sess.UserID != id || sess.Role != string(token.RoleDevice) {
			t.Fatalf("session = %+v", sess)
		}
		if _, err := f.createTicket(login.GetAccessToken()); err != nil {
			t.Fatalf("a device RPC with the device token: %v", err)
		}
		if rows := deviceAuditRows(t, f.apiTestBundle, "device.login"); len(rows) != 1 || rows[0] != "- device "+id+" success" {
			t.Fatalf("device.login audit rows = %q", rows)
		}
	})

	t.Run("EveryFailureLooksTheSame", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		reg, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		revoked, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.revoke(f.staffA, revoked.GetDevice().GetId()); err != nil {
			t.Fatal(err)
		}
		other, err := f.registerDevice(f.staffA.Token, f.branchA, "nfc_reader", "")
		if err != nil {
			t.Fatal(err)
		}
		messages := map[string]bool{}
		for name, c := range map[string]struct{ id, secret string }{
			"WrongSecret":       {reg.GetDevice().GetId(), other.GetDeviceSecret()},
			"MalformedSecret":   {reg.GetDevice().GetId(), "not-a-secret"},
			"UnknownDevice":     {uuid.NewString(), reg.GetDeviceSecret()},
			"RevokedWithSecret": {revoked.GetDevice().GetId(), revoked.GetDeviceSecret()},
		} {
			_, err := f.deviceLogin(c.id, c.secret)
			ce := requireAuthCode(t, err, connect.CodeUnauthenticated, "device id or secret is incorrect")
			t.Logf("%s: %s", name, ce.Message())
			messages[ce.Message()] = true
		}
		if len(messages) != 1 {
			t.Fatalf("the failures can be told apart: %v", messages)
		}
		failures := 0
		for _, r := range deviceAuditRows(t, f.apiTestBundle, "device.login") {
			if strings.HasSuffix(r, " failure") {
				failures++
			}
		}
		if failures != 4 {
			t.Fatalf("%d failed device.login audit rows, want 4", failures)
		}
		_, err = f.deviceLogin("not-a-uuid", reg.GetDeviceSecret())
		requireAuthCode(t, err, connect.CodeInvalidArgument, "device_id")
	})

	t.Run("FailedLoginsAreLimited", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		reg, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		id := reg.GetDevice().GetId()
		for range ratelimit.DefaultAccountLimit {
			_, err := f.deviceLogin(id, "wrong")
			requireAuthCode(t, err, connect.CodeUnauthenticated, "")
		}
		// The right secret is refused now too, with retry information.
		_, err = f.deviceLogin(id, reg.GetDeviceSecret())
		ce := requireAuthCode(t, err, connect.CodeResourceExhausted, ratelimit.LoginRefusedMessage)
		if len(ce.Details()) == 0 {
			t.Fatal("resource_exhausted without retry info")
		}
		// Another device is not affected by this one's failures.
		other, err := f.registerDevice(f.staffA.Token, f.branchA, "kiosk", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.deviceLogin(other.GetDevice().GetId(), other.GetDeviceSecret()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RevokedDeviceRefusedOnNextCall", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		id, tok := f.signInDevice(t, f.staffA.Token, f.branchA, "nfc_reader", "")
		_, second := f.signInDevice(t, f.admin.Token, f.branchA, "kiosk", "")
		if _, err := f.createTicket(tok); err != nil {
			t.Fatal(err)
		}
		if _, err := f.revoke(f.staffA, id); err != nil {
			t.Fatal(err)
		}
		_, err := f.createTicket(tok)
		requireAuthCode(t, err, connect.CodeUnauthenticated, "session has ended")
		// Other devices of the branch go on.
		if _, err := f.createTicket(second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DevicesRefusedOnPersonsRPCs", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		_, tok := f.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")
		url := f.server.URL
		calls := map[string]func() error{
			"AuthService/ListSessions": func() error {
				_, err := f.authClient().ListSessions(ctx, authBearer(&nxgv1.ListSessionsRequest{}, tok))
				return err
			},
			"AuthService/LogoutAll": func() error {
				_, err := f.authClient().LogoutAll(ctx, authBearer(&nxgv1.LogoutAllRequest{}, tok))
				return err
			},
			"AuthService/ChangePassword": func() error {
				_, err := f.authClient().ChangePassword(ctx, authBearer(&nxgv1.ChangePasswordRequest{CurrentPassword: "a", NewPassword: "b"}, tok))
				return err
			},
			"ProfileService/GetProfile": func() error {
				_, err := f.profileClient(tok).GetProfile(ctx, connect.NewRequest(&nxgv1.GetProfileRequest{}))
				return err
			},
			"MembershipService/ListMemberships": func() error {
				_, err := nxgv1connect.NewMembershipServiceClient(http.DefaultClient, url).ListMemberships(ctx, authBearer(&nxgv1.ListMembershipsRequest{}, tok))
				return err
			},
			"AuditService/ListAuditEvents": func() error {
				_, err := nxgv1connect.NewAuditServiceClient(http.DefaultClient, url).ListAuditEvents(ctx, authBearer(&nxgv1.ListAuditEventsRequest{}, tok))
				return err
			},
			"DeviceService/ListDevices": func() error {
				_, err := f.deviceClient().ListDevices(ctx, authBearer(&nxgv1.ListDevicesRequest{BranchId: f.branchA}, tok))
				return err
			},
			"GymSessionService/GetActiveSession": func() error {
				_, err := nxgv1connect.NewGymSessionServiceClient(http.DefaultClient, url).GetActiveSession(ctx, authBearer(&nxgv1.GetActiveSessionRequest{}, tok))
				return err
			},
			"GymSessionService/WatchSession": func() error {
				stream, err := nxgv1connect.NewGymSessionServiceClient(http.DefaultClient, url).WatchSession(ctx, authBearer(&nxgv1.WatchSessionRequest{}, tok))
				if err != nil {
					return err
				}
				defer stream.Close()
				for stream.Receive() {
				}
				return stream.Err()
			},
			"MachineService/LinkMachine": func() error {
				_, err := nxgv1connect.NewMachineServiceClient(http.DefaultClient, url).LinkMachine(ctx, authBearer(&nxgv1.LinkMachineRequest{}, tok))
				return err
			},
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				requireAuthCode(t, call(), connect.CodePermissionDenied, "devices may not call nxg.v1."+name)
			})
		}
		// The device is still signed in: nothing above ended its session.
		if _, err := f.createTicket(tok); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWebSocketTickets(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SingleUseForMembersAndDevices", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		deviceID, deviceToken := f.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.machineA)
		for name, c := range map[string]struct {
			token   string
			subject string
			device  bool
		}{
			"Member": {f.member.Token, f.member.ID.String(), false},
			"Device": {deviceToken, deviceID, true},
		} {
			t.Run(name, func(t *testing.T) {
				tk, err := f.createTicket(c.token)
				if err != nil {
					t.Fatal(err)
				}
				if tk.GetTicket() == "" || tk.GetExpiresAt() == nil {
					t.Fatalf("ticket = %v", tk)
				}
				p, err := authenticateStream(ctx, wsRequest(tk.GetTicket(), ""), f.identity.Identity)
				if err != nil {
					t.Fatal(err)
				}
				if p.UserID.String() != c.subject || p.IsDevice() != c.device {
					t.Fatalf("principal = %+v", p)
				}
				if c.device && (p.Device.MachineID.String() != f.machineA || p.Device.BranchID.String() != f.branchA) {
					t.Fatalf("device = %+v", p.Device)
				}
				_, err = authenticateStream(ctx, wsRequest(tk.GetTicket(), ""), f.identity.Identity)
				requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "already used")
			})
		}
	})

	t.Run("RefusedAfterTheSessionEnds", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		tk, err := f.createTicket(f.member.Token)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.identity.Sessions.RevokeAll(ctx, f.member.ID.String(), ""); err != nil {
			t.Fatal(err)
		}
		_, err = authenticateStream(ctx, wsRequest(tk.GetTicket(), ""), f.identity.Identity)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "session has ended")
	})

	t.Run("BearerHeaderOrNothing", func(t *testing.T) {
		t.Parallel()
		f := setupDevices(t)
		p, err := authenticateStream(ctx, wsRequest("", "Bearer "+f.staffA.Token), f.identity.Identity)
		if err != nil || p.UserID != f.staffA.ID || !p.IsStaff() {
			t.Fatalf("principal %+v, err %v", p, err)
		}
		_, err = authenticateStream(ctx, wsRequest("", ""), f.identity.Identity)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "?ticket=")
		_, err = authenticateStream(ctx, wsRequest("forged-ticket", ""), f.identity.Identity)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "ticket is invalid")
		_, err = authenticateStream(ctx, wsRequest("", "Bearer nonsense"), f.identity.Identity)
		requireAuthCode(t, apiErrorOf(err), connect.CodeUnauthenticated, "")
		_, err = f.createTicket("")
		requireAuthCode(t, err, connect.CodeUnauthenticated, "")
	})
}

// TestSignOutEndsStreams checks that every way a person's sessions end also
// ends their live streams on this process, through the revocation
// notifications the stream guard listens to.
func TestSignOutEndsStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// setup returns a harness, a guard on its hub, and a function opening
	// a guarded stream as the holder of an access token.
	setup := func(t *testing.T) (*authHarness, func(accessToken string) context.Context) {
		var fl Floor
		h := setupAuthHarness(t, func(o *Options) { fl = o.Floor })
		guard := newStreamGuard(fl.Hub, fl.Settings, fl.Draining, slog.New(slog.DiscardHandler)).checkSessions(h.identity.Sessions)
		authn := auth.NewAuthenticator(h.identity.Tokens, h.identity.Sessions)
		open := func(accessToken string) context.Context {
			t.Helper()
			p, err := authn.Authenticate(ctx, "Bearer "+accessToken)
			if err != nil {
				t.Fatal(err)
			}
			sctx, release, err := guard.admit(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(release)
			return sctx
		}
		return h, open
	}

	t.Run("Logout", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "logout-streams@nxg.test")
		other := h.login(t, "logout-streams@nxg.test", authTestPassword, "tablet")
		mine, theirs := open(reg.GetAccessToken()), open(other.GetAccessToken())
		if _, err := h.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, mine, connect.CodeUnauthenticated, "session ended")
		// A barrier: once a later revocation has ended its stream, the
		// first has been handled in full.
		last := open(other.GetAccessToken())
		if _, err := h.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, other.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, last, connect.CodeUnauthenticated, "session ended")
		requireEnded(t, theirs, connect.CodeUnauthenticated, "session ended")
	})

	t.Run("LogoutKeepsOtherSessionsStreams", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "logout-one@nxg.test")
		other := h.login(t, "logout-one@nxg.test", authTestPassword, "tablet")
		mine, theirs := open(reg.GetAccessToken()), open(other.GetAccessToken())
		if _, err := h.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, mine, connect.CodeUnauthenticated, "session ended")
		// The guard also re-checked the account's other session, found
		// it alive and left its stream open; a later revocation for
		// someone else proves the first was fully handled.
		stranger := h.register(t, "stranger@nxg.test")
		barrier := open(stranger.GetAccessToken())
		if _, err := h.client.LogoutAll(ctx, authBearer(&nxgv1.LogoutAllRequest{}, stranger.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, barrier, connect.CodeUnauthenticated, "session ended")
		requireOpen(t, theirs, "the other session's stream")
	})

	t.Run("LogoutAll", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "logout-all@nxg.test")
		other := h.login(t, "logout-all@nxg.test", authTestPassword, "tablet")
		a, b := open(reg.GetAccessToken()), open(other.GetAccessToken())
		if _, err := h.client.LogoutAll(ctx, authBearer(&nxgv1.LogoutAllRequest{}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, a, connect.CodeUnauthenticated, "session ended")
		requireEnded(t, b, connect.CodeUnauthenticated, "session ended")
	})

	t.Run("RevokeSession", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "revoke-one@nxg.test")
		other := h.login(t, "revoke-one@nxg.test", authTestPassword, "tablet")
		theirs := open(other.GetAccessToken())
		if _, err := h.client.RevokeSession(ctx, authBearer(&nxgv1.RevokeSessionRequest{SessionId: other.GetSessionId()}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, theirs, connect.CodeUnauthenticated, "session ended")
	})

	t.Run("ChangePassword", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "change-pw@nxg.test")
		other := h.login(t, "change-pw@nxg.test", authTestPassword, "tablet")
		third := h.login(t, "change-pw@nxg.test", authTestPassword, "laptop")
		mine, b, c := open(reg.GetAccessToken()), open(other.GetAccessToken()), open(third.GetAccessToken())
		if _, err := h.client.ChangePassword(ctx, authBearer(&nxgv1.ChangePasswordRequest{
			CurrentPassword: authTestPassword, NewPassword: authTestNewPassword,
		}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, b, connect.CodeUnauthenticated, "session ended")
		requireEnded(t, c, connect.CodeUnauthenticated, "session ended")
		requireOpen(t, mine, "the stream of the session that changed the password")
	})

	t.Run("DeleteAccount", func(t *testing.T) {
		t.Parallel()
		h, open := setup(t)
		reg := h.register(t, "delete-me@nxg.test")
		other := h.login(t, "delete-me@nxg.test", authTestPassword, "tablet")
		a, b := open(reg.GetAccessToken()), open(other.GetAccessToken())
		if _, err := h.profileClient(reg.GetAccessToken()).DeleteAccount(ctx, connect.NewRequest(&nxgv1.DeleteAccountRequest{Password: authTestPassword})); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, a, connect.CodeUnauthenticated, "session ended")
		requireEnded(t, b, connect.CodeUnauthenticated, "session ended")
	})

	t.Run("RevokeDevice", func(t *testing.T) {
		t.Parallel()
		var fl Floor
		b := setupAPI(t, func(o *Options) { fl = o.Floor })
		guard := newStreamGuard(fl.Hub, fl.Settings, fl.Draining, slog.New(slog.DiscardHandler)).checkSessions(b.identity.Sessions)
		branch := b.insertBranch(t, "NXG Revoke")
		staff := auditTestUser(t, b, token.RoleStaff)
		addStaffBranch(t, b, staff.ID, branch)
		id, tok := b.signInDevice(t, staff.Token, branch, "kiosk", "")
		p, err := auth.NewAuthenticator(b.identity.Tokens, b.identity.Sessions).Authenticate(ctx, "Bearer "+tok)
		if err != nil {
			t.Fatal(err)
		}
		sctx, release, err := guard.admit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if _, err := b.deviceClient().RevokeDevice(ctx, authBearer(&nxgv1.RevokeDeviceRequest{DeviceId: id}, staff.Token)); err != nil {
			t.Fatal(err)
		}
		requireEnded(t, sctx, connect.CodeUnauthenticated, "session ended")
	})
}
