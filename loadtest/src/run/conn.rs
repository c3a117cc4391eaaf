//! The three ways a load-test session reaches XMPP: WebSocket (RFC 7395) and BOSH (XEP-0124,
//! XEP-0206) through a gateway or a server's own endpoint, and a plain client-to-server TCP
//! stream (RFC 6120, with STARTTLS) straight to a server as the baseline.
//!
//! Each yields top-level elements one at a time. What a stream restart means differs per
//! transport, so it is a method of its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use xmpp_gateway::xml::split::{StreamItem, StreamSplitter};
use xmpp_gateway::xml::Limits;

use super::bosh::Bosh;
use crate::tag::{self, local_name};

const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// Opens a TCP connection to `addr`, from `source` when given (spreads many sockets over
/// several loopback addresses, each with its own ephemeral ports).
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Any byte stream: TCP, or TLS over it after STARTTLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One session's connection.
pub enum Conn {
    Ws(Box<WebSocketStream<TcpStream>>),
    Bosh(Box<Bosh>),
    Tcp(Box<Tcp>),
}

impl Conn {
    /// A WebSocket to `url` (`ws://host:port/path`) with the `xmpp` subprotocol, then `<open/>`.
    pub async fn websocket(
        addr: SocketAddr,
        url: &str,
        source: Option<IpAddr>,
        domain: &str,
    ) -> Result<Conn> {
        let tcp = tcp_connect(addr, source).await?;
        let mut request = url.into_client_request().context("WebSocket URL")?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "xmpp".parse().expect("valid header"),
        );
        let (ws, response) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(|err| anyhow!("ws-handshake: {err}"))?;
        if response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes())
            != Some(b"xmpp")
        {
            bail!("ws-handshake: the server did not accept the xmpp subprotocol");
        }
        let mut conn = Conn::Ws(Box::new(ws));
        conn.restart(domain).await?;
        Ok(conn)
    }

    /// A plain XMPP stream to `addr`, header sent.
    pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>, domain: &str) -> Result<Conn> {
        let tcp = tcp_connect(addr, source).await?;
        let mut conn = Conn::Tcp(Box::new(Tcp {
            io: Box::new(tcp),
            splitter: StreamSplitter::new(Limits::size_only(1 << 20)),
        }));
        conn.restart(domain).await?;
        Ok(conn)
    }

    /// Sends one or more top-level elements. A WebSocket sends each in a frame of its own.
    pub async fn send(&mut self, elements: &[String]) -> Result<()> {
        match self {
            Conn::Ws(ws) => {
                for element in elements {
                    ws.feed(Message::text(element.as_str())).await?;
                }
                ws.flush().await?;
            }
            Conn::Bosh(bosh) => bosh.send(elements.concat()).await?,
            Conn::Tcp(tcp) => tcp.io.write_all(elements.concat().as_bytes()).await?,
        }
        Ok(())
    }

    /// The next top-level element; `<open/>` and stream headers are skipped, and a stream
    /// error is an error. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Bytes> {
        let element = self.next_element().await?;
        if local_name(&element) == b"error" {
            let condition = condition(&element).unwrap_or("(none)");
            bail!("stream-error: {condition}");
        }
        Ok(element)
    }

    async fn next_element(&mut self) -> Result<Bytes> {
        loop {
            match self {
                Conn::Ws(ws) => match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let bytes = Bytes::from(text);
                        match local_name(&bytes) {
                            b"open" => continue,
                            b"close" => bail!("closed: the server sent <close/>"),
                            _ => return Ok(bytes),
                        }
                    }
                    Some(Ok(Message::Close(frame))) => bail!("closed: close frame {frame:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(err)) => bail!("io: {err}"),
                    None => bail!("closed: the WebSocket ended"),
                },
                Conn::Bosh(bosh) => return bosh.recv().await,
                Conn::Tcp(tcp) => return tcp.recv().await,
            }
        }
    }

    /// Restarts the stream: a new `<open/>`, stream header, or BOSH restart request.
    pub async fn restart(&mut self, domain: &str) -> Result<()> {
        match self {
            Conn::Ws(ws) => {
                let open = format!("<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>");
                ws.send(Message::text(open)).await?;
            }
            Conn::Bosh(bosh) => bosh.restart(domain).await?,
            Conn::Tcp(tcp) => {
                tcp.splitter.reset();
                let header = format!(
                    "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
                     xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                );
                tcp.io.write_all(header.as_bytes()).await?;
            }
        }
        Ok(())
    }

    /// STARTTLS on a TCP stream, after `<proceed/>`; then a new stream header.
    pub async fn upgrade_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        domain: &str,
    ) -> Result<()> {
        let Conn::Tcp(tcp) = self else {
            bail!("STARTTLS applies to a TCP stream only");
        };
        if tcp.splitter.buffered() > 0 {
            bail!("bytes after <proceed/>");
        }
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())?;
        let io = std::mem::replace(
            &mut tcp.io,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        );
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, io)
            .await
            .context("tls")?;
        tcp.io = Box::new(tls);
        self.restart(domain).await
    }

    /// Ends the stream politely: `<close/>`, BOSH terminate, `</stream:stream>`.
    pub async fn close(&mut self) -> Result<()> {
        match self {
            Conn::Ws(ws) => {
                ws.send(Message::text(format!("<close xmlns='{NS_FRAMING}'/>")))
                    .await?;
                // The server answers <close/> and closes the WebSocket; wait for that.
                while let Some(Ok(_)) = ws.next().await {}
            }
            Conn::Bosh(bosh) => bosh.terminate().await?,
            Conn::Tcp(tcp) => {
                tcp.io.write_all(b"</stream:stream>").await?;
                let mut sink = [0u8; 4096];
                while tcp.io.read(&mut sink).await? > 0 {}
            }
        }
        Ok(())
    }
}

/// An XMPP stream over TCP (or TLS over TCP).
pub struct Tcp {
    io: Box<dyn Io>,
    splitter: StreamSplitter,
}

impl Tcp {
    async fn recv(&mut self) -> Result<Bytes> {
        loop {
            match self.splitter.next_item() {
                Ok(Some(StreamItem::Element(element))) => return Ok(element.bytes),
                Ok(Some(StreamItem::Header(_))) => continue,
                Ok(Some(StreamItem::End)) => bail!("closed: the server ended the stream"),
                Ok(None) => {}
                Err(err) => bail!("xml: {}", err.condition()),
            }
            let buf: &mut BytesMut = self.splitter.buffer_mut();
            buf.reserve(4096);
            if self.io.read_buf(buf).await? == 0 {
                bail!("closed: the server closed the connection");
            }
        }
    }
}

/// The condition of a stream error or SASL failure: its first child's local name.
pub fn condition(element: &[u8]) -> Option<&str> {
    let root = tag::start_tag(element, 0)?;
    std::str::from_utf8(tag::first_child(element, &root)?.local()).ok()
}
