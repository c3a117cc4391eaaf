//! Upstream side of a session: which XMPP server serves a domain, how to reach it, and the
//! client-to-server stream the gateway opens to it (PROTOCOL.md §1).
//!
//! What is shared between sessions lives here (routes, the resolver, the TLS configuration);
//! each session then owns one [`stream::UpstreamStream`], because XMPP authenticates per
//! stream and authenticated streams can never be shared.

pub mod connect;
pub mod resolve;
pub mod stream;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, RouteConfig};
use crate::xml::XmlError;

/// A served domain, ready to be dialled.
#[derive(Debug)]
pub struct Route {
    /// The route as configured.
    pub config: RouteConfig,
    /// Parsed static endpoints; empty means DNS SRV.
    pub endpoints: Vec<resolve::Endpoint>,
}

/// Everything sessions share to reach their upstream servers.
pub struct Upstreams {
    routes: HashMap<String, Arc<Route>>,
    tls: tls::TlsConnector,
    resolver: resolve::Resolver,
    connect_timeout: Duration,
    /// When an upstream stream last opened (or a probe connected), in ms since `epoch`.
    last_reached_ms: AtomicU64,
    epoch: Instant,
}

/// How recent a successful upstream connection must be for readiness without a new probe.
const REACHED_RECENTLY: Duration = Duration::from_secs(60);

impl Upstreams {
    /// Builds routes, the TLS client configuration and the (lazily created) resolver.
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        let routes = config
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
        Ok(Self {
            routes,
            tls: tls::TlsConnector::new(config.upstream_ca.as_deref())?,
            resolver: resolve::Resolver::default(),
            connect_timeout: Duration::from_secs(config.limits.connect_timeout_secs),
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

    /// Number of configured routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Records that an upstream server answered.
    pub fn mark_reached(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_reached_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// PROTOCOL.md §6: whether at least one upstream endpoint was reachable recently. Without
    /// a recent session, one TCP connection is tried per route until one succeeds.
    pub async fn reachable(&self) -> bool {
        let last = self.last_reached_ms.load(Ordering::Relaxed);
        if last != 0
            && self.epoch.elapsed().as_millis() as u64 - last < REACHED_RECENTLY.as_millis() as u64
        {
            return true;
        }
        for route in self.routes.values() {
            let Ok(endpoints) = self.resolver.endpoints(route).await else {
                continue;
            };
            for ep in endpoints {
                let connect = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), connect).await {
                    self.mark_reached();
                    return true;
                }
            }
        }
        false
    }
}

/// Why an upstream stream could not be had or went away.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The client named a domain the operator did not configure.
    #[error("domain is not served here")]
    UnknownDomain,
    /// DNS resolution failed or found nothing.
    #[error("resolution failed: {0}")]
    Resolve(String),
    /// No endpoint accepted a connection.
    #[error("connection to {endpoint} failed: {reason}")]
    Connect {
        /// The endpoint that failed last.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// TLS could not be set up or the certificate did not verify.
    #[error("TLS with upstream failed: {0}")]
    Tls(String),
    /// The route requires TLS and the server offered none.
    #[error("upstream offers no STARTTLS but the route requires TLS")]
    TlsUnavailable,
    /// An endpoint took longer than the connect timeout.
    #[error("upstream did not answer within the connect timeout")]
    Timeout,
    /// Reading or writing the upstream socket failed.
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent XML the gateway will not pass on.
    #[error("upstream sent bad XML: {0}")]
    Xml(#[from] XmlError),
    /// The server broke the stream protocol (for example no features after the header).
    #[error("upstream protocol error: {0}")]
    Protocol(&'static str),
    /// The server ended the stream with a stream error (the `<stream:error/>` element).
    #[error("upstream stream error")]
    StreamError(bytes::Bytes),
    /// The TLS configuration (CA file) is unusable.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// The RFC 6120 stream error condition a client is sent for this failure.
    pub fn condition(&self) -> &'static str {
        match self {
            UpstreamError::UnknownDomain => "host-unknown",
            _ => "remote-connection-failed",
        }
    }

    /// Low-cardinality kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::UnknownDomain => "unknown_domain",
            UpstreamError::Resolve(_) => "dns",
            UpstreamError::Connect { .. } => "tcp",
            UpstreamError::Tls(_) | UpstreamError::TlsUnavailable | UpstreamError::Config(_) => {
                "tls"
            }
            UpstreamError::Timeout => "timeout",
            UpstreamError::Io(_) => "io",
            UpstreamError::Xml(_) | UpstreamError::Protocol(_) | UpstreamError::StreamError(_) => {
                "stream"
            }
        }
    }
}
