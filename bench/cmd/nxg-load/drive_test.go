package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func TestPaceFiresAtTheRateWithEvenlySpacedDueTimes(t *testing.T) {
	var dues []time.Time
	start := time.Now()
	n := pace(context.Background(), 1000, 100*time.Millisecond, func(i int64, due time.Time) {
		if i != int64(len(dues)) {
			t.Fatalf("event %d fired out of order", i)
		}
		dues = append(dues, due)
	})
	if n != 100 || len(dues) != 100 {
		t.Fatalf("fired %d (returned %d), want exactly 100 at 1000/s for 100 ms", len(dues), n)
	}
	for i := 1; i < len(dues); i++ {
		if d := dues[i].Sub(dues[i-1]); d != time.Millisecond {
			t.Fatalf("due times %d and %d are %s apart, want 1ms", i-1, i, d)
		}
	}
	// The first event is due when pace starts: not before the call, and
	// (with a generous bound for a loaded machine) not long after it.
	if dues[0].Before(start) || dues[0].Sub(start) > time.Second {
		t.Errorf("first due %s after the call, want at its start", dues[0].Sub(start))
	}
}

func TestPaceStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := pace(ctx, 10, time.Hour, func(int64, time.Time) {})
	if n != 0 {
		t.Errorf("fired %d after cancel, want 0", n)
	}
}

func TestRPCTallyAndProcDeltas(t *testing.T) {
	var tally rpcTally
	tally.add(nil)
	tally.add(nil)
	tally.add(connect.NewError(connect.CodeResourceExhausted, errors.New("slow down")))
	got := tally.snapshot()
	if got["ok"] != 2 || got["resource_exhausted"] != 1 {
		t.Errorf("tally %v", got)
	}

	before := procSamples{serverPID: "7", server: &ProcSample{CPUSeconds: 10}, tool: &ProcSample{CPUSeconds: 1}}
	after := procSamples{serverPID: "7", server: &ProcSample{CPUSeconds: 25, PeakRSSKiB: 2048, RSSKiB: 1024}, tool: &ProcSample{CPUSeconds: 2}}
	srv, tool := procDeltas(before, after, 30*time.Second)
	if srv.CPUSeconds != 15 || srv.CPUShare != 0.5 || srv.PeakRSSMiB != 2 || srv.RSSMiB != 1 || srv.PID != "7" {
		t.Errorf("server delta %+v", srv)
	}
	if tool.CPUSeconds != 1 {
		t.Errorf("tool delta %+v", tool)
	}
	if s, _ := procDeltas(procSamples{}, after, time.Second); s != nil {
		t.Error("a delta without a first sample must be nil")
	}
}

func TestBestSustained(t *testing.T) {
	steps := []RateStep{
		{AcceptedPerSec: 1000, Sustained: true},
		{AcceptedPerSec: 4990, Sustained: true},
		{AcceptedPerSec: 6000, Sustained: false},
	}
	if got := bestSustained(steps); got != 4990 {
		t.Errorf("best %v, want 4990", got)
	}
	if got := bestSustained(steps[2:]); got != 0 {
		t.Errorf("best of unsustained %v, want 0", got)
	}
}
