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
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::config::TrustedProxies;

/// The address a session's limits and log lines are keyed by: the client itself, as far as
/// the gateway may believe it, with its TCP port when that is known (it is passed on to the
/// server in a PROXY header, `route.proxy_protocol`). Shown as the bare IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    ip: IpAddr,
    /// 0 when unknown.
    port: u16,
}

impl ClientAddr {
    /// The client at `ip`, port unknown; an IPv4-mapped IPv6 address is kept as the IPv4
    /// address it maps.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip: ip.to_canonical(),
            port: 0,
        }
    }

    /// The address of a request's client, given the peer that sent the request over HTTP (the
    /// socket's peer, or the client a trusted PROXY header named) and the headers. The port is
    /// the HTTP peer's when that peer is the client; a forwarding header names no port.
    pub fn of_request(
        headers: &HeaderMap,
        http_peer: SocketAddr,
        trusted: &TrustedProxies,
    ) -> Self {
        let client = Self::new(forwarded::client_of(headers, http_peer.ip(), trusted));
        if client.ip == http_peer.ip().to_canonical() {
            Self {
                port: http_peer.port(),
                ..client
            }
        } else {
            client
        }
    }

    /// The IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client's TCP port, if known.
    pub fn port(&self) -> Option<u16> {
        (self.port != 0).then_some(self.port)
    }

    /// Address and port (0 when unknown).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl From<SocketAddr> for ClientAddr {
    /// The client at this address and port (as another node of a cluster names it).
    fn from(a: SocketAddr) -> Self {
        Self {
            ip: a.ip().to_canonical(),
            port: a.port(),
        }
    }
}

impl From<ClientAddr> for IpAddr {
    fn from(c: ClientAddr) -> Self {
        c.ip
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip.fmt(f)
    }
}
