package integrations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/sony/gobreaker/v2"
)

// Client calls one outside service with timeouts, retries, an idempotency
// key and a circuit breaker. It is safe for concurrent use; create one per
// service and share it.
type Client struct {
	cfg     Config
	breaker *breaker
	metrics *Metrics
}

// New returns the client of the service cfg describes, recording into
// metrics (nil → metrics that are not registered anywhere). It validates
// cfg: Name and BaseURL are required, durations and counts must not be
// negative.
func New(cfg Config, metrics *Metrics) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if metrics == nil {
		if metrics, err = NewMetrics(nil); err != nil {
			return nil, err
		}
	}
	c := &Client{cfg: cfg, metrics: metrics}
	c.breaker = newBreaker(cfg, func(s gobreaker.State) { metrics.setBreakerState(cfg.Name, s) })
	metrics.addService(cfg.Name, func() { c.breaker.state() })
	return c, nil
}

// Name is the service's name (Config.Name).
func (c *Client) Name() string { return c.cfg.Name }

// State is the breaker's state: "closed", "half-open" or "open".
func (c *Client) State() string { return c.breaker.state().String() }

// Do performs one logical call: method and path (joined to BaseURL), body
// marshalled as JSON (nil → no body), and a 2xx JSON body decoded into out
// (nil → discarded). key is the idempotency key, sent as the
// Idempotency-Key header identically on every attempt of this call; it is
// required for POST, and when given must be 1–128 printable ASCII
// characters without spaces. Callers that may repeat a call later (a River
// job's next attempt) should derive key from what identifies the work, so
// the service replays instead of redoing it.
//
// Every failure is an *Error; see the package documentation for which are
// retried, which count against the breaker and which are Retryable.
func (c *Client) Do(ctx context.Context, method, path, key string, body, out any) error {
	start := time.Now()
	err := c.do(ctx, method, path, key, body, out)
	c.metrics.observeCall(c.cfg.Name, outcomeOf(err), time.Since(start))
	return err
}

func (c *Client) do(ctx context.Context, method, path, key string, body, out any) error {
	r, err := c.prepare(method, path, key, body, out)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return c.abandoned(ctx, nil)
	}

	var last *Error // the latest attempt's failure, for when the caller gives up mid-wait
	attempt := func() (struct{}, error) {
		refused, err := c.breaker.run(func() error {
			c.metrics.attempts.WithLabelValues(c.cfg.Name).Inc()
			return c.send(ctx, r)
		})
		if refused != nil {
			// An open breaker ends the call even mid-retries: the service
			// has failed enough for now, and waiting out OpenTimeout inside
			// a call would hold a worker for nothing.
			refused.Service = c.cfg.Name
			last = refused
			return struct{}{}, backoff.Permanent(refused)
		}
		if err == nil {
			return struct{}{}, nil
		}
		var f *attemptFailure
		if !errors.As(err, &f) {
			// send returns only attemptFailures; anything else is a bug we
			// report rather than hide.
			f = &attemptFailure{err: &Error{Service: c.cfg.Name, Message: "unexpected error", Err: err, outcome: outcomeFailure}}
		}
		last = f.err
		if wait, open := c.breaker.openFor(); open && f.unhealthy && f.err.Retryable {
			// This failure opened the breaker: another attempt would be
			// refused, so end the call now and say when the probe comes.
			f.err.RetryAfter = max(f.err.RetryAfter, wait)
			return struct{}{}, backoff.Permanent(f.err)
		}
		switch {
		case !f.retryNow:
			return struct{}{}, backoff.Permanent(f.err)
		case f.err.RetryAfter > c.cfg.MaxRetryAfter:
			// Longer than a call may wait: hand the wait to the caller.
			return struct{}{}, backoff.Permanent(f.err)
		case f.err.RetryAfter > 0:
			return struct{}{}, &waitThenRetry{err: f.err, wait: backoff.RetryAfterError{Duration: f.err.RetryAfter}}
		default:
			return struct{}{}, f.err
		}
	}

	_, err = backoff.Retry(ctx, attempt,
		backoff.WithBackOff(newFullJitter(c.cfg.BackoffInitial, c.cfg.BackoffMax)),
		backoff.WithMaxTries(uint(c.cfg.MaxAttempts)),
		// The attempts and the caller's context bound the call, not a clock.
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(error, time.Duration) {
			c.metrics.retries.WithLabelValues(c.cfg.Name).Inc()
		}),
	)
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	// backoff.Retry returns the bare context error when the caller gives up
	// while it waits between attempts.
	return c.abandoned(ctx, last)
}

// prepare validates the call's input and marshals its body, so that a
// mistake of ours is reported without touching the service or its breaker.
func (c *Client) prepare(method, path, key string, body, out any) (*request, error) {
	r := &request{method: method, url: c.cfg.BaseURL + "/" + strings.TrimLeft(path, "/"), key: key, out: out}
	if err := checkIdempotencyKey(method, key); err != nil {
		return nil, c.refusedLocally("idempotency key", err)
	}
	if _, err := http.NewRequest(method, r.url, nil); err != nil {
		return nil, c.refusedLocally("build request", err)
	}
	if body != nil {
		payload, err := json.Marshal(body)
		if err != nil {
			return nil, c.refusedLocally("marshal request body", err)
		}
		r.payload = payload
	}
	return r, nil
}

// refusedLocally is the error for a call we refused to send because its
// input is wrong; retrying it cannot help.
func (c *Client) refusedLocally(what string, err error) *Error {
	return &Error{Service: c.cfg.Name, Message: what, Err: err, outcome: outcomeClientError}
}

// abandoned is the error for a call the caller's context ended before it
// could finish; last, if any, is the failure that was being retried.
func (c *Client) abandoned(ctx context.Context, last *Error) *Error {
	e := &Error{Service: c.cfg.Name, Message: "call abandoned by the caller", Retryable: true, Err: context.Cause(ctx), outcome: outcomeCanceled}
	if last != nil {
		e.Status, e.Code, e.RetryAfter = last.Status, last.Code, last.RetryAfter
		e.Message = fmt.Sprintf("call abandoned by the caller while retrying after: %s", last.Message)
	}
	return e
}
