// A user logged in straight to Prosody's c2s port, without the gateway: plain
// TCP, STARTTLS, SASL PLAIN, bind. It sends raw XML, exactly as written, so a
// test can deliver to gateway users what any user on the network could send.

import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { withTimeout } from '../harness.mjs';

const header = (domain) =>
	`<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

/** Reads text from a socket until a pattern matches what arrived since the last match. */
class Reader {
	constructor(socket) {
		this.text = '';
		this.waiter = null;
		this.failure = null;
		socket.on('data', (chunk) => {
			this.text += chunk.toString('utf8');
			this.check();
		});
		socket.once('error', (err) => this.fail(err));
		socket.once('close', () => this.fail(new Error('c2s connection closed')));
	}

	fail(err) {
		this.failure ??= err;
		const waiter = this.waiter;
		this.waiter = null;
		waiter?.reject(err);
	}

	check() {
		if (!this.waiter) return;
		const m = this.waiter.pattern.exec(this.text);
		if (!m) return;
		this.text = this.text.slice(m.index + m[0].length);
		const { resolve } = this.waiter;
		this.waiter = null;
		resolve(m);
	}

	until(pattern) {
		if (this.failure) return Promise.reject(this.failure);
		return new Promise((resolve, reject) => {
			this.waiter = { pattern, resolve, reject };
			this.check();
		});
	}
}

/**
 * Logs `username` in on Prosody's c2s port and returns { jid, sendRaw, close }.
 * `sendRaw(xml)` writes the text as is; `close()` ends the stream.
 */
export async function loginDirect({ port, ca, domain = 'localhost', username, password, resource = 'direct' }) {
	const plain = net.connect({ host: '127.0.0.1', port });
	try {
		return await withTimeout(
			(async () => {
				await new Promise((resolve, reject) => plain.once('connect', resolve).once('error', reject));
				const plainReader = new Reader(plain);
				plain.write(header(domain));
				await plainReader.until(/<\/stream:features>/);
				plain.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
				await plainReader.until(/<proceed[^>]*\/>/);
				plain.removeAllListeners('data');
				const secure = tls.connect({ socket: plain, ca: fs.readFileSync(ca), servername: domain });
				await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
				const reader = new Reader(secure);
				secure.write(header(domain));
				await reader.until(/<\/stream:features>/);
				const credentials = Buffer.from(`\0${username}\0${password}`).toString('base64');
				secure.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${credentials}</auth>`);
				await reader.until(/<success[^>]*(\/>|<\/success>)/);
				secure.write(header(domain));
				await reader.until(/<\/stream:features>/);
				secure.write(
					`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`,
				);
				const [, jid] = await reader.until(/<jid>([^<]+)<\/jid>/);
				return {
					jid,
					sendRaw: (text) => secure.write(text),
					/** Resolves with the text of the next match of `pattern` on the stream. */
					until: (pattern) => withTimeout(reader.until(pattern), 10_000, `${pattern} from c2s`),
					close: () => new Promise((resolve) => secure.end('</stream:stream>', resolve)),
				};
			})(),
			10_000,
			`direct c2s login of ${username}`,
		);
	} catch (err) {
		plain.destroy();
		throw err;
	}
}
