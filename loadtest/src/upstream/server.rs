//! The fixture as a value: its configuration, the state every connection shares, and the
//! accept loop. [`start`] binds and returns a [`Fixture`] with the real address, so the
//! binary and in-process tests start it the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{cert, conn, route};
use crate::scram::StoredKeys;

/// What the fixture serves and how. [`Config::default`] is a plain-TCP fixture for
/// `localhost` on a free port of 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Domains served; any user name on them may log in.
    pub domains: Vec<String>,
    /// Every user's password.
    pub password: String,
    /// Offer STARTTLS with a certificate made at start.
    pub tls: bool,
    /// Refuse SASL before TLS.
    pub require_tls: bool,
    /// SCRAM-SHA-1 iteration count.
    pub iterations: u32,
    /// A connection that has not bound a resource by then is closed (`connection-timeout`).
    pub pre_auth_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            domains: vec!["localhost".into()],
            password: "loadtest".into(),
            tls: false,
            require_tls: false,
            iterations: 4096,
            pre_auth_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters kept while the fixture runs.
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub logins: AtomicU64,
    pub routed: AtomicU64,
    pub dropped: AtomicU64,
}

/// A reading of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted.
    pub connections: u64,
    /// SASL successes.
    pub logins: u64,
    /// Stanzas delivered from one user to another.
    pub routed: u64,
    /// Stanzas for offline users or the server that were dropped.
    pub dropped: u64,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections={} logins={} stanzas_routed={} stanzas_dropped={}",
            self.connections, self.logins, self.routed, self.dropped
        )
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Counters {
        Counters {
            connections: self.connections.load(Ordering::Relaxed),
            logins: self.logins.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// What every connection of one fixture shares.
pub struct Shared {
    pub config: Config,
    /// SCRAM keys of the one password, computed once: PBKDF2 per login would measure the
    /// fixture's CPU instead of the gateway's.
    pub keys: StoredKeys,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub table: route::Table,
    pub stats: Stats,
    next_conn: AtomicU64,
}

impl Shared {
    /// The served domain `name` names (ASCII case-insensitive), as configured.
    pub fn domain(&self, name: &str) -> Option<&str> {
        self.config
            .domains
            .iter()
            .find(|d| d.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    pub fn conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A running fixture. Dropping it stops accepting; connections already open go on until
/// their clients leave.
pub struct Fixture {
    addr: SocketAddr,
    ca_pem: Option<String>,
    ca_der: Option<rustls::pki_types::CertificateDer<'static>>,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Fixture {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) clients must trust, when TLS is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The CA certificate (DER), when TLS is on.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn ca_der(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.ca_der.as_ref()
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.shared.stats.read()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds `config.listen` and starts serving.
pub async fn start(mut config: Config) -> Result<Fixture> {
    anyhow::ensure!(!config.domains.is_empty(), "at least one domain is needed");
    anyhow::ensure!(
        config.iterations > 0,
        "the SCRAM iteration count must be positive"
    );
    for domain in &mut config.domains {
        domain.make_ascii_lowercase();
    }
    let identity = if config.tls || config.require_tls {
        Some(cert::generate(&config.domains)?)
    } else {
        None
    };
    let salt: [u8; 16] = rand::thread_rng().gen();
    let keys = StoredKeys::new(&config.password, salt.to_vec(), config.iterations);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        tls: identity
            .as_ref()
            .map(|id| tokio_rustls::TlsAcceptor::from(id.server_config.clone())),
        config,
        keys,
        table: route::Table::default(),
        stats: Stats::default(),
        next_conn: AtomicU64::new(1),
    });
    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
    Ok(Fixture {
        addr,
        ca_pem: identity.as_ref().map(|id| id.ca_pem.clone()),
        ca_der: identity.map(|id| id.ca_der),
        shared,
        accept,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _peer)) => {
                // Writes are batched by each connection's writer; Nagle would only add delay.
                let _ = tcp.set_nodelay(true);
                Stats::add(&shared.stats.connections);
                tokio::spawn(conn::serve(tcp, shared.clone()));
            }
            Err(err) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                eprintln!("xmpp-loadtest upstream: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
