package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat. Linux fixes it at 100 for user space on every
// architecture Go supports (the kernel's own HZ may differ; /proc converts).
const clockTicksPerSecond = 100

// ProcSample is one reading of a process's counters.
type ProcSample struct {
	// CPUSeconds is user plus system time since the process started.
	CPUSeconds float64
	// PeakRSSKiB is VmHWM: the highest resident set size over the whole
	// life of the process, not just the measured interval.
	PeakRSSKiB uint64
	// RSSKiB is VmRSS: the resident set size now.
	RSSKiB uint64
}

// readProc samples /proc/<pid>; pid "self" reads the load tool itself.
func readProc(pid string) (ProcSample, error) {
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ProcSample{}, err
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return ProcSample{}, err
	}
	hwm, rss, err := parseStatusMemory(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("/proc/%s/status: %w", pid, err)
	}
	return ProcSample{CPUSeconds: cpu, PeakRSSKiB: hwm, RSSKiB: rss}, nil
}

// parseStatCPU returns utime+stime in seconds from the contents of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// closing parenthesis: after it come state (field 3), and utime and stime
// are fields 14 and 15.
func parseStatCPU(stat []byte) (float64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no command name in %q", truncate(string(stat), 80))
	}
	fields := strings.Fields(string(stat[end+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 13 {
		return 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	utime, err := strconv.ParseUint(fields[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(fields[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return float64(utime+stime) / clockTicksPerSecond, nil
}

// parseStatusMemory returns VmHWM and VmRSS in KiB from the contents of
// /proc/<pid>/status.
func parseStatusMemory(status []byte) (hwm, rss uint64, err error) {
	var sawHWM, sawRSS bool
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		f := strings.Fields(value)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: unexpected value %q", name, value)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		if name == "VmHWM" {
			hwm, sawHWM = n, true
		} else {
			rss, sawRSS = n, true
		}
	}
	if !sawHWM || !sawRSS {
		return 0, 0, fmt.Errorf("no VmHWM or VmRSS line (is it a kernel thread?)")
	}
	return hwm, rss, nil
}

// raiseOpenFileLimit lifts the soft limit on open files to the hard limit:
// every WebSocket is a connection of its own, and 10,000 of them need more
// than the usual soft limit of 1,024. It returns the limit now in force.
func raiseOpenFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
