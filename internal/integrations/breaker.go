package integrations

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// breaker is a service's circuit breaker plus what gobreaker does not
// expose: when the open state ends, so a refused call can say how long to
// wait.
type breaker struct {
	cb *gobreaker.CircuitBreaker[struct{}]
	// probeAt is when the open breaker turns half-open, in Unix nanoseconds.
	probeAt atomic.Int64
	// attemptTimeout bounds how long a half-open probe can take, which is the
	// wait a call refused during the probe is told.
	attemptTimeout time.Duration
}

func newBreaker(cfg Config, onState func(gobreaker.State)) *breaker {
	b := &breaker{attemptTimeout: cfg.Timeout}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name: cfg.Name,
		// One probe at a time in half-open: the service just failed, so we
		// send it as little as possible until it proves itself.
		MaxRequests: 1,
		// Interval 0: counts are never reset on a timer in the closed state,
		// so the threshold means consecutive failures however far apart;
		// any success resets them.
		Interval: 0,
		Timeout:  cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.FailureThreshold
		},
		// OnStateChange runs under gobreaker's lock: it must not call back
		// into the breaker.
		OnStateChange: func(_ string, _, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.probeAt.Store(time.Now().Add(cfg.OpenTimeout).UnixNano())
			}
			onState(to)
		},
		IsSuccessful: func(err error) bool {
			var f *attemptFailure
			return err == nil || (errors.As(err, &f) && !f.unhealthy)
		},
		IsExcluded: func(err error) bool {
			var f *attemptFailure
			return errors.As(err, &f) && f.excluded
		},
	})
	return b
}

// state is the breaker's state; asking moves an open breaker whose time is
// up to half-open (gobreaker changes state lazily).
func (b *breaker) state() gobreaker.State { return b.cb.State() }

// openFor says whether the breaker is open and, if so, how long until it
// lets a probe through.
func (b *breaker) openFor() (time.Duration, bool) {
	if b.state() != gobreaker.StateOpen {
		return 0, false
	}
	return max(time.Until(time.Unix(0, b.probeAt.Load())), time.Millisecond), true
}

// run passes one attempt through the breaker. refused is non-nil, and send
// was not called, when the breaker did not let the attempt through.
func (b *breaker) run(send func() error) (refused *Error, err error) {
	_, err = b.cb.Execute(func() (struct{}, error) { return struct{}{}, send() })
	switch {
	case errors.Is(err, gobreaker.ErrOpenState):
		wait, _ := b.openFor()
		return &Error{
			Message:    "not called: circuit breaker open",
			Retryable:  true,
			RetryAfter: max(wait, time.Millisecond),
			Err:        ErrCircuitOpen,
			outcome:    outcomeCircuitOpen,
		}, nil
	case errors.Is(err, gobreaker.ErrTooManyRequests):
		return &Error{
			Message:    "not called: circuit breaker half-open, probe in flight",
			Retryable:  true,
			RetryAfter: b.attemptTimeout,
			Err:        ErrCircuitOpen,
			outcome:    outcomeCircuitOpen,
		}, nil
	}
	return nil, err
}

// attemptFailure is how an attempt reports a failure through the breaker:
// the *Error for the caller plus what the failure means for the breaker and
// the retry loop.
type attemptFailure struct {
	err *Error
	// unhealthy failures count toward opening the breaker.
	unhealthy bool
	// excluded failures (the caller gave up) are not counted at all.
	excluded bool
	// retryNow says another attempt within this call may succeed.
	retryNow bool
}

func (f *attemptFailure) Error() string { return f.err.Error() }
func (f *attemptFailure) Unwrap() error { return f.err }
