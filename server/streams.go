package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/ticket"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// Why a guarded stream's context ended, other than its caller going away.
// streamEnd turns them into what the client is told.
var (
	errStreamDraining = errors.New("server is shutting down")
	errStreamRevoked  = errors.New("session or device revoked")
	// errStreamUnwatched ends streams when the guard can no longer hear of
	// revocations (the hub stopped): better a reconnect than a stream that
	// outlives its session unnoticed.
	errStreamUnwatched = errors.New("revocations can no longer be watched")
)

// streamRecheckTimeout bounds one round of session liveness checks.
const streamRecheckTimeout = 5 * time.Second

// sessionLiveness tells whether a session is alive (session.Store).
type sessionLiveness interface {
	Alive(ctx context.Context, sessionID string) (bool, error)
}

// streamGuard admits live streams and ends them when they must stop: when
// their caller goes, when the server drains, or when their session or
// device is revoked. It also caps the streams one account or device holds
// on this process.
//
// The guard holds ONE subscription to floor.ChannelRevocations for all its
// streams and dispatches each revocation by subject. Should it miss
// revocations (its subscription dropped, or the hub reconnected), it asks
// the session store whether every guarded session is still alive.
//
// Being the process's one listener to revocations, it also keeps the
// Authenticator's cache of live sessions honest: it drops the sessions
// each revocation names, everything when revocations may have been missed,
// and stops the caching when it can no longer hear them.
type streamGuard struct {
	hub      *realtime.Hub
	settings floor.Settings
	draining context.Context
	logger   *slog.Logger

	mu       sync.Mutex
	sessions sessionLiveness
	streams  map[uuid.UUID]map[*guardedStream]struct{} // by subject
	// closed is why the guard admits nothing any more (draining or
	// unwatched); nil while it admits.
	closed error
	// authn is the Authenticator whose cached sessions revocations drop;
	// nil when none is cached.
	authn *auth.Authenticator
}

// guardedStream is one admitted stream.
type guardedStream struct {
	subject   uuid.UUID
	sessionID string
	cancel    context.CancelCauseFunc
}

func newStreamGuard(hub *realtime.Hub, settings floor.Settings, draining context.Context, logger *slog.Logger) *streamGuard {
	g := &streamGuard{
		hub:      hub,
		settings: settings.WithDefaults(),
		draining: draining,
		logger:   logger,
		streams:  make(map[uuid.UUID]map[*guardedStream]struct{}),
	}
	// Subscribed before any stream is admitted, so no revocation sent
	// after an admission can be missed.
	sub := hub.Subscribe(floor.ChannelRevocations, nil)
	go g.watch(sub)
	return g
}

// checkSessions makes the guard confirm, whenever it may have missed
// revocations and when a stream is admitted, that sessions are alive.
func (g *streamGuard) checkSessions(s sessionLiveness) *streamGuard {
	g.mu.Lock()
	g.sessions = s
	g.mu.Unlock()
	return g
}

// forgetSessionsIn makes the guard drop from a's cache of live sessions
// those that revocations name, wherever they were made.
func (g *streamGuard) forgetSessionsIn(a *auth.Authenticator) *streamGuard {
	g.mu.Lock()
	g.authn = a
	g.mu.Unlock()
	return g
}

// cache is the Authenticator whose cached sessions the guard keeps honest,
// or nil.
func (g *streamGuard) cache() *auth.Authenticator {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.authn
}

// admit registers a stream of p. It fails with resource_exhausted when p
// already holds its cap of streams on this process. The returned context is
// cancelled when ctx ends, the server drains, or p's session (or device) is
// revoked. release must be called when the stream ends.
func (g *streamGuard) admit(ctx context.Context, p auth.Principal) (context.Context, func(), error) {
	limit, whose, setting := g.settings.MaxStreamsPerUser, "account", "MaxStreamsPerUser"
	if p.Role == token.RoleDevice {
		limit, whose, setting = g.settings.MaxStreamsPerDevice, "device", "MaxStreamsPerDevice"
	}
	ctx, cancel := context.WithCancelCause(ctx)
	s := &guardedStream{subject: p.UserID, sessionID: p.SessionID, cancel: cancel}

	g.mu.Lock()
	if g.closed != nil {
		closed := g.closed
		g.mu.Unlock()
		cancel(closed)
		return nil, nil, streamEndError(closed)
	}
	mine := g.streams[p.UserID]
	if len(mine) >= limit {
		g.mu.Unlock()
		cancel(context.Canceled)
		return nil, nil, apperr.ResourceExhausted(5*time.Second,
			"this %s already holds %d live streams on this server, the most allowed (%s); close one first",
			whose, limit, setting)
	}
	if mine == nil {
		mine = make(map[*guardedStream]struct{})
		g.streams[p.UserID] = mine
	}
	mine[s] = struct{}{}
	sessions := g.sessions
	g.mu.Unlock()

	stopDrain := context.AfterFunc(g.draining, func() { cancel(errStreamDraining) })
	var once sync.Once
	release := func() {
		once.Do(func() {
			stopDrain()
			cancel(context.Canceled)
			g.mu.Lock()
			if m := g.streams[s.subject]; m != nil {
				delete(m, s)
				if len(m) == 0 {
					delete(g.streams, s.subject)
				}
			}
			g.mu.Unlock()
		})
	}

	// A revocation that arrived between authentication and registration
	// was missed; the session store says whether one happened. Sessions
	// are ended in the store before their revocation is sent, so after
	// this check no revocation can slip by.
	if sessions != nil {
		alive, err := sessions.Alive(ctx, p.SessionID)
		if err != nil {
			// A drain (or the client leaving) during the check ends the
			// stream for that reason, not for the check it interrupted.
			if ended := streamEnd(ctx); ended != nil {
				release()
				return nil, nil, ended
			}
			release()
			return nil, nil, apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
		}
		if !alive {
			release()
			return nil, nil, streamEndError(errStreamRevoked)
		}
	}
	return ctx, release, nil
}

// streamEnd turns the end of a guarded stream's context into the error the
// handler returns: nil when the client went away, unavailable when the
// server is draining, unauthenticated when the session or device was revoked.
func streamEnd(ctx context.Context) error {
	if ctx.Err() == nil {
		return nil
	}
	return streamEndError(context.Cause(ctx))
}

func streamEndError(cause error) error {
	switch {
	case errors.Is(cause, errStreamDraining):
		return apperr.Unavailable(time.Second, cause, "server is shutting down; reconnect")
	case errors.Is(cause, errStreamUnwatched):
		return apperr.Unavailable(time.Second, cause, "live updates are unavailable on this server; reconnect")
	case errors.Is(cause, errStreamRevoked):
		return apperr.Unauthenticated("session ended")
	default:
		return nil
	}
}

// watch follows revocations until the server drains or the hub stops.
func (g *streamGuard) watch(sub *realtime.Subscription) {
	defer func() { sub.Close() }()
	for {
		select {
		case <-g.draining.Done():
			// Every stream ends through its own AfterFunc; refuse new ones.
			g.close(errStreamDraining)
			return
		case ev, ok := <-sub.Events():
			if !ok {
				err := sub.Err()
				if errors.Is(err, realtime.ErrSlowConsumer) {
					// Dropped: listen again first, then look at what
					// may have been missed.
					g.logger.Warn("stream guard fell behind on revocations; re-checking sessions", "error", err)
					sub = g.hub.Subscribe(floor.ChannelRevocations, nil)
					g.missed()
					continue
				}
				g.logger.Warn("stream guard stopped hearing revocations; ending live streams", "error", err)
				g.close(errStreamUnwatched)
				return
			}
			if ev.Resync {
				g.missed()
				continue
			}
			var r floor.Revocation
			if err := json.Unmarshal(ev.Payload, &r); err != nil || r.Subject == uuid.Nil {
				g.logger.Error("malformed revocation ignored", "payload", string(ev.Payload), "error", err)
				continue
			}
			g.revoke(r)
		}
	}
}

// missed handles revocations that may have gone unheard: every cached
// session is asked about again, and every guarded one now.
func (g *streamGuard) missed() {
	if a := g.cache(); a != nil {
		a.ForgetAllSessions()
	}
	g.recheck(nil)
}

// close ends every guarded stream with cause and admits no more. It is
// called when the guard stops listening: from then on revocations go
// unheard, so the Authenticator caches no session either.
func (g *streamGuard) close(cause error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed == nil {
		g.closed = cause
	}
	for _, m := range g.streams {
		for s := range m {
			s.cancel(cause)
		}
	}
	if g.authn != nil {
		g.authn.StopCachingSessions()
	}
}

// revoke ends the streams r names. The subject's other sessions are checked
// too: a revocation of some sessions (a password change ending all but
// one) may race with a session made just before it.
func (g *streamGuard) revoke(r floor.Revocation) {
	subject := r.Subject
	// The cache forgets every session of the subject, not only those
	// named, for the same race.
	if a := g.cache(); a != nil {
		a.ForgetSessions(subject.String())
	}
	g.mu.Lock()
	for s := range g.streams[subject] {
		if r.SessionID == "" || s.sessionID == r.SessionID {
			s.cancel(errStreamRevoked)
		}
	}
	g.mu.Unlock()
	if r.SessionID != "" {
		g.recheck(&subject)
	}
}

// recheck ends the guarded streams (of subject, or all when nil) whose
// session is no longer alive. A store failure leaves the streams open and
// is logged: ending every stream on a Redis blip would only make every
// client reconnect into the same failure.
func (g *streamGuard) recheck(subject *uuid.UUID) {
	g.mu.Lock()
	sessions := g.sessions
	bySession := make(map[string][]*guardedStream)
	for subj, m := range g.streams {
		if subject != nil && subj != *subject {
			continue
		}
		for s := range m {
			bySession[s.sessionID] = append(bySession[s.sessionID], s)
		}
	}
	g.mu.Unlock()
	if sessions == nil || len(bySession) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), streamRecheckTimeout)
	defer cancel()
	for sid, streams := range bySession {
		alive, err := sessions.Alive(ctx, sid)
		if err != nil {
			g.logger.Error("stream guard could not check a session; its streams stay open", "session_id", sid, "error", err)
			continue
		}
		if !alive {
			for _, s := range streams {
				s.cancel(errStreamRevoked)
			}
		}
	}
}

// notifyRevoked tells the stream guards of every process that subject's
// sessions (all of them when none are named) have ended, so their live
// streams end now. The sessions are already dead in the store; should the
// notification fail, the guards find them dead when they next re-check, so
// the failure is logged rather than failing the caller's request.
func notifyRevoked(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, subject uuid.UUID, sessionIDs ...string) {
	ctx = context.WithoutCancel(ctx)
	revocations := make([]floor.Revocation, 0, max(len(sessionIDs), 1))
	if len(sessionIDs) == 0 {
		revocations = append(revocations, floor.Revocation{Subject: subject})
	}
	for _, sid := range sessionIDs {
		revocations = append(revocations, floor.Revocation{Subject: subject, SessionID: sid})
	}
	for _, r := range revocations {
		if err := floor.NotifyRevocation(ctx, pool, r); err != nil {
			logger.ErrorContext(ctx, "could not notify a revocation to live streams",
				"request_id", requestid.From(ctx), "subject", subject.String(), "session_id", r.SessionID, "error", err)
		}
	}
}

// Failures of authenticateStream a client can cause.
var (
	errStreamNoCredentials = apperr.Unauthenticated("missing credentials; send Authorization: Bearer <access_token> or ?ticket=<ticket from AuthService.CreateWebSocketTicket>")
	errStreamBadTicket     = apperr.Unauthenticated("the ticket is invalid, expired or already used; create a new one")
	errStreamSessionEnded  = apperr.Unauthenticated("the session has ended; sign in again")
)

// authenticateStream authenticates a WebSocket upgrade request: by the
// Authorization header like every RPC, or else by a ticket in the query
// (?ticket=), which is used up by this call.
func authenticateStream(ctx context.Context, r *http.Request, id Identity) (auth.Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		return id.authenticator().Authenticate(ctx, h)
	}
	t := r.URL.Query().Get("ticket")
	if t == "" {
		return auth.Principal{}, errStreamNoCredentials
	}
	p, err := id.Tickets.Redeem(ctx, t)
	if errors.Is(err, ticket.ErrInvalid) {
		return auth.Principal{}, errStreamBadTicket
	}
	if err != nil {
		return auth.Principal{}, apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
	}
	// The session may have ended in the seconds since the ticket was made.
	alive, err := id.Sessions.Alive(ctx, p.SessionID)
	if err != nil {
		return auth.Principal{}, apperr.Unavailable(time.Second, err, "sign-in service is unavailable; retry shortly")
	}
	if !alive {
		return auth.Principal{}, errStreamSessionEnded
	}
	return p, nil
}

// subscriptionEnd is the error a live stream ends with when its hub or feed
// subscription closed with err: the guard's reason when the stream's own
// context ended, resource_exhausted when it fell behind (reconnect names
// what the client does to get the current state again), and unavailable
// when this process stopped listening, which happens only at shutdown.
func subscriptionEnd(ctx context.Context, err error, reconnect string) error {
	switch {
	case ctx.Err() != nil:
		return streamEnd(ctx)
	case errors.Is(err, realtime.ErrSlowConsumer):
		return apperr.ResourceExhausted(time.Second, "fell behind; %s", reconnect)
	default:
		return apperr.Unavailable(time.Second, err, "live updates stopped on this server; %s", reconnect)
	}
}
