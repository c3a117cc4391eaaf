#!/usr/bin/env bash
# The load tester's own test, run by scripts/test.sh: small runs of every transport through
# the gateway to a real Prosody and to the fixture server, straight to both over TCP, and to
# Prosody's own endpoints. Every run is --strict (each session logs in, every message arrives
# once and in order, no error), and the reports must carry the target's figures. A run with a
# wrong password must fail. The debug build is used; the figures mean nothing here.
set -euo pipefail
PROFILE=${PROFILE:-debug}
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
[[ -x $LOADTEST && -x $GATEWAY ]] || bench_build
bench_fd_limit 4096

SESSIONS=20
run() {
	local name=$1; shift
	echo "--- $name"
	"$LOADTEST" run --sessions "$SESSIONS" --rate 200 --duration 2 --settle 5 --progress 0 \
		--strict --json "$BENCH_DIR/$name.json" "$@"
}
# The report names the sampled process and saw its memory.
check_figures() {
	local rss
	rss=$(json_get "$BENCH_DIR/$1.json" "targets.0.idle.rss_kib")
	((rss > 0)) || { echo "$1: no RSS figure for the target" >&2; exit 1; }
}

start_prosody prosody 10
start_gateway gw-prosody "$PROSODY_C2S" required "$PROSODY_CA_FILE"
for transport in ws bosh mix; do
	run "gateway-prosody-$transport" --transport "$transport" --ws "$GATEWAY_WS" \
		--bosh "$GATEWAY_HTTP/http-bind" --accounts 10 --pid "$GATEWAY_PID"
	check_figures "gateway-prosody-$transport"
done
run prosody-tcp --transport tcp --tcp "$PROSODY_C2S" --ca "$PROSODY_CA_FILE" --accounts 10 \
	--mechanism plain --pid "$PROSODY_PID"
check_figures prosody-tcp
run prosody-own-ws --transport ws --ws "${PROSODY_HTTP/http/ws}/xmpp-websocket" --accounts 10
run prosody-own-bosh --transport bosh --bosh "$PROSODY_HTTP/http-bind" --accounts 10

echo "--- a wrong password fails the run"
if "$LOADTEST" run --sessions 2 --progress 0 --strict --transport ws --ws "$GATEWAY_WS" \
	--password wrong >"$BENCH_DIR/wrong.out" 2>&1; then
	echo "a run whose logins all failed passed --strict" >&2
	exit 1
fi
grep -q 'login sasl-failure: not-authorized' "$BENCH_DIR/wrong.out" \
	|| { cat "$BENCH_DIR/wrong.out" >&2; exit 1; }

start_fixture fixture-tls --tls
start_gateway gw-fixture-tls "$FIXTURE_ADDR" required "$FIXTURE_CA"
run gateway-fixture-tls-mix --transport mix --ws "$GATEWAY_WS" --bosh "$GATEWAY_HTTP/http-bind" \
	--pid "$GATEWAY_PID"
run fixture-tcp-tls --transport tcp --tcp "$FIXTURE_ADDR" --ca "$FIXTURE_CA" --pid "$FIXTURE_PID"
check_figures fixture-tcp-tls

start_fixture fixture-plain
start_gateway gw-fixture-plain "$FIXTURE_ADDR" disabled
run gateway-fixture-plain-ws --transport ws --ws "$GATEWAY_WS" --mechanism plain --pid "$GATEWAY_PID"
echo "load tester: all runs clean"
