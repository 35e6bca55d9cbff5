package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are recorded in a log-linear histogram of microseconds instead
// of a slice of samples: at 10,000 subscribers and 50 changes a second a
// one-minute run receives 30 million messages, and keeping every sample
// would cost the load tool more memory and time than the server it
// measures. Values below linearLimit are exact; above, each power of two is
// split into subBuckets buckets, so a reported percentile is within 1/64
// (1.6%) of the true value. The maximum is kept exactly.
const (
	subBucketBits = 6
	subBuckets    = 1 << subBucketBits // buckets per power of two above linearLimit
	linearLimit   = 2 * subBuckets     // values below this have a bucket each
	maxShift      = 40                 // 2^46 µs is over two years: nothing real is larger
	bucketCount   = linearLimit + maxShift*subBuckets
)

// Histogram counts durations. Record is safe for concurrent use (atomic
// adds: the subscribers of every connection record into one histogram).
type Histogram struct {
	counts [bucketCount]atomic.Uint64
	total  atomic.Uint64
	sumUS  atomic.Uint64
	maxUS  atomic.Uint64
	// negative counts samples below zero: a message whose timestamp is
	// after its receipt, which only clock trouble can cause. They are
	// recorded as zero and reported so the reader can judge.
	negative atomic.Uint64
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		h.negative.Add(1)
		d = 0
	}
	us := uint64(d / time.Microsecond)
	h.counts[bucketIndex(us)].Add(1)
	h.total.Add(1)
	h.sumUS.Add(us)
	for {
		cur := h.maxUS.Load()
		if us <= cur || h.maxUS.CompareAndSwap(cur, us) {
			break
		}
	}
}

// bucketIndex maps a value in microseconds to its bucket.
func bucketIndex(us uint64) int {
	if us < linearLimit {
		return int(us)
	}
	// shift is how far us must move right so that its top bit lands on bit
	// subBucketBits: us>>shift is then in [subBuckets, 2*subBuckets).
	shift := bits.Len64(us) - 1 - subBucketBits
	if shift > maxShift {
		return bucketCount - 1
	}
	sub := int(us>>uint(shift)) - subBuckets
	return linearLimit + (shift-1)*subBuckets + sub
}

// bucketUpper is the largest value that falls into bucket i, so a
// percentile read from the histogram never understates the latency.
func bucketUpper(i int) uint64 {
	if i < linearLimit {
		return uint64(i)
	}
	j := i - linearLimit
	shift := j/subBuckets + 1
	sub := uint64(j%subBuckets + subBuckets)
	return (sub+1)<<uint(shift) - 1
}

// Summary is what a histogram says about its samples.
type Summary struct {
	Count    uint64  `json:"count"`
	MeanMS   float64 `json:"mean_ms"`
	P50MS    float64 `json:"p50_ms"`
	P90MS    float64 `json:"p90_ms"`
	P99MS    float64 `json:"p99_ms"`
	P999MS   float64 `json:"p999_ms"`
	MaxMS    float64 `json:"max_ms"`
	Negative uint64  `json:"negative,omitempty"`
}

// Summary reads the percentiles. Each is the upper edge of the bucket
// holding that rank, capped at the exact maximum.
func (h *Histogram) Summary() Summary {
	counts := make([]uint64, bucketCount)
	for i := range counts {
		counts[i] = h.counts[i].Load()
	}
	s := Summary{Count: h.total.Load(), Negative: h.negative.Load()}
	if s.Count == 0 {
		return s
	}
	maxUS := h.maxUS.Load()
	s.MeanMS = float64(h.sumUS.Load()) / float64(s.Count) / 1000
	s.MaxMS = float64(maxUS) / 1000
	s.P50MS = percentile(counts, s.Count, maxUS, 0.50)
	s.P90MS = percentile(counts, s.Count, maxUS, 0.90)
	s.P99MS = percentile(counts, s.Count, maxUS, 0.99)
	s.P999MS = percentile(counts, s.Count, maxUS, 0.999)
	return s
}

// percentile returns, in milliseconds, the value at quantile q of the
// samples counted in counts (total samples, largest maxUS microseconds):
// the smallest bucket whose cumulative count reaches ceil(q*total).
func percentile(counts []uint64, total, maxUS uint64, q float64) float64 {
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			return float64(min(bucketUpper(i), maxUS)) / 1000
		}
	}
	return float64(maxUS) / 1000
}
