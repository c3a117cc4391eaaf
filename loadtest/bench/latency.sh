#!/usr/bin/env bash
# Benchmark 3 (docs/PERFORMANCE.md): delivery latency through the gateway against the same
# clients straight to the server, at several rates.
#
# SESSIONS sessions (in pairs) over WebSocket through the gateway (STARTTLS upstream), and
# over TCP with STARTTLS straight to the server, each rate for DURATION seconds; the two paths
# alternate at each rate against the same server. The servers: the fixture (SERVERS=fixture),
# whose own latency is small enough to show what the gateway adds, and Prosody
# (SERVERS=prosody), the real thing.
#
# Usage: loadtest/bench/latency.sh [RATES...]   (default: 500 1000 2000 4000 8000)
# Environment: DURATION (default 10), SESSIONS (default 100), SERVERS ("fixture prosody").
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
read -ra RATES <<<"${*:-500 1000 2000 4000 8000}"
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-100}
SERVERS=${SERVERS:-fixture prosody}
ROWS=()

row() {
	local label=$1 rate=$2 json=$3
	ROWS+=("| $server | $rate | $label | $(json_get "$json" rate_delivered) | $(json_get "$json" delivery_ms.p50) | $(json_get "$json" delivery_ms.p99) | $(json_get "$json" delivery_ms.max) | $(json_get "$json" messages_lost) |")
	echo "${ROWS[-1]}"
}

for server in $SERVERS; do
	if [[ $server == fixture ]]; then
		start_fixture fixture --tls
		SERVER_ADDR=$FIXTURE_ADDR SERVER_CA=$FIXTURE_CA SERVER_PID=$FIXTURE_PID
	else
		start_prosody prosody "$SESSIONS"
		SERVER_ADDR=$PROSODY_C2S SERVER_CA=$PROSODY_CA_FILE SERVER_PID=$PROSODY_PID
	fi
	start_gateway "gw-$server" "$SERVER_ADDR" required "$SERVER_CA"
	for rate in "${RATES[@]}"; do
		json=$BENCH_DIR/$server-direct-$rate.json
		"$LOADTEST" run --transport tcp --tcp "$SERVER_ADDR" --ca "$SERVER_CA" \
			--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
			--progress 0 --pid "$SERVER_PID" --json "$json" >"$json.out"
		row "TCP straight to the server" "$rate" "$json"
		json=$BENCH_DIR/$server-gateway-$rate.json
		"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" \
			--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
			--progress 0 --pid "$GATEWAY_PID" --pid "$SERVER_PID" --json "$json" >"$json.out"
		row "WebSocket through the gateway" "$rate" "$json"
	done
	stop_started "$GATEWAY_PID"
done

echo
echo "| server | offered msg/s | path | delivered msg/s | p50 ms | p99 ms | max ms | lost |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
