package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"

	nxgv1 "github.com/nxg-fitness/nxg/gen/nxg/v1"
	"github.com/nxg-fitness/nxg/gen/nxg/v1/nxgv1connect"
	"github.com/nxg-fitness/nxg/internal/testkit"
)

// syncBuffer collects the server's output while the test reads it.
type syncBuffer = testkit.SyncBuffer

// newDatabaseName returns the URL of a database that does not exist yet on
// the test PostgreSQL (run must create it), and drops it WITH (FORCE) when
// the test ends. Call it before starting run, so the drop runs after the
// cleanup that stops the server.
func newDatabaseURL(t *testing.T) (databaseURL, name string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name = "nxg_devtest_" + hex.EncodeToString(b[:])
	if databaseExists(t, name) {
		t.Fatalf("database %s exists already", name)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, testkit.AdminURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	admin, err := url.Parse(testkit.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	admin.Path = "/" + name
	return admin.String(), name
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testkit.AdminURL())
	if err != nil {
		t.Fatalf("PostgreSQL is not answering: %v\n%s", err, testkit.PostgresHint)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

// devServer is one run of the dev server in a goroutine.
type devServer struct {
	stdout, stderr *syncBuffer
	apiURL, opsURL string
	cancel         context.CancelFunc
	done           chan struct{}
	runErr         error
}

var (
	apiLine = regexp.MustCompile(`API \(Connect, gRPC, gRPC-Web\)\s+(http://\S+)`)
	opsLine = regexp.MustCompile(`Metrics\s+(http://\S+)/metrics`)
)

// startDev calls run in a goroutine and waits for the banner on stderr.
func startDev(t *testing.T, environ map[string]string) *devServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &devServer{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.runErr = run(ctx, environ, s.stdout, s.stderr)
	}()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("stop dev server: %v", err)
		}
	})

	deadline := time.Now().Add(45 * time.Second)
	for {
		select {
		case <-s.done:
			t.Fatalf("run returned before printing the banner: %v\nstderr:\n%s", s.runErr, s.stderr)
		default:
		}
		banner := s.stderr.String()
		api, ops := apiLine.FindStringSubmatch(banner), opsLine.FindStringSubmatch(banner)
		if api != nil && ops != nil {
			s.apiURL, s.opsURL = api[1], ops[1]
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("no banner with the API and ops URLs on stderr within 45s; stderr:\n%s", banner)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop cancels run's context and returns what run returned, giving up after
// 30 s so a hung shutdown fails the test instead of hanging it.
func (s *devServer) stop() error {
	s.cancel()
	select {
	case <-s.done:
		return s.runErr
	case <-time.After(30 * time.Second):
		return errors.New("run did not return within 30s of its context being cancelled")
	}
}

// waitReady polls /readyz until it answers 200 or 20 s pass.
func (s *devServer) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		resp, body, err := httpGet(s.apiURL+"/readyz", "", "")
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

// listBranchesJSON calls ListBranches as the README's curl does: a plain
// POST of {} with Content-Type application/json.
func (s *devServer) listBranchesJSON(t *testing.T) []string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(s.apiURL+"/nxg.v1.GymService/ListBranches", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST ListBranches: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST ListBranches = %s (%s), want 200", resp.Status, body)
	}
	return branchNames(t, body)
}

func branchNames(t *testing.T, body []byte) []string {
	t.Helper()
	var out struct {
		Branches []struct {
			Name string `json:"name"`
		} `json:"branches"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("ListBranches body %q is not JSON: %v", body, err)
	}
	names := make([]string, len(out.Branches))
	for i, b := range out.Branches {
		names[i] = b.Name
	}
	return names
}

func TestRun(t *testing.T) {
	databaseURL, dbName := newDatabaseURL(t)
	environ := map[string]string{
		"DATABASE_URL":     databaseURL,
		"NXG_DEV_DATA_DIR": t.TempDir(),
		"NXG_HTTP_ADDR":    "127.0.0.1:0",
		"NXG_OPS_ADDR":     "127.0.0.1:0",
		"REDIS_URL":        testkit.NewRedis(t).URL,
	}

	var firstCount int
	t.Run("FirstStart", func(t *testing.T) {
		s := startDev(t, environ)
		if !databaseExists(t, dbName) {
			t.Fatalf("database %s does not exist after start: ensureDatabase did not create it", dbName)
		}
		s.waitReady(t)

		t.Run("ListBranchesWithCurlJSON", func(t *testing.T) {
			names := s.listBranchesJSON(t)
			if len(names) < 2 {
				t.Fatalf("ListBranches returned %d branches %q, want the demo gym's (at least 2)", len(names), names)
			}
			for _, n := range names {
				if !strings.HasPrefix(n, "NXG ") {
					t.Errorf("branch %q is not a demo branch (NXG ...)", n)
				}
			}
			firstCount = len(names)
		})

		t.Run("ListBranchesWithConnectGET", func(t *testing.T) {
			resp, body, err := httpGet(s.apiURL+"/nxg.v1.GymService/ListBranches?connect=v1&encoding=json&message=%7B%7D", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET ListBranches = %s (%s), want 200", resp.Status, body)
			}
			if names := branchNames(t, []byte(body)); len(names) < 2 {
				t.Errorf("GET ListBranches returned %q, want at least 2 branches", names)
			}
		})

		t.Run("ListBranchesWithGRPC", func(t *testing.T) {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			h2c := &http.Client{Transport: &http.Transport{Protocols: &p}}
			client := nxgv1connect.NewGymServiceClient(h2c, s.apiURL, connect.WithGRPC())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := client.ListBranches(ctx, connect.NewRequest(&nxgv1.ListBranchesRequest{}))
			if err != nil {
				t.Fatalf("gRPC ListBranches: %v", err)
			}
			if n := len(resp.Msg.GetBranches()); n < 2 {
				t.Errorf("gRPC ListBranches returned %d branches, want at least 2", n)
			}
		})

		t.Run("RiverUIWithDevCredentials", func(t *testing.T) {
			resp, _, err := httpGet(s.opsURL+"/riverui/", defaultOpsUser, defaultOpsPassword)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /riverui/ as %s = %s, want 200", defaultOpsUser, resp.Status)
			}
			resp, _, err = httpGet(s.opsURL+"/riverui/", "", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /riverui/ without credentials = %s, want 401", resp.Status)
			}
		})

		t.Run("StopsOnCancel", func(t *testing.T) {
			if err := s.stop(); err != nil {
				t.Fatalf("run returned %v after its context was cancelled, want nil", err)
			}
		})

		t.Run("LogsJSONLinesToStdout", func(t *testing.T) {
			out := s.stdout.String()
			sc := bufio.NewScanner(strings.NewReader(out))
			sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
			var lines int
			var serving bool
			for sc.Scan() {
				line := sc.Text()
				if strings.TrimSpace(line) == "" {
					continue
				}
				lines++
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Errorf("stdout line is not JSON: %q (%v)", line, err)
					continue
				}
				if rec["msg"] == "nxg is serving" {
					serving = true
				}
			}
			if lines == 0 {
				t.Fatal("nothing was logged to stdout")
			}
			if !serving {
				t.Errorf(`no "nxg is serving" line among %d log lines on stdout`, lines)
			}
			if strings.Contains(out, "NXG dev server is up") {
				t.Error("the banner went to stdout; it belongs on stderr, apart from the JSON logs")
			}
		})
	})

	t.Run("SecondStartIsIdempotent", func(t *testing.T) {
		if firstCount == 0 {
			t.Fatal("the first start did not count the branches")
		}
		s := startDev(t, environ)
		s.waitReady(t)
		if names := s.listBranchesJSON(t); len(names) != firstCount {
			t.Errorf("after a second start ListBranches returns %d branches %q, want the same %d as after the first: seeding is not idempotent",
				len(names), names, firstCount)
		}
		if err := s.stop(); err != nil {
			t.Fatalf("run returned %v after its context was cancelled, want nil", err)
		}
	})
}

func TestRunExplainsUnreachablePostgres(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	err := run(ctx, map[string]string{
		"DATABASE_URL":     "postgres://postgres@127.0.0.1:1/nxg",
		"NXG_DEV_DATA_DIR": t.TempDir(),
		"NXG_HTTP_ADDR":    "127.0.0.1:0",
		"NXG_OPS_ADDR":     "127.0.0.1:0",
	}, &stdout, &stderr)
	if err == nil {
		t.Fatal("run succeeded with PostgreSQL unreachable, want an error")
	}
	for _, want := range []string{"pg_ctlcluster", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run error does not mention %s:\n%v", want, err)
		}
	}
}

// httpGet fetches target, with Basic credentials when user is not empty.
func httpGet(target, user, password string) (*http.Response, string, error) {
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

func TestEnsureDatabaseReadsEveryURLForm(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("nxg_devtest_q%d", time.Now().UnixNano())
	admin, err := pgx.Connect(context.Background(), testkit.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(context.Background())
	})
	// The database named by a dbname parameter, with no path at all.
	if err := ensureDatabase(context.Background(), "postgres://postgres@127.0.0.1:5432?dbname="+name); err != nil {
		t.Fatalf("ensureDatabase: %v", err)
	}
	var exists bool
	if err := admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || !exists {
		t.Fatalf("database %s exists = %v (%v)", name, exists, err)
	}
	// A second call finds it and does nothing.
	if err := ensureDatabase(context.Background(), "postgres://postgres@127.0.0.1:5432/"+name); err != nil {
		t.Fatalf("ensureDatabase again: %v", err)
	}
}
