// An XMLHttpRequest for strophe.js's BOSH transport in Node that behaves like
// one browser per client, which the fetch() shim of the interop tests does not
// need to: each "browser" has its own cookie jar (any Set-Cookie is stored and
// sent back, as a browser does for a same-origin XHR; the test requires that the
// load balancer sets none), its own keep-alive connections, its own source
// address (127.0.1.x, distinct clients as the load balancer sees them), gzip
// like any browser, trust in the test CA for https, and a log of every request
// (rid, sid, message ids, the node that served it, how it ended).
//
// Strophe creates its XHRs itself, so the browser a request belongs to comes
// from the URL: `https://host/http-bind#browser=17`. A fragment never goes on
// the wire (in a browser neither), so the requests are exactly what Strophe
// sends to any URL.

import http from 'node:http';
import https from 'node:https';
import zlib from 'node:zlib';

/** One simulated browser: cookies, connections, and what it saw. */
export class Browser {
	constructor(id, { ca, localAddress } = {}) {
		this.id = id;
		this.localAddress = localAddress;
		/** name -> value, for the one origin these tests talk to. */
		this.cookies = new Map();
		/** Every Set-Cookie header received, in order. */
		this.setCookies = [];
		this.requests = 0;
		this.requestsWithCookie = 0;
		/**
		 * Every request and its answer, for the assertions and their messages:
		 * [{ sentAt, rid, ids, answeredAt, status, type, condition }], `ids` the
		 * message ids the request carried.
		 */
		this.exchanges = [];
		const options = { keepAlive: true, maxSockets: 6, localAddress };
		this.agents = { 'http:': new http.Agent(options), 'https:': new https.Agent({ ...options, ca }) };
	}

	/** The Cookie header for the next request, or undefined. */
	cookieHeader() {
		if (this.cookies.size === 0) return undefined;
		return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
	}

	/** RFC 6265 §5.2, as much as one origin needs: name=value, deleted when expired. */
	store(setCookie) {
		for (const header of setCookie ?? []) {
			this.setCookies.push(header);
			const [pair, ...attrs] = header.split(';').map((s) => s.trim());
			const eq = pair.indexOf('=');
			if (eq <= 0) continue;
			const name = pair.slice(0, eq);
			const expired = attrs.some((a) => {
				const [k, v = ''] = a.split('=');
				if (k.toLowerCase() === 'max-age') return Number(v) <= 0;
				if (k.toLowerCase() === 'expires') return Date.parse(v) <= Date.now();
				return false;
			});
			if (expired) this.cookies.delete(name);
			else this.cookies.set(name, pair.slice(eq + 1));
		}
	}

	/** The value of cookie `name`, or undefined. */
	cookie(name) {
		return this.cookies.get(name);
	}

	/** Closes its idle connections (in-flight requests are aborted by Strophe). */
	close() {
		for (const agent of Object.values(this.agents)) agent.destroy();
	}
}

const browsers = new Map();
let defaultOptions = {};

/** Options (e.g. { ca }) for browsers created from now on. */
export function configureBrowsers(options) {
	defaultOptions = options;
}

/** The browser `id`, created on first use; source address 127.0.1.(id+1). */
export function browser(id) {
	let b = browsers.get(String(id));
	if (!b) {
		const n = Number(id);
		const localAddress = Number.isInteger(n) && n >= 0 && n < 250 * 250
			? `127.0.${1 + Math.floor(n / 250)}.${1 + (n % 250)}`
			: undefined;
		b = new Browser(String(id), { ...defaultOptions, localAddress });
		browsers.set(String(id), b);
	}
	return b;
}

/** `url` with this browser's fragment, to give Strophe as its service URL. */
export function urlFor(url, id) {
	const u = new URL(url);
	u.hash = `browser=${id}`;
	return u.toString();
}

/** Closes every browser's connections. */
export function closeBrowsers() {
	for (const b of browsers.values()) b.close();
	browsers.clear();
}

/**
 * The XMLHttpRequest surface strophe.js uses: open, setRequestHeader,
 * overrideMimeType, send, abort, readyState, status, responseText,
 * responseXML, getAllResponseHeaders, onreadystatechange.
 */
export class BrowserXMLHttpRequest {
	constructor() {
		this.readyState = 0;
		this.status = 0;
		this.responseText = '';
		this.responseXML = null;
		this.onreadystatechange = null;
		this.withCredentials = false;
		this._headers = {};
		this._responseHeaders = '';
		this._aborted = false;
	}

	open(method, url) {
		this._method = method;
		this._url = url;
		this._setState(1);
	}

	setRequestHeader(name, value) {
		this._headers[name.toLowerCase()] = value;
	}

	overrideMimeType() {}

	getAllResponseHeaders() {
		return this._responseHeaders;
	}

	send(body = '') {
		const url = new URL(this._url);
		const id = new URLSearchParams(url.hash.slice(1)).get('browser') ?? 'default';
		url.hash = '';
		const b = browser(id);
		const payload = Buffer.from(body ?? '', 'utf8');
		const headers = {
			...this._headers,
			'accept-encoding': 'gzip',
			'content-length': String(payload.length),
		};
		const cookie = b.cookieHeader();
		if (cookie) headers.cookie = cookie;
		b.requests += 1;
		if (cookie) b.requestsWithCookie += 1;
		const text = payload.toString('utf8');
		const exchange = {
			sentAt: Date.now(),
			rid: /\srid=['"](\d+)['"]/.exec(text)?.[1],
			sid: /\ssid=['"]([0-9a-f]+)['"]/.exec(text)?.[1],
			ids: [...text.matchAll(/<message\b[^>]*?\sid=['"]([^'"]*)['"]/g)].map((m) => m[1]),
		};
		b.exchanges.push(exchange);
		this._exchange = exchange;
		const transport = url.protocol === 'https:' ? https : http;
		const req = transport.request(url, { method: this._method, headers, agent: b.agents[url.protocol] }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('error', () => {
				exchange.failedAt = Date.now();
				this._fail();
			});
			res.on('end', () => {
				b.store(res.headers['set-cookie']);
				let data = Buffer.concat(chunks);
				try {
					if (res.headers['content-encoding'] === 'gzip') data = zlib.gunzipSync(data);
				} catch {
					this._fail();
					return;
				}
				this.status = res.statusCode;
				this._responseHeaders = Object.entries(res.headers)
					.map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`)
					.join('\r\n');
				this.responseText = data.toString('utf8');
				exchange.answeredAt = Date.now();
				exchange.status = res.statusCode;
				// The node HAProxy sent it to (the test configuration adds the header).
				exchange.servedBy = res.headers['x-test-served-by'];
				const head = /<body\b[^>]*>/.exec(this.responseText)?.[0] ?? '';
				exchange.type = /\stype=['"]([^'"]*)['"]/.exec(head)?.[1];
				exchange.condition = /\scondition=['"]([^'"]*)['"]/.exec(head)?.[1];
				this.responseXML = this._parse(this.responseText);
				if (!this._aborted) this._setState(4);
			});
		});
		req.on('error', () => {
			exchange.failedAt = Date.now();
			this._fail();
		});
		this._req = req;
		req.end(payload);
	}

	abort() {
		if (this._exchange && this._exchange.answeredAt === undefined) this._exchange.abortedAt = Date.now();
		this._aborted = true;
		this._req?.destroy();
	}

	_fail() {
		this.status = 0; // a network error, as a browser reports it
		if (!this._aborted && this.readyState !== 4) this._setState(4);
	}

	_parse(text) {
		if (!text) return null;
		try {
			return new DOMParser().parseFromString(text, 'text/xml');
		} catch {
			return null;
		}
	}

	_setState(state) {
		this.readyState = state;
		this.onreadystatechange?.();
	}
}

/** Makes BrowserXMLHttpRequest the global XMLHttpRequest (replacing the fetch shim). */
export function installBrowserXMLHttpRequest() {
	globalThis.XMLHttpRequest = BrowserXMLHttpRequest;
}
