package server

import (
	"context"
	"strings"

	"connectrpc.com/connect"
	"github.com/getsentry/sentry-go"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/auth"
	"github.com/nxg-fitness/nxg/internal/auth/token"
)

// deviceProcedures are all a device token may call. Every other service
// assumes a person's account behind the token (a profile, memberships,
// sessions listed by user); refusing devices here, in one place, keeps a
// device id from ever reaching code that reads it as a user id.
var deviceProcedures = map[string]bool{
	nxgv1connect.MachineServiceAttachProcedure:             true,
	nxgv1connect.MachineServiceReportActivityProcedure:     true,
	nxgv1connect.MachineServiceListMachinesProcedure:       true,
	nxgv1connect.MachineServiceGetMachineProcedure:         true,
	nxgv1connect.MachineServiceWatchMachinesProcedure:      true,
	nxgv1connect.GymSessionServiceGetCheckinCodeProcedure:  true,
	nxgv1connect.GymSessionServiceStartSessionProcedure:    true,
	nxgv1connect.AuthServiceCreateWebSocketTicketProcedure: true,
	// A machine's console follows the workout of the member linked to it
	// (workoutService.WatchWorkout checks the link; never a device's own).
	nxgv1connect.WorkoutServiceWatchWorkoutProcedure: true,
}

// deviceMayCall reports whether a device token may call procedure; the
// WebSocket endpoint asks it too, so devices are held to the same rules
// there.
func deviceMayCall(procedure string) bool { return deviceProcedures[procedure] }

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
		ctx, err := i.authenticate(ctx, req.Spec().Procedure, req.Header().Get("Authorization"))
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
		ctx, err := i.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader().Get("Authorization"))
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

func (i *authInterceptor) authenticate(ctx context.Context, procedure, authorization string) (context.Context, error) {
	p, err := i.authn.Authenticate(ctx, authorization)
	if err != nil {
		return ctx, err
	}
	if p.Role == token.RoleDevice && !deviceMayCall(procedure) {
		return ctx, apperr.PermissionDenied("devices may not call %s", strings.TrimPrefix(procedure, "/"))
	}
	if state := callStateFrom(ctx); state != nil {
		state.userID = p.UserID.String()
	}
	if hub := sentry.GetHubFromContext(ctx); hub != nil {
		hub.Scope().SetUser(sentry.User{ID: p.UserID.String()})
	}
	return auth.WithPrincipal(ctx, p), nil
}
