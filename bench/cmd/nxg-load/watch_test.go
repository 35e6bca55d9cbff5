package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
)

const (
	machineA = "0190c3d2-0000-7000-8000-00000000000a"
	machineB = "0190c3d2-0000-7000-8000-00000000000b"
)

func testRun(t *testing.T) (*watchRun, *subscriber) {
	t.Helper()
	env := &environment{
		Branch:   &nxgv1.Branch{Id: "0190c3d2-0000-7000-8000-0000000000b1", Name: "Test"},
		Machines: []*nxgv1.Machine{{Id: machineA}, {Id: machineB}},
	}
	r := newWatchRun(Config{Addr: "http://127.0.0.1:8080", Subscribers: 1, Mix: MixWS, StreamsPerConn: 200}, env)
	return r, r.subs[0]
}

func frame(t *testing.T, msg *nxgv1.WatchMachinesResponse, protoNames bool) []byte {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: protoNames}.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func snapshotMsg(seq uint64, verA, verB int64) *nxgv1.WatchMachinesResponse {
	return &nxgv1.WatchMachinesResponse{Sequence: seq, Event: &nxgv1.WatchMachinesResponse_Snapshot{
		Snapshot: &nxgv1.MachinesSnapshot{Machines: []*nxgv1.Machine{
			{Id: machineA, Version: verA, Status: nxgv1.MachineStatus_MACHINE_STATUS_AVAILABLE},
			{Id: machineB, Version: verB},
		}},
	}}
}

func changeMsg(seq uint64, id string, version int64, at time.Time) *nxgv1.WatchMachinesResponse {
	return &nxgv1.WatchMachinesResponse{Sequence: seq, Event: &nxgv1.WatchMachinesResponse_Machine{
		Machine: &nxgv1.Machine{Id: id, Version: version, UpdatedAt: timestamppb.New(at),
			Status: nxgv1.MachineStatus_MACHINE_STATUS_MAINTENANCE, Name: "Treadmill 1"},
	}}
}

func TestWSFramesAreTracked(t *testing.T) {
	for _, protoNames := range []bool{false, true} {
		r, s := testRun(t)
		var p fastjson.Parser
		now := time.Now()
		// Each frame arrived at now and was read 10 ms later.
		got := received{at: now.Add(10 * time.Millisecond), arrived: now}
		feed := func(msg *nxgv1.WatchMachinesResponse, first bool) {
			t.Helper()
			if err := r.onWSFrame(s, &p, frame(t, msg, protoNames), first, got); err != nil {
				t.Fatalf("proto names %v: %v", protoNames, err)
			}
		}
		feed(snapshotMsg(1, 10, 20), true)
		if !s.ready || s.tracks[0].base != 10 || s.tracks[1].base != 20 || r.readyCount() != 1 {
			t.Fatalf("after the snapshot: ready %v bases %d %d", s.ready, s.tracks[0].base, s.tracks[1].base)
		}
		select {
		case <-r.readyCh:
		default:
			t.Fatal("readyCh not closed once every subscriber had its snapshot")
		}
		feed(changeMsg(2, machineA, 11, now.Add(-time.Second)), false) // opening phase: tracked, not timed
		r.phase.Store(phaseMeasuring)
		feed(changeMsg(3, machineA, 12, now.Add(-40*time.Millisecond)), false)
		feed(changeMsg(5, machineB, 21, now.Add(-60*time.Millisecond)), false) // sequence 4 skipped
		feed(changeMsg(6, machineB, 21, now), false)                           // duplicate
		feed(changeMsg(7, machineA, 9, now), false)                            // older than the snapshot
		feed(changeMsg(8, "0190c3d2-0000-7000-8000-0000000000ff", 1, now), false)
		feed(snapshotMsg(9, 14, 21), false) // a resync in the stream

		if got := s.delivered.Load(); got != 2 {
			t.Errorf("delivered %d, want 2 (the opening-phase change is not counted)", got)
		}
		if s.seqGaps != 1 || s.dups != 1 || s.stale != 1 || s.unknown != 1 || s.resyncs != 1 {
			t.Errorf("gaps %d dups %d stale %d unknown %d resyncs %d, want 1 each", s.seqGaps, s.dups, s.stale, s.unknown, s.resyncs)
		}
		if s.tracks[0].covered != 14 || !s.tracks[0].has(11) || !s.tracks[0].has(12) || s.tracks[0].has(13) {
			t.Errorf("machine A track %+v", s.tracks[0])
		}
		lat := r.latency.Summary()
		if lat.Count != 2 || lat.MaxMS != 60 {
			t.Errorf("latency %+v, want two samples, max 60 ms (to the arrival)", lat)
		}
		if read := r.latRead.Summary(); read.Count != 2 || read.MaxMS != 70 {
			t.Errorf("latency to the read %+v, want two samples, max 70 ms", read)
		}
		if r.latWS.Summary().Count != 2 || r.latConn.Summary().Count != 0 {
			t.Error("WebSocket latencies must be recorded as the WebSockets' share")
		}
	}
}

func TestWSFrameErrors(t *testing.T) {
	r, s := testRun(t)
	var p fastjson.Parser
	now := time.Now()
	got := received{at: now}
	if err := r.onWSFrame(s, &p, []byte("not json"), true, got); err == nil {
		t.Error("a frame that is not JSON was accepted")
	}
	if err := r.onWSFrame(s, &p, frame(t, changeMsg(1, machineA, 2, now), false), true, got); err == nil ||
		!strings.Contains(err.Error(), "snapshot") {
		t.Errorf("a stream starting with a change: %v, want an error about the snapshot", err)
	}
	errFrame := []byte(`{"error":{"code":"permission_denied","message":"no"}}`)
	if err := r.onWSFrame(s, &p, errFrame, true, got); err == nil || !strings.Contains(err.Error(), "permission_denied") {
		t.Errorf("an error frame first: %v, want it quoted", err)
	}
	if s.other != 1 || r.firstOther == "" {
		t.Errorf("other frames %d first %q, want it noted", s.other, r.firstOther)
	}
	if err := r.onWSFrame(s, &p, []byte(`{"snapshot":{"machines":"nope"}}`), true, got); err == nil {
		t.Error("a snapshot that is not a WatchMachinesResponse was accepted")
	}
	for _, bad := range []string{
		`{"sequence":"2","machine":{"version":"3","updatedAt":"2026-01-01T00:00:00Z"}}`,
		`{"sequence":"2","machine":{"id":"x","version":true,"updatedAt":"2026-01-01T00:00:00Z"}}`,
		`{"sequence":"2","machine":{"id":"x","version":"3","updatedAt":"yesterday"}}`,
		`{"sequence":"-2","machine":{"id":"x","version":"3","updatedAt":"2026-01-01T00:00:00Z"}}`,
	} {
		if err := r.onWSFrame(s, &p, []byte(bad), false, got); err == nil {
			t.Errorf("change frame %s was accepted", bad)
		}
	}
	// protojson leaves out zero fields and may write 64-bit numbers as numbers.
	v := fastjson.MustParse(`{"machine":{"id":"x","version":7,"updated_at":"2026-01-01T00:00:00.5Z"}}`)
	c, err := parseWSChange(v, v.Get("machine"))
	if err != nil || c.seq != 0 || c.version != 7 || c.updatedAt.Nanosecond() != 5e8 {
		t.Errorf("parseWSChange = %+v, %v", c, err)
	}
}

func TestSubscribeFrameAndURL(t *testing.T) {
	var got map[string]string
	if err := json.Unmarshal(subscribeFrame(`id"with"quotes`), &got); err != nil {
		t.Fatal(err)
	}
	if got["subscribe"] != "machines" || got["branch_id"] != `id"with"quotes` {
		t.Errorf("subscribe frame %v", got)
	}
	r, _ := testRun(t)
	if u := r.wsURL(); u != "ws://127.0.0.1:8080/ws" {
		t.Errorf("wsURL = %q", u)
	}
}

func TestNewWatchRunSpreadsConnectStreams(t *testing.T) {
	env := &environment{Branch: &nxgv1.Branch{Id: "b"}, Machines: []*nxgv1.Machine{{Id: machineA}}}
	r := newWatchRun(Config{Addr: "http://x", Subscribers: 1001, Mix: MixBoth, StreamsPerConn: 200}, env)
	// 501 Connect streams (even indexes) need three connections of at most 200.
	if len(r.h2c) != 3 {
		t.Errorf("%d HTTP/2 clients, want 3", len(r.h2c))
	}
	maxIndex := 0
	for _, s := range r.subs {
		if s.wire == MixConnect {
			maxIndex = max(maxIndex, s.index)
		}
	}
	if maxIndex != 500 || maxIndex/r.cfg.StreamsPerConn >= len(r.streams) {
		t.Errorf("highest Connect index %d does not fit the %d clients", maxIndex, len(r.streams))
	}
}

func TestErrKind(t *testing.T) {
	if got := errKind(MixWS, errWithAddr{}); got != "ws: connection reset by peer" {
		t.Errorf("errKind = %q", got)
	}
}

type errWithAddr struct{}

func (errWithAddr) Error() string {
	return "read tcp 127.0.0.1:5555->127.0.0.1:8080: connection reset by peer"
}
