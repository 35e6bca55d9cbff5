package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/getsentry/sentry-go"
	"github.com/jackc/pgx/v5"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/app"
	"github.com/nxg-fitness/nxg/internal/config"
	"github.com/nxg-fitness/nxg/internal/demodata"
	"github.com/nxg-fitness/nxg/internal/devstack"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

const (
	testOpsUser     = "ops"
	testOpsPassword = "app-test ops password"

	listBranchesProcedure = "/nxg.v1.GymService/ListBranches"
)

// testBundle holds the stand-ins every App in a test shares. FerretDB takes
// a few seconds to start, so it is started once per test function rather
// than once per App.
type testBundle struct {
	logger *slog.Logger
	mongo  *devstack.Mongo
	s3     *devstack.S3
	fcm    *devstack.FCM
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := context.Background()
	logger := testLogger(t)

	// FerretDB keeps its data in a database of its own, so the App
	// databases below hold nothing but NXG's schema and the demo data.
	ferretDB := testkit.NewDatabase(t)
	mongo, err := devstack.StartMongo(ctx, ferretDB.URL, logger)
	if err != nil {
		t.Fatalf("StartMongo: %v", err)
	}
	// Registered after NewDatabase, so FerretDB stops before its database
	// is dropped.
	t.Cleanup(func() {
		if err := mongo.Close(); err != nil {
			t.Errorf("close FerretDB: %v", err)
		}
	})

	s3, err := devstack.StartS3(ctx, t.TempDir(), "nxg-app-test", logger)
	if err != nil {
		t.Fatalf("StartS3: %v", err)
	}
	t.Cleanup(func() {
		if err := s3.Close(); err != nil {
			t.Errorf("close S3 stand-in: %v", err)
		}
	})

	fcm, err := devstack.StartFCM(logger)
	if err != nil {
		t.Fatalf("StartFCM: %v", err)
	}
	t.Cleanup(func() {
		if err := fcm.Close(); err != nil {
			t.Errorf("close FCM stand-in: %v", err)
		}
	})

	return &testBundle{logger: logger, mongo: mongo, s3: s3, fcm: fcm}
}

// environ returns a complete, valid environment for one App: a fresh
// database with the demo branches seeded, the test Redis, the shared
// stand-ins and ports chosen by the kernel. overrides win over all of it.
func (b *testBundle) environ(t *testing.T, overrides map[string]string) map[string]string {
	t.Helper()
	db := testkit.NewDatabase(t)
	if err := demodata.Seed(context.Background(), db.Pool); err != nil {
		t.Fatalf("seed demo data: %v", err)
	}
	// Stack.Env is the same mapping of stand-ins to variables that
	// cmd/nxg-dev uses, so the App is configured exactly as in development.
	environ := (&devstack.Stack{Mongo: b.mongo, S3: b.s3, FCM: b.fcm}).Env()
	for k, v := range map[string]string{
		"DATABASE_URL":         db.URL,
		"REDIS_URL":            testkit.NewRedis(t).URL,
		"NXG_HTTP_ADDR":        "127.0.0.1:0",
		"NXG_OPS_ADDR":         "127.0.0.1:0",
		"NXG_OPS_USER":         testOpsUser,
		"NXG_OPS_PASSWORD":     testOpsPassword,
		"NXG_SHUTDOWN_TIMEOUT": "5s",
	} {
		environ[k] = v
	}
	maps.Copy(environ, testkit.AuthEnv(t))
	maps.Copy(environ, testkit.AIEnv())
	for k, v := range overrides {
		environ[k] = v
	}
	return environ
}

func parseConfig(t *testing.T, environ map[string]string) config.Config {
	t.Helper()
	cfg, err := config.Parse(environ)
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return cfg
}

// runningApp is an App whose Run is going in a goroutine.
type runningApp struct {
	app     *app.App
	apiURL  string
	opsURL  string
	cancel  context.CancelFunc
	done    chan struct{}
	runErr  error
	stopped sync.Once
}

// start builds an App from environ, runs it and waits until /readyz says it
// is ready. The App is stopped when the test ends if the test has not
// stopped it already.
func (b *testBundle) start(t *testing.T, environ map[string]string) *runningApp {
	t.Helper()
	cfg := parseConfig(t, environ)
	// One context for New and Run: New starts River UI's background
	// services with it, and they must stop with the App.
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, b.logger)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	r := &runningApp{
		app:    a,
		apiURL: "http://" + a.APIAddr(),
		opsURL: "http://" + a.OpsAddr(),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go func() {
		defer close(r.done)
		r.runErr = a.Run(ctx)
	}()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("stop App: %v", err)
		}
	})
	waitReady(t, r)
	return r
}

// stop cancels Run's context and returns what Run returned. It gives up
// after 15 s (three times NXG_SHUTDOWN_TIMEOUT), so a hung shutdown fails the
// test instead of hanging it.
func (r *runningApp) stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.runErr
	case <-time.After(15 * time.Second):
		return errors.New("Run did not return within 15s of its context being cancelled")
	}
}

// waitReady polls /readyz until it answers 200, Run fails, or 20 s pass.
func waitReady(t *testing.T, r *runningApp) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		select {
		case <-r.done:
			t.Fatalf("Run returned before the App became ready: %v", r.runErr)
		default:
		}
		resp, body, err := get(r.apiURL+"/readyz", "", "")
		if err == nil && resp.StatusCode == http.StatusOK {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = resp.Status + " " + body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within 20s; last answer: %s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestApp(t *testing.T) {
	b := setup(t)

	t.Run("ServesAPIAndOps", func(t *testing.T) {
		r := b.start(t, b.environ(t, nil))
		// okCalls counts the ListBranches calls that succeeded, which
		// /metrics must agree with.
		okCalls := 0

		t.Run("Healthz", func(t *testing.T) {
			resp, body, err := get(r.apiURL+"/healthz", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /healthz = %s, want 200", resp.Status)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("/healthz body %q is not JSON: %v", body, err)
			}
			if len(got) != 1 || got["status"] != "ok" {
				t.Fatalf(`/healthz body = %s, want {"status":"ok"}`, body)
			}
		})

		t.Run("Readyz", func(t *testing.T) {
			resp, body, err := get(r.apiURL+"/readyz", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /readyz = %s (%s), want 200", resp.Status, body)
			}
			var report struct {
				Status string `json:"status"`
				Checks map[string]struct {
					Status string `json:"status"`
				} `json:"checks"`
			}
			if err := json.Unmarshal([]byte(body), &report); err != nil {
				t.Fatalf("/readyz body %q is not JSON: %v", body, err)
			}
			if report.Status != "ready" {
				t.Errorf("/readyz status = %q, want ready (body %s)", report.Status, body)
			}
			for _, name := range []string{"postgres", "redis", "river", "realtime"} {
				if got := report.Checks[name].Status; got != "ok" {
					t.Errorf("/readyz check %s = %q, want ok (body %s)", name, got, body)
				}
			}
		})

		t.Run("ListBranchesOverEveryProtocol", func(t *testing.T) {
			want := make([]string, len(demodata.Branches))
			for i, br := range demodata.Branches {
				want[i] = br.Name
			}
			slices.Sort(want)

			for _, tc := range []struct {
				name string
				h2c  bool
				opts []connect.ClientOption
				// check inspects the request the client put on the wire, so
				// each case proves it used the protocol it is named after.
				check func(rec wireRecord) string
			}{
				{"ConnectJSON", false, []connect.ClientOption{connect.WithProtoJSON()}, func(rec wireRecord) string {
					return expect(rec.method == http.MethodPost && rec.contentType == "application/json", "POST application/json")
				}},
				{"ConnectBinary", false, nil, func(rec wireRecord) string {
					return expect(rec.method == http.MethodPost && rec.contentType == "application/proto", "POST application/proto")
				}},
				{"ConnectGET", false, []connect.ClientOption{connect.WithHTTPGet(), connect.WithProtoJSON()}, func(rec wireRecord) string {
					return expect(rec.method == http.MethodGet && rec.query.Get("connect") == "v1" && rec.query.Get("encoding") == "json",
						"GET with connect=v1&encoding=json")
				}},
				{"GRPC", true, []connect.ClientOption{connect.WithGRPC()}, func(rec wireRecord) string {
					return expect(rec.respProtoMajor == 2 && strings.HasPrefix(rec.contentType, "application/grpc") &&
						!strings.HasPrefix(rec.contentType, "application/grpc-web"), "application/grpc over HTTP/2")
				}},
				{"GRPCWeb", false, []connect.ClientOption{connect.WithGRPCWeb()}, func(rec wireRecord) string {
					return expect(strings.HasPrefix(rec.contentType, "application/grpc-web"), "application/grpc-web")
				}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					rec := &recordingTransport{base: newTransport(tc.h2c)}
					client := nxgv1connect.NewGymServiceClient(&http.Client{Transport: rec}, r.apiURL, tc.opts...)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					resp, err := client.ListBranches(ctx, connect.NewRequest(&nxgv1.ListBranchesRequest{}))
					if err != nil {
						t.Fatalf("ListBranches: %v", err)
					}
					okCalls++
					if wrong := tc.check(rec.last()); wrong != "" {
						t.Errorf("request on the wire: %+v; want %s", rec.last(), wrong)
					}
					var got []string
					for _, br := range resp.Msg.GetBranches() {
						got = append(got, br.GetName())
						if n := len(br.GetOpeningHours()); n != 7 {
							t.Errorf("branch %q has %d opening-hour rows, want 7 (seeded Monday to Sunday)", br.GetName(), n)
						}
					}
					if !slices.Equal(got, want) {
						t.Errorf("branches = %q, want the seeded ones in name order %q", got, want)
					}
					if tok := resp.Msg.GetNextPageToken(); tok != "" {
						t.Errorf("next_page_token = %q, want empty: every branch fits one default page", tok)
					}
				})
			}
		})

		t.Run("MetricsCountsCalls", func(t *testing.T) {
			resp, body, err := get(r.opsURL+"/metrics", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET /metrics without credentials = %s, want 200", resp.Status)
			}
			series := `nxg_rpc_requests_total{code="ok",procedure="` + listBranchesProcedure + `"}`
			value, ok := metricValue(body, series)
			if !ok {
				t.Fatalf("/metrics has no %s; body:\n%s", series, body)
			}
			if value != float64(okCalls) {
				t.Errorf("%s = %v, want %d (the calls this test made)", series, value, okCalls)
			}
		})

		t.Run("RiverUIRequiresAuth", func(t *testing.T) {
			resp, _, err := get(r.opsURL+"/riverui/", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /riverui/ without credentials = %s, want 401", resp.Status)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("WWW-Authenticate = %q, want a Basic challenge", got)
			}

			resp, _, err = get(r.opsURL+"/riverui/", testOpsUser, "wrong")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /riverui/ with a wrong password = %s, want 401", resp.Status)
			}

			resp, body, err := get(r.opsURL+"/riverui/", testOpsUser, testOpsPassword)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /riverui/ with credentials = %s, want 200", resp.Status)
			}
			if !strings.Contains(strings.ToLower(body), "<html") {
				t.Errorf("GET /riverui/ body is not River UI's page: %.200q", body)
			}
		})

		t.Run("RiverUIListsPeriodicJob", func(t *testing.T) {
			// cache_cleanup runs on start once this process is elected
			// River's leader; poll until River UI lists it as completed.
			deadline := time.Now().Add(30 * time.Second)
			var last string
			for {
				resp, body, err := get(r.opsURL+"/riverui/api/jobs?state=completed", testOpsUser, testOpsPassword)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET /riverui/api/jobs = %s (%s), want 200", resp.Status, body)
				}
				var list struct {
					Data []struct {
						Kind  string `json:"kind"`
						Queue string `json:"queue"`
						State string `json:"state"`
					} `json:"data"`
				}
				if err := json.Unmarshal([]byte(body), &list); err != nil {
					t.Fatalf("River UI job list %q is not JSON: %v", body, err)
				}
				for _, j := range list.Data {
					if j.Kind == "cache_cleanup" {
						if j.Queue != "maintenance" || j.State != "completed" {
							t.Errorf("cache_cleanup job: queue %q state %q, want maintenance, completed", j.Queue, j.State)
						}
						return
					}
				}
				last = body
				if time.Now().After(deadline) {
					t.Fatalf("no completed cache_cleanup job listed within 30s; last list: %s", last)
				}
				time.Sleep(200 * time.Millisecond)
			}
		})

		// Last: it stops the App the subtests above use.
		t.Run("GracefulShutdown", func(t *testing.T) {
			if err := r.stop(); err != nil {
				t.Fatalf("Run returned %v after its context was cancelled, want nil", err)
			}
			for name, addr := range map[string]string{"API": r.app.APIAddr(), "ops": r.app.OpsAddr()} {
				conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					conn.Close()
					t.Errorf("the %s port %s still accepts connections after Run returned", name, addr)
				}
			}
		})
	})

	// Not parallel with anything: Sentry's hub is process-global.
	t.Run("InitialisesSentry", func(t *testing.T) {
		capture, err := devstack.StartSentry(b.logger)
		if err != nil {
			t.Fatalf("StartSentry: %v", err)
		}
		t.Cleanup(func() {
			if err := capture.Close(); err != nil {
				t.Errorf("close Sentry capture: %v", err)
			}
		})
		// Registered after the capture's Close so it runs first: the
		// global hub must not keep pointing at a closed capture for the
		// tests that follow.
		t.Cleanup(func() {
			if err := sentry.Init(sentry.ClientOptions{}); err != nil {
				t.Errorf("reset Sentry: %v", err)
			}
		})

		r := b.start(t, b.environ(t, map[string]string{
			"SENTRY_DSN":         capture.DSN(),
			"SENTRY_ENVIRONMENT": "app-test",
		}))
		if sentry.CurrentHub().Client() == nil {
			t.Fatal("sentry.CurrentHub().Client() is nil: app.New did not initialise Sentry although SENTRY_DSN is set")
		}

		const message = "app test: sentry reaches the capture"
		sentry.CaptureMessage(message)
		if !sentry.Flush(5 * time.Second) {
			t.Fatal("sentry.Flush timed out")
		}
		var found bool
		for _, ev := range capture.Events() {
			if ev.Message != message {
				continue
			}
			found = true
			if ev.Environment != "app-test" {
				t.Errorf("event environment = %q, want SENTRY_ENVIRONMENT app-test", ev.Environment)
			}
			if want := "nxg@" + app.Version; ev.Release != want {
				t.Errorf("event release = %q, want %q", ev.Release, want)
			}
		}
		if !found {
			t.Fatalf("the capture has no event with message %q; events: %+v", message, capture.Events())
		}
		if err := r.stop(); err != nil {
			t.Fatalf("Run returned %v after its context was cancelled, want nil", err)
		}
	})

	t.Run("NewFails", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			overrides func(t *testing.T) map[string]string
			want      string
		}{
			{"UnreachablePostgres", func(*testing.T) map[string]string {
				return map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/x"}
			}, "postgres"},
			{"UnreachableRedis", func(*testing.T) map[string]string {
				return map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
			}, "redis"},
			{"HTTPAddrInUse", func(t *testing.T) map[string]string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				return map[string]string{"NXG_HTTP_ADDR": ln.Addr().String()}
			}, "NXG_HTTP_ADDR"},
			{"OpsAddrInUse", func(t *testing.T) map[string]string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				// A fixed API port, so the test can check New let go of it
				// when the ops port failed.
				return map[string]string{"NXG_OPS_ADDR": ln.Addr().String(), "NXG_HTTP_ADDR": freeAddr(t)}
			}, "NXG_OPS_ADDR"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				environ := b.environ(t, tc.overrides(t))
				cfg := parseConfig(t, environ)
				ctx, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				a, err := app.New(ctx, cfg, b.logger)
				if err == nil {
					// Release what New built, then fail.
					go a.Run(ctx) //nolint:errcheck // stopped by cancel right away
					cancel()
					t.Fatalf("app.New succeeded, want an error mentioning %s", tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("app.New error = %q, want it to mention %s", err, tc.want)
				}

				// "On error everything opened so far is closed."
				if !strings.Contains(environ["DATABASE_URL"], "127.0.0.1:1/") {
					waitNoConnections(t, environ["DATABASE_URL"], "nxg")
				}
				if tc.name == "OpsAddrInUse" {
					ln, err := net.Listen("tcp", cfg.HTTPAddr)
					if err != nil {
						t.Errorf("NXG_HTTP_ADDR %s is still bound after New failed on the ops port: %v", cfg.HTTPAddr, err)
					} else {
						ln.Close()
					}
				}
			})
		}
	})
}

// wireRecord is what a client put on the wire for one call.
type wireRecord struct {
	method, contentType string
	query               url.Values
	respProtoMajor      int
}

// recordingTransport remembers the last request it carried.
type recordingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	rec  wireRecord
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	rec := wireRecord{method: req.Method, contentType: req.Header.Get("Content-Type"), query: req.URL.Query()}
	if resp != nil {
		rec.respProtoMajor = resp.ProtoMajor
	}
	rt.mu.Lock()
	rt.rec = rec
	rt.mu.Unlock()
	return resp, err
}

func (rt *recordingTransport) last() wireRecord {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.rec
}

func (r wireRecord) String() string {
	return r.method + " " + r.contentType + " HTTP/" + strconv.Itoa(r.respProtoMajor)
}

func expect(ok bool, want string) string {
	if ok {
		return ""
	}
	return want
}

// newTransport returns an HTTP/1.1 transport, or one speaking cleartext
// HTTP/2 with prior knowledge (h2c), which gRPC needs without TLS.
func newTransport(h2c bool) http.RoundTripper {
	if !h2c {
		return &http.Transport{}
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{Protocols: &p}
}

// get fetches url, with Basic credentials when user is not empty.
func get(target, user, password string) (*http.Response, string, error) {
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		return nil, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// metricValue finds series (name and labels exactly as exposed) in a
// Prometheus text exposition and returns its value.
func metricValue(exposition, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}

// testLogger sends the App's and stand-ins' logs to the test log, and drops
// lines logged after the test ended (a late goroutine would otherwise make
// testing panic).
func testLogger(t *testing.T) *slog.Logger { return testkit.Logger(t, slog.LevelInfo) }

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitNoConnections waits until the database named in databaseURL has no
// session with the given application_name, for up to 5 s: a closed pool's
// backends leave pg_stat_activity a moment after the sockets close.
func waitNoConnections(t *testing.T, databaseURL, applicationName string) {
	t.Helper()
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testkit.AdminURL())
	if err != nil {
		t.Fatalf("connect as admin: %v", err)
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2`,
			dbName, applicationName).Scan(&n); err != nil {
			t.Fatalf("count sessions: %v", err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d session(s) with application_name %q still open on %s after New failed: its pool was not closed",
				n, applicationName, dbName)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
