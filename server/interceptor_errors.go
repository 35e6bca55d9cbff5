package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"connectrpc.com/connect"
	"github.com/getsentry/sentry-go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// errorInterceptor is the one place where errors become Connect errors. It
// also recovers panics, because a panic is just the worst kind of internal
// error and must reach the client the same way: as a generic message with
// the request id, never as a dropped connection or a stack trace.
type errorInterceptor struct {
	logger *slog.Logger
}

func newErrorInterceptor(logger *slog.Logger) *errorInterceptor {
	return &errorInterceptor{logger: logger}
}

func (i *errorInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (resp connect.AnyResponse, err error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		defer func() {
			if r := recover(); r != nil {
				resp, err = nil, i.panicked(ctx, req.Spec().Procedure, r)
			}
		}()
		resp, err = next(ctx, req)
		if err != nil {
			return nil, i.mapError(ctx, req.Spec().Procedure, err)
		}
		return resp, nil
	}
}

func (i *errorInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *errorInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = i.panicked(ctx, conn.Spec().Procedure, r)
			}
		}()
		return i.mapError(ctx, conn.Spec().Procedure, next(ctx, conn))
	}
}

func (i *errorInterceptor) panicked(ctx context.Context, procedure string, r any) error {
	i.logger.ErrorContext(ctx, "handler panicked",
		"procedure", procedure, "request_id", requestid.From(ctx),
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if hub := sentry.GetHubFromContext(ctx); hub != nil {
		hub.RecoverWithContext(ctx, r)
	}
	return internalError(ctx)
}

// mapError turns any error into the Connect error the client should see.
func (i *errorInterceptor) mapError(ctx context.Context, procedure string, err error) error {
	if err == nil {
		return nil
	}
	if appErr, ok := apperr.As(err); ok {
		if appErr.Cause != nil {
			// The cause explains an expected failure (an outside service
			// down, say) to operators; it is not sent.
			i.logger.WarnContext(ctx, "request failed", "procedure", procedure,
				"request_id", requestid.From(ctx), "error", err)
		}
		return toConnectError(appErr)
	}
	var connectErr *connect.Error
	if errors.As(err, &connectErr) {
		switch connectErr.Code() {
		case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
			// A Connect error with an internal code was not written for
			// clients (it may wrap a driver message): treat it as a fault.
		default:
			// Validation, framework and deliberate handler errors are
			// already in client terms.
			return err
		}
	}
	if errors.Is(err, context.Canceled) {
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
	}
	i.logger.ErrorContext(ctx, "internal error", "procedure", procedure,
		"request_id", requestid.From(ctx), "error", err.Error())
	if hub := sentry.GetHubFromContext(ctx); hub != nil {
		hub.CaptureException(err)
	}
	return internalError(ctx)
}

// internalError is what a client sees of a fault: no cause, only the id to
// quote to support.
func internalError(ctx context.Context) error {
	msg := "internal error"
	if id := requestid.From(ctx); id != "" {
		msg += " (request id " + id + ")"
	}
	return connect.NewError(connect.CodeInternal, errors.New(msg))
}

var connectCodes = map[apperr.Code]connect.Code{
	apperr.CodeInvalidArgument:    connect.CodeInvalidArgument,
	apperr.CodeNotFound:           connect.CodeNotFound,
	apperr.CodeAlreadyExists:      connect.CodeAlreadyExists,
	apperr.CodeFailedPrecondition: connect.CodeFailedPrecondition,
	apperr.CodePermissionDenied:   connect.CodePermissionDenied,
	apperr.CodeUnauthenticated:    connect.CodeUnauthenticated,
	apperr.CodeResourceExhausted:  connect.CodeResourceExhausted,
	apperr.CodeUnavailable:        connect.CodeUnavailable,
	apperr.CodeAborted:            connect.CodeAborted,
}

// toConnectError converts a domain error, attaching the standard
// google.rpc details clients know how to read: BadRequest naming the field,
// RetryInfo saying when to retry.
func toConnectError(e *apperr.Error) *connect.Error {
	code, ok := connectCodes[e.Code]
	if !ok {
		code = connect.CodeInternal
	}
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + e.Message
	}
	ce := connect.NewError(code, errors.New(msg))
	if e.Field != "" {
		addDetail(ce, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: e.Field, Description: e.Message},
		}})
	}
	if e.RetryAfter > 0 {
		addDetail(ce, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	return ce
}

// addDetail attaches msg to ce. NewErrorDetail fails only for a message that
// cannot be marshalled, which the google.rpc detail types always can.
func addDetail(ce *connect.Error, msg proto.Message) {
	if d, err := connect.NewErrorDetail(msg); err == nil {
		ce.AddDetail(d)
	}
}
