// However a session ends from the server's side, every library must reach its
// disconnected state and be told why: strophe.js (WebSocket and BOSH),
// @xmpp/client (WebSocket) and stanza (WebSocket and BOSH), each logged in
// through the gateway at the same time, through
// - a stream error from the server (Prosody replaces a session whose resource
//   logs in again: <conflict/>),
// - a drain of the gateway (SIGTERM) with `system-shutdown`,
// - a drain with see-other-uri redirects configured.
// docs/protocol.md §3, §4 ("Ending a session") and §6. A client's own logout
// is covered by each library's file.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, startGateway, freePort, withTimeout, TARGET, DOMAIN } from './harness.mjs';
import * as strophe from './lib/strophe.mjs';
import * as xmppjs from './lib/xmppjs.mjs';
import * as stanza from './lib/stanza.mjs';

const PASSWORD = 'demo-password';
const ENDED_WITHIN_MS = 10_000;

/**
 * Each library, and what it reports when the server ends its session: `reports` maps a
 * scenario to the condition the library itself hands to the application, or null where it
 * has no way to (stanza does not surface a server's stream error on WebSocket; xmpp.js reads
 * <close see-other-uri/> as a plain close). Where it reports nothing, the test still checks
 * that the gateway told it: the condition is in what the library read off the wire.
 */
const CLIENTS = [
	{
		name: 'strophe.js over WebSocket',
		user: 'strophe-ws',
		open: (s, u, r) => openStrophe(s, u, r, 'websocket'),
		// Strophe follows a see-other-uri only before the stream is open; later it ends when
		// the gateway closes the WebSocket after the <close/>.
		reports: { conflict: 'conflict', shutdown: 'system-shutdown', redirect: null },
	},
	{
		name: 'strophe.js over BOSH',
		user: 'strophe-bosh',
		open: (s, u, r) => openStrophe(s, u, r, 'bosh'),
		bosh: true,
		// Strophe would say 'conflict' if the terminate body carried the <stream:error/>; it
		// does not, for stanza's sake (docs/protocol.md §4, upstream failures).
		reports: { conflict: 'remote-stream-error', shutdown: 'system-shutdown', redirect: 'see-other-uri' },
	},
	{
		name: '@xmpp/client over WebSocket',
		user: 'xmppjs-ws',
		open: openXmppjs,
		reports: { conflict: 'conflict', shutdown: 'system-shutdown', redirect: null },
	},
	{
		name: 'stanza over WebSocket',
		user: 'stanza-ws',
		open: (s, u, r) => openStanza(s, u, r, 'websocket'),
		reports: { conflict: null, shutdown: null, redirect: null },
	},
	{
		name: 'stanza over BOSH',
		user: 'stanza-bosh',
		open: (s, u, r) => openStanza(s, u, r, 'bosh'),
		bosh: true,
		reports: { conflict: 'remote-stream-error', shutdown: 'system-shutdown', redirect: 'see-other-uri' },
	},
];

/**
 * Each adapter returns { ended, wire, quiet, close }: `ended` resolves with the conditions
 * (and for strophe.js the status names) the library reported, once it says it is
 * disconnected; `wire` is everything it read, as text; `quiet` resolves when it has nothing
 * left to send; `close` logs out if it is still on.
 */
async function openStrophe(stack, user, resource, transport) {
	const s = await strophe.login(stack, user, PASSWORD, { transport, resource });
	const { Status } = strophe.Strophe;
	const wire = [];
	// Over WebSocket Strophe hands a stream error frame to no input hook: read the socket.
	if (transport === 'websocket') s.conn._proto.socket.addEventListener('message', (e) => wire.push(String(e.data)));
	else s.conn.rawInput = (data) => wire.push(data);
	const reported = [];
	const ended = new Promise((resolve) => {
		s.events.on('status', (status, condition) => {
			if (condition) reported.push(condition);
			if (status === Status.DISCONNECTED) resolve(reported);
		});
	});
	return { ended, wire, quiet: async () => {}, close: () => s.close() };
}

async function openXmppjs(stack, user, resource) {
	const s = await xmppjs.login(stack, user, PASSWORD, { resource });
	const wire = [];
	s.xmpp.socket.on('data', (data) => wire.push(String(data)));
	const reported = [];
	s.xmpp.on('error', (err) => err.condition && reported.push(err.condition));
	const ended = new Promise((resolve) => s.xmpp.once('disconnect', () => resolve(reported)));
	return { ended, wire, quiet: async () => {}, close: () => s.close() };
}

async function openStanza(stack, user, resource, transport) {
	const s = await stanza.login(stack, user, PASSWORD, { transport, resource });
	const wire = [];
	s.client.on('raw', (direction, data) => direction === 'incoming' && wire.push(data));
	const ended = s.disconnected.then(() => [
		...s.streamErrors.map((e) => e.condition),
		...s.terminations.filter(Boolean),
	]);
	return { ended, wire, quiet: () => stanza.quiet(s.client, user), close: () => s.close() };
}

/** What the gateway's answer carries for each scenario, as read off the wire. */
const ON_THE_WIRE = {
	conflict: { websocket: /<conflict\b/, bosh: /condition=["']remote-stream-error["']/ },
	shutdown: { websocket: /system-shutdown/, bosh: /condition=["']system-shutdown["']/ },
	redirect: { websocket: /see-other-uri=/, bosh: /condition=["']see-other-uri["'][^]*<uri>/ },
};

/** Every library ended, and was told (on the wire, and through its API where it has one). */
function assertTold(told, sessions, scenario) {
	for (const s of sessions) {
		const answer = ON_THE_WIRE[scenario][s.bosh ? 'bosh' : 'websocket'];
		assert.match(s.wire.join(''), answer, `${s.name} never read the ${scenario} answer`);
		const expected = s.reports[scenario];
		const reported = told[s.name];
		if (expected) assert.ok(reported.includes(expected), `${s.name} reported ${JSON.stringify(reported)}, not ${expected}`);
	}
}

let stack;
before(async () => {
	const users = CLIENTS.map((c) => [c.user, PASSWORD]);
	stack = await startStack({ name: 'session-end', users });
});
after(async () => {
	await stack?.stop();
});

/** Logs every client in on `target` ({ wsUrl, boshUrl, domain }); logs out whatever is left at the end. */
async function openAll(t, target, resource) {
	const sessions = [];
	t.after(() => Promise.all(sessions.map((s) => s.close().catch(() => {}))));
	for (const c of CLIENTS) sessions.push({ ...c, ...(await c.open(target, c.user, resource)) });
	return sessions;
}

/** Waits until every session reports it is disconnected; returns { name: conditions }. */
async function allEnded(sessions) {
	const results = await Promise.all(
		sessions.map((s) => withTimeout(s.ended, ENDED_WITHIN_MS, `${s.name} reaching its disconnected state`)),
	);
	return Object.fromEntries(sessions.map((s, i) => [s.name, results[i]]));
}

// Prosody's own BOSH endpoint puts the <stream:error/> inside the terminate body, on which
// stanza never reports its session ended: the reason the gateway does not (docs/protocol.md §4).
const NOT_PROSODY = { skip: TARGET !== 'gateway' && "stanza cannot end on Prosody's remote-stream-error body" };

test('a stream error from the server reaches every library, which ends its session', NOT_PROSODY, async (t) => {
	const sessions = await openAll(t, stack, 'replaced');
	await Promise.all(sessions.map((s) => s.quiet()));
	// Prosody replaces each session when the same full JID logs in again (RFC 6120 §4.9.3.3).
	const replacements = [];
	t.after(() => Promise.all(replacements.map((r) => r.close().catch(() => {}))));
	for (const c of CLIENTS) replacements.push(await xmppjs.login(stack, c.user, PASSWORD, { resource: 'replaced' }));
	assertTold(await allEnded(sessions), sessions, 'conflict');
});

/**
 * A gateway of its own in front of the same Prosody, drained with SIGTERM while every library
 * is logged in through it; `config` is its TOML.
 */
async function drain(t, name, config) {
	const gateway = await startGateway({ prosody: stack.prosody, logDir: stack.logDir, name, config });
	t.after(() => gateway.stop());
	const sessions = await openAll(t, { wsUrl: gateway.wsUrl, boshUrl: gateway.boshUrl, domain: DOMAIN }, name);
	await Promise.all(sessions.map((s) => s.quiet()));
	gateway.kill('SIGTERM');
	const told = await allEnded(sessions);
	const exit = await withTimeout(gateway.exited, 10_000, 'the drained gateway exiting');
	assert.deepEqual(exit, { code: 0, signal: null }, 'the drain ended with every session');
	return { told, sessions };
}

const GATEWAY_ONLY = { skip: TARGET !== 'gateway' && 'drains the gateway' };

test('a drain with system-shutdown ends every library\'s session', GATEWAY_ONLY, async (t) => {
	const { told, sessions } = await drain(t, 'drain-shutdown');
	assertTold(told, sessions, 'shutdown');
});

test('a drain with see-other-uri redirects ends every library\'s session', GATEWAY_ONLY, async (t) => {
	// Redirects to a port where nothing listens: a library that follows one fails there and
	// must still end up disconnected.
	const elsewhere = await freePort();
	const { told, sessions } = await drain(
		t,
		'drain-redirect',
		`[drain]\nwebsocket_redirect = "ws://127.0.0.1:${elsewhere}/xmpp-websocket"\n` +
			`bosh_redirect = "http://127.0.0.1:${elsewhere}/http-bind"\n`,
	);
	assertTold(told, sessions, 'redirect');
});
