// strophe.js through the gateway: the same everyday scenarios as
// xmpp-client.test.mjs, with the other widely used browser library.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, uniqueName, TRICKY_TEXT, MUC_DOMAIN } from './harness.mjs';
import {
	login, connect, LoginError, Strophe, $build, $iq, $msg, $pres,
	is, child, childText, serialize,
} from './lib/strophe.mjs';

const PASSWORD = 'demo-password';
const USERS = ['alice', 'bob', 'carol', 'dave'].map((name) => [name, PASSWORD]);
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const NS_SM = 'urn:xmpp:sm:3';

let stack;
before(async () => {
	stack = await startStack({ name: 'strophe', users: USERS });
});
after(async () => {
	await stack?.stop();
});

async function session(t, username, options) {
	const s = await login(stack, username, PASSWORD, options);
	t.after(() => s.close().catch(() => {}));
	return s;
}

const attr = (el, name) => el.getAttribute(name);

test('login over the websocket binds a full JID', async (t) => {
	const alice = await session(t, 'alice', { resource: 'login-test' });
	assert.equal(alice.jid, 'alice@localhost/login-test');
});

test('roster item set and fetched back', async (t) => {
	const alice = await session(t, 'alice');
	await alice.iq(
		$iq({ type: 'set' }).c('query', { xmlns: Strophe.NS.ROSTER })
			.c('item', { jid: 'bob@localhost', name: 'Bob 🎉 <&>' }).c('group').t('Friends'),
	);
	const result = await alice.iq($iq({ type: 'get' }).c('query', { xmlns: Strophe.NS.ROSTER }));
	const items = Array.from(child(result, 'query', Strophe.NS.ROSTER).getElementsByTagName('item'));
	const bob = items.find((item) => attr(item, 'jid') === 'bob@localhost');
	assert.ok(bob, `bob@localhost missing from roster: ${serialize(result)}`);
	assert.equal(attr(bob, 'name'), 'Bob 🎉 <&>');
	assert.equal(childText(bob, 'group'), 'Friends');
});

test('messages alice->bob and bob->alice arrive intact', async (t) => {
	const alice = await session(t, 'alice');
	const bob = await session(t, 'bob');

	alice.send($msg({ to: bob.jid, type: 'chat', id: 's1' }).c('body').t(`to bob: ${TRICKY_TEXT}`));
	const atBob = await bob.inbox.waitFor((el) => is(el, 'message') && attr(el, 'id') === 's1', {
		what: 'message s1 at bob',
	});
	assert.equal(attr(atBob, 'from'), alice.jid);
	assert.equal(childText(atBob, 'body'), `to bob: ${TRICKY_TEXT}`);

	bob.send($msg({ to: alice.jid, type: 'chat', id: 's2' }).c('body').t(`to alice: ${TRICKY_TEXT}`));
	const atAlice = await alice.inbox.waitFor((el) => is(el, 'message') && attr(el, 'id') === 's2', {
		what: 'message s2 at alice',
	});
	assert.equal(attr(atAlice, 'from'), bob.jid);
	assert.equal(childText(atAlice, 'body'), `to alice: ${TRICKY_TEXT}`);
});

test('presence subscription both ways, then presence updates flow', async (t) => {
	const carol = await session(t, 'carol');
	const dave = await session(t, 'dave');
	const isPresence = (from, type) => (el) =>
		is(el, 'presence') && (attr(el, 'from') ?? '').startsWith(from) && (attr(el, 'type') || 'available') === type;

	// Roster first (RFC 6121 §2.1.6 "interested resource"), then available.
	for (const who of [carol, dave]) {
		await who.iq($iq({ type: 'get' }).c('query', { xmlns: Strophe.NS.ROSTER }));
		who.send($pres());
	}

	carol.send($pres({ to: 'dave@localhost', type: 'subscribe' }));
	await dave.inbox.waitFor(isPresence('carol@localhost', 'subscribe'), { what: 'subscribe at dave' });
	dave.send($pres({ to: 'carol@localhost', type: 'subscribed' }));
	await carol.inbox.waitFor(isPresence('dave@localhost', 'subscribed'), { what: 'subscribed at carol' });
	await carol.inbox.waitFor(isPresence(dave.jid, 'available'), { what: "dave's presence at carol" });

	dave.send($pres({ to: 'carol@localhost', type: 'subscribe' }));
	await carol.inbox.waitFor(isPresence('dave@localhost', 'subscribe'), { what: 'subscribe at carol' });
	carol.send($pres({ to: 'dave@localhost', type: 'subscribed' }));
	await dave.inbox.waitFor(isPresence(carol.jid, 'available'), { what: "carol's presence at dave" });

	const since = dave.inbox.mark();
	carol.send($pres().c('show').t('dnd').up().c('status').t(TRICKY_TEXT));
	const update = await dave.inbox.waitFor(
		(el) => isPresence(carol.jid, 'available')(el) && childText(el, 'show') === 'dnd',
		{ what: "carol's dnd presence at dave", since },
	);
	assert.equal(childText(update, 'status'), TRICKY_TEXT);
});

test('MUC join gives self-presence and a groupchat message', async (t) => {
	const alice = await session(t, 'alice');
	const bob = await session(t, 'bob');
	const room = `${uniqueName('room')}@${MUC_DOMAIN}`;
	const selfPresence = (nick) => (el) => {
		if (!is(el, 'presence') || attr(el, 'from') !== `${room}/${nick}`) return false;
		const x = child(el, 'x', NS_MUC_USER);
		return !!x && Array.from(x.getElementsByTagName('status')).some((s) => attr(s, 'code') === '110');
	};

	for (const [who, nick] of [[alice, 'Alice'], [bob, 'Bob']]) {
		who.send($pres({ to: `${room}/${nick}` }).c('x', { xmlns: Strophe.NS.MUC }));
		await who.inbox.waitFor(selfPresence(nick), { what: `${nick}'s self-presence from ${room}` });
	}

	alice.send($msg({ to: room, type: 'groupchat', id: 'sg1' }).c('body').t(TRICKY_TEXT));
	for (const who of [alice, bob]) {
		const msg = await who.inbox.waitFor(
			(el) => is(el, 'message') && attr(el, 'type') === 'groupchat' &&
				attr(el, 'from') === `${room}/Alice` && childText(el, 'body') !== undefined,
			{ what: 'groupchat message from Alice' },
		);
		assert.equal(childText(msg, 'body'), TRICKY_TEXT);
	}
});

test('stream management: enabled, and <r/> answered by <a/>', async (t) => {
	// Strophe 5 implements XEP-0198 natively; it sends <enable/> after binding.
	const alice = await session(t, 'alice', { streamManagement: true });
	const enabled = await alice.inbox.waitFor(
		(el) => is(el, 'enabled', NS_SM) || is(el, 'failed', NS_SM),
		{ what: 'answer to <enable/>' },
	);
	assert.equal(enabled.localName, 'enabled', `enable failed: ${serialize(enabled)}`);
	assert.ok(attr(enabled, 'id'), '<enabled/> carried no resumption id');
	assert.equal(alice.conn.sm.enabled, true);

	await alice.iq($iq({ type: 'get', to: 'localhost' }).c('ping', { xmlns: 'urn:xmpp:ping' }));
	await alice.iq($iq({ type: 'get', to: 'localhost' }).c('ping', { xmlns: 'urn:xmpp:ping' }));
	const since = alice.inbox.mark();
	alice.send($build('r', { xmlns: NS_SM }));
	const ack = await alice.inbox.waitFor((el) => is(el, 'a', NS_SM), { what: '<a/>', since });
	assert.match(attr(ack, 'h'), /^\d+$/);
	assert.ok(Number(attr(ack, 'h')) >= 2, `h=${attr(ack, 'h')} counts fewer than the 2 stanzas sent`);
});

test('wrong password fails cleanly with not-authorized', async () => {
	const { conn, connected } = connect(stack, 'alice', 'not-the-password');
	const started = Date.now();
	await assert.rejects(
		Promise.race([
			connected,
			new Promise((_, reject) => setTimeout(() => reject(new Error('login hung for 5 s')), 5000)),
		]),
		(err) => {
			assert.ok(err instanceof LoginError, `unexpected error: ${err.stack}`);
			assert.equal(err.status, Strophe.Status.AUTHFAIL);
			assert.equal(err.condition, 'not-authorized');
			return true;
		},
	);
	assert.ok(Date.now() - started < 5000);
	// A SASL failure leaves the stream open (RFC 6120 §6.4.5 allows a retry);
	// end it as a client giving up would.
	conn.disconnect('giving up');
});
