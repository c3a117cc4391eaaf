// The end of a browser session must end its upstream XMPP session: after a
// client's <close/> (or a vanished browser) Prosody sees the user go offline,
// the gateway's session gauge drops and no socket to Prosody is left open.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor, withTimeout, TARGET } from './harness.mjs';
import * as xmppjs from './lib/xmppjs.mjs';
import * as strophe from './lib/strophe.mjs';

const PASSWORD = 'demo-password';
const { xml } = xmppjs;

let stack;
before(async () => {
	stack = await startStack({
		name: 'session-close',
		users: ['watcher', 'alice', 'bob'].map((name) => [name, PASSWORD]),
	});
});
after(async () => {
	await stack?.stop();
});

/**
 * A session that stays online and learns from Prosody when others go
 * offline: whoever sends it directed presence gets an unavailable presence
 * sent on their behalf when their session ends (RFC 6121 §4.6.3).
 */
async function startWatcher(t) {
	const watcher = await xmppjs.login(stack, 'watcher', PASSWORD, { resource: 'watch' });
	t.after(() => watcher.close().catch(() => {}));
	await watcher.send(xml('presence'));
	return watcher;
}

function presenceFrom(jid, type) {
	return (el) => el.is('presence') && el.attrs.from === jid && (el.attrs.type ?? 'available') === type;
}

/** Gateway-side checks; against Prosody directly there is no gateway to ask. */
async function expectGatewaySessions(n, what) {
	if (TARGET !== 'gateway') return;
	await waitFor(async () => (await stack.gateway.sessionsActive('websocket')) === n, {
		what: `sessions_active{transport="websocket"} == ${n} (${what})`,
	});
}

async function expectNoUpstreamSockets() {
	if (TARGET !== 'gateway') return;
	await waitFor(() => stack.gateway.upstreamSockets() === 1, {
		what: 'only the watcher\'s socket to Prosody left',
	});
}

test('xmpp.js <close/> ends the upstream session', async (t) => {
	const watcher = await startWatcher(t);
	await expectGatewaySessions(1, 'watcher only');

	const alice = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'closing' });
	await alice.send(xml('presence', { to: watcher.jid }));
	await watcher.inbox.waitFor(presenceFrom(alice.jid, 'available'), { what: "alice's directed presence" });
	await expectGatewaySessions(2, 'watcher and alice');

	const since = watcher.inbox.mark();
	await alice.close();
	await watcher.inbox.waitFor(presenceFrom(alice.jid, 'unavailable'), {
		what: 'unavailable presence for alice (Prosody saw her offline)',
		since,
	});
	await expectGatewaySessions(1, 'alice gone');
	await expectNoUpstreamSockets();
});

test('strophe.js <close/> ends the upstream session', async (t) => {
	const watcher = await startWatcher(t);
	const bob = await strophe.login(stack, 'bob', PASSWORD, { resource: 'closing' });
	bob.send(strophe.$pres({ to: watcher.jid }));
	await watcher.inbox.waitFor(presenceFrom(bob.jid, 'available'), { what: "bob's directed presence" });
	await expectGatewaySessions(2, 'watcher and bob');

	const since = watcher.inbox.mark();
	await bob.close();
	await watcher.inbox.waitFor(presenceFrom(bob.jid, 'unavailable'), {
		what: 'unavailable presence for bob (Prosody saw him offline)',
		since,
	});
	await expectGatewaySessions(1, 'bob gone');
	await expectNoUpstreamSockets();
});

test('a vanished browser (TCP reset, no <close/>) ends the upstream session', async (t) => {
	// Without stream management: with XEP-0198 resumption enabled the server
	// rightly keeps the session for a later <resume/> (see sm-resume.test.mjs).
	const watcher = await startWatcher(t);
	const bob = await strophe.login(stack, 'bob', PASSWORD, { resource: 'vanishing' });
	bob.send(strophe.$pres({ to: watcher.jid }));
	await watcher.inbox.waitFor(presenceFrom(bob.jid, 'available'), { what: "bob's directed presence" });
	await expectGatewaySessions(2, 'watcher and bob');

	const since = watcher.inbox.mark();
	// Strophe's `ws` socket: terminate() drops the TCP connection without a
	// WebSocket close frame, as a crashed tab or a lost network does.
	bob.conn._proto.socket.terminate();
	await watcher.inbox.waitFor(presenceFrom(bob.jid, 'unavailable'), {
		what: 'unavailable presence for bob after his connection dropped',
		since,
		timeout: 15_000,
	});
	await expectGatewaySessions(1, 'bob gone');
	await expectNoUpstreamSockets();
});

test('a failed login leaves no session behind', async () => {
	const { xmpp } = xmppjs.createClient(stack, 'alice', 'wrong-password');
	await assert.rejects(xmpp.start(), { condition: 'not-authorized' });
	await xmpp.stop().catch(() => {});
	await expectGatewaySessions(0, 'after the failed login');
	if (TARGET === 'gateway') {
		await waitFor(() => stack.gateway.upstreamSockets() === 0, { what: 'no socket to Prosody' });
	}
});

test('an upstream stream error (resource conflict) reaches the client and ends its session', async (t) => {
	const first = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'same' });
	t.after(() => first.close().catch(() => {}));
	const errors = [];
	first.xmpp.on('error', (err) => errors.push(err));
	const disconnected = new Promise((resolve) => first.xmpp.once('disconnect', resolve));

	// Prosody's default conflict rule replaces the old session with a
	// <conflict/> stream error (RFC 6120 §4.9.3.3).
	const second = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'same' });
	t.after(() => second.close().catch(() => {}));

	const streamError = await first.inbox.waitFor(
		(el) => el.is('error', 'http://etherx.jabber.org/streams'),
		{ what: '<stream:error/> at the replaced session' },
	);
	assert.ok(
		streamError.getChild('conflict', 'urn:ietf:params:xml:ns:xmpp-streams'),
		`not a conflict: ${streamError.toString()}`,
	);
	assert.equal(errors[0]?.condition, 'conflict', 'xmpp.js reported the stream error');
	await withTimeout(disconnected, 10_000, 'the replaced WebSocket closing');
	await expectGatewaySessions(1, 'only the new session');
});

test('an oversized stanza ends the session with a policy-violation stream error', async (t) => {
	const alice = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'oversized' });
	t.after(() => alice.close().catch(() => {}));
	const disconnected = new Promise((resolve) => alice.xmpp.once('disconnect', resolve));
	// 300 KB: over the gateway's default element limit and Prosody's 256 KiB
	// c2s_stanza_size_limit, so whichever looks first must refuse it.
	await alice.send(xml('message', { to: 'bob@localhost' }, xml('body', {}, 'y'.repeat(300_000))));
	const streamError = await alice.inbox.waitFor(
		(el) => el.is('error', 'http://etherx.jabber.org/streams'),
		{ what: '<stream:error/> for the oversized stanza' },
	);
	assert.ok(
		streamError.getChild('policy-violation', 'urn:ietf:params:xml:ns:xmpp-streams'),
		`unexpected stream error: ${streamError.toString()}`,
	);
	await withTimeout(disconnected, 10_000, 'the WebSocket closing after the stream error');
	await expectGatewaySessions(0, 'after the stream error');
	if (TARGET === 'gateway') {
		await waitFor(() => stack.gateway.upstreamSockets() === 0, { what: 'no socket to Prosody' });
	}
});
