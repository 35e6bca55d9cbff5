// The WebSocket endpoint, GET /ws, carries the gym floor's live streams to
// clients that cannot use Connect or gRPC streams: browsers that want plain
// WebSockets and machine consoles that only speak WS. Its protocol:
//
//   - Authentication happens before the upgrade: an Authorization: Bearer
//     header with an access or device token, or, for browsers (which cannot
//     set headers on a WebSocket), ?ticket=<ticket> from
//     AuthService.CreateWebSocketTicket, which works once. A request that is
//     not authenticated gets 401 with a JSON error body and is never
//     upgraded. The RPCs' rate limits apply to the upgrade too.
//   - One socket carries one mode, chosen by the client's first text
//     message, a JSON object with exactly one of these shapes:
//     {"subscribe":"machines","branch_id":"<uuid>"}: every frame is the
//     protojson of an nxg.v1.WatchMachinesResponse, exactly as
//     MachineService.WatchMachines streams it (a snapshot, then changes).
//     {"subscribe":"session"}: every frame is the protojson of an
//     nxg.v1.WatchSessionResponse, as GymSessionService.WatchSession.
//     {"subscribe":"workout","workout_id":"<uuid>"}: every frame is the
//     protojson of an nxg.v1.WatchWorkoutResponse, as
//     WorkoutService.WatchWorkout (the member, or the console of the
//     machine they are linked to); the socket closes with 1000 after the
//     workout's completion.
//     {"report_activity":<protojson ReportActivityRequest>}: machine
//     consoles only; each report is answered with
//     {"report_activity_response":<protojson ReportActivityResponse>} or
//     {"error":{"code":"invalid_argument","message":"..."}}, and the console
//     may keep sending reports on the same socket. Acknowledgements are
//     wrapped so that they can never be mistaken for stream frames.
//     The same authorization rules as the RPCs apply.
//   - A socket that must end is closed with a status that says why:
//     1000 normal; 1012 the server is restarting (reconnect); 1009 a
//     message over 64 KiB (the library's own close); 4400 a bad
//     message (the reason names the field); 4401 unauthenticated, or the
//     session or device was revoked; 4403 permission denied; 4404 not found;
//     4408 the client fell behind (reconnect for a fresh snapshot); 4409
//     aborted by a concurrent change; 4412 a failed precondition; 4429 too
//     many open streams; 1013 a dependency is unavailable; 1011 an internal
//     error (details only in the server's log).
//
// The server pings every 30 seconds and closes a socket whose pong does not
// come back within 10 seconds. Each write has its own 10-second deadline:
// the http.Server deliberately has no WriteTimeout, so a stream that lives
// for hours needs its own bound on a stuck client.

package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"buf.build/go/protovalidate"
	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

const (
	// wsReadLimit caps one client message. The largest legitimate one, a
	// set report, is a few hundred bytes.
	wsReadLimit = 64 << 10
	// wsWriteTimeout bounds each frame written, so a client that stops
	// reading cannot hold a goroutine and a stream slot for ever.
	wsWriteTimeout = 10 * time.Second
	// wsPingInterval and wsPingTimeout find dead peers that never closed
	// (a phone that lost its network): TCP alone may take hours.
	wsPingInterval = 30 * time.Second
	wsPingTimeout  = 10 * time.Second
	// wsFirstMessageTimeout is how long a client may hold an idle socket
	// before choosing its mode.
	wsFirstMessageTimeout = 30 * time.Second
)

// WebSocket close codes beyond RFC 6455's: the private 4000-4999 range
// mirrors HTTP statuses so that clients can act on them without parsing
// the reason.
const (
	wsStatusInvalid            websocket.StatusCode = 4400
	wsStatusUnauthenticated    websocket.StatusCode = 4401
	wsStatusPermissionDenied   websocket.StatusCode = 4403
	wsStatusNotFound           websocket.StatusCode = 4404
	wsStatusFellBehind         websocket.StatusCode = 4408
	wsStatusAborted            websocket.StatusCode = 4409
	wsStatusFailedPrecondition websocket.StatusCode = 4412
	wsStatusTooManyStreams     websocket.StatusCode = 4429
)

// webSocketHandler serves GET /ws.
type webSocketHandler struct {
	opts     Options
	sessions *gymSessionService
	machines *machineService
	workouts *workoutService
	guard    *streamGuard
	limits   *rateLimitInterceptor
	accept   *websocket.AcceptOptions
	logger   *slog.Logger

	// Timings; tests shorten them.
	pingInterval      time.Duration
	pingTimeout       time.Duration
	writeTimeout      time.Duration
	firstMessageAfter time.Duration
}

// newWebSocketHandler serves GET /ws (see the protocol at the top of this
// file).
func newWebSocketHandler(opts Options, sessions *gymSessionService, machines *machineService, workouts *workoutService, guard *streamGuard) http.Handler {
	return &webSocketHandler{
		opts:     opts,
		sessions: sessions,
		machines: machines,
		workouts: workouts,
		guard:    guard,
		limits:   newRateLimitInterceptor(opts.Identity.Limiter, opts.RateLimits, opts.Logger),
		accept: &websocket.AcceptOptions{
			// The browser origins allowed to call the API may open sockets
			// too; any other cross-origin page is refused (CSRF).
			OriginPatterns: opts.CORSOrigins,
			// Frames are small protojson; compression would cost CPU per
			// socket and defeat encoding each event once for every socket.
			CompressionMode: websocket.CompressionDisabled,
		},
		logger:            opts.Logger,
		pingInterval:      wsPingInterval,
		pingTimeout:       wsPingTimeout,
		writeTimeout:      wsWriteTimeout,
		firstMessageAfter: wsFirstMessageTimeout,
	}
}

func (h *webSocketHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p, err := authenticateStream(ctx, r, h.opts.Identity)
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	ctx = auth.WithPrincipal(ctx, p)
	if err := h.limits.allow(ctx); err != nil {
		h.refuse(w, r, err)
		return
	}
	hijacker := &batchingHijacker{ResponseWriter: w, writeTimeout: h.writeTimeout}
	conn, err := websocket.Accept(hijacker, r, h.accept)
	if err != nil {
		// Accept has answered (a bad handshake or a forbidden origin).
		h.logger.DebugContext(ctx, "websocket upgrade refused", "request_id", requestid.From(ctx), "error", err)
		return
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(wsReadLimit)
	start := time.Now()
	var status websocket.StatusCode
	defer func() {
		// The access log's line for a socket: one when it ends.
		h.logger.InfoContext(ctx, "websocket closed", "request_id", requestid.From(ctx),
			"user_id", p.UserID.String(), "status", int(status), "duration", time.Since(start))
	}()

	// Admission comes after the upgrade so that a client over its cap
	// learns why from the close status, which browsers expose, rather than
	// from an HTTP status, which they hide.
	streamCtx, release, err := h.guard.admit(ctx, p)
	if err != nil {
		status = h.close(ctx, conn, err)
		return
	}
	defer release()

	s := newWSSocket(h, conn, hijacker.conn, p)
	err = s.run(streamCtx)
	if errors.Is(err, errWSStreamEnded) {
		// The guard ended the stream: a drain, a revocation or the client
		// going away; streamEnd says which.
		err = streamEnd(streamCtx)
	}
	if errors.Is(err, errWSPeerGone) {
		// Nobody to tell: logged as 1006, the status for "no close frame".
		status = websocket.StatusAbnormalClosure
		_ = conn.CloseNow()
	} else {
		status = h.close(ctx, conn, err)
	}
	s.wait()
}

// refuse answers a request that may not be upgraded with the HTTP status
// and the Connect-shaped JSON error body of err.
func (h *webSocketHandler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := h.clientError(r.Context(), err)
	if appErr, ok := apperr.As(err); ok && appErr.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((appErr.RetryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatusOf(code))
	body, _ := json.Marshal(wsErrorBody{Code: code.String(), Message: msg})
	_, _ = w.Write(body)
}

// httpStatusOf is the HTTP status of a refused upgrade, following the
// Connect protocol's mapping of codes to statuses.
func httpStatusOf(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// clientError is what a client may see of err: its code and a message.
// Domain errors keep their message (with the field); anything else is an
// internal fault, logged here and reported only as "internal error".
func (h *webSocketHandler) clientError(ctx context.Context, err error) (connect.Code, string) {
	if appErr, ok := apperr.As(err); ok {
		if appErr.Cause != nil {
			h.logger.WarnContext(ctx, "websocket request failed", "request_id", requestid.From(ctx), "error", err)
		}
		ce := toConnectError(appErr)
		return ce.Code(), ce.Message()
	}
	h.logger.ErrorContext(ctx, "websocket internal error", "request_id", requestid.From(ctx), "error", err.Error())
	msg := "internal error"
	if id := requestid.From(ctx); id != "" {
		msg += " (request id " + id + ")"
	}
	return connect.CodeInternal, msg
}

// close ends the socket with the status that err maps to, and returns it.
func (h *webSocketHandler) close(ctx context.Context, conn *websocket.Conn, err error) websocket.StatusCode {
	status, reason := h.closeStatus(ctx, err)
	_ = conn.Close(status, reason)
	return status
}

// closeStatus maps the error that ended a socket to its close status and
// reason; this is the one place that does.
func (h *webSocketHandler) closeStatus(ctx context.Context, err error) (websocket.StatusCode, string) {
	if err == nil {
		return websocket.StatusNormalClosure, ""
	}
	var wsErr *wsCloseError
	if errors.As(err, &wsErr) {
		return wsErr.status, closeReason(wsErr.reason)
	}
	if errors.Is(err, realtime.ErrSlowConsumer) {
		return wsStatusFellBehind, "fell behind; reconnect for a fresh snapshot"
	}
	code, msg := h.clientError(ctx, err)
	var status websocket.StatusCode
	switch code {
	case connect.CodeInvalidArgument:
		status = wsStatusInvalid
	case connect.CodeUnauthenticated:
		status = wsStatusUnauthenticated
	case connect.CodePermissionDenied:
		status = wsStatusPermissionDenied
	case connect.CodeNotFound:
		status = wsStatusNotFound
	case connect.CodeAborted:
		status = wsStatusAborted
	case connect.CodeFailedPrecondition:
		status = wsStatusFailedPrecondition
	case connect.CodeResourceExhausted:
		status = wsStatusTooManyStreams
	case connect.CodeUnavailable:
		// The guard reports a drain as unavailable; anything else
		// unavailable is a dependency that may come back.
		if h.opts.Floor.Draining.Err() != nil {
			status = websocket.StatusServiceRestart
		} else {
			status = websocket.StatusTryAgainLater
		}
	default:
		status = websocket.StatusInternalError
	}
	return status, closeReason(msg)
}

// closeReason fits a reason into a close frame: 123 bytes after the status
// code, cut on a character boundary.
func closeReason(s string) string {
	const maxReason = 123
	if len(s) <= maxReason {
		return s
	}
	s = s[:maxReason]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// wsCloseError ends a socket with a status of its own choosing.
type wsCloseError struct {
	status websocket.StatusCode
	reason string
}

func (e *wsCloseError) Error() string {
	return fmt.Sprintf("websocket closed with %d: %s", e.status, e.reason)
}

var (
	// errWSPeerGone ends a socket whose client closed it or vanished:
	// there is nobody to send a close status to.
	errWSPeerGone = errors.New("websocket peer gone")
	// errWSStreamEnded ends a socket whose guarded context ended.
	errWSStreamEnded = errors.New("websocket stream ended")
)

// wsErrorBody is the JSON error of a refused upgrade and of an error frame,
// shaped like a Connect JSON error.
type wsErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// wsSocket is one upgraded connection.
type wsSocket struct {
	h         *webSocketHandler
	conn      *websocket.Conn
	batch     streamBatch
	principal auth.Principal

	// ctx is the socket's life; cancel ends it with the reason why.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// messages carries the client's text messages from the reader.
	messages chan []byte
	// goroutines are the reader, the pinger and, on subscribed sockets,
	// the watch for further messages.
	goroutines sync.WaitGroup
}

func newWSSocket(h *webSocketHandler, conn *websocket.Conn, batch streamBatch, p auth.Principal) *wsSocket {
	return &wsSocket{h: h, conn: conn, batch: batch, principal: p, messages: make(chan []byte)}
}

// run serves the socket until it must end; the error says why. Besides run
// itself (the chosen mode's stream or report loop) a reader and a pinger
// work on the socket: the reader must keep reading for pongs and the
// client's close frame to be seen. They outlive run, because reading and
// pinging must go on until the close handshake is done: wait for them
// after closing the socket.
func (s *wsSocket) run(streamCtx context.Context) error {
	s.ctx, s.cancel = context.WithCancelCause(streamCtx)
	defer s.cancel(nil)
	s.goroutines.Go(s.read)
	s.goroutines.Go(s.keepAlive)

	err := s.serve()
	// The reader or the pinger may have ended the socket; their reason
	// wins over the stream's own, which only saw its context end.
	cause := context.Cause(s.ctx)
	var closeErr *wsCloseError
	if errors.As(cause, &closeErr) || errors.Is(cause, errWSPeerGone) {
		return cause
	}
	if streamCtx.Err() != nil {
		return errWSStreamEnded
	}
	return err
}

// wait returns once the socket's goroutines are done; they end when the
// connection is closed.
func (s *wsSocket) wait() { s.goroutines.Wait() }

// serve reads the first message and runs the mode it chooses.
func (s *wsSocket) serve() error {
	timer := time.NewTimer(s.h.firstMessageAfter)
	defer timer.Stop()
	var first []byte
	select {
	case first = <-s.messages:
	case <-timer.C:
		return &wsCloseError{wsStatusInvalid, `no message in ` + s.h.firstMessageAfter.String() + `: send {"subscribe":...} or {"report_activity":...} first`}
	case <-s.ctx.Done():
		return errWSStreamEnded
	}
	msg, err := decodeWebSocketMessage(first)
	if err != nil {
		return err
	}
	switch msg.kind {
	case wsSubscribeMachines:
		s.goroutines.Go(s.refuseFurtherMessages)
		return s.streamMachines(msg.branchID)
	case wsSubscribeSession:
		// The rule of GymSessionService.WatchSession.
		if !s.principal.IsMember() {
			return apperr.PermissionDenied("only members have gym sessions to watch")
		}
		s.goroutines.Go(s.refuseFurtherMessages)
		return s.streamSession()
	case wsSubscribeWorkout:
		owner, err := s.h.workouts.watcherOwner(s.ctx, s.principal, msg.workoutID)
		if err != nil {
			return err
		}
		s.goroutines.Go(s.refuseFurtherMessages)
		return s.streamWorkout(owner, msg.workoutID, consoleMachine(s.principal))
	default:
		return s.reportLoop(msg)
	}
}

// read hands the client's text messages to serve until the connection
// closes, and ends the socket when the client closes it or sends what this
// protocol never carries. Its reads do not follow the socket's context:
// the library closes the connection when a read's context ends, which
// would leave no way to send the close status.
func (s *wsSocket) read() {
	for {
		typ, data, err := s.conn.Read(context.WithoutCancel(s.ctx))
		if err != nil {
			s.cancel(errWSPeerGone)
			return
		}
		if typ != websocket.MessageText {
			s.cancel(&wsCloseError{wsStatusInvalid, "message: must be a JSON text frame"})
			return
		}
		select {
		case s.messages <- data:
		case <-s.ctx.Done():
			return
		}
	}
}

// refuseFurtherMessages ends a subscribed socket on any further message: a
// socket carries one subscription, and silently ignoring a second would
// leave the client waiting for frames that never come.
func (s *wsSocket) refuseFurtherMessages() {
	select {
	case <-s.messages:
		s.cancel(&wsCloseError{wsStatusInvalid, "message: a socket carries one subscription; open another socket for another"})
	case <-s.ctx.Done():
	}
}

// keepAlive pings the client and ends the socket when a pong does not come
// back in time. Like reads, pings do not follow the socket's context.
func (s *wsSocket) keepAlive() {
	ticker := time.NewTicker(s.h.pingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-ticker.C:
		}
		pingCtx, stop := context.WithTimeout(context.WithoutCancel(s.ctx), s.h.pingTimeout)
		err := s.conn.Ping(pingCtx)
		stop()
		if err != nil {
			s.cancel(errWSPeerGone)
			return
		}
	}
}

// write sends one text frame. Its deadline is the connection's
// (batchingConn puts one on every write), not ctx's: a frame being written
// when the stream ends is finished, so the close frame that follows can
// still be sent.
func (s *wsSocket) write(frame []byte) error {
	if err := s.conn.Write(context.Background(), websocket.MessageText, frame); err != nil {
		return errWSPeerGone
	}
	return nil
}

// streamMachines relays WatchMachines. A change is encoded once by the
// machine service for every watcher; only its sequence is this socket's, so
// the frame is spliced from the two instead of marshalling per socket.
// While the socket is idle the machine feed writes those frames to the
// connection itself (direct delivery), when the connection allows it.
func (s *wsSocket) streamMachines(branch uuid.UUID) error {
	var sink machineDirectSink
	if c, ok := s.batch.(*batchingConn); ok && c.raw != nil {
		sink = c
	}
	return fellBehind(s.h.machines.watch(s.ctx, branch, s.batch, func(msg *nxgv1.WatchMachinesResponse, ev *machineEvent) error {
		if ev == nil {
			frame, err := protojson.Marshal(msg)
			if err != nil {
				return err
			}
			return s.write(frame)
		}
		return s.write(machineChangeFrame(msg.GetSequence(), ev.jsonBytes()))
	}, sink))
}

// machineChangeFrame is the protojson of a WatchMachinesResponse carrying
// one machine: {"sequence":"N","machine":<machineJSON>}. protojson writes a
// uint64 as a string.
func machineChangeFrame(sequence uint64, machineJSON []byte) []byte {
	frame := make([]byte, 0, len(machineJSON)+48)
	return appendMachineChange(frame, sequence, machineJSON)
}

func appendMachineChange(buf []byte, sequence uint64, machineJSON []byte) []byte {
	buf = append(buf, `{"sequence":"`...)
	buf = strconv.AppendUint(buf, sequence, 10)
	buf = append(buf, `","machine":`...)
	buf = append(buf, machineJSON...)
	return append(buf, '}')
}

// appendMachineChangeFrame appends the whole WebSocket frame of
// machineChangeFrame: a final, unmasked text frame (RFC 6455, section
// 5.2), as a server sends it. The machine feed writes these itself in
// direct delivery, where the library's writes (one message at a time,
// each waiting for its locks and for the socket) cannot be used.
func appendMachineChangeFrame(buf []byte, sequence uint64, machineJSON []byte) []byte {
	var digits [20]byte
	size := len(`{"sequence":"`) + len(strconv.AppendUint(digits[:0], sequence, 10)) + len(`","machine":`) + len(machineJSON) + 1
	const finText = 0x81
	switch {
	case size < 126:
		buf = append(buf, finText, byte(size))
	case size <= 0xFFFF:
		buf = append(buf, finText, 126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(size))
	default:
		buf = append(buf, finText, 127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(size))
	}
	return appendMachineChange(buf, sequence, machineJSON)
}

// streamSession relays WatchSession.
func (s *wsSocket) streamSession() error {
	return fellBehind(s.h.sessions.watch(s.ctx, s.principal, func(msg *nxgv1.WatchSessionResponse) error {
		frame, err := protojson.Marshal(msg)
		if err != nil {
			return err
		}
		return s.write(frame)
	}))
}

// streamWorkout relays WatchWorkout.
func (s *wsSocket) streamWorkout(owner, workoutID, machine uuid.UUID) error {
	return fellBehind(s.h.workouts.watch(s.ctx, owner, workoutID, machine, func(msg *nxgv1.WatchWorkoutResponse) error {
		frame, err := protojson.Marshal(msg)
		if err != nil {
			return err
		}
		return s.write(frame)
	}))
}

// fellBehind gives a stream that was cut off for falling behind its own
// close status. The streams report it as resource_exhausted, which on a
// socket would read as "too many streams" (4429), the admission error;
// the two call for different reactions (reconnect now, or close another
// stream first), so the subscriber is told 4408. Admission is checked
// before a stream starts, so resource exhaustion from a running stream is
// always falling behind.
func fellBehind(err error) error {
	if appErr, ok := apperr.As(err); ok && appErr.Code == apperr.CodeResourceExhausted {
		return &wsCloseError{wsStatusFellBehind, "fell behind; reconnect for a fresh snapshot"}
	}
	return err
}

// reportLoop serves a machine console's reports: each one answered, bad ones
// with an error frame, until the socket ends. Only a message that is not a
// report at all ends the socket.
func (s *wsSocket) reportLoop(first wsClientMessage) error {
	if !s.principal.IsDevice() || s.principal.Device.Kind != auth.DeviceMachine {
		return &wsCloseError{wsStatusPermissionDenied, "report_activity: only machine devices report activity"}
	}
	msg := first
	for {
		if err := s.report(msg.reportJSON); err != nil {
			return err
		}
		var data []byte
		select {
		case data = <-s.messages:
		case <-s.ctx.Done():
			return errWSStreamEnded
		}
		var err error
		msg, err = decodeWebSocketMessage(data)
		if err != nil {
			return err
		}
		if msg.kind != wsReportActivity {
			return &wsCloseError{wsStatusInvalid, "subscribe: this socket carries reports; open another socket to subscribe"}
		}
	}
}

// report handles one report and answers it. The error it returns ends the
// socket; errors the console can fix are answered in a frame instead.
func (s *wsSocket) report(body []byte) error {
	ctx := s.ctx
	var frame []byte
	res, err := s.reportOne(ctx, body)
	if err == nil {
		out, merr := protojson.Marshal(res)
		if merr != nil {
			return merr
		}
		frame = append(append([]byte(`{"report_activity_response":`), out...), '}')
	} else {
		if appErr, ok := apperr.As(err); ok && (appErr.Code == apperr.CodeUnauthenticated || appErr.Code == apperr.CodePermissionDenied) {
			// Retrying cannot help: the device was revoked or is not allowed.
			return err
		}
		if ctx.Err() != nil {
			return errWSStreamEnded
		}
		code, msg := s.h.clientError(ctx, err)
		frame, _ = json.Marshal(struct {
			Error wsErrorBody `json:"error"`
		}{wsErrorBody{Code: code.String(), Message: msg}})
	}
	return s.write(frame)
}

// reportOne parses, rate-limits and records one report, the way the
// ReportActivity RPC does.
func (s *wsSocket) reportOne(ctx context.Context, body []byte) (*nxgv1.ReportActivityResponse, error) {
	req, err := parseReportActivity(body)
	if err != nil {
		return nil, err
	}
	// Each report counts against the caller's rate limit, as an RPC would.
	if err := s.h.limits.allow(ctx); err != nil {
		return nil, err
	}
	return s.h.machines.console.report(ctx, s.principal, req)
}

// wsMode is what a client message asks for.
type wsMode int

const (
	wsSubscribeMachines wsMode = iota + 1
	wsSubscribeSession
	wsSubscribeWorkout
	wsReportActivity
)

// wsClientMessage is a decoded client message.
type wsClientMessage struct {
	kind wsMode
	// branchID is the branch of a machines subscription.
	branchID uuid.UUID
	// workoutID is the workout of a workout subscription.
	workoutID uuid.UUID
	// reportJSON is the protojson ReportActivityRequest of a report; it is
	// parsed by parseReportActivity so that a bad report is answered
	// rather than ending the socket.
	reportJSON json.RawMessage
}

// decodeWebSocketMessage decodes a client message strictly: one JSON object
// with exactly one of the protocol's shapes, no unknown or repeated fields,
// nothing after it. Errors are invalid_argument naming the field.
func decodeWebSocketMessage(data []byte) (wsClientMessage, error) {
	if len(data) > wsReadLimit {
		return wsClientMessage{}, apperr.InvalidArgument("message", "longer than %d bytes", wsReadLimit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return wsClientMessage{}, apperr.InvalidArgument("message", "must be a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return wsClientMessage{}, apperr.InvalidArgument("message", "is not valid JSON")
		}
		name, _ := tok.(string) // inside an object, the decoder only yields string keys here
		switch name {
		case "subscribe", "branch_id", "workout_id", "report_activity":
		default:
			return wsClientMessage{}, apperr.InvalidArgument("message", "unknown field %q", name)
		}
		if _, dup := fields[name]; dup {
			return wsClientMessage{}, apperr.InvalidArgument(name, "given more than once")
		}
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return wsClientMessage{}, apperr.InvalidArgument("message", "is not valid JSON")
		}
		fields[name] = value
	}
	if _, err := dec.Token(); err != nil {
		return wsClientMessage{}, apperr.InvalidArgument("message", "is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return wsClientMessage{}, apperr.InvalidArgument("message", "must hold exactly one JSON object")
	}

	report, isReport := fields["report_activity"]
	subscribe, isSubscribe := fields["subscribe"]
	branch, hasBranch := fields["branch_id"]
	workout, hasWorkout := fields["workout_id"]
	switch {
	case isReport && (isSubscribe || hasBranch || hasWorkout):
		return wsClientMessage{}, apperr.InvalidArgument("message", "holds both report_activity and a subscription; send exactly one")
	case isReport:
		return wsClientMessage{kind: wsReportActivity, reportJSON: report}, nil
	case !isSubscribe:
		return wsClientMessage{}, apperr.InvalidArgument("subscribe", `missing: send {"subscribe":"machines","branch_id":...}, {"subscribe":"session"}, {"subscribe":"workout","workout_id":...} or {"report_activity":...}`)
	}
	var mode string
	if err := json.Unmarshal(subscribe, &mode); err != nil {
		return wsClientMessage{}, apperr.InvalidArgument("subscribe", `must be "machines", "session" or "workout"`)
	}
	if hasWorkout && mode != "workout" {
		return wsClientMessage{}, apperr.InvalidArgument("workout_id", "only a workout subscription takes a workout")
	}
	switch mode {
	case "session":
		if hasBranch {
			return wsClientMessage{}, apperr.InvalidArgument("branch_id", "only a machines subscription takes a branch")
		}
		return wsClientMessage{kind: wsSubscribeSession}, nil
	case "workout":
		var id string
		if hasBranch {
			return wsClientMessage{}, apperr.InvalidArgument("branch_id", "only a machines subscription takes a branch")
		}
		if !hasWorkout {
			return wsClientMessage{}, apperr.InvalidArgument("workout_id", "missing: a workout subscription names its workout")
		}
		if err := json.Unmarshal(workout, &id); err != nil {
			return wsClientMessage{}, apperr.InvalidArgument("workout_id", "must be a string")
		}
		// The same rule as WatchWorkoutRequest, checked the same way.
		if err := validateMessage(&nxgv1.WatchWorkoutRequest{WorkoutId: id}, ""); err != nil {
			return wsClientMessage{}, err
		}
		return wsClientMessage{kind: wsSubscribeWorkout, workoutID: uuid.MustParse(id)}, nil
	case "machines":
		var id string
		if !hasBranch {
			return wsClientMessage{}, apperr.InvalidArgument("branch_id", "missing: a machines subscription names its branch")
		}
		if err := json.Unmarshal(branch, &id); err != nil {
			return wsClientMessage{}, apperr.InvalidArgument("branch_id", "must be a string")
		}
		// The same rule as WatchMachinesRequest, checked the same way.
		if err := validateMessage(&nxgv1.WatchMachinesRequest{BranchId: id}, ""); err != nil {
			return wsClientMessage{}, err
		}
		return wsClientMessage{kind: wsSubscribeMachines, branchID: uuid.MustParse(id)}, nil
	default:
		return wsClientMessage{}, apperr.InvalidArgument("subscribe", `must be "machines", "session" or "workout"`)
	}
}

// parseReportActivity parses and validates the body of a report as the RPC
// path does (protojson, then protovalidate).
func parseReportActivity(body json.RawMessage) (*nxgv1.ReportActivityRequest, error) {
	req := &nxgv1.ReportActivityRequest{}
	if err := protojson.Unmarshal(body, req); err != nil {
		return nil, apperr.InvalidArgument("report_activity", "%s", protojsonProblem(err))
	}
	if err := validateMessage(req, "report_activity."); err != nil {
		return nil, err
	}
	return req, nil
}

// protojsonProblem is the part of a protojson error worth showing: the
// library prefixes its messages with "proto:" and a non-breaking space.
func protojsonProblem(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "proto:")
	return strings.TrimSpace(strings.ReplaceAll(msg, "\u00a0", " "))
}

// validateMessage checks msg's protovalidate rules; a violation becomes an
// invalid_argument error naming the first offending field, prefixed with
// where msg sits in the client message.
func validateMessage(msg proto.Message, prefix string) error {
	err := protovalidate.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) || len(verr.Violations) == 0 {
		return err
	}
	v := verr.Violations[0].Proto
	field := prefix + protovalidate.FieldPathString(v.GetField())
	field = strings.TrimSuffix(field, ".")
	if field == "" {
		field = "message"
	}
	text := v.GetMessage()
	if text == "" {
		text = "breaks rule " + v.GetRuleId()
	}
	return apperr.InvalidArgument(field, "%s", text)
}
