//! The end of a BOSH session (docs/protocol.md §4, "Ending a session" and "After the end"):
//! how every open request is answered, where the stanzas still pending go, and how requests
//! that come after the end are answered.

use super::{terminate_body, Action, BoshState, Kind, Request, Terminate};

impl<R> BoshState<R> {
    /// Ends the session. Every request still open is answered at once, in rid order, and each
    /// answer is kept for a repeat of its rid. Stanzas still pending go in an ordinary body,
    /// never in the terminate body (strophe.js skips the payload of a terminate body, stanza
    /// fails on it): to the oldest held request (processed in order, key-checked), else to
    /// the client's next request, and the terminate body answers the one after. When a
    /// request ended the session (the client's own terminate, or one that broke the
    /// protocol), nothing pending waits for a later request: that client sends no more.
    /// `reply` is that request: its rid, its key and where its answer goes.
    pub(super) fn terminate(
        &mut self,
        why: Terminate,
        reply: Option<(u64, Option<String>, R)>,
        out: &mut Vec<Action<R>>,
    ) {
        if self.ended {
            return;
        }
        if matches!(why, Terminate::Condition(c) if c != "system-shutdown") {
            // A protocol error ends the XMPP stream properly too (RFC 6120 §4.4).
            out.push(Action::CloseUpstream);
        }
        let ended_by_request = reply.is_some();
        let stanza_rid = self
            .held
            .front()
            .map(|h| h.rid)
            .filter(|_| !self.pending.is_empty());
        let mut stanzas = stanza_rid.map(|rid| self.body_with_pending(rid));
        self.stanzas_at_end = stanzas.is_some();
        let mut open: Vec<(u64, Option<String>, Vec<R>)> = self
            .held
            .drain(..)
            .map(|h| (h.rid, h.key, h.replies))
            .collect();
        open.extend(reply.map(|(rid, key, reply)| (rid, key, vec![reply])));
        for (rid, parked) in std::mem::take(&mut self.parked) {
            if parked.checked {
                open.push((rid, parked.req.key, vec![parked.req.reply]));
            } else {
                // Its key never fitted: nothing of the session, not even how it ended.
                self.refuse(parked.req.reply, out);
            }
        }
        open.sort_by_key(|(rid, _, _)| *rid);
        let end = terminate_body(&why);
        for (rid, key, replies) in open {
            let body = match stanzas.take_if(|_| Some(rid) == stanza_rid) {
                Some(b) => b,
                None => {
                    self.final_delivered = true;
                    end.clone()
                }
            };
            self.remember(rid, key, body.clone());
            for reply in replies {
                out.push(Action::Respond(reply, body.clone()));
            }
        }
        let last = self.last_rid;
        self.final_stanzas =
            (!ended_by_request && !self.pending.is_empty()).then(|| self.body_with_pending(last));
        self.pending.clear();
        self.pending_bytes = 0;
        self.final_body = Some(end);
        self.ended = true;
        let reason = match why {
            Terminate::Normal => "closed",
            Terminate::Condition("system-shutdown") | Terminate::SeeOtherUri(_) => "shutdown",
            Terminate::Condition("remote-connection-failed") => "upstream_error",
            Terminate::Condition(_) => "bad_input",
            Terminate::RemoteStreamError => "upstream_stream_error",
        };
        out.push(Action::End(reason));
    }

    /// A request after the end, admitted by its key (`checked`: see [`admit`](Self::admit)).
    /// A repeated rid gets its answer again; the requests that follow are taken in rid order,
    /// as before the end, so the stanzas waiting for the client's next request reach it ahead
    /// of the terminate body, and only with the right key.
    pub(super) fn after_end(&mut self, req: Request<R>, checked: bool, out: &mut Vec<Action<R>>) {
        if let Some(a) = self.cache.iter().find(|a| a.rid == req.rid) {
            out.push(Action::Respond(req.reply, a.body.clone()));
            return;
        }
        if req.rid != self.last_rid + 1 {
            if req.rid > self.last_rid && req.rid <= self.last_rid + self.params.requests as u64 {
                // Early: it waits for the gap (and is dropped, unanswered, with the session).
                self.park(req, checked, out);
            } else {
                // Stale or far ahead: it learns how the session ended, nothing more.
                let body = self
                    .final_body
                    .clone()
                    .unwrap_or_else(|| terminate_body(&Terminate::Condition("item-not-found")));
                out.push(Action::Respond(req.reply, body));
            }
            return;
        }
        self.next_after_end(req, out);
        while let Some(next) = self.parked.remove(&(self.last_rid + 1)) {
            self.next_after_end(next.req, out);
        }
    }

    /// The next request in rid order after the end.
    fn next_after_end(&mut self, req: Request<R>, out: &mut Vec<Action<R>>) {
        if !self.key_fits(&req) {
            // Not the client: nothing of the session, and the rid stays free for the client.
            self.refuse(req.reply, out);
            return;
        }
        self.advance_key(&req);
        self.last_rid = req.rid;
        if self.forward_after_end && !req.payload.is_empty() {
            // docs/protocol.md §6: a request sent before the client saw the drain's terminate
            // body still has its payload delivered.
            out.push(Action::Forward(req.payload));
        }
        if req.kind == Kind::Terminate {
            // The client has left: what waited for it is not delivered.
            self.final_stanzas = None;
        }
        let body = match (self.final_stanzas.take(), &self.final_body) {
            (Some(stanzas), _) => {
                self.stanzas_at_end = true;
                stanzas
            }
            (None, Some(b)) if !self.final_delivered || self.forward_after_end => {
                self.final_delivered = true;
                b.clone()
            }
            _ => terminate_body(&Terminate::Condition("item-not-found")),
        };
        self.remember(req.rid, req.key, body.clone());
        out.push(Action::Respond(req.reply, body));
    }
}

#[cfg(test)]
#[path = "ending_tests.rs"]
mod tests;
