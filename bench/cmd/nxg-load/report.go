package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// WatchReport is the outcome of a watch run: N subscribers, changes at a
// fixed rate.
type WatchReport struct {
	Mode           string  `json:"mode"` // "watch"
	Addr           string  `json:"addr"`
	Branch         string  `json:"branch"`
	Machines       int     `json:"machines"`
	Consoles       int     `json:"consoles"`
	Subscribers    int     `json:"subscribers"`
	Mix            Mix     `json:"mix"`
	ConnectStreams int     `json:"connect_streams"`
	WebSockets     int     `json:"websockets"`
	HTTP2Conns     int     `json:"http2_connections"`
	OpenSeconds    float64 `json:"open_seconds"` // until every subscriber had its snapshot (or the timeout)
	Ready          int     `json:"ready"`

	RatePerSec     float64           `json:"rate_per_sec"`
	DurationS      float64           `json:"duration_s"`
	ChangesDue     int64             `json:"changes_due"`
	ChangesSkipped int64             `json:"changes_skipped"` // a console was still busy with earlier ones
	ChangeOutcomes map[string]uint64 `json:"change_outcomes"` // ReportActivity results by Connect code
	ChangeNoops    int64             `json:"change_noops"`    // accepted without a new version
	ChangeRPC      Summary           `json:"change_rpc"`

	HeldAtStart int    `json:"held_at_start"` // live streams when changes started
	HeldAtEnd   int    `json:"held_at_end"`   // live streams after the drain
	Drops       uint64 `json:"drops"`         // streams that ended while the run was on
	Resyncs     uint64 `json:"resyncs"`       // snapshots after the first

	// DrainTimedOut is true when the drain time ended before every live
	// subscriber had every change: some "lost" ones may only be late.
	DrainTimedOut bool `json:"drain_timed_out"`

	Delivery   Delivery `json:"delivery"`
	Duplicates uint64   `json:"duplicates"`
	OutOfOrder uint64   `json:"out_of_order"`
	SeqGaps    uint64   `json:"sequence_gaps"`
	Stale      uint64   `json:"stale"`   // changes not newer than the snapshot before them
	Unknown    uint64   `json:"unknown"` // changes of machines the first snapshot did not list
	Other      uint64   `json:"other_frames"`
	FirstOther string   `json:"first_other_frame,omitempty"`

	// Latency is receipt (the arrival of the message's last byte at the
	// tool's socket, as the kernel stamped it) minus Machine.updated_at.
	Latency        Summary  `json:"latency"`
	LatencyConnect *Summary `json:"latency_connect,omitempty"`
	// ConnectLatestArrivals counts the Connect messages whose own
	// arrival the frame tracker did not know, measured to their
	// connection's latest arrival instead (an upper bound).
	ConnectLatestArrivals uint64   `json:"connect_latest_arrivals"`
	LatencyWS             *Summary `json:"latency_ws,omitempty"`
	// LatencyRead is the time the tool's goroutine read the message
	// minus Machine.updated_at: Latency plus the tool's own queue.
	LatencyRead Summary `json:"latency_read"`
	// ServerLag is the server's own feed lag over the measurement, by
	// stage, when -server-metrics is set.
	ServerLag []ServerLag `json:"server_feed_lag,omitempty"`

	Errors map[string]uint64 `json:"errors,omitempty"` // failed opens and ended streams, by kind

	Server               *ProcDelta `json:"server,omitempty"`
	ServerUSPerDelivered float64    `json:"server_cpu_us_per_delivered,omitempty"`
	Tool                 *ProcDelta `json:"tool,omitempty"`
	OpenFileLimit        uint64     `json:"open_file_limit"`
}

// WriteRateReport is the outcome of the device write-rate test.
type WriteRateReport struct {
	Mode        string     `json:"mode"` // "report-rate"
	Addr        string     `json:"addr"`
	Consoles    int        `json:"consoles"`
	StatusEvery int        `json:"status_every"`
	Steps       []RateStep `json:"steps"`
	// BestSustained is the highest accepted rate of a sustained step (p99
	// under one second, 99% accepted); 0 when none was.
	BestSustained float64 `json:"best_sustained_per_sec"`
}

func bestSustained(steps []RateStep) float64 {
	best := 0.0
	for _, s := range steps {
		if s.Sustained && s.AcceptedPerSec > best {
			best = s.AcceptedPerSec
		}
	}
	return best
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtSummary(s Summary) string {
	if s.Count == 0 {
		return "no samples"
	}
	out := fmt.Sprintf("p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  p99.9 %.1f ms  max %.1f ms  (mean %.1f ms, %d samples)",
		s.P50MS, s.P90MS, s.P99MS, s.P999MS, s.MaxMS, s.MeanMS, s.Count)
	if s.Negative > 0 {
		out += fmt.Sprintf("  [%d negative: clock trouble]", s.Negative)
	}
	return out
}

func fmtProc(name string, p *ProcDelta) string {
	if p == nil {
		return fmt.Sprintf("  %-22s not sampled\n", name)
	}
	return fmt.Sprintf("  %-22s %.2f CPU s (%.0f%% of a core), peak RSS %.0f MiB (VmHWM: lifetime peak), RSS now %.0f MiB\n",
		name, p.CPUSeconds, 100*p.CPUShare, p.PeakRSSMiB, p.RSSMiB)
}

func fmtCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func pct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// writeText prints a watch report for people.
func (r WatchReport) writeText(w io.Writer) {
	d := r.Delivery
	fmt.Fprintf(w, "nxg-load watch: %d subscribers (%s: %d Connect streams on %d HTTP/2 connections, %d WebSockets) on %s, %d machines\n",
		r.Subscribers, r.Mix, r.ConnectStreams, r.HTTP2Conns, r.WebSockets, r.Branch, r.Machines)
	fmt.Fprintf(w, "  opened                 %d ready in %.1f s; held %d at start, %d at end; %d drops, %d resyncs\n",
		r.Ready, r.OpenSeconds, r.HeldAtStart, r.HeldAtEnd, r.Drops, r.Resyncs)
	fmt.Fprintf(w, "  changes                %g/s for %.0f s through %d consoles: %d due, %d skipped (console busy), %d no-op; outcomes: %s\n",
		r.RatePerSec, r.DurationS, r.Consoles, r.ChangesDue, r.ChangesSkipped, r.ChangeNoops, fmtCounts(r.ChangeOutcomes))
	fmt.Fprintf(w, "  ReportActivity RPC     %s\n", fmtSummary(r.ChangeRPC))
	fmt.Fprintf(w, "  delivery               %d of %d expected (%.3f%%); resynced %d, superseded %d, lost %d (%d on streams never dropped); %d subscribers never ready\n",
		d.Delivered, d.Expected, pct(d.Delivered, d.Expected), d.Resynced, d.Superseded, d.Lost, d.LostOnHeld, d.NotReady)
	if r.DrainTimedOut {
		fmt.Fprintln(w, "                         (the drain time ended first: some of the lost may only have been late)")
	}
	fmt.Fprintf(w, "  anomalies              duplicates %d, out of order %d, sequence gaps %d, stale %d, unknown machines %d, other frames %d\n",
		r.Duplicates, r.OutOfOrder, r.SeqGaps, r.Stale, r.Unknown, r.Other)
	if r.FirstOther != "" {
		fmt.Fprintf(w, "  first other frame      %s\n", r.FirstOther)
	}
	fmt.Fprintf(w, "  commit→receipt         %s\n", fmtSummary(r.Latency))
	if r.LatencyConnect != nil {
		fmt.Fprintf(w, "    Connect streams      %s\n", fmtSummary(*r.LatencyConnect))
	}
	if r.ConnectLatestArrivals > 0 {
		fmt.Fprintf(w, "                         (%d Connect messages without their own arrival, measured to their connection's latest: overstated)\n", r.ConnectLatestArrivals)
	}
	if r.LatencyWS != nil {
		fmt.Fprintf(w, "    WebSockets           %s\n", fmtSummary(*r.LatencyWS))
	}
	fmt.Fprintf(w, "  commit→read by tool    %s\n", fmtSummary(r.LatencyRead))
	for _, l := range r.ServerLag {
		fmt.Fprintf(w, "  server lag %-11s p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  (mean %.1f ms, %d changes; from its /metrics)\n",
			l.Stage, l.P50MS, l.P90MS, l.P99MS, l.MeanMS, l.Count)
	}
	fmt.Fprintf(w, "  errors                 %s\n", fmtCounts(r.Errors))
	fmt.Fprint(w, fmtProc("server", r.Server))
	if r.ServerUSPerDelivered > 0 {
		fmt.Fprintf(w, "  server CPU/delivered   %.2f µs\n", r.ServerUSPerDelivered)
	}
	fmt.Fprint(w, fmtProc("load tool", r.Tool))
}

// writeText prints a write-rate report for people.
func (r WriteRateReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "nxg-load report-rate: %d consoles, every %d-th report a status change (0: heartbeats only)\n", r.Consoles, r.StatusEvery)
	fmt.Fprintf(w, "  %9s %9s %9s %9s %9s %9s %9s %10s %10s  %s\n",
		"offered/s", "accept/s", "not sent", "p50 ms", "p99 ms", "max ms", "srv CPU", "µs/report", "sustained", "outcomes")
	for _, s := range r.Steps {
		cpu, per := "-", "-"
		if s.Server != nil {
			cpu = fmt.Sprintf("%.0f%%", 100*s.Server.CPUShare)
			per = fmt.Sprintf("%.1f", s.ServerUSPerRPC)
		}
		fmt.Fprintf(w, "  %9.0f %9.0f %9d %9.1f %9.1f %9.1f %9s %10s %10v  %s\n",
			s.OfferedPerSec, s.AcceptedPerSec, s.NotSent, s.Latency.P50MS, s.Latency.P99MS, s.Latency.MaxMS,
			cpu, per, s.Sustained, fmtCounts(s.Outcomes))
	}
	if r.BestSustained > 0 {
		fmt.Fprintf(w, "  highest sustained rate (p99 < 1 s, ≥ 99%% accepted): %.0f reports/s\n", r.BestSustained)
	} else {
		fmt.Fprintln(w, "  no step was sustained (p99 < 1 s with ≥ 99% accepted)")
	}
	for i := len(r.Steps) - 1; i >= 0; i-- {
		if s := r.Steps[i].Server; s != nil {
			fmt.Fprintf(w, "  server peak RSS %.0f MiB (VmHWM: lifetime peak)\n", s.PeakRSSMiB)
			break
		}
	}
}
