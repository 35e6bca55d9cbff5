package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
)

// timeoutInterceptor gives a unary RPC a deadline when its client sent none.
// The HTTP server has no write timeout, because that would cut long-lived
// streams; this bounds the work of ordinary requests instead. Streams manage
// their own lifetimes.
type timeoutInterceptor struct {
	timeout time.Duration
}

func newTimeoutInterceptor(timeout time.Duration) *timeoutInterceptor {
	return &timeoutInterceptor{timeout: timeout}
}

func (i *timeoutInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, i.timeout)
			defer cancel()
		}
		return next(ctx, req)
	}
}

func (i *timeoutInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *timeoutInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
