package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "http://127.0.0.1:8080" || c.Email != "admin@nxg.dev" || c.Subscribers != 1000 ||
		c.Mix != MixBoth || c.Rate != 50 || c.Duration != 30*time.Second || c.ReportRates != nil ||
		c.StreamsPerConn != 200 || c.JSON {
		t.Errorf("defaults: %+v", c)
	}
}

func TestParseConfigFlags(t *testing.T) {
	c, err := parseConfig(strings.Fields(
		"-addr http://localhost:9000 -subscribers 10000 -mix ws -rate 25 -duration 1m -server-pid 77 -json -report-rate 1000,2500.5,5000 -status-every 0"),
		io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "http://localhost:9000" || c.Subscribers != 10000 || c.Mix != MixWS || c.Rate != 25 ||
		c.Duration != time.Minute || c.ServerPID != 77 || !c.JSON || c.StatusEvery != 0 {
		t.Errorf("parsed: %+v", c)
	}
	if c.ViaStaff {
		t.Error("changes go through consoles unless -via staff")
	}
	if c, err := parseConfig([]string{"-via", "staff"}, io.Discard); err != nil || !c.ViaStaff {
		t.Errorf("-via staff: %v, ViaStaff %v", err, c.ViaStaff)
	}
	if !slices.Equal(c.ReportRates, []float64{1000, 2500.5, 5000}) {
		t.Errorf("report rates %v", c.ReportRates)
	}
}

func TestParseConfigRejects(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"-mix grpc", `-mix: "grpc" is not connect, ws or both`},
		{"-addr https://x:1", "only http (h2c)"},
		{"-addr nothing", "is not a URL"},
		{"-subscribers -1", "-subscribers"},
		{"-streams-per-conn 251", "-streams-per-conn"},
		{"-rate 0", "-rate"},
		{"-duration 0s", "-duration"},
		{"-drain -1s", "-drain"},
		{"-report-rate 100,abc", `-report-rate: "abc" is not a number`},
		{"-report-rate -5", "-report-rate"},
		{"-max-in-flight 0", "-max-in-flight"},
		{"extra", `unexpected argument "extra"`},
		{"-open-timeout 0s", "-open-timeout"},
		{"-server-pid -2", "-server-pid"},
		{"-status-every -1", "-status-every"},
		{"-open-rate -1", "-open-rate"},
		{"-via carrier-pigeon", `-via: "carrier-pigeon" is not console or staff`},
		{"-via staff -report-rate 100", "-via staff is for watch mode"},
	} {
		_, err := parseConfig(strings.Fields(tc.args), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseConfig(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseConfig([]string{"-email", "", "-password", "x"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "-email and -password") {
		t.Errorf("empty -email: %v", err)
	}
	// -rate is not checked in report mode, where it is unused.
	if _, err := parseConfig(strings.Fields("-rate 0 -report-rate 100"), io.Discard); err != nil {
		t.Errorf("report mode with -rate 0: %v", err)
	}
	if _, err := parseConfig([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h gave %v, want flag.ErrHelp", err)
	}
}

func TestWireOf(t *testing.T) {
	both := Config{Mix: MixBoth}
	if both.wireOf(0) != MixConnect || both.wireOf(1) != MixWS || both.wireOf(2) != MixConnect {
		t.Error("mix both must alternate Connect and WebSocket")
	}
	if (Config{Mix: MixWS}).wireOf(0) != MixWS || (Config{Mix: MixConnect}).wireOf(1) != MixConnect {
		t.Error("a single mix must use its wire for every subscriber")
	}
}
