// The warm pool (docs/protocol.md §1, `[route.pool]`) in front of a real Prosody: the
// gateway opens streams ahead (TCP, STARTTLS, the TLS handshake, the stream header, features),
// and real clients log in on them. Each library opens its stream with its own header: a
// client whose `xml:lang` differs from the ready streams' opens its own stream and the pool
// then follows that language; one that sends `from` (xmpp.js does, on every open) always
// opens its own. Every client logs in and is reached, whichever way it went.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { REPO, DOMAIN, TARGET, startProsody, startGateway, waitFor } from './harness.mjs';
import { login as xmppjsLogin, xml, bodyOf } from './lib/xmppjs.mjs';
import { login as stropheLogin, $msg, is } from './lib/strophe.mjs';
import { login as stanzaLogin } from './lib/stanza.mjs';

const PASSWORD = 'pool-password';
const USERS = ['alice', 'bob', 'carol', 'dave', 'erin'].map((u) => [u, PASSWORD]);
const WARM = 2;

const skip = TARGET !== 'gateway' && 'the subject is the gateway\'s pool';
const logDir = path.join(REPO, '.run', 'interop', 'warm-pool');
let prosody;
let gateway;
let stack;

before(async () => {
	if (skip) return;
	await fsp.rm(logDir, { recursive: true, force: true });
	await fsp.mkdir(logDir, { recursive: true });
	prosody = await startProsody({ users: USERS, logDir });
	gateway = await startGateway({
		prosody,
		logDir,
		config: `[[route]]\ndomain = "${DOMAIN}"\n[route.pool]\nwarm = ${WARM}\nmax_age_secs = 120\n`,
	});
	stack = { wsUrl: gateway.wsUrl, boshUrl: gateway.boshUrl, domain: DOMAIN };
});

after(async () => {
	await gateway?.stop();
	await prosody?.stop();
});

/** The pool's figures from /metrics: { ready, hit, miss }. */
async function pool() {
	const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
	const value = (re) => Number(text.match(re)?.[1] ?? NaN);
	return {
		ready: value(/^xmpp_gateway_upstream_pool_ready\{route="localhost"\} (\d+)$/m),
		hit: value(/^xmpp_gateway_upstream_pool_sessions_total\{result="hit",route="localhost"\} (\d+)$/m),
		miss: value(/^xmpp_gateway_upstream_pool_sessions_total\{result="miss",route="localhost"\} (\d+)$/m),
	};
}

async function full(what) {
	await waitFor(async () => (await pool()).ready === WARM, { timeout: 10_000, what: `${WARM} ready streams ${what}` });
}

test('real clients log in on ready streams; another language or a from gets its own, and all are reached', { skip }, async (t) => {
	await full('before any client');
	const outcome = [];
	const step = async (name, loginOf) => {
		const before = await pool();
		const s = await loginOf();
		t.after(() => s.close().catch(() => {}));
		const now = await pool();
		assert.equal(now.hit + now.miss, before.hit + before.miss + 1, `${name}: one session start counted`);
		const how = now.hit > before.hit ? 'hit' : 'miss';
		outcome.push(`${name}: ${how}`);
		await full(`after ${name}`);
		return { s, how };
	};
	// strophe.js over WebSocket opens with `to` alone: the ready streams' header.
	const alice = await step('strophe.js WebSocket', () => stropheLogin(stack, 'alice', PASSWORD));
	// strophe.js over BOSH asks for xml:lang='en': none ready has it, so its own stream; the
	// pool then opens streams in English, and the next BOSH login finds one.
	const bob = await step('strophe.js BOSH', () => stropheLogin(stack, 'bob', PASSWORD, { transport: 'bosh' }));
	const carol = await step('strophe.js BOSH again', () => stropheLogin(stack, 'carol', PASSWORD, { transport: 'bosh' }));
	// xmpp.js names the user in `from` on every <open/>: a stream of its own, carrying it.
	const dave = await step('xmpp.js WebSocket', () => xmppjsLogin(stack, 'dave', PASSWORD, { resource: 'pool' }));
	const erin = await step('stanza WebSocket', () => stanzaLogin(stack, 'erin', PASSWORD));
	t.diagnostic(`logins: ${outcome.join(', ')}`);
	assert.deepEqual(
		[alice.how, bob.how, carol.how, dave.how],
		['hit', 'miss', 'hit', 'miss'],
		outcome.join(', '),
	);
	assert.equal(dave.s.jid, 'dave@localhost/pool');
	assert.ok(erin.s.jid.startsWith('erin@localhost/'), erin.s.jid);

	// Sessions on ready streams and on their own reach each other through Prosody.
	dave.s.send(xml('message', { to: carol.s.jid, type: 'chat', id: 'p1' }, xml('body', {}, 'to carol')));
	await carol.s.inbox.waitFor((el) => is(el, 'message') && el.getAttribute('id') === 'p1', { what: 'p1 at carol' });
	alice.s.send($msg({ to: dave.s.jid, type: 'chat', id: 'p2' }).c('body').t('to dave'));
	const atDave = await dave.s.inbox.waitFor((el) => el.is('message') && el.attrs.id === 'p2', { what: 'p2 at dave' });
	assert.equal(bodyOf(atDave), 'to dave');
	bob.s.send($msg({ to: alice.s.jid, type: 'chat', id: 'p3' }).c('body').t('to alice'));
	await alice.s.inbox.waitFor((el) => is(el, 'message') && el.getAttribute('id') === 'p3', { what: 'p3 at alice' });
});
