// Thin adapter around strophe.js for the interop tests. Strophe's Node entry
// point installs its own shims (the `ws` WebSocket and @xmldom/xmldom for
// DOMParser/XMLSerializer/document), so nothing else is needed here.

import { EventEmitter } from 'node:events';
import { Strophe, $build, $iq, $msg, $pres } from 'strophe.js';
import { Inbox } from './inbox.mjs';
import { installXMLHttpRequest } from './xhr-fetch.mjs';
import { withTimeout } from '../harness.mjs';

// For BOSH: Node has fetch() but no XMLHttpRequest.
installXMLHttpRequest();

export { Strophe, $build, $iq, $msg, $pres };

const { Status } = Strophe;

// Strophe logs connection progress at INFO to the console, which the test
// runner would print as diagnostics; warnings and errors are still shown.
Strophe.setLogLevel(Strophe.LogLevel.WARN);

/** An error carrying the XMPP condition of a failed login (e.g. not-authorized). */
export class LoginError extends Error {
	constructor(status, condition) {
		super(`login failed: ${statusName(status)}${condition ? ` (${condition})` : ''}`);
		this.status = status;
		this.condition = condition;
	}
}

function statusName(status) {
	return Object.keys(Status).find((key) => Status[key] === status) ?? String(status);
}

/** First child element of `el`. */
function firstElement(el) {
	for (let n = el?.firstChild; n; n = n.nextSibling) if (n.nodeType === 1) return n;
	return null;
}

/** Strophe's class for a SASL mechanism name. */
function saslMechanism(name) {
	// The name is set by each mechanism's constructor.
	const mechanism = Object.entries(Strophe).find(
		([key, m]) => key.startsWith('SASL') && typeof m === 'function' && new m().mechname === name,
	)?.[1];
	if (!mechanism) throw new Error(`strophe.js has no SASL mechanism ${name}`);
	return mechanism;
}

/**
 * Starts a connection (WebSocket, or BOSH with `transport: 'bosh'`) and
 * resolves once Strophe reports CONNECTED; rejects with a LoginError on
 * AUTHFAIL/CONNFAIL/DISCONNECTED before that.
 */
export function connect(
	stack,
	username,
	password,
	{ resource, streamManagement = false, transport = 'websocket', mechanism } = {},
) {
	// Strophe picks its transport from the URL: ws(s):// or http(s)://.
	const service = transport === 'bosh' ? stack.boshUrl : stack.wsUrl;
	const conn = new Strophe.Connection(service, {
		enableStreamManagement: streamManagement,
		// Ask for <r/> only when the test does, so acks are deterministic.
		streamManagement: { maxUnacked: 0, requestResume: true },
		// Only this SASL mechanism (e.g. 'PLAIN'), instead of Strophe's preference.
		...(mechanism ? { mechanisms: [saslMechanism(mechanism)] } : {}),
	});
	const inbox = new Inbox();
	const events = new EventEmitter();
	conn.xmlInput = (el) => {
		// Over BOSH Strophe hands over the whole <body/>; record its payloads.
		if (is(el, 'body', 'http://jabber.org/protocol/httpbind')) {
			for (let n = el.firstChild; n; n = n.nextSibling) if (n.nodeType === 1) inbox.push(n);
		} else {
			inbox.push(el);
		}
	};

	const jid = `${username}@${stack.domain}${resource ? `/${resource}` : ''}`;
	const connected = new Promise((resolve, reject) => {
		conn.connect(jid, password, (status, condition, elem) => {
			events.emit('status', status, condition, elem);
			if (status === Status.CONNECTED) resolve();
			else if (status === Status.AUTHFAIL) {
				// For a SASL failure Strophe hands us the <failure/> element.
				reject(new LoginError(status, condition || firstElement(elem)?.nodeName));
			} else if (status === Status.CONNFAIL || status === Status.DISCONNECTED) {
				reject(new LoginError(status, condition));
			}
		});
	});
	return { conn, inbox, events, connected };
}

/** Logs in and returns { conn, inbox, jid, send, iq, close }. */
export async function login(stack, username, password, options = {}) {
	const c = connect(stack, username, password, options);
	await withTimeout(c.connected, 10_000, `login of ${username}`);
	const { conn, inbox, events } = c;
	return {
		conn,
		inbox,
		/** Strophe's status changes: ('status', status, condition, element). */
		events,
		jid: conn.jid,
		bare: Strophe.getBareJidFromJid(conn.jid),
		send: (stanza) => conn.send(stanza),
		iq: (stanza) =>
			withTimeout(
				new Promise((resolve, reject) =>
					conn.sendIQ(stanza, resolve, (err) => reject(new Error(`iq failed: ${serialize(err)}`)))),
				10_000,
				'iq round trip',
			),
		/** Sends <close/> and waits until Strophe reports DISCONNECTED. */
		close() {
			if (!conn.connected) return Promise.resolve();
			const done = new Promise((resolve) => {
				events.on('status', (status) => status === Status.DISCONNECTED && resolve());
			});
			conn.disconnect('test done');
			return withTimeout(done, 10_000, `close of ${username}`);
		},
	};
}

export function serialize(el) {
	return el ? Strophe.serialize(el) : String(el);
}

/** Predicate helpers over DOM elements. */
export const is = (el, name, ns) =>
	el?.nodeType === 1 && el.localName === name && (ns === undefined || el.namespaceURI === ns);

export function child(el, name, ns) {
	for (let n = el?.firstChild; n; n = n.nextSibling) {
		if (n.nodeType === 1 && n.localName === name && (ns === undefined || n.namespaceURI === ns)) return n;
	}
	return null;
}

/** Text of the first child `name`, unescaped (Strophe.getText would re-escape it). */
export function childText(el, name) {
	const c = child(el, name);
	return c ? c.textContent : undefined;
}
