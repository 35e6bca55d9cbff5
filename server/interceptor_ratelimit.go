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

// RateLimits are the general limits on every RPC: generous enough that no
// person using the app or dashboard meets them, tight enough that one client
// cannot take the service from others. Sign-in and registration have their
// own, stricter limits in the auth service. A limit with Rate 0 is off.
type RateLimits struct {
	// PerIP applies to every call from one client address, except calls of
	// signed-in devices: a branch's consoles share the gym's one address.
	PerIP ratelimit.Limit
	// PerUser applies to every call of one signed-in account.
	PerUser ratelimit.Limit
	// PerDevice applies to every call of one signed-in device.
	PerDevice ratelimit.Limit
}

// defaultRateLimits apply when Options.RateLimits is nil. A console sends a
// heartbeat every few seconds and a set every few seconds at most, so 10
// calls a second is far above any honest device.
var defaultRateLimits = RateLimits{
	PerIP:     ratelimit.Limit{Rate: 50, Period: time.Second, Burst: 100},
	PerUser:   ratelimit.Limit{Rate: 20, Period: time.Second, Burst: 60},
	PerDevice: ratelimit.Limit{Rate: 10, Period: time.Second, Burst: 30},
}

// PerSecondLimits turns per-second rates (from configuration) into limits
// with the default bursts: twice the rate per address, three times per
// account or device. A rate of 0 turns that limit off.
func PerSecondLimits(perIP, perUser, perDevice int) RateLimits {
	limit := func(rate, burst int) ratelimit.Limit {
		return ratelimit.Limit{Rate: rate, Period: time.Second, Burst: rate * burst}
	}
	return RateLimits{PerIP: limit(perIP, 2), PerUser: limit(perUser, 3), PerDevice: limit(perDevice, 3)}
}

// rateLimitInterceptor applies the per-IP limit to every call and the
// per-user limit to authenticated ones. It runs after authentication so the
// user is known. When Redis fails it lets calls through and logs: losing
// rate limiting for a moment is better than refusing every member.
type rateLimitInterceptor struct {
	limiter *ratelimit.Limiter
	limits  *RateLimits
	logger  *slog.Logger
}

// newRateLimitInterceptor applies limits, or the defaults when nil. The
// defaults are read per call, so benchmarks can lift them.
func newRateLimitInterceptor(limiter *ratelimit.Limiter, limits *RateLimits, logger *slog.Logger) *rateLimitInterceptor {
	return &rateLimitInterceptor{limiter: limiter, limits: limits, logger: logger}
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

// allow applies the limits that concern the caller in ctx. A signed-in
// device is limited as itself only: the consoles of a branch share the
// gym's address, so a per-address limit would let a busy floor starve
// itself.
func (i *rateLimitInterceptor) allow(ctx context.Context) error {
	limits := defaultRateLimits
	if i.limits != nil {
		limits = *i.limits
	}
	p, signedIn := auth.PrincipalFrom(ctx)
	if signedIn && p.IsDevice() {
		return i.check(ctx, "device:"+p.UserID.String(), limits.PerDevice)
	}
	if ip := clientinfo.From(ctx).IP; ip != "" {
		if err := i.check(ctx, "ip:"+ip, limits.PerIP); err != nil {
			return err
		}
	}
	if signedIn {
		return i.check(ctx, "user:"+p.UserID.String(), limits.PerUser)
	}
	return nil
}

func (i *rateLimitInterceptor) check(ctx context.Context, key string, limit ratelimit.Limit) error {
	if limit.Rate <= 0 {
		return nil
	}
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
