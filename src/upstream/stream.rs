//! One client-to-server XMPP stream to the upstream server (RFC 6120 §4): dial the endpoints in
//! order, open the stream, do STARTTLS when the route wants it, and then carry elements both
//! ways. Reading is cancel-safe so a session can wait on it inside `select!`.
//!
//! Writing never blocks the session (docs/protocol.md §7): what the browser sends is queued
//! here, and the queue is written in the same poll that reads, so a server that stops reading
//! stalls neither what it sends nor the session's timers. The session bounds the queue.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::UpstreamIo;
use super::error::UpstreamError;
use super::resolve::{Resolved, Route};
use super::routes::Upstreams;
use super::{health, proxy_header};
use crate::client_addr::ClientAddr;
use crate::config::{ProxyProtocol, TlsPolicy};
use crate::deadline::Deadline;
use crate::metrics::METRICS;
use crate::xml::features::summarize_features;
use crate::xml::split::{Element, ElementKind, StreamHeader, StreamItem, StreamSplitter};
use crate::xml::{push_attr, Limits};

/// What the client asked for in its stream header, passed on upstream.
#[derive(Debug, Clone, Default)]
pub struct StreamParams {
    /// The domain (`to`).
    pub to: String,
    /// The client's `from`, forwarded because some servers use it (SASL2/FAST).
    pub from: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
}

/// A stream the server has answered: its header and its first features.
#[derive(Debug)]
pub struct Opened {
    /// The server's stream header.
    pub header: StreamHeader,
    /// The server's `<stream:features/>`, unfiltered.
    pub features: Element,
}

/// A connected upstream stream.
pub struct UpstreamStream {
    io: UpstreamIo,
    splitter: StreamSplitter,
    /// `</stream:stream>` has been sent; the XML stream toward the server is over.
    close_sent: bool,
    /// The socket has been shut down; nothing more is written.
    shut_down: bool,
    /// Bytes for the server not yet taken by its socket; allocated only while there are some.
    out: BytesMut,
    /// Bytes went into the socket (into TLS, for an encrypted stream) since the last flush.
    unflushed: bool,
    /// The stream's place in its endpoint's session count (least-connections).
    endpoint: Option<health::SessionOnEndpoint>,
}

const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
const STREAM_END: &[u8] = b"</stream:stream>";

impl UpstreamStream {
    /// Dials the route's endpoints in order until one yields an open stream (with TLS as the
    /// route's policy demands), each within the connect timeout. `client` is the browser, named
    /// to the server in a PROXY header when the route asks for one.
    pub async fn establish(
        upstreams: &Upstreams,
        route: &Route,
        params: &StreamParams,
        limits: &Limits,
        client: ClientAddr,
    ) -> Result<(Self, Opened), UpstreamError> {
        let t = std::time::Instant::now();
        // docs/protocol.md §7: resolving the route is a wait on a peer too.
        let endpoints = tokio::time::timeout(
            upstreams.connect_timeout,
            upstreams.resolver.endpoints(route),
        )
        .await
        .map_err(|_| {
            tracing::warn!(domain = %route.config.domain, "DNS resolution timed out");
            UpstreamError::Timeout
        })??;
        METRICS.connect_phase("dns", t.elapsed());
        // docs/protocol.md §1: the endpoints that are up, fewest sessions first; none while
        // every one is down (the circuit breaker), and then the session fails at once.
        let chosen = upstreams.health(route).choose(&endpoints);
        let mut last = UpstreamError::AllDown;
        for (resolved, health) in chosen {
            let endpoint = &resolved.endpoint;
            let attempt = Self::establish_one(upstreams, route, resolved, params, limits, client);
            let failure = match tokio::time::timeout(upstreams.connect_timeout, attempt).await {
                Ok(Ok((mut stream, opened))) => {
                    stream.endpoint = Some(health::opened(&health));
                    return Ok((stream, opened));
                }
                Ok(Err(e)) => {
                    tracing::warn!(endpoint = %endpoint, error = %e, "upstream endpoint failed");
                    // A server that answered with a stream error has spoken for the domain.
                    if matches!(e, UpstreamError::StreamError(_)) {
                        return Err(e);
                    }
                    e
                }
                Err(_) => {
                    tracing::warn!(endpoint = %endpoint, "upstream endpoint timed out");
                    UpstreamError::Timeout
                }
            };
            // The endpoint itself did not answer; a TLS or XML problem is not one a probe fixes.
            let how = match failure {
                UpstreamError::Connect { .. } => Some(health::Failure::Refused),
                UpstreamError::Timeout | UpstreamError::Io(_) => Some(health::Failure::NoAnswer),
                _ => None,
            };
            if let Some(how) = how {
                let probe = probe(upstreams, route, &params.to);
                health::failed(&health, resolved, &probe, how);
            }
            last = failure;
        }
        Err(last)
    }

    async fn establish_one(
        upstreams: &Upstreams,
        route: &Route,
        resolved: &Resolved,
        params: &StreamParams,
        limits: &Limits,
        client: ClientAddr,
    ) -> Result<(Self, Opened), UpstreamError> {
        let endpoint = &resolved.endpoint;
        let t = std::time::Instant::now();
        let tcp =
            TcpStream::connect(&resolved.addrs[..])
                .await
                .map_err(|e| UpstreamError::Connect {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
        METRICS.connect_phase("tcp", t.elapsed());
        // Stanzas are small and latency matters more than packet count.
        tcp.set_nodelay(true)?;
        // The gateway's own address is only asked for when a header will carry it.
        let header = match route.config.proxy_protocol {
            ProxyProtocol::Off => None,
            version => proxy_header::for_client(version, client.socket_addr(), tcp.local_addr()?),
        };
        let mut tcp = Deadline::new(tcp, upstreams.write_timeout);
        if let Some(header) = header {
            // Before anything else, TLS included: the receiver reads it off the raw socket.
            tcp.write_all(&header).await?;
        }
        let tls_name = route
            .config
            .tls_name
            .as_deref()
            .unwrap_or(&route.config.domain);
        let io = if endpoint.direct_tls {
            let t = std::time::Instant::now();
            let tls = upstreams.tls.handshake(tls_name, tcp).await?;
            METRICS.connect_phase("tls", t.elapsed());
            UpstreamIo::Tls(Box::new(tls))
        } else {
            UpstreamIo::Plain(tcp)
        };
        let mut stream = Self {
            io,
            splitter: StreamSplitter::new(limits.clone()),
            close_sent: false,
            shut_down: false,
            out: BytesMut::new(),
            unflushed: false,
            endpoint: None,
        };
        let t = std::time::Instant::now();
        let mut opened = stream.open(params).await?;
        METRICS.connect_phase("stream", t.elapsed());
        if !stream.io.is_tls() && route.config.tls != TlsPolicy::Disabled {
            let offered = summarize_features(&opened.features.bytes)?.starttls;
            if offered {
                let t = std::time::Instant::now();
                stream.starttls(upstreams, tls_name).await?;
                METRICS.connect_phase("tls", t.elapsed());
                let t = std::time::Instant::now();
                opened = stream.open(params).await?;
                METRICS.connect_phase("stream", t.elapsed());
            } else if route.config.tls == TlsPolicy::Required {
                return Err(UpstreamError::TlsUnavailable);
            }
        }
        Ok((stream, opened))
    }

    /// Sends a stream header and waits for the server's header and features.
    async fn open(&mut self, params: &StreamParams) -> Result<Opened, UpstreamError> {
        self.splitter.reset();
        self.send(header(params).as_bytes()).await?;
        let header = match self.next_item().await? {
            StreamItem::Header(h) => h,
            _ => return Err(UpstreamError::Protocol("expected a stream header")),
        };
        match self.next_item().await? {
            StreamItem::Element(e) if e.kind == ElementKind::Features => Ok(Opened {
                header,
                features: e,
            }),
            StreamItem::Element(e) if e.kind == ElementKind::StreamError => {
                Err(UpstreamError::StreamError(e.bytes))
            }
            _ => Err(UpstreamError::Protocol("expected stream features")),
        }
    }

    /// RFC 6120 §5.4: ask for TLS, wait for `<proceed/>`, then handshake on the same socket.
    async fn starttls(
        &mut self,
        upstreams: &Upstreams,
        tls_name: &str,
    ) -> Result<(), UpstreamError> {
        self.send(STARTTLS).await?;
        match self.next_item().await? {
            StreamItem::Element(e) if e.kind == ElementKind::TlsProceed => {}
            StreamItem::Element(e) if e.kind == ElementKind::TlsFailure => {
                return Err(UpstreamError::Tls("server refused STARTTLS".into()))
            }
            _ => return Err(UpstreamError::Protocol("expected <proceed/>")),
        }
        // Bytes after <proceed/> but before the handshake would be plaintext injected into the
        // encrypted stream (the STARTTLS command-injection class of bugs): refuse them.
        if self.splitter.buffered() != 0 {
            return Err(UpstreamError::Protocol("data after <proceed/>"));
        }
        let io = std::mem::replace(&mut self.io, UpstreamIo::Closed);
        let UpstreamIo::Plain(tcp) = io else {
            return Err(UpstreamError::Protocol("STARTTLS on an encrypted stream"));
        };
        self.io = UpstreamIo::Tls(Box::new(upstreams.tls.handshake(tls_name, tcp).await?));
        Ok(())
    }

    /// The next item from the server, writing what is queued for it meanwhile. Cancel-safe: an
    /// item is either returned or stays buffered, and queued bytes stay queued. The end of the
    /// TCP stream without `</stream:stream>` is an I/O error, and so is a failed write.
    pub async fn next_item(&mut self) -> Result<StreamItem, UpstreamError> {
        poll_fn(|cx| self.poll_next_item(cx)).await
    }

    /// [`next_item`](Self::next_item), for a caller that polls more than one thing at once.
    pub fn poll_next_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamItem, UpstreamError>> {
        // What the server said before a write failed still comes first (its stream error,
        // stanzas behind a batch's end).
        if let Some(item) = self.splitter.next_item()? {
            return Poll::Ready(Ok(item));
        }
        // A write that cannot go on yet leaves the read to run; one that failed ends the stream.
        if let Poll::Ready(Err(e)) = self.poll_write_queued(cx) {
            return Poll::Ready(Err(e.into()));
        }
        loop {
            if let Some(item) = self.splitter.next_item()? {
                return Poll::Ready(Ok(item));
            }
            // Nothing partial is buffered: give the read buffer back while idle.
            self.splitter.release_idle_memory();
            let n = ready!(self.io.poll_read_into(cx, self.splitter.buffer_mut()))?;
            if n == 0 {
                return Poll::Ready(Err(UpstreamError::Io(io::ErrorKind::UnexpectedEof.into())));
            }
        }
    }

    /// An item that is already buffered, without waiting; lets a transport batch writes.
    pub fn buffered_item(&mut self) -> Result<Option<StreamItem>, UpstreamError> {
        Ok(self.splitter.next_item()?)
    }

    /// Queues bytes for the server; they are written while the session waits for the server
    /// ([`next_item`](Self::next_item)) or [`flush`](Self::flush)es. Never waits.
    pub fn queue(&mut self, data: &[u8]) {
        if !self.shut_down {
            self.out.extend_from_slice(data);
        }
    }

    /// Bytes queued and not yet taken by the socket.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether anything queued has still to be written or flushed.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || self.unflushed
    }

    /// Writes everything queued; each write is under the socket's write deadline.
    pub async fn flush(&mut self) -> Result<(), UpstreamError> {
        poll_fn(|cx| self.poll_write_queued(cx)).await?;
        Ok(())
    }

    /// [`flush`](Self::flush), for a caller that polls more than one thing at once.
    pub fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        // All written: an idle session holds no write buffer. (An advanced `BytesMut` reports
        // no capacity but keeps its allocation, so it is replaced whatever it reports.)
        self.out = BytesMut::new();
        Poll::Ready(Ok(()))
    }

    /// Writes bytes to the server and waits until they are written (while the stream is set
    /// up, before a session relays on it).
    async fn send(&mut self, data: &[u8]) -> Result<(), UpstreamError> {
        self.queue(data);
        self.flush().await
    }

    /// Stream restart after SASL success (RFC 6120 §6.4.6): a new header; the server answers
    /// with a new header and features, read through [`next_item`](Self::next_item). The header
    /// is queued behind what was sent before it.
    pub fn restart(&mut self, params: &StreamParams) {
        self.splitter.reset();
        self.queue(header(params).as_bytes());
    }

    /// Closes the XMPP stream (`</stream:stream>`); the server answers with its own close.
    /// Sent at most once: after the client's close, the server's answering close must not be
    /// answered again (RFC 6120 §4.4: nothing may follow the closing tag). Queued.
    pub fn close_stream(&mut self) {
        if self.close_sent || self.shut_down {
            return;
        }
        self.close_sent = true;
        self.queue(STREAM_END);
    }

    /// Writes what is queued, then shuts the socket down (TLS close_notify, then FIN); all of
    /// it within `deadline`. A stream whose writes failed is not written to again.
    pub async fn shutdown(&mut self, deadline: Duration, writable: bool) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        let _ = tokio::time::timeout(deadline, async {
            if writable && self.flush().await.is_err() {
                return;
            }
            let _ = self.io.shutdown().await;
        })
        .await;
        self.out = BytesMut::new();
    }

    /// Whether [`shutdown`](Self::shutdown) has run.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    /// Whether the endpoint it was opened on is still in use (health checks or sessions have
    /// not taken it out since).
    pub fn endpoint_is_up(&self) -> bool {
        self.endpoint
            .as_ref()
            .map_or(true, health::SessionOnEndpoint::endpoint_is_up)
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        self.io.is_tls()
    }

    /// Bytes received and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.splitter.buffered()
    }
}

/// How a probe or health check asks `route`'s endpoints for a stream header to `to`: the
/// domain only, since it speaks for no user; each within the connect timeout.
pub fn probe(upstreams: &Upstreams, route: &Route, to: &str) -> health::Probe {
    health::Probe {
        route: route.config.clone(),
        timeout: upstreams.connect_timeout,
        stream_header: header(&StreamParams {
            to: to.to_string(),
            ..StreamParams::default()
        }),
    }
}

/// The stream header sent upstream for a client's `<open/>`.
pub fn header(p: &StreamParams) -> String {
    let mut h = String::with_capacity(200);
    h.push_str("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    push_attr(&mut h, "to", Some(&p.to));
    push_attr(&mut h, "version", Some("1.0"));
    push_attr(&mut h, "from", p.from.as_deref());
    push_attr(&mut h, "xml:lang", p.lang.as_deref());
    h.push('>');
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RouteConfig};
    use crate::upstream::resolve::Resolver;

    fn client() -> ClientAddr {
        ClientAddr::new(std::net::Ipv4Addr::LOCALHOST.into())
    }

    // docs/protocol.md §7: a session that has sent something and gone idle holds no write
    // buffer. (An advanced `BytesMut` reports no capacity but keeps its allocation: each idle
    // session kept the size of the last thing its browser sent.)
    #[tokio::test]
    async fn an_idle_stream_gives_its_write_buffer_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_server, _) = listener.accept().await.unwrap();
        let mut stream = UpstreamStream {
            io: UpstreamIo::Plain(Deadline::new(tcp, Duration::from_secs(5))),
            splitter: StreamSplitter::new(Limits::default()),
            close_sent: false,
            shut_down: false,
            out: BytesMut::new(),
            unflushed: false,
            endpoint: None,
        };
        stream.queue(&[b'x'; 3000]);
        stream.flush().await.unwrap();
        assert_eq!(stream.queued(), 0);
        assert!(!stream.has_output());
        // What the buffer can take without allocating: all of its old allocation if kept.
        stream.out.reserve(1);
        assert!(stream.out.capacity() < 3000, "{}", stream.out.capacity());
    }

    // docs/protocol.md §7: resolving a route's SRV records is inside the connect timeout. A name
    // server that never answers used to hold the session start for the resolver's own
    // timeouts and retries, outside any deadline of ours.
    #[tokio::test(start_paused = true)]
    async fn dns_that_never_answers_fails_within_the_connect_timeout() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut config = Config::default();
        config.limits.connect_timeout_secs = 1;
        config.routes = vec![RouteConfig {
            tls: TlsPolicy::Disabled,
            ..RouteConfig::new("stalled.example.net")
        }];
        let mut upstreams = Upstreams::new(&config).unwrap();
        upstreams.resolver = Resolver::with_name_server(silent.local_addr().unwrap());
        let route = upstreams.route("stalled.example.net").unwrap();
        let params = StreamParams {
            to: "stalled.example.net".into(),
            ..StreamParams::default()
        };
        let started = tokio::time::Instant::now();
        let outcome =
            UpstreamStream::establish(&upstreams, &route, &params, &Limits::default(), client())
                .await;
        assert!(
            matches!(outcome, Err(UpstreamError::Timeout)),
            "{:?}",
            outcome.err()
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
