#!/usr/bin/env bash
# Runs the measurements of docs/performance.md on this machine: builds the
# dev server and the load tool, starts the server on CPU 0 with a database
# and data directory of its own, runs each measurement with the load tool on
# CPU 1, and stops the server. Results go to $OUT (text and JSON).
#
#   bash bench/run.sh                 # everything (about 10 minutes)
#   STEPS="watch" bash bench/run.sh   # only the subscriber runs
#   STEPS="rate" bash bench/run.sh    # only the device write-rate test
#
# Knobs (environment): OUT, DURATION (per run, default 45s), SIZES (default
# "1000 5000 10000"), MIX (default both), RATE (changes/s, default 50),
# REPORT_RATES (default 1000,2000,3000,4000,5000,6000,8000), PORT (18080),
# BENCH_DB (nxg_bench), SERVER_CPU (0), TOOL_CPU (1), LOAD_ARGS (more flags for
# every nxg-load run, e.g. "-streams-per-conn 1").
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/nxg-bench-results}
DURATION=${DURATION:-45s}
SIZES=${SIZES:-"1000 5000 10000"}
MIX=${MIX:-both}
RATE=${RATE:-50}
REPORT_RATES=${REPORT_RATES:-1000,2000,3000,4000,5000,6000,8000}
STEPS=${STEPS:-"watch rate"}
PORT=${PORT:-18080}
OPS_PORT=${OPS_PORT:-19090}
BENCH_DB=${BENCH_DB:-nxg_bench}
SERVER_CPU=${SERVER_CPU:-0}
TOOL_CPU=${TOOL_CPU:-1}
DATA_DIR=${DATA_DIR:-$(mktemp -d /tmp/nxg-bench.XXXXXX)}

mkdir -p "$OUT" bin
go build -o bin/nxg-dev ./cmd/nxg-dev
(cd bench && go build -o ../bin/nxg-load ./cmd/nxg-load)

# Every WebSocket and stream is a file descriptor on the server as well.
ulimit -n "$(ulimit -Hn)"

server_pid=""
start_server() {
  # Rate limits off: the load comes from one IP, one account and a few
  # consoles, far beyond what the production limits allow any one client.
  # Streams per user raised for the same reason: every subscriber is the
  # same account.
  DATABASE_URL="postgres://postgres@localhost:5432/${BENCH_DB}" \
  NXG_DEV_DATA_DIR="$DATA_DIR" \
  NXG_HTTP_ADDR="127.0.0.1:${PORT}" \
  NXG_OPS_ADDR="127.0.0.1:${OPS_PORT}" \
  NXG_MAX_STREAMS_PER_USER=20000 \
  NXG_RATE_LIMIT_PER_IP=0 \
  NXG_RATE_LIMIT_PER_USER=0 \
  NXG_RATE_LIMIT_PER_DEVICE=0 \
    taskset -c "$SERVER_CPU" bin/nxg-dev >"$OUT/server-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:${PORT}/readyz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  echo "server did not become ready; see $OUT/server-$1.log" >&2
  exit 1
}
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

load() {
  # shellcheck disable=SC2086 # LOAD_ARGS is a list of flags.
  taskset -c "$TOOL_CPU" bin/nxg-load -addr "http://127.0.0.1:${PORT}" -server-pid "$server_pid" -server-metrics "http://127.0.0.1:${OPS_PORT}/metrics" ${LOAD_ARGS:-} "$@"
}

{
  echo "date: $(date -u +%FT%TZ)"
  echo "kernel: $(uname -r)"
  go version
  lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|CPU max MHz|L2|L3)'
  grep MemTotal /proc/meminfo
  echo "load average: $(cat /proc/loadavg)"
} >>"$OUT/machine.txt"

for step in $STEPS; do
  case $step in
  watch)
    for n in $SIZES; do
      # A fresh server per size: VmHWM is the process's lifetime peak.
      start_server "watch-$n"
      load -subscribers "$n" -mix "$MIX" -rate "$RATE" -duration "$DURATION" \
        -json-file "$OUT/watch-$n.json" 2>"$OUT/watch-$n.err" | tee "$OUT/watch-$n.txt"
      stop_server
    done
    ;;
  rate)
    start_server rate
    load -report-rate "$REPORT_RATES" -duration "$DURATION" \
      -json-file "$OUT/rate.json" 2>"$OUT/rate.err" | tee "$OUT/rate.txt"
    stop_server
    ;;
  *)
    echo "unknown step $step" >&2
    exit 2
    ;;
  esac
done
echo "results in $OUT"
