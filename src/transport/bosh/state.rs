//! The BOSH session state machine (XEP-0124, docs/protocol.md §4), free of I/O: requests, upstream
//! elements and the clock go in, [`Action`]s come out. The session task carries the actions
//! out; tests drive this type directly with paused tokio time.
//!
//! What it keeps: the rid window (requests processed strictly in rid order, out-of-order ones
//! parked until the gap fills), the held requests, the last `requests` responses for repeated
//! rids, stanzas waiting for a request to carry them, the key chain, and the wait, inactivity,
//! pause and polling clocks. Once a session uses keys, every request is key-checked before any
//! of its rid is looked at (`keys.rs`, a part of this module).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

pub use super::terminate::{terminate_body, Terminate};

/// Negotiated session parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// Longest time a request is held (XEP-0124 `wait`).
    pub wait: Duration,
    /// Requests held at most (`hold`).
    pub hold: usize,
    /// Simultaneous requests allowed (`requests`, hold + 1).
    pub requests: usize,
    /// Time without any held request before the session ends (`inactivity`).
    pub inactivity: Duration,
    /// Shortest interval between empty requests when `hold` is 0 (`polling`).
    pub polling: Duration,
    /// Longest `pause` a client may ask for (`maxpause`).
    pub maxpause: Duration,
    /// Whether the client asked for acknowledgements (`ack` on the session request).
    pub acks: bool,
}

/// What a request asks for, beyond carrying payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary request.
    Normal,
    /// `xmpp:restart='true'` (XEP-0206 §5).
    Restart,
    /// `type='terminate'`.
    Terminate,
    /// A body the gateway refused (malformed or hostile payload): once its rid and key check
    /// out, the session ends with `bad-request`.
    Invalid,
}

/// One client request, parsed.
#[derive(Debug)]
pub struct Request<R> {
    /// Request id.
    pub rid: u64,
    /// `key` attribute (XEP-0124 §15).
    pub key: Option<String>,
    /// `newkey` attribute.
    pub newkey: Option<String>,
    /// Restart, terminate or neither.
    pub kind: Kind,
    /// Payload elements, each standalone, in order.
    pub payload: Vec<Bytes>,
    /// `pause` in seconds.
    pub pause: Option<u64>,
    /// `ack`: highest rid whose response the client has received.
    pub ack: Option<u64>,
    /// Where the answer goes.
    pub reply: R,
}

/// What the session task must do.
#[derive(Debug)]
pub enum Action<R> {
    /// Forward these elements upstream, in order.
    Forward(Vec<Bytes>),
    /// Restart the upstream stream.
    Restart,
    /// Send `</stream:stream>` upstream (client terminate).
    CloseUpstream,
    /// The client is gone or the node drains: leave the upstream stream for XEP-0198
    /// resumption where the server granted it, else close it (see `Session::leave`).
    LeaveUpstream,
    /// Answer a request with this complete `<body/>`.
    Respond(R, Bytes),
    /// The session is over; the task ends after carrying out the other actions.
    End(&'static str),
}

/// Copies of one held request kept to be answered together (XEP-0124 §14.3): the newest two,
/// so a first connection that is in fact alive still gets its answer after one repeat.
const COPIES_HELD: usize = 2;

struct Held<R> {
    rid: u64,
    /// The key the request carried: a repeat of its rid must carry the same one.
    key: Option<String>,
    replies: Vec<R>,
    deadline: Instant,
}

/// An answer kept for a repeat of its rid, with the key its request carried.
struct Answered {
    rid: u64,
    key: Option<String>,
    body: Bytes,
}

/// A request that arrived ahead of a gap. `checked`: its key fitted the chain on arrival (or
/// the session uses no keys). An unchecked one may be the client's, sent after a `newkey` that
/// has not arrived yet, so it waits too, but only in a free place, and counts for nothing
/// until it is checked in order.
struct Parked<R> {
    req: Request<R>,
    checked: bool,
}

/// The state of one BOSH session.
pub struct BoshState<R> {
    params: Params,
    /// Highest rid processed; the next in-order rid is this plus one.
    last_rid: u64,
    /// Requests that arrived ahead of a gap.
    parked: BTreeMap<u64, Parked<R>>,
    held: VecDeque<Held<R>>,
    /// Last responses by rid, for repeated requests (XEP-0124 §14.3).
    cache: VecDeque<Answered>,
    /// Elements from upstream waiting for a request.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    key: Option<String>,
    /// When the last request was answered or arrived; inactivity counts from here.
    idle_since: Instant,
    /// A granted pause replaces the inactivity period until the next request.
    pause: Option<Duration>,
    last_empty_poll: Option<Instant>,
    ended: bool,
    /// Stanzas that were pending at the end with no held request to carry them: an ordinary
    /// body for the client's next request, before the terminate body.
    final_stanzas: Option<Bytes>,
    /// The terminate body, for a client that had no request held when the session ended.
    final_body: Option<Bytes>,
    final_delivered: bool,
    /// Stanzas went to the client in an ordinary body at or after the end: a repeat of that
    /// rid may still come, so the session stays for it.
    stanzas_at_end: bool,
    /// Set by a drain: requests already on their way still have their payload forwarded.
    forward_after_end: bool,
}

impl<R> BoshState<R> {
    /// State after the session request `rid`, whose response is `created` (already sent).
    pub fn new(
        params: Params,
        rid: u64,
        newkey: Option<String>,
        created: Bytes,
        now: Instant,
    ) -> Self {
        let mut cache = VecDeque::with_capacity(params.requests);
        // The session request carries no key: once keys are in use, its answer (with the
        // stream features) is not repeated to anyone.
        cache.push_back(Answered {
            rid,
            key: None,
            body: created,
        });
        Self {
            params,
            last_rid: rid,
            parked: BTreeMap::new(),
            held: VecDeque::new(),
            cache,
            pending: Vec::new(),
            pending_bytes: 0,
            key: newkey,
            idle_since: now,
            pause: None,
            last_empty_poll: None,
            ended: false,
            final_stanzas: None,
            final_body: None,
            final_delivered: false,
            stanzas_at_end: false,
            forward_after_end: false,
        }
    }

    /// Bytes of upstream elements waiting for a request: the session stops reading upstream
    /// while this is over its limit.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Requests held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The ways of answering the oldest held request, to watch whether anyone still waits.
    pub fn oldest_held_replies(&mut self) -> Option<&mut [R]> {
        self.held.front_mut().map(|h| h.replies.as_mut_slice())
    }

    /// Nobody waits for the oldest held request any more (its HTTP connection closed): answer
    /// it now, as its `wait` would, so inactivity counts from the moment the browser went
    /// (XEP-0124 §10) and a repeat of its rid still gets the answer.
    pub fn on_abandoned(&mut self, out: &mut Vec<Action<R>>) {
        self.answer_oldest(out);
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether the client has been told how the session ended (and has had every stanza
    /// that was pending at the end).
    pub fn end_delivered(&self) -> bool {
        self.final_delivered && self.final_stanzas.is_none()
    }

    /// Whether nothing more can come of the session: the client has been told, and no answer
    /// carrying stanzas at the end may be asked for again.
    pub fn settled(&self) -> bool {
        self.end_delivered() && !self.stanzas_at_end
    }

    /// A request arrived.
    pub fn on_request(&mut self, req: Request<R>, now: Instant) -> Vec<Action<R>> {
        let mut out = Vec::new();
        // XEP-0124 §15: once the session uses keys, the key comes before any rid rule.
        let Some(checked) = self.admit(&req) else {
            self.refuse(req.reply, &mut out);
            return out;
        };
        if self.ended {
            self.after_end(req, checked, &mut out);
            return out;
        }
        if req.rid <= self.last_rid {
            self.repeated(req, &mut out);
            return out;
        }
        // XEP-0124 §14.2: beyond the window of `requests` is an error.
        if req.rid > self.last_rid + self.params.requests as u64 {
            self.terminate(
                Terminate::Condition("item-not-found"),
                Some((req.rid, req.key, req.reply)),
                &mut out,
            );
            return out;
        }
        // More simultaneous requests than allowed is overactivity (XEP-0124 §11): the held
        // ones, this one and every rid still missing before it are in flight together.
        if self.held.len() + (req.rid - self.last_rid) as usize > self.params.requests {
            if !checked {
                self.refuse(req.reply, &mut out);
                return out;
            }
            self.terminate(
                Terminate::Condition("policy-violation"),
                Some((req.rid, req.key, req.reply)),
                &mut out,
            );
            return out;
        }
        if req.rid != self.last_rid + 1 {
            // Out of order: wait for the gap (XEP-0124 §14.1).
            self.park(req, checked, &mut out);
            return out;
        }
        self.process(req, now, &mut out);
        while !self.ended {
            let next = self.last_rid + 1;
            let Some(parked) = self.parked.remove(&next) else {
                break;
            };
            self.process(parked.req, now, &mut out);
        }
        out
    }

    /// A request for a rid already waiting takes its place only if its key fits (`admit` lets
    /// an unchecked one wait in a free place only).
    fn park(&mut self, req: Request<R>, checked: bool, out: &mut Vec<Action<R>>) {
        let Some(older) = self.parked.insert(req.rid, Parked { req, checked }) else {
            return;
        };
        if older.checked {
            // The client sent it again: it gave up on the older connection.
            out.push(Action::Respond(older.req.reply, retry_body()));
        } else {
            self.refuse(older.req.reply, out);
        }
    }

    fn repeated(&mut self, req: Request<R>, out: &mut Vec<Action<R>>) {
        if let Some(h) = self.held.iter_mut().find(|h| h.rid == req.rid) {
            if h.replies.len() >= COPIES_HELD {
                // XEP-0124 §14.3: a client repeats a request once it gave up on the connection
                // that carried it, so the oldest copy has no reader left; should it have one,
                // `type='error'` asks it to repeat the request (§17.3), which makes it the
                // newest copy again.
                let oldest = h.replies.remove(0);
                out.push(Action::Respond(oldest, retry_body()));
            }
            h.replies.push(req.reply);
            return;
        }
        match self.cache.iter().find(|a| a.rid == req.rid) {
            Some(a) => out.push(Action::Respond(req.reply, a.body.clone())),
            // Too old to be kept (with keys in use, `admit` has refused it already).
            None => self.terminate(
                Terminate::Condition("item-not-found"),
                Some((req.rid, req.key, req.reply)),
                out,
            ),
        }
    }

    fn process(&mut self, req: Request<R>, now: Instant, out: &mut Vec<Action<R>>) {
        // Checked again in rid order, against the chain as it is now: a request that waited
        // for a gap may come after a `newkey`. One that fails is answered alone, and its rid
        // stays free for the client.
        if !self.key_fits(&req) {
            self.refuse(req.reply, out);
            return;
        }
        self.advance_key(&req);
        self.last_rid = req.rid;
        if req.kind == Kind::Invalid {
            self.terminate(
                Terminate::Condition("bad-request"),
                Some((req.rid, req.key, req.reply)),
                out,
            );
            return;
        }
        if let Some(ack) = req.ack {
            // Responses the client has seen need not be kept for repeats.
            self.cache.retain(|a| a.rid > ack);
        }
        self.pause = None;
        self.idle_since = now;
        let empty = req.payload.is_empty() && req.kind == Kind::Normal && req.pause.is_none();
        if !req.payload.is_empty() {
            out.push(Action::Forward(req.payload));
        }
        match req.kind {
            Kind::Terminate => {
                // The client has left: what is still pending is not delivered (docs/protocol.md
                // §4, ending a session). With XEP-0198 the server still counts it as
                // unacknowledged and handles it as for any closed stream.
                self.pending.clear();
                self.pending_bytes = 0;
                out.push(Action::CloseUpstream);
                self.terminate(Terminate::Normal, Some((req.rid, req.key, req.reply)), out);
                return;
            }
            Kind::Restart => out.push(Action::Restart),
            Kind::Normal | Kind::Invalid => {}
        }
        if self.params.hold == 0 && empty && self.pending.is_empty() {
            if let Some(last) = self.last_empty_poll {
                if now.duration_since(last) < self.params.polling {
                    self.terminate(
                        Terminate::Condition("policy-violation"),
                        Some((req.rid, req.key, req.reply)),
                        out,
                    );
                    return;
                }
            }
            self.last_empty_poll = Some(now);
        }
        self.held.push_back(Held {
            rid: req.rid,
            key: req.key,
            replies: vec![req.reply],
            deadline: now + self.params.wait,
        });
        if let Some(secs) = req.pause {
            // XEP-0124 §10: answer everything now and keep the session for the pause.
            self.pause = Some(Duration::from_secs(secs).min(self.params.maxpause));
            while !self.held.is_empty() {
                self.answer_oldest(out);
            }
            return;
        }
        // Keep at most `hold` requests: the oldest beyond that is answered at once.
        while self.held.len() > self.params.hold {
            self.answer_oldest(out);
        }
        if !self.pending.is_empty() && !self.held.is_empty() {
            self.answer_oldest(out);
        }
    }

    /// An element arrived from upstream.
    pub fn on_upstream(&mut self, element: Bytes) {
        self.pending_bytes += element.len();
        // An element is a slice of the read buffer it came in, and keeps that whole buffer
        // alive. One that will wait for a request is copied out, so what a session holds
        // stays close to `pending_bytes`, which the limit counts.
        let element = if self.held.is_empty() {
            Bytes::copy_from_slice(&element)
        } else {
            element
        };
        self.pending.push(element);
    }

    /// Call after a batch of [`on_upstream`](Self::on_upstream): answers the oldest held
    /// request with everything pending.
    pub fn flush(&mut self, out: &mut Vec<Action<R>>) {
        if !self.pending.is_empty() && !self.held.is_empty() {
            self.answer_oldest(out);
        }
    }

    /// The upstream stream ended (closed, failed or with a stream error).
    pub fn on_upstream_end(&mut self, why: Terminate, out: &mut Vec<Action<R>>) {
        if self.ended {
            // A write that fails while a drain lingers: the client has its answer already.
            return;
        }
        out.push(Action::CloseUpstream);
        self.terminate(why, None, out);
    }

    /// The gateway is draining (docs/protocol.md §6): pending stanzas and the redirect (or
    /// `system-shutdown`) go to the client.
    /// The session task has already dealt with the upstream stream.
    pub fn on_shutdown(&mut self, redirect: Option<&str>, out: &mut Vec<Action<R>>) {
        self.forward_after_end = true;
        let why = match redirect {
            Some(uri) => Terminate::SeeOtherUri(uri.to_string()),
            None => Terminate::Condition("system-shutdown"),
        };
        self.terminate(why, None, out);
    }

    /// The next instant [`on_tick`](Self::on_tick) has work to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        match self.held.front() {
            Some(h) => Some(h.deadline),
            None => Some(self.idle_since + self.idle_limit()),
        }
    }

    /// How long the session lives with no request held: a granted pause, unless a request
    /// from the client (one whose key fitted) is already waiting for a gap.
    fn idle_limit(&self) -> Duration {
        match self.pause {
            Some(pause) if !self.parked.values().any(|p| p.checked) => pause,
            _ => self.params.inactivity,
        }
    }

    /// Time passed: answer expired held requests empty, end an inactive session.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Action<R>>) {
        while self.held.front().is_some_and(|h| h.deadline <= now) {
            self.answer_oldest(out);
        }
        if self.held.is_empty() && now.duration_since(self.idle_since) >= self.idle_limit() {
            // XEP-0124 §10: nobody is listening; let go of upstream and forget the session.
            out.push(Action::LeaveUpstream);
            self.ended = true;
            self.final_delivered = true;
            self.parked.clear();
            out.push(Action::End("inactivity"));
        }
    }

    fn answer_oldest(&mut self, out: &mut Vec<Action<R>>) {
        let Some(h) = self.held.pop_front() else {
            return;
        };
        let body = self.body_with_pending(h.rid);
        self.remember(h.rid, h.key, body.clone());
        if self.held.is_empty() {
            // Inactivity counts from the moment no request is held.
            self.idle_since = self.idle_since.max(Instant::now());
        }
        for reply in h.replies {
            out.push(Action::Respond(reply, body.clone()));
        }
    }

    fn body_with_pending(&mut self, rid: u64) -> Bytes {
        let ack = (self.params.acks && rid < self.last_rid).then_some(self.last_rid);
        let mut body = String::with_capacity(64 + self.pending_bytes);
        body.push_str("<body xmlns='http://jabber.org/protocol/httpbind' xmlns:stream='http://etherx.jabber.org/streams'");
        if let Some(ack) = ack {
            body.push_str(&format!(" ack='{ack}'"));
        }
        if self.pending.is_empty() {
            body.push_str("/>");
            return Bytes::from(body);
        }
        body.push('>');
        let mut bytes = body.into_bytes();
        for el in self.pending.drain(..) {
            bytes.extend_from_slice(&el);
        }
        bytes.extend_from_slice(b"</body>");
        self.pending_bytes = 0;
        Bytes::from(bytes)
    }

    fn remember(&mut self, rid: u64, key: Option<String>, body: Bytes) {
        if self.cache.len() >= self.params.requests.max(1) {
            self.cache.pop_front();
        }
        self.cache.push_back(Answered { rid, key, body });
    }
}

/// XEP-0124 §17.3: a recoverable error, for a copy of a request that a newer copy replaced, or
/// a forwarded request its session's node did not answer (docs/protocol.md §8); its reader, if
/// any, repeats the request.
pub fn retry_body() -> Bytes {
    Bytes::from_static(b"<body xmlns='http://jabber.org/protocol/httpbind' type='error'/>")
}

#[path = "ending.rs"]
mod ending;

#[path = "keys.rs"]
mod keys;
pub use keys::sha1_hex;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
