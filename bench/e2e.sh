#!/usr/bin/env bash
# End-to-end targets of bench/RESULTS.md: cmd/presence-server (lua
# heartbeats, rueidis) on a private redis-server, loaded by
# bench/cmd/loadtest with 100 rooms × 5 users, every heartbeat patching
# state, at 10 and 50 heartbeats/s per user.
#
#   bench/e2e.sh                 # both scenarios × both load clients, 30 s each (5 s ramp-up)
#   RATES="50" CLIENTS=raw TEST_DURATION_MS=20000 bench/e2e.sh
#   PROFILE=1 bench/e2e.sh       # also a 10 s server CPU profile per scenario
#   SERVER_BIN=/path/to/presence-server bench/e2e.sh   # a server built otherwise
#
# CLIENTS: the loadtest's LOADTEST_CLIENT values to run, default
# "socketio raw": the Go Socket.IO client, then the minimal raw client,
# whose own CPU is a fraction of the other's (they share this machine's
# cores with the server).
#
# The server is built as it ships. The server exposes no pprof endpoint, so
# PROFILE=1 builds a second binary with a Go build overlay that adds one
# file to package main (net/http/pprof on 127.0.0.1:$PPROF_PORT, a
# listener of its own) and runs each scenario again on it for the profile:
# the figures of the first run come from the binary as shipped.
#
# Everything listens on 127.0.0.1 only; every process this script starts is
# stopped at exit. Output goes to $OUT (default a new temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"10 50"}
CLIENTS=${CLIENTS:-"socketio raw"}
export ROOM_COUNT=${ROOM_COUNT:-100} USERS_PER_ROOM=${USERS_PER_ROOM:-5}
export TEST_DURATION_MS=${TEST_DURATION_MS:-30000} RAMP_UP_MS=${RAMP_UP_MS:-5000}
export ACK_TIMEOUT_MS=${ACK_TIMEOUT_MS:-5000} REPORT_INTERVAL_MS=${REPORT_INTERVAL_MS:-5000}
OUT=${OUT:-$(mktemp -d /tmp/presence-e2e-XXXXXX)}
mkdir -p "$OUT"

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "building into $OUT"
if [[ -n "${SERVER_BIN:-}" ]]; then # a server built otherwise, for experiments
  cp "$SERVER_BIN" "$OUT/presence-server"
else
  go build -o "$OUT/presence-server" ./cmd/presence-server
fi
go build -o "$OUT/loadtest" ./bench/cmd/loadtest
if [[ "${PROFILE:-0}" == 1 ]]; then
  cat > "$OUT/zz_pprof.go" <<'EOF'
package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if a := os.Getenv("PPROF_ADDR"); a != "" {
		go http.ListenAndServe(a, nil)
	}
}
EOF
  printf '{"Replace":{"%s":"%s"}}\n' "$PWD/cmd/presence-server/zz_pprof.go" "$OUT/zz_pprof.go" > "$OUT/overlay.json"
  go build -overlay "$OUT/overlay.json" -o "$OUT/presence-server-pprof" ./cmd/presence-server
fi

rport=$(freeport)
mkdir -p "$OUT/redis"
redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --dir "$OUT/redis" --logfile "$OUT/redis/redis.log" &
rpid=$!; pids+=("$rpid")
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done

# serve BINARY RATE: starts the server, sets spid and sport.
serve() {
  sport=$(freeport)
  local extra=()
  # The default per-socket limit is 20 heartbeats/s (bursts of 40); lift it
  # above the offered rate.
  if (( $2 > 15 )); then extra=(PRESENCE_HEARTBEAT_RATE=$(( $2 * 2 )) PRESENCE_HEARTBEAT_BURST=$(( $2 * 4 ))); fi
  env HOST=127.0.0.1 PORT="$sport" REDIS_URL="redis://127.0.0.1:$rport/0" PRESENCE_HEARTBEAT=lua \
    PRESENCE_KEY_PREFIX="e2e$RANDOM" LOG_LEVEL=warn PPROF_ADDR="127.0.0.1:${PPROF_PORT:-0}" "${extra[@]}" "$1" \
    > "$OUT/server-$2.log" 2>&1 &
  spid=$!; pids+=("$spid")
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$sport/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "server did not start:"; cat "$OUT/server-$2.log"; exit 1
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for rate in $RATES; do
  for client in $CLIENTS; do
    serve "$OUT/presence-server" "$rate"
    echo "=== $ROOM_COUNT rooms × $USERS_PER_ROOM users × $rate heartbeats/s, client $client (server pid $spid, redis pid $rpid)"
    TARGET_URL="http://127.0.0.1:$sport" HEARTBEATS_PER_SEC="$rate" LOADTEST_CLIENT="$client" SERVER_PID="$spid" REDIS_PID="$rpid" \
      "$OUT/loadtest" -json > "$OUT/summary-$client-$rate.json" || echo "(loadtest reported FAIL)"
    stop "$spid"
  done

  if [[ "${PROFILE:-0}" == 1 ]]; then
    pport=$(freeport)
    PPROF_PORT=$pport serve "$OUT/presence-server-pprof" "$rate"
    client=${CLIENTS##* }
    echo "--- profiling run (pprof build, client $client)"
    TARGET_URL="http://127.0.0.1:$sport" HEARTBEATS_PER_SEC="$rate" LOADTEST_CLIENT="$client" SERVER_PID="$spid" REDIS_PID="$rpid" \
      "$OUT/loadtest" > "$OUT/profile-run-$rate.log" 2>&1 &
    lt=$!
    sleep $(( RAMP_UP_MS / 1000 + 3 ))
    curl -fs -o "$OUT/server-cpu-$rate.pprof" "http://127.0.0.1:$pport/debug/pprof/profile?seconds=10"
    curl -fs -o "$OUT/server-allocs-$rate.pprof" "http://127.0.0.1:$pport/debug/pprof/allocs"
    wait "$lt" || true
    stop "$spid"
    go tool pprof -top -nodecount 25 "$OUT/presence-server-pprof" "$OUT/server-cpu-$rate.pprof" > "$OUT/server-cpu-$rate.top" 2>/dev/null
    go tool pprof -top -cum -nodecount 60 "$OUT/presence-server-pprof" "$OUT/server-cpu-$rate.pprof" > "$OUT/server-cpu-$rate.cum" 2>/dev/null
    go tool pprof -sample_index=alloc_space -top -nodecount 30 "$OUT/presence-server-pprof" "$OUT/server-allocs-$rate.pprof" > "$OUT/server-allocs-$rate.top" 2>/dev/null
    echo "profiles: $OUT/server-cpu-$rate.pprof, $OUT/server-allocs-$rate.pprof (tops: $OUT/server-*-$rate.top)"
  fi
done
echo "summaries in $OUT"
