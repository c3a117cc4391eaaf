#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 300), each from a
# copy of its committed corpus (fuzz/corpus/TARGET), so a run never dirties the work tree.
# Fails when a target crashes, times out or runs out of memory, and prints the input that
# did it (kept in fuzz/artifacts/TARGET/, outside git) with the command that replays it.
#
#   scripts/fuzz.sh          # 5 minutes per target
#   scripts/fuzz.sh 30       # what scripts/test.sh runs
#   scripts/fuzz.sh 3600 split   # one target, an hour
#
# Needs the nightly toolchain (cargo-fuzz builds with libFuzzer's instrumentation) and installs
# cargo-fuzz, pinned, when it is missing. FUZZ_TARGET_DIR moves the build (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

ALL_TARGETS=(split client_frame bosh_body config)

seconds=${1:-300}
shift || true
targets=("$@")
((${#targets[@]})) || targets=("${ALL_TARGETS[@]}")

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
	echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
	exit 1
fi
install_cargo_tool cargo-fuzz "$CARGO_FUZZ_VERSION"

# The fuzz build (nightly, instrumented, every dependency in release) takes about ten minutes
# from nothing on two cores: it lives outside the work tree, so that CI's fresh clone and every
# work tree on the machine reuse it, and apart from the stable build's target directory.
unset CARGO_TARGET_DIR
target_dir=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xmpp-gateway/fuzz-target}
# No unsafe code in src/: the bugs to find are panics (overflow checks and debug assertions
# are on) and runaway time or memory, so AddressSanitizer would only halve the executions.
fuzz_flags=(--sanitizer none --target-dir "$target_dir")

phase "cargo fuzz build (${targets[*]})"
cargo +nightly fuzz build "${fuzz_flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
	phase "fuzz $target for ${seconds}s"
	cp -r "fuzz/corpus/$target" "$work/$target"
	log=$work/$target.log
	# -timeout: one input taking 10 s is a hang; -rss_limit_mb: memory growth is a failure.
	if cargo +nightly fuzz run "${fuzz_flags[@]}" "$target" "$work/$target" -- \
		-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 >"$log" 2>&1; then
		grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
	else
		tail -n 60 "$log"
		mkdir -p "fuzz/artifacts/$target"
		cp "$log" "fuzz/artifacts/$target/last-run.log"
		artifact=$(grep -o 'Test unit written to .*' "$log" | tail -n 1 | sed 's/^Test unit written to //')
		echo "fuzz: $target FAILED; input: ${artifact:-none written}; log: fuzz/artifacts/$target/last-run.log" >&2
		[[ -z "$artifact" ]] || echo "fuzz: replay with: cargo +nightly fuzz run --sanitizer none $target $artifact" >&2
		failed+=("$target")
	fi
done

if ((${#failed[@]})); then
	echo "fuzz: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, no crash"
