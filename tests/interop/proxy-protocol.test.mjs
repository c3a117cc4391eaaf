// The browser's address toward the server (docs/protocol.md §1, `route.proxy_protocol`): a real
// HAProxy in TCP mode with `accept-proxy` stands in front of Prosody, and two gateways send it
// a PROXY header, one v1 and one v2. A browser connects from 127.0.0.23, a loopback address
// the gateway itself never uses, and logs in (SASL PLAIN, bind) through gateway, HAProxy and
// Prosody with STARTTLS; HAProxy's log (%ci:%cp) must name that address and the browser's own
// port, which it can only have learned from our header. Without the header HAProxy would have
// refused the connection.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import {
	REPO,
	DOMAIN,
	TARGET,
	startProsody,
	startGateway,
	spawnTracked,
	stopChild,
	freePort,
	waitFor,
	withTimeout,
} from './harness.mjs';

const PASSWORD = 'proxy-password';
const BROWSER_ADDRESS = '127.0.0.23';
const NS_FRAMING = 'urn:ietf:params:xml:ns:xmpp-framing';

const skip = TARGET !== 'gateway' && 'the subject is the header the gateway sends';
const logDir = path.join(REPO, '.run', 'interop', 'proxy-protocol');
let prosody;
let haproxy;
const gateways = {};

before(async () => {
	if (skip) return;
	await fsp.rm(logDir, { recursive: true, force: true });
	await fsp.mkdir(logDir, { recursive: true });
	prosody = await startProsody({ users: [['carol', PASSWORD], ['dave', PASSWORD]], logDir });
	haproxy = await startHaproxy(prosody.c2sPort);
	for (const version of ['v1', 'v2']) {
		gateways[version] = await startGateway({
			name: `gateway-${version}`,
			// The gateway dials HAProxy; the certificate is still Prosody's, through the TCP proxy.
			prosody: { c2sPort: haproxy.port, ca: prosody.ca },
			logDir,
			config: `[[route]]\ndomain = "${DOMAIN}"\nproxy_protocol = "${version}"\n`,
		});
	}
});

after(async () => {
	for (const gw of Object.values(gateways)) await gw.stop();
	if (haproxy) await stopChild(haproxy.child);
	await prosody?.stop();
});

/** HAProxy in TCP mode, reading a PROXY header on every connection, logging each at once. */
async function startHaproxy(prosodyPort) {
	const port = await freePort();
	const cfg = `global
	log stdout format raw local0 info
defaults
	mode tcp
	log global
	option logasap
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend c2s
	bind 127.0.0.1:${port} accept-proxy
	log-format "client=%ci:%cp"
	default_backend prosody
backend prosody
	server prosody 127.0.0.1:${prosodyPort}
`;
	const cfgFile = path.join(logDir, 'haproxy.cfg');
	await fsp.writeFile(cfgFile, cfg);
	const logFile = path.join(logDir, 'haproxy.log');
	const child = spawnTracked('haproxy', ['-db', '-f', cfgFile], { logFile });
	await waitFor(() => canConnect(port), { what: `HAProxy on ${port}` });
	return { child, port, logFile };
}

/** Whether something accepts TCP connections on `port`. */
function canConnect(port) {
	return new Promise((resolve) => {
		const socket = net.connect(port, '127.0.0.1');
		socket.once('connect', () => {
			socket.destroy();
			resolve(true);
		});
		socket.once('error', () => resolve(false));
	});
}

/**
 * A browser that speaks RFC 7395 by hand from `localAddress`: <open/>, SASL PLAIN, <open/>
 * again, bind. Returns the bound JID and the local port.
 */
async function login(url, username, { localAddress }) {
	const ws = new WebSocket(url, 'xmpp', { localAddress });
	const frames = [];
	let wake = () => {};
	ws.on('message', (data) => {
		frames.push(data.toString());
		wake();
	});
	await withTimeout(new Promise((resolve, reject) => {
		ws.once('open', resolve);
		ws.once('error', reject);
	}), 10_000, 'WebSocket open');
	const next = async (pattern, what) => {
		for (;;) {
			const i = frames.findIndex((f) => pattern.test(f));
			if (i >= 0) return frames.splice(0, i + 1)[i];
			await withTimeout(new Promise((resolve) => { wake = resolve; }), 10_000, what);
		}
	};
	const open = () => ws.send(`<open xmlns='${NS_FRAMING}' to='${DOMAIN}' version='1.0'/>`);
	open();
	const features = await next(/<stream:features|<features/, 'features');
	assert.match(features, /PLAIN/, features);
	const auth = Buffer.from(`\0${username}\0${PASSWORD}`).toString('base64');
	ws.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${auth}</auth>`);
	const success = await next(/<success|<failure/, 'SASL outcome');
	assert.match(success, /<success/, success);
	open();
	await next(/<stream:features|<features/, 'features after SASL');
	ws.send(`<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>`);
	const bound = await next(/id=['"]b1['"]/, 'bind result');
	const jid = bound.match(/<jid>([^<]+)<\/jid>/)?.[1];
	assert.ok(jid, bound);
	const port = ws._socket.localPort;
	return { ws, jid, port };
}

for (const version of ['v1', 'v2']) {
	test(`PROXY ${version}: HAProxy in front of Prosody logs the browser's address and port`, { skip }, async () => {
		const gw = gateways[version];
		const browser = await login(gw.wsUrl, version === 'v1' ? 'carol' : 'dave', { localAddress: BROWSER_ADDRESS });
		assert.match(browser.jid, new RegExp(`^${version === 'v1' ? 'carol' : 'dave'}@${DOMAIN}/`));
		const expected = `client=${BROWSER_ADDRESS}:${browser.port}`;
		await waitFor(() => fs.readFileSync(haproxy.logFile, 'utf8').includes(expected), {
			what: `HAProxy's log line ${expected}`,
		});
		browser.ws.close();
	});
}
