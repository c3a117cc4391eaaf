// Scale-out: 200 browser sessions behind the production HAProxy configuration
// and three gateways, and what happens to them when one gateway is rolled.
//
// A real Prosody, three xmpp-gateway processes forming a cluster (docs/protocol.md
// §8: any node answers any BOSH request), and HAProxy running
// deploy/haproxy/haproxy.cfg with only ports and paths changed and a third
// server added (TLS on its https port with a certificate made at test time):
// WebSocket by least connections, every BOSH request round robin, no
// stickiness of any kind. 120 @xmpp/client sessions
// over wss:// with XEP-0198 resumption and 80 strophe.js sessions over BOSH on
// https://, each BOSH client in its own "browser" (cookie jar, connections,
// source address), log in through HAProxy and exchange messages, each BOSH
// request landing on whichever node is next. Then the node holding the most
// sessions gets SIGTERM, as a rolling deployment sends it: its
// /readyz fails, HAProxy takes it out, and after drain_grace_secs it tells its
// clients to go elsewhere (see-other-uri). WebSocket clients come back through
// HAProxy on the other nodes and resume their streams; BOSH clients start new
// sessions there. The checks below say what must hold; the figures printed at
// the end say how it went.
//
// The scenario runs once in before(); each test asserts one property of what
// it recorded, so a failure names the property and the run still prints every
// figure.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { REPO, startProsody, startGateway, freePort, waitFor, withTimeout } from '../interop/harness.mjs';
import { DEPLOY_CFG, checkTiming, makeCertificate, startHaproxy } from './lib/haproxy.mjs';
import { WsClient, BoshClient, trustCertificate, nodeTags } from './lib/fleet.mjs';
import { closeBrowsers } from './lib/browser-xhr.mjs';
import { scrape } from './lib/metrics.mjs';

const WS_CLIENTS = Number(process.env.SCALEOUT_WS || 120);
const BOSH_CLIENTS = Number(process.env.SCALEOUT_BOSH || 80);
const ACCOUNTS = 20; // clients share accounts, each with its own resource
const PASSWORD = 'scaleout-password';
const LOGIN_BATCH = 20;
const DRAIN_TIMEOUT_SECS = 20;
const SEED = Number(process.env.SCALEOUT_SEED || 20260101);

const logDir = path.join(REPO, '.run', 'scaleout');
/** Everything started, for after() to stop whatever happened. */
const running = { clients: [], gateways: [] };
/** What the scenario observed; the tests below assert on it. */
let seen;

/** A small deterministic PRNG (mulberry32), so a run can be repeated with SCALEOUT_SEED. */
function random(seed) {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

/** waitFor that reports a timeout as false instead of throwing, for figures that must be printed anyway. */
async function settle(probe, options) {
	try {
		await waitFor(probe, options);
		return true;
	} catch {
		return false;
	}
}

async function startServices() {
	await fsp.rm(logDir, { recursive: true, force: true });
	await fsp.mkdir(logDir, { recursive: true });
	const users = Array.from({ length: ACCOUNTS }, (_, i) => [`user${i}`, PASSWORD]);
	const prosody = await startProsody({ users, logDir });
	running.prosody = prosody;

	// HAProxy's public port is chosen first: both gateways redirect there.
	const httpsPort = await freePort();
	const httpPort = await freePort();
	const wsRedirect = `wss://127.0.0.1:${httpsPort}/xmpp-websocket`;
	const boshRedirect = `https://127.0.0.1:${httpsPort}/http-bind`;
	// README, "Deploying behind a load balancer", step 5: the grace period is the
	// health-check interval times its fall count, read from the deployed file.
	const timing = checkTiming(await fsp.readFile(DEPLOY_CFG, 'utf8'));
	const config = [
		`drain_grace_secs = ${timing.markDownSecs}`,
		'[drain]',
		`websocket_redirect = "${wsRedirect}"`,
		`bosh_redirect = "${boshRedirect}"`,
		// As deploy/xmpp-gateway.toml: HAProxy on this host names each browser in
		// X-Forwarded-For (docs/protocol.md §7).
		'[limits]',
		'trusted_proxies = ["127.0.0.1/32", "::1/128"]',
		'',
	].join('\n');
	// docs/protocol.md §8: the three nodes form a cluster, each listing every node's internal
	// listener (its own included, as a DNS name of all of them would).
	const secretFile = path.join(logDir, 'cluster.secret');
	await fsp.writeFile(secretFile, `${crypto.randomBytes(24).toString('base64')}\n`, { mode: 0o600 });
	const names = ['gw1', 'gw2', 'gw3'];
	const clusterPorts = await Promise.all(names.map(() => freePort()));
	const peers = clusterPorts.map((p) => `"127.0.0.1:${p}"`).join(', ');
	for (const [i, name] of names.entries()) {
		const cluster = `\n[cluster]\nlisten = "127.0.0.1:${clusterPorts[i]}"\npeers = [${peers}]\nsecret_file = "${secretFile}"\nrefresh_secs = 1\n`;
		const gateway = await startGateway({
			prosody,
			logDir,
			name,
			config: config + cluster,
			extraArgs: ['--drain-timeout', String(DRAIN_TIMEOUT_SECS)],
		});
		const tag = /cluster node[^\n]*node="?([0-9a-f]{8})/.exec(fs.readFileSync(gateway.logFile, 'utf8'))?.[1];
		if (!tag) throw new Error(`${name} logged no cluster node tag`);
		nodeTags.set(tag, name);
		running.gateways.push(gateway);
	}
	const cert = await makeCertificate(path.join(logDir, 'cert'));
	trustCertificate(cert.ca);
	running.haproxy = await startHaproxy({
		gateways: running.gateways,
		certPem: cert.pem,
		dir: logDir,
		logDir,
		httpPort,
		httpsPort,
	});
	return { prosody, haproxy: running.haproxy, gateways: running.gateways, wsRedirect, boshRedirect, timing };
}

function createClients(haproxy) {
	const clients = [];
	// Interleaved, so each login batch mixes both transports.
	const total = WS_CLIENTS + BOSH_CLIENTS;
	for (let index = 0; index < total; index++) {
		const useBosh = Math.floor(((index + 1) * BOSH_CLIENTS) / total) > Math.floor((index * BOSH_CLIENTS) / total);
		const common = { index, user: `user${index % ACCOUNTS}`, password: PASSWORD, domain: 'localhost' };
		if (useBosh) {
			clients.push(new BoshClient({ ...common, resource: `bosh-${index}`, url: haproxy.boshUrl }));
		} else {
			clients.push(new WsClient({ ...common, resource: `ws-${index}`, url: haproxy.wsUrl }));
		}
	}
	// Everyone writes to one partner and hears from one: a random cycle, which
	// mixes transports and nodes.
	const order = clients.map((c) => c.index);
	const rand = random(SEED);
	for (let i = order.length - 1; i > 0; i--) {
		const j = Math.floor(rand() * (i + 1));
		[order[i], order[j]] = [order[j], order[i]];
	}
	order.forEach((from, k) => {
		clients[from].partner = clients[order[(k + 1) % order.length]];
	});
	return clients;
}

async function logIn(clients) {
	const failures = [];
	for (let first = 0; first < clients.length; first += LOGIN_BATCH) {
		const batch = clients.slice(first, first + LOGIN_BATCH);
		const results = await Promise.allSettled(batch.map((c) => c.login()));
		results.forEach((r, i) => r.status === 'rejected' && failures.push(`${batch[i].jid}: ${r.reason?.message}`));
		if (failures.length) throw new Error(`logins failed: ${failures.slice(0, 5).join('; ')}`);
	}
}

/**
 * One message from every client (or from `senders`) to its partner, id
 * `<round>-<index>`. Resolves with the ids and when each went out.
 */
function sendRound(round, senders) {
	return senders.map((c) => {
		const id = `${round}-${c.index}`;
		const entry = { id, from: c, to: c.partner, sentAt: null };
		entry.sent = c.say(c.partner.jid, id, `${round} from ${c.jid}`).then((at) => {
			entry.sentAt = at;
		});
		return entry;
	});
}

/** Delivery figures of a round once settled: delivered once, duplicated, lost. */
function deliveries(entries) {
	const out = { sent: entries.length, once: 0, duplicated: [], lost: [], bounced: [], onlyInTerminateBody: 0 };
	for (const e of entries) {
		const got = e.to.received.get(e.id) ?? [];
		if (got.length === 1) out.once += 1;
		if (got.length > 1) out.duplicated.push(`${e.id} x${got.length} to ${e.to.jid}`);
		if (got.length === 0) {
			out.lost.push(`${e.id} ${e.from.transport} ${e.from.jid} -> ${e.to.transport} ${e.to.jid}`);
			if (e.from.bounced.has(e.id)) out.bounced.push(`${e.id} (${e.from.bounced.get(e.id)})`);
		}
		if (got.length > 0 && got.every((g) => g.inTerminate)) out.onlyInTerminateBody += 1;
	}
	return out;
}

const allDelivered = (entries) => () => entries.every((e) => e.to.received.has(e.id));

async function runScenario(stack) {
	const { haproxy, gateways, timing } = stack;
	const r = { timing, errors: [] };
	// A wait that gives up records why and lets the run go on to print its figures.
	const bounded = (promise, ms, what) => withTimeout(promise, ms, what).catch((err) => r.errors.push(err.message));
	const clients = createClients(haproxy);
	running.clients = clients;
	const wsClients = clients.filter((c) => c.transport === 'websocket');
	const boshClients = clients.filter((c) => c.transport === 'bosh');

	// 1. Log in through HAProxy.
	const loginStart = Date.now();
	await logIn(clients);
	r.loginMs = Date.now() - loginStart;
	r.before = {};
	await settle(
		async () => {
			for (const g of gateways) r.before[g.name] = await scrape(g);
			return gateways.reduce((n, g) => n + r.before[g.name].activeTotal, 0) === clients.length;
		},
		{ timeout: 10_000, what: 'session gauges summing to the number of clients' },
	);
	r.boshNodes = Object.fromEntries(boshClients.map((c) => [c.index, c.node]));

	// 2. A first round of messages, everyone online.
	r.round1 = sendRound('r1', clients);
	await bounded(Promise.all(r.round1.map((e) => e.sent)), 10_000, 'round 1 going out');
	await settle(allDelivered(r.round1), { timeout: 15_000, what: 'round 1 delivered' });
	r.round1Result = deliveries(r.round1);

	// Where the BOSH requests of round 1 went: each answered request, the node HAProxy chose and
	// the node holding its session (from the sid's tag).
	r.boshSpread = boshClients.map((c) => {
		const answered = c.browser.exchanges.filter((x) => x.answeredAt !== undefined && x.sid && x.servedBy);
		return {
			jid: c.jid,
			setCookies: [...c.browser.setCookies],
			requests: answered.length,
			nodes: new Set(answered.map((x) => x.servedBy)),
			elsewhere: answered.filter((x) => x.servedBy !== nodeTags.get(x.sid.slice(0, 8))).length,
		};
	});
	r.forwardedBefore = {};
	for (const g of gateways) r.forwardedBefore[g.name] = (await scrape(g)).forwarded;

	// 3. Roll the node with the most sessions.
	const victim = gateways.reduce((a, b) => (r.before[b.name].activeTotal > r.before[a.name].activeTotal ? b : a));
	const survivors = gateways.filter((g) => g !== victim);
	r.victim = victim.name;
	r.survivors = survivors.map((g) => g.name);
	r.survivorsBefore = await Promise.all(survivors.map((g) => scrape(g)));

	// Watch HAProxy's view of the victim and the victim's own /metrics until it exits.
	const watch = { down: null, scrapes: [], exit: null };
	let watching = true;
	const haproxyWatch = waitFor(
		async () => {
			const s = await haproxy.serverStatus();
			if (s[victim.name]?.startsWith('DOWN') && !watch.down) watch.down = Date.now();
			return watch.down || !watching;
		},
		{ timeout: 30_000, interval: 100, what: `HAProxy marking ${victim.name} DOWN` },
	).catch(() => {});
	const t0 = Date.now();
	r.t0 = t0;
	const metricsWatch = watchMetricsUntilExit(victim, watch.scrapes, {
		// The node may exit milliseconds after its sessions end: from just before
		// the grace period is over, scrape back to back.
		fastFrom: t0 + timing.markDownSecs * 1000 - 300,
		deadline: t0 + (DRAIN_TIMEOUT_SECS + 10) * 1000,
	});
	victim.kill('SIGTERM');
	const exited = victim.exited.then((how) => {
		watch.exit = { at: Date.now(), ...how };
	});

	// Users keep chatting while the node is rolled: every client writes once at
	// a random moment in the first grace + 3 s (a client that is offline then
	// writes when it is back, as a chat UI with a disabled send button would).
	const rand = random(SEED + 1);
	const moveWindowMs = (timing.markDownSecs + 3) * 1000;
	r.during = [];
	const scheduled = clients.map(
		(c) =>
			new Promise((resolve) => {
				setTimeout(() => {
					const [entry] = sendRound('mv', [c]);
					r.during.push(entry);
					resolve(entry.sent);
				}, Math.floor(rand() * moveWindowMs));
			}),
	);

	// 4. The victim exits by itself; every client is back online.
	await bounded(exited, (DRAIN_TIMEOUT_SECS + 10) * 1000, `${victim.name} exiting after SIGTERM`);
	r.allBack = await settle(() => clients.every((c) => c.up && !c.outbox.length), {
		timeout: 30_000,
		what: 'every client online again',
	});
	await Promise.all(clients.map((c) => c.moving));
	watching = false;
	await Promise.all([haproxyWatch, metricsWatch]);
	// Each resolves once its message went out (a client still offline holds it).
	await bounded(Promise.all(scheduled), 10_000, 'messages written during the move going out');
	r.watch = watch;
	r.moved = clients.filter((c) => c.disconnects.length > 0);
	r.survivorsAfter = await Promise.all(survivors.map((g) => scrape(g)));
	r.victimLog = fs.readFileSync(victim.logFile, 'utf8');

	// 5. Everyone writes again after the move; every message must arrive.
	r.round3 = sendRound('r3', clients);
	await bounded(Promise.all(r.round3.map((e) => e.sent)), 10_000, 'round 3 going out');
	await settle(allDelivered(r.round3), { timeout: 15_000, what: 'round 3 delivered' });
	r.round3Result = deliveries(r.round3);
	// Messages written during the move had all this time to arrive.
	await settle(allDelivered(r.during), { timeout: 3000, what: 'messages of the move delivered' });
	r.duringResult = deliveries(r.during);
	r.clients = clients;
	r.wsClients = wsClients;
	r.boshClients = boshClients;
	return r;
}

/**
 * Scrapes `gateway`'s /metrics into `scrapes` until the process is gone (or
 * `deadline`): every 100 ms, then back to back from `fastFrom`, so the last
 * scrape is as close to the exit as a scrape can be.
 */
async function watchMetricsUntilExit(gateway, scrapes, { fastFrom, deadline }) {
	while (gateway.running && Date.now() < deadline) {
		try {
			scrapes.push(await scrape(gateway));
		} catch {
			// The admin listener goes away with the process.
		}
		const pause = Date.now() < fastFrom ? 100 : 5;
		await new Promise((resolve) => setTimeout(resolve, pause));
	}
}

/**
 * A message written during the move may be lost only when it was addressed to
 * a BOSH client between its two sessions: strophe.js has no BOSH resumption,
 * and the server has no session to deliver to from the moment the old one is
 * closed (the end of the grace period) until the new one is bound.
 */
function lossExplained(r, e) {
	const move = e.to.lastMove();
	const receiverBetweenSessions =
		e.to.transport === 'bosh' &&
		move &&
		e.sentAt >= r.t0 + r.timing.markDownSecs * 1000 - 100 &&
		e.sentAt <= move.backAt;
	// strophe.js sends queued stanzas on its idle tick (every 100 ms) and discards its queue when
	// the session is terminated: a stanza a BOSH sender queued just before its terminate body
	// arrived never went on the wire. No BOSH resumption exists to carry it.
	// Which request carried it is known from the browser's log: none (it stayed in the queue),
	// or one Strophe aborted when the terminate body came (nothing says the gateway read it).
	// A request that was answered had its payload delivered, drain or not (docs/protocol.md §6).
	const senderMove = e.from.lastMove();
	const carriers = e.from.transport === 'bosh' ? e.from.browser.exchanges.filter((x) => x.ids.includes(e.id)) : [];
	const givenUpBySender =
		e.from.transport === 'bosh' &&
		senderMove &&
		e.sentAt <= senderMove.backAt &&
		carriers.every((x) => x.answeredAt === undefined);
	return receiverBetweenSessions || givenUpBySender;
}

/** What happened to client `c`, relative to the SIGTERM, for an assertion's message. */
function history(r, c) {
	const t = (at) => (at === undefined ? '-' : `+${at - r.t0}`);
	const moves = c.moves.map((m) => `${m.how} down ${t(m.downAt)} back ${t(m.backAt)}`).join(', ');
	let text = `${c.jid}: moves [${moves}]`;
	if (c.transport === 'bosh') {
		const around = c.browser.exchanges
			.filter((x) => x.sentAt >= r.t0 - 1000)
			.map((x) => `rid ${x.rid} [${x.ids}] sent ${t(x.sentAt)} ${x.answeredAt !== undefined ? `answered ${t(x.answeredAt)} ${x.status} ${x.type ?? ''}${x.condition ? `/${x.condition}` : ''}` : x.abortedAt !== undefined ? `aborted ${t(x.abortedAt)}` : x.failedAt !== undefined ? `failed ${t(x.failedAt)}` : 'open'}`);
		text += `, requests [${around.join('; ')}]`;
	}
	return text;
}

function median(values) {
	if (!values.length) return NaN;
	const s = [...values].sort((a, b) => a - b);
	return s[Math.floor(s.length / 2)];
}

function countShutdownEnds(log) {
	return log.split('\n').filter((l) => /session ended reason="shutdown"/.test(l)).length;
}

function printFigures(r) {
	const lines = [];
	const t = (at) => (at ? `${((at - r.t0) / 1000).toFixed(2)} s` : 'never');
	lines.push(`logins: ${r.clients.length} (${r.wsClients.length} WebSocket, ${r.boshClients.length} BOSH) in ${r.loginMs} ms`);
	for (const [name, f] of Object.entries(r.before)) {
		lines.push(`before: ${name} holds ${f.activeTotal} sessions (${f.active.websocket} WebSocket, ${f.active.bosh} BOSH)`);
	}
	const held = {};
	for (const node of Object.values(r.boshNodes)) held[node] = (held[node] ?? 0) + 1;
	lines.push(`BOSH sessions by node (sid tag) before: ${JSON.stringify(held)}`);
	const requests = r.boshSpread.reduce((n, b) => n + b.requests, 0);
	const elsewhere = r.boshSpread.reduce((n, b) => n + b.elsewhere, 0);
	lines.push(`BOSH requests answered before the move: ${requests}, of which HAProxy sent ${elsewhere} (${((100 * elsewhere) / requests).toFixed(1)} %) to a node that forwarded them`);
	lines.push(`forwarded by each node (result: count) before the move: ${JSON.stringify(r.forwardedBefore)}`);
	lines.push(`SIGTERM to ${r.victim}; HAProxy grace: inter ${r.timing.inter}s x fall ${r.timing.fall} = drain_grace_secs ${r.timing.markDownSecs}`);
	const movedWs = r.moved.filter((c) => c.transport === 'websocket');
	const movedBosh = r.moved.filter((c) => c.transport === 'bosh');
	const resumed = movedWs.filter((c) => c.lastMove()?.how === 'resumed').length;
	lines.push(`moved: ${r.moved.length} sessions (${movedWs.length} WebSocket: ${resumed} resumed, ${movedWs.length - resumed} fresh; ${movedBosh.length} BOSH: new sessions)`);
	const firstRedirect = Math.min(...r.moved.flatMap((c) => c.redirects.map((x) => x.at)));
	const backs = r.moved.map((c) => c.lastMove()?.backAt).filter(Boolean);
	const moveDurations = r.moved.map((c) => (c.lastMove() ? c.lastMove().backAt - c.disconnects[0].at : NaN)).filter(Number.isFinite);
	lines.push(`timeline after SIGTERM: HAProxy marks ${r.victim} DOWN at ${t(r.watch.down)}, first redirect at ${t(Number.isFinite(firstRedirect) ? firstRedirect : 0)}, all clients back at ${t(backs.length ? Math.max(...backs) : 0)}, ${r.victim} exits at ${t(r.watch.exit?.at)} (code ${r.watch.exit?.code}, signal ${r.watch.exit?.signal})`);
	lines.push(`per-client move (disconnect -> back): median ${median(moveDurations)} ms, max ${moveDurations.length ? Math.max(...moveDurations) : NaN} ms`);
	const last = r.watch.scrapes.at(-1);
	if (last) {
		lines.push(`${r.victim} last /metrics before exit (${t(last.at)}, ${r.watch.scrapes.length} scrapes): active ${JSON.stringify(last.active)}, ended ${JSON.stringify(last.ended)}`);
	}
	lines.push(`${r.victim} log: ${countShutdownEnds(r.victimLog)} sessions ended reason="shutdown"`);
	r.survivors.forEach((name, i) => {
		lines.push(`${name} before: active ${JSON.stringify(r.survivorsBefore[i].active)}, started ${JSON.stringify(r.survivorsBefore[i].started)}`);
		lines.push(`${name} after:  active ${JSON.stringify(r.survivorsAfter[i].active)}, started ${JSON.stringify(r.survivorsAfter[i].started)}, forwarded ${JSON.stringify(r.survivorsAfter[i].forwarded)}`);
	});
	const d = (name, x) =>
		`${name}: sent ${x.sent}, delivered once ${x.once}, duplicated ${x.duplicated.length}, lost ${x.lost.length}` +
		(x.bounced.length ? ` (bounced back to the sender: ${x.bounced.length})` : '') +
		`, delivered only inside a BOSH terminate body or to an abandoned connection: ${x.onlyInTerminateBody}`;
	lines.push(d('messages before the move', r.round1Result));
	lines.push(d('messages written during the move', r.duringResult));
	const viaSm = r.during.filter((e) => {
		const move = e.to.transport === 'websocket' && e.to.lastMove();
		const got = e.to.received.get(e.id)?.[0];
		return move?.how === 'resumed' && got && got.at >= move.backAt - 50 && e.sentAt && e.sentAt < move.backAt;
	}).length;
	const resentByClient = r.during.filter((e) => e.to.received.get(e.id)?.some((g) => g.delayed)).length;
	lines.push(`  of which delivered to a resumed WebSocket client after <resumed/> (server's SM queue): ${viaSm}; resent by the sender's SM queue (with <delay/>): ${resentByClient}`);
	const moved = new Set(r.moved);
	const who = (c) => `${c.transport}${moved.has(c) ? ' (moved)' : ''} ${c.jid}`;
	for (const e of r.during.filter((x) => !x.to.received.has(x.id)).slice(0, 20)) {
		const bounce = e.from.bounced.has(e.id) ? `, bounced ${e.from.bounced.get(e.id)}` : '';
		const why = lossExplained(r, e) ? 'a BOSH client between its two sessions' : 'NOT EXPLAINED';
		lines.push(`  lost ${e.id} written at +${e.sentAt - r.t0} ms: ${who(e.from)} -> ${who(e.to)}${bounce} [${why}]`);
	}
	const movedBoshClients = r.moved.filter((c) => c.transport === 'bosh');
	const repeats = movedBoshClients.filter((c) => c.terminates.some((x) => x.repeat)).length;
	const crossing = movedBoshClients.flatMap((c) => c.browser.exchanges.filter((x) => x.ids.length && x.type === 'terminate'));
	const abandoned = movedBoshClients.flatMap((c) => c.browser.exchanges.filter((x) => x.ids.length && x.answeredAt === undefined));
	lines.push(`moved BOSH clients told the end by more than one request: ${repeats}; requests with messages answered by the terminate body: ${crossing.length}; requests with messages Strophe gave up unanswered: ${abandoned.length}`);
	lines.push(d('messages sent after reconnecting', r.round3Result));
	const itemNotFound = r.boshClients.filter((c) => c.terminates.some((x) => x.condition === 'item-not-found'));
	lines.push(`BOSH clients that got item-not-found: ${itemNotFound.length}`);
	for (const e of r.errors) lines.push(`wait that gave up: ${e}`);
	const problems = r.clients.filter((c) => c.problems.length);
	lines.push(`clients with problems: ${problems.length}`);
	for (const c of problems.slice(0, 10)) lines.push(`  ${c.jid}: ${c.problems.join(' | ')}`);
	console.log(`\n--- scale-out figures ---\n${lines.join('\n')}\n`);
}

before(async () => {
	const stack = await startServices();
	seen = await runScenario(stack);
	seen.stack = stack;
	printFigures(seen);
}, { timeout: 170_000 });

after(async () => {
	const steps = [
		() => withTimeout(Promise.allSettled(running.clients.map((c) => c.close())), 15_000, 'closing clients'),
		async () => closeBrowsers(),
		() => running.haproxy?.stop(),
		...running.gateways.map((g) => () => g.stop()),
		() => running.prosody?.stop(),
	];
	for (const step of steps) {
		try {
			await step();
		} catch (err) {
			console.error(`cleanup: ${err.message}`);
		}
	}
}, { timeout: 60_000 });

test(`${WS_CLIENTS + BOSH_CLIENTS} clients log in through HAProxy; the nodes' session gauges add up to them`, () => {
	const ws = seen.wsClients.length;
	const bosh = seen.boshClients.length;
	const sum = (transport) => Object.values(seen.before).reduce((n, f) => n + f.active[transport], 0);
	assert.equal(sum('websocket'), ws, 'xmpp_gateway_sessions_active{transport="websocket"} over the three nodes');
	assert.equal(sum('bosh'), bosh, 'xmpp_gateway_sessions_active{transport="bosh"} over the three nodes');
	for (const [name, f] of Object.entries(seen.before)) assert.ok(f.activeTotal > 0, `${name} got no session at all`);
});

test('BOSH requests of one session land on every node, which forward them to the one holding it', () => {
	// Round robin over three nodes: about two requests in three reach a node that does not hold
	// the session. No cookie pins anything.
	for (const b of seen.boshSpread) {
		assert.deepEqual(b.setCookies, [], `${b.jid}: a cookie was set`);
		assert.ok(b.requests >= 4, `${b.jid}: only ${b.requests} answered requests`);
		assert.ok(b.nodes.size >= 2, `${b.jid}: every one of ${b.requests} requests went to ${[...b.nodes]}`);
	}
	const requests = seen.boshSpread.reduce((n, b) => n + b.requests, 0);
	const elsewhere = seen.boshSpread.reduce((n, b) => n + b.elsewhere, 0);
	assert.ok(elsewhere > requests / 3, `only ${elsewhere} of ${requests} requests were forwarded`);
	const forwarded = Object.values(seen.forwardedBefore).reduce((n, f) => n + (f.ok ?? 0), 0);
	assert.ok(forwarded >= elsewhere, `the nodes count ${forwarded} forwarded requests, the browsers ${elsewhere}`);
	const failed = Object.entries(seen.forwardedBefore).filter(([, f]) => Object.keys(f).some((k) => k !== 'ok'));
	assert.deepEqual(failed, [], 'forwards that failed before the move');
	for (const [name, f] of Object.entries(seen.before)) {
		const held = Object.values(seen.boshNodes).filter((n) => n === name).length;
		assert.equal(held, f.active.bosh, `BOSH sessions whose sid names ${name} vs its BOSH sessions gauge`);
	}
});

test('every message of the first round is delivered once', () => {
	assert.deepEqual(seen.round1Result.lost, []);
	assert.deepEqual(seen.round1Result.duplicated, []);
});

test('the run waited for nothing in vain (every bounded wait completed)', () => {
	assert.deepEqual(seen.errors, []);
	assert.equal(seen.allBack, true, 'every client online again within 30 s');
});

test('the drained gateway exits by itself before --drain-timeout', () => {
	assert.equal(seen.watch.exit?.code, 0, `exit: ${JSON.stringify(seen.watch.exit)}`);
	const secs = (seen.watch.exit.at - seen.t0) / 1000;
	assert.ok(secs < DRAIN_TIMEOUT_SECS, `exited ${secs} s after SIGTERM`);
	assert.match(seen.victimLog, /stopped.*drained=true/, 'gateway log says every session ended (drained=true)');
});

test('HAProxy takes the draining node out before it starts moving sessions', () => {
	assert.ok(seen.watch.down, 'HAProxy never marked the node DOWN');
	const firstRedirect = Math.min(...seen.moved.flatMap((c) => c.redirects.map((x) => x.at)));
	assert.ok(seen.watch.down <= firstRedirect, `DOWN at +${seen.watch.down - seen.t0} ms, first redirect at +${firstRedirect - seen.t0} ms`);
});

test('exactly the sessions of the drained node move, each told where with see-other-uri', () => {
	const f = seen.before[seen.victim];
	const movedWs = seen.moved.filter((c) => c.transport === 'websocket');
	const movedBosh = seen.moved.filter((c) => c.transport === 'bosh');
	assert.equal(movedWs.length, f.active.websocket, 'WebSocket clients moved vs the node\'s WebSocket gauge');
	assert.equal(movedBosh.length, f.active.bosh, 'BOSH clients moved vs the node\'s BOSH gauge');
	const wrongNode = movedBosh.filter((c) => seen.boshNodes[c.index] !== seen.victim);
	assert.deepEqual(wrongNode.map((c) => `${c.jid} had its session on ${seen.boshNodes[c.index]}`), []);
	const notToldOnce = seen.moved
		.filter((c) => {
			const want = c.transport === 'websocket' ? seen.stack.wsRedirect : seen.stack.boshRedirect;
			return c.disconnects.length !== 1 || c.redirects.length !== 1 || c.redirects[0].uri !== want;
		})
		.map((c) => `${c.jid}: ends ${JSON.stringify(c.disconnects.map((x) => x.how))}, redirects ${JSON.stringify(c.redirects.map((x) => x.uri))}`);
	assert.deepEqual(notToldOnce, [], 'each moved client ends once, by one redirect to the configured URL');
});

test('WebSocket clients resume their XEP-0198 stream through the other nodes', () => {
	const movedWs = seen.moved.filter((c) => c.transport === 'websocket');
	assert.ok(movedWs.length > 0, 'no WebSocket session was on the drained node');
	const notResumed = movedWs
		.filter((c) => c.lastMove()?.how !== 'resumed')
		.map((c) => `${c.jid}: ${c.lastMove()?.how ?? 'not back'} ${c.problems.join(' | ')}`);
	assert.deepEqual(notResumed, []);
	// The same stream, resumed: <resumed previd/> names the stream <enabled/> created,
	// and the session keeps its full JID.
	const notSame = movedWs
		.filter((c) => c.resumedPrevIds.join() !== c.smId || c.xmpp.jid?.toString() !== c.jid)
		.map((c) => `${c.jid}: enabled id ${c.smId}, resumed previd ${c.resumedPrevIds}, JID now ${c.xmpp.jid}`);
	assert.deepEqual(notSame, []);
});

test('BOSH clients start a new session on a node that stays', () => {
	const movedBosh = seen.moved.filter((c) => c.transport === 'bosh');
	const wrong = movedBosh
		.filter((c) => c.lastMove()?.how !== 'new-session' || !seen.survivors.includes(c.node))
		.map((c) => `${c.jid}: ${c.lastMove()?.how ?? 'not back'}, session on ${c.node}`);
	assert.deepEqual(wrong, []);
});

test('no BOSH request of a live session reaches a node that does not own it (no item-not-found)', () => {
	const hit = seen.boshClients
		.filter((c) => c.terminates.some((x) => x.condition === 'item-not-found'))
		.map((c) => `${c.jid} (session on ${seen.boshNodes[c.index]}): ${c.terminates.map((x) => `${x.condition}@+${x.at - seen.t0}ms`).join(', ')}`);
	assert.deepEqual(hit, []);
});

test('no client reports a problem (stream errors, unexpected ends, failed sends)', () => {
	const problems = seen.clients.filter((c) => c.problems.length).map((c) => `${c.jid}: ${c.problems.join(' | ')}`);
	assert.deepEqual(problems, []);
});

test('/metrics show the sessions leaving the drained node and arriving on the other', () => {
	const last = seen.watch.scrapes.at(-1);
	assert.ok(last, `no /metrics scrape of ${seen.victim} during its drain`);
	assert.equal(last.draining, 1, 'xmpp_gateway_draining while draining');
	const others = Object.entries(last.ended).filter(([reason]) => reason !== 'shutdown');
	assert.deepEqual(others, [], `${seen.victim} sessions ended for another reason than shutdown`);
	assert.ok(
		(last.ended.shutdown ?? 0) > 0,
		`${seen.victim}'s last scrape (+${last.at - seen.t0} ms) shows no session ended by the shutdown: active ${JSON.stringify(last.active)}`,
	);
	// One scrape is not atomic (each family is read in turn while sessions end), so only bound
	// it; the log below gives the exact count.
	const before = seen.before[seen.victim].activeTotal;
	assert.ok(last.ended.shutdown <= before, `ended by shutdown ${last.ended.shutdown} > ${before} sessions before`);

	assert.equal(countShutdownEnds(seen.victimLog), seen.before[seen.victim].activeTotal, 'sessions the log says ended by the shutdown');
	assert.ok(seen.watch.exit && !seen.stack.gateways.find((g) => g.name === seen.victim).running, 'process gone');

	const movedWs = seen.moved.filter((c) => c.transport === 'websocket').length;
	const movedBosh = seen.moved.filter((c) => c.transport === 'bosh').length;
	const sum = (figures, key, transport) => figures.reduce((n, f) => n + f[key][transport], 0);
	const [b, a] = [seen.survivorsBefore, seen.survivorsAfter];
	const names = seen.survivors.join(' and ');
	assert.deepEqual(
		{ websocket: sum(a, 'active', 'websocket'), bosh: sum(a, 'active', 'bosh') },
		{ websocket: seen.wsClients.length, bosh: seen.boshClients.length },
		`${names} hold every session`,
	);
	assert.equal(sum(a, 'started', 'websocket') - sum(b, 'started', 'websocket'), movedWs, `${names} WebSocket sessions started`);
	assert.equal(sum(a, 'started', 'bosh') - sum(b, 'started', 'bosh'), movedBosh, `${names} BOSH sessions started`);
});

test('what each client hears from its sender arrives in the order it was written', () => {
	const rounds = ['r1', 'mv', 'r3'];
	const outOfOrder = seen.clients
		.map((sender) => {
			const ids = rounds.map((round) => `${round}-${sender.index}`);
			const arrived = [...sender.partner.received.keys()].filter((id) => ids.includes(id));
			const expected = ids.filter((id) => arrived.includes(id));
			return arrived.join() === expected.join() ? null : `${sender.jid} -> ${sender.partner.jid}: ${arrived.join(', ')}`;
		})
		.filter(Boolean);
	assert.deepEqual(outOfOrder, []);
});

test('every message sent after reconnecting is delivered, once', () => {
	assert.deepEqual(seen.round3Result.lost, []);
	assert.deepEqual(seen.round3Result.duplicated, []);
});

test('messages written during the move are lost only to or from a BOSH client between its two sessions', () => {
	const unexplained = seen.during
		.filter((e) => !e.to.received.has(e.id) && !lossExplained(seen, e))
		.map((e) => `${e.id} +${e.sentAt - seen.t0} ms ${e.from.transport} ${e.from.jid} -> ${e.to.transport} ${e.to.jid}; ${history(seen, e.from)}; ${history(seen, e.to)}`);
	assert.deepEqual(unexplained, []);
});

test('messages between WebSocket clients written during the move are not lost (XEP-0198)', () => {
	const wsOnly = seen.during.filter((e) => e.from.transport === 'websocket' && e.to.transport === 'websocket');
	const result = deliveries(wsOnly);
	assert.deepEqual(result.lost, []);
	assert.deepEqual(result.duplicated, []);
});
