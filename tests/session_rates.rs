//! Per-session rate limits on what a browser sends (docs/protocol.md §7): over its stanza or
//! byte rate a session is throttled (not read until the buckets refill) or ended with
//! `policy-violation`, as configured.

mod common;

use std::time::{Duration, Instant};

use common::*;
use xmpp_gateway::config::{Config, RateExceeded};

fn rated(up: std::net::SocketAddr, mode: RateExceeded) -> Config {
    let mut c = plain_config(up);
    c.limits.session_stanzas_per_sec = 20;
    c.limits.session_stanzas_burst = 5;
    c.limits.session_rate_exceeded = mode;
    c
}

fn message(i: usize) -> String {
    format!(
        "<message xmlns='jabber:client' to='bob@example.test' id='m{i}'><body>{i}</body></message>"
    )
}

// docs/protocol.md §7, `close`: past the burst the session ends with policy-violation, and
// what was over the rate never reaches the server.
#[tokio::test]
async fn websocket_client_over_its_rate_is_ended_with_policy_violation() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_until(STREAM_END).await
    })
    .await;
    let gw = start_gateway(rated(up, RateExceeded::Close)).await;
    let (mut ws, _, _) = gw.open_session().await;
    for i in 0..30 {
        ws.send(&message(i)).await;
    }
    expect_stream_error(&mut ws, "policy-violation").await;
    let upstream = handle.finished().await;
    let forwarded = upstream.matches("<message").count();
    assert!(
        (5..=6).contains(&forwarded),
        "{forwarded} of 30 stanzas forwarded with a burst of 5"
    );
}

// docs/protocol.md §7, `throttle` (the default): nothing is refused or lost, the browser is
// just read no faster than its rate, and the server's stanzas keep flowing to it meanwhile.
#[tokio::test]
async fn websocket_client_over_its_rate_is_throttled_without_loss() {
    const N: usize = 25;
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        // While the client is throttled, a stanza from the server still reaches it.
        let first = conn.read_until("id='m5'").await;
        conn.write("<message from='bob@example.test' id='while-throttled'/>")
            .await;
        let rest = conn.read_until(&format!("id='m{}'", N - 1)).await;
        let _ = conn.read_until("</message>").await;
        first + &rest
    })
    .await;
    let gw = start_gateway(rated(up, RateExceeded::Throttle)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let started = Instant::now();
    for i in 0..N {
        ws.send(&message(i)).await;
    }
    let frame = ws.recv().await;
    assert_eq!(parse_standalone(&frame).attr("id"), Some("while-throttled"));
    let received_while_throttled = started.elapsed();
    let upstream = handle.finished().await;
    let ids: Vec<usize> = upstream
        .match_indices("id='m")
        .map(|(at, _)| {
            let rest = &upstream[at + 5..];
            rest[..rest.find('\'').unwrap()].parse().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (0..N).collect::<Vec<_>>(),
        "every stanza, once, in order"
    );
    // 5 at once, then 20 a second: the last one cannot have been read before ~1 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "{N} stanzas read in {took:?} at 20/s after a burst of 5"
    );
    assert!(
        received_while_throttled < took,
        "the server's stanza waited for the throttle"
    );
}

// The same limits hold over BOSH: a request carrying more stanzas than the burst ends the
// session with a policy-violation terminate body in `close` mode.
#[tokio::test]
async fn bosh_client_over_its_rate_is_ended_with_policy_violation() {
    const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
    const XML: (&str, &str) = ("Content-Type", "text/xml; charset=utf-8");
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_until(STREAM_END).await
    })
    .await;
    let gw = start_gateway(rated(up, RateExceeded::Close)).await;
    let mut http = HttpConn::connect(gw.addr).await;
    let create = format!(
        "<body xmlns='{NS_HTTPBIND}' to='{DOMAIN}' rid='100' wait='5' hold='1' \
         xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
    );
    let created = http
        .request("POST", "/http-bind", &[XML], create.as_bytes())
        .await
        .text();
    let sid_at = created.find(" sid='").expect("a sid") + 6;
    let sid = &created[sid_at..sid_at + created[sid_at..].find('\'').unwrap()];
    let payload: String = (0..10).map(message).collect();
    let flood = format!("<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='101'>{payload}</body>");
    let answer = http
        .request("POST", "/http-bind", &[XML], flood.as_bytes())
        .await
        .text();
    assert!(
        answer.contains("type='terminate'") && answer.contains("condition='policy-violation'"),
        "{answer}"
    );
    let upstream = handle.finished().await;
    assert_eq!(upstream.matches("<message").count(), 5, "{upstream}");
}
