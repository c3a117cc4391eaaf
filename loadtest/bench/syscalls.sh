#!/usr/bin/env bash
# System calls per relayed stanza (docs/PERFORMANCE.md): at a rate where each stanza wakes its
# session alone, most of the gateway's CPU time per stanza is spent in the kernel, and the
# number of calls it makes repeats from run to run where the time does not.
#
# The release gateway runs in front of the fixture server (plain upstream) with `strace -c -f`
# attached, twice with the same WebSocket sessions for the same time: once idle, once
# exchanging RATE messages per second for DURATION seconds. The difference per system call,
# divided by the stanzas relayed (two per message), is what a stanza costs: logins and timers
# cancel out.
#
# Usage: loadtest/bench/syscalls.sh
# Environment: RATE (default 2000), DURATION (default 10), SESSIONS (default 20).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
command -v strace >/dev/null || { echo "strace is not installed" >&2; exit 1; }
bench_build
RATE=${RATE:-2000}
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-20}

start_fixture fixture
declare -A RECEIVED
for run in idle busy; do
	start_gateway "gw-$run" "$FIXTURE_ADDR" disabled
	strace -c -f -U name,calls,errors -p "$GATEWAY_PID" -o "$BENCH_DIR/strace.$run" \
		2>"$BENCH_DIR/strace.$run.err" &
	tracer=$!
	# "Process N attached with M threads" once strace holds every thread.
	wait_for_line "$BENCH_DIR/strace.$run.err" "attached" 10 "$tracer"
	if [[ $run == idle ]]; then
		traffic=(--hold "$DURATION")
	else
		traffic=(--rate "$RATE" --duration "$DURATION" --settle 10)
	fi
	"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" --sessions "$SESSIONS" --mechanism plain \
		--progress 0 --strict --json "$BENCH_DIR/$run.json" "${traffic[@]}" >"$BENCH_DIR/$run.out"
	kill -INT "$tracer"
	wait "$tracer" || true
	stop_pid "$GATEWAY_PID" 10
	RECEIVED[$run]=$(json_get "$BENCH_DIR/$run.json" "messages_received")
	echo "$run: ${RECEIVED[$run]} messages"
done

stanzas=$((2 * (RECEIVED[busy] - RECEIVED[idle])))
echo
echo "| system call | calls, idle | calls, busy | failed, busy | per relayed stanza |"
echo "|---|---|---|---|---|"
python3 - "$BENCH_DIR/strace.idle" "$BENCH_DIR/strace.busy" "$stanzas" <<'EOF'
import sys

def table(path):
    rows = {}
    for line in open(path):
        parts = line.split()
        # Rows are "name calls [errors]"; the header, the rulers and the total are skipped.
        if len(parts) >= 2 and parts[1].isdigit() and parts[0] not in ("total", "syscall"):
            rows[parts[0]] = (int(parts[1]), int(parts[2]) if len(parts) > 2 else 0)
    return rows

idle, busy, stanzas = table(sys.argv[1]), table(sys.argv[2]), int(sys.argv[3])
total = 0
for name in sorted(busy, key=lambda n: -busy[n][0]):
    extra = busy[name][0] - idle.get(name, (0, 0))[0]
    total += extra
    if extra > 0:
        print(f"| {name} | {idle.get(name, (0, 0))[0]} | {busy[name][0]} | {busy[name][1]} | {extra / stanzas:.3f} |")
print(f"| **all** | | | | **{total / stanzas:.3f}** |")
print(f"\nrelayed stanzas: {stanzas}")
EOF
