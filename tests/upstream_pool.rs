//! The warm pool (docs/protocol.md §1): streams opened before any browser asks (stream header
//! sent, features received) are handed to new sessions, whose `<open/>` is then answered
//! without a dial; the pool fills again by itself; a ready stream is closed and replaced at
//! `max_age_secs`, and one the server has closed is never handed out; a session whose header
//! would differ from a ready stream's gets a stream of its own, as without a pool.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use xmpp_gateway::config::{Config, TlsPolicy};

/// What the server saw on each connection: its number, the gateway's stream header, what came
/// after it until the stream or connection ended, and how long after its answer that was.
type Seen = Arc<Mutex<Vec<(usize, String, String, Duration)>>>;

/// A server that answers every stream with id `s-<connection number>`, then records what the
/// gateway sends until it closes the stream (or the connection). With `hang_up_first`, it ends
/// connection 0 itself right after answering, as a server whose timeout for unauthenticated streams is short does.
async fn server(hang_up_first: bool) -> (std::net::SocketAddr, UpstreamHandle<()>, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let (addr, handle) = ScriptedUpstream::start(move |mut conn, n| {
        let record = record.clone();
        async move {
            let header = conn.answer_stream(&format!("s-{n}"), FEATURES_SASL).await;
            let answered = Instant::now();
            if hang_up_first && n == 0 {
                conn.write(
                    "<stream:error><connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
                )
                .await;
                record.lock().unwrap().push((n, header, String::new(), answered.elapsed()));
                return;
            }
            // Until the gateway closes the stream (answered, as a server does) or the socket.
            let rest = match conn.try_read_until(STREAM_END, Duration::from_secs(60)).await {
                Ok(bytes) => {
                    conn.write(STREAM_END).await;
                    String::from_utf8(bytes).unwrap()
                }
                Err(_) => String::from_utf8_lossy(conn.pending()).into_owned(),
            };
            record.lock().unwrap().push((n, header, rest, answered.elapsed()));
        }
    })
    .await;
    (addr, handle, seen)
}

fn pool_config(upstream: std::net::SocketAddr, warm: usize, max_age_secs: u64) -> Config {
    let mut r = route(DOMAIN, &[upstream], TlsPolicy::Disabled);
    r.pool.warm = warm;
    r.pool.max_age_secs = max_age_secs;
    config(vec![r])
}

/// The value of one series in `/metrics`, if present.
async fn metric(gw: &TestGateway, series: &str) -> Option<u64> {
    let text = http_get(gw.admin_addr, "/metrics", &[]).await.body;
    let prefix = format!("{series} ");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok());
    if value.is_none() {
        eprintln!(
            "no {series} in /metrics:\n{}",
            text.lines()
                .filter(|l| l.contains("pool"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    value
}

fn ready_series() -> String {
    format!("xmpp_gateway_upstream_pool_ready{{route=\"{DOMAIN}\"}}")
}

fn sessions_series(result: &str) -> String {
    format!("xmpp_gateway_upstream_pool_sessions_total{{result=\"{result}\",route=\"{DOMAIN}\"}}")
}

async fn until_ready(gw: &TestGateway, n: u64) {
    eventually(&format!("{n} streams ready"), || async {
        metric(gw, &ready_series()).await == Some(n)
    })
    .await;
}

fn stream_id(open: &str) -> String {
    parse_standalone(open)
        .attr("id")
        .unwrap_or_else(|| panic!("no id in {open}"))
        .to_string()
}

#[tokio::test]
async fn a_session_takes_a_ready_stream_and_the_pool_fills_again() {
    let (addr, handle, seen) = server(false).await;
    let gw = start_gateway(pool_config(addr, 2, 120)).await;
    until_ready(&gw, 2).await;
    assert_eq!(
        handle.connections(),
        2,
        "the pool opened its streams before any client"
    );

    let (mut ws, open, features) = gw.open_session().await;
    let id = stream_id(&open);
    assert!(id == "s-0" || id == "s-1", "a ready stream's id, got {id}");
    assert!(features.contains("PLAIN"), "{features}");
    // The session goes on over that stream: what the browser sends reaches its connection.
    ws.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        .await;
    ws.send(CLOSE_FRAME).await;
    let n: usize = id[2..].parse().unwrap();
    eventually("the session's stream closed", || async {
        seen.lock().unwrap().iter().any(|(c, ..)| *c == n)
    })
    .await;
    let (_, header, rest, _) = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(c, ..)| *c == n)
        .cloned()
        .unwrap();
    assert!(header.contains(&format!("to='{DOMAIN}'")), "{header}");
    assert!(
        !header.contains("from=") && !header.contains("xml:lang"),
        "{header}"
    );
    assert!(rest.contains("mechanism='PLAIN'>AGEAYg==</auth>"), "{rest}");

    // The pool opened a replacement by itself.
    until_ready(&gw, 2).await;
    assert_eq!(handle.connections(), 3);
    assert_eq!(metric(&gw, &sessions_series("hit")).await, Some(1));
    assert_eq!(metric(&gw, &sessions_series("miss")).await, Some(0));
}

#[tokio::test]
async fn a_client_whose_header_differs_gets_its_own_stream_and_the_pool_follows_its_language() {
    let (addr, handle, seen) = server(false).await;
    let gw = start_gateway(pool_config(addr, 1, 120)).await;
    until_ready(&gw, 1).await;

    // `from` is the client's own: a stream opened for it, carrying it.
    let mut ws = gw.ws().await;
    ws.send(&format!(
        "<open xmlns='{NS_FRAMING}' to='{DOMAIN}' from='juliet@{DOMAIN}' version='1.0'/>"
    ))
    .await;
    let first = stream_id(&ws.recv().await);
    assert_eq!(first, "s-1", "a fresh connection, not the ready s-0");
    ws.send(CLOSE_FRAME).await;
    eventually("the fresh stream closed", || async {
        seen.lock().unwrap().iter().any(|(c, ..)| *c == 1)
    })
    .await;
    let header = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(c, ..)| *c == 1)
        .unwrap()
        .1
        .clone();
    assert!(
        header.contains(&format!("from='juliet@{DOMAIN}'")),
        "{header}"
    );

    // Another language: its own stream too, and the pool's next streams speak it. (The
    // session's own dial and the pool's refill race, so connection numbers are not asserted.)
    let lang_open =
        format!("<open xmlns='{NS_FRAMING}' to='{DOMAIN}' xml:lang='de' version='1.0'/>");
    let mut de = gw.ws().await;
    de.send(&lang_open).await;
    let de_first = stream_id(&de.recv().await);
    assert_ne!(de_first, "s-0", "the ready stream has no xml:lang");
    assert_eq!(metric(&gw, &sessions_series("hit")).await, Some(0));
    // The ready stream without a language made room for one with it.
    eventually("a ready stream with xml:lang='de'", || async {
        handle.connections() == 4 && metric(&gw, &ready_series()).await == Some(1)
    })
    .await;
    let mut de2 = gw.ws().await;
    de2.send(&lang_open).await;
    let de_second = stream_id(&de2.recv().await);
    assert_eq!(
        metric(&gw, &sessions_series("hit")).await,
        Some(1),
        "the second German client took the ready stream"
    );
    assert_eq!(metric(&gw, &sessions_series("miss")).await, Some(2));
    drop((ws, de, de2));
    eventually("the streams closed", || async {
        seen.lock().unwrap().len() >= 4
    })
    .await;
    let seen = seen.lock().unwrap();
    let header_of = |id: &str| {
        let n: usize = id[2..].parse().unwrap();
        seen.iter().find(|(c, ..)| *c == n).unwrap().1.clone()
    };
    for id in [&de_first, &de_second] {
        assert!(
            header_of(id).contains("xml:lang='de'"),
            "{id}: {}",
            header_of(id)
        );
    }
    let replaced = seen.iter().find(|(c, ..)| *c == 0).expect("s-0 closed");
    assert_eq!(
        replaced.2, STREAM_END,
        "s-0 was given back with its closing tag"
    );
}

#[tokio::test]
async fn a_ready_stream_is_closed_and_replaced_at_its_maximum_age() {
    let (addr, handle, seen) = server(false).await;
    let gw = start_gateway(pool_config(addr, 1, 1)).await;
    until_ready(&gw, 1).await;
    eventually("the first ready stream closed", || async {
        seen.lock().unwrap().iter().any(|(c, ..)| *c == 0)
    })
    .await;
    // As the server measures it: from its answer to the gateway's closing tag.
    let age = seen.lock().unwrap()[0].3;
    assert!(
        age >= Duration::from_secs(1),
        "closed {age:?} after it opened, before its maximum age"
    );
    assert!(
        age < Duration::from_secs(3),
        "closed only {age:?} after it opened"
    );
    let rest = seen.lock().unwrap()[0].2.clone();
    assert_eq!(
        rest, STREAM_END,
        "closed with its closing tag, nothing else sent"
    );
    eventually("a replacement ready", || async {
        handle.connections() >= 2 && metric(&gw, &ready_series()).await == Some(1)
    })
    .await;
    let (_ws, open, _) = gw.open_session().await;
    assert_ne!(stream_id(&open), "s-0");
}

#[tokio::test]
async fn a_ready_stream_the_server_ended_is_not_handed_out() {
    let (addr, handle, seen) = server(true).await;
    let gw = start_gateway(pool_config(addr, 1, 120)).await;
    until_ready(&gw, 1).await;
    eventually("the server ended s-0", || async {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let (mut ws, open, _) = gw.open_session().await;
    let id = stream_id(&open);
    assert_ne!(id, "s-0", "a fresh stream, not the ended s-0");
    // The session is sound: a stanza goes through.
    ws.send("<presence/>").await;
    ws.send(CLOSE_FRAME).await;
    let n: usize = id[2..].parse().unwrap();
    eventually("the session's stream closed", || async {
        seen.lock().unwrap().iter().any(|(c, ..)| *c == n)
    })
    .await;
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .find(|(c, ..)| *c == n)
        .unwrap()
        .2
        .contains("<presence"));
    assert_eq!(metric(&gw, &sessions_series("miss")).await, Some(1));
    assert_eq!(metric(&gw, &sessions_series("hit")).await, Some(0));
    // And the pool replaced what the server ended.
    eventually("a replacement ready", || async {
        handle.connections() == 3 && metric(&gw, &ready_series()).await == Some(1)
    })
    .await;
}

// A drain (and a reload) gives the ready streams back to the server at once, each with its
// closing tag: the process must not exit, or keep them, with them open.
#[tokio::test]
async fn a_drain_and_a_reload_give_the_ready_streams_back() {
    let (addr, handle, seen) = server(false).await;
    let config = pool_config(addr, 2, 120);
    let gw = start_gateway(config.clone()).await;
    until_ready(&gw, 2).await;

    // A reload: the old pool's streams are closed, the new pool opens its own.
    gw.gateway.reload(config).expect("reload");
    eventually("the old pool's streams closed", || async {
        seen.lock().unwrap().len() == 2
    })
    .await;
    for (n, _, rest, _) in seen.lock().unwrap().iter() {
        assert_eq!(rest, STREAM_END, "s-{n} closed with its tag");
    }
    until_ready(&gw, 2).await;
    assert_eq!(handle.connections(), 4);

    // The drain: written and shut down before close() returns, and none opened after.
    gw.gateway.settings().pools.close().await;
    assert_eq!(metric(&gw, &ready_series()).await, Some(0));
    eventually("both closed", || async { seen.lock().unwrap().len() == 4 }).await;
    for (n, _, rest, _) in seen.lock().unwrap().iter() {
        assert_eq!(rest, STREAM_END, "s-{n} closed with its tag");
    }
    assert_eq!(handle.connections(), 4, "nothing opened after the drain");
}

// docs/protocol.md §1: a ready stream on an endpoint taken out since (here by a health check
// that found the port closed) is not handed out; the session is treated as a cold one.
#[tokio::test]
async fn a_ready_stream_on_an_endpoint_taken_out_is_not_handed_out() {
    let (addr, handle, _seen) = server(false).await;
    let mut config = pool_config(addr, 1, 120);
    config.routes[0].check_interval_secs = 1;
    let gw = start_gateway(config).await;
    until_ready(&gw, 1).await;
    // The server stops listening (the ready stream's connection stays open).
    drop(handle);
    eventually("the endpoint taken out", || async {
        let text = http_get(gw.admin_addr, "/metrics", &[]).await.body;
        text.contains(&format!(
            "xmpp_gateway_upstream_endpoints{{route=\"{DOMAIN}\",state=\"down\"}} 1"
        ))
    })
    .await;
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    assert_eq!(metric(&gw, &sessions_series("hit")).await, Some(0));
}
