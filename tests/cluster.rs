//! BOSH on any node of a cluster (docs/protocol.md §8): gateways that share a secret, each in a
//! runtime of its own (so one can be stopped as a process dies: its tasks and sockets gone at
//! once), a scripted XMPP server behind them, and a browser-like BOSH client that sends each
//! request to whichever node the test picks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bosh::{terminate_condition, BoshClient, XML};
use common::peers::{message, Upstream, BOSH_ATTRS};
use common::*;
use tokio::net::TcpStream;
use xmpp_gateway::cluster::auth::{Signer, CLIENT_HEADER, HEADER};
use xmpp_gateway::cluster::BOSH_PATH;
use xmpp_gateway::config::Config;
use xmpp_gateway::gateway::Gateway;
use xmpp_gateway::server::Server;

const SECRET: &str = "a cluster secret shared by the test nodes\n";

/// One gateway of the cluster, in a runtime of its own on its own thread.
struct Node {
    /// Public listener.
    addr: SocketAddr,
    /// Internal listener.
    cluster: SocketAddr,
    admin: SocketAddr,
    gateway: Arc<Gateway>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Starts a node of `config` (listeners on ephemeral ports) whose peers are `peers`.
    fn start(mut config: Config, secret: &TempFile, peers: &[SocketAddr]) -> Self {
        config.cluster.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.cluster.secret_file = Some(secret.0.clone());
        config.cluster.peers = peers.iter().map(ToString::to_string).collect();
        config.cluster.refresh_secs = 1;
        let (started_tx, started) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let server = Server::bind(config).await.expect("node binds");
                let addrs = (
                    server.local_addr(),
                    server.cluster_addr().expect("a cluster listener"),
                    server.admin_addr(),
                    server.gateway(),
                );
                tokio::spawn(server.run());
                started_tx.send(addrs).expect("test waits");
            });
            // Until the test stops the node or ends: then every task and socket goes at once.
            let _ = stopped.recv();
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let (addr, cluster, admin, gateway) = started.recv().expect("node started");
        Self {
            addr,
            cluster,
            admin,
            gateway,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the node as a process that dies: its sessions, connections and listeners go.
    fn kill(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            t.join().expect("node thread");
        }
    }

    /// The node's tag, from its sids.
    fn tag(&self) -> String {
        self.gateway
            .cluster
            .as_ref()
            .expect("a cluster node")
            .tag()
            .to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn secret() -> TempFile {
    TempFile::new("secret", SECRET)
}

fn node_config(upstream: SocketAddr) -> Config {
    let mut c = plain_config(upstream);
    c.bosh.max_wait_secs = 10;
    c
}

/// Waits until `node` has a member whose tag is `tag` (a round found it).
async fn knows(node: &Node, tag: &str) {
    let sid = format!("{tag}{:032x}", 1u128);
    let cluster = node.gateway.cluster.clone().expect("a cluster node");
    eventually(&format!("a round that finds {tag}"), || {
        let owner = cluster.owner(&sid);
        async move { matches!(owner, xmpp_gateway::cluster::Owner::Peer(_)) }
    })
    .await;
}

/// A BOSH session opened on the node at `addr`, with its upstream connection.
async fn open_bosh(addr: SocketAddr, up: &mut Upstream) -> (BoshClient, UpstreamConn<TcpStream>) {
    let mut http = BoshClient::send_session_request(addr, BOSH_ATTRS).await;
    let mut conn = up.next().await;
    conn.answer_stream("bosh-1", FEATURES_SASL).await;
    let reply = http.response().await;
    (BoshClient::created(addr, http, &reply), conn)
}

/// The server sends the session's user a message with `id`.
async fn speaks(server: &mut UpstreamConn<TcpStream>, id: &str) {
    server
        .write(&format!("<message from='bob@{DOMAIN}' id='{id}'/>"))
        .await;
}

/// The answer to the request `client` sent last is alive and carries exactly the message `id`.
async fn answered_with(client: &mut BoshClient, id: &str) {
    let answer = client.response().await;
    assert_eq!(common::bosh::ids(&answer), vec![id.to_string()], "{answer}");
    assert_eq!(terminate_condition(&answer), None, "{answer}");
}

/// The next request of `client` is answered `item-not-found`, within `bound` (the session's
/// node is gone: promptly, never a hang).
async fn ends_with_item_not_found(client: &mut BoshClient, bound: Duration) {
    let started = Instant::now();
    let answer = client.request("", "").await;
    assert_eq!(
        terminate_condition(&answer).as_deref(),
        Some("item-not-found"),
        "{answer}"
    );
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
}

/// An empty request of `client` is held until the server sends the message `id`, which its
/// answer then carries.
async fn held_until_the_server_speaks(
    client: &mut BoshClient,
    server: &mut UpstreamConn<TcpStream>,
    id: &str,
) {
    client.send("", "").await;
    speaks(server, id).await;
    answered_with(client, id).await;
}

/// The same session, its next requests sent to `node`'s public listener.
async fn via(client: &BoshClient, node: &Node) -> BoshClient {
    BoshClient {
        addr: node.addr,
        conn: HttpConn::connect(node.addr).await,
        sid: client.sid.clone(),
        rid: client.rid,
    }
}

#[tokio::test]
async fn any_node_answers_for_a_session_of_another_held_requests_included() {
    let mut up = Upstream::start().await;
    let secret = secret();
    let a = Node::start(node_config(up.addr), &secret, &[]);
    let b = Node::start(node_config(up.addr), &secret, &[a.cluster]);
    knows(&b, &a.tag()).await;

    let (on_a, mut server) = open_bosh(a.addr, &mut up).await;
    assert_eq!(on_a.sid.len(), 40, "{}", on_a.sid);
    assert!(
        on_a.sid.starts_with(&a.tag()),
        "{} is not of node {}",
        on_a.sid,
        a.tag()
    );
    let mut on_b = via(&on_a, &b).await;

    // A request sent to B is held at A, and answered through B when the server speaks.
    held_until_the_server_speaks(&mut on_b, &mut server, "held-1").await;

    // What the browser sends through B reaches the server through A's stream.
    on_b.send("", &message("up-1")).await;
    server.read_until("id='up-1'").await;
    speaks(&mut server, "down-1").await;
    answered_with(&mut on_b, "down-1").await;

    // Back on A, in rid order, as if nothing had happened: the session is one.
    let mut on_a = via(&on_b, &a).await;
    on_a.send("", &message("up-2")).await;
    server.read_until("id='up-2'").await;
    speaks(&mut server, "down-2").await;
    answered_with(&mut on_a, "down-2").await;

    // A terminate through B ends the session on A, and closes its stream.
    let mut on_b = via(&on_a, &b).await;
    on_b.terminate().await;
    server.read_until(STREAM_END).await;
}

#[tokio::test]
async fn a_session_whose_node_is_gone_ends_at_once_with_item_not_found() {
    let mut up = Upstream::start().await;
    let secret = secret();
    let mut a = Node::start(node_config(up.addr), &secret, &[]);
    let b = Node::start(node_config(up.addr), &secret, &[a.cluster]);
    knows(&b, &a.tag()).await;
    let (on_a, mut server) = open_bosh(a.addr, &mut up).await;
    let mut on_b = via(&on_a, &b).await;
    // Served through B while A lives.
    held_until_the_server_speaks(&mut on_b, &mut server, "alive").await;

    // The node holding the session dies; B still counts it a member until its next round.
    a.kill();
    ends_with_item_not_found(&mut on_b, Duration::from_secs(3)).await;

    // Once a round has passed without it, its tag is a node nobody answers for: the same.
    let sid = on_b.sid.clone();
    let cluster = b.gateway.cluster.clone().unwrap();
    eventually("a round without the dead node", || {
        let owner = cluster.owner(&sid);
        async move { owner == xmpp_gateway::cluster::Owner::Unknown }
    })
    .await;
    ends_with_item_not_found(&mut on_b, Duration::from_secs(4)).await;
}

#[tokio::test]
async fn the_internal_listener_serves_only_requests_signed_with_the_secret() {
    let mut up = Upstream::start().await;
    let secret = secret();
    let a = Node::start(node_config(up.addr), &secret, &[]);
    let (mut client, mut server) = open_bosh(a.addr, &mut up).await;

    // Each tries the session's next rid with a message for the server.
    let rid = client.rid + 1;
    let body = client.body(rid, "", &message("forged"));
    let browser = "192.0.2.10:40000";
    let post = |headers: Vec<(&'static str, String)>| {
        let body = body.clone();
        let addr = a.cluster;
        async move {
            let mut conn = HttpConn::connect(addr).await;
            let mut h: Vec<(&str, &str)> = vec![XML];
            h.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            conn.request("POST", BOSH_PATH, &h, body.as_bytes()).await
        }
    };
    let unsigned = post(vec![(CLIENT_HEADER, browser.into())]).await;
    assert_eq!(unsigned.status, 401, "{unsigned:?}");
    let other = Signer::new(b"not the cluster's secret at all");
    let sig = other.sign("POST", BOSH_PATH, browser, body.as_bytes());
    let wrong = post(vec![(HEADER, sig), (CLIENT_HEADER, browser.into())]).await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let ours = Signer::new(SECRET.trim().as_bytes());
    let sig = ours.sign("POST", BOSH_PATH, browser, body.as_bytes());
    // Signed for another browser address than the one it names: changed on the way.
    let changed = post(vec![
        (HEADER, sig.clone()),
        (CLIENT_HEADER, "192.0.2.11:40000".into()),
    ])
    .await;
    assert_eq!(changed.status, 401, "{changed:?}");
    let metrics = http_get(a.admin, "/metrics", &[]).await.body;
    assert!(
        metrics.contains("xmpp_gateway_cluster_requests_refused_total{reason=\"missing\"}"),
        "{metrics}"
    );

    // None of them reached the session: its next rid is still free, and the server got nothing.
    client.send("", &message("real")).await;
    let got = server.read_until("</message>").await;
    assert!(
        got.contains("id='real'") && !got.contains("forged"),
        "{got}"
    );
    speaks(&mut server, "r1").await;
    answered_with(&mut client, "r1").await;

    // A request signed with the secret is served (the refusals were not a missing route).
    let rid = client.rid + 1;
    let body = client.body(rid, "", "");
    let sig = ours.sign("POST", BOSH_PATH, browser, body.as_bytes());
    let mut conn = HttpConn::connect(a.cluster).await;
    conn.send(
        "POST",
        BOSH_PATH,
        &[XML, (HEADER, &sig), (CLIENT_HEADER, browser)],
        body.as_bytes(),
    )
    .await;
    speaks(&mut server, "r2").await;
    let signed = conn.response().await;
    assert_eq!(signed.status, 200, "{signed:?}");
    assert_eq!(common::bosh::ids(&signed.text()), vec!["r2"]);
}

#[tokio::test]
async fn a_node_added_to_the_peers_at_a_reload_is_forwarded_to() {
    let mut up = Upstream::start().await;
    let secret = secret();
    let a = Node::start(node_config(up.addr), &secret, &[]);
    let b = Node::start(node_config(up.addr), &secret, &[a.cluster]);
    let (on_b, server) = open_bosh(b.addr, &mut up).await;

    // A does not know B yet: a request for B's session sent to A finds no node.
    let mut on_a = via(&on_b, &a).await;
    let answer = on_a.request("", "").await;
    assert_eq!(
        terminate_condition(&answer).as_deref(),
        Some("item-not-found"),
        "{answer}"
    );

    // A reload adds B to A's peers; the next session on B is reached through A.
    let mut config = node_config(up.addr);
    config.cluster = a.gateway.settings().config.cluster.clone();
    config.cluster.peers = vec![b.cluster.to_string()];
    // The peers change at a reload; nothing else of the cluster's needs a restart for it.
    let needs_restart = a.gateway.reload(config.clone()).expect("reload");
    assert_eq!(needs_restart, Vec::<&str>::new());
    knows(&a, &b.tag()).await;
    drop(server);
    let (on_b, mut server) = open_bosh(b.addr, &mut up).await;
    let mut on_a = via(&on_b, &a).await;
    on_a.send("", &message("via-a")).await;
    server.read_until("id='via-a'").await;
    speaks(&mut server, "back").await;
    answered_with(&mut on_a, "back").await;

    // The listener and the secret file are the node's for its life: a reload says so.
    config.cluster.listen = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
    config.cluster.secret_file = Some("/elsewhere".into());
    let needs_restart = a.gateway.reload(config).expect("reload");
    assert_eq!(needs_restart, vec!["cluster.listen", "cluster.secret_file"]);
}

#[tokio::test]
async fn members_are_found_through_a_dns_name() {
    let mut up = Upstream::start().await;
    let secret = secret();
    let a = Node::start(node_config(up.addr), &secret, &[]);
    // Every address of the name is a member: here `localhost`, whose 127.0.0.1 is A (and whose
    // ::1, if it has one, answers nothing and is left out).
    let mut config = node_config(up.addr);
    config.cluster.peers_dns = Some(format!("localhost:{}", a.cluster.port()));
    let b = Node::start(config, &secret, &[]);
    knows(&b, &a.tag()).await;

    let (on_a, mut server) = open_bosh(a.addr, &mut up).await;
    let mut on_b = via(&on_a, &b).await;
    held_until_the_server_speaks(&mut on_b, &mut server, "by-dns").await;
}

#[tokio::test]
async fn an_address_that_answers_without_the_secret_is_no_member() {
    // Something at a peer's address (a reassigned address, a stranger) that answers every
    // request with HTTP 200 and a tag, unsigned.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = impostor.local_addr().unwrap();
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = impostor.accept().await {
            let asked_tx = asked_tx.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = asked_tx.send(());
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n0badcafe";
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let up = Upstream::start().await;
    let secret = secret();
    let b = Node::start(node_config(up.addr), &secret, &[addr]);
    // Two rounds have asked it.
    for _ in 0..2 {
        tokio::time::timeout(TIMEOUT, asked.recv())
            .await
            .expect("a round asks the address")
            .expect("impostor alive");
    }
    let sid = format!("0badcafe{:032x}", 5u128);
    let cluster = b.gateway.cluster.clone().unwrap();
    assert_eq!(cluster.owner(&sid), xmpp_gateway::cluster::Owner::Unknown);
    let metrics = http_get(b.admin, "/metrics", &[]).await.body;
    assert!(
        metrics.contains("xmpp_gateway_cluster_members 0"),
        "{metrics}"
    );
}
