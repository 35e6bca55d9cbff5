package server

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/nxg-fitness/nxg/internal/clientinfo"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// callState is filled in by inner interceptors for the access log, which
// runs outside them: the authenticated user, once known.
type callState struct {
	userID string
}

type callStateKey struct{}

func callStateFrom(ctx context.Context) *callState {
	s, _ := ctx.Value(callStateKey{}).(*callState)
	return s
}

// accessLogInterceptor writes one structured line per RPC (per stream, when
// it ends) with the code the client actually received. It sits outside the
// error mapper for that reason.
type accessLogInterceptor struct {
	logger *slog.Logger
}

func newAccessLogInterceptor(logger *slog.Logger) *accessLogInterceptor {
	return &accessLogInterceptor{logger: logger}
}

func (i *accessLogInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		state := &callState{}
		resp, err := next(context.WithValue(ctx, callStateKey{}, state), req)
		i.log(ctx, req.Spec(), req.Peer(), state, start, err)
		return resp, err
	}
}

func (i *accessLogInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i *accessLogInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		state := &callState{}
		err := next(context.WithValue(ctx, callStateKey{}, state), conn)
		i.log(ctx, conn.Spec(), conn.Peer(), state, start, err)
		return err
	}
}

func (i *accessLogInterceptor) log(ctx context.Context, spec connect.Spec, peer connect.Peer, state *callState, start time.Time, err error) {
	code := codeName(err)
	level := slog.LevelInfo
	switch connect.CodeOf(err) {
	case connect.CodeInternal, connect.CodeUnknown, connect.CodeDataLoss:
		if err != nil {
			level = slog.LevelError
		}
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		level = slog.LevelWarn
	}
	i.logger.LogAttrs(ctx, level, "rpc",
		slog.String("request_id", requestid.From(ctx)),
		slog.String("procedure", spec.Procedure),
		slog.String("protocol", peer.Protocol),
		slog.String("peer", peer.Addr),
		slog.String("client_ip", clientinfo.From(ctx).IP),
		slog.String("user_id", state.userID),
		slog.String("code", code),
		slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
	)
}

// codeName is the Connect code of err as written in logs and metrics, "ok"
// for success.
func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	return connect.CodeOf(err).String()
}
