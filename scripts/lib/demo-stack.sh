# shellcheck shell=bash
# The demo stack, shared by scripts/demo.sh and scripts/demo-screenshot.sh
# (sourced, not run): a private Prosody with alice and bob, each already in
# the other's roster with a mutual subscription (so either one logs in, sees
# the other and can chat at once), and the gateway in front of it serving
# demo/ (converse.js) on the same port as its WebSocket endpoint.
#
# Inputs (environment):
#   GATEWAY_BIN        the gateway binary to run (required)
#   DEMO_LISTEN_HOST   address the gateway listens on (default 0.0.0.0)
#   DEMO_PORT          its port (default 5280)
#   DEMO_RUN_DIR       where Prosody's files and the logs go (default .run/demo)
#   DEMO_TRANSPORT     websocket (default) or bosh: which endpoint the page
#                      at DEMO_URL has converse.js use (demo/index.html reads
#                      it from ?transport=)
# Outputs: DEMO_URL, DEMO_ADMIN_URL, GATEWAY_PID, PROSODY_DIR and the
# variables of $PROSODY_DIR/env.

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEMO_PASSWORD=demo-password

demo_stack_start() {
	local root listen_host port admin_port
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	listen_host=${DEMO_LISTEN_HOST:-0.0.0.0}
	port=${DEMO_PORT:-5280}
	DEMO_RUN_DIR=${DEMO_RUN_DIR:-$root/.run/demo}
	PROSODY_DIR=$DEMO_RUN_DIR/prosody
	case ${DEMO_TRANSPORT:=websocket} in
	websocket | bosh) ;;
	*)
		echo "DEMO_TRANSPORT must be websocket or bosh, not '$DEMO_TRANSPORT'." >&2
		return 1
		;;
	esac
	mkdir -p "$DEMO_RUN_DIR"

	if port_in_use "$port"; then
		echo "Port $port is taken; choose another with DEMO_PORT=NNNN." >&2
		return 1
	fi
	admin_port=$(free_port_from 9280)

	phase "Starting Prosody (alice and bob, in each other's roster)"
	"$root/scripts/prosody.sh" setup "$PROSODY_DIR" \
		--user "alice:$DEMO_PASSWORD" --user "bob:$DEMO_PASSWORD" \
		--mutual-roster alice,bob
	# shellcheck disable=SC1091
	source "$PROSODY_DIR/env"
	"$root/scripts/prosody.sh" start "$PROSODY_DIR"
	echo "Prosody c2s (STARTTLS required) on 127.0.0.1:$PROSODY_C2S_PORT, log $PROSODY_DIR/prosody.log"

	phase "Starting the gateway on $listen_host:$port"
	# The gateway reads XMPP_GATEWAY_* variables as configuration (and logs a
	# warning for names it does not know), so our own XMPP_GATEWAY_BIN stays out.
	env -u XMPP_GATEWAY_BIN "${GATEWAY_BIN:?GATEWAY_BIN not set}" \
		--listen "$listen_host:$port" \
		--admin-listen "127.0.0.1:$admin_port" \
		--route "localhost=127.0.0.1:$PROSODY_C2S_PORT" \
		--upstream-ca "$PROSODY_CA" \
		--static-dir "$root/demo" \
		2>>"$DEMO_RUN_DIR/gateway.log" &
	GATEWAY_PID=$!
	# Outputs for the calling script.
	# shellcheck disable=SC2034
	DEMO_ADMIN_URL="http://127.0.0.1:$admin_port"
	# shellcheck disable=SC2034
	DEMO_URL="http://localhost:$port/"
	[[ $DEMO_TRANSPORT == websocket ]] || DEMO_URL+="?transport=$DEMO_TRANSPORT"
	if ! wait_http_ok "$DEMO_ADMIN_URL/healthz" 20 "$GATEWAY_PID"; then
		tail -n 20 "$DEMO_RUN_DIR/gateway.log" >&2 || true
		return 1
	fi
	echo "Gateway log: $DEMO_RUN_DIR/gateway.log"
}

demo_stack_stop() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	if [[ -n "${GATEWAY_PID:-}" ]]; then
		stop_pid "$GATEWAY_PID"
		GATEWAY_PID=
	fi
	if [[ -n "${PROSODY_DIR:-}" ]]; then
		"$root/scripts/prosody.sh" stop "$PROSODY_DIR"
	fi
}

# Installs what the demo needs and sets GATEWAY_BIN: $XMPP_GATEWAY_BIN when given, else a
# fresh release build.
prepare_demo_binary() {
	phase "Installing dependencies"
	scripts/install-deps.sh
	if [[ -n "${XMPP_GATEWAY_BIN:-}" ]]; then
		GATEWAY_BIN=$XMPP_GATEWAY_BIN
	else
		phase "cargo build --release"
		cargo build --release
		GATEWAY_BIN=$PWD/target/release/xmpp-gateway
	fi
}
