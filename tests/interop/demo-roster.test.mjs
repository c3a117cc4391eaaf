// The demo's accounts (scripts/lib/demo-stack.sh sets up Prosody with
// --mutual-roster alice,bob): each user logs in, through the gateway, to a
// roster that already holds the other with a mutual subscription, so the demo
// opens straight on a chat.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startStack, REPO } from './harness.mjs';
import { login, xml } from './lib/xmppjs.mjs';

const PASSWORD = 'demo-password';

let stack;
before(async () => {
	stack = await startStack({
		name: 'demo-roster',
		users: [['alice', PASSWORD], ['bob', PASSWORD]],
		prosody: { mutualRoster: ['alice,bob'] },
	});
});
after(async () => {
	await stack?.stop();
});

test('the demo sets up its Prosody with alice and bob in each other\'s roster', () => {
	const stackScript = fs.readFileSync(path.join(REPO, 'scripts', 'lib', 'demo-stack.sh'), 'utf8');
	assert.match(stackScript, /--mutual-roster alice,bob/);
});

async function rosterOf(session) {
	const result = await session.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
	return result.getChild('query', 'jabber:iq:roster').getChildren('item');
}

for (const [user, contact, name] of [['alice', 'bob', 'Bob'], ['bob', 'alice', 'Alice']]) {
	test(`${user} finds ${contact} in the roster with subscription both`, async (t) => {
		const s = await login(stack, user, PASSWORD);
		t.after(() => s.close().catch(() => {}));
		const items = await rosterOf(s);
		assert.deepEqual(
			items.map((i) => [i.attrs.jid, i.attrs.subscription, i.attrs.name]),
			[[`${contact}@localhost`, 'both', name]],
		);
	});
}

test("bob's presence reaches alice without any subscription exchange", async (t) => {
	const alice = await login(stack, 'alice', PASSWORD);
	t.after(() => alice.close().catch(() => {}));
	await alice.send(xml('presence'));
	const bob = await login(stack, 'bob', PASSWORD);
	t.after(() => bob.close().catch(() => {}));
	await bob.send(xml('presence'));
	const seen = await alice.inbox.waitFor(
		(el) => el.is('presence') && String(el.attrs.from).startsWith('bob@localhost/') && el.attrs.type === undefined,
		{ what: 'available presence from bob' },
	);
	assert.ok(seen);
});
