package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// feedLagStage returns the sample count and sum of one stage of the feed
// lag histogram in reg.
func feedLagStage(t *testing.T, reg *prometheus.Registry, stage string) (count uint64, sum float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "nxg_machine_feed_lag_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelValue(m, "stage") == stage {
				return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			}
		}
	}
	return 0, 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestNewFeedLagRefusesNoOrATakenRegistry(t *testing.T) {
	t.Parallel()
	if _, err := NewFeedLag(nil); err == nil {
		t.Fatal("NewFeedLag(nil) succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := NewFeedLag(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFeedLag(reg); err == nil {
		t.Fatal("a second NewFeedLag on the same registry succeeded")
	}
}

func TestFeedLagMeasuresFromTheCommit(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	lag, err := NewFeedLag(reg)
	if err != nil {
		t.Fatal(err)
	}
	feed := newMachineFeed(nil, nil, slog.New(slog.DiscardHandler))
	feed.start.Do(func() {}) // driven through publish, without a hub
	feed.lag = lag
	branch := uuid.New()
	sub := feed.subscribe(branch)
	defer sub.Close()

	old := &machineEvent{Machine: benchMachine(branch, 1), branch: branch, version: 1, committed: time.Now().Add(-200 * time.Millisecond)}
	// A database clock ahead of this process's must not make a negative lag.
	ahead := &machineEvent{Machine: benchMachine(branch, 2), branch: branch, version: 2, committed: time.Now().Add(time.Hour)}
	feed.publish(branch, []*machineEvent{old, ahead})
	feed.publish(branch, []*machineEvent{{Resync: true}}) // no change: not measured
	if got := len(<-sub.Events()); got != 2 {
		t.Fatalf("delivery of %d events, want 2", got)
	}

	count, sum := feedLagStage(t, reg, feedStageHandedOut)
	if count != 2 {
		t.Fatalf("handed_out observations = %d, want 2 (the resync is not a change)", count)
	}
	if sum < 0.2 || sum > 5 {
		t.Fatalf("handed_out lag sum = %v s, want the 0.2 s of the older change and 0 for the one from the future", sum)
	}
	if count, _ := feedLagStage(t, reg, feedStageLoaded); count != 0 {
		t.Fatalf("loaded observations = %d without a load, want 0", count)
	}
	// The step showed its pace: the pacer's first, before any window.
	if got := feedPace(t, reg); got != feedPaceStart.Seconds() {
		t.Fatalf("pace gauge = %v s, want %v", got, feedPaceStart.Seconds())
	}

	// Without a FeedLag the feed measures nothing and still delivers.
	var none *FeedLag
	none.loaded([]*machineEvent{old})
	none.handedOut([]*machineEvent{old})
	none.paced(time.Millisecond)
}

// feedPace returns the pace gauge's value in reg.
func feedPace(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "nxg_machine_feed_pace_seconds" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no pace gauge")
	return 0
}
