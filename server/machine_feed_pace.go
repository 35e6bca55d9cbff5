package server

import (
	"math"
	"runtime"
	"syscall"
	"time"
)

const (
	// feedPaceTarget is the share of the process's processors the machine
	// feed lets the whole process use before it slows its fan-out down.
	// Deliveries are most of the work of a busy floor, but not all of it:
	// the writers' commits, the feed's own loads and every other request
	// need the rest, promptly, or the changes themselves arrive late.
	feedPaceTarget = 0.75
	// feedPaceWindow is how often the pace is adjusted: long enough to
	// hold several steps, short enough to follow a change of load.
	feedPaceWindow = 200 * time.Millisecond
	// feedPaceMin and feedPaceMax bound the pace. At the least a pass over
	// 5,000 watchers takes 5 ms, which an idle process affords. At the
	// most a pass over 10,000 takes 250 ms: a process kept busy by other
	// work (its own garbage collection, slow clients' writes) does not get
	// idler by handing changes out more slowly, and with no bound the pace
	// ran away to a pass a second at 10,000 WebSockets in 4 of 9 runs on
	// the benchmark machine (commit→receipt p99 1.5–3.3 s against 0.3 s).
	feedPaceMin = time.Microsecond
	feedPaceMax = 25 * time.Microsecond
	// feedPaceStart is the pace before the first adjustment: about what a
	// delivery costs on the benchmark machine, over the target.
	feedPaceStart = 12 * time.Microsecond
)

// feedPacer sets the machine feed's pace: the least time the fan-out
// spends per delivery, step and rest together (see branchFanOut). What a
// delivery costs differs by an order of magnitude between machines, days
// and transports (a WebSocket write the feed makes itself, a Connect
// stream's goroutine and HTTP/2 writer), so no fixed pace suits every
// server: too short and the fan-out takes the whole processor, delaying
// the commits and loads the changes depend on; too long and watchers wait
// for nothing. The pacer measures instead: every feedPaceWindow it reads
// the process's CPU time and scales the pace by how far the process's use
// of its processors is from feedPaceTarget. While deliveries are most of
// the load, use is about other + cost/pace, and this settles where the
// deliveries fill what the target leaves them; when the process is idle
// the pace falls to its least within a few windows.
//
// Only the feed uses it, with the feed's lock held.
type feedPacer struct {
	pace time.Duration
	// cpu returns the process's CPU time so far; procs how many
	// processors it may use. Tests set both.
	cpu   func() time.Duration
	procs func() int

	windowStart time.Time
	windowCPU   time.Duration
}

func newFeedPacer() *feedPacer {
	return &feedPacer{pace: feedPaceStart, cpu: processCPU, procs: func() int { return runtime.GOMAXPROCS(0) }}
}

// at returns the pace to use at now, adjusting it first when a window has
// passed since the last adjustment.
func (p *feedPacer) at(now time.Time) time.Duration {
	if p.windowStart.IsZero() {
		p.windowStart, p.windowCPU = now, p.cpu()
		return p.pace
	}
	wall := now.Sub(p.windowStart)
	if wall < feedPaceWindow {
		return p.pace
	}
	cpu := p.cpu()
	use := float64(cpu-p.windowCPU) / (float64(wall) * float64(max(p.procs(), 1)))
	p.pace = nextFeedPace(p.pace, use)
	p.windowStart, p.windowCPU = now, cpu
	return p.pace
}

// nextFeedPace scales pace by use over the target, at most down to a
// quarter or up to double per window (a window of low use after a busy one,
// or the reverse, says little about the next), within the bounds.
func nextFeedPace(pace time.Duration, use float64) time.Duration {
	factor := min(max(math.Sqrt(use/feedPaceTarget), 0.25), 2)
	next := time.Duration(float64(pace) * factor)
	return min(max(next, feedPaceMin), feedPaceMax)
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
