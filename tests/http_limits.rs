//! What bounds an HTTP connection through real sockets (docs/protocol.md §7): the deadline and
//! size limit of a request body.
//!
//! Timeouts are configured small (1–3 s) and every wait is on an event (a response, the end of
//! a connection) under a generous bound, never a sleep.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use xmpp_gateway::config::Config;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const XML: (&str, &str) = ("Content-Type", "text/xml; charset=utf-8");
/// Upper bound for a cut that is configured to happen after 1 s.
const CUT_WITHIN: Duration = Duration::from_secs(4);

/// A BOSH session request for [`DOMAIN`].
fn session_request(rid: u64, wait: u64) -> String {
    format!(
        "<body xmlns='{NS_HTTPBIND}' content='text/xml; charset=utf-8' to='{DOMAIN}' rid='{rid}' \
         wait='{wait}' hold='1' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
    )
}

/// The value of attribute `name` in `text` (quoted with `'`).
fn attr<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!(" {name}='"))? + name.len() + 3;
    let len = text[start..].find('\'')?;
    Some(&text[start..start + len])
}

/// Waits for the server to close `conn` without another response: `Err` says what happened
/// instead within `limit`.
async fn closed_within(conn: &mut HttpConn, limit: Duration) -> Result<(), String> {
    match conn.try_response(limit).await {
        Err(ReadEnd::Eof | ReadEnd::Error(_)) => Ok(()),
        Err(ReadEnd::Timeout) => Err(format!("still open after {limit:?}")),
        Ok(r) => Err(format!("answered instead of closing: {r:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

/// Body limits small enough to exceed cheaply, and a 1 s body deadline.
fn body_config() -> Config {
    let mut c = config(vec![]);
    c.bosh.max_body_bytes = 4096;
    c.limits.body_read_timeout_secs = 1;
    c
}

/// Sends `bytes` one every 300 ms (pacing the attacker), reading between writes, until the
/// gateway answers or closes; `None` if neither happened within `limit`.
async fn dribble_until_answered(
    conn: &mut HttpConn,
    bytes: &[u8],
    limit: Duration,
) -> Option<Result<HttpReply, ReadEnd>> {
    let deadline = Instant::now() + limit;
    let mut rest = bytes.iter();
    while Instant::now() < deadline {
        match conn.try_response(Duration::from_millis(300)).await {
            Err(ReadEnd::Timeout) => {}
            other => return Some(other),
        }
        if let Some(b) = rest.next() {
            conn.write_raw(&[*b]).await;
        }
    }
    None
}

// docs/protocol.md §7: a body dribbled a byte at a time is cut at limits.body_read_timeout_secs
// with HTTP 408, and the connection is closed rather than left waiting for the rest.
#[tokio::test]
async fn dribbled_bosh_body_is_answered_408_and_the_connection_closed() {
    let gw = start_gateway(body_config()).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let body = session_request(1, 10);
    let head = conn.head("POST", "/http-bind", &[XML], Some(body.len()));
    conn.write_raw(head.as_bytes()).await;
    let started = Instant::now();
    let reply = dribble_until_answered(&mut conn, body.as_bytes(), CUT_WITHIN)
        .await
        .expect("the gateway kept reading a dribbled body for 4 s")
        .expect("an HTTP answer before the close");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(
        elapsed < Duration::from_millis(2500),
        "cut after {elapsed:?}"
    );
    closed_within(&mut conn, CUT_WITHIN)
        .await
        .expect("connection closed after the 408");
}

// Same deadline over HTTP/2: the stream whose body never comes is answered 408, and the
// connection keeps serving other streams.
#[tokio::test]
async fn http2_body_that_never_comes_is_answered_408() {
    let gw = start_gateway(body_config()).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    type Stalled = StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, Infallible>>>;
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Stalled>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::post("http://gateway/http-bind")
        .header("content-type", "text/xml; charset=utf-8")
        .body(StreamBody::new(futures_util::stream::pending()))
        .expect("request");
    let resp = tokio::time::timeout(CUT_WITHIN, send.send_request(req))
        .await
        .expect("an answer to a stalled body within 4 s")
        .expect("response");
    assert_eq!(resp.status(), 408);
    let req = http::Request::get("http://gateway/no/such/thing")
        .body(StreamBody::new(futures_util::stream::pending()))
        .expect("request");
    let next = tokio::time::timeout(TIMEOUT, send.send_request(req))
        .await
        .expect("the connection still serves")
        .expect("response");
    assert_eq!(next.status(), 404);
}

// docs/protocol.md §7: a Content-Length over bosh.max_body_bytes is refused at once, before a
// byte of the body is read.
#[tokio::test]
async fn announced_body_over_the_limit_is_413_before_it_is_sent() {
    let gw = start_gateway(body_config()).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let head = conn.head("POST", "/http-bind", &[XML], Some(1024 * 1024));
    conn.write_raw(head.as_bytes()).await;
    let reply = conn.try_response(Duration::from_millis(500)).await;
    let reply = reply.expect("413 without waiting for the body");
    assert_eq!(reply.status, 413, "{reply:?}");
}

// docs/protocol.md §7: the limit counts bytes, however many chunks carry them: thousands of
// 1-byte chunks adding up to more than bosh.max_body_bytes are 413 (the buffer they would fill
// is bounded by the unit tests of http/body.rs).
#[tokio::test]
async fn chunked_body_of_tiny_chunks_over_the_limit_is_413() {
    let gw = start_gateway(body_config()).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let mut req = conn
        .head(
            "POST",
            "/http-bind",
            &[XML, ("Transfer-Encoding", "chunked")],
            None,
        )
        .into_bytes();
    for _ in 0..5000 {
        req.extend_from_slice(b"1\r\nx\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.write_raw(&req).await;
    let reply = conn.response().await;
    assert_eq!(reply.status, 413, "{reply:?}");
}

// Under the limit, a body in 1-byte chunks is read whole: here a session request for a domain
// the gateway does not serve, answered with the BOSH host-unknown terminate.
#[tokio::test]
async fn chunked_body_of_tiny_chunks_under_the_limit_is_read_whole() {
    let gw = start_gateway(body_config()).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let body = session_request(1, 10);
    let mut req = conn
        .head(
            "POST",
            "/http-bind",
            &[XML, ("Transfer-Encoding", "chunked")],
            None,
        )
        .into_bytes();
    for b in body.bytes() {
        req.extend_from_slice(b"1\r\n");
        req.push(b);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    conn.write_raw(&req).await;
    let reply = conn.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let text = reply.text();
    assert_eq!(attr(&text, "type"), Some("terminate"), "{text}");
    assert_eq!(attr(&text, "condition"), Some("host-unknown"), "{text}");
}
