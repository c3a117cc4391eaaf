//! The PROXY protocol toward the server (docs/protocol.md §1, `route.proxy_protocol`): before
//! the stream header the gateway names the browser, its address and port, as the client the
//! server should see; a route without it sends the stream header first. A real HAProxy reads
//! these headers in tests/interop/proxy-protocol.test.mjs.

mod common;

use std::net::SocketAddr;

use common::bosh::BoshClient;
use common::*;
use proxy_header::{ParseConfig, ProxyHeader};
use tokio::sync::mpsc;
use xmpp_gateway::config::{Config, ProxyProtocol, TlsPolicy, TrustedProxies};

/// A server that reports what came before the stream header (the PROXY header, as the bytes
/// of a v1 line or of a v2 header), then serves the stream.
async fn upstream(
    version: ProxyProtocol,
) -> (
    SocketAddr,
    UpstreamHandle<()>,
    mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (addr, handle) = ScriptedUpstream::start(move |mut conn, _| {
        let tx = tx.clone();
        async move {
            let before = match version {
                ProxyProtocol::Off => Vec::new(),
                ProxyProtocol::V1 => conn.read_until("\r\n").await.into_bytes(),
                ProxyProtocol::V2 => {
                    let mut head = conn.read_bytes(16).await;
                    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
                    head.extend(conn.read_bytes(len).await);
                    head
                }
            };
            let _ = tx.send(before);
            // The stream header comes next, unchanged.
            conn.answer_stream("s-proxy", FEATURES_SASL).await;
            conn.read_to_eof().await;
        }
    })
    .await;
    (addr, handle, rx)
}

fn gateway_config(up: SocketAddr, version: ProxyProtocol) -> Config {
    let mut r = route(DOMAIN, &[up], TlsPolicy::Disabled);
    r.proxy_protocol = version;
    config(vec![r])
}

async fn header_of(rx: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<u8> {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("the server saw a connection in time")
        .expect("the server is running")
}

#[tokio::test]
async fn v1_names_the_websocket_browser_and_its_port_before_the_stream() {
    let (up, _up, mut rx) = upstream(ProxyProtocol::V1).await;
    let gw = start_gateway(gateway_config(up, ProxyProtocol::V1)).await;
    let (ws, open, _) = gw.open_session().await;
    assert_eq!(
        parse_standalone(&open).attr("id"),
        Some("s-proxy"),
        "{open}"
    );
    let line = String::from_utf8(header_of(&mut rx).await).unwrap();
    let fields: Vec<&str> = line.trim_end().split(' ').collect();
    let browser = ws.local_addr();
    assert_eq!(
        fields[..5],
        [
            "PROXY",
            "TCP4",
            &browser.ip().to_string(),
            "127.0.0.1",
            &browser.port().to_string()
        ],
        "{line:?}"
    );
    assert!(fields[5].parse::<u16>().is_ok(), "{line:?}");
}

#[tokio::test]
async fn v1_names_the_bosh_browser_before_the_stream() {
    let (up, _up, mut rx) = upstream(ProxyProtocol::V1).await;
    let gw = start_gateway(gateway_config(up, ProxyProtocol::V1)).await;
    let conn = BoshClient::send_session_request(gw.addr, " wait='5' hold='1'").await;
    let browser = conn.local_addr();
    let line = String::from_utf8(header_of(&mut rx).await).unwrap();
    let expected = format!("PROXY TCP4 {} 127.0.0.1 {} ", browser.ip(), browser.port());
    assert!(
        line.starts_with(&expected),
        "{line:?}, expected {expected:?}…"
    );
}

// A client named by a trusted proxy's X-Forwarded-For has no known port: the header says 0.
#[tokio::test]
async fn v2_names_the_client_a_trusted_proxy_forwarded() {
    let (up, _up, mut rx) = upstream(ProxyProtocol::V2).await;
    let mut c = gateway_config(up, ProxyProtocol::V2);
    c.limits.trusted_proxies = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
    let gw = start_gateway(c).await;
    let mut ws = WsClient::connect(gw.addr, &[("X-Forwarded-For", "203.0.113.9")]).await;
    ws.open(DOMAIN).await;
    let bytes = header_of(&mut rx).await;
    let (header, len) = ProxyHeader::parse(&bytes, ParseConfig::default()).unwrap();
    assert_eq!(len, bytes.len());
    let addr = header
        .proxied_address()
        .expect("a PROXY command, not LOCAL");
    assert_eq!(addr.source, "203.0.113.9:0".parse().unwrap());
    assert_eq!(addr.destination.ip().to_string(), "127.0.0.1");
}

#[tokio::test]
async fn without_proxy_protocol_the_stream_header_comes_first() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (up, _handle) = ScriptedUpstream::start(move |mut conn, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(conn.read_bytes(1).await);
            conn.answer_stream("s-plain", FEATURES_SASL).await;
            conn.read_to_eof().await;
        }
    })
    .await;
    let gw = start_gateway(gateway_config(up, ProxyProtocol::Off)).await;
    let _session = gw.open_session().await;
    assert_eq!(header_of(&mut rx).await, b"<");
}

// The readiness probe's connection is the gateway's own: v2's LOCAL command, v1's UNKNOWN.
#[tokio::test]
async fn the_health_check_says_it_is_the_gateways_own_connection() {
    for (version, expected) in [
        (ProxyProtocol::V1, b"PROXY UNKNOWN\r\n".to_vec()),
        (ProxyProtocol::V2, {
            let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            v2.extend([0x20, 0x00, 0x00, 0x00]);
            v2
        }),
    ] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = expected.len();
        let (up, _handle) = ScriptedUpstream::start(move |mut conn, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn.read_bytes(n).await);
                conn.answer_stream("s-check", FEATURES_SASL).await;
                conn.read_until(STREAM_END).await;
            }
        })
        .await;
        let mut config = gateway_config(up, version);
        config.routes[0].check_interval_secs = 60;
        let gw = start_gateway(config).await;
        let ready = http_get(gw.admin_addr, "/readyz", &[]).await;
        assert_eq!(ready.status, 200, "{ready:?}");
        let got = header_of(&mut rx).await;
        assert_eq!(got, expected, "{version:?}");
        let (header, len) = ProxyHeader::parse(&got, ParseConfig::default()).unwrap();
        assert_eq!(len, got.len(), "{version:?}: {got:?}");
        assert!(header.proxied_address().is_none(), "{version:?}: {got:?}");
    }
}
