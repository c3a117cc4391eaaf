#!/usr/bin/env bash
# Benchmark 1 (docs/PERFORMANCE.md): RSS per idle logged-in session.
#
# The gateway in front of the fixture server, plain and STARTTLS upstream: 1,000, 5,000 and
# 9,900 WebSocket sessions and 5,000 BOSH sessions each holding a request, a fresh gateway for
# each count. Then Prosody's own WebSocket and BOSH endpoints and its c2s port, with the same
# clients, at 5,000 sessions. Each figure is (RSS idle − RSS before) / sessions, after the
# sessions have been idle for HOLD seconds.
#
# Usage: loadtest/bench/memory.sh [COUNTS...]   (default: 1000 5000 9900)
# Environment: HOLD (default 10), BOSH_SESSIONS (5000), PROSODY_SESSIONS (5000), PARTS
# ("gateway prosody": which halves to run).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
read -ra COUNTS <<<"${*:-1000 5000 9900}"
HOLD=${HOLD:-10}
BOSH_SESSIONS=${BOSH_SESSIONS:-5000}
PROSODY_SESSIONS=${PROSODY_SESSIONS:-5000}
PARTS=${PARTS:-gateway prosody}
ROWS=()

# measure LABEL PID LOADTEST-ARGS...: one run; adds a table row (the sessions column says how
# many logged in).
measure() {
	local label=$1 pid=$2; shift 2
	local json=$BENCH_DIR/m-$RANDOM.json sessions
	"$LOADTEST" run --ramp "${RAMP:-1000}" --concurrency 200 --hold "$HOLD" --progress 0 \
		--source 127.0.1.1-127.0.1.16 --pid "$pid" --json "$json" "$@" >"$json.out" || true
	sessions=$(json_get "$json" "sessions_reached")
	ROWS+=("| $label | $sessions | $(json_get "$json" "targets.0.start.rss_kib") | $(json_get "$json" "targets.0.idle.rss_kib") | $(json_get "$json" "targets.0.rss_per_session_kib") |")
	echo "${ROWS[-1]}"
}

[[ " $PARTS " == *" gateway "* ]] && for upstream in plain tls; do
	if [[ $upstream == tls ]]; then
		start_fixture fixture-tls --tls
		policy=required ca=$FIXTURE_CA
	else
		start_fixture fixture-plain
		policy=disabled ca=
	fi
	for n in "${COUNTS[@]}"; do
		start_gateway gw "$FIXTURE_ADDR" "$policy" "$ca"
		measure "gateway, WebSocket, $upstream upstream" "$GATEWAY_PID" --transport ws \
			--ws "$GATEWAY_WS" --sessions "$n" --mechanism plain
		stop_started "$GATEWAY_PID"
	done
	start_gateway gw "$FIXTURE_ADDR" "$policy" "$ca"
	measure "gateway, BOSH, $upstream upstream" "$GATEWAY_PID" --transport bosh \
		--bosh "$GATEWAY_HTTP/http-bind" --sessions "$BOSH_SESSIONS" --mechanism plain
	stop_started "$GATEWAY_PID"
	stop_started "$FIXTURE_PID"
done

# Prosody 0.12, one process: its own endpoints, then its c2s port (STARTTLS) as reference.
# One account per session (shared accounts would add presence between their resources), and
# a slower ramp: Prosody's logins take the CPU of one core.
[[ " $PARTS " == *" prosody "* ]] && for what in ws bosh tcp; do
	start_prosody "prosody-$what" "$PROSODY_SESSIONS"
	case $what in
	ws) args=(--transport ws --ws "${PROSODY_HTTP/http/ws}/xmpp-websocket") ;;
	bosh) args=(--transport bosh --bosh "$PROSODY_HTTP/http-bind") ;;
	tcp) args=(--transport tcp --tcp "$PROSODY_C2S" --ca "$PROSODY_CA_FILE") ;;
	esac
	RAMP=250 measure "Prosody's own $what endpoint" "$PROSODY_PID" "${args[@]}" \
		--sessions "$PROSODY_SESSIONS" --mechanism plain --login-timeout 60
	"$BENCH_ROOT/scripts/prosody.sh" stop "$BENCH_DIR/prosody-$what"
done

echo
echo "| what | sessions | RSS before (kB) | RSS idle (kB) | KiB per session |"
echo "|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
