#!/usr/bin/env bash
# Login latency (docs/PERFORMANCE.md, "Login latency"): from a client's first byte (its TCP
# connect) to <success/> and to its bound JID, for the same clients
#   - straight to the server over TCP with STARTTLS,
#   - over WebSocket through a gateway that opens each session's stream when asked (cold),
#   - over WebSocket through a gateway with a warm pool ([route.pool] warm = WARM),
# against the same server, the three paths taking turns, ROUNDS times. The gateways use
# STARTTLS toward the server, as the direct clients do. The servers: the fixture
# (SERVERS=fixture) and Prosody (SERVERS=prosody).
#
# Usage: loadtest/bench/login.sh
# Environment: SESSIONS per run (default 300), RAMP logins per second (default 50; the
# logins are spaced so each is measured alone, not queued behind others), ROUNDS (default
# 3), WARM (default 8), SERVERS ("fixture prosody"), MECHANISM (plain).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
SESSIONS=${SESSIONS:-300}
RAMP=${RAMP:-50}
ROUNDS=${ROUNDS:-3}
WARM=${WARM:-8}
SERVERS=${SERVERS:-fixture prosody}
MECHANISM=${MECHANISM:-plain}
ROWS=()
POOL=()

row() {
	local label=$1 round=$2 json=$3
	ROWS+=("| $server | $round | $label | $(json_get "$json" sessions_reached) | $(json_get "$json" login_to_success_ms.p50) | $(json_get "$json" login_to_success_ms.p99) | $(json_get "$json" login_to_bound_ms.p50) | $(json_get "$json" login_to_bound_ms.p99) |")
	echo "${ROWS[-1]}"
}

run() {
	"$LOADTEST" run --sessions "$SESSIONS" --ramp "$RAMP" --rate 0 --progress 0 --strict \
		--mechanism "$MECHANISM" --json "$1" "${@:2}" >"$1.out"
}

for server in $SERVERS; do
	if [[ $server == fixture ]]; then
		start_fixture fixture --tls
		SERVER_ADDR=$FIXTURE_ADDR SERVER_CA=$FIXTURE_CA
	else
		start_prosody prosody "$SESSIONS"
		SERVER_ADDR=$PROSODY_C2S SERVER_CA=$PROSODY_CA_FILE
	fi
	start_gateway "gw-cold-$server" "$SERVER_ADDR" required "$SERVER_CA"
	COLD_WS=$GATEWAY_WS COLD_PID=$GATEWAY_PID
	ROUTE_EXTRA=$'[route.pool]\nwarm = '"$WARM"$'\nmax_age_secs = 120' \
		start_gateway "gw-warm-$server" "$SERVER_ADDR" required "$SERVER_CA"
	WARM_WS=$GATEWAY_WS WARM_PID=$GATEWAY_PID WARM_ADMIN=$GATEWAY_ADMIN
	for round in $(seq 1 "$ROUNDS"); do
		json=$BENCH_DIR/$server-direct-$round.json
		run "$json" --transport tcp --tcp "$SERVER_ADDR" --ca "$SERVER_CA"
		row "TCP + STARTTLS straight to the server" "$round" "$json"
		json=$BENCH_DIR/$server-cold-$round.json
		run "$json" --transport ws --ws "$COLD_WS" --pid "$COLD_PID"
		row "WebSocket, gateway without a pool" "$round" "$json"
		json=$BENCH_DIR/$server-warm-$round.json
		run "$json" --transport ws --ws "$WARM_WS" --pid "$WARM_PID"
		row "WebSocket, gateway with warm = $WARM" "$round" "$json"
	done
	# How many warm logins took a ready stream: the figure means nothing if few did.
	POOL+=("$server: $(curl -fsS "$WARM_ADMIN/metrics" | grep '^xmpp_gateway_upstream_pool_sessions_total' | sed 's/.*result="\([a-z]*\)".* /\1 /' | tr '\n' ' ')")
	stop_started "$COLD_PID"
	stop_started "$WARM_PID"
done

echo
echo "| server | round | path | sessions | to <success/> p50 ms | p99 ms | to bound JID p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "warm pool session starts: ${POOL[*]}"
