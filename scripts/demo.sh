#!/usr/bin/env bash
# The demo in one command, on a fresh Debian machine with a Rust toolchain:
# installs what is missing, builds the gateway (release), starts a private
# Prosody with the users alice and bob, and the gateway on 0.0.0.0:5280
# serving converse.js. Runs until Ctrl-C, then stops everything.
#
# Environment: DEMO_PORT (default 5280), XMPP_GATEWAY_BIN (use this binary
# instead of building target/release/xmpp-gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/demo-stack.sh
source scripts/lib/demo-stack.sh

phase "Installing dependencies"
scripts/install-deps.sh

if [[ -n "${XMPP_GATEWAY_BIN:-}" ]]; then
	GATEWAY_BIN=$XMPP_GATEWAY_BIN
else
	phase "cargo build --release"
	cargo build --release
	GATEWAY_BIN=$PWD/target/release/xmpp-gateway
fi

trap 'demo_stack_stop' EXIT
trap 'echo; echo "Stopping..."; exit 0' INT TERM
demo_stack_start

cat <<EOT

  xmpp-gateway demo is running.

    Open:      $DEMO_URL   (from another machine: http://<this-host>:${DEMO_PORT:-5280}/)
    Log in as: alice@localhost  /  $DEMO_PASSWORD
          or:  bob@localhost    /  $DEMO_PASSWORD
    WebSocket: ws://localhost:${DEMO_PORT:-5280}/xmpp-websocket
    Metrics:   $DEMO_ADMIN_URL/metrics

  Press Ctrl-C to stop.

EOT
# Runs until the gateway exits or Ctrl-C (which reaches the gateway too: it
# drains and exits); the EXIT trap then stops whatever is left and Prosody.
wait "$GATEWAY_PID" || true
echo "Demo stopped."
