//! The routing table sessions share: which domains are served and how each is reached (static
//! endpoints or DNS SRV), the resolver, the TLS client configuration, and whether an upstream
//! was reachable recently (for `/readyz`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::UpstreamError;
use super::health::{self, RouteHealth};
use super::resolve::{self, Resolver, Route};
use super::tls::TlsConnector;
use crate::config::Config;

/// Everything sessions share to reach their upstream servers.
pub struct Upstreams {
    routes: HashMap<String, Arc<Route>>,
    /// What is known of each route's endpoints (docs/protocol.md §1), by domain.
    health: HashMap<String, RouteHealth>,
    pub(super) tls: TlsConnector,
    pub(super) resolver: Resolver,
    pub(super) connect_timeout: Duration,
    /// How long a write to a server may wait for it to take bytes.
    pub(super) write_timeout: Duration,
    /// When an upstream stream last opened (or a probe connected), in ms since `epoch`.
    last_reached_ms: AtomicU64,
    epoch: Instant,
}

/// How recent a successful upstream connection must be for readiness without a new probe.
const REACHED_RECENTLY: Duration = Duration::from_secs(60);
/// How long a readiness probe waits for each endpoint.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Upstreams {
    /// Builds routes, the TLS client configuration and the (lazily created) resolver.
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        let routes: HashMap<String, Arc<Route>> = config
            .routes
            .iter()
            .map(|r| {
                let endpoints = r
                    .endpoints
                    .iter()
                    .filter_map(|e| crate::config::parse_endpoint(e))
                    .map(|(host, port)| resolve::Endpoint {
                        host,
                        port,
                        direct_tls: r.direct_tls,
                        priority: 0,
                    })
                    .collect();
                (
                    r.domain.clone(),
                    Arc::new(Route {
                        config: r.clone(),
                        endpoints,
                    }),
                )
            })
            .collect();
        let health = routes
            .iter()
            .map(|(domain, route)| {
                (
                    domain.clone(),
                    RouteHealth::with_endpoints(&route.endpoints),
                )
            })
            .collect();
        Ok(Self {
            routes,
            health,
            tls: TlsConnector::new(config.upstream_ca.as_deref())?,
            resolver: Resolver::default(),
            connect_timeout: Duration::from_secs(config.limits.connect_timeout_secs),
            write_timeout: Duration::from_secs(config.limits.write_timeout_secs),
            last_reached_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The route for a domain named by a client, if the operator configured it. Matching is
    /// case-insensitive and ignores a trailing dot.
    pub fn route(&self, domain: &str) -> Option<Arc<Route>> {
        let domain = domain.trim_end_matches('.');
        if let Some(r) = self.routes.get(domain) {
            return Some(r.clone());
        }
        self.routes.get(&domain.to_ascii_lowercase()).cloned()
    }

    /// The health of `route`'s endpoints.
    pub fn health(&self, route: &Route) -> &RouteHealth {
        &self.health[&route.config.domain]
    }

    /// Per route: its endpoints up and down, as far as they are known (static ones from the
    /// start, SRV targets once resolved).
    pub fn endpoint_counts(&self) -> impl Iterator<Item = (String, usize, usize)> + '_ {
        self.health.iter().map(|(domain, h)| {
            let (up, down) = h.counts();
            (domain.clone(), up, down)
        })
    }

    /// Number of configured routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Records that an upstream server answered.
    pub fn mark_reached(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_reached_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// docs/protocol.md §6: whether at least one upstream endpoint was reachable recently. Without
    /// a recent session, one TCP connection is tried per route until one succeeds.
    pub async fn reachable(&self) -> bool {
        // While every endpoint of every route is out, no probe on request is needed: the
        // health probes are already dialling them, and sessions are refused.
        if self.health.values().all(RouteHealth::all_down) {
            return false;
        }
        let last = self.last_reached_ms.load(Ordering::Relaxed);
        if last != 0
            && self.epoch.elapsed().as_millis() as u64 - last < REACHED_RECENTLY.as_millis() as u64
        {
            return true;
        }
        for route in self.routes.values() {
            let resolved =
                tokio::time::timeout(self.connect_timeout, self.resolver.endpoints(route));
            let Ok(Ok(endpoints)) = resolved.await else {
                continue;
            };
            for ep in endpoints.iter() {
                let dial = health::dial_own(&ep.addrs, route.config.proxy_protocol);
                if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, dial).await {
                    self.mark_reached();
                    return true;
                }
            }
        }
        false
    }
}
