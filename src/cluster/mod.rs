//! BOSH on any node of a cluster (docs/protocol.md §8). A BOSH session lives on the node that
//! holds its upstream stream; its sid begins with that node's tag, a random name the node takes
//! at start. Every node asks its peers for their tags (signed requests to their internal
//! listeners), so a node that receives a request for another node's session knows where to
//! forward it, and a tag nobody answers for is a session whose node is gone.
//!
//! This module knows the members and carries requests to them ([`forward`]); the internal
//! listener's routes are in `router.rs`, the BOSH handler decides what to forward.

pub mod auth;
pub mod forward;
pub mod metrics;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

pub use forward::{BOSH_PATH, NODE_PATH};

use crate::config::Config;

/// Hex digits of a node's tag at the start of its sids.
pub const TAG_LEN: usize = 8;
/// Hex digits of a sid: the tag, then 128 random bits.
pub const SID_LEN: usize = TAG_LEN + 32;
/// How long a round waits for one peer's answer (its DNS lookup, then its tag).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds asked for by requests come at most this often, so requests with made-up sids cannot
/// keep the members busy; a request for a node unknown to a round this recent is not held.
const MIN_ROUND_INTERVAL: Duration = Duration::from_secs(1);
/// How long a request for an unknown node waits for the next round: longer than a round's
/// lookups and questions together.
pub const FIND_BOUND: Duration = Duration::from_secs(5);
/// A member that fails to answer this many rounds in a row (a timeout, a broken answer) is
/// forgotten; one that refuses the connection, or whose address has left the peers, at once.
const MAX_MISSES: u32 = 3;

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The secret file is unreadable.
    #[error("cluster.secret_file {path}: {source}")]
    Secret {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is too short to sign with.
    #[error("cluster.secret_file {0}: the secret must be at least 16 bytes")]
    ShortSecret(String),
}

/// Where a session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// On this node (or nowhere: a sid no node made).
    Here,
    /// On the member at this internal listener.
    Peer(SocketAddr),
    /// On a node no member answers for: gone, or not known yet.
    Unknown,
}

/// This node's part in the cluster.
pub struct Cluster {
    tag: String,
    link: forward::Link,
    /// Members by tag, from the rounds.
    members: RwLock<HashMap<String, Member>>,
    /// When the last round finished; a request for an unknown node waits for the next one.
    rounds: watch::Sender<Option<Instant>>,
    /// Asks the membership task for a round now.
    wanted: Notify,
}

/// A member: where its internal listener is, and how many rounds in a row it missed.
#[derive(Debug, Clone, Copy)]
struct Member {
    addr: SocketAddr,
    misses: u32,
}

impl Cluster {
    /// This node's part, or `None` when `config` sets no cluster.
    pub fn new(whole: &Config) -> Result<Option<Arc<Self>>, ClusterError> {
        let config = &whole.cluster;
        let (Some(_), Some(path)) = (config.listen, &config.secret_file) else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let raw = std::fs::read(path).map_err(|source| ClusterError::Secret {
            path: shown.clone(),
            source,
        })?;
        let secret = raw.trim_ascii();
        if secret.len() < 16 {
            return Err(ClusterError::ShortSecret(shown));
        }
        let limits = &whole.limits;
        // A member closes a connection that carries no request for `header_read_timeout_secs`
        // (as every listener does): an idle connection is given up well before, so a request is
        // not sent on one that is being closed.
        let idle = Duration::from_secs(limits.header_read_timeout_secs) / 2;
        let connect = Duration::from_secs(limits.connect_timeout_secs);
        let link = forward::Link::new(auth::Signer::new(secret), connect, idle);
        metrics::CLUSTER.members.set(0);
        Ok(Some(Arc::new(Self {
            tag: format!("{:08x}", rand::random::<u32>()),
            link,
            members: RwLock::default(),
            rounds: watch::channel(None).0,
            wanted: Notify::new(),
        })))
    }

    /// This node's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Signs and checks requests between nodes.
    pub fn signer(&self) -> &auth::Signer {
        &self.link.signer
    }

    /// The way to the other members.
    pub fn link(&self) -> &forward::Link {
        &self.link
    }

    /// A new sid for a session of this node: its tag, then 128 random bits.
    pub fn new_sid(&self) -> Arc<str> {
        format!("{}{:032x}", self.tag, rand::random::<u128>()).into()
    }

    /// Where the session `sid` lives, as far as the last round knows.
    pub fn owner(&self, sid: &str) -> Owner {
        let Some(tag) = tag_of(sid) else {
            return Owner::Here;
        };
        if tag == self.tag {
            return Owner::Here;
        }
        match self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tag)
        {
            Some(m) => Owner::Peer(m.addr),
            None => Owner::Unknown,
        }
    }

    /// Where `sid` lives, after the next round if the rounds so far did not know its node (a
    /// node that joined since); unknown at once when a round that finished within the last
    /// second did not know it either. Waits at most `bound`.
    pub async fn find(&self, sid: &str, bound: Duration) -> Owner {
        let owner = self.owner(sid);
        if owner != Owner::Unknown {
            return owner;
        }
        let mut rounds = self.rounds.subscribe();
        let recent = rounds
            .borrow()
            .is_some_and(|t| t.elapsed() < MIN_ROUND_INTERVAL);
        if recent {
            return Owner::Unknown;
        }
        // One permit however many requests ask; the membership task spaces the rounds.
        self.wanted.notify_one();
        let _ = tokio::time::timeout(bound, rounds.changed()).await;
        self.owner(sid)
    }

    /// Asks every peer which node it is, every `refresh` and whenever a request needs it, for
    /// as long as the process runs. `peers` gives the configured peers at each round (they
    /// change at a reload): the `HOST:PORT` list, and the DNS name whose addresses are members.
    pub async fn run_membership<F>(self: Arc<Self>, peers: F)
    where
        F: Fn() -> (Vec<String>, Option<String>, Duration) + Send + 'static,
    {
        loop {
            let (listed, dns, every) = peers();
            self.round(&listed, dns.as_deref()).await;
            let asked = async {
                tokio::time::sleep(MIN_ROUND_INTERVAL).await;
                self.wanted.notified().await;
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = asked => {}
            }
        }
    }

    /// One round: every address of every peer is asked for its tag. Those that answer are
    /// members; a member that does not is kept for `MAX_MISSES` rounds in a row unless it
    /// refused the connection or its address is no longer among the peers'.
    pub async fn round(&self, listed: &[String], dns: Option<&str>) {
        let lookups = listed
            .iter()
            .map(String::as_str)
            .chain(dns)
            .map(|name| async move {
                match tokio::time::timeout(ASK_TIMEOUT, tokio::net::lookup_host(name)).await {
                    Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
                    _ => {
                        tracing::debug!(peer = name, "cluster peer not resolved");
                        Vec::new()
                    }
                }
            });
        let addrs: HashSet<SocketAddr> = futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect();
        let asks = addrs.iter().map(|&addr| async move {
            let answer = tokio::time::timeout(ASK_TIMEOUT, self.ask_tag(addr))
                .await
                .unwrap_or(Err(forward::ForwardError::Timeout));
            (addr, answer)
        });
        let mut members = HashMap::new();
        let mut refused = HashSet::new();
        for (addr, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(tag) => {
                    members.insert(tag, Member { addr, misses: 0 });
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "cluster peer did not answer");
                    if matches!(e, forward::ForwardError::Connect(_)) {
                        refused.insert(addr);
                    }
                }
            }
        }
        {
            let mut known = self.members.write().unwrap_or_else(|e| e.into_inner());
            for (tag, m) in known.iter() {
                let kept = !members.contains_key(tag)
                    && addrs.contains(&m.addr)
                    && !refused.contains(&m.addr)
                    && m.misses + 1 < MAX_MISSES;
                if kept {
                    members.insert(
                        tag.clone(),
                        Member {
                            misses: m.misses + 1,
                            ..*m
                        },
                    );
                }
            }
            let others = members.keys().filter(|t| **t != self.tag).count();
            metrics::CLUSTER.members.set(others as i64);
            *known = members;
        }
        self.rounds.send_replace(Some(Instant::now()));
    }

    async fn ask_tag(&self, addr: SocketAddr) -> Result<String, forward::ForwardError> {
        let body = forward::call(
            &self.link,
            addr,
            "GET",
            NODE_PATH,
            "",
            Bytes::new(),
            ASK_TIMEOUT,
        )
        .await?;
        let tag = std::str::from_utf8(&body).unwrap_or_default();
        if is_tag(tag) {
            Ok(tag.to_owned())
        } else {
            Err(forward::ForwardError::Answer)
        }
    }
}

/// The node tag a sid begins with, if it is a cluster sid (lowercase hex, as nodes make them).
fn tag_of(sid: &str) -> Option<&str> {
    (sid.len() == SID_LEN && is_lower_hex(sid)).then(|| &sid[..TAG_LEN])
}

fn is_tag(s: &str) -> bool {
    s.len() == TAG_LEN && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with a cluster whose secret file is at `path`.
    fn config(path: &std::path::Path) -> Config {
        let mut config = Config::default();
        config.cluster.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.cluster.secret_file = Some(path.to_path_buf());
        config
    }

    fn cluster() -> Arc<Cluster> {
        let path = std::env::temp_dir().join(format!("xgw-cluster-{}", rand::random::<u64>()));
        std::fs::write(&path, "  a secret of twenty bytes \n").unwrap();
        let c = Cluster::new(&config(&path)).unwrap().unwrap();
        std::fs::remove_file(path).unwrap();
        c
    }

    #[test]
    fn sids_name_their_node_and_others_are_found_by_tag() {
        let c = cluster();
        let sid = c.new_sid();
        assert_eq!(sid.len(), SID_LEN);
        assert_eq!(&sid[..TAG_LEN], c.tag());
        assert_eq!(c.owner(&sid), Owner::Here);
        // A sid of a single node (no tag) or one no node made is looked for here.
        assert_eq!(c.owner(&format!("{:032x}", 7u128)), Owner::Here);
        assert_eq!(
            c.owner("not-hex-at-all-but-forty-characters-long"),
            Owner::Here
        );
        let other = format!("0badcafe{:032x}", 9u128);
        assert_eq!(c.owner(&other), Owner::Unknown);
        let peer = SocketAddr::from(([10, 0, 0, 2], 9281));
        c.members.write().unwrap().insert(
            "0badcafe".into(),
            Member {
                addr: peer,
                misses: 0,
            },
        );
        // Nodes make lowercase sids: another spelling names no node.
        assert_eq!(c.owner(&other.to_uppercase()), Owner::Here);
        assert_eq!(c.owner(&other), Owner::Peer(peer));
    }

    #[test]
    fn a_short_or_missing_secret_is_refused() {
        let path = std::env::temp_dir().join(format!("xgw-short-{}", rand::random::<u64>()));
        std::fs::write(&path, "short\n").unwrap();
        let mut config = config(&path);
        let short = Cluster::new(&config).err().unwrap();
        assert!(matches!(short, ClusterError::ShortSecret(_)), "{short}");
        std::fs::remove_file(&path).unwrap();
        let missing = Cluster::new(&config).err().unwrap();
        assert!(matches!(missing, ClusterError::Secret { .. }), "{missing}");
        config.cluster.listen = None;
        assert!(Cluster::new(&config).unwrap().is_none());
    }
}
