package main

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestBucketsCoverEveryValueWithinPrecision(t *testing.T) {
	prev := -1
	for _, us := range []uint64{0, 1, 127, 128, 129, 130, 255, 256, 1000, 12345, 999_999, 1 << 30, 1<<46 - 1} {
		i := bucketIndex(us)
		if i < prev {
			t.Fatalf("bucketIndex(%d) = %d, below the previous value's %d: buckets must be ordered", us, i, prev)
		}
		prev = i
		up := bucketUpper(i)
		if up < us {
			t.Errorf("bucketUpper(bucketIndex(%d)) = %d, below the value", us, up)
		}
		if us >= linearLimit && float64(up-us) > float64(us)/subBuckets {
			t.Errorf("bucket of %d reaches %d: wider than 1/%d of the value", us, up, subBuckets)
		}
		if us < linearLimit && up != us {
			t.Errorf("bucketUpper(%d) = %d, want exact below %d", us, up, linearLimit)
		}
	}
	if got := bucketIndex(math.MaxUint64); got != bucketCount-1 {
		t.Errorf("bucketIndex(max) = %d, want the last bucket %d", got, bucketCount-1)
	}
}

func TestBucketBoundariesAreContiguous(t *testing.T) {
	// Every bucket starts right after the previous one ends.
	for i := 1; i < bucketCount; i++ {
		start := bucketUpper(i-1) + 1
		if got := bucketIndex(start); got != i {
			t.Fatalf("value %d after bucket %d's end falls in bucket %d, want %d", start, i-1, got, i)
		}
	}
}

func TestSummaryPercentiles(t *testing.T) {
	var h Histogram
	// 1..1000 ms, one sample each: p50 is 500 ms, p99 990 ms, max 1000 ms.
	for ms := 1; ms <= 1000; ms++ {
		h.Record(time.Duration(ms) * time.Millisecond)
	}
	s := h.Summary()
	if s.Count != 1000 {
		t.Fatalf("count %d, want 1000", s.Count)
	}
	check := func(name string, got, want float64) {
		t.Helper()
		// Percentiles are bucket upper edges: at most 1/64 above the truth, never below.
		if got < want || got > want*(1+1.0/subBuckets) {
			t.Errorf("%s = %.3f ms, want %.3f (up to +1/64)", name, got, want)
		}
	}
	check("p50", s.P50MS, 500)
	check("p90", s.P90MS, 900)
	check("p99", s.P99MS, 990)
	check("p99.9", s.P999MS, 999)
	if s.MaxMS != 1000 {
		t.Errorf("max %.3f ms, want exactly 1000", s.MaxMS)
	}
	if math.Abs(s.MeanMS-500.5) > 0.001 {
		t.Errorf("mean %.3f ms, want 500.5", s.MeanMS)
	}
}

func TestSummaryCapsAtMaxAndCountsNegatives(t *testing.T) {
	var h Histogram
	h.Record(70 * time.Millisecond)
	h.Record(-time.Millisecond)
	s := h.Summary()
	if s.Negative != 1 || s.Count != 2 {
		t.Fatalf("negative %d count %d, want 1 and 2", s.Negative, s.Count)
	}
	if s.P99MS != 70 || s.MaxMS != 70 {
		t.Errorf("p99 %.3f max %.3f, want both 70 (the bucket edge is capped at the maximum)", s.P99MS, s.MaxMS)
	}
	if s.P50MS != 0 {
		t.Errorf("p50 %.3f, want 0 (the negative sample counts as zero)", s.P50MS)
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h Histogram
	if s := h.Summary(); s != (Summary{}) {
		t.Errorf("empty summary %+v, want zero", s)
	}
	if got := percentile(nil, 0, 0, 0.5); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				h.Record(time.Duration(g*1000+i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	s := h.Summary()
	if s.Count != 8000 || s.MaxMS != 7.999 {
		t.Errorf("count %d max %.3f, want 8000 and 7.999", s.Count, s.MaxMS)
	}
}
