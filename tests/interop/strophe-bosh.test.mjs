// strophe.js over BOSH (XEP-0124/0206, /http-bind) through the gateway, the
// transport converse.js uses with `bosh_service_url`. Messages cross
// transports: alice on BOSH, bob on WebSocket.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor, uniqueName, TRICKY_TEXT, MUC_DOMAIN, TARGET } from './harness.mjs';
import {
	login, connect, LoginError, Strophe, $iq, $msg, $pres, is, child, childText, serialize,
} from './lib/strophe.mjs';

const PASSWORD = 'demo-password';
const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
const BOSH = { transport: 'bosh' };

let stack;
before(async () => {
	stack = await startStack({
		name: 'strophe-bosh',
		users: ['alice', 'bob', 'watcher'].map((name) => [name, PASSWORD]),
	});
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

test('BOSH login binds a full JID', async (t) => {
	const alice = await session(t, 'alice', { ...BOSH, resource: 'bosh-login' });
	assert.equal(alice.jid, 'alice@localhost/bosh-login');
});

test('BOSH roster item set and fetched back', async (t) => {
	const alice = await session(t, 'alice', BOSH);
	await alice.iq(
		$iq({ type: 'set' }).c('query', { xmlns: Strophe.NS.ROSTER }).c('item', { jid: 'bob@localhost', name: 'Bob 🎉 <&>' }),
	);
	const result = await alice.iq($iq({ type: 'get' }).c('query', { xmlns: Strophe.NS.ROSTER }));
	const items = Array.from(child(result, 'query', Strophe.NS.ROSTER).getElementsByTagName('item'));
	const bob = items.find((item) => attr(item, 'jid') === 'bob@localhost');
	assert.ok(bob, `bob@localhost missing from roster: ${serialize(result)}`);
	assert.equal(attr(bob, 'name'), 'Bob 🎉 <&>');
});

test('messages between a BOSH and a WebSocket session arrive intact both ways', async (t) => {
	const alice = await session(t, 'alice', BOSH);
	const bob = await session(t, 'bob');

	alice.send($msg({ to: bob.jid, type: 'chat', id: 'b1' }).c('body').t(`to bob: ${TRICKY_TEXT}`));
	const atBob = await bob.inbox.waitFor((el) => is(el, 'message') && attr(el, 'id') === 'b1', {
		what: 'message b1 at bob (WebSocket)',
	});
	assert.equal(attr(atBob, 'from'), alice.jid);
	assert.equal(childText(atBob, 'body'), `to bob: ${TRICKY_TEXT}`);

	bob.send($msg({ to: alice.jid, type: 'chat', id: 'b2' }).c('body').t(`to alice: ${TRICKY_TEXT}`));
	const atAlice = await alice.inbox.waitFor((el) => is(el, 'message') && attr(el, 'id') === 'b2', {
		what: 'message b2 at alice (BOSH)',
	});
	assert.equal(attr(atAlice, 'from'), bob.jid);
	assert.equal(childText(atAlice, 'body'), `to alice: ${TRICKY_TEXT}`);
});

test('BOSH MUC join gives self-presence and a groupchat message', async (t) => {
	const alice = await session(t, 'alice', BOSH);
	const room = `${uniqueName('room')}@${MUC_DOMAIN}`;
	alice.send($pres({ to: `${room}/Alice` }).c('x', { xmlns: Strophe.NS.MUC }));
	await alice.inbox.waitFor(
		(el) => {
			if (!is(el, 'presence') || attr(el, 'from') !== `${room}/Alice`) return false;
			const x = child(el, 'x', NS_MUC_USER);
			return !!x && Array.from(x.getElementsByTagName('status')).some((s) => attr(s, 'code') === '110');
		},
		{ what: `self-presence from ${room}` },
	);
	alice.send($msg({ to: room, type: 'groupchat' }).c('body').t(TRICKY_TEXT));
	const msg = await alice.inbox.waitFor(
		(el) => is(el, 'message') && attr(el, 'type') === 'groupchat' && childText(el, 'body') !== undefined,
		{ what: 'the groupchat message reflected by the room' },
	);
	assert.equal(childText(msg, 'body'), TRICKY_TEXT);
});

test('BOSH wrong password fails cleanly with not-authorized', async () => {
	const { conn, connected } = connect(stack, 'alice', 'not-the-password', BOSH);
	const started = Date.now();
	await assert.rejects(
		Promise.race([
			connected,
			new Promise((_, reject) => setTimeout(() => reject(new Error('login hung for 5 s')), 5000)),
		]),
		(err) => {
			assert.ok(err instanceof LoginError, `unexpected error: ${err.stack}`);
			assert.equal(err.condition, 'not-authorized');
			return true;
		},
	);
	assert.ok(Date.now() - started < 5000);
	conn.disconnect('giving up');
});

test('BOSH terminate ends the upstream session', async (t) => {
	const watcher = await session(t, 'watcher');
	watcher.send($pres());
	const alice = await login(stack, 'alice', PASSWORD, { ...BOSH, resource: 'leaving' });
	alice.send($pres({ to: watcher.jid }));
	const presenceFrom = (type) => (el) =>
		is(el, 'presence') && attr(el, 'from') === alice.jid && (attr(el, 'type') || 'available') === type;
	await watcher.inbox.waitFor(presenceFrom('available'), { what: "alice's directed presence" });
	if (TARGET === 'gateway') {
		await waitFor(async () => (await stack.gateway.sessionsActive('bosh')) === 1, {
			what: 'sessions_active{transport="bosh"} == 1',
		});
	}

	const since = watcher.inbox.mark();
	await alice.close(); // Strophe sends a type='terminate' body
	await watcher.inbox.waitFor(presenceFrom('unavailable'), {
		what: 'unavailable presence for alice (Prosody saw her offline)',
		since,
	});
	if (TARGET === 'gateway') {
		await waitFor(async () => (await stack.gateway.sessionsActive('bosh')) === 0, {
			what: 'sessions_active{transport="bosh"} == 0',
		});
		await waitFor(() => stack.gateway.upstreamSockets() === 1, {
			what: "only the watcher's socket to Prosody left",
		});
	}
});
