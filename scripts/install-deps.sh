#!/usr/bin/env bash
# Installs what the interop tests and the demo need on a Debian machine that
# already has the Rust toolchain and Node.js 20+. Safe to run again: apt runs
# only when a package is missing, npm only when a lockfile changed.
#
#   Debian:  prosody (the XMPP server under test), openssl (test certificates),
#            chromium + fonts, emoji and CJK (fonts-droid-fallback) included (demo and
#            converse.js screenshots show non-ASCII text), procps, iproute2 (ss),
#            curl, ca-certificates
#   npm:     tests/interop and demo, exactly as pinned in their package-lock.json
#   cargo:   cargo-deny and cargo-fuzz at the versions pinned in scripts/lib/common.sh, and
#            the nightly toolchain that cargo-fuzz builds with
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

APT_PACKAGES=(prosody openssl chromium fonts-liberation fonts-noto-color-emoji fonts-droid-fallback procps iproute2 curl ca-certificates prometheus haproxy python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	# "install ok installed" only once the package is fully set up.
	if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
		missing+=("$pkg")
	fi
done
if ((${#missing[@]})); then
	echo "install-deps: apt packages missing: ${missing[*]}"
	sudo=()
	((EUID == 0)) || sudo=(sudo)
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
	echo "install-deps: apt packages present"
fi

# The Debian package may start a system-wide Prosody on 5222. Ours run from
# private directories on other ports, so it does no harm; it is left alone.

if ! command -v node >/dev/null; then
	echo "install-deps: Node.js 20 or newer is required (not found)" >&2
	exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
	echo "install-deps: Node.js 20 or newer is required (found $(node --version))" >&2
	exit 1
fi

# npm ci wipes and reinstalls node_modules; skip it while the lockfile that
# produced node_modules is unchanged.
npm_ci() {
	local dir=$1 stamp want
	stamp=$dir/node_modules/.lock-sha256
	want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		echo "install-deps: $dir/node_modules up to date"
		return
	fi
	echo "install-deps: npm ci in $dir"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	echo "$want" >"$stamp"
}
npm_ci tests/interop
npm_ci demo

# scripts/fuzz.sh builds with libFuzzer's instrumentation, which needs nightly rustc.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	echo "install-deps: rustup toolchain install nightly"
	rustup toolchain install nightly --profile minimal
fi
install_cargo_tool cargo-deny "$CARGO_DENY_VERSION"
install_cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION"
