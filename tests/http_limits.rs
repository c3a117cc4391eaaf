//! What bounds an HTTP connection through real sockets (docs/protocol.md §7): the deadline and
//! size limit of a request body, the idle timeout of HTTP/1.1 and HTTP/2 connections (and what
//! is not idle: a held BOSH request, an upgraded WebSocket), and the admin listener's cap.
//!
//! Timeouts are configured small (1–3 s) and every wait is on an event (a response, the end of
//! a connection) under a generous bound, never a sleep.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full, StreamBody};
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

/// An upstream that opens every stream with SASL features and then keeps it open.
async fn patient_upstream() -> (SocketAddr, UpstreamHandle<()>) {
    ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        // Held open for the test's life; the runtime ends it.
        std::future::pending::<()>().await;
    })
    .await
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

/// An HTTP/2 connection with prior knowledge (h2c, as a proxy speaks to its backends), its
/// request sender, and the task driving it, which ends when the server closes the connection.
async fn h2c(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

/// POSTs `body` to /http-bind over HTTP/2 and returns status and body text.
async fn h2_post(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    body: String,
    within: Duration,
) -> (u16, String) {
    let req = http::Request::post("http://gateway/http-bind")
        .header("content-type", "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let exchange = async {
        let resp = send.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let text = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    };
    tokio::time::timeout(within, exchange)
        .await
        .expect("an HTTP/2 response in time")
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

// ---------------------------------------------------------------------------------------------
// Request heads
// ---------------------------------------------------------------------------------------------

/// A GET of host-meta whose head is exactly `len` bytes, padded with a cookie.
fn head_of_len(conn: &HttpConn, len: usize) -> String {
    let bare = conn.head("GET", "/.well-known/host-meta", &[("Cookie", "")], None);
    assert!(bare.len() <= len, "a head of {len} bytes cannot be built");
    let cookie = "a".repeat(len - bare.len());
    let head = conn.head(
        "GET",
        "/.well-known/host-meta",
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(head.len(), len);
    head
}

/// The status of a request whose head is exactly `len` bytes.
async fn status_for_head_of(gw: &TestGateway, len: usize) -> u16 {
    let mut conn = HttpConn::connect(gw.addr).await;
    let head = head_of_len(&conn, len);
    conn.write_raw(head.as_bytes()).await;
    conn.response().await.status
}

// docs/protocol.md §7: an HTTP/1.1 request head of up to limits.max_request_head_bytes (8 KiB)
// is read; one byte more is answered 431 (Request Header Fields Too Large).
#[tokio::test]
async fn request_head_over_the_limit_is_431() {
    let gw = start_gateway(config(vec![])).await;
    assert_eq!(status_for_head_of(&gw, 8192).await, 200);
    assert_eq!(status_for_head_of(&gw, 8193).await, 431);
}

// The limit is the operator's: raised to 16 KiB, a 12 KiB head is read.
#[tokio::test]
async fn request_head_limit_can_be_raised() {
    let mut c = config(vec![]);
    c.limits.max_request_head_bytes = 16384;
    let gw = start_gateway(c).await;
    assert_eq!(status_for_head_of(&gw, 12 * 1024).await, 200);
    assert_eq!(status_for_head_of(&gw, 16385).await, 431);
}

// ---------------------------------------------------------------------------------------------
// Idle connections
// ---------------------------------------------------------------------------------------------

/// A 1 s idle timeout, with the header-read timeout far enough to tell the two apart.
fn idle_config(routes: Vec<xmpp_gateway::config::RouteConfig>) -> Config {
    let mut c = config(routes);
    c.limits.http_idle_timeout_secs = 1;
    c.limits.header_read_timeout_secs = 30;
    c
}

// docs/protocol.md §7 ("HTTP/2 idle"): an HTTP/2 connection with no request in flight is closed
// after limits.http_idle_timeout_secs.
#[tokio::test]
async fn idle_http2_connection_is_closed_after_the_idle_timeout() {
    let gw = start_gateway(idle_config(vec![])).await;
    let (mut send, driver) = h2c(gw.addr).await;
    let req = http::Request::get("http://gateway/no/such/thing")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 404);
    let started = Instant::now();
    tokio::time::timeout(CUT_WITHIN, driver)
        .await
        .expect("the gateway kept an idle HTTP/2 connection open for 4 s")
        .expect("driver task");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
}

// An idle HTTP/1.1 keep-alive connection is closed too: hyper restarts its header-read timer
// as soon as a response is written, so limits.header_read_timeout_secs bounds the wait for the
// next request.
#[tokio::test]
async fn idle_http1_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let mut c = config(vec![]);
    c.limits.header_read_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let reply = conn.request("GET", "/no/such/thing", &[], b"").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("connection"), None, "kept alive: {reply:?}");
    closed_within(&mut conn, CUT_WITHIN)
        .await
        .expect("idle keep-alive connection closed");
}

// What is not idle: a BOSH request held for its `wait` (3 s, three idle timeouts) over HTTP/2 is
// answered on its connection, which is closed only once idle after it.
#[tokio::test]
async fn http2_connection_holding_a_bosh_request_is_not_cut_while_it_waits() {
    let (up, _handle) = patient_upstream().await;
    let mut c = idle_config(vec![]);
    c.routes = plain_config(up).routes;
    c.bosh.max_wait_secs = 3;
    let gw = start_gateway(c).await;
    let (mut send, driver) = h2c(gw.addr).await;
    let (status, created) = h2_post(&mut send, session_request(10, 3), TIMEOUT).await;
    assert_eq!(status, 200, "{created}");
    let sid = attr(&created, "sid").unwrap_or_else(|| panic!("no sid: {created}"));
    let poll = format!("<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='11'/>");
    let started = Instant::now();
    let (status, answer) = h2_post(&mut send, poll, Duration::from_secs(8)).await;
    let held = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        attr(&answer, "type"),
        None,
        "an ordinary empty body: {answer}"
    );
    assert!(
        held >= Duration::from_millis(2500),
        "answered after {held:?}, not held"
    );
    tokio::time::timeout(CUT_WITHIN, driver)
        .await
        .expect("closed once idle after the held request")
        .expect("driver task");
}

// Nor is an upgraded WebSocket idle: with a 1 s idle timeout the session outlives several pings.
#[tokio::test]
async fn websocket_session_is_not_cut_by_the_idle_timeout() {
    let (up, _handle) = patient_upstream().await;
    let mut c = idle_config(vec![]);
    c.routes = plain_config(up).routes;
    c.websocket.ping_interval_secs = 1;
    c.websocket.max_missed_pongs = 3;
    let gw = start_gateway(c).await;
    let (mut ws, _, _) = gw.open_session().await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while ws.pings < 3 {
        assert!(Instant::now() < deadline, "only {} pings in 8 s", ws.pings);
        match ws.next_event(Duration::from_millis(500)).await {
            WsEvent::Timeout => {}
            other => panic!("the session ended after {} pings: {other:?}", ws.pings),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The admin listener
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §7: the admin listener takes at most limits.admin_max_connections
// connections; one more is closed unanswered, and a freed slot is taken again.
#[tokio::test]
async fn admin_listener_refuses_connections_beyond_its_cap() {
    let mut c = config(vec![]);
    c.limits.admin_max_connections = 2;
    let gw = start_gateway(c).await;
    let mut first = HttpConn::connect(gw.admin_addr).await;
    let mut second = HttpConn::connect(gw.admin_addr).await;
    for conn in [&mut first, &mut second] {
        assert_eq!(conn.request("GET", "/healthz", &[], b"").await.status, 200);
    }
    assert_eq!(
        admin_answer(gw.admin_addr).await,
        None,
        "a third connection was served"
    );
    drop(first);
    // The slot comes back when the gateway has seen the close; until then a new connection
    // is closed like the third.
    let deadline = Instant::now() + TIMEOUT;
    while admin_answer(gw.admin_addr).await != Some(200) {
        assert!(Instant::now() < deadline, "the freed slot was not reused");
    }
    assert_eq!(
        second.request("GET", "/healthz", &[], b"").await.status,
        200
    );
}

/// The status of `GET /healthz` on a new admin connection, or `None` if the gateway closes it
/// unanswered.
async fn admin_answer(addr: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr)
        .await
        .expect("the listener accepts");
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // A refused connection may already be reset: a failed write is read as a refusal below.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "neither answered nor closed within {TIMEOUT:?}"
    );
    let head = String::from_utf8_lossy(&got);
    head.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}
