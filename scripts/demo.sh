#!/usr/bin/env bash
# The demo in one command, on a fresh Debian machine with a Rust toolchain:
# installs what is missing, builds the gateway (release), starts a private
# Prosody with the users alice and bob (already each other's contacts), and
# the gateway on 0.0.0.0:5280 serving converse.js. Runs until Ctrl-C, then
# stops everything.
#
# Environment: DEMO_PORT (default 5280), XMPP_GATEWAY_BIN (use this binary
# instead of building target/release/xmpp-gateway), DEMO_TRANSPORT=bosh (the
# page it tells you to open has converse.js use BOSH at /http-bind instead of
# the WebSocket; any page also takes ?transport=bosh or ?transport=websocket).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/demo-stack.sh
source scripts/lib/demo-stack.sh

prepare_demo_binary

trap 'demo_stack_stop' EXIT
trap 'echo; echo "Stopping..."; exit 0' INT TERM
demo_stack_start

port=${DEMO_PORT:-5280}
if [[ $DEMO_TRANSPORT == bosh ]]; then
	query="?transport=bosh"
	endpoint="BOSH at http://localhost:$port/http-bind (WebSocket: open the page without ?transport=bosh)"
else
	query=
	endpoint="WebSocket at ws://localhost:$port/xmpp-websocket (BOSH: open the page with ?transport=bosh)"
fi

cat <<EOT

  xmpp-gateway demo is running.

    Open:      $DEMO_URL   (from another machine: http://<this-host>:$port/$query)
    Log in as: alice@localhost  /  $DEMO_PASSWORD
          or:  bob@localhost    /  $DEMO_PASSWORD
               (each has the other as a contact: open it and chat)
    Transport: $endpoint
    Metrics:   $DEMO_ADMIN_URL/metrics

  Press Ctrl-C to stop.

EOT
# Runs until the gateway exits or Ctrl-C (which reaches the gateway too: it
# drains and exits); the EXIT trap then stops whatever is left and Prosody.
wait "$GATEWAY_PID" || true
echo "Demo stopped."
