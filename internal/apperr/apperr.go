// Package apperr is the vocabulary of failures that NXG's domain code speaks.
// Domain packages return these errors without knowing about Connect; the one
// error mapper in package server turns them into Connect codes and details.
// Any other error reaching the mapper is an internal fault: it is logged and
// the client sees only a generic message with the request id.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies a failure the client can act on.
type Code int

// The codes mirror the Connect codes that fit a client-caused or expected
// failure; internal faults are not given a code, they are plain errors.
const (
	// CodeInvalidArgument: the request itself is wrong; Field names the culprit.
	CodeInvalidArgument Code = iota + 1
	// CodeNotFound: the thing named does not exist (or the caller may not know it does).
	CodeNotFound
	// CodeAlreadyExists: creating something that exists already.
	CodeAlreadyExists
	// CodeFailedPrecondition: the current state forbids the action.
	CodeFailedPrecondition
	// CodePermissionDenied: the caller is known but not allowed.
	CodePermissionDenied
	// CodeUnauthenticated: the caller is not (or no longer) signed in.
	CodeUnauthenticated
	// CodeResourceExhausted: a limit was hit; RetryAfter says when to try again.
	CodeResourceExhausted
	// CodeUnavailable: an outside dependency failed; retrying later may work.
	CodeUnavailable
	// CodeAborted: a concurrent change won; retry the whole operation.
	CodeAborted
)

// Error is a failure meant for the client. Message is safe to show; Cause is
// for logs only.
type Error struct {
	Code       Code
	Field      string
	Message    string
	RetryAfter time.Duration
	Cause      error
}

func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Cause != nil {
		return msg + ": " + e.Cause.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Cause }

// As returns the *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// InvalidArgument reports a bad request field.
func InvalidArgument(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound reports that the named thing does not exist, e.g. NotFound("branch", id).
func NotFound(what, id string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("%s %s not found", what, id)}
}

// AlreadyExists reports a duplicate.
func AlreadyExists(format string, args ...any) *Error {
	return &Error{Code: CodeAlreadyExists, Message: fmt.Sprintf(format, args...)}
}

// FailedPrecondition reports that the current state forbids the action.
func FailedPrecondition(format string, args ...any) *Error {
	return &Error{Code: CodeFailedPrecondition, Message: fmt.Sprintf(format, args...)}
}

// PermissionDenied reports that the caller may not do this.
func PermissionDenied(format string, args ...any) *Error {
	return &Error{Code: CodePermissionDenied, Message: fmt.Sprintf(format, args...)}
}

// Unauthenticated reports a missing or dead credential.
func Unauthenticated(format string, args ...any) *Error {
	return &Error{Code: CodeUnauthenticated, Message: fmt.Sprintf(format, args...)}
}

// ResourceExhausted reports a limit, with when to retry.
func ResourceExhausted(retryAfter time.Duration, format string, args ...any) *Error {
	return &Error{Code: CodeResourceExhausted, RetryAfter: retryAfter, Message: fmt.Sprintf(format, args...)}
}

// Unavailable reports an outside failure, with when to retry, keeping the
// cause for the logs.
func Unavailable(retryAfter time.Duration, cause error, format string, args ...any) *Error {
	return &Error{Code: CodeUnavailable, RetryAfter: retryAfter, Cause: cause, Message: fmt.Sprintf(format, args...)}
}
