package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/apperr"
	"github.com/nxg-fitness/nxg/internal/requestid"
)

// faultyGym fails in a way chosen by the branch id it is asked for, so the
// whole interceptor chain can be exercised with every kind of error.
type faultyGym struct {
	nxgv1connect.UnimplementedGymServiceHandler
}

const (
	idPlainError     = "00000000-0000-7000-8000-000000000001"
	idPanic          = "00000000-0000-7000-8000-000000000002"
	idLimited        = "00000000-0000-7000-8000-000000000003"
	idBadField       = "00000000-0000-7000-8000-000000000004"
	idUnavailable    = "00000000-0000-7000-8000-000000000005"
	idSlow           = "00000000-0000-7000-8000-000000000006"
	idConnectIntern  = "00000000-0000-7000-8000-000000000007"
	idConnectPrecond = "00000000-0000-7000-8000-000000000008"
)

func (faultyGym) GetBranch(ctx context.Context, req *connect.Request[nxgv1.GetBranchRequest]) (*connect.Response[nxgv1.GetBranchResponse], error) {
	switch req.Msg.GetBranchId() {
	case idPlainError:
		return nil, errors.New("pq: password authentication failed for user secret_admin")
	case idPanic:
		panic("nil map write in secret_module")
	case idLimited:
		return nil, apperr.ResourceExhausted(90*time.Second, "too many check-ins")
	case idBadField:
		return nil, apperr.InvalidArgument("branch_id", "is closed for refurbishment")
	case idUnavailable:
		return nil, apperr.Unavailable(30*time.Second, errors.New("dial tcp 10.0.0.7:443: secret_upstream refused"), "the workout planner is unavailable")
	case idSlow:
		<-ctx.Done()
		return nil, ctx.Err()
	case idConnectIntern:
		return nil, connect.NewError(connect.CodeInternal, errors.New("driver secret_detail"))
	case idConnectPrecond:
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("branch is closed"))
	}
	return connect.NewResponse(&nxgv1.GetBranchResponse{Branch: &nxgv1.Branch{Id: req.Msg.GetBranchId()}}), nil
}

func setupFaulty(t *testing.T, unaryTimeout time.Duration) (nxgv1connect.GymServiceClient, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	metrics, err := NewMetricsInterceptor(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), Metrics: metrics, UnaryTimeout: unaryTimeout}
	mux := http.NewServeMux()
	mux.Handle(nxgv1connect.NewGymServiceHandler(faultyGym{}, handlerOptions(opts)...))
	srv := httptest.NewServer(withRequestID(mux))
	t.Cleanup(srv.Close)
	return nxgv1connect.NewGymServiceClient(http.DefaultClient, srv.URL), logs
}

func TestErrorInterceptor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	get := func(client nxgv1connect.GymServiceClient, id string) (*connect.Response[nxgv1.GetBranchResponse], error) {
		req := connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: id})
		req.Header().Set(requestid.Header, "req-"+id[len(id)-1:])
		return client.GetBranch(ctx, req)
	}

	t.Run("InternalErrorsAreHiddenAndLogged", func(t *testing.T) {
		t.Parallel()
		client, logs := setupFaulty(t, time.Second)
		for _, id := range []string{idPlainError, idPanic, idConnectIntern} {
			_, err := get(client, id)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInternal {
				t.Fatalf("%s: %v, want internal", id, err)
			}
			want := "internal error (request id req-" + id[len(id)-1:] + ")"
			if ce.Message() != want {
				t.Fatalf("%s: message %q, want %q", id, ce.Message(), want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("%s: internal detail leaked: %q", id, err.Error())
			}
		}
		for _, want := range []string{"secret_admin", "secret_module", "secret_detail", `"request_id":"req-1"`, `"stack"`} {
			if !strings.Contains(logs.String(), want) {
				t.Fatalf("log lacks %q:\n%s", want, logs.String())
			}
		}
	})

	t.Run("ServerKeepsServingAfterPanic", func(t *testing.T) {
		t.Parallel()
		client, _ := setupFaulty(t, time.Second)
		if _, err := get(client, idPanic); connect.CodeOf(err) != connect.CodeInternal {
			t.Fatalf("panic: %v", err)
		}
		res, err := get(client, "00000000-0000-7000-8000-0000000000ff")
		if err != nil || res.Msg.GetBranch().GetId() == "" {
			t.Fatalf("after a panic: %v", err)
		}
	})

	t.Run("ResourceExhaustedCarriesRetryInfo", func(t *testing.T) {
		t.Parallel()
		client, _ := setupFaulty(t, time.Second)
		_, err := get(client, idLimited)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || ce.Message() != "too many check-ins" {
			t.Fatalf("got %v", err)
		}
		if d := retryDelay(t, ce); d != 90*time.Second {
			t.Fatalf("retry delay %v, want 90s", d)
		}
	})

	t.Run("UnavailableHidesCauseButSaysWhenToRetry", func(t *testing.T) {
		t.Parallel()
		client, logs := setupFaulty(t, time.Second)
		_, err := get(client, idUnavailable)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable || ce.Message() != "the workout planner is unavailable" {
			t.Fatalf("got %v", err)
		}
		if retryDelay(t, ce) != 30*time.Second {
			t.Fatal("no 30s retry info")
		}
		if !strings.Contains(logs.String(), "secret_upstream") {
			t.Fatal("cause of an outside failure not logged")
		}
	})

	t.Run("InvalidArgumentNamesTheField", func(t *testing.T) {
		t.Parallel()
		client, _ := setupFaulty(t, time.Second)
		_, err := get(client, idBadField)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || ce.Message() != "branch_id: is closed for refurbishment" {
			t.Fatalf("got %v", err)
		}
		var found bool
		for _, d := range ce.Details() {
			v, err := d.Value()
			if err != nil {
				t.Fatal(err)
			}
			if br, ok := v.(*errdetails.BadRequest); ok && br.GetFieldViolations()[0].GetField() == "branch_id" {
				found = true
			}
		}
		if !found {
			t.Fatal("no google.rpc.BadRequest detail naming branch_id")
		}
	})

	t.Run("DeliberateConnectErrorsPassThrough", func(t *testing.T) {
		t.Parallel()
		client, _ := setupFaulty(t, time.Second)
		_, err := get(client, idConnectPrecond)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition || ce.Message() != "branch is closed" {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("UnaryTimeoutBoundsSlowHandlers", func(t *testing.T) {
		t.Parallel()
		client, _ := setupFaulty(t, 50*time.Millisecond)
		_, err := get(client, idSlow)
		if connect.CodeOf(err) != connect.CodeDeadlineExceeded {
			t.Fatalf("got %v, want deadline_exceeded", err)
		}
	})
}

func retryDelay(t *testing.T, ce *connect.Error) time.Duration {
	t.Helper()
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatal(err)
		}
		if ri, ok := v.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatal("no google.rpc.RetryInfo detail")
	return 0
}
