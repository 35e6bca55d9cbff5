package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// apiTestBundle is a real API handler over a fresh database, served by an
// httptest server that speaks HTTP/1.1 and h2c like production.
type apiTestBundle struct {
	db       *testkit.Database
	identity *identityFixture
	server   *httptest.Server
	logs     *syncBuffer
	// h2c is an HTTP client that speaks cleartext HTTP/2, as gRPC needs.
	h2c *http.Client
}

func setupAPI(t testing.TB, mutate ...func(*Options)) *apiTestBundle {
	t.Helper()
	db := testkit.NewDatabase(t)
	logs := &syncBuffer{}
	registry := prometheus.NewRegistry()
	metrics, err := NewMetricsInterceptor(registry)
	if err != nil {
		t.Fatal(err)
	}
	identity := newIdentity(t, db)
	opts := Options{
		Pool:      db.Pool,
		Logger:    slog.New(slog.NewJSONHandler(logs, nil)),
		Readiness: NewReadiness(time.Second, Check{Name: "postgres", Fn: db.Pool.Ping}),
		Metrics:   metrics,
		Identity:  identity.Identity,
		Floor:     newFloor(t, db),
	}
	for _, m := range mutate {
		m(&opts)
	}
	handler, err := NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Config = NewHTTPServer("", handler, false, opts.Logger)
	srv.Start()
	t.Cleanup(srv.Close)

	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: protocols}}
	t.Cleanup(h2c.CloseIdleConnections)
	return &apiTestBundle{db: db, identity: identity, server: srv, logs: logs, h2c: h2c}
}

// insertBranch adds a branch with Monday hours and returns its id.
func (b *apiTestBundle) insertBranch(t testing.TB, name string) string {
	t.Helper()
	ctx := context.Background()
	var id string
	err := b.db.Pool.QueryRow(ctx,
		`INSERT INTO branches (name, address, timezone, capacity) VALUES ($1, $2, 'Europe/London', 120) RETURNING id::text`,
		name, name+" street").Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.db.Pool.Exec(ctx,
		`INSERT INTO branch_opening_hours (branch_id, weekday, opens_at, closes_at) VALUES ($1, 1, '06:00', '24:00'), ($1, 6, '08:00', '20:30')`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// clients returns the generated GymService client over every protocol and
// encoding the API serves.
func (b *apiTestBundle) clients() map[string]nxgv1connect.GymServiceClient {
	url := b.server.URL
	return map[string]nxgv1connect.GymServiceClient{
		"ConnectJSON":  nxgv1connect.NewGymServiceClient(http.DefaultClient, url, connect.WithProtoJSON()),
		"ConnectProto": nxgv1connect.NewGymServiceClient(http.DefaultClient, url),
		"ConnectGET":   nxgv1connect.NewGymServiceClient(http.DefaultClient, url, connect.WithProtoJSON(), connect.WithHTTPGet()),
		"GRPC":         nxgv1connect.NewGymServiceClient(b.h2c, url, connect.WithGRPC()),
		"GRPCWeb":      nxgv1connect.NewGymServiceClient(http.DefaultClient, url, connect.WithGRPCWeb()),
	}
}

func TestGymService(t *testing.T) {
	t.Parallel()

	t.Run("GetBranchOverEveryProtocol", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		id := b.insertBranch(t, "NXG Camden")
		for name, client := range b.clients() {
			t.Run(name, func(t *testing.T) {
				res, err := client.GetBranch(context.Background(), connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: id}))
				if err != nil {
					t.Fatalf("GetBranch: %v", err)
				}
				got := res.Msg.GetBranch()
				if got.GetId() != id || got.GetName() != "NXG Camden" || got.GetTimezone() != "Europe/London" || got.GetCapacity() != 120 {
					t.Fatalf("branch = %v", got)
				}
				hours := got.GetOpeningHours()
				if len(hours) != 2 ||
					hours[0].GetWeekday() != nxgv1.Weekday_WEEKDAY_MONDAY || hours[0].GetOpensAt() != "06:00" || hours[0].GetClosesAt() != "24:00" ||
					hours[1].GetWeekday() != nxgv1.Weekday_WEEKDAY_SATURDAY || hours[1].GetClosesAt() != "20:30" {
					t.Fatalf("opening hours = %v", hours)
				}
				if got.GetCreatedAt() == nil || got.GetUpdatedAt() == nil {
					t.Fatal("timestamps missing")
				}
			})
		}
	})

	t.Run("GetBranchWithGRPCGo", func(t *testing.T) {
		t.Parallel()
		// grpc-go is what other companies' services use: interoperating
		// with it proves the gRPC side is the real protocol.
		b := setupAPI(t)
		id := b.insertBranch(t, "NXG Hackney")
		conn, err := grpc.NewClient(strings.TrimPrefix(b.server.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		res := &nxgv1.GetBranchResponse{}
		if err := conn.Invoke(context.Background(), nxgv1connect.GymServiceGetBranchProcedure, &nxgv1.GetBranchRequest{BranchId: id}, res); err != nil {
			t.Fatalf("Invoke: %v", err)
		}
		if res.GetBranch().GetName() != "NXG Hackney" {
			t.Fatalf("name = %q", res.GetBranch().GetName())
		}
		missing := "0190c2a4-0000-7000-8000-000000000000"
		err = conn.Invoke(context.Background(), nxgv1connect.GymServiceGetBranchProcedure, &nxgv1.GetBranchRequest{BranchId: missing}, res)
		if status.Code(err) != codes.NotFound {
			t.Fatalf("missing branch: %v, want NotFound", err)
		}
	})

	t.Run("ListBranchesPaginatesInNameOrder", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		// Inserted out of order, with a name that would sort differently
		// by id, to prove the order is by name.
		for _, n := range []string{"NXG Delta", "NXG Alpha", "NXG Echo", "NXG Charlie", "NXG Bravo"} {
			b.insertBranch(t, n)
		}
		for name, client := range b.clients() {
			t.Run(name, func(t *testing.T) {
				var names []string
				token := ""
				pages := 0
				for {
					res, err := client.ListBranches(context.Background(), connect.NewRequest(&nxgv1.ListBranchesRequest{PageSize: 2, PageToken: token}))
					if err != nil {
						t.Fatalf("ListBranches page %d: %v", pages+1, err)
					}
					pages++
					if len(res.Msg.GetBranches()) > 2 {
						t.Fatalf("page of %d branches, asked for 2", len(res.Msg.GetBranches()))
					}
					for _, br := range res.Msg.GetBranches() {
						names = append(names, br.GetName())
						if len(br.GetOpeningHours()) != 2 {
							t.Fatalf("%s has %d opening intervals, want 2", br.GetName(), len(br.GetOpeningHours()))
						}
					}
					token = res.Msg.GetNextPageToken()
					if token == "" {
						break
					}
					if pages > 5 {
						t.Fatal("pagination does not end")
					}
				}
				want := "NXG Alpha,NXG Bravo,NXG Charlie,NXG Delta,NXG Echo"
				if got := strings.Join(names, ","); got != want || pages != 3 {
					t.Fatalf("names = %s in %d pages; want %s in 3", got, pages, want)
				}
			})
		}
	})

	t.Run("ListBranchesDefaultPageHoldsAll", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		for i := range 3 {
			b.insertBranch(t, fmt.Sprintf("NXG %02d", i))
		}
		res, err := b.clients()["ConnectJSON"].ListBranches(context.Background(), connect.NewRequest(&nxgv1.ListBranchesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.GetBranches()) != 3 || res.Msg.GetNextPageToken() != "" {
			t.Fatalf("got %d branches, token %q; want 3 and no token", len(res.Msg.GetBranches()), res.Msg.GetNextPageToken())
		}
	})

	t.Run("EmptyListHasNoToken", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		res, err := b.clients()["ConnectProto"].ListBranches(context.Background(), connect.NewRequest(&nxgv1.ListBranchesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.GetBranches()) != 0 || res.Msg.GetNextPageToken() != "" {
			t.Fatalf("empty list = %v", res.Msg)
		}
	})

	t.Run("ClientMistakes", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		b.insertBranch(t, "NXG One")
		ctx := context.Background()
		for name, client := range b.clients() {
			t.Run(name, func(t *testing.T) {
				cases := []struct {
					name    string
					call    func() error
					code    connect.Code
					message string
				}{
					{"GetBranchNotFound", func() error {
						_, err := client.GetBranch(ctx, connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: "0190c2a4-0000-7000-8000-000000000000"}))
						return err
					}, connect.CodeNotFound, "branch 0190c2a4-0000-7000-8000-000000000000 not found"},
					{"GetBranchBadID", func() error {
						_, err := client.GetBranch(ctx, connect.NewRequest(&nxgv1.GetBranchRequest{BranchId: "42"}))
						return err
					}, connect.CodeInvalidArgument, "branch_id"},
					{"PageSizeTooLarge", func() error {
						_, err := client.ListBranches(ctx, connect.NewRequest(&nxgv1.ListBranchesRequest{PageSize: 500}))
						return err
					}, connect.CodeInvalidArgument, "page_size"},
					{"NegativePageSize", func() error {
						_, err := client.ListBranches(ctx, connect.NewRequest(&nxgv1.ListBranchesRequest{PageSize: -1}))
						return err
					}, connect.CodeInvalidArgument, "page_size"},
					{"ForgedPageToken", func() error {
						_, err := client.ListBranches(ctx, connect.NewRequest(&nxgv1.ListBranchesRequest{PageToken: "not-a-token"}))
						return err
					}, connect.CodeInvalidArgument, "page_token"},
				}
				for _, c := range cases {
					err := c.call()
					if connect.CodeOf(err) != c.code {
						t.Fatalf("%s: code %v (%v), want %v", c.name, connect.CodeOf(err), err, c.code)
					}
					if !strings.Contains(err.Error(), c.message) {
						t.Fatalf("%s: message %q does not name %q", c.name, err.Error(), c.message)
					}
				}
			})
		}
	})

	t.Run("OversizedMessageIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		body := append([]byte(`{"pageToken":"`), bytes.Repeat([]byte("a"), maxMessageBytes+1)...)
		body = append(body, `"}`...)
		res, err := http.Post(b.server.URL+nxgv1connect.GymServiceListBranchesProcedure, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests && res.StatusCode != http.StatusRequestEntityTooLarge && res.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d for an oversized message", res.StatusCode)
		}
		if res.StatusCode >= 500 {
			t.Fatal("a client mistake must never be a 5xx")
		}
	})

	t.Run("DatabaseFailureIsInternalWithoutDetails", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		// Break the schema under the handler: the driver's error names the
		// table, which must reach the log but never the client.
		if _, err := b.db.Pool.Exec(context.Background(), `ALTER TABLE branch_opening_hours RENAME TO secret_table_name`); err != nil {
			t.Fatal(err)
		}
		_, err := b.clients()["ConnectJSON"].ListBranches(context.Background(), connect.NewRequest(&nxgv1.ListBranchesRequest{}))
		if connect.CodeOf(err) != connect.CodeInternal {
			t.Fatalf("code = %v, want internal", connect.CodeOf(err))
		}
		var ce *connect.Error
		if !errors.As(err, &ce) || !strings.HasPrefix(ce.Message(), "internal error (request id ") {
			t.Fatalf("message = %q", err.Error())
		}
		if strings.Contains(err.Error(), "branch_opening_hours") || strings.Contains(err.Error(), "SQLSTATE") {
			t.Fatalf("internal cause leaked to the client: %q", err.Error())
		}
		if !strings.Contains(b.logs.String(), "branch_opening_hours") {
			t.Fatalf("internal cause not logged; logs:\n%s", b.logs.String())
		}
	})
}
