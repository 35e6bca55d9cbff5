package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nxg-fitness/nxg/db"
	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
	"github.com/nxg-fitness/nxg/internal/realtime"
)

func TestDecodeWebSocketMessage(t *testing.T) {
	t.Parallel()
	branch := uuid.MustParse("0199d1a4-8d3b-7c2e-9f10-2b3c4d5e6f70")

	t.Run("Accepted", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			in   string
			want wsClientMessage
		}{
			{`{"subscribe":"machines","branch_id":"` + branch.String() + `"}`, wsClientMessage{kind: wsSubscribeMachines, branchID: branch}},
			{` { "branch_id" : "` + strings.ToUpper(branch.String()) + `", "subscribe":"machines" } `, wsClientMessage{kind: wsSubscribeMachines, branchID: branch}},
			{`{"subscribe":"session"}`, wsClientMessage{kind: wsSubscribeSession}},
			{`{"report_activity":{"heartbeat":{}}}`, wsClientMessage{kind: wsReportActivity, reportJSON: []byte(`{"heartbeat":{}}`)}},
			{`{"workout_id":"` + branch.String() + `","subscribe":"workout"}`, wsClientMessage{kind: wsSubscribeWorkout, workoutID: branch}},
		} {
			got, err := decodeWebSocketMessage([]byte(tc.in))
			if err != nil {
				t.Fatalf("%s: %v", tc.in, err)
			}
			if got.kind != tc.want.kind || got.branchID != tc.want.branchID || got.workoutID != tc.want.workoutID || string(got.reportJSON) != string(tc.want.reportJSON) {
				t.Fatalf("%s: got %+v, want %+v", tc.in, got, tc.want)
			}
		}
	})

	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			in, field, problem string
		}{
			{``, "message", "JSON object"},
			{`[]`, "message", "JSON object"},
			{`"subscribe"`, "message", "JSON object"},
			{`{"subscribe":"session"`, "message", "not valid JSON"},
			{`{"subscribe":}`, "message", "not valid JSON"},
			{`{"subscribe":"session"}{}`, "message", "exactly one JSON object"},
			{`{"subscribe":"session"} x`, "message", "exactly one JSON object"},
			{`{"subscribe":"session","extra":1}`, "message", `unknown field "extra"`},
			{`{"Subscribe":"session"}`, "message", `unknown field "Subscribe"`},
			{`{"subscribe":"session","subscribe":"machines"}`, "subscribe", "more than once"},
			{`{}`, "subscribe", "missing"},
			{`{"branch_id":"` + branch.String() + `"}`, "subscribe", "missing"},
			{`{"subscribe":"workouts"}`, "subscribe", `"machines", "session" or "workout"`},
			{`{"subscribe":1}`, "subscribe", `"machines", "session" or "workout"`},
			{`{"subscribe":"workout"}`, "workout_id", "missing"},
			{`{"subscribe":"workout","workout_id":7}`, "workout_id", "must be a string"},
			{`{"subscribe":"workout","workout_id":"w-1"}`, "workout_id", "UUID"},
			{`{"subscribe":"workout","workout_id":"` + branch.String() + `","branch_id":"` + branch.String() + `"}`, "branch_id", "only a machines subscription"},
			{`{"subscribe":"session","workout_id":"` + branch.String() + `"}`, "workout_id", "only a workout subscription"},
			{`{"report_activity":{"heartbeat":{}},"workout_id":"` + branch.String() + `"}`, "message", "exactly one"},
			{`{"subscribe":"machines"}`, "branch_id", "missing"},
			{`{"subscribe":"machines","branch_id":42}`, "branch_id", "must be a string"},
			{`{"subscribe":"machines","branch_id":"gym-1"}`, "branch_id", "UUID"},
			{`{"subscribe":"session","branch_id":"` + branch.String() + `"}`, "branch_id", "only a machines subscription"},
			{`{"subscribe":"session","report_activity":{"heartbeat":{}}}`, "message", "exactly one"},
			{`{"report_activity":{"heartbeat":{}},"branch_id":"` + branch.String() + `"}`, "message", "exactly one"},
			{`{"report_activity":` + strings.Repeat(" ", wsReadLimit) + `{}}`, "message", "longer than"},
		} {
			_, err := decodeWebSocketMessage([]byte(tc.in))
			requireAppError(t, tc.in, err, apperr.CodeInvalidArgument, tc.field, tc.problem)
		}
	})
}

func TestParseReportActivity(t *testing.T) {
	t.Parallel()
	req, err := parseReportActivity([]byte(`{"set":{"clientSetId":"s-1","reps":12,"weightKg":40.5,"durationSeconds":45}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Set{Set: &nxgv1.SetReport{
		ClientSetId: "s-1", Reps: 12, WeightKg: 40.5, DurationSeconds: 45}}}
	if !proto.Equal(req, want) {
		t.Fatalf("parsed %v, want %v", req, want)
	}
	// protojson's field names in either spelling, as Connect JSON accepts.
	if _, err := parseReportActivity([]byte(`{"set":{"client_set_id":"s-1","reps":1}}`)); err != nil {
		t.Fatalf("proto field names: %v", err)
	}

	for _, tc := range []struct {
		in, field, problem string
	}{
		{`{}`, "report_activity.activity", "exactly one field is required"},
		{`{"heartbeat":{},"set":{"clientSetId":"a"}}`, "report_activity", "oneof"},
		{`{"heartbeat":{},"beat":1}`, "report_activity", "unknown field"},
		{`[]`, "report_activity", ""},
		{`{"set":{"clientSetId":"s","reps":1001}}`, "report_activity.set.reps", "1000"},
		{`{"set":{"clientSetId":"","reps":1}}`, "report_activity.set.client_set_id", "at least 1"},
		{`{"set":{"clientSetId":"s","weightKg":-2}}`, "report_activity.set.weight_kg", "greater than or equal to 0"},
		{`{"set":{"clientSetId":"s","weightKg":"Infinity"}}`, "report_activity.set.weight_kg", "finite"},
		{`{"status":{"detail":"` + strings.Repeat("x", 201) + `"}}`, "report_activity.status.detail", "200"},
	} {
		_, err := parseReportActivity([]byte(tc.in))
		requireAppError(t, tc.in, err, apperr.CodeInvalidArgument, tc.field, tc.problem)
	}
}

// requireAppError checks that err is a domain error of code naming field,
// with problem in its message.
func requireAppError(t *testing.T, what string, err error, code apperr.Code, field, problem string) {
	t.Helper()
	appErr, ok := apperr.As(err)
	if !ok {
		t.Fatalf("%.80s: error %v is not a domain error", what, err)
	}
	if appErr.Code != code || appErr.Field != field || !strings.Contains(appErr.Message, problem) {
		t.Fatalf("%.80s: got code %d field %q message %q; want code %d field %q message containing %q",
			what, appErr.Code, appErr.Field, appErr.Message, code, field, problem)
	}
}

// TestMachineChangeFrame checks the spliced frame of a change against
// protojson's encoding of the same message: a client parsing frames must
// not be able to tell them apart.
func TestMachineChangeFrame(t *testing.T) {
	t.Parallel()
	machine := &nxgv1.Machine{
		Id: uuid.NewString(), BranchId: uuid.NewString(), Name: `Rower "3" ✓`, Type: nxgv1.MachineType_MACHINE_TYPE_ROWER,
		Status: nxgv1.MachineStatus_MACHINE_STATUS_IN_USE, NfcTag: "tag-3", UpdatedAt: timestamppb.Now(), Version: 1 << 40,
	}
	ev := &machineEvent{Machine: machine}
	for _, seq := range []uint64{1, 42, 1<<64 - 1} {
		frame := machineChangeFrame(seq, ev.jsonBytes())
		var got nxgv1.WatchMachinesResponse
		// Strict parse: no unknown fields, the same as a client's.
		if err := protojson.Unmarshal(frame, &got); err != nil {
			t.Fatalf("frame %s does not parse: %v", frame, err)
		}
		want := &nxgv1.WatchMachinesResponse{Sequence: seq, Event: &nxgv1.WatchMachinesResponse_Machine{Machine: machine}}
		if !proto.Equal(&got, want) {
			t.Fatalf("frame %s decodes to %v, want %v", frame, &got, want)
		}
		// And protojson's own encoding, re-read, is the same message.
		direct, err := protojson.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var again nxgv1.WatchMachinesResponse
		if err := protojson.Unmarshal(direct, &again); err != nil || !proto.Equal(&again, &got) {
			t.Fatalf("protojson %s and splice %s differ", direct, frame)
		}
		if !strings.HasPrefix(string(frame), fmt.Sprintf(`{"sequence":"%d","machine":{`, seq)) {
			t.Fatalf("frame %s does not carry the sequence as protojson writes a uint64", frame)
		}
	}
}

// TestWebSocketCloseStatus checks the one mapping of errors to close
// statuses, including that internal causes never reach the reason.
func TestWebSocketCloseStatus(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	h := &webSocketHandler{logger: slog.New(slog.NewJSONHandler(logs, nil)), opts: Options{Floor: Floor{Draining: draining}}}
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		err    error
		status websocket.StatusCode
		reason string
	}{
		{"Nil", nil, websocket.StatusNormalClosure, ""},
		{"Invalid", apperr.InvalidArgument("branch_id", "must be a UUID"), 4400, "branch_id: must be a UUID"},
		{"Unauthenticated", apperr.Unauthenticated("the session has ended"), 4401, "the session has ended"},
		{"PermissionDenied", apperr.PermissionDenied("only members"), 4403, "only members"},
		{"NotFound", apperr.NotFound("branch", "b1"), 4404, "branch b1 not found"},
		{"Aborted", &apperr.Error{Code: apperr.CodeAborted, Message: "retry"}, 4409, "retry"},
		{"FailedPrecondition", apperr.FailedPrecondition("closed"), 4412, "closed"},
		{"TooManyStreams", apperr.ResourceExhausted(time.Second, "too many open streams"), 4429, "too many open streams"},
		{"FellBehind", fellBehind(apperr.ResourceExhausted(time.Second, "fell behind")), 4408, "fell behind; reconnect for a fresh snapshot"},
		{"SlowConsumer", fmt.Errorf("watch: %w", realtime.ErrSlowConsumer), 4408, "fell behind; reconnect for a fresh snapshot"},
		{"Unavailable", apperr.Unavailable(time.Second, errors.New("redis down"), "try later"), websocket.StatusTryAgainLater, "try later"},
		{"Own", &wsCloseError{4400, "message: " + strings.Repeat("é", 100)}, 4400, "message: " + strings.Repeat("é", 57)},
		{"Internal", errors.New("pq: password authentication failed for user nxg"), websocket.StatusInternalError, "internal error"},
	} {
		status, reason := h.closeStatus(ctx, tc.err)
		if status != tc.status || reason != tc.reason {
			t.Errorf("%s: got %d %q, want %d %q", tc.name, status, reason, tc.status, tc.reason)
		}
		if len(reason) > 123 {
			t.Errorf("%s: reason of %d bytes does not fit a close frame", tc.name, len(reason))
		}
	}
	if !strings.Contains(logs.String(), "password authentication failed") {
		t.Errorf("the internal error was not logged: %s", logs.String())
	}

	drain()
	if status, _ := h.closeStatus(ctx, apperr.Unavailable(0, nil, "the server is stopping")); status != websocket.StatusServiceRestart {
		t.Errorf("unavailable while draining = %d, want 1012", status)
	}
	if fellBehind(nil) != nil {
		t.Error("fellBehind(nil) is not nil")
	}
	if msg := (&wsCloseError{4400, "message: bad"}).Error(); !strings.Contains(msg, "4400") || !strings.Contains(msg, "message: bad") {
		t.Errorf("close error reads %q", msg)
	}
}

// TestWebSocketRefusalStatus checks the HTTP statuses of refused upgrades
// against the Connect protocol's mapping.
func TestWebSocketRefusalStatus(t *testing.T) {
	t.Parallel()
	for code, want := range map[connect.Code]int{
		connect.CodeInvalidArgument:    http.StatusBadRequest,
		connect.CodeFailedPrecondition: http.StatusBadRequest,
		connect.CodeUnauthenticated:    http.StatusUnauthorized,
		connect.CodePermissionDenied:   http.StatusForbidden,
		connect.CodeNotFound:           http.StatusNotFound,
		connect.CodeResourceExhausted:  http.StatusTooManyRequests,
		connect.CodeUnavailable:        http.StatusServiceUnavailable,
		connect.CodeInternal:           http.StatusInternalServerError,
	} {
		if got := httpStatusOf(code); got != want {
			t.Errorf("%v: %d, want %d", code, got, want)
		}
	}
}

// wsCheckIn opens a gym session of user at branch the way the check-in
// path does: the row and its notification in one transaction, so that
// session watchers hear of it.
func wsCheckIn(t testing.TB, f *machineFloor, user uuid.UUID, branch string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	var id uuid.UUID
	err := db.WithTx(ctx, f.b.db.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx,
			`INSERT INTO gym_sessions (user_id, branch_id, method, expires_at) VALUES ($1, $2, 'qr', now() + interval '4 hours') RETURNING id`,
			user, branch).Scan(&id); err != nil {
			return err
		}
		return floor.NotifyMember(ctx, tx, user, floor.MemberSessionStarted, id)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// wsSetStatus changes the rower's status through MachineService as staff
// of its branch.
func wsSetStatus(t testing.TB, f *machineFloor, status nxgv1.MachineStatus) *nxgv1.Machine {
	t.Helper()
	m, err := f.setStatus(f.staffA, f.rower, status)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wsURL is the WebSocket endpoint of b's server, with query appended.
func wsURL(b *apiTestBundle, query string) string {
	u := "ws" + strings.TrimPrefix(b.server.URL, "http") + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// wsDial opens /ws with an access or device token.
func wsDial(t testing.TB, b *apiTestBundle, accessToken string) *websocket.Conn {
	t.Helper()
	c, _, err := wsDialWith(b, "", http.Header{"Authorization": {"Bearer " + accessToken}})
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func wsDialWith(b *apiTestBundle, query string, header http.Header) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, wsURL(b, query), &websocket.DialOptions{HTTPHeader: header})
}

// wsSend sends one text message.
func wsSend(t testing.TB, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("send %s: %v", msg, err)
	}
}

// wsRead reads the next frame, waiting several seconds at most.
func wsRead(t testing.TB, c *websocket.Conn) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read a frame: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("frame of type %v, want text", typ)
	}
	return data
}

// wsReadProto reads the next frame into msg, strictly (no unknown fields).
func wsReadProto(t testing.TB, c *websocket.Conn, msg proto.Message) []byte {
	t.Helper()
	data := wsRead(t, c)
	if err := protojson.Unmarshal(data, msg); err != nil {
		t.Fatalf("frame %s is not protojson of %T: %v", data, msg, err)
	}
	return data
}

// wsRequireClose reads until the server closes the socket and checks the
// status, and that the reason contains reason. Frames before the close are
// returned.
func wsRequireClose(t testing.TB, c *websocket.Conn, status websocket.StatusCode, reason string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var frames [][]byte
	for {
		_, data, err := c.Read(ctx)
		if err == nil {
			frames = append(frames, data)
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("socket ended without a close status: %v (frames %q)", err, frames)
		}
		if ce.Code != status || !strings.Contains(ce.Reason, reason) {
			t.Fatalf("closed with %d %q, want %d with %q", ce.Code, ce.Reason, status, reason)
		}
		return frames
	}
}

// wsReport sends a report and reads the frame that answers it.
func wsReport(t testing.TB, c *websocket.Conn, report string) map[string]json.RawMessage {
	t.Helper()
	wsSend(t, c, `{"report_activity":`+report+`}`)
	var out map[string]json.RawMessage
	data := wsRead(t, c)
	if err := json.Unmarshal(data, &out); err != nil || len(out) != 1 {
		t.Fatalf("answer %s is not one wrapped frame: %v", data, err)
	}
	return out
}

func TestWebSocket(t *testing.T) {
	t.Parallel()

	t.Run("Unauthenticated", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		for _, tc := range []struct {
			name   string
			query  string
			header http.Header
			want   string
		}{
			{"NoCredentials", "", nil, "missing credentials"},
			{"BadToken", "", http.Header{"Authorization": {"Bearer not-a-token"}}, "access token"},
			{"BadTicket", "ticket=made-up", nil, "ticket is invalid"},
		} {
			c, res, err := wsDialWith(b, tc.query, tc.header)
			if err == nil {
				_ = c.CloseNow()
				t.Fatalf("%s: upgraded", tc.name)
			}
			if res == nil || res.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s: response %v, want 401", tc.name, res)
			}
			var body wsErrorBody
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatalf("%s: body: %v", tc.name, err)
			}
			if body.Code != "unauthenticated" || !strings.Contains(body.Message, tc.want) {
				t.Fatalf("%s: body %+v", tc.name, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%s: content type %q", tc.name, ct)
			}
		}
	})

	t.Run("Origin", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, func(o *Options) { o.CORSOrigins = []string{"https://dash.nxg.test"} })
		member := auditTestUser(t, b, token.RoleMember)
		bearer := "Bearer " + member.Token
		_, res, err := wsDialWith(b, "", http.Header{"Authorization": {bearer}, "Origin": {"https://evil.test"}})
		if err == nil || res == nil || res.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %v, %v", res, err)
		}
		c, _, err := wsDialWith(b, "", http.Header{"Authorization": {bearer}, "Origin": {"https://dash.nxg.test"}})
		if err != nil {
			t.Fatalf("dashboard origin: %v", err)
		}
		_ = c.CloseNow()
	})

	t.Run("Machines", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		// The RPC stream and the socket side by side, as the same member.
		client := nxgv1connect.NewMachineServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
		stream, err := client.WatchMachines(ctx, authBearer(&nxgv1.WatchMachinesRequest{BranchId: f.branchA}, f.member.Token))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		c := wsDial(t, f.b, f.member.Token)
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)

		var snap nxgv1.WatchMachinesResponse
		wsReadProto(t, c, &snap)
		if !stream.Receive() {
			t.Fatal(stream.Err())
		}
		if !proto.Equal(&snap, stream.Msg()) {
			t.Fatalf("socket snapshot %v, stream's %v", &snap, stream.Msg())
		}
		if snap.GetSequence() != 1 || len(snap.GetSnapshot().GetMachines()) != 3 {
			t.Fatalf("snapshot %v, want branch A's 3 machines", &snap)
		}

		changed := wsSetStatus(t, f, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
		var change nxgv1.WatchMachinesResponse
		raw := wsReadProto(t, c, &change)
		if !stream.Receive() {
			t.Fatal(stream.Err())
		}
		if !proto.Equal(&change, stream.Msg()) {
			t.Fatalf("socket change %v, stream's %v", &change, stream.Msg())
		}
		if change.GetSequence() != 2 || !proto.Equal(change.GetMachine(), changed) {
			t.Fatalf("change %v, want sequence 2 and %v", &change, changed)
		}
		if !strings.HasPrefix(string(raw), `{"sequence":"2","machine":`) {
			t.Fatalf("change frame %s", raw)
		}
		wsSetStatus(t, f, nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE)
		wsReadProto(t, c, &change)
		if change.GetSequence() != 3 || change.GetMachine().GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
			t.Fatalf("second change %v", &change)
		}

		// A socket carries one subscription.
		wsSend(t, c, `{"subscribe":"session"}`)
		wsRequireClose(t, c, 4400, "one subscription")
	})

	t.Run("TwoInstances", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		second := f.b.secondInstance(t)
		c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(second.URL, "http")+"/ws",
			&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + f.member.Token}}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		var msg nxgv1.WatchMachinesResponse
		wsReadProto(t, c, &msg)

		// Committed through the first instance, delivered by the second.
		// NFR5 asks for one second; the assertion allows for a loaded test
		// machine, and the benchmark measures the real figure.
		changed := wsSetStatus(t, f, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
		wsReadProto(t, c, &msg)
		if msg.GetSequence() != 2 || !proto.Equal(msg.GetMachine(), changed) {
			t.Fatalf("second instance sent %v, want %v", &msg, changed)
		}
	})

	t.Run("MachinesErrors", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		for _, tc := range []struct {
			name, msg string
			status    websocket.StatusCode
			reason    string
		}{
			{"UnknownBranch", `{"subscribe":"machines","branch_id":"` + uuid.NewString() + `"}`, 4404, "not found"},
			{"BadBranch", `{"subscribe":"machines","branch_id":"front-desk"}`, 4400, "branch_id: must be a valid UUID"},
			{"NoBranch", `{"subscribe":"machines"}`, 4400, "branch_id: missing"},
			{"UnknownField", `{"subscribe":"machines","branch":"x"}`, 4400, `unknown field "branch"`},
			{"NotJSON", `subscribe machines`, 4400, "must be a JSON object"},
			{"Both", `{"subscribe":"session","report_activity":{"heartbeat":{}}}`, 4400, "exactly one"},
		} {
			c := wsDial(t, f.b, f.member.Token)
			wsSend(t, c, tc.msg)
			if frames := wsRequireClose(t, c, tc.status, tc.reason); len(frames) != 0 {
				t.Fatalf("%s: frames %q before the close", tc.name, frames)
			}
		}

		c := wsDial(t, f.b, f.member.Token)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Write(ctx, websocket.MessageBinary, []byte(`{"subscribe":"session"}`)); err != nil {
			t.Fatal(err)
		}
		wsRequireClose(t, c, 4400, "text frame")

		// Bigger than the read limit: the library refuses it with 1009.
		c = wsDial(t, f.b, f.member.Token)
		big := `{"subscribe":"` + strings.Repeat("x", wsReadLimit) + `"}`
		_ = c.Write(ctx, websocket.MessageText, []byte(big))
		_, _, err := c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
			t.Fatalf("oversized message: %v", err)
		}
	})

	t.Run("Session", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		client := nxgv1connect.NewGymSessionServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
		stream, err := client.WatchSession(ctx, authBearer(&nxgv1.WatchSessionRequest{}, f.member.Token))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		c := wsDial(t, f.b, f.member.Token)
		wsSend(t, c, `{"subscribe":"session"}`)

		var snap nxgv1.WatchSessionResponse
		wsReadProto(t, c, &snap)
		if !stream.Receive() {
			t.Fatal(stream.Err())
		}
		if !proto.Equal(&snap, stream.Msg()) || snap.GetSequence() != 1 || snap.GetSnapshot() == nil || snap.GetSnapshot().GetSession() != nil {
			t.Fatalf("socket snapshot %v, stream's %v", &snap, stream.Msg())
		}

		session := wsCheckIn(t, f, f.member.ID, f.branchA)
		var started nxgv1.WatchSessionResponse
		wsReadProto(t, c, &started)
		if !stream.Receive() {
			t.Fatal(stream.Err())
		}
		if !proto.Equal(&started, stream.Msg()) || started.GetSequence() != 2 || started.GetSessionStarted().GetId() != session.String() {
			t.Fatalf("socket event %v, stream's %v", &started, stream.Msg())
		}

		// Staff and devices have no gym session to watch, as on the RPC.
		c = wsDial(t, f.b, f.staffA.Token)
		wsSend(t, c, `{"subscribe":"session"}`)
		wsRequireClose(t, c, 4403, "only members")
	})

	t.Run("Ticket", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		tk, err := f.b.createTicket(f.member.Token)
		if err != nil {
			t.Fatal(err)
		}
		query := "ticket=" + url.QueryEscape(tk.GetTicket())
		c, _, err := wsDialWith(f.b, query, nil)
		if err != nil {
			t.Fatalf("dial with a ticket: %v", err)
		}
		defer c.CloseNow()
		wsSend(t, c, `{"subscribe":"session"}`)
		var snap nxgv1.WatchSessionResponse
		wsReadProto(t, c, &snap)
		if snap.GetSnapshot() == nil {
			t.Fatalf("first frame %v", &snap)
		}

		// The ticket works once.
		_, again, err := wsDialWith(f.b, query, nil)
		if err == nil || again == nil || again.StatusCode != http.StatusUnauthorized {
			t.Fatalf("second use of a ticket: %v, %v", again, err)
		}
	})

	t.Run("Console", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		_, deviceToken := f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.rower)
		c := wsDial(t, f.b, deviceToken)

		ack := wsReport(t, c, `{"heartbeat":{}}`)
		var res nxgv1.ReportActivityResponse
		if err := protojson.Unmarshal(ack["report_activity_response"], &res); err != nil {
			t.Fatalf("heartbeat answer %q: %v", ack, err)
		}

		// A bad report is answered, and the socket stays open.
		bad := wsReport(t, c, `{"set":{"clientSetId":"s-1","reps":5000}}`)
		var e wsErrorBody
		if err := json.Unmarshal(bad["error"], &e); err != nil || e.Code != "invalid_argument" || !strings.Contains(e.Message, "report_activity.set.reps") {
			t.Fatalf("answer to a bad set %q", bad)
		}
		bad = wsReport(t, c, `{"set":{"clientSetId":"s-1","reps":5,"colour":"red"}}`)
		if err := json.Unmarshal(bad["error"], &e); err != nil || e.Code != "invalid_argument" || !strings.Contains(e.Message, "colour") {
			t.Fatalf("answer to an unknown field %q", bad)
		}

		// A fault takes the machine out of service; the answer shows it.
		ack = wsReport(t, c, `{"status":{"fault":true,"detail":"belt slipping"}}`)
		if err := protojson.Unmarshal(ack["report_activity_response"], &res); err != nil ||
			res.GetMachine().GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE {
			t.Fatalf("fault answer %q: %v", ack, err)
		}

		// A report socket takes reports only.
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		wsRequireClose(t, c, 4400, "carries reports")

		// People do not report activity.
		c = wsDial(t, f.b, f.member.Token)
		wsSend(t, c, `{"report_activity":{"heartbeat":{}}}`)
		wsRequireClose(t, c, 4403, "only machine devices")
	})

	t.Run("SetReachesMember", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		_, deviceToken := f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.rower)
		wsCheckIn(t, f, f.member.ID, f.branchA)
		link := f.mustLink(t, f.member, f.rower)

		member := wsDial(t, f.b, f.member.Token)
		wsSend(t, member, `{"subscribe":"session"}`)
		var snap nxgv1.WatchSessionResponse
		wsReadProto(t, member, &snap)
		if snap.GetSnapshot().GetLink().GetId() != link.GetLink().GetId() {
			t.Fatalf("snapshot %v, want the link %v", &snap, link.GetLink())
		}

		console := wsDial(t, f.b, deviceToken)
		ack := wsReport(t, console, `{"set":{"clientSetId":"set-1","durationSeconds":300,"distanceM":1250.5}}`)
		var res nxgv1.ReportActivityResponse
		if err := protojson.Unmarshal(ack["report_activity_response"], &res); err != nil || res.GetSet().GetDistanceM() != 1250.5 || res.GetDuplicate() {
			t.Fatalf("set answer %q: %v", ack, err)
		}
		// The link's own notification may still be in flight when the
		// socket subscribes (the snapshot already shows the link), so it
		// can arrive before the set; it is not what this test is about.
		var ev nxgv1.WatchSessionResponse
		wsReadProto(t, member, &ev)
		if ev.GetMachineLinked().GetId() == link.GetLink().GetId() {
			wsReadProto(t, member, &ev)
		}
		if ev.GetSetReported().GetId() != res.GetSet().GetId() || ev.GetSetReported().GetDurationSeconds() != 300 {
			t.Fatalf("member's event %v, want the set %v", &ev, res.GetSet())
		}
		// A retried set is acknowledged as a duplicate.
		ack = wsReport(t, console, `{"set":{"clientSetId":"set-1","durationSeconds":300,"distanceM":1250.5}}`)
		if err := protojson.Unmarshal(ack["report_activity_response"], &res); err != nil || !res.GetDuplicate() {
			t.Fatalf("retried set answer %q: %v", ack, err)
		}
	})

	t.Run("Revoked", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		c := wsDial(t, f.b, f.member.Token)
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		wsRead(t, c)
		authClient := nxgv1connect.NewAuthServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
		if _, err := authClient.Logout(context.Background(), authBearer(&nxgv1.LogoutRequest{}, f.member.Token)); err != nil {
			t.Fatal(err)
		}
		wsRequireClose(t, c, 4401, "session ended")

		deviceID, deviceToken := f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.rower)
		console := wsDial(t, f.b, deviceToken)
		wsReport(t, console, `{"heartbeat":{}}`)
		devices := nxgv1connect.NewDeviceServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
		if _, err := devices.RevokeDevice(context.Background(), authBearer(&nxgv1.RevokeDeviceRequest{DeviceId: deviceID}, f.staffA.Token)); err != nil {
			t.Fatal(err)
		}
		wsRequireClose(t, console, 4401, "session ended")
	})

	t.Run("Drain", func(t *testing.T) {
		t.Parallel()
		draining, drain := context.WithCancel(context.Background())
		defer drain()
		f := setupMachineFloor(t, func(o *Options) { o.Floor.Draining = draining })
		c := wsDial(t, f.b, f.member.Token)
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		wsRead(t, c)
		idle := wsDial(t, f.b, f.member.Token) // not subscribed yet
		drain()
		wsRequireClose(t, c, websocket.StatusServiceRestart, "shutting down")
		wsRequireClose(t, idle, websocket.StatusServiceRestart, "shutting down")
	})

	t.Run("StreamCap", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t, func(o *Options) { o.Floor.Settings.MaxStreamsPerUser = 2 })
		first := wsDial(t, f.b, f.member.Token)
		wsSend(t, first, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		wsRead(t, first)
		second := wsDial(t, f.b, f.member.Token)
		wsSend(t, second, `{"subscribe":"session"}`)
		wsRead(t, second)
		third := wsDial(t, f.b, f.member.Token)
		wsRequireClose(t, third, 4429, "live streams")

		// Closing one frees its slot.
		if err := first.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "a stream slot to free up", func() bool {
			c, _, err := wsDialWith(f.b, "", http.Header{"Authorization": {"Bearer " + f.member.Token}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _, err = c.Read(ctx)
			return err == nil
		})
	})

	t.Run("RateLimited", func(t *testing.T) {
		t.Parallel()
		limits := &RateLimits{PerUser: ratelimit.Limit{Rate: 1, Period: time.Hour, Burst: 1}}
		f := setupMachineFloor(t, func(o *Options) { o.RateLimits = limits })
		header := http.Header{"Authorization": {"Bearer " + f.member.Token}}
		c, _, err := wsDialWith(f.b, "", header)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		_, res, err := wsDialWith(f.b, "", header)
		if err == nil || res == nil || res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("over the limit: %v, %v", res, err)
		}
		var body wsErrorBody
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil || body.Code != "resource_exhausted" {
			t.Fatalf("body %+v: %v", body, err)
		}
	})

	t.Run("Timeouts", func(t *testing.T) {
		t.Parallel()
		f := setupMachineFloor(t)
		srv, ended := wsTestServer(t, f.b, func(h *webSocketHandler) {
			h.firstMessageAfter = 200 * time.Millisecond
			h.pingInterval = 50 * time.Millisecond
			h.pingTimeout = 200 * time.Millisecond
		})
		dial := func() *websocket.Conn {
			c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws",
				&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + f.member.Token}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.CloseNow() })
			return c
		}

		// A client that never says what it wants is closed; reading,
		// it answers pings meanwhile, so only the first-message limit ends it.
		wsRequireClose(t, dial(), 4400, "no message in 200ms")
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler did not return after closing")
		}

		// A client that stops reading answers no pings: the server gives
		// up on it by itself, without a close handshake.
		c := dial()
		wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the server kept a socket whose pongs stopped")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for {
			_, _, err := c.Read(ctx)
			if err == nil {
				continue // the snapshot, sent before the pings failed
			}
			if ctx.Err() != nil || websocket.CloseStatus(err) != -1 {
				t.Fatalf("socket ended with %v, want the connection dropped", err)
			}
			break
		}
	})
}

// wsTestServer serves b's API's WebSocket endpoint alone, with its own hub
// and guard, after adjust has tuned the handler (shorter timings). ended
// receives once each time a socket's handler returns.
func wsTestServer(t *testing.T, b *apiTestBundle, adjust func(*webSocketHandler)) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	h, ended := wsTestHandler(t, b, adjust)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, ended
}

// wsTestHandler is wsTestServer's handler, for a test that serves it
// itself.
func wsTestHandler(t *testing.T, b *apiTestBundle, adjust func(*webSocketHandler)) (http.Handler, <-chan struct{}) {
	t.Helper()
	opts := Options{Pool: b.db.Pool, Logger: slog.New(slog.NewJSONHandler(b.logs, nil)), Identity: b.identity.Identity, Floor: newFloor(t, b.db)}
	guard := newStreamGuard(opts.Floor.Hub, opts.Floor.Settings, opts.Floor.Draining, opts.Logger).checkSessions(opts.Identity.Sessions)
	sessions := NewGymSessionService(opts.Pool, opts.Identity, opts.Floor, guard, opts.Logger)
	machines := NewMachineService(opts.Pool, opts.Identity, opts.Floor, guard, opts.Logger)
	workouts := NewWorkoutService(opts.Pool, opts.Identity, opts.Floor, guard, nil, opts.Logger)
	h, ok := newWebSocketHandler(opts, sessions, machines, workouts, guard).(*webSocketHandler)
	if !ok {
		t.Fatal("newWebSocketHandler returned another type")
	}
	adjust(h)
	ended := make(chan struct{}, 16)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		ended <- struct{}{}
	}), ended
}

// smallSendBufferListener gives every connection it accepts a small
// kernel send buffer, so that a peer which stops reading blocks the
// server's writes after kilobytes rather than megabytes.
type smallSendBufferListener struct{ net.Listener }

func (l smallSendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// TestWebSocketSlowConsumer checks that a machines subscriber which stops
// reading, and so falls behind the changes, is closed with 4408 once it
// reads again, after the frames it was sent; it never blocks the feed.
func TestWebSocketSlowConsumer(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	// A hundred machines: a change to them all is a delivery of a few
	// tens of kilobytes, which the small socket buffers cannot hold.
	for i := range 100 {
		f.insertMachine(t, f.branchA, fmt.Sprintf("Rack %03d", i), "rack", fmt.Sprintf("TAG-WS-RACK-%03d", i))
	}
	var feed *machineFeed
	h, _ := wsTestHandler(t, f.b, func(h *webSocketHandler) {
		// A buffer of two deliveries, so a few changes overflow it.
		h.machines.feed.buffer = 2
		feed = h.machines.feed
		// A client that stops reading answers no pings and would be
		// dropped for that; this test is about the feed's bound, and the
		// write timeout must outlast the pause.
		h.pingInterval = time.Hour
		h.writeTimeout = time.Minute
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallSendBufferListener{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)

	// The client's receive buffer is small too.
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return c, err
	}}}
	t.Cleanup(client.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &websocket.DialOptions{
		HTTPClient: client, HTTPHeader: http.Header{"Authorization": {"Bearer " + f.member.Token}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	c.SetReadLimit(1 << 20) // the snapshot of a hundred machines
	wsSend(t, c, `{"subscribe":"machines","branch_id":"`+f.branchA+`"}`)
	var snap nxgv1.WatchMachinesResponse
	wsReadProto(t, c, &snap)
	if len(snap.GetSnapshot().GetMachines()) != 103 {
		t.Fatalf("snapshot %v", &snap)
	}

	// The test's own subscription paces the changes: each is delivered
	// before the next is made, so the socket's buffer gets one delivery
	// per change. The socket reads nothing meanwhile.
	branch := uuid.MustParse(f.branchA)
	pacer := feed.subscribe(branch)
	defer pacer.Close()
	for round := 0; watcherCount(feed, branch) > 1; round++ {
		if round == 100 {
			t.Fatal("the socket that stopped reading was not dropped after 100 changes")
		}
		f.bumpAllMachines(t, f.branchA, round%2 == 0)
		nextDelivery(t, pacer)
	}

	// Reading again, the client gets what was sent, numbered without
	// gaps, then the close.
	frames := wsRequireClose(t, c, 4408, "fell behind; reconnect for a fresh snapshot")
	if len(frames) == 0 {
		t.Fatal("no frame before the close")
	}
	for i, frame := range frames {
		var msg nxgv1.WatchMachinesResponse
		if err := protojson.Unmarshal(frame, &msg); err != nil {
			t.Fatalf("frame %s: %v", frame, err)
		}
		if msg.GetSequence() != uint64(i+2) || msg.GetMachine() == nil {
			t.Fatalf("frame %d = %v, want a change at sequence %d", i, &msg, i+2)
		}
	}
	if pacer.Err() != nil {
		t.Fatalf("the pacing subscription ended: %v", pacer.Err())
	}
}
