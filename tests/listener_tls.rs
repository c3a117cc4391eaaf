//! TLS on the public listener (docs/protocol.md §7): `https://` and `wss://` straight to the
//! gateway, its certificate reread on reload for new connections, and a handshake that never
//! comes cut at the header deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use xmpp_gateway::config::Config;

/// Files holding the listener's certificate and key, and the CA that signed it.
struct ListenerPki {
    ca: String,
    cert: TempFile,
    key: TempFile,
}

fn listener_pki() -> ListenerPki {
    let (ca, cert, key) = listener_certificate("localhost");
    ListenerPki {
        ca,
        cert: TempFile::new("pem", &cert),
        key: TempFile::new("pem", &key),
    }
}

fn tls_config(up: std::net::SocketAddr, pki: &ListenerPki) -> Config {
    let mut c = plain_config(up);
    c.tls.cert_file = Some(pki.cert.0.clone());
    c.tls.key_file = Some(pki.key.0.clone());
    c.limits.header_read_timeout_secs = 1;
    c
}

/// A TLS connection to the gateway trusting only `ca_pem`, asking for `alpn`.
async fn connect_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
}

async fn echo_upstream() -> (std::net::SocketAddr, UpstreamHandle<String>) {
    ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        let got = conn.read_until("</message>").await;
        conn.write("<message id='back'/>").await;
        got
    })
    .await
}

// wss:// straight to the gateway: the upgrade, the stream, a stanza each way.
#[tokio::test]
async fn websocket_over_the_listeners_tls_relays_both_ways() {
    let (up, mut handle) = echo_upstream().await;
    let pki = listener_pki();
    let gw = start_gateway(tls_config(up, &pki)).await;
    let tls = connect_tls(gw.addr, &pki.ca, &[b"http/1.1"]).await.unwrap();
    let mut req = format!("wss://localhost:{}/xmpp-websocket", gw.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text(open_frame(DOMAIN))).await.unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            other => panic!("no <open/> and features: {other:?}"),
        }
    }
    ws.send(Message::text(
        "<message xmlns='jabber:client' to='bob@example.test' id='out'></message>",
    ))
    .await
    .unwrap();
    assert!(handle.finished().await.contains("id='out'"));
    match tokio::time::timeout(TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => assert!(t.contains("id='back'"), "{t}"),
        other => panic!("no stanza from the server: {other:?}"),
    }
}

/// One HTTP/1.1 request over `tls`; returns the whole response as text.
async fn https_request(mut tls: TlsStream<TcpStream>, request: &str) -> String {
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

// https://: a BOSH session request is answered, and host-meta announces the secure URLs.
#[tokio::test]
async fn bosh_and_host_meta_over_the_listeners_tls() {
    let (up, _handle) = echo_upstream().await;
    let pki = listener_pki();
    let gw = start_gateway(tls_config(up, &pki)).await;
    let body = format!(
        "<body xmlns='http://jabber.org/protocol/httpbind' to='{DOMAIN}' rid='1' wait='5' hold='1' \
         xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
    );
    let request = format!(
        "POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let tls = connect_tls(gw.addr, &pki.ca, &[b"http/1.1"]).await.unwrap();
    let answer = https_request(tls, &request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(" sid='"), "{answer}");

    let tls = connect_tls(gw.addr, &pki.ca, &[b"http/1.1"]).await.unwrap();
    let meta = https_request(
        tls,
        "GET /.well-known/host-meta HTTP/1.1\r\nHost: chat.example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        meta.contains("wss://chat.example.test/xmpp-websocket"),
        "{meta}"
    );
    assert!(
        meta.contains("https://chat.example.test/http-bind"),
        "{meta}"
    );

    // HTTP/2 is offered to clients that ask for it.
    let tls = connect_tls(gw.addr, &pki.ca, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

// docs/protocol.md §7: a reload (SIGHUP) rereads the certificate; new connections get the new
// one, and one that is not valid is refused with the running one kept.
#[tokio::test]
async fn a_reload_serves_the_new_certificate_to_new_connections() {
    let (up, _handle) = echo_upstream().await;
    let old = listener_pki();
    let gw = start_gateway(tls_config(up, &old)).await;
    connect_tls(gw.addr, &old.ca, &[])
        .await
        .expect("the first certificate");

    let new = listener_pki();
    gw.gateway.reload(tls_config(up, &new)).expect("reload");
    connect_tls(gw.addr, &new.ca, &[])
        .await
        .expect("the renewed certificate");
    assert!(
        connect_tls(gw.addr, &old.ca, &[]).await.is_err(),
        "the old certificate is still served"
    );

    let broken = TempFile::new("pem", "not a certificate");
    let mut bad = tls_config(up, &new);
    bad.tls.cert_file = Some(broken.0.clone());
    assert!(
        gw.gateway.reload(bad).is_err(),
        "a broken certificate is refused"
    );
    connect_tls(gw.addr, &new.ca, &[])
        .await
        .expect("the running certificate stays");
}

// docs/protocol.md §7: the handshake has the header deadline; plain HTTP is not served.
#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_cut() {
    let (up, _handle) = echo_upstream().await;
    let pki = listener_pki();
    let gw = start_gateway(tls_config(up, &pki)).await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(4), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {closed:?}"
    );

    let mut plain = TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("HTTP/1.1 200"));
}
