//! The routing table: which bound resources are online, and the queue each one's writer reads.
//!
//! Stanzas between users are the fixture's hot path, so the table is split into shards by bare
//! JID, each behind its own short-held mutex: a lookup takes one shard's lock once, clones the
//! queue's sender and lets go before anything is awaited. Every resource of one user lives in
//! one shard, so a full JID and a bare JID are both found with one lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use super::writer::Outbox;

const SHARDS: usize = 64;

/// One bound resource.
struct Route {
    resource: Box<str>,
    conn: u64,
    outbox: Outbox,
}

/// Online resources by bare JID, in shards.
pub struct Table {
    shards: Vec<Mutex<HashMap<Box<str>, Vec<Route>>>>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// FNV-1a: cheap and good enough to spread JIDs over shards.
fn shard_of(bare: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bare.as_bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}

impl Table {
    fn shard(&self, bare: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Vec<Route>>> {
        // A panic while the lock is held leaves the map consistent (no method mutates in two
        // steps), so a poisoned lock is still usable.
        self.shards[shard_of(bare)]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Binds `bare/resource` to connection `conn`. Returns the outbox of the connection that
    /// held the same full JID before (RFC 6120 §7.7.2.2: the new one wins, the old one is
    /// told `conflict`).
    pub fn bind(&self, bare: &str, resource: &str, conn: u64, outbox: Outbox) -> Option<Outbox> {
        let mut shard = self.shard(bare);
        let routes = shard.entry(bare.into()).or_default();
        let route = Route {
            resource: resource.into(),
            conn,
            outbox,
        };
        match routes.iter_mut().find(|r| &*r.resource == resource) {
            Some(old) => Some(std::mem::replace(old, route).outbox),
            None => {
                routes.push(route);
                None
            }
        }
    }

    /// Removes `bare/resource` if connection `conn` still holds it (a replaced connection
    /// leaves its successor alone).
    pub fn unbind(&self, bare: &str, resource: &str, conn: u64) {
        let mut shard = self.shard(bare);
        if let Some(routes) = shard.get_mut(bare) {
            routes.retain(|r| !(r.conn == conn && &*r.resource == resource));
            if routes.is_empty() {
                shard.remove(bare);
            }
        }
    }

    /// The outbox of `bare/resource`, or of any online resource of `bare` when `resource` is
    /// `None`.
    pub fn lookup(&self, bare: &str, resource: Option<&str>) -> Option<Outbox> {
        let shard = self.shard(bare);
        let routes = shard.get(bare)?;
        let route = match resource {
            Some(resource) => routes.iter().find(|r| &*r.resource == resource)?,
            None => routes.first()?,
        };
        Some(route.outbox.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::writer::outbox;

    #[test]
    fn full_and_bare_lookups_and_replacement() {
        let table = Table::default();
        let (a, _a_rx) = outbox();
        let (b, _b_rx) = outbox();
        assert!(table.bind("u@d", "one", 1, a.clone()).is_none());
        assert!(table.lookup("u@d", Some("one")).is_some());
        assert!(table.lookup("u@d", None).is_some());
        assert!(table.lookup("u@d", Some("two")).is_none());
        let old = table
            .bind("u@d", "one", 2, b)
            .expect("the first binding is replaced");
        assert!(old.same_channel(&a));
        // The replaced connection's unbind leaves the new one online.
        table.unbind("u@d", "one", 1);
        assert!(table.lookup("u@d", Some("one")).is_some());
        table.unbind("u@d", "one", 2);
        assert!(table.lookup("u@d", None).is_none());
    }
}
