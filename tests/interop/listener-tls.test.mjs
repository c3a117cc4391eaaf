// TLS on the gateway's own listener (docs/protocol.md §7), for deployments
// without a TLS-terminating load balancer: real clients verify the gateway's
// certificate and log in over wss:// (xmpp.js) and https:// (strophe.js BOSH),
// then exchange a message through a real Prosody.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { startProsody, startGateway, REPO, TARGET } from './harness.mjs';

const execFileP = promisify(execFile);
const PASSWORD = 'tls-password';
const HERE = path.dirname(fileURLToPath(import.meta.url));

let prosody;
let gateway;
before(async () => {
	if (TARGET !== 'gateway') return;
	const logDir = path.join(REPO, '.run', 'interop', 'listener-tls');
	await fsp.rm(logDir, { recursive: true, force: true });
	await fsp.mkdir(logDir, { recursive: true });
	prosody = await startProsody({ users: [['alice', PASSWORD], ['bob', PASSWORD]], logDir });
	// Prosody's certificate for localhost, signed by the test CA, serves the gateway too.
	const certs = path.join(prosody.dir, 'certs');
	gateway = await startGateway({
		prosody,
		logDir,
		config: `[tls]\ncert_file = "${path.join(certs, 'localhost.crt')}"\nkey_file = "${path.join(certs, 'localhost.key')}"\n`,
	});
});
after(async () => {
	await gateway?.stop();
	await prosody?.stop();
});

test('xmpp.js over wss:// and strophe.js over https:// log in and talk through the TLS listener', { skip: TARGET !== 'gateway' }, async () => {
	const wss = `wss://localhost:${gateway.port}/xmpp-websocket`;
	const https = `https://localhost:${gateway.port}/http-bind`;
	const { stdout } = await execFileP(
		process.execPath,
		[path.join(HERE, 'lib', 'tls-clients.mjs'), wss, https, 'localhost', PASSWORD],
		{ env: { ...process.env, NODE_EXTRA_CA_CERTS: prosody.ca }, timeout: 30_000 },
	);
	const result = JSON.parse(stdout.trim().split('\n').pop());
	assert.equal(result.error, undefined, result.error);
	assert.match(result.websocket, /^alice@localhost\/wss/);
	assert.match(result.bosh, /^bob@localhost\/https/);
	assert.equal(result.delivered, 'secure');
});

test('a client that does not trust the certificate is refused', { skip: TARGET !== 'gateway' }, async () => {
	// Without the test CA the certificate is not trusted: the real client fails to connect.
	const { stdout } = await execFileP(
		process.execPath,
		[path.join(HERE, 'lib', 'tls-clients.mjs'), `wss://localhost:${gateway.port}/xmpp-websocket`, `https://localhost:${gateway.port}/http-bind`, 'localhost', PASSWORD],
		{ env: { ...process.env, NODE_EXTRA_CA_CERTS: '' }, timeout: 30_000 },
	);
	const result = JSON.parse(stdout.trim().split('\n').pop());
	assert.equal(result.websocket, null);
	assert.ok(result.error, 'the login failed');
});
