// Bounded soak (issue 9): a real Prosody behind the gateway, steady traffic with churn, over
// both transports, for SECONDS (argument 1, default 600):
//
//   - PAIRS pairs of sessions that stay logged in, each sending numbered messages to its peer
//     at a steady rate: xmpp.js over WebSocket and strophe.js over BOSH, in every combination;
//   - CHURNERS loops that log a session in, exchange one message with itself, and log out,
//     continuously, alternating WebSocket and BOSH.
//
// At the end every pair's receiver must hold exactly the messages sent, once each, in order;
// the gateway's session gauges, its started/ended counters and its sockets to Prosody must be
// back at zero; and its RSS (VmRSS from /proc/<pid>/status) back within RSS_TOLERANCE of the
// baseline taken after a warm-up (both transports used, then every session ended). A session
// or buffer kept per login shows up as a gauge above zero or an RSS that grows with the churn.
//
// Usage: node tests/soak/soak.mjs [SECONDS]   (scripts/soak.sh wraps it)

import fs from 'node:fs';
import { startStack, waitFor, withTimeout } from '../interop/harness.mjs';
import * as xmppjs from '../interop/lib/xmppjs.mjs';
import * as strophe from '../interop/lib/strophe.mjs';

const SECONDS = Number(process.argv[2] ?? 600);
const PAIRS = 4;
const CHURNERS = 4;
/** Messages per second per pair. */
const RATE = 10;
const PASSWORD = 'soak-password';
/** RSS at the end may exceed the baseline by this fraction, or by RSS_SLACK_KB, whichever is larger. */
const RSS_TOLERANCE = 0.5;
const RSS_SLACK_KB = 24 * 1024;

const { xml } = xmppjs;
const { $msg } = strophe;

function rssKb(pid) {
	const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
	return Number(status.match(/^VmRSS:\s+(\d+)\s+kB/m)[1]);
}

/** A logged-in session of either library, with a uniform send/receive surface. */
async function open(stack, username, transport, resource) {
	if (transport === 'websocket') {
		const c = await xmppjs.login(stack, username, PASSWORD, { resource, mechanism: 'PLAIN' });
		// xmpp.js 0.14 resets its count of received stanzas when it handles <enabled/>, which
		// can come after a stanza that followed <enabled/> on the wire; its next <a/> then
		// goes backwards and Prosody ends the stream. Nothing is received before SM is on.
		await waitFor(() => c.xmpp.streamManagement?.enabled, { what: `stream management for ${username}/${resource}` });
		const handlers = [];
		c.xmpp.on('stanza', (el) => {
			if (el.is('message') && el.getChildText('body') != null) {
				for (const h of handlers) h(el.attrs.from, el.getChildText('body'));
			}
		});
		// The inbox keeps every element; a soak must not.
		c.inbox.push = () => {};
		return {
			jid: c.jid,
			onMessage: (h) => handlers.push(h),
			send: (to, body) => c.send(xml('message', { to, type: 'chat' }, xml('body', {}, body))),
			close: () => c.close(),
		};
	}
	const c = await strophe.login(stack, username, PASSWORD, { resource, transport: 'bosh', mechanism: 'PLAIN' });
	const handlers = [];
	c.inbox.push = () => {};
	c.conn.addHandler(
		(el) => {
			const body = strophe.childText(el, 'body');
			if (body != null) for (const h of handlers) h(el.getAttribute('from'), body);
			return true;
		},
		null,
		'message',
	);
	return {
		jid: c.jid,
		onMessage: (h) => handlers.push(h),
		send: (to, body) => c.send($msg({ to, type: 'chat' }).c('body').t(body)),
		close: () => c.close(),
	};
}

const COMBOS = [
	['websocket', 'websocket'],
	['bosh', 'bosh'],
	['websocket', 'bosh'],
	['bosh', 'websocket'],
];

/** A sender and a receiver; the receiver records the sequence numbers it gets. */
async function openPair(stack, i) {
	const [tSend, tRecv] = COMBOS[i % COMBOS.length];
	const sender = await open(stack, `pair${i}a`, tSend, 'send');
	const receiver = await open(stack, `pair${i}b`, tRecv, 'recv');
	const pair = { i, transports: `${tSend}->${tRecv}`, sender, receiver, sent: 0, received: [] };
	receiver.onMessage((from, body) => {
		if (from?.startsWith(`pair${i}a@`)) pair.received.push(Number(body));
	});
	return pair;
}

/** One churn cycle: log in, send a message to itself and wait for it, log out. */
async function churnOnce(stack, n, transport) {
	const s = await open(stack, `churn${Math.abs(n) % CHURNERS}`, transport, `c${n}`);
	const echoed = new Promise((resolve) => s.onMessage((from, body) => body === `self ${n}` && resolve()));
	await s.send(s.jid, `self ${n}`);
	await withTimeout(echoed, 15_000, `churn session ${n}'s message to itself`);
	await s.close();
}

async function waitForQuiet(gateway, what) {
	for (const transport of ['websocket', 'bosh']) {
		await waitFor(async () => (await gateway.sessionsActive(transport)) === 0, {
			what: `sessions_active{transport="${transport}"} == 0 (${what})`,
			timeout: 30_000,
		});
	}
	await waitFor(() => gateway.upstreamSockets() === 0, {
		what: `no socket from the gateway to Prosody (${what})`,
		timeout: 30_000,
	});
}

async function main() {
	const users = [];
	for (let i = 0; i < PAIRS; i++) users.push([`pair${i}a`, PASSWORD], [`pair${i}b`, PASSWORD]);
	for (let i = 0; i < CHURNERS; i++) users.push([`churn${i}`, PASSWORD]);
	const stack = await startStack({ name: 'soak', users });
	const { gateway } = stack;
	try {
		// Warm-up: both transports, so the baseline holds what the first sessions allocate once.
		for (let n = 0; n < 10; n++) await churnOnce(stack, -1 - n, n % 2 ? 'bosh' : 'websocket');
		await waitForQuiet(gateway, 'after the warm-up');
		const baselineKb = rssKb(gateway.pid);
		const startedBefore = await gateway.metricValue('xmpp_gateway_sessions_started_total');
		console.log(`soak: ${SECONDS} s, ${PAIRS} pairs at ${RATE}/s, ${CHURNERS} churners; RSS baseline ${baselineKb} kB`);

		const pairs = [];
		for (let i = 0; i < PAIRS; i++) pairs.push(await openPair(stack, i));
		const deadline = Date.now() + SECONDS * 1000;
		let peakKb = baselineKb;
		let peakSessions = 0;

		const senders = pairs.map(async (pair) => {
			const interval = 1000 / RATE;
			let next = Date.now();
			while (Date.now() < deadline) {
				pair.sent += 1;
				await pair.sender.send(pair.receiver.jid, String(pair.sent));
				next += interval;
				// The rate is the behaviour under test: real time passes between messages.
				await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - Date.now())));
			}
		});
		let churned = 0;
		const churnFailures = [];
		const churners = Array.from({ length: CHURNERS }, async (_, k) => {
			for (let n = k; Date.now() < deadline; n += CHURNERS) {
				try {
					await churnOnce(stack, n, n % 2 ? 'bosh' : 'websocket');
					churned += 1;
				} catch (err) {
					churnFailures.push(`${n}: ${err.message}`);
					if (churnFailures.length > 5) throw new Error(`churn failing: ${churnFailures.join('; ')}`);
				}
			}
		});
		const sampler = setInterval(async () => {
			peakKb = Math.max(peakKb, rssKb(gateway.pid));
			const active =
				(await gateway.sessionsActive('websocket').catch(() => 0)) +
				(await gateway.sessionsActive('bosh').catch(() => 0));
			peakSessions = Math.max(peakSessions, active);
		}, 1000);
		try {
			await Promise.all([...senders, ...churners]);
		} finally {
			clearInterval(sampler);
		}

		// Everything sent must arrive: wait for the tail, then compare exactly.
		for (const pair of pairs) {
			await waitFor(() => pair.received.length >= pair.sent, {
				what: `pair ${pair.i} (${pair.transports}) receiving all ${pair.sent} messages (got ${pair.received.length})`,
				timeout: 30_000,
			});
		}
		// A duplicate would come after the last message: the server delivers everything before
		// its </stream:stream>, so once the receivers are closed nothing more can arrive.
		for (const pair of pairs) {
			await pair.sender.close();
			await pair.receiver.close();
		}
		let sent = 0;
		let lost = 0;
		let duplicated = 0;
		const problems = [];
		for (const pair of pairs) {
			sent += pair.sent;
			const seen = new Set(pair.received);
			lost += pair.sent - [...seen].filter((n) => n >= 1 && n <= pair.sent).length;
			duplicated += pair.received.length - seen.size;
			const inOrder = pair.received.every((n, idx) => n === idx + 1);
			if (!inOrder || pair.received.length !== pair.sent) {
				const at = pair.received.findIndex((n, idx) => n !== idx + 1);
				problems.push(`pair ${pair.i} (${pair.transports}): ${pair.received.length} of ${pair.sent}, first out of order at ${at}`);
			}
		}
		await waitForQuiet(gateway, 'at the end');
		const started = (await gateway.metricValue('xmpp_gateway_sessions_started_total')) - startedBefore;
		const startedAll = await gateway.metricValue('xmpp_gateway_sessions_started_total');
		const endedAll = await gateway.metricValue('xmpp_gateway_sessions_ended_total');
		// The allocator may return what the last sessions freed a little later: wait for RSS
		// to come within the tolerance, for at most 10 s.
		const allowedKb = baselineKb + Math.max(RSS_SLACK_KB, baselineKb * RSS_TOLERANCE);
		await waitFor(() => rssKb(gateway.pid) <= allowedKb, { timeout: 10_000, what: 'RSS back near the baseline' }).catch(() => {});
		const endKb = rssKb(gateway.pid);

		console.log(
			[
				`soak: sessions started ${started} (churn cycles ${churned}, ${churnFailures.length} failed), peak active ${peakSessions}`,
				`soak: messages sent ${sent}, lost ${lost}, duplicated ${duplicated}`,
				`soak: RSS baseline ${baselineKb} kB, peak ${peakKb} kB, end ${endKb} kB (allowed ${Math.round(allowedKb)} kB)`,
				`soak: started_total ${startedAll}, ended_total ${endedAll}`,
			].join('\n'),
		);
		const failures = [...problems];
		if (lost || duplicated) failures.push(`${lost} messages lost, ${duplicated} duplicated`);
		if (churnFailures.length) failures.push(`churn failures: ${churnFailures.join('; ')}`);
		if (startedAll !== endedAll) failures.push(`sessions started ${startedAll} != ended ${endedAll}`);
		if (endKb > allowedKb) failures.push(`RSS ${endKb} kB above the allowed ${Math.round(allowedKb)} kB`);
		if (churned < SECONDS) failures.push(`only ${churned} churn cycles in ${SECONDS} s`);
		if (failures.length) throw new Error(`soak failed:\n  ${failures.join('\n  ')}`);
		console.log('soak: ok');
	} finally {
		await stack.stop();
	}
}

main().then(
	() => process.exit(0),
	(err) => {
		console.error(err.stack ?? String(err));
		process.exit(1);
	},
);
