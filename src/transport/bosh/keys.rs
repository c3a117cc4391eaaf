//! Key sequencing (XEP-0124 §15, docs/protocol.md §4 "Keys"), the first check on every
//! request of a session that uses keys: before its rid is looked at (a repeat, the window, the
//! cache, a gap, after the end). A request whose key does not fit is answered alone with
//! `item-not-found` and changes nothing: whoever knows only the sid can neither read such a
//! session nor end it. Without keys the sid is the only secret, and every request goes on.
//!
//! What fits depends on the rid. A repeat must carry the key its first copy carried (a
//! response kept from before keys were in use, such as the session request's, is repeated to
//! nobody). The next rid's key must hash to the current one. A request ahead of a gap, `d`
//! rids on, must hash to it in `d` steps; if it does not, it may still be the client's, sent
//! after a `newkey` still on its way, so it waits unchecked in a free place and is checked in
//! order like any other. A rid beyond the window is never hashed towards: it does not fit.

use super::{terminate_body, Action, BoshState, Request, Terminate};

impl<R> BoshState<R> {
    /// Whether a request may go further: `Some(true)` when its key fits (or keys are not in
    /// use), `Some(false)` when it may wait unchecked for a gap, `None` when it is refused.
    pub(super) fn admit(&self, req: &Request<R>) -> Option<bool> {
        if self.key_fits(req) {
            return Some(true);
        }
        let ahead = req.rid > self.last_rid + 1
            && req.rid <= self.last_rid + self.params.requests as u64
            && !self.parked.contains_key(&req.rid);
        ahead.then_some(false)
    }

    /// Whether the request carries the key its rid needs; changes nothing.
    pub(super) fn key_fits(&self, req: &Request<R>) -> bool {
        let Some(expected) = &self.key else {
            return true;
        };
        let Some(key) = req.key.as_deref() else {
            return false;
        };
        if let Some(first) = self.key_answered_with(req.rid) {
            return first.is_some_and(|first| same_key(first, key));
        }
        if req.rid <= self.last_rid {
            // Neither held nor kept: nothing to check it against.
            return false;
        }
        let steps = req.rid - self.last_rid;
        if steps > self.params.requests as u64 {
            return false;
        }
        let mut hashed = sha1_hex(key);
        for _ in 1..steps {
            // The keys in between, as the client would send them (lower-case hex).
            hashed = sha1_hex(&hashed);
        }
        same_key(&hashed, expected)
    }

    /// The chain moves on with a request processed in order, whose key fits: the next key
    /// hashes to its `newkey` (a new chain, §15.5) or else to its `key`. Without keys in use,
    /// a `newkey` starts them.
    pub(super) fn advance_key(&mut self, req: &Request<R>) {
        if let Some(newkey) = &req.newkey {
            self.key = Some(newkey.clone());
        } else if self.key.is_some() {
            self.key = req.key.clone();
        }
    }

    /// A request without the right key: `item-not-found` (XEP-0124 §15.4), for it alone.
    pub(super) fn refuse(&self, reply: R, out: &mut Vec<Action<R>>) {
        let body = terminate_body(&Terminate::Condition("item-not-found"));
        out.push(Action::Respond(reply, body));
    }

    /// The key that came with a rid still held or answered, if it is either.
    fn key_answered_with(&self, rid: u64) -> Option<Option<&str>> {
        let held = self.held.iter().find(|h| h.rid == rid).map(|h| &h.key);
        let answered = || self.cache.iter().find(|a| a.rid == rid).map(|a| &a.key);
        held.or_else(answered).map(Option::as_deref)
    }
}

/// Lower-case hex SHA-1 of a key, as XEP-0124 §15 chains them.
pub fn sha1_hex(key: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(key.as_bytes());
    let mut hex = String::with_capacity(40);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Two keys alike, hex case aside, compared to the end whatever the first difference: how
/// long a refusal takes tells nothing of how close a guess came.
fn same_key(a: &str, b: &str) -> bool {
    let diff = a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| {
        d | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
    });
    a.len() == b.len() && diff == 0
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
