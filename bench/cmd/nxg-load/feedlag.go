package main

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// feedLagMetric is the server's histogram of how long a machine change
// takes, after its commit, to reach each stage of its way to the watchers
// (server/machine_feed_lag.go).
const feedLagMetric = "nxg_machine_feed_lag_seconds"

// The tool's latency is the whole way from commit to receipt, the client's
// part included; with thousands of subscribers on one core the tool's own
// queue is part of it. The server's histogram, read before and after the
// measurement, tells how much of that the server took.

// lagBuckets is one stage's cumulative histogram as scraped.
type lagBuckets struct {
	upper      []float64 // bucket upper bounds, ascending, +Inf last
	cumulative []uint64
	count      uint64
	sum        float64
}

// ServerLag is one stage of the server's feed lag over the measurement:
// percentiles interpolated within the histogram's buckets, the way
// Prometheus's histogram_quantile does, so they are only as fine as the
// buckets.
type ServerLag struct {
	Stage  string  `json:"stage"`
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
}

// scrapeFeedLag reads the server's feed lag histogram, by stage.
func scrapeFeedLag(ctx context.Context, client *http.Client, url string) (map[string]lagBuckets, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	mf, ok := families[feedLagMetric]
	if !ok {
		return nil, fmt.Errorf("GET %s: no %s (is the server older than the metric?)", url, feedLagMetric)
	}
	out := make(map[string]lagBuckets)
	for _, m := range mf.GetMetric() {
		out[stageOf(m)] = bucketsOf(m.GetHistogram())
	}
	return out, nil
}

func stageOf(m *dto.Metric) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == "stage" {
			return l.GetValue()
		}
	}
	return ""
}

func bucketsOf(h *dto.Histogram) lagBuckets {
	b := lagBuckets{count: h.GetSampleCount(), sum: h.GetSampleSum()}
	for _, bk := range h.GetBucket() {
		b.upper = append(b.upper, bk.GetUpperBound())
		b.cumulative = append(b.cumulative, bk.GetCumulativeCount())
	}
	if len(b.upper) == 0 || !math.IsInf(b.upper[len(b.upper)-1], 1) {
		b.upper = append(b.upper, math.Inf(1))
		b.cumulative = append(b.cumulative, b.count)
	}
	return b
}

// feedLagSince is each stage's lag over the changes observed between two
// scrapes, stages in name order.
func feedLagSince(before, after map[string]lagBuckets) []ServerLag {
	var out []ServerLag
	for _, stage := range slices.Sorted(maps.Keys(after)) {
		a, b := after[stage], before[stage]
		lag := ServerLag{Stage: stage, Count: a.count - b.count}
		if lag.Count == 0 {
			out = append(out, lag)
			continue
		}
		delta := make([]uint64, len(a.cumulative))
		for i := range delta {
			delta[i] = a.cumulative[i]
			if i < len(b.cumulative) {
				delta[i] -= b.cumulative[i]
			}
		}
		lag.MeanMS = (a.sum - b.sum) / float64(lag.Count) * 1000
		lag.P50MS = bucketQuantile(a.upper, delta, 0.50) * 1000
		lag.P90MS = bucketQuantile(a.upper, delta, 0.90) * 1000
		lag.P99MS = bucketQuantile(a.upper, delta, 0.99) * 1000
		out = append(out, lag)
	}
	return out
}

// bucketQuantile estimates quantile q of a cumulative histogram by linear
// interpolation within the bucket that holds it; a quantile in the +Inf
// bucket is the highest finite bound.
func bucketQuantile(upper []float64, cumulative []uint64, q float64) float64 {
	total := cumulative[len(cumulative)-1]
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, c := range cumulative {
		if float64(c) >= rank {
			if math.IsInf(upper[i], 1) {
				return lower
			}
			inBucket := c - below
			if inBucket == 0 {
				return upper[i]
			}
			return lower + (upper[i]-lower)*(rank-float64(below))/float64(inBucket)
		}
		lower, below = upper[i], c
	}
	return lower
}

// scrapeLag reads the server's feed lag when -server-metrics is set. A
// failed scrape is logged and leaves the server's figures out of the
// report rather than failing the run.
func (r *watchRun) scrapeLag(ctx context.Context, logf func(string, ...any)) map[string]lagBuckets {
	if r.cfg.ServerMetrics == "" {
		return nil
	}
	lag, err := scrapeFeedLag(ctx, r.wsClient, r.cfg.ServerMetrics)
	if err != nil {
		logf("server feed lag left out: %v", err)
		return nil
	}
	return lag
}
