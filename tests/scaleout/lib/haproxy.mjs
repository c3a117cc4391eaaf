// The production HAProxy configuration (deploy/haproxy/haproxy.cfg), run for
// real in front of three gateways (a third server added as an operator would).
// Otherwise only ports and paths are changed, by strict
// textual substitution: every line we change or rely on must be found exactly
// as expected, so an edit to deploy/ that this test does not know about fails
// here with the line it was looking for instead of silently testing something
// else.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO, GiveUp, spawnTracked, stopChild, waitFor, freePort } from '../../interop/harness.mjs';

const execFileP = promisify(execFile);

/**
 * The file under test: deploy/haproxy/haproxy.cfg, or SCALEOUT_HAPROXY_CFG to try
 * a candidate change with this scenario before it goes into deploy/.
 */
export const DEPLOY_CFG = process.env.SCALEOUT_HAPROXY_CFG
	? path.resolve(process.env.SCALEOUT_HAPROXY_CFG)
	: path.join(REPO, 'deploy', 'haproxy', 'haproxy.cfg');

/**
 * Replaces every match of `pattern` (a RegExp with the `m` flag, matching whole
 * lines) by `replacement`, after checking that there are exactly `count`.
 */
function substitute(text, pattern, replacement, count = 1) {
	const re = new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`);
	const found = text.match(re)?.length ?? 0;
	if (found !== count) {
		throw new Error(
			`${path.relative(REPO, DEPLOY_CFG)} changed: expected ${count} line(s) matching ${pattern}, found ${found}; ` +
				'update tests/scaleout/lib/haproxy.mjs together with deploy/',
		);
	}
	return text.replace(re, replacement);
}

/** Checks that `pattern` matches exactly one line, and returns the match. */
function expectLine(text, pattern) {
	const re = new RegExp(pattern.source, `${pattern.flags.replace('g', '')}g`);
	const found = [...text.matchAll(re)];
	if (found.length !== 1) {
		throw new Error(
			`${path.relative(REPO, DEPLOY_CFG)} changed: expected one line matching ${pattern}, found ${found.length}`,
		);
	}
	return found[0];
}

/** Whether this machine can bind the IPv6 loopback address. */
export function ipv6Loopback() {
	return new Promise((resolve) => {
		const server = net.createServer();
		server.once('error', () => resolve(false));
		server.listen(0, '::1', () => server.close(() => resolve(true)));
	});
}

/**
 * What the deployed file says about health checks, read from it rather than
 * copied into the test: the gateway's drain_grace_secs must cover the time
 * HAProxy needs to mark a draining node down (inter x fall, README step 5).
 */
export function checkTiming(text) {
	// The checked backend's default-server line (the bosh backend's tracks it and checks nothing).
	const m = expectLine(text, /^\s*default-server\b.*\binter\b.*$/m)[0];
	const seconds = (key) => {
		const v = m.match(new RegExp(`\\b${key} (\\d+)(ms|s)\\b`));
		if (!v) throw new Error(`default-server line has no ${key}: ${m}`);
		return v[2] === 'ms' ? Number(v[1]) / 1000 : Number(v[1]);
	};
	const fall = Number(m.match(/\bfall (\d+)\b/)?.[1]);
	if (!fall) throw new Error(`default-server line has no fall: ${m}`);
	return { inter: seconds('inter'), fastinter: seconds('fastinter'), fall, markDownSecs: seconds('inter') * fall };
}

/**
 * deploy/haproxy/haproxy.cfg with its ports and paths moved:
 *   bind :80 / [::]:80          -> 127.0.0.1:httpPort / [::1]:httpPort
 *   bind :443 / [::]:443        -> 127.0.0.1:httpsPort / [::1]:httpsPort
 *   crt /etc/haproxy/certs/...  -> certPem
 *   stats socket /var/lib/...   -> statsSocket
 *   presetenv GW1_ADDR/GW1_ADMIN_PORT/GW2_... defaults -> the two gateways'
 *     public and admin listeners (the server lines use these variables for
 *     their address and their check port).
 * The privilege drop (user/group haproxy) stays when we run as root, as in
 * production; a non-root run cannot setuid and drops those two lines. Where
 * the hard descriptor limit (`fdLimit`) cannot hold 2 x maxconn, maxconn is
 * lowered to fit: the only change that is not a port or a path.
 *   a third node gw3, as gw2 (presetenv GW3_* and a server line in each backend);
 *   X-Test-Served-By on BOSH answers, naming the node HAProxy chose.
 * Everything else (timeouts, no stickiness, checks, no shutdown-sessions) is the
 * deployed file unchanged.
 */
export function testConfig(text, { httpPort, httpsPort, certPem, statsSocket, gateways, ipv6 = true, fdLimit = Infinity }) {
	const [gw1, gw2, gw3] = gateways;
	let cfg = text;
	// What the scenario relies on, checked before anything is changed.
	expectLine(cfg, /^\s*use_backend bosh if \{ path_beg \/http-bind \}$/m);
	expectLine(cfg, /^\s*balance roundrobin$/m);
	expectLine(cfg, /^\s*balance leastconn$/m);
	expectLine(cfg, /^\s*option redispatch\b.*$/m);
	expectLine(cfg, /^\s*http-check send meth GET uri \/readyz\b.*$/m);
	if (/^\s*(cookie|stick|stick-table|option persist)\b/m.test(cfg)) {
		throw new Error('deploy/haproxy/haproxy.cfg keeps BOSH clients on a node again (cookie, stick or persist)');
	}
	if (/^\s*[^#\n]*\bshutdown-sessions\b/m.test(cfg)) {
		throw new Error('deploy/haproxy/haproxy.cfg now cuts sessions of a node marked down (shutdown-sessions)');
	}
	// A third node, added as an operator adds one: its address variables and a server line in
	// each backend, like gw2's.
	cfg = substitute(
		cfg,
		/^(\s*)presetenv GW2_ADMIN_PORT 9282$/m,
		'$1presetenv GW2_ADMIN_PORT 9282\n$1presetenv GW3_ADDR 127.0.0.1:5283\n$1presetenv GW3_ADMIN_PORT 9283',
	);
	cfg = substitute(
		cfg,
		/^(\s*)server gw2 "\$\{GW2_ADDR\}" check port "\$\{GW2_ADMIN_PORT\}"$/m,
		'$1server gw2 "${GW2_ADDR}" check port "${GW2_ADMIN_PORT}"\n$1server gw3 "${GW3_ADDR}" check port "${GW3_ADMIN_PORT}"',
	);
	cfg = substitute(
		cfg,
		/^(\s*)server gw2 "\$\{GW2_ADDR\}" track gateways\/gw2$/m,
		'$1server gw2 "${GW2_ADDR}" track gateways/gw2\n$1server gw3 "${GW3_ADDR}" track gateways/gw3',
	);
	// For the test only: each BOSH answer names the node HAProxy sent the request to, so the
	// browser can tell that its requests went everywhere.
	cfg = substitute(cfg, /^(\s*)balance roundrobin$/m, '$1balance roundrobin\n$1http-response set-header X-Test-Served-By %s');

	cfg = substitute(cfg, /^(\s*stats socket )\/var\/lib\/haproxy\/admin\.sock( .*)$/m, `$1${statsSocket}$2`);
	cfg = substitute(cfg, /^(\s*bind ):80$/m, `$1127.0.0.1:${httpPort}`);
	cfg = substitute(
		cfg,
		/^(\s*bind ):443( ssl crt )\/etc\/haproxy\/certs\/xmpp\.pem( .*)$/m,
		`$1127.0.0.1:${httpsPort}$2${certPem}$3`,
	);
	if (ipv6) {
		cfg = substitute(cfg, /^(\s*bind )\[::\]:80( v6only)$/m, `$1[::1]:${httpPort}$2`);
		cfg = substitute(
			cfg,
			/^(\s*bind )\[::\]:443( v6only ssl crt )\/etc\/haproxy\/certs\/xmpp\.pem( .*)$/m,
			`$1[::1]:${httpsPort}$2${certPem}$3`,
		);
	} else {
		cfg = substitute(cfg, /^\s*bind \[::\]:80 v6only\n/m, '');
		cfg = substitute(cfg, /^\s*bind \[::\]:443 v6only ssl crt \/etc\/haproxy\/certs\/xmpp\.pem .*\n/m, '');
	}
	cfg = substitute(cfg, /^(\s*presetenv GW1_ADDR )127\.0\.0\.1:5281$/m, `$1127.0.0.1:${gw1.port}`);
	cfg = substitute(cfg, /^(\s*presetenv GW1_ADMIN_PORT )9281$/m, `$1${gw1.adminPort}`);
	cfg = substitute(cfg, /^(\s*presetenv GW2_ADDR )127\.0\.0\.1:5282$/m, `$1127.0.0.1:${gw2.port}`);
	cfg = substitute(cfg, /^(\s*presetenv GW2_ADMIN_PORT )9282$/m, `$1${gw2.adminPort}`);
	cfg = substitute(cfg, /^(\s*presetenv GW3_ADDR )127\.0\.0\.1:5283$/m, `$1127.0.0.1:${gw3.port}`);
	cfg = substitute(cfg, /^(\s*presetenv GW3_ADMIN_PORT )9283$/m, `$1${gw3.adminPort}`);
	// HAProxy needs about two descriptors per connection and refuses to start
	// when it cannot raise its limit that far (the comment on maxconn says so).
	// A sandbox whose hard limit is below that gets the largest maxconn that
	// fits; 200 sessions need a few hundred.
	const maxconn = Number(expectLine(cfg, /^\s*maxconn (\d+)$/m)[1]);
	if (2 * maxconn + 1000 > fdLimit) {
		cfg = substitute(cfg, /^(\s*maxconn )\d+$/m, `$1${Math.floor((fdLimit - 1000) / 2)}`);
	}
	if (process.getuid?.() !== 0) {
		cfg = substitute(cfg, /^\s*user haproxy\n/m, '');
		cfg = substitute(cfg, /^\s*group haproxy\n/m, '');
	}
	// Nothing may still point at the production paths.
	const leftover = cfg.split('\n').find((l) => !/^\s*#/.test(l) && /\/etc\/haproxy|\/var\/lib\/haproxy/.test(l));
	if (leftover) throw new Error(`unsubstituted production path in the test config: ${leftover.trim()}`);
	return cfg;
}

/**
 * A CA and a certificate for 127.0.0.1 and localhost signed by it, made with
 * openssl at test time. Returns { ca, pem }: the CA certificate clients trust,
 * and the certificate + key file HAProxy's `crt` takes.
 */
export async function makeCertificate(dir) {
	await fsp.mkdir(dir, { recursive: true });
	const run = (...args) => execFileP('openssl', args, { cwd: dir });
	const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
	await run('req', '-x509', '-new', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
		'-subj', '/CN=xmpp-gateway scale-out test CA',
		'-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
	await run('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1');
	await fsp.writeFile(
		path.join(dir, 'server.ext'),
		'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
			'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n',
	);
	await run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
		'-out', 'server.crt', '-days', '2', '-extfile', 'server.ext');
	const pem = path.join(dir, 'haproxy.pem');
	await fsp.writeFile(
		pem,
		(await fsp.readFile(path.join(dir, 'server.crt'), 'utf8')) + (await fsp.readFile(path.join(dir, 'server.key'), 'utf8')),
		{ mode: 0o600 },
	);
	return { ca: await fsp.readFile(path.join(dir, 'ca.pem'), 'utf8'), pem };
}

/** The hard RLIMIT_NOFILE a child process gets (what HAProxy can raise itself to). */
async function hardFdLimit() {
	const { stdout } = await execFileP('sh', ['-c', 'ulimit -Hn']);
	const n = Number(stdout.trim());
	return Number.isFinite(n) ? n : Infinity; // "unlimited"
}

/** One command on HAProxy's runtime API (the stats socket); resolves with its output. */
function runtimeCommand(socketPath, command) {
	return new Promise((resolve, reject) => {
		const s = net.connect(socketPath);
		let out = '';
		const timer = setTimeout(() => {
			s.destroy();
			reject(new Error(`no answer to "${command}" on ${socketPath}`));
		}, 2000);
		s.on('connect', () => s.write(`${command}\n`));
		s.on('data', (d) => {
			out += d;
		});
		s.on('error', (err) => {
			clearTimeout(timer);
			reject(err);
		});
		s.on('close', () => {
			clearTimeout(timer);
			resolve(out);
		});
	});
}

/**
 * Starts HAProxy with the test config in front of `gateways` ([gw1, gw2, gw3]
 * from startGateway) and waits until it reports every server UP. `httpsPort` and
 * `httpPort` may be chosen beforehand (the gateways' redirects name them).
 */
export async function startHaproxy({ gateways, certPem, dir, logDir, httpPort, httpsPort }) {
	const text = await fsp.readFile(DEPLOY_CFG, 'utf8');
	httpPort ??= await freePort();
	httpsPort ??= await freePort();
	const statsSocket = path.join(dir, 'admin.sock');
	const ipv6 = await ipv6Loopback();
	const cfg = testConfig(text, { httpPort, httpsPort, certPem, statsSocket, gateways, ipv6, fdLimit: await hardFdLimit() });
	const cfgFile = path.join(logDir, 'haproxy.cfg');
	await fsp.writeFile(cfgFile, cfg);
	await execFileP('haproxy', ['-c', '-q', '-f', cfgFile]).catch((err) => {
		throw new Error(`haproxy -c refused the test config ${cfgFile}: ${err.stderr || err.message}`);
	});
	const logFile = path.join(logDir, 'haproxy.log');
	// The presetenv defaults in the file are what we substituted; a GW*_ variable
	// from the caller's environment would override them.
	const env = Object.fromEntries(Object.keys(process.env).filter((k) => /^GW\d+_/.test(k)).map((k) => [k, undefined]));
	const child = spawnTracked('haproxy', ['-db', '-f', cfgFile], { logFile, env });
	const haproxy = {
		httpsPort,
		httpPort,
		cfgFile,
		logFile,
		timing: checkTiming(text),
		wsUrl: `wss://127.0.0.1:${httpsPort}/xmpp-websocket`,
		boshUrl: `https://127.0.0.1:${httpsPort}/http-bind`,
		/** { gw1: 'UP', gw2: 'DOWN 1/2', ... } from `show stat`. */
		async serverStatus() {
			const csv = await runtimeCommand(statsSocket, 'show stat');
			const lines = csv.trim().split('\n');
			const cols = lines[0].replace(/^# /, '').split(',');
			const status = {};
			for (const line of lines.slice(1)) {
				const row = Object.fromEntries(line.split(',').map((v, i) => [cols[i], v]));
				if (row.pxname === 'gateways' && row.svname !== 'BACKEND') status[row.svname] = row.status;
			}
			return status;
		},
		stop: () => stopChild(child),
	};
	try {
		await waitFor(
			async () => {
				if (child.exitCode !== null) throw new GiveUp(`haproxy exited:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
				const s = await haproxy.serverStatus();
				return s.gw1 === 'UP' && s.gw2 === 'UP' && s.gw3 === 'UP';
			},
			{ timeout: 15_000, interval: 100, what: 'HAProxy reporting gw1, gw2 and gw3 UP' },
		);
	} catch (err) {
		await stopChild(child);
		throw err;
	}
	return haproxy;
}
