// Headless Chromium for the interop tests, driven by playwright-core, plus
// the few converse.js page actions the tests need (log in, open a chat, send,
// read the chat view).
//
// Chromium is Debian's (/usr/bin/chromium, from scripts/install-deps.sh; set
// CHROMIUM_PATH to use another): playwright-core never downloads a browser.
// Every launch gets a new, empty profile directory, removed on close, and
// the flags that keep Chromium from reaching for the internet, which this
// machine does not have.
//
// What the page does is recorded for the test to check afterwards: console
// messages, uncaught page errors, the WebSockets it opened and the HTTP
// requests it made. All of it also goes to a log file next to the gateway's,
// with the first 300 characters of every WebSocket frame and BOSH body (test
// accounts only: SASL exchanges included), so a failure on CI can be read
// afterwards as a protocol trace.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { withTimeout } from '../harness.mjs';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
	'--no-sandbox', // we run as root in CI
	'--disable-gpu',
	'--disable-quic',
	'--no-first-run',
	'--disable-background-networking',
	'--disable-component-update',
	'--disable-sync',
];

/**
 * Kills whatever Chromium processes still run on `profile`: the fallback for
 * a browser that does not close. Matches on the profile directory, which is
 * ours alone, so no other browser on the machine is touched.
 */
function killChromiumOn(profile) {
	for (const pid of fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
		let cmdline;
		try {
			cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
		} catch {
			continue; // gone while we looked
		}
		if (cmdline.split('\0').includes(`--user-data-dir=${profile}`)) {
			try {
				process.kill(Number(pid), 'SIGKILL');
			} catch {
				// already exited
			}
		}
	}
}

/**
 * Launches Chromium with one page and returns { page, context, console,
 * pageErrors, websockets, requests, failedRequests, screenshot, close }:
 * console messages as { type, text, url }, WebSocket URLs, requests as
 * { method, url }, failed requests as { url, error } (network) or
 * { url, status } (HTTP 4xx/5xx). `logFile` receives all of it as it happens.
 * `close()` is safe to call more than once and never throws.
 */
export async function launchBrowser({ logFile, viewport = { width: 1280, height: 800 } } = {}) {
	if (!fs.existsSync(CHROMIUM_PATH)) {
		throw new Error(`Chromium not found at ${CHROMIUM_PATH} (run scripts/install-deps.sh or set CHROMIUM_PATH)`);
	}
	const profile = await fsp.mkdtemp(path.join(os.tmpdir(), 'xmpp-gw-chromium-'));
	const log = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : null;
	const started = Date.now();
	let logOpen = true;
	const record = (line) => {
		if (logOpen) log?.write(`[${((Date.now() - started) / 1000).toFixed(3)} s] ${line}\n`);
	};
	const excerpt = (text) => String(text ?? '').slice(0, 300);

	let context;
	try {
		context = await withTimeout(
			chromium.launchPersistentContext(profile, {
				executablePath: CHROMIUM_PATH,
				headless: true,
				viewport,
				args: CHROMIUM_ARGS,
				timeout: 15_000,
			}),
			20_000,
			'Chromium launch',
		);
	} catch (err) {
		killChromiumOn(profile);
		logOpen = false;
		log?.end();
		await fsp.rm(profile, { recursive: true, force: true });
		throw err;
	}

	const page = context.pages()[0] ?? (await context.newPage());
	// Every Playwright wait in a test is bounded by this unless it says otherwise.
	page.setDefaultTimeout(10_000);

	const consoleMessages = [];
	const pageErrors = [];
	const websockets = [];
	const requests = [];
	const failedRequests = [];
	page.on('console', (msg) => {
		consoleMessages.push({ type: msg.type(), text: msg.text(), url: msg.location()?.url });
		record(`console.${msg.type()}: ${msg.text()}${msg.location()?.url ? ` (at ${msg.location().url})` : ''}`);
	});
	page.on('pageerror', (err) => {
		pageErrors.push(err);
		record(`page error: ${err.stack || err.message}`);
	});
	page.on('websocket', (ws) => {
		websockets.push(ws.url());
		record(`websocket opened: ${ws.url()}`);
		ws.on('framesent', (f) => record(`websocket sent: ${excerpt(f.payload)}`));
		ws.on('framereceived', (f) => record(`websocket received: ${excerpt(f.payload)}`));
		ws.on('close', () => record(`websocket closed: ${ws.url()}`));
	});
	page.on('request', (req) => {
		requests.push({ method: req.method(), url: req.url() });
		// BOSH bodies, so a BOSH trace reads like a WebSocket one.
		if (req.method() === 'POST') record(`POST ${req.url()}: ${excerpt(req.postData())}`);
	});
	page.on('response', async (res) => {
		if (res.request().method() !== 'POST') return;
		const body = await res.text().catch((err) => `(body unavailable: ${err.message})`);
		record(`HTTP ${res.status()} to POST ${res.url()}: ${excerpt(body)}`);
	});
	page.on('requestfailed', (req) => {
		failedRequests.push({ url: req.url(), error: req.failure()?.errorText });
		record(`request failed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
	});
	page.on('response', (res) => {
		if (res.status() < 400) return;
		failedRequests.push({ url: res.url(), status: res.status() });
		record(`HTTP ${res.status()}: ${res.request().method()} ${res.url()}`);
	});

	let closed = null;
	return {
		page,
		context,
		console: consoleMessages,
		pageErrors,
		websockets,
		requests,
		failedRequests,
		/** Saves a PNG of the page; resolves with its path. */
		async screenshot(file) {
			await fsp.mkdir(path.dirname(file), { recursive: true });
			await page.screenshot({ path: file, timeout: 10_000 });
			return file;
		},
		close() {
			closed ??= (async () => {
				try {
					await withTimeout(context.close(), 10_000, 'Chromium close');
				} catch (err) {
					record(`close failed (${err.message}); killing Chromium`);
				}
				killChromiumOn(profile);
				logOpen = false;
				await new Promise((resolve) => (log ? log.end(resolve) : resolve()));
				await fsp.rm(profile, { recursive: true, force: true }).catch(() => {});
			})();
			return closed;
		},
	};
}

// ---------------------------------------------------------------------------
// converse.js (14.x) page actions. Selectors are converse's own custom
// elements and classes; a wait that fails names what it waited for.

/** Fills converse's login form and waits until the roster is shown. */
export async function converseLogin(page, jid, password) {
	await page.locator('converse-login-form input[name="jid"]').fill(jid);
	await page.locator('converse-login-form input[name="password"]').fill(password);
	await page.locator('converse-login-form input[name="password"]').press('Enter');
	// converse replaces the login form with the roster once the session is
	// established (bound and the roster fetched).
	await page.locator('converse-roster').waitFor({ state: 'attached', timeout: 15_000 });
}

/** The chat view converse shows for a one-to-one chat with `jid`. */
export function chatView(page, jid) {
	return page.locator(`converse-chat[jid="${jid}"]`);
}

/**
 * Opens a chat with `jid` the way a link would (converse handles the
 * #converse/chat?jid= fragment) and waits for its message box.
 */
export async function converseOpenChat(page, jid) {
	await page.evaluate((to) => {
		location.hash = `#converse/chat?jid=${to}`;
	}, jid);
	await chatView(page, jid).locator('textarea.chat-textarea').waitFor();
}

/** Types `text` into the chat with `jid` and sends it with Enter. */
export async function converseSend(page, jid, text) {
	const textarea = chatView(page, jid).locator('textarea.chat-textarea');
	await textarea.fill(text);
	await textarea.press('Enter');
}

/** The text of every message shown in the chat with `jid`, oldest first. */
export function converseMessageTexts(page, jid) {
	return chatView(page, jid)
		.locator('.chat-msg__text')
		.evaluateAll((els) => els.map((el) => el.textContent.trim()));
}

/**
 * Logs out as a person would (profile, "Log out", confirm) and waits for the
 * login form to come back. converse ends its XMPP session on the way: a
 * <close/> on WebSocket, a type='terminate' body on BOSH.
 */
export async function converseLogout(page) {
	await page.locator('converse-user-profile a.show-profile').click();
	await page.locator('converse-profile-modal .modal-footer button.btn-danger').click();
	await page.locator('converse-confirm-modal form.confirm button[type="submit"]').click();
	await page.locator('converse-login-form').waitFor();
}
