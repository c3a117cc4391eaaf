//! One client connection from accept to close: stream negotiation under the pre-auth
//! deadline, then the bound session, then removal from the routing table.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use xmpp_gateway::xml::split::{StreamItem, StreamSplitter};
use xmpp_gateway::xml::{Limits, XmlError};

use super::io::Io;
use super::server::Shared;
use super::{negotiate, session};
use crate::tag;

/// Why a connection ends before or instead of the usual close.
#[derive(Debug)]
pub enum End {
    /// Send this stream error (RFC 6120 §4.9.3), then close.
    Error(&'static str),
    /// Everything has been said (or the peer is gone): just close.
    Closed,
}

impl From<XmlError> for End {
    fn from(err: XmlError) -> Self {
        End::Error(err.condition())
    }
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> Self {
        End::Closed
    }
}

/// A connection's socket and stream state until it is bound.
pub struct Conn {
    pub io: Io,
    pub splitter: StreamSplitter,
    pub shared: Arc<Shared>,
    pub id: u64,
    /// Our stream header for the current stream has been written (RFC 6120 §4.9.1.1: a
    /// stream error before it needs one first).
    pub header_sent: bool,
}

/// Serves one accepted connection.
pub async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    let deadline = Instant::now() + shared.config.pre_auth_timeout;
    let mut conn = Conn {
        io: Io::Plain(tcp),
        splitter: StreamSplitter::new(Limits::default()),
        id: shared.conn_id(),
        shared,
        header_sent: false,
    };
    let end = match tokio::time::timeout_at(deadline, negotiate::run(&mut conn)).await {
        Ok(Ok(bound)) => return session::run(conn, bound).await,
        Ok(Err(end)) => end,
        // RFC 6120 §4.9.3.4: the peer has not done what it had to in time.
        Err(_) => End::Error("connection-timeout"),
    };
    if let End::Error(condition) = end {
        let _ = conn.send_stream_error(condition).await;
    }
    conn.io.shutdown().await;
}

impl Conn {
    /// The next stream item, reading as needed. The peer closing the socket is
    /// [`End::Closed`]; bad XML is the stream error its condition names.
    pub async fn next_item(&mut self) -> Result<StreamItem, End> {
        loop {
            if let Some(item) = self.splitter.next_item()? {
                return Ok(item);
            }
            self.splitter.release_idle_memory();
            if self.io.read_into(self.splitter.buffer_mut()).await? == 0 {
                return Err(End::Closed);
            }
        }
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<(), End> {
        Ok(self.io.write_all(data).await?)
    }

    /// Our stream header (RFC 6120 §4.7) for `domain`.
    pub async fn send_header(&mut self, domain: &str) -> Result<(), End> {
        let header = stream_header(domain);
        self.header_sent = true;
        self.send(header.as_bytes()).await
    }

    /// A stream error and the stream's end, preceded by a header if none was sent yet.
    pub async fn send_stream_error(&mut self, condition: &str) -> Result<(), End> {
        if !self.header_sent {
            let domain = self.shared.config.domains[0].clone();
            self.send_header(&domain).await?;
        }
        self.send(&stream_error(condition)).await
    }
}

fn stream_header(domain: &str) -> String {
    use rand::Rng;
    let id: u64 = rand::thread_rng().gen();
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' id='{id:016x}' from='{}' \
         version='1.0' xml:lang='en'>",
        tag::escape(domain)
    )
}

/// `<stream:error>` with `condition`, then `</stream:stream>`.
pub fn stream_error(condition: &str) -> Bytes {
    Bytes::from(format!(
        "<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         </stream:error></stream:stream>"
    ))
}
