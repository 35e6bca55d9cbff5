package server

import (
	"math"
	"testing"
	"time"
)

func TestNextFeedPace(t *testing.T) {
	t.Parallel()
	pace := 10 * time.Microsecond
	for _, tc := range []struct {
		name string
		pace time.Duration
		use  float64
		want time.Duration
	}{
		{"AtTheTargetItStays", pace, feedPaceTarget, pace},
		{"OverTheTargetItSlowsByTheSquareRoot", pace, 2 * feedPaceTarget, time.Duration(float64(pace) * math.Sqrt2)},
		{"UnderTheTargetItQuickens", pace, feedPaceTarget / 4, pace / 2},
		{"AtMostDoubleAWindow", pace, 100 * feedPaceTarget, 2 * pace},
		{"AtLeastAQuarterAWindow", pace, 0, pace / 4},
		{"NeverBelowTheLeast", feedPaceMin, 0, feedPaceMin},
		{"NeverAboveTheMost", feedPaceMax, 1, feedPaceMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := nextFeedPace(tc.pace, tc.use)
			if diff := got - tc.want; diff < -time.Nanosecond || diff > time.Nanosecond {
				t.Fatalf("nextFeedPace(%v, %.3f) = %v, want %v", tc.pace, tc.use, got, tc.want)
			}
		})
	}
}

func TestFeedPacer(t *testing.T) {
	t.Parallel()
	var cpu time.Duration
	p := &feedPacer{pace: 10 * time.Microsecond, cpu: func() time.Duration { return cpu }, procs: func() int { return 2 }}
	t0 := time.Unix(1_000_000, 0)
	at := func(after time.Duration, want time.Duration) {
		t.Helper()
		if got := p.at(t0.Add(after)); got != want {
			t.Fatalf("pace %v in = %v, want %v", after, got, want)
		}
	}

	// The first call starts the first window.
	at(0, 10*time.Microsecond)
	// Within a window nothing changes, however busy the process.
	cpu = time.Second
	at(feedPaceWindow/2, 10*time.Microsecond)
	// Two processors, one window: 300 ms of CPU over 2×200 ms is 75%,
	// the target, so the pace stays.
	cpu = 300 * time.Millisecond
	at(feedPaceWindow, 10*time.Microsecond)
	// All of both processors: slower by the square root of 1/0.75.
	cpu += 2 * feedPaceWindow
	at(2*feedPaceWindow, time.Duration(float64(10*time.Microsecond)*math.Sqrt(1/feedPaceTarget)))
	// An idle window: down to a quarter, and again, to the least.
	at(3*feedPaceWindow, time.Duration(float64(10*time.Microsecond)*math.Sqrt(1/feedPaceTarget))/4)
	at(4*feedPaceWindow, feedPaceMin)
}

func TestProcessCPU(t *testing.T) {
	t.Parallel()
	before := processCPU()
	deadline := time.Now().Add(30 * time.Millisecond)
	spins := 0
	for time.Now().Before(deadline) {
		spins++
	}
	if after := processCPU(); after <= before || spins == 0 {
		t.Fatalf("process CPU went from %v to %v over 30 ms of spinning", before, after)
	}
	if p := newFeedPacer(); p.pace != feedPaceStart || p.procs() < 1 {
		t.Fatalf("new pacer: pace %v, %d processors", p.pace, p.procs())
	}
}
