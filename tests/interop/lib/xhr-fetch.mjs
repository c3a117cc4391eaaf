// A minimal XMLHttpRequest on top of fetch(), enough for strophe.js's BOSH
// transport in Node (which has fetch but no XMLHttpRequest). Like a browser
// it fills responseXML, which Strophe reads first (@xmldom/xmldom parses it:
// Strophe's Node entry point installs DOMParser).

export class FetchXMLHttpRequest {
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
		this._headers[name] = value;
	}

	overrideMimeType() {}

	getAllResponseHeaders() {
		return this._responseHeaders;
	}

	send(body) {
		this._controller = new AbortController();
		fetch(this._url, {
			method: this._method,
			headers: this._headers,
			body,
			signal: this._controller.signal,
		})
			.then(async (res) => {
				this.status = res.status;
				this._responseHeaders = [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\r\n');
				this.responseText = await res.text();
				this.responseXML = this._parse(this.responseText);
			})
			.catch(() => {
				this.status = 0; // network error, as a browser reports it
			})
			.finally(() => {
				if (!this._aborted) this._setState(4);
			});
	}

	abort() {
		this._aborted = true;
		this._controller?.abort();
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

/** Installs the shim as the global XMLHttpRequest unless one exists. */
export function installXMLHttpRequest() {
	globalThis.XMLHttpRequest ??= FetchXMLHttpRequest;
}
