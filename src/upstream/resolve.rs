//! Where a domain's XMPP server is: static endpoints from the route, or DNS SRV records
//! (`_xmpps-client._tcp` for direct TLS, then `_xmpp-client._tcp` for STARTTLS), falling back to
//! the domain itself on port 5222 (RFC 6120 §3.2, XEP-0368); then each endpoint's addresses.
//!
//! docs/protocol.md §1: answers are cached per route for their TTL (the shortest of the SRV and
//! address records used), and a session start never waits on a lookup that is already known:
//! an expired answer is still used while one background lookup refreshes it, and kept when the
//! refresh fails. Session starts that find nothing cached share one lookup, so a reconnect
//! storm after a drain asks the name servers once per route, not once per session. A failed
//! lookup is remembered for [`NEGATIVE_TTL`], for the same reason.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioAsyncResolver;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::error::UpstreamError;
use crate::config::{RouteConfig, TlsPolicy};

/// A served domain, ready to be dialled.
#[derive(Debug)]
pub struct Route {
    /// The route as configured.
    pub config: RouteConfig,
    /// Parsed static endpoints; empty means DNS SRV.
    pub endpoints: Vec<Endpoint>,
}

/// One place to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS from the first byte instead of STARTTLS.
    pub direct_tls: bool,
    /// SRV priority (RFC 2782: lower first); 0 for static endpoints.
    pub priority: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// An endpoint with the addresses its host name resolved to, in the resolver's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Where to connect, tried in order.
    pub addrs: Vec<SocketAddr>,
}

/// How long a failed lookup is remembered before the next session start asks again.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// The shortest time an answer is kept, whatever its TTL says (a TTL of 0 would otherwise mean
/// a lookup per session start).
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// How soon a background refresh that failed is tried again; the old answer is used meanwhile.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// What a route resolved to, or why it did not, and until when that holds.
#[derive(Clone)]
struct Answer {
    result: Result<Arc<Vec<Resolved>>, String>,
    expires: Instant,
}

/// One route's cache entry.
#[derive(Default)]
struct Entry {
    /// The first lookup, which every session start that finds nothing shares.
    first: OnceCell<()>,
    answer: Mutex<Option<Answer>>,
    /// A background refresh is under way.
    refreshing: AtomicBool,
}

/// The system resolver, created on first use so a gateway with only static routes never reads
/// resolv.conf, and the cache of what routes resolved to.
#[derive(Default)]
pub struct Resolver {
    inner: OnceCell<TokioAsyncResolver>,
    cache: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Resolver {
    /// A resolver asking only the name server at `addr`, over UDP; for tests.
    #[cfg(test)]
    pub(crate) fn with_name_server(addr: SocketAddr) -> Self {
        use hickory_resolver::config::{
            NameServerConfig, NameServerConfigGroup, Protocol, ResolverConfig, ResolverOpts,
        };
        let servers = NameServerConfigGroup::from(vec![NameServerConfig::new(addr, Protocol::Udp)]);
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let mut opts = ResolverOpts::default();
        // The cache under test is this one; the resolver's own would hide the queries.
        opts.cache_size = 0;
        Self {
            inner: OnceCell::new_with(Some(TokioAsyncResolver::tokio(config, opts))),
            cache: Mutex::default(),
        }
    }

    /// Makes every cached answer `by` older; for tests.
    #[cfg(test)]
    pub(crate) fn age(&self, by: Duration) {
        for entry in self.cache.lock().unwrap().values() {
            if let Some(answer) = entry.answer.lock().unwrap().as_mut() {
                answer.expires -= by;
            }
        }
    }

    async fn get(&self) -> Result<&TokioAsyncResolver, UpstreamError> {
        self.inner
            .get_or_try_init(|| async {
                TokioAsyncResolver::tokio_from_system_conf()
                    .map_err(|e| UpstreamError::Resolve(e.to_string()))
            })
            .await
    }

    /// Endpoints to try for a route, in order, with their addresses.
    pub async fn endpoints(&self, route: &Route) -> Result<Arc<Vec<Resolved>>, UpstreamError> {
        if let Some(literal) = literal_endpoints(&route.endpoints) {
            return Ok(literal);
        }
        let resolver = self.get().await?;
        let entry = {
            let mut cache = self.cache.lock().unwrap();
            let key = route.config.domain.clone();
            cache.entry(key).or_default().clone()
        };
        let known = entry.answer.lock().unwrap().clone();
        match known {
            Some(answer) if Instant::now() < answer.expires => {
                answer.result.map_err(UpstreamError::Resolve)
            }
            // Expired but usable: used as it is while it is refreshed in the background.
            Some(Answer {
                result: Ok(endpoints),
                ..
            }) => {
                if !entry.refreshing.swap(true, Ordering::AcqRel) {
                    tokio::spawn(refresh(
                        resolver.clone(),
                        route.config.clone(),
                        route.endpoints.clone(),
                        entry.clone(),
                    ));
                }
                Ok(endpoints)
            }
            // An expired failure: a new entry, whose first lookup is shared like any other.
            Some(Answer { result: Err(_), .. }) => {
                self.forget(&route.config.domain, &entry);
                Box::pin(self.endpoints(route)).await
            }
            None => {
                entry
                    .first
                    .get_or_init(|| async {
                        let answer = lookup(resolver, &route.config, &route.endpoints).await;
                        *entry.answer.lock().unwrap() = Some(answer);
                    })
                    .await;
                // What the lookup found, even if it took longer than its own TTL.
                let answer = entry.answer.lock().unwrap().clone();
                let answer = answer.expect("the first lookup leaves an answer");
                answer.result.map_err(UpstreamError::Resolve)
            }
        }
    }
}

impl Resolver {
    /// Drops `entry` from the cache, unless another has replaced it already.
    fn forget(&self, domain: &str, entry: &Arc<Entry>) {
        let mut cache = self.cache.lock().unwrap();
        if cache.get(domain).is_some_and(|c| Arc::ptr_eq(c, entry)) {
            cache.remove(domain);
        }
    }
}

/// Static endpoints that are all address literals need no lookup.
fn literal_endpoints(endpoints: &[Endpoint]) -> Option<Arc<Vec<Resolved>>> {
    if endpoints.is_empty() {
        return None;
    }
    endpoints
        .iter()
        .map(|e| {
            let ip: IpAddr = e.host.parse().ok()?;
            Some(Resolved {
                endpoint: e.clone(),
                addrs: vec![SocketAddr::new(ip, e.port)],
            })
        })
        .collect::<Option<Vec<_>>>()
        .map(Arc::new)
}

async fn refresh(
    resolver: TokioAsyncResolver,
    config: RouteConfig,
    endpoints: Vec<Endpoint>,
    entry: Arc<Entry>,
) {
    let fresh = lookup(&resolver, &config, &endpoints).await;
    {
        let mut answer = entry.answer.lock().unwrap();
        match (&fresh.result, answer.as_mut()) {
            (Err(e), Some(old)) => {
                tracing::warn!(domain = %config.domain, error = %e,
                    "DNS refresh failed; the previous answer is used meanwhile");
                old.expires = Instant::now() + RETRY_AFTER;
            }
            _ => *answer = Some(fresh),
        }
    }
    entry.refreshing.store(false, Ordering::Release);
}

/// Looks a route up: its endpoints (static, or from SRV), then each one's addresses.
async fn lookup(
    resolver: &TokioAsyncResolver,
    config: &RouteConfig,
    static_endpoints: &[Endpoint],
) -> Answer {
    let mut valid_until: Option<std::time::Instant> = None;
    let mut shortest = |until: std::time::Instant| {
        valid_until = Some(valid_until.map_or(until, |v| v.min(until)));
    };
    let endpoints = if static_endpoints.is_empty() {
        srv_endpoints(resolver, config, &mut shortest).await
    } else {
        static_endpoints.to_vec()
    };
    let mut resolved = Vec::with_capacity(endpoints.len());
    let mut last_error = None;
    for endpoint in endpoints {
        if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
            let addrs = vec![SocketAddr::new(ip, endpoint.port)];
            resolved.push(Resolved { endpoint, addrs });
            continue;
        }
        match resolver.lookup_ip(endpoint.host.as_str()).await {
            Ok(ips) => {
                shortest(ips.valid_until());
                let addrs = ips.iter().map(|ip| SocketAddr::new(ip, endpoint.port));
                let addrs: Vec<_> = addrs.collect();
                if !addrs.is_empty() {
                    resolved.push(Resolved { endpoint, addrs });
                }
            }
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "endpoint has no address");
                last_error = Some(format!("{endpoint}: {e}"));
            }
        }
    }
    if resolved.is_empty() {
        let why = last_error.unwrap_or_else(|| "no endpoints".into());
        return Answer {
            result: Err(why),
            expires: Instant::now() + NEGATIVE_TTL,
        };
    }
    let ttl = valid_until
        .map(|v| v.saturating_duration_since(std::time::Instant::now()))
        .unwrap_or(MIN_TTL)
        .max(MIN_TTL);
    Answer {
        result: Ok(Arc::new(resolved)),
        expires: Instant::now() + ttl,
    }
}

/// The SRV targets of a domain in RFC 2782 order, direct TLS first; the domain on port 5222
/// when it has none.
async fn srv_endpoints(
    resolver: &TokioAsyncResolver,
    config: &RouteConfig,
    shortest: &mut impl FnMut(std::time::Instant),
) -> Vec<Endpoint> {
    let domain = &config.domain;
    let mut out = Vec::new();
    // XEP-0368: direct TLS records first, unless the route refuses TLS.
    if config.tls != TlsPolicy::Disabled {
        let name = format!("_xmpps-client._tcp.{domain}.");
        out.extend(srv(resolver, &name, true, shortest).await);
    }
    let name = format!("_xmpp-client._tcp.{domain}.");
    out.extend(srv(resolver, &name, false, shortest).await);
    if out.is_empty() {
        // RFC 6120 §3.2.2: no SRV records, fall back to the domain on the default port.
        out.push(Endpoint {
            host: domain.clone(),
            port: 5222,
            direct_tls: false,
            priority: 0,
        });
    }
    out
}

async fn srv(
    resolver: &TokioAsyncResolver,
    name: &str,
    direct_tls: bool,
    shortest: &mut impl FnMut(std::time::Instant),
) -> Vec<Endpoint> {
    let Ok(lookup) = resolver.srv_lookup(name).await else {
        return Vec::new();
    };
    shortest(lookup.as_lookup().valid_until());
    let mut records: Vec<_> = lookup.iter().cloned().collect();
    // RFC 2782: lower priority first; within a priority, heavier weight first.
    records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
    records
        .into_iter()
        .filter_map(|r| {
            let host = r.target().to_utf8();
            let host = host.trim_end_matches('.');
            // A target of "." says the service is decidedly not available (RFC 2782).
            (!host.is_empty()).then(|| Endpoint {
                host: host.to_string(),
                port: r.port(),
                direct_tls,
                priority: r.priority(),
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
