package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
)

// change is one visible change the driver made and the server confirmed:
// the machine's version and updated_at after the report.
type change struct {
	machine   int // index into environment.Machines
	version   int64
	updatedAt time.Time
}

// rpcTally counts the outcomes of RPCs by Connect code.
type rpcTally struct {
	mu    sync.Mutex
	codes map[string]uint64
}

func (t *rpcTally) add(err error) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	t.mu.Lock()
	if t.codes == nil {
		t.codes = map[string]uint64{}
	}
	t.codes[code]++
	t.mu.Unlock()
}

func (t *rpcTally) snapshot() map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]uint64, len(t.codes))
	for k, v := range t.codes {
		out[k] = v
	}
	return out
}

// pace calls fire once for every event due at rate per second from start
// until d has passed or ctx ends, passing each event's number and the time
// it was due. It never waits for fire to finish its work (fire must not
// block): the offered rate is the rate asked for, however the server
// copes, and latencies measured from the due time include any lateness of
// the tool itself (no coordinated omission).
func pace(ctx context.Context, rate float64, d time.Duration, fire func(n int64, due time.Time)) int64 {
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	var n int64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			elapsed = d
		}
		due := int64(elapsed.Seconds() * rate)
		for ; n < due; n++ {
			fire(n, start.Add(time.Duration(n)*interval))
		}
		if elapsed >= d {
			return n
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return n
		}
	}
}

// driverQueue is how many changes may wait for one console: a little
// slack for jitter, not a backlog that would outlive the run.
const driverQueue = 4

// driver makes machine status changes through the consoles at a fixed
// rate: each console flips its fault flag, which moves its machine between
// maintenance and available, one visible change per report.
type driver struct {
	env   *environment
	rpc   Histogram
	tally rpcTally
	// skipped counts changes due while their console was still busy with
	// earlier ones (driverQueue of them), or still queued when the duration
	// ended: the server was slower than the rate.
	skipped atomic.Int64
	// noops counts reports the server accepted without a new version.
	noops atomic.Int64

	mu      sync.Mutex
	changes []change
}

func (d *driver) record(c change) {
	d.mu.Lock()
	d.changes = append(d.changes, c)
	d.mu.Unlock()
}

func (d *driver) confirmed() []change {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]change(nil), d.changes...)
}

// run makes changes at rate for dur. Each console works through its own
// queue in order, so its fault flag always alternates.
func (d *driver) run(ctx context.Context, rate float64, dur time.Duration, machineIdx map[string]int) int64 {
	queues := make([]chan struct{}, len(d.env.Consoles))
	var wg sync.WaitGroup
	// Changes still queued when the duration is over are not sent: the
	// measured interval ends with the last due change, not with a backlog.
	over := make(chan struct{})
	for i, c := range d.env.Consoles {
		queues[i] = make(chan struct{}, driverQueue)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range queues[i] {
				select {
				case <-over:
					d.skipped.Add(1)
				default:
					d.flip(ctx, c, machineIdx)
				}
			}
		}()
	}
	issued := pace(ctx, rate, dur, func(n int64, _ time.Time) {
		select {
		case queues[n%int64(len(queues))] <- struct{}{}:
		default:
			d.skipped.Add(1)
		}
	})
	close(over)
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	return issued
}

func (d *driver) flip(ctx context.Context, c *console, machineIdx map[string]int) {
	if ctx.Err() != nil {
		return
	}
	started := time.Now()
	m, err := c.setFault(ctx, !c.fault)
	d.rpc.Record(time.Since(started))
	d.tally.add(err)
	if err != nil {
		return
	}
	c.fault = !c.fault
	i, ok := machineIdx[m.GetId()]
	if !ok || m.GetUpdatedAt() == nil {
		d.noops.Add(1)
		return
	}
	d.record(change{machine: i, version: m.GetVersion(), updatedAt: m.GetUpdatedAt().AsTime()})
}

// keepOnline sends a heartbeat from every console every interval until ctx
// ends, so no machine is swept offline during a long run (which would be a
// change the driver did not make).
func keepOnline(ctx context.Context, env *environment, interval time.Duration, logf func(string, ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, c := range env.Consoles {
			if c.staff {
				continue
			}
			if _, err := c.report(ctx, heartbeat()); err != nil && ctx.Err() == nil {
				logf("heartbeat of console %s: %v", c.DeviceID, err)
			}
		}
	}
}

// RateStep is the outcome of one step of the device write-rate test.
type RateStep struct {
	OfferedPerSec  float64           `json:"offered_per_sec"`
	DurationS      float64           `json:"duration_s"`
	ElapsedS       float64           `json:"elapsed_s"` // until the last answer
	Due            int64             `json:"due"`
	NotSent        int64             `json:"not_sent"` // due while max-in-flight RPCs were pending
	Outcomes       map[string]uint64 `json:"outcomes"` // by Connect code; "ok" is accepted
	AcceptedPerSec float64           `json:"accepted_per_sec"`
	Latency        Summary           `json:"latency"` // from due time to response
	Server         *ProcDelta        `json:"server,omitempty"`
	ServerUSPerRPC float64           `json:"server_cpu_us_per_report,omitempty"`
	Tool           *ProcDelta        `json:"tool,omitempty"`
	// Sustained is p99 under one second with at least 99% of the due
	// reports accepted.
	Sustained bool `json:"sustained"`
}

// writeRateStep offers reports at rate for dur from every console, round
// robin: every cfg.StatusEvery-th a status report, the rest heartbeats.
func writeRateStep(ctx context.Context, cfg Config, env *environment, rate float64) RateStep {
	var (
		lat      Histogram
		tally    rpcTally
		notSent  atomic.Int64
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, cfg.MaxInFlight)
		faults   = make([]atomic.Bool, len(env.Consoles))
	)
	before := sampleProcs(cfg)
	started := time.Now()
	due := pace(ctx, rate, cfg.Duration, func(n int64, dueAt time.Time) {
		select {
		case inFlight <- struct{}{}:
		default:
			notSent.Add(1)
			return
		}
		i := int(n % int64(len(env.Consoles)))
		c := env.Consoles[i]
		req := heartbeat()
		if cfg.StatusEvery > 0 && n%int64(cfg.StatusEvery) == 0 {
			// Concurrent status reports of one console may land in any
			// order; which flag wins does not matter for write throughput.
			f := !faults[i].Load()
			faults[i].Store(f)
			req = statusReport(f)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlight }()
			_, err := c.report(ctx, req)
			lat.Record(time.Since(dueAt))
			tally.add(err)
		}()
	})
	wg.Wait()
	elapsed := time.Since(started)
	after := sampleProcs(cfg)

	step := RateStep{
		OfferedPerSec: rate,
		DurationS:     cfg.Duration.Seconds(),
		Due:           due,
		NotSent:       notSent.Load(),
		Outcomes:      tally.snapshot(),
		Latency:       lat.Summary(),
	}
	// Accepted per second over the time until the last answer, not the
	// nominal duration: reports answered after the step's end were not
	// accepted at the offered rate.
	step.ElapsedS = elapsed.Seconds()
	step.AcceptedPerSec = float64(step.Outcomes["ok"]) / elapsed.Seconds()
	step.Server, step.Tool = procDeltas(before, after, elapsed)
	if step.Server != nil && step.Outcomes["ok"] > 0 {
		step.ServerUSPerRPC = step.Server.CPUSeconds * 1e6 / float64(step.Outcomes["ok"])
	}
	step.Sustained = step.Latency.P99MS < 1000 && due > 0 && float64(step.Outcomes["ok"]) >= 0.99*float64(due)
	return step
}

// ProcDelta is what a process used over a measured interval.
type ProcDelta struct {
	PID        string  `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUShare is CPU seconds per wall-clock second (1.0 = one core busy).
	CPUShare   float64 `json:"cpu_share"`
	PeakRSSMiB float64 `json:"peak_rss_mib"` // VmHWM: the lifetime peak, not just this interval
	RSSMiB     float64 `json:"rss_mib"`      // VmRSS at the end
}

// procSamples are readings of the server (when known) and the tool.
type procSamples struct {
	serverPID string
	server    *ProcSample
	tool      *ProcSample
}

func sampleProcs(cfg Config) procSamples {
	var s procSamples
	if cfg.ServerPID > 0 {
		s.serverPID = fmt.Sprint(cfg.ServerPID)
		if p, err := readProc(s.serverPID); err == nil {
			s.server = &p
		}
	}
	if p, err := readProc("self"); err == nil {
		s.tool = &p
	}
	return s
}

func procDeltas(before, after procSamples, elapsed time.Duration) (server, tool *ProcDelta) {
	delta := func(pid string, a, b *ProcSample) *ProcDelta {
		if a == nil || b == nil {
			return nil
		}
		cpu := b.CPUSeconds - a.CPUSeconds
		return &ProcDelta{
			PID: pid, CPUSeconds: cpu, CPUShare: cpu / elapsed.Seconds(),
			PeakRSSMiB: float64(b.PeakRSSKiB) / 1024, RSSMiB: float64(b.RSSKiB) / 1024,
		}
	}
	return delta(before.serverPID, before.server, after.server), delta("self", before.tool, after.tool)
}
