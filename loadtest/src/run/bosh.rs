//! A BOSH client session (XEP-0124, XEP-0206) as browsers run it: HTTP/1.1 keep-alive
//! connections, one request held by the server while idle, a second one to send, `rid`
//! counting up by one per request.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use quick_xml::events::Event;
use quick_xml::Reader;

use super::conn::tcp_connect;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const NS_XBOSH: &str = "urn:xmpp:xbosh";

type Sender = SendRequest<Full<Bytes>>;
type InFlight = Pin<Box<dyn Future<Output = (u64, Result<(Sender, Bytes)>)> + Send>>;

/// Where the BOSH endpoint is and how to reach it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    pub path: String,
    pub source: Option<IpAddr>,
}

/// One BOSH session.
pub struct Bosh {
    endpoint: Endpoint,
    /// Keep-alive connections with no request on them.
    idle: Vec<Sender>,
    in_flight: FuturesUnordered<InFlight>,
    /// Answers that came before the answer to an earlier request: responses are read in rid
    /// order (XEP-0124 §9), whatever order the connections deliver them in.
    early: BTreeMap<u64, Bytes>,
    /// The rids whose answers have not been read, lowest first.
    unanswered: VecDeque<u64>,
    /// Payload waiting for a free request (no more than `requests` may be out).
    pending: String,
    rid: u64,
    sid: String,
    requests: usize,
    inbox: VecDeque<Bytes>,
    terminated: bool,
}

impl Bosh {
    /// Creates a session (XEP-0124 §7, XEP-0206 §3): returns once the server gave a sid.
    pub async fn create(endpoint: Endpoint, domain: &str, wait: u64) -> Result<Bosh> {
        let mut bosh = Bosh {
            endpoint,
            idle: Vec::new(),
            in_flight: FuturesUnordered::new(),
            early: BTreeMap::new(),
            unanswered: VecDeque::new(),
            pending: String::new(),
            rid: rand::random::<u32>() as u64,
            sid: String::new(),
            requests: 2,
            inbox: VecDeque::new(),
            terminated: false,
        };
        let attributes = format!(
            "content='text/xml; charset=utf-8' hold='1' to='{domain}' ver='1.6' wait='{wait}' \
             xml:lang='en' xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'"
        );
        bosh.fire(&attributes, String::new());
        let (_, answer) = bosh.in_flight.next().await.expect("one request is out");
        let (sender, body) = answer?;
        bosh.unanswered.clear();
        bosh.idle.push(sender);
        let root = bosh.absorb(&body)?;
        bosh.sid = root.sid.context("session creation response has no sid")?;
        bosh.requests = root.requests.unwrap_or(2).clamp(1, 2);
        Ok(bosh)
    }

    /// Sends the session's next requests to `endpoint` (another node of a gateway cluster),
    /// on new connections.
    pub fn switch(&mut self, endpoint: Endpoint) {
        self.endpoint = endpoint;
        self.idle.clear();
    }

    /// Sends stanzas now if a request is free, or with the next one.
    pub async fn send(&mut self, payload: String) -> Result<()> {
        self.pending.push_str(&payload);
        if self.in_flight.len() < self.requests {
            let payload = std::mem::take(&mut self.pending);
            self.fire("", payload);
        }
        Ok(())
    }

    /// The next element the server sent. Keeps one request held while idle. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Bytes> {
        loop {
            if let Some(element) = self.inbox.pop_front() {
                return Ok(element);
            }
            if self.terminated {
                bail!("closed: the session was terminated");
            }
            if self.in_flight.is_empty() {
                let payload = std::mem::take(&mut self.pending);
                self.fire("", payload);
            }
            let (rid, answer) = self.in_flight.next().await.expect("a request is out");
            let (sender, body) = answer?;
            self.idle.push(sender);
            self.early.insert(rid, body);
            while let Some(body) = self
                .unanswered
                .front()
                .and_then(|rid| self.early.remove(rid))
            {
                self.unanswered.pop_front();
                self.absorb(&body)?;
            }
            if !self.pending.is_empty() && self.in_flight.len() < self.requests {
                let payload = std::mem::take(&mut self.pending);
                self.fire("", payload);
            }
        }
    }

    /// Stream restart after SASL success (XEP-0206 §5).
    pub async fn restart(&mut self, domain: &str) -> Result<()> {
        let attributes =
            format!("to='{domain}' xml:lang='en' xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'");
        let payload = std::mem::take(&mut self.pending);
        self.fire(&attributes, payload);
        Ok(())
    }

    /// Ends the session (XEP-0124 §13) and waits for the answers to what is out.
    pub async fn terminate(&mut self) -> Result<()> {
        let mut payload = std::mem::take(&mut self.pending);
        payload.push_str("<presence type='unavailable' xmlns='jabber:client'/>");
        self.fire("type='terminate'", payload);
        while let Some((_, answer)) = self.in_flight.next().await {
            answer?;
        }
        Ok(())
    }

    /// Sends one request with the next rid on an idle connection, or a new one.
    fn fire(&mut self, attributes: &str, payload: String) {
        self.rid += 1;
        let rid = self.rid;
        self.unanswered.push_back(rid);
        let sid = if self.sid.is_empty() {
            String::new()
        } else {
            format!(" sid='{}'", self.sid)
        };
        let body = format!(
            "<body rid='{}'{sid} {attributes} xmlns='{NS_HTTPBIND}'>{payload}</body>",
            self.rid
        );
        let sender = self.idle.pop();
        let endpoint = self.endpoint.clone();
        self.in_flight.push(Box::pin(async move {
            (rid, post(endpoint, sender, body).await)
        }));
    }

    /// Reads a response body: its children go to the inbox; a terminate ends the session.
    fn absorb(&mut self, body: &Bytes) -> Result<Root> {
        let root = parse_body(body, &mut self.inbox)?;
        if root.terminate {
            self.terminated = true;
            bail!(
                "bosh-terminate: {}",
                root.condition.as_deref().unwrap_or("(no condition)")
            );
        }
        Ok(root)
    }
}

async fn post(endpoint: Endpoint, sender: Option<Sender>, body: String) -> Result<(Sender, Bytes)> {
    let mut sender = match sender {
        Some(sender) if !sender.is_closed() => sender,
        _ => {
            let tcp = tcp_connect(endpoint.addr, endpoint.source).await?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .context("http handshake")?;
            tokio::spawn(connection);
            sender
        }
    };
    sender.ready().await.context("http: connection closed")?;
    let request = http::Request::post(endpoint.path.as_str())
        .header(http::header::HOST, endpoint.authority.as_str())
        .header(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| anyhow!("http: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| anyhow!("http: {err}"))?
        .to_bytes();
    if !status.is_success() {
        bail!("http-status: {}", status.as_u16());
    }
    Ok((sender, body))
}

/// What the `<body/>` wrapper of a response says.
#[derive(Debug, Default)]
struct Root {
    sid: Option<String>,
    requests: Option<usize>,
    terminate: bool,
    condition: Option<String>,
}

/// Parses a response `<body/>`: its attributes, and its children appended to `children` as
/// slices of the response.
fn parse_body(body: &Bytes, children: &mut VecDeque<Bytes>) -> Result<Root> {
    let mut reader = Reader::from_reader(&body[..]);
    let mut root = Root::default();
    let mut depth = 0usize;
    let mut child_start = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().context("xml: response body")?;
        let after = reader.buffer_position() as usize;
        let is_start = matches!(event, Event::Start(_));
        match event {
            Event::Start(start) | Event::Empty(start) if depth == 0 => {
                if start.local_name().as_ref() != b"body" {
                    bail!("xml: the response root is not <body/>");
                }
                for attribute in start.attributes() {
                    let attribute = attribute.context("xml: body attribute")?;
                    let value = attribute.unescape_value()?.into_owned();
                    match attribute.key.as_ref() {
                        b"sid" => root.sid = Some(value),
                        b"requests" => root.requests = value.parse().ok(),
                        b"type" => root.terminate = value == "terminate",
                        b"condition" => root.condition = Some(value),
                        _ => {}
                    }
                }
                if is_start {
                    depth = 1;
                } else {
                    return Ok(root);
                }
            }
            Event::Start(_) => {
                if depth == 1 {
                    child_start = before;
                }
                depth += 1;
            }
            Event::Empty(_) if depth == 1 => children.push_back(body.slice(before..after)),
            Event::End(_) => {
                depth -= 1;
                match depth {
                    0 => return Ok(root),
                    1 => children.push_back(body.slice(child_start..after)),
                    _ => {}
                }
            }
            Event::Eof => bail!("xml: the response body ends early"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_body_gives_its_attributes_and_children() {
        let body = Bytes::from_static(
            b"<body xmlns='http://jabber.org/protocol/httpbind' sid='s1' requests='2'>\
              <message to='a'><body>x</body></message> <presence/></body>",
        );
        let mut children = VecDeque::new();
        let root = parse_body(&body, &mut children).unwrap();
        assert_eq!(root.sid.as_deref(), Some("s1"));
        assert_eq!(root.requests, Some(2));
        assert!(!root.terminate);
        assert_eq!(children[0], "<message to='a'><body>x</body></message>");
        assert_eq!(children[1], "<presence/>");
        let mut none = VecDeque::new();
        let end = Bytes::from_static(b"<body type='terminate' condition='item-not-found'/>");
        let root = parse_body(&end, &mut none).unwrap();
        assert!(root.terminate);
        assert_eq!(root.condition.as_deref(), Some("item-not-found"));
    }
}
