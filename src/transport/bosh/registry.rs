//! The live BOSH sessions by sid: the one structure every BOSH request consults to find its
//! session's task. Only lookups happen under a lock (sharded, so concurrent requests rarely
//! contend); the session's state lives in its task, reached through a bounded channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::state::Request;
use crate::cluster::Cluster;

/// Where a response goes: the HTTP handler waiting for it. If that handler is gone (the client
/// dropped the connection), the response stays cached for a repeated rid.
pub type Reply = oneshot::Sender<Bytes>;

/// A request on its way to a session's task. Boxed: the channel allocates its slots a block at
/// a time, and a block of requests by value would cost every session 4 KiB, in use or not.
pub type Routed = Box<Request<Reply>>;

/// The sending side handlers use to reach a session's task.
pub type Handle = mpsc::Sender<Routed>;

const SHARDS: usize = 64;

/// Live sessions by sid, and in a cluster, where the others' sessions are
/// (docs/protocol.md §8).
pub struct Registry {
    shards: Vec<Mutex<HashMap<Arc<str>, Handle>>>,
    cluster: Option<Arc<Cluster>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Registry {
    /// An empty registry, of a node of `cluster` if it is one.
    pub fn new(cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            cluster,
        }
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// A new session id: 128 random bits from the operating system's CSPRNG-seeded generator,
    /// after this node's tag in a cluster.
    pub fn new_sid(&self) -> Arc<str> {
        match &self.cluster {
            Some(c) => c.new_sid(),
            None => format!("{:032x}", rand::random::<u128>()).into(),
        }
    }

    fn shard(&self, sid: &str) -> &Mutex<HashMap<Arc<str>, Handle>> {
        // The end of a sid is random, so its last bytes spread evenly; its start is the same
        // for every session of a cluster node (the node's tag, docs/protocol.md §8).
        let h = sid
            .bytes()
            .rev()
            .take(4)
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.shards[h % SHARDS]
    }

    /// The task of the session `sid`, if it lives.
    pub fn get(&self, sid: &str) -> Option<Handle> {
        self.shard(sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sid)
            .cloned()
    }

    /// Registers a new session.
    pub fn insert(&self, sid: Arc<str>, handle: Handle) {
        self.shard(&sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid, handle);
    }

    /// Forgets an ended session.
    pub fn remove(&self, sid: &str) {
        self.shard(sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sid);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sessions_of_one_cluster_node_spread_over_the_shards() {
        let registry = Registry::default();
        let shards: std::collections::HashSet<*const Mutex<_>> = (0..1000)
            .map(|_| format!("0badcafe{:032x}", rand::random::<u128>()))
            .map(|sid| registry.shard(&sid) as *const _)
            .collect();
        assert!(
            shards.len() > SHARDS * 3 / 4,
            "{} of {SHARDS} shards used",
            shards.len()
        );
    }
}
