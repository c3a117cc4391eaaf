#!/usr/bin/env bash
# Bounded soak: a real Prosody behind the gateway, pairs of xmpp.js (WebSocket) and strophe.js
# (BOSH) sessions exchanging numbered messages while other sessions log in and out without a
# pause, for SECONDS (default 600). Fails when a message is lost, duplicated or reordered, when
# a session or a socket to Prosody is left at the end, or when the gateway's RSS has not come
# back near its baseline (tests/soak/soak.mjs states the tolerances).
#
# Usage: scripts/soak.sh [SECONDS]
# Environment: XMPP_GATEWAY_BIN (default: the debug binary, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

SECONDS_TO_RUN=${1:-600}
case $SECONDS_TO_RUN in
	'' | *[!0-9]*) echo "usage: scripts/soak.sh [SECONDS]" >&2; exit 2 ;;
esac

if [[ -z ${XMPP_GATEWAY_BIN:-} ]]; then
	XMPP_GATEWAY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/xmpp-gateway
	[[ -x $XMPP_GATEWAY_BIN ]] || cargo build --bin xmpp-gateway
fi
export XMPP_GATEWAY_BIN
[[ -d tests/interop/node_modules ]] || scripts/install-deps.sh

exec node tests/soak/soak.mjs "$SECONDS_TO_RUN"
