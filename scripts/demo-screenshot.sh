#!/usr/bin/env bash
# Starts the demo stack without asking anything (loopback only, a free port
# from 5280), runs scripts/demo-screenshot.mjs against it and stops it all.
# The picture lands in .run/demo.png (or $1).
#
# Environment: XMPP_GATEWAY_BIN (use this binary instead of building
# target/release/xmpp-gateway); DEMO_TRANSPORT=bosh to have converse.js use
# BOSH (/http-bind) instead of the WebSocket.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/demo-stack.sh
source scripts/lib/demo-stack.sh

output=${1:-$PWD/.run/demo.png}

prepare_demo_binary

export DEMO_LISTEN_HOST=127.0.0.1
DEMO_PORT=${DEMO_PORT:-$(free_port_from 5280)}
export DEMO_PORT
export DEMO_RUN_DIR=${DEMO_RUN_DIR:-$PWD/.run/demo-screenshot}

trap 'demo_stack_stop' EXIT
trap 'exit 130' INT TERM
demo_stack_start

phase "Taking the screenshot ($DEMO_TRANSPORT)"
# DEMO_URL carries ?transport=bosh when DEMO_TRANSPORT=bosh.
node scripts/demo-screenshot.mjs "$DEMO_URL" "$output"

# The picture looks the same on both transports; the gateway's counters tell
# them apart. bob (the Node.js client) is always one WebSocket session, alice
# (converse.js) is one session on DEMO_TRANSPORT.
started() {
	curl -fsS "$DEMO_ADMIN_URL/metrics" |
		sed -n "s/^xmpp_gateway_sessions_started_total{transport=\"$1\"} //p"
}
ws=$(started websocket) bosh=$(started bosh)
echo "sessions started: websocket=${ws:-0} bosh=${bosh:-0}"
if [[ $DEMO_TRANSPORT == bosh ]]; then want="1 1"; else want="2 0"; fi
if [[ "${ws:-0} ${bosh:-0}" != "$want" ]]; then
	echo "demo-screenshot: converse.js did not use $DEMO_TRANSPORT (expected websocket bosh = $want)" >&2
	exit 1
fi
echo "converse.js used $DEMO_TRANSPORT"
