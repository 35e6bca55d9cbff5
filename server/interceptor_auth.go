package server

import (
	"context"

	"connectrpc.com/connect"
	"github.com/getsentry/sentry-go"

	"github.com/nxg-fitness/nxg/internal/auth"
)

// authInterceptor authenticates every RPC that is not public: a valid
// access token whose session is alive, or unauthenticated. The principal is
// put in the context for handlers, the access log and Sentry (by id only:
// never emails or tokens).
type authInterceptor struct {
	authn  *auth.Authenticator
	public map[string]bool
}

func newAuthInterceptor(authn *auth.Authenticator, publicProcedures []string) *authInterceptor {
	public := make(map[string]bool, len(publicProcedures))
	for _, p := range publicProcedures {
		public[p] = true
	}
	return &authInterceptor{authn: authn, public: public}
}

func (i *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient || i.public[req.Spec().Procedure] {
			return next(ctx, req)
		}
		ctx, err := i.authenticate(ctx, req.Header().Get("Authorization"))
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if i.public[conn.Spec().Procedure] {
			return next(ctx, conn)
		}
		ctx, err := i.authenticate(ctx, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (i *authInterceptor) authenticate(ctx context.Context, authorization string) (context.Context, error) {
	p, err := i.authn.Authenticate(ctx, authorization)
	if err != nil {
		return ctx, err
	}
	if state := callStateFrom(ctx); state != nil {
		state.userID = p.UserID.String()
	}
	if hub := sentry.GetHubFromContext(ctx); hub != nil {
		hub.Scope().SetUser(sentry.User{ID: p.UserID.String()})
	}
	return auth.WithPrincipal(ctx, p), nil
}
