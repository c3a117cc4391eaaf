// Thin adapter around @xmpp/client (xmpp.js) for the interop tests: log in
// over WebSocket, record everything received, send stanzas, close cleanly.

import WebSocket from 'ws';
import { client, xml } from '@xmpp/client';
import { Inbox } from './inbox.mjs';
import { withTimeout } from '../harness.mjs';

// @xmpp/websocket uses the global WebSocket, which Node 20 only has behind a
// flag; the `ws` package provides the same browser-style API.
globalThis.WebSocket ??= WebSocket;

export { xml };

export const LOGIN_TIMEOUT_MS = 10_000;

/**
 * Creates a client for `username` on the stack's WebSocket endpoint without
 * connecting it. Automatic reconnection is off: a test must see a dropped
 * session as a failure, not have it papered over.
 */
export function createClient(stack, username, password, { resource, mechanism } = {}) {
	const xmpp = client({
		service: stack.wsUrl,
		domain: stack.domain,
		username,
		password,
		resource,
		// Force a SASL mechanism (e.g. 'PLAIN') instead of xmpp.js's preference.
		credentials: mechanism
			? (authenticate) => authenticate({ username, password }, mechanism)
			: undefined,
	});
	xmpp.reconnect.stop();
	// Errors also reject start(); this keeps an unhandled 'error' event from
	// killing the test process.
	xmpp.on('error', () => {});
	const inbox = new Inbox();
	xmpp.on('element', (el) => inbox.push(el));
	return { xmpp, inbox };
}

/** Logs in and returns { xmpp, inbox, jid, send, close }. */
export async function login(stack, username, password, options = {}) {
	const { xmpp, inbox } = createClient(stack, username, password, options);
	const jid = await withTimeout(xmpp.start(), LOGIN_TIMEOUT_MS, `login of ${username}`);
	return {
		xmpp,
		inbox,
		jid: jid.toString(),
		bare: jid.bare().toString(),
		send: (el) => xmpp.send(el),
		iq: (el) => withTimeout(xmpp.iqCaller.request(el), 10_000, 'iq round trip'),
		/** Sends <close/> and waits for the server's close. */
		close: () => withTimeout(xmpp.stop(), 10_000, `close of ${username}`),
	};
}

/** Body text of a <message/>, or undefined. */
export function bodyOf(el) {
	return el.getChildText('body') ?? undefined;
}
