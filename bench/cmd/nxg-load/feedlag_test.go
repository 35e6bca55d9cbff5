package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// feedLagExposition is /metrics as the server writes it, with the feed lag
// histogram's counts given per bucket edge (seconds) for each stage.
func feedLagExposition(loaded, handedOut map[string]uint64, loadedSum, handedOutSum float64) string {
	var b strings.Builder
	b.WriteString("# HELP nxg_machine_feed_lag_seconds Time from a machine change's commit.\n")
	b.WriteString("# TYPE nxg_machine_feed_lag_seconds histogram\n")
	for _, st := range []struct {
		name   string
		counts map[string]uint64
		sum    float64
	}{{"loaded", loaded, loadedSum}, {"handed_out", handedOut, handedOutSum}} {
		var total uint64
		for _, le := range []string{"0.01", "0.05", "0.1"} {
			total += st.counts[le]
			b.WriteString("nxg_machine_feed_lag_seconds_bucket{stage=\"" + st.name + "\",le=\"" + le + "\"} " + strconv.FormatUint(total, 10) + "\n")
		}
		total += st.counts["+Inf"]
		b.WriteString("nxg_machine_feed_lag_seconds_bucket{stage=\"" + st.name + "\",le=\"+Inf\"} " + strconv.FormatUint(total, 10) + "\n")
		b.WriteString("nxg_machine_feed_lag_seconds_sum{stage=\"" + st.name + "\"} " + strconv.FormatFloat(st.sum, 'g', -1, 64) + "\n")
		b.WriteString("nxg_machine_feed_lag_seconds_count{stage=\"" + st.name + "\"} " + strconv.FormatUint(total, 10) + "\n")
	}
	b.WriteString("# TYPE other_total counter\nother_total 3\n")
	return b.String()
}

func TestFeedLagFromTwoScrapes(t *testing.T) {
	// Before: 10 changes loaded within 10 ms. After: 100 more, 90 of them
	// within 10 ms and 10 between 50 and 100 ms; handed out 100 between 10
	// and 50 ms.
	before := feedLagExposition(map[string]uint64{"0.01": 10}, map[string]uint64{"0.05": 10}, 0.05, 0.3)
	after := feedLagExposition(map[string]uint64{"0.01": 100, "0.1": 10}, map[string]uint64{"0.05": 110}, 1.05, 3.3)
	page := before
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(page))
	}))
	defer srv.Close()

	a, err := scrapeFeedLag(context.Background(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	page = after
	b, err := scrapeFeedLag(context.Background(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	lags := feedLagSince(a, b)
	if len(lags) != 2 || lags[0].Stage != "handed_out" || lags[1].Stage != "loaded" {
		t.Fatalf("stages = %+v, want handed_out and loaded", lags)
	}
	handed, loaded := lags[0], lags[1]
	if loaded.Count != 100 || math.Abs(loaded.MeanMS-10) > 1e-9 {
		t.Fatalf("loaded = %+v, want 100 changes with a mean of 10 ms", loaded)
	}
	// The 50th of 100 is in the first bucket (90 within 10 ms): 50/90 of
	// the way to 10 ms. The 99th is in the 50–100 ms bucket, which holds
	// the last 10: 9/10 of the way from 50 to 100 ms.
	if math.Abs(loaded.P50MS-10*50.0/90) > 1e-6 || math.Abs(loaded.P99MS-95) > 1e-6 {
		t.Fatalf("loaded p50 %v, p99 %v; want %v and 95", loaded.P50MS, loaded.P99MS, 10*50.0/90)
	}
	if handed.Count != 100 || math.Abs(handed.P50MS-30) > 1e-6 || math.Abs(handed.MeanMS-30) > 1e-9 {
		t.Fatalf("handed_out = %+v, want 100 changes, p50 and mean 30 ms", handed)
	}
}

func TestFeedLagScrapeErrors(t *testing.T) {
	ctx := context.Background()
	for name, handler := range map[string]http.HandlerFunc{
		"status":    func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", http.StatusUnauthorized) },
		"no metric": func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("other_total 1\n")) },
		"not text":  func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{not metrics\n")) },
	} {
		srv := httptest.NewServer(handler)
		if _, err := scrapeFeedLag(ctx, srv.Client(), srv.URL); err == nil {
			t.Errorf("%s: scrape succeeded", name)
		}
		srv.Close()
	}
	if _, err := scrapeFeedLag(ctx, http.DefaultClient, "http://127.0.0.1:1/metrics"); err == nil {
		t.Error("scrape of a closed port succeeded")
	}
}

func TestBucketQuantileEdges(t *testing.T) {
	upper := []float64{0.01, 0.1, math.Inf(1)}
	if got := bucketQuantile(upper, []uint64{0, 0, 0}, 0.5); got != 0 {
		t.Errorf("empty histogram: %v, want 0", got)
	}
	// Everything beyond the last finite bound: that bound is the answer.
	if got := bucketQuantile(upper, []uint64{0, 0, 5}, 0.99); got != 0.1 {
		t.Errorf("all in +Inf: %v, want 0.1", got)
	}
	if got := bucketQuantile(upper, []uint64{4, 4, 4}, 1); got != 0.01 {
		t.Errorf("p100 of the first bucket: %v, want 0.01", got)
	}
}
