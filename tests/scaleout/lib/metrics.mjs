// Reading the gateways' /metrics (Prometheus text format) for the scale-out
// test: which node holds how many sessions, and how they started and ended.

/** Every sample in `text` as { name, labels, value }. */
export function parseMetrics(text) {
	const samples = [];
	for (const line of text.split('\n')) {
		const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/);
		if (!m) continue;
		const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
		samples.push({ name: m[1], labels, value: Number(m[3]) });
	}
	return samples;
}

/** Sum of the samples of `name` whose labels include `labels` (0 when there are none). */
export function total(samples, name, labels = {}) {
	return samples
		.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
		.reduce((sum, s) => sum + s.value, 0);
}

/** The session figures of one node at one moment. */
export function sessionFigures(samples) {
	const per = (name) => ({
		websocket: total(samples, name, { transport: 'websocket' }),
		bosh: total(samples, name, { transport: 'bosh' }),
	});
	const ended = {};
	for (const s of samples) {
		if (s.name !== 'xmpp_gateway_sessions_ended_total' || s.value === 0) continue;
		ended[s.labels.reason] = (ended[s.labels.reason] ?? 0) + s.value;
	}
	const active = per('xmpp_gateway_sessions_active');
	return {
		active,
		activeTotal: active.websocket + active.bosh,
		started: per('xmpp_gateway_sessions_started_total'),
		ended,
		draining: total(samples, 'xmpp_gateway_draining'),
		// docs/protocol.md §8: BOSH requests this node forwarded to the node holding their session,
		// by result, and those other nodes forwarded here.
		forwarded: Object.fromEntries(
			samples
				.filter((s) => s.name === 'xmpp_gateway_cluster_forwarded_total' && s.value > 0)
				.map((s) => [s.labels.result, s.value]),
		),
		received: total(samples, 'xmpp_gateway_cluster_received_total'),
	};
}

/** Scrapes `gateway` (from startGateway) and returns its session figures. */
export async function scrape(gateway) {
	const res = await fetch(`${gateway.adminUrl}/metrics`, { signal: AbortSignal.timeout(2000) });
	if (res.status !== 200) throw new Error(`${gateway.name} /metrics answered HTTP ${res.status}`);
	return { at: Date.now(), ...sessionFigures(parseMetrics(await res.text())) };
}
