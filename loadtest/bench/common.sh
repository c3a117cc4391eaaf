# shellcheck shell=bash
# Shared by the benchmark scripts in loadtest/bench/ (sourced, not run): builds, starts and
# stops the pieces of a benchmark (the fixture server, Prosody, gateways) in a scratch
# directory of their own, and stops all of them on exit.
#
# Environment: PROFILE (release, the default, or debug), CARGO_TARGET_DIR, BENCH_DIR (the
# scratch directory; a new one under /tmp by default), KEEP=1 keeps it. GATEWAY (a gateway
# binary to measure instead of this checkout's, e.g. an earlier commit's build kept aside) and
# LOADTEST likewise; with GATEWAY set, nothing is built.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$BENCH_ROOT/scripts/lib/common.sh"

PROFILE=${PROFILE:-release}
BIN_DIR=${CARGO_TARGET_DIR:-$BENCH_ROOT/target}/$PROFILE
LOADTEST=${LOADTEST:-$BIN_DIR/xmpp-loadtest}
BUILD_GATEWAY=$([[ -z ${GATEWAY:-} ]] && echo 1 || echo 0)
GATEWAY=${GATEWAY:-$BIN_DIR/xmpp-gateway}
BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/xmpp-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
export XMPP_LOADTEST_QUIET=1
STARTED_PIDS=()
PROSODY_DIRS=()

bench_cleanup() {
	local pid dir
	for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid" 5; done
	for dir in "${PROSODY_DIRS[@]}"; do "$BENCH_ROOT/scripts/prosody.sh" stop "$dir" || true; done
	[[ ${KEEP:-0} == 1 ]] || rm -rf "$BENCH_DIR"
}
trap bench_cleanup EXIT

# Builds the gateway and the load tester in $PROFILE.
bench_build() {
	[[ $BUILD_GATEWAY == 1 ]] || return 0
	local flag=()
	[[ $PROFILE == release ]] && flag=(--release)
	(cd "$BENCH_ROOT" && cargo build "${flag[@]}" -p xmpp-gateway -p xmpp-loadtest --bins)
}

# Raises this shell's open-file limit to $1 (or the hard limit), for the processes it starts.
bench_fd_limit() {
	ulimit -n "${1:-$(ulimit -Hn)}" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
}

# Waits up to $3 seconds (default 20) for a line matching $2 in file $1, written by
# process $4 (optional: gives up when it has exited).
wait_for_line() {
	local file=$1 pattern=$2 limit=${3:-20} pid=${4:-}
	local deadline=$((SECONDS + limit))
	until grep -q "$pattern" "$file" 2>/dev/null; do
		if ((SECONDS > deadline)) || { [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; }; then
			echo "no '$pattern' in $file within $limit s" >&2
			cat "$file" >&2 2>/dev/null || true
			return 1
		fi
		sleep 0.05
	done
}

# start_fixture NAME [OPTIONS...]: the benchmark-only XMPP server on a free port. Sets
# FIXTURE_ADDR, FIXTURE_PID and, with --tls, FIXTURE_CA.
start_fixture() {
	local name=$1; shift
	local out=$BENCH_DIR/$name.out
	local args=(upstream --listen 127.0.0.1:0 "$@")
	[[ " $* " == *" --tls "* ]] && args+=(--ca-out "$BENCH_DIR/$name-ca.pem")
	"$LOADTEST" "${args[@]}" >"$out" 2>"$BENCH_DIR/$name.err" &
	FIXTURE_PID=$!
	STARTED_PIDS+=("$FIXTURE_PID")
	wait_for_line "$out" '^listening on ' 20 "$FIXTURE_PID" || { cat "$BENCH_DIR/$name.err" >&2; return 1; }
	FIXTURE_ADDR=$(sed -n 's/^listening on //p' "$out" | head -n 1)
	FIXTURE_CA=$BENCH_DIR/$name-ca.pem
}

# start_prosody NAME ACCOUNTS: a private Prosody with ACCOUNTS accounts lt0.. (password
# loadtest) and its own WebSocket/BOSH endpoint, with TCP_NODELAY (--no-nagle) so that its
# writes are not held for the peer's delayed ACK: latency is then Prosody's and ours, not
# Nagle's. Sets PROSODY_C2S, PROSODY_HTTP (base URL),
# PROSODY_CA_FILE and PROSODY_PID.
start_prosody() {
	local name=$1 accounts=$2 dir=$BENCH_DIR/$1 http_port
	http_port=$(free_port_from 15290)
	"$BENCH_ROOT/scripts/prosody.sh" setup "$dir" --c2s-port "$(free_port_from 15222)" \
		--websocket-port "$http_port" --log-level warn --no-nagle --plain-accounts "lt:$accounts:loadtest" >/dev/null
	"$BENCH_ROOT/scripts/prosody.sh" start "$dir"
	PROSODY_DIRS+=("$dir")
	# shellcheck disable=SC1091
	source "$dir/env"
	PROSODY_C2S=127.0.0.1:$PROSODY_C2S_PORT
	PROSODY_HTTP=http://127.0.0.1:$http_port
	PROSODY_CA_FILE=$PROSODY_CA
	PROSODY_PID=$(cat "$dir/prosody.pid")
}

# start_gateway NAME UPSTREAM TLS [CA]: a gateway on free ports in front of UPSTREAM
# (host:port) with upstream TLS policy TLS (required|disabled), and the per-address and
# per-session limits opened up: every benchmark session comes from one address and the
# throughput runs send far more than a person types. Sets GATEWAY_HTTP (base URL),
# GATEWAY_WS (WebSocket URL), GATEWAY_ADMIN (admin base URL) and GATEWAY_PID. ROUTE_EXTRA: more TOML lines for the route
# (its [route.pool] table, say); GATEWAY_EXTRA: more tables at the end (a [cluster] table).
start_gateway() {
	local name=$1 upstream=$2 tls=$3 ca=${4:-} port admin ca_line=""
	[[ -z $ca ]] || ca_line="upstream_ca = \"$ca\""
	port=$(free_port_from 15280)
	admin=$(free_port_from $((port + 1)))
	cat >"$BENCH_DIR/$name.toml" <<-EOF
		listen = "127.0.0.1:$port"
		admin_listen = "127.0.0.1:$admin"
		$ca_line
		[[route]]
		domain = "localhost"
		endpoints = ["$upstream"]
		tls = "$tls"
		${ROUTE_EXTRA:-}
		[log]
		filter = "warn"
		[limits]
		max_sessions_per_address = 100000
		new_sessions_per_address_per_sec = 100000
		new_sessions_burst = 100000
		session_stanzas_per_sec = 1000000
		session_stanzas_burst = 1000000
		session_bytes_per_sec = 1000000000
		session_bytes_burst = 1000000000
		${GATEWAY_EXTRA:-}
	EOF
	# GATEWAY_WRAPPER: a command to run the gateway under (valgrind, in callgrind.sh).
	# shellcheck disable=SC2086
	${GATEWAY_WRAPPER:-} "$GATEWAY" --config "$BENCH_DIR/$name.toml" >"$BENCH_DIR/$name.log" 2>&1 &
	GATEWAY_PID=$!
	STARTED_PIDS+=("$GATEWAY_PID")
	wait_http_ok "http://127.0.0.1:$admin/healthz" 60 "$GATEWAY_PID"
	GATEWAY_HTTP=http://127.0.0.1:$port
	GATEWAY_ADMIN=http://127.0.0.1:$admin
	GATEWAY_WS=ws://127.0.0.1:$port/xmpp-websocket
}

# stop NAME-PID: stops one started process.
stop_started() {
	stop_pid "$1" 10
}

# json_get FILE PATH: a figure from a report written with --json, PATH like targets.0.idle.rss_kib.
json_get() {
	python3 -c '
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(round(value, 2) if isinstance(value, float) else value)' "$1" "$2"
}
