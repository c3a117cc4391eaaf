// The Grafana dashboard against real data: a private Prosody, the gateway in
// front of it, and a real Prometheus scraping the gateway's admin listener every
// second. A small load makes every catalogued series appear and move; then every
// query of grafana/dashboards/xmpp-gateway.json must parse and return data, every
// series the load exercised must have moved, and a drain must be visible.
//
// Needs: apt's `prometheus` (/usr/bin/prometheus, or PROMETHEUS_BIN), Prosody
// (scripts/prosody.sh), the gateway binary (target/debug/xmpp-gateway, or
// XMPP_GATEWAY_BIN) and tests/interop's npm packages. Logs: .run/ops/promql/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { startProsody, startGateway, freePort, waitFor, REPO } from '../interop/harness.mjs';
import { login, xml, bodyOf } from '../interop/lib/xmppjs.mjs';
import { startPrometheus, nowSeconds } from './lib/prometheus.mjs';
import {
	loadDashboard,
	dashboardQueries,
	substitute,
	regexValue,
	parseVariableQuery,
} from './lib/dashboard.mjs';
import { rawWebSocket, rawSession, boshClient, startStallingUpstream } from './lib/traffic.mjs';

const PASSWORD = 'demo-password';
const USERS = ['alice', 'bob', 'carol'].map((name) => [name, PASSWORD]);
const LOG_DIR = path.join(REPO, '.run', 'ops', 'promql');
/** Routed to a port nothing listens on: every session to it fails at TCP. */
const DEAD_DOMAIN = 'dead.localhost';
/** Routed to a fake server that never closes its stream, so a drain has to wait for it. */
const STALL_DOMAIN = 'stall.localhost';

let prosody;
let gateway;
/** The other node of the gateway's cluster, not scraped: forwards to it, and from it. */
let peer;
let clusterPort;
let prometheus;
let stall;
let instance;

// Every wait below is bounded; these caps only make a hang impossible.
const SETUP_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 20_000;

before(async () => {
	await fsp.rm(LOG_DIR, { recursive: true, force: true });
	await fsp.mkdir(LOG_DIR, { recursive: true });
	stall = await startStallingUpstream(STALL_DOMAIN);
	prosody = await startProsody({ users: USERS, logDir: LOG_DIR });
	const secretFile = path.join(LOG_DIR, 'cluster.secret');
	await fsp.writeFile(secretFile, 'the ops test cluster secret\n', { mode: 0o600 });
	clusterPort = await freePort();
	const peerClusterPort = await freePort();
	peer = await startGateway({
		prosody,
		logDir: LOG_DIR,
		name: 'peer',
		config: clusterConfig(peerClusterPort, clusterPort, secretFile).join('\n'),
	});
	// Pings every second and one missed pong closes a session, so a client that
	// stops reading is cut off within about two seconds.
	const config = path.join(LOG_DIR, 'gateway.toml');
	await fsp.writeFile(
		config,
		[
			'[websocket]',
			'ping_interval_secs = 1',
			'max_missed_pongs = 1',
			'',
			// Not health-checked: the stalling server answers no probe, and sessions to the
			// dead port must fail at TCP themselves, not at an open breaker.
			'[[route]]',
			`domain = "${STALL_DOMAIN}"`,
			'tls = "disabled"',
			'check_interval_secs = 0',
			'',
			'[[route]]',
			`domain = "${DEAD_DOMAIN}"`,
			'check_interval_secs = 0',
			'',
			// Prosody's route keeps a warm pool, for the pool's panels.
			'[[route]]',
			'domain = "localhost"',
			'[route.pool]',
			'warm = 1',
			'',
			// A cluster with `peer`, for the cluster's panels (docs/protocol.md §8).
			...clusterConfig(clusterPort, peerClusterPort, secretFile),
		].join('\n'),
	);
	const deadPort = await freePort();
	gateway = await startGateway({
		prosody,
		logDir: LOG_DIR,
		// Flags replace the file's routes; a domain in both keeps the file's tls setting.
		extraArgs: [
			'--config', config,
			'--route', `${STALL_DOMAIN}=127.0.0.1:${stall.port}`,
			'--route', `${DEAD_DOMAIN}=127.0.0.1:${deadPort}`,
		],
	});
	instance = new URL(gateway.adminUrl).host;
	prometheus = await startPrometheus({ target: instance, logDir: LOG_DIR });

	// A first scrape sees the series that exist before any session, at zero;
	// then two rounds of load, each confirmed scraped, so every series that the
	// load creates has an earlier sample and rate() over it has something to say.
	await prometheus.scrapedAfter(nowSeconds());
	await driveLoad({ first: true });
	await prometheus.scrapedAfter(nowSeconds());
	await driveLoad({ first: false });
	await prometheus.scrapedAfter(nowSeconds());
}, { timeout: SETUP_TIMEOUT_MS });

/** The `[cluster]` lines of a node listening on `own` whose peer listens on `other`. */
function clusterConfig(own, other, secretFile) {
	return [
		'[cluster]',
		`listen = "127.0.0.1:${own}"`,
		`peers = ["127.0.0.1:${other}"]`,
		`secret_file = "${secretFile}"`,
		'refresh_secs = 1',
		'',
	];
}

after(async () => {
	for (const stop of [() => gateway?.stop(), () => peer?.stop(), () => prosody?.stop(), () => prometheus?.stop(), () => stall?.stop()]) {
		try {
			await stop();
		} catch (err) {
			console.error('cleanup:', err);
		}
	}
});

/** One round of traffic that touches every metric family. */
async function driveLoad({ first }) {
	const stack = { wsUrl: gateway.wsUrl, domain: 'localhost' };

	// Two WebSocket users log in and talk: sessions, stanzas and bytes both ways,
	// every connect phase, clean ends.
	const alice = await login(stack, 'alice', PASSWORD);
	const bob = await login(stack, 'bob', PASSWORD);
	try {
		await alice.send(xml('message', { to: bob.jid, type: 'chat', id: 'ops-1' }, xml('body', {}, 'ping')));
		await bob.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'ops-1', { what: 'message at bob' });
		await bob.send(xml('message', { to: alice.jid, type: 'chat', id: 'ops-2' }, xml('body', {}, 'pong')));
		const back = await alice.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'ops-2', {
			what: 'message at alice',
		});
		assert.equal(bodyOf(back), 'pong');
	} finally {
		await Promise.allSettled([alice.close(), bob.close()]);
	}

	// A domain nobody routes: host-unknown, nothing dialled.
	const unknown = await rawWebSocket(gateway.wsUrl);
	unknown.open('unknown.invalid');
	await unknown.waitForFrame(/host-unknown/, 'host-unknown for an unrouted domain');
	unknown.destroy();

	// A routed domain whose server is down: a TCP connect failure.
	const dead = await rawWebSocket(gateway.wsUrl);
	dead.open(DEAD_DOMAIN);
	await dead.waitForFrame(/remote-connection-failed/, 'remote-connection-failed for a dead upstream');
	dead.destroy();

	// Hostile input inside an open session: a DTD is restricted XML.
	const hostile = await rawSession(gateway.wsUrl, 'localhost');
	hostile.send('<!DOCTYPE message [<!ENTITY x "boom">]><message xmlns="jabber:client">&x;</message>');
	await hostile.waitForFrame(/restricted-xml|not-well-formed|policy-violation/, 'stream error for a DOCTYPE');
	hostile.destroy();

	// BOSH: a session, SASL PLAIN through it (stanzas both ways), a request the
	// gateway holds, and terminate.
	const bosh = boshClient(`http://127.0.0.1:${gateway.port}/http-bind`, { to: 'localhost', wait: 10 });
	await bosh.create();
	const outcome = await bosh.auth('carol', PASSWORD);
	assert.match(outcome, /<success/, `BOSH SASL PLAIN for carol: ${outcome}`);
	const held = bosh.poll();
	if (first) {
		// Let Prometheus scrape while the request is held (the held-requests gauge).
		await prometheus.scrapedAfter(nowSeconds() + 0.3);
	}
	await bosh.terminate();
	await held;

	// The cluster: a BOSH session on the peer ended through the gateway (forwarded there, with
	// its duration observed), one on the gateway ended through the peer (served here for it), a
	// sid of a node nobody knows (owner_unknown), and an unsigned request to the internal
	// listener (refused).
	await waitFor(async () => (await gatewayValue('xmpp_gateway_cluster_members')) === 1, {
		timeout: 10_000,
		what: 'the gateway to know its peer',
	});
	const onPeer = boshClient(`http://127.0.0.1:${peer.port}/http-bind`, { to: 'localhost', wait: 10 });
	await onPeer.create();
	onPeer.via(`http://127.0.0.1:${gateway.port}/http-bind`);
	assert.match(await onPeer.terminate(), /type=['"]terminate['"]/, 'terminate forwarded to the peer');
	const onGateway = boshClient(`http://127.0.0.1:${gateway.port}/http-bind`, { to: 'localhost', wait: 10 });
	await onGateway.create();
	onGateway.via(`http://127.0.0.1:${peer.port}/http-bind`);
	assert.match(await onGateway.terminate(), /type=['"]terminate['"]/, 'terminate forwarded to the gateway');
	const nobodys = await fetch(`http://127.0.0.1:${gateway.port}/http-bind`, {
		method: 'POST',
		headers: { 'content-type': 'text/xml; charset=utf-8' },
		body: `<body xmlns='http://jabber.org/protocol/httpbind' rid='7' sid='0badcafe${'0'.repeat(32)}'/>`,
	});
	assert.match(await nobodys.text(), /item-not-found/, 'a session of no known node');
	const unsigned = await fetch(`http://127.0.0.1:${clusterPort}/cluster/v1/bosh`, { method: 'POST', body: '<body/>' });
	assert.equal(unsigned.status, 401, 'an unsigned request to the internal listener');

	if (first) {
		// A WebSocket client that stops reading answers no ping: the gateway
		// closes it after the missed pong.
		const before = await gatewayValue('xmpp_gateway_websocket_pings_missed_total');
		const silent = await rawSession(gateway.wsUrl, 'localhost');
		silent.stopReading();
		try {
			await waitFor(async () => (await gatewayValue('xmpp_gateway_websocket_pings_missed_total')) > before, {
				timeout: 8000,
				interval: 200,
				what: 'xmpp_gateway_websocket_pings_missed_total to grow',
			});
		} catch (err) {
			// Reported by the coverage test below; the load goes on.
			console.error(err.message);
		}
		silent.destroy();
	}
}

/** Sum of a family's samples in the gateway's own /metrics (0 when absent). */
async function gatewayValue(name) {
	const text = await gateway.metricsText();
	let sum = 0;
	for (const line of text.split('\n')) {
		const m = line.match(/^([a-z_:][a-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/i);
		if (m && m[1] === name) sum += Number(m[3]);
	}
	return sum;
}

/** The samples of an instant-query result, as numbers. */
function values(result) {
	if (result.data?.resultType === 'scalar') return [Number(result.data.result[1])];
	return (result.data?.result ?? []).map((r) => Number(r.value[1]));
}

function describe(result) {
	return JSON.stringify(result.data?.result ?? result).slice(0, 600);
}

test('every dashboard query parses and returns data', { timeout: TEST_TIMEOUT_MS }, async (t) => {
	const queries = dashboardQueries(loadDashboard());
	assert.ok(queries.length > 0, 'the dashboard has queries');
	// As Grafana fills $instance: "All" is the variable's allValue (.*), one
	// selected node is its regex-escaped name.
	const selections = [
		{ name: 'instance=All', vars: { instance: '.*' } },
		{ name: `instance=${instance}`, vars: { instance: regexValue(instance) } },
	];
	for (const q of queries) {
		for (const sel of selections) {
			await t.test(`${q.where} [${sel.name}]`, async () => {
				const text = substitute(q.text, sel.vars);
				const parsed = q.kind === 'variable' ? parseVariableQuery(text) : { fn: 'query', expr: text };
				if (parsed.fn === 'label_values') {
					const r = await prometheus.labelValues(parsed.label, parsed.match);
					assert.equal(r.status, 'success', `${text}: ${JSON.stringify(r)}`);
					assert.ok(r.data.length > 0, `${text}: no values`);
					if (parsed.label === 'instance') assert.ok(r.data.includes(instance), `${text}: ${r.data}`);
					return;
				}
				const r = await prometheus.query(parsed.expr);
				assert.equal(r.status, 'success', `${parsed.expr}\n  ${r.errorType}: ${r.error}`);
				const v = values(r);
				assert.ok(v.length > 0, `${parsed.expr}\n  returned no series`);
				// histogram_quantile() over buckets that never moved is NaN: a blank panel.
				assert.ok(v.some((x) => !Number.isNaN(x)), `${parsed.expr}\n  returned only NaN: ${describe(r)}`);
			});
		}
	}
});

/**
 * Series the load above must have moved, with the step of the load that moves
 * it. A failure here is a metric that stays flat under real traffic: a gateway
 * that does not record it, or a catalogue entry nothing feeds.
 */
const MOVED_BY_LOAD = [
	...['websocket', 'bosh'].flatMap((transport) => [
		[`xmpp_gateway_sessions_started_total{transport="${transport}"}`, `${transport} sessions`],
		[`sum(xmpp_gateway_sessions_ended_total{transport="${transport}"})`, `${transport} sessions ending`],
		[`xmpp_gateway_session_duration_seconds_count{transport="${transport}"}`, `${transport} sessions ending`],
		...['to_upstream', 'to_client'].flatMap((direction) => [
			[`xmpp_gateway_stanzas_total{transport="${transport}",direction="${direction}"}`, `${transport} stanzas`],
			[`xmpp_gateway_bytes_total{transport="${transport}",direction="${direction}"}`, `${transport} stanzas`],
		]),
	]),
	...['dns', 'tcp', 'tls', 'stream'].map((phase) => [
		`xmpp_gateway_upstream_connect_seconds_count{phase="${phase}"}`,
		'every session opened to Prosody (STARTTLS over TCP)',
	]),
	['xmpp_gateway_upstream_connect_failures_total{kind="unknown_domain"}', '<open/> to unknown.invalid'],
	['xmpp_gateway_upstream_connect_failures_total{kind="tcp"}', `<open/> to ${DEAD_DOMAIN} (closed port)`],
	['xmpp_gateway_inputs_rejected_total{reason="restricted"}', 'a DOCTYPE in a WebSocket message'],
	['xmpp_gateway_upstream_pool_ready{route="localhost"}', 'the warm pool of the route to Prosody'],
	['sum(xmpp_gateway_upstream_pool_sessions_total{route="localhost"})', 'every session started on the route to Prosody'],
	['xmpp_gateway_websocket_pings_missed_total', 'a WebSocket client that stopped reading'],
	['max_over_time(xmpp_gateway_bosh_held_requests[5m])', 'a BOSH request held across a scrape'],
	['xmpp_gateway_bosh_request_duration_seconds_count', 'the BOSH requests of both rounds being answered'],
	['xmpp_gateway_cluster_forwarded_total{result="ok"}', 'a BOSH session on the peer ended through the gateway'],
	['xmpp_gateway_cluster_forward_seconds_count', 'a BOSH session on the peer ended through the gateway'],
	['xmpp_gateway_cluster_forwarded_total{result="owner_unknown"}', 'a sid of a node nobody knows'],
	['xmpp_gateway_cluster_received_total', 'a BOSH session on the gateway ended through the peer'],
	['xmpp_gateway_cluster_requests_refused_total{reason="missing"}', 'an unsigned request to the internal listener'],
	['xmpp_gateway_cluster_members == 1', 'the peer, found by the membership rounds'],
	['xmpp_gateway_build_info', 'always 1'],
	['xmpp_gateway_process_resident_memory_bytes', 'the process'],
	['xmpp_gateway_process_virtual_memory_bytes', 'the process'],
	['xmpp_gateway_process_open_fds', 'the process'],
	['xmpp_gateway_process_max_fds', 'the process'],
	['xmpp_gateway_process_start_time_seconds', 'the process'],
	// CPU seconds may round to 0 in a short run; only its presence is required.
	['xmpp_gateway_process_cpu_seconds_total >= 0', 'the process'],
];

test('every catalogued series the load exercises has moved', { timeout: TEST_TIMEOUT_MS }, async (t) => {
	for (const [expr, cause] of MOVED_BY_LOAD) {
		await t.test(expr, async () => {
			const check = /[<>=]=?\s*\d+$/.test(expr) ? expr : `(${expr}) > 0`;
			const r = await prometheus.query(check);
			assert.equal(r.status, 'success', `${check}: ${r.error}`);
			if (values(r).length === 0) {
				const actual = await prometheus.query(expr);
				assert.fail(`${expr} did not move (caused by: ${cause}); Prometheus has: ${describe(actual)}`);
			}
		});
	}
});

// Last: this ends the gateway.
test('a drain is visible: xmpp_gateway_draining = 1 is scraped while sessions finish', { timeout: TEST_TIMEOUT_MS }, async () => {
	// A session whose server never closes its stream keeps the drain going for
	// the gateway's close grace period, several scrapes long.
	const s = await rawSession(gateway.wsUrl, STALL_DOMAIN);
	process.kill(gateway.pid, 'SIGTERM');
	const direct = [];
	try {
		await waitFor(
			async () => {
				// What a scraper sees during the drain, straight from the admin listener.
				try {
					const v = await gatewayValue('xmpp_gateway_draining');
					direct.push(`draining=${v}`);
				} catch (err) {
					const alive = processAlive(gateway.pid);
					direct.push(`${err.cause?.code ?? err.message}${alive ? ' (gateway still running)' : ' (gateway exited)'}`);
				}
				const r = await prometheus.query(`max_over_time(xmpp_gateway_draining{instance="${instance}"}[1m]) == 1`);
				return values(r).length > 0;
			},
			{ timeout: 4000, interval: 250, what: 'Prometheus to record xmpp_gateway_draining = 1' },
		);
	} catch (err) {
		const seen = [...new Set(direct)].join(', ');
		assert.fail(`${err.message}\n  GET /metrics during the drain gave: ${seen}`);
	} finally {
		s.destroy();
	}
});

function processAlive(pid) {
	try {
		const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
		return !/^\d+ \(.*\) [ZX]/.test(stat);
	} catch {
		return false;
	}
}
