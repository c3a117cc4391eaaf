//! The `[cluster]` section: BOSH on any node of a cluster of gateways (docs/protocol.md §8).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// A cluster of gateways in which any node answers any BOSH request (docs/protocol.md §8):
/// the node that holds a session is named in its sid, and the others forward its requests
/// there over the internal listener. Off while `listen` is unset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The internal listener for requests forwarded by the other nodes (keep it off the public
    /// network; every request on it must carry the shared secret's signature).
    pub listen: Option<SocketAddr>,
    /// The other nodes' cluster listeners, `HOST:PORT` (this node's own may be listed too).
    pub peers: Vec<String>,
    /// `HOST:PORT` whose addresses are the nodes' cluster listeners (a Kubernetes headless
    /// Service), looked up again every `refresh_secs`; with `peers` or instead of it.
    pub peers_dns: Option<String>,
    /// A file holding the secret the nodes share (at least 16 bytes; surrounding whitespace
    /// is not part of it).
    pub secret_file: Option<PathBuf>,
    /// Seconds between two rounds of asking every peer which node it is.
    pub refresh_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: None,
            peers: Vec::new(),
            peers_dns: None,
            secret_file: None,
            refresh_secs: 5,
        }
    }
}
