// Channel binding cannot cross the gateway: the TLS session it would bind to
// is the gateway's, not the browser's. When Prosody offers SCRAM-SHA-1-PLUS
// (it does over TLS 1.2, with tls-unique), the gateway must hide it, or a
// client that prefers -PLUS would bind to a TLS session it cannot see and
// fail to log in.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack } from './harness.mjs';
import { upstreamMechanisms } from './lib/c2s-probe.mjs';
import * as xmppjs from './lib/xmppjs.mjs';
import * as strophe from './lib/strophe.mjs';

const PASSWORD = 'demo-password';

let stack;
before(async () => {
	stack = await startStack({
		name: 'channel-binding',
		users: [['alice', PASSWORD]],
		prosody: { tls12Only: true },
	});
});
after(async () => {
	await stack?.stop();
});

test('Prosody offers SCRAM-SHA-1-PLUS upstream over TLS 1.2 (precondition)', async () => {
	const mechanisms = await upstreamMechanisms({ port: stack.prosody.c2sPort, ca: stack.prosody.ca, maxVersion: 'TLSv1.2' });
	assert.ok(mechanisms.includes('SCRAM-SHA-1-PLUS'), `upstream mechanisms: ${mechanisms}`);
});

test('the client is shown no -PLUS mechanism', async (t) => {
	const alice = await xmppjs.login(stack, 'alice', PASSWORD);
	t.after(() => alice.close().catch(() => {}));
	const features = alice.inbox.items.find((el) => el.is('features', 'http://etherx.jabber.org/streams'));
	const mechanisms = features
		.getChild('mechanisms', 'urn:ietf:params:xml:ns:xmpp-sasl')
		.getChildren('mechanism')
		.map((m) => m.text());
	assert.ok(mechanisms.length > 0);
	assert.deepEqual(mechanisms.filter((m) => m.endsWith('-PLUS')), [], `shown: ${mechanisms}`);
});

test('strophe.js logs in when the upstream speaks TLS 1.2', async (t) => {
	const alice = await strophe.login(stack, 'alice', PASSWORD);
	t.after(() => alice.close().catch(() => {}));
	assert.match(alice.jid, /^alice@localhost\//);
});
