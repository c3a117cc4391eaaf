//! The real `xmpp-gateway` binary and its signals (docs/protocol.md §6): SIGHUP reloads routes
//! without dropping live sessions and names what needs a restart; SIGTERM drains and exits.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A free port on 127.0.0.1 (bound, then released for the gateway to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The gateway process, with its stderr lines collected as they come.
struct Gateway {
    child: Child,
    lines: std_mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: SocketAddr,
}

impl Gateway {
    fn start(config: &std::path::Path, addr: SocketAddr, admin: SocketAddr) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xmpp-gateway"))
            .args(["--config", config.to_str().expect("utf-8 path")])
            .args([
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .env("RUST_LOG", "info")
            .env_remove("XMPP_GATEWAY_BIN")
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut gw = Gateway {
            child,
            lines,
            seen: Vec::new(),
            addr,
        };
        gw.wait_for_log("xmpp-gateway started");
        gw
    }

    /// Waits (bounded) for a log line containing `needle`; returns it.
    fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its status.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(routes: &[(&str, SocketAddr)]) -> String {
    let mut s = String::new();
    for (domain, addr) in routes {
        s.push_str(&format!(
            "[[route]]\ndomain = \"{domain}\"\nendpoints = [\"{addr}\"]\ntls = \"disabled\"\n"
        ));
    }
    s
}

/// A Prosody-like upstream that opens the stream, echoes one `<message/>` back and then
/// waits for the close.
async fn echo_upstream() -> (SocketAddr, UpstreamHandle<()>) {
    ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s1", FEATURES_SASL).await;
        if let Ok(got) = conn.try_read_until("</message>", TIMEOUT * 2).await {
            conn.write(&String::from_utf8_lossy(&got)).await;
            let _ = conn.try_read_until(STREAM_END, TIMEOUT * 2).await;
        }
    })
    .await
}

// docs/protocol.md §6: SIGHUP reloads routes without dropping live sessions; options that need a
// restart are named in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_and_keeps_live_sessions() {
    let (up_a, _a) = echo_upstream().await;
    let (up_b, _b) = echo_upstream().await;
    let file = TempFile::new("toml", &config_text(&[("a.test", up_a)]));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut gw = Gateway::start(&file.0, addr, admin);

    let mut live = WsClient::connect(gw.addr, &[]).await;
    live.open("a.test").await;
    let mut before = WsClient::connect(gw.addr, &[]).await;
    before.send(&open_frame("b.test")).await;
    expect_stream_error_before_open(&mut before, "host-unknown").await;

    // b.test is added and the file also changes the connection limit, which needs a restart.
    let mut text = config_text(&[("a.test", up_a), ("b.test", up_b)]);
    text.push_str("[limits]\nmax_connections = 5000\n");
    std::fs::write(&file.0, text).expect("rewrite config");
    gw.signal("-HUP");
    gw.wait_for_log("configuration reloaded");
    let warn = gw.wait_for_log("not reloadable");
    assert!(warn.contains("limits.max_connections"), "{warn}");

    let mut after = WsClient::connect(gw.addr, &[]).await;
    after.open("b.test").await;
    // The session opened before the reload still relays both ways.
    live.send("<message xmlns='jabber:client' id='still-here'><body>x</body></message>")
        .await;
    let echoed = live.recv().await;
    assert!(echoed.contains("id='still-here'"), "{echoed}");
}

// docs/protocol.md §6: an invalid file on SIGHUP is refused and the running configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_the_running_configuration() {
    let (up_a, _a) = echo_upstream().await;
    let file = TempFile::new("toml", &config_text(&[("a.test", up_a)]));
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut gw = Gateway::start(&file.0, addr, admin);
    std::fs::write(&file.0, "[[route]]\ndomian = \"x\"\n").expect("rewrite config");
    gw.signal("-HUP");
    let refused = gw.wait_for_log("reload refused");
    assert!(
        refused.contains("domian"),
        "the log names the bad key: {refused}"
    );
    let mut ws = WsClient::connect(gw.addr, &[]).await;
    ws.open("a.test").await;
}

// docs/protocol.md §6: SIGTERM tells sessions to leave and the process exits when they are gone,
// well before the drain timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_and_exits() {
    let (up_a, _a) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s1", FEATURES_SASL).await;
        // A server answers the gateway's close with its own.
        conn.read_until(STREAM_END).await;
        conn.write(STREAM_END).await;
    })
    .await;
    let mut text = config_text(&[("a.test", up_a)]);
    text.insert_str(0, "drain_timeout_secs = 20\n");
    let file = TempFile::new("toml", &text);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut gw = Gateway::start(&file.0, addr, admin);
    let mut ws = WsClient::connect(gw.addr, &[]).await;
    ws.open("a.test").await;
    let started = Instant::now();
    gw.signal("-TERM");
    expect_stream_error(&mut ws, "system-shutdown").await;
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.wait_exit(Duration::from_secs(15));
        drop(gw);
        s
    })
    .await
    .expect("join");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
