//! The state every connection and session shares: the live settings, the drain, and the
//! registry of BOSH sessions. Handed to the router and the listeners; the transports get only
//! what they need from it (a [`Context`], the BOSH registry).

use std::sync::Arc;

use crate::admission::Admission;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
use crate::session::Context;
use crate::settings::{LiveSettings, Settings};
use crate::shutdown::Shutdown;
use crate::transport::bosh;
use crate::upstream::UpstreamError;

/// What every connection and session shares.
pub struct Gateway {
    settings: LiveSettings,
    /// Drain state.
    pub shutdown: Shutdown,
    /// Live BOSH sessions by sid.
    pub bosh: Arc<bosh::Registry>,
    /// The session caps (docs/protocol.md §7).
    pub admission: Arc<Admission>,
    /// This node's part in a cluster (docs/protocol.md §8), if it is in one. Set at start; a
    /// reload changes the peers, not the listener or the secret.
    pub cluster: Option<Arc<Cluster>>,
}

/// Why the shared state could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream configuration (CA bundle) is unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The cluster's secret is unusable.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Gateway {
    /// Builds the shared state from a configuration.
    pub fn new(config: Config) -> Result<Self, GatewayError> {
        let cluster = Cluster::new(&config)?;
        Ok(Self {
            settings: LiveSettings::new(config)?,
            shutdown: Shutdown::default(),
            bosh: Arc::new(bosh::Registry::new(cluster.clone())),
            admission: Arc::default(),
            cluster,
        })
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load()
    }

    /// What a session starting now runs with.
    pub fn context(&self) -> Context {
        Context {
            settings: self.settings(),
            shutdown: self.shutdown.clone(),
            admission: self.admission.clone(),
        }
    }

    /// Replaces routes, limits and TLS material for sessions that start from now on; see
    /// [`LiveSettings::reload`].
    pub fn reload(&self, config: Config) -> Result<Vec<&'static str>, UpstreamError> {
        self.settings.reload(config)
    }
}
