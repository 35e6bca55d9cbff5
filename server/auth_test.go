package server

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// The test identity's issuer and audience (identity_test.go).
const (
	authTestIssuer   = "https://test.nxg"
	authTestAudience = "nxg-test"
	// Passwords that pass the policy (not common, long enough).
	authTestPassword    = "Plum-Tractor-91x"
	authTestNewPassword = "Quince-Lantern-47y"
	// authInvalidTokenMessage is what every unusable bearer token gets.
	authInvalidTokenMessage = "missing or invalid access token; send Authorization: Bearer <access_token>"
)

// authHarness is an API test bundle with an AuthService client.
type authHarness struct {
	*apiTestBundle
	client nxgv1connect.AuthServiceClient
}

func setupAuthHarness(t testing.TB, mutate ...func(*Options)) *authHarness {
	t.Helper()
	b := setupAPI(t, mutate...)
	return &authHarness{apiTestBundle: b, client: nxgv1connect.NewAuthServiceClient(http.DefaultClient, b.server.URL)}
}

// authBearer wraps msg in a request carrying the access token.
func authBearer[T any](msg *T, accessToken string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	req.Header().Set("Authorization", "Bearer "+accessToken)
	return req
}

func (h *authHarness) register(t testing.TB, email string) *nxgv1.RegisterResponse {
	t.Helper()
	res, err := h.client.Register(context.Background(), connect.NewRequest(&nxgv1.RegisterRequest{
		Email: email, Password: authTestPassword, DisplayName: "Alex Test", DeviceName: "Register phone",
	}))
	if err != nil {
		t.Fatalf("Register(%s): %v", email, err)
	}
	return res.Msg
}

func (h *authHarness) tryLogin(email, password, device string) (*nxgv1.LoginResponse, error) {
	res, err := h.client.Login(context.Background(), connect.NewRequest(&nxgv1.LoginRequest{
		Email: email, Password: password, DeviceName: device,
	}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (h *authHarness) login(t testing.TB, email, password, device string) *nxgv1.LoginResponse {
	t.Helper()
	res, err := h.tryLogin(email, password, device)
	if err != nil {
		t.Fatalf("Login(%s): %v", email, err)
	}
	return res
}

func (h *authHarness) listSessions(accessToken string) (*nxgv1.ListSessionsResponse, error) {
	res, err := h.client.ListSessions(context.Background(), authBearer(&nxgv1.ListSessionsRequest{}, accessToken))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// requireAlive fails unless the access token still authenticates.
func (h *authHarness) requireAlive(t testing.TB, accessToken, what string) {
	t.Helper()
	if _, err := h.listSessions(accessToken); err != nil {
		t.Fatalf("%s: ListSessions: %v, want ok", what, err)
	}
}

// requireRejected fails unless the access token is refused at once.
func (h *authHarness) requireRejected(t testing.TB, accessToken, what string) {
	t.Helper()
	_, err := h.listSessions(accessToken)
	requireAuthCode(t, err, connect.CodeUnauthenticated, "")
}

// requireAuthCode fails unless err has code and its message contains msg.
func requireAuthCode(t testing.TB, err error, code connect.Code, msg string) *connect.Error {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a %v error", err, code)
	}
	if ce.Code() != code {
		t.Fatalf("got %v (%q), want %v", ce.Code(), ce.Message(), code)
	}
	if !strings.Contains(ce.Message(), msg) {
		t.Fatalf("message %q does not contain %q", ce.Message(), msg)
	}
	return ce
}

// authAuditRow is one audit_events row as the tests read it.
type authAuditRow struct {
	Action, Result, ActorID, TargetType, TargetID string
	IP, UserAgent, RequestID, Details             string
	// Whole is the entire row as text, to search for leaks.
	Whole string
}

func (h *authHarness) auditRows(t testing.TB, action string) []authAuditRow {
	t.Helper()
	rows, err := h.db.Pool.Query(context.Background(), `
		SELECT action, result, coalesce(actor_id::text, ''), target_type, coalesce(target_id, ''),
		       coalesce(ip, ''), coalesce(user_agent, ''), request_id, details, a::text
		FROM audit_events a WHERE action = $1 ORDER BY seq`, action)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []authAuditRow
	for rows.Next() {
		var r authAuditRow
		if err := rows.Scan(&r.Action, &r.Result, &r.ActorID, &r.TargetType, &r.TargetID,
			&r.IP, &r.UserAgent, &r.RequestID, &r.Details, &r.Whole); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// authFixedClock returns a clock stopped at at.
func authFixedClock(at time.Time) func() time.Time { return func() time.Time { return at } }

func TestAuthService(t *testing.T) {
	t.Parallel()

	t.Run("RegisterLoginAndCall", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()

		// Mixed case in, lower case stored and returned.
		reg := h.register(t, "Alex.Member@Example.COM")
		u := reg.GetUser()
		uid, err := uuid.Parse(u.GetId())
		if err != nil || uid.Version() != 7 {
			t.Fatalf("user id %q is not a UUIDv7 (%v)", u.GetId(), err)
		}
		if u.GetEmail() != "alex.member@example.com" || u.GetDisplayName() != "Alex Test" ||
			u.GetRole() != nxgv1.Role_ROLE_MEMBER || len(u.GetStaffBranchIds()) != 0 || u.GetCreatedAt() == nil {
			t.Fatalf("registered user = %v", u)
		}
		if reg.GetAccessToken() == "" || reg.GetRefreshToken() == "" || reg.GetSessionId() == "" {
			t.Fatalf("register gave no session: %v", reg)
		}
		h.requireAlive(t, reg.GetAccessToken(), "register's access token")

		// The account comes with its wrapped data key, an empty profile and
		// privacy settings that are all off.
		var wrapped []byte
		var leaderboards, analytics, marketing bool
		var profiles int
		err = h.db.Pool.QueryRow(ctx, `
			SELECT u.data_key, p.appear_on_leaderboards, p.share_analytics, p.marketing_notifications,
			       (SELECT count(*) FROM profiles WHERE user_id = u.id)
			FROM users u JOIN privacy_settings p ON p.user_id = u.id WHERE u.id = $1`, uid).
			Scan(&wrapped, &leaderboards, &analytics, &marketing, &profiles)
		if err != nil {
			t.Fatal(err)
		}
		if leaderboards || analytics || marketing || profiles != 1 {
			t.Fatalf("defaults: leaderboards=%v analytics=%v marketing=%v profiles=%d", leaderboards, analytics, marketing, profiles)
		}
		if _, err := h.identity.MasterKeys.Unwrap(uid.String(), wrapped); err != nil {
			t.Fatalf("data key does not unwrap for the user id: %v", err)
		}

		// Sign in with the address typed differently.
		login := h.login(t, "  ALEX.member@example.com ", authTestPassword, "Alex's iPhone")
		if login.GetUser().GetId() != u.GetId() || login.GetSessionId() == reg.GetSessionId() {
			t.Fatalf("login = %v", login)
		}
		// Every protocol carries the bearer token.
		url := h.server.URL
		clients := map[string]nxgv1connect.AuthServiceClient{
			"ConnectProto": h.client,
			"ConnectJSON":  nxgv1connect.NewAuthServiceClient(http.DefaultClient, url, connect.WithProtoJSON()),
			"ConnectGET":   nxgv1connect.NewAuthServiceClient(http.DefaultClient, url, connect.WithProtoJSON(), connect.WithHTTPGet()),
			"GRPC":         nxgv1connect.NewAuthServiceClient(h.h2c, url, connect.WithGRPC()),
			"GRPCWeb":      nxgv1connect.NewAuthServiceClient(http.DefaultClient, url, connect.WithGRPCWeb()),
		}
		for name, client := range clients {
			res, err := client.ListSessions(ctx, authBearer(&nxgv1.ListSessionsRequest{}, login.GetAccessToken()))
			if err != nil {
				t.Fatalf("%s: ListSessions: %v", name, err)
			}
			sessions := res.Msg.GetSessions()
			if len(sessions) != 2 {
				t.Fatalf("%s: %d sessions, want 2 (register and login)", name, len(sessions))
			}
			current := 0
			for _, s := range sessions {
				if s.GetCurrent() {
					current++
					if s.GetId() != login.GetSessionId() || s.GetDeviceName() != "Alex's iPhone" {
						t.Fatalf("%s: current session = %v", name, s)
					}
				}
				if s.GetIp() != "127.0.0.1" || s.GetCreatedAt() == nil || s.GetLastSeenAt() == nil || s.GetExpiresAt() == nil {
					t.Fatalf("%s: session = %v", name, s)
				}
			}
			if current != 1 {
				t.Fatalf("%s: %d sessions marked current", name, current)
			}
		}
		// Without a token, an authenticated RPC is refused.
		_, err = h.client.ListSessions(ctx, connect.NewRequest(&nxgv1.ListSessionsRequest{}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, authInvalidTokenMessage)

		// Nothing secret or personal reached the logs.
		logs := h.logs.String()
		for _, secret := range []string{authTestPassword, "alex.member@example.com", reg.GetRefreshToken(),
			reg.GetAccessToken(), login.GetRefreshToken(), login.GetAccessToken()} {
			if strings.Contains(strings.ToLower(logs), strings.ToLower(secret)) {
				t.Fatalf("logs contain a secret or an email (%.12s...)", secret)
			}
		}
	})

	t.Run("RegisterDuplicateEmail", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		first := h.register(t, "dup@example.com")
		for _, email := range []string{"dup@example.com", "DUP@Example.com"} {
			_, err := h.client.Register(context.Background(), connect.NewRequest(&nxgv1.RegisterRequest{
				Email: email, Password: authTestNewPassword, DisplayName: "Other",
			}))
			requireAuthCode(t, err, connect.CodeAlreadyExists, "email: an account with this email exists")
		}
		var n int
		if err := h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("%d users (%v), want 1", n, err)
		}
		// The sessions opened for the failed attempts were ended again:
		// only the first registration's is left in Redis.
		r := h.identity.redis
		keys, err := r.Client.Keys(context.Background(), r.Prefix+"sess:*").Result()
		if err != nil || len(keys) != 1 || keys[0] != r.Prefix+"sess:"+first.GetSessionId() {
			t.Fatalf("session records %v (%v), want only the first registration's", keys, err)
		}
		// The failed attempts left no half-made account behind.
		if rows := h.auditRows(t, "auth.register"); len(rows) != 1 {
			t.Fatalf("%d register audit rows, want 1", len(rows))
		}
	})

	t.Run("RegisterRejectsBadInput", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		cases := []struct {
			name, email, password, display, field string
		}{
			{"ShortPassword", "a@example.com", "Ab1-xyz", "A", "password"},
			{"CommonPassword", "b@example.com", "password1", "B", "password"},
			{"CommonPasswordAnyCase", "c@example.com", "QWERTY123", "C", "password"},
			{"PasswordIsEmail", "dana.long@example.com", "Dana.Long@example.com", "D", "password"},
			{"PasswordIsLocalPart", "dana.long@example.com", "dana.long", "D", "password"},
			{"BadEmail", "not-an-email", authTestPassword, "E", "email"},
			{"EmptyEmail", "", authTestPassword, "E", "email"},
			{"BlankDisplayName", "f@example.com", authTestPassword, "   ", "display_name"},
			{"EmptyPassword", "g@example.com", "", "G", "password"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := h.client.Register(context.Background(), connect.NewRequest(&nxgv1.RegisterRequest{
					Email: c.email, Password: c.password, DisplayName: c.display,
				}))
				requireAuthCode(t, err, connect.CodeInvalidArgument, c.field)
			})
		}
		var n int
		if err := h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d users (%v), want 0", n, err)
		}
	})

	t.Run("RegisterIsRateLimitedPerIP", func(t *testing.T) {
		t.Parallel()
		// Trust the loopback proxy so the test can speak for several
		// client addresses through X-Forwarded-For.
		h := setupAuthHarness(t, func(o *Options) {
			o.ClientInfo = clientinfo.NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
		})
		register := func(i int, ip string) error {
			req := connect.NewRequest(&nxgv1.RegisterRequest{
				Email: "member" + string(rune('a'+i)) + "@example.com", Password: authTestPassword, DisplayName: "M",
			})
			req.Header().Set("X-Forwarded-For", ip)
			_, err := h.client.Register(context.Background(), req)
			return err
		}
		for i := range 10 {
			if err := register(i, "203.0.113.7"); err != nil {
				t.Fatalf("register %d: %v", i+1, err)
			}
		}
		err := register(10, "203.0.113.7")
		ce := requireAuthCode(t, err, connect.CodeResourceExhausted, "too many requests")
		if d := retryDelay(t, ce); d <= 0 || d > time.Hour {
			t.Fatalf("retry delay %v", d)
		}
		// Another address is not affected.
		if err := register(11, "203.0.113.8"); err != nil {
			t.Fatalf("register from another IP: %v", err)
		}
		// The audit rows carry the client's address, not the proxy's.
		rows := h.auditRows(t, "auth.register")
		if len(rows) != 11 || rows[0].IP != "203.0.113.7" || rows[10].IP != "203.0.113.8" {
			t.Fatalf("register audit rows: %d, first IP %q", len(rows), rows[0].IP)
		}
	})

	t.Run("WrongPasswordAndUnknownEmailLookAlike", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "known@example.com")
		_, errWrong := h.tryLogin("known@example.com", "Not-The-Password-1", "")
		_, errUnknown := h.tryLogin("nobody@example.com", authTestPassword, "")
		// A closed account is indistinguishable too.
		h.register(t, "closed@example.com")
		if _, err := h.db.Pool.Exec(context.Background(), `UPDATE users SET deleted_at = now() WHERE email = 'closed@example.com'`); err != nil {
			t.Fatal(err)
		}
		_, errClosed := h.tryLogin("closed@example.com", authTestPassword, "")
		var msgs []string
		for _, err := range []error{errWrong, errUnknown, errClosed} {
			ce := requireAuthCode(t, err, connect.CodeUnauthenticated, "email or password is incorrect")
			msgs = append(msgs, ce.Message())
			if len(ce.Details()) != 0 {
				t.Fatalf("details on a failed sign-in: %v", ce.Details())
			}
		}
		if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
			t.Fatalf("messages differ: %q", msgs)
		}
		// Both failures are audited, naming the account only when it exists.
		rows := h.auditRows(t, "auth.login")
		if len(rows) != 3 {
			t.Fatalf("%d login audit rows, want 3", len(rows))
		}
		if r := rows[0]; r.Result != "failure" || r.ActorID != "" || r.TargetType != "user" || r.TargetID != reg.GetUser().GetId() {
			t.Fatalf("wrong-password row = %+v", r)
		}
		for _, r := range rows[1:] {
			if r.Result != "failure" || r.ActorID != "" || r.TargetID != "" {
				t.Fatalf("unknown-account row = %+v", r)
			}
		}
		for _, r := range rows {
			if strings.Contains(r.Whole, "@example.com") || strings.Contains(r.Whole, "Not-The-Password") {
				t.Fatalf("audit row leaks the email or password: %s", r.Whole)
			}
		}
	})

	t.Run("LoginLimitCountsFailuresNotSuccesses", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		start := time.Now().Truncate(time.Second)
		h.identity.now = authFixedClock(start)
		h.register(t, "target@example.com")
		h.register(t, "bystander@example.com")
		fail := func() {
			t.Helper()
			_, err := h.tryLogin("target@example.com", "Wrong-Guess-123", "")
			requireAuthCode(t, err, connect.CodeUnauthenticated, "email or password is incorrect")
		}
		fail()
		fail()
		// A success in between resets nothing.
		h.login(t, "target@example.com", authTestPassword, "")
		fail()
		fail()
		fail()
		// Five failures in the window: even the right password is refused,
		// so a correct guess cannot be confirmed.
		_, err := h.tryLogin("Target@Example.com", authTestPassword, "")
		ce := requireAuthCode(t, err, connect.CodeResourceExhausted, "too many failed sign-in attempts")
		if d := retryDelay(t, ce); d <= 0 || d > 15*time.Minute {
			t.Fatalf("retry delay %v, want within 15m", d)
		}
		_, err = h.tryLogin("target@example.com", "Wrong-Guess-123", "")
		requireAuthCode(t, err, connect.CodeResourceExhausted, "too many failed sign-in attempts")
		// The limit is per account: the same IP may still sign others in.
		h.login(t, "bystander@example.com", authTestPassword, "")
		// The window slides: 15 minutes after the first failure one
		// attempt is allowed again.
		h.identity.now = authFixedClock(start.Add(15*time.Minute + time.Second))
		h.login(t, "target@example.com", authTestPassword, "")
	})

	t.Run("RefreshRotatesAndReuseRevokes", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		reg := h.register(t, "rotate@example.com")
		login := h.login(t, "rotate@example.com", authTestPassword, "Phone")

		res, err := h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: login.GetRefreshToken()}))
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		r2 := res.Msg
		if r2.GetSessionId() != login.GetSessionId() || r2.GetRefreshToken() == login.GetRefreshToken() ||
			r2.GetAccessToken() == "" || r2.GetUser().GetId() != reg.GetUser().GetId() {
			t.Fatalf("refresh = %v", r2)
		}
		h.requireAlive(t, r2.GetAccessToken(), "refreshed access token")

		// The old refresh token is spent: presenting it again is reuse, and
		// the whole session dies with it.
		_, err = h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: login.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")
		h.requireRejected(t, r2.GetAccessToken(), "access token of a session whose refresh token was reused")
		h.requireRejected(t, login.GetAccessToken(), "first access token of that session")
		_, err = h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: r2.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")
		// Other sessions of the user are not touched.
		h.requireAlive(t, reg.GetAccessToken(), "another session of the user")

		rows := h.auditRows(t, "auth.refresh_reused")
		if len(rows) != 1 {
			t.Fatalf("%d refresh_reused rows, want 1", len(rows))
		}
		if r := rows[0]; r.Result != "denied" || r.ActorID != reg.GetUser().GetId() || r.TargetType != "session" ||
			r.TargetID != login.GetSessionId() || r.IP != "127.0.0.1" || r.RequestID == "" {
			t.Fatalf("refresh_reused row = %+v", r)
		}

		// Garbage and unknown tokens get the same answer as a reused one.
		for _, tok := range []string{"x", strings.Repeat("A", 43), base64.RawURLEncoding.EncodeToString(make([]byte, 32))} {
			_, err = h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: tok}))
			requireAuthCode(t, err, connect.CodeUnauthenticated, "the refresh token is invalid or has expired")
		}
	})

	t.Run("ConcurrentRefreshHasOneWinner", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "race@example.com")
		const n = 20
		var (
			wg       sync.WaitGroup
			start    = make(chan struct{})
			mu       sync.Mutex
			winners  []*nxgv1.RefreshResponse
			failures []error
		)
		for range n {
			wg.Go(func() {
				<-start
				res, err := h.client.Refresh(context.Background(), connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: reg.GetRefreshToken()}))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, err)
					return
				}
				winners = append(winners, res.Msg)
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d refreshes succeeded, want exactly 1 (failures: %v)", len(winners), failures)
		}
		for _, err := range failures {
			requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")
		}
		// The losers presented a spent token: the family is revoked, the
		// winner's new pair included.
		h.requireRejected(t, winners[0].GetAccessToken(), "winner's access token after reuse")
		if rows := h.auditRows(t, "auth.refresh_reused"); len(rows) != 1 {
			t.Fatalf("%d refresh_reused rows, want 1", len(rows))
		}
	})

	t.Run("TokenLifetimes", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		start := time.Now().Truncate(time.Second)
		h.identity.now = authFixedClock(start)
		h.register(t, "clock@example.com")
		login := h.login(t, "clock@example.com", authTestPassword, "")
		if got := login.GetAccessTokenExpiresAt().AsTime(); !got.Equal(start.Add(15 * time.Minute)) {
			t.Fatalf("access token expires %v after issue, want 15m", got.Sub(start))
		}
		if got := login.GetRefreshTokenExpiresAt().AsTime(); !got.Equal(start.Add(7 * 24 * time.Hour)) {
			t.Fatalf("refresh token expires %v after issue, want 7 days", got.Sub(start))
		}
		// Valid up to the 30s clock-skew allowance past expiry...
		h.identity.now = authFixedClock(start.Add(15*time.Minute + 29*time.Second))
		h.requireAlive(t, login.GetAccessToken(), "token inside the skew allowance")
		// ...and not one second more.
		h.identity.now = authFixedClock(start.Add(15*time.Minute + 31*time.Second))
		_, err := h.listSessions(login.GetAccessToken())
		requireAuthCode(t, err, connect.CodeUnauthenticated, authInvalidTokenMessage)
		// The session outlives its access token: refreshing brings it back.
		res, err := h.client.Refresh(context.Background(), connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: login.GetRefreshToken()}))
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		now := start.Add(15*time.Minute + 31*time.Second)
		if got := res.Msg.GetAccessTokenExpiresAt().AsTime(); !got.Equal(now.Add(15 * time.Minute)) {
			t.Fatalf("refreshed access token expires %v after issue", got.Sub(now))
		}
		if got := res.Msg.GetRefreshTokenExpiresAt().AsTime(); !got.Equal(now.Add(7 * 24 * time.Hour)) {
			t.Fatalf("rotated refresh token expires %v after issue", got.Sub(now))
		}
		h.requireAlive(t, res.Msg.GetAccessToken(), "refreshed token")
		// A refresh token unused for 7 days is dead.
		h.identity.now = authFixedClock(now.Add(7*24*time.Hour + time.Second))
		_, err = h.client.Refresh(context.Background(), connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: res.Msg.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")
	})

	t.Run("Logout", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "bye@example.com")
		other := h.login(t, "bye@example.com", authTestPassword, "Tablet")
		req := authBearer(&nxgv1.LogoutRequest{}, reg.GetAccessToken())
		req.Header().Set(requestid.Header, "logout-req-1")
		if _, err := h.client.Logout(context.Background(), req); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		_, err := h.listSessions(reg.GetAccessToken())
		requireAuthCode(t, err, connect.CodeUnauthenticated, "the session has ended")
		_, err = h.client.Refresh(context.Background(), connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: reg.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")
		list, err := h.listSessions(other.GetAccessToken())
		if err != nil || len(list.GetSessions()) != 1 {
			t.Fatalf("other session: %v, %v", list, err)
		}
		rows := h.auditRows(t, "auth.logout")
		if len(rows) != 1 || rows[0].ActorID != reg.GetUser().GetId() || rows[0].TargetID != reg.GetSessionId() ||
			rows[0].RequestID != "logout-req-1" || rows[0].Result != "success" {
			t.Fatalf("logout rows = %+v", rows)
		}
	})

	t.Run("LogoutAll", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "all@example.com")
		a := h.login(t, "all@example.com", authTestPassword, "A")
		b := h.login(t, "all@example.com", authTestPassword, "B")
		stranger := h.register(t, "stranger@example.com")
		res, err := h.client.LogoutAll(context.Background(), authBearer(&nxgv1.LogoutAllRequest{}, a.GetAccessToken()))
		if err != nil {
			t.Fatalf("LogoutAll: %v", err)
		}
		if res.Msg.GetSessionsEnded() != 3 {
			t.Fatalf("sessions ended = %d, want 3", res.Msg.GetSessionsEnded())
		}
		for _, tok := range []string{reg.GetAccessToken(), a.GetAccessToken(), b.GetAccessToken()} {
			h.requireRejected(t, tok, "a session after LogoutAll")
		}
		h.requireAlive(t, stranger.GetAccessToken(), "another user's session")
		rows := h.auditRows(t, "auth.logout_all")
		if len(rows) != 1 || rows[0].ActorID != reg.GetUser().GetId() || rows[0].Details != `{"sessions_ended":"3"}` {
			t.Fatalf("logout_all rows = %+v", rows)
		}
	})

	t.Run("RevokeSession", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		mine := h.register(t, "owner@example.com")
		phone := h.login(t, "owner@example.com", authTestPassword, "Old phone")
		theirs := h.register(t, "neighbour@example.com")

		if _, err := h.client.RevokeSession(ctx, authBearer(&nxgv1.RevokeSessionRequest{SessionId: phone.GetSessionId()}, mine.GetAccessToken())); err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		h.requireRejected(t, phone.GetAccessToken(), "revoked session's access token")
		h.requireAlive(t, mine.GetAccessToken(), "the revoking session")

		// Someone else's session, an unknown one and an ended one are all
		// simply not found, and someone else's keeps working.
		for _, sid := range []string{theirs.GetSessionId(), uuid.Must(uuid.NewV7()).String(), phone.GetSessionId()} {
			_, err := h.client.RevokeSession(ctx, authBearer(&nxgv1.RevokeSessionRequest{SessionId: sid}, mine.GetAccessToken()))
			requireAuthCode(t, err, connect.CodeNotFound, "session "+sid+" not found")
		}
		h.requireAlive(t, theirs.GetAccessToken(), "the other user's session")
		_, err := h.client.RevokeSession(ctx, authBearer(&nxgv1.RevokeSessionRequest{SessionId: "nope"}, mine.GetAccessToken()))
		requireAuthCode(t, err, connect.CodeInvalidArgument, "session_id")

		rows := h.auditRows(t, "auth.session_revoked")
		if len(rows) != 4 || rows[0].Result != "success" || rows[0].TargetID != phone.GetSessionId() ||
			rows[1].Result != "failure" || rows[1].TargetID != theirs.GetSessionId() {
			t.Fatalf("session_revoked rows = %+v", rows)
		}
	})

	t.Run("ChangePassword", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		caller := h.register(t, "change@example.com")
		other1 := h.login(t, "change@example.com", authTestPassword, "1")
		other2 := h.login(t, "change@example.com", authTestPassword, "2")
		change := func(current, next string) (*nxgv1.ChangePasswordResponse, error) {
			res, err := h.client.ChangePassword(ctx, authBearer(&nxgv1.ChangePasswordRequest{CurrentPassword: current, NewPassword: next}, caller.GetAccessToken()))
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		}

		_, err := change("Wrong-Current-1", authTestNewPassword)
		ce := requireAuthCode(t, err, connect.CodePermissionDenied, "current_password: is incorrect")
		if ce.Message() != "current_password: is incorrect" {
			t.Fatalf("message = %q", ce.Message())
		}
		_, err = change(authTestPassword, "password1")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "new_password")
		_, err = change(authTestPassword, "change@example.com")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "new_password")
		_, err = change(authTestPassword, authTestPassword)
		requireAuthCode(t, err, connect.CodeInvalidArgument, "new_password: must differ")
		for _, tok := range []string{caller.GetAccessToken(), other1.GetAccessToken(), other2.GetAccessToken()} {
			h.requireAlive(t, tok, "a session after refused changes")
		}

		res, err := change(authTestPassword, authTestNewPassword)
		if err != nil {
			t.Fatalf("ChangePassword: %v", err)
		}
		if res.GetOtherSessionsEnded() != 2 {
			t.Fatalf("other sessions ended = %d, want 2", res.GetOtherSessionsEnded())
		}
		h.requireAlive(t, caller.GetAccessToken(), "the caller's session")
		h.requireRejected(t, other1.GetAccessToken(), "another session")
		h.requireRejected(t, other2.GetAccessToken(), "another session")
		_, err = h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: other1.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "refresh token")

		h.login(t, "change@example.com", authTestNewPassword, "new")
		_, err = h.tryLogin("change@example.com", authTestPassword, "old")
		requireAuthCode(t, err, connect.CodeUnauthenticated, "email or password is incorrect")

		rows := h.auditRows(t, "auth.password_changed")
		if len(rows) != 2 {
			t.Fatalf("%d password_changed rows, want 2", len(rows))
		}
		uid := caller.GetUser().GetId()
		if r := rows[0]; r.Result != "failure" || r.ActorID != uid || r.TargetID != uid {
			t.Fatalf("failed change row = %+v", r)
		}
		if r := rows[1]; r.Result != "success" || r.ActorID != uid || r.Details != `{"other_sessions_ended":"2"}` {
			t.Fatalf("change row = %+v", r)
		}
	})

	t.Run("ChangePasswordCurrentIsRateLimited", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "guess@example.com")
		change := func(current string) error {
			_, err := h.client.ChangePassword(context.Background(), authBearer(&nxgv1.ChangePasswordRequest{
				CurrentPassword: current, NewPassword: authTestNewPassword,
			}, reg.GetAccessToken()))
			return err
		}
		for i := range 5 {
			requireAuthCode(t, change("Guess-Number-"+string(rune('0'+i))), connect.CodePermissionDenied, "current_password")
		}
		// The right password is refused now, by ChangePassword and Login alike.
		requireAuthCode(t, change(authTestPassword), connect.CodeResourceExhausted, "too many failed sign-in attempts")
		_, err := h.tryLogin("guess@example.com", authTestPassword, "")
		requireAuthCode(t, err, connect.CodeResourceExhausted, "too many failed sign-in attempts")
	})

	t.Run("ClosedAccountCannotRefresh", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "leaving@example.com")
		other := h.login(t, "leaving@example.com", authTestPassword, "")
		if _, err := h.db.Pool.Exec(context.Background(), `UPDATE users SET deleted_at = now() WHERE id = $1`, reg.GetUser().GetId()); err != nil {
			t.Fatal(err)
		}
		_, err := h.client.Refresh(context.Background(), connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: reg.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnauthenticated, "sign in again")
		// Every session of the closed account has ended.
		h.requireRejected(t, reg.GetAccessToken(), "closed account's session")
		h.requireRejected(t, other.GetAccessToken(), "closed account's other session")
		_, err = h.tryLogin("leaving@example.com", authTestPassword, "")
		requireAuthCode(t, err, connect.CodeUnauthenticated, "email or password is incorrect")
	})

	t.Run("RefreshPicksUpRoleChanges", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "promoted@example.com")
		branch := h.insertBranch(t, "NXG Staff Branch")
		ctx := context.Background()
		if _, err := h.db.Pool.Exec(ctx, `UPDATE users SET role = 'staff' WHERE id = $1`, reg.GetUser().GetId()); err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.Pool.Exec(ctx, `INSERT INTO staff_branches (user_id, branch_id) VALUES ($1, $2)`, reg.GetUser().GetId(), branch); err != nil {
			t.Fatal(err)
		}
		res, err := h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: reg.GetRefreshToken()}))
		if err != nil {
			t.Fatal(err)
		}
		u := res.Msg.GetUser()
		if u.GetRole() != nxgv1.Role_ROLE_STAFF || len(u.GetStaffBranchIds()) != 1 || u.GetStaffBranchIds()[0] != branch {
			t.Fatalf("user after promotion = %v", u)
		}
		claims, err := h.identity.Tokens.Verify(res.Msg.GetAccessToken())
		if err != nil || claims.Role != token.RoleStaff {
			t.Fatalf("refreshed token role = %q (%v), want staff", claims.Role, err)
		}
		login := h.login(t, "promoted@example.com", authTestPassword, "")
		if login.GetUser().GetRole() != nxgv1.Role_ROLE_STAFF || len(login.GetUser().GetStaffBranchIds()) != 1 {
			t.Fatalf("login user = %v", login.GetUser())
		}
	})

	t.Run("BadBearerTokens", func(t *testing.T) {
		t.Parallel()
		// The server signs with a ring this test holds, so it can forge
		// tokens that differ from a valid one in exactly one respect.
		ringJSON, err := token.GenerateKeyRingJSON()
		if err != nil {
			t.Fatal(err)
		}
		ring, err := token.ParseKeyRing(ringJSON)
		if err != nil {
			t.Fatal(err)
		}
		issuer := newAuthTestIssuer(t, ring, authTestIssuer, authTestAudience)
		jwks, err := ring.PublicJWKS()
		if err != nil {
			t.Fatal(err)
		}
		h := setupAuthHarness(t, func(o *Options) {
			o.Identity.Tokens = issuer
			o.Identity.JWKS = jwks
		})
		login := h.register(t, "victim@example.com")
		uid, sid := login.GetUser().GetId(), login.GetSessionId()
		h.requireAlive(t, login.GetAccessToken(), "the genuine token")

		privSet, err := jwk.Parse(ringJSON)
		if err != nil {
			t.Fatal(err)
		}
		serverKey, _ := privSet.Key(0)
		kid := ring.SigningKeyID()
		_, strangerPriv, _ := ed25519.GenerateKey(rand.Reader)
		strangerKey, err := jwk.Import(strangerPriv)
		if err != nil {
			t.Fatal(err)
		}

		// forge signs claims for the live session with key under header typ.
		forge := func(key jwk.Key, typ string, edit func(*jwt.Builder)) string {
			now := time.Now().Truncate(time.Second)
			bld := jwt.NewBuilder().Issuer(authTestIssuer).Audience([]string{authTestAudience}).Subject(uid).
				IssuedAt(now).NotBefore(now).Expiration(now.Add(15*time.Minute)).JwtID("forged-"+typ).
				Claim("sid", sid).Claim("role", "member")
			if edit != nil {
				edit(bld)
			}
			tok, err := bld.Build()
			if err != nil {
				t.Fatal(err)
			}
			hdr := jws.NewHeaders()
			_ = hdr.Set(jws.TypeKey, typ)
			_ = hdr.Set(jws.KeyIDKey, kid)
			signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), key, jws.WithProtectedHeaders(hdr)))
			if err != nil {
				t.Fatal(err)
			}
			return string(signed)
		}
		// The forge is right: with the server's key and the right typ its
		// token is accepted. Every bad token below changes one thing.
		h.requireAlive(t, forge(serverKey, token.HeaderType, nil), "a correctly forged control token")

		b64 := base64.RawURLEncoding
		genuine := login.GetAccessToken()
		parts := strings.Split(genuine, ".")
		payload, err := b64.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}

		noneToken := func() string {
			hdr := b64.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"` + kid + `"}`))
			return hdr + "." + parts[1] + "."
		}()
		hs256Token := func() string {
			// Algorithm confusion: HMAC keyed with the public key.
			hdr := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"` + kid + `"}`))
			pub, err := serverKey.PublicKey()
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(pub)
			m := hmac.New(sha256.New, raw)
			m.Write([]byte(hdr + "." + parts[1]))
			return hdr + "." + parts[1] + "." + b64.EncodeToString(m.Sum(nil))
		}()
		tampered := func() string {
			var claims map[string]any
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			claims["role"] = "admin"
			p, _ := json.Marshal(claims)
			return parts[0] + "." + b64.EncodeToString(p) + "." + parts[2]
		}()
		otherRingJSON, err := token.GenerateKeyRingJSON()
		if err != nil {
			t.Fatal(err)
		}
		otherRing, err := token.ParseKeyRing(otherRingJSON)
		if err != nil {
			t.Fatal(err)
		}
		issue := func(i *token.Issuer) string {
			tok, _, err := i.Issue(uid, sid, token.RoleMember)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}

		cases := map[string]string{
			"NoneAlgorithm":        "Bearer " + noneToken,
			"HS256WithPublicKey":   "Bearer " + hs256Token,
			"WrongKey":             "Bearer " + issue(newAuthTestIssuer(t, otherRing, authTestIssuer, authTestAudience)),
			"WrongKeySameKid":      "Bearer " + forge(strangerKey, token.HeaderType, nil),
			"WrongTyp":             "Bearer " + forge(serverKey, "JWT", nil),
			"NoTyp":                "Bearer " + forge(serverKey, "", nil),
			"RefreshTokenAsAccess": "Bearer " + login.GetRefreshToken(),
			"WrongAudience":        "Bearer " + issue(newAuthTestIssuer(t, ring, authTestIssuer, "someone-else")),
			"WrongIssuer":          "Bearer " + issue(newAuthTestIssuer(t, ring, "https://evil.example", authTestAudience)),
			"TamperedPayload":      "Bearer " + tampered,
			"TruncatedSignature":   "Bearer " + genuine[:len(genuine)-4],
			"UnknownRole":          "Bearer " + forge(serverKey, token.HeaderType, func(b *jwt.Builder) { b.Claim("role", "root") }),
			"LifetimeTooLong":      "Bearer " + forge(serverKey, token.HeaderType, func(b *jwt.Builder) { b.Expiration(time.Now().Add(24 * time.Hour)) }),
			"NotYetValid":          "Bearer " + forge(serverKey, token.HeaderType, func(b *jwt.Builder) { b.NotBefore(time.Now().Add(time.Hour)) }),
			"MissingHeader":        "",
			"BasicScheme":          "Basic " + base64.StdEncoding.EncodeToString([]byte("victim@example.com:"+authTestPassword)),
			"BearerWithoutToken":   "Bearer ",
			"TokenWithoutScheme":   genuine,
			"Garbage":              "Bearer not.a.jwt",
			"Oversized":            "Bearer " + strings.Repeat("a", 9000) + "." + parts[1] + "." + parts[2],
		}
		for name, authorization := range cases {
			t.Run(name, func(t *testing.T) {
				req := connect.NewRequest(&nxgv1.ListSessionsRequest{})
				if authorization != "" {
					req.Header().Set("Authorization", authorization)
				}
				_, err := h.client.ListSessions(context.Background(), req)
				ce := requireAuthCode(t, err, connect.CodeUnauthenticated, "")
				if ce.Message() != authInvalidTokenMessage {
					t.Fatalf("message %q, want the one message every bad token gets", ce.Message())
				}
			})
		}
	})

	t.Run("JWKSVerifiesAccessTokens", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		reg := h.register(t, "thirdparty@example.com")
		res, err := http.Get(h.server.URL + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Type"), "json") {
			t.Fatalf("jwks: status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
		}
		if strings.Contains(string(body), `"d"`) {
			t.Fatal("the JWKS holds private key material")
		}
		set, err := jwk.Parse(body)
		if err != nil {
			t.Fatalf("parse jwks: %v", err)
		}
		if set.Len() == 0 {
			t.Fatal("empty JWKS")
		}
		// What a third-party service does: verify with the published set.
		tok, err := jwt.Parse([]byte(reg.GetAccessToken()), jwt.WithKeySet(set), jwt.WithValidate(true),
			jwt.WithIssuer(authTestIssuer), jwt.WithAudience(authTestAudience))
		if err != nil {
			t.Fatalf("verify access token with the JWKS: %v", err)
		}
		if sub, _ := tok.Subject(); sub != reg.GetUser().GetId() {
			t.Fatalf("sub = %q", sub)
		}
		var sid string
		if err := tok.Get("sid", &sid); err != nil || sid != reg.GetSessionId() {
			t.Fatalf("sid = %q (%v)", sid, err)
		}
		// A token from another key does not verify against it.
		otherRingJSON, _ := token.GenerateKeyRingJSON()
		otherRing, _ := token.ParseKeyRing(otherRingJSON)
		forged, _, err := newAuthTestIssuer(t, otherRing, authTestIssuer, authTestAudience).Issue(reg.GetUser().GetId(), reg.GetSessionId(), token.RoleAdmin)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwt.Parse([]byte(forged), jwt.WithKeySet(set), jwt.WithValidate(true)); err == nil {
			t.Fatal("a token of another key verified against the JWKS")
		}
	})

	t.Run("AuditTrail", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		const email = "audited@example.com"
		reg := h.register(t, email)
		uid := reg.GetUser().GetId()
		if _, err := h.tryLogin(email, "Wrong-Password-9", ""); err == nil {
			t.Fatal("wrong password signed in")
		}
		login := h.login(t, email, authTestPassword, "Audit phone")
		// Reuse a refresh token.
		if _, err := h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})); err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: login.GetRefreshToken()})); err == nil {
			t.Fatal("reused refresh token accepted")
		}
		if _, err := h.client.ChangePassword(ctx, authBearer(&nxgv1.ChangePasswordRequest{
			CurrentPassword: authTestPassword, NewPassword: authTestNewPassword,
		}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.Logout(ctx, authBearer(&nxgv1.LogoutRequest{}, reg.GetAccessToken())); err != nil {
			t.Fatal(err)
		}

		want := []struct{ action, result, actor string }{
			{"auth.register", "success", uid},
			{"auth.login", "failure", ""},
			{"auth.login", "success", uid},
			{"auth.refresh_reused", "denied", uid},
			{"auth.password_changed", "success", uid},
			{"auth.logout", "success", uid},
		}
		rows, err := h.db.Pool.Query(ctx, `
			SELECT action, result, coalesce(actor_id::text, ''), coalesce(ip, ''), coalesce(user_agent, ''),
			       request_id, details, a::text
			FROM audit_events a ORDER BY seq`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		i := 0
		for rows.Next() {
			var action, result, actor, ip, ua, rid, details, whole string
			if err := rows.Scan(&action, &result, &actor, &ip, &ua, &rid, &details, &whole); err != nil {
				t.Fatal(err)
			}
			if i >= len(want) {
				t.Fatalf("unexpected extra audit row %s", whole)
			}
			if w := want[i]; action != w.action || result != w.result || actor != w.actor {
				t.Fatalf("row %d = %s/%s by %q, want %s/%s by %q", i, action, result, actor, w.action, w.result, w.actor)
			}
			if ip != "127.0.0.1" || !strings.HasPrefix(ua, "connect-go/") || !requestid.Valid(rid) {
				t.Fatalf("row %d lacks request context: ip %q ua %q request id %q", i, ip, ua, rid)
			}
			for _, secret := range []string{email, authTestPassword, authTestNewPassword, "Wrong-Password-9",
				login.GetRefreshToken(), login.GetAccessToken(), reg.GetRefreshToken(), reg.GetAccessToken()} {
				if strings.Contains(whole, secret) {
					t.Fatalf("row %d (%s) contains a secret or the email: %s", i, action, whole)
				}
			}
			if !json.Valid([]byte(details)) {
				t.Fatalf("row %d details %q", i, details)
			}
			i++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if i != len(want) {
			t.Fatalf("%d audit rows, want %d", i, len(want))
		}
	})

	t.Run("LoginUpgradesWeakHashes", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		reg := h.register(t, "legacy@example.com")
		// A hash made with weaker, older parameters.
		weak, err := password.NewHasher(password.Options{Params: password.Params{MemoryKiB: 8 * 1024, Time: 1}}).Hash(ctx, authTestPassword)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.db.Pool.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE id = $2`, weak, reg.GetUser().GetId()); err != nil {
			t.Fatal(err)
		}
		h.login(t, "legacy@example.com", authTestPassword, "")
		var stored string
		if err := h.db.Pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, reg.GetUser().GetId()).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if stored == weak || h.identity.Passwords.NeedsRehash(stored) {
			t.Fatalf("hash not upgraded: %s", stored[:strings.LastIndexByte(stored, '$')])
		}
		h.login(t, "legacy@example.com", authTestPassword, "")
	})

	t.Run("RedisOutageFailsClosed", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		reg := h.register(t, "outage@example.com")
		// Sessions and login limits live in Redis; without it nobody signs
		// in, refreshes or guesses passwords, and nothing is let through.
		_ = h.identity.redis.Client.Close()
		_, err := h.tryLogin("outage@example.com", authTestPassword, "")
		requireAuthCode(t, err, connect.CodeUnavailable, "retry shortly")
		_, err = h.client.Refresh(ctx, connect.NewRequest(&nxgv1.RefreshRequest{RefreshToken: reg.GetRefreshToken()}))
		requireAuthCode(t, err, connect.CodeUnavailable, "retry shortly")
		_, err = h.listSessions(reg.GetAccessToken())
		requireAuthCode(t, err, connect.CodeUnavailable, "retry shortly")
		_, err = h.client.Register(ctx, connect.NewRequest(&nxgv1.RegisterRequest{
			Email: "later@example.com", Password: authTestPassword, DisplayName: "Later",
		}))
		requireAuthCode(t, err, connect.CodeUnavailable, "retry shortly")
		// A failed Register leaves no account, so retrying it later works.
		var n int
		if err := h.db.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE email = 'later@example.com'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d accounts from a failed Register (%v)", n, err)
		}
		if rows := h.auditRows(t, "auth.login"); len(rows) != 0 {
			t.Fatalf("login audit rows during the outage: %+v", rows)
		}
	})

	t.Run("UnauditedSignInIsUndone", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		reg := h.register(t, "unaudited@example.com")
		// Break the audit trail under the handler.
		if _, err := h.db.Pool.Exec(ctx, `ALTER TABLE audit_events RENAME TO audit_events_gone`); err != nil {
			t.Fatal(err)
		}
		_, err := h.tryLogin("unaudited@example.com", authTestPassword, "")
		requireAuthCode(t, err, connect.CodeInternal, "internal error (request id ")
		// The session opened for it was ended again: only register's is left.
		list, err := h.identity.Sessions.List(ctx, reg.GetUser().GetId())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].ID != reg.GetSessionId() {
			t.Fatalf("sessions after an unaudited sign-in: %+v", list)
		}
		// A registration that cannot be audited leaves no account.
		_, err = h.client.Register(ctx, connect.NewRequest(&nxgv1.RegisterRequest{
			Email: "ghost@example.com", Password: authTestPassword, DisplayName: "Ghost",
		}))
		requireAuthCode(t, err, connect.CodeInternal, "internal error")
		var n int
		if err := h.db.Pool.QueryRow(ctx, `SELECT count(*) FROM users WHERE email = 'ghost@example.com'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("%d ghost accounts (%v)", n, err)
		}
		if strings.Contains(h.logs.String(), authTestPassword) {
			t.Fatal("the password reached the logs")
		}
	})

	t.Run("LogoutNeedsAToken", func(t *testing.T) {
		t.Parallel()
		h := setupAuthHarness(t)
		ctx := context.Background()
		calls := map[string]func() error{
			"Logout": func() error {
				_, err := h.client.Logout(ctx, connect.NewRequest(&nxgv1.LogoutRequest{}))
				return err
			},
			"LogoutAll": func() error {
				_, err := h.client.LogoutAll(ctx, connect.NewRequest(&nxgv1.LogoutAllRequest{}))
				return err
			},
			"RevokeSession": func() error {
				_, err := h.client.RevokeSession(ctx, connect.NewRequest(&nxgv1.RevokeSessionRequest{SessionId: uuid.NewString()}))
				return err
			},
			"ChangePassword": func() error {
				_, err := h.client.ChangePassword(ctx, connect.NewRequest(&nxgv1.ChangePasswordRequest{CurrentPassword: "a", NewPassword: "b"}))
				return err
			},
		}
		for name, call := range calls {
			t.Run(name, func(t *testing.T) {
				requireAuthCode(t, call(), connect.CodeUnauthenticated, authInvalidTokenMessage)
			})
		}
	})
}

func newAuthTestIssuer(t testing.TB, ring *token.KeyRing, iss, aud string) *token.Issuer {
	t.Helper()
	i, err := token.NewIssuer(token.IssuerConfig{Keys: ring, Issuer: iss, Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	return i
}
