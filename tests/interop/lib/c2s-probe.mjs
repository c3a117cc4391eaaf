// Looks at what Prosody itself offers on its c2s port, without the gateway:
// plain TCP, STARTTLS, then the SASL mechanisms of the encrypted stream.
// Lets a test prove that something it expects the gateway to hide (e.g.
// SCRAM-SHA-1-PLUS) really was there upstream.

import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { withTimeout } from '../harness.mjs';

const header = (domain) =>
	`<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

/** Resolves with the text received once `pattern` matches it. */
function readUntil(socket, pattern) {
	return new Promise((resolve, reject) => {
		let text = '';
		const onData = (chunk) => {
			text += chunk.toString('utf8');
			if (pattern.test(text)) {
				socket.off('data', onData);
				resolve(text);
			}
		};
		socket.on('data', onData);
		socket.once('error', reject);
	});
}

/** SASL mechanisms Prosody offers after STARTTLS (TLS at most `maxVersion`). */
export async function upstreamMechanisms({ port, ca, domain = 'localhost', maxVersion = 'TLSv1.3' }) {
	const plain = net.connect({ host: '127.0.0.1', port });
	try {
		return await withTimeout(
			(async () => {
				await new Promise((resolve, reject) => plain.once('connect', resolve).once('error', reject));
				plain.write(header(domain));
				await readUntil(plain, /<\/stream:features>/);
				plain.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
				await readUntil(plain, /<proceed/);
				const secure = tls.connect({ socket: plain, ca: fs.readFileSync(ca), servername: domain, maxVersion });
				await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
				secure.write(header(domain));
				const features = await readUntil(secure, /<\/stream:features>/);
				secure.end('</stream:stream>');
				return [...features.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1]);
			})(),
			10_000,
			'probe of Prosody c2s features',
		);
	} finally {
		plain.destroy();
	}
}
