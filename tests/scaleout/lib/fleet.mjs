// The clients of the scale-out test: @xmpp/client over WebSocket with XEP-0198
// resumption, and strophe.js over BOSH, each one a "user" that follows the
// gateway's redirect when its node drains, the way a chat application built on
// these libraries has to: neither library follows see-other-uri by itself
// (@xmpp/client only knows the TCP see-other-host stream error; strophe.js
// follows see-other-uri only over WebSocket), so this adapter reads the
// redirect off the wire and reconnects to it.
//
// Every client records what happened to it with timestamps (redirects,
// disconnects, terminate conditions, stream errors, resumption) and every
// message it received by id, so the test can count what was delivered, lost
// or duplicated.

import { createRequire } from 'node:module';
import { withTimeout } from '../../interop/harness.mjs';
import { createClient, xml } from '../../interop/lib/xmppjs.mjs';
import { connect as stropheConnect, Strophe, $msg } from '../../interop/lib/strophe.mjs';
import { browser, urlFor, configureBrowsers, installBrowserXMLHttpRequest } from './browser-xhr.mjs';

// `ws` is installed for the interop tests (tests/interop/package-lock.json).
const requireInterop = createRequire(new URL('../../interop/package.json', import.meta.url));
const WS = requireInterop('ws');

const NS_SM = 'urn:xmpp:sm:3';
const MOVE_TIMEOUT_MS = 20_000;
/** A client that keeps being thrown out stops reconnecting after this many times. */
const MAX_MOVES = 4;
const { Status } = Strophe;

/**
 * Trust `ca` (PEM) for wss:// and https://, for every client created from now
 * on: a WebSocket class that passes it to TLS, and the browser-like XHR.
 */
export function trustCertificate(ca) {
	// @xmpp/websocket does `new WebSocket(url, ['xmpp'])` on the global.
	globalThis.WebSocket = class TrustingWebSocket extends WS {
		constructor(url, protocols, options = {}) {
			super(url, protocols, { ca, ...options });
		}
	};
	configureBrowsers({ ca });
	installBrowserXMLHttpRequest();
}

/** What both kinds of client share: identity, state and records. */
class FleetClient {
	constructor({ index, user, password, resource, domain, url }) {
		this.index = index;
		this.user = user;
		this.password = password;
		this.resource = resource;
		this.domain = domain;
		this.url = url;
		this.jid = `${user}@${domain}/${resource}`;
		this.up = false;
		this.closing = false;
		/** message id -> [{ at, inTerminate, delayed }] */
		this.received = new Map();
		/** message id -> the error stanza's condition, for bounces. */
		this.bounced = new Map();
		/** Redirects received: [{ at, uri }]. */
		this.redirects = [];
		/** Ends of a connection not asked for: [{ at, how }]. */
		this.disconnects = [];
		/** Moves to another connection: [{ downAt, backAt, how, uri }]. */
		this.moves = [];
		/** What went wrong, as text for the assertion messages. */
		this.problems = [];
		/** Messages the "user" wrote while offline, sent once back. */
		this.outbox = [];
		this.moving = null;
	}

	/** Sends now when online, else as soon as the client is back. Returns when it went out. */
	say(to, id, text) {
		if (this.up) {
			this.transmit(to, id, text);
			return Promise.resolve(Date.now());
		}
		return new Promise((resolve) => this.outbox.push({ to, id, text, resolve }));
	}

	flushOutbox() {
		for (const m of this.outbox.splice(0)) {
			this.transmit(m.to, m.id, m.text);
			m.resolve(Date.now());
		}
	}

	recordMessage(id, { inTerminate = false, delayed = false, from, type, condition } = {}) {
		if (!id) return;
		if (type === 'error') {
			this.bounced.set(id, condition);
			return;
		}
		const list = this.received.get(id) ?? [];
		list.push({ at: Date.now(), inTerminate, delayed, from });
		this.received.set(id, list);
	}

	lastMove() {
		return this.moves.at(-1);
	}
}

/** @xmpp/client over WebSocket, with XEP-0198 enabled and resumable. */
export class WsClient extends FleetClient {
	transport = 'websocket';

	async login() {
		const { xmpp } = createClient({ wsUrl: this.url, domain: this.domain }, this.user, this.password, {
			resource: this.resource,
			mechanism: 'PLAIN',
		});
		this.xmpp = xmpp;
		this.frames = [];
		/** previd of every <resumed/> received. */
		this.resumedPrevIds = [];
		xmpp.on('connect', () => {
			// The raw frames, to read <close see-other-uri/> (xmpp.js drops its attributes).
			xmpp.socket?.socket?.on('message', (data, isBinary) => {
				if (!isBinary) this.onFrame(data.toString('utf8'));
			});
		});
		xmpp.on('element', (el) => this.onElement(el));
		xmpp.on('disconnect', () => this.onDisconnect());
		const enabled = new Promise((resolve) => {
			this.onEnabled = resolve;
		});
		await withTimeout(xmpp.start(), 15_000, `login of ${this.jid}`);
		const answer = await withTimeout(enabled, 10_000, `<enabled/> for ${this.jid}`);
		if (answer.attrs.resume !== 'true' && answer.attrs.resume !== '1') {
			throw new Error(`${this.jid}: server did not grant resumption: ${answer}`);
		}
		this.smId = answer.attrs.id;
		this.up = true;
	}

	onFrame(text) {
		// Keep the last few frames for diagnostics.
		this.frames.push(text);
		if (this.frames.length > 8) this.frames.shift();
		if (text.startsWith('<close')) {
			const m = text.match(/see-other-uri=(['"])(.*?)\1/);
			if (m) this.redirects.push({ at: Date.now(), uri: unescapeXml(m[2]) });
		}
		if (/^<(stream:)?error/.test(text)) this.problems.push(`stream error: ${text}`);
	}

	onElement(el) {
		if (el.is('enabled', NS_SM)) this.onEnabled?.(el);
		if (el.is('resumed', NS_SM)) this.resumedPrevIds.push(el.attrs.previd);
		if (el.name === 'message') {
			this.recordMessage(el.attrs.id, {
				type: el.attrs.type,
				from: el.attrs.from,
				delayed: !!el.getChild('delay', 'urn:xmpp:delay'),
				condition: el.getChild('error')?.getChildElements()[0]?.name,
			});
		}
	}

	onDisconnect() {
		if (this.closing) return;
		this.up = false;
		const downAt = Date.now();
		const redirect = this.redirects.find((r) => r.at >= (this.lastMove()?.backAt ?? 0));
		this.disconnects.push({ at: downAt, how: redirect ? 'see-other-uri' : `closed: ${this.frames.at(-1) ?? ''}` });
		if (!redirect) this.problems.push(`disconnected without see-other-uri (last frame: ${this.frames.at(-1)})`);
		if (this.disconnects.length > MAX_MOVES) {
			this.problems.push(`gave up after ${this.disconnects.length} disconnects`);
			return;
		}
		this.moving = this.move(downAt, redirect?.uri).catch((err) => {
			this.problems.push(`move failed: ${err.message}`);
		});
	}

	/** Reconnects to `uri` (the redirect, else the public URL) and resumes the stream. */
	async move(downAt, uri) {
		const xmpp = this.xmpp;
		xmpp.options.service = uri ?? this.url;
		const sm = xmpp.streamManagement;
		let onResumed;
		let onOnline;
		const outcome = new Promise((resolve) => {
			onResumed = () => resolve('resumed');
			onOnline = () => resolve('fresh');
			sm.once('resumed', onResumed);
			xmpp.once('online', onOnline);
		});
		try {
			await withTimeout(xmpp.reconnect.reconnect(), MOVE_TIMEOUT_MS, `reconnect of ${this.jid}`);
			const how = await withTimeout(outcome, MOVE_TIMEOUT_MS, `resumption of ${this.jid}`);
			this.moves.push({ downAt, backAt: Date.now(), how, uri });
			this.up = true;
			this.flushOutbox();
		} finally {
			sm.off('resumed', onResumed);
			xmpp.off('online', onOnline);
		}
	}

	transmit(to, id, text) {
		this.xmpp.send(xml('message', { to, type: 'chat', id }, xml('body', {}, text))).catch((err) => {
			this.problems.push(`send ${id} failed: ${err.message}`);
		});
	}

	async close() {
		this.closing = true;
		await this.moving;
		try {
			await withTimeout(this.xmpp.stop(), 5000, `close of ${this.jid}`);
		} catch {
			this.xmpp.socket?.socket?.terminate();
		}
	}
}

/**
 * Node names by cluster tag (the first 8 hex digits of the sids a node makes,
 * docs/protocol.md §8), filled in by the test from the gateways' logs.
 */
export const nodeTags = new Map();

/** strophe.js over BOSH in its own "browser" (cookie jar, connections, source address). */
export class BoshClient extends FleetClient {
	transport = 'bosh';

	/** The browser this client runs in (its cookies and requests). */
	get browser() {
		return browser(this.index);
	}

	/** The node that holds this client's current session: the one whose tag its sid begins with. */
	get node() {
		const sid = this.browser.exchanges.findLast((x) => x.sid)?.sid;
		return sid && nodeTags.get(sid.slice(0, 8));
	}

	async login() {
		/** Every terminate body received: [{ at, condition, uri, stale, repeat }]. */
		this.terminates = [];
		/** Strophe connection -> how its session ended (the first terminate body). */
		this.endOf = new WeakMap();
		await this.open(this.url);
	}

	async open(url) {
		const c = stropheConnect(
			{ boshUrl: urlFor(url, this.index), domain: this.domain },
			this.user,
			this.password,
			{ transport: 'bosh', resource: this.resource, mechanism: 'PLAIN' },
		);
		const xmlInput = c.conn.xmlInput;
		c.conn.xmlInput = (el) => {
			this.onBody(el, c.conn);
			xmlInput(el);
		};
		let connected = false;
		let ended = false;
		c.events.on('status', (status, condition) => {
			if (status === Status.AUTHFAIL || (status === Status.CONNFAIL && condition !== 'see-other-uri')) {
				this.problems.push(`status ${status === Status.CONNFAIL ? 'CONNFAIL' : 'AUTHFAIL'} ${condition}`);
			}
			// Strophe may report DISCONNECTED again when a request of a connection it has
			// already given up comes back; only the end of the current connection counts.
			if (status === Status.DISCONNECTED && connected && !ended && this.conn === c.conn) {
				ended = true;
				this.onDisconnect();
			}
		});
		await withTimeout(c.connected, 15_000, `BOSH login of ${this.jid}`);
		connected = true;
		this.conn = c.conn;
		this.events = c.events;
		this.up = true;
	}

	/**
	 * Every <body/> of connection `conn`, as it arrives. A body can still arrive for a
	 * connection Strophe has given up (an outstanding request answered late): it is
	 * recorded as `stale`, and Strophe hands its stanzas to nobody.
	 */
	onBody(body, conn) {
		if (body?.localName !== 'body') return;
		const stale = this.conn !== undefined && conn !== this.conn && this.up;
		const terminate = body.getAttribute('type') === 'terminate';
		if (terminate) {
			const condition = body.getAttribute('condition');
			let uri;
			for (let n = body.firstChild; n; n = n.nextSibling) if (n.nodeType === 1 && n.localName === 'uri') uri = n.textContent;
			// Every request open when the session ends is answered with the terminate body
			// (XEP-0124 §13), and so is one that crossed it on the wire: the end of one
			// session is one redirect however many of its requests tell it.
			const first = this.endOf.get(conn);
			const repeat = first !== undefined;
			this.terminates.push({ at: Date.now(), condition, uri, stale, repeat });
			if (repeat) {
				if (first.condition !== condition || first.uri !== uri) {
					this.problems.push(`session ended by ${first.condition} ${first.uri ?? ''}, then a request was told ${condition} ${uri ?? ''}`);
				}
			} else {
				this.endOf.set(conn, { condition, uri });
				if (condition === 'see-other-uri' && uri && !stale) this.redirects.push({ at: Date.now(), uri });
			}
		}
		for (let n = body.firstChild; n; n = n.nextSibling) {
			if (n.nodeType !== 1 || n.localName !== 'message') continue;
			let delayed = false;
			let condition;
			for (let c = n.firstChild; c; c = c.nextSibling) {
				if (c.nodeType === 1 && c.localName === 'delay') delayed = true;
				if (c.nodeType === 1 && c.localName === 'error') condition = c.firstChild?.localName;
			}
			this.recordMessage(n.getAttribute('id'), {
				inTerminate: terminate || stale,
				delayed,
				type: n.getAttribute('type'),
				from: n.getAttribute('from'),
				condition,
			});
		}
	}

	onDisconnect() {
		if (this.closing) return;
		this.up = false;
		const downAt = Date.now();
		const end = this.terminates.filter((t) => !t.stale).at(-1);
		const redirect = end?.condition === 'see-other-uri' ? end.uri : undefined;
		this.disconnects.push({ at: downAt, how: end?.condition ?? 'disconnected' });
		if (!redirect) this.problems.push(`session ended without see-other-uri (${end?.condition ?? 'no terminate'})`);
		if (this.disconnects.length > MAX_MOVES) {
			this.problems.push(`gave up after ${this.disconnects.length} disconnects`);
			return;
		}
		// BOSH has no resumption in strophe.js: a new session, same browser (same cookies).
		this.moving = this.open(redirect ?? this.url)
			.then(() => {
				this.moves.push({ downAt, backAt: Date.now(), how: 'new-session', uri: redirect });
				this.flushOutbox();
			})
			.catch((err) => this.problems.push(`new session failed: ${err.message}`));
	}

	transmit(to, id, text) {
		this.conn.send($msg({ to, type: 'chat', id }).c('body').t(text).tree());
	}

	async close() {
		this.closing = true;
		await this.moving;
		const conn = this.conn;
		if (!conn?.connected) return;
		const done = new Promise((resolve) => {
			this.events.on('status', (status) => status === Status.DISCONNECTED && resolve());
		});
		conn.disconnect('test done');
		try {
			await withTimeout(done, 5000, `close of ${this.jid}`);
		} catch {
			conn._doDisconnect();
		}
	}
}

function unescapeXml(s) {
	return s
		.replace(/&lt;/g, '<')
		.replace(/&gt;/g, '>')
		.replace(/&quot;/g, '"')
		.replace(/&apos;/g, "'")
		.replace(/&amp;/g, '&');
}
