// A private Prometheus for the ops tests: Debian's /usr/bin/prometheus with a
// throw-away configuration and TSDB directory, scraping one target every second
// on loopback, plus a small client for its HTTP API.
//
// Environment:
//   PROMETHEUS_BIN   Prometheus binary (default: /usr/bin/prometheus, from apt's `prometheus`)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitFor } from '../../interop/harness.mjs';

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN || '/usr/bin/prometheus';

/** Every Prometheus this module started and has not seen exit yet. */
const running = new Set();

// Whatever happens to the test process, no Prometheus is left behind.
process.on('exit', () => {
	for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts Prometheus scraping `target` ("HOST:PORT", path /metrics) every second
 * and resolves once it answers /-/ready. Logs go to `logDir`/prometheus.log.
 */
export async function startPrometheus({ target, logDir, jobName = 'xmpp-gateway' }) {
	if (!fs.existsSync(PROMETHEUS_BIN)) {
		throw new Error(
			`Prometheus not found at ${PROMETHEUS_BIN}: apt-get install prometheus (or set PROMETHEUS_BIN)`,
		);
	}
	const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'xmpp-gw-prometheus-'));
	const config = path.join(dir, 'prometheus.yml');
	// Scrape every second so a short test sees several samples; evaluation is on
	// demand through /api/v1/query, so no rules are configured.
	await fsp.writeFile(
		config,
		[
			'global:',
			'  scrape_interval: 1s',
			'  scrape_timeout: 1s',
			'  evaluation_interval: 1s',
			'scrape_configs:',
			`  - job_name: ${jobName}`,
			'    static_configs:',
			`      - targets: ['${target}']`,
			'',
		].join('\n'),
	);
	const port = await freePort();
	const logFile = path.join(logDir, 'prometheus.log');
	const log = fs.openSync(logFile, 'a');
	const child = spawn(
		PROMETHEUS_BIN,
		[
			`--config.file=${config}`,
			`--storage.tsdb.path=${path.join(dir, 'data')}`,
			`--web.listen-address=127.0.0.1:${port}`,
			'--storage.tsdb.retention.time=1h',
		],
		{ stdio: ['ignore', log, log] },
	);
	fs.closeSync(log);
	running.add(child);
	const exited = new Promise((resolve) => {
		child.once('exit', (code, signal) => {
			running.delete(child);
			resolve({ code, signal });
		});
	});

	const url = `http://127.0.0.1:${port}`;
	const prometheus = {
		url,
		pid: child.pid,
		/** Runs an instant query; resolves to the API's JSON whatever its status. */
		async query(expr) {
			const res = await fetch(`${url}/api/v1/query`, {
				method: 'POST',
				headers: { 'content-type': 'application/x-www-form-urlencoded' },
				body: new URLSearchParams({ query: expr }),
			});
			return res.json();
		},
		/** Values of `label` on series matching `match` (what Grafana's label_values() asks). */
		async labelValues(label, match) {
			const params = new URLSearchParams();
			if (match) params.append('match[]', match);
			const res = await fetch(`${url}/api/v1/label/${encodeURIComponent(label)}/values?${params}`);
			return res.json();
		},
		/**
		 * Resolves once Prometheus holds a sample of `metric` scraped after the
		 * Unix time `since` (seconds): everything the gateway counted before
		 * `since` is then visible to queries.
		 */
		async scrapedAfter(since, { metric = 'xmpp_gateway_build_info', timeout = 10_000 } = {}) {
			return waitFor(
				async () => {
					const r = await this.query(`max(timestamp(${metric}))`);
					const v = r.data?.result?.[0]?.value?.[1];
					return v !== undefined && Number(v) > since;
				},
				{ timeout, interval: 100, what: `a Prometheus scrape of ${metric} after ${since}` },
			);
		},
		async stop() {
			if (running.has(child)) {
				child.kill('SIGTERM');
				let timer;
				const done = await Promise.race([
					exited,
					new Promise((resolve) => {
						timer = setTimeout(() => resolve(null), 5000);
					}),
				]);
				clearTimeout(timer);
				if (!done) {
					child.kill('SIGKILL');
					await exited;
				}
			}
			await fsp.rm(dir, { recursive: true, force: true });
		},
	};

	try {
		await waitFor(
			async () => {
				if (!running.has(child)) throw new Error(`Prometheus exited early; see ${logFile}`);
				const res = await fetch(`${url}/-/ready`);
				return res.status === 200;
			},
			{ timeout: 20_000, what: 'Prometheus /-/ready' },
		);
	} catch (err) {
		await prometheus.stop();
		throw err;
	}
	return prometheus;
}

/** Unix time now, in seconds, as Prometheus counts it. */
export function nowSeconds() {
	return Date.now() / 1000;
}
