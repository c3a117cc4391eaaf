//! The transport-neutral session core (docs/protocol.md §1): one browser-side stream bound to
//! exactly one upstream client-to-server stream. The transports (WebSocket, BOSH) differ only
//! in framing: they turn what the browser sent into calls here and frame what comes back.
//! Everything else lives here once: opening (the domain check, the stream parameters), the
//! relay in both directions with its batching, restarts, the drain policy, the mapping of every
//! failure to one condition ([`Failure`]), and the session's metrics.
//!
//! A stanza toward the server: transport adapter -> [`Session::send`] -> upstream stream.
//! A stanza toward the browser: upstream stream -> [`Session::next_batch`] -> transport adapter.

mod failure;
mod rate;

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

pub use self::failure::Failure;
use self::rate::{Charge, ClientRate};
use crate::admission::{Admission, Refusal, Slot};
use crate::client_addr::ClientAddr;
use crate::metrics::{Direction, Transport, METRICS};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::upstream::stream::{StreamParams, UpstreamStream};
use crate::upstream::UpstreamError;
use crate::xml::features::filter_features_for_client;
use crate::xml::split::{ElementKind, StreamHeader, StreamItem};

/// What a transport needs from the process to run a session: the settings snapshot the session
/// keeps for its whole life, and the drain every session task observes.
#[derive(Clone)]
pub struct Context {
    /// The settings in force when the request or connection arrived.
    pub settings: Arc<Settings>,
    /// The drain.
    pub shutdown: Shutdown,
    /// The session caps every new session is admitted under.
    pub admission: Arc<Admission>,
}

impl Context {
    /// docs/protocol.md §7: a new session from `client` takes a slot under the global and the
    /// per-address caps, before anything is dialled; the slot is given back when it is
    /// dropped. A refusal is counted and logged here, for both transports.
    pub fn admit(&self, client: IpAddr, transport: Transport) -> Result<Slot, Refusal> {
        let limits = &self.settings.config.limits;
        let admitted = self
            .admission
            .admit(client, limits, tokio::time::Instant::now());
        if let Err(refusal) = &admitted {
            METRICS.session_refused(transport, refusal.reason());
            tracing::info!(
                %client,
                transport = transport.as_str(),
                reason = refusal.reason(),
                "new session refused"
            );
        }
        admitted
    }
}

/// Sleeps until `at`, or for ever when there is none: one arm of a session task's `select!`
/// for a timer that may be unset (a deadline, the end of a throttle).
pub async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the client asked for when it opened its stream (`<open/>`, or the BOSH session request).
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// `to`: the domain the client wants.
    pub to: Option<String>,
    /// `from`, forwarded because some servers use it (SASL2/FAST).
    pub from: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
}

/// Something the upstream server said, ready for a transport to frame.
#[derive(Debug)]
pub enum Outbound {
    /// A restarted stream's header: WebSocket shows it as `<open/>`, BOSH shows only the
    /// features after it (XEP-0206 §5).
    Header(Box<StreamHeader>),
    /// A standalone element for the client: a stanza, a nonza, or `<stream:features/>` already
    /// stripped of what must not reach clients.
    Element(Bytes),
}

/// How the upstream stream ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The server sent `</stream:stream>` (its own close, or the answer to the client's).
    Closed,
    /// The server's `<stream:error/>`, to be passed on.
    Error(Bytes),
    /// Reading or parsing the stream failed.
    Failed(Failure),
}

impl StreamEnd {
    /// The session end reason (a metrics label).
    pub fn end_reason(&self) -> &'static str {
        match self {
            StreamEnd::Closed => "closed",
            StreamEnd::Error(_) => "upstream_stream_error",
            StreamEnd::Failed(f) => f.end_reason(),
        }
    }
}

/// What the server said since the last batch: an iterator over the items already buffered, in
/// order, that ends when nothing more is buffered, when about `max_bytes` of elements have been
/// handed out, or when the stream ended ([`Batch::end`] then says how). It takes items from the
/// stream lazily, so a burst costs no allocation. Items not yet taken stay buffered in the
/// session, but the first one has left the stream: drop a batch unread only when the session
/// ends.
pub struct Batch<'s> {
    session: &'s mut Session,
    /// The item that completed the wait, not handed out yet.
    first: Option<Result<StreamItem, UpstreamError>>,
    bytes: usize,
    max_bytes: usize,
    end: Option<StreamEnd>,
}

impl Batch<'_> {
    /// The domain the session serves (for framing a restarted stream's header).
    pub fn domain(&self) -> &str {
        self.session.domain()
    }

    /// How the stream ended, if it did; call once the iterator is exhausted.
    pub fn end(self) -> Option<StreamEnd> {
        self.end
    }
}

impl Iterator for Batch<'_> {
    type Item = Outbound;

    fn next(&mut self) -> Option<Outbound> {
        let item = match self.first.take() {
            Some(item) => item,
            None if self.end.is_some() || self.bytes >= self.max_bytes => return None,
            None => self.session.upstream.buffered_item().transpose()?,
        };
        match self.session.translate(item) {
            Ok(out) => {
                if let Outbound::Element(b) = &out {
                    self.bytes += b.len();
                }
                Some(out)
            }
            Err(end) => {
                if let StreamEnd::Failed(e) = &end {
                    tracing::info!(error = %e, "upstream stream failed");
                    self.session.broken = true;
                }
                self.end = Some(end);
                None
            }
        }
    }
}

/// What [`Session::next_event`] brought.
pub enum Event<'s> {
    /// What the server said.
    Batch(Batch<'s>),
    /// What was queued for the server has been written, or writing it failed.
    Written(Result<(), Failure>),
}

/// What the drain does to a session (docs/protocol.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The server granted XEP-0198 resumption: the upstream stream has been left to the server,
    /// which keeps what is in flight for the client's `<resume/>` through another node.
    Left,
    /// Any other stream: the transport delivers what is in flight, then the stream is closed.
    Close,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh session number for logs.
pub fn next_session_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// How long ending a session may take toward the server (closing tag, TLS close_notify).
const FINISH_DEADLINE: Duration = Duration::from_secs(2);

/// A live session: the upstream stream and the bookkeeping around it.
pub struct Session {
    transport: Transport,
    upstream: UpstreamStream,
    params: StreamParams,
    ended: Option<&'static str>,
    started: std::time::Instant,
    /// The server answered `<enable resume='true'/>` (or a `<resume/>`): see [`Session::leave`].
    resumable: bool,
    /// Reading or writing the upstream stream failed: it is dropped, never closed.
    broken: bool,
    /// What the browser may still send (docs/protocol.md §7).
    rate: ClientRate,
    /// Bytes queued toward the server past which the transport stops reading the browser.
    max_queued: usize,
}

/// A freshly opened session with what the client is told first.
pub struct Opened {
    /// The session.
    pub session: Session,
    /// The server's stream header.
    pub header: StreamHeader,
    /// The server's features, filtered for the client.
    pub features: Bytes,
    /// Whether the upstream stream is encrypted.
    pub tls: bool,
}

impl Session {
    /// Opens the upstream stream for the domain the client named. A missing or unknown domain
    /// is refused before anything is dialled (docs/protocol.md §1: never an open relay).
    /// `client` is the browser, as a route with `proxy_protocol` names it to the server.
    pub async fn open(
        settings: &Settings,
        transport: Transport,
        request: OpenRequest,
        client: ClientAddr,
    ) -> Result<Opened, Failure> {
        let Some(to) = request.to.filter(|t| !t.is_empty()) else {
            METRICS.input_rejected("no_to");
            return Err(Failure::NoDomain);
        };
        let params = StreamParams {
            to,
            from: request.from,
            lang: request.lang,
        };
        let domain = params.to.clone();
        let result = Self::establish(settings, transport, params, client).await;
        if let Err(e) = &result {
            METRICS.connect_failed(e.kind());
            tracing::info!(%domain, error = %e, "upstream stream not opened");
        }
        result.map_err(Failure::Upstream)
    }

    async fn establish(
        settings: &Settings,
        transport: Transport,
        params: StreamParams,
        client: ClientAddr,
    ) -> Result<Opened, UpstreamError> {
        let route = settings
            .upstreams
            .route(&params.to)
            .ok_or(UpstreamError::UnknownDomain)?;
        // docs/protocol.md §1: a ready stream from the route's warm pool, when one was opened
        // with the header this session's would have; else its own.
        let ready = settings.pools.take(&route.config.domain, &params);
        let (upstream, opened) = match ready {
            Some(ready) => ready,
            None => {
                UpstreamStream::establish(
                    &settings.upstreams,
                    &route,
                    &params,
                    &settings.upstream_limits,
                    client,
                )
                .await?
            }
        };
        let features = filter_features_for_client(&opened.features.bytes)?;
        tracing::info!(domain = %params.to, tls = upstream.is_tls(), "session open");
        METRICS.session_started(transport);
        Ok(Opened {
            tls: upstream.is_tls(),
            session: Session {
                transport,
                upstream,
                params,
                ended: None,
                started: std::time::Instant::now(),
                resumable: false,
                broken: false,
                rate: ClientRate::new(&settings.config.limits, tokio::time::Instant::now()),
                max_queued: settings.config.limits.max_buffered_bytes,
            },
            header: opened.header,
            features,
        })
    }

    /// The domain the session serves.
    pub fn domain(&self) -> &str {
        &self.params.to
    }

    /// Bytes the session holds for either side: received from the server and not yet handed
    /// out (a partial element), and queued for the server.
    pub fn buffered(&self) -> usize {
        self.upstream.buffered() + self.upstream.queued()
    }

    /// Waits for the server to say something, writing what is queued for it meanwhile; the
    /// batch then yields that and everything already buffered behind it, so a transport writes
    /// a burst with one flush (or one BOSH response). Cancel-safe: nothing is taken from the
    /// stream before the first item is complete. A failed write ends the stream.
    ///
    /// While the browser is not read because the queue toward the server is full (see
    /// [`accepts_input`](Self::accepts_input)), the batch also comes, empty, once the queue has
    /// been written: the transport then reads the browser again.
    pub async fn next_batch(&mut self, max_bytes: usize) -> Batch<'_> {
        let wake_when_written = !self.accepts_input();
        let first = poll_fn(|cx| {
            if wake_when_written {
                match self.upstream.poll_write_queued(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(None),
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    Poll::Pending => {}
                }
            }
            self.upstream.poll_next_item(cx).map(Some)
        })
        .await;
        Batch {
            session: self,
            first,
            bytes: 0,
            max_bytes,
            end: None,
        }
    }

    /// One wait on the server for a transport's `select!`: with `read` (the transport has room
    /// for what the server says), [`next_batch`](Self::next_batch); without, only the writing
    /// of what is queued for the server ([`flush`](Self::flush)), so the browser's stanzas
    /// still go out while the browser is slow to take the server's.
    pub async fn next_event(&mut self, read: bool, max_bytes: usize) -> Event<'_> {
        if read {
            Event::Batch(self.next_batch(max_bytes).await)
        } else {
            Event::Written(self.flush().await)
        }
    }

    fn translate(
        &mut self,
        item: Result<StreamItem, UpstreamError>,
    ) -> Result<Outbound, StreamEnd> {
        let failed = |e: UpstreamError| StreamEnd::Failed(Failure::Upstream(e));
        Ok(match item.map_err(failed)? {
            StreamItem::Header(h) => Outbound::Header(Box::new(h)),
            StreamItem::End => return Err(StreamEnd::Closed),
            StreamItem::Element(e) => match e.kind {
                // docs/protocol.md §1: no <starttls/>, no channel binding toward clients.
                ElementKind::Features => Outbound::Element(
                    filter_features_for_client(&e.bytes).map_err(|x| failed(x.into()))?,
                ),
                ElementKind::StreamError => {
                    tracing::info!("upstream stream error");
                    return Err(StreamEnd::Error(e.bytes));
                }
                _ => {
                    METRICS.relayed(self.transport, Direction::ToClient, e.bytes.len());
                    if is_resumption_granted(&e.bytes) {
                        self.resumable = true;
                    }
                    Outbound::Element(e.bytes)
                }
            },
        })
    }

    /// Queues one validated client element, verbatim, for the server. Never waits: the bytes
    /// are written while the transport waits in [`next_batch`](Self::next_batch) or
    /// [`flush`](Self::flush), and a transport reads the browser only while
    /// [`accepts_input`](Self::accepts_input).
    pub fn send(&mut self, element: &[u8]) -> Result<(), Failure> {
        if self.rate.charge(element.len(), tokio::time::Instant::now()) == Charge::Exceeded {
            METRICS.input_rejected("rate_limited");
            tracing::info!("browser sent faster than its rate limits; ending the session");
            return Err(Failure::RateExceeded);
        }
        METRICS.relayed(self.transport, Direction::ToUpstream, element.len());
        self.upstream.queue(element);
        Ok(())
    }

    /// docs/protocol.md §7: whether the transport may read more from the browser. Past
    /// `limits.max_buffered_bytes` queued for a server that does not take them, the browser is
    /// not read (TCP pushes back on it) until the server catches up or the write deadline ends
    /// the session; the session's timers go on meanwhile.
    pub fn accepts_input(&self) -> bool {
        self.upstream.queued() < self.max_queued
    }

    /// Whether bytes queued for the server are still to be written.
    pub fn has_output(&self) -> bool {
        !self.broken && self.upstream.has_output()
    }

    /// Writes what is queued for the server, for a transport that is not waiting in
    /// [`next_batch`](Self::next_batch) (it holds enough for the browser already).
    /// Cancel-safe. A failure ends the stream, as a failed read does.
    pub async fn flush(&mut self) -> Result<(), Failure> {
        let flushed = self.upstream.flush().await;
        if let Err(e) = &flushed {
            tracing::info!(error = %e, "upstream stream failed");
            self.broken = true;
        }
        Ok(flushed?)
    }

    /// docs/protocol.md §7, `throttle` mode: the browser has sent more than its rates allow,
    /// and its transport reads nothing more from it until this instant. `None` while within
    /// the rates.
    pub fn paused_until(&self) -> Option<tokio::time::Instant> {
        self.rate.paused_until(tokio::time::Instant::now())
    }

    /// Restarts the upstream stream after the client's new stream header (RFC 6120 §4.3.3).
    /// A restart may not move the session to another domain. The server's new header and
    /// features arrive through [`next_batch`](Self::next_batch). The new header is queued.
    pub fn restart(&mut self, request: OpenRequest) -> Result<(), Failure> {
        if let Some(to) = &request.to {
            if !same_domain(to, &self.params.to) {
                METRICS.input_rejected("restart_domain");
                return Err(Failure::WrongDomain);
            }
        }
        if request.from.is_some() {
            self.params.from = request.from;
        }
        if request.lang.is_some() {
            self.params.lang = request.lang;
        }
        self.upstream.restart(&self.params);
        Ok(())
    }

    /// Queues `</stream:stream>` for the server (at most once): the client closed its stream,
    /// or the gateway ends it. A stream that failed is not closed but dropped, as a lost
    /// connection would be: the server keeps an XEP-0198 session for resumption.
    pub fn close_stream(&mut self) {
        if !self.broken {
            self.upstream.close_stream();
        }
    }

    /// The client went away without closing (tab closed, network lost, too slow). A stream the
    /// server allows to be resumed (XEP-0198) is left open for the client to resume, through
    /// any node: the socket is dropped without `</stream:stream>`, which the server would take
    /// as a logout. Any other stream is closed cleanly (docs/protocol.md §3). What the browser
    /// sent before is still written first, within 2 s.
    pub async fn leave(&mut self) {
        if self.resumable {
            self.shutdown().await;
        } else {
            self.close_stream();
        }
    }

    async fn shutdown(&mut self) {
        self.upstream.shutdown(FINISH_DEADLINE, !self.broken).await;
    }

    /// The node drains: a resumable stream is left at once; any other is closed by the
    /// transport once what is in flight has been delivered.
    pub async fn drain(&mut self) -> Drain {
        if self.resumable {
            self.shutdown().await;
            Drain::Left
        } else {
            Drain::Close
        }
    }

    /// Ends the session and records why: a stream that ended on either side, or that the
    /// gateway ends, gets its closing tag (the answer to the server's, RFC 6120 §4.4), unless
    /// it was left for resumption or failed; then the socket is shut down. Bounded in time.
    pub async fn finish(mut self, reason: &'static str) {
        if !self.upstream.is_shut_down() {
            self.close_stream();
        }
        self.shutdown().await;
        self.ended = Some(reason);
    }
}

/// Whether two domains name the same one, as routes are matched: case-insensitively, a
/// trailing dot ignored.
fn same_domain(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// XEP-0198 §5: `<enabled resume='true'/>` or `<resumed/>` from the server means the stream
/// can be resumed after the connection is lost. A prefix check first keeps this off the
/// per-stanza cost for everything else.
fn is_resumption_granted(el: &[u8]) -> bool {
    if el.starts_with(b"<resumed") {
        return el.windows(11).any(|w| w == b"urn:xmpp:sm");
    }
    if !el.starts_with(b"<enabled") {
        return false;
    }
    let has = |needle: &[u8]| el.windows(needle.len()).any(|w| w == needle);
    has(b"urn:xmpp:sm")
        && (has(b"resume='true'")
            || has(b"resume=\"true\"")
            || has(b"resume='1'")
            || has(b"resume=\"1\""))
}

impl Drop for Session {
    fn drop(&mut self) {
        // Every session is counted out exactly once, including on a panic or a dropped task.
        let reason = self.ended.unwrap_or("aborted");
        METRICS.session_ended(self.transport, reason, self.started.elapsed());
        tracing::info!(reason, "session ended");
    }
}

#[cfg(test)]
mod tests {
    use super::{is_resumption_granted, same_domain};

    #[test]
    fn a_restart_may_name_the_domain_as_routes_match_it() {
        assert!(same_domain("example.com", "example.com"));
        assert!(same_domain("Example.COM.", "example.com"));
        assert!(!same_domain("example.org", "example.com"));
        assert!(!same_domain("sub.example.com", "example.com"));
    }

    #[test]
    fn resumption_is_recognised_only_when_granted() {
        assert!(is_resumption_granted(
            b"<enabled xmlns='urn:xmpp:sm:3' id='x' resume='true'/>"
        ));
        assert!(is_resumption_granted(
            b"<enabled xmlns=\"urn:xmpp:sm:3\" resume=\"1\" id=\"x\"/>"
        ));
        assert!(is_resumption_granted(
            b"<resumed xmlns='urn:xmpp:sm:3' h='3' previd='x'/>"
        ));
        assert!(!is_resumption_granted(b"<enabled xmlns='urn:xmpp:sm:3'/>"));
        assert!(!is_resumption_granted(
            b"<message xmlns='jabber:client'><body>resume='true' urn:xmpp:sm</body></message>"
        ));
    }
}
