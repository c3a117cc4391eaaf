// Shared harness for the interop tests: a private Prosody (scripts/prosody.sh)
// and the gateway in front of it, started per test file and always stopped.
//
// Environment:
//   XMPP_GATEWAY_BIN     gateway binary (default: <repo>/target/debug/xmpp-gateway)
//   XMPP_INTEROP_TARGET  "gateway" (default) or "prosody": with "prosody" the
//                        clients talk to Prosody's own mod_websocket and mod_bosh,
//                        which checks the test scenarios themselves without the
//                        gateway; checks that inspect the gateway are skipped then.
//   INTEROP_KEEP=1       keep the temporary Prosody directory after the run.
//
// Logs of every stack go to <repo>/.run/interop/<name>/ (git-ignored), so a
// failure on CI can be read afterwards.

import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DOMAIN = 'localhost';
export const MUC_DOMAIN = 'conference.localhost';
export const TARGET = process.env.XMPP_INTEROP_TARGET === 'prosody' ? 'prosody' : 'gateway';
export const GATEWAY_BIN =
	process.env.XMPP_GATEWAY_BIN || path.join(REPO, 'target', 'debug', 'xmpp-gateway');

/** Every child process this harness started and has not seen exit yet. */
const children = new Set();

// A test file that throws or is interrupted must not leave Prosody or the
// gateway behind: signal whatever is still running when Node exits.
process.on('exit', () => {
	for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
	process.once(signal, () => {
		for (const child of children) child.kill('SIGKILL');
		process.exit(130);
	});
}

/** Thrown by a waitFor probe to give up at once (e.g. the process died). */
export class GiveUp extends Error {}

/**
 * Polls `probe` until it returns a truthy value, or throws after `timeout` ms.
 * This is the only way the tests wait: bounded, and with a message saying what
 * did not happen. A probe that throws is retried, unless it throws GiveUp.
 */
export async function waitFor(probe, { timeout = 10_000, interval = 50, what = 'condition' } = {}) {
	const deadline = Date.now() + timeout;
	let last;
	for (;;) {
		try {
			const value = await probe();
			if (value) return value;
			last = value;
		} catch (err) {
			if (err instanceof GiveUp) throw err;
			last = err;
		}
		if (Date.now() > deadline) {
			const detail = last instanceof Error ? `: ${last.message}` : ` (last value: ${JSON.stringify(last)})`;
			throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
		}
		await new Promise((resolve) => setTimeout(resolve, interval));
	}
}

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export function withTimeout(promise, ms, what) {
	let timer;
	const timeout = new Promise((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.unref();
		server.on('error', reject);
		server.listen(0, '127.0.0.1', () => {
			const { port } = server.address();
			server.close(() => resolve(port));
		});
	});
}

function canConnect(port) {
	return new Promise((resolve) => {
		const socket = net.connect({ host: '127.0.0.1', port });
		socket.once('connect', () => {
			socket.destroy();
			resolve(true);
		});
		socket.once('error', () => resolve(false));
	});
}

/**
 * Spawns a process whose output goes to `logFile`, tracked so that it is killed
 * when this Node process exits. `child.exited` resolves with { code, signal }.
 */
export function spawnTracked(command, args, { logFile, env } = {}) {
	const log = fs.openSync(logFile, 'a');
	const childEnv = { ...process.env, ...env };
	// The gateway takes XMPP_GATEWAY_* variables as configuration and rejects
	// unknown ones; the binary path is ours, not its.
	delete childEnv.XMPP_GATEWAY_BIN;
	const child = spawn(command, args, { stdio: ['ignore', log, log], env: childEnv });
	fs.closeSync(log);
	children.add(child);
	child.exited = new Promise((resolve) => {
		child.once('exit', (code, signal) => {
			children.delete(child);
			resolve({ code, signal });
		});
	});
	return child;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with how the child exited. */
export async function stopChild(child, { graceMs = 5000 } = {}) {
	if (!children.has(child)) return child.exited;
	child.kill('SIGTERM');
	let timer;
	const result = await Promise.race([
		child.exited,
		new Promise((resolve) => {
			timer = setTimeout(() => resolve(null), graceMs);
		}),
	]);
	clearTimeout(timer);
	if (result) return result;
	child.kill('SIGKILL');
	return child.exited;
}

function tail(file, lines = 30) {
	try {
		return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
	} catch {
		return '(no log)';
	}
}

/**
 * Starts a private Prosody: VirtualHost "localhost" with STARTTLS required,
 * MUC at conference.localhost, accounts from `users` ([name, password] pairs).
 * With `websocket: true` Prosody also serves its own /xmpp-websocket; with
 * `tls12Only: true` it speaks TLS 1.2 only (and so offers SCRAM-*-PLUS);
 * `mutualRoster` lists "a,b" pairs put in each other's roster (as in the demo).
 */
export async function startProsody({ users, websocket = false, tls12Only = false, mutualRoster = [], logDir }) {
	const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'xmpp-gw-prosody-'));
	const removeDir = () =>
		process.env.INTEROP_KEEP === '1' ? undefined : fsp.rm(dir, { recursive: true, force: true });
	const c2sPort = await freePort();
	const wsPort = websocket ? await freePort() : null;
	const args = ['setup', dir, '--c2s-port', String(c2sPort)];
	if (wsPort) args.push('--websocket-port', String(wsPort));
	if (tls12Only) args.push('--tls12-only');
	for (const [name, password] of users) args.push('--user', `${name}:${password}`);
	for (const pair of mutualRoster) args.push('--mutual-roster', pair);
	try {
		await execFileP(path.join(REPO, 'scripts', 'prosody.sh'), args);
	} catch (err) {
		await removeDir();
		throw err;
	}

	const run = () =>
		spawnTracked(path.join(REPO, 'scripts', 'prosody.sh'), ['run', dir], {
			logFile: path.join(logDir, 'prosody.out'),
		});
	let child = run();
	const prosodyLog = path.join(dir, 'prosody.log');
	const stop = async () => {
		await stopChild(child);
		await fsp.copyFile(prosodyLog, path.join(logDir, 'prosody.log')).catch(() => {});
		await removeDir();
	};
	const serving = () =>
		waitFor(
			async () => {
				if (!children.has(child)) throw new GiveUp(`Prosody exited early:\n${tail(prosodyLog)}`);
				return canConnect(c2sPort);
			},
			{ timeout: 20_000, what: `Prosody c2s port ${c2sPort}` },
		);
	try {
		await serving();
	} catch (err) {
		await stop();
		throw err;
	}

	return {
		dir,
		c2sPort,
		wsPort,
		ca: path.join(dir, 'certs', 'ca.pem'),
		get pid() {
			return child.pid;
		},
		/** Kills the running Prosody (SIGKILL: no goodbye to anyone) and waits for it to exit. */
		async kill(signal = 'SIGKILL') {
			child.kill(signal);
			await child.exited;
		},
		/** Starts Prosody again on the same directory and port, after kill(). */
		async restart() {
			child = run();
			await serving();
		},
		stop,
	};
}

/**
 * Every client of the suites connects from 127.0.0.1, like users behind one NAT,
 * and a test may start a thousand sessions at once: the per-address admission
 * limits (docs/protocol.md §7) are opened up as far as the global cap, which
 * tests/admission.rs and the unit tests check on their own.
 */
const LOOPBACK_ADMISSION = {
	XMPP_GATEWAY_LIMITS__MAX_SESSIONS_PER_ADDRESS: '100000',
	XMPP_GATEWAY_LIMITS__NEW_SESSIONS_PER_ADDRESS_PER_SEC: '100000',
	XMPP_GATEWAY_LIMITS__NEW_SESSIONS_BURST: '100000',
};

/**
 * Starts the gateway in front of `prosody` and waits until /healthz says ok.
 * `name` names its log file (<logDir>/<name>.log), for stacks with several
 * gateways; `config` is TOML text written next to the log and passed with
 * --config; `extraArgs` are appended to the command line.
 */
export async function startGateway({ prosody, logDir, extraArgs = [], name = 'gateway', config }) {
	if (!fs.existsSync(GATEWAY_BIN)) {
		throw new Error(`gateway binary not found at ${GATEWAY_BIN} (build it or set XMPP_GATEWAY_BIN)`);
	}
	const logFile = path.join(logDir, `${name}.log`);
	const configArgs = [];
	if (config !== undefined) {
		const configFile = path.join(logDir, `${name}.toml`);
		await fsp.writeFile(configFile, config);
		configArgs.push('--config', configFile);
	}
	// A port freePort found free can be taken by any socket (an outgoing connection gets an
	// ephemeral port too) before the gateway binds it: then the gateway exits at once with
	// "Address already in use", and is started again on other ports.
	for (let attempt = 1; ; attempt++) {
		const port = await freePort();
		const adminPort = await freePort();
		const child = spawnTracked(
			GATEWAY_BIN,
			[
				...configArgs,
				'--listen', `127.0.0.1:${port}`,
				'--admin-listen', `127.0.0.1:${adminPort}`,
				'--route', `${DOMAIN}=127.0.0.1:${prosody.c2sPort}`,
				'--upstream-ca', prosody.ca,
				...extraArgs,
			],
			{ logFile, env: { RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1', ...LOOPBACK_ADMISSION } },
		);
		const adminUrl = `http://127.0.0.1:${adminPort}`;
		try {
			await waitFor(
				async () => {
					if (!children.has(child)) throw new GiveUp(`gateway exited early:\n${tail(logFile)}`);
					const res = await fetch(`${adminUrl}/healthz`);
					return res.status === 200;
				},
				{ timeout: 20_000, what: 'gateway /healthz' },
			);
		} catch (err) {
			await stopChild(child);
			const portTaken = fs.readFileSync(logFile, 'utf8').includes('Address already in use');
			if (portTaken && attempt < 5) continue;
			throw err;
		}
		return gatewayHandle({ name, child, prosody, port, adminPort, adminUrl, logFile });
	}
}

/** What startGateway returns for a gateway that is serving. */
function gatewayHandle({ name, child, prosody, port, adminPort, adminUrl, logFile }) {
	return {
		name,
		pid: child.pid,
		port,
		adminPort,
		adminUrl,
		/** Resolves with { code, signal } once the process has exited. */
		exited: child.exited,
		/** Whether the process is still running. */
		get running() {
			return children.has(child);
		},
		/** Sends `signal` (e.g. 'SIGTERM' to start a drain) without waiting. */
		kill(signal) {
			return child.kill(signal);
		},
		wsUrl: `ws://127.0.0.1:${port}/xmpp-websocket`,
		boshUrl: `http://127.0.0.1:${port}/http-bind`,
		logFile,
		async metricsText() {
			const res = await fetch(`${adminUrl}/metrics`);
			if (res.status !== 200) throw new Error(`/metrics answered HTTP ${res.status}`);
			return res.text();
		},
		/** The `xmpp_gateway_sessions_active{transport="..."}` gauge. */
		async sessionsActive(transport = 'websocket') {
			const text = await this.metricsText();
			const re = new RegExp(
				`^xmpp_gateway_sessions_active\\{[^}]*transport="${transport}"[^}]*\\}\\s+(\\S+)`,
				'm',
			);
			const m = text.match(re);
			if (!m) throw new Error(`no xmpp_gateway_sessions_active{transport="${transport}"} in /metrics`);
			return Number(m[1]);
		},
		/**
		 * Every series of metric `name` in /metrics, as [{ labels, value }]
		 * (labels an object, e.g. { transport: 'bosh', reason: 'closed' }).
		 */
		async metricSeries(name) {
			const text = await this.metricsText();
			const series = [];
			for (const line of text.split('\n')) {
				const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/);
				if (!m || m[1] !== name) continue;
				const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
				series.push({ labels, value: Number(m[3]) });
			}
			return series;
		},
		/**
		 * The sum of the series of metric `name` whose labels include `labels`
		 * (e.g. metricValue('xmpp_gateway_sessions_started_total', { transport: 'bosh' })):
		 * 0 when there is none yet, as for a counter not touched so far.
		 */
		async metricValue(name, labels = {}) {
			return (await this.metricSeries(name))
				.filter((s) => Object.entries(labels).every(([key, value]) => s.labels[key] === value))
				.reduce((sum, s) => sum + s.value, 0);
		},
		/** Established TCP connections from this gateway to Prosody's c2s port. */
		upstreamSockets() {
			return establishedSockets(child.pid, prosody.c2sPort);
		},
		async stop() {
			return stopChild(child);
		},
	};
}

/**
 * Counts ESTABLISHED TCP sockets owned by process `pid` whose remote port is
 * `remotePort`, from /proc (the process's socket inodes joined with the
 * kernel's TCP tables), so no external tool is needed.
 */
export function establishedSockets(pid, remotePort) {
	const inodes = new Set();
	for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
		let target;
		try {
			target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
		} catch {
			continue; // closed while we looked
		}
		const m = target.match(/^socket:\[(\d+)\]$/);
		if (m) inodes.add(m[1]);
	}
	let count = 0;
	for (const table of ['tcp', 'tcp6']) {
		let text;
		try {
			text = fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
		} catch {
			continue;
		}
		for (const line of text.trim().split('\n').slice(1)) {
			const cols = line.trim().split(/\s+/);
			const remote = cols[2];
			const state = cols[3];
			const inode = cols[9];
			const port = parseInt(remote.split(':')[1], 16);
			// State 01 is TCP_ESTABLISHED (include/net/tcp_states.h).
			if (state === '01' && port === remotePort && inodes.has(inode)) count += 1;
		}
	}
	return count;
}

/**
 * Starts everything one test file needs and returns where clients connect.
 * `name` names the log directory; `users` are [name, password] pairs;
 * `prosody` holds extra startProsody options; `gatewayArgs` are extra
 * command-line arguments for the gateway (e.g. ['--static-dir', dir]).
 */
export async function startStack({ name, users, prosody: prosodyOptions = {}, gatewayArgs = [] }) {
	const logDir = path.join(REPO, '.run', 'interop', name);
	await fsp.rm(logDir, { recursive: true, force: true });
	await fsp.mkdir(logDir, { recursive: true });

	const prosody = await startProsody({ ...prosodyOptions, users, websocket: TARGET === 'prosody', logDir });
	let gateway = null;
	try {
		if (TARGET === 'gateway') gateway = await startGateway({ prosody, logDir, extraArgs: gatewayArgs });
	} catch (err) {
		await prosody.stop();
		throw err;
	}
	const wsUrl = gateway ? gateway.wsUrl : `ws://127.0.0.1:${prosody.wsPort}/xmpp-websocket`;
	const boshUrl = gateway ? gateway.boshUrl : `http://127.0.0.1:${prosody.wsPort}/http-bind`;
	return {
		wsUrl,
		boshUrl,
		domain: DOMAIN,
		prosody,
		gateway,
		logDir,
		async stop() {
			if (gateway) await gateway.stop();
			await prosody.stop();
		},
	};
}

/** Unique-enough names for rooms and resources within one run. */
export function uniqueName(prefix) {
	return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Text that must survive the trip byte for byte: XML specials, non-ASCII, emoji. */
export const TRICKY_TEXT = `Grüße <&>'" ünïcødé 日本語 🎉👩‍💻 ]]> &amp; done`;
