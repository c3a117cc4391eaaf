//! Where a domain's XMPP server is: static endpoints from the route, or DNS SRV records
//! (`_xmpps-client._tcp` for direct TLS, then `_xmpp-client._tcp` for STARTTLS), falling back to
//! the domain itself on port 5222 (RFC 6120 §3.2, XEP-0368).

use hickory_resolver::TokioAsyncResolver;
use tokio::sync::OnceCell;

use super::error::UpstreamError;
use crate::config::RouteConfig;

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

/// The system resolver, created on first use so a gateway with only static routes never reads
/// resolv.conf.
#[derive(Default)]
pub struct Resolver {
    inner: OnceCell<TokioAsyncResolver>,
}

impl Resolver {
    /// A resolver asking only the name server at `addr`, over UDP; for tests.
    #[cfg(test)]
    pub(crate) fn with_name_server(addr: std::net::SocketAddr) -> Self {
        use hickory_resolver::config::{
            NameServerConfig, NameServerConfigGroup, Protocol, ResolverConfig, ResolverOpts,
        };
        let servers = NameServerConfigGroup::from(vec![NameServerConfig::new(addr, Protocol::Udp)]);
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        Self {
            inner: OnceCell::new_with(Some(TokioAsyncResolver::tokio(
                config,
                ResolverOpts::default(),
            ))),
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

    /// Endpoints to try for a route, in order.
    pub async fn endpoints(&self, route: &Route) -> Result<Vec<Endpoint>, UpstreamError> {
        if !route.endpoints.is_empty() {
            return Ok(route.endpoints.clone());
        }
        let domain = &route.config.domain;
        let resolver = self.get().await?;
        let mut out = Vec::new();
        // XEP-0368: direct TLS records first, unless the route refuses TLS.
        if route.config.tls != crate::config::TlsPolicy::Disabled {
            out.extend(srv(resolver, &format!("_xmpps-client._tcp.{domain}."), true).await);
        }
        out.extend(srv(resolver, &format!("_xmpp-client._tcp.{domain}."), false).await);
        if out.is_empty() {
            // RFC 6120 §3.2.2: no SRV records, fall back to the domain on the default port.
            out.push(Endpoint {
                host: domain.clone(),
                port: 5222,
                direct_tls: false,
            });
        }
        Ok(out)
    }
}

async fn srv(resolver: &TokioAsyncResolver, name: &str, direct_tls: bool) -> Vec<Endpoint> {
    let Ok(lookup) = resolver.srv_lookup(name).await else {
        return Vec::new();
    };
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
            })
        })
        .collect()
}
