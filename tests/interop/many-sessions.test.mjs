// 1,000 sessions logged in and closed, in small concurrent batches, must
// leave nothing behind: the session gauge back at 0 and no TCP connection
// from the gateway to Prosody. A leak of one socket or task per session
// shows up here long before it shows up in production.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, waitFor, withTimeout, TARGET } from './harness.mjs';
import { createClient } from './lib/xmppjs.mjs';

const SESSIONS = Number(process.env.INTEROP_SESSIONS || 1000);
const BATCH = 20;
const ACCOUNTS = 10; // sessions share accounts; each gets its own resource
const PASSWORD = 'demo-password';

let stack;
before(async () => {
	const users = Array.from({ length: ACCOUNTS }, (_, i) => [`user${i}`, PASSWORD]);
	stack = await startStack({ name: 'many-sessions', users });
});
after(async () => {
	await stack?.stop();
});

/** One full session: open, authenticate, bind, then <close/>. */
async function loginAndClose(i) {
	const username = `user${i % ACCOUNTS}`;
	// PLAIN (the stream is TLS-protected upstream and the client talks to
	// 127.0.0.1): xmpp.js computes SCRAM with thousands of WebCrypto calls,
	// which would make this test measure the client rather than the gateway.
	const { xmpp } = createClient(stack, username, PASSWORD, { resource: `r${i}`, mechanism: 'PLAIN' });
	try {
		const jid = await withTimeout(xmpp.start(), 15_000, `login ${i}`);
		assert.equal(jid.toString(), `${username}@localhost/r${i}`);
		await withTimeout(xmpp.stop(), 15_000, `close ${i}`);
	} catch (err) {
		xmpp.stop().catch(() => {});
		throw err;
	}
}

test(`${SESSIONS} sessions opened and closed leave no session and no upstream socket`, async () => {
	const started = Date.now();
	const failures = [];
	for (let first = 0; first < SESSIONS; first += BATCH) {
		const batch = [];
		for (let i = first; i < Math.min(first + BATCH, SESSIONS); i++) batch.push(loginAndClose(i));
		for (const result of await Promise.allSettled(batch)) {
			if (result.status === 'rejected') failures.push(result.reason);
		}
		// Stop early rather than hammering a broken gateway 1,000 times.
		assert.ok(failures.length < 10, `sessions failing: ${failures.slice(0, 3).map(String).join('; ')}`);
	}
	assert.deepEqual(failures.map(String), [], 'every session logs in and closes');
	const elapsed = Date.now() - started;
	console.log(`${SESSIONS} sessions in ${elapsed} ms`);

	if (TARGET === 'gateway') {
		await waitFor(async () => (await stack.gateway.sessionsActive('websocket')) === 0, {
			what: 'xmpp_gateway_sessions_active{transport="websocket"} == 0',
			timeout: 15_000,
		});
		await waitFor(() => stack.gateway.upstreamSockets() === 0, {
			what: 'no ESTABLISHED socket from the gateway to Prosody c2s',
			timeout: 15_000,
		});
	}
});
