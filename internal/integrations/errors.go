package integrations

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrCircuitOpen is wrapped by the *Error Do returns when the service's
// circuit breaker refused the call without sending a request
// (errors.Is(err, ErrCircuitOpen)).
var ErrCircuitOpen = errors.New("circuit breaker open")

// Error is every failure Do returns (errors.As). It carries what a River
// job needs to decide between failing, retrying and snoozing.
type Error struct {
	Service string
	// Status is the HTTP status; 0 for transport errors, an open breaker and
	// calls refused before sending.
	Status int
	// Code and Message come from the service's error body
	// {"error":{"code":..,"message":..}}; when the body is not that, Message
	// is a cleaned excerpt of it or the status text.
	Code    string
	Message string
	// Retryable says trying again later may succeed (a job retries or
	// snoozes). It is about later calls: a 500 is Retryable but was not
	// retried within the call.
	Retryable bool
	// RetryAfter is a wait the service asked for (Retry-After), or the time
	// until the open breaker lets a probe through; 0 when neither applies.
	RetryAfter time.Duration
	// Err is the cause: a transport or decoding error, the caller's context
	// error, or ErrCircuitOpen.
	Err error

	// outcome is the metrics label of a call ending with this error.
	outcome outcome
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("integrations: ")
	b.WriteString(e.Service)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(": ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Retryable {
		b.WriteString(" (retryable")
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, " after %s", e.RetryAfter)
		}
		b.WriteString(")")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// outcome labels how a logical call ended, for the calls metric.
type outcome string

const (
	outcomeSuccess     outcome = "success"
	outcomeClientError outcome = "client_error" // our request was refused (4xx except 429) or invalid
	outcomeFailure     outcome = "failure"      // the service failed or could not be reached
	outcomeCircuitOpen outcome = "circuit_open" // the breaker refused the call
	outcomeCanceled    outcome = "canceled"     // the caller's context ended first
)

var allOutcomes = []outcome{outcomeSuccess, outcomeClientError, outcomeFailure, outcomeCircuitOpen, outcomeCanceled}

// outcomeOf labels the result of Do.
func outcomeOf(err error) outcome {
	if err == nil {
		return outcomeSuccess
	}
	var e *Error
	if errors.As(err, &e) && e.outcome != "" {
		return e.outcome
	}
	return outcomeFailure
}

// errorBody is the error shape every service of docs/integrations.md uses.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// maxMessageRunes bounds the message taken from a body, so an error (and
// the logs and job records it lands in) stays readable.
const maxMessageRunes = 300

// parseErrorBody extracts the code and message of an error response. A body
// that is not the documented JSON (a gateway's HTML page, plain text,
// nothing) is tolerated: its cleaned beginning, or the status text, becomes
// the message.
func parseErrorBody(status int, body []byte) (code, message string) {
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		return clean(eb.Error.Code, 64), clean(eb.Error.Message, maxMessageRunes)
	}
	if msg := clean(string(body), maxMessageRunes); msg != "" {
		return "", msg
	}
	return "", http.StatusText(status)
}

// clean makes outside text safe to embed in an error: valid UTF-8, no
// control characters, collapsed spaces, at most limit runes.
func clean(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if utf8.RuneCountInString(s) <= limit {
		return s
	}
	runes := []rune(s)
	return string(runes[:limit]) + "…"
}

// MaxSnooze caps how long a job waits on one failure before trying again.
const MaxSnooze = 10 * time.Minute

// SnoozeFor says whether a job that met err should wait rather than spend
// one of its attempts, and for how long: while the service's breaker is
// open (until its probe) or when the service asked for a wait with
// Retry-After, at least a second and at most MaxSnooze. Any other failure
// is for the job's own retry policy.
func SnoozeFor(err error) (time.Duration, bool) {
	var ie *Error
	if !errors.As(err, &ie) || (!errors.Is(err, ErrCircuitOpen) && ie.RetryAfter <= 0) {
		return 0, false
	}
	return min(max(ie.RetryAfter, time.Second), MaxSnooze), true
}
