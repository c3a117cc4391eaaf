//! Session accounting against the process-global `METRICS`. This binary holds a single test so
//! that no other session in the same process moves the gauges while it compares them.

mod common;

use common::*;
use xmpp_gateway::metrics::Transport;
use xmpp_gateway::metrics::METRICS;

// docs/protocol.md §3: a vanished browser closes the upstream stream cleanly; the session is counted
// out (docs/protocol.md §6 metrics).
#[tokio::test]
async fn vanished_browser_closes_upstream_stream_and_session_is_counted_out() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let before = METRICS.active_sessions(Transport::WebSocket);

    let (ws, _, _) = gw.open_session().await;
    assert_eq!(
        METRICS.active_sessions(Transport::WebSocket),
        before + 1,
        "an open session is counted"
    );

    // Drop the TCP connection without a WebSocket close frame.
    ws.vanish();
    assert_eq!(
        handle.finished().await,
        STREAM_END,
        "</stream:stream> then EOF upstream"
    );

    // Every connection and session task of the gateway ends; then the gauge must be back.
    assert!(
        gw.gateway.shutdown.wait(TIMEOUT).await,
        "session tasks still running"
    );
    assert_eq!(
        METRICS.active_sessions(Transport::WebSocket),
        before,
        "the vanished session is counted out"
    );
}
