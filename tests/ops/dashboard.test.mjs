// Static checks of grafana/: the dashboard is importable as it is (no
// ${DS_PROMETHEUS} import inputs, a datasource variable instead), its layout is
// sane, it names only metrics of the catalogue in src/metrics.rs and shows every
// one of them, and the provisioning files point where the compose file mounts
// them. No services needed; tests/ops/promql.test.mjs runs the queries for real.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from '../interop/harness.mjs';
import {
	loadDashboard,
	allPanels,
	dashboardQueries,
	catalogue,
	metricNames,
	familyOf,
} from './lib/dashboard.mjs';

const dashboard = loadDashboard();
const panels = allPanels(dashboard);
const DS_UID = '${datasource}';

test('dashboard header suits current Grafana and needs no import inputs', () => {
	assert.equal(dashboard.uid, 'xmpp-gateway');
	assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);
	assert.equal(dashboard.__inputs, undefined, 'no __inputs: provisioning cannot fill them');
	assert.doesNotMatch(JSON.stringify(dashboard), /DS_PROMETHEUS/);
	assert.equal(dashboard.id, null, 'id is assigned by Grafana');
});

test('template variables: a Prometheus datasource and a multi-value instance', () => {
	const vars = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
	assert.equal(vars.datasource?.type, 'datasource');
	assert.equal(vars.datasource.query, 'prometheus');
	const instance = vars.instance;
	assert.equal(instance?.type, 'query');
	assert.equal(instance.multi, true);
	assert.equal(instance.includeAll, true);
	assert.deepEqual(instance.datasource, { type: 'prometheus', uid: DS_UID });
	const q = typeof instance.query === 'string' ? instance.query : instance.query.query;
	assert.equal(q, 'label_values(xmpp_gateway_build_info, instance)');
});

test('every panel and target queries through $datasource and filters by $instance', () => {
	for (const p of panels.filter((p) => p.type !== 'row')) {
		assert.deepEqual(p.datasource, { type: 'prometheus', uid: DS_UID }, `panel ${p.title}`);
		assert.ok(p.targets?.length > 0, `panel ${p.title} has targets`);
		for (const t of p.targets) {
			assert.deepEqual(t.datasource, { type: 'prometheus', uid: DS_UID }, `${p.title} ${t.refId}`);
			for (const selector of t.expr.match(/xmpp_gateway_[a-z0-9_]+(\{[^}]*\})?/g)) {
				assert.match(selector, /instance=~"\$instance"/, `${p.title} ${t.refId}: ${selector}`);
			}
		}
	}
});

test('panel ids are unique and panels do not overlap on the 24-column grid', () => {
	const ids = panels.map((p) => p.id);
	assert.equal(new Set(ids).size, ids.length, `duplicate ids: ${ids}`);
	const cells = new Map();
	for (const p of dashboard.panels) {
		const { x, y, w, h } = p.gridPos;
		assert.ok(x >= 0 && w > 0 && x + w <= 24, `panel ${p.title} width: ${JSON.stringify(p.gridPos)}`);
		for (let i = x; i < x + w; i += 1) {
			for (let j = y; j < y + h; j += 1) {
				const key = `${i},${j}`;
				assert.ok(!cells.has(key), `panels "${cells.get(key)}" and "${p.title}" overlap at ${key}`);
				cells.set(key, p.title);
			}
		}
	}
});

test('the dashboard names only catalogued metrics and shows every one', () => {
	const cat = catalogue();
	assert.ok(cat.names.size >= 20, `catalogue parsed from src/metrics.rs: ${[...cat.names]}`);
	const used = new Set();
	for (const q of dashboardQueries(dashboard)) {
		for (const name of metricNames(q.text)) {
			const family = familyOf(name, cat);
			assert.ok(cat.names.has(family), `${name} (in ${q.where}) is not in src/metrics.rs`);
			used.add(family);
		}
	}
	const missing = [...cat.names].filter((n) => !used.has(n));
	assert.deepEqual(missing, [], 'catalogued metrics without a panel');
});

test('per-node breakdowns exist for the key metric groups', () => {
	const byInstance = dashboardQueries(dashboard)
		.map((q) => q.text)
		.filter((e) => /by \([^)]*\binstance\b/.test(e));
	for (const family of [
		'sessions_active',
		'stanzas_total',
		'bytes_total',
		'upstream_connect_seconds',
		'upstream_connect_failures_total',
		'bosh_held_requests',
		'inputs_rejected_total',
		'draining',
		'process_cpu_seconds_total',
		'process_resident_memory_bytes',
		'process_open_fds',
	]) {
		assert.ok(
			byInstance.some((e) => e.includes(`xmpp_gateway_${family}`)),
			`no per-instance panel for xmpp_gateway_${family}`,
		);
	}
});

test('provisioning points at the directories deploy/docker-compose.yml mounts', () => {
	const grafana = path.join(REPO, 'grafana', 'provisioning');
	const ds = fs.readFileSync(path.join(grafana, 'datasources', 'prometheus.yml'), 'utf8');
	assert.match(ds, /^\s*type:\s*prometheus\s*$/m);
	assert.match(ds, /^\s*url:\s*http:\/\/prometheus:9090\s*$/m);
	const dash = fs.readFileSync(path.join(grafana, 'dashboards', 'xmpp-gateway.yml'), 'utf8');
	assert.match(dash, /^\s*type:\s*file\s*$/m);
	assert.match(dash, /^\s*path:\s*\/var\/lib\/grafana\/dashboards\s*$/m);
	const compose = path.join(REPO, 'deploy', 'docker-compose.yml');
	if (fs.existsSync(compose)) {
		const text = fs.readFileSync(compose, 'utf8');
		assert.match(text, /\.\.\/grafana\/provisioning:\/etc\/grafana\/provisioning/);
		assert.match(text, /\.\.\/grafana\/dashboards:\/var\/lib\/grafana\/dashboards/);
	}
});
