//! Faults on either side of a session (issue 9; docs/protocol.md §3, §4, §7): a server that
//! dies (RST or EOF, without `</stream:stream>`), dribbles, stalls or sends what is not XML; a
//! browser that vanishes; a network cut shorter than the BOSH inactivity period.
//!
//! For each: the affected client gets a protocol-correct error within a stated bound, a
//! bystander session keeps exchanging messages throughout (each round trip within
//! [`ROUND_TRIP_BOUND`], none lost or duplicated), and nothing is left behind: the admission
//! count back to the bystander alone, the victim's upstream socket closed.

mod common;

use std::time::{Duration, Instant};

use common::bosh::*;
use common::peers::*;
use common::*;
use xmpp_gateway::config::Config;

/// How soon a client must hear that its server is gone (the gateway reads the failure at once;
/// the rest is scheduling on a loaded machine).
const PROMPT: Duration = Duration::from_secs(2);
const INACTIVITY_SECS: u64 = 2;

fn fault_config(up: std::net::SocketAddr) -> Config {
    let mut c = plain_config(up);
    c.bosh.max_wait_secs = 10;
    c.bosh.inactivity_secs = INACTIVITY_SECS;
    c
}

/// How a server's connection ends.
#[derive(Clone, Copy, Debug)]
enum Death {
    /// RST: the process was killed, or a middlebox cut the connection.
    Reset,
    /// FIN without `</stream:stream>`: the process closed its socket mid-stream.
    Eof,
    /// Bytes that are not XML, mid-stream.
    Garbage(&'static [u8]),
}

fn kill(
    mut conn: UpstreamConn<tokio::net::TcpStream>,
    how: Death,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        match how {
            Death::Reset => {
                conn.reset();
                String::new()
            }
            Death::Eof => {
                drop(conn);
                String::new()
            }
            Death::Garbage(bytes) => {
                conn.write_bytes(bytes).await;
                conn.read_to_eof().await
            }
        }
    })
}

/// A WebSocket and a BOSH session (its request held) lose their server: the WebSocket gets
/// `remote-connection-failed` then `<close/>`, the BOSH request a terminate body with
/// `remote-connection-failed`, both within [`PROMPT`]; new sessions work once the server is
/// back; the bystander never notices.
async fn server_dies_mid_session(how: Death) {
    let mut up = Upstream::start().await;
    let gw = start_gateway(fault_config(up.addr)).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    let (mut ws, ws_up) = open_ws(&gw, &mut up).await;
    let (mut bosh, bosh_up) = open_bosh(&gw, &mut up).await;
    bosh.send("", "").await;
    wait_for_sessions(&gw, 3, TIMEOUT).await;

    let died = Instant::now();
    let ws_end = kill(ws_up, how);
    let bosh_end = kill(bosh_up, how);
    expect_stream_error(&mut ws, "remote-connection-failed").await;
    let ws_told = died.elapsed();
    let answer = bosh.response().await;
    assert_eq!(
        terminate_condition(&answer).as_deref(),
        Some("remote-connection-failed"),
        "{answer}"
    );
    let bosh_told = died.elapsed();
    assert!(
        ws_told < PROMPT && bosh_told < PROMPT,
        "{how:?}: told after {ws_told:?} (WebSocket), {bosh_told:?} (BOSH)"
    );
    // A stream the gateway can no longer read is dropped, not closed: no closing tag upstream.
    for end in [ws_end, bosh_end] {
        let rest = tokio::time::timeout(TIMEOUT, end)
            .await
            .expect("upstream closed")
            .unwrap();
        assert_eq!(rest, "", "{how:?}: the gateway sent more upstream");
    }
    // The BOSH session lingers at most min(10 s, inactivity) to tell a late request why.
    wait_for_sessions(&gw, 1, Duration::from_secs(INACTIVITY_SECS) + TIMEOUT).await;

    // The server is back: both transports log in again and exchange messages.
    let (mut ws, ws_up) = open_ws(&gw, &mut up).await;
    let echo_ws = tokio::spawn(async move {
        let mut conn = ws_up;
        let _ = conn.read_until("</message>").await;
        conn.write("<message id='again-ws'/>").await;
        conn.read_until(STREAM_END).await;
        conn.write(STREAM_END).await;
        conn.read_to_eof().await
    });
    ws.send(&message("again-ws")).await;
    assert!(ws.recv().await.contains("id='again-ws'"));
    ws.send(CLOSE_FRAME).await;
    expect_close_element_and_socket_close(&mut ws).await;
    assert_eq!(echo_ws.await.unwrap(), "");
    let (mut bosh, bosh_up) = open_bosh(&gw, &mut up).await;
    let echo_bosh = tokio::spawn(async move {
        let mut conn = bosh_up;
        let _ = conn.read_until("</message>").await;
        conn.write("<message id='again-bosh'/>").await;
        conn.read_until(STREAM_END).await;
        conn.write(STREAM_END).await;
        conn.read_to_eof().await
    });
    bosh.round_trip(&message("again-bosh"), "again-bosh").await;
    bosh.terminate().await;
    assert_eq!(echo_bosh.await.unwrap(), "");

    let (rounds, slowest) = bystander.finish().await;
    eprintln!("{how:?}: told in {ws_told:?}/{bosh_told:?}; bystander {rounds} round trips, slowest {slowest:?}");
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

// docs/protocol.md §3, §4: a server killed mid-session (its connection reset).
#[tokio::test]
async fn server_reset_mid_session_is_remote_connection_failed_at_once_on_both_transports() {
    server_dies_mid_session(Death::Reset).await;
}

// docs/protocol.md §3, §4: a server that closes its TCP connection without
// `</stream:stream>`.
#[tokio::test]
async fn server_eof_without_stream_end_is_remote_connection_failed_at_once_on_both_transports() {
    server_dies_mid_session(Death::Eof).await;
}

// docs/protocol.md §2: what the server sends is checked for well-formedness; bytes that are
// not XML mid-stream end the session, and the stream is dropped.
#[tokio::test]
async fn server_garbage_mid_session_is_remote_connection_failed_at_once_on_both_transports() {
    server_dies_mid_session(Death::Garbage(b"\xff\xfe<<<not xml>>>&&&\x00")).await;
}

// docs/protocol.md §2: character data between top-level elements (here an HTTP answer from
// something that is not an XMPP server) is not a stanza; it must never reach a browser as
// one.
#[tokio::test]
async fn server_text_between_stanzas_is_remote_connection_failed_at_once_on_both_transports() {
    server_dies_mid_session(Death::Garbage(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
}

/// Writes `data` one byte at a time, `gap` apart.
async fn dribble(conn: &mut UpstreamConn<tokio::net::TcpStream>, data: &str, gap: Duration) {
    for b in data.as_bytes() {
        if conn.try_write_bytes(std::slice::from_ref(b)).await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
    }
}

// docs/protocol.md §7: after login nothing bounds how slowly a server may send (a server is
// idle most of the time, and reading is never a wait on a deadline), so a slow server makes a
// slow session, not a broken one: a stanza dribbled at ten bytes a second reaches a WebSocket
// and a held BOSH request whole, once, after its last byte, and both sessions go on.
#[tokio::test]
async fn server_dribbling_a_stanza_makes_a_slow_session_not_a_broken_one() {
    const GAP: Duration = Duration::from_millis(100);
    let stanza = "<message id='slow'><body>one byte at a time</body></message>";
    let mut up = Upstream::start().await;
    let gw = start_gateway(fault_config(up.addr)).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    let (mut ws, mut ws_up) = open_ws(&gw, &mut up).await;
    let (mut bosh, mut bosh_up) = open_bosh(&gw, &mut up).await;
    bosh.send("", "").await;
    let started = Instant::now();
    let ws_writer = tokio::spawn(async move {
        dribble(&mut ws_up, stanza, GAP).await;
        ws_up
    });
    let bosh_writer = tokio::spawn(async move {
        dribble(&mut bosh_up, stanza, GAP).await;
        bosh_up
    });
    let dribbled = GAP * (stanza.len() as u32 - 1);
    let frame = match ws.next_event(dribbled + TIMEOUT).await {
        WsEvent::Text(t) => t,
        other => panic!("no stanza: {other:?}"),
    };
    let ws_after = started.elapsed();
    parse_standalone(&frame);
    assert!(
        frame.contains("one byte at a time</body></message>"),
        "{frame}"
    );
    let answer = bosh.response().await;
    let bosh_after = started.elapsed();
    assert_eq!(ids(&answer), vec!["slow"], "{answer}");
    assert!(
        ws_after >= dribbled && bosh_after >= dribbled,
        "delivered before the last byte: {ws_after:?}, {bosh_after:?}"
    );
    let mut ws_up = ws_writer.await.unwrap();
    let mut bosh_up = bosh_writer.await.unwrap();
    // Both sessions go on: one more stanza each way.
    ws.send(&message("w2")).await;
    ws_up.read_until("</message>").await;
    ws_up.write("<message id='w3'/>").await;
    assert!(ws.recv().await.contains("id='w3'"));
    bosh.send("", &message("b2")).await;
    bosh_up.read_until("</message>").await;
    bosh_up.write("<message id='b3'/>").await;
    assert_eq!(ids(&bosh.response().await), vec!["b3"]);
    bystander.finish().await;
    drop((ws, bosh, ws_up, bosh_up));
}

// docs/protocol.md §7: before login the server's stream header is a wait under
// `limits.connect_timeout_secs` as a whole, however slowly it trickles in: a server that sends
// one byte a second is given up at the connect timeout with `remote-connection-failed`.
#[tokio::test]
async fn server_dribbling_its_stream_header_is_cut_at_the_connect_timeout() {
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    let mut up = Upstream::start().await;
    let mut c = fault_config(up.addr);
    c.limits.connect_timeout_secs = CONNECT_TIMEOUT.as_secs();
    let gw = start_gateway(c).await;
    let bystander = Bystander::start(&gw, &mut up).await;

    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    let started = Instant::now();
    let mut ws_up = up.next().await;
    let header = server_header("dribbled");
    let ws_writer = tokio::spawn(async move {
        ws_up.read_stream_header().await;
        dribble(&mut ws_up, &header, Duration::from_secs(1)).await;
    });
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    let ws_after = started.elapsed();

    let mut http = BoshClient::send_session_request(gw.addr, BOSH_ATTRS).await;
    let started = Instant::now();
    let mut bosh_up = up.next().await;
    let header = server_header("dribbled");
    let bosh_writer = tokio::spawn(async move {
        bosh_up.read_stream_header().await;
        dribble(&mut bosh_up, &header, Duration::from_secs(1)).await;
    });
    let answer = check_body(
        &http
            .try_response(CONNECT_TIMEOUT + TIMEOUT)
            .await
            .expect("an answer"),
    );
    let bosh_after = started.elapsed();
    assert_eq!(
        terminate_condition(&answer).as_deref(),
        Some("remote-connection-failed"),
        "{answer}"
    );
    for after in [ws_after, bosh_after] {
        assert!(
            after >= CONNECT_TIMEOUT - Duration::from_millis(100)
                && after < CONNECT_TIMEOUT + PROMPT,
            "given up after {after:?}, connect timeout {CONNECT_TIMEOUT:?}"
        );
    }
    ws_writer.abort();
    bosh_writer.abort();
    bystander.finish().await;
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

// docs/protocol.md §7: a server that stops reading after login ends a BOSH session with
// `remote-connection-failed` once a write toward it has waited `limits.write_timeout_secs`
// (the WebSocket case is in tests/deadlines.rs).
#[tokio::test]
async fn server_that_stops_reading_ends_a_bosh_session_with_remote_connection_failed() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
    let mut up = Upstream::start().await;
    let mut c = fault_config(up.addr);
    c.limits.write_timeout_secs = WRITE_TIMEOUT.as_secs();
    c.limits.session_bytes_per_sec = 1 << 30;
    c.limits.session_bytes_burst = 1 << 30;
    let gw = start_gateway(c).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    // hold='0': every request is answered once its payload is on its way.
    let (mut bosh, stalled) = open_bosh_with(&gw, &mut up, " wait='10' hold='0'").await;
    let big = big_message();
    // Each request carries a stanza; the socket toward the server fills, then a write waits.
    let started = Instant::now();
    let mut last_sent;
    let condition = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the session is still open with its server stalled"
        );
        last_sent = Instant::now();
        let body = bosh.next_body("", &big);
        bosh.conn
            .send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        match bosh.conn.try_response(WRITE_TIMEOUT + TIMEOUT).await {
            Ok(reply) => {
                let text = check_body(&reply);
                if let Some(condition) = terminate_condition(&text) {
                    break condition;
                }
            }
            Err(end) => panic!("no answer while the server is stalled: {end:?}"),
        }
    };
    let told = last_sent.elapsed();
    assert_eq!(condition, "remote-connection-failed");
    assert!(
        told < WRITE_TIMEOUT + PROMPT,
        "told {told:?} after the last request"
    );
    drop(stalled);
    bystander.finish().await;
    wait_for_sessions(&gw, 0, Duration::from_secs(INACTIVITY_SECS) + TIMEOUT).await;
}

// docs/protocol.md §3: a browser whose TCP connection drops mid-WebSocket (no close frame, no
// `<close/>`) has its server stream closed cleanly with `</stream:stream>` within [`PROMPT`],
// and its session counted out.
#[tokio::test]
async fn browser_vanishing_mid_websocket_closes_the_server_stream_at_once() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(fault_config(up.addr)).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    let (ws, mut server) = open_ws(&gw, &mut up).await;
    let vanished = Instant::now();
    ws.vanish();
    assert_eq!(server.read_until(STREAM_END).await, STREAM_END);
    let closed = vanished.elapsed();
    assert!(closed < PROMPT, "server stream closed after {closed:?}");
    server.write(STREAM_END).await;
    assert_eq!(server.read_to_eof().await, "");
    wait_for_sessions(&gw, 1, TIMEOUT).await;
    bystander.finish().await;
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

// docs/protocol.md §3 and XEP-0198 §5: when the server granted resumption, a vanished
// browser's stream is left to break (the socket shut, no closing tag), so that the server keeps
// the session for the browser's `<resume/>`; within [`PROMPT`] all the same.
#[tokio::test]
async fn browser_vanishing_mid_websocket_leaves_a_resumable_stream_to_break() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(fault_config(up.addr)).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    let (mut ws, mut server) = open_ws(&gw, &mut up).await;
    server
        .write("<enabled xmlns='urn:xmpp:sm:3' id='sm-1' resume='true'/>")
        .await;
    assert!(ws.recv().await.contains("enabled"));
    let vanished = Instant::now();
    ws.vanish();
    assert_eq!(
        server.read_to_eof().await,
        "",
        "no closing tag for a resumable stream"
    );
    let closed = vanished.elapsed();
    assert!(closed < PROMPT, "server socket closed after {closed:?}");
    wait_for_sessions(&gw, 1, TIMEOUT).await;
    bystander.finish().await;
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}

// docs/protocol.md §4 (XEP-0124 §10): a browser that vanishes while its request is held (its
// HTTP connection closed under the request) leaves a session with no request to answer: its
// inactivity counts from the moment the connection closed, not from the end of the held
// request's `wait`. The session is ended, its server stream closed with `</stream:stream>`,
// within `inactivity` (plus [`PROMPT`]), not before.
#[tokio::test]
async fn browser_vanishing_mid_bosh_request_is_reclaimed_after_inactivity() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(fault_config(up.addr)).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    // wait='10': far longer than inactivity, so waiting for it would show.
    let (mut bosh, mut server) = open_bosh(&gw, &mut up).await;
    bosh.send("", "<presence/>").await;
    server.read_until("<presence/>").await;
    let vanished = Instant::now();
    drop(bosh);
    let inactivity = Duration::from_secs(INACTIVITY_SECS);
    if let Err(end) = server
        .try_read_until(STREAM_END, inactivity + TIMEOUT)
        .await
    {
        panic!("server stream not closed after the browser vanished: {end:?}");
    }
    let closed = vanished.elapsed();
    assert!(
        closed >= inactivity - Duration::from_millis(100) && closed < inactivity + PROMPT,
        "closed after {closed:?}; inactivity {inactivity:?}"
    );
    server.write(STREAM_END).await;
    assert_eq!(server.read_to_eof().await, "");
    wait_for_sessions(&gw, 1, TIMEOUT).await;
    bystander.finish().await;
    eprintln!("vanished BOSH browser reclaimed after {closed:?}");
}

/// The server's numbered messages `from..=to`.
fn numbered(from: usize, to: usize) -> String {
    (from..=to)
        .map(|n| format!("<message id='m{n}'><body>{n}</body></message>"))
        .collect()
}

// docs/protocol.md §4: a network cut shorter than `inactivity` loses nothing. Three times, the
// browser's connection drops while its request is held, the server sends ten messages during
// the cut, and after a pause the browser repeats the same rid on a new connection and polls
// on: every message arrives exactly once, in order, and the session goes on.
#[tokio::test]
async fn network_cut_within_inactivity_loses_and_duplicates_nothing() {
    const CUTS: usize = 3;
    const PER_CUT: usize = 10;
    const CUT: Duration = Duration::from_millis(1500);
    let mut up = Upstream::start().await;
    let mut c = fault_config(up.addr);
    c.bosh.inactivity_secs = 3;
    let gw = start_gateway(c).await;
    let bystander = Bystander::start(&gw, &mut up).await;
    let (mut bosh, mut server) = open_bosh(&gw, &mut up).await;
    let mut received: Vec<String> = Vec::new();
    for cut in 0..CUTS {
        let request = bosh.next_body("", "");
        bosh.conn
            .send("POST", "/http-bind", &[XML], request.as_bytes())
            .await;
        // The cut: the connection is gone with the request held on it.
        bosh.conn = HttpConn::connect(gw.addr).await;
        let first = cut * PER_CUT + 1;
        server.write(&numbered(first, first + PER_CUT - 1)).await;
        // Real time passes: the length of the cut is the behaviour under test.
        tokio::time::sleep(CUT).await;
        // The browser is back and repeats the rid whose answer it never saw.
        bosh.conn
            .send("POST", "/http-bind", &[XML], request.as_bytes())
            .await;
        let mut answer = bosh.response().await;
        loop {
            assert_eq!(terminate_condition(&answer), None, "cut {cut}: {answer}");
            received.extend(ids(&answer));
            if received.len() >= (cut + 1) * PER_CUT {
                break;
            }
            answer = bosh.request("", "").await;
        }
    }
    let expected: Vec<String> = (1..=CUTS * PER_CUT).map(|n| format!("m{n}")).collect();
    assert_eq!(received, expected, "every message once, in order");
    // The session goes on after the last cut.
    bosh.send("", "<presence/>").await;
    server.read_until("<presence/>").await;
    server.write("<message id='after'/>").await;
    assert_eq!(ids(&bosh.response().await), vec!["after"]);
    bosh.send(" type='terminate'", "").await;
    server.read_until(STREAM_END).await;
    server.write(STREAM_END).await;
    assert_eq!(
        terminate_condition(&bosh.response().await).as_deref(),
        Some("")
    );
    bystander.finish().await;
    wait_for_sessions(&gw, 0, TIMEOUT).await;
}
