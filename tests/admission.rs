//! Admission through real sockets (docs/protocol.md §7): one global cap on sessions across
//! WebSocket and BOSH, over HTTP/1.1 and HTTP/2 alike, and per-address caps on concurrent and
//! new sessions. A refused session gets HTTP 503 with `Retry-After` and costs no upstream
//! connection.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bosh::assert_refused;
use common::peers::{wait_for_buffered, wait_for_sessions};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use xmpp_gateway::config::Config;

const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
const XML: (&str, &str) = ("Content-Type", "text/xml; charset=utf-8");

fn session_request(rid: u64) -> String {
    format!(
        "<body xmlns='{NS_HTTPBIND}' content='text/xml; charset=utf-8' to='{DOMAIN}' rid='{rid}' \
         wait='10' hold='1' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
    )
}

/// An upstream that opens every stream, keeps it open, and answers the gateway's closing tag.
async fn patient_upstream() -> (SocketAddr, UpstreamHandle<()>) {
    ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        let closed = conn
            .try_read_until(STREAM_END, Duration::from_secs(60))
            .await;
        if closed.is_ok() {
            conn.write(STREAM_END).await;
        }
    })
    .await
}

fn created(reply: &HttpReply) -> bool {
    reply.status == 200 && reply.text().contains(" sid='")
}

// Issue 9, bug 2: every request without a sid dialled the server and added a session, so one
// keep-alive connection could create thousands. With the default limits one address gets its
// burst and then new sessions at the configured rate; the rest are refused without dialling.
#[tokio::test]
async fn one_address_cannot_create_sessions_without_bound_over_one_connection() {
    let (up, handle) = patient_upstream().await;
    let config = plain_config(up);
    let burst = config.limits.new_sessions_burst as f64;
    let rate = config.limits.new_sessions_per_address_per_sec as f64;
    let gw = start_gateway(config).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let started = Instant::now();
    let (mut admitted, mut refused) = (0usize, 0usize);
    for i in 0..300 {
        let body = session_request(1000 + i);
        let reply = conn
            .request("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        if created(&reply) {
            admitted += 1;
        } else {
            assert_refused(&reply);
            refused += 1;
        }
    }
    let allowed = burst + rate * started.elapsed().as_secs_f64() + 1.0;
    assert!(
        admitted as f64 <= allowed,
        "{admitted} sessions admitted, at most {allowed:.0} allowed"
    );
    assert!(
        admitted >= burst as usize,
        "the burst is admitted: {admitted}"
    );
    assert_eq!(admitted + refused, 300);
    // A refused session cost no upstream connection.
    assert_eq!(handle.connections(), admitted);
}

fn capped(up: SocketAddr, max_sessions: usize, per_address: usize) -> Config {
    let mut c = plain_config(up);
    c.limits.max_sessions = max_sessions;
    c.limits.max_sessions_per_address = per_address;
    c
}

// docs/protocol.md §7: one address holds at most max_sessions_per_address sessions, counted
// across both transports; a WebSocket refused gets 503 with Retry-After before the upgrade.
#[tokio::test]
async fn concurrent_sessions_per_address_are_capped_across_transports() {
    let (up, handle) = patient_upstream().await;
    let gw = start_gateway(capped(up, 100, 2)).await;
    let (_ws, _, _) = gw.open_session().await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let body = session_request(7);
    let first = conn
        .request("POST", "/http-bind", &[XML], body.as_bytes())
        .await;
    assert!(created(&first), "{first:?}");
    let third = conn
        .request("POST", "/http-bind", &[XML], session_request(9).as_bytes())
        .await;
    assert_refused(&third);
    match WsClient::try_connect(gw.addr, &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a third session from one address was upgraded"),
    }
    assert_eq!(handle.connections(), 2);
}

// docs/protocol.md §7: the global cap counts WebSocket and BOSH sessions together, over HTTP/2
// as over HTTP/1.1, and a slot is given back when its session ends.
#[tokio::test]
async fn the_global_cap_holds_across_transports_and_http_versions_and_frees_on_end() {
    let (up, handle) = patient_upstream().await;
    let gw = start_gateway(capped(up, 2, 100)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let bosh = conn
        .request("POST", "/http-bind", &[XML], session_request(7).as_bytes())
        .await;
    assert!(created(&bosh), "{bosh:?}");
    wait_for_sessions(&gw, 2, TIMEOUT).await;

    // Over HTTP/2 the session request is refused the same way.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, h2) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(h2);
    let req = http::Request::post("http://gateway/http-bind")
        .header("content-type", "text/xml; charset=utf-8")
        .body(Full::new(Bytes::from(session_request(20))))
        .unwrap();
    let resp = tokio::time::timeout(TIMEOUT, send.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("policy-violation"));

    assert!(matches!(
        WsClient::try_connect(gw.addr, &[]).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503
    ));
    assert_eq!(handle.connections(), 2);

    // The WebSocket session ends; its slot is free for a new session.
    ws.send(CLOSE_FRAME).await;
    wait_for_sessions(&gw, 1, TIMEOUT).await;
    let again = conn
        .request("POST", "/http-bind", &[XML], session_request(30).as_bytes())
        .await;
    assert!(created(&again), "{again:?}");
    assert_eq!(handle.connections(), 3);
}

fn stanza_of(id: &str, size: usize) -> String {
    let head = format!("<message id='{id}'><body>");
    let tail = "</body></message>";
    format!("{head}{}{tail}", "x".repeat(size - head.len() - tail.len()))
}

fn sid_of(text: &str) -> String {
    let at = text.find(" sid='").expect("a sid") + 6;
    text[at..at + text[at..].find('\'').unwrap()].to_string()
}

// docs/protocol.md §7: past limits.max_buffered_bytes_total new sessions are refused, and the
// session holding more than its share (the slowest reader) is cut; the others go on.
#[tokio::test]
async fn past_the_memory_ceiling_new_sessions_are_refused_and_the_biggest_holder_is_cut() {
    const KIB: usize = 1024;
    let more = std::sync::Arc::new(tokio::sync::Notify::new());
    let trigger = more.clone();
    let (up, _handle) = ScriptedUpstream::start(move |mut conn, n| {
        let more = more.clone();
        async move {
            conn.answer_stream("s-1", FEATURES_SASL).await;
            // The first session's client reads nothing: 55 KiB wait for it, then 5 more.
            let (count, size) = if n == 0 { (55, KIB) } else { (12, KIB) };
            for i in 0..count {
                conn.write(&stanza_of(&format!("s{n}-{i}"), size)).await;
            }
            if n == 0 {
                more.notified().await;
                for i in 0..5 {
                    conn.write(&stanza_of(&format!("late-{i}"), KIB)).await;
                }
            }
            let _ = conn
                .try_read_until(STREAM_END, Duration::from_secs(60))
                .await;
        }
    })
    .await;
    let mut config = plain_config(up);
    config.limits.max_stanza_bytes = 16 * KIB;
    config.limits.max_buffered_bytes = 64 * KIB;
    config.limits.max_buffered_bytes_total = 64 * KIB;
    let gw = start_gateway(config).await;
    let mut http = HttpConn::connect(gw.addr).await;

    let a = http
        .request(
            "POST",
            "/http-bind",
            &[XML],
            session_request(100).as_bytes(),
        )
        .await;
    assert!(created(&a), "{a:?}");
    wait_for_buffered(&gw, 55 * KIB, TIMEOUT).await;
    let b = http
        .request(
            "POST",
            "/http-bind",
            &[XML],
            session_request(200).as_bytes(),
        )
        .await;
    assert!(created(&b), "{b:?}");
    wait_for_buffered(&gw, 67 * KIB, TIMEOUT).await;

    // Over the ceiling: a new session is refused, and dials nothing.
    let c = http
        .request(
            "POST",
            "/http-bind",
            &[XML],
            session_request(300).as_bytes(),
        )
        .await;
    assert_refused(&c);

    // The first session grows again: it holds far more than its share and is cut. Its client
    // gets what was pending, then the terminate body.
    trigger.notify_one();
    // The client asks only once the gateway has read the late stanzas; asking earlier races
    // with them, and a session emptied first is rightly not cut.
    wait_for_buffered(&gw, 72 * KIB, TIMEOUT).await;
    let sid_a = sid_of(&a.text());
    let mut ended = false;
    for rid in 101..104 {
        let body = format!("<body xmlns='{NS_HTTPBIND}' sid='{sid_a}' rid='{rid}'/>");
        let reply = http
            .request("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        let text = reply.text();
        if text.contains("type='terminate'") {
            assert!(text.contains("condition='policy-violation'"), "{text}");
            ended = true;
            break;
        }
    }
    assert!(ended, "the session holding the most was not cut");

    // The other session goes on and gets its stanzas.
    let sid_b = sid_of(&b.text());
    let body = format!("<body xmlns='{NS_HTTPBIND}' sid='{sid_b}' rid='201'/>");
    let reply = http
        .request("POST", "/http-bind", &[XML], body.as_bytes())
        .await
        .text();
    assert!(!reply.contains("type='terminate'"), "{reply}");
    assert!(reply.contains("id='s1-0'"), "{reply}");
}
