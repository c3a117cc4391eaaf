# shellcheck shell=bash
# Shell helpers shared by the scripts in scripts/ (sourced, not run).

# Prints a phase banner, so a long log shows where it is.
phase() {
	printf '\n==> %s\n' "$*"
}

# True when something already listens on TCP port $1 (any address).
port_in_use() {
	ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# First port from $1 upwards that nobody listens on.
free_port_from() {
	local p=$1
	while port_in_use "$p"; do p=$((p + 1)); done
	echo "$p"
}

# Polls URL $1 until it answers 2xx, for at most $2 seconds (default 20);
# gives up early when process $3 (optional) has exited.
wait_http_ok() {
	local url=$1 limit=${2:-20} pid=${3:-}
	local deadline=$((SECONDS + limit))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
			echo "process $pid exited before $url answered" >&2
			return 1
		fi
		if ((SECONDS > deadline)); then
			echo "$url did not answer within $limit s" >&2
			return 1
		fi
		sleep 0.1
	done
}

# Sends SIGTERM to process $1 and waits up to $2 seconds (default 10) for it
# to exit, then SIGKILL.
stop_pid() {
	local pid=$1 limit=${2:-10}
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + limit))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS > deadline)); then
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	wait "$pid" 2>/dev/null || true
}

# Cargo subcommands the suite uses, pinned (scripts/install-deps.sh, scripts/fuzz.sh).
CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2

# Installs cargo subcommand crate $1 at version $2 unless that version is installed already.
# cargo install compiles it: cargo-deny takes about six minutes on two cores.
install_cargo_tool() {
	local crate=$1 version=$2
	if [[ "$(cargo "${crate#cargo-}" --version 2>/dev/null)" == "$crate $version" ]]; then
		echo "${0##*/}: $crate $version present"
		return
	fi
	echo "${0##*/}: cargo install $crate $version"
	cargo install "$crate" --locked --version "$version"
}
