package integrations

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Headers every request carries.
const (
	headerAPIKey         = "X-Api-Key"
	headerIdempotencyKey = "Idempotency-Key"
	userAgent            = "nxg-backend"
)

// request is one logical call, prepared once and sent by every attempt.
type request struct {
	method  string
	url     string
	key     string
	payload []byte // nil → no body
	out     any
}

// send makes one HTTP attempt within the per-attempt timeout and returns nil
// or an *attemptFailure.
func (c *Client) send(ctx context.Context, r *request) error {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	var body io.Reader
	if r.payload != nil {
		body = bytes.NewReader(r.payload)
	}
	req, err := http.NewRequestWithContext(actx, r.method, r.url, body)
	if err != nil {
		// Do builds the same request before the first attempt, so this
		// cannot happen for input it accepted.
		return &attemptFailure{err: c.refusedLocally("build request", err)}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if r.payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.APIKey != "" {
		req.Header.Set(headerAPIKey, c.cfg.APIKey)
	}
	if r.key != "" {
		req.Header.Set(headerIdempotencyKey, r.key)
	}

	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return c.transportFailure(ctx, actx, "request failed", 0, err)
	}
	defer resp.Body.Close()

	status := resp.StatusCode
	if status >= 200 && status < 300 {
		return c.readSuccess(ctx, actx, resp, r.out)
	}

	// The body of an error is read best-effort: the status alone decides
	// what happens, the body only explains.
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	code, msg := parseErrorBody(status, data)
	e := &Error{Service: c.cfg.Name, Status: status, Code: code, Message: msg}
	switch {
	case status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
		status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
		e.Retryable, e.outcome = true, outcomeFailure
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			e.RetryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
		return &attemptFailure{err: e, unhealthy: true, retryNow: true}
	case status >= 500:
		// A 500 is a fault the same request would likely hit again at once,
		// so it is not retried within the call; later (a job's retry) it may
		// have been fixed. 501 never will be.
		e.Retryable, e.outcome = status != http.StatusNotImplemented, outcomeFailure
		return &attemptFailure{err: e, unhealthy: true}
	case status >= 400:
		e.outcome = outcomeClientError
		return &attemptFailure{err: e}
	default:
		// 1xx and 3xx: our default client does not follow redirects, and a
		// JSON API has no business sending them.
		e.Message = "unexpected status: " + e.Message
		e.outcome = outcomeFailure
		return &attemptFailure{err: e, unhealthy: true}
	}
}

// readSuccess reads a 2xx body (bounded) and decodes it into out.
func (c *Client) readSuccess(ctx, actx context.Context, resp *http.Response, out any) error {
	limit := c.cfg.MaxResponseBytes
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		// The service may have done the work; the idempotency key makes a
		// retry replay it rather than repeat it.
		return c.transportFailure(ctx, actx, "reading response body", resp.StatusCode, err)
	}
	bad := func(msg string, err error) error {
		return &attemptFailure{unhealthy: true, err: &Error{
			Service: c.cfg.Name, Status: resp.StatusCode, Message: msg, Err: err, outcome: outcomeFailure,
		}}
	}
	if int64(len(data)) > limit {
		return bad(fmt.Sprintf("response body exceeds %d bytes", limit), nil)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return bad("empty response body", nil)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return bad("response body is not the expected JSON", err)
	}
	return nil
}

// transportFailure classifies an error of the HTTP exchange itself. ctx is
// the call's context, actx the attempt's: the caller giving up is not the
// service's fault, our attempt timeout is.
func (c *Client) transportFailure(ctx, actx context.Context, what string, status int, err error) error {
	e := &Error{Service: c.cfg.Name, Status: status, Retryable: true, Err: err}
	switch {
	case ctx.Err() != nil:
		e.Message = "call abandoned by the caller"
		e.Err = errors.Join(context.Cause(ctx), err)
		e.outcome = outcomeCanceled
		return &attemptFailure{err: e, excluded: true}
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		e.Message = fmt.Sprintf("%s: no answer within %s", what, c.cfg.Timeout)
	default:
		e.Message = what
	}
	e.outcome = outcomeFailure
	return &attemptFailure{err: e, unhealthy: true, retryNow: true}
}
