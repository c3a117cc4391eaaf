#!/usr/bin/env bash
# Benchmark 4 (docs/PERFORMANCE.md): relayed stanzas per second per core, and CPU per
# relayed stanza, for the gateway and for Prosody's own WebSocket endpoint on one workload.
#
# The gateway (plain upstream) in front of the fixture server, SESSIONS WebSocket sessions in
# pairs, each rate for DURATION seconds; the gateway's CPU seconds come from /proc. Every
# message is two relayed stanzas (browser to server, server to browser). Then the same
# clients at PROSODY_RATE against Prosody's own WebSocket endpoint and its c2s port, and
# through the gateway to that Prosody, for the CPU per message of each process. In between, the
# gateway with STARTTLS to the fixture at PROSODY_RATE, for what TLS to the server adds.
#
# Usage: loadtest/bench/throughput.sh [RATES...]   (default: 10000 20000 40000)
# Environment: DURATION (default 10), SESSIONS (default 20), PROSODY_RATE (default 2000).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
read -ra RATES <<<"${*:-10000 20000 40000}"
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-20}
PROSODY_RATE=${PROSODY_RATE:-2000}
ROWS=()

# row LABEL RATE JSON TARGET-INDEX
row() {
	local label=$1 rate=$2 json=$3 i=$4 cpu system received per_stanza kernel per_core
	cpu=$(json_get "$json" "targets.$i.traffic_cpu_secs")
	system=$(json_get "$json" "targets.$i.traffic_system_cpu_secs")
	received=$(json_get "$json" "messages_received")
	per_stanza=$(python3 -c "print(round($cpu * 1e6 / max(1, 2 * $received), 2))")
	kernel=$(python3 -c "print(round($system * 1e6 / max(1, 2 * $received), 2))")
	per_core=$(python3 -c "print(int(2 * $received / $cpu) if $cpu > 0 else 'n/a')")
	ROWS+=("| $label | $rate | $(json_get "$json" "rate_delivered") | $cpu | $per_stanza | $kernel | $per_core | $(json_get "$json" "delivery_ms.p99") | $(json_get "$json" "messages_lost") |")
	echo "${ROWS[-1]}"
}

start_fixture fixture
start_gateway gw "$FIXTURE_ADDR" disabled
for rate in "${RATES[@]}"; do
	json=$BENCH_DIR/fixture-$rate.json
	"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" --sessions "$SESSIONS" --mechanism plain \
		--rate "$rate" --duration "$DURATION" --progress 0 --pid "$GATEWAY_PID" \
		--pid "$FIXTURE_PID" --json "$json" >"$json.out"
	row "gateway (WebSocket, fixture upstream)" "$rate" "$json" 0
done
stop_started "$GATEWAY_PID"
stop_started "$FIXTURE_PID"

# The same at PROSODY_RATE with STARTTLS to the fixture: what TLS to the server adds.
start_fixture fixture-tls --tls
start_gateway gw-tls "$FIXTURE_ADDR" required "$FIXTURE_CA"
json=$BENCH_DIR/fixture-tls.json
"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" --sessions "$SESSIONS" --mechanism plain \
	--rate "$PROSODY_RATE" --duration "$DURATION" --progress 0 --pid "$GATEWAY_PID" \
	--json "$json" >"$json.out"
row "gateway (WebSocket, STARTTLS fixture upstream)" "$PROSODY_RATE" "$json" 0
stop_started "$GATEWAY_PID"
stop_started "$FIXTURE_PID"

start_prosody prosody "$SESSIONS"
start_gateway gw-prosody "$PROSODY_C2S" required "$PROSODY_CA_FILE"
common=(--sessions "$SESSIONS" --mechanism plain --rate "$PROSODY_RATE" --duration "$DURATION" --progress 0)
json=$BENCH_DIR/prosody-ws.json
"$LOADTEST" run --transport ws --ws "${PROSODY_HTTP/http/ws}/xmpp-websocket" "${common[@]}" \
	--pid "$PROSODY_PID" --json "$json" >"$json.out"
row "Prosody, its own WebSocket endpoint (whole process)" "$PROSODY_RATE" "$json" 0
json=$BENCH_DIR/prosody-tcp.json
"$LOADTEST" run --transport tcp --tcp "$PROSODY_C2S" --ca "$PROSODY_CA_FILE" "${common[@]}" \
	--pid "$PROSODY_PID" --json "$json" >"$json.out"
row "Prosody, c2s over TCP+TLS (whole process)" "$PROSODY_RATE" "$json" 0
json=$BENCH_DIR/gateway-prosody.json
"$LOADTEST" run --transport ws --ws "$GATEWAY_WS" "${common[@]}" \
	--pid "$GATEWAY_PID" --pid "$PROSODY_PID" --json "$json" >"$json.out"
row "gateway (WebSocket, Prosody upstream)" "$PROSODY_RATE" "$json" 0
row "Prosody behind the gateway (whole process)" "$PROSODY_RATE" "$json" 1

echo
echo "| process | offered msg/s | delivered msg/s | CPU s | µs CPU per relayed stanza | of which in the kernel | relayed stanzas/s per core | p99 ms | lost |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
