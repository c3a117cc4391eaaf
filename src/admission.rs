//! Admission (docs/protocol.md §7): every session, WebSocket or BOSH, over HTTP/1.1 or HTTP/2,
//! takes a slot under one global cap and under its client address's caps (concurrent sessions,
//! and new sessions per second as a token bucket with a burst) before anything is dialled. The
//! slot is given back when the session ends, by dropping it.
//!
//! Addresses are counted as a client network: an IPv4 address, or the /64 an IPv6 address is
//! in (one subscriber line usually holds a whole /64, so counting single IPv6 addresses would
//! give one client as many slots as it has addresses). The table of addresses is sharded by a
//! keyed hash; a shard's lock is taken once when a session starts and once when it ends, never
//! per stanza. An address with no session is forgotten once its bucket has refilled, so the
//! table holds only addresses that are active or were recently.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitsConfig;

const SHARDS: usize = 16;

/// Why a session was refused; also the `reason` label of `sessions_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_sessions` sessions are open on this node.
    Full,
    /// The sessions of this node buffer more than `limits.max_buffered_bytes_total`.
    Memory,
    /// The client address holds `limits.max_sessions_per_address` sessions.
    AddressFull,
    /// The client address has used its burst of new sessions and must wait for a token.
    AddressRate {
        /// When the next token is due.
        retry_after: Duration,
    },
}

impl Refusal {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Full => "max_sessions",
            Refusal::Memory => "memory",
            Refusal::AddressFull => "address_sessions",
            Refusal::AddressRate { .. } => "address_rate",
        }
    }

    /// Whole seconds for `Retry-After`: when trying again may succeed.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            // Sessions end at their own pace; a few seconds spreads the retries.
            Refusal::Full | Refusal::Memory | Refusal::AddressFull => 5,
            Refusal::AddressRate { retry_after } => {
                retry_after.as_secs_f64().ceil().max(1.0) as u64
            }
        }
    }
}

pub use crate::metrics::REFUSAL_REASONS;

/// A client network, as admission counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    /// The first 64 bits of the address.
    V6(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(u32::from(v4)),
                None => Key::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

struct Address {
    active: usize,
    /// Tokens left in the bucket as of `at`.
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
struct Shard {
    addresses: HashMap<Key, Address>,
    /// Size of the table after the last sweep; the next sweep waits for it to double.
    swept_at_len: usize,
}

/// The admission state of the process.
pub struct Admission {
    total: AtomicUsize,
    /// Bytes the sessions buffer now, as their slots report them.
    buffered: AtomicUsize,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            total: AtomicUsize::new(0),
            buffered: AtomicUsize::new(0),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

/// A session's place under the caps; dropping it gives the place back, and the bytes it
/// reported buffered.
#[must_use = "the slot is given back when dropped"]
pub struct Slot {
    admission: Arc<Admission>,
    key: Key,
    buffered: usize,
}

/// The process buffers more than its ceiling and this session holds more than its share: it
/// is one of the slowest readers, and is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverCeiling;

impl Slot {
    /// Reports the bytes the session buffers now (toward either side). While the process
    /// buffers more than `limits.max_buffered_bytes_total`, a session that buffers more than
    /// an equal share of that ceiling is told to end: the sessions that hold the most are the
    /// ones whose readers are slowest, and cutting them frees the most.
    pub fn set_buffered(&mut self, bytes: usize, limits: &LimitsConfig) -> Result<(), OverCeiling> {
        // Most reports repeat the last one (an idle WebSocket reports 0 after every batch):
        // they read the shared total without writing it.
        let total = if bytes == self.buffered {
            self.admission.buffered()
        } else if bytes > self.buffered {
            let grown = bytes - self.buffered;
            self.admission.buffered.fetch_add(grown, Ordering::AcqRel) + grown
        } else {
            let shrunk = self.buffered - bytes;
            self.admission.buffered.fetch_sub(shrunk, Ordering::AcqRel) - shrunk
        };
        self.buffered = bytes;
        let ceiling = limits.max_buffered_bytes_total;
        if total > ceiling && bytes > ceiling / self.admission.sessions().max(1) {
            return Err(OverCeiling);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("key", &self.key).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission
            .buffered
            .fetch_sub(self.buffered, Ordering::AcqRel);
        self.admission.release(self.key);
    }
}

impl Admission {
    /// Sessions holding a slot now.
    pub fn sessions(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes the sessions report buffered now.
    pub fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new session from `ip` under `limits`, or says why not. A refused
    /// session takes nothing: no slot, and no token unless one was available.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &LimitsConfig,
        now: Instant,
    ) -> Result<Slot, Refusal> {
        // docs/protocol.md §7: past the memory ceiling no session is added.
        if self.buffered() > limits.max_buffered_bytes_total {
            return Err(Refusal::Memory);
        }
        // The global cap first: it needs no lock.
        let total = self.total.fetch_add(1, Ordering::AcqRel);
        if total >= limits.max_sessions {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        let key = Key::of(ip);
        let outcome = {
            let mut shard = self.shard(key);
            shard.sweep(limits, now);
            let burst = limits.new_sessions_burst as f64;
            let address = shard.addresses.entry(key).or_insert(Address {
                active: 0,
                tokens: burst,
                at: now,
            });
            address.refill(limits, now);
            if address.active >= limits.max_sessions_per_address {
                Err(Refusal::AddressFull)
            } else if address.tokens < 1.0 {
                let rate = limits.new_sessions_per_address_per_sec as f64;
                let wait = Duration::from_secs_f64((1.0 - address.tokens) / rate);
                Err(Refusal::AddressRate { retry_after: wait })
            } else {
                address.tokens -= 1.0;
                address.active += 1;
                Ok(())
            }
        };
        match outcome {
            Ok(()) => Ok(Slot {
                admission: self.clone(),
                key,
                buffered: 0,
            }),
            Err(refusal) => {
                self.total.fetch_sub(1, Ordering::AcqRel);
                Err(refusal)
            }
        }
    }

    fn release(&self, key: Key) {
        {
            let mut shard = self.shard(key);
            if let Some(address) = shard.addresses.get_mut(&key) {
                address.active = address.active.saturating_sub(1);
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    fn shard(&self, key: Key) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while a shard was held leaves counts that are still consistent enough to
        // go on with; admission must not stop for it.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Addresses known to admission now (for tests and the memory bound).
    pub fn addresses(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.addresses.len()))
            .sum()
    }
}

impl Address {
    fn refill(&mut self, limits: &LimitsConfig, now: Instant) {
        let rate = limits.new_sessions_per_address_per_sec as f64;
        let burst = limits.new_sessions_burst as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    /// Nothing to remember: no session, and a bucket that would be full again by now.
    fn forgettable(&self, limits: &LimitsConfig, now: Instant) -> bool {
        if self.active > 0 {
            return false;
        }
        let rate = limits.new_sessions_per_address_per_sec as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate >= limits.new_sessions_burst as f64
    }
}

impl Shard {
    /// Forgets addresses with nothing to remember, whenever the table has doubled since the
    /// last sweep: amortised constant work per admission, and a table no larger than twice
    /// the addresses that are active or were recently.
    fn sweep(&mut self, limits: &LimitsConfig, now: Instant) {
        if self.addresses.len() < (2 * self.swept_at_len).max(64) {
            return;
        }
        self.addresses.retain(|_, a| !a.forgettable(limits, now));
        self.swept_at_len = self.addresses.len();
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
