#!/usr/bin/env bash
# The one test command (also what CI runs): dependencies, build, the Rust
# tests, the dependency policy and a short fuzz run, then the interop tests
# (real clients -> gateway -> real Prosody).
# Exits non-zero as soon as a phase fails.
#
# Environment: XMPP_INTEROP_TARGET=prosody runs the interop scenarios against
# Prosody's own WebSocket endpoint instead of the gateway (a check of the
# tests themselves); INTEROP_SESSIONS changes the 1,000 of many-sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

phase "install dependencies (scripts/install-deps.sh)"
scripts/install-deps.sh

phase "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

phase "cargo test --workspace"
cargo test --workspace

# The module map in src/lib.rs and every module's doc links to the others:
# broken intra-doc links fail the suite.
phase "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

# deny.toml: allowed licenses, no wildcard versions, crates.io only. --offline: no advisory
# database is fetched. cargo deny reads the metadata of every package in the lock file, for
# every platform, and the build fetched this platform's only: fetch the rest first.
phase "dependency policy (cargo deny check licenses bans sources)"
cargo fetch --locked
cargo deny --offline --workspace check licenses bans sources

# The parsers that read what strangers send, 30 s per target (scripts/fuzz.sh runs longer).
phase "fuzz targets, 30 s each (scripts/fuzz.sh 30)"
scripts/fuzz.sh 30

# The Node tests use the debug binary that the build phase just made.
export XMPP_GATEWAY_BIN=${XMPP_GATEWAY_BIN:-$PWD/target/debug/xmpp-gateway}

phase "deployment recipes (tests/deploy/validate.sh)"
bash tests/deploy/validate.sh

phase "operations tests (dashboard queries against a real Prometheus, tests/ops)"
node --test --test-concurrency=1 tests/ops/

phase "scale-out: three gateways in a cluster behind HAProxy, no stickiness, one drained (tests/scaleout)"
node --test tests/scaleout/

# A minute of steady traffic with churn against a real Prosody (the long run is
# `scripts/soak.sh`, 600 s by default); SOAK_SECONDS changes it.
phase "bounded soak (scripts/soak.sh ${SOAK_SECONDS:-60})"
bash scripts/soak.sh "${SOAK_SECONDS:-60}"

# Every transport of the load tester against a real Prosody, the fixture server and the
# gateway, --strict (the benchmarks are the other scripts in loadtest/bench/).
phase "load tester (loadtest/bench/smoke.sh)"
bash loadtest/bench/smoke.sh

phase "interop tests (node --test, tests/interop)"
cd tests/interop
# One file at a time: each starts its own Prosody and gateway, and the
# 1,000-session test wants the machine's two cores for itself.
# The runner's own summary ("# pass N", "# fail N") closes the output.
exec node --test --test-concurrency=1
