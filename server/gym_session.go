package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/checkin"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/pagination"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/requestid"
	"github.com/nxg-fitness/nxg/jobs"
)

// Audit actions of this service. Rows target the member ("user"), so they
// are part of the member's data export and erased with them.
const (
	actionGymSessionStarted      = "gym_session.started"
	actionGymSessionEndedByStaff = "gym_session.ended_by_staff"
	actionGymSessionRefused      = "gym_session.checkin_refused"
)

// gymSessionListName ties page tokens to this list.
const gymSessionListName = "gym_sessions"

// Check-in methods, as stored in gym_sessions.method.
const (
	checkinMethodQR  = "qr"
	checkinMethodNFC = "nfc"
)

// gymSessionOpenUserKey is the partial unique index that keeps a member to
// one open session; a concurrent check-in that lost the race hits it.
const gymSessionOpenUserKey = "gym_sessions_open_user_key"

// errCheckinRace says a concurrent check-in of the same member committed
// first; StartSession retries once and then finds that session.
var errCheckinRace = errors.New("gym session: concurrent check-in")

// gymSessionService serves nxg.v1.GymSessionService: members check in at a
// branch with the entrance's rotating QR code (or an NFC reader of the
// branch checks them in), end their visit, and watch it live; staff show
// the code on a kiosk and end members' visits; a River job ends every
// visit after the branch's maximum length.
type gymSessionService struct {
	nxgv1connect.UnimplementedGymSessionServiceHandler
	pool    *pgxpool.Pool
	id      Identity
	floor   Floor
	guard   *streamGuard
	logger  *slog.Logger
	queries *dbsqlc.Queries
	now     func() time.Time
}

// NewGymSessionService returns the GymSessionService handler.
func NewGymSessionService(pool *pgxpool.Pool, id Identity, fl Floor, guard *streamGuard, logger *slog.Logger) *gymSessionService {
	return &gymSessionService{
		pool: pool, id: id, floor: fl, guard: guard, logger: logger,
		queries: dbsqlc.New(), now: time.Now,
	}
}

func (s *gymSessionService) GetCheckinCode(ctx context.Context, req *connect.Request[nxgv1.GetCheckinCodeRequest]) (*connect.Response[nxgv1.GetCheckinCodeResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	branchID, err := uuid.Parse(req.Msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	_, err = db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (struct{}, error) {
		switch {
		case p.IsAdmin():
		case p.IsDevice():
			if p.Device.Kind != auth.DeviceKiosk || p.Device.BranchID != branchID {
				return struct{}{}, apperr.PermissionDenied("only a kiosk of this branch may show its check-in code")
			}
		case p.IsStaff():
			if err := requireStaffOf(ctx, tx, p, branchID, "show check-in codes"); err != nil {
				return struct{}{}, err
			}
		default:
			return struct{}{}, apperr.PermissionDenied("only staff of the branch, admins and the branch's kiosks may show its check-in code")
		}
		if _, err := s.queries.BranchGet(ctx, tx, branchID); db.IsNotFound(err) {
			return struct{}{}, apperr.NotFound("branch", branchID.String())
		} else if err != nil {
			return struct{}{}, fmt.Errorf("read branch: %w", err)
		}
		return struct{}{}, nil
	})
	if err != nil {
		return nil, err
	}
	payload, expiresAt := s.floor.Codes.Issue(branchID)
	// A code is accepted for Validity from the start of its window and a
	// new one is issued every Rotation, so the next window starts
	// Validity-Rotation before this one expires: the kiosk fetches then.
	refreshAt := expiresAt.Add(checkin.Rotation - checkin.Validity)
	return connect.NewResponse(&nxgv1.GetCheckinCodeResponse{
		QrPayload: payload,
		ExpiresAt: timestamppb.New(expiresAt),
		RefreshAt: timestamppb.New(refreshAt),
	}), nil
}

// checkinAttempt is a StartSession request whose caller and credential
// shape have been checked: who checks in where, and how.
type checkinAttempt struct {
	member    uuid.UUID
	branch    uuid.UUID
	method    string
	qrPayload string
	device    uuid.NullUUID
}

// startResult is what one check-in transaction did.
type startResult struct {
	session    dbsqlc.GymSession
	superseded *dbsqlc.GymSession
}

func (s *gymSessionService) StartSession(ctx context.Context, req *connect.Request[nxgv1.StartSessionRequest]) (*connect.Response[nxgv1.StartSessionResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	msg := req.Msg
	branchID, err := uuid.Parse(msg.GetBranchId())
	if err != nil {
		return nil, apperr.InvalidArgument("branch_id", "must be a UUID")
	}
	in := checkinAttempt{branch: branchID}
	switch c := msg.GetCredential().(type) {
	case *nxgv1.StartSessionRequest_QrPayload:
		// The entrance code proves presence, not identity: only the
		// member's own app may present it, for the member signed in.
		if !p.IsMember() {
			return nil, apperr.PermissionDenied("qr_payload: only a member's app may check in with a scanned code, for the member signed in")
		}
		if msg.GetUserId() != "" {
			return nil, apperr.InvalidArgument("user_id", "must be empty with qr_payload: members check themselves in")
		}
		in.member, in.method, in.qrPayload = p.UserID, checkinMethodQR, c.QrPayload
	case *nxgv1.StartSessionRequest_NfcUid:
		if !p.IsDevice() || p.Device.Kind != auth.DeviceNFCReader {
			return nil, apperr.PermissionDenied("nfc_uid: only an NFC reader device may check members in by NFC")
		}
		if p.Device.BranchID != branchID {
			return nil, apperr.PermissionDenied("reader not of this branch: an NFC reader checks members in at its own branch only")
		}
		member, err := uuid.Parse(msg.GetUserId())
		if err != nil {
			return nil, apperr.InvalidArgument("user_id", "is required with nfc_uid and must be a UUID")
		}
		in.member, in.method = member, checkinMethodNFC
		in.device = uuid.NullUUID{UUID: p.Device.ID, Valid: true}
	default:
		return nil, apperr.InvalidArgument("credential", "one of qr_payload or nfc_uid is required")
	}

	// Two check-ins of one member at the same moment (a double tap, a
	// reader and the app) race for the one open session the unique index
	// allows. The loser's transaction fails on the index; run it again and
	// it finds the winner's session: the same branch's is returned, another
	// branch's is superseded.
	var res startResult
	for attempt := 0; ; attempt++ {
		res, err = db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (startResult, error) {
			return s.start(ctx, tx, p, in)
		})
		if !errors.Is(err, errCheckinRace) || attempt > 0 {
			break
		}
	}
	if errors.Is(err, errCheckinRace) {
		return nil, &apperr.Error{Code: apperr.CodeAborted, Message: "another check-in of this member happened at the same moment; retry", Cause: err}
	}
	if err != nil {
		s.auditRefusal(ctx, p, in, err)
		return nil, err
	}
	resp := &nxgv1.StartSessionResponse{Session: gymSessionProto(res.session)}
	if res.superseded != nil {
		resp.Superseded = gymSessionProto(*res.superseded)
	}
	return connect.NewResponse(resp), nil
}

// start runs one check-in in tx: the checks that need the database, then
// the session, its timeout job, the member's notification and the audit
// row, which commit together or not at all.
func (s *gymSessionService) start(ctx context.Context, tx pgx.Tx, p auth.Principal, in checkinAttempt) (startResult, error) {
	branch, err := s.queries.BranchGet(ctx, tx, in.branch)
	if db.IsNotFound(err) {
		return startResult{}, apperr.NotFound("branch", in.branch.String())
	}
	if err != nil {
		return startResult{}, fmt.Errorf("read branch: %w", err)
	}
	switch in.method {
	case checkinMethodQR:
		if err := checkinCodeError(s.floor.Codes.Verify(branch.ID, in.qrPayload)); err != nil {
			return startResult{}, err
		}
	case checkinMethodNFC:
		// UserGet finds live accounts only: a closed account checks in nowhere.
		user, err := s.queries.UserGet(ctx, tx, in.member)
		if db.IsNotFound(err) {
			return startResult{}, apperr.NotFound("user", in.member.String())
		}
		if err != nil {
			return startResult{}, fmt.Errorf("read user: %w", err)
		}
		if user.Role != "member" {
			return startResult{}, apperr.InvalidArgument("user_id", "is not a member account; only members check in")
		}
	}

	open, err := s.queries.GymSessionOpenForUser(ctx, tx, in.member)
	hasOpen := err == nil
	if err != nil && !db.IsNotFound(err) {
		return startResult{}, fmt.Errorf("read open session: %w", err)
	}
	if hasOpen && open.BranchID == branch.ID {
		// Checking in twice at the same branch changes nothing.
		return startResult{session: open}, nil
	}

	now := s.now()
	active, err := s.queries.MembershipActiveForBranch(ctx, tx, dbsqlc.MembershipActiveForBranchParams{UserID: in.member, At: now, BranchID: branch.ID})
	if err != nil {
		return startResult{}, fmt.Errorf("read memberships: %w", err)
	}
	if !active {
		return startResult{}, apperr.PermissionDenied("no valid membership for this branch: the member needs a membership of this branch or a network-wide one, valid now")
	}
	if err := s.checkOpen(ctx, tx, branch, now); err != nil {
		return startResult{}, err
	}

	var res startResult
	if hasOpen {
		old, err := floor.EndSession(ctx, tx, open.ID, floor.SessionEndSuperseded, uuid.Nil)
		if err != nil {
			// The open session is locked, so it cannot have ended meanwhile.
			return startResult{}, fmt.Errorf("supersede session %s: %w", open.ID, err)
		}
		res.superseded = &old
	}
	started := now.UTC().Truncate(time.Microsecond)
	sess, err := s.queries.GymSessionInsert(ctx, tx, dbsqlc.GymSessionInsertParams{
		UserID:    in.member,
		BranchID:  branch.ID,
		Method:    in.method,
		DeviceID:  in.device,
		StartedAt: started,
		ExpiresAt: started.Add(s.floor.Settings.SessionLength(branch.MaxSessionMinutes)),
	})
	if uniqueViolationOn(err, gymSessionOpenUserKey) {
		return startResult{}, errCheckinRace
	}
	if err != nil {
		return startResult{}, fmt.Errorf("insert session: %w", err)
	}
	res.session = sess
	// The timeout job commits with the session: a session never exists
	// without the job that ends it.
	if _, err := s.id.River.InsertTx(ctx, tx, jobs.SessionTimeoutArgs{SessionID: sess.ID}, &river.InsertOpts{ScheduledAt: sess.ExpiresAt}); err != nil {
		return startResult{}, fmt.Errorf("schedule session timeout: %w", err)
	}
	if err := floor.NotifyMember(ctx, tx, in.member, floor.MemberSessionStarted, sess.ID); err != nil {
		return startResult{}, err
	}
	details := map[string]string{"session_id": sess.ID.String(), "branch_id": branch.ID.String(), "method": in.method}
	if in.device.Valid {
		details["device_id"] = in.device.UUID.String()
	}
	if res.superseded != nil {
		details["superseded_session_id"] = res.superseded.ID.String()
	}
	if err := s.id.Audit.Record(ctx, tx, s.event(ctx, p, actionGymSessionStarted, in.member, details)); err != nil {
		return startResult{}, err
	}
	return res, nil
}

// checkOpen refuses a check-in while the branch is closed, judged by its
// opening hours on the wall clock of its own time zone.
func (s *gymSessionService) checkOpen(ctx context.Context, tx pgx.Tx, branch dbsqlc.Branch, now time.Time) error {
	tz, err := time.LoadLocation(branch.Timezone)
	if err != nil {
		return fmt.Errorf("branch %s time zone %q: %w", branch.ID, branch.Timezone, err)
	}
	hours, err := s.queries.GymSessionBranchHours(ctx, tx, branch.ID)
	if err != nil {
		return fmt.Errorf("read opening hours: %w", err)
	}
	intervals := make([]checkin.Interval, len(hours))
	for i, h := range hours {
		intervals[i] = checkin.Interval{Weekday: int(h.Weekday), Opens: clockMinutes(h.OpensAt), Closes: clockMinutes(h.ClosesAt)}
	}
	return checkin.CheckOpen(intervals, tz, now)
}

// clockMinutes is a time of day as minutes since midnight; 24:00 is 1440.
func clockMinutes(t pgtype.Time) int {
	return int(t.Microseconds / int64(time.Minute/time.Microsecond))
}

// checkinCodeError turns checkin.Codes.Verify's failures into the errors
// the member's app shows: each kind of failure says what to do next.
func checkinCodeError(err error) error {
	if err == nil {
		return nil
	}
	e, ok := apperr.As(err)
	if !ok {
		return err
	}
	switch e.Message {
	case checkin.MsgMalformed:
		return apperr.InvalidArgument(checkin.Field, "is not an NXG check-in code; scan the code on the branch's entrance")
	case checkin.MsgInvalid:
		return apperr.InvalidArgument(checkin.Field, "is not a valid check-in code: it was not issued by NXG")
	case checkin.MsgOtherBranch:
		return apperr.InvalidArgument(checkin.Field, "code is for another branch; scan the code on this branch's entrance")
	case checkin.MsgExpired:
		// The code was genuine: the request is fine, time moved on.
		return &apperr.Error{Code: apperr.CodeFailedPrecondition, Field: checkin.Field, Message: "code expired; scan the current code"}
	}
	return err
}

func (s *gymSessionService) EndSession(ctx context.Context, req *connect.Request[nxgv1.EndSessionRequest]) (*connect.Response[nxgv1.EndSessionResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	id, err := uuid.Parse(req.Msg.GetSessionId())
	if err != nil {
		return nil, apperr.InvalidArgument("session_id", "must be a UUID")
	}
	notFound := apperr.NotFound("gym session", id.String())
	sess, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.GymSession, error) {
		sess, err := s.queries.GymSessionGetForUpdate(ctx, tx, id)
		if db.IsNotFound(err) {
			return dbsqlc.GymSession{}, notFound
		}
		if err != nil {
			return dbsqlc.GymSession{}, fmt.Errorf("read session: %w", err)
		}
		reason, endedBy := floor.SessionEndMember, uuid.Nil
		switch {
		case !p.IsDevice() && sess.UserID == p.UserID:
		case p.IsStaff():
			if !p.IsAdmin() {
				has, err := s.queries.StaffBranchHas(ctx, tx, dbsqlc.StaffBranchHasParams{UserID: p.UserID, BranchID: sess.BranchID})
				if err != nil {
					return dbsqlc.GymSession{}, fmt.Errorf("read staff branches: %w", err)
				}
				if !has {
					// Staff of other branches learn nothing of this visit.
					return dbsqlc.GymSession{}, notFound
				}
			}
			reason, endedBy = floor.SessionEndStaff, p.UserID
		default:
			// Other members' visits are not theirs to know of.
			return dbsqlc.GymSession{}, notFound
		}
		if sess.EndedAt.Valid {
			return dbsqlc.GymSession{}, apperr.FailedPrecondition("gym session %s has already ended (%s)", id, sess.EndReason.String)
		}
		ended, err := floor.EndSession(ctx, tx, id, reason, endedBy)
		if err != nil {
			// The session is locked and open: ending it cannot race.
			return dbsqlc.GymSession{}, err
		}
		if reason == floor.SessionEndStaff {
			details := map[string]string{"session_id": id.String(), "branch_id": sess.BranchID.String()}
			if err := s.id.Audit.Record(ctx, tx, s.event(ctx, p, actionGymSessionEndedByStaff, sess.UserID, details)); err != nil {
				return dbsqlc.GymSession{}, err
			}
		}
		return ended, nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.EndSessionResponse{Session: gymSessionProto(sess)}), nil
}

// sessionSnapshot is a member's open session and machine link, either of
// which may be absent.
type sessionSnapshot struct {
	session *dbsqlc.GymSession
	link    *dbsqlc.GymSessionOpenLinkRow
}

func (sn sessionSnapshot) proto() *nxgv1.SessionSnapshot {
	out := &nxgv1.SessionSnapshot{}
	if sn.session != nil {
		out.Session = gymSessionProto(*sn.session)
	}
	if sn.link != nil {
		out.Link = machineLinkProto(sn.link.MachineLink, sn.link.BranchID, sn.link.MachineName)
	}
	return out
}

// snapshot reads the member's open session and link in one consistent
// snapshot, so the link shown belongs with the session shown.
func (s *gymSessionService) snapshot(ctx context.Context, userID uuid.UUID) (sessionSnapshot, error) {
	return db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (sessionSnapshot, error) {
		var sn sessionSnapshot
		sess, err := s.queries.GymSessionOpen(ctx, tx, userID)
		switch {
		case err == nil:
			sn.session = &sess
		case !db.IsNotFound(err):
			return sessionSnapshot{}, fmt.Errorf("read open session: %w", err)
		}
		link, err := s.queries.GymSessionOpenLink(ctx, tx, userID)
		switch {
		case err == nil:
			sn.link = &link
		case !db.IsNotFound(err):
			return sessionSnapshot{}, fmt.Errorf("read open machine link: %w", err)
		}
		return sn, nil
	})
}

func (s *gymSessionService) GetActiveSession(ctx context.Context, _ *connect.Request[nxgv1.GetActiveSessionRequest]) (*connect.Response[nxgv1.GetActiveSessionResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	sn, err := s.snapshot(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	out := sn.proto()
	return connect.NewResponse(&nxgv1.GetActiveSessionResponse{Session: out.Session, Link: out.Link}), nil
}

// gymSessionCursor is the keyset position after the last session of a page.
type gymSessionCursor struct {
	StartedAt time.Time `json:"s"`
	ID        uuid.UUID `json:"i"`
}

func (s *gymSessionService) ListSessions(ctx context.Context, req *connect.Request[nxgv1.GymSessionServiceListSessionsRequest]) (*connect.Response[nxgv1.GymSessionServiceListSessionsResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	var cursor gymSessionCursor
	after, err := pagination.Decode(gymSessionListName, req.Msg.GetPageToken(), &cursor)
	if err != nil {
		return nil, err
	}
	size := pagination.Size(req.Msg.GetPageSize())
	params := dbsqlc.GymSessionListParams{UserID: p.UserID, RowLimit: size + 1}
	if after {
		params.AfterStartedAt = pgtype.Timestamptz{Time: cursor.StartedAt, Valid: true}
		params.AfterID = uuid.NullUUID{UUID: cursor.ID, Valid: true}
	}
	rows, err := s.queries.GymSessionList(ctx, s.pool, params)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	resp := &nxgv1.GymSessionServiceListSessionsResponse{}
	rows, resp.NextPageToken = pagination.Page(gymSessionListName, rows, size, func(last dbsqlc.GymSession) any {
		return gymSessionCursor{StartedAt: last.StartedAt, ID: last.ID}
	})
	resp.Sessions = make([]*nxgv1.GymSession, len(rows))
	for i, r := range rows {
		resp.Sessions[i] = gymSessionProto(r)
	}
	return connect.NewResponse(resp), nil
}

func (s *gymSessionService) WatchSession(ctx context.Context, _ *connect.Request[nxgv1.WatchSessionRequest], stream *connect.ServerStream[nxgv1.WatchSessionResponse]) error {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return err
	}
	if !p.IsMember() {
		return apperr.PermissionDenied("only members have gym sessions to watch")
	}
	ctx, release, err := s.guard.admit(ctx, p)
	if err != nil {
		return err
	}
	defer release()
	return s.watch(ctx, p, stream.Send)
}

// watch streams p's session events to send until ctx ends (the guard's
// context: client gone, server draining, session revoked): a snapshot
// first, then each change, numbered from 1 without gaps. The WebSocket
// handler calls it too, after admitting the stream itself.
func (s *gymSessionService) watch(ctx context.Context, p auth.Principal, send func(*nxgv1.WatchSessionResponse) error) error {
	// A cheap first cut on the hub's goroutine: the payload names the
	// member's id. The exact test is made on this goroutine, below.
	needle := []byte(p.UserID.String())
	sub := s.floor.Hub.Subscribe(floor.ChannelMembers, func(ev realtime.Event) bool {
		return bytes.Contains(ev.Payload, needle)
	})
	defer sub.Close()

	var seq uint64
	emit := func(msg *nxgv1.WatchSessionResponse) error {
		seq++
		msg.Sequence = seq
		return send(msg)
	}
	sendSnapshot := func() error {
		sn, err := s.snapshot(ctx, p.UserID)
		if err != nil {
			return err
		}
		return emit(&nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_Snapshot{Snapshot: sn.proto()}})
	}
	// Subscribed before the snapshot is read, so nothing committed after
	// the read is missed; an event about something the snapshot already
	// shows is sent again, which the client applies idempotently.
	if err := sendSnapshot(); err != nil {
		return s.watchError(ctx, err)
	}
	for {
		select {
		case <-ctx.Done():
			return streamEnd(ctx)
		case ev, ok := <-sub.Events():
			if !ok {
				return subscriptionEnd(ctx, sub.Err(), "reconnect for a fresh snapshot")
			}
			if ev.Resync {
				if err := sendSnapshot(); err != nil {
					return s.watchError(ctx, err)
				}
				continue
			}
			msg, err := s.memberEvent(ctx, p.UserID, ev.Payload)
			if err != nil {
				return s.watchError(ctx, err)
			}
			if msg == nil {
				continue
			}
			if err := emit(msg); err != nil {
				return s.watchError(ctx, err)
			}
		}
	}
}

// watchError is the error a stream returns when a read or a send failed:
// if the stream's context ended meanwhile, that is the real reason.
func (s *gymSessionService) watchError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return streamEnd(ctx)
	}
	return err
}

// memberEvent turns one notification into the message for the member, or
// nil when it is not theirs or what it names is gone (erased meanwhile).
func (s *gymSessionService) memberEvent(ctx context.Context, userID uuid.UUID, payload []byte) (*nxgv1.WatchSessionResponse, error) {
	var ev floor.MemberEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		s.logger.WarnContext(ctx, "undecodable member notification", "error", err)
		return nil, nil
	}
	if ev.User != userID {
		return nil, nil
	}
	var msg *nxgv1.WatchSessionResponse
	var err error
	switch ev.Kind {
	case floor.MemberSessionStarted, floor.MemberSessionEnded:
		var sess dbsqlc.GymSession
		if sess, err = s.queries.GymSessionGet(ctx, s.pool, ev.ID); err == nil {
			if ev.Kind == floor.MemberSessionStarted {
				msg = &nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_SessionStarted{SessionStarted: gymSessionProto(sess)}}
			} else {
				msg = &nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_SessionEnded{SessionEnded: gymSessionProto(sess)}}
			}
		}
	case floor.MemberMachineLinked, floor.MemberMachineUnlinked:
		var l dbsqlc.GymSessionLinkGetRow
		if l, err = s.queries.GymSessionLinkGet(ctx, s.pool, ev.ID); err == nil {
			link := machineLinkProto(l.MachineLink, l.BranchID, l.MachineName)
			if ev.Kind == floor.MemberMachineLinked {
				msg = &nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_MachineLinked{MachineLinked: link}}
			} else {
				msg = &nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_MachineUnlinked{MachineUnlinked: link}}
			}
		}
	case floor.MemberSetReported:
		var set dbsqlc.MachineSet
		if set, err = s.queries.GymSessionSetGet(ctx, s.pool, ev.ID); err == nil {
			msg = &nxgv1.WatchSessionResponse{Event: &nxgv1.WatchSessionResponse_SetReported{SetReported: machineSetProto(set)}}
		}
	default:
		s.logger.WarnContext(ctx, "unknown member notification kind", "kind", ev.Kind)
		return nil, nil
	}
	if db.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", ev.Kind, ev.ID, err)
	}
	return msg, nil
}

// auditRefusal records a check-in the rules refused: a forged or expired
// code, a reader of another branch, no membership, a closed branch. Those
// are what someone trying to get in without the right would produce, so
// security wants them on the trail even though nothing changed. Faults
// of the server are not refusals and are not recorded. The refusal
// stands whether or not it could be recorded: a failure to record is
// logged.
func (s *gymSessionService) auditRefusal(ctx context.Context, p auth.Principal, in checkinAttempt, err error) {
	appErr, ok := apperr.As(err)
	if !ok {
		return
	}
	switch appErr.Code {
	case apperr.CodeInvalidArgument, apperr.CodeFailedPrecondition, apperr.CodePermissionDenied, apperr.CodeNotFound:
	default:
		return
	}
	ev := s.event(ctx, p, actionGymSessionRefused, in.member, map[string]string{
		"branch_id": in.branch.String(),
		"method":    in.method,
		"code":      toConnectError(appErr).Code().String(),
		"reason":    appErr.Message,
	})
	ev.Result = audit.ResultDenied
	if in.device.Valid {
		ev.Details["device_id"] = in.device.UUID.String()
	}
	if rerr := db.WithTx(context.WithoutCancel(ctx), s.pool, func(tx pgx.Tx) error {
		return s.id.Audit.Record(ctx, tx, ev)
	}); rerr != nil {
		s.logger.ErrorContext(ctx, "could not audit a refused check-in", "request_id", requestid.From(ctx), "error", rerr)
	}
}

// event is an audit row of this service about the member targetUserID.
func (s *gymSessionService) event(ctx context.Context, p auth.Principal, action string, targetUserID uuid.UUID, details map[string]string) audit.Event {
	return requestEvent(ctx, audit.Event{
		ActorID:    p.UserID,
		Action:     action,
		TargetType: "user",
		TargetID:   targetUserID.String(),
		Result:     audit.ResultSuccess,
		Details:    details,
	})
}

// sessionEndReasons maps gym_sessions.end_reason to the API's enum.
var sessionEndReasons = map[string]nxgv1.SessionEndReason{
	floor.SessionEndMember:     nxgv1.SessionEndReason_SESSION_END_REASON_MEMBER,
	floor.SessionEndTimeout:    nxgv1.SessionEndReason_SESSION_END_REASON_TIMEOUT,
	floor.SessionEndSuperseded: nxgv1.SessionEndReason_SESSION_END_REASON_SUPERSEDED,
	floor.SessionEndStaff:      nxgv1.SessionEndReason_SESSION_END_REASON_STAFF,
}

// checkinMethods maps gym_sessions.method to the API's enum.
var checkinMethods = map[string]nxgv1.CheckinMethod{
	checkinMethodQR:  nxgv1.CheckinMethod_CHECKIN_METHOD_QR,
	checkinMethodNFC: nxgv1.CheckinMethod_CHECKIN_METHOD_NFC,
}

func gymSessionProto(g dbsqlc.GymSession) *nxgv1.GymSession {
	out := &nxgv1.GymSession{
		Id:        g.ID.String(),
		UserId:    g.UserID.String(),
		BranchId:  g.BranchID.String(),
		Method:    checkinMethods[g.Method],
		StartedAt: timestamppb.New(g.StartedAt),
		ExpiresAt: timestamppb.New(g.ExpiresAt),
	}
	if g.EndedAt.Valid {
		out.EndedAt = timestamppb.New(g.EndedAt.Time)
	}
	if g.EndReason.Valid {
		out.EndReason = sessionEndReasons[g.EndReason.String]
	}
	return out
}

// linkEndReasons maps machine_links.end_reason to the API's enum.
var linkEndReasons = map[string]nxgv1.LinkEndReason{
	floor.LinkEndMember:       nxgv1.LinkEndReason_LINK_END_REASON_MEMBER,
	floor.LinkEndReplaced:     nxgv1.LinkEndReason_LINK_END_REASON_REPLACED,
	floor.LinkEndIdle:         nxgv1.LinkEndReason_LINK_END_REASON_IDLE,
	floor.LinkEndSessionEnded: nxgv1.LinkEndReason_LINK_END_REASON_SESSION_ENDED,
	floor.LinkEndMaintenance:  nxgv1.LinkEndReason_LINK_END_REASON_MAINTENANCE,
	floor.LinkEndStaff:        nxgv1.LinkEndReason_LINK_END_REASON_STAFF,
}

// machineLinkProto converts a machine link; branchID and machineName come
// from the machine, which the link row does not carry. MachineService
// shares it, so a link looks the same on every stream and RPC.
func machineLinkProto(l dbsqlc.MachineLink, branchID uuid.UUID, machineName string) *nxgv1.MachineLink {
	out := &nxgv1.MachineLink{
		Id:          l.ID.String(),
		MachineId:   l.MachineID.String(),
		BranchId:    branchID.String(),
		SessionId:   l.GymSessionID.String(),
		LinkedAt:    timestamppb.New(l.LinkedAt),
		MachineName: machineName,
	}
	if l.EndedAt.Valid {
		out.EndedAt = timestamppb.New(l.EndedAt.Time)
	}
	if l.EndReason.Valid {
		out.EndReason = linkEndReasons[l.EndReason.String]
	}
	return out
}

// machineSetProto converts a set a machine reported.
func machineSetProto(s dbsqlc.MachineSet) *nxgv1.MachineSet {
	return &nxgv1.MachineSet{
		Id:              s.ID.String(),
		SessionId:       s.GymSessionID.String(),
		MachineId:       s.MachineID.String(),
		ClientSetId:     s.ClientSetID,
		Reps:            s.Reps,
		WeightKg:        s.WeightKg,
		DurationSeconds: s.DurationSeconds,
		DistanceM:       s.DistanceM,
		Calories:        s.Calories,
		RecordedAt:      timestamppb.New(s.RecordedAt),
	}
}
