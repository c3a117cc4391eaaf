//! A route's warm pool (docs/protocol.md §1): upstream streams opened before anyone asks for
//! them (TCP, TLS, the stream header sent, the server's features received), each handed to one
//! new session, whose `<open/>` is then answered without waiting for the server.
//!
//! A ready stream was opened with the route's domain as `to`, no `from`, and the `xml:lang` of
//! the latest session start that could take one. A session whose header would differ (a
//! `from`, another `xml:lang`, `to` spelt otherwise) opens its own stream, so what the server
//! sees never depends on the pool. A ready stream counts as a session of its endpoint.
//!
//! One task per routing table keeps the pools filled: as many streams as sessions started in
//! the last `max_age_secs` (at least one, at most `warm`; `warm` until that long has passed
//! since the start), opened concurrently, after a failure only once the route's backoff has
//! passed. A stream is closed and replaced when it reaches `max_age_secs`, before the server's
//! timeout for streams that do not authenticate, and one the server has closed or spoken on
//! meanwhile is never handed out.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::health;
use super::routes::Upstreams;
use super::stream::{Opened, StreamParams, UpstreamStream};
use crate::client_addr::ClientAddr;
use crate::config::{Config, PoolConfig};
use crate::xml::Limits;

/// The warm pools of one routing table, by domain, and the task that fills them.
#[derive(Default)]
pub struct Pools {
    pools: HashMap<String, Pool>,
    /// Set when the table is replaced (a reload) or the gateway drains: the pools close.
    retired: AtomicBool,
    /// Wakes the task that fills the pools.
    wake: Arc<Notify>,
}

impl Pools {
    /// The pools of the routes in `config` that keep one.
    pub fn new(config: &Config) -> Self {
        let pools = config
            .routes
            .iter()
            .filter_map(|r| {
                let min = Duration::from_millis(r.backoff_min_ms);
                let max = Duration::from_millis(r.backoff_max_ms);
                Some((r.domain.clone(), Pool::new(&r.pool, min, max)?))
            })
            .collect();
        Self {
            pools,
            ..Self::default()
        }
    }

    /// A ready stream from `domain`'s pool for a session whose header would be `params`, if
    /// the route keeps a pool and one fits. Never waits.
    pub fn take(&self, domain: &str, params: &StreamParams) -> Option<(UpstreamStream, Opened)> {
        let pool = self.pools.get(domain)?;
        let taken = pool.take(domain, params);
        self.wake.notify_one();
        taken
    }

    /// Per route that keeps a pool: its streams ready, and the session starts it served and
    /// did not serve.
    pub fn counts(&self) -> impl Iterator<Item = (String, usize, u64, u64)> + '_ {
        self.pools.iter().map(|(domain, p)| {
            let (ready, hits, misses) = p.counts();
            (domain.clone(), ready, hits, misses)
        })
    }

    /// Starts the task that keeps the pools filled through `upstreams`, when a route keeps a
    /// pool; `limits` are those of the streams' sessions. Must be called inside the runtime.
    pub fn start(self: &Arc<Self>, upstreams: Arc<Upstreams>, limits: Limits) {
        if !self.pools.is_empty() {
            tokio::spawn(fill(Arc::downgrade(self), upstreams, limits));
        }
    }

    /// No new session will take from these pools (a reload replaced them, or the gateway
    /// drains): their ready streams are closed and no more are opened.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        // Now, not at the filling task's next turn: the last reference to the pools may go
        // before that, and dropping a stream closes it without its closing tag.
        self.pools.values().flat_map(Pool::drain).for_each(retire);
        self.wake.notify_one();
    }

    /// [`retire`](Self::retire), and gives the ready streams back now: each gets its closing
    /// tag and its socket is shut down, within a few seconds together. For a drain, so that
    /// the process does not exit with them open.
    pub async fn close(&self) {
        self.retired.store(true, Ordering::Release);
        self.wake.notify_one();
        let mut closing = tokio::task::JoinSet::new();
        for mut stream in self.pools.values().flat_map(Pool::drain) {
            closing.spawn(async move {
                stream.close_stream();
                stream.shutdown(CLOSE_DEADLINE, true).await;
            });
        }
        while closing.join_next().await.is_some() {}
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// Keeps the pools filled until they are retired or dropped. They are not held between
/// turns, so dropping them ends the task at its next turn.
async fn fill(pools: Weak<Pools>, upstreams: Arc<Upstreams>, limits: Limits) {
    loop {
        let Some(all) = pools.upgrade() else {
            return;
        };
        // Retiring gave the streams back already, and a late open closes its own.
        if all.is_retired() {
            return;
        }
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        for (domain, pool) in &all.pools {
            let (open, at) = pool.tend(now);
            next = next.min(at);
            for lang in open {
                let (all, upstreams) = (all.clone(), upstreams.clone());
                let (domain, limits) = (domain.clone(), limits.clone());
                tokio::spawn(async move {
                    let opened = open_ready(&upstreams, &domain, lang.clone(), &limits).await;
                    let pool = &all.pools[&domain];
                    match opened {
                        Some((stream, opened)) if !all.is_retired() => {
                            pool.add(stream, opened, lang)
                        }
                        Some((stream, _)) => {
                            pool.failed();
                            retire(stream);
                        }
                        None => pool.failed(),
                    }
                    all.wake.notify_one();
                });
            }
        }
        let wake = all.wake.clone();
        drop(all);
        tokio::select! {
            // A session just took a stream and is logging in on it: refilling at once would
            // take the CPU (a TLS handshake) from that login's next steps.
            _ = wake.notified() => tokio::time::sleep(REFILL_AFTER).await,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// How long after a session took a ready stream the pool opens its replacement.
const REFILL_AFTER: Duration = Duration::from_millis(20);

/// Opens one stream for `domain`'s pool as a session would (the route's endpoints, their
/// health, its TLS policy, within the connect timeout). It speaks for no browser: routes with
/// a PROXY header keep no pool.
async fn open_ready(
    upstreams: &Upstreams,
    domain: &str,
    lang: Option<String>,
    limits: &Limits,
) -> Option<(UpstreamStream, Opened)> {
    let route = upstreams.route(domain)?;
    let params = StreamParams {
        to: domain.to_string(),
        from: None,
        lang,
    };
    let nobody = ClientAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into());
    match UpstreamStream::establish(upstreams, &route, &params, limits, nobody).await {
        Ok(ready) => Some(ready),
        Err(e) => {
            tracing::debug!(%domain, error = %e, "warm pool: stream not opened");
            None
        }
    }
}

/// How long closing a stream the pool no longer wants may take.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// One route's ready streams.
struct Pool {
    warm: usize,
    max_age: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    created: Instant,
    state: Mutex<State>,
    /// Opens failed in a row, for the backoff.
    failures: AtomicU32,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Ready>,
    /// Streams being opened.
    opening: usize,
    /// The `xml:lang` new streams get.
    lang: Option<String>,
    /// When the latest session starts that could take a ready stream came (at most `warm`).
    starts: VecDeque<Instant>,
    /// No open before this, after a failure.
    retry_at: Option<Instant>,
    /// Given back (a reload or a drain): what opens now is closed at once.
    closed: bool,
}

struct Ready {
    stream: UpstreamStream,
    opened: Opened,
    lang: Option<String>,
    born: Instant,
}

impl Pool {
    /// A pool for a route configured with `config`; `None` when the route keeps no pool.
    fn new(config: &PoolConfig, backoff_min: Duration, backoff_max: Duration) -> Option<Self> {
        (config.warm > 0).then(|| Self {
            warm: config.warm,
            max_age: Duration::from_secs(config.max_age_secs),
            backoff_min,
            backoff_max,
            created: Instant::now(),
            state: Mutex::default(),
            failures: AtomicU32::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// A ready stream for a session whose stream header would be `header(params)`, when one
    /// with that header is ready and alive. `domain` is the route's. Never waits.
    fn take(&self, domain: &str, params: &StreamParams) -> Option<(UpstreamStream, Opened)> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let eligible = params.from.is_none() && params.to == domain;
        if eligible {
            if state.starts.len() == self.warm {
                state.starts.pop_front();
            }
            state.starts.push_back(now);
            state.lang.clone_from(&params.lang);
        }
        let mut stale = Vec::new();
        let mut found = None;
        if eligible {
            while let Some(position) = state.ready.iter().position(|r| r.lang == params.lang) {
                let mut ready = state.ready.remove(position).expect("a position found");
                if now.duration_since(ready.born) < self.max_age
                    && ready.stream.endpoint_is_up()
                    && quiet(&mut ready.stream)
                {
                    found = Some(ready);
                    break;
                }
                stale.push(ready);
            }
            if found.is_none() {
                // The clients' language changed: make room for a stream they can use.
                let other = state.ready.iter().position(|r| r.lang != params.lang);
                stale.extend(other.and_then(|p| state.ready.remove(p)));
            }
        }
        drop(state);
        for ready in stale {
            retire(ready.stream);
        }
        let counter = if found.is_some() {
            &self.hits
        } else {
            tracing::debug!(eligible, from = ?params.from, lang = ?params.lang,
                "warm pool: no ready stream for this header; the session opens its own");
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(|r| (r.stream, r.opened))
    }

    /// Ready streams, and session starts served from the pool and not.
    fn counts(&self) -> (usize, u64, u64) {
        let ready = self.state.lock().unwrap().ready.len();
        (
            ready,
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// How many streams the pool wants ready now.
    fn target(&self, now: Instant, state: &State) -> usize {
        if now.duration_since(self.created) < self.max_age {
            return self.warm;
        }
        let recent = state
            .starts
            .iter()
            .filter(|t| now.duration_since(**t) < self.max_age)
            .count();
        recent.clamp(1, self.warm)
    }

    /// Closes streams past their age; returns the `xml:lang` of each stream to open now, and
    /// when to look again.
    fn tend(&self, now: Instant) -> (Vec<Option<String>>, Instant) {
        let mut state = self.state.lock().unwrap();
        let mut old = Vec::new();
        while state
            .ready
            .front()
            .is_some_and(|r| now.duration_since(r.born) >= self.max_age)
        {
            old.extend(state.ready.pop_front());
        }
        // A stream on an endpoint taken out since would serve nobody well.
        let (keep, down): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut state.ready)
            .into_iter()
            .partition(|r| r.stream.endpoint_is_up());
        state.ready = keep;
        old.extend(down);
        let mut next = state
            .ready
            .front()
            .map_or(now + self.max_age, |r| r.born + self.max_age);
        let mut open = Vec::new();
        match state.retry_at {
            Some(at) if at > now => next = next.min(at),
            _ => {
                let have = state.ready.len() + state.opening;
                let want = self.target(now, &state).saturating_sub(have);
                state.opening += want;
                open = vec![state.lang.clone(); want];
            }
        }
        drop(state);
        for ready in old {
            retire(ready.stream);
        }
        (open, next)
    }

    /// A stream opened for the pool: ready now.
    fn add(&self, stream: UpstreamStream, opened: Opened, lang: Option<String>) {
        self.failures.store(0, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap();
        state.opening -= 1;
        state.retry_at = None;
        if state.closed {
            // Opened while the pool was being given back.
            drop(state);
            retire(stream);
            return;
        }
        state.ready.push_back(Ready {
            stream,
            opened,
            lang,
            born: Instant::now(),
        });
    }

    /// Opening a stream for the pool failed: no more opens until the backoff has passed.
    fn failed(&self) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let wait = health::backoff(failures, self.backoff_min, self.backoff_max);
        let mut state = self.state.lock().unwrap();
        state.opening -= 1;
        state.retry_at = Some(Instant::now() + wait);
    }

    /// Gives every ready stream back to the server; the pool stays empty from then on.
    fn drain(&self) -> Vec<UpstreamStream> {
        let mut state = self.state.lock().unwrap();
        state.closed = true;
        std::mem::take(&mut state.ready)
            .into_iter()
            .map(|r| r.stream)
            .collect()
    }
}

/// Whether the server has said nothing on a ready stream: a stream error, its closing tag, the
/// end of the connection or anything else means it is not as it was opened.
fn quiet(stream: &mut UpstreamStream) -> bool {
    match stream.next_item().now_or_never() {
        None => true,
        Some(said) => {
            tracing::debug!(
                ?said,
                "warm pool: the server spoke on a ready stream; not handed out"
            );
            false
        }
    }
}

/// Closes a stream nobody will use: its closing tag, then the socket, in the background.
fn retire(mut stream: UpstreamStream) {
    stream.close_stream();
    tokio::spawn(async move { stream.shutdown(CLOSE_DEADLINE, true).await });
}
