//! The byte stream to an upstream server: plain TCP, or TLS after STARTTLS or from the first
//! byte. One enum rather than a boxed trait object keeps reads and writes free of dynamic
//! dispatch and lets idle plain sessions wait for readability without holding a read buffer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::deadline::Deadline;

/// The TCP socket to a server, every write of it under the write deadline.
pub type UpstreamTcp = Deadline<TcpStream>;

/// Bytes reserved for one read from upstream.
const READ_CHUNK: usize = 4096;

/// A connected upstream socket.
pub enum UpstreamIo {
    /// Unencrypted (before STARTTLS, or on a route with TLS disabled).
    Plain(UpstreamTcp),
    /// Encrypted.
    Tls(Box<TlsStream<UpstreamTcp>>),
    /// Taken apart for the TLS handshake; only seen if that handshake failed.
    Closed,
}

impl UpstreamIo {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamIo::Tls(_))
    }

    /// Reads what is available into `buf`, returning the byte count (0 at end of stream).
    /// A plain socket waits for readability before any buffer space is reserved, so an idle
    /// session holds no read buffer.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpstreamIo::Plain(tcp) => loop {
                ready!(tcp.get_ref().poll_read_ready(cx))?;
                reserve(buf);
                match tcp.get_mut().try_read_buf(buf) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Readiness after the last read was stale: give the buffer back
                        // before waiting again, or every idle session keeps 4 KiB.
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            UpstreamIo::Tls(tls) => {
                reserve(buf);
                tokio_util::io::poll_read_buf(Pin::new(tls.as_mut()), cx, buf)
            }
            UpstreamIo::Closed => Poll::Ready(Err(closed())),
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "upstream socket closed")
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            UpstreamIo::Closed => Poll::Ready(Err(closed())),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            UpstreamIo::Closed => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            UpstreamIo::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            UpstreamIo::Closed => Poll::Ready(Ok(())),
        }
    }
}
