use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(ranges: &[&str]) -> TrustedProxies {
    TrustedProxies::parse(ranges).unwrap()
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in lines {
        h.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    h
}

/// The client of a request from `peer` with these header lines, trusting the usual proxies.
fn client(peer: &str, lines: &[(&str, &str)]) -> IpAddr {
    let t = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48", "127.0.0.1"]);
    client_of(&headers(lines), ip(peer), &t)
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_its_headers_say() {
    let lines = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=198.51.100.1"),
    ];
    assert_eq!(client("192.0.2.1", &lines), ip("192.0.2.1"));
}

#[test]
fn nobody_is_trusted_by_default() {
    let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
    let peer = ip("127.0.0.1");
    assert_eq!(client_of(&h, peer, &TrustedProxies::default()), peer);
}

#[test]
fn a_trusted_peer_without_headers_is_the_client() {
    assert_eq!(client("10.1.1.1", &[]), ip("10.1.1.1"));
}

#[test]
fn x_forwarded_for_from_a_trusted_peer_names_the_client() {
    let lines = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn spoofed_left_most_entries_are_not_believed() {
    // The client sent "1.1.1.1, 2.2.2.2" itself; the edge proxy appended what it saw.
    let lines = [("x-forwarded-for", "1.1.1.1, 2.2.2.2, 203.0.113.9")];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
    let lines = [("forwarded", "for=1.1.1.1, for=203.0.113.9")];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn several_trusted_hops_are_walked_from_the_right() {
    let lines = [(
        "x-forwarded-for",
        "6.6.6.6, 203.0.113.9, 10.0.0.7, 10.0.0.8",
    )];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
    // The same, split over several header lines, in order.
    let lines = [
        ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
        ("x-forwarded-for", "10.0.0.7"),
        ("x-forwarded-for", "127.0.0.1"),
    ];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn a_list_of_trusted_proxies_only_ends_at_its_left_most() {
    let lines = [("x-forwarded-for", "10.0.0.5, 10.0.0.6")];
    assert_eq!(client("10.1.1.1", &lines), ip("10.0.0.5"));
}

#[test]
fn forwarded_wins_over_x_forwarded_for() {
    let lines = [
        ("x-forwarded-for", "198.51.100.77"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn forwarded_without_for_leaves_it_to_x_forwarded_for() {
    let lines = [
        ("forwarded", "proto=https;host=chat.example"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn forwarded_ipv6_is_quoted_with_brackets_and_maybe_a_port() {
    let lines = [("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")];
    assert_eq!(client("10.1.1.1", &lines), ip("2001:db8:cafe::17"));
    let lines = [("forwarded", "For=\"[2001:db8:cafe::17]\";proto=https")];
    assert_eq!(client("10.1.1.1", &lines), ip("2001:db8:cafe::17"));
    let lines = [("forwarded", "for=\"[2001:db8:cafe::17]:_abc\"")];
    assert_eq!(client("10.1.1.1", &lines), ip("2001:db8:cafe::17"));
}

#[test]
fn forwarded_ipv4_with_a_port_and_a_trusted_ipv6_hop() {
    let lines = [(
        "forwarded",
        "for=192.0.2.43, for=\"198.51.100.17:47011\";by=203.0.113.60, for=\"[2001:db8:ffff::1]\"",
    )];
    assert_eq!(client("10.1.1.1", &lines), ip("198.51.100.17"));
}

#[test]
fn quoted_separators_do_not_split_elements() {
    let lines = [(
        "forwarded",
        "for=6.6.6.6, for=203.0.113.9;ext=\"a, b; c=\\\"d\\\"\"",
    )];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn ipv6_in_x_forwarded_for_bare_or_bracketed() {
    let lines = [("x-forwarded-for", "2001:db8::1")];
    assert_eq!(client("10.1.1.1", &lines), ip("2001:db8::1"));
    let lines = [("x-forwarded-for", "[2001:db8::2]:443, 10.0.0.9")];
    assert_eq!(client("10.1.1.1", &lines), ip("2001:db8::2"));
    let lines = [("x-forwarded-for", "198.51.100.4:5678")];
    assert_eq!(client("10.1.1.1", &lines), ip("198.51.100.4"));
}

#[test]
fn a_trusted_ipv6_peer_and_ipv4_mapped_addresses() {
    let lines = [("x-forwarded-for", "::ffff:203.0.113.9")];
    assert_eq!(client("2001:db8:ffff::2", &lines), ip("203.0.113.9"));
    // A dual-stack listener reports an IPv4 proxy as IPv4-mapped.
    let lines = [("x-forwarded-for", "203.0.113.9")];
    assert_eq!(client("::ffff:10.1.1.1", &lines), ip("203.0.113.9"));
    // An untrusted mapped peer comes out as IPv4 too.
    assert_eq!(client("::ffff:192.0.2.1", &lines), ip("192.0.2.1"));
}

#[test]
fn an_obfuscated_or_unknown_hop_ends_the_walk_at_the_nearest_trusted_one() {
    // The edge proxy hides its client: what the client wrote to the left stays unbelieved.
    let lines = [("forwarded", "for=6.6.6.6, for=_hidden")];
    assert_eq!(client("10.1.1.1", &lines), ip("10.1.1.1"));
    let lines = [("forwarded", "for=6.6.6.6, for=unknown, for=10.0.0.3")];
    assert_eq!(client("10.1.1.1", &lines), ip("10.0.0.3"));
    let lines = [("x-forwarded-for", "6.6.6.6, unknown")];
    assert_eq!(client("10.1.1.1", &lines), ip("10.1.1.1"));
}

#[test]
fn garbage_is_never_an_address() {
    for garbage in [
        "for=",
        "for=\"[2001:db8::1\"",
        "for=\"2001:db8::1]\"",
        "for=\"[2001:db8::1]:99999\"",
        "for=\"[2001:db8::1]x\"",
        "for=1.2.3.4:port",
        "for=\"1.2.3.4",
        "for=chat.example",
        "for=1.2.3.4;for=5.6.7.8",
        "by=10.0.0.1, for=6.6.6.6;by=1;for=7.7.7.7",
    ] {
        let lines = [("forwarded", garbage)];
        assert_eq!(client("10.1.1.1", &lines), ip("10.1.1.1"), "{garbage}");
    }
    for garbage in [
        "nonsense",
        "1.2.3.4.5",
        "fe80::1%eth0",
        "\"1.2.3.4\"",
        ",,,",
    ] {
        let lines = [("x-forwarded-for", garbage)];
        assert_eq!(client("10.1.1.1", &lines), ip("10.1.1.1"), "{garbage}");
    }
}

#[test]
fn unreadable_header_bytes_end_the_walk() {
    let mut h = HeaderMap::new();
    h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.append(
        "x-forwarded-for",
        HeaderValue::from_bytes(b"203.0.113.\xff").unwrap(),
    );
    let t = trusted(&["10.0.0.0/8"]);
    assert_eq!(client_of(&h, ip("10.1.1.1"), &t), ip("10.1.1.1"));
}

#[test]
fn empty_list_elements_are_skipped() {
    let lines = [("x-forwarded-for", "203.0.113.9, , 10.0.0.7,")];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
    let lines = [("forwarded", ", for=203.0.113.9 ,,")];
    assert_eq!(client("10.1.1.1", &lines), ip("203.0.113.9"));
}

#[test]
fn nodes_parse_as_rfc_7239_writes_them() {
    assert_eq!(parse_node("192.0.2.43"), Hop::Addr(ip("192.0.2.43")));
    assert_eq!(parse_node("192.0.2.43:80"), Hop::Addr(ip("192.0.2.43")));
    assert_eq!(parse_node("[::1]:80"), Hop::Addr(ip("::1")));
    assert_eq!(parse_node("_SEVKISEK"), Hop::Undisclosed);
    assert_eq!(parse_node("unknown"), Hop::Undisclosed);
    assert_eq!(parse_node("192.0.2.43:"), Hop::Undisclosed);
    assert_eq!(parse_node("192.0.2.43:_"), Hop::Undisclosed);
}
