//! The byte stream to an upstream server: plain TCP, or TLS after STARTTLS or from the first
//! byte. One enum rather than a boxed trait object keeps reads and writes free of dynamic
//! dispatch and lets idle plain sessions wait for readability without holding a read buffer.

use std::io;
use std::mem::MaybeUninit;
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
    /// An idle session holds no read buffer: with nothing partial buffered, the read goes to
    /// the stack and only what arrived is kept (rustls keeps a buffer of its own for TLS).
    ///
    /// Every read goes through `poll_read`, which takes a short read as proof that the socket
    /// is drained: the next poll waits for the next readiness event instead of making one more
    /// `recvfrom` that fails with `EAGAIN` (docs/PERFORMANCE.md, "System calls").
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match self {
            UpstreamIo::Plain(tcp) => read_into(tcp, cx, buf),
            UpstreamIo::Tls(tls) => read_into(tls.as_mut(), cx, buf),
            UpstreamIo::Closed => Poll::Ready(Err(closed())),
        }
    }
}

/// [`UpstreamIo::poll_read_into`] for one kind of stream.
fn read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if !buf.is_empty() {
        // The rest of a partial element: straight into the buffer that holds its start.
        reserve(buf);
        return tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    }
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut chunk);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A TLS stream to a local server with a self-signed certificate, and that server's side.
    async fn tls_pair() -> (UpstreamIo, tokio_rustls::server::TlsStream<TcpStream>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tcp = Deadline::new(tcp, Duration::from_secs(5));
        let (client, server) =
            tokio::join!(connector.connect(name, tcp), acceptor.accept(accepted));
        (UpstreamIo::Tls(Box::new(client.unwrap())), server.unwrap())
    }

    // docs/protocol.md §7: an idle TLS session waits for the server without a read buffer of
    // its own. It used to reserve 4 KiB before every wait: 4 KiB of every idle TLS session.
    #[tokio::test]
    async fn an_idle_tls_stream_waits_without_a_read_buffer() {
        let (io, server) = tls_pair().await;
        reads_without_an_idle_buffer(io, server).await;
    }

    // The same for a plain stream, whose reads now go through `poll_read` as TLS reads do.
    #[tokio::test]
    async fn an_idle_plain_stream_waits_without_a_read_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let io = UpstreamIo::Plain(Deadline::new(tcp, Duration::from_secs(5)));
        reads_without_an_idle_buffer(io, server).await;
    }

    async fn reads_without_an_idle_buffer(mut io: UpstreamIo, mut server: impl AsyncWrite + Unpin) {
        let mut buf = BytesMut::new();
        let waited = poll_fn(|cx| Poll::Ready(io.poll_read_into(cx, &mut buf).is_pending())).await;
        assert!(waited, "nothing was sent, so the read waits");
        assert_eq!(buf.capacity(), 0, "no buffer held while waiting");

        server.write_all(b"<presence/>").await.unwrap();
        server.flush().await.unwrap();
        let n = poll_fn(|cx| io.poll_read_into(cx, &mut buf)).await.unwrap();
        assert_eq!(&buf[..n], b"<presence/>");
        assert!(buf.capacity() < READ_CHUNK, "{}", buf.capacity());

        // With part of an element buffered, what follows is appended to it.
        server.write_all(b"<message>").await.unwrap();
        server.flush().await.unwrap();
        let more = poll_fn(|cx| io.poll_read_into(cx, &mut buf)).await.unwrap();
        assert_eq!(more, 9);
        assert_eq!(&buf[..], b"<presence/><message>");
    }
}
