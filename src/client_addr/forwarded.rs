//! Who a request says its client is: RFC 7239 `Forwarded: for=`, or without it the de-facto
//! `X-Forwarded-For`. Each proxy on the way appends the address it received the request from,
//! so the list is read from the right: every entry a trusted proxy wrote is skipped, and the
//! first one that is not a trusted proxy's address is the client. Whatever lies to the left of
//! it was written by the client itself (or by proxies nobody vouches for) and proves nothing.
//!
//! Both headers are believed only when the peer that sent the request is a trusted proxy;
//! from anyone else they are ignored. A trusted edge proxy must therefore drop both headers as
//! the client sends them (deploy/haproxy/haproxy.cfg does): `Forwarded` is read first.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::FORWARDED;
use http::HeaderMap;

use crate::config::TrustedProxies;

/// The de-facto header of proxies that predate RFC 7239.
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// What one proxy hop says about whom it received the request from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// An address.
    Addr(IpAddr),
    /// Not an address: `unknown`, an obfuscated identifier (RFC 7239 §6.3, `_hidden`), an
    /// element without `for`, or garbage. Nothing to its left can be vouched for.
    Undisclosed,
}

/// The client's address for a request that `http_peer` sent: the peer itself unless it is a
/// trusted proxy; otherwise the right-most entry of `Forwarded` (or else `X-Forwarded-For`)
/// that is not a trusted proxy's address.
pub fn client_of(headers: &HeaderMap, http_peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let peer = http_peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = forwarded_hops(headers).unwrap_or_else(|| x_forwarded_for_hops(headers));
    nearest_untrusted(&hops, peer, trusted)
}

/// Walks `hops` (in header order, nearest proxy last) from the right, starting at the trusted
/// `peer`: the first address that is not trusted is the client. An [`Hop::Undisclosed`] ends
/// the walk at the nearest trusted hop, since what lies beyond it is unknown; a list of
/// trusted addresses only ends at its left-most one.
pub fn nearest_untrusted(hops: &[Hop], peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match *hop {
            Hop::Addr(ip) => {
                let ip = ip.to_canonical();
                if !trusted.contains(ip) {
                    return ip;
                }
                nearest = ip;
            }
            Hop::Undisclosed => return nearest,
        }
    }
    nearest
}

/// The hops of the `Forwarded` header lines, in order, when any element of them has a `for`
/// parameter (or cannot be read); `None` sends the caller to `X-Forwarded-For`.
pub fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut has_for = false;
    for value in headers.get_all(FORWARDED) {
        let Ok(text) = value.to_str() else {
            has_for = true;
            hops.push(Hop::Undisclosed);
            continue;
        };
        for element in split_outside_quotes(text, b',') {
            if element.trim().is_empty() {
                continue; // RFC 9110 §5.6.1: empty list elements do not count
            }
            let mut fors = 0;
            let mut hop = Hop::Undisclosed;
            for pair in split_outside_quotes(element, b';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    fors += 1;
                    hop = parse_node(&unquote(value.trim()));
                }
            }
            has_for |= fors > 0;
            // RFC 7239 §4: a parameter occurs at most once per element.
            hops.push(if fors == 1 { hop } else { Hop::Undisclosed });
        }
    }
    has_for.then_some(hops)
}

/// The hops of the `X-Forwarded-For` header lines, in order.
pub fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        match value.to_str() {
            Ok(text) => hops.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(parse_node),
            ),
            Err(_) => hops.push(Hop::Undisclosed),
        }
    }
    hops
}

/// One node (RFC 7239 §6): `192.0.2.43`, `192.0.2.43:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`; a bare `2001:db8::1` too, as `X-Forwarded-For` writes it. Ports
/// (numeric or obfuscated) are checked and dropped.
pub fn parse_node(node: &str) -> Hop {
    let node = node.trim();
    if let Some(rest) = node.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Hop::Undisclosed;
        };
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
        return match ip.parse::<Ipv6Addr>() {
            Ok(ip) if port_ok => Hop::Addr(IpAddr::V6(ip)),
            _ => Hop::Undisclosed,
        };
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Hop::Addr(ip);
    }
    match node.rsplit_once(':') {
        Some((ip, port)) if valid_port(port) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => Hop::Addr(IpAddr::V4(ip)),
            Err(_) => Hop::Undisclosed,
        },
        _ => Hop::Undisclosed,
    }
}

/// RFC 7239 §6: `node-port = port / obfport`, `obfport = "_" 1*(ALPHA / DIGIT / "." / "_" /
/// "-")`.
fn valid_port(port: &str) -> bool {
    let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let obfuscated = port.len() > 1
        && port.starts_with('_')
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    (digits && port.parse::<u16>().is_ok()) || obfuscated
}

/// A `quoted-string` (RFC 9110 §5.6.4) without its quotes and escapes; any other value as it
/// is. An unterminated quote is left in place, so the value parses as nothing.
fn unquote(value: &str) -> Cow<'_, str> {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .filter(|_| value.len() >= 2)
    else {
        return Cow::Borrowed(value);
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Splits `text` at `sep` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
#[path = "forwarded_tests.rs"]
mod tests;
