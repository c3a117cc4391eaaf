//! The transport-agnostic session (PROTOCOL.md §1): one browser-side stream bound to exactly one
//! upstream client-to-server stream. Transports (WebSocket now, BOSH next) turn their framing
//! into calls on [`Session`] and turn [`Outbound`] items into their framing; routing, upstream
//! connection, feature filtering, limits and metrics live here once.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::metrics::{Direction, METRICS};
use crate::server::Gateway;
use crate::upstream::stream::{StreamParams, UpstreamStream};
use crate::upstream::UpstreamError;
use crate::xml::features::filter_features_for_client;
use crate::xml::split::{ElementKind, StreamHeader, StreamItem};

/// How a session reached the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// RFC 7395.
    WebSocket = 0,
    /// XEP-0124/XEP-0206.
    Bosh = 1,
}

impl Transport {
    /// Label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Bosh => "bosh",
        }
    }
}

/// Something the upstream server said, ready for a transport to frame.
#[derive(Debug)]
pub enum Outbound {
    /// A (re)opened stream's header.
    Header(StreamHeader),
    /// `<stream:features/>`, already stripped of what must not reach clients.
    Features(Bytes),
    /// Any other standalone element (stanzas, SASL, XEP-0198 nonzas).
    Element(Bytes),
    /// `<stream:error/>`; the stream is over.
    StreamError(Bytes),
    /// `</stream:stream>`; the stream is over.
    End,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh session number for logs.
pub fn next_session_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A live session: the upstream stream and the bookkeeping around it.
pub struct Session {
    transport: Transport,
    upstream: UpstreamStream,
    params: StreamParams,
    ended: Option<&'static str>,
    started: std::time::Instant,
    /// The server answered `<enable resume='true'/>` (or a `<resume/>`): see [`Session::leave`].
    resumable: bool,
}

/// A freshly opened session with what the client is told first.
pub struct OpenedSession {
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
    /// Opens the upstream stream for the domain the client named. Unknown domains are refused
    /// before anything is dialled (PROTOCOL.md §1: never an open relay).
    pub async fn open(
        gw: &Gateway,
        transport: Transport,
        params: StreamParams,
    ) -> Result<OpenedSession, UpstreamError> {
        let result = Self::open_inner(gw, transport, params).await;
        if let Err(e) = &result {
            METRICS.connect_failed(e.kind());
        }
        result
    }

    async fn open_inner(
        gw: &Gateway,
        transport: Transport,
        params: StreamParams,
    ) -> Result<OpenedSession, UpstreamError> {
        let settings = gw.settings();
        let route = settings
            .upstreams
            .route(&params.to)
            .ok_or(UpstreamError::UnknownDomain)?;
        let (upstream, opened) =
            UpstreamStream::establish(&settings.upstreams, &route, &params, &settings.xml_limits)
                .await?;
        let features = filter_features_for_client(&opened.features.bytes)?;
        tracing::debug!(tls = upstream.is_tls(), "upstream stream open");
        METRICS.session_started(transport);
        Ok(OpenedSession {
            tls: upstream.is_tls(),
            session: Session {
                transport,
                upstream,
                params,
                ended: None,
                started: std::time::Instant::now(),
                resumable: false,
            },
            header: opened.header,
            features,
        })
    }

    /// The domain the session serves.
    pub fn domain(&self) -> &str {
        &self.params.to
    }

    /// The next thing the server says. Cancel-safe.
    pub async fn next_outbound(&mut self) -> Result<Outbound, UpstreamError> {
        let item = self.upstream.next_item().await?;
        self.translate(item)
    }

    /// An already buffered item, if any, so a transport can batch its writes.
    pub fn buffered_outbound(&mut self) -> Result<Option<Outbound>, UpstreamError> {
        match self.upstream.buffered_item()? {
            Some(item) => self.translate(item).map(Some),
            None => Ok(None),
        }
    }

    fn translate(&mut self, item: StreamItem) -> Result<Outbound, UpstreamError> {
        Ok(match item {
            StreamItem::Header(h) => Outbound::Header(h),
            StreamItem::End => Outbound::End,
            StreamItem::Element(e) => match e.kind {
                // PROTOCOL.md §1: no <starttls/>, no channel binding toward clients.
                ElementKind::Features => Outbound::Features(filter_features_for_client(&e.bytes)?),
                ElementKind::StreamError => Outbound::StreamError(e.bytes),
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

    /// Whether the server granted XEP-0198 resumption on this stream.
    pub fn is_resumable(&self) -> bool {
        self.resumable
    }

    /// The client went away without closing (tab closed, network lost, node draining). A
    /// stream the server allows to be resumed (XEP-0198) is left open for the client to
    /// resume, through any node: the socket is dropped without `</stream:stream>`, which the
    /// server would take as a logout. Any other stream is closed cleanly (PROTOCOL.md §3).
    pub async fn leave(&mut self) {
        if self.resumable {
            self.upstream.shutdown().await;
        } else {
            let _ = self.upstream.close_stream().await;
        }
    }

    /// Forwards one validated client element verbatim.
    pub async fn send(&mut self, element: &[u8]) -> Result<(), UpstreamError> {
        METRICS.relayed(self.transport, Direction::ToUpstream, element.len());
        self.upstream.send(element).await
    }

    /// Restarts the upstream stream after the client's new stream header (RFC 6120 §4.3.3).
    pub async fn restart(
        &mut self,
        from: Option<String>,
        lang: Option<String>,
    ) -> Result<(), UpstreamError> {
        if from.is_some() {
            self.params.from = from;
        }
        if lang.is_some() {
            self.params.lang = lang;
        }
        self.upstream.restart(&self.params).await
    }

    /// Sends `</stream:stream>` upstream.
    pub async fn close_stream(&mut self) -> Result<(), UpstreamError> {
        self.upstream.close_stream().await
    }

    /// Ends the session: shuts the upstream socket and records why.
    pub async fn finish(mut self, reason: &'static str) {
        self.upstream.shutdown().await;
        self.ended = Some(reason);
    }
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
    use super::is_resumption_granted;

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
