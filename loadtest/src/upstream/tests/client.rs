//! A raw XMPP client for the fixture's tests: a TCP socket (TLS after STARTTLS) and the
//! gateway's splitter reading the fixture's stream, so the tests see exactly what a client
//! on the wire sees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use xmpp_gateway::xml::split::{StreamHeader, StreamItem, StreamSplitter};
use xmpp_gateway::xml::Limits;

use crate::scram;
use crate::tag;

/// Longest wait for anything from the fixture: a guard against a hung test, never a way to
/// let something happen.
const PATIENCE: Duration = Duration::from_secs(10);

enum ClientIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

pub struct Client {
    io: ClientIo,
    splitter: StreamSplitter,
}

/// A top-level element the fixture sent, as text.
pub type Xml = String;

/// The value of attribute `name` on the element's start tag.
pub fn attr(xml: &str, name: &str) -> Option<String> {
    let tag = tag::start_tag(xml.as_bytes(), 0)?;
    tag.attr(name).map(|a| a.value().into_owned())
}

/// How many times the start tag carries attribute `name`.
pub fn attr_count(xml: &str, name: &str) -> usize {
    let tag = tag::start_tag(xml.as_bytes(), 0).expect("an element");
    tag.attrs
        .iter()
        .filter(|a| a.name == name.as_bytes())
        .count()
}

/// The text content of the element.
pub fn text(xml: &str) -> String {
    let tag = tag::start_tag(xml.as_bytes(), 0).expect("an element");
    tag::text(xml.as_bytes(), &tag).expect("text content")
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            io: ClientIo::Plain(TcpStream::connect(addr).await.expect("connect")),
            splitter: StreamSplitter::new(Limits::size_only(1 << 20)),
        }
    }

    pub async fn send(&mut self, xml: &str) {
        let result = match &mut self.io {
            ClientIo::Plain(tcp) => tcp.write_all(xml.as_bytes()).await,
            ClientIo::Tls(tls) => match tls.write_all(xml.as_bytes()).await {
                Ok(()) => tls.flush().await,
                Err(e) => Err(e),
            },
            ClientIo::Gone => panic!("send on a closed client"),
        };
        result.expect("send to the fixture");
    }

    /// The next stream item, or `None` if the fixture closed the socket.
    pub async fn item(&mut self) -> Option<StreamItem> {
        tokio::time::timeout(PATIENCE, self.read_item())
            .await
            .expect("the fixture answers in time")
    }

    async fn read_item(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = self
                .splitter
                .next_item()
                .expect("fixture's XML is well-formed")
            {
                return Some(item);
            }
            let buf = self.splitter.buffer_mut();
            buf.reserve(4096);
            let n = match &mut self.io {
                ClientIo::Plain(tcp) => tcp.read_buf(buf).await,
                ClientIo::Tls(tls) => tls.read_buf(buf).await,
                ClientIo::Gone => return None,
            };
            if n.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// The next element; panics on anything else.
    pub async fn element(&mut self) -> Xml {
        match self.item().await {
            Some(StreamItem::Element(e)) => String::from_utf8(e.bytes.to_vec()).expect("UTF-8"),
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// Asserts the stream ends: `</stream:stream>`, then the socket closes.
    pub async fn expect_end(&mut self) {
        assert_eq!(self.item().await, Some(StreamItem::End));
        assert_eq!(
            self.item().await,
            None,
            "socket closed after the stream's end"
        );
    }

    /// Sends a stream header for `domain`; returns the fixture's header.
    pub async fn open(&mut self, domain: &str) -> StreamHeader {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await;
        match self.item().await {
            Some(StreamItem::Header(header)) => header,
            other => panic!("expected a stream header, got {other:?}"),
        }
    }

    /// STARTTLS, verifying the fixture's certificate for `domain` against `ca`.
    pub async fn starttls(&mut self, ca: &CertificateDer<'static>, domain: &str) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = self.element().await;
        assert!(proceed.starts_with("<proceed"), "{proceed}");
        let config = crate::run::client_tls(vec![ca.clone()]).expect("CA certificate");
        let ClientIo::Plain(tcp) = std::mem::replace(&mut self.io, ClientIo::Gone) else {
            panic!("STARTTLS twice");
        };
        let name = ServerName::try_from(domain.to_owned()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("the certificate verifies against the fixture's CA");
        self.io = ClientIo::Tls(Box::new(tls));
        self.splitter.reset();
    }

    /// SASL PLAIN; returns the fixture's answer (`<success/>` or `<failure/>`).
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Xml {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        self.element().await
    }

    /// SASL SCRAM-SHA-1, checking the server's signature; returns the final answer.
    pub async fn auth_scram(&mut self, user: &str, password: &str) -> Xml {
        let (mut scram, first) = scram::Client::start(user);
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
            B64.encode(first)
        ))
        .await;
        let challenge = self.element().await;
        assert!(challenge.starts_with("<challenge"), "{challenge}");
        let server_first = String::from_utf8(B64.decode(text(&challenge)).unwrap()).unwrap();
        let last = scram
            .finish(&server_first, |salt, i| {
                scram::salted_password(password, salt, i)
            })
            .unwrap();
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(last)
        ))
        .await;
        let answer = self.element().await;
        if answer.starts_with("<success") {
            let server_final = String::from_utf8(B64.decode(text(&answer)).unwrap()).unwrap();
            scram
                .verify(&server_final)
                .expect("the fixture knows the password");
        }
        answer
    }

    /// The stream restart after SASL success; returns the features.
    pub async fn restart(&mut self, domain: &str) -> Xml {
        self.splitter.reset();
        self.open(domain).await;
        self.element().await
    }

    /// Binds `resource`; returns the full JID the fixture assigned.
    pub async fn bind(&mut self, resource: &str) -> String {
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let result = self.element().await;
        assert_eq!(attr(&result, "type").as_deref(), Some("result"), "{result}");
        assert_eq!(attr(&result, "id").as_deref(), Some("bind1"));
        let start = result.find("<jid>").expect("a jid") + 5;
        let end = result.find("</jid>").unwrap();
        result[start..end].to_owned()
    }

    /// Connects, logs in with PLAIN over plain TCP and binds `resource`.
    pub async fn plain_session(addr: SocketAddr, user: &str, resource: &str) -> (Client, String) {
        let mut client = Client::connect(addr).await;
        client.open("localhost").await;
        let features = client.element().await;
        assert!(
            features.contains("<mechanism>PLAIN</mechanism>"),
            "{features}"
        );
        let answer = client.auth_plain(user, super::PASSWORD).await;
        assert!(answer.starts_with("<success"), "{answer}");
        let features = client.restart("localhost").await;
        assert!(
            features.contains("urn:ietf:params:xml:ns:xmpp-bind"),
            "{features}"
        );
        let jid = client.bind(resource).await;
        (client, jid)
    }
}
