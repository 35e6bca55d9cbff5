// Command nxg-load is the load tool of NXG's real-time benchmark (NFR1,
// NFR8): it opens N WatchMachines subscribers (Connect streams over h2c,
// WebSockets on /ws, or both) against a running server, drives machine
// status changes at a fixed rate through MachineService.ReportActivity from
// simulated machine consoles, and reports delivery latency from the write's
// commit to receipt, delivered versus expected, connections held, and the
// server's CPU time and peak memory. With -report-rate it instead measures
// the device write rate: heartbeats and status reports from every console at
// fixed total rates. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nxg-load:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nxg-load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s nxg-load: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	limit, err := raiseOpenFileLimit()
	if err != nil {
		return fmt.Errorf("raise the open-file limit: %w", err)
	}
	if need := uint64(cfg.Subscribers + 100); cfg.ReportRates == nil && limit < need {
		logf("warning: open-file limit %d is below the ~%d this run needs (raise the hard limit: ulimit -Hn)", limit, need)
	}

	pool := newClientPool(8)
	defer pool.close()
	env, err := setup(ctx, cfg, pool, logf)
	if err != nil {
		return err
	}
	if !cfg.KeepDevices {
		defer teardown(env, logf)
	}
	if cfg.ViaStaff {
		logf("signed in; branch %s (%d machines); changes by SetMachineStatus as %s", env.Branch.GetName(), len(env.Machines), cfg.Email)
	} else {
		logf("signed in; branch %s (%d machines); %d consoles registered", env.Branch.GetName(), len(env.Machines), len(env.Consoles))
	}
	if err := prepare(ctx, env); err != nil {
		return err
	}
	hbCtx, stopHeartbeats := context.WithCancel(ctx)
	defer stopHeartbeats()
	go keepOnline(hbCtx, env, 15*time.Second, logf)

	if cfg.ReportRates != nil {
		rep := WriteRateReport{Mode: "report-rate", Addr: cfg.Addr, Consoles: len(env.Consoles), StatusEvery: cfg.StatusEvery}
		for _, rate := range cfg.ReportRates {
			logf("report rate step: %.0f reports/s for %s", rate, cfg.Duration)
			step := writeRateStep(ctx, cfg, env, rate)
			rep.Steps = append(rep.Steps, step)
			logf("  accepted %.0f/s, p99 %.1f ms, outcomes: %s", step.AcceptedPerSec, step.Latency.P99MS, fmtCounts(step.Outcomes))
			if ctx.Err() != nil {
				break
			}
		}
		rep.BestSustained = bestSustained(rep.Steps)
		return emit(cfg, stdout, rep, rep.writeText)
	}

	rep, err := watch(ctx, cfg, env, logf)
	if err != nil {
		return err
	}
	rep.OpenFileLimit = limit
	return emit(cfg, stdout, rep, rep.writeText)
}

func emit(cfg Config, w io.Writer, v any, text func(io.Writer)) error {
	if cfg.JSONFile != "" {
		f, err := os.Create(cfg.JSONFile)
		if err != nil {
			return err
		}
		if err := writeJSON(f, v); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if cfg.JSON {
		return writeJSON(w, v)
	}
	text(w)
	return nil
}

// watch runs the subscriber benchmark: open, measure, drain, count.
func watch(ctx context.Context, cfg Config, env *environment, logf func(string, ...any)) (WatchReport, error) {
	r := newWatchRun(cfg, env)
	defer r.close()
	subCtx, stopSubs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopped := false
	stopAll := func() {
		if !stopped {
			stopped = true
			stopSubs()
			wg.Wait()
		}
	}
	defer stopAll()

	logf("opening %d subscribers (%s)", cfg.Subscribers, cfg.Mix)
	openStart := time.Now()
	ready := r.open(subCtx, &wg)
	openSecs := time.Since(openStart).Seconds()
	logf("%d of %d subscribers ready in %.1f s", ready, cfg.Subscribers, openSecs)
	if ctx.Err() != nil {
		return WatchReport{}, ctx.Err()
	}

	d := &driver{env: env}
	heldAtStart := r.connectedCount()
	lagBefore := r.scrapeLag(ctx, logf)
	before := sampleProcs(cfg)
	measureStart := time.Now()
	r.phase.Store(phaseMeasuring)
	logf("making %g changes/s for %s", cfg.Rate, cfg.Duration)
	due := d.run(ctx, cfg.Rate, cfg.Duration, r.machineIdx)

	// Drain: wait until every live subscriber has every confirmed change,
	// or the drain time is up.
	expected := uint64(len(d.confirmed())) * uint64(ready)
	drainEnd := time.Now().Add(cfg.Drain)
	for time.Now().Before(drainEnd) && r.deliveredCount() < expected && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	drainTimedOut := r.deliveredCount() < expected
	if drainTimedOut {
		logf("drain time up with %d deliveries outstanding: they count as lost or superseded (raise -drain to wait longer)",
			expected-r.deliveredCount())
	}
	elapsed := time.Since(measureStart)
	after := sampleProcs(cfg)
	lagAfter := r.scrapeLag(ctx, logf)
	heldAtEnd := r.connectedCount()
	r.phase.Store(phaseDone)
	stopAll()

	rep := WatchReport{
		Mode: "watch", Addr: cfg.Addr, Branch: env.Branch.GetName(), Machines: len(env.Machines),
		Consoles: len(env.Consoles), Subscribers: cfg.Subscribers, Mix: cfg.Mix, HTTP2Conns: len(r.h2c),
		OpenSeconds: openSecs, Ready: ready,
		RatePerSec: cfg.Rate, DurationS: cfg.Duration.Seconds(), ChangesDue: due,
		ChangesSkipped: d.skipped.Load(), ChangeOutcomes: d.tally.snapshot(), ChangeNoops: d.noops.Load(),
		ChangeRPC: d.rpc.Summary(), HeldAtStart: heldAtStart, HeldAtEnd: heldAtEnd, DrainTimedOut: drainTimedOut,
		Latency: r.latency.Summary(), LatencyRead: r.latRead.Summary(),
		ConnectLatestArrivals: r.connectLatest.Load(),
	}
	for _, s := range r.subs {
		if s.wire == MixConnect {
			rep.ConnectStreams++
		} else {
			rep.WebSockets++
		}
		rep.Drops += s.drops
		rep.Resyncs += s.resyncs
		rep.Duplicates += s.dups
		rep.OutOfOrder += s.outOfOrd
		rep.SeqGaps += s.seqGaps
		rep.Stale += s.stale
		rep.Unknown += s.unknown
		rep.Other += s.other
	}
	if cfg.Mix == MixBoth {
		c, w := r.latConn.Summary(), r.latWS.Summary()
		rep.LatencyConnect, rep.LatencyWS = &c, &w
	}
	rep.Delivery = analyze(r.subs, d.confirmed())
	r.errMu.Lock()
	rep.Errors, rep.FirstOther = r.errs, r.firstOther
	r.errMu.Unlock()
	if lagBefore != nil && lagAfter != nil {
		rep.ServerLag = feedLagSince(lagBefore, lagAfter)
	}
	rep.Server, rep.Tool = procDeltas(before, after, elapsed)
	if rep.Server != nil && rep.Delivery.Delivered > 0 {
		rep.ServerUSPerDelivered = rep.Server.CPUSeconds * 1e6 / float64(rep.Delivery.Delivered)
	}
	return rep, nil
}
