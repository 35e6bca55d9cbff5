package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
)

// metricsTestBranchID is the one branch metricsTestGym knows.
const metricsTestBranchID = "0190f1a4-7c3e-7000-8000-000000000001"

// metricsTestGym is a GymService that knows one branch and nothing else: just
// enough to produce both successes and a coded error. ListBranches stays
// unimplemented, which gives a third code.
type metricsTestGym struct {
	nxgv1connect.UnimplementedGymServiceHandler
}

func (metricsTestGym) GetBranch(_ context.Context, req *connect.Request[nxgv1.GetBranchRequest]) (*connect.Response[nxgv1.GetBranchResponse], error) {
	if req.Msg.GetBranchId() != metricsTestBranchID {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("branch_id: no such branch"))
	}
	return connect.NewResponse(&nxgv1.GetBranchResponse{
		Branch: &nxgv1.Branch{Id: metricsTestBranchID, Name: "Central"},
	}), nil
}

// metricsTestWatchProcedure is a server-streaming RPC served only in this
// test: GymService has no streams, and the gauge needs one.
const metricsTestWatchProcedure = "/nxg.test.v1.MetricsTestService/Watch"

type metricsTestBundle struct {
	registry    *prometheus.Registry
	interceptor *MetricsInterceptor
	server      *httptest.Server
	// release lets the Watch handler return after its first message.
	release chan struct{}
}

func setupMetrics(t *testing.T) *metricsTestBundle {
	t.Helper()
	registry := prometheus.NewRegistry()
	interceptor, err := NewMetricsInterceptor(registry)
	if err != nil {
		t.Fatalf("NewMetricsInterceptor: %v", err)
	}
	release := make(chan struct{})

	mux := http.NewServeMux()
	mux.Handle(nxgv1connect.NewGymServiceHandler(metricsTestGym{}, connect.WithInterceptors(interceptor)))
	mux.Handle(metricsTestWatchProcedure, connect.NewServerStreamHandler(metricsTestWatchProcedure,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty], stream *connect.ServerStream[wrapperspb.StringValue]) error {
			if err := stream.Send(wrapperspb.String("snapshot")); err != nil {
				return err
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		connect.WithInterceptors(interceptor),
	))
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	return &metricsTestBundle{registry: registry, interceptor: interceptor, server: server, release: release}
}

// rpcHistogramCount returns how many observations nxg_rpc_duration_seconds holds
// for procedure, read back from the registry as a scraper would see them.
func rpcHistogramCount(t *testing.T, registry *prometheus.Registry, procedure string) uint64 {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, family := range families {
		if family.GetName() != "nxg_rpc_duration_seconds" {
			continue
		}
		for _, metric := range family.GetMetric() {
			for _, label := range metric.GetLabel() {
				if label.GetName() == "procedure" && label.GetValue() == procedure {
					return metric.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

func TestMetricsInterceptor(t *testing.T) {
	t.Parallel()

	t.Run("CountsUnaryByCode", func(t *testing.T) {
		t.Parallel()
		b := setupMetrics(t)
		// The client carries the same interceptor to show the client side is
		// a pass-through: each call must be counted once, by the handler.
		client := nxgv1connect.NewGymServiceClient(b.server.Client(), b.server.URL, connect.WithInterceptors(b.interceptor))

		for range 2 {
			res, err := client.GetBranch(t.Context(), connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: metricsTestBranchID}))
			if err != nil {
				t.Fatalf("GetBranch known id: %v", err)
			}
			if res.Msg.GetBranch().GetName() != "Central" {
				t.Fatalf("GetBranch returned %v", res.Msg)
			}
		}
		_, err := client.GetBranch(t.Context(), connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: "0190f1a4-7c3e-7000-8000-00000000ffff"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetBranch unknown id: err = %v, want not_found", err)
		}
		_, err = client.ListBranches(t.Context(), connect.NewRequest(&nxgv1.ListBranchesRequest{}))
		if connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Fatalf("ListBranches: err = %v, want unimplemented", err)
		}

		want := `
# HELP nxg_rpc_requests_total RPCs handled, by procedure and Connect code ("ok" on success).
# TYPE nxg_rpc_requests_total counter
nxg_rpc_requests_total{code="not_found",procedure="/nxg.v1.GymService/GetBranch"} 1
nxg_rpc_requests_total{code="ok",procedure="/nxg.v1.GymService/GetBranch"} 2
nxg_rpc_requests_total{code="unimplemented",procedure="/nxg.v1.GymService/ListBranches"} 1
`
		if err := testutil.GatherAndCompare(b.registry, strings.NewReader(want), "nxg_rpc_requests_total"); err != nil {
			t.Fatal(err)
		}
		if got := rpcHistogramCount(t, b.registry, nxgv1connect.GymServiceGetBranchProcedure); got != 3 {
			t.Fatalf("GetBranch duration observations = %d, want 3", got)
		}
		if got := rpcHistogramCount(t, b.registry, nxgv1connect.GymServiceListBranchesProcedure); got != 1 {
			t.Fatalf("ListBranches duration observations = %d, want 1", got)
		}
		// Unary calls are not streams, so the gauge has no series at all.
		if got := testutil.CollectAndCount(b.interceptor.streams); got != 0 {
			t.Fatalf("stream gauge has %d series after unary calls, want 0", got)
		}
	})

	t.Run("CountsGRPCWebLikeConnect", func(t *testing.T) {
		t.Parallel()
		b := setupMetrics(t)
		// The staff dashboard speaks gRPC-Web; its calls must land in the
		// same series as Connect's, keyed by procedure, not by protocol.
		client := nxgv1connect.NewGymServiceClient(b.server.Client(), b.server.URL, connect.WithGRPCWeb())
		if _, err := client.GetBranch(t.Context(), connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: metricsTestBranchID})); err != nil {
			t.Fatalf("GetBranch over gRPC-Web: %v", err)
		}
		_, err := client.GetBranch(t.Context(), connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: "nope"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetBranch unknown id over gRPC-Web: err = %v, want not_found", err)
		}
		ok := b.interceptor.requests.WithLabelValues(nxgv1connect.GymServiceGetBranchProcedure, "ok")
		if got := testutil.ToFloat64(ok); got != 1 {
			t.Fatalf("ok count = %v, want 1", got)
		}
		notFound := b.interceptor.requests.WithLabelValues(nxgv1connect.GymServiceGetBranchProcedure, "not_found")
		if got := testutil.ToFloat64(notFound); got != 1 {
			t.Fatalf("not_found count = %v, want 1", got)
		}
	})

	t.Run("TracksActiveStreams", func(t *testing.T) {
		t.Parallel()
		b := setupMetrics(t)
		client := connect.NewClient[emptypb.Empty, wrapperspb.StringValue](b.server.Client(), b.server.URL+metricsTestWatchProcedure)
		stream, err := client.CallServerStream(t.Context(), connect.NewRequest(&emptypb.Empty{}))
		if err != nil {
			t.Fatalf("open stream: %v", err)
		}
		defer stream.Close()

		// Once the first message has arrived the handler is running, so the
		// stream must be counted as active.
		if !stream.Receive() {
			t.Fatalf("no first message: %v", stream.Err())
		}
		active := b.interceptor.streams.WithLabelValues(metricsTestWatchProcedure)
		if got := testutil.ToFloat64(active); got != 1 {
			t.Fatalf("active streams while open = %v, want 1", got)
		}
		if got := rpcHistogramCount(t, b.registry, metricsTestWatchProcedure); got != 0 {
			t.Fatalf("duration observed %d times before the stream ended, want 0", got)
		}

		// Connect writes the end of the stream only after the wrapped handler
		// has returned, so once the client sees the end the gauge is down.
		close(b.release)
		for stream.Receive() {
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream ended with %v", err)
		}
		if got := testutil.ToFloat64(active); got != 0 {
			t.Fatalf("active streams after close = %v, want 0", got)
		}
		if got := testutil.ToFloat64(b.interceptor.requests.WithLabelValues(metricsTestWatchProcedure, "ok")); got != 1 {
			t.Fatalf("stream ok count = %v, want 1", got)
		}
		if got := rpcHistogramCount(t, b.registry, metricsTestWatchProcedure); got != 1 {
			t.Fatalf("stream duration observations = %d, want 1", got)
		}
	})

	t.Run("ReturnsRegistrationError", func(t *testing.T) {
		t.Parallel()
		registry := prometheus.NewRegistry()
		if _, err := NewMetricsInterceptor(registry); err != nil {
			t.Fatalf("first NewMetricsInterceptor: %v", err)
		}
		_, err := NewMetricsInterceptor(registry)
		var already prometheus.AlreadyRegisteredError
		if !errors.As(err, &already) {
			t.Fatalf("second NewMetricsInterceptor: err = %v, want AlreadyRegisteredError", err)
		}
	})

	t.Run("LeavesRegistryCleanOnError", func(t *testing.T) {
		t.Parallel()
		registry := prometheus.NewRegistry()
		// Taking the last of the three names makes the constructor fail after
		// registering the first two, which it must then take back.
		registry.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "nxg_rpc_streams_active", Help: "taken"}))
		if _, err := NewMetricsInterceptor(registry); err == nil {
			t.Fatal("NewMetricsInterceptor over a taken name succeeded, want an error")
		}
		// An identical collector from another interceptor registers only if
		// the failed constructor took its own back.
		spare, err := NewMetricsInterceptor(prometheus.NewRegistry())
		if err != nil {
			t.Fatalf("NewMetricsInterceptor on a fresh registry: %v", err)
		}
		if err := registry.Register(spare.requests); err != nil {
			t.Fatalf("nxg_rpc_requests_total still registered after a failed constructor: %v", err)
		}
	})
}
