package integrations

import (
	"errors"
	"fmt"
)

// The typed clients (workoutplanner, mealdetector, mealplanner) check what
// they send and what they get back against the service's contract
// (docs/integrations.md). Their refusals share one error type, so that a
// job records why an answer was rejected the same way whichever service
// gave it.
var (
	// ErrInvalidRequest is wrapped by every refusal of a request before it
	// is sent: the service would answer it with 400.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrInvalidResponse is wrapped by every refusal of a service's 200
	// answer: it is absurd or inconsistent with the request, so it must be
	// rejected and recorded, never shown.
	ErrInvalidResponse = errors.New("invalid response")
)

// FieldError names the field that broke a rule of a service's contract and
// the value it had (errors.As).
type FieldError struct {
	// Service is the client's name, e.g. "workoutplanner".
	Service string
	// Field is the JSON path, e.g. "days[1].exercises[0].sets[2].weight_kg".
	Field string
	Value any
	// Rule is what the contract wants, e.g. "0..500".
	Rule string
	kind error // ErrInvalidRequest or ErrInvalidResponse
}

// BadRequest is the refusal of a request whose field breaks rule.
func BadRequest(service, field string, value any, rule string) error {
	return &FieldError{Service: service, Field: field, Value: value, Rule: rule, kind: ErrInvalidRequest}
}

// BadResponse is the refusal of an answer whose field breaks rule.
func BadResponse(service, field string, value any, rule string) error {
	return &FieldError{Service: service, Field: field, Value: value, Rule: rule, kind: ErrInvalidResponse}
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s: %v: %s", e.Service, e.kind, e.Detail()) }

// Detail is the message without the service and kind, as a service writes
// it into its error body.
func (e *FieldError) Detail() string {
	v := fmt.Sprint(e.Value)
	if s, ok := e.Value.(string); ok {
		v = fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%s = %s: want %s", e.Field, v, e.Rule)
}

// Unwrap is ErrInvalidRequest or ErrInvalidResponse.
func (e *FieldError) Unwrap() error { return e.kind }
