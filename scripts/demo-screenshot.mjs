#!/usr/bin/env node
// Drives the demo like a person would and saves a screenshot of the result:
// headless Chromium opens the converse.js page, logs in as alice, opens a
// chat with bob@localhost and sends a message; bob (an @xmpp/client session
// in this process) answers; the screenshot shows both lines.
//
// Usage: node scripts/demo-screenshot.mjs [PAGE_URL] [OUTPUT_PNG]
//   defaults: http://localhost:5280/  .run/demo.png
// The demo stack must be running (scripts/demo-screenshot.sh starts it).
// Dependencies come from demo/node_modules (scripts/install-deps.sh).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const demoRequire = createRequire(path.join(REPO, 'demo', 'package.json'));
// CommonJS packages arrive as `default` when imported from ESM by path.
async function importFromDemo(name) {
	const mod = await import(pathToFileURL(demoRequire.resolve(name)).href);
	return mod.default ?? mod;
}

const { chromium } = await importFromDemo('playwright-core');
const { client, xml } = await importFromDemo('@xmpp/client');
const WebSocket = await importFromDemo('ws');
globalThis.WebSocket ??= WebSocket; // @xmpp/websocket expects the browser API

const pageUrl = process.argv[2] || 'http://localhost:5280/';
const output = path.resolve(process.argv[3] || path.join(REPO, '.run', 'demo.png'));
const PASSWORD = 'demo-password';
const STEP_TIMEOUT = 20_000;
const FROM_ALICE = 'Hello Bob! Written in converse.js, through xmpp-gateway 👋';
const FROM_BOB = 'Hi Alice, Bob here (a Node.js client); got it: ';

const started = Date.now();
function step(text) {
	const seconds = ((Date.now() - started) / 1000).toFixed(1);
	console.log(`demo-screenshot [${seconds.padStart(5)} s]: ${text}`);
}

/** Bob: online, answering every chat message from alice once. */
async function startBob() {
	const wsUrl = new URL('/xmpp-websocket', pageUrl);
	wsUrl.protocol = wsUrl.protocol === 'https:' ? 'wss:' : 'ws:';
	const bob = client({ service: wsUrl.href, domain: 'localhost', username: 'bob', password: PASSWORD, resource: 'node' });
	bob.reconnect.stop();
	bob.on('error', (err) => console.error('bob:', err.message));
	let answered;
	const answeredAlice = new Promise((resolve) => {
		answered = resolve;
	});
	bob.on('stanza', async (stanza) => {
		const body = stanza.is('message') && stanza.getChildText('body');
		if (!body || !stanza.attrs.from?.startsWith('alice@localhost')) return;
		await bob.send(xml('message', { to: stanza.attrs.from, type: 'chat' }, xml('body', {}, FROM_BOB + body)));
		answered(body);
	});
	await bob.start();
	await bob.send(xml('presence'));
	return { bob, answeredAlice };
}

async function main() {
	fs.mkdirSync(path.dirname(output), { recursive: true });
	step('bob logs in with @xmpp/client');
	const { bob, answeredAlice } = await startBob();

	// A fresh, throw-away browser profile for every run.
	const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xmpp-gw-chromium-'));
	let context;
	try {
		context = await chromium.launchPersistentContext(profile, {
			executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
			headless: true,
			viewport: { width: 1280, height: 800 },
			// This machine has no internet: keep Chromium from phoning home.
			args: [
				'--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
				'--disable-background-networking', '--disable-component-update', '--disable-sync',
			],
		});
		const page = context.pages()[0] ?? (await context.newPage());
		page.setDefaultTimeout(STEP_TIMEOUT);
		page.on('pageerror', (err) => console.error('page error:', err.message));

		step(`opening ${pageUrl}`);
		await page.goto(pageUrl);
		step('alice logs in');
		await page.locator('input[name="jid"]').first().fill('alice@localhost');
		await page.locator('input[name="password"]').first().fill(PASSWORD);
		await page.locator('input[name="password"]').first().press('Enter');
		// The login form disappears and the control box shows the roster.
		await page.locator('converse-roster, .controlbox-section#chatrooms, converse-rooms-list').first()
			.waitFor({ state: 'attached' });

		step('alice opens a chat with bob@localhost');
		// converse.js opens a chat for this URL fragment (a link a person can follow).
		await page.evaluate(() => {
			location.hash = '#converse/chat?jid=bob@localhost';
		});
		const textarea = page.locator('converse-chat[jid="bob@localhost"] textarea.chat-textarea, .chatbox textarea').first();
		await textarea.waitFor();

		step('alice sends a message');
		await textarea.fill(FROM_ALICE);
		await textarea.press('Enter');

		let timer;
		const received = await Promise.race([
			answeredAlice,
			new Promise((_, reject) => {
				timer = setTimeout(() => reject(new Error('bob never got the message')), STEP_TIMEOUT);
			}),
		]).finally(() => clearTimeout(timer));
		if (received !== FROM_ALICE) throw new Error(`bob got ${JSON.stringify(received)}`);
		step('bob answered; waiting for the answer on the page');
		await page.getByText(FROM_BOB, { exact: false }).first().waitFor();

		await page.screenshot({ path: output });
		step(`screenshot saved to ${output}`);
	} finally {
		await context?.close();
		fs.rmSync(profile, { recursive: true, force: true });
		await bob.stop().catch(() => {});
	}
}

main().catch((err) => {
	console.error(`demo-screenshot: FAILED: ${err.stack || err}`);
	process.exit(1);
});
