package integrations

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// fullJitter is exponential backoff with "full jitter": each wait is drawn
// uniformly from [0, ceiling], where the ceiling starts at the initial
// interval and doubles per retry up to the maximum. Spreading the whole
// range (rather than ±50% around the ceiling, backoff's default) is what
// keeps many clients that failed at the same moment from retrying in step.
// The ceiling's growth is backoff.ExponentialBackOff's, without its own
// randomisation.
type fullJitter struct {
	ceiling backoff.ExponentialBackOff
}

var _ backoff.BackOff = (*fullJitter)(nil)

func newFullJitter(initial, maxInterval time.Duration) *fullJitter {
	return &fullJitter{ceiling: backoff.ExponentialBackOff{
		InitialInterval:     initial,
		RandomizationFactor: 0,
		Multiplier:          2,
		MaxInterval:         maxInterval,
	}}
}

func (b *fullJitter) Reset() { b.ceiling.Reset() }

func (b *fullJitter) NextBackOff() time.Duration {
	c := b.ceiling.NextBackOff()
	if c <= 0 {
		return c
	}
	return rand.N(c + 1)
}

// maxRetryAfterHonoured caps what we believe of a Retry-After: a service
// asking to be left alone for more than a day is treated as asking for a
// day, so a job's snooze stays bounded.
const maxRetryAfterHonoured = 24 * time.Hour

// parseRetryAfter reads a Retry-After header value, either delay-seconds or
// an HTTP-date (RFC 9110 §10.2.3), relative to now. ok is false for an
// absent or malformed value, which leaves the ordinary backoff in charge.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfterHonoured/time.Second) {
			// Only an overflow fails here: the service asked for longer
			// than we ever wait.
			return maxRetryAfterHonoured, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxRetryAfterHonoured), true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// waitThenRetry tells backoff.Retry to wait exactly the service's
// Retry-After before the next attempt (backoff.RetryAfterError) while
// keeping our *Error reachable through errors.As for when the attempts run
// out.
type waitThenRetry struct {
	err  *Error
	wait backoff.RetryAfterError
}

func (w *waitThenRetry) Error() string   { return w.err.Error() }
func (w *waitThenRetry) Unwrap() []error { return []error{w.err, &w.wait} }
