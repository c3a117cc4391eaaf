#!/usr/bin/env bash
# Benchmark 3 (docs/PERFORMANCE.md): delivery latency through the gateway against the same
# clients straight to the server, at several rates, with a real Prosody behind.
#
# 100 sessions (50 pairs) over WebSocket through the gateway (STARTTLS to Prosody), and over
# TCP with STARTTLS straight to Prosody, each rate for DURATION seconds; the two paths run
# one after the other against the same Prosody, alternating at each rate.
#
# Usage: loadtest/bench/latency.sh [RATES...]   (default: 500 1000 2000 4000 8000)
# Environment: DURATION (default 10), SESSIONS (default 100).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
RATES=("${@:-500 1000 2000 4000 8000}")
read -ra RATES <<<"${RATES[*]}"
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-100}
ROWS=()

start_prosody prosody "$SESSIONS"
start_gateway gw "$PROSODY_C2S" required "$PROSODY_CA_FILE"

row() {
	local label=$1 rate=$2 json=$3 f
	f() { json_get "$json" "$1"; }
	ROWS+=("| $rate | $label | $(f "['rate_delivered']") | $(f "['delivery_ms']['p50']") | $(f "['delivery_ms']['p99']") | $(f "['delivery_ms']['max']") | $(f "['messages_lost']") |")
	echo "${ROWS[-1]}"
}

for rate in "${RATES[@]}"; do
	json=$BENCH_DIR/direct-$rate.json
	"$LOADTEST" run --transport tcp --tcp "$PROSODY_C2S" --ca "$PROSODY_CA_FILE" \
		--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
		--progress 0 --pid "$PROSODY_PID" --json "$json" >"$json.out"
	row "TCP straight to Prosody" "$rate" "$json"
	json=$BENCH_DIR/gateway-$rate.json
	"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" \
		--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
		--progress 0 --pid "$GATEWAY_PID" --pid "$PROSODY_PID" --json "$json" >"$json.out"
	row "WebSocket through the gateway" "$rate" "$json"
done

echo
echo "| offered msg/s | path | delivered msg/s | p50 ms | p99 ms | max ms | lost |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
