package server

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/ratelimit"
)

// General limits on every RPC: generous enough that no person using the
// app or dashboard meets them, tight enough that one client cannot take the
// service from others. Sign-in and registration have their own, stricter
// limits in the auth service.
var (
	perIPLimit   = ratelimit.Limit{Rate: 50, Period: time.Second, Burst: 100}
	perUserLimit = ratelimit.Limit{Rate: 20, Period: time.Second, Burst: 60}
)

// rateLimitInterceptor applies the per-IP limit to every call and the
// per-user limit to authenticated ones. It runs after authentication so the
// user is known. When Redis fails it lets calls through and logs: losing
// rate limiting for a moment is better than refusing every member.
type rateLimitInterceptor struct {
	limiter *ratelimit.Limiter
	logger  *slog.Logger
}

func newRateLimitInterceptor(limiter *ratelimit.Limiter, logger *slog.Logger) *rateLimitInterceptor {
	return &rateLimitInterceptor{limiter: limiter, logger: logger}
}

func (i *rateLimitInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		if err := i.allow(ctx); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *rateLimitInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *rateLimitInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.allow(ctx); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (i *rateLimitInterceptor) allow(ctx context.Context) error {
	if ip := clientinfo.From(ctx).IP; ip != "" {
		if err := i.check(ctx, "ip:"+ip, perIPLimit); err != nil {
			return err
		}
	}
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return i.check(ctx, "user:"+p.UserID.String(), perUserLimit)
	}
	return nil
}

func (i *rateLimitInterceptor) check(ctx context.Context, key string, limit ratelimit.Limit) error {
	err := i.limiter.Allow(ctx, key, limit)
	if err == nil {
		return nil
	}
	if _, ok := apperr.As(err); ok {
		return err
	}
	i.logger.WarnContext(ctx, "rate limiter unavailable; letting the call through", "error", err)
	return nil
}
