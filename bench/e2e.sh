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
#   BASELINE_REF=origin/main REPEAT=3 bench/e2e.sh      # this tree against a git ref, side by side
#                                                       # (table in compare.txt, chart in compare.svg)
#   SERVER_ENV="GOGC=200 GOMEMLIMIT=512MiB" bench/e2e.sh # extra environment for the server (every build)
#   FLOOD=1 bench/e2e.sh         # the 10/s scenario with one socket flooding beside it
#   DASHBOARD=compare RATES=10 bench/e2e.sh   # dashboard off vs open, on 1,000 active rooms
#
# BASELINE_REF: the server is also built at that git ref (from a `git
# archive` of it unpacked under $OUT, removed once built and at exit), and
# every scenario runs for both builds interleaved (baseline, new,
# baseline, new...), each on a fresh server process, on the same
# redis-server, loaded by the same load generator (this tree's), REPEAT
# times (default 1). The end prints a table per scenario and client: the
# median of each build's runs and the ratios new/baseline (also in
# $OUT/compare.txt). SERVER_BIN replaces the new build only.
#
# FLOOD=1: RATES defaults to "10", and the loadtest adds one raw socket
# sending FLOOD_RATE (default 20000) heartbeats/s for FLOOD_DURATION_MS
# (default 10000) after the ramp-up; see go doc ./bench/cmd/loadtest.
#
# DASHBOARD=compare: like BASELINE_REF, two configurations interleaved
# (off, on, off, on...), both this tree's server, both with EXTRA_ROOMS
# (default 900) more rooms joined in Redis before the load, so 1,000 rooms
# are active beside the loadtest's 100; "on" starts the server with the
# dashboard (PRESENCE_DASHBOARD=1 on its own loopback port, with a token)
# and the loadtest opens a viewer on it for the whole run: its event stream
# read as it comes, and the page's polls (see go doc ./bench/cmd/loadtest).
# The table compares on against off. Not with BASELINE_REF.
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

if [[ "${FLOOD:-0}" == 1 ]]; then
  RATES=${RATES:-10}
  export FLOOD_RATE=${FLOOD_RATE:-20000} FLOOD_DURATION_MS=${FLOOD_DURATION_MS:-10000}
fi
RATES=${RATES:-"10 50"}
REPEAT=${REPEAT:-1}
read -ra server_env <<< "${SERVER_ENV:-}"
for kv in "${server_env[@]}"; do
  [[ "$kv" == [A-Za-z_]*=* ]] || { echo "SERVER_ENV: $kv is not NAME=value"; exit 2; }
done
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
  rm -rf "$OUT/baseline-src"
}
trap cleanup EXIT

echo "building into $OUT"
if [[ -n "${SERVER_BIN:-}" ]]; then # a server built otherwise, for experiments
  cp "$SERVER_BIN" "$OUT/presence-server"
else
  go build -o "$OUT/presence-server" ./cmd/presence-server
fi
go build -o "$OUT/loadtest" ./bench/cmd/loadtest
builds=(new)
names="baseline new" # of the compared configurations, for the table
if [[ "${DASHBOARD:-}" == compare ]]; then
  [[ -z "${BASELINE_REF:-}" ]] || { echo "DASHBOARD=compare and BASELINE_REF: one comparison at a time"; exit 2; }
  builds=(off on); names="off on"
  export EXTRA_ROOMS=${EXTRA_ROOMS:-900}
elif [[ -n "${BASELINE_REF:-}" ]]; then
  rev=$(git rev-parse --verify "$BASELINE_REF^{commit}")
  echo "baseline: $BASELINE_REF = $rev"
  rm -rf "$OUT/baseline-src"; mkdir -p "$OUT/baseline-src"
  git archive "$rev" | tar -x -C "$OUT/baseline-src"
  (cd "$OUT/baseline-src" && go build -o "$OUT/presence-server-baseline" ./cmd/presence-server)
  rm -rf "$OUT/baseline-src"
  echo "$rev" > "$OUT/baseline-rev"
  builds=(baseline new)
fi
binary() { if [[ "$1" == baseline ]]; then echo "$OUT/presence-server-baseline"; else echo "$OUT/presence-server"; fi; }
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

# serve BINARY RATE [LOGNAME]: starts the server, sets spid, sport, kp
# (its key prefix) and dash (the dashboard's URL when $variant is "on").
serve() {
  sport=$(freeport)
  kp="e2e$RANDOM"
  dash=""
  local extra=()
  if [[ "${variant:-}" == on ]]; then
    local dport; dport=$(freeport)
    extra+=(PRESENCE_DASHBOARD=1 PRESENCE_DASHBOARD_ADDR="127.0.0.1:$dport" PRESENCE_DASHBOARD_TOKEN=e2e-bench)
    dash="http://127.0.0.1:$dport/dashboard/"
  fi
  # The default per-socket limit is 20 heartbeats/s (bursts of 40); lift it
  # above the offered rate.
  if (( $2 > 15 )); then extra+=(PRESENCE_HEARTBEAT_RATE=$(( $2 * 2 )) PRESENCE_HEARTBEAT_BURST=$(( $2 * 4 ))); fi
  env HOST=127.0.0.1 PORT="$sport" REDIS_URL="redis://127.0.0.1:$rport/0" PRESENCE_HEARTBEAT=lua \
    PRESENCE_KEY_PREFIX="$kp" LOG_LEVEL=warn PPROF_ADDR="127.0.0.1:${PPROF_PORT:-0}" "${extra[@]}" "${server_env[@]}" "$1" \
    > "$OUT/server-${3:-$2}.log" 2>&1 &
  spid=$!; pids+=("$spid")
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$sport/healthz" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "server did not start:"; cat "$OUT/server-${3:-$2}.log"; exit 1
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for rate in $RATES; do
  for client in $CLIENTS; do
    for run in $(seq "$REPEAT"); do
      for build in "${builds[@]}"; do
        variant=$build
        # Without a baseline or repeats, the names are those of a single run.
        tag="$client-$rate"; label=""
        if (( REPEAT > 1 )); then tag="$tag-r$run"; label=", run $run of $REPEAT"; fi
        if (( ${#builds[@]} > 1 )); then tag="$build-$tag"; label="$label, build $build"; fi
        serve "$(binary "$build")" "$rate" "$tag"
        echo "=== $ROOM_COUNT rooms × $USERS_PER_ROOM users × $rate heartbeats/s, client $client$label (server pid $spid, redis pid $rpid)"
        TARGET_URL="http://127.0.0.1:$sport" HEARTBEATS_PER_SEC="$rate" LOADTEST_CLIENT="$client" SERVER_PID="$spid" REDIS_PID="$rpid" \
          REDIS_URL="redis://127.0.0.1:$rport/0" PRESENCE_KEY_PREFIX="$kp" DASHBOARD_URL="$dash" DASHBOARD_TOKEN=e2e-bench \
          "$OUT/loadtest" -json > "$OUT/summary-$tag.json" || echo "(loadtest reported FAIL)"
        stop "$spid"
      done
    done
  done

  if [[ "${PROFILE:-0}" == 1 ]]; then
    variant=""
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
if (( ${#builds[@]} > 1 )); then
  echo
  if [[ "$names" == "off on" ]]; then
    echo "=== dashboard off vs on (a viewer open), $EXTRA_ROOMS extra active rooms in both; ${SERVER_ENV:+server env $SERVER_ENV; }median of $REPEAT run(s) each"
  else
    echo "=== baseline $BASELINE_REF ($(cut -c1-12 "$OUT/baseline-rev")) vs new (this tree${SERVER_BIN:+, SERVER_BIN}); ${SERVER_ENV:+server env $SERVER_ENV; }median of $REPEAT run(s) each"
  fi
  BUILD_NAMES="$names" BASELINE_LABEL="${BASELINE_REF:-dashboard off}" python3 - "$OUT" "$REPEAT" "$RATES" "$CLIENTS" <<'PY' | tee "$OUT/compare.txt"
import json, statistics, sys, os
out, repeat, rates, clients = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
BA, NE = os.environ.get("BUILD_NAMES", "baseline new").split()  # compared against, compared

def load(build, client, rate):
    runs = []
    for r in range(1, repeat + 1):
        tag = f"{build}-{client}-{rate}" + (f"-r{r}" if repeat > 1 else "")
        try:
            with open(os.path.join(out, f"summary-{tag}.json")) as f:
                runs.append(json.load(f))
        except (OSError, ValueError):
            pass  # the run died before its summary: it counts in "runs"
    return runs

def med(runs, key, sub=None):
    vals = [((r.get(sub) or {}) if sub else r).get(key) for r in runs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def codes(runs, key="errors_by_code", sub=None):
    tot = {}
    for r in runs:
        for k, n in (((r.get(sub) or {}) if sub else r).get(key) or {}).items():
            tot[k] = tot.get(k, 0) + n
    if not tot:
        return "-"
    return " ".join(f"{k}:{n}" for k, n in sorted(tot.items(), key=lambda kv: (-kv[1], kv[0])))

def fmt(v, nd=1):
    return "?" if v is None else f"{v:,.{nd}f}"

def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"

cols = [("acks/s", "acks_per_sec", 0), ("p50 ms", "p50_ms", 2), ("p99 ms", "p99_ms", 1),
        ("timeouts", "timeouts", 0), ("not delivered", "updates_missing", 0), ("merged", "updates_merged", 0),
        ("CPU ms/1k acks", "server_cpu_ms_per_1000_acks", 1), ("peak RSS MB", "server_rss_peak_mb", 1)]
flood = float(os.environ.get("FLOOD_RATE") or 0) > 0
rows, frows = [], []
for rate in rates:
    for client in clients:
        got = {b: load(b, client, rate) for b in (BA, NE)}
        m = {b: [med(got[b], c[1]) for c in cols] for b in got}
        for b in (BA, NE):
            rows.append([rate, client, b, str(len(got[b]))] + [fmt(v, c[2]) for v, c in zip(m[b], cols)] + [codes(got[b])])
        rows.append([rate, client, f"{NE}/{BA}", ""] + [ratio(n, o) for n, o in zip(m[NE], m[BA])] + [""])
        if flood:
            for b in (BA, NE):
                g = got[b]
                frows.append([rate, client, b, fmt(med(g, "sent", "flood"), 0), fmt(med(g, "acked_ok", "flood"), 0),
                              codes(g, "acks_by_code", "flood"), fmt(med(g, "timeouts", "flood"), 0),
                              f"{sum(1 for r in g if (r.get('flood') or {}).get('disconnected'))}/{len(g)}",
                              fmt(med(g, "main_p99_ms", "flood"), 1), fmt(med(g, "main_outside_p99_ms", "flood"), 1)])

def table(head, rows):
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w[i]) if i < 3 or i == len(r) - 1 else str(v).rjust(w[i]) for i, v in enumerate(r)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print(line(r))

table(["rate/s", "client", "build", "runs"] + [c[0] for c in cols] + ["errors by code (all runs)"], rows)
if frows:
    print()
    print("flood socket: median sent and acked ok, failure acks summed over the runs, runs in which the server")
    print("disconnected it; the main clients' p99 over heartbeats sent during the flood and over the rest of the window:")
    table(["rate/s", "client", "build", "flood sent", "acked ok", "timeouts", "disconnected",
           "main p99 in flood ms", "main p99 outside ms", "flood acks by code (all runs)"],
          [r[:5] + r[6:] + [r[5]] for r in frows])
if BA == "off":
    print()
    print("the dashboard viewer of the \"on\" runs: presence events read from its stream, events the server dropped for it,")
    print("its polls (rooms page every 3 s, a room's members every 2 s) and their errors, rooms on the first page:")
    vrows = []
    for rate in rates:
        for client in clients:
            for r in load(NE, client, rate):
                d = r.get("dashboard") or {}
                vrows.append([rate, client, f"{d.get('presence_events', 0):,}", f"{d.get('dropped', 0):,}", str(d.get("polls", 0)),
                              str(d.get("poll_errors", 0)), str(d.get("rooms_listed", 0)), str(d.get("extra_rooms", 0)), d.get("stream_error", "") or "-"])
    table(["rate/s", "client", "viewer events", "dropped", "polls", "poll errors", "rooms on page 1", "extra rooms", "stream error"], vrows)

# The chart: acks/s, p99 and server CPU per 1,000 acks, baseline and new
# side by side per scenario, on log scales (the builds differ by up to
# 100x). Written next to the summaries as compare.svg.
import math
groups = [(rate, client) for rate in rates for client in clients]
med3 = {(g, b): [med(load(b, g[1], g[0]), k) for k in ("acks_per_sec", "p99_ms", "server_cpu_ms_per_1000_acks")]
        for g in groups for b in (BA, NE)}
panels = [("acks/s (higher is better)", 0), ("ack p99, ms (lower is better)", 1), ("server CPU per 1,000 acks, ms (lower is better)", 2)]
W, L, PH, GAP, TOP = 960, 70, 170, 70, 60
H = TOP + len(panels) * (PH + GAP) + 30
colors = {BA: "#9a9a9a", NE: "#1f5fa8"}
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="#fff"/>',
       f'<text x="{L}" y="26" font-size="16" font-weight="bold">presence-server end to end: {BA + " " + os.environ.get("BASELINE_LABEL", "") if BA == "baseline" else "dashboard " + BA} vs {NE}, {os.environ.get("ROOM_COUNT", "100")} rooms x {os.environ.get("USERS_PER_ROOM", "5")} users</text>',
       f'<rect x="{W-230}" y="36" width="12" height="12" fill="{colors[BA]}"/><text x="{W-213}" y="46">{BA}</text>',
       f'<rect x="{W-140}" y="36" width="12" height="12" fill="{colors[NE]}"/><text x="{W-123}" y="46">{NE}</text>']
gw = (W - L - 20) / len(groups)
for pi, (title, k) in enumerate(panels):
    y0 = TOP + pi * (PH + GAP) + 20
    vals = [v[k] for v in med3.values() if v[k]]
    lo = 10 ** math.floor(math.log10(max(min(vals), 1e-3))) if vals else 1
    hi = 10 ** math.ceil(math.log10(max(vals))) if vals else 10
    if hi <= lo: hi = lo * 10
    yv = lambda v: y0 + PH - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * PH
    out.append(f'<text x="{L}" y="{y0-8}" font-size="13" font-weight="bold">{title}</text>')
    d = lo
    while d <= hi * 1.0001:
        out.append(f'<line x1="{L}" x2="{W-20}" y1="{yv(d):.1f}" y2="{yv(d):.1f}" stroke="#e3e3e3"/><text x="{L-6}" y="{yv(d)+4:.1f}" text-anchor="end" fill="#555">{d:g}</text>')
        d *= 10
    for gi, g in enumerate(groups):
        for bi, b in enumerate((BA, NE)):
            v = med3[(g, b)][k]
            if v is None: continue
            x = L + gi * gw + gw * 0.2 + bi * gw * 0.3
            y = yv(v)
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{gw*0.28:.1f}" height="{y0+PH-y:.1f}" fill="{colors[b]}"/>')
            out.append(f'<text x="{x+gw*0.14:.1f}" y="{y-3:.1f}" text-anchor="middle" font-size="10">{v:,.0f}</text>')
        out.append(f'<text x="{L+gi*gw+gw/2:.1f}" y="{y0+PH+16}" text-anchor="middle">{int(g[0]) * int(os.environ.get("ROOM_COUNT", "100")) * int(os.environ.get("USERS_PER_ROOM", "5")):,}/s offered, {g[1]} client</text>')
out.append('</svg>')
with open(os.path.join(out_dir := sys.argv[1], "compare.svg"), "w") as f:
    f.write("\n".join(out) + "\n")
print(f"chart: {out_dir}/compare.svg")
PY
fi
echo "summaries in $OUT"
