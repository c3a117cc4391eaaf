// converse.js in headless Chromium through the gateway, once over BOSH
// (`bosh_service_url`) and once over WebSocket (`websocket_url`): the demo
// page (demo/index.html, served by the gateway with --static-dir, transport
// chosen by ?transport=) logs alice in, she chats with bob, who is an
// @xmpp/client session in this process on the gateway's WebSocket. Each
// test starts its own Prosody and gateway (logs and the browser's console
// and protocol trace in .run/interop/converse-<transport>/) and saves a
// screenshot of the conversation to .run/screenshots/converse-<transport>.png.
//
// That the chosen transport really carried the session is checked three
// ways: the gateway counted exactly one new session of that transport and
// none of the other, the page opened only that kind of connection, and
// converse logged nothing about connection trouble. Logging out at the end
// must end the gateway session and its stream to Prosody.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, TARGET, TRICKY_TEXT, startStack, waitFor } from './harness.mjs';
import { login, xml, bodyOf } from './lib/xmppjs.mjs';
import {
	launchBrowser, converseLogin, converseLogout, converseOpenChat, converseSend, converseMessageTexts, chatView,
} from './lib/browser.mjs';

const PASSWORD = 'demo-password';
const DEMO_DIR = path.join(REPO, 'demo');
const SCREENSHOTS = path.join(REPO, '.run', 'screenshots');
const STARTED = 'xmpp_gateway_sessions_started_total';
const ENDED = 'xmpp_gateway_sessions_ended_total';
const ACTIVE = 'xmpp_gateway_sessions_active';

// The page is the gateway's own --static-dir; with XMPP_INTEROP_TARGET=prosody
// there is no gateway to serve it (nor metrics to check).
const skip = TARGET === 'prosody' ? 'needs the gateway to serve the demo page' : false;

/**
 * What converse.js, Strophe (inside it) and Chromium print when a connection
 * fails or drops: Strophe's CONNFAIL/DISCONNECTED states, converse's
 * reconnection attempts, Chromium's "WebSocket connection to ... failed" and
 * failed requests to either endpoint.
 */
const CONNECTION_TROUBLE = new RegExp(
	[
		'CONNFAIL', 'DISCONNECT', 'reconnect', 'not connected',
		'connection (?:failed|error|lost|dropped|closed|refused)', 'ERR_CONNECTION',
		'WebSocket (?:connection|error|closed)', // Strophe and Chromium on a WebSocket
		'request id \\S+ error', 'request errored', // Strophe on a BOSH request
		'BOSH', 'http-bind', 'xmpp-websocket',
	].join('|'),
	'i',
);

/**
 * Console errors that are not the gateway's doing and would appear through
 * Prosody's own endpoints just the same:
 * - resources on other hosts (converse's login footer shows its sponsors'
 *   logos from conversejs.org): this machine has no internet;
 * - converse's OMEMO plugin asking for devices over PEP, which the test
 *   Prosody does not offer: the server answers service-unavailable and
 *   converse logs the error reply and a line about it.
 */
function expectedError(message, pageUrl) {
	if (/^Failed to load resource/.test(message.text) && message.url) {
		return new URL(message.url).origin !== new URL(pageUrl).origin;
	}
	if (/^Could not fetch OMEMO devices for /.test(message.text)) return true;
	return /^<iq [^>]*type="error"/.test(message.text) && /<service-unavailable /.test(message.text);
}

const describe = (m) => `console.${m.type}: ${m.text}${m.url ? ` (at ${m.url})` : ''}`;

/**
 * Returns `cleanup(step)`: the steps run when test `t` ends, last registered
 * first, whether it passed, failed or timed out (node:test runs `t.after`
 * at once on a timeout). A step registered after that runs right away.
 */
function cleanups(t) {
	const steps = [];
	let done = false;
	t.after(async () => {
		done = true;
		for (const step of steps.reverse()) await Promise.resolve().then(step).catch(() => {});
	});
	return (step) => (done ? Promise.resolve().then(step).catch(() => {}) : steps.push(step));
}

for (const transport of ['bosh', 'websocket']) {
	const other = transport === 'bosh' ? 'websocket' : 'bosh';
	test(`converse.js over ${transport} chats with an @xmpp/client user`, { skip, timeout: 30_000 }, async (t) => {
		const cleanup = cleanups(t);
		if (!fs.existsSync(path.join(DEMO_DIR, 'node_modules', 'converse.js', 'dist', 'converse.min.js'))) {
			throw new Error('demo/node_modules/converse.js is missing: run scripts/install-deps.sh');
		}
		const stack = await startStack({
			name: `converse-${transport}`,
			users: [['alice', PASSWORD], ['bob', PASSWORD]],
			gatewayArgs: ['--static-dir', DEMO_DIR],
		});
		cleanup(() => stack.stop());
		const gateway = stack.gateway;

		// bob: online on the WebSocket (so he is one websocket session of his own).
		const bob = await login(stack, 'bob', PASSWORD, { resource: 'node' });
		cleanup(() => bob.close());
		await bob.send(xml('presence'));
		const before = {
			[transport]: await gateway.metricValue(STARTED, { transport }),
			[other]: await gateway.metricValue(STARTED, { transport: other }),
		};
		const activeBefore = await gateway.metricValue(ACTIVE, { transport });

		const browser = await launchBrowser({ logFile: path.join(stack.logDir, 'browser.log') });
		cleanup(() => browser.close());
		const { page } = browser;
		let passed = false;
		// Leave a picture behind when something below fails.
		cleanup(async () => {
			if (!passed) await browser.screenshot(path.join(stack.logDir, 'failure.png'));
		});

		await page.goto(`http://127.0.0.1:${gateway.port}/?transport=${transport}`);
		await converseLogin(page, 'alice@localhost', PASSWORD);
		// Exactly one new session, on the transport the page was told to use.
		await waitFor(async () => (await gateway.metricValue(STARTED, { transport })) === before[transport] + 1, {
			what: `${STARTED}{transport="${transport}"} to grow by one`,
		});
		assert.equal(await gateway.metricValue(STARTED, { transport: other }), before[other],
			`converse opened a ${other} session too`);

		// alice -> bob: the text bob gets is exactly the text typed.
		const toBob = `converse over ${transport} to bob: ${TRICKY_TEXT}`;
		const since = bob.inbox.mark();
		await converseOpenChat(page, 'bob@localhost');
		await converseSend(page, 'bob@localhost', toBob);
		const isChatFromAlice = (el) =>
			el.is('message') && el.attrs.from?.startsWith('alice@localhost/') && bodyOf(el) !== undefined;
		const atBob = await bob.inbox.waitFor(isChatFromAlice, { what: 'the message from converse at bob', since });
		assert.equal(bodyOf(atBob), toBob);

		// bob -> alice: the reply shows up in converse's chat view.
		const toAlice = `bob (@xmpp/client) to converse over ${transport}: ${TRICKY_TEXT}`;
		await bob.send(xml('message', { to: atBob.attrs.from, type: 'chat', id: `reply-${transport}` },
			xml('body', {}, toAlice)));
		await waitFor(async () => (await converseMessageTexts(page, 'bob@localhost')).includes(toAlice), {
			what: "bob's reply in converse's chat view",
		});
		assert.deepEqual(await converseMessageTexts(page, 'bob@localhost'), [toBob, toAlice]);
		// Nothing was delivered twice (a retried BOSH request must not repeat a stanza).
		assert.equal(bob.inbox.items.slice(since).filter(isChatFromAlice).length, 1);

		await chatView(page, 'bob@localhost').scrollIntoViewIfNeeded();
		const file = await browser.screenshot(path.join(SCREENSHOTS, `converse-${transport}.png`));
		assert.ok(fs.statSync(file).size > 10_000, `${file} looks empty`);

		// The page itself used only the transport it was given.
		const boshRequests = browser.requests.filter((r) => new URL(r.url).pathname === '/http-bind');
		const sockets = browser.websockets.filter((url) => new URL(url).pathname === '/xmpp-websocket');
		if (transport === 'bosh') {
			assert.ok(boshRequests.length > 0, 'no request to /http-bind');
			assert.deepEqual(sockets, [], 'converse opened a WebSocket');
		} else {
			assert.equal(sockets.length, 1, `WebSockets opened: ${sockets.join(', ')}`);
			assert.deepEqual(boshRequests, [], 'converse made BOSH requests');
		}
		// Nothing the page asked the gateway for failed (converse's chunks,
		// emoji, the endpoints).
		const origin = new URL(page.url()).origin;
		assert.deepEqual(browser.failedRequests.filter((r) => new URL(r.url).origin === origin), [],
			'failed requests to the gateway');
		// And converse reported no trouble with its connection: nothing on
		// the console about one, no other unexplained error, no uncaught
		// exception.
		const complaints = browser.console.filter((m) => ['error', 'warning'].includes(m.type));
		assert.deepEqual(complaints.filter((m) => CONNECTION_TROUBLE.test(describe(m))).map(describe), [],
			'console messages about the connection');
		assert.deepEqual(complaints.filter((m) => m.type === 'error' && !expectedError(m, page.url())).map(describe), [],
			'unexpected console errors');
		assert.deepEqual(browser.pageErrors.map((e) => e.message), [], 'uncaught errors in the page');

		// Logging out ends the gateway session and its upstream stream at once.
		await converseLogout(page);
		await waitFor(async () => (await gateway.metricValue(ACTIVE, { transport })) === activeBefore, {
			what: `${ACTIVE}{transport="${transport}"} back to ${activeBefore} after converse logged out`,
		});
		// As a clean close. BOSH: a type='terminate' body, "closed". WebSocket:
		// Strophe (inside converse) sends <close/> and closes the socket on the
		// next tick without waiting for the answer (RFC 7395 §3.6 leaves that
		// to the server), and the gateway counts "closed" when Prosody's
		// answer came first and "client_close" when the close frame did.
		const ended = (await gateway.metricSeries(ENDED)).filter((s) => s.labels.transport === transport && s.value > 0);
		const clean = transport === 'bosh' ? ['closed'] : ['closed', 'client_close'];
		assert.equal(ended.reduce((sum, s) => sum + s.value, 0), 1, `one ${transport} session ended: ${JSON.stringify(ended)}`);
		assert.ok(clean.includes(ended[0].labels.reason), `ended as ${ended[0].labels.reason}, not ${clean.join(' or ')}`);
		await waitFor(() => gateway.upstreamSockets() === 1, { what: "only bob's socket to Prosody left" });
		passed = true;
	});
}
