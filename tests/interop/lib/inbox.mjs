// Records what a client receives so a test can wait for "the first element
// matching X", whether it already arrived or is still to come. Every wait has
// a deadline, so a missing stanza fails the test instead of hanging it.

export class Inbox {
	constructor() {
		this.items = [];
		this.waiters = new Set();
	}

	/** Called by the client adapter for every element received. */
	push(item) {
		this.items.push(item);
		for (const waiter of this.waiters) {
			if (waiter.match(item)) {
				this.waiters.delete(waiter);
				waiter.resolve(item);
			}
		}
	}

	/**
	 * Resolves with the first element (received after index `since`) for which
	 * `match` is true; rejects after `timeout` ms naming `what`.
	 */
	waitFor(match, { what = 'element', timeout = 10_000, since = 0 } = {}) {
		const found = this.items.slice(since).find(match);
		if (found) return Promise.resolve(found);
		return new Promise((resolve, reject) => {
			const waiter = { match, resolve };
			const timer = setTimeout(() => {
				this.waiters.delete(waiter);
				reject(new Error(`no ${what} within ${timeout} ms`));
			}, timeout);
			waiter.resolve = (item) => {
				clearTimeout(timer);
				resolve(item);
			};
			this.waiters.add(waiter);
		});
	}

	/** Index to pass as `since` to wait only for elements arriving from now on. */
	mark() {
		return this.items.length;
	}
}
