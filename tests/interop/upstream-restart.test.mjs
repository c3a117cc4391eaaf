// The server dies under its sessions and comes back (docs/protocol.md §3, §4, §7): Prosody is
// killed (SIGKILL) while an xmpp.js WebSocket session and a strophe.js BOSH session are logged
// in. Within a few seconds both clients are told `remote-connection-failed` (a stream error
// then <close/>; a BOSH terminate body) and reach their disconnected state; the gateway holds no
// session and no socket to the dead server; a login while it is down fails the same way, at
// once; once Prosody is restarted both clients log in again and exchange messages.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor, withTimeout, TARGET } from './harness.mjs';
import * as xmppjs from './lib/xmppjs.mjs';
import * as strophe from './lib/strophe.mjs';

const PASSWORD = 'demo-password';
const NS_STREAM = 'http://etherx.jabber.org/streams';
const NS_STREAMS_ERR = 'urn:ietf:params:xml:ns:xmpp-streams';
/** How soon the clients must hear that their server died. */
const TOLD_WITHIN_MS = 5_000;

let stack;
before(async () => {
	stack = await startStack({ name: 'upstream-restart', users: [['alice', PASSWORD], ['bob', PASSWORD]] });
});
after(async () => {
	await stack?.stop();
});

/** Strophe's next status among `statuses`, with its condition. */
function stropheStatus(client, statuses) {
	return new Promise((resolve) => {
		client.events.on('status', (status, condition) => {
			if (statuses.includes(status)) resolve({ status, condition });
		});
	});
}

async function exchange(alice, bob, text) {
	const since = bob.inbox.mark();
	await alice.send(xmppjs.xml('message', { to: bob.jid, type: 'chat' }, xmppjs.xml('body', {}, text)));
	await bob.inbox.waitFor((el) => strophe.is(el, 'message') && strophe.childText(el, 'body') === text, {
		what: `bob's message "${text}"`,
		since,
	});
	const back = `${text} (back)`;
	const sinceBack = alice.inbox.mark();
	bob.send(strophe.$msg({ to: alice.jid, type: 'chat' }).c('body').t(back));
	await alice.inbox.waitFor((el) => el.is('message') && xmppjs.bodyOf(el) === back, {
		what: `alice's message "${back}"`,
		since: sinceBack,
	});
}

test('Prosody killed mid-session: clients told remote-connection-failed, log in again after restart', {
	skip: TARGET !== 'gateway' && 'the subject is the gateway between client and a dying server',
}, async () => {
	const { Status } = strophe.Strophe;
	const alice = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'ws', mechanism: 'PLAIN' });
	const bob = await strophe.login(stack, 'bob', PASSWORD, { resource: 'bosh', transport: 'bosh', mechanism: 'PLAIN' });
	await exchange(alice, bob, 'before the crash');
	assert.equal(await stack.gateway.sessionsActive('websocket'), 1);
	assert.equal(await stack.gateway.sessionsActive('bosh'), 1);

	const aliceOffline = new Promise((resolve) => alice.xmpp.once('disconnect', resolve));
	const bobFailed = stropheStatus(bob, [Status.CONNFAIL, Status.DISCONNECTED]);
	const bobDisconnected = stropheStatus(bob, [Status.DISCONNECTED]);
	const killed = Date.now();
	await stack.prosody.kill('SIGKILL');

	const streamError = await alice.inbox.waitFor((el) => el.is('error', NS_STREAM), {
		what: 'a stream error for the xmpp.js session',
		timeout: TOLD_WITHIN_MS,
	});
	assert.ok(streamError.getChild('remote-connection-failed', NS_STREAMS_ERR), streamError.toString());
	await withTimeout(aliceOffline, TOLD_WITHIN_MS, 'xmpp.js reaching disconnect');
	const failed = await withTimeout(bobFailed, TOLD_WITHIN_MS, 'strophe.js told the BOSH session failed');
	assert.equal(failed.status, Status.CONNFAIL, `strophe status ${failed.status}`);
	assert.equal(failed.condition, 'remote-connection-failed');
	await withTimeout(bobDisconnected, TOLD_WITHIN_MS, 'strophe.js reaching DISCONNECTED');
	const told = Date.now() - killed;
	console.log(`clients told within ${told} ms of the kill`);
	assert.ok(told < TOLD_WITHIN_MS, `told after ${told} ms`);

	for (const transport of ['websocket', 'bosh']) {
		await waitFor(async () => (await stack.gateway.sessionsActive(transport)) === 0, {
			what: `sessions_active{transport="${transport}"} == 0 after the crash`,
			timeout: 15_000,
		});
	}
	assert.equal(stack.gateway.upstreamSockets(), 0, 'no socket left to the dead server');

	// While the server is down a login fails at once, the same way.
	const attempt = strophe.connect(stack, 'bob', PASSWORD, { transport: 'bosh', mechanism: 'PLAIN' });
	const refused = await withTimeout(
		attempt.connected.then(() => null, (err) => err),
		TOLD_WITHIN_MS,
		'a login while the server is down failing',
	);
	assert.ok(refused instanceof strophe.LoginError, String(refused));
	assert.equal(refused.condition, 'remote-connection-failed');

	await stack.prosody.restart();
	// docs/protocol.md §1: the endpoint was taken out when it refused connections; the
	// gateway's probe brings it back within route.backoff_max_ms (10 s), and /readyz says so.
	const probed = Date.now();
	await waitFor(async () => (await fetch(`${stack.gateway.adminUrl}/readyz`)).status === 200, {
		what: '/readyz 200 once the probe finds Prosody again',
		timeout: 15_000,
	});
	console.log(`endpoint back in use ${Date.now() - probed} ms after Prosody answered`);
	const alice2 = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'ws2', mechanism: 'PLAIN' });
	const bob2 = await strophe.login(stack, 'bob', PASSWORD, { resource: 'bosh2', transport: 'bosh', mechanism: 'PLAIN' });
	await exchange(alice2, bob2, 'after the restart');
	await alice2.close();
	await bob2.close();
	for (const transport of ['websocket', 'bosh']) {
		await waitFor(async () => (await stack.gateway.sessionsActive(transport)) === 0, {
			what: `sessions_active{transport="${transport}"} == 0 at the end`,
			timeout: 15_000,
		});
	}
	await waitFor(() => stack.gateway.upstreamSockets() === 0, { what: 'no socket to Prosody at the end' });
});
