// stanza (npm `stanza`, the third widely used browser library) through the
// gateway, on its own WebSocket and BOSH transports and across them: the same
// everyday scenarios as the strophe.js and @xmpp/client files. stanza enables
// XEP-0198 whenever the server offers it, so every scenario runs with stream
// management on.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor, withTimeout, uniqueName, TRICKY_TEXT, MUC_DOMAIN, TARGET } from './harness.mjs';
import { login, connect, LoginError } from './lib/stanza.mjs';

const PASSWORD = 'demo-password';
const TRANSPORTS = ['websocket', 'bosh'];
/** [name, alice's transport, bob's transport] for the two-user scenarios. */
const PAIRS = [
	['WebSocket to WebSocket', 'websocket', 'websocket'],
	['BOSH to BOSH', 'bosh', 'bosh'],
	['BOSH to WebSocket', 'bosh', 'websocket'],
];
// Subscriptions persist in Prosody, so each pair has its own users.
const pairUsers = (i) => [`alice${i}`, `bob${i}`];
const USERS = ['solo', 'watcher', 'held-a', 'held-b', ...PAIRS.flatMap((_, i) => pairUsers(i))].map((name) => [name, PASSWORD]);

let stack;
before(async () => {
	stack = await startStack({ name: 'stanza', users: USERS });
});
after(async () => {
	await stack?.stop();
});

async function session(t, username, options) {
	const s = await login(stack, username, PASSWORD, options);
	t.after(() => s.close());
	return s;
}

/**
 * Logs in both users of a pair; at the end they log out one after the other. When they are
 * subscribed to each other, the second waits until the first's unavailable presence has
 * arrived, as a person sees a contact go offline before logging out: stanza acknowledges that
 * presence (XEP-0198), and a logout within milliseconds of it would lose that queued write and
 * never report 'disconnected' (see lib/stanza.mjs), through any server.
 */
async function pair(t, [aliceName, aliceTransport], [bobName, bobTransport], { subscribed = false } = {}) {
	const alice = await login(stack, aliceName, PASSWORD, { transport: aliceTransport });
	const bob = await login(stack, bobName, PASSWORD, { transport: bobTransport }).catch(async (err) => {
		await alice.close();
		throw err;
	});
	t.after(async () => {
		const since = bob.inbox.mark();
		await alice.close();
		// (Prosody's own BOSH endpoint keeps a terminated XEP-0198 session for resumption, so
		// there the contact never goes offline.)
		if (subscribed && (TARGET === 'gateway' || aliceTransport === 'websocket')) {
			await bob.inbox.waitFor(isPresence(alice.jid, 'unavailable'), { what: `${aliceName} offline at ${bobName}`, since });
		}
		await bob.close();
	});
	return [alice, bob];
}

const isMessage = (id) => (s) => s.kind === 'message' && s.id === id;
const isPresence = (from, type) => (s) =>
	s.kind === 'presence' && (s.from ?? '').startsWith(from) && (s.type ?? 'available') === type;

for (const transport of TRANSPORTS) {
	describe(`stanza over ${transport}`, () => {
		test('login binds a full JID with the requested resource', async (t) => {
			const solo = await session(t, 'solo', { transport, resource: `stanza-${transport}` });
			assert.equal(solo.jid, `solo@localhost/stanza-${transport}`);
			await waitFor(() => solo.client.sm.started, { what: 'XEP-0198 enabled through the gateway' });
		});

		test('roster item set and fetched back', async (t) => {
			const solo = await session(t, 'solo', { transport });
			const name = `Bob 🎉 <&> ${transport}`;
			await solo.client.updateRosterItem({ jid: 'bob0@localhost', name, groups: ['Friends'] });
			const roster = await solo.client.getRoster();
			const item = roster.items.find((i) => i.jid === 'bob0@localhost');
			assert.ok(item, `bob0@localhost missing from roster: ${JSON.stringify(roster)}`);
			assert.equal(item.name, name);
			assert.deepEqual(item.groups, ['Friends']);
		});

		test('MUC join gives self-presence and the groupchat message back', async (t) => {
			const solo = await session(t, 'solo', { transport });
			const room = `${uniqueName('room')}@${MUC_DOMAIN}`;
			const joined = await withTimeout(solo.client.joinRoom(room, 'Solo'), 10_000, `join of ${room}`);
			assert.equal(joined.from, `${room}/Solo`);
			assert.ok(joined.muc?.statusCodes?.includes('110'), `no self-presence status: ${JSON.stringify(joined)}`);
			solo.client.sendMessage({ to: room, type: 'groupchat', body: TRICKY_TEXT });
			const msg = await solo.inbox.waitFor(
				(s) => s.kind === 'message' && s.type === 'groupchat' && s.from === `${room}/Solo` && s.body !== undefined,
				{ what: 'the groupchat message reflected by the room' },
			);
			assert.equal(msg.body, TRICKY_TEXT);
		});

		test('logout ends the upstream session', async (t) => {
			const watcher = await session(t, 'watcher', { transport: 'websocket' });
			watcher.client.sendPresence();
			const solo = await login(stack, 'solo', PASSWORD, { transport, resource: 'leaving' });
			solo.client.sendPresence({ to: watcher.jid });
			await watcher.inbox.waitFor(isPresence(solo.jid, 'available'), { what: "solo's directed presence" });
			// A message in each direction first, as a chat before logging out would have.
			solo.client.sendMessage({ to: watcher.jid, type: 'chat', id: 'bye', body: 'bye' });
			await watcher.inbox.waitFor(isMessage('bye'), { what: 'the last message at the watcher' });
			watcher.client.sendMessage({ to: solo.jid, type: 'chat', id: 'bye-back', body: 'bye' });
			await solo.inbox.waitFor(isMessage('bye-back'), { what: 'the reply at solo' });

			const since = watcher.inbox.mark();
			await solo.close(); // stanza reports 'disconnected' within 5 s, or this fails
			if (TARGET === 'gateway') {
				// (Prosody's own BOSH endpoint keeps a terminated XEP-0198 session for resumption.)
				await watcher.inbox.waitFor(isPresence(solo.jid, 'unavailable'), {
					what: 'unavailable presence for solo (Prosody saw the session end)',
					since,
				});
				await waitFor(async () => (await stack.gateway.sessionsActive(transport)) === (transport === 'websocket' ? 1 : 0), {
					what: `the ${transport} session gone from sessions_active`,
				});
				await waitFor(() => stack.gateway.upstreamSockets() === 1, { what: "only the watcher's socket to Prosody left" });
			}
		});

		test('wrong password fails with not-authorized and leaves no session', async () => {
			const c = connect(stack, 'solo', 'not-the-password', { transport });
			await assert.rejects(withTimeout(c.started, 5_000, 'the failed login'), (err) => {
				assert.ok(err instanceof LoginError, `unexpected error: ${err.stack}`);
				assert.equal(err.condition, 'not-authorized');
				return true;
			});
			if (TARGET === 'gateway') {
				await waitFor(async () => (await stack.gateway.sessionsActive(transport)) === 0, {
					what: `no ${transport} session left`,
				});
			}
		});
	});
}

PAIRS.forEach(([name, aliceTransport, bobTransport], i) => {
	const [aliceName, bobName] = pairUsers(i);
	describe(`stanza ${name}`, () => {
		test('chat messages arrive intact both ways', async (t) => {
			const [alice, bob] = await pair(t, [aliceName, aliceTransport], [bobName, bobTransport]);

			alice.client.sendMessage({ to: bob.jid, type: 'chat', id: 'z1', body: `to bob: ${TRICKY_TEXT}` });
			const atBob = await bob.inbox.waitFor(isMessage('z1'), { what: `message z1 at bob (${bobTransport})` });
			assert.equal(atBob.from, alice.jid);
			assert.equal(atBob.body, `to bob: ${TRICKY_TEXT}`);

			bob.client.sendMessage({ to: alice.jid, type: 'chat', id: 'z2', body: `to alice: ${TRICKY_TEXT}` });
			const atAlice = await alice.inbox.waitFor(isMessage('z2'), { what: `message z2 at alice (${aliceTransport})` });
			assert.equal(atAlice.from, bob.jid);
			assert.equal(atAlice.body, `to alice: ${TRICKY_TEXT}`);
		});

		test('presence subscription both ways, then presence updates flow', async (t) => {
			const [alice, bob] = await pair(t, [aliceName, aliceTransport], [bobName, bobTransport], { subscribed: true });
			// Roster first (RFC 6121 §2.1.6 "interested resource"), then available.
			for (const who of [alice, bob]) {
				await who.client.getRoster();
				who.client.sendPresence();
			}
			const aliceBare = `${aliceName}@localhost`;
			const bobBare = `${bobName}@localhost`;

			alice.client.subscribe(bobBare);
			await bob.inbox.waitFor(isPresence(aliceBare, 'subscribe'), { what: 'subscribe at bob' });
			bob.client.acceptSubscription(aliceBare);
			await alice.inbox.waitFor(isPresence(bob.jid, 'available'), { what: "bob's presence at alice" });
			bob.client.subscribe(aliceBare);
			await alice.inbox.waitFor(isPresence(bobBare, 'subscribe'), { what: 'subscribe at alice' });
			alice.client.acceptSubscription(bobBare);
			await bob.inbox.waitFor(isPresence(alice.jid, 'available'), { what: "alice's presence at bob" });

			const since = bob.inbox.mark();
			const aliceSince = alice.inbox.mark();
			alice.client.sendPresence({ show: 'dnd', status: TRICKY_TEXT });
			const update = await bob.inbox.waitFor(
				(s) => isPresence(alice.jid, 'available')(s) && s.show === 'dnd',
				{ what: "alice's dnd presence at bob", since },
			);
			assert.equal(update.status, TRICKY_TEXT);
			// The server reflects the presence to alice too, followed by its XEP-0198 <r/>: the
			// <a/> stanza owes for it must be written before the logout (see `pair`), so the
			// test ends once alice has that presence, not while it is on its way.
			await alice.inbox.waitFor(
				(s) => isPresence(alice.jid, 'available')(s) && s.show === 'dnd',
				{ what: "alice's own dnd presence back at alice", since: aliceSince },
			);
		});
	});
});

test('over BOSH, what stanza sends while a request is held goes out at once', async (t) => {
	// stanza keeps two request channels. Granted hold='2' (it asks for 2), both sit held and
	// its XEP-0198 <r/> after a message waits for `wait` to expire (docs/protocol.md §4, "Why
	// hold is 1"): the server's answer to that <r/> is what acknowledges the message.
	const [alice, bob] = await pair(t, ['held-a', 'bosh'], ['held-b', 'bosh']);
	// Let both clients settle into their long poll.
	await waitFor(() => alice.client.transport.channels.some((c) => c.active), { what: "alice's held request" });
	const acked = new Promise((resolve) =>
		alice.client.on('stanza:acked', (a) => a.kind === 'message' && a.stanza.id === 'held-1' && resolve()));
	alice.client.sendMessage({ to: bob.jid, type: 'chat', id: 'held-1', body: 'while held' });
	await bob.inbox.waitFor(isMessage('held-1'), { what: 'the message at bob', timeout: 5_000 });
	await withTimeout(acked, 5_000, "the server's acknowledgement of alice's message");
});
