use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A v2 header: `command` 0x20 (LOCAL) or 0x21 (PROXY), TCP over the family of `src`.
fn v2(command: u8, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(command);
    let mut addrs = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            addrs.extend_from_slice(&s.ip().octets());
            addrs.extend_from_slice(&d.ip().octets());
        }
        _ => unreachable!("one family"),
    }
    addrs.extend_from_slice(&src.port().to_be_bytes());
    addrs.extend_from_slice(&dst.port().to_be_bytes());
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(&addrs);
    h
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn sniff_tells_headers_from_http_by_the_first_bytes() {
    assert_eq!(sniff(b"PROXY TCP4 "), Sniff::Header);
    assert_eq!(sniff(V2_SIGNATURE), Sniff::Header);
    for partial in [&b"P"[..], b"PROX", b"PROXY", b"\r", b"\r\n\r\n\0\r\nQUI"] {
        assert_eq!(sniff(partial), Sniff::NeedMore, "{partial:?}");
    }
    // Methods beginning with P, the HTTP/2 preface, and everything else.
    for plain in [
        &b"POST /"[..],
        b"PUT ",
        b"PRI * HTTP/2.0",
        b"GET /",
        b"PROXYX",
        b"\r\n\r\n\0x",
    ] {
        assert_eq!(sniff(plain), Sniff::Plain, "{plain:?}");
    }
}

#[test]
fn v1_headers_name_their_tcp_source() {
    let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /";
    assert_eq!(
        parse(h).unwrap(),
        Some((Some(sa("203.0.113.7:51234")), h.len() - 5))
    );
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n";
    assert_eq!(
        parse(h).unwrap(),
        Some((Some(sa("[2001:db8::7]:4711")), h.len()))
    );
    // UNKNOWN: the proxy's own connection.
    let h = b"PROXY UNKNOWN\r\n";
    assert_eq!(parse(h).unwrap(), Some((None, h.len())));
}

#[test]
fn v2_headers_name_their_tcp_source_and_local_names_none() {
    let h = v2(0x21, sa("203.0.113.7:51234"), sa("10.0.0.1:443"));
    assert_eq!(
        parse(&h).unwrap(),
        Some((Some(sa("203.0.113.7:51234")), h.len()))
    );
    let h = v2(0x21, sa("[2001:db8::7]:4711"), sa("[2001:db8::1]:443"));
    assert_eq!(
        parse(&h).unwrap(),
        Some((Some(sa("[2001:db8::7]:4711")), h.len()))
    );
    let h = v2(0x20, sa("203.0.113.7:51234"), sa("10.0.0.1:443"));
    assert_eq!(parse(&h).unwrap(), Some((None, h.len())));
}

#[test]
fn incomplete_headers_ask_for_more() {
    let h = v2(0x21, sa("203.0.113.7:51234"), sa("10.0.0.1:443"));
    for cut in [12, 15, 16, h.len() - 1] {
        assert_eq!(parse(&h[..cut]).unwrap(), None, "{cut}");
    }
    assert_eq!(
        parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r").unwrap(),
        None
    );
}

#[test]
fn malformed_and_oversized_headers_are_refused() {
    for bad in [
        &b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n"[..],
        b"PROXY TCP5 1.2.3.4 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 10.0.0.1 1 99999\r\n",
        b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\rX",
    ] {
        assert!(
            matches!(parse(bad), Err(ProxyHeaderError::Malformed)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // v1 without its end within 107 bytes.
    let mut long = b"PROXY TCP4 1.2.3.4 ".to_vec();
    long.resize(120, b'1');
    assert!(matches!(parse(&long), Err(ProxyHeaderError::Malformed)));
    // v2 with a version other than 2.
    let mut h = v2(0x21, sa("203.0.113.7:1"), sa("10.0.0.1:2"));
    h[12] = 0x31;
    assert!(matches!(parse(&h), Err(ProxyHeaderError::Malformed)));
    // v2 announcing more than the bound: refused before it is read.
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&(MAX_HEADER_BYTES as u16).to_be_bytes());
    assert!(matches!(parse(&h), Err(ProxyHeaderError::TooLong)));
}

#[tokio::test]
async fn prefixed_reads_the_prefix_then_the_stream() {
    let inner: &[u8] = b" world";
    let mut s = Prefixed::new(inner, Some(Bytes::from_static(b"hello")));
    let mut small = [0u8; 3];
    s.read_exact(&mut small).await.unwrap();
    assert_eq!(&small, b"hel");
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "lo world");
    assert!(Prefixed::new(inner, Some(Bytes::new())).prefix.is_none());
}

/// A connected pair on loopback: (client side, accepted side).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    (client, server)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn accept_hands_on_what_follows_the_header_byte_for_byte() {
    let (mut client, server) = pair().await;
    let mut sent = v2(0x21, sa("[2001:db8::7]:4711"), sa("[::1]:443"));
    sent.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    client.write_all(&sent).await.unwrap();
    client.shutdown().await.unwrap();
    let (mut stream, source) = accept(server, SECOND).await.unwrap();
    assert_eq!(source, Some(sa("[2001:db8::7]:4711")));
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

#[tokio::test]
async fn accept_reads_a_header_sent_in_pieces() {
    let (mut client, server) = pair().await;
    let header = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n";
    let write = tokio::spawn(async move {
        for piece in [
            &header[..1],
            &header[1..9],
            &header[9..],
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            client.write_all(piece).await.unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    let (mut stream, source) = accept(server, SECOND).await.unwrap();
    assert_eq!(source, Some(sa("203.0.113.7:51234")));
    let mut client = write.await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn accept_passes_a_plain_connection_untouched() {
    for first in [
        &b"POST /http-bind HTTP/1.1\r\n"[..],
        b"P",
        b"GET / HTTP/1.1\r\n",
    ] {
        let (mut client, server) = pair().await;
        client.write_all(first).await.unwrap();
        client.write_all(b"OST / HTTP/1.1\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let (mut stream, source) = accept(server, SECOND).await.unwrap();
        assert_eq!(source, None);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        let mut expected = first.to_vec();
        expected.extend_from_slice(b"OST / HTTP/1.1\r\n");
        assert_eq!(all, expected);
    }
}

#[tokio::test]
async fn accept_gives_up_at_the_deadline_and_on_a_closed_connection() {
    let (mut client, server) = pair().await;
    client.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    let late = accept(server, Duration::from_millis(200)).await;
    assert!(matches!(late, Err(ProxyHeaderError::Timeout)), "{late:?}");

    let (client, server) = pair().await;
    drop(client);
    let closed = accept(server, SECOND).await;
    assert!(
        matches!(closed, Err(ProxyHeaderError::Closed)),
        "{closed:?}"
    );
}
