//! XMPP over WebSocket (RFC 7395) through real sockets: a browser-like client on one side, a
//! scripted XMPP server on the other, the gateway in between.

mod common;

use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------------------
// Upgrade
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §3: upgrade only with subprotocol `xmpp`; without it HTTP 400 with a plain-text
// reason.
#[tokio::test]
async fn upgrade_without_xmpp_subprotocol_is_400_with_plain_text_reason() {
    let gw = start_gateway(config(vec![])).await;
    for extra in ["", "Sec-WebSocket-Protocol: chat\r\n"] {
        let resp = http_raw(gw.addr, &upgrade_request(gw.addr, extra)).await;
        assert_eq!(resp.status, 400, "{extra:?}: {resp:?}");
        let content_type = resp.header("content-type").expect("content-type");
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert!(
            resp.body.contains("xmpp"),
            "reason names the subprotocol: {:?}",
            resp.body
        );
    }
}

// docs/protocol.md §3: with subprotocol `xmpp` the upgrade succeeds and echoes it.
#[tokio::test]
async fn upgrade_with_xmpp_subprotocol_is_101_and_echoes_it() {
    let gw = start_gateway(config(vec![])).await;
    let ws = gw.ws().await;
    assert_eq!(ws.response.status(), 101);
    assert_eq!(ws.response.headers()["sec-websocket-protocol"], "xmpp");

    // Among several offered subprotocols, `xmpp` is the one chosen.
    let resp = http_raw(
        gw.addr,
        &upgrade_request(gw.addr, "Sec-WebSocket-Protocol: chat, xmpp\r\n"),
    )
    .await;
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-protocol"), Some("xmpp"));
}

// docs/protocol.md §3: origin allow-list.
#[tokio::test]
async fn upgrade_from_disallowed_origin_is_403() {
    let mut c = config(vec![]);
    c.websocket.allowed_origins = vec!["https://chat.example.test".into()];
    let gw = start_gateway(c).await;
    let extra = "Sec-WebSocket-Protocol: xmpp\r\nOrigin: https://evil.example\r\n";
    let resp = http_raw(gw.addr, &upgrade_request(gw.addr, extra)).await;
    assert_eq!(resp.status, 403, "{resp:?}");

    let ws = WsClient::connect(gw.addr, &[("Origin", "https://chat.example.test")]).await;
    assert_eq!(ws.response.status(), 101, "an allowed origin upgrades");
}

// ---------------------------------------------------------------------------------------------
// Opening the stream
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §1: only configured domains are served; anything else is host-unknown and nothing
// is dialled (never an open relay).
#[tokio::test]
async fn open_for_unconfigured_domain_is_host_unknown_and_dials_nothing() {
    let (up, handle) = ScriptedUpstream::start(|_conn, _| async {}).await;
    let gw = start_gateway(plain_config(up)).await;
    let mut ws = gw.ws().await;
    ws.send(&open_frame("elsewhere.test")).await;
    expect_stream_error_before_open(&mut ws, "host-unknown").await;
    assert_eq!(
        handle.connections(),
        0,
        "the gateway dialled for an unconfigured domain"
    );
}

// docs/protocol.md §1: the client names the domain; without `to` there is nothing to serve.
#[tokio::test]
async fn open_without_to_is_host_unknown() {
    let (up, handle) = ScriptedUpstream::start(|_conn, _| async {}).await;
    let gw = start_gateway(plain_config(up)).await;
    let mut ws = gw.ws().await;
    ws.send(&format!("<open xmlns='{NS_FRAMING}' version='1.0'/>"))
        .await;
    expect_stream_error_before_open(&mut ws, "host-unknown").await;
    assert_eq!(handle.connections(), 0);
}

// docs/protocol.md §3 (RFC 7395 §3.4): a client that never sends `<open/>` is not kept forever.
#[tokio::test]
async fn client_without_open_gets_connection_timeout() {
    let (up, handle) = ScriptedUpstream::start(|_conn, _| async {}).await;
    let mut c = plain_config(up);
    c.limits.open_timeout_secs = 1;
    let gw = start_gateway(c).await;
    let mut ws = gw.ws().await;
    expect_stream_error_before_open(&mut ws, "connection-timeout").await;
    assert_eq!(handle.connections(), 0);
}

// docs/protocol.md §3: the server's header becomes `<open/>` (from, id, version, xml:lang); then the
// features, standalone (with xmlns:stream), without <starttls/> and without *-PLUS mechanisms
// (docs/protocol.md §1), everything else untouched.
#[tokio::test]
async fn open_relays_server_header_and_filtered_features() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        let header = conn
            .answer_stream("s-4711", FEATURES_STARTTLS_AND_SASL)
            .await;
        conn.read_to_eof().await;
        header
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let mut ws = gw.ws().await;
    ws.send(&format!(
        "<open xmlns='{NS_FRAMING}' to='{DOMAIN}' from='juliet@example.test' version='1.0' xml:lang='de'/>"
    ))
    .await;

    let open = ws.recv().await;
    let root = parse_standalone(&open);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_FRAMING, "open"),
        "{open}"
    );
    assert_eq!(root.attr("from"), Some(DOMAIN), "{open}");
    assert_eq!(root.attr("id"), Some("s-4711"), "{open}");
    assert_eq!(root.attr("version"), Some("1.0"), "{open}");
    assert_eq!(root.attr("xml:lang"), Some("en"), "{open}");

    let features = ws.recv().await;
    let root = parse_standalone(&features);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_STREAM, "features"),
        "{features}"
    );
    assert!(
        features.contains("xmlns:stream="),
        "features declare their own prefix: {features}"
    );
    assert!(
        !features.contains("starttls"),
        "clients never see <starttls/>: {features}"
    );
    assert!(
        !features.contains("SCRAM-SHA-1-PLUS"),
        "channel binding cannot cross a proxy: {features}"
    );
    assert!(features.contains(">SCRAM-SHA-1<"), "{features}");
    assert!(features.contains(">PLAIN<"), "{features}");
    assert_eq!(
        root.children,
        vec![(NS_SASL.to_string(), "mechanisms".to_string())],
        "{features}"
    );

    // docs/protocol.md interop notes: the client's `to`, `from` and `xml:lang` go upstream.
    ws.vanish();
    let header = handle.finished().await;
    assert!(header.contains(&format!("to='{DOMAIN}'")), "{header}");
    assert!(header.contains("from='juliet@example.test'"), "{header}");
    assert!(header.contains("xml:lang='de'"), "{header}");
    assert!(header.contains("xmlns='jabber:client'"), "{header}");
}

/// Features as a current Prosody/ejabberd offers them before authentication: STARTTLS, SASL with
/// channel binding, the XEP-0440 channel-binding list, SASL2 (XEP-0388) with inline features,
/// and assorted features that must pass through untouched.
const FEATURES_REALISTIC: &str = "<stream:features>\
<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256-PLUS</mechanism>\
<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms>\
<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-server-end-point'/>\
<channel-binding type='tls-exporter'/></sasl-channel-binding>\
<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism>\
<inline><bind xmlns='urn:xmpp:bind:0'/><sm xmlns='urn:xmpp:sm:3'/></inline></authentication>\
<ver xmlns='urn:xmpp:features:rosterver'/>\
<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='fD4oLUOn1ZAhKU/cYxMyhrFaAbY='/>\
<register xmlns='http://jabber.org/features/iq-register'/>\
</stream:features>";

// docs/protocol.md §1: no <starttls/>, no *-PLUS (SASL and SASL2), no XEP-0440 list; everything else
// (SASL2 inline features, caps, roster versioning, registration) passes through byte for byte.
#[tokio::test]
async fn realistic_features_lose_only_tls_and_channel_binding() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_REALISTIC).await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (_ws, _, features) = gw.open_session().await;
    for gone in [
        "starttls",
        "-PLUS",
        "sasl-channel-binding",
        "channel-binding type",
    ] {
        assert!(
            !features.contains(gone),
            "{gone} reached the client: {features}"
        );
    }
    for kept in [
        "<mechanism>SCRAM-SHA-256</mechanism>",
        "<mechanism>SCRAM-SHA-1</mechanism>",
        "<inline><bind xmlns='urn:xmpp:bind:0'/><sm xmlns='urn:xmpp:sm:3'/></inline></authentication>",
        "<ver xmlns='urn:xmpp:features:rosterver'/>",
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='fD4oLUOn1ZAhKU/cYxMyhrFaAbY='/>",
        "<register xmlns='http://jabber.org/features/iq-register'/>",
    ] {
        assert!(features.contains(kept), "{kept} was changed or dropped: {features}");
    }
}

// docs/protocol.md §1/§3: a restart cannot move the session to another domain.
#[tokio::test]
async fn restart_naming_another_domain_is_host_unknown() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    ws.send(&open_frame("elsewhere.test")).await;
    expect_stream_error(&mut ws, "host-unknown").await;
    assert_eq!(
        handle.finished().await,
        STREAM_END,
        "no new header went upstream"
    );
    assert_eq!(handle.connections(), 1);
}

// docs/protocol.md §3: a WebSocket close frame without <close/> still closes the upstream stream
// cleanly.
#[tokio::test]
async fn websocket_close_frame_without_close_element_closes_upstream_stream() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    ws.close_frame().await;
    ws.expect_close().await;
    assert_eq!(handle.finished().await, STREAM_END);
}

// ---------------------------------------------------------------------------------------------
// Relaying stanzas
// ---------------------------------------------------------------------------------------------

const CLIENT_MESSAGE: &str =
    "<message xmlns='jabber:client' to='romeo@example.test' id='m1' type='chat'>\
<body>Grüße, ☃ 日本語 — &amp;&lt;&gt; &#x1F600; done</body></message>";

// docs/protocol.md §2: a validated client element is forwarded verbatim.
#[tokio::test]
async fn client_stanza_reaches_upstream_byte_identical() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_until("</message>").await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    ws.send(CLIENT_MESSAGE).await;
    assert_eq!(handle.finished().await, CLIENT_MESSAGE);
}

// docs/protocol.md §2: every element handed to a browser stands alone, carrying the `jabber:client`
// namespace it inherits from the stream header.
#[tokio::test]
async fn upstream_stanza_without_xmlns_reaches_client_standalone_in_jabber_client() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write(
            "<message from='romeo@example.test/orchard' to='juliet@example.test/balcony' type='chat'>\
             <body>Wherefore &amp; why — ☃</body><x xmlns='jabber:x:oob'><url>https://x.test/a</url></x></message>",
        )
        .await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let frame = ws.recv().await;
    let root = parse_standalone(&frame);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_CLIENT, "message"),
        "{frame}"
    );
    assert_eq!(
        root.attr("xmlns"),
        Some(NS_CLIENT),
        "declared on the element itself: {frame}"
    );
    assert_eq!(root.attr("from"), Some("romeo@example.test/orchard"));
    assert!(
        frame.contains("<body>Wherefore &amp; why — ☃</body>"),
        "{frame}"
    );
    assert!(
        root.children
            .contains(&("jabber:x:oob".to_string(), "x".to_string())),
        "{frame}"
    );
}

// docs/protocol.md §1: XEP-0198 nonzas (<enable/>, <enabled/>, <r/>, <a/>) pass through untouched,
// in their own namespace.
#[tokio::test]
async fn stream_management_nonzas_pass_through_both_ways() {
    const ENABLE: &str = "<enable xmlns='urn:xmpp:sm:3' resume='true' max='300'/>";
    const ACK: &str = "<a xmlns='urn:xmpp:sm:3' h='0'/>";
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_BIND).await;
        let enable = conn.read_until("/>").await;
        conn.write("<enabled xmlns='urn:xmpp:sm:3' id='c2s-resume-1' resume='true' max='300'/><r xmlns='urn:xmpp:sm:3'/>")
            .await;
        let ack = conn.read_until("/>").await;
        conn.read_to_eof().await;
        (enable, ack)
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    ws.send(ENABLE).await;
    let enabled = ws.recv().await;
    let root = parse_standalone(&enabled);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        ("urn:xmpp:sm:3", "enabled"),
        "{enabled}"
    );
    assert_eq!(root.attr("id"), Some("c2s-resume-1"));
    let r = ws.recv().await;
    assert_eq!(parse_standalone(&r).name, "r", "{r}");
    ws.send(ACK).await;
    ws.vanish();
    assert_eq!(
        handle.finished().await,
        (ENABLE.to_string(), ACK.to_string())
    );
}

// docs/protocol.md §2: upstream bytes are split into top-level elements, each its own frame, in order.
#[tokio::test]
async fn upstream_stanzas_in_one_write_arrive_as_separate_frames_in_order() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write(
            "<message id='a'><body>1</body></message>\n\
             <iq type='result' id='b'><query xmlns='jabber:iq:roster'><item jid='x@example.test'/></query></iq>\
             <presence id='c'/>\r\n\t<message id='d' type='chat'><body>4</body></message>\
             <r xmlns='urn:xmpp:sm:3'/>",
        )
        .await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let frame = ws.recv().await;
        let root = parse_standalone(&frame);
        seen.push((
            root.name.clone(),
            root.attr("id").unwrap_or("").to_string(),
            root.ns.clone(),
        ));
    }
    let expected = [
        ("message", "a", NS_CLIENT),
        ("iq", "b", NS_CLIENT),
        ("presence", "c", NS_CLIENT),
        ("message", "d", NS_CLIENT),
        ("r", "", "urn:xmpp:sm:3"),
    ]
    .map(|(n, i, ns)| (n.to_string(), i.to_string(), ns.to_string()));
    assert_eq!(seen, expected);
}

// docs/protocol.md §3: no whitespace between elements is ever sent to the browser (RFC 6120 §4.6.1
// whitespace keepalives stay on the upstream side).
#[tokio::test]
async fn upstream_whitespace_keepalives_never_reach_client() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write(" ").await;
        conn.write("\n").await;
        conn.write("\r\n\t ").await;
        conn.write("<message id='after-keepalive'/>").await;
        conn.write("   \n").await;
        conn.write(" <message id='last'/>").await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    // Frames that are not single elements (whitespace) would fail parse_standalone here.
    let first = ws.recv().await;
    assert_eq!(
        parse_standalone(&first).attr("id"),
        Some("after-keepalive"),
        "{first}"
    );
    let second = ws.recv().await;
    assert_eq!(
        parse_standalone(&second).attr("id"),
        Some("last"),
        "{second}"
    );
}

// ---------------------------------------------------------------------------------------------
// Stream restart and close
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §3: after SASL success the client's new <open/> restarts the upstream stream; the
// server's new header and features reach the client as <open/> and features.
#[tokio::test]
async fn stream_restart_sends_new_header_upstream_and_new_open_and_features_to_client() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        let auth = conn.read_until("</auth>").await;
        conn.write("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await;
        let restart = conn.answer_stream("s-2", FEATURES_BIND).await;
        let bind = conn.read_until("</iq>").await;
        conn.write(
            "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>juliet@example.test/balcony</jid></bind></iq>",
        )
        .await;
        conn.read_to_eof().await;
        (auth, restart, bind)
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;

    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMA==</auth>";
    ws.send(auth).await;
    let success = ws.recv().await;
    let root = parse_standalone(&success);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_SASL, "success"),
        "{success}"
    );

    ws.send(&open_frame(DOMAIN)).await;
    let open = ws.recv().await;
    let root = parse_standalone(&open);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_FRAMING, "open"),
        "{open}"
    );
    assert_eq!(root.attr("id"), Some("s-2"), "the new stream's id: {open}");
    let features = ws.recv().await;
    let root = parse_standalone(&features);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_STREAM, "features"),
        "{features}"
    );
    assert!(
        root.children
            .contains(&("urn:ietf:params:xml:ns:xmpp-bind".into(), "bind".into())),
        "{features}"
    );

    let bind = "<iq xmlns='jabber:client' type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                <resource>balcony</resource></bind></iq>";
    ws.send(bind).await;
    let result = ws.recv().await;
    assert_eq!(
        parse_standalone(&result).attr("id"),
        Some("bind1"),
        "{result}"
    );

    ws.vanish();
    let (got_auth, restart, got_bind) = handle.finished().await;
    assert_eq!(got_auth, auth);
    assert!(
        restart.contains("<stream:stream") && restart.contains(&format!("to='{DOMAIN}'")),
        "{restart}"
    );
    assert_eq!(got_bind, bind);
}

// docs/protocol.md §3: the client's <close/> becomes </stream:stream>; the server's answer becomes
// <close/>, the gateway closes the WebSocket and shuts the upstream socket down.
#[tokio::test]
async fn client_close_is_relayed_and_answered_then_both_sockets_close() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        let close = conn.read_until(STREAM_END).await;
        conn.write(STREAM_END).await;
        let after = conn.read_to_eof().await;
        (close, after)
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    ws.send(CLOSE_FRAME).await;
    expect_close_element_and_socket_close(&mut ws).await;
    let (close, after) = handle.finished().await;
    assert_eq!(close, STREAM_END, "only the stream close went upstream");
    assert_eq!(after, "", "nothing after the closed stream, then EOF");
}

// docs/protocol.md §3: the server closing first is answered with </stream:stream>, and the client
// gets <close/> and the WebSocket close.
#[tokio::test]
async fn upstream_close_first_is_answered_both_ways() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write(STREAM_END).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    expect_close_element_and_socket_close(&mut ws).await;
    assert_eq!(
        handle.finished().await,
        STREAM_END,
        "the server's close is answered once, then EOF"
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §2/§3: an upstream that vanishes mid-stanza ends the session with a stream error;
// the partial element is never delivered.
#[tokio::test]
async fn upstream_eof_mid_stanza_is_remote_connection_failed_without_partial_stanza() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write("<message from='romeo@example.test' to='juliet@example.test'><body>half of a")
            .await;
        // Dropping the connection here closes it mid-element.
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    expect_stream_error(&mut ws, "remote-connection-failed").await;
}

// docs/protocol.md §1: a stream the gateway cannot read on (here: XML it refuses) is dropped,
// not closed: no `</stream:stream>` goes to the server, which treats it as a lost connection
// (and keeps an XEP-0198 session for resumption) rather than as a logout.
#[tokio::test]
async fn upstream_stream_that_breaks_is_dropped_not_closed() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write("<message><body>a</body></wrong>").await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    expect_stream_error(&mut ws, "remote-connection-failed").await;
    assert_eq!(
        handle.finished().await,
        "",
        "the socket is shut down without a closing tag"
    );
}

// docs/protocol.md §3: stream errors go to the client standalone (with xmlns:stream), then <close/>.
#[tokio::test]
async fn upstream_stream_error_reaches_client_standalone_then_close() {
    let (up, _handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.write(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text>\
             </stream:error></stream:stream>",
        )
        .await;
        conn.read_to_eof().await;
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let frame = ws.recv().await;
    assert_stream_error(&frame, "conflict");
    assert!(frame.contains("xmlns:stream="), "{frame}");
    assert!(
        frame.contains("Replaced by new connection"),
        "the error text passes through: {frame}"
    );
    expect_close_element_and_socket_close(&mut ws).await;
}

// ---------------------------------------------------------------------------------------------
// Hostile client input
// ---------------------------------------------------------------------------------------------

enum Hostile {
    Text(&'static str),
    Binary(&'static [u8]),
}

/// docs/protocol.md §2: bad input ends the session with `condition` (any condition for `None`), no
/// byte of it is passed on, and the upstream stream is closed cleanly.
async fn hostile_input_is_refused(input: Hostile, condition: Option<&str>) {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(plain_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    match input {
        Hostile::Text(t) => ws.send(t).await,
        Hostile::Binary(b) => ws.send_binary(b).await,
    }
    let frame = ws.recv().await;
    match condition {
        Some(condition) => assert_stream_error(&frame, condition),
        None => {
            let root = parse_standalone(&frame);
            assert_eq!(
                (root.ns.as_str(), root.name.as_str()),
                (NS_STREAM, "error"),
                "{frame}"
            );
        }
    }
    expect_close_element_and_socket_close(&mut ws).await;
    assert_eq!(
        handle.finished().await,
        STREAM_END,
        "upstream got only the stream close"
    );
}

// docs/protocol.md §2: DTDs and entity declarations are refused.
#[tokio::test]
async fn doctype_in_client_frame_is_restricted_xml() {
    hostile_input_is_refused(
        Hostile::Text(
            "<!DOCTYPE message [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>\
             <message xmlns='jabber:client' to='romeo@example.test'><body>&xxe;</body></message>",
        ),
        Some("restricted-xml"),
    )
    .await;
}

// docs/protocol.md §2: anything that would close the upstream stream is stream injection.
#[tokio::test]
async fn smuggled_stream_close_is_policy_violation() {
    hostile_input_is_refused(Hostile::Text(STREAM_END), Some("policy-violation")).await;
}

// docs/protocol.md §2: a stream close after a valid stanza in the same frame is injection too.
#[tokio::test]
async fn stream_close_after_a_stanza_is_policy_violation() {
    hostile_input_is_refused(
        Hostile::Text("<message xmlns='jabber:client' to='romeo@example.test'><body>hi</body></message></stream:stream>"),
        Some("policy-violation"),
    )
    .await;
}

// docs/protocol.md §2: a stream header in a payload would reopen the upstream stream.
#[tokio::test]
async fn stream_header_in_a_frame_is_policy_violation() {
    hostile_input_is_refused(
        Hostile::Text(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
             to='elsewhere.test' version='1.0'/>",
        ),
        Some("policy-violation"),
    )
    .await;
}

// docs/protocol.md §2: entities other than the five predefined ones are refused.
#[tokio::test]
async fn undeclared_entity_is_refused_and_not_forwarded() {
    hostile_input_is_refused(
        Hostile::Text(
            "<message xmlns='jabber:client' to='romeo@example.test'><body>&nbsp;</body></message>",
        ),
        None,
    )
    .await;
}

// docs/protocol.md §2 (limits): nesting deeper than limits.max_depth ends the session with
// policy-violation.
#[tokio::test]
async fn too_deeply_nested_element_is_policy_violation() {
    let deep = format!(
        "<message xmlns='jabber:client'>{}{}</message>",
        "<a>".repeat(40),
        "</a>".repeat(40)
    );
    let deep: &'static str = Box::leak(deep.into_boxed_str());
    hostile_input_is_refused(Hostile::Text(deep), Some("policy-violation")).await;
}

// docs/protocol.md §2 (limits): an element larger than limits.max_stanza_bytes ends the session with
// policy-violation, like every other refused input.
#[tokio::test]
async fn oversized_client_element_is_policy_violation() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let mut c = plain_config(up);
    c.limits.max_stanza_bytes = 1024;
    c.limits.max_buffered_bytes = 4096;
    let gw = start_gateway(c).await;
    let (mut ws, _, _) = gw.open_session().await;
    let big = format!(
        "<message xmlns='jabber:client' to='romeo@example.test'><body>{}</body></message>",
        "x".repeat(1500)
    );
    ws.send(&big).await;
    expect_stream_error(&mut ws, "policy-violation").await;
    assert_eq!(
        handle.finished().await,
        STREAM_END,
        "upstream got only the stream close"
    );
}

// docs/protocol.md §2: exactly one element per WebSocket message.
#[tokio::test]
async fn two_elements_in_one_frame_is_not_well_formed() {
    hostile_input_is_refused(
        Hostile::Text(
            "<presence xmlns='jabber:client'/><presence xmlns='jabber:client' type='unavailable'/>",
        ),
        Some("not-well-formed"),
    )
    .await;
}

// docs/protocol.md §3: text frames only; a binary frame is a protocol error.
#[tokio::test]
async fn binary_frame_is_refused_with_stream_error_and_close() {
    hostile_input_is_refused(Hostile::Binary(b"<presence xmlns='jabber:client'/>"), None).await;
}

// ---------------------------------------------------------------------------------------------
// Keepalive
// ---------------------------------------------------------------------------------------------

fn keepalive_config(up: std::net::SocketAddr) -> xmpp_gateway::config::Config {
    let mut c = plain_config(up);
    c.websocket.ping_interval_secs = 1;
    c.websocket.max_missed_pongs = 1;
    c
}

// docs/protocol.md §3: WebSocket ping at an interval, close after missed pongs; the upstream stream
// is closed cleanly.
#[tokio::test]
async fn unanswered_pings_close_the_session_and_the_upstream_stream() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        conn.read_to_eof().await
    })
    .await;
    let gw = start_gateway(keepalive_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    let opened = Instant::now();
    // The client reads nothing (so answers no ping) until the upstream stream is over.
    assert_eq!(handle.finished().await, STREAM_END);
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "closed before a ping was missed"
    );
    let mut events = Vec::new();
    loop {
        match ws.next_event(TIMEOUT).await {
            e @ (WsEvent::Close | WsEvent::Ended(_)) => {
                events.push(e);
                break;
            }
            WsEvent::Timeout => panic!("WebSocket still open after the ping timeout: {events:?}"),
            e => events.push(e),
        }
    }
    assert!(ws.pings >= 1, "the gateway pinged before closing");
}

// docs/protocol.md §3: a client that answers pings keeps its session.
#[tokio::test]
async fn answered_pings_keep_the_session_past_three_intervals() {
    let (up, mut handle) = ScriptedUpstream::start(|mut conn, _| async move {
        conn.answer_stream("s-1", FEATURES_SASL).await;
        let got = conn.read_until("</message>").await;
        conn.write("<message id='still-here'/>").await;
        got
    })
    .await;
    let gw = start_gateway(keepalive_config(up)).await;
    let (mut ws, _, _) = gw.open_session().await;
    // Reading answers every ping; nothing else may happen for 3.5 intervals.
    match ws.next_event(Duration::from_millis(3500)).await {
        WsEvent::Timeout => {}
        other => panic!("session disturbed while answering pings: {other:?}"),
    }
    assert!(
        ws.pings >= 3,
        "expected a ping per interval, saw {}",
        ws.pings
    );
    ws.send(CLIENT_MESSAGE).await;
    assert_eq!(handle.finished().await, CLIENT_MESSAGE);
    let frame = ws.recv().await;
    assert_eq!(parse_standalone(&frame).attr("id"), Some("still-here"));
}
