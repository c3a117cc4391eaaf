//! docs/protocol.md §7, the client's address: the socket's peer, or what a configured trusted
//! proxy says (a PROXY protocol header on its connection, `Forwarded`/`X-Forwarded-For` on its
//! requests), never a header from anyone else.
//!
//! The address is observed where sessions are admitted and logged: the `peer` field of each
//! `session` span, recorded by a tracing layer installed for the test's thread (a
//! `#[tokio::test]` runs the gateway's tasks on that thread too).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;
use xmpp_gateway::config::{Config, TrustedProxies};

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// A session the gateway started: its transport and the client address it was logged with.
#[derive(Debug, Default, PartialEq, Eq)]
struct Session {
    transport: String,
    peer: String,
}

impl Visit for Session {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "transport" {
            self.transport = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "peer" {
            self.peer = format!("{value:?}");
        }
    }
}

/// Sends every new `session` span's fields to the test.
struct SessionSpans(mpsc::UnboundedSender<Session>);

impl<S: Subscriber> Layer<S> for SessionSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() == "session" {
            let mut session = Session::default();
            attrs.record(&mut session);
            let _ = self.0.send(session);
        }
    }
}

/// Records the sessions started on this thread while the guard lives.
struct Sessions {
    rx: mpsc::UnboundedReceiver<Session>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Sessions {
    fn record() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscriber = tracing_subscriber::registry().with(SessionSpans(tx));
        Self {
            rx,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The next session started, as (transport, client address).
    async fn next(&mut self) -> (String, String) {
        let s = tokio::time::timeout(TIMEOUT, self.rx.recv())
            .await
            .expect("a session span in time")
            .expect("recorder alive");
        (s.transport, s.peer)
    }
}

/// A gateway (no routes: a session request ends with host-unknown, after its span began) that
/// trusts `ranges`, with a 1 s header-read deadline.
async fn gateway(ranges: &[&str]) -> TestGateway {
    let mut c: Config = config(vec![]);
    c.limits.trusted_proxies = TrustedProxies::parse(ranges).unwrap();
    c.limits.header_read_timeout_secs = 1;
    start_gateway(c).await
}

fn v1(source: &str, port: u16) -> Vec<u8> {
    let family = if source.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if source.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {source} {dst} {port} 5280\r\n").into_bytes()
}

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: PROXY (or LOCAL) over TCP from `source` to the gateway.
fn v2(local: bool, source: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    let mut addrs = Vec::new();
    match source {
        SocketAddr::V4(s) => {
            h.push(0x11);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&[127, 0, 0, 1]);
        }
        SocketAddr::V6(s) => {
            h.push(0x21);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    addrs.extend_from_slice(&source.port().to_be_bytes());
    addrs.extend_from_slice(&5280u16.to_be_bytes());
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(&addrs);
    h
}

fn session_body() -> String {
    format!("<body xmlns='{NS_HTTPBIND}' rid='1' to='{DOMAIN}' wait='60' hold='1'/>")
}

/// A BOSH session request on a new connection that first sends `prefix` (a PROXY header, or
/// nothing) and `headers`; returns the response.
async fn bosh_session(
    gw: &TestGateway,
    prefix: &[u8],
    headers: &[(&str, &str)],
) -> Result<HttpReply, ReadEnd> {
    let mut conn = HttpConn::connect(gw.addr).await;
    let body = session_body();
    let mut bytes = prefix.to_vec();
    let mut h = vec![("Content-Type", "text/xml; charset=utf-8")];
    h.extend_from_slice(headers);
    bytes.extend_from_slice(
        conn.head("POST", "/http-bind", &h, Some(body.len()))
            .as_bytes(),
    );
    bytes.extend_from_slice(body.as_bytes());
    conn.write_raw(&bytes).await;
    conn.try_response(TIMEOUT).await
}

/// A WebSocket session on a new connection that first sends `prefix` and carries `headers`.
async fn ws_session(gw: &TestGateway, prefix: &[u8], headers: &[(&'static str, &str)]) {
    let mut tcp = TcpStream::connect(gw.addr).await.expect("connect");
    tcp.write_all(prefix).await.expect("send prefix");
    let mut req = gw.ws_url().into_client_request().expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let handshake = tokio_tungstenite::client_async(req, tcp);
    let (ws, _) = tokio::time::timeout(TIMEOUT, handshake)
        .await
        .expect("handshake in time")
        .expect("WebSocket handshake");
    drop(ws);
}

fn bosh(peer: &str) -> (String, String) {
    ("bosh".into(), peer.into())
}

fn websocket(peer: &str) -> (String, String) {
    ("websocket".into(), peer.into())
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn proxy_v1_from_a_trusted_peer_names_the_client() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1/32"]).await;
    let reply = bosh_session(&gw, &v1("203.0.113.7", 51234), &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.text().contains("host-unknown"), "{}", reply.text());
    assert_eq!(sessions.next().await, bosh("203.0.113.7"));

    ws_session(&gw, &v1("2001:db8::7", 4711), &[]).await;
    assert_eq!(sessions.next().await, websocket("2001:db8::7"));
}

#[tokio::test]
async fn proxy_v2_from_a_trusted_peer_names_the_client() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.0/8", "::1/128"]).await;
    ws_session(&gw, &v2(false, "[2001:db8::7]:4711".parse().unwrap()), &[]).await;
    assert_eq!(sessions.next().await, websocket("2001:db8::7"));

    let reply = bosh_session(&gw, &v2(false, "198.51.100.4:1234".parse().unwrap()), &[]).await;
    assert_eq!(reply.unwrap().status, 200);
    assert_eq!(sessions.next().await, bosh("198.51.100.4"));
}

// The proxy's own connections (health checks) say LOCAL: the socket's peer is the client.
#[tokio::test]
async fn proxy_v2_local_leaves_the_socket_peer() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1"]).await;
    let reply = bosh_session(&gw, &v2(true, "203.0.113.7:1".parse().unwrap()), &[]).await;
    assert_eq!(reply.unwrap().status, 200);
    assert_eq!(sessions.next().await, bosh("127.0.0.1"));
}

// What follows the header reaches hyper untouched, including the HTTP/2 preface that
// hyper-util sniffs to choose the protocol.
#[tokio::test]
async fn http2_after_a_proxy_header_from_a_trusted_peer() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1"]).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&v2(false, "203.0.113.70:1".parse().unwrap()))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post("http://gateway/http-bind")
        .header("content-type", "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(session_body())))
        .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, send.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("host-unknown"));
    assert_eq!(sessions.next().await, bosh("203.0.113.70"));
}

#[tokio::test]
async fn trusted_peer_without_a_proxy_header_is_served_as_a_plain_connection() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1"]).await;
    let meta = http_get(gw.addr, "/.well-known/host-meta", &[]).await;
    assert_eq!(meta.status, 200);
    let reply = bosh_session(&gw, b"", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(sessions.next().await, bosh("127.0.0.1"));
}

// From a peer that is not trusted a PROXY header is not looked for: it is what it looks like
// to hyper, a request that is not HTTP.
#[tokio::test]
async fn proxy_header_from_an_untrusted_peer_is_bad_http() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["10.0.0.0/8"]).await;
    for header in [
        v1("203.0.113.7", 1),
        v2(false, "203.0.113.7:1".parse().unwrap()),
    ] {
        let reply = bosh_session(&gw, &header, &[]).await.expect("an answer");
        assert_eq!(reply.status, 400, "{reply:?}");
    }
    // No session began; the next one is the plain request's, from the socket's peer.
    bosh_session(&gw, b"", &[]).await.unwrap();
    assert_eq!(sessions.next().await, bosh("127.0.0.1"));
}

#[tokio::test]
async fn malformed_proxy_header_from_a_trusted_peer_closes_the_connection() {
    let gw = gateway(&["127.0.0.1"]).await;
    let mut bad_v2 = v2(false, "203.0.113.7:1".parse().unwrap());
    bad_v2[12] = 0x11; // version 1 in binary form does not exist
    for header in [
        b"PROXY TCP4 not-an-address 127.0.0.1 1 5280\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 127.0.0.1 1 5280\n".to_vec(),
        bad_v2,
    ] {
        match bosh_session(&gw, &header, &[]).await {
            Err(ReadEnd::Eof | ReadEnd::Error(_)) => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&header)),
        }
    }
}

#[tokio::test]
async fn slow_proxy_header_is_cut_at_the_header_read_deadline() {
    let gw = gateway(&["127.0.0.1"]).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let started = Instant::now();
    conn.write_raw(b"PROXY TCP4 203.0.113.7 ").await;
    match conn.try_response(Duration::from_secs(4)).await {
        Err(ReadEnd::Eof | ReadEnd::Error(_)) => {}
        other => panic!("expected a close at the deadline, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the deadline: {waited:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Forwarded and X-Forwarded-For
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let mut sessions = Sessions::record();
    let gw = gateway(&[]).await;
    let spoof = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=198.51.100.1"),
    ];
    bosh_session(&gw, b"", &spoof).await.unwrap();
    assert_eq!(sessions.next().await, bosh("127.0.0.1"));
    ws_session(&gw, b"", &spoof).await;
    assert_eq!(sessions.next().await, websocket("127.0.0.1"));
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_peer_names_the_client() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1", "10.0.0.0/8"]).await;
    // The left-most entry is the client's own claim; 10.0.0.3 is a trusted hop.
    let xff = [("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.3")];
    bosh_session(&gw, b"", &xff).await.unwrap();
    assert_eq!(sessions.next().await, bosh("203.0.113.9"));
    ws_session(&gw, b"", &xff).await;
    assert_eq!(sessions.next().await, websocket("203.0.113.9"));
}

#[tokio::test]
async fn forwarded_from_a_trusted_peer_names_the_client() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1"]).await;
    let fwd = [(
        "Forwarded",
        "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
    )];
    ws_session(&gw, b"", &fwd).await;
    assert_eq!(sessions.next().await, websocket("2001:db8:cafe::17"));
}

// Behind a TCP proxy that sends a PROXY header, the HTTP is the client's own: its headers are
// believed only if the client it names is itself a trusted proxy.
#[tokio::test]
async fn headers_behind_a_proxy_header_count_only_from_a_trusted_client() {
    let mut sessions = Sessions::record();
    let gw = gateway(&["127.0.0.1", "10.0.0.0/8"]).await;
    let xff = [("X-Forwarded-For", "198.51.100.1")];
    bosh_session(&gw, &v1("203.0.113.7", 1), &xff)
        .await
        .unwrap();
    assert_eq!(sessions.next().await, bosh("203.0.113.7"));
    bosh_session(&gw, &v1("10.1.2.3", 1), &xff).await.unwrap();
    assert_eq!(sessions.next().await, bosh("198.51.100.1"));
}
