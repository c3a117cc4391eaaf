//! The PROXY protocol header the gateway sends to a route's servers when the route asks for
//! it (`proxy_protocol = "v1"` or `"v2"`, docs/protocol.md §1): before the first byte of the
//! XMPP stream, and before TLS on a direct-TLS endpoint, it names the browser as the client
//! the server should see. The header is encoded by the `proxy-header` crate, which also reads
//! the headers trusted proxies send us.

use std::net::{IpAddr, SocketAddr};

use proxy_header::{ProxiedAddress, ProxyHeader};

use crate::config::ProxyProtocol;

/// The header for a connection of `client` (the browser; port 0 when it is not known) that
/// the gateway relays from its address `gateway`. `None` for a route without the protocol.
///
/// Both addresses of a header are of one family: when only one of them is IPv6, the IPv4
/// one is written as IPv4-mapped IPv6.
pub fn for_client(
    version: ProxyProtocol,
    client: SocketAddr,
    gateway: SocketAddr,
) -> Option<Vec<u8>> {
    let (source, destination) = same_family(client, gateway);
    encode(
        version,
        &ProxyHeader::with_address(ProxiedAddress::stream(source, destination)),
    )
}

/// The header for a connection the gateway makes on its own behalf (a health check or probe): v2's
/// LOCAL command, v1's `UNKNOWN`, which tell the receiver to use the socket's own addresses.
pub fn for_gateway(version: ProxyProtocol) -> Option<Vec<u8>> {
    encode(version, &ProxyHeader::with_local())
}

fn encode(version: ProxyProtocol, header: &ProxyHeader<'_>) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let encoded = match version {
        ProxyProtocol::Off => return None,
        ProxyProtocol::V1 => header.encode_v1(&mut buf),
        ProxyProtocol::V2 => header.encode_v2(&mut buf),
    };
    // A header with addresses of one family and no TLVs always encodes.
    encoded.ok()?;
    Some(buf)
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |s: SocketAddr| match s.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    let a = SocketAddr::new(a.ip().to_canonical(), a.port());
    let b = SocketAddr::new(b.ip().to_canonical(), b.port());
    if a.is_ipv4() == b.is_ipv4() {
        (a, b)
    } else {
        (v6(a), v6(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_header::ParseConfig;
    use std::net::Ipv6Addr;

    fn parse(bytes: &[u8]) -> ProxiedAddress {
        let (header, len) = ProxyHeader::parse(bytes, ParseConfig::default()).unwrap();
        assert_eq!(len, bytes.len(), "the header is all that is written");
        header.proxied_address().cloned().unwrap()
    }

    #[test]
    fn v1_names_the_client_as_source() {
        let client: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let gateway: SocketAddr = "10.0.0.2:51000".parse().unwrap();
        let bytes = for_client(ProxyProtocol::V1, client, gateway).unwrap();
        assert_eq!(
            bytes,
            b"PROXY TCP4 198.51.100.7 10.0.0.2 40123 51000\r\n".to_vec()
        );
        let parsed = parse(&bytes);
        assert_eq!((parsed.source, parsed.destination), (client, gateway));
    }

    #[test]
    fn v2_names_the_client_as_source() {
        let client: SocketAddr = "[2001:db8::7]:40123".parse().unwrap();
        let gateway: SocketAddr = "[2001:db8::2]:51000".parse().unwrap();
        let bytes = for_client(ProxyProtocol::V2, client, gateway).unwrap();
        assert!(bytes.starts_with(b"\r\n\r\n\0\r\nQUIT\n"));
        let parsed = parse(&bytes);
        assert_eq!((parsed.source, parsed.destination), (client, gateway));
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let client: SocketAddr = "198.51.100.7:40123".parse().unwrap();
        let gateway = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 51000);
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let parsed = parse(&for_client(version, client, gateway).unwrap());
            assert_eq!(parsed.source.ip().to_canonical(), client.ip());
            assert_eq!(parsed.source.port(), 40123);
            assert!(parsed.source.is_ipv6() && parsed.destination.is_ipv6());
        }
    }

    #[test]
    fn off_sends_nothing_and_probes_say_local() {
        let any: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(for_client(ProxyProtocol::Off, any, any).is_none());
        assert!(for_gateway(ProxyProtocol::Off).is_none());
        assert_eq!(
            for_gateway(ProxyProtocol::V1).unwrap(),
            b"PROXY UNKNOWN\r\n".to_vec()
        );
        let v2 = for_gateway(ProxyProtocol::V2).unwrap();
        let (header, _) = ProxyHeader::parse(&v2, ParseConfig::default()).unwrap();
        assert!(header.proxied_address().is_none());
    }
}
