//! The upstream side through real sockets: endpoint fallback, connect timeouts, and STARTTLS
//! done by the gateway against a CA generated at test time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use xmpp_gateway::config::TlsPolicy;

// docs/protocol.md §1/§3: a server that accepts TCP but never answers the stream header is given up
// on after the connect timeout, and the client learns it as remote-connection-failed.
#[tokio::test]
async fn stalled_upstream_is_remote_connection_failed_after_connect_timeout() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.read_stream_header().await;
        // Never answer; hold the socket until the gateway gives up on it.
        conn.read_to_eof().await
    })
    .await;
    let mut c = plain_config(up);
    c.limits.connect_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let mut ws = gw.ws().await;
    let asked = Instant::now();
    ws.send(&open_frame(DOMAIN)).await;
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "gave up after {waited:?}, expected about one second"
    );
    assert_eq!(
        handle.finished().await,
        "",
        "the stalled socket is closed by the gateway"
    );
}

// docs/protocol.md §1: a static list of endpoints is tried in order.
#[tokio::test]
async fn dead_first_endpoint_falls_back_to_the_second() {
    let dead = dead_port().await;
    let (up, handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-fallback", FEATURES_SASL).await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(config(vec![route(
        DOMAIN,
        &[dead, up],
        TlsPolicy::Disabled,
    )]))
    .await;
    let (_ws, open, _) = gw.open_session().await;
    assert_eq!(
        parse_standalone(&open).attr("id"),
        Some("s-fallback"),
        "{open}"
    );
    assert_eq!(handle.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// STARTTLS (RFC 6120 §5)
// ---------------------------------------------------------------------------------------------

const TLS_MESSAGE: &str =
    "<message xmlns='jabber:client' to='romeo@example.test' id='t1'><body>sealed ✉</body></message>";

// docs/protocol.md §1: the gateway itself does STARTTLS and verifies the certificate against the
// configured CA; clients never see <starttls/>, and stanzas then travel over TLS.
#[tokio::test]
async fn required_starttls_is_done_by_the_gateway_and_hidden_from_the_client() {
    let pki = TestPki::new(DOMAIN);
    let acceptor = pki.acceptor.clone();
    let (up, mut handle) = ScriptedUpstream::start(move |mut conn, _| {
        let acceptor = acceptor.clone();
        async move {
            conn.answer_stream("pre-tls", FEATURES_STARTTLS_REQUIRED)
                .await;
            let starttls = conn.read_until("/>").await;
            assert_eq!(
                starttls,
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
            );
            conn.write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await;
            let mut tls = conn
                .start_tls(&acceptor)
                .await
                .expect("TLS handshake with the gateway");
            let header = tls.answer_stream("post-tls", FEATURES_SASL).await;
            let message = tls.read_until("</message>").await;
            tls.write(
                "<message from='romeo@example.test' id='t2'><body>sealed reply</body></message>",
            )
            .await;
            let rest = tls.read_to_eof().await;
            (header, message, rest)
        }
    })
    .await;
    let mut c = config(vec![route(DOMAIN, &[up], TlsPolicy::Required)]);
    c.upstream_ca = Some(pki.ca_file.0.clone());
    let gw = start_gateway(c).await;

    let (mut ws, open, features) = gw.open_session().await;
    assert_eq!(
        parse_standalone(&open).attr("id"),
        Some("post-tls"),
        "only the post-TLS stream is shown: {open}"
    );
    assert!(!features.contains("starttls"), "{features}");
    assert!(features.contains(">SCRAM-SHA-1<"), "{features}");
    assert!(!features.contains("-PLUS"), "{features}");

    ws.send(TLS_MESSAGE).await;
    let reply = ws.recv().await;
    assert_eq!(parse_standalone(&reply).attr("id"), Some("t2"), "{reply}");

    ws.vanish();
    let (header, message, rest) = handle.finished().await;
    assert!(
        header.contains(&format!("to='{DOMAIN}'")),
        "a new stream after TLS: {header}"
    );
    assert_eq!(message, TLS_MESSAGE);
    assert_eq!(rest, STREAM_END);
}

// docs/protocol.md §1: with tls = required, a server that offers no STARTTLS gets no session.
#[tokio::test]
async fn tls_required_but_not_offered_is_remote_connection_failed() {
    let pki = TestPki::new(DOMAIN);
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("plain-only", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let mut c = config(vec![route(DOMAIN, &[up], TlsPolicy::Required)]);
    c.upstream_ca = Some(pki.ca_file.0.clone());
    let gw = start_gateway(c).await;
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    let rest = handle.finished().await;
    assert!(
        rest.is_empty() || rest == STREAM_END,
        "nothing but a close in plaintext: {rest:?}"
    );
}

// docs/protocol.md §1: the server certificate is verified; one from an unknown CA gets no session.
#[tokio::test]
async fn upstream_certificate_from_another_ca_is_remote_connection_failed() {
    let pki = TestPki::new(DOMAIN);
    let foreign = TestPki::foreign_acceptor(DOMAIN);
    let (up, mut handle) = ScriptedUpstream::start(move |mut conn, _| {
        let foreign = foreign.clone();
        async move {
            conn.answer_stream("pre-tls", FEATURES_STARTTLS_REQUIRED)
                .await;
            conn.read_until("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await;
            conn.write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await;
            match conn.start_tls(&foreign).await {
                Err(_) => true,
                // The handshake may look complete from this side; the gateway must still
                // not open a stream over it.
                Ok(mut tls) => !tls.read_to_eof().await.contains("<stream:stream"),
            }
        }
    })
    .await;
    let mut c = config(vec![route(DOMAIN, &[up], TlsPolicy::Required)]);
    c.upstream_ca = Some(pki.ca_file.0.clone());
    let gw = start_gateway(c).await;
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    expect_stream_error_before_open(&mut ws, "remote-connection-failed").await;
    assert!(
        handle.finished().await,
        "the gateway refused the untrusted certificate"
    );
}

// docs/protocol.md §3 and §4 ("a server that answered with a stream error has spoken for the
// domain"): a stream error instead of features reaches the client as is, and no other endpoint
// is tried.
#[tokio::test]
async fn stream_error_at_open_reaches_client_and_no_other_endpoint_is_tried() {
    let (first, mut first_handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.read_stream_header().await;
        conn.write(&format!(
            "{}<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>\
             other.example.test</see-other-host></stream:error></stream:stream>",
            server_header("s-err")
        ))
        .await;
        conn.read_to_eof().await
    })
    .await;
    let (second, second_handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-2", FEATURES_SASL).await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(config(vec![route(
        DOMAIN,
        &[first, second],
        TlsPolicy::Disabled,
    )]))
    .await;
    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    let mut frame = ws.recv().await;
    if parse_standalone(&frame).name == "open" {
        frame = ws.recv().await;
    }
    assert_stream_error(&frame, "see-other-host");
    assert!(frame.contains("other.example.test"), "{frame}");
    expect_close_element_and_socket_close(&mut ws).await;
    first_handle.finished().await;
    assert_eq!(
        second_handle.connections(),
        0,
        "the second endpoint was dialled after a stream error"
    );
}
