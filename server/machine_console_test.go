package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/riverqueue/river"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/floor"
	"github.com/nxg-fitness/nxg/internal/realtime"
	"github.com/nxg-fitness/nxg/jobs"
)

// consoleFloor is a machine floor with a signed-in console on the chest
// press and one on the rower of branch A.
type consoleFloor struct {
	*machineFloor
	pressDevice, pressToken string
	rowerDevice, rowerToken string
}

func setupConsoleFloor(t *testing.T, mutate ...func(*Options)) *consoleFloor {
	t.Helper()
	f := &consoleFloor{machineFloor: setupMachineFloor(t, mutate...)}
	f.pressDevice, f.pressToken = f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.press)
	f.rowerDevice, f.rowerToken = f.b.signInDevice(t, f.staffA.Token, f.branchA, "machine", f.rower)
	return f
}

// consoleClients are the MachineService clients a console may use: gRPC
// (what machines speak) and Connect.
func (f *consoleFloor) consoleClients() map[string]nxgv1connect.MachineServiceClient {
	return map[string]nxgv1connect.MachineServiceClient{
		"GRPC":    nxgv1connect.NewMachineServiceClient(f.b.h2c, f.b.server.URL, connect.WithGRPC()),
		"Connect": nxgv1connect.NewMachineServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON()),
	}
}

func (f *consoleFloor) report(token string, req *nxgv1.ReportActivityRequest) (*nxgv1.ReportActivityResponse, error) {
	res, err := f.consoleClients()["GRPC"].ReportActivity(context.Background(), authBearer(req, token))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func heartbeat() *nxgv1.ReportActivityRequest {
	return &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Heartbeat{Heartbeat: &nxgv1.Heartbeat{}}}
}

func statusReport(fault bool, detail string) *nxgv1.ReportActivityRequest {
	return &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Status{Status: &nxgv1.StatusReport{Fault: fault, Detail: detail}}}
}

func setReportReq(s *nxgv1.SetReport) *nxgv1.ReportActivityRequest {
	return &nxgv1.ReportActivityRequest{Activity: &nxgv1.ReportActivityRequest_Set{Set: s}}
}

// consoleAttach is an open Attach stream as a test reads it.
type consoleAttach struct {
	t      testing.TB
	stream *connect.ServerStreamForClient[nxgv1.AttachResponse]
	seq    uint64
	cancel context.CancelFunc
}

func (f *consoleFloor) attach(t testing.TB, client nxgv1connect.MachineServiceClient, token string) *consoleAttach {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Attach(ctx, authBearer(&nxgv1.AttachRequest{}, token))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = stream.Close() })
	return &consoleAttach{t: t, stream: stream, cancel: cancel}
}

// next reads the next message within 10s and checks its sequence.
func (a *consoleAttach) next() *nxgv1.AttachResponse {
	a.t.Helper()
	got := make(chan bool, 1)
	go func() { got <- a.stream.Receive() }()
	select {
	case ok := <-got:
		if !ok {
			a.t.Fatalf("attach stream ended: %v", a.stream.Err())
		}
	case <-time.After(10 * time.Second):
		a.cancel()
		<-got
		a.t.Fatal("no attach message within 10s")
	}
	msg := a.stream.Msg()
	a.seq++
	if msg.GetSequence() != a.seq {
		a.t.Fatalf("sequence = %d, want %d (message %v)", msg.GetSequence(), a.seq, msg)
	}
	return msg
}

// ended waits up to 10s for the stream to end and returns its error.
func (a *consoleAttach) ended() error {
	a.t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for a.stream.Receive() {
		}
	}()
	select {
	case <-done:
		return a.stream.Err()
	case <-time.After(10 * time.Second):
		a.cancel()
		<-done
		a.t.Fatal("attach stream still open after 10s")
		return nil
	}
}

// expect reads the next message and checks the machine's status and who
// is linked ("" for nobody).
func (a *consoleAttach) expect(status nxgv1.MachineStatus, member string) *nxgv1.AttachResponse {
	a.t.Helper()
	msg := a.next()
	if msg.GetMachine().GetStatus() != status || msg.GetMember().GetDisplayName() != member || (member == "") != (msg.GetMember() == nil) {
		a.t.Fatalf("attach message %d = %v, want status %s and member %q", a.seq, msg, status, member)
	}
	return msg
}

func TestMachineConsoleRefusesOthers(t *testing.T) {
	t.Parallel()
	f := setupConsoleFloor(t)
	_, kioskToken := f.b.signInDevice(t, f.staffA.Token, f.branchA, "kiosk", "")
	for name, client := range f.consoleClients() {
		for who, token := range map[string]string{"Member": f.member.Token, "Staff": f.staffA.Token, "Admin": f.admin.Token, "Kiosk": kioskToken} {
			t.Run(name+"/"+who, func(t *testing.T) {
				_, err := client.ReportActivity(context.Background(), authBearer(heartbeat(), token))
				requireAuthCode(t, err, connect.CodePermissionDenied, "only a machine console")
				stream, err := client.Attach(context.Background(), authBearer(&nxgv1.AttachRequest{}, token))
				if err == nil {
					for stream.Receive() {
						t.Fatalf("attach sent %v", stream.Msg())
					}
					err = stream.Err()
					_ = stream.Close()
				}
				requireAuthCode(t, err, connect.CodePermissionDenied, "only a machine console")
			})
		}
	}
}

func TestMachineConsoleAttach(t *testing.T) {
	t.Parallel()
	for name := range map[string]bool{"GRPC": true, "Connect": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := setupConsoleFloor(t)
			a := f.attach(t, f.consoleClients()[name], f.pressToken)
			first := a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")
			if first.GetMachine().GetId() != f.press || first.GetMachine().GetName() != "Chest press" {
				t.Fatalf("first message = %v", first)
			}

			// Staff maintenance, on and off.
			if _, err := f.setStatus(f.staffA, f.press, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE); err != nil {
				t.Fatal(err)
			}
			a.expect(nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE, "")
			if _, err := f.setStatus(f.staffA, f.press, nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE); err != nil {
				t.Fatal(err)
			}
			a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")

			// Changes of other machines are not this console's business; a
			// link to this one shows the member's display name only.
			f.checkIn(t, f.other.ID, f.branchA)
			f.mustLink(t, f.other, f.bike)
			f.checkIn(t, f.member.ID, f.branchA)
			link := f.mustLink(t, f.member, f.press).GetLink()
			linked := a.expect(nxgv1.MachineStatus_MACHINE_STATUS_IN_USE, "Audit member")
			if linked.GetMember().GetLinkId() != link.GetId() || !linked.GetMember().GetLinkedAt().AsTime().Equal(link.GetLinkedAt().AsTime()) || linked.GetMember().GetNextSet() != nil {
				t.Fatalf("linked = %v, link %v", linked.GetMember(), link)
			}

			// A heartbeat changes nothing shown; the unlink is the next message.
			if _, err := f.report(f.pressToken, heartbeat()); err != nil {
				t.Fatal(err)
			}
			if _, err := f.client().UnlinkMachine(context.Background(), authBearer(&nxgv1.UnlinkMachineRequest{}, f.member.Token)); err != nil {
				t.Fatal(err)
			}
			a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")

			// The console's own fault is shown like maintenance.
			if _, err := f.report(f.pressToken, statusReport(true, "belt slipping")); err != nil {
				t.Fatal(err)
			}
			a.expect(nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE, "")
		})
	}
}

func TestMachineConsoleOffline(t *testing.T) {
	t.Parallel()
	f := setupConsoleFloor(t)
	a := f.attach(t, f.consoleClients()["GRPC"], f.rowerToken)
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")

	// The console reports, then falls silent past the limit: the sweep
	// shows it offline and leaves the machines without a console alone.
	if _, err := f.report(f.rowerToken, heartbeat()); err != nil {
		t.Fatal(err)
	}
	f.exec(t, `UPDATE machines SET last_seen_at = now() - interval '10 seconds' WHERE id = $1`, f.rower)
	sweep := &jobs.MachineOfflineSweepWorker{Pool: f.b.db.Pool, OfflineAfter: 5 * time.Second}
	if err := sweep.Work(context.Background(), &river.Job[jobs.MachineOfflineSweepArgs]{}); err != nil {
		t.Fatal(err)
	}
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_OFFLINE, "")
	if got := f.status(t, f.rower); got != nxgv1.MachineStatus_MACHINE_STATUS_OFFLINE {
		t.Fatalf("rower is %s", got)
	}
	for _, m := range []string{f.bike, f.press} {
		if got := f.status(t, m); got != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
			t.Errorf("console-less machine %s is %s", m, got)
		}
	}

	// A heartbeat brings it back.
	if _, err := f.report(f.rowerToken, heartbeat()); err != nil {
		t.Fatal(err)
	}
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")
}

func TestMachineConsoleSets(t *testing.T) {
	t.Parallel()
	f := setupConsoleFloor(t)
	ctx := context.Background()
	press := &nxgv1.SetReport{ClientSetId: "set-1", Reps: 12, WeightKg: 40, DurationSeconds: 45, Calories: 9}

	_, err := f.report(f.pressToken, setReportReq(press))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "no member is linked to this machine")

	session := f.checkIn(t, f.member.ID, f.branchA)
	link := f.mustLink(t, f.member, f.press).GetLink()
	sessions := nxgv1connect.NewGymSessionServiceClient(http.DefaultClient, f.b.server.URL, connect.WithProtoJSON())
	wctx, cancel := context.WithCancel(ctx)
	stream, err := sessions.WatchSession(wctx, authBearer(&nxgv1.WatchSessionRequest{}, f.member.Token))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = stream.Close() })
	w := &sessionWatch{t: t, stream: stream, cancel: cancel}
	if snap := w.next().GetSnapshot(); snap.GetLink().GetId() != link.GetId() {
		t.Fatalf("snapshot = %v", snap)
	}

	res, err := f.report(f.pressToken, setReportReq(press))
	if err != nil {
		t.Fatal(err)
	}
	set := res.GetSet()
	if res.GetDuplicate() || set.GetId() == "" || set.GetSessionId() != session || set.GetMachineId() != f.press ||
		set.GetClientSetId() != "set-1" || set.GetReps() != 12 || set.GetWeightKg() != 40 || set.GetRecordedAt() == nil || res.GetMachine() != nil {
		t.Fatalf("stored = %v", res)
	}
	// The link's own event may still be on its way (it was committed just
	// before the stream opened); the set follows it.
	msg := w.next()
	if msg.GetMachineLinked() != nil {
		msg = w.next()
	}
	if got := msg.GetSetReported(); got.GetId() != set.GetId() || got.GetReps() != 12 {
		t.Fatalf("member's stream got %v, want the set", got)
	}

	// The console retries (it never saw the answer): stored once.
	again, err := f.report(f.pressToken, setReportReq(press))
	if err != nil || !again.GetDuplicate() || again.GetSet().GetId() != set.GetId() {
		t.Fatalf("retry = %v, %v", again, err)
	}
	var stored int
	if err := f.b.db.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_sets WHERE machine_id = $1`, f.press).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("machine_sets holds %d (%v), want 1", stored, err)
	}

	// Implausible sets are refused, each naming its field; the proto's
	// own ranges are checked before.
	for _, c := range []struct {
		name  string
		set   *nxgv1.SetReport
		field string
	}{
		{"NoWork", &nxgv1.SetReport{ClientSetId: "w0", WeightKg: 40}, "set.reps"},
		{"Distance", &nxgv1.SetReport{ClientSetId: "d", Reps: 10, DistanceM: 100, DurationSeconds: 60}, "set.distance_m"},
		{"Calories", &nxgv1.SetReport{ClientSetId: "c", Reps: 10, DurationSeconds: 30, Calories: 500}, "set.calories"},
		{"RepsPerSecond", &nxgv1.SetReport{ClientSetId: "r", Reps: 200, DurationSeconds: 20}, "set.reps"},
		{"ProtoRange", &nxgv1.SetReport{ClientSetId: "p", Reps: 10, WeightKg: 5000}, "weight_kg"},
		{"NoClientSetID", &nxgv1.SetReport{Reps: 10}, "client_set_id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.report(f.pressToken, setReportReq(c.set))
			requireAuthCode(t, err, connect.CodeInvalidArgument, c.field)
		})
	}
	_, err = f.report(f.pressToken, &nxgv1.ReportActivityRequest{})
	requireAuthCode(t, err, connect.CodeInvalidArgument, "activity")

	// A fault while the member is linked ends the link; clearing it makes
	// the machine available again.
	res, err = f.report(f.pressToken, statusReport(true, "cable frayed"))
	if err != nil || res.GetMachine().GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE || res.GetMachine().GetId() != f.press {
		t.Fatalf("fault = %v, %v", res, err)
	}
	if ended := w.next().GetMachineUnlinked(); ended.GetId() != link.GetId() || ended.GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_MAINTENANCE {
		t.Fatalf("member's stream got %v, want the link ended for maintenance", ended)
	}
	var reason string
	if err := f.b.db.Pool.QueryRow(ctx, `SELECT end_reason FROM machine_links WHERE id = $1`, link.GetId()).Scan(&reason); err != nil || reason != "maintenance" {
		t.Fatalf("link end_reason = %q, %v", reason, err)
	}
	_, err = f.report(f.pressToken, setReportReq(&nxgv1.SetReport{ClientSetId: "after", Reps: 5}))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "no member is linked")
	res, err = f.report(f.pressToken, statusReport(false, ""))
	if err != nil || res.GetMachine().GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
		t.Fatalf("cleared = %v, %v", res, err)
	}
	if !strings.Contains(f.b.logs.String(), "cable frayed") {
		t.Error("the fault's detail was not logged for staff")
	}
}

func TestMachineConsoleRevoked(t *testing.T) {
	t.Parallel()
	f := setupConsoleFloor(t)
	a := f.attach(t, f.consoleClients()["GRPC"], f.pressToken)
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")
	res, err := f.b.deviceClient().RevokeDevice(context.Background(), authBearer(&nxgv1.RevokeDeviceRequest{DeviceId: f.pressDevice}, f.staffA.Token))
	if err != nil || res.Msg.GetDevice().GetRevokedAt() == nil {
		t.Fatalf("RevokeDevice = %v, %v", res, err)
	}
	requireAuthCode(t, a.ended(), connect.CodeUnauthenticated, "")
	_, err = f.report(f.pressToken, heartbeat())
	requireAuthCode(t, err, connect.CodeUnauthenticated, "")
	// The other console is unaffected.
	if _, err := f.report(f.rowerToken, heartbeat()); err != nil {
		t.Fatal(err)
	}
}

func TestMachineConsoleDraining(t *testing.T) {
	t.Parallel()
	drainCtx, drain := context.WithCancel(context.Background())
	t.Cleanup(drain)
	f := setupConsoleFloor(t, func(o *Options) { o.Floor.Draining = drainCtx })
	a := f.attach(t, f.consoleClients()["GRPC"], f.pressToken)
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")
	if _, err := f.report(f.pressToken, heartbeat()); err != nil {
		t.Fatal(err)
	}
	drain()
	requireAuthCode(t, a.ended(), connect.CodeUnavailable, "")
	// The report writer has stopped with the drain: reports go elsewhere.
	waitUntil(t, "reports to be refused", func() bool {
		_, err := f.report(f.pressToken, heartbeat())
		return connect.CodeOf(err) == connect.CodeUnavailable
	})
}

func TestMachineConsoleHubStops(t *testing.T) {
	t.Parallel()
	hubCtx, stopHub := context.WithCancel(context.Background())
	t.Cleanup(stopHub)
	f := setupConsoleFloor(t, func(o *Options) {
		hub := realtime.NewHub(realtime.Options{DatabaseURL: o.Pool.Config().ConnString(), Channels: floor.Channels, Logger: slog.New(slog.DiscardHandler)})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = hub.Run(hubCtx)
		}()
		t.Cleanup(func() { stopHub(); <-done })
		waitUntil(t, "the console test's hub to connect", hub.Ready)
		o.Floor.Hub = hub
	})
	a := f.attach(t, f.consoleClients()["GRPC"], f.pressToken)
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")
	// Without its hub the server cannot see changes: the console is told
	// to attach again (to another instance).
	stopHub()
	requireAuthCode(t, a.ended(), connect.CodeUnavailable, "")
}

// TestMachineConsoleSlowReader checks that an Attach stream whose console
// stops reading is cut off: its feed subscription is bounded like a
// watcher's, so the console is dropped once deliveries overflow it while
// its sends are blocked, and when it reads again it gets what was sent,
// then resource_exhausted telling it to attach again.
func TestMachineConsoleSlowReader(t *testing.T) {
	t.Parallel()
	f := setupConsoleFloor(t)
	srv, svc := machineTestServer(t, f.b, func(s *machineService) { s.feed.buffer = 2 })
	feed := svc.feed
	branch, press := uuid.MustParse(f.branchA), uuid.MustParse(f.press)
	a := f.attach(t, nxgv1connect.NewMachineServiceClient(slowReaderClient(t), srv.URL, connect.WithGRPC()), f.pressToken)
	a.expect(nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE, "")

	// The test's own subscription paces the changes of the console's
	// machine: each is delivered before the next is made, so each is a
	// message the console is sent. The console reads nothing meanwhile.
	pacer := feed.subscribe(branch)
	defer pacer.Close()
	for round := 0; watcherCount(feed, branch) > 1; round++ {
		if round == 2000 {
			t.Fatal("the console that stopped reading was not cut off after 2000 changes")
		}
		feedTestToggle(t, f.b.db, branch, round%2 == 0, press)
		nextMachineEvent(t, pacer)
		// Until its sends block, the console keeps up: give it the time
		// its reads of the state take, so that it is cut off for not
		// reading and not for being outpaced by this loop.
		for deadline := time.Now().Add(100 * time.Millisecond); mostQueued(feed, f.branchA) > 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}

	// What was sent is still read, numbered without gaps, then the end.
	for a.stream.Receive() {
		a.seq++
		if got := a.stream.Msg().GetSequence(); got != a.seq {
			t.Fatalf("sequence = %d, want %d", got, a.seq)
		}
	}
	if a.seq < 3 {
		t.Fatalf("only %d messages before the end", a.seq)
	}
	requireAuthCode(t, a.stream.Err(), connect.CodeResourceExhausted, "fell behind; attach again for the current state")
}

func TestSubscriptionEnd(t *testing.T) {
	t.Parallel()
	const again = "attach again for the current state"
	live := context.Background()
	err := subscriptionEnd(live, realtime.ErrSlowConsumer, again)
	if e, ok := apperr.As(err); !ok || e.Code != apperr.CodeResourceExhausted || !strings.Contains(e.Message, "fell behind") {
		t.Errorf("slow consumer = %v", err)
	}
	err = subscriptionEnd(live, realtime.ErrHubStopped, again)
	if e, ok := apperr.As(err); !ok || e.Code != apperr.CodeUnavailable {
		t.Errorf("hub stopped = %v", err)
	}
	gone, cancel := context.WithCancel(live)
	cancel()
	if err := subscriptionEnd(gone, realtime.ErrSlowConsumer, again); err != nil {
		t.Errorf("client gone = %v, want nil", err)
	}
}
