#!/bin/bash
# luacost.sh OLD.lua NEW.lua: instructions per call of two versions of
# meta_mutate.lua, per path, counted by valgrind (callgrind) in a private
# redis-server (hz 1, so its cron adds next to nothing): deterministic, so
# usable on a busy machine where timings are not. Needs valgrind,
# redis-server, redis-benchmark, python3.
#
#	git show HEAD~3:luasrc/meta_mutate.lua > /tmp/old.lua
#	bench/luacost.sh /tmp/old.lua luasrc/meta_mutate.lua
set -eu
N=${N:-300}
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
DIR=$(mktemp -d)
OLD=$(realpath "$1") NEW=$(realpath "$2")
valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.%p" redis-server --port "$PORT" --bind 127.0.0.1 \
	--save '' --appendonly no --hz 1 --dir "$DIR" >"$DIR/vg.log" 2>&1 &
VPID=$!
trap 'kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; rm -rf "$DIR"' EXIT
C="redis-cli -p $PORT"
for _ in $(seq 60); do $C PING >/dev/null 2>&1 && break; sleep 0.5; done
# ARGV: op major actor stamp author events chanType chanName nowMs named enforced token items...
declare -A CASES=(
	[update]="update '' '' '' '' ev t n 1 '' '' '' counter 5 ''"
	[major-conflict]="update 999999999 '' '' '' ev t n 1 '' '' '' counter 5 ''"
	[revision-conflict]="update '' '' '' '' ev t n 1 '' '' '' counter 5 1"
	[set-3-stamped]="set '' u1 2026-01-01T00:00:00.000Z 1 ev t n 1 '' '' '' a 1 '' b 2 '' c 3 ''"
)
for f in "$OLD" "$NEW"; do
	SHA=$($C SCRIPT LOAD "$(cat "$f")")
	for c in update major-conflict revision-conflict set-3-stamped; do
		$C DEL '{m}meta' >/dev/null
		$C HSET '{m}meta' major 1 v:counter 0 r:counter 1 >/dev/null
		eval "$C EVALSHA $SHA 4 {m}meta {m}lock {m}idx {m}lock ${CASES[$c]}" >/dev/null
		callgrind_control -z $VPID >/dev/null
		eval "redis-benchmark -p $PORT -c 1 -n $N -q EVALSHA $SHA 4 {m}meta {m}lock {m}idx {m}lock ${CASES[$c]}" >/dev/null
		callgrind_control -d $VPID >/dev/null
		sleep 0.3
		g=$(ls -t "$DIR"/cg.* | head -1)
		ir=$(callgrind_annotate "$g" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')
		echo "$(basename "$f") $c $((ir / N)) instructions/call"
	done
done
