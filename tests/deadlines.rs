//! Deadlines on every wait on a peer (docs/protocol.md §7): a browser or a server that stops
//! reading is cut within `limits.write_timeout_secs`, and the other side is told.

mod common;

use common::bosh::*;
use common::peers::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const WRITE_TIMEOUT_SECS: u64 = 1;

fn short_write_timeout(up: std::net::SocketAddr) -> xmpp_gateway::config::Config {
    let mut c = plain_config(up);
    c.limits.write_timeout_secs = WRITE_TIMEOUT_SECS;
    // The browsers here send megabytes at once to fill the server's socket; the rate limits
    // on what a browser sends would throttle them first.
    c.limits.session_bytes_per_sec = 1 << 30;
    c.limits.session_bytes_burst = 1 << 30;
    c
}

// docs/protocol.md §7: a WebSocket client that sends pings and never reads (so never takes the
// pongs) used to block its session task inside a write for ever: no ping timeout, no drain, no
// cleanup. Now the write fails after the write timeout and the session is reclaimed.
#[tokio::test]
async fn websocket_client_that_pings_and_never_reads_is_cut_after_the_write_timeout() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(short_write_timeout(up)).await;
    let mut ws = open_small_window_ws(&gw).await;
    // Pings as fast as the gateway reads them; the pongs pile up unread.
    let flood = tokio::spawn(async move {
        let payload = Bytes::from(vec![b'p'; 125]);
        loop {
            if let Err(e) = ws.send(Message::Ping(payload.clone())).await {
                return e;
            }
        }
    });
    // The session ends as for a vanished browser: the server's stream is closed cleanly.
    assert_eq!(handle.finished().await, STREAM_END);
    // And the browser's connection is gone: the flood's writes fail.
    let err = tokio::time::timeout(TIMEOUT * 2, flood)
        .await
        .expect("the gateway closed the connection")
        .unwrap();
    assert!(
        matches!(err, tokio_tungstenite::tungstenite::Error::Io(_)),
        "{err}"
    );
}

// docs/protocol.md §7: a server that stops reading after login used to leave the session frozen
// in a write: the client was never told and the session never ended. Now the client gets
// `remote-connection-failed` once the write has waited for the write timeout.
#[tokio::test]
async fn server_that_stops_reading_ends_the_session_with_remote_connection_failed() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        // Holds the socket open without reading, until the test's runtime ends.
        std::future::pending::<()>().await;
        drop(conn);
    })
    .await;
    let gw = start_gateway(short_write_timeout(up)).await;
    let (ws, _, _) = gw.open_session().await;
    let (mut tx, mut rx) = ws.into_inner().split();
    // Stanzas well inside the element limit, more in all than the socket buffers hold.
    let big = big_message();
    let sender = tokio::spawn(async move {
        for _ in 0..60 {
            if tx.send(Message::text(big.clone())).await.is_err() {
                break;
            }
        }
    });
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT * 2, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => frames.push(t.to_string()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the session is still open with its server stalled: {frames:?}"),
        }
    }
    sender.abort();
    let error = frames
        .iter()
        .find(|f| f.contains("stream:error") || f.contains("<error"))
        .unwrap_or_else(|| panic!("no stream error: {frames:?}"));
    assert_stream_error(error, "remote-connection-failed");
}

/// A write deadline out of reach of these tests, pings every second, and no rate limit on
/// bytes: what is measured is what the session does while a write toward the server waits.
fn stalled_server_config(up: std::net::SocketAddr) -> xmpp_gateway::config::Config {
    let mut c = short_write_timeout(up);
    c.limits.write_timeout_secs = 600;
    c.websocket.ping_interval_secs = 1;
    // The client's pongs wait behind what it sends, which the gateway no longer reads.
    c.websocket.max_missed_pongs = 1000;
    c.bosh.max_wait_secs = 10;
    c
}

// docs/protocol.md §7: while the server takes nothing, the session's timers go on. With a full
// queue toward the server the browser is no longer read, but pings still reach it and a drain
// still ends the session at once, long before the write deadline. The session used to sit
// inside its write to the server for the whole deadline.
#[tokio::test]
async fn a_stalled_server_stops_neither_pings_nor_the_drain_of_a_websocket_session() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        std::future::pending::<()>().await;
        drop(conn);
    })
    .await;
    let gw = start_gateway(stalled_server_config(up)).await;
    let queue = gw.gateway.settings().config.limits.max_buffered_bytes;
    let (ws, _, _) = gw.open_session().await;
    let (mut tx, mut rx) = ws.into_inner().split();
    let big = big_message();
    let sender = tokio::spawn(async move {
        for _ in 0..100 {
            if tx.send(Message::text(big.clone())).await.is_err() {
                break;
            }
        }
    });
    wait_for_buffered(&gw, queue, TIMEOUT * 2).await;
    let mut pings = 0;
    while pings < 2 {
        match tokio::time::timeout(TIMEOUT, rx.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("no ping while the server is stalled: {other:?}"),
        }
    }
    gw.gateway.shutdown.begin();
    let error = loop {
        match tokio::time::timeout(TIMEOUT * 2, rx.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains("stream:error") => break t.to_string(),
            Ok(Some(Ok(_))) => {}
            other => panic!("the drain did not end the session: {other:?}"),
        }
    };
    assert_stream_error(&error, "system-shutdown");
    sender.abort();
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

// docs/protocol.md §7 and §4: the same for BOSH. With a full queue toward a server that takes
// nothing, the request held is still answered when its `wait` ends, and a request that waits
// for the queue is answered by the drain at once. The session used to sit inside its write,
// holding every request, for the whole write deadline.
#[tokio::test]
async fn a_stalled_server_stops_neither_the_bosh_wait_nor_the_drain() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(stalled_server_config(up.addr)).await;
    let queue = gw.gateway.settings().config.limits.max_buffered_bytes;
    let (mut bosh, _stalled) = open_bosh_with(&gw, &mut up, " wait='1' hold='1'").await;
    // Two connections, as a browser uses: each request releases the one held before it.
    let mut conns = [
        std::mem::replace(&mut bosh.conn, HttpConn::connect(gw.addr).await),
        HttpConn::connect(gw.addr).await,
    ];
    let big = big_message();
    let mut k = 0;
    loop {
        assert!(k < 100, "the queue toward the server never filled");
        let body = bosh.next_body("", &big);
        conns[k % 2]
            .send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        if k > 0 {
            let reply = conns[(k - 1) % 2]
                .try_response(TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("request {k} released nothing: {e:?}"));
            assert_eq!(terminate_condition(&check_body(&reply)), None);
        }
        if gw.gateway.admission.buffered() >= queue {
            break;
        }
        k += 1;
    }
    // The last request is held; its wait ends with an empty body, the server still stalled.
    let held = conns[k % 2]
        .try_response(TIMEOUT)
        .await
        .expect("the held request is answered when its wait ends");
    assert_eq!(terminate_condition(&check_body(&held)), None);
    // The next one is not read while the queue is full; the drain answers it.
    let body = bosh.next_body("", "");
    conns[(k + 1) % 2]
        .send("POST", "/http-bind", &[XML], body.as_bytes())
        .await;
    gw.gateway.shutdown.begin();
    let told = conns[(k + 1) % 2]
        .try_response(TIMEOUT)
        .await
        .expect("the drain answers the waiting request");
    assert_eq!(
        terminate_condition(&check_body(&told)).as_deref(),
        Some("system-shutdown")
    );
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

/// Reads `tcp` until `needle`, within [`TIMEOUT`]; returns everything read up to it.
async fn read_until(tcp: &mut tokio::net::tcp::OwnedReadHalf, seen: &mut Vec<u8>, needle: &str) {
    let found = |seen: &[u8]| seen.windows(needle.len()).any(|w| w == needle.as_bytes());
    let mut chunk = [0u8; 65536];
    while !found(seen) {
        match tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            other => panic!(
                "the server never got {needle}: {other:?}, {}",
                String::from_utf8_lossy(&seen[seen.len().saturating_sub(200)..])
            ),
        }
    }
}

/// Whether the socket from `local` to `peer` is full, so that a writer waits: what it has queued
/// (`w` of the kernel's socket memory, as `ss` shows it) is above two thirds of its send buffer
/// (`tb`). Linux wakes a waiting writer only once at least half of what is queued is free, and
/// the writer here always has more to write.
fn socket_full(local: std::net::SocketAddr, peer: std::net::SocketAddr) -> bool {
    let filter = format!("( sport = :{} and dport = :{} )", local.port(), peer.port());
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Option<u64> {
        let start = text.find(name)? + name.len();
        let digits: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    matches!((field(",w"), field(",tb")), (Some(w), Some(tb)) if w * 3 > tb * 2)
}

// docs/protocol.md §7: while the gateway waits for a browser that takes nothing, the session's
// other work goes on: what the browser sends still reaches the server, and the drain closes the
// server's stream at once, long before the write deadline (out of reach here). The session used
// to sit inside its write to the browser, reading nothing, until the deadline.
#[tokio::test]
async fn a_browser_that_stops_reading_stops_neither_its_stanzas_nor_the_drain() {
    let element = big_message();
    let (got_late, mut late_arrived) = tokio::sync::mpsc::unbounded_channel();
    let (up, mut handle) = ScriptedUpstream::start(move |mut conn, _| {
        let element = element.clone();
        let got_late = got_late.clone();
        async move {
            conn.answer_stream("s-1", FEATURES_SASL).await;
            let (tcp, mut seen) = conn.into_parts();
            let (mut reader, mut writer) = tcp.into_split();
            // The server has far more for the browser than can be in flight to it.
            let flood = tokio::spawn(async move {
                for _ in 0..400 {
                    if writer.write_all(element.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
            read_until(&mut reader, &mut seen, "id='late'").await;
            let _ = got_late.send(());
            read_until(&mut reader, &mut seen, STREAM_END).await;
            flood.abort();
            String::from_utf8_lossy(&seen).into_owned()
        }
    })
    .await;
    let mut c = plain_config(up);
    c.limits.write_timeout_secs = 600;
    let gw = start_gateway(c).await;
    let mut ws = open_small_window_ws(&gw).await;
    // The gateway's socket toward the browser is full: its next write waits.
    let browser = ws.get_ref().local_addr().unwrap();
    wait_until(
        TIMEOUT * 2,
        || socket_full(gw.addr, browser),
        || "the gateway's socket toward the browser never filled".into(),
    )
    .await;
    ws.send(Message::text(format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}' id='late'/>"
    )))
    .await
    .unwrap();
    tokio::time::timeout(TIMEOUT, late_arrived.recv())
        .await
        .expect("the server got the browser's stanza while the browser took nothing");
    gw.gateway.shutdown.begin();
    let seen = tokio::time::timeout(TIMEOUT, handle.finished())
        .await
        .expect("the drain closed the server's stream while the browser took nothing");
    assert!(
        seen.ends_with(STREAM_END),
        "{}",
        &seen[seen.len().saturating_sub(300)..]
    );
}
