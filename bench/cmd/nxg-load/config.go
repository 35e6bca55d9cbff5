package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Mix is which wire the subscribers use.
type Mix string

// The subscriber mixes: Connect server streams over h2c, WebSockets on
// /ws, or both (alternating, so half and half).
const (
	MixConnect Mix = "connect"
	MixWS      Mix = "ws"
	MixBoth    Mix = "both"
)

// Config is the parsed command line.
type Config struct {
	// Addr is the API's base URL, e.g. http://127.0.0.1:8080.
	Addr string
	// Email and Password sign in the account that provisions the devices
	// and holds every subscriber; it must be an admin or staff of the branch.
	Email, Password string
	// Branch is the branch to watch and drive, by name or id; empty picks the
	// first branch ListBranches returns.
	Branch string

	// Subscribers is how many WatchMachines subscribers to open.
	Subscribers int
	Mix         Mix
	// StreamsPerConn is how many Connect streams share one HTTP/2
	// connection; the server allows 250.
	StreamsPerConn int
	// GRPC uses the gRPC protocol for the Connect streams instead of Connect's own.
	GRPC bool
	// OpenRate is how many subscribers are opened per second (0: all at once).
	OpenRate int
	// OpenTimeout bounds the wait for every subscriber's snapshot.
	OpenTimeout time.Duration

	// Rate is how many machine status changes per second the simulated
	// consoles make while subscribers watch.
	Rate float64
	// ViaStaff makes the changes with SetMachineStatus as the signed-in
	// account instead of ReportActivity from consoles: no devices are
	// registered. It exists to check the watching side on its own.
	ViaStaff bool
	// Duration is how long changes are made (or, in report mode, how long
	// each rate step lasts).
	Duration time.Duration
	// Drain is how long to wait after the last change for deliveries to
	// arrive before counting what was lost.
	Drain time.Duration

	// ReportRates, when set, switches to the device write-rate test: one
	// step per rate, total reports per second over every console.
	ReportRates []float64
	// StatusEvery makes every n-th report a status report (a visible
	// change); the others are heartbeats. 0 sends heartbeats only.
	StatusEvery int
	// AllBranches registers consoles for the machines of every branch in
	// report mode, not just the chosen one.
	AllBranches bool
	// MaxInFlight caps concurrent report RPCs; a report due while the cap
	// is reached is counted as not sent rather than queued, so the offered
	// rate stays honest.
	MaxInFlight int

	// ServerPID is the server process to sample for CPU time and memory.
	ServerPID int
	// ServerMetrics is the server's /metrics URL (on its ops port), to
	// report its own feed lag next to the tool's latency.
	ServerMetrics string
	// JSON prints the report as JSON instead of text.
	JSON bool
	// JSONFile also writes the JSON report to this file.
	JSONFile string
	// CPUProfile writes the load tool's own CPU profile here, to see
	// where its time goes when it nears a full core.
	CPUProfile string
	// KeepDevices leaves the registered consoles in place at the end.
	KeepDevices bool
}

// parseConfig reads the command line. It never exits the process: errors
// (including -h) come back to the caller.
func parseConfig(args []string, usageOut io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("nxg-load", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.StringVar(&c.Addr, "addr", "http://127.0.0.1:8080", "API base URL (plain HTTP: h2c for Connect, HTTP/1.1 for WebSockets)")
	// The demo admin of internal/demodata/accounts.go, which nxg-dev seeds.
	fs.StringVar(&c.Email, "email", "admin@nxg.dev", "account that registers the consoles and holds every subscriber (admin, or staff of the branch)")
	fs.StringVar(&c.Password, "password", "nxg-admin-pass-1", "its password")
	fs.StringVar(&c.Branch, "branch", "", "branch to watch and drive, by name or id (default: the first listed)")
	fs.IntVar(&c.Subscribers, "subscribers", 1000, "WatchMachines subscribers to open")
	mix := fs.String("mix", string(MixBoth), "subscriber wire: connect, ws or both (half each)")
	fs.IntVar(&c.StreamsPerConn, "streams-per-conn", 200, "Connect streams per HTTP/2 connection (the server allows 250)")
	fs.BoolVar(&c.GRPC, "grpc", false, "use the gRPC protocol for Connect streams instead of the Connect protocol")
	fs.IntVar(&c.OpenRate, "open-rate", 1000, "subscribers opened per second while connecting (0: no pacing)")
	fs.DurationVar(&c.OpenTimeout, "open-timeout", 3*time.Minute, "how long to wait for every subscriber's snapshot")
	fs.Float64Var(&c.Rate, "rate", 50, "machine status changes per second while watching")
	via := fs.String("via", "console", "how changes are made in watch mode: console (ReportActivity from registered machine consoles) or staff (SetMachineStatus as the signed-in account, no devices)")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "how long to make changes (per step in report mode)")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "how long to wait after the last change for deliveries")
	reportRates := fs.String("report-rate", "", "device write-rate test instead of watching: comma-separated total reports/s, one step each (e.g. 1000,3000,5000)")
	fs.IntVar(&c.StatusEvery, "status-every", 10, "in report mode, every n-th report is a status report (a visible change), the rest heartbeats; 0: heartbeats only")
	fs.BoolVar(&c.AllBranches, "all-branches", true, "in report mode, use the machines of every branch (more consoles)")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 4000, "cap on concurrent report RPCs; reports due beyond it are counted as not sent")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "server process id, to report its CPU seconds and peak RSS from /proc")
	fs.StringVar(&c.ServerMetrics, "server-metrics", "", "server's /metrics URL on its ops port (e.g. http://127.0.0.1:9090/metrics), to report the server's own feed lag")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&c.JSONFile, "json-file", "", "also write the JSON report to this file")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the load tool's own CPU profile to this file")
	fs.BoolVar(&c.KeepDevices, "keep-devices", false, "leave the registered consoles in place (default: revoke them at the end)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.Mix = Mix(*mix)
	switch *via {
	case "console":
	case "staff":
		c.ViaStaff = true
	default:
		return Config{}, fmt.Errorf("-via: %q is not console or staff", *via)
	}
	rates, err := parseRates(*reportRates)
	if err != nil {
		return Config{}, fmt.Errorf("-report-rate: %w", err)
	}
	c.ReportRates = rates
	return c, c.validate()
}

func (c Config) validate() error {
	u, err := url.Parse(c.Addr)
	if err != nil || u.Host == "" {
		return fmt.Errorf("-addr: %q is not a URL like http://127.0.0.1:8080", c.Addr)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("-addr: scheme %q: only http (h2c) is supported", u.Scheme)
	}
	switch c.Mix {
	case MixConnect, MixWS, MixBoth:
	default:
		return fmt.Errorf("-mix: %q is not connect, ws or both", c.Mix)
	}
	switch {
	case c.Email == "" || c.Password == "":
		return errors.New("-email and -password are required")
	case c.Subscribers < 0:
		return errors.New("-subscribers: must not be negative")
	case c.StreamsPerConn < 1 || c.StreamsPerConn > 250:
		return errors.New("-streams-per-conn: must be between 1 and 250 (the server's limit per connection)")
	case c.OpenRate < 0:
		return errors.New("-open-rate: must not be negative")
	case c.OpenTimeout <= 0:
		return errors.New("-open-timeout: must be positive")
	case c.ReportRates == nil && (c.Rate <= 0 || c.Rate > 100000):
		return errors.New("-rate: must be above 0 and at most 100000 changes/s")
	case c.Duration <= 0:
		return errors.New("-duration: must be positive")
	case c.Drain < 0:
		return errors.New("-drain: must not be negative")
	case c.ViaStaff && c.ReportRates != nil:
		return errors.New("-via staff is for watch mode; the write-rate test needs consoles")
	case c.StatusEvery < 0:
		return errors.New("-status-every: must not be negative")
	case c.MaxInFlight < 1:
		return errors.New("-max-in-flight: must be at least 1")
	case c.ServerPID < 0:
		return errors.New("-server-pid: must not be negative")
	}
	return nil
}

// parseRates reads a comma-separated list of positive rates; empty means none.
func parseRates(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []float64
	for part := range strings.SplitSeq(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", part)
		}
		if r <= 0 || r > 1e6 {
			return nil, fmt.Errorf("%v: a rate must be above 0 and at most 1000000/s", r)
		}
		out = append(out, r)
	}
	return out, nil
}

// wireOf is the wire of the i-th subscriber.
func (c Config) wireOf(i int) Mix {
	switch c.Mix {
	case MixBoth:
		if i%2 == 0 {
			return MixConnect
		}
		return MixWS
	default:
		return c.Mix
	}
}
