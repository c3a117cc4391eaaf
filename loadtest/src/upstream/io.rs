//! The socket of one client connection, plain or after STARTTLS, and its read half once the
//! connection is bound and its writer runs on a task of its own.
//!
//! Reads go straight into the splitter's buffer. On plain TCP a read waits for readiness
//! before it reserves any buffer, so an idle connection holds no read buffer at all: that is
//! what lets one process keep tens of thousands of idle clients.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// Bytes reserved for one read: most stanzas fit, and a partial one grows the buffer.
const READ_CHUNK: usize = 4096;

/// A client connection before it is split.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken for a TLS handshake that did not finish.
    Closed,
}

/// The read half of a bound connection.
pub enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The write half of a bound connection, owned by its writer task.
pub enum Writer {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

/// Reads from a plain socket once it is readable; gives the buffer back if the readiness was
/// stale and nothing partial is held.
async fn read_plain(tcp: &OwnedOrRef<'_>, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        tcp.readable().await?;
        reserve(buf);
        match tcp.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
            }
            result => return result,
        }
    }
}

/// A TCP stream or the read half of one; both wait for readiness the same way.
enum OwnedOrRef<'a> {
    Stream(&'a TcpStream),
    Half(&'a OwnedReadHalf),
}

impl OwnedOrRef<'_> {
    async fn readable(&self) -> io::Result<()> {
        match self {
            OwnedOrRef::Stream(s) => s.readable().await,
            OwnedOrRef::Half(h) => h.readable().await,
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            OwnedOrRef::Stream(s) => s.try_read_buf(buf),
            OwnedOrRef::Half(h) => h.try_read_buf(buf),
        }
    }
}

async fn read_tls<R: AsyncRead + Unpin>(tls: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    reserve(buf);
    tls.read_buf(buf).await
}

impl Io {
    /// Reads into `buf`; 0 means the peer closed.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Io::Plain(tcp) => read_plain(&OwnedOrRef::Stream(tcp), buf).await,
            Io::Tls(tls) => read_tls(tls.as_mut(), buf).await,
            Io::Closed => Err(closed()),
        }
    }

    /// Writes all of `data` and flushes it.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Io::Plain(tcp) => tcp.write_all(data).await,
            Io::Tls(tls) => {
                tls.write_all(data).await?;
                tls.flush().await
            }
            Io::Closed => Err(closed()),
        }
    }

    /// Closes the write side after what was written.
    pub async fn shutdown(&mut self) {
        let _ = match self {
            Io::Plain(tcp) => tcp.shutdown().await,
            Io::Tls(tls) => tls.shutdown().await,
            Io::Closed => Ok(()),
        };
    }

    /// Whether STARTTLS has been negotiated.
    pub fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_))
    }

    /// Splits a bound connection into the reader's and the writer's halves.
    pub fn split(self) -> Option<(Reader, Writer)> {
        match self {
            Io::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                Some((Reader::Plain(r), Writer::Plain(w)))
            }
            Io::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                Some((Reader::Tls(r), Writer::Tls(w)))
            }
            Io::Closed => None,
        }
    }
}

impl Reader {
    /// Reads into `buf`; 0 means the peer closed.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Reader::Plain(half) => read_plain(&OwnedOrRef::Half(half), buf).await,
            Reader::Tls(half) => read_tls(half, buf).await,
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Writer::Plain(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            Writer::Tls(w) => std::pin::Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => std::pin::Pin::new(w).poll_flush(cx),
            Writer::Tls(w) => std::pin::Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Writer::Plain(w) => std::pin::Pin::new(w).poll_shutdown(cx),
            Writer::Tls(w) => std::pin::Pin::new(w).poll_shutdown(cx),
        }
    }
}
