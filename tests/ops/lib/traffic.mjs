// Small clients that make the gateway's series appear: a raw WebSocket client
// (for the things a well-behaved XMPP library will not do: unknown domains,
// hostile input, ignoring pings), a raw BOSH client, and a fake upstream server
// that never answers the end of its stream.

import { createRequire } from 'node:module';
import net from 'node:net';
import { waitFor, withTimeout } from '../../interop/harness.mjs';

// `ws` is installed for the interop tests (tests/interop/package-lock.json); resolve
// it from there rather than keep a second copy.
const requireInterop = createRequire(new URL('../../interop/package.json', import.meta.url));
const WebSocket = requireInterop('ws');

const FRAMING_NS = 'urn:ietf:params:xml:ns:xmpp-framing';
const HTTPBIND_NS = 'http://jabber.org/protocol/httpbind';

/**
 * A WebSocket with subprotocol "xmpp" that records every text frame. `open(to)`
 * sends RFC 7395's <open/>; `waitForFrame(re)` waits for a frame matching `re`.
 */
export async function rawWebSocket(url) {
	const ws = new WebSocket(url, 'xmpp');
	const frames = [];
	let closed = false;
	ws.on('message', (data, isBinary) => {
		if (!isBinary) frames.push(data.toString('utf8'));
	});
	const closedPromise = new Promise((resolve) => {
		ws.once('close', (code) => {
			closed = true;
			resolve(code);
		});
	});
	ws.on('error', () => {});
	await withTimeout(
		new Promise((resolve, reject) => {
			ws.once('open', resolve);
			ws.once('error', reject);
		}),
		5000,
		`WebSocket connect to ${url}`,
	);
	return {
		ws,
		frames,
		get closed() {
			return closed;
		},
		send(text) {
			ws.send(text);
		},
		open(to) {
			ws.send(`<open xmlns='${FRAMING_NS}' to='${to}' version='1.0'/>`);
		},
		waitForFrame(re, what = String(re), timeout = 10_000) {
			return waitFor(() => frames.find((f) => re.test(f)), { timeout, what: `${what}; frames: ${JSON.stringify(frames)}` });
		},
		/** Resolves with the close code once the server has closed the WebSocket. */
		waitClosed(timeout = 10_000) {
			return withTimeout(closedPromise, timeout, 'WebSocket close');
		},
		/** Stops reading: pings, stanzas and the close go unanswered. */
		stopReading() {
			ws.pause();
		},
		destroy() {
			ws.terminate();
		},
	};
}

/** Opens a session to `to` and resolves once the stream features arrived. */
export async function rawSession(url, to) {
	const s = await rawWebSocket(url);
	s.open(to);
	await s.waitForFrame(/<stream:features|<features/, `stream features from ${to}`);
	return s;
}

/** Base64 of SASL PLAIN's authzid\0authcid\0password. */
function plain(username, password) {
	return Buffer.from(`\0${username}\0${password}`, 'utf8').toString('base64');
}

/**
 * A BOSH client (XEP-0124/XEP-0206) speaking raw <body/> POSTs: `create()`
 * opens a session, `post(children, attrs)` sends the next rid and resolves with
 * the answer's text (a held request resolves when the gateway answers it).
 */
export function boshClient(url, { to, wait = 10, hold = 1 } = {}) {
	let rid = 1_000_000 + Math.floor(Math.random() * 1_000_000);
	let sid = null;
	let current = url;
	async function request(attrs, children = '') {
		const attrText = Object.entries({ rid: rid++, ...(sid ? { sid } : {}), ...attrs })
			.map(([k, v]) => ` ${k}='${v}'`)
			.join('');
		const body = `<body xmlns='${HTTPBIND_NS}' xmlns:xmpp='urn:xmpp:xbosh'${attrText}>${children}</body>`;
		const res = await fetch(current, {
			method: 'POST',
			headers: { 'content-type': 'text/xml; charset=utf-8' },
			body,
		});
		const text = await res.text();
		if (res.status !== 200) throw new Error(`BOSH answered HTTP ${res.status}: ${text}`);
		return text;
	}
	return {
		get sid() {
			return sid;
		},
		/** Sends the session's next requests to another node of a cluster (docs/protocol.md §8). */
		via(other) {
			current = other;
		},
		async create() {
			const text = await withTimeout(
				request({ to, wait, hold, ver: '1.11', 'xml:lang': 'en', 'xmpp:version': '1.0' }),
				10_000,
				'BOSH session request',
			);
			const m = text.match(/\bsid=['"]([^'"]+)['"]/);
			if (!m) throw new Error(`BOSH session request got no sid: ${text}`);
			sid = m[1];
			return text;
		},
		/** Sends SASL PLAIN and resolves with the answer that carries the outcome. */
		async auth(username, password) {
			const auth = `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${plain(username, password)}</auth>`;
			let text = await withTimeout(request({}, auth), (wait + 5) * 1000, 'BOSH auth');
			// The outcome may come in the answer to a later (empty) request.
			for (let i = 0; i < 3 && !/<success|<failure/.test(text); i += 1) {
				text = await withTimeout(request({}), (wait + 5) * 1000, 'BOSH poll for SASL outcome');
			}
			return text;
		},
		/** An empty request, which the gateway holds until it has something to say. */
		poll() {
			return request({});
		},
		terminate() {
			return withTimeout(request({ type: 'terminate' }), 10_000, 'BOSH terminate');
		},
	};
}

/**
 * A fake XMPP server that answers a stream header with its own header and
 * features (no STARTTLS: the route must have tls = "disabled") and then reads
 * and ignores everything, never closing its side. A gateway session to it
 * therefore waits for the server's close when it drains.
 */
export async function startStallingUpstream(domain) {
	const sockets = new Set();
	const server = net.createServer((socket) => {
		sockets.add(socket);
		socket.on('close', () => sockets.delete(socket));
		socket.on('error', () => {});
		let seen = '';
		let answered = false;
		socket.on('data', (chunk) => {
			if (answered) return;
			seen += chunk.toString('utf8');
			if (!/<stream:stream[^>]*>/.test(seen)) return;
			answered = true;
			socket.write(
				`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'` +
					` id='stall-${Date.now()}' from='${domain}' version='1.0' xml:lang='en'>` +
					`<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` +
					`<mechanism>PLAIN</mechanism></mechanisms></stream:features>`,
			);
		});
	});
	await new Promise((resolve, reject) => {
		server.once('error', reject);
		server.listen(0, '127.0.0.1', resolve);
	});
	return {
		port: server.address().port,
		async stop() {
			for (const s of sockets) s.destroy();
			await new Promise((resolve) => server.close(resolve));
		},
	};
}
