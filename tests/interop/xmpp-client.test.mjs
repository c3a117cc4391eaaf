// @xmpp/client (xmpp.js) through the gateway: the everyday things a browser
// chat client does, each scenario its own test.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, uniqueName, TRICKY_TEXT, MUC_DOMAIN } from './harness.mjs';
import { login, createClient, xml, bodyOf } from './lib/xmppjs.mjs';

const PASSWORD = 'demo-password';
const USERS = ['alice', 'bob', 'carol', 'dave'].map((name) => [name, PASSWORD]);

let stack;
before(async () => {
	stack = await startStack({ name: 'xmpp-client', users: USERS });
});
after(async () => {
	await stack?.stop();
});

/** Logs in and closes the session when the test ends, whatever happens. */
async function session(t, username, options) {
	const s = await login(stack, username, PASSWORD, options);
	t.after(() => s.close().catch(() => {}));
	return s;
}

test('login over the websocket binds a full JID', async (t) => {
	const alice = await session(t, 'alice', { resource: 'login-test' });
	assert.equal(alice.jid, 'alice@localhost/login-test');
});

test('stream features: no <starttls/>, no channel binding, SASL then bind and SM', async (t) => {
	const alice = await session(t, 'alice');
	const features = alice.inbox.items.filter((el) => el.is('features', 'http://etherx.jabber.org/streams'));
	assert.equal(features.length, 2, 'one <stream:features/> before and one after authentication');
	const [beforeAuth, afterAuth] = features;
	// The gateway did STARTTLS upstream itself; the browser never sees it.
	assert.equal(beforeAuth.getChild('starttls', 'urn:ietf:params:xml:ns:xmpp-tls'), undefined);
	const mechanisms = beforeAuth
		.getChild('mechanisms', 'urn:ietf:params:xml:ns:xmpp-sasl')
		.getChildren('mechanism')
		.map((m) => m.text());
	assert.ok(mechanisms.includes('SCRAM-SHA-1'), `mechanisms: ${mechanisms}`);
	// Channel binding cannot cross a proxy: no *-PLUS mechanism may be offered.
	assert.deepEqual(mechanisms.filter((m) => m.endsWith('-PLUS')), []);
	assert.ok(afterAuth.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind'), 'bind offered after auth');
	assert.ok(afterAuth.getChild('sm', 'urn:xmpp:sm:3'), 'XEP-0198 offered after auth');
});

test('roster item set and fetched back', async (t) => {
	const alice = await session(t, 'alice');
	await alice.iq(
		xml('iq', { type: 'set' },
			xml('query', { xmlns: 'jabber:iq:roster' },
				xml('item', { jid: 'bob@localhost', name: 'Bob 🎉 <&>' }, xml('group', {}, 'Friends')))),
	);
	const result = await alice.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
	const items = result.getChild('query', 'jabber:iq:roster').getChildren('item');
	const bob = items.find((item) => item.attrs.jid === 'bob@localhost');
	assert.ok(bob, `bob@localhost missing from roster: ${result.toString()}`);
	assert.equal(bob.attrs.name, 'Bob 🎉 <&>');
	assert.equal(bob.getChildText('group'), 'Friends');
});

test('messages alice->bob and bob->alice arrive intact', async (t) => {
	const alice = await session(t, 'alice');
	const bob = await session(t, 'bob');

	await alice.send(xml('message', { to: bob.jid, type: 'chat', id: 'm1' }, xml('body', {}, `to bob: ${TRICKY_TEXT}`)));
	const atBob = await bob.inbox.waitFor(
		(el) => el.is('message') && el.attrs.id === 'm1',
		{ what: 'message m1 at bob' },
	);
	assert.equal(atBob.attrs.from, alice.jid);
	assert.equal(bodyOf(atBob), `to bob: ${TRICKY_TEXT}`);

	await bob.send(xml('message', { to: alice.jid, type: 'chat', id: 'm2' }, xml('body', {}, `to alice: ${TRICKY_TEXT}`)));
	const atAlice = await alice.inbox.waitFor(
		(el) => el.is('message') && el.attrs.id === 'm2',
		{ what: 'message m2 at alice' },
	);
	assert.equal(atAlice.attrs.from, bob.jid);
	assert.equal(bodyOf(atAlice), `to alice: ${TRICKY_TEXT}`);
});

test('presence subscription both ways, then presence updates flow', async (t) => {
	const carol = await session(t, 'carol');
	const dave = await session(t, 'dave');
	const isPresence = (from, type) => (el) =>
		el.is('presence') && el.attrs.from?.startsWith(from) && (el.attrs.type ?? 'available') === type;

	// As a real client does: fetch the roster (that makes the resource
	// "interested" in subscription state, RFC 6121 §2.1.6) and go available.
	for (const who of [carol, dave]) {
		await who.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
		await who.send(xml('presence'));
	}

	// carol asks dave, dave approves: carol then gets dave's current presence.
	await carol.send(xml('presence', { to: 'dave@localhost', type: 'subscribe' }));
	await dave.inbox.waitFor(isPresence('carol@localhost', 'subscribe'), { what: 'subscribe at dave' });
	await dave.send(xml('presence', { to: 'carol@localhost', type: 'subscribed' }));
	await carol.inbox.waitFor(isPresence('dave@localhost', 'subscribed'), { what: 'subscribed at carol' });
	await carol.inbox.waitFor(isPresence(dave.jid, 'available'), { what: "dave's presence at carol" });

	// And the other way round.
	await dave.send(xml('presence', { to: 'carol@localhost', type: 'subscribe' }));
	await carol.inbox.waitFor(isPresence('dave@localhost', 'subscribe'), { what: 'subscribe at carol' });
	await carol.send(xml('presence', { to: 'dave@localhost', type: 'subscribed' }));
	await dave.inbox.waitFor(isPresence(carol.jid, 'available'), { what: "carol's presence at dave" });

	// A broadcast presence now reaches the contact, status text intact.
	const since = dave.inbox.mark();
	await carol.send(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, TRICKY_TEXT)));
	const update = await dave.inbox.waitFor(
		(el) => isPresence(carol.jid, 'available')(el) && el.getChildText('show') === 'dnd',
		{ what: "carol's dnd presence at dave", since },
	);
	assert.equal(update.getChildText('status'), TRICKY_TEXT);
});

test('MUC join gives self-presence and a groupchat message', async (t) => {
	const alice = await session(t, 'alice');
	const bob = await session(t, 'bob');
	const room = `${uniqueName('room')}@${MUC_DOMAIN}`;
	const selfPresence = (nick) => (el) =>
		el.is('presence') &&
		el.attrs.from === `${room}/${nick}` &&
		el.getChild('x', 'http://jabber.org/protocol/muc#user')
			?.getChildren('status').some((s) => s.attrs.code === '110');

	for (const [who, nick] of [[alice, 'Alice'], [bob, 'Bob']]) {
		await who.send(xml('presence', { to: `${room}/${nick}` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
		await who.inbox.waitFor(selfPresence(nick), { what: `${nick}'s self-presence from ${room}` });
	}

	await alice.send(xml('message', { to: room, type: 'groupchat', id: 'g1' }, xml('body', {}, TRICKY_TEXT)));
	for (const who of [alice, bob]) {
		const msg = await who.inbox.waitFor(
			(el) => el.is('message') && el.attrs.type === 'groupchat' && el.attrs.from === `${room}/Alice` && bodyOf(el) !== undefined,
			{ what: 'groupchat message from Alice' },
		);
		assert.equal(bodyOf(msg), TRICKY_TEXT);
	}
});

test('stream management: enabled, and <r/> answered by <a/>', async (t) => {
	const alice = await session(t, 'alice');
	// xmpp.js sends <enable resume='true'/> itself, right after resource
	// binding, when the stream features offer urn:xmpp:sm:3.
	const enabled = await alice.inbox.waitFor(
		(el) => el.is('enabled', 'urn:xmpp:sm:3') || el.is('failed', 'urn:xmpp:sm:3'),
		{ what: 'answer to <enable/>' },
	);
	assert.equal(enabled.name, 'enabled', `enable failed: ${enabled.toString()}`);
	assert.equal(enabled.attrs.resume, 'true');
	assert.ok(enabled.attrs.id, '<enabled/> carried no resumption id');

	// Two stanzas after <enable/>, then ask the server how many it handled.
	await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
	await alice.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('ping', { xmlns: 'urn:xmpp:ping' })));
	const since = alice.inbox.mark();
	await alice.send(xml('r', { xmlns: 'urn:xmpp:sm:3' }));
	const ack = await alice.inbox.waitFor((el) => el.is('a', 'urn:xmpp:sm:3'), { what: '<a/>', since });
	assert.match(ack.attrs.h, /^\d+$/);
	assert.ok(Number(ack.attrs.h) >= 2, `h=${ack.attrs.h} counts fewer than the 2 stanzas sent`);
});

test('wrong password fails cleanly with not-authorized', async () => {
	const { xmpp } = createClient(stack, 'alice', 'not-the-password');
	const started = Date.now();
	await assert.rejects(
		Promise.race([
			xmpp.start(),
			new Promise((_, reject) => setTimeout(() => reject(new Error('login hung for 5 s')), 5000)),
		]),
		(err) => {
			assert.equal(err.name, 'SASLError', `unexpected error: ${err.stack}`);
			assert.equal(err.condition, 'not-authorized');
			return true;
		},
	);
	assert.ok(Date.now() - started < 5000);
	await xmpp.stop().catch(() => {});
});
