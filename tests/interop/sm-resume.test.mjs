// XEP-0198 resumption through the gateway: a browser tab that loses its
// connection (reload, network change) comes back on a new WebSocket with
// <resume/> and gets the stanzas that arrived while it was away.
//
// This needs the gateway to let the upstream stream *break* when the browser
// vanishes: a clean </stream:stream> tells the server the client is done, and
// the server then discards the resumable session (XEP-0198 §5).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, withTimeout, TRICKY_TEXT } from './harness.mjs';
import { login, xml, bodyOf } from './lib/xmppjs.mjs';

const PASSWORD = 'demo-password';
const NS_SM = 'urn:xmpp:sm:3';

let stack;
before(async () => {
	stack = await startStack({ name: 'sm-resume', users: [['alice', PASSWORD], ['bob', PASSWORD]] });
});
after(async () => {
	await stack?.stop();
});

test('a dropped WebSocket is resumed with <resume/> and missed messages arrive', async (t) => {
	const alice = await login(stack, 'alice', PASSWORD, { resource: 'phone' });
	t.after(() => alice.close().catch(() => {}));
	const bob = await login(stack, 'bob', PASSWORD);
	t.after(() => bob.close().catch(() => {}));

	const enabled = await alice.inbox.waitFor((el) => el.is('enabled', NS_SM) || el.is('failed', NS_SM), {
		what: 'answer to <enable resume="true"/>',
	});
	assert.equal(enabled.name, 'enabled');
	assert.equal(enabled.attrs.resume, 'true', 'server did not offer resumption');
	const sm = alice.xmpp.streamManagement;

	// Drop the connection without a WebSocket close frame or <close/>.
	const disconnected = new Promise((resolve) => alice.xmpp.once('disconnect', resolve));
	alice.xmpp.socket.socket.terminate();
	await withTimeout(disconnected, 5000, 'client noticing its dropped socket');

	// Sent while alice is away: the server must hold it for the resumed session.
	await bob.send(xml('message', { to: alice.jid, type: 'chat', id: 'away1' }, xml('body', {}, TRICKY_TEXT)));

	const since = alice.inbox.mark();
	const resumed = new Promise((resolve) => sm.once('resumed', resolve));
	// xmpp.js reconnects and, holding an SM id, sends <resume previd=.. h=../>.
	await withTimeout(alice.xmpp.reconnect.reconnect(), 10_000, 'reconnect');
	const answer = await alice.inbox.waitFor((el) => el.is('resumed', NS_SM) || el.is('failed', NS_SM), {
		what: 'answer to <resume/>',
		since,
	});
	assert.equal(answer.name, 'resumed', `resumption refused: ${answer.toString()}`);
	assert.equal(answer.attrs.previd, enabled.attrs.id);
	await withTimeout(resumed, 5000, 'xmpp.js resumed event');

	const missed = await alice.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'away1', {
		what: 'the message sent while alice was away',
		since,
	});
	assert.equal(bodyOf(missed), TRICKY_TEXT);
	assert.equal(alice.xmpp.jid.toString(), 'alice@localhost/phone', 'resumed session keeps its full JID');
});
