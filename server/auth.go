package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	"github.com/nxg-fitness/nxg/gen/dbsqlc"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/audit"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/password"
	"github.com/nxg-fitness/nxg/internal/auth/session"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// registerLimit bounds account creation per client IP: enough for a family
// signing up on the gym's Wi-Fi, too few to farm accounts or to enumerate
// registered emails through already_exists.
var registerLimit = ratelimit.Limit{Rate: 10, Period: time.Hour, Burst: 10}

// Audit actions written by the auth service.
const (
	authActionRegister        = "auth.register"
	authActionLogin           = "auth.login"
	authActionRefreshReused   = "auth.refresh_reused"
	authActionLogout          = "auth.logout"
	authActionLogoutAll       = "auth.logout_all"
	authActionSessionRevoked  = "auth.session_revoked"
	authActionPasswordChanged = "auth.password_changed"
)

// Client-facing failures. The sign-in ones are deliberately identical for
// every cause a client could tell apart (unknown email, wrong password,
// closed account; unknown, expired or reused refresh token).
var (
	errBadCredentials   = apperr.Unauthenticated("email or password is incorrect")
	errRefreshRefused   = apperr.Unauthenticated("the refresh token is invalid or has expired; sign in again")
	errAuthAccountGone  = apperr.Unauthenticated("the session has ended; sign in again")
	errEmailTaken       = &apperr.Error{Code: apperr.CodeAlreadyExists, Field: "email", Message: "an account with this email exists"}
	errCurrentIncorrect = &apperr.Error{Code: apperr.CodePermissionDenied, Field: "current_password", Message: "is incorrect"}
)

// authService serves nxg.v1.AuthService: accounts, sign-in and sessions.
//
// Sessions and refresh-token families live in Redis (internal/auth/session),
// accounts in PostgreSQL. Every security-relevant outcome writes an audit row
// in a transaction of its own or in the one that made the change.
type authService struct {
	pool    *pgxpool.Pool
	id      Identity
	logger  *slog.Logger
	queries *dbsqlc.Queries
}

// NewAuthService returns the AuthService handler.
func NewAuthService(pool *pgxpool.Pool, id Identity, logger *slog.Logger) nxgv1connect.AuthServiceHandler {
	return &authService{pool: pool, id: id, logger: logger, queries: dbsqlc.New()}
}

// signInResult is what a sign-in or refresh hands out.
type signInResult struct {
	access        string
	accessExpires time.Time
	refresh       string
	session       session.Session
	user          *nxgv1.User
}

func (s *authService) Register(ctx context.Context, req *connect.Request[nxgv1.RegisterRequest]) (*connect.Response[nxgv1.RegisterResponse], error) {
	client := clientinfo.From(ctx)
	email := ratelimit.NormalizeEmail(req.Msg.GetEmail())
	displayName := strings.TrimSpace(req.Msg.GetDisplayName())
	if displayName == "" {
		return nil, apperr.InvalidArgument("display_name", "must not be blank")
	}
	// Every attempt counts, failed ones included: already_exists tells
	// whether an email is registered, so the limit also bounds enumeration.
	if err := s.id.Limiter.Allow(ctx, "register:"+registerIPKey(client.IP), registerLimit); err != nil {
		if _, ok := apperr.As(err); ok {
			return nil, err
		}
		// Like the general limits: an outage of the limiter must not stop
		// people joining; hashing stays bounded by the hasher's slots.
		s.logger.WarnContext(ctx, "register rate limit unavailable; letting the call through",
			"request_id", requestid.From(ctx), "error", err)
	}
	if err := password.Check("password", req.Msg.GetPassword(), email); err != nil {
		return nil, err
	}
	hash, err := s.id.Passwords.Hash(ctx, req.Msg.GetPassword())
	if err != nil {
		return nil, err
	}
	userID, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("register: user id: %w", err)
	}
	_, wrappedKey, err := s.id.MasterKeys.NewDataKey(userID.String())
	if err != nil {
		return nil, fmt.Errorf("register: data key: %w", err)
	}

	// The session is opened (and its token signed) before the account is
	// committed, and ended again if the commit does not happen: the client
	// either gets a new, signed-in account or nothing at all, so retrying a
	// failed Register never meets "already exists".
	role := string(token.RoleMember)
	sess, refresh, err := s.id.Sessions.Create(ctx, userID.String(), role, req.Msg.GetDeviceName(), client.IP, client.UserAgent)
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	access, claims, err := s.id.Tokens.Issue(userID.String(), sess.ID, token.Role(role))
	if err != nil {
		s.revokeQuietly(ctx, userID, sess.ID)
		return nil, fmt.Errorf("register: issue access token: %w", err)
	}
	user, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.User, error) {
		u, err := s.queries.UserCreateWithID(ctx, tx, dbsqlc.UserCreateWithIDParams{
			ID: userID, Email: email, PasswordHash: hash, DisplayName: displayName,
			Role: role, DataKey: wrappedKey,
		})
		if uniqueViolationOn(err, "users_email_key") {
			return dbsqlc.User{}, errEmailTaken
		}
		if err != nil {
			return dbsqlc.User{}, fmt.Errorf("register: insert user: %w", err)
		}
		if err := s.queries.ProfileCreateDefault(ctx, tx, u.ID); err != nil {
			return dbsqlc.User{}, fmt.Errorf("register: insert profile: %w", err)
		}
		if err := s.queries.PrivacyCreateDefault(ctx, tx, u.ID); err != nil {
			return dbsqlc.User{}, fmt.Errorf("register: insert privacy settings: %w", err)
		}
		if err := s.record(ctx, tx, u.ID, authActionRegister, "user", u.ID.String(), audit.ResultSuccess,
			map[string]string{"session_id": sess.ID}); err != nil {
			return dbsqlc.User{}, err
		}
		return u, nil
	})
	if err != nil {
		s.revokeQuietly(ctx, userID, sess.ID)
		return nil, err
	}
	return connect.NewResponse(&nxgv1.RegisterResponse{
		User:                  accountToProto(user, nil),
		AccessToken:           access,
		RefreshToken:          refresh,
		AccessTokenExpiresAt:  timestamppb.New(claims.ExpiresAt),
		RefreshTokenExpiresAt: timestamppb.New(sess.ExpiresAt),
		SessionId:             sess.ID,
	}), nil
}

func (s *authService) Login(ctx context.Context, req *connect.Request[nxgv1.LoginRequest]) (*connect.Response[nxgv1.LoginResponse], error) {
	client := clientinfo.From(ctx)
	email := ratelimit.NormalizeEmail(req.Msg.GetEmail())
	// The limit is checked before the password, so a correct guess after
	// the limit is refused like a wrong one: it cannot be confirmed.
	if err := s.allowSignIn(ctx, email, client.IP); err != nil {
		return nil, err
	}

	user, err := s.queries.UserGetByEmail(ctx, s.pool, email)
	known := err == nil
	if err != nil && !db.IsNotFound(err) {
		return nil, fmt.Errorf("login: get user: %w", err)
	}
	ok := false
	if known {
		ok, err = s.id.Passwords.Verify(ctx, req.Msg.GetPassword(), user.PasswordHash)
	} else {
		// Unknown and closed accounts cost one hash too, so timing does not
		// tell them from a wrong password.
		err = s.id.Passwords.VerifyUnknown(ctx, req.Msg.GetPassword())
	}
	if err != nil {
		// Busy (resource_exhausted), cancelled, or a corrupted stored hash:
		// not the client's failure, so not counted against them.
		return nil, err
	}
	if !ok {
		targetID := ""
		if known {
			targetID = user.ID.String()
		}
		if err := s.signInFailed(ctx, email, client.IP, uuid.Nil, authActionLogin, targetID); err != nil {
			return nil, err
		}
		return nil, errBadCredentials
	}

	s.rehashIfNeeded(ctx, user, req.Msg.GetPassword())
	pair, err := s.startSession(ctx, user, req.Msg.GetDeviceName())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.LoginResponse{
		AccessToken:           pair.access,
		RefreshToken:          pair.refresh,
		AccessTokenExpiresAt:  timestamppb.New(pair.accessExpires),
		RefreshTokenExpiresAt: timestamppb.New(pair.session.ExpiresAt),
		SessionId:             pair.session.ID,
		User:                  pair.user,
	}), nil
}

// allowSignIn applies the login limits, failing closed: when the limiter
// cannot be asked, nobody may guess passwords.
func (s *authService) allowSignIn(ctx context.Context, email, ip string) error {
	err := s.id.LoginLimiter.Allow(ctx, email, ip)
	if err == nil {
		return nil
	}
	if _, ok := apperr.As(err); ok {
		return err
	}
	return apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
}

// signInFailed counts a wrong password against the account and the IP and
// audits it. The row names the account when it exists, never the email that
// was typed (it may be someone's password typed into the wrong field).
// actor is uuid.Nil for an anonymous sign-in, the caller when a signed-in
// user fails to prove their password.
func (s *authService) signInFailed(ctx context.Context, email, ip string, actor uuid.UUID, action, targetID string) error {
	if err := s.id.LoginLimiter.Fail(ctx, email, ip); err != nil {
		// The next Allow fails closed on the same outage, so the attempt
		// cannot be repeated unlimited; say so in the logs and go on.
		s.logger.WarnContext(ctx, "could not record a failed sign-in",
			"request_id", requestid.From(ctx), "error", err)
	}
	return db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.record(ctx, tx, actor, action, "user", targetID, audit.ResultFailure, map[string]string{"reason": "bad_password"})
	})
}

// rehashIfNeeded upgrades a hash made with weaker parameters after a
// successful sign-in. It is best effort: the sign-in succeeds either way.
func (s *authService) rehashIfNeeded(ctx context.Context, user dbsqlc.User, plain string) {
	if !s.id.Passwords.NeedsRehash(user.PasswordHash) {
		return
	}
	fresh, err := s.id.Passwords.Hash(ctx, plain)
	if err == nil {
		err = s.queries.UserRehashPassword(ctx, s.pool, dbsqlc.UserRehashPasswordParams{
			ID: user.ID, NewHash: fresh, OldHash: user.PasswordHash,
		})
	}
	if err != nil {
		s.logger.WarnContext(ctx, "password rehash skipped", "request_id", requestid.From(ctx),
			"user_id", user.ID.String(), "error", err)
	}
}

// startSession opens a session for a verified user, issues its access token
// and audits the sign-in. Should the audit row not commit, the session is
// ended again: there are no unaudited sign-ins.
func (s *authService) startSession(ctx context.Context, user dbsqlc.User, deviceName string) (signInResult, error) {
	client := clientinfo.From(ctx)
	sess, refresh, err := s.id.Sessions.Create(ctx, user.ID.String(), user.Role, deviceName, client.IP, client.UserAgent)
	if err != nil {
		return signInResult{}, sessionStoreFailure(err)
	}
	access, claims, err := s.id.Tokens.Issue(user.ID.String(), sess.ID, token.Role(user.Role))
	if err != nil {
		s.revokeQuietly(ctx, user.ID, sess.ID)
		return signInResult{}, fmt.Errorf("login: issue access token: %w", err)
	}
	branches, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) ([]uuid.UUID, error) {
		branches, err := s.queries.StaffBranchList(ctx, tx, user.ID)
		if err != nil {
			return nil, fmt.Errorf("login: list staff branches: %w", err)
		}
		err = s.record(ctx, tx, user.ID, authActionLogin, "user", user.ID.String(), audit.ResultSuccess,
			map[string]string{"session_id": sess.ID})
		return branches, err
	})
	if err != nil {
		s.revokeQuietly(ctx, user.ID, sess.ID)
		return signInResult{}, err
	}
	return signInResult{
		access: access, accessExpires: claims.ExpiresAt, refresh: refresh,
		session: sess, user: accountToProto(user, branches),
	}, nil
}

func (s *authService) Refresh(ctx context.Context, req *connect.Request[nxgv1.RefreshRequest]) (*connect.Response[nxgv1.RefreshResponse], error) {
	sess, refresh, err := s.id.Sessions.Refresh(ctx, req.Msg.GetRefreshToken())
	switch {
	case errors.Is(err, session.ErrRefreshReused):
		// The store has revoked the whole family already; a stolen token
		// and its legitimate twin are both dead. Record it for the owner
		// and the operators.
		actor, _ := uuid.Parse(sess.UserID)
		if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
			return s.record(ctx, tx, actor, authActionRefreshReused, "session", sess.ID, audit.ResultDenied, nil)
		}); err != nil {
			return nil, err
		}
		return nil, errRefreshRefused
	case errors.Is(err, session.ErrRefreshInvalid):
		return nil, errRefreshRefused
	case err != nil:
		return nil, sessionStoreFailure(err)
	}

	userID, err := uuid.Parse(sess.UserID)
	if err != nil {
		return nil, fmt.Errorf("refresh: session %s has user id %q: %w", sess.ID, sess.UserID, err)
	}
	type account struct {
		user     dbsqlc.User
		branches []uuid.UUID
	}
	acct, err := db.WithReadTxV(ctx, s.pool, func(tx pgx.Tx) (account, error) {
		u, err := s.queries.UserGet(ctx, tx, userID)
		if err != nil {
			return account{}, err
		}
		branches, err := s.queries.StaffBranchList(ctx, tx, userID)
		if err != nil {
			return account{}, fmt.Errorf("refresh: list staff branches: %w", err)
		}
		return account{user: u, branches: branches}, nil
	})
	if db.IsNotFound(err) {
		// The account was closed (or erased) while the session lived: end
		// every session it still has.
		if _, err := s.id.Sessions.RevokeAll(ctx, userID.String(), ""); err != nil {
			return nil, sessionStoreFailure(err)
		}
		return nil, errAuthAccountGone
	}
	if err != nil {
		return nil, fmt.Errorf("refresh: get user: %w", err)
	}
	// The role comes from the account, not the session: a role change
	// reaches the caller's token at the next refresh, within 15 minutes.
	access, claims, err := s.id.Tokens.Issue(userID.String(), sess.ID, token.Role(acct.user.Role))
	if err != nil {
		return nil, fmt.Errorf("refresh: issue access token: %w", err)
	}
	return connect.NewResponse(&nxgv1.RefreshResponse{
		AccessToken:           access,
		RefreshToken:          refresh,
		AccessTokenExpiresAt:  timestamppb.New(claims.ExpiresAt),
		RefreshTokenExpiresAt: timestamppb.New(sess.ExpiresAt),
		SessionId:             sess.ID,
		User:                  accountToProto(acct.user, acct.branches),
	}), nil
}

func (s *authService) Logout(ctx context.Context, _ *connect.Request[nxgv1.LogoutRequest]) (*connect.Response[nxgv1.LogoutResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	// A session that ended between authentication and here is logged out
	// all the same: logging out is idempotent.
	if _, err := s.id.Sessions.Revoke(ctx, p.UserID.String(), p.SessionID); err != nil {
		return nil, sessionStoreFailure(err)
	}
	notifyRevoked(ctx, s.pool, s.logger, p.UserID, p.SessionID)
	if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.record(ctx, tx, p.UserID, authActionLogout, "session", p.SessionID, audit.ResultSuccess, nil)
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.LogoutResponse{}), nil
}

func (s *authService) LogoutAll(ctx context.Context, _ *connect.Request[nxgv1.LogoutAllRequest]) (*connect.Response[nxgv1.LogoutAllResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.id.Sessions.RevokeAll(ctx, p.UserID.String(), "")
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	notifyRevoked(ctx, s.pool, s.logger, p.UserID)
	if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.record(ctx, tx, p.UserID, authActionLogoutAll, "user", p.UserID.String(), audit.ResultSuccess,
			map[string]string{"sessions_ended": strconv.Itoa(n)})
	}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&nxgv1.LogoutAllResponse{SessionsEnded: int32(n)}), nil
}

func (s *authService) ListSessions(ctx context.Context, _ *connect.Request[nxgv1.ListSessionsRequest]) (*connect.Response[nxgv1.ListSessionsResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	list, err := s.id.Sessions.List(ctx, p.UserID.String())
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	out := make([]*nxgv1.Session, len(list))
	for i, sess := range list {
		out[i] = &nxgv1.Session{
			Id:         sess.ID,
			DeviceName: sess.DeviceName,
			CreatedAt:  timestamppb.New(sess.CreatedAt),
			LastSeenAt: timestamppb.New(sess.LastSeenAt),
			Ip:         sess.IP,
			Current:    sess.ID == p.SessionID,
			ExpiresAt:  timestamppb.New(sess.ExpiresAt),
		}
	}
	return connect.NewResponse(&nxgv1.ListSessionsResponse{Sessions: out}), nil
}

func (s *authService) RevokeSession(ctx context.Context, req *connect.Request[nxgv1.RevokeSessionRequest]) (*connect.Response[nxgv1.RevokeSessionResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	sid := req.Msg.GetSessionId()
	revoked, err := s.id.Sessions.Revoke(ctx, p.UserID.String(), sid)
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	if revoked {
		notifyRevoked(ctx, s.pool, s.logger, p.UserID, sid)
	}
	// Someone else's session, or one already ended, is not found: the
	// caller learns nothing about sessions that are not theirs. The attempt
	// is still recorded; naming other users' session ids is worth seeing.
	result := audit.ResultSuccess
	if !revoked {
		result = audit.ResultFailure
	}
	if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.record(ctx, tx, p.UserID, authActionSessionRevoked, "session", sid, result, nil)
	}); err != nil {
		return nil, err
	}
	if !revoked {
		return nil, apperr.NotFound("session", sid)
	}
	return connect.NewResponse(&nxgv1.RevokeSessionResponse{}), nil
}

func (s *authService) ChangePassword(ctx context.Context, req *connect.Request[nxgv1.ChangePasswordRequest]) (*connect.Response[nxgv1.ChangePasswordResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	client := clientinfo.From(ctx)
	user, err := s.queries.UserGet(ctx, s.pool, p.UserID)
	if db.IsNotFound(err) {
		return nil, errAuthAccountGone
	}
	if err != nil {
		return nil, fmt.Errorf("change password: get user: %w", err)
	}
	current, next := req.Msg.GetCurrentPassword(), req.Msg.GetNewPassword()
	// The cheap checks first: a rejected new password costs no hash.
	if err := password.Check("new_password", next, user.Email); err != nil {
		return nil, err
	}
	if next == current {
		return nil, apperr.InvalidArgument("new_password", "must differ from the current password")
	}
	// A stolen access token must not become a way to guess the password:
	// the current password is limited exactly like a sign-in.
	if err := s.allowSignIn(ctx, user.Email, client.IP); err != nil {
		return nil, err
	}
	ok, err := s.id.Passwords.Verify(ctx, current, user.PasswordHash)
	if err != nil {
		return nil, err
	}
	if !ok {
		if err := s.signInFailed(ctx, user.Email, client.IP, user.ID, authActionPasswordChanged, user.ID.String()); err != nil {
			return nil, err
		}
		return nil, errCurrentIncorrect
	}
	hash, err := s.id.Passwords.Hash(ctx, next)
	if err != nil {
		return nil, err
	}

	// The sessions about to end are listed first, so that their streams
	// can be told to end too; the stream guard re-checks the remaining
	// sessions of the account on any revocation, which covers a session
	// made between the list and the revocation.
	others, err := s.id.Sessions.List(ctx, user.ID.String())
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	ended, err := db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (int, error) {
		if err := s.queries.UserSetPassword(ctx, tx, dbsqlc.UserSetPasswordParams{ID: user.ID, PasswordHash: hash}); err != nil {
			return 0, fmt.Errorf("change password: update: %w", err)
		}
		// Other sessions end before the commit: should the commit fail they
		// stay ended (harmless), but a changed password never leaves an
		// old session alive.
		n, err := s.id.Sessions.RevokeAll(ctx, user.ID.String(), p.SessionID)
		if err != nil {
			return 0, sessionStoreFailure(err)
		}
		err = s.record(ctx, tx, user.ID, authActionPasswordChanged, "user", user.ID.String(), audit.ResultSuccess,
			map[string]string{"other_sessions_ended": strconv.Itoa(n)})
		return n, err
	})
	if err != nil {
		return nil, err
	}
	endedIDs := make([]string, 0, len(others))
	for _, o := range others {
		if o.ID != p.SessionID {
			endedIDs = append(endedIDs, o.ID)
		}
	}
	if len(endedIDs) > 0 {
		notifyRevoked(ctx, s.pool, s.logger, user.ID, endedIDs...)
	}
	return connect.NewResponse(&nxgv1.ChangePasswordResponse{OtherSessionsEnded: int32(ended)}), nil
}

// record writes an audit row for the current request inside tx. Details
// must never carry passwords, tokens or emails.
func (s *authService) record(ctx context.Context, tx pgx.Tx, actor uuid.UUID, action, targetType, targetID string, result audit.Result, details map[string]string) error {
	err := s.id.Audit.Record(ctx, tx, requestEvent(ctx, audit.Event{
		ActorID:    actor,
		Action:     action,
		TargetType: targetType,
		TargetID:   targetID,
		Result:     result,
		Details:    details,
	}))
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	return nil
}

// revokeQuietly ends a session that must not outlive a failed request; its
// own failure is only logged (the session then expires with its token).
func (s *authService) revokeQuietly(ctx context.Context, userID uuid.UUID, sessionID string) {
	if _, err := s.id.Sessions.Revoke(context.WithoutCancel(ctx), userID.String(), sessionID); err != nil {
		s.logger.ErrorContext(ctx, "could not end the session of a failed sign-in",
			"request_id", requestid.From(ctx), "session_id", sessionID, "error", err)
	}
}

// sessionStoreFailure reports a session store (Redis) failure as the
// authenticator does: retryable, never a session let through.
func sessionStoreFailure(err error) error {
	return apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
}

// ipKey is the rate-limit key part for a client IP; a request whose address
// could not be worked out shares one bucket with all such requests.
func registerIPKey(ip string) string {
	if ip == "" {
		return "unknown"
	}
	return ip
}

// uniqueViolationOn reports whether err is a unique violation of constraint.
func uniqueViolationOn(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}

var accountRoles = map[string]nxgv1.Role{
	string(token.RoleMember): nxgv1.Role_ROLE_MEMBER,
	string(token.RoleStaff):  nxgv1.Role_ROLE_STAFF,
	string(token.RoleAdmin):  nxgv1.Role_ROLE_ADMIN,
}

func accountToProto(u dbsqlc.User, staffBranches []uuid.UUID) *nxgv1.User {
	ids := make([]string, len(staffBranches))
	for i, b := range staffBranches {
		ids[i] = b.String()
	}
	return &nxgv1.User{
		Id:             u.ID.String(),
		Email:          u.Email,
		DisplayName:    u.DisplayName,
		Role:           accountRoles[u.Role],
		StaffBranchIds: ids,
		CreatedAt:      timestamppb.New(u.CreatedAt),
	}
}

// errDeviceCredentials is every failed device sign-in: an unknown device,
// a wrong secret and a revoked device look the same to the caller.
var errDeviceCredentials = apperr.Unauthenticated("device id or secret is incorrect, or the device was revoked")

// DeviceLogin trades a device's id and secret for a device access token.
// Devices get no refresh token: they sign in again with their secret, so
// revoking a device needs nothing but its row and its sessions.
func (s *authService) DeviceLogin(ctx context.Context, req *connect.Request[nxgv1.DeviceLoginRequest]) (*connect.Response[nxgv1.DeviceLoginResponse], error) {
	client := clientinfo.From(ctx)
	id, err := uuid.Parse(req.Msg.GetDeviceId())
	if err != nil {
		return nil, apperr.InvalidArgument("device_id", "must be a UUID")
	}
	// Failed attempts are limited per device exactly like per account, and
	// the limit is checked first, so a right secret after the limit is
	// refused like a wrong one.
	limitKey := "device:" + id.String()
	if err := s.allowSignIn(ctx, limitKey, client.IP); err != nil {
		return nil, err
	}
	d, err := s.queries.DeviceGet(ctx, s.pool, id)
	known := err == nil
	if err != nil && !db.IsNotFound(err) {
		return nil, fmt.Errorf("device login: get device: %w", err)
	}
	stored := make([]byte, sha256.Size) // an unknown device matches nothing
	if known {
		stored = d.SecretHash
	}
	match := subtle.ConstantTimeCompare(deviceSecretHash(req.Msg.GetDeviceSecret()), stored) == 1
	if !known || !match || d.RevokedAt.Valid {
		reason := "bad_secret"
		switch {
		case !known:
			reason = "unknown_device"
		case match:
			reason = "revoked"
		}
		return nil, s.deviceLoginFailed(ctx, limitKey, client.IP, id, reason)
	}

	device := deviceOfRow(d)
	sess, _, err := s.id.Sessions.Create(ctx, id.String(), string(token.RoleDevice), d.Name, client.IP, client.UserAgent)
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	// The sign-in is recorded only while the device is not revoked. A
	// revocation committing meanwhile makes the update find nothing; one
	// committing later ends this session with all the others.
	d, err = db.WithTxV(ctx, s.pool, func(tx pgx.Tx) (dbsqlc.Device, error) {
		d, err := s.queries.DeviceRecordLogin(ctx, tx, id)
		if db.IsNotFound(err) {
			return dbsqlc.Device{}, errDeviceCredentials
		}
		if err != nil {
			return dbsqlc.Device{}, fmt.Errorf("device login: record: %w", err)
		}
		err = s.id.Audit.Record(ctx, tx, deviceEvent(ctx, uuid.Nil, actionDeviceLogin, id, audit.ResultSuccess,
			map[string]string{"session_id": sess.ID}))
		return d, err
	})
	if err != nil {
		s.revokeQuietly(ctx, id, sess.ID)
		return nil, err
	}
	access, claims, err := s.id.Tokens.IssueDevice(id.String(), sess.ID, device.Claims())
	if err != nil {
		s.revokeQuietly(ctx, id, sess.ID)
		return nil, fmt.Errorf("device login: issue access token: %w", err)
	}
	return connect.NewResponse(&nxgv1.DeviceLoginResponse{
		AccessToken:          access,
		AccessTokenExpiresAt: timestamppb.New(claims.ExpiresAt),
		SessionId:            sess.ID,
		Device:               deviceToProto(d),
	}), nil
}

// deviceLoginFailed counts a failed device sign-in against the device and
// the IP, audits it, and returns the one error every failure gets.
func (s *authService) deviceLoginFailed(ctx context.Context, limitKey, ip string, device uuid.UUID, reason string) error {
	if err := s.id.LoginLimiter.Fail(ctx, limitKey, ip); err != nil {
		// The next Allow fails closed on the same outage.
		s.logger.WarnContext(ctx, "could not record a failed device sign-in",
			"request_id", requestid.From(ctx), "error", err)
	}
	if err := db.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		return s.id.Audit.Record(ctx, tx, deviceEvent(ctx, uuid.Nil, actionDeviceLogin, device, audit.ResultFailure,
			map[string]string{"reason": reason}))
	}); err != nil {
		return err
	}
	return errDeviceCredentials
}

// CreateWebSocketTicket gives the caller (a person or a device) a ticket
// that opens one WebSocket as them within 30 seconds.
func (s *authService) CreateWebSocketTicket(ctx context.Context, _ *connect.Request[nxgv1.CreateWebSocketTicketRequest]) (*connect.Response[nxgv1.CreateWebSocketTicketResponse], error) {
	p, err := auth.MustPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	t, expires, err := s.id.Tickets.Issue(ctx, p)
	if err != nil {
		return nil, sessionStoreFailure(err)
	}
	return connect.NewResponse(&nxgv1.CreateWebSocketTicketResponse{Ticket: t, ExpiresAt: timestamppb.New(expires)}), nil
}
