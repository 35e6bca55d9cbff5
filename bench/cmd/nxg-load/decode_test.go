package main

import (
	"testing"
	"time"

	"github.com/valyala/fastjson"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
)

func testChange() *nxgv1.WatchMachinesResponse {
	return &nxgv1.WatchMachinesResponse{
		Sequence: 123456,
		Event: &nxgv1.WatchMachinesResponse_Machine{Machine: &nxgv1.Machine{
			Id: "0b5c9a9e-1f7e-4c59-9d0e-8f1f3b3c2a11", BranchId: "9c6f8a0e-0d4b-4f0f-a1d1-2b7c4d9e8f00",
			Name: `Rower "2"`, Type: nxgv1.MachineType_MACHINE_TYPE_ROWER, Status: nxgv1.MachineStatus_MACHINE_STATUS_IN_USE,
			NfcTag: "NXG-7", UpdatedAt: timestamppb.New(time.Date(2026, 11, 26, 8, 0, 0, 123456789, time.UTC)), Version: 98765,
		}},
	}
}

func TestWatchCodecDecodesChangesLikeProtoUnmarshal(t *testing.T) {
	want := testChange()
	data, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got nxgv1.WatchMachinesResponse
	if err := (watchCodec{}).Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	m := got.GetMachine()
	if got.GetSequence() != want.GetSequence() || m.GetId() != want.GetMachine().GetId() ||
		m.GetVersion() != want.GetMachine().GetVersion() || !m.GetUpdatedAt().AsTime().Equal(want.GetMachine().GetUpdatedAt().AsTime()) {
		t.Fatalf("fast decode = %v, want the measured fields of %v", &got, want)
	}

	// A snapshot is not a change: it is decoded in full.
	snap := &nxgv1.WatchMachinesResponse{Sequence: 1, Event: &nxgv1.WatchMachinesResponse_Snapshot{
		Snapshot: &nxgv1.MachinesSnapshot{Machines: []*nxgv1.Machine{want.GetMachine()}},
	}}
	data, _ = proto.Marshal(snap)
	var gotSnap nxgv1.WatchMachinesResponse
	if err := (watchCodec{}).Unmarshal(data, &gotSnap); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&gotSnap, snap) {
		t.Fatalf("snapshot = %v, want %v", &gotSnap, snap)
	}
	// Garbage is an error, not a half-filled message.
	if err := (watchCodec{}).Unmarshal([]byte{0xff, 0xff}, &gotSnap); err == nil {
		t.Fatal("decoding garbage succeeded")
	}
	if _, err := (watchCodec{}).Marshal(snap); err != nil {
		t.Fatal(err)
	}
}

func TestScanWSChangeAgreesWithTheJSONParser(t *testing.T) {
	frame, err := protojson.Marshal(testChange())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := scanWSChange(frame)
	if !ok {
		t.Fatalf("scanner refused a frame the server writes: %s", frame)
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(frame)
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseWSChange(v, v.Get("machine"))
	if err != nil {
		t.Fatal(err)
	}
	if got.seq != want.seq || got.id != want.id || got.version != want.version || !got.updatedAt.Equal(want.updatedAt) {
		t.Fatalf("scan = %+v, parser = %+v", got, want)
	}

	for _, refused := range []string{
		`{"sequence":"1","snapshot":{"machines":[]}}`,
		`{"sequence":"1","machine":{"id":"a\"b","updatedAt":"2026-11-26T08:00:00Z","version":"3"}}`,
		`{"sequence":"x","machine":{"id":"a","updatedAt":"2026-11-26T08:00:00Z","version":"3"}}`,
		`{"sequence":"1","machine":{"id":"a","updatedAt":"yesterday","version":"3"}}`,
		`{"sequence":"1","machine":{"id":"a","updatedAt":"2026-11-26T08:00:00Z"}}`,
		`{"sequence":1,"machine":{"id":"a","updatedAt":"2026-11-26T08:00:00Z","version":"3"}}`,
	} {
		if c, ok := scanWSChange([]byte(refused)); ok {
			t.Errorf("scanner accepted %s as %+v; it must leave it to the parser", refused, c)
		}
	}
}
