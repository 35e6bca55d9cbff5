package main

import (
	"strings"
	"syscall"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses, as a process may choose.
	stat := "4242 (nxg (dev) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 566 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 18.0 { // (1234+566) ticks at 100 per second
		t.Errorf("cpu %.2f s, want 18.00", got)
	}
	for _, bad := range []string{"no parenthesis", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 abc 5 0"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseStatusMemory(t *testing.T) {
	status := "Name:\tnxg-dev\nVmPeak:\t 900000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
	hwm, rss, err := parseStatusMemory([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if hwm != 204800 || rss != 102400 {
		t.Errorf("hwm %d rss %d, want 204800 and 102400", hwm, rss)
	}
	if _, _, err := parseStatusMemory([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("status without memory lines parsed, want an error")
	}
	if _, _, err := parseStatusMemory([]byte("VmHWM:\t12 MB\nVmRSS:\t1 kB\n")); err == nil {
		t.Error("status with an unknown unit parsed, want an error")
	}
}

func TestReadProcSelf(t *testing.T) {
	// Burn a little CPU so the reading is above zero.
	s := strings.Repeat("x", 1<<20)
	for range 50 {
		s = strings.ToUpper(strings.ToLower(s))
	}
	p, err := readProc("self")
	if err != nil {
		t.Fatal(err)
	}
	if p.PeakRSSKiB == 0 || p.RSSKiB == 0 || p.PeakRSSKiB < p.RSSKiB {
		t.Errorf("peak %d KiB, now %d KiB: want both above zero and peak >= now", p.PeakRSSKiB, p.RSSKiB)
	}
	if _, err := readProc("999999999"); err == nil {
		t.Error("reading a process that does not exist succeeded")
	}
}

func TestRaiseOpenFileLimit(t *testing.T) {
	got, err := raiseOpenFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got != lim.Max || lim.Cur != lim.Max {
		t.Errorf("limit %d, soft %d, hard %d: want the soft limit raised to the hard one", got, lim.Cur, lim.Max)
	}
}
