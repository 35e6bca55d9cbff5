package integrations

import (
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 7 ", 7 * time.Second, true},
		{"120", 2 * time.Minute, true},
		{"99999999999999999999999", maxRetryAfterHonoured, true},
		{"172800", maxRetryAfterHonoured, true},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), maxRetryAfterHonoured, true},
		{"Friday, 20-Nov-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850, still allowed
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Fri, 20 Nov 2026 12:00:00 GMT", "-1", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if d < 0 || d > maxRetryAfterHonoured || (!ok && d != 0) {
			t.Errorf("parseRetryAfter(%q) = %s, %v", s, d, ok)
		}
	})
}

func TestFullJitterStaysUnderTheDoublingCeiling(t *testing.T) {
	t.Parallel()
	const initial, maxInterval = 10 * time.Millisecond, 80 * time.Millisecond
	ceilings := []time.Duration{10, 20, 40, 80, 80, 80}
	for i := range ceilings {
		ceilings[i] *= time.Millisecond
	}
	sawBelowHalf := false
	for range 200 {
		b := newFullJitter(initial, maxInterval)
		b.Reset()
		for i, ceiling := range ceilings {
			d := b.NextBackOff()
			if d < 0 || d > ceiling {
				t.Fatalf("wait %d = %s, want within [0, %s]", i, d, ceiling)
			}
			// backoff's default jitter never goes below half the ceiling;
			// full jitter does, often.
			if d < ceiling/2 {
				sawBelowHalf = true
			}
		}
	}
	if !sawBelowHalf {
		t.Error("no wait below half its ceiling in 1200 draws: the jitter is not full")
	}
}
