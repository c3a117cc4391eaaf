#!/usr/bin/env bash
# Instructions per relayed stanza (docs/PERFORMANCE.md): the figure to compare commits by,
# because an instruction count repeats where timings on a shared machine do not.
#
# The release gateway runs under `valgrind --tool=callgrind` in front of the fixture server
# (plain upstream), twice with the same two WebSocket sessions for the same time: once idle,
# once exchanging RATE messages per second for DURATION seconds. The difference in
# instructions, divided by the stanzas relayed (two per message), is the cost of a stanza:
# logins, timers and start-up cancel out. The profile of the busy run is kept.
#
# Usage: loadtest/bench/callgrind.sh
# Environment: RATE (default 500), DURATION (default 20), OUT (where to keep the busy run's
# callgrind file and its annotation; default: the scratch directory, removed at exit).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
bench_build
RATE=${RATE:-500}
DURATION=${DURATION:-20}
OUT=${OUT:-$BENCH_DIR}
mkdir -p "$OUT"

start_fixture fixture
declare -A IR RECEIVED
for run in idle busy; do
	GATEWAY_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$BENCH_DIR/callgrind.$run" \
		start_gateway "gw-$run" "$FIXTURE_ADDR" disabled
	if [[ $run == idle ]]; then
		traffic=(--hold "$DURATION")
	else
		traffic=(--rate "$RATE" --duration "$DURATION" --settle 10)
	fi
	"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" --sessions 2 --mechanism plain \
		--login-timeout 120 --progress 0 --strict --json "$BENCH_DIR/$run.json" "${traffic[@]}" \
		>"$BENCH_DIR/$run.out"
	stop_pid "$GATEWAY_PID" 120
	IR[$run]=$(sed -n 's/^summary: //p' "$BENCH_DIR/callgrind.$run")
	RECEIVED[$run]=$(json_get "$BENCH_DIR/$run.json" "messages_received")
	echo "$run: ${IR[$run]} instructions, ${RECEIVED[$run]} messages"
done

stanzas=$((2 * (RECEIVED[busy] - RECEIVED[idle])))
per_stanza=$(((IR[busy] - IR[idle]) / stanzas))
[[ $OUT -ef $BENCH_DIR ]] || cp "$BENCH_DIR/callgrind.busy" "$OUT/callgrind.busy"
callgrind_annotate "$BENCH_DIR/callgrind.busy" >"$OUT/callgrind.busy.txt" 2>/dev/null
echo
echo "| run | instructions | messages | relayed stanzas |"
echo "|---|---|---|---|"
echo "| idle, ${DURATION} s | ${IR[idle]} | ${RECEIVED[idle]} | 0 |"
echo "| ${RATE} msg/s, ${DURATION} s | ${IR[busy]} | ${RECEIVED[busy]} | $stanzas |"
echo
echo "instructions per relayed stanza: $per_stanza"
echo "profile of the busy run (self cost, top functions): $OUT/callgrind.busy.txt"
