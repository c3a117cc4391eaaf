// What the server relays from other users reaches gateway users intact
// (docs/protocol.md §2): a user logged in straight to Prosody's c2s port sends
// stanzas with deep nesting and many attributes, which Prosody accepts and
// delivers; the gateway user gets each one whole and the session goes on,
// over WebSocket and over BOSH. The limits on depth and attributes are for
// what browsers send, never for what the server delivers.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, TARGET } from './harness.mjs';
import { loginDirect } from './lib/c2s-client.mjs';
import * as xmppjs from './lib/xmppjs.mjs';
import * as strophe from './lib/strophe.mjs';

const PASSWORD = 'relayed-password';
const DEPTH = 40;
const ATTRIBUTES = 100;

let stack;
let mallory;
before(async () => {
	stack = await startStack({
		name: 'relayed',
		users: ['alice', 'bob', 'mallory'].map((name) => [name, PASSWORD]),
	});
	mallory = await loginDirect({
		port: stack.prosody.c2sPort,
		ca: stack.prosody.ca,
		username: 'mallory',
		password: PASSWORD,
	});
});
after(async () => {
	await mallory?.close().catch(() => {});
	await stack?.stop();
});

function deepMessage(to, id) {
	let inner = 'the core';
	for (let i = DEPTH - 1; i >= 0; i--) inner = `<n${i} xmlns='urn:example:deep'>${inner}</n${i}>`;
	return `<message to='${to}' id='${id}' type='chat'>${inner}</message>`;
}

function wideMessage(to, id) {
	const attributes = Array.from({ length: ATTRIBUTES }, (_, i) => ` a${i}='v${i}'`).join('');
	return `<message to='${to}' id='${id}' type='chat'><wide xmlns='urn:example:wide'${attributes}/></message>`;
}

function plainMessage(to, id) {
	return `<message to='${to}' id='${id}' type='chat'><body>still here</body></message>`;
}

/** Sessions the gateway holds, or null when testing Prosody's own endpoint. */
async function gatewaySessions(transport) {
	return TARGET === 'gateway' ? stack.gateway.sessionsActive(transport) : null;
}

test('xmpp.js over WebSocket gets deep and wide stanzas from another user intact', async (t) => {
	const alice = await xmppjs.login(stack, 'alice', PASSWORD, { resource: 'relayed-ws' });
	t.after(() => alice.close().catch(() => {}));
	const before = await gatewaySessions('websocket');

	mallory.sendRaw(deepMessage(alice.jid, 'deep-ws'));
	mallory.sendRaw(wideMessage(alice.jid, 'wide-ws'));
	mallory.sendRaw(plainMessage(alice.jid, 'plain-ws'));

	const deep = await alice.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'deep-ws', {
		what: 'the deeply nested message',
	});
	let node = deep;
	for (let i = 0; i < DEPTH; i++) {
		node = node.getChild(`n${i}`, 'urn:example:deep');
		assert.ok(node, `level ${i + 1} of ${DEPTH} is there`);
	}
	assert.equal(node.text(), 'the core');

	const wide = await alice.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'wide-ws', {
		what: 'the message with many attributes',
	});
	const element = wide.getChild('wide', 'urn:example:wide');
	assert.ok(element, 'the payload element is there');
	for (let i = 0; i < ATTRIBUTES; i++) assert.equal(element.attrs[`a${i}`], `v${i}`);

	await alice.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'plain-ws', {
		what: 'the message after them',
	});
	// The session goes on: a round trip to the server still works.
	await alice.iq(xmppjs.xml('iq', { type: 'get', to: 'localhost', id: 'ping-ws' }, xmppjs.xml('ping', { xmlns: 'urn:xmpp:ping' })));
	assert.equal(await gatewaySessions('websocket'), before);
});

test('strophe.js over BOSH gets deep and wide stanzas from another user intact', async (t) => {
	const bob = await strophe.login(stack, 'bob', PASSWORD, { transport: 'bosh', resource: 'relayed-bosh' });
	t.after(() => bob.close().catch(() => {}));
	const before = await gatewaySessions('bosh');

	mallory.sendRaw(deepMessage(bob.jid, 'deep-bosh'));
	mallory.sendRaw(wideMessage(bob.jid, 'wide-bosh'));
	mallory.sendRaw(plainMessage(bob.jid, 'plain-bosh'));

	const byId = (id) => (el) => strophe.is(el, 'message') && el.getAttribute('id') === id;
	const deep = await bob.inbox.waitFor(byId('deep-bosh'), { what: 'the deeply nested message' });
	let node = deep;
	for (let i = 0; i < DEPTH; i++) {
		node = strophe.child(node, `n${i}`, 'urn:example:deep');
		assert.ok(node, `level ${i + 1} of ${DEPTH} is there`);
	}
	assert.equal(node.textContent, 'the core');

	const wide = await bob.inbox.waitFor(byId('wide-bosh'), { what: 'the message with many attributes' });
	const element = strophe.child(wide, 'wide', 'urn:example:wide');
	assert.ok(element, 'the payload element is there');
	for (let i = 0; i < ATTRIBUTES; i++) assert.equal(element.getAttribute(`a${i}`), `v${i}`);

	await bob.inbox.waitFor(byId('plain-bosh'), { what: 'the message after them' });
	await bob.iq(strophe.$iq({ type: 'get', to: 'localhost' }).c('ping', { xmlns: 'urn:xmpp:ping' }));
	assert.equal(await gatewaySessions('bosh'), before);
});
