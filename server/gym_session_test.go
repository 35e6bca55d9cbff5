package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/nxg-fitness/nxg/db"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/checkin"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/testkit"
	"github.com/nxg-fitness/nxg/jobs"
)

// sessionClock is the clock of the server's entrance codes: real time
// moved by an offset the test sets, so a code can be made to expire.
type sessionClock struct{ offset atomic.Int64 }

func (c *sessionClock) now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *sessionClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// sessionFloor is a test gym for check-ins: two branches open around the
// clock and one never open; a member with a membership of branch A only,
// a member with a network-wide one, staff of each branch and an admin.
type sessionFloor struct {
	b                        *apiTestBundle
	fl                       Floor
	clock                    *sessionClock
	branchA, branchB, closed string
	member, roamer           auditTestCaller
	staffA, staffB, admin    auditTestCaller
	client                   nxgv1connect.GymSessionServiceClient
}

func setupSessionFloor(t *testing.T, mutate ...func(*Options)) *sessionFloor {
	t.Helper()
	f := &sessionFloor{clock: &sessionClock{}}
	key, err := base64.StdEncoding.DecodeString(testkit.AuthEnv(t)["NXG_CHECKIN_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	codes, err := checkin.NewCodes(key, f.clock.now)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]func(*Options){func(o *Options) { o.Floor.Codes = codes }}, mutate...)
	all = append(all, func(o *Options) { f.fl = o.Floor })
	f.b = setupAPI(t, all...)
	f.branchA = f.openBranch(t, "NXG Angel", "Europe/London")
	f.branchB = f.openBranch(t, "NXG Brooklyn", "America/New_York")
	f.closed = f.insertBranchWithHours(t, "NXG Never", "Europe/London", nil)
	f.member = auditTestUser(t, f.b, token.RoleMember)
	f.roamer = auditTestUser(t, f.b, token.RoleMember)
	f.staffA = auditTestUser(t, f.b, token.RoleStaff)
	f.staffB = auditTestUser(t, f.b, token.RoleStaff)
	f.admin = auditTestUser(t, f.b, token.RoleAdmin)
	addStaffBranch(t, f.b, f.staffA.ID, f.branchA)
	addStaffBranch(t, f.b, f.staffB.ID, f.branchB)
	f.grant(t, f.member.ID, f.branchA)
	f.grant(t, f.roamer.ID, "")
	f.client = nxgv1connect.NewGymSessionServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
	return f
}

// openBranch adds a branch open every day around the clock.
func (f *sessionFloor) openBranch(t testing.TB, name, tz string) string {
	t.Helper()
	return f.insertBranchWithHours(t, name, tz, []int{1, 2, 3, 4, 5, 6, 7})
}

// insertBranchWithHours adds a branch open all day on the ISO weekdays
// given, and closed on the others.
func (f *sessionFloor) insertBranchWithHours(t testing.TB, name, tz string, days []int) string {
	t.Helper()
	ctx := context.Background()
	var id string
	if err := f.b.db.Pool.QueryRow(ctx, `INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, $1, $2, 100) RETURNING id::text`,
		name, tz).Scan(&id); err != nil {
		t.Fatal(err)
	}
	for _, d := range days {
		if _, err := f.b.db.Pool.Exec(ctx, `INSERT INTO branch_opening_hours (branch_id, weekday, opens_at, closes_at) VALUES ($1, $2, '00:00', '24:00')`, id, d); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// grant gives user a membership valid since yesterday: of branch, or
// network-wide when branch is "".
func (f *sessionFloor) grant(t testing.TB, user uuid.UUID, branch string) {
	t.Helper()
	var b any
	if branch != "" {
		b = branch
	}
	f.exec(t, `INSERT INTO memberships (user_id, branch_id, valid_from) VALUES ($1, $2, now() - interval '1 day')`, user, b)
}

func (f *sessionFloor) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := f.b.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func (f *sessionFloor) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.b.db.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// code fetches the branch's current entrance code as an admin's screen shows it.
func (f *sessionFloor) code(t testing.TB, branch string) string {
	t.Helper()
	res, err := f.client.GetCheckinCode(context.Background(), authBearer(&nxgv1.GetCheckinCodeRequest{BranchId: branch}, f.admin.Token))
	if err != nil {
		t.Fatalf("GetCheckinCode(%s): %v", branch, err)
	}
	return res.Msg.GetQrPayload()
}

func (f *sessionFloor) startQR(caller auditTestCaller, branch, payload string) (*nxgv1.StartSessionResponse, error) {
	res, err := f.client.StartSession(context.Background(), authBearer(&nxgv1.StartSessionRequest{
		BranchId: branch, Credential: &nxgv1.StartSessionRequest_QrPayload{QrPayload: payload},
	}, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (f *sessionFloor) startNFC(readerToken, branch, user string) (*nxgv1.StartSessionResponse, error) {
	res, err := f.client.StartSession(context.Background(), authBearer(&nxgv1.StartSessionRequest{
		BranchId: branch, Credential: &nxgv1.StartSessionRequest_NfcUid{NfcUid: "04:A2:2B:1C"}, UserId: user,
	}, readerToken))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// checkIn scans the branch's current code with caller's app.
func (f *sessionFloor) checkIn(t testing.TB, caller auditTestCaller, branch string) *nxgv1.StartSessionResponse {
	t.Helper()
	res, err := f.startQR(caller, branch, f.code(t, branch))
	if err != nil {
		t.Fatalf("StartSession at %s: %v", branch, err)
	}
	return res
}

func (f *sessionFloor) end(caller auditTestCaller, session string) (*nxgv1.GymSession, error) {
	res, err := f.client.EndSession(context.Background(), authBearer(&nxgv1.EndSessionRequest{SessionId: session}, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetSession(), nil
}

func (f *sessionFloor) active(t testing.TB, caller auditTestCaller) *nxgv1.GetActiveSessionResponse {
	t.Helper()
	res, err := f.client.GetActiveSession(context.Background(), authBearer(&nxgv1.GetActiveSessionRequest{}, caller.Token))
	if err != nil {
		t.Fatalf("GetActiveSession: %v", err)
	}
	return res.Msg
}

func (f *sessionFloor) machines() nxgv1connect.MachineServiceClient {
	return nxgv1connect.NewMachineServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
}

func (f *sessionFloor) insertMachine(t testing.TB, branch, name, tag string) string {
	t.Helper()
	var id string
	if err := f.b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, $2, 'rower', $3) RETURNING id::text`,
		branch, name, tag).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *sessionFloor) link(t testing.TB, caller auditTestCaller, machine string) *nxgv1.MachineLink {
	t.Helper()
	res, err := f.machines().LinkMachine(context.Background(), authBearer(&nxgv1.LinkMachineRequest{
		Target: &nxgv1.LinkMachineRequest_MachineId{MachineId: machine},
	}, caller.Token))
	if err != nil {
		t.Fatalf("LinkMachine: %v", err)
	}
	return res.Msg.GetLink()
}

// sessionAudit returns "actor target details" of the audit rows of action, oldest first.
func (f *sessionFloor) sessionAudit(t testing.TB, action string) []string {
	t.Helper()
	rows, err := f.b.db.Pool.Query(context.Background(),
		`SELECT coalesce(actor_id::text, '') || ' ' || coalesce(target_id, '') || ' ' || details FROM audit_events WHERE action = $1 ORDER BY seq`, action)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sessionWatch is an open WatchSession stream as a test reads it.
type sessionWatch struct {
	t      testing.TB
	stream *connect.ServerStreamForClient[nxgv1.WatchSessionResponse]
	seq    uint64
	cancel context.CancelFunc
}

func (f *sessionFloor) watch(t testing.TB, caller auditTestCaller) *sessionWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.client.WatchSession(ctx, authBearer(&nxgv1.WatchSessionRequest{}, caller.Token))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = stream.Close() })
	return &sessionWatch{t: t, stream: stream, cancel: cancel}
}

// next reads the next message within 10s and checks its sequence follows
// the previous one without a gap.
func (w *sessionWatch) next() *nxgv1.WatchSessionResponse {
	w.t.Helper()
	got := make(chan bool, 1)
	go func() { got <- w.stream.Receive() }()
	select {
	case ok := <-got:
		if !ok {
			w.t.Fatalf("stream ended: %v", w.stream.Err())
		}
	case <-time.After(10 * time.Second):
		w.cancel()
		<-got
		w.t.Fatal("no message within 10s")
	}
	msg := w.stream.Msg()
	w.seq++
	if msg.GetSequence() != w.seq {
		w.t.Fatalf("sequence = %d, want %d (message %v)", msg.GetSequence(), w.seq, msg)
	}
	return msg
}

// ended waits up to 10s for the stream to end and returns its error.
func (w *sessionWatch) ended() error {
	w.t.Helper()
	done := make(chan bool, 1)
	go func() {
		for w.stream.Receive() {
		}
		done <- true
	}()
	select {
	case <-done:
		return w.stream.Err()
	case <-time.After(10 * time.Second):
		w.cancel()
		<-done
		w.t.Fatal("stream still open after 10s")
		return nil
	}
}

func TestGetCheckinCode(t *testing.T) {
	t.Parallel()
	f := setupSessionFloor(t)
	ctx := context.Background()
	get := func(tok, branch string) (*nxgv1.GetCheckinCodeResponse, error) {
		res, err := f.client.GetCheckinCode(ctx, authBearer(&nxgv1.GetCheckinCodeRequest{BranchId: branch}, tok))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}

	t.Run("StaffOfTheBranch", func(t *testing.T) {
		before := f.clock.now()
		res, err := get(f.staffA.Token, f.branchA)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.fl.Codes.Verify(uuid.MustParse(f.branchA), res.GetQrPayload()); err != nil {
			t.Fatalf("the code does not verify for its branch: %v", err)
		}
		exp, refresh := res.GetExpiresAt().AsTime(), res.GetRefreshAt().AsTime()
		if !exp.After(before) || exp.After(before.Add(checkin.Validity)) {
			t.Fatalf("expires_at %v, want within a minute of %v", exp, before)
		}
		// The next code is issued 30 s after this one's window opened.
		if exp.Sub(refresh) != checkin.Validity-checkin.Rotation || refresh.After(before.Add(checkin.Rotation)) {
			t.Fatalf("refresh_at %v with expires_at %v, want the start of the next 30s window", refresh, exp)
		}
	})
	t.Run("Admin", func(t *testing.T) {
		if _, err := get(f.admin.Token, f.branchB); err != nil {
			t.Fatal(err)
		}
		_, err := get(f.admin.Token, uuid.NewString())
		requireAuthCode(t, err, connect.CodeNotFound, "branch")
	})
	t.Run("OthersRefused", func(t *testing.T) {
		_, err := get(f.staffA.Token, f.branchB)
		requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
		_, err = get(f.member.Token, f.branchA)
		requireAuthCode(t, err, connect.CodePermissionDenied, "staff of the branch, admins and the branch's kiosks")
		_, err = get(f.staffA.Token, "not-a-uuid")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "branch_id")
	})
	t.Run("Devices", func(t *testing.T) {
		_, kiosk := f.b.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")
		if _, err := get(kiosk, f.branchA); err != nil {
			t.Fatalf("kiosk of the branch: %v", err)
		}
		_, err := get(kiosk, f.branchB)
		requireAuthCode(t, err, connect.CodePermissionDenied, "only a kiosk of this branch")
		_, reader := f.b.signInDevice(t, f.staffA.Token, f.branchA, "nfc_reader", "")
		_, err = get(reader, f.branchA)
		requireAuthCode(t, err, connect.CodePermissionDenied, "only a kiosk of this branch")
	})
}

func TestStartSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("QRCheckIn", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		before := time.Now()
		res := f.checkIn(t, f.member, f.branchA)
		s := res.GetSession()
		if s.GetUserId() != f.member.ID.String() || s.GetBranchId() != f.branchA || s.GetMethod() != nxgv1.CheckinMethod_CHECKIN_METHOD_QR ||
			s.GetEndedAt() != nil || s.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_UNSPECIFIED || res.GetSuperseded() != nil {
			t.Fatalf("session = %v, superseded %v", s, res.GetSuperseded())
		}
		started, expires := s.GetStartedAt().AsTime(), s.GetExpiresAt().AsTime()
		if started.Before(before.Add(-time.Second)) || expires.Sub(started) != 240*time.Minute {
			t.Fatalf("started %v, expires %v; want now and the branch's default 240 minutes later", started, expires)
		}
		// The timeout job was inserted with the session, due at its expiry.
		var args string
		var due time.Time
		if err := f.b.db.Pool.QueryRow(ctx, `SELECT args->>'session_id', scheduled_at FROM river_job WHERE kind = 'session_timeout'`).Scan(&args, &due); err != nil {
			t.Fatalf("timeout job: %v", err)
		}
		if args != s.GetId() || !due.Equal(expires) {
			t.Fatalf("timeout job for %s due %v, want %s due %v", args, due, s.GetId(), expires)
		}
		audit := f.sessionAudit(t, actionGymSessionStarted)
		want := fmt.Sprintf(`%s %s {"branch_id":"%s","method":"qr","session_id":"%s"}`, f.member.ID, f.member.ID, f.branchA, s.GetId())
		if len(audit) != 1 || audit[0] != want {
			t.Fatalf("audit = %q, want %q", audit, want)
		}
		if got := f.active(t, f.member); got.GetSession().GetId() != s.GetId() || got.GetLink() != nil {
			t.Fatalf("GetActiveSession = %v, want the new session and no link", got)
		}
	})

	t.Run("SameBranchTwiceIsIdempotent", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		first := f.checkIn(t, f.member, f.branchA).GetSession()
		again := f.checkIn(t, f.member, f.branchA)
		if again.GetSession().GetId() != first.GetId() || !again.GetSession().GetExpiresAt().AsTime().Equal(first.GetExpiresAt().AsTime()) || again.GetSuperseded() != nil {
			t.Fatalf("second check-in = %v, want the first session %v unchanged", again, first)
		}
		if n := f.count(t, `SELECT count(*) FROM gym_sessions`); n != 1 {
			t.Fatalf("%d sessions, want 1", n)
		}
		if n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'session_timeout'`); n != 1 {
			t.Fatalf("%d timeout jobs, want 1", n)
		}
		if n := len(f.sessionAudit(t, actionGymSessionStarted)); n != 1 {
			t.Fatalf("%d check-in audit rows, want 1", n)
		}
	})

	t.Run("ConcurrentStartsMakeOneSession", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		code := f.code(t, f.branchA)
		const n = 8
		var wg sync.WaitGroup
		ids := make([]string, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				res, err := f.startQR(f.roamer, f.branchA, code)
				ids[i], errs[i] = res.GetSession().GetId(), err
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("start %d: %v", i, errs[i])
			}
			if ids[i] != ids[0] {
				t.Fatalf("starts returned sessions %q, want one", ids)
			}
		}
		if got := f.count(t, `SELECT count(*) FROM gym_sessions`); got != 1 {
			t.Fatalf("%d sessions, want 1", got)
		}
	})

	t.Run("ConcurrentStartsAtTwoBranchesLeaveOneOpen", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		codes := map[string]string{f.branchA: f.code(t, f.branchA), f.branchB: f.code(t, f.branchB)}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			branch := f.branchA
			if i%2 == 1 {
				branch = f.branchB
			}
			wg.Go(func() {
				_, err := f.startQR(f.roamer, branch, codes[branch])
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			// A start that lost twice in a row may be asked to retry; it
			// never fails otherwise.
			if err != nil && connect.CodeOf(err) != connect.CodeAborted {
				t.Fatalf("start: %v", err)
			}
		}
		if got := f.count(t, `SELECT count(*) FROM gym_sessions WHERE ended_at IS NULL`); got != 1 {
			t.Fatalf("%d open sessions, want 1", got)
		}
		if got := f.count(t, `SELECT count(*) FROM gym_sessions WHERE ended_at IS NOT NULL AND end_reason <> 'superseded'`); got != 0 {
			t.Fatalf("%d sessions ended other than superseded", got)
		}
	})

	t.Run("OtherBranchSupersedes", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		first := f.checkIn(t, f.roamer, f.branchA).GetSession()
		res := f.checkIn(t, f.roamer, f.branchB)
		if res.GetSession().GetBranchId() != f.branchB || res.GetSession().GetId() == first.GetId() {
			t.Fatalf("session = %v, want a new one at branch B", res.GetSession())
		}
		old := res.GetSuperseded()
		if old.GetId() != first.GetId() || old.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_SUPERSEDED || old.GetEndedAt() == nil {
			t.Fatalf("superseded = %v, want the first session ended as superseded", old)
		}
		if got := f.active(t, f.roamer).GetSession().GetId(); got != res.GetSession().GetId() {
			t.Fatalf("active session = %s, want the new one", got)
		}
		audit := f.sessionAudit(t, actionGymSessionStarted)
		if len(audit) != 2 || !strings.Contains(audit[1], `"superseded_session_id":"`+first.GetId()+`"`) {
			t.Fatalf("audit = %q, want the second check-in naming the superseded session", audit)
		}
	})

	t.Run("RefusedCodes", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		// Forged: a well-formed code under another key.
		otherKey := make([]byte, 32)
		forger, err := checkin.NewCodes(otherKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		forged, _ := forger.Issue(uuid.MustParse(f.branchA))
		_, err = f.startQR(f.member, f.branchA, forged)
		requireAuthCode(t, err, connect.CodeInvalidArgument, "qr_payload: is not a valid check-in code")
		// Re-dated: a genuine code with its window moved on.
		genuine := f.code(t, f.branchA)
		parts := strings.Split(genuine, ".")
		parts[2] = fmt.Sprint(mustAtoi(t, parts[2]) + 30)
		_, err = f.startQR(f.member, f.branchA, strings.Join(parts, "."))
		requireAuthCode(t, err, connect.CodeInvalidArgument, "qr_payload: is not a valid check-in code")
		_, err = f.startQR(f.member, f.branchA, "https://example.com/not-a-code")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "qr_payload: is not an NXG check-in code")
		// The member's own branch's code is refused at another branch
		// (the member may use branch B through no membership either, but
		// the code is checked first).
		_, err = f.startQR(f.member, f.branchB, genuine)
		requireAuthCode(t, err, connect.CodeInvalidArgument, "qr_payload: code is for another branch")
		// Expired: the screen's code, scanned after its minute is up.
		f.clock.advance(checkin.Validity + time.Second)
		_, err = f.startQR(f.member, f.branchA, genuine)
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "qr_payload: code expired; scan the current code")
		// The current code works.
		if _, err := f.startQR(f.member, f.branchA, f.code(t, f.branchA)); err != nil {
			t.Fatalf("current code: %v", err)
		}
		if n := f.count(t, `SELECT count(*) FROM gym_sessions`); n != 1 {
			t.Fatalf("%d sessions, want only the one with the current code", n)
		}
		// Every refusal is on the audit trail, with why; the success is not
		// among them.
		refused := f.sessionAudit(t, actionGymSessionRefused)
		if len(refused) != 5 {
			t.Fatalf("%d refused check-ins audited, want 5: %q", len(refused), refused)
		}
		for i, want := range []string{"is not a valid check-in code", "is not a valid check-in code", "is not an NXG check-in code", "code is for another branch", "code expired"} {
			if !strings.Contains(refused[i], want) || !strings.Contains(refused[i], f.member.ID.String()) || !strings.Contains(refused[i], `"method":"qr"`) {
				t.Errorf("refusal %d audited as %q, want the member, the method and %q", i, refused[i], want)
			}
		}
		if n := f.count(t, `SELECT count(*) FROM audit_events WHERE action = 'gym_session.checkin_refused' AND result <> 'denied'`); n != 0 {
			t.Fatalf("%d refusals audited with a result other than denied", n)
		}
	})

	t.Run("NeedsAValidMembership", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		// A membership of branch A does not open branch B.
		_, err := f.startQR(f.member, f.branchB, f.code(t, f.branchB))
		requireAuthCode(t, err, connect.CodePermissionDenied, "no valid membership for this branch")
		stranger := auditTestUser(t, f.b, token.RoleMember)
		_, err = f.startQR(stranger, f.branchA, f.code(t, f.branchA))
		requireAuthCode(t, err, connect.CodePermissionDenied, "no valid membership for this branch")
		// Ended, not yet started and run-out memberships count for nothing.
		f.exec(t, `INSERT INTO memberships (user_id, branch_id, valid_from, ended_at) VALUES ($1, $2, now() - interval '1 day', now())`, stranger.ID, f.branchA)
		f.exec(t, `INSERT INTO memberships (user_id, branch_id, valid_from) VALUES ($1, $2, now() + interval '1 day')`, stranger.ID, f.branchA)
		f.exec(t, `INSERT INTO memberships (user_id, branch_id, valid_from, valid_until) VALUES ($1, $2, now() - interval '2 days', now() - interval '1 day')`, stranger.ID, f.branchA)
		_, err = f.startQR(stranger, f.branchA, f.code(t, f.branchA))
		requireAuthCode(t, err, connect.CodePermissionDenied, "no valid membership for this branch")
		// A network-wide membership opens every branch.
		if _, err := f.startQR(f.roamer, f.branchB, f.code(t, f.branchB)); err != nil {
			t.Fatalf("network-wide membership at B: %v", err)
		}
		if n := f.count(t, `SELECT count(*) FROM gym_sessions`); n != 1 {
			t.Fatalf("%d sessions, want 1", n)
		}
	})

	t.Run("BranchClosed", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		f.grant(t, f.member.ID, f.closed)
		_, err := f.startQR(f.member, f.closed, f.code(t, f.closed))
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "branch is closed now")

		// Opening hours are read on the branch's own wall clock: a branch
		// 14 hours ahead of UTC open only on its local today is open now,
		// and one open every day but its local today is closed.
		const tz = "Pacific/Kiritimati"
		loc, err := time.LoadLocation(tz)
		if err != nil {
			t.Fatal(err)
		}
		today := int(time.Now().In(loc).Weekday())
		if today == 0 {
			today = 7
		}
		var others []int
		for d := 1; d <= 7; d++ {
			if d != today {
				others = append(others, d)
			}
		}
		// Near local midnight "today" may change under the test.
		if l := time.Now().In(loc); l.Hour() == 23 && l.Minute() >= 59 {
			time.Sleep(time.Until(l.Truncate(time.Minute).Add(time.Minute + time.Second)))
			today = int(time.Now().In(loc).Weekday())
			if today == 0 {
				today = 7
			}
			others = others[:0]
			for d := 1; d <= 7; d++ {
				if d != today {
					others = append(others, d)
				}
			}
		}
		openToday := f.insertBranchWithHours(t, "NXG Kiritimati Today", tz, []int{today})
		closedToday := f.insertBranchWithHours(t, "NXG Kiritimati Other Days", tz, others)
		f.grant(t, f.member.ID, openToday)
		f.grant(t, f.member.ID, closedToday)
		_, err = f.startQR(f.member, closedToday, f.code(t, closedToday))
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "branch is closed now")
		if _, err := f.startQR(f.member, openToday, f.code(t, openToday)); err != nil {
			t.Fatalf("branch open on its local today: %v", err)
		}
	})

	t.Run("OnlyMembersScanCodes", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		_, err := f.startQR(f.staffA, f.branchA, f.code(t, f.branchA))
		requireAuthCode(t, err, connect.CodePermissionDenied, "only a member's app")
		_, err = f.startQR(f.member, uuid.NewString(), f.code(t, f.branchA))
		requireAuthCode(t, err, connect.CodeNotFound, "branch")
		// A code with a user id is refused by the request's own rules.
		_, err = f.client.StartSession(ctx, authBearer(&nxgv1.StartSessionRequest{
			BranchId: f.branchA, Credential: &nxgv1.StartSessionRequest_QrPayload{QrPayload: f.code(t, f.branchA)}, UserId: f.roamer.ID.String(),
		}, f.member.Token))
		requireAuthCode(t, err, connect.CodeInvalidArgument, "user_id")
		_, err = f.client.StartSession(ctx, authBearer(&nxgv1.StartSessionRequest{BranchId: f.branchA}, f.member.Token))
		requireAuthCode(t, err, connect.CodeInvalidArgument, "credential")
	})

	t.Run("NFCReader", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		readerA, tokenA := f.b.signInDevice(t, f.staffA.Token, f.branchA, "nfc_reader", "")
		_, tokenB := f.b.signInDevice(t, f.staffB.Token, f.branchB, "nfc_reader", "")
		_, kiosk := f.b.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")

		_, err := f.startNFC(tokenB, f.branchA, f.member.ID.String())
		requireAuthCode(t, err, connect.CodePermissionDenied, "reader not of this branch")
		_, err = f.startNFC(kiosk, f.branchA, f.member.ID.String())
		requireAuthCode(t, err, connect.CodePermissionDenied, "only an NFC reader device")
		_, err = f.startNFC(f.member.Token, f.branchA, f.member.ID.String())
		requireAuthCode(t, err, connect.CodePermissionDenied, "only an NFC reader device")
		_, err = f.startNFC(tokenA, f.branchA, uuid.NewString())
		requireAuthCode(t, err, connect.CodeNotFound, "user")
		_, err = f.startNFC(tokenA, f.branchA, f.staffA.ID.String())
		requireAuthCode(t, err, connect.CodeInvalidArgument, "user_id: is not a member account")
		_, err = f.startNFC(tokenA, f.branchA, "")
		requireAuthCode(t, err, connect.CodeInvalidArgument, "user_id")
		if n := f.count(t, `SELECT count(*) FROM gym_sessions`); n != 0 {
			t.Fatalf("%d sessions after refusals", n)
		}

		res, err := f.startNFC(tokenA, f.branchA, f.member.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		s := res.GetSession()
		if s.GetMethod() != nxgv1.CheckinMethod_CHECKIN_METHOD_NFC || s.GetUserId() != f.member.ID.String() || s.GetBranchId() != f.branchA {
			t.Fatalf("session = %v, want the member checked in by NFC at A", s)
		}
		if n := f.count(t, `SELECT count(*) FROM gym_sessions WHERE id = $1 AND device_id = $2`, s.GetId(), readerA); n != 1 {
			t.Fatal("the session does not record the reader")
		}
		audit := f.sessionAudit(t, actionGymSessionStarted)
		want := fmt.Sprintf(`%s %s {"branch_id":"%s","device_id":"%s","method":"nfc","session_id":"%s"}`, readerA, f.member.ID, f.branchA, readerA, s.GetId())
		if len(audit) != 1 || audit[0] != want {
			t.Fatalf("audit = %q, want %q", audit, want)
		}
		// The member's membership rules hold for readers too.
		_, err = f.startNFC(tokenB, f.branchB, f.member.ID.String())
		requireAuthCode(t, err, connect.CodePermissionDenied, "no valid membership for this branch")
	})
}

func mustAtoi(t testing.TB, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEndSession(t *testing.T) {
	t.Parallel()

	t.Run("MemberEndsTheirOwn", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		machine := f.insertMachine(t, f.branchA, "Rower 1", "TAG-END-1")
		f.link(t, f.member, machine)

		_, err := f.end(f.roamer, s.GetId())
		requireAuthCode(t, err, connect.CodeNotFound, "gym session")
		_, err = f.end(f.staffB, s.GetId())
		requireAuthCode(t, err, connect.CodeNotFound, "gym session")
		_, err = f.end(f.member, uuid.NewString())
		requireAuthCode(t, err, connect.CodeNotFound, "gym session")

		ended, err := f.end(f.member, s.GetId())
		if err != nil {
			t.Fatal(err)
		}
		if ended.GetId() != s.GetId() || ended.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_MEMBER || ended.GetEndedAt() == nil {
			t.Fatalf("ended = %v, want ended by the member", ended)
		}
		// The machine was freed with the session.
		if n := f.count(t, `SELECT count(*) FROM machines WHERE id = $1 AND status = 'available' AND current_link_id IS NULL`, machine); n != 1 {
			t.Fatal("the machine is still held after the session ended")
		}
		if n := f.count(t, `SELECT count(*) FROM machine_links WHERE end_reason = 'session_ended'`); n != 1 {
			t.Fatal("the link did not end with the session")
		}
		_, err = f.end(f.member, s.GetId())
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "already ended")
		if got := f.active(t, f.member); got.GetSession() != nil || got.GetLink() != nil {
			t.Fatalf("GetActiveSession after the end = %v, want nothing", got)
		}
		if n := len(f.sessionAudit(t, actionGymSessionEndedByStaff)); n != 0 {
			t.Fatalf("%d staff audit rows for a member's own check-out", n)
		}
	})

	t.Run("StaffOfTheBranchAndAdmins", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		ended, err := f.end(f.staffA, s.GetId())
		if err != nil {
			t.Fatal(err)
		}
		if ended.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_STAFF {
			t.Fatalf("end reason = %v, want staff", ended.GetEndReason())
		}
		if n := f.count(t, `SELECT count(*) FROM gym_sessions WHERE id = $1 AND ended_by = $2`, s.GetId(), f.staffA.ID); n != 1 {
			t.Fatal("ended_by does not name the staff member")
		}
		_, err = f.end(f.staffA, s.GetId())
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "already ended")

		s2 := f.checkIn(t, f.roamer, f.branchB).GetSession()
		if _, err := f.end(f.admin, s2.GetId()); err != nil {
			t.Fatalf("admin: %v", err)
		}
		audit := f.sessionAudit(t, actionGymSessionEndedByStaff)
		want := []string{
			fmt.Sprintf(`%s %s {"branch_id":"%s","session_id":"%s"}`, f.staffA.ID, f.member.ID, f.branchA, s.GetId()),
			fmt.Sprintf(`%s %s {"branch_id":"%s","session_id":"%s"}`, f.admin.ID, f.roamer.ID, f.branchB, s2.GetId()),
		}
		sameIDs(t, "staff end audit", audit, want)
	})

	t.Run("DevicesEndNothing", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		_, reader := f.b.signInDevice(t, f.staffA.Token, f.branchA, "nfc_reader", "")
		_, err := f.client.EndSession(context.Background(), authBearer(&nxgv1.EndSessionRequest{SessionId: s.GetId()}, reader))
		requireAuthCode(t, err, connect.CodePermissionDenied, "devices may not call")
		if got := f.active(t, f.member).GetSession().GetId(); got != s.GetId() {
			t.Fatalf("active session = %q after a device's attempt, want %s still open", got, s.GetId())
		}
	})
}

func TestListSessions(t *testing.T) {
	t.Parallel()
	f := setupSessionFloor(t)
	ctx := context.Background()
	var want []string
	for i := range 5 {
		branch := f.branchA
		if i%2 == 1 {
			branch = f.branchB
		}
		want = append([]string{f.checkIn(t, f.roamer, branch).GetSession().GetId()}, want...)
	}
	f.checkIn(t, f.member, f.branchA) // another member's, never listed

	list := func(caller auditTestCaller, size int32, tok string) (*nxgv1.GymSessionServiceListSessionsResponse, error) {
		res, err := f.client.ListSessions(ctx, authBearer(&nxgv1.GymSessionServiceListSessionsRequest{PageSize: size, PageToken: tok}, caller.Token))
		if err != nil {
			return nil, err
		}
		return res.Msg, nil
	}
	var got []string
	tok, pages := "", 0
	for {
		res, err := list(f.roamer, 2, tok)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range res.GetSessions() {
			got = append(got, s.GetId())
		}
		if tok = res.GetNextPageToken(); tok == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	sameIDs(t, "sessions newest first", got, want)
	if pages != 3 {
		t.Fatalf("%d pages of 2 for 5 sessions, want 3", pages)
	}
	// Only the newest is open: each check-in superseded the one before.
	all, err := list(f.roamer, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range all.GetSessions() {
		open := s.GetEndedAt() == nil
		if open != (i == 0) || (i > 0 && s.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_SUPERSEDED) {
			t.Fatalf("session %d = %v", i, s)
		}
	}
	mine, err := list(f.member, 0, "")
	if err != nil || len(mine.GetSessions()) != 1 || mine.GetNextPageToken() != "" {
		t.Fatalf("member's list = %v, %v; want their one session", mine, err)
	}
	_, err = list(f.roamer, 2, "bogus")
	requireAuthCode(t, err, connect.CodeInvalidArgument, "page_token")
	_, kiosk := f.b.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")
	_, err = f.client.ListSessions(ctx, authBearer(&nxgv1.GymSessionServiceListSessionsRequest{}, kiosk))
	requireAuthCode(t, err, connect.CodePermissionDenied, "devices may not call")
	_, err = f.client.GetActiveSession(ctx, authBearer(&nxgv1.GetActiveSessionRequest{}, kiosk))
	requireAuthCode(t, err, connect.CodePermissionDenied, "devices may not call")
}

func TestWatchSession(t *testing.T) {
	t.Parallel()

	t.Run("Events", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		ctx := context.Background()
		rower := f.insertMachine(t, f.branchA, "Rower 1", "TAG-W-ROWER")
		bike := f.insertMachine(t, f.branchA, "Bike 1", "TAG-W-BIKE")
		w := f.watch(t, f.member)
		if snap := w.next().GetSnapshot(); snap == nil || snap.GetSession() != nil || snap.GetLink() != nil {
			t.Fatalf("first message = %v, want an empty snapshot", snap)
		}

		// Another member's visit is not on this stream.
		f.checkIn(t, f.roamer, f.branchA)
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		if got := w.next().GetSessionStarted(); got.GetId() != s.GetId() || got.GetBranchId() != f.branchA {
			t.Fatalf("session_started = %v, want %s", got, s.GetId())
		}

		link := f.link(t, f.member, rower)
		if got := w.next().GetMachineLinked(); got.GetId() != link.GetId() || got.GetMachineId() != rower || got.GetMachineName() != "Rower 1" ||
			got.GetBranchId() != f.branchA || got.GetSessionId() != s.GetId() {
			t.Fatalf("machine_linked = %v, want link %s of the rower", got, link.GetId())
		}

		// A set the rower reported, stored and announced the way the
		// console stores it.
		var setID uuid.UUID
		if err := db.WithTx(ctx, f.b.db.Pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `INSERT INTO machine_sets (user_id, gym_session_id, machine_id, link_id, client_set_id, reps, weight_kg, duration_seconds, calories)
				VALUES ($1, $2, $3, $4, 'console-set-1', 12, 42.5, 45, 9) RETURNING id`, f.member.ID, s.GetId(), rower, link.GetId()).Scan(&setID); err != nil {
				return err
			}
			return floor.NotifyMember(ctx, tx, f.member.ID, floor.MemberSetReported, setID)
		}); err != nil {
			t.Fatal(err)
		}
		if got := w.next().GetSetReported(); got.GetId() != setID.String() || got.GetReps() != 12 || got.GetWeightKg() != 42.5 ||
			got.GetDurationSeconds() != 45 || got.GetCalories() != 9 || got.GetClientSetId() != "console-set-1" ||
			got.GetMachineId() != rower || got.GetSessionId() != s.GetId() || got.GetRecordedAt() == nil {
			t.Fatalf("set_reported = %v", got)
		}

		// Linking the bike unlinks the rower first.
		f.link(t, f.member, bike)
		var unlinked, linked *nxgv1.MachineLink
		for unlinked == nil || linked == nil {
			msg := w.next()
			switch {
			case msg.GetMachineUnlinked() != nil:
				unlinked = msg.GetMachineUnlinked()
			case msg.GetMachineLinked() != nil:
				linked = msg.GetMachineLinked()
			default:
				t.Fatalf("unexpected %v", msg)
			}
		}
		if unlinked.GetId() != link.GetId() || unlinked.GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_REPLACED || linked.GetMachineId() != bike {
			t.Fatalf("unlinked %v, linked %v; want the rower replaced by the bike", unlinked, linked)
		}

		// Notifications the stream cannot use are skipped without a gap
		// in the sequence: an unknown kind, a payload that is not JSON,
		// and a set that no longer exists.
		f.exec(t, `SELECT pg_notify($1, json_build_object('u', $2::uuid, 'k', 'mystery', 'id', gen_random_uuid())::text)`, floor.ChannelMembers, f.member.ID)
		f.exec(t, `SELECT pg_notify($1, 'not json ' || $2)`, floor.ChannelMembers, f.member.ID.String())
		f.exec(t, `SELECT pg_notify($1, json_build_object('u', $2::uuid, 'k', 'set_reported', 'id', gen_random_uuid())::text)`, floor.ChannelMembers, f.member.ID)

		// The bike's console reports a set: it reaches the member.
		_, console := f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", bike)
		rep, err := f.machines().ReportActivity(ctx, authBearer(&nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Set{
			Set: &nxgv1.SetReport{ClientSetId: "bike-set-1", DurationSeconds: 600, DistanceM: 3000, Calories: 120},
		}}, console))
		if err != nil {
			t.Fatalf("ReportActivity: %v", err)
		}
		if got := w.next().GetSetReported(); got.GetId() != rep.Msg.GetSet().GetId() || got.GetMachineId() != bike ||
			got.GetDistanceM() != 3000 || got.GetSessionId() != s.GetId() {
			t.Fatalf("set_reported = %v, want the bike's set %v", got, rep.Msg.GetSet())
		}

		// A reconnecting client's snapshot shows the session and the bike.
		again := f.watch(t, f.member)
		snap := again.next().GetSnapshot()
		if snap.GetSession().GetId() != s.GetId() || snap.GetLink().GetMachineId() != bike || snap.GetLink().GetMachineName() != "Bike 1" {
			t.Fatalf("snapshot = %v, want the session and the bike", snap)
		}

		// Checking out unlinks the bike, then ends the session.
		if _, err := f.end(f.member, s.GetId()); err != nil {
			t.Fatal(err)
		}
		if got := w.next().GetMachineUnlinked(); got.GetMachineId() != bike || got.GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_SESSION_ENDED {
			t.Fatalf("machine_unlinked = %v, want the bike with reason session_ended", got)
		}
		if got := w.next().GetSessionEnded(); got.GetId() != s.GetId() || got.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_MEMBER {
			t.Fatalf("session_ended = %v, want %s ended by the member", got, s.GetId())
		}
	})

	t.Run("MembersOnly", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		w := f.watch(t, f.staffA)
		requireAuthCode(t, w.ended(), connect.CodePermissionDenied, "only members")
	})

	t.Run("ResyncAfterListenerLoss", func(t *testing.T) {
		t.Parallel()
		f := setupSessionFloor(t)
		w := f.watch(t, f.member)
		w.next()
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		w.next()
		// Cut the hub's listener connection: it reconnects, and the stream
		// sends a fresh snapshot since events may have been lost meanwhile.
		if n := f.count(t, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, realtime.DefaultApplicationName); n != 1 {
			t.Fatalf("terminated %d listener connections, want 1", n)
		}
		snap := w.next().GetSnapshot()
		if snap.GetSession().GetId() != s.GetId() {
			t.Fatalf("message after the reconnection = %v, want a snapshot with the session", snap)
		}
		// Events flow again after the resync.
		if _, err := f.end(f.member, s.GetId()); err != nil {
			t.Fatal(err)
		}
		if got := w.next().GetSessionEnded(); got.GetId() != s.GetId() {
			t.Fatalf("after resync: %v, want the session's end", got)
		}
	})

	t.Run("SlowConsumerIsCutOff", func(t *testing.T) {
		t.Parallel()
		// A hub whose subscribers hold four events: a burst of
		// notifications overfills the stream's buffer.
		f := setupSessionFloor(t, func(o *Options) {
			hub := realtime.NewHub(realtime.Options{
				DatabaseURL: o.Pool.Config().ConnString(), Channels: floor.Channels, Buffer: 4,
				Logger: slog.New(slog.DiscardHandler),
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = hub.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			waitUntil(t, "the small hub to connect", hub.Ready)
			o.Floor.Hub = hub
		})
		w := f.watch(t, f.member)
		w.next()
		f.exec(t, `SELECT pg_notify($1, json_build_object('u', $2::uuid, 'k', 'set_reported', 'id', gen_random_uuid())::text)
			FROM generate_series(1, 2000)`, floor.ChannelMembers, f.member.ID)
		requireAuthCode(t, w.ended(), connect.CodeResourceExhausted, "fell behind; reconnect")
		// Reconnecting works and starts with a snapshot.
		again := f.watch(t, f.member)
		if again.next().GetSnapshot() == nil {
			t.Fatal("reconnect did not start with a snapshot")
		}
	})

	t.Run("EndsWhenTheHubStops", func(t *testing.T) {
		t.Parallel()
		var stopHub context.CancelFunc
		f := setupSessionFloor(t, func(o *Options) {
			hub := realtime.NewHub(realtime.Options{
				DatabaseURL: o.Pool.Config().ConnString(), Channels: floor.Channels, Logger: slog.New(slog.DiscardHandler),
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = hub.Run(ctx) }()
			stopHub = cancel
			t.Cleanup(func() { cancel(); <-done })
			waitUntil(t, "the hub to connect", hub.Ready)
			o.Floor.Hub = hub
		})
		w := f.watch(t, f.member)
		w.next()
		// Without its hub the stream would miss every change: it ends
		// and the client reconnects (to another instance).
		stopHub()
		requireAuthCode(t, w.ended(), connect.CodeUnavailable, "reconnect")
	})

	t.Run("EndsWhenDraining", func(t *testing.T) {
		t.Parallel()
		drain, stop := context.WithCancel(context.Background())
		defer stop()
		f := setupSessionFloor(t, func(o *Options) { o.Floor.Draining = drain })
		w := f.watch(t, f.member)
		w.next()
		stop()
		if err := w.ended(); err != nil && !errors.Is(err, io.EOF) && connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("stream ended with %v, want a clean end or unavailable", err)
		}
	})

	t.Run("TimeoutEndsTheSession", func(t *testing.T) {
		t.Parallel()
		// NXG_SESSION_TIMEOUT_OVERRIDE shortens every session to 2 s.
		f := setupSessionFloor(t, func(o *Options) { o.Floor.Settings.SessionTimeoutOverride = 2 * time.Second })
		ctx := context.Background()
		workers, err := jobs.Workers(jobs.Deps{Pool: f.b.db.Pool, Floor: f.fl.Settings})
		if err != nil {
			t.Fatal(err)
		}
		runner, err := river.NewClient(riverpgxv5.New(f.b.db.Pool), &river.Config{
			Logger:            slog.New(slog.DiscardHandler),
			Queues:            map[string]river.QueueConfig{jobs.QueueDefault: {MaxWorkers: 2}},
			Workers:           workers,
			FetchCooldown:     20 * time.Millisecond,
			FetchPollInterval: 50 * time.Millisecond,
			TestOnly:          true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := runner.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = runner.Stop(stopCtx)
		})

		w := f.watch(t, f.member)
		w.next()
		s := f.checkIn(t, f.member, f.branchA).GetSession()
		if d := s.GetExpiresAt().AsTime().Sub(s.GetStartedAt().AsTime()); d != 2*time.Second {
			t.Fatalf("session lasts %v, want the 2s override", d)
		}
		machine := f.insertMachine(t, f.branchA, "Rower T", "TAG-TIMEOUT")
		f.link(t, f.member, machine)
		w.next() // session_started
		w.next() // machine_linked
		// River promotes due jobs every few seconds: wait generously.
		deadline := time.Now().Add(30 * time.Second)
		var ended *nxgv1.GymSession
		for ended == nil {
			if time.Now().After(deadline) {
				t.Fatal("the session did not time out within 30s")
			}
			msg := w.next()
			if u := msg.GetMachineUnlinked(); u != nil && u.GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_SESSION_ENDED {
				t.Fatalf("machine unlinked with %v, want session_ended", u.GetEndReason())
			}
			ended = msg.GetSessionEnded()
		}
		if ended.GetId() != s.GetId() || ended.GetEndReason() != nxgv1.SessionEndReason_SESSION_END_REASON_TIMEOUT {
			t.Fatalf("session_ended = %v, want a timeout of %s", ended, s.GetId())
		}
		if n := f.count(t, `SELECT count(*) FROM machines WHERE id = $1 AND status = 'available'`, machine); n != 1 {
			t.Fatal("the machine is still held after the timeout")
		}
	})
}
