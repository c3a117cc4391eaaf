//! The reloadable configuration snapshot: the configuration in force, the upstream routes and
//! TLS material built from it, and the XML limits derived from it. A session takes the snapshot
//! in force when it starts and keeps it, so a reload (SIGHUP) changes new sessions and never
//! disturbs live ones.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::upstream::pool::Pools;
use crate::upstream::{UpstreamError, Upstreams};
use crate::xml::Limits;

/// One snapshot of what sessions are configured with.
pub struct Settings {
    /// The configuration in force.
    pub config: Config,
    /// Routes, resolver and TLS toward the XMPP servers.
    pub upstreams: Arc<Upstreams>,
    /// The routes' warm pools (docs/protocol.md §1).
    pub pools: Arc<Pools>,
    /// XML limits for what browsers send, derived from the configuration.
    pub xml_limits: Limits,
    /// XML limits for what the server sends: its size limit only (docs/protocol.md §2).
    pub upstream_limits: Limits,
    /// TLS for new connections to the public listener; `None` for plain HTTP.
    pub listener_tls: Option<TlsAcceptor>,
}

impl Settings {
    /// Builds routes, TLS material and limits from a configuration.
    pub fn new(config: Config) -> Result<Self, UpstreamError> {
        let upstreams = Arc::new(Upstreams::new(&config)?);
        let pools = Arc::new(Pools::new(&config));
        let xml_limits = Limits {
            max_element_bytes: config.limits.max_stanza_bytes,
            max_depth: config.limits.max_depth,
            max_attributes: config.limits.max_attributes,
        };
        let upstream_limits = Limits::size_only(config.limits.max_upstream_stanza_bytes);
        let listener_tls = crate::listener_tls::acceptor(&config.tls)?;
        Ok(Self {
            config,
            upstreams,
            pools,
            xml_limits,
            upstream_limits,
            listener_tls,
        })
    }
}

impl Settings {
    /// Starts what runs beside the sessions (health checks, the task that fills the warm
    /// pools). Inside the
    /// runtime, once the settings are in force.
    pub fn start(&self) {
        crate::upstream::checks::start(&self.upstreams);
        self.pools
            .start(self.upstreams.clone(), self.upstream_limits.clone());
    }
}

/// The snapshot in force, replaced whole on reload.
pub struct LiveSettings(ArcSwap<Settings>);

impl LiveSettings {
    /// Settings built from a configuration.
    pub fn new(config: Config) -> Result<Self, UpstreamError> {
        Ok(Self(ArcSwap::from_pointee(Settings::new(config)?)))
    }

    /// The snapshot in force now.
    pub fn load(&self) -> Arc<Settings> {
        self.0.load_full()
    }

    /// Replaces routes, limits and TLS material (the listener's certificate included) for
    /// sessions and connections that start from now on. Returns
    /// the names of changed options that only a restart applies (listener addresses, the
    /// connection limit, logging, the cluster's listener and secret file). On error nothing
    /// changes.
    pub fn reload(&self, config: Config) -> Result<Vec<&'static str>, UpstreamError> {
        let old = self.load();
        let mut needs_restart = Vec::new();
        if old.config.listen != config.listen {
            needs_restart.push("listen");
        }
        if old.config.admin_listen != config.admin_listen {
            needs_restart.push("admin_listen");
        }
        if old.config.limits.max_connections != config.limits.max_connections {
            needs_restart.push("limits.max_connections");
        }
        if old.config.log != config.log {
            needs_restart.push("log");
        }
        // docs/protocol.md §8: the peers are read at each round; the listener and the secret
        // are the node's for its life.
        if old.config.cluster.listen != config.cluster.listen {
            needs_restart.push("cluster.listen");
        }
        if old.config.cluster.secret_file != config.cluster.secret_file {
            needs_restart.push("cluster.secret_file");
        }
        let new = Arc::new(Settings::new(config)?);
        new.start();
        self.0.store(new);
        // Sessions that run on the old snapshot keep it; its ready streams serve nobody now.
        old.pools.retire();
        old.upstreams.retire();
        Ok(needs_restart)
    }
}
