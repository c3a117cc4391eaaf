//! Deadlines on every wait on a peer (docs/protocol.md §7): a browser or a server that stops
//! reading is cut within `limits.write_timeout_secs`, and the other side is told.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

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

/// A WebSocket to the gateway over a socket with a small receive buffer, so that a client that
/// does not read fills it quickly. Returns the socket once its stream is open.
async fn open_small_window_ws(gw: &TestGateway) -> WebSocketStream<tokio::net::TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gw.addr).await.unwrap();
    let mut req = gw.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws.send(Message::text(open_frame(DOMAIN))).await.unwrap();
    let mut frames = 0;
    while frames < 2 {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => frames += 1,
            other => panic!("no <open/> and features: {other:?}"),
        }
    }
    ws
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
    let big = format!(
        "<message xmlns='jabber:client' to='bob@example.test'><body>{}</body></message>",
        "z".repeat(200_000)
    );
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
