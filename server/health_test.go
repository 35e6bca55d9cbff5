package server

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/requestid"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// tcpProxy forwards connections to a target until it is cut, which is how
// a test makes a real PostgreSQL stop answering without stopping it for
// every other test.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

// cut stops accepting and drops every forwarded connection.
func (p *tcpProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestReadiness(t *testing.T) {
	t.Parallel()

	t.Run("ReadyzTurns503NamingPostgresWhenItStopsAnswering", func(t *testing.T) {
		t.Parallel()
		db := testkit.NewDatabase(t)
		u, err := url.Parse(db.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy := startProxy(t, u.Host)
		u.Host = proxy.ln.Addr().String()
		pool, err := pgxpool.New(context.Background(), u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)

		b := setupAPI(t, func(o *Options) {
			o.Readiness = NewReadiness(500*time.Millisecond,
				Check{Name: "postgres", Fn: pool.Ping},
				Check{Name: "redis", Fn: func(context.Context) error { return nil }},
			)
		})
		status, report := getReadyz(t, b.server.URL)
		if status != http.StatusOK || report.Status != "ready" || report.Checks["postgres"].Status != "ok" {
			t.Fatalf("before the cut: %d %+v", status, report)
		}

		proxy.cut()
		status, report = getReadyz(t, b.server.URL)
		if status != http.StatusServiceUnavailable || report.Status != "not_ready" {
			t.Fatalf("after the cut: %d %+v", status, report)
		}
		if report.Checks["postgres"].Status != "failing" || report.Checks["postgres"].Error == "" {
			t.Fatalf("postgres check = %+v, want failing with a reason", report.Checks["postgres"])
		}
		if report.Checks["redis"].Status != "ok" {
			t.Fatalf("redis check = %+v; only postgres is down", report.Checks["redis"])
		}

		// gRPC health follows readiness, for load balancers that speak it.
		health := grpchealth.NewClient(b.h2c, b.server.URL, connect.WithGRPC())
		res, err := health.Check(context.Background(), &grpchealth.CheckRequest{})
		if err != nil || res.Status != grpchealth.StatusNotServing {
			t.Fatalf("grpc health = %v, %v; want not serving", res, err)
		}

		// Liveness is not readiness: the process is fine.
		hres, err := http.Get(b.server.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		hres.Body.Close()
		if hres.StatusCode != http.StatusOK {
			t.Fatalf("healthz = %d while postgres is down; want 200", hres.StatusCode)
		}
	})

	t.Run("HungCheckIsBounded", func(t *testing.T) {
		t.Parallel()
		r := NewReadiness(50*time.Millisecond, Check{Name: "slow", Fn: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}})
		start := time.Now()
		ok, report := r.Evaluate(context.Background())
		if ok || report.Checks["slow"].Status != "failing" || !strings.Contains(report.Checks["slow"].Error, "deadline") {
			t.Fatalf("report = %+v", report)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("a hung check was not cut by its timeout")
		}
	})

	t.Run("InfoDoesNotAffectReadiness", func(t *testing.T) {
		t.Parallel()
		r := NewReadiness(time.Second, Check{Name: "ok", Fn: func(context.Context) error { return nil }})
		r.AddInfo("breakers", func() any { return map[string]string{"planner": "open"} })
		ok, report := r.Evaluate(context.Background())
		if !ok || report.Info["breakers"].(map[string]string)["planner"] != "open" {
			t.Fatalf("ok=%v report=%+v", ok, report)
		}
	})

	t.Run("GRPCHealthServing", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		health := grpchealth.NewClient(b.h2c, b.server.URL, connect.WithGRPC())
		res, err := health.Check(context.Background(), &grpchealth.CheckRequest{Service: nxgv1connect.GymServiceName})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Fatalf("grpc health = %v, %v", res, err)
		}
	})
}

func getReadyz(t *testing.T, base string) (int, readyReport) {
	t.Helper()
	res, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var report readyReport
	if err := json.NewDecoder(res.Body).Decode(&report); err != nil {
		t.Fatalf("readyz body: %v", err)
	}
	return res.StatusCode, report
}

func TestHTTPEdges(t *testing.T) {
	t.Parallel()

	t.Run("CORSPreflightForConfiguredOrigin", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, func(o *Options) { o.CORSOrigins = []string{"https://dash.nxg.example"} })
		res := preflight(t, b.server.URL, "https://dash.nxg.example")
		if res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusOK {
			t.Fatalf("preflight status %d", res.StatusCode)
		}
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "https://dash.nxg.example" {
			t.Fatalf("Allow-Origin = %q", got)
		}
		allowed := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range []string{"x-grpc-web", "connect-protocol-version", "authorization", "content-type"} {
			if !strings.Contains(allowed, h) {
				t.Fatalf("Allow-Headers %q lacks %s", allowed, h)
			}
		}

		// A real cross-origin call exposes the headers gRPC-Web reads.
		req, _ := http.NewRequest(http.MethodPost, b.server.URL+nxgv1connect.GymServiceListBranchesProcedure, strings.NewReader("{}"))
		req.Header.Set("Origin", "https://dash.nxg.example")
		req.Header.Set("Content-Type", "application/json")
		call, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		call.Body.Close()
		exposed := strings.ToLower(call.Header.Get("Access-Control-Expose-Headers"))
		if call.StatusCode != http.StatusOK || !strings.Contains(exposed, "grpc-status") || !strings.Contains(exposed, "x-request-id") {
			t.Fatalf("status %d, exposed %q", call.StatusCode, exposed)
		}
	})

	t.Run("CORSRefusesOtherOrigins", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t, func(o *Options) { o.CORSOrigins = []string{"https://dash.nxg.example"} })
		if got := preflight(t, b.server.URL, "https://evil.example").Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Allow-Origin %q for an unknown origin", got)
		}
		none := setupAPI(t)
		if got := preflight(t, none.server.URL, "https://dash.nxg.example").Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("Allow-Origin %q with no origins configured", got)
		}
	})

	t.Run("RequestIDIsKeptOrReplaced", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		call := func(id string) string {
			req, _ := http.NewRequest(http.MethodGet, b.server.URL+"/healthz", nil)
			if id != "" {
				req.Header.Set(requestid.Header, id)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			return res.Header.Get(requestid.Header)
		}
		if got := call("lb-1234"); got != "lb-1234" {
			t.Fatalf("kept id = %q", got)
		}
		got := call("bad id\" injected")
		if got == "" || strings.Contains(got, " ") || !requestid.Valid(got) {
			t.Fatalf("replaced id = %q", got)
		}
		if a, b := call(""), call(""); a == "" || a == b {
			t.Fatalf("fresh ids %q and %q", a, b)
		}
	})

	t.Run("ReflectionListsServices", func(t *testing.T) {
		t.Parallel()
		b := setupAPI(t)
		client := grpcreflect.NewClient(b.h2c, b.server.URL)
		stream := client.NewStream(context.Background())
		defer stream.Close()
		names, err := stream.ListServices()
		if err != nil {
			t.Fatalf("ListServices: %v", err)
		}
		var found bool
		for _, n := range names {
			if string(n) == nxgv1connect.GymServiceName {
				found = true
			}
		}
		if !found {
			t.Fatalf("services %v lack %s", names, nxgv1connect.GymServiceName)
		}
		fd, err := stream.FileContainingSymbol(nxgv1connect.GymServiceName)
		if err != nil || len(fd) == 0 || fd[0].GetName() != "nxg/v1/gym.proto" {
			t.Fatalf("FileContainingSymbol: %v %v", fd, err)
		}
	})

	t.Run("NewHandlerNeedsItsDependencies", func(t *testing.T) {
		t.Parallel()
		if _, err := NewHandler(Options{}); err == nil || !strings.Contains(err.Error(), "required") {
			t.Fatalf("NewHandler(empty) = %v", err)
		}
	})
}

func preflight(t *testing.T, base, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodOptions, base+nxgv1connect.GymServiceListBranchesProcedure, nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", http.MethodPost)
	req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type,x-grpc-web") // Browsers send them lower-case and sorted.
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}
