//! The routing table sessions share: which domains are served and how each is reached (static
//! endpoints or DNS SRV), the resolver, the TLS client configuration, and whether an upstream
//! was reachable recently (for `/readyz`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::error::UpstreamError;
use super::health::RouteHealth;
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
    /// The first round of health checks is done (`upstream::checks`).
    checked: AtomicBool,
    checked_notify: Notify,
    /// Replaced by a reload: its checks stop.
    retired: AtomicBool,
}

/// How long `/readyz` waits for the first round of health checks after a start or reload.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(3);

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
            checked: AtomicBool::new(false),
            checked_notify: Notify::new(),
            retired: AtomicBool::new(false),
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

    /// The routes, each once.
    pub fn routes(&self) -> impl Iterator<Item = Arc<Route>> + '_ {
        self.routes.values().cloned()
    }

    /// A reload replaced this table: its checks stop (sessions still on it keep it).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether [`retire`](Self::retire) was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The first round of checks has finished.
    pub(super) fn first_round_done(&self) {
        self.checked.store(true, Ordering::Release);
        self.checked_notify.notify_waiters();
    }

    /// docs/protocol.md §6: whether some route has an endpoint that is up and has answered
    /// (a health check or a session's stream), from the health state; nothing is dialled
    /// here. For a route without checks, up is enough. Right after a start or reload, waits (a little) for the first round of checks.
    pub async fn ready(&self) -> bool {
        if !self.checked.load(Ordering::Acquire) {
            let first = self.checked_notify.notified();
            tokio::pin!(first);
            first.as_mut().enable();
            if !self.checked.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(FIRST_ROUND_WAIT, first).await;
            }
        }
        self.routes.values().any(|route| {
            let health = self.health(route);
            if route.config.check_interval_secs == 0 {
                // Unchecked: what sessions found (static endpoints start up).
                health.any_up()
            } else {
                health.any_answers()
            }
        })
    }
}
