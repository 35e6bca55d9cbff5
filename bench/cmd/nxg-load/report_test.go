package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWatchReportText(t *testing.T) {
	conn := Summary{Count: 10, P50MS: 3, P99MS: 9, MaxMS: 12}
	rep := WatchReport{
		Subscribers: 5000, Mix: MixBoth, ConnectStreams: 2500, WebSockets: 2500, HTTP2Conns: 13, Branch: "NXG Shoreditch",
		Machines: 8, Consoles: 8, Ready: 5000, OpenSeconds: 4.2, HeldAtStart: 5000, HeldAtEnd: 4999, Drops: 1,
		RatePerSec: 50, DurationS: 60, ChangesDue: 3000, ChangeOutcomes: map[string]uint64{"ok": 2999, "unavailable": 1},
		Delivery:       Delivery{Changes: 2999, Expected: 14995000, Delivered: 14994000, Lost: 1000, LostOnHeld: 0},
		Latency:        Summary{Count: 14994000, P50MS: 4.5, P99MS: 48.25, MaxMS: 210, Negative: 3},
		LatencyConnect: &conn, LatencyWS: &Summary{}, ConnectLatestArrivals: 7,
		LatencyRead:          Summary{Count: 14994000, P50MS: 6.5, P99MS: 52, MaxMS: 215},
		Errors:               map[string]uint64{"ws: close 1001 going away": 1},
		Server:               &ProcDelta{CPUSeconds: 42.5, CPUShare: 0.65, PeakRSSMiB: 812},
		ServerUSPerDelivered: 2.83, DrainTimedOut: true,
		ServerLag: []ServerLag{{Stage: "handed_out", Count: 2999, MeanMS: 12.5, P50MS: 11, P90MS: 20, P99MS: 31.25}},
	}
	var b bytes.Buffer
	rep.writeText(&b)
	out := b.String()
	for _, want := range []string{
		"5000 subscribers (both: 2500 Connect streams on 13 HTTP/2 connections, 2500 WebSockets) on NXG Shoreditch",
		"held 5000 at start, 4999 at end; 1 drops",
		"outcomes: ok 2999, unavailable 1",
		"14994000 of 14995000 expected (99.993%)",
		"lost 1000 (0 on streams never dropped)",
		"the drain time ended first",
		"p50 4.5 ms", "p99 48.2 ms", "max 210.0 ms", "[3 negative: clock trouble]",
		"Connect streams      p50 3.0 ms",
		"WebSockets           no samples",
		"(7 Connect messages without their own arrival, measured to their connection's latest: overstated)",
		"commit→read by tool    p50 6.5 ms",
		"errors                 ws: close 1001 going away 1",
		"42.50 CPU s (65% of a core), peak RSS 812 MiB (VmHWM: lifetime peak)",
		"server CPU/delivered   2.83 µs",
		"server lag handed_out  p50 11.0 ms  p90 20.0 ms  p99 31.2 ms  (mean 12.5 ms, 2999 changes; from its /metrics)",
		"load tool              not sampled",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteRateReportTextAndJSON(t *testing.T) {
	rep := WriteRateReport{Mode: "report-rate", Consoles: 16, StatusEvery: 10, Steps: []RateStep{
		{OfferedPerSec: 3000, AcceptedPerSec: 3000, Latency: Summary{P50MS: 2, P99MS: 20, MaxMS: 40}, Outcomes: map[string]uint64{"ok": 90000}, Sustained: true,
			Server: &ProcDelta{CPUShare: 0.4, PeakRSSMiB: 300}, ServerUSPerRPC: 4.4},
		{OfferedPerSec: 9000, AcceptedPerSec: 7000, NotSent: 12, Latency: Summary{P99MS: 2500}, Outcomes: map[string]uint64{"ok": 210000, "resource_exhausted": 5}},
	}}
	rep.BestSustained = bestSustained(rep.Steps)
	var b bytes.Buffer
	rep.writeText(&b)
	out := b.String()
	for _, want := range []string{"16 consoles, every 10-th report", "highest sustained rate (p99 < 1 s, ≥ 99% accepted): 3000 reports/s",
		"ok 210000, resource_exhausted 5", "40%", "4.4", "server peak RSS 300 MiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}

	var js bytes.Buffer
	if err := emit(Config{JSON: true}, &js, rep, rep.writeText); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rate.json")
	var text bytes.Buffer
	if err := emit(Config{JSONFile: file}, &text, rep, rep.writeText); err != nil {
		t.Fatal(err)
	}
	if saved, err := os.ReadFile(file); err != nil || !bytes.Equal(saved, js.Bytes()) {
		t.Errorf("-json-file wrote %q (%v), want the same JSON as -json", saved, err)
	}
	if !strings.Contains(text.String(), "highest sustained rate") {
		t.Errorf("with -json-file the text report still goes to stdout; got %q", text.String())
	}
	if err := emit(Config{JSONFile: filepath.Join(file, "not-a-dir", "x.json")}, &text, rep, rep.writeText); err == nil {
		t.Error("an unwritable -json-file was not reported")
	}
	var back WriteRateReport
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON output does not read back: %v\n%s", err, js.String())
	}
	if back.BestSustained != 3000 || len(back.Steps) != 2 || back.Steps[1].Outcomes["resource_exhausted"] != 5 {
		t.Errorf("read back %+v", back)
	}
	if !strings.Contains(js.String(), `"best_sustained_per_sec": 3000`) {
		t.Errorf("JSON field names changed:\n%s", js.String())
	}

	rep.Steps[0].Sustained = false
	rep.BestSustained = bestSustained(rep.Steps)
	b.Reset()
	rep.writeText(&b)
	if !strings.Contains(b.String(), "no step was sustained") {
		t.Errorf("unsustained report:\n%s", b.String())
	}
}
