// Reading the Grafana dashboard and the metric catalogue for the ops tests:
// every query the dashboard would send, with its template variables replaced
// the way Grafana replaces them, and every metric name src/metrics.rs defines.

import fs from 'node:fs';
import path from 'node:path';
import { REPO } from '../../interop/harness.mjs';

export const DASHBOARD_FILE = path.join(REPO, 'grafana', 'dashboards', 'xmpp-gateway.json');
export const METRICS_RS = path.join(REPO, 'src', 'metrics.rs');
/** The cluster's metrics (docs/protocol.md §8), registered with the same registry. */
export const CLUSTER_METRICS_RS = path.join(REPO, 'src', 'cluster', 'metrics.rs');

export function loadDashboard(file = DASHBOARD_FILE) {
	return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/** Every panel, including those nested in collapsed rows. */
export function allPanels(dashboard) {
	const out = [];
	const walk = (panels) => {
		for (const p of panels ?? []) {
			out.push(p);
			walk(p.panels);
		}
	};
	walk(dashboard.panels);
	return out;
}

/**
 * Every query of the dashboard: `{ where, kind, text }` with kind "expr" for a
 * panel target and "variable" for a template variable's query.
 */
export function dashboardQueries(dashboard) {
	const queries = [];
	for (const panel of allPanels(dashboard)) {
		for (const target of panel.targets ?? []) {
			if (typeof target.expr === 'string' && target.expr.trim() !== '') {
				queries.push({
					where: `panel ${panel.id} "${panel.title}" target ${target.refId}`,
					kind: 'expr',
					text: target.expr,
				});
			}
		}
	}
	for (const variable of dashboard.templating?.list ?? []) {
		if (variable.type !== 'query') continue;
		const text = typeof variable.query === 'string' ? variable.query : variable.query?.query;
		if (text) queries.push({ where: `variable $${variable.name}`, kind: 'variable', text });
	}
	return queries;
}

/**
 * Replaces Grafana's variables in `text`: `vars` maps a template variable's name
 * to the string Grafana would put in its place; built-in interval variables get
 * fixed windows that suit a one-minute test. Throws on a variable left over, so
 * a dashboard using one this test does not know fails loudly.
 */
export function substitute(text, vars) {
	const builtins = {
		__rate_interval: '1m',
		__interval: '15s',
		__interval_ms: '15000',
		__range: '5m',
		__range_s: '300',
		__range_ms: '300000',
	};
	const all = { ...builtins, ...vars };
	// $name, ${name}, ${name:format} and the deprecated [[name]].
	const out = text.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (whole, a, b, c) => {
		const name = a ?? b ?? c;
		if (!(name in all)) throw new Error(`unknown template variable ${whole} in: ${text}`);
		return all[name];
	});
	return out;
}

/** How Grafana writes one selected value into a `=~` matcher: regex-escaped. */
export function regexValue(value) {
	return value.replace(/[\\^$*+?.()|[\]{}]/g, '\\\\$&');
}

/**
 * Grafana's Prometheus variable functions. `label_values(metric, label)` and
 * `label_values(label)` are answered from the label values API, `query_result(q)`
 * is a query; anything else is taken as PromQL.
 */
export function parseVariableQuery(text) {
	let m = text.match(/^\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*$/);
	if (m) return { fn: 'label_values', match: m[1], label: m[2] };
	m = text.match(/^\s*label_values\(\s*(\w+)\s*\)\s*$/);
	if (m) return { fn: 'label_values', match: null, label: m[1] };
	m = text.match(/^\s*query_result\((.*)\)\s*$/);
	if (m) return { fn: 'query', expr: m[1] };
	return { fn: 'query', expr: text };
}

/**
 * The metric catalogue as src/metrics.rs defines it: `names` the exported
 * family names, `histograms` the subset exported as _bucket/_sum/_count.
 */
export function catalogue(files = [METRICS_RS, CLUSTER_METRICS_RS]) {
	const src = [files].flat().map((f) => fs.readFileSync(f, 'utf8')).join('\n');
	const names = new Set();
	const histograms = new Set();
	// opts("name", ...) prefixes the name with xmpp_gateway_ in src/metrics.rs; the cluster's
	// metrics spell out their whole name.
	for (const m of src.matchAll(/\bopts\(\s*"([a-z0-9_]+)"/g)) {
		names.add(m[1].startsWith('xmpp_gateway_') ? m[1] : `xmpp_gateway_${m[1]}`);
	}
	for (const m of src.matchAll(/HistogramOpts::new\(\s*"([a-z0-9_]+)"/g)) {
		names.add(m[1]);
		histograms.add(m[1]);
	}
	// The prometheus crate's process collector, registered with the namespace
	// "xmpp_gateway", exports these (prometheus/src/process_collector.rs).
	if (/ProcessCollector::new\(/.test(src)) {
		for (const n of [
			'cpu_seconds_total',
			'open_fds',
			'max_fds',
			'virtual_memory_bytes',
			'resident_memory_bytes',
			'start_time_seconds',
		]) {
			names.add(`xmpp_gateway_process_${n}`);
		}
	}
	return { names, histograms };
}

/** Metric names (xmpp_gateway_*) an expression refers to. */
export function metricNames(expr) {
	return [...new Set(expr.match(/\bxmpp_gateway_[a-z0-9_]+/g) ?? [])];
}

/** The catalogue family a series name belongs to (histogram suffixes removed). */
export function familyOf(name, { histograms }) {
	for (const suffix of ['_bucket', '_sum', '_count']) {
		if (name.endsWith(suffix) && histograms.has(name.slice(0, -suffix.length))) {
			return name.slice(0, -suffix.length);
		}
	}
	return name;
}
