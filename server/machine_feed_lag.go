package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// feedLagBuckets are fine where the real-time targets are (tens of
// milliseconds to reach thousands of watchers) and coarse up to the one
// second within which NFR5 wants a change everywhere.
var feedLagBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
	0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5,
}

// The stages of a machine change in this process, the values of the
// metric's stage label.
const (
	// feedStageLoaded: the machine feed has read the changed row.
	feedStageLoaded = "loaded"
	// feedStageHandedOut: the pass over the branch's watchers that gave
	// the change to the last of them has ended. Watchers the feed writes
	// itself (direct delivery) have it on their connection by then; the
	// others have it queued for their own goroutine to write.
	feedStageHandedOut = "handed_out"
)

// FeedLag measures how far behind the database this process's machine
// feed runs: the time from a machine change's commit to each stage of its
// way to the watchers. Operators read it against the real-time promise
// (every watcher within a second, NFR5), and the load tool reads it to tell
// the server's share of a delivery's latency from the client's.
//
// A change's commit time is its machine's updated_at, taken from the
// database's clock in the writing transaction. Skew between the database's
// clock and this process's shifts every observation by the same amount; a
// change that seems to come from the future is counted as no lag at all.
//
// It also shows the feed's pace (feedPacer), which explains the lag: the
// pace rises when the process is short of processor time.
type FeedLag struct {
	loadedSeconds    prometheus.Observer
	handedOutSeconds prometheus.Observer
	paceSeconds      prometheus.Gauge
}

// NewFeedLag creates the feed's lag histogram and registers it on reg.
func NewFeedLag(reg prometheus.Registerer) (*FeedLag, error) {
	if reg == nil {
		return nil, errors.New("feed lag: registerer is required")
	}
	seconds := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nxg_machine_feed_lag_seconds",
		Help:    "Time from a machine change's commit (its updated_at, by the database's clock) to the machine feed having loaded it (stage=loaded) and to the end of the pass that handed it to the last watcher of its branch in this process (stage=handed_out).",
		Buckets: feedLagBuckets,
	}, []string{"stage"})
	pace := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nxg_machine_feed_pace_seconds",
		Help: "The machine feed's pace: the least time its fan-out to a branch's watchers takes per delivery. It rises while the process uses more than three quarters of its processors.",
	})
	for _, c := range []prometheus.Collector{seconds, pace} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("feed lag: register: %w", err)
		}
	}
	return &FeedLag{
		loadedSeconds:    seconds.WithLabelValues(feedStageLoaded),
		handedOutSeconds: seconds.WithLabelValues(feedStageHandedOut),
		paceSeconds:      pace,
	}, nil
}

// paced records the pace the feed's fan-out uses now.
func (l *FeedLag) paced(pace time.Duration) {
	if l != nil {
		l.paceSeconds.Set(pace.Seconds())
	}
}

// loaded records that the changes in events have just been loaded, and
// handedOut that the pass that handed them to the last watcher has just
// ended. A nil FeedLag
// records nothing.
func (l *FeedLag) loaded(events []*machineEvent) {
	if l != nil {
		observeLag(l.loadedSeconds, events, time.Now())
	}
}

func (l *FeedLag) handedOut(events []*machineEvent) {
	if l != nil {
		observeLag(l.handedOutSeconds, events, time.Now())
	}
}

// observeLag records, for each change in events, the time from its commit
// (its machine's updated_at) to now. Resync markers carry no change.
func observeLag(o prometheus.Observer, events []*machineEvent, now time.Time) {
	for _, ev := range events {
		if ev.Resync || ev.committed.IsZero() {
			continue
		}
		o.Observe(max(now.Sub(ev.committed), 0).Seconds())
	}
}
