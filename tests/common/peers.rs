//! Peers for the fault and overload tests: an upstream that hands each connection to the test,
//! an echo server, sessions opened on both transports, and a bystander session that keeps
//! exchanging messages in the background so a test can show other sessions are unaffected.

use std::net::SocketAddr;

use tokio::sync::watch;

use super::bosh::BoshClient;
use super::*;

/// Bound on one message's round trip through the gateway for a session that is not the
/// subject of the test; generous for a loaded 2-core machine running a debug build.
pub const ROUND_TRIP_BOUND: Duration = Duration::from_secs(3);

/// A scripted upstream whose connections are handed to the test as they are accepted.
pub struct Upstream {
    pub addr: SocketAddr,
    handle: UpstreamHandle<()>,
    conns: mpsc::UnboundedReceiver<UpstreamConn<TcpStream>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let (tx, conns) = mpsc::unbounded_channel();
        let (addr, handle) = ScriptedUpstream::start(move |conn, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn);
            }
        })
        .await;
        Self {
            addr,
            handle,
            conns,
        }
    }

    /// The next accepted connection.
    pub async fn next(&mut self) -> UpstreamConn<TcpStream> {
        tokio::time::timeout(TIMEOUT, self.conns.recv())
            .await
            .expect("the gateway connected upstream in time")
            .expect("accept loop alive")
    }

    pub fn connections(&self) -> usize {
        self.handle.connections()
    }
}

/// `<message/>` with `id`, as a browser sends it to the echo server.
pub fn message(id: &str) -> String {
    format!(
        "<message xmlns='jabber:client' to='echo@{DOMAIN}' id='{id}'><body>{id}</body></message>"
    )
}

/// A stanza well inside the element limits, large enough that a few fill a socket's buffers.
pub fn big_message() -> String {
    format!(
        "<message xmlns='jabber:client' to='bob@{DOMAIN}'><body>{}</body></message>",
        "z".repeat(200_000)
    )
}

/// A server that opens the stream, answers every `<message/>` with one carrying the same id,
/// and answers the gateway's `</stream:stream>`. Returns once the gateway has closed the
/// socket, with whether it closed the stream first.
pub async fn echo(mut conn: UpstreamConn<TcpStream>) -> bool {
    conn.answer_stream("echo", FEATURES_BIND).await;
    loop {
        let next = conn
            .try_read_until_any(&["</message>", STREAM_END], Duration::from_secs(120))
            .await;
        match next {
            Ok((0, bytes)) => {
                let text = String::from_utf8(bytes).expect("UTF-8");
                let id = text
                    .split(" id='")
                    .nth(1)
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_else(|| panic!("message without id: {text}"))
                    .to_string();
                conn.write(&format!(
                    "<message from='echo@{DOMAIN}' id='{id}'><body>{id}</body></message>"
                ))
                .await;
            }
            Ok(_) => {
                conn.write(STREAM_END).await;
                let _ = conn.try_read_until("\u{0}", TIMEOUT).await;
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// A WebSocket session whose stream is open, with its upstream connection.
pub async fn open_ws(gw: &TestGateway, up: &mut Upstream) -> (WsClient, UpstreamConn<TcpStream>) {
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    let mut conn = up.next().await;
    conn.answer_stream("ws-1", FEATURES_SASL).await;
    let open = ws.recv().await;
    assert_eq!(parse_standalone(&open).name, "open", "{open}");
    let features = ws.recv().await;
    assert_eq!(parse_standalone(&features).name, "features", "{features}");
    (ws, conn)
}

/// Session request attributes of the fault tests: one held request, `wait` as configured.
pub const BOSH_ATTRS: &str = " wait='10' hold='1'";

/// A BOSH session that is open, with its upstream connection.
pub async fn open_bosh(
    gw: &TestGateway,
    up: &mut Upstream,
) -> (BoshClient, UpstreamConn<TcpStream>) {
    open_bosh_with(gw, up, BOSH_ATTRS).await
}

/// As [`open_bosh`] with other session request attributes.
pub async fn open_bosh_with(
    gw: &TestGateway,
    up: &mut Upstream,
    attrs: &str,
) -> (BoshClient, UpstreamConn<TcpStream>) {
    let mut http = BoshClient::send_session_request(gw.addr, attrs).await;
    let mut conn = up.next().await;
    conn.answer_stream("bosh-1", FEATURES_SASL).await;
    let reply = http.response().await;
    (BoshClient::created(gw.addr, http, &reply), conn)
}

/// Sends `message(id)` and waits for the echo of exactly that message as the next frame.
pub async fn ws_round_trip(ws: &mut WsClient, id: &str) -> Duration {
    let started = tokio::time::Instant::now();
    ws.send(&message(id)).await;
    let frame = match ws.next_event(ROUND_TRIP_BOUND).await {
        WsEvent::Text(t) => t,
        other => panic!("no echo of {id} within {ROUND_TRIP_BOUND:?}: {other:?}"),
    };
    assert!(
        frame.contains(&format!(" id='{id}'")),
        "expected {id}, got {frame}"
    );
    parse_standalone(&frame);
    started.elapsed()
}

/// Checks `holds` every 10 ms until it is true; fails with `what()` once `within` has passed.
pub async fn wait_until(
    within: Duration,
    mut holds: impl FnMut() -> bool,
    what: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !holds() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {within:?}: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the gateway's admission holds `n` sessions (every session, both transports).
pub async fn wait_for_sessions(gw: &TestGateway, n: usize, within: Duration) {
    let sessions = || gw.gateway.admission.sessions();
    let what = || format!("admission holds {} sessions, expected {n}", sessions());
    wait_until(within, || sessions() == n, what).await;
}

/// Waits until the gateway's sessions together buffer at least `at_least` bytes.
pub async fn wait_for_buffered(gw: &TestGateway, at_least: usize, within: Duration) {
    let buffered = || gw.gateway.admission.buffered();
    let what = || {
        format!(
            "sessions buffer {} bytes, expected at least {at_least}",
            buffered()
        )
    };
    wait_until(within, || buffered() >= at_least, what).await;
}

/// A WebSocket session on an echo server that exchanges a message every 50 ms in the
/// background, each within [`ROUND_TRIP_BOUND`], each echo the next frame (nothing lost,
/// duplicated or reordered).
pub struct Bystander {
    stop: watch::Sender<bool>,
    task: JoinHandle<(WsClient, usize, Duration)>,
    echo: JoinHandle<bool>,
}

impl Bystander {
    pub async fn start(gw: &TestGateway, up: &mut Upstream) -> Self {
        let mut ws = gw.ws().await;
        ws.send(&open_frame(DOMAIN)).await;
        let echo_task = tokio::spawn(echo(up.next().await));
        let open = ws.recv().await;
        assert_eq!(parse_standalone(&open).name, "open", "{open}");
        ws.recv().await;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut rounds, mut slowest) = (0usize, Duration::ZERO);
            while !*stopped.borrow() {
                rounds += 1;
                slowest = slowest.max(ws_round_trip(&mut ws, &format!("b{rounds}")).await);
                let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
            }
            (ws, rounds, slowest)
        });
        Self {
            stop,
            task,
            echo: echo_task,
        }
    }

    /// Stops the exchange, checks the session still works, and closes it cleanly.
    pub async fn finish(self) -> (usize, Duration) {
        let _ = self.stop.send(true);
        let (mut ws, rounds, slowest) = match tokio::time::timeout(TIMEOUT, self.task).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(e)) => panic!("the bystander's task failed: {e}"),
            Err(_) => panic!("the bystander did not stop within {TIMEOUT:?}"),
        };
        // One more after the fault, whatever the background loop managed meanwhile.
        let last = ws_round_trip(&mut ws, "b-last").await;
        let (rounds, slowest) = (rounds + 1, slowest.max(last));
        ws.send(CLOSE_FRAME).await;
        expect_close_element_and_socket_close(&mut ws).await;
        let closed = tokio::time::timeout(TIMEOUT, self.echo)
            .await
            .expect("the bystander's upstream socket closed")
            .expect("echo task");
        assert!(
            closed,
            "the bystander's stream was closed with </stream:stream>"
        );
        (rounds, slowest)
    }
}

/// A WebSocket to the gateway over a socket with a small receive buffer, so that a client that
/// does not read fills it quickly. Returns the socket once its stream is open.
pub async fn open_small_window_ws(
    gw: &TestGateway,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
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
