//! What the gateway knows of each endpoint of a route (docs/protocol.md §1): whether it is up,
//! how many sessions it carries, and when a failed one is tried again.
//!
//! A session start chooses among the endpoints that are up, the one with the fewest sessions
//! first (SRV priority still comes before that; ties keep the configured or SRV order). An
//! endpoint that refuses the connection is taken out at once; one that does not answer in
//! time, or whose socket fails while the stream opens, after [`STRIKES`] sessions in a row.
//! Then one probe task dials it again after an exponential backoff
//! with jitter (`route.backoff_min_ms`, doubling up to `route.backoff_max_ms`) until it
//! answers a stream header; then it is back. While every endpoint of a route is out, sessions
//! fail at once with `remote-connection-failed` instead of dialling (the circuit breaker),
//! and the route recovers by itself when a probe succeeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy_header;
use super::resolve::{Endpoint, Resolved};
use crate::config::{ProxyProtocol, RouteConfig};

/// One endpoint's state, shared by the sessions on it and its probe.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Sessions whose stream is open on this endpoint.
    sessions: AtomicUsize,
    /// Taken out after a failure; a probe is under way.
    down: AtomicBool,
    /// Consecutive failed probes, for the backoff.
    failures: AtomicU32,
    /// Sessions in a row that timed out or lost the socket here, since the last success.
    strikes: AtomicU32,
    /// It has answered since it was last taken out: a stream opened, or a check succeeded.
    answered: AtomicBool,
}

impl EndpointHealth {
    /// Whether sessions may be sent here.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// Up, and known to answer (docs/protocol.md §6: what readiness counts).
    pub fn answers(&self) -> bool {
        self.is_up() && self.answered.load(Ordering::Acquire)
    }

    /// Sessions open on this endpoint now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

/// Holds one session's place on its endpoint; the count drops with it.
#[derive(Debug)]
pub struct SessionOnEndpoint(Arc<EndpointHealth>);

impl SessionOnEndpoint {
    /// Whether its endpoint is still in use (not taken out since).
    pub fn endpoint_is_up(&self) -> bool {
        self.0.is_up()
    }
}

impl Drop for SessionOnEndpoint {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one route, by their name (`host:port`, and whether direct TLS).
#[derive(Debug, Default)]
pub struct RouteHealth {
    endpoints: Mutex<HashMap<String, Arc<EndpointHealth>>>,
}

fn key(e: &Endpoint) -> String {
    format!("{e}/{}", e.direct_tls)
}

impl RouteHealth {
    /// Knows `endpoints` (a route's static ones) from the start, up.
    pub fn with_endpoints(endpoints: &[Endpoint]) -> Self {
        let known = endpoints.iter().map(|e| (key(e), Arc::default())).collect();
        Self {
            endpoints: Mutex::new(known),
        }
    }

    /// The state of `resolved`'s endpoint, created up.
    pub fn of(&self, resolved: &Resolved) -> Arc<EndpointHealth> {
        let mut endpoints = self.endpoints.lock().unwrap();
        endpoints
            .entry(key(&resolved.endpoint))
            .or_default()
            .clone()
    }

    /// Endpoints up and down.
    pub fn counts(&self) -> (usize, usize) {
        let endpoints = self.endpoints.lock().unwrap();
        let up = endpoints.values().filter(|h| h.is_up()).count();
        (up, endpoints.len() - up)
    }

    /// The endpoints to try, in order: those that are up, by SRV priority, then fewest
    /// sessions, then as given. Empty when every endpoint is down.
    pub fn choose<'a>(&self, resolved: &'a [Resolved]) -> Vec<(&'a Resolved, Arc<EndpointHealth>)> {
        let mut up: Vec<_> = resolved
            .iter()
            .map(|r| (r, self.of(r)))
            .filter(|(_, h)| h.is_up())
            .collect();
        // A stable sort: equal endpoints keep their order.
        up.sort_by_key(|(r, h)| (r.endpoint.priority, h.sessions()));
        up
    }

    /// Some endpoint is up (known ones; none for an SRV route not resolved yet).
    pub fn any_up(&self) -> bool {
        self.endpoints.lock().unwrap().values().any(|h| h.is_up())
    }

    /// Some endpoint is up and has answered.
    pub fn any_answers(&self) -> bool {
        self.endpoints.lock().unwrap().values().any(|h| h.answers())
    }

    /// Every endpoint this route has tried is out (and it has tried some): the breaker is open.
    pub fn all_down(&self) -> bool {
        let endpoints = self.endpoints.lock().unwrap();
        !endpoints.is_empty() && endpoints.values().all(|h| !h.is_up())
    }
}

/// A session's stream opened on `health`'s endpoint.
pub fn opened(health: &Arc<EndpointHealth>) -> SessionOnEndpoint {
    answered(health);
    health.sessions.fetch_add(1, Ordering::Relaxed);
    SessionOnEndpoint(health.clone())
}

/// The endpoint answered (a stream opened, or a check succeeded): its run of failures ends.
pub fn answered(health: &EndpointHealth) {
    health.failures.store(0, Ordering::Relaxed);
    health.strikes.store(0, Ordering::Relaxed);
    health.answered.store(true, Ordering::Release);
}

/// How a probe reaches an endpoint, and how long it waits.
#[derive(Clone)]
pub struct Probe {
    /// The route the endpoint serves.
    pub route: RouteConfig,
    /// Each dial, and the wait for the server's stream header, within this.
    pub timeout: Duration,
    /// The stream header the probe sends, as a session would (`stream::header`).
    pub stream_header: String,
}

/// Sessions in a row that time out or lose the socket on an endpoint before it is taken out; a
/// refused connection takes it out at once.
pub const STRIKES: u32 = 2;

/// How a session's attempt on an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused or could not be made: nothing listens there.
    Refused,
    /// No answer within the connect timeout, or the socket failed: perhaps only slow.
    NoAnswer,
}

/// A session's attempt on `resolved`'s endpoint failed. After a refusal, or [`STRIKES`] in a
/// row of the other kind, it is taken out, and a probe brings it back once it answers. Does
/// nothing more when it is out already (its probe is running).
pub fn failed(health: &Arc<EndpointHealth>, resolved: &Resolved, probe: &Probe, how: Failure) {
    if how == Failure::NoAnswer && health.strikes.fetch_add(1, Ordering::AcqRel) + 1 < STRIKES {
        return;
    }
    health.answered.store(false, Ordering::Release);
    if health.down.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::warn!(endpoint = %resolved.endpoint, domain = %probe.route.domain,
        "upstream endpoint taken out; probing it until it answers");
    tokio::spawn(probe_until_up(
        Arc::downgrade(health),
        resolved.clone(),
        probe.clone(),
    ));
}

/// The wait before probe number `failures` (1, 2, ...): `min` doubled per failure up to `max`,
/// a random point in its upper half, so gateways that lost a server together do not come
/// back together.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let full = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(max);
    let half = full / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=full - half)
}

/// Probes until the endpoint answers, or until nothing refers to its state any more (a reload
/// replaced the routes, and the last session on the endpoint ended).
async fn probe_until_up(health: Weak<EndpointHealth>, resolved: Resolved, probe: Probe) {
    let min = Duration::from_millis(probe.route.backoff_min_ms);
    let max = Duration::from_millis(probe.route.backoff_max_ms);
    loop {
        let Some(state) = health.upgrade() else {
            return;
        };
        let failures = state
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        drop(state);
        tokio::time::sleep(backoff(failures, min, max)).await;
        match tokio::time::timeout(probe.timeout, answers(&resolved, &probe)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %resolved.endpoint, error = %e, "probe failed")
            }
            Err(_) => tracing::debug!(endpoint = %resolved.endpoint, "probe timed out"),
        }
    }
    let Some(state) = health.upgrade() else {
        return;
    };
    answered(&state);
    state.down.store(false, Ordering::Release);
    tracing::info!(endpoint = %resolved.endpoint, domain = %probe.route.domain,
        "upstream endpoint answers again; back in use");
}

/// Whether the endpoint accepts a connection and answers a stream header with one of its own
/// (for a direct-TLS endpoint, accepting the connection is all that is asked).
pub async fn answers(resolved: &Resolved, probe: &Probe) -> std::io::Result<()> {
    let mut tcp = dial_own(&resolved.addrs, probe.route.proxy_protocol).await?;
    if resolved.endpoint.direct_tls {
        return Ok(());
    }
    tcp.write_all(probe.stream_header.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !contains(&seen, b"<stream:stream") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 || seen.len() > 4096 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = tcp.write_all(b"</stream:stream>").await;
    Ok(())
}

/// A connection the gateway makes on its own behalf (a probe, not a browser's session): after
/// the connect, a route with `proxy_protocol` is told so with v2's LOCAL or v1's UNKNOWN.
pub async fn dial_own(addrs: &[SocketAddr], version: ProxyProtocol) -> std::io::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addrs).await?;
    if let Some(header) = proxy_header::for_gateway(version) {
        tcp.write_all(&header).await?;
    }
    Ok(tcp)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16, priority: u16) -> Resolved {
        Resolved {
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port,
                direct_tls: false,
                priority,
            },
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        }
    }

    fn order(health: &RouteHealth, resolved: &[Resolved]) -> Vec<u16> {
        let chosen = health.choose(resolved);
        chosen.iter().map(|(r, _)| r.endpoint.port).collect()
    }

    #[test]
    fn a_session_counts_on_its_endpoint_until_it_ends() {
        let health = RouteHealth::default();
        let both = [at(1, 0), at(2, 0)];
        assert_eq!(order(&health, &both), [1, 2]);
        let on_first = opened(&health.of(&both[0]));
        assert_eq!(order(&health, &both), [2, 1]);
        drop(on_first);
        assert_eq!(order(&health, &both), [1, 2]);
    }

    // After a reload nothing refers to the old routes' state: their probes stop, instead of
    // dialling a dead server for the rest of the process's life.
    #[tokio::test(start_paused = true)]
    async fn a_probe_ends_when_its_endpoint_state_is_dropped() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let resolved = at(dead.local_addr().unwrap().port(), 0);
        drop(dead);
        let health = RouteHealth::default();
        let state = health.of(&resolved);
        let probe = Probe {
            route: RouteConfig::new("a.example"),
            timeout: Duration::from_secs(1),
            stream_header: String::new(),
        };
        let task = tokio::spawn(probe_until_up(Arc::downgrade(&state), resolved, probe));
        state.down.store(true, Ordering::Release);
        drop(state);
        drop(health);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the probe ended")
            .unwrap();
    }

    #[test]
    fn srv_priority_comes_before_the_session_count() {
        let health = RouteHealth::default();
        let endpoints = [at(1, 10), at(2, 0)];
        let _busy = [
            opened(&health.of(&endpoints[1])),
            opened(&health.of(&endpoints[1])),
        ];
        assert_eq!(order(&health, &endpoints), [2, 1]);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..30 {
            let full = (min * 2u32.pow((failures - 1).min(10))).min(max);
            for _ in 0..50 {
                let b = backoff(failures, min, max);
                assert!(b >= full / 2 && b <= full, "{failures}: {b:?} of {full:?}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(5, min, max)).collect();
        assert!(spread.len() > 10, "jitter: {spread:?}");
    }
}
