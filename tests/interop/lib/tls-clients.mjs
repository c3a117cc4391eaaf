// Run as a child process with NODE_EXTRA_CA_CERTS naming the test CA, so that
// the real client libraries verify the gateway's own certificate as browsers
// would: xmpp.js over wss:// and strophe.js over BOSH on https://, straight to
// the gateway's TLS listener. Prints one JSON line with what happened.
//
//   node tls-clients.mjs WSS_URL HTTPS_URL DOMAIN PASSWORD

import dns from 'node:dns';
import * as xmppjs from './xmppjs.mjs';
import * as strophe from './strophe.mjs';

// The certificate names localhost; the gateway listens on 127.0.0.1.
dns.setDefaultResultOrder('ipv4first');

const [wsUrl, boshUrl, domain, password] = process.argv.slice(2);
const stack = { wsUrl, boshUrl, domain };
const result = { websocket: null, bosh: null, delivered: null };
try {
	const alice = await xmppjs.login(stack, 'alice', password, { resource: 'wss' });
	result.websocket = alice.jid;
	const bob = await strophe.login(stack, 'bob', password, { transport: 'bosh', resource: 'https' });
	result.bosh = bob.jid;
	await alice.send(
		xmppjs.xml('message', { to: bob.jid, type: 'chat', id: 'over-tls' }, xmppjs.xml('body', {}, 'secure')),
	);
	const got = await bob.inbox.waitFor(
		(el) => strophe.is(el, 'message') && el.getAttribute('id') === 'over-tls',
		{ what: 'the message over TLS' },
	);
	result.delivered = strophe.childText(got, 'body');
	await Promise.allSettled([alice.close(), bob.close()]);
} catch (err) {
	result.error = String(err?.stack ?? err);
}
console.log(JSON.stringify(result));
process.exit(0);
