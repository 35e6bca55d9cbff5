package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/getsentry/sentry-go"

	"github.com/nxg-fitness/nxg/internal/requestid"
)

// sentryInterceptor gives every RPC its own Sentry hub, tagged with the
// procedure and request id, so an error captured by the error mapper (or a
// recovered panic) is reported with the context of the request that caused
// it. Without a DSN the process has no Sentry client and this is a no-op.
type sentryInterceptor struct{}

func newSentryInterceptor() *sentryInterceptor { return &sentryInterceptor{} }

func (i *sentryInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		return next(withSentryHub(ctx, req.Spec(), req.Peer()), req)
	}
}

func (i *sentryInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *sentryInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(withSentryHub(ctx, conn.Spec(), conn.Peer()), conn)
	}
}

func withSentryHub(ctx context.Context, spec connect.Spec, peer connect.Peer) context.Context {
	if sentry.CurrentHub().Client() == nil {
		return ctx
	}
	hub := sentry.CurrentHub().Clone()
	hub.ConfigureScope(func(scope *sentry.Scope) {
		scope.SetTag("procedure", spec.Procedure)
		scope.SetTag("protocol", peer.Protocol)
		scope.SetTag("request_id", requestid.From(ctx))
	})
	return sentry.SetHubOnContext(ctx, hub)
}
