//! Listeners and their accept loops, connection limits, and the wiring of shutdown into both.
//! Each accepted connection is one task serving HTTP/1.1 (with upgrades) or HTTP/2 through
//! hyper, routed by `router.rs`; WebSocket sessions continue in their own task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::client_addr::proxy_protocol::{self, Prefixed};
use crate::config::Config;
use crate::deadline::Deadline;
use crate::gateway::{Gateway, GatewayError};

/// How long the public listener and each connection keep being served after the drain tells
/// sessions to leave: as long as a draining BOSH session waits for requests already on their
/// way.
const DRAIN_KEEP_SERVING: Duration = crate::transport::bosh::task::LINGER_DRAINING;

/// A connection slot, held for as long as the connection or a session it upgraded lives.
pub type ConnectionPermit = Arc<OwnedSemaphorePermit>;

/// The bound listeners, ready to run.
pub struct Server {
    gateway: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    /// The internal listener of a cluster node (docs/protocol.md §8).
    cluster: Option<TcpListener>,
}

impl Server {
    /// Binds both listeners.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let gateway = Gateway::new(config)?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let settings = gateway.settings();
        let public = bind(settings.config.listen).await?;
        let admin = bind(settings.config.admin_listen).await?;
        let cluster = match settings.config.cluster.listen {
            Some(addr) if gateway.cluster.is_some() => Some(bind(addr).await?),
            _ => None,
        };
        settings.start();
        Ok(Self {
            gateway: Arc::new(gateway),
            public,
            admin,
            cluster,
        })
    }

    /// Address of the public listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Address of the cluster's internal listener, if the node is in a cluster.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    /// The shared state, for signal handling and tests.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Serves until the drain begins, then stops accepting once requests on their way have had
    /// time to arrive. Sessions keep running until they end; wait for them with
    /// [`crate::shutdown::Shutdown::wait`].
    pub async fn run(self) {
        // The admin listener outlives the drain (/readyz answers 503 meanwhile); it ends when
        // the runtime does.
        tokio::spawn(admin_loop(self.admin, self.gateway.clone()));
        if let (Some(listener), Some(cluster)) = (self.cluster, self.gateway.cluster.clone()) {
            // docs/protocol.md §8: a draining node answers forwarded requests for its sessions
            // until they have moved, so this listener, like the admin one, ends with the process.
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(node = cluster.tag(), listen = %addr, "cluster node");
            }
            tokio::spawn(cluster_loop(listener, self.gateway.clone()));
            let gw = self.gateway.clone();
            tokio::spawn(cluster.run_membership(move || {
                let c = &gw.settings().config.cluster;
                (
                    c.peers.clone(),
                    c.peers_dns.clone(),
                    Duration::from_secs(c.refresh_secs),
                )
            }));
        }
        public_loop(self.public, self.gateway).await;
    }
}

async fn public_loop(listener: TcpListener, gw: Arc<Gateway>) {
    let slots = Arc::new(Semaphore::new(gw.settings().config.limits.max_connections));
    // docs/protocol.md §6: a request already on its way when the drain tells sessions to leave
    // may need a connection of its own (a load balancer with no idle one to this node). It is
    // still taken while the sessions linger for such requests; new sessions are refused with
    // 503 meanwhile, which a balancer retries on another node.
    let closed = async {
        gw.shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_KEEP_SERVING).await;
    };
    tokio::pin!(closed);
    loop {
        let accepted = tokio::select! {
            _ = &mut closed => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing connection");
            continue;
        };
        let gw2 = gw.clone();
        gw.shutdown
            .spawn(serve_public(tcp, peer, gw2, Arc::new(permit)));
    }
    tracing::info!("public listener closed");
}

async fn serve_public(
    tcp: TcpStream,
    socket_peer: SocketAddr,
    gw: Arc<Gateway>,
    permit: ConnectionPermit,
) {
    let _ = tcp.set_nodelay(true);
    let Some((io, http_peer)) = read_proxy_header(tcp, socket_peer, &gw).await else {
        return;
    };
    let tls = gw.settings().listener_tls.clone();
    let secure = tls.is_some();
    let svc_gw = gw.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        if secure {
            req.extensions_mut().insert(crate::http::Secure);
        }
        let answer = crate::router::public(req, &svc_gw, http_peer, permit.clone());
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let Some(acceptor) = tls else {
        serve_http(io, svc, &gw, true).await;
        return;
    };
    // Boxed: a connection's task is as large as its largest state, and the TLS handshake and
    // stream would make every plain connection pay for them.
    Box::pin(async move {
        // docs/protocol.md §7: the handshake is a wait on the peer like the request headers,
        // and has the same deadline.
        let deadline = Duration::from_secs(gw.settings().config.limits.header_read_timeout_secs);
        match tokio::time::timeout(deadline, acceptor.accept(io)).await {
            Ok(Ok(tls)) => serve_http(tls, svc, &gw, true).await,
            Ok(Err(e)) => tracing::debug!(peer = %http_peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %http_peer, "TLS handshake timed out"),
        }
    })
    .await;
}

/// docs/protocol.md §7: a trusted proxy may name its client in a PROXY header, which is looked
/// for on its connections only. Returns the stream to serve and the peer that speaks HTTP on
/// it (the named client, else the socket's peer); `None` when the connection was closed.
async fn read_proxy_header(
    tcp: TcpStream,
    socket_peer: SocketAddr,
    gw: &Gateway,
) -> Option<(Prefixed<TcpStream>, SocketAddr)> {
    let settings = gw.settings();
    let limits = &settings.config.limits;
    if !limits.trusted_proxies.contains(socket_peer.ip()) {
        return Some((Prefixed::new(tcp, None), socket_peer));
    }
    let deadline = Duration::from_secs(limits.header_read_timeout_secs);
    match proxy_protocol::accept(tcp, deadline).await {
        Ok((io, Some(client))) => {
            tracing::debug!(proxy = %socket_peer, %client, "PROXY header");
            Some((io, client))
        }
        Ok((io, None)) => Some((io, socket_peer)),
        Err(e) if e.is_protocol_error() => {
            tracing::warn!(proxy = %socket_peer, error = %e, "PROXY header refused; connection closed");
            None
        }
        Err(e) => {
            tracing::debug!(proxy = %socket_peer, error = %e, "connection closed");
            None
        }
    }
}

async fn admin_loop(listener: TcpListener, gw: Arc<Gateway>) {
    // docs/protocol.md §7: the admin listener is bounded too, by a cap small enough that
    // probes and scrapes always fit and a flood of connections costs little.
    // docs/protocol.md §6: /readyz answers 503 while the drain lasts, so the admin listener keeps
    // serving until the process exits.
    let cap = gw.settings().config.limits.admin_max_connections;
    private_loop(listener, gw, cap, "admin", |req, gw, _| {
        Box::pin(async move { crate::router::admin(req, &gw).await })
    })
    .await;
}

async fn cluster_loop(listener: TcpListener, gw: Arc<Gateway>) {
    // As many connections as the public listener: each forwarded request that is held keeps
    // one, as the browser's request to the forwarding node does.
    let cap = gw.settings().config.limits.max_connections;
    private_loop(listener, gw, cap, "cluster", |req, gw, peer| {
        crate::router::cluster(req, &gw, peer)
    })
    .await;
}

/// The accept loop of a listener that is not the public one (admin, cluster): at most `cap`
/// connections, each served by `route` until it closes; the drain does not stop it, the
/// process's exit does.
async fn private_loop<F>(
    listener: TcpListener,
    gw: Arc<Gateway>,
    cap: usize,
    what: &'static str,
    route: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>, Arc<Gateway>, SocketAddr) -> crate::router::Answer
        + Copy
        + Send
        + Sync
        + 'static,
{
    let slots = Arc::new(Semaphore::new(cap));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, listener = what, "connection limit reached; refusing connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let gw = gw.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc_gw = gw.clone();
            let svc = service_fn(move |req| {
                let answer = route(req, svc_gw.clone(), peer);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            serve_http(tcp, svc, &gw, false).await;
        });
    }
}

async fn serve_http<T, S>(tcp: T, svc: S, gw: &Gateway, stop_on_drain: bool)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<crate::http::Body>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let settings = gw.settings();
    let limits = &settings.config.limits;
    let secs = Duration::from_secs;
    let header_timeout = secs(limits.header_read_timeout_secs);
    let idle_timeout = secs(limits.http_idle_timeout_secs);
    let (activity, mut idle) = Activity::watch(header_timeout, idle_timeout);
    // hyper keeps one box the size of this future for every HTTP/1.1 connection, from its
    // first byte to its close, request or not: it stays a few words because the public
    // router answers with a box of its own (`router::Answer`), allocated only while the
    // request lasts.
    let svc = service_fn(move |req| {
        let in_flight = activity.begin();
        let answer = svc.call(req);
        async move {
            let _in_flight = in_flight;
            answer.await
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header-read timeout only runs when a timer is configured. It restarts as soon as
    // a response is written, so it also ends an idle HTTP/1.1 keep-alive connection.
    // hyper's read buffer grows to its maximum, and the version check before it (24 bytes read
    // to tell HTTP/2 from HTTP/1.1) is handed back as a first short read, after which hyper's
    // next 8 KiB read no longer fits and the buffer doubles to 16 KiB for the connection's life.
    // With the maximum at 8 KiB every read takes only what fits, so an idle connection keeps
    // one 8 KiB buffer (docs/PERFORMANCE.md §1); it is also the limit on a request head (431).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(limits.max_request_head_bytes)
        .keep_alive(true);
    // docs/protocol.md §7: pings find a dead HTTP/2 peer even while a request is held; they do
    // not count as activity for the idle timeout.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(secs(limits.http2_keep_alive_interval_secs))
        .keep_alive_timeout(secs(limits.http2_keep_alive_timeout_secs));
    // docs/protocol.md §7: every write to the browser, from hyper or from a WebSocket on the
    // upgraded connection, gives up when the browser takes no bytes for the write timeout.
    let io = TokioIo::new(Deadline::new(tcp, secs(limits.write_timeout_secs)));
    // The connection keeps no snapshot of the settings: a reload frees the old one.
    drop(settings);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let drain = async {
        if stop_on_drain {
            gw.shutdown.cancelled().await
        } else {
            std::future::pending().await
        }
    };
    tokio::pin!(drain);
    let mut closing_idle = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            end = idle.next() => match end {
                IdleEnd::NoFirstRequest => {
                    tracing::debug!("no request within the header-read timeout");
                    return;
                }
                // docs/protocol.md §7 ("HTTP/2 idle"): GOAWAY on HTTP/2, a close on HTTP/1.1.
                IdleEnd::Idle if !closing_idle => {
                    tracing::debug!("idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing_idle = true;
                }
                IdleEnd::Idle => {
                    tracing::debug!("idle connection still open after closing; dropped");
                    return;
                }
            },
            _ = &mut drain => break,
        }
    }
    // Requests already sent on this connection when the drain began (a BOSH client's next
    // poll, its last messages) are still read and answered for a moment; the draining sessions
    // answer them and forward their payload (docs/protocol.md §6).
    let served = tokio::time::timeout(DRAIN_KEEP_SERVING, conn.as_mut()).await;
    if served.is_err() {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    }
}

/// Requests started and in flight on one connection.
#[derive(Clone, Copy, Default)]
struct Counts {
    started: u64,
    in_flight: usize,
}

/// The request side of a connection's activity: each request holds an [`InFlight`] until its
/// answer is ready.
struct Activity(Arc<watch::Sender<Counts>>);

/// One request in flight; dropping it (answered, or the request abandoned) ends it.
struct InFlight(Arc<watch::Sender<Counts>>);

impl Activity {
    /// The activity of a new connection and its watcher: no first request within `first`, or
    /// no request in flight for `idle`, ends the connection.
    fn watch(first: Duration, idle: Duration) -> (Self, Idleness) {
        let (tx, rx) = watch::channel(Counts::default());
        let watcher = Idleness {
            rx,
            first: Some(first),
            idle,
        };
        (Self(Arc::new(tx)), watcher)
    }

    fn begin(&self) -> InFlight {
        self.0.send_modify(|c| {
            c.started += 1;
            c.in_flight += 1;
        });
        InFlight(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|c| c.in_flight -= 1);
    }
}

/// Why a connection is ended for want of requests.
enum IdleEnd {
    /// hyper-util's auto builder sniffs up to 24 bytes to tell HTTP/1 from HTTP/2 before
    /// hyper's own header timer starts, without a deadline: a connection that has produced no
    /// request within the header-read timeout is dropped, whatever it sent.
    NoFirstRequest,
    /// No request has been in flight for the idle timeout. A held BOSH request is in flight;
    /// an upgraded WebSocket has left hyper's connection, which has ended.
    Idle,
}

/// Watches a connection's [`Activity`].
struct Idleness {
    rx: watch::Receiver<Counts>,
    /// The deadline for the first request, until it has come.
    first: Option<Duration>,
    idle: Duration,
}

impl Idleness {
    /// The next reason to end the connection. Cancel-safe: dropped and called again, it starts
    /// the idle period over.
    async fn next(&mut self) -> IdleEnd {
        if let Some(first) = self.first {
            let came = self.rx.wait_for(|c| c.started > 0);
            if tokio::time::timeout(first, came).await.is_err() {
                return IdleEnd::NoFirstRequest;
            }
            self.first = None;
        }
        loop {
            // `started` only grows: a request that begins and ends between two looks still
            // restarts the period.
            let quiet = self
                .rx
                .wait_for(|c| c.in_flight == 0)
                .await
                .map(|c| c.started);
            // Err: the connection is gone; its own future reports that.
            let Ok(started) = quiet else {
                return std::future::pending().await;
            };
            let next = self.rx.wait_for(|c| c.started != started);
            if tokio::time::timeout(self.idle, next).await.is_err() {
                return IdleEnd::Idle;
            }
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is unusable (the upstream CA bundle, the cluster's secret).
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}
