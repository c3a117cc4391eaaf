#!/usr/bin/env bash
# What the hop between the nodes of a cluster adds to BOSH (docs/protocol.md §8): delivery
# latency of the same BOSH pairs, sessions held by gateway A, with every request sent to A
# (direct) or, after the session request, to gateway B, which forwards it to A (forwarded:
# the sender's request and the receiver's held request each cross B). Two gateways in a
# cluster in front of the fixture (plain TCP, so that only the gateways are measured); the two
# paths take turns at each rate. Reports delivery p50/p99/max and the gateways' CPU, and the
# forward latency B observed (xmpp_gateway_cluster_forward_seconds).
#
# Usage: loadtest/bench/forward.sh [RATES...]   (default: 200 1000 2000)
# Environment: DURATION (default 10), SESSIONS (default 100).
set -euo pipefail
# shellcheck source=loadtest/bench/common.sh
source "$(dirname "$0")/common.sh"
bench_build
bench_fd_limit 20000
read -ra RATES <<<"${*:-200 1000 2000}"
DURATION=${DURATION:-10}
SESSIONS=${SESSIONS:-100}

start_fixture fixture
head -c 32 /dev/urandom | base64 >"$BENCH_DIR/cluster.secret"
A_CLUSTER=127.0.0.1:$(free_port_from 19281)
B_CLUSTER=127.0.0.1:$(free_port_from 19381)
cluster() {
	printf '[cluster]\nlisten = "%s"\npeers = ["%s"]\nsecret_file = "%s"\nrefresh_secs = 1\n' \
		"$1" "$2" "$BENCH_DIR/cluster.secret"
}
GATEWAY_EXTRA=$(cluster "$A_CLUSTER" "$B_CLUSTER") start_gateway gw-a "$FIXTURE_ADDR" disabled
A_HTTP=$GATEWAY_HTTP A_PID=$GATEWAY_PID
GATEWAY_EXTRA=$(cluster "$B_CLUSTER" "$A_CLUSTER") start_gateway gw-b "$FIXTURE_ADDR" disabled
B_HTTP=$GATEWAY_HTTP B_PID=$GATEWAY_PID B_ADMIN=$GATEWAY_ADMIN
members() { curl -fsS "$B_ADMIN/metrics" | sed -n 's/^xmpp_gateway_cluster_members \([0-9]*\)$/\1/p'; }
for _ in $(seq 50); do [[ $(members) == 1 ]] && break; sleep 0.2; done
[[ $(members) == 1 ]] || { echo "gateway B never found A" >&2; exit 1; }

# forward_quantiles: B's forward latency (ms) since its last scrape, p50 and p99, from the
# histogram's buckets (upper bounds).
forward_quantiles() {
	curl -fsS "$B_ADMIN/metrics" >"$BENCH_DIR/b-metrics.$1"
	python3 - "$BENCH_DIR/b-metrics.$2" "$BENCH_DIR/b-metrics.$1" <<-'PY'
		import re, sys
		def buckets(path):
		    try:
		        text = open(path).read()
		    except FileNotFoundError:
		        return {}
		    return {float(le) if le != '+Inf' else float('inf'): float(n) for le, n in re.findall(
		        r'^xmpp_gateway_cluster_forward_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)}
		before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
		diff = sorted((le, after[le] - before.get(le, 0)) for le in after)
		total = diff[-1][1] if diff else 0
		def q(p):
		    for le, n in diff:
		        if total and n >= p * total:
		            return f"<= {le * 1000:g}" if le != float('inf') else "> 120000"
		    return "-"
		print(f"{int(total)} forwards, p50 {q(0.5)} ms, p99 {q(0.99)} ms")
	PY
}

ROWS=()
row() {
	local label=$1 rate=$2 json=$3 extra=${4:-}
	ROWS+=("| $rate | $label | $(json_get "$json" rate_delivered) | $(json_get "$json" delivery_ms.p50) | $(json_get "$json" delivery_ms.p99) | $(json_get "$json" delivery_ms.max) | $(json_get "$json" messages_lost) | $extra |")
	echo "${ROWS[-1]}"
}
forward_quantiles 0 none >/dev/null
scrape=0
for rate in "${RATES[@]}"; do
	json=$BENCH_DIR/direct-$rate.json
	"$LOADTEST" run --transport bosh --bosh "$A_HTTP/http-bind" --bosh-wait 10 \
		--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
		--progress 0 --pid "$A_PID" --pid "$B_PID" --json "$json" >"$json.out"
	row "every request to A (direct)" "$rate" "$json"
	json=$BENCH_DIR/forwarded-$rate.json
	"$LOADTEST" run --transport bosh --bosh "$A_HTTP/http-bind" --bosh-then "$B_HTTP/http-bind" --bosh-wait 10 \
		--sessions "$SESSIONS" --mechanism plain --rate "$rate" --duration "$DURATION" \
		--progress 0 --pid "$A_PID" --pid "$B_PID" --json "$json" >"$json.out"
	prev=$scrape scrape=$((scrape + 1))
	row "requests to B, forwarded to A" "$rate" "$json" "$(forward_quantiles "$scrape" "$prev")"
done

echo
echo "| offered msg/s | path | delivered msg/s | p50 ms | p99 ms | max ms | lost | B's forwards (xmpp_gateway_cluster_forward_seconds) |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
