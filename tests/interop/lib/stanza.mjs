// Thin adapter around stanza (npm `stanza`) for the interop tests: log in over
// WebSocket or BOSH, record what arrives, send, and log out. stanza speaks
// JSON rather than DOM: what the Inbox records are its parsed stanzas, each
// with a `kind` ('message', 'presence', 'iq') added.

import * as XMPP from 'stanza';
import { Inbox } from './inbox.mjs';
import { waitFor, withTimeout } from '../harness.mjs';

export const LOGIN_TIMEOUT_MS = 10_000;

/** An error carrying why a login failed ('not-authorized' for a SASL failure). */
export class LoginError extends Error {
	constructor(condition) {
		super(`login failed: ${condition}`);
		this.condition = condition;
	}
}

/**
 * Creates a client for `username` on the stack's WebSocket endpoint (or BOSH
 * with `transport: 'bosh'`) and starts connecting it. `started` resolves once
 * the session is bound; it rejects with a LoginError when authentication fails
 * or the connection ends first. Reconnection is off: a dropped session must
 * show as a failure.
 */
export function connect(stack, username, password, { transport = 'websocket', resource } = {}) {
	const client = XMPP.createClient({
		jid: `${username}@${stack.domain}`,
		password,
		resource,
		autoReconnect: false,
		transports:
			transport === 'bosh' ? { websocket: false, bosh: stack.boshUrl } : { websocket: stack.wsUrl, bosh: false },
	});
	if (process.env.STANZA_TRACE === '1') {
		const t0 = Date.now();
		client.on('raw', (direction, data) => console.log(`${Date.now() - t0} ${username} ${direction}: ${data}`));
	}
	const inbox = new Inbox();
	for (const kind of ['message', 'presence', 'iq']) {
		client.on(kind, (stanza) => inbox.push({ kind, ...stanza }));
	}
	/** Stream errors the client reported, e.g. { condition: 'conflict' }. */
	const streamErrors = [];
	client.on('stream:error', (error) => streamErrors.push(error));
	/** The `condition` of every BOSH terminate body it read (undefined for a plain one). */
	const terminations = [];
	client.on('bosh:terminate', (body) => terminations.push(body.condition));
	/** Resolves when stanza reports 'disconnected' (once the session has ended for it). */
	const disconnected = new Promise((resolve) => client.once('disconnected', resolve));
	const started = new Promise((resolve, reject) => {
		let authFailed = false;
		client.once('auth:failed', () => {
			authFailed = true;
		});
		client.once('session:started', resolve);
		disconnected.then(() => reject(new LoginError(authFailed ? 'not-authorized' : 'disconnected')));
	});
	started.catch(() => {});
	/** The `h` of the last XEP-0198 <a/> the client queued (see `acknowledged`); the count
	 * starts at 0 when stream management is enabled, once per client here. */
	const acks = { h: 0 };
	client.sm.on('send', (sm) => {
		if (sm.type === 'ack') acks.h = sm.handled;
	});
	client.connect();
	return { client, inbox, streamErrors, terminations, disconnected, started, acks };
}

/**
 * stanza writes outgoing data through queues of its own, and its BOSH
 * transport never completes a write still queued when the session ends, so a
 * disconnect() issued within milliseconds of a send (its XEP-0198 <r/> after
 * a message, or the <a/> it owes) would never report 'disconnected', through
 * any server (Prosody's own BOSH endpoint included). A person logging out
 * clicks long after; the tests do what that person does and log out once the
 * client has nothing left to send.
 */
function idle(client) {
	// Whatever it is still handling may make it answer (an XEP-0198 <a/> for an <r/>).
	const transport = client.transport;
	return (
		client.incomingDataQueue.idle() &&
		client.outgoingDataQueue.idle() &&
		(transport?.queue?.length ?? 0) === 0 &&
		(transport?.writableLength ?? 0) === 0
	);
}

/** Resolves once `client` has nothing left to send or to handle (see `idle`). */
export function quiet(client, what = 'the stanza client') {
	return waitFor(() => idle(client), { timeout: 5_000, what: `${what} to finish sending` });
}

/**
 * Resolves once the server has been told of every stanza the client handled (XEP-0198), so
 * the server has no reason to ask for an acknowledgement again. stanza answers an <r/> with
 * the count of the moment it read the <r/>, and its BOSH transport sends one queued item per
 * request, so that <a/> may go out after more stanzas arrived: the server, still owed those,
 * sends another <r/>, and if that one arrives after the logout began, stanza queues an <a/>
 * its ended transport never sends, and never reports 'disconnected'. An unrequested <a/>
 * with the current count (XEP-0198 §4 allows one at any time) settles the account first.
 */
async function acknowledged(c, what) {
	const { client, acks } = c;
	await quiet(client, what);
	while (client.sm.started && acks.h !== client.sm.handled) {
		client.sm.ack();
		await quiet(client, what);
	}
}

/** Logs in and returns { client, inbox, jid, bare, close, ... }. */
export async function login(stack, username, password, options = {}) {
	const c = connect(stack, username, password, options);
	await withTimeout(c.started, LOGIN_TIMEOUT_MS, `login of ${username}`);
	const { client } = c;
	return {
		...c,
		jid: client.jid,
		bare: client.jid.split('/')[0],
		/** Logs out (</stream:stream> or a BOSH terminate) and waits for 'disconnected'. */
		async close() {
			if (!client.transport) return;
			await acknowledged(c, `${username}'s stanza client`);
			client.disconnect();
			await withTimeout(c.disconnected, 5_000, `logout of ${username} ('disconnected')`);
		},
	};
}
