//! Endpoint health (docs/protocol.md §1): an endpoint that does not answer is taken out and
//! later sessions go elsewhere without dialling it; sessions spread over the endpoints that
//! are up, fewest sessions first; while every endpoint is out, sessions fail at once
//! (`remote-connection-failed`, the circuit breaker), and the route comes back by itself once
//! a probe gets an answer.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use xmpp_gateway::config::{Config, TlsPolicy};

/// A server that answers sessions (and probes) while `healthy`, and otherwise takes the
/// connection and the stream header and never answers.
async fn server(healthy: Arc<AtomicBool>) -> (std::net::SocketAddr, UpstreamHandle<()>) {
    ScriptedUpstream::start(move |mut conn, _| {
        let healthy = healthy.clone();
        async move {
            if healthy.load(Ordering::SeqCst) {
                conn.answer_stream("s-health", FEATURES_SASL).await;
            } else {
                conn.read_stream_header().await;
            }
            conn.read_to_eof().await;
        }
    })
    .await
}

fn health_config(endpoints: &[std::net::SocketAddr], backoff_min_ms: u64) -> Config {
    let mut r = route(DOMAIN, endpoints, TlsPolicy::Disabled);
    r.backoff_min_ms = backoff_min_ms;
    r.backoff_max_ms = backoff_min_ms.max(200);
    let mut c = config(vec![r]);
    c.limits.connect_timeout_secs = 1;
    c
}

async fn all_down_failures(gw: &TestGateway) -> u64 {
    let metrics = http_get(gw.admin_addr, "/metrics", &[]).await;
    let text = metrics.body;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("xmpp_gateway_upstream_connect_failures_total{kind=\"all_down\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no all_down series in:\n{text}"))
}

/// `xmpp_gateway_upstream_endpoints{route, state}` for [`DOMAIN`]: (up, down).
async fn endpoints_by_state(gw: &TestGateway) -> (u64, u64) {
    let text = http_get(gw.admin_addr, "/metrics", &[]).await.body;
    let value = |state: &str| {
        let series =
            format!("xmpp_gateway_upstream_endpoints{{route=\"{DOMAIN}\",state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    (value("up"), value("down"))
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_is_not_dialled_again_while_it_is_out() {
    let (stalled, stalled_handle) = server(Arc::new(AtomicBool::new(false))).await;
    let (good, good_handle) = server(Arc::new(AtomicBool::new(true))).await;
    // No probe within the test: the first comes after 30 s at the earliest.
    let gw = start_gateway(health_config(&[stalled, good], 60_000)).await;
    // Two sessions in a row time out on it (STRIKES), then go on to the other endpoint.
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let (ws, open, _) = gw.open_session().await;
        assert_eq!(parse_standalone(&open).attr("id"), Some("s-health"));
        sessions.push(ws);
    }
    assert_eq!(
        stalled_handle.connections(),
        2,
        "the first two sessions tried it"
    );
    let asked = Instant::now();
    let (_third, _, _) = gw.open_session().await;
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "the third session waited {:?}: it dialled the stalled endpoint",
        asked.elapsed()
    );
    assert_eq!(stalled_handle.connections(), 2, "not dialled while out");
    assert_eq!(good_handle.connections(), 3);
}

#[tokio::test]
async fn sessions_go_to_the_endpoint_with_the_fewest() {
    let (a, a_handle) = server(Arc::new(AtomicBool::new(true))).await;
    let (b, b_handle) = server(Arc::new(AtomicBool::new(true))).await;
    let gw = start_gateway(health_config(&[a, b], 1000)).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(gw.open_session().await);
    }
    assert_eq!((a_handle.connections(), b_handle.connections()), (2, 2));
}

#[tokio::test]
async fn while_every_endpoint_is_out_sessions_fail_at_once_and_the_route_comes_back() {
    let healthy = Arc::new(AtomicBool::new(false));
    let (up, _handle) = server(healthy.clone()).await;
    let gw = start_gateway(health_config(&[up], 50)).await;

    // Two sessions wait for the connect timeout; the endpoint is then out.
    for _ in 0..2 {
        let mut ws = gw.ws().await;
        ws.send(&open_frame(DOMAIN)).await;
        expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    }

    // The breaker is open: the next session is told at once, without a dial.
    let before = all_down_failures(&gw).await;
    let asked = Instant::now();
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "told after {:?}, not at once",
        asked.elapsed()
    );
    assert_eq!(all_down_failures(&gw).await, before + 1);
    assert_eq!(endpoints_by_state(&gw).await, (0, 1));
    // Not ready either, though the server still accepts TCP connections.
    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");

    // The server recovers; a probe finds it, and sessions open again, with no restart.
    healthy.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ws = gw.ws().await;
        ws.send(&open_frame(DOMAIN)).await;
        let mut frame = ws.recv().await;
        if parse_standalone(&frame).name == "open" {
            frame = ws.recv().await;
        }
        if parse_standalone(&frame).name == "features" {
            break;
        }
        assert_stream_error(&frame, "remote-connection-failed");
        assert!(
            Instant::now() < deadline,
            "the route did not come back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get(gw.admin_addr, "/readyz", &[]).await.status, 200);
    assert_eq!(endpoints_by_state(&gw).await, (1, 0));
}

#[tokio::test]
async fn a_refused_connection_takes_the_endpoint_out_at_once() {
    let dead = dead_port().await;
    let (good, good_handle) = server(Arc::new(AtomicBool::new(true))).await;
    let gw = start_gateway(health_config(&[dead, good], 60_000)).await;
    assert_eq!(
        endpoints_by_state(&gw).await,
        (2, 0),
        "static endpoints are known up"
    );
    let _first = gw.open_session().await;
    assert_eq!(endpoints_by_state(&gw).await, (1, 1));
    let _second = gw.open_session().await;
    // Least connections would send the second session to the dead endpoint (no sessions)
    // if it were still in use; it went to the one that answers.
    assert_eq!(good_handle.connections(), 2);
    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 200, "one endpoint is still up: {ready:?}");
}

// docs/protocol.md §6: /readyz answers from the health state; a request dials nothing.
#[tokio::test]
async fn readiness_comes_from_the_checks_and_a_request_dials_nothing() {
    let (up, handle) = server(Arc::new(AtomicBool::new(true))).await;
    let mut c = health_config(&[up], 1000);
    c.routes[0].check_interval_secs = 60;
    let gw = start_gateway(c).await;
    for _ in 0..5 {
        let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
        assert_eq!(ready.status, 200, "{ready:?}");
    }
    assert_eq!(
        handle.connections(),
        1,
        "the first round of checks, and nothing per request"
    );
}

// docs/protocol.md §1: an endpoint that fails while no session uses it is taken out by the
// checks (readiness follows), and its probe brings it back.
#[tokio::test]
async fn the_checks_take_out_an_endpoint_no_session_uses_and_it_comes_back() {
    let (up, handle) = server(Arc::new(AtomicBool::new(true))).await;
    let mut c = health_config(&[up], 50);
    c.routes[0].check_interval_secs = 1;
    let gw = start_gateway(c).await;
    assert_eq!(http_get(gw.admin_addr, "/readyz", &[]).await.status, 200);
    assert_eq!(endpoints_by_state(&gw).await, (1, 0));

    // The server goes away: nothing listens on its port any more.
    drop(handle);
    eventually("the endpoint taken out without a session", || async {
        endpoints_by_state(&gw).await == (0, 1)
    })
    .await;
    let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
    assert_eq!(ready.status, 503, "{ready:?}");

    // It is back on the same port: the probe finds it.
    let listener = tokio::net::TcpListener::bind(up)
        .await
        .expect("the port again");
    let serve = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let answer = format!("{}{FEATURES_SASL}", server_header("s-back"));
                let _ = tcp.write_all(answer.as_bytes()).await;
                let _ = tcp.read(&mut buf).await;
            });
        }
    });
    eventually("the endpoint back in use", || async {
        endpoints_by_state(&gw).await == (1, 0)
    })
    .await;
    assert_eq!(http_get(gw.admin_addr, "/readyz", &[]).await.status, 200);
    serve.abort();
}
