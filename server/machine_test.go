package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/auth/token"
	"github.com/nxg-fitness/nxg/internal/floor"
)

// secondInstance starts another API server over the same database and
// identity as b, with its own realtime hub and handler: a second process
// of a horizontally scaled deployment.
func (b *apiTestBundle) secondInstance(t testing.TB) *httptest.Server {
	t.Helper()
	metrics, err := NewMetricsInterceptor(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(b.logs, nil))
	opts := Options{
		Pool:      b.db.Pool,
		Logger:    logger,
		Readiness: NewReadiness(time.Second, Check{Name: "postgres", Fn: b.db.Pool.Ping}),
		Metrics:   metrics,
		Identity:  b.identity.Identity,
		Floor:     newFloor(t, b.db),
	}
	handler, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Config = NewHTTPServer("", handler, false, logger)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// machineFloor is a test gym floor: two branches with machines, and
// callers of every role.
type machineFloor struct {
	b                  *apiTestBundle
	branchA, branchB   string
	rower, bike, press string // machines of branch A
	tread              string // a machine of branch B
	member, other      auditTestCaller
	staffA, staffB     auditTestCaller
	admin              auditTestCaller
}

func setupMachineFloor(t *testing.T, mutate ...func(*Options)) *machineFloor {
	t.Helper()
	b := setupAPI(t, mutate...)
	f := &machineFloor{b: b}
	f.branchA = b.insertBranch(t, "NXG Angel")
	f.branchB = b.insertBranch(t, "NXG Brixton")
	f.rower = f.insertMachine(t, f.branchA, "Rower 1", "rower", "TAG-ROWER-1")
	f.bike = f.insertMachine(t, f.branchA, "Bike 1", "bike", "TAG-BIKE-1")
	f.press = f.insertMachine(t, f.branchA, "Chest press", "chest_press", "TAG-PRESS-1")
	f.tread = f.insertMachine(t, f.branchB, "Treadmill 1", "treadmill", "TAG-TREAD-1")
	f.member = auditTestUser(t, b, token.RoleMember)
	f.other = auditTestUser(t, b, token.RoleMember)
	f.staffA = auditTestUser(t, b, token.RoleStaff)
	f.staffB = auditTestUser(t, b, token.RoleStaff)
	f.admin = auditTestUser(t, b, token.RoleAdmin)
	addStaffBranch(t, b, f.staffA.ID, f.branchA)
	addStaffBranch(t, b, f.staffB.ID, f.branchB)
	return f
}

func (f *machineFloor) insertMachine(t testing.TB, branch, name, kind, tag string) string {
	t.Helper()
	var id string
	if err := f.b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO machines (branch_id, name, machine_type, nfc_tag) VALUES ($1, $2, $3, $4) RETURNING id::text`,
		branch, name, kind, tag).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// checkIn opens a gym session of user at branch directly in the database.
func (f *machineFloor) checkIn(t testing.TB, user uuid.UUID, branch string) string {
	t.Helper()
	var id string
	if err := f.b.db.Pool.QueryRow(context.Background(),
		`INSERT INTO gym_sessions (user_id, branch_id, method, expires_at) VALUES ($1, $2, 'qr', now() + interval '4 hours') RETURNING id::text`,
		user, branch).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *machineFloor) client(opts ...connect.ClientOption) nxgv1connect.MachineServiceClient {
	return nxgv1connect.NewMachineServiceClient(http.DefaultClient, f.b.server.URL, opts...)
}

func (f *machineFloor) link(caller auditTestCaller, req *nxgv1.LinkMachineRequest) (*nxgv1.LinkMachineResponse, error) {
	res, err := f.client().LinkMachine(context.Background(), authBearer(req, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func (f *machineFloor) mustLink(t testing.TB, caller auditTestCaller, machine string) *nxgv1.LinkMachineResponse {
	t.Helper()
	res, err := f.link(caller, &nxgv1.LinkMachineRequest{Target: &nxgv1.LinkMachineRequest_MachineId{MachineId: machine}})
	if err != nil {
		t.Fatalf("LinkMachine %s: %v", machine, err)
	}
	return res
}

func (f *machineFloor) status(t testing.TB, machine string) nxgv1.MachineStatus {
	t.Helper()
	res, err := f.client().GetMachine(context.Background(), authBearer(&nxgv1.GetMachineRequest{MachineId: machine}, f.member.Token))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.GetMachine().GetStatus()
}

func (f *machineFloor) setStatus(caller auditTestCaller, machine string, status nxgv1.MachineStatus) (*nxgv1.Machine, error) {
	res, err := f.client().SetMachineStatus(context.Background(), authBearer(&nxgv1.SetMachineStatusRequest{MachineId: machine, Status: status}, caller.Token))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetMachine(), nil
}

func (f *machineFloor) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := f.b.db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func byID(id string) *nxgv1.LinkMachineRequest {
	return &nxgv1.LinkMachineRequest{Target: &nxgv1.LinkMachineRequest_MachineId{MachineId: id}}
}

func TestMachineLinks(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	b := f.b

	// Without a session, and with a session at another branch, linking
	// is refused.
	_, err := f.link(f.member, byID(f.rower))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "check in at this branch first")
	f.checkIn(t, f.member.ID, f.branchA)
	_, err = f.link(f.member, byID(f.tread))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "check in at this branch first")

	// Only members link.
	_, err = f.link(f.staffA, byID(f.rower))
	requireAuthCode(t, err, connect.CodePermissionDenied, "only members")

	// Unknown machines, by id and by tag.
	_, err = f.link(f.member, byID(uuid.NewString()))
	requireAuthCode(t, err, connect.CodeNotFound, "machine")
	_, err = f.link(f.member, &nxgv1.LinkMachineRequest{Target: &nxgv1.LinkMachineRequest_MachineTag{MachineTag: "NO-SUCH-TAG"}})
	requireAuthCode(t, err, connect.CodeNotFound, "NO-SUCH-TAG")
	_, err = f.link(f.member, &nxgv1.LinkMachineRequest{})
	requireAuthCode(t, err, connect.CodeInvalidArgument, "")

	// A link: the machine is in use and the idle unlink is scheduled.
	first := f.mustLink(t, f.member, f.rower)
	link := first.GetLink()
	if link.GetMachineId() != f.rower || link.GetBranchId() != f.branchA || link.GetMachineName() != "Rower 1" ||
		link.GetEndedAt() != nil || first.GetReplaced() != nil {
		t.Fatalf("link = %v", first)
	}
	if got := f.status(t, f.rower); got != nxgv1.MachineStatus_MACHINE_STATUS_IN_USE {
		t.Fatalf("rower status = %v", got)
	}
	jobArgs := jobsOfKind(t, b.db, "idle_unlink")
	if len(jobArgs) != 1 || !strings.Contains(string(jobArgs[0]), link.GetId()) {
		t.Fatalf("idle_unlink jobs = %s", jobArgs)
	}
	var dueIn time.Duration
	var dueSeconds float64
	if err := b.db.Pool.QueryRow(context.Background(),
		`SELECT extract(epoch FROM scheduled_at - now()) FROM river_job WHERE kind = 'idle_unlink'`).Scan(&dueSeconds); err != nil {
		t.Fatal(err)
	}
	dueIn = time.Duration(dueSeconds * float64(time.Second))
	if dueIn < 9*time.Minute || dueIn > 11*time.Minute {
		t.Fatalf("idle unlink due in %v, want about the default 10 minutes", dueIn)
	}

	// Linking it again is a retry: the same open link.
	again := f.mustLink(t, f.member, f.rower)
	if again.GetLink().GetId() != link.GetId() || again.GetReplaced() != nil {
		t.Fatalf("relink = %v, want link %s", again, link.GetId())
	}

	// Another member cannot take it.
	f.checkIn(t, f.other.ID, f.branchA)
	_, err = f.link(f.other, byID(f.rower))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "in use")

	// Maintenance and offline machines are refused, naming the status.
	f.exec(t, `UPDATE machines SET maintenance = true WHERE id = $1`, f.press)
	_, err = f.link(f.other, byID(f.press))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "is in maintenance")
	f.exec(t, `UPDATE machines SET maintenance = false, online = false WHERE id = $1`, f.press)
	_, err = f.link(f.other, byID(f.press))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "is offline")

	// Linking another machine, by its tag, replaces the first link.
	second, err := f.link(f.member, &nxgv1.LinkMachineRequest{Target: &nxgv1.LinkMachineRequest_MachineTag{MachineTag: "TAG-BIKE-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if second.GetLink().GetMachineId() != f.bike || second.GetReplaced().GetId() != link.GetId() ||
		second.GetReplaced().GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_REPLACED || second.GetReplaced().GetEndedAt() == nil {
		t.Fatalf("second link = %v", second)
	}
	if got := f.status(t, f.rower); got != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
		t.Fatalf("rower after replace = %v", got)
	}
	if got := f.status(t, f.bike); got != nxgv1.MachineStatus_MACHINE_STATUS_IN_USE {
		t.Fatalf("bike after link = %v", got)
	}
	// The freed machine can be taken by the other member now.
	f.mustLink(t, f.other, f.rower)

	// Unlinking ends the link, once.
	res, err := f.client().UnlinkMachine(context.Background(), authBearer(&nxgv1.UnlinkMachineRequest{}, f.member.Token))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetLink(); got.GetId() != second.GetLink().GetId() || got.GetEndReason() != nxgv1.LinkEndReason_LINK_END_REASON_MEMBER || got.GetMachineName() != "Bike 1" {
		t.Fatalf("unlink = %v", got)
	}
	res, err = f.client().UnlinkMachine(context.Background(), authBearer(&nxgv1.UnlinkMachineRequest{}, f.member.Token))
	if err != nil || res.Msg.GetLink() != nil {
		t.Fatalf("second unlink = %v, %v; want an empty response", res, err)
	}
	if got := f.status(t, f.bike); got != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
		t.Fatalf("bike after unlink = %v", got)
	}

	// An expired session no longer lets the member link.
	f.exec(t, `UPDATE gym_sessions SET started_at = now() - interval '5 hours', expires_at = now() - interval '1 minute' WHERE user_id = $1`, f.member.ID)
	_, err = f.link(f.member, byID(f.bike))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "check in at this branch first")
}

func TestMachineConcurrentLinks(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	// Many members race for one machine: exactly one wins, every other
	// gets failed_precondition, never an internal error.
	const racers = 6
	callers := make([]auditTestCaller, racers)
	for i := range callers {
		callers[i] = auditTestUser(t, f.b, token.RoleMember)
		f.checkIn(t, callers[i].ID, f.branchA)
	}
	errs := make(chan error, racers)
	for _, c := range callers {
		go func() {
			_, err := f.link(c, byID(f.rower))
			errs <- err
		}()
	}
	wins := 0
	for range racers {
		err := <-errs
		if err == nil {
			wins++
			continue
		}
		requireAuthCode(t, err, connect.CodeFailedPrecondition, "in use")
	}
	if wins != 1 {
		t.Fatalf("%d members linked the same machine, want 1", wins)
	}
}

func TestMachineStatusByStaff(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	f.checkIn(t, f.member.ID, f.branchA)
	link := f.mustLink(t, f.member, f.rower).GetLink()

	_, err := f.setStatus(f.member, f.rower, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
	requireAuthCode(t, err, connect.CodePermissionDenied, "staff")
	_, err = f.setStatus(f.staffB, f.rower, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
	requireAuthCode(t, err, connect.CodePermissionDenied, "branches they work at")
	_, err = f.setStatus(f.staffA, uuid.NewString(), nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
	requireAuthCode(t, err, connect.CodeNotFound, "machine")
	_, err = f.setStatus(f.staffA, f.rower, nxgv1.MachineStatus_MACHINE_STATUS_IN_USE)
	requireAuthCode(t, err, connect.CodeInvalidArgument, "status")

	// Maintenance ends the member's link.
	m, err := f.setStatus(f.staffA, f.rower, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE)
	if err != nil {
		t.Fatal(err)
	}
	if m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE {
		t.Fatalf("machine = %v", m)
	}
	var reason string
	if err := f.b.db.Pool.QueryRow(context.Background(), `SELECT coalesce(end_reason, '') FROM machine_links WHERE id = $1`, link.GetId()).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	if reason != floor.LinkEndMaintenance {
		t.Fatalf("link end reason = %q, want maintenance", reason)
	}
	_, err = f.link(f.member, byID(f.rower))
	requireAuthCode(t, err, connect.CodeFailedPrecondition, "maintenance")

	// An admin of no branch returns it to service.
	m, err = f.setStatus(f.admin, f.rower, nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE)
	if err != nil || m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE {
		t.Fatalf("admin set available = %v, %v", m, err)
	}

	rows, err := f.b.db.Pool.Query(context.Background(),
		`SELECT actor_id::text, target_type, target_id, details::text FROM audit_events WHERE action = $1 ORDER BY seq`, actionMachineStatusChanged)
	if err != nil {
		t.Fatal(err)
	}
	var audits []string
	for rows.Next() {
		var actor, typ, target, details string
		if err := rows.Scan(&actor, &typ, &target, &details); err != nil {
			t.Fatal(err)
		}
		audits = append(audits, fmt.Sprintf("%s %s %s %s", actor, typ, target, details))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(audits) != 2 ||
		!strings.HasPrefix(audits[0], f.staffA.ID.String()+" machine "+f.rower) || !strings.Contains(audits[0], `"to":"maintenance"`) ||
		!strings.HasPrefix(audits[1], f.admin.ID.String()+" machine "+f.rower) || !strings.Contains(audits[1], `"to":"available"`) {
		t.Fatalf("audit rows = %q", audits)
	}
}

func TestListMachines(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	for i := range 4 {
		f.insertMachine(t, f.branchA, fmt.Sprintf("Cable %d", i), "cable", fmt.Sprintf("TAG-CABLE-%d", i))
	}
	f.checkIn(t, f.member.ID, f.branchA)
	f.mustLink(t, f.member, f.rower)

	// Every role may list; pages follow name order and never say who
	// uses a machine.
	want := []string{"Bike 1", "Cable 0", "Cable 1", "Cable 2", "Cable 3", "Chest press", "Rower 1"}
	for _, caller := range []auditTestCaller{f.other, f.staffB, f.admin} {
		var names []string
		pageToken := ""
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("pagination does not end")
			}
			req := authBearer(&nxgv1.ListMachinesRequest{BranchId: f.branchA, PageSize: 3, PageToken: pageToken}, caller.Token)
			res, err := f.client(connect.WithProtoJSON()).ListMachines(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := protojson.Marshal(res.Msg)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(raw), f.member.ID.String()) {
				t.Fatalf("ListMachines exposes the member using a machine: %s", raw)
			}
			for _, m := range res.Msg.GetMachines() {
				names = append(names, m.GetName())
				if m.GetName() == "Rower 1" && m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_IN_USE {
					t.Fatalf("rower = %v", m)
				}
			}
			pageToken = res.Msg.GetNextPageToken()
			if pageToken == "" {
				break
			}
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Fatalf("names = %q, want %q", names, want)
		}
	}

	// The default page holds the whole floor.
	res, err := f.client().ListMachines(context.Background(), authBearer(&nxgv1.ListMachinesRequest{BranchId: f.branchA}, f.member.Token))
	if err != nil || len(res.Msg.GetMachines()) != len(want) || res.Msg.GetNextPageToken() != "" {
		t.Fatalf("default page = %v, %v", res, err)
	}
	_, err = f.client().ListMachines(context.Background(), authBearer(&nxgv1.ListMachinesRequest{BranchId: uuid.NewString()}, f.member.Token))
	requireAuthCode(t, err, connect.CodeNotFound, "branch")
	_, err = f.client().ListMachines(context.Background(), authBearer(&nxgv1.ListMachinesRequest{BranchId: f.branchA, PageToken: "garbage"}, f.member.Token))
	requireAuthCode(t, err, connect.CodeInvalidArgument, "page_token")
	_, err = f.client().ListMachines(context.Background(), connect.NewRequest(&nxgv1.ListMachinesRequest{BranchId: f.branchA}))
	requireAuthCode(t, err, connect.CodeUnauthenticated, "")
	_, err = f.client().GetMachine(context.Background(), authBearer(&nxgv1.GetMachineRequest{MachineId: uuid.NewString()}, f.member.Token))
	requireAuthCode(t, err, connect.CodeNotFound, "machine")
}

// machineWatch is an open WatchMachines stream as a test reads it.
type machineWatch struct {
	t      testing.TB
	stream *connect.ServerStreamForClient[nxgv1.WatchMachinesResponse]
	seq    uint64
	cancel context.CancelFunc
}

func watchMachines(t testing.TB, client nxgv1connect.MachineServiceClient, caller auditTestCaller, branch string) *machineWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.WatchMachines(ctx, authBearer(&nxgv1.WatchMachinesRequest{BranchId: branch}, caller.Token))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &machineWatch{t: t, stream: stream, cancel: cancel}
	t.Cleanup(func() { cancel(); _ = stream.Close() })
	return w
}

// next reads the next message within wait and checks its sequence follows.
func (w *machineWatch) next(wait time.Duration) *nxgv1.WatchMachinesResponse {
	w.t.Helper()
	got := make(chan bool, 1)
	go func() { got <- w.stream.Receive() }()
	select {
	case ok := <-got:
		if !ok {
			w.t.Fatalf("stream ended: %v", w.stream.Err())
		}
	case <-time.After(wait):
		w.cancel()
		<-got
		w.t.Fatalf("no message within %v", wait)
	}
	msg := w.stream.Msg()
	w.seq++
	if msg.GetSequence() != w.seq {
		w.t.Fatalf("sequence = %d, want %d", msg.GetSequence(), w.seq)
	}
	return msg
}

// nextMachine reads messages until the machine reaches status.
func (w *machineWatch) nextMachine(id string, status nxgv1.MachineStatus) *nxgv1.Machine {
	w.t.Helper()
	for {
		msg := w.next(10 * time.Second)
		if m := msg.GetMachine(); m.GetId() == id && m.GetStatus() == status {
			return m
		}
	}
}

func TestWatchMachines(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	f.checkIn(t, f.member.ID, f.branchA)

	protocols := map[string]nxgv1connect.MachineServiceClient{
		"ConnectJSON":  f.client(connect.WithProtoJSON()),
		"ConnectProto": f.client(),
		"GRPC":         nxgv1connect.NewMachineServiceClient(f.b.h2c, f.b.server.URL, connect.WithGRPC()),
		"GRPCWeb":      f.client(connect.WithGRPCWeb()),
	}
	watches := map[string]*machineWatch{}
	for name, client := range protocols {
		w := watchMachines(t, client, f.other, f.branchA)
		snap := w.next(10 * time.Second).GetSnapshot()
		if len(snap.GetMachines()) != 3 || snap.GetMachines()[0].GetName() != "Bike 1" {
			t.Fatalf("%s snapshot = %v", name, snap)
		}
		watches[name] = w
	}

	// Each change reaches every protocol, in order, without gaps. Each is
	// delivered before the next is made: notifications that queue up
	// while the feed loads are merged into one load, whose changes of
	// different machines come in the order the database returns them,
	// not the order they were committed.
	f.mustLink(t, f.member, f.rower)
	for name, w := range watches {
		m := w.next(10 * time.Second).GetMachine()
		if m.GetId() != f.rower || m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_IN_USE {
			t.Fatalf("%s first change = %v", name, m)
		}
	}
	if _, err := f.setStatus(f.staffA, f.bike, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE); err != nil {
		t.Fatal(err)
	}
	for name, w := range watches {
		m := w.next(10 * time.Second).GetMachine()
		if m.GetId() != f.bike || m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE {
			t.Fatalf("%s second change = %v", name, m)
		}
	}

	// Changes of another branch are not sent.
	if _, err := f.setStatus(f.staffB, f.tread, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE); err != nil {
		t.Fatal(err)
	}
	if _, err := f.setStatus(f.staffA, f.press, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE); err != nil {
		t.Fatal(err)
	}
	for name, w := range watches {
		if m := w.next(10 * time.Second).GetMachine(); m.GetId() != f.press {
			t.Fatalf("%s got %v, want the press (not branch B's treadmill)", name, m)
		}
	}

	// Unknown branches and anonymous callers are refused.
	bad := watchMachines(t, f.client(), f.other, uuid.NewString())
	if bad.stream.Receive() {
		t.Fatal("stream of an unknown branch sent a message")
	}
	requireAuthCode(t, bad.stream.Err(), connect.CodeNotFound, "branch")
	stream, err := f.client().WatchMachines(context.Background(), connect.NewRequest(&nxgv1.WatchMachinesRequest{BranchId: f.branchA}))
	if err == nil {
		if stream.Receive() {
			t.Fatal("anonymous stream sent a message")
		}
		err = stream.Err()
	}
	requireAuthCode(t, err, connect.CodeUnauthenticated, "")
}

func TestWatchMachinesAcrossInstances(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	second := f.b.secondInstance(t)
	w := watchMachines(t, nxgv1connect.NewMachineServiceClient(http.DefaultClient, second.URL), f.other, f.branchA)
	w.next(10 * time.Second) // snapshot

	// A change committed through the first instance reaches a watcher of
	// the second within one second of its commit (NFR5, NFR8).
	if _, err := f.setStatus(f.staffA, f.press, nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	m := w.next(time.Second).GetMachine()
	if m.GetId() != f.press || m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE {
		t.Fatalf("change = %v", m)
	}
	t.Logf("delivered across instances %v after commit", time.Since(committed))
}

// machineTestServer serves b's MachineService alone, as NewHandler mounts
// it but with its own hub, guard and feed, after adjust has tuned the
// service (a smaller feed buffer). It speaks HTTP/1.1 and cleartext
// HTTP/2, as the API server does. The service is returned too, so a test
// can look at its feed.
func machineTestServer(t *testing.T, b *apiTestBundle, adjust func(*machineService)) (*httptest.Server, *machineService) {
	t.Helper()
	metrics, err := NewMetricsInterceptor(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(b.logs, nil))
	opts := Options{Pool: b.db.Pool, Logger: logger, Metrics: metrics, Identity: b.identity.Identity, Floor: newFloor(t, b.db)}
	guard := newStreamGuard(opts.Floor.Hub, opts.Floor.Settings, opts.Floor.Draining, logger).checkSessions(opts.Identity.Sessions)
	machines := NewMachineService(opts.Pool, opts.Identity, opts.Floor, guard, logger)
	adjust(machines)
	path, h := nxgv1connect.NewMachineServiceHandler(machines, slices.Concat(handlerOptions(opts), machines.handlerOptions())...)
	mux := http.NewServeMux()
	mux.Handle(path, withStreamBatching(h))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config = NewHTTPServer("", mux, false, logger)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, machines
}

// slowReaderClient is an HTTP client speaking cleartext HTTP/2 whose
// receive window is small: once the test stops reading a stream, the
// server's sends on it block after a few kilobytes.
func slowReaderClient(t *testing.T) *http.Client {
	t.Helper()
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{
		Protocols: protocols,
		HTTP2:     &http.HTTP2Config{MaxReceiveBufferPerStream: 16 << 10, MaxReceiveBufferPerConnection: 64 << 10},
	}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// mostQueued returns the most deliveries any watcher of branch has
// waiting in its feed buffer.
func mostQueued(feed *machineFeed, branch string) int {
	return mostOfWatchers(feed, branch, func(_ *branchFanOut, s *machineSubscription) int { return len(s.ch) })
}

// mostBehind returns the most changes any watcher of branch has not been
// handed yet: those queued for it and those waiting in the feed's log.
func mostBehind(feed *machineFeed, branch string) int {
	return mostOfWatchers(feed, branch, func(b *branchFanOut, s *machineSubscription) int { return int(b.end() - s.handed) })
}

// mostOfWatchers returns the largest measure of the watchers of branch.
func mostOfWatchers(feed *machineFeed, branch string, measure func(*branchFanOut, *machineSubscription) int) int {
	feed.mu.Lock()
	defer feed.mu.Unlock()
	n := 0
	if b := feed.branches[uuid.MustParse(branch)]; b != nil {
		for _, s := range b.subs {
			n = max(n, measure(b, s))
		}
	}
	return n
}

// bumpAllMachines changes every machine of branch in one statement with
// one notification, as a bulk staff action does.
func (f *machineFloor) bumpAllMachines(t testing.TB, branch string, maintenance bool) {
	t.Helper()
	f.exec(t, `WITH changed AS (
			UPDATE machines SET maintenance = $2 WHERE branch_id = $1 RETURNING id, version)
		SELECT pg_notify($3, json_build_object('b', $1::uuid, 'm', json_agg(json_build_object('id', id, 'v', version)))::text)
		FROM changed`, branch, maintenance, floor.ChannelMachines)
}

func TestWatchMachinesSlowConsumer(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	// A hundred machines: a change of them all is one delivery, but many
	// such changes overfill a watcher's buffer when it does not read. The
	// buffer is made small so that takes a few changes, not hundreds.
	const extra = 100
	for i := range extra {
		f.insertMachine(t, f.branchA, fmt.Sprintf("Rack %03d", i), "rack", fmt.Sprintf("TAG-RACK-%03d", i))
	}
	srv, _ := machineTestServer(t, f.b, func(s *machineService) { s.feed.buffer = 4 })
	client := nxgv1connect.NewMachineServiceClient(slowReaderClient(t), srv.URL, connect.WithGRPC())
	w := watchMachines(t, client, f.other, f.branchA)
	w.next(10 * time.Second) // snapshot
	// Should the watcher never be cut off, its stream is, so the test
	// fails rather than hangs.
	defer time.AfterFunc(time.Minute, w.cancel).Stop()
	// A watcher that keeps reading paces the changes: each round is
	// delivered as its own delivery before the next is made, so the slow
	// watcher is sent every round rather than a few merged ones.
	fast := watchMachines(t, nxgv1connect.NewMachineServiceClient(http.DefaultClient, srv.URL), f.other, f.branchA)
	fast.next(10 * time.Second)

	// Every machine changes many times while the slow watcher reads
	// nothing: far more changes than its buffer and the transport hold.
	const rounds = 20
	for i := range rounds {
		f.bumpAllMachines(t, f.branchA, i%2 == 0)
		for range 3 + extra {
			fast.next(10 * time.Second)
		}
	}

	// Reading now drains what was sent, then the stream ends with
	// resource_exhausted.
	for w.stream.Receive() {
	}
	requireAuthCode(t, w.stream.Err(), connect.CodeResourceExhausted, "fell behind; reconnect for a fresh snapshot")

	// A reconnect gets a fresh snapshot showing the final state.
	again := watchMachines(t, client, f.other, f.branchA)
	snap := again.next(10 * time.Second).GetSnapshot()
	if len(snap.GetMachines()) != 3+extra {
		t.Fatalf("snapshot has %d machines", len(snap.GetMachines()))
	}
	for _, m := range snap.GetMachines() {
		if m.GetStatus() != nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE || m.GetVersion() != 1+rounds {
			t.Fatalf("machine after reconnect = %v", m)
		}
	}
}

// TestWatchMachinesFallenBehind checks a watcher that has fallen behind
// by several rounds of changes, each bigger than a batch (a delivery
// queued for it, the rest waiting in the feed's log for it to take that
// one): when it reads again it gets every change exactly once, in order,
// numbered without gaps, and is not cut off.
func TestWatchMachinesFallenBehind(t *testing.T) {
	t.Parallel()
	f := setupMachineFloor(t)
	// More machines than a batch sends, so a delivery of them all is
	// split over batches.
	const extra = 2 * streamBatchLimit
	for i := range extra {
		f.insertMachine(t, f.branchA, fmt.Sprintf("Bench %03d", i), "rack", fmt.Sprintf("TAG-BENCH-%03d", i))
	}
	const machines = 3 + extra
	srv, svc := machineTestServer(t, f.b, func(*machineService) {})
	w := watchMachines(t, nxgv1connect.NewMachineServiceClient(slowReaderClient(t), srv.URL), f.other, f.branchA)
	snap := w.next(10 * time.Second).GetSnapshot()
	if len(snap.GetMachines()) != machines {
		t.Fatalf("snapshot has %d machines", len(snap.GetMachines()))
	}
	fast := watchMachines(t, nxgv1connect.NewMachineServiceClient(http.DefaultClient, srv.URL), f.other, f.branchA)
	fast.next(10 * time.Second)

	// Rounds of changes to every machine, each delivered to the fast
	// watcher before the next, until the slow one, which reads nothing
	// meanwhile, is three rounds behind beyond what it has sent.
	rounds := 0
	for mostBehind(svc.feed, f.branchA) < 3*machines {
		if rounds == 50 {
			t.Fatalf("after %d rounds the watcher that stopped reading is at most %d changes behind", rounds, mostBehind(svc.feed, f.branchA))
		}
		f.bumpAllMachines(t, f.branchA, rounds%2 == 0)
		for range machines {
			fast.next(10 * time.Second)
		}
		rounds++
	}

	// Every change, once, in order: next checks that sequences follow
	// each other; versions never go back, as each round moves every
	// machine one version on.
	seen := map[string]int64{}
	for _, m := range snap.GetMachines() {
		seen[m.GetId()] = m.GetVersion()
	}
	var last int64
	for range rounds * machines {
		m := w.next(10 * time.Second).GetMachine()
		if m == nil {
			t.Fatal("a message other than a machine change")
		}
		if m.GetVersion() != seen[m.GetId()]+1 {
			t.Fatalf("machine %s at version %d after %d", m.GetId(), m.GetVersion(), seen[m.GetId()])
		}
		if m.GetVersion() < last {
			t.Fatalf("machine %s at version %d after a change at version %d", m.GetId(), m.GetVersion(), last)
		}
		seen[m.GetId()], last = m.GetVersion(), m.GetVersion()
	}
	for id, v := range seen {
		if v != int64(1+rounds) {
			t.Fatalf("machine %s last seen at version %d, want %d", id, v, 1+rounds)
		}
	}
	if len(seen) != machines {
		t.Fatalf("changes of %d machines, want %d", len(seen), machines)
	}
	// Nothing more: the next change is the next message. The last round
	// put every machine in maintenance when it was an odd one.
	next := nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE
	if rounds%2 == 1 {
		next = nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE
	}
	if _, err := f.setStatus(f.staffA, f.press, next); err != nil {
		t.Fatal(err)
	}
	if m := w.next(10 * time.Second).GetMachine(); m.GetId() != f.press || m.GetVersion() != int64(2+rounds) {
		t.Fatalf("after the backlog, got %v", m)
	}
}

func TestWatchMachinesEndsWhenDraining(t *testing.T) {
	t.Parallel()
	drain, stop := context.WithCancel(context.Background())
	defer stop()
	f := setupMachineFloor(t, func(o *Options) { o.Floor.Draining = drain })
	w := watchMachines(t, f.client(), f.other, f.branchA)
	w.next(10 * time.Second)

	stop()
	ended := make(chan bool, 1)
	go func() { ended <- w.stream.Receive() }()
	select {
	case more := <-ended:
		if more {
			t.Fatalf("stream sent %v after the drain", w.stream.Msg())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10s after the server began draining")
	}
	if err := w.stream.Err(); err != nil && !errors.Is(err, io.EOF) && connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("stream ended with %v, want a clean end or unavailable", err)
	}
}
