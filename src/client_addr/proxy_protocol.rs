//! The PROXY protocol (HAProxy's specification, v1 text and v2 binary) on the public listener:
//! a proxy that forwards TCP connections may send, before the first byte of its client's data,
//! a header naming the client it accepted the connection from.
//!
//! The header is read only from a socket peer in `limits.trusted_proxies`, and only if it is
//! there: the first bytes are peeked, and a connection that does not begin with either
//! signature is handed on untouched, with no buffer of its own. From anyone else a header is
//! never looked for, so it reaches hyper as what it is there: a request that is not HTTP.
//!
//! Reading the header has the header-read deadline and a size bound; a header that is malformed,
//! too long or late closes the connection. What arrived after it in the same reads is handed to
//! hyper first ([`Prefixed`]), byte for byte, so hyper-util's sniffing of the HTTP/2 preface
//! sees the connection as the client sent it.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use proxy_header::{ParseConfig, Protocol, ProxyHeader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How a v1 header begins ("PROXY" and a space).
pub const V1_SIGNATURE: &[u8] = b"PROXY ";
/// How a v2 header begins.
pub const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest header read. A v1 header has at most 107 bytes; a v2 header has 16, then at
/// most 216 of addresses, then TLVs (HAProxy's ALPN, authority, unique id, TLS details) that
/// fit in a few hundred more.
pub const MAX_HEADER_BYTES: usize = 1024;

/// What the first bytes of a connection from a trusted proxy say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Neither signature: a plain connection.
    Plain,
    /// A complete signature: a PROXY header follows.
    Header,
    /// Too few bytes to tell (a strict prefix of a signature).
    NeedMore,
}

/// Tells a PROXY header from a plain connection by its first bytes.
pub fn sniff(start: &[u8]) -> Sniff {
    let mut verdict = Sniff::Plain;
    for signature in [V1_SIGNATURE, V2_SIGNATURE] {
        if start.starts_with(signature) {
            return Sniff::Header;
        }
        if signature.starts_with(start) {
            verdict = Sniff::NeedMore;
        }
    }
    verdict
}

/// Why a connection from a trusted proxy was closed before HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Neither a header nor a plain first byte came within the header-read deadline.
    #[error("no PROXY header or request within the header-read timeout")]
    Timeout,
    /// The peer closed the connection before sending anything decisive.
    #[error("connection closed before a PROXY header or request")]
    Closed,
    /// A signature, then something that is not a valid header.
    #[error("malformed PROXY header")]
    Malformed,
    /// A header over [`MAX_HEADER_BYTES`].
    #[error("PROXY header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ProxyHeaderError {
    /// Whether the proxy broke the protocol (worth a warning), rather than a connection that
    /// simply ended or stayed silent.
    pub fn is_protocol_error(&self) -> bool {
        matches!(self, Self::Malformed | Self::TooLong)
    }
}

/// A connection from a trusted proxy: the stream to serve HTTP on, and the client the PROXY
/// header named (`None` without a header, or for a v2 LOCAL or a v1 UNKNOWN header, which the
/// proxy sends for connections of its own, e.g. health checks: the socket peer is the client).
pub async fn accept(
    tcp: TcpStream,
    deadline: Duration,
) -> Result<(Prefixed<TcpStream>, Option<SocketAddr>), ProxyHeaderError> {
    tokio::time::timeout(deadline, read_header(tcp))
        .await
        .unwrap_or(Err(ProxyHeaderError::Timeout))
}

async fn read_header(
    mut tcp: TcpStream,
) -> Result<(Prefixed<TcpStream>, Option<SocketAddr>), ProxyHeaderError> {
    // Peeking decides a plain connection without taking its bytes, so it needs no buffer.
    let mut start = [0u8; V2_SIGNATURE.len()];
    let n = tcp.peek(&mut start).await?;
    match sniff(&start[..n]) {
        _ if n == 0 => return Err(ProxyHeaderError::Closed),
        Sniff::Plain => return Ok((Prefixed::new(tcp, None), None)),
        // A header, or too little to tell: read on. Peeking again would return at once with
        // the same bytes, so from here they are taken and kept.
        Sniff::Header | Sniff::NeedMore => {}
    }
    let mut buf = BytesMut::with_capacity(MAX_HEADER_BYTES);
    loop {
        match sniff(&buf) {
            Sniff::Plain => return Ok((Prefixed::new(tcp, Some(buf.freeze())), None)),
            Sniff::Header => {
                if let Some(found) = parse(&buf)? {
                    let (client, len) = found;
                    buf.advance(len);
                    let rest = (!buf.is_empty()).then(|| buf.freeze());
                    return Ok((Prefixed::new(tcp, rest), client));
                }
            }
            Sniff::NeedMore => {}
        }
        if buf.len() >= MAX_HEADER_BYTES {
            return Err(ProxyHeaderError::TooLong);
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Err(ProxyHeaderError::Closed);
        }
    }
}

/// Parses a header that begins with a signature: `Ok(None)` while it is incomplete, else the
/// client it names and the header's length.
fn parse(buf: &[u8]) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyHeaderError> {
    // A v2 header says its length up front: refuse an oversized one before reading it.
    if buf.starts_with(V2_SIGNATURE) && buf.len() >= 16 {
        let declared = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if declared > MAX_HEADER_BYTES {
            return Err(ProxyHeaderError::TooLong);
        }
    }
    let config = ParseConfig {
        include_tlvs: false,
        ..ParseConfig::default()
    };
    match ProxyHeader::parse(buf, config) {
        Ok((header, len)) => {
            // Only a TCP source is a client address; LOCAL, UNKNOWN, UDP or a UNIX socket
            // leave the socket peer as the client.
            let client = header
                .proxied_address()
                .filter(|a| a.protocol == Protocol::Stream)
                .map(|a| a.source);
            Ok(Some((client, len)))
        }
        Err(proxy_header::Error::BufferTooShort) => Ok(None),
        Err(_) => Err(ProxyHeaderError::Malformed),
    }
}

/// A stream whose first reads return `prefix`: the bytes that arrived after a PROXY header in
/// the reads that took it. Without a prefix it is the stream itself.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Option<Bytes>,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, read after `prefix` (none: nothing to replay).
    pub fn new(inner: S, prefix: Option<Bytes>) -> Self {
        Self {
            prefix: prefix.filter(|p| !p.is_empty()),
            inner,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
