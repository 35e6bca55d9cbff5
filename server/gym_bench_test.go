package server

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
)

// BenchmarkGymService measures the whole request path (HTTP, interceptors,
// validation, one read transaction, proto encoding) against a real
// PostgreSQL, for the read endpoints members hit most. Run with
//
//	go test ./server -run '^$' -bench GymService -benchmem
//
// The numbers depend on the machine; the closing notes of the work that
// changes this path record them with the machine they came from.
func BenchmarkGymService(b *testing.B) {
	liftGeneralLimits(b)
	bundle := setupAPI(b)
	var id string
	for i := range 20 {
		id = bundle.insertBranch(b, fmt.Sprintf("NXG Bench %02d", i))
	}
	ctx := context.Background()
	for _, name := range []string{"ConnectJSON", "ConnectProto", "GRPC"} {
		client := bundle.clients()[name]
		b.Run("GetBranch/"+name, func(b *testing.B) {
			req := &nxgv1.GetBranchRequest{BranchId: id}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.GetBranch(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("ListBranches20/"+name, func(b *testing.B) {
			req := &nxgv1.ListBranchesRequest{PageSize: 20}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.ListBranches(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
