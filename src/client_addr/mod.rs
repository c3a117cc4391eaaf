//! The client's address, as admission limits and logs see it (docs/protocol.md §7): the
//! socket's peer, or what a proxy listed in `limits.trusted_proxies` says, never a header from
//! anyone else.
//!
//! Two places may speak for the client, each believed only from a trusted proxy:
//! - at accept time, a PROXY protocol header (v1 or v2) that a trusted socket peer sends before
//!   its first byte of HTTP ([`proxy_protocol`]); it names the connection's client, the peer
//!   that speaks HTTP to us;
//! - per request, `Forwarded: for=` or `X-Forwarded-For` ([`forwarded`]), believed only when
//!   that HTTP peer is itself trusted: behind a TCP proxy that sends a PROXY header, the HTTP
//!   peer is the client, whose headers prove nothing.

pub mod forwarded;
pub mod proxy_protocol;

use std::fmt;
use std::net::IpAddr;

use http::HeaderMap;

use crate::config::TrustedProxies;

/// The address a session's limits and log lines are keyed by: the client itself, as far as
/// the gateway may believe it. Shown as the bare IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// The client at `ip`; an IPv4-mapped IPv6 address is kept as the IPv4 address it maps.
    pub fn new(ip: IpAddr) -> Self {
        Self(ip.to_canonical())
    }

    /// The address of a request's client, given the peer that sent the request over HTTP (the
    /// socket's peer, or the client a trusted PROXY header named) and the headers.
    pub fn of_request(headers: &HeaderMap, http_peer: IpAddr, trusted: &TrustedProxies) -> Self {
        Self::new(forwarded::client_of(headers, http_peer, trusted))
    }

    /// The IP address.
    pub fn ip(&self) -> IpAddr {
        self.0
    }
}

impl From<ClientAddr> for IpAddr {
    fn from(c: ClientAddr) -> Self {
        c.0
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
