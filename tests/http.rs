//! The HTTP side through real sockets: XEP-0156 discovery, routing, header-read limits, the
//! admin endpoints, and the drain.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xmpp_gateway::config::TlsPolicy;

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// `(rel, href)` pairs, sorted, for order-independent comparison.
fn sorted(links: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = links
        .iter()
        .map(|(r, h)| (r.to_string(), h.to_string()))
        .collect();
    v.sort();
    v
}

/// `(rel, href)` of every `<Link/>` in an XRD document.
fn xrd_links(doc: &str) -> Vec<(String, String)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut links = Vec::new();
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{e}: {doc}")) {
            Event::Start(e) | Event::Empty(e) if e.local_name().as_ref() == b"Link" => {
                let attr = |name: &[u8]| {
                    e.try_get_attribute(name)
                        .expect("attribute")
                        .map(|a| a.unescape_value().expect("value").into_owned())
                        .unwrap_or_default()
                };
                links.push((attr(b"rel"), attr(b"href")));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    links.sort();
    links
}

/// `(rel, href)` of every link in a JRD document.
fn jrd_links(doc: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
    let mut links: Vec<(String, String)> = v["links"]
        .as_array()
        .expect("links array")
        .iter()
        .map(|l| {
            (
                l["rel"].as_str().unwrap_or("").to_string(),
                l["href"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    links.sort();
    links
}

async fn discovery(addr: SocketAddr, host: &str) -> (HttpResponse, HttpResponse) {
    let headers = [("Host", host), ("Origin", "https://app.example.test")];
    let xrd = http_get(addr, "/.well-known/host-meta", &headers).await;
    let jrd = http_get(addr, "/.well-known/host-meta.json", &headers).await;
    (xrd, jrd)
}

// docs/protocol.md §5: host-meta (XRD) and host-meta.json list the WebSocket and BOSH URLs, derived
// from the Host header when none is configured, with CORS open.
#[tokio::test]
async fn host_meta_lists_urls_from_host_header_with_cors() {
    let gw = start_gateway(config(vec![])).await;
    let (xrd, jrd) = discovery(gw.addr, "chat.example.test:5281").await;
    let expected = sorted(&[
        (REL_WEBSOCKET, "ws://chat.example.test:5281/xmpp-websocket"),
        (REL_BOSH, "http://chat.example.test:5281/http-bind"),
    ]);

    assert_eq!(xrd.status, 200, "{xrd:?}");
    assert_eq!(xrd.header("access-control-allow-origin"), Some("*"));
    assert!(
        xrd.header("content-type").unwrap_or("").contains("xrd+xml"),
        "{xrd:?}"
    );
    assert_eq!(xrd_links(&xrd.body), expected, "{}", xrd.body);

    assert_eq!(jrd.status, 200, "{jrd:?}");
    assert_eq!(jrd.header("access-control-allow-origin"), Some("*"));
    assert!(
        jrd.header("content-type").unwrap_or("").contains("json"),
        "{jrd:?}"
    );
    assert_eq!(jrd_links(&jrd.body), expected, "{}", jrd.body);
}

// docs/protocol.md §5: the URLs are taken from config when set there.
#[tokio::test]
async fn host_meta_lists_configured_urls() {
    let mut c = config(vec![]);
    let ws_url = "wss://xmpp.example.test/xmpp-websocket";
    let bosh_url = "https://xmpp.example.test/http-bind";
    c.discovery.websocket_url = Some(ws_url.into());
    c.discovery.bosh_url = Some(bosh_url.into());
    let gw = start_gateway(c).await;
    let (xrd, jrd) = discovery(gw.addr, "internal-name:8080").await;
    let expected = sorted(&[(REL_WEBSOCKET, ws_url), (REL_BOSH, bosh_url)]);
    assert_eq!(xrd_links(&xrd.body), expected, "{}", xrd.body);
    assert_eq!(jrd_links(&jrd.body), expected, "{}", jrd.body);
    assert_eq!(xrd.header("access-control-allow-origin"), Some("*"));
    assert_eq!(jrd.header("access-control-allow-origin"), Some("*"));
}

// docs/protocol.md §5: a hostile Host header does not end up inside the document.
#[tokio::test]
async fn host_meta_ignores_a_hostile_host_header() {
    let gw = start_gateway(config(vec![])).await;
    let (xrd, jrd) = discovery(
        gw.addr,
        "evil.test'/><Link rel='x' href='javascript:alert(1)",
    )
    .await;
    for (name, body) in [("xrd", &xrd.body), ("jrd", &jrd.body)] {
        assert!(!body.contains("javascript:"), "{name}: {body}");
    }
    assert!(xrd_links(&xrd.body).is_empty(), "{}", xrd.body);
    assert!(jrd_links(&jrd.body).is_empty(), "{}", jrd.body);
}

#[tokio::test]
async fn unknown_path_is_404() {
    let gw = start_gateway(config(vec![])).await;
    let resp = http_get(gw.addr, "/no/such/thing", &[]).await;
    assert_eq!(resp.status, 404, "{resp:?}");
    let admin = http_get(gw.admin_addr, "/no/such/thing", &[]).await;
    assert_eq!(admin.status, 404, "{admin:?}");
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(
    read: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

// STYLE.md (hyper's header-read timeout needs a timer) and docs/protocol.md §2 limits: a client that
// dribbles its request headers is cut off after limits.header_read_timeout_secs.
#[tokio::test]
async fn dribbled_request_headers_are_cut_off_after_the_header_read_timeout() {
    let mut c = config(vec![]);
    c.limits.header_read_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let started = Instant::now();
    let dribbler = tokio::spawn(async move {
        if write
            .write_all(b"GET /.well-known/host-meta HTTP/1.1\r\n")
            .await
            .is_err()
        {
            return;
        }
        // Pacing the attacker, not waiting for the gateway: one header byte every 200 ms.
        for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().copied() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let sent = read_until_closed(&mut read, Duration::from_secs(4)).await;
    let closed_after = started.elapsed();
    dribbler.abort();
    let sent = sent.expect("the gateway kept a dribbling client connected for 4 s");
    let sent = String::from_utf8_lossy(&sent);
    assert!(
        sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
        "answered {sent:?}"
    );
    assert!(
        closed_after < Duration::from_millis(2500),
        "cut off only after {closed_after:?}"
    );
}

// Same limit as above, for a client that connects and sends nothing at all (slowloris holding
// connection slots without a single byte).
#[tokio::test]
async fn silent_connection_is_cut_off_after_the_header_read_timeout() {
    let mut c = config(vec![]);
    c.limits.header_read_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut read, _write) = tcp.into_split();
    let sent = read_until_closed(&mut read, Duration::from_secs(4)).await;
    let sent = sent.expect("the gateway kept a silent connection open for 4 s");
    let sent = String::from_utf8_lossy(&sent);
    assert!(
        sent.is_empty() || sent.starts_with("HTTP/1.1 408"),
        "answered {sent:?}"
    );
}

// Same limit again, for a client that stops inside hyper-util's HTTP/1-or-HTTP/2 sniffing: the
// start of the HTTP/2 preface keeps the sniffer waiting for the rest (up to 24 bytes).
#[tokio::test]
async fn connection_stalled_in_the_http2_preface_is_cut_off_after_the_header_read_timeout() {
    let mut c = config(vec![]);
    c.limits.header_read_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    write.write_all(b"PRI * HTTP/2.0\r\n").await.expect("send");
    let sent = read_until_closed(&mut read, Duration::from_secs(4)).await;
    sent.expect("the gateway kept a stalled connection open for 4 s");
}

// docs/protocol.md §6: /healthz, /readyz with routes, /metrics with prefixed series.
#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    // Readiness wants an endpoint that is up (routes here are not health-checked).
    let (up, _handle) = ScriptedUpstream::start(|_conn, _| async {}).await;
    let gw = start_gateway(plain_config(up)).await;

    let health = http_get(gw.admin_addr, "/healthz", &[]).await;
    assert_eq!(health.status, 200, "{health:?}");

    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "{ready:?}");

    let metrics = http_get(gw.admin_addr, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{metrics:?}"
    );
    assert!(
        metrics.body.contains("xmpp_gateway_sessions_active"),
        "{}",
        metrics.body
    );
    for line in metrics
        .body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.starts_with("xmpp_gateway_"),
            "unprefixed series: {line}"
        );
    }
}

// docs/protocol.md §6: with nothing to serve the gateway is not ready.
#[tokio::test]
async fn readyz_without_routes_is_503() {
    let gw = start_gateway(config(vec![])).await;
    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");
}

// docs/protocol.md §6: readiness fails when the health checks find no endpoint that answers.
#[tokio::test]
async fn readyz_without_a_reachable_upstream_is_503() {
    let dead = dead_port().await;
    let mut r = route(DOMAIN, &[dead], TlsPolicy::Disabled);
    r.check_interval_secs = 60;
    let gw = start_gateway(config(vec![r])).await;
    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");
    let health = http_get(gw.admin_addr, "/healthz", &[]).await;
    assert_eq!(health.status, 200, "the process still serves: {health:?}");
}

/// A server that answers the gateway's `</stream:stream>` as a real one does, after sending
/// `before_close` (stanzas still in flight). Returns what followed the close: nothing but EOF.
async fn closing_server(mut conn: UpstreamConn<TcpStream>, before_close: &'static str) -> String {
    conn.answer_stream("s-1", FEATURES_SASL).await;
    let close = conn.read_until(STREAM_END).await;
    assert_eq!(close, STREAM_END, "only the stream close went upstream");
    conn.write(&format!("{before_close}{STREAM_END}")).await;
    conn.read_to_eof().await
}

// docs/protocol.md §6 (and §3 "system-shutdown"): the drain closes each upstream stream, tells open
// WebSocket clients to leave with a clean system-shutdown close, stops taking new sessions, and
// readiness fails (503) while it lasts.
#[tokio::test]
async fn drain_closes_sessions_with_system_shutdown_and_fails_readiness() {
    let (up, mut handle) = ScriptedUpstream::start(|conn, _| closing_server(conn, "")).await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;

    gw.gateway.shutdown.begin();

    expect_stream_error(&mut ws, "system-shutdown").await;
    assert_eq!(handle.finished().await, "", "EOF after the closed stream");

    assert!(
        WsClient::try_connect(gw.addr, &[]).await.is_err(),
        "a new WebSocket session was accepted during the drain"
    );

    let ready = match TcpStream::connect(gw.admin_addr).await {
        Ok(_) => http_get(gw.admin_addr, "/readyz", &[]).await,
        Err(e) => panic!(
            "the admin listener stopped answering during the drain ({e}); /readyz must say 503"
        ),
    };
    assert_eq!(ready.status, 503, "{ready:?}");
}

// docs/protocol.md §6: nothing in flight is silently dropped: what the server sends before its
// close still reaches the client, then the system-shutdown close.
#[tokio::test]
async fn drain_delivers_stanzas_in_flight_before_system_shutdown() {
    let (up, mut handle) = ScriptedUpstream::start(|conn, _| {
        closing_server(conn, "<message id='late'><body>last words</body></message>")
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    gw.gateway.shutdown.begin();
    let late = ws.recv().await;
    assert_eq!(parse_standalone(&late).attr("id"), Some("late"), "{late}");
    expect_stream_error(&mut ws, "system-shutdown").await;
    assert_eq!(handle.finished().await, "");
}

// docs/protocol.md §3/§6: where configured, a draining node sends <close see-other-uri=..> instead.
#[tokio::test]
async fn drain_with_redirect_sends_close_with_see_other_uri() {
    let (up, mut handle) = ScriptedUpstream::start(|conn, _| closing_server(conn, "")).await;
    let mut c = plain_config(up);
    let uri = "wss://other-node.example.test/xmpp-websocket";
    c.drain.websocket_redirect = Some(uri.into());
    let gw = start_gateway(c).await;
    let (mut ws, _, _) = gw.open_session().await;
    gw.gateway.shutdown.begin();
    let close = ws.recv().await;
    let root = parse_standalone(&close);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_FRAMING, "close"),
        "{close}"
    );
    assert_eq!(root.attr("see-other-uri"), Some(uri), "{close}");
    ws.expect_close().await;
    assert_eq!(handle.finished().await, "");
}

// docs/protocol.md §6: a client that has not opened its stream yet is told to leave too.
#[tokio::test]
async fn drain_before_open_sends_system_shutdown() {
    let (up, handle) = ScriptedUpstream::start(|_conn, _| async {}).await;
    let gw = start_gateway(plain_config(up)).await;
    let mut ws = gw.ws().await;
    // The session task exists once the handshake is done; the drain must reach it.
    gw.gateway.shutdown.begin();
    expect_stream_error_before_open(&mut ws, "system-shutdown").await;
    assert_eq!(handle.connections(), 0);
}
