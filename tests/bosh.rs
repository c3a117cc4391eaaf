//! XMPP over BOSH (XEP-0124 + XEP-0206, docs/protocol.md §4) through real sockets: a browser-like
//! BOSH client speaking raw HTTP/1.1 on one side, a scripted XMPP server on the other, the
//! gateway in between.
//!
//! The scripted upstream hands each accepted connection to the test itself, so a test drives
//! both ends step by step. Every wait is bounded and waits on an event (a response, bytes
//! upstream, EOF), never on a sleep.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::bosh::{session_request, FIRST_RID, NS_HTTPBIND, XML};
use common::peers::Upstream;
use common::*;
use tokio::net::TcpStream;
use xmpp_gateway::config::{Config, TlsPolicy};

const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// Session request attributes most tests use: a generous wait, one held request.
const DEFAULT_ATTRS: &str = " wait='10' hold='1'";

// ---------------------------------------------------------------------------------------------
// Helpers: upstream connections handed to the test, a BOSH client over raw HTTP
// ---------------------------------------------------------------------------------------------

/// [`DOMAIN`] routed to `upstream` over plain TCP, with BOSH timers small enough for tests.
fn bosh_config(upstream: SocketAddr) -> Config {
    let mut c = plain_config(upstream);
    c.bosh.max_wait_secs = 10;
    c.bosh.inactivity_secs = 30;
    c
}

/// POSTs `body` to /http-bind on `conn` and returns the answer, which must be HTTP 200 text/xml
/// (docs/protocol.md §4: every answer to a BOSH request is a `<body/>`).
async fn post(conn: &mut HttpConn, body: &str) -> String {
    let r = conn
        .request("POST", "/http-bind", &[XML], body.as_bytes())
        .await;
    check_ok(&r)
}

/// POSTs `body` on a connection of its own.
async fn post_once(addr: SocketAddr, body: &str) -> String {
    post(&mut HttpConn::connect(addr).await, body).await
}

fn check_ok(r: &HttpReply) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let content_type = r.header("content-type").expect("content-type");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    r.text()
}

/// Parses an answer: one standalone `<body/>` in the httpbind namespace.
fn parse_body(text: &str) -> Root {
    let root = parse_standalone(text);
    assert_eq!(
        (root.ns.as_str(), root.name.as_str()),
        (NS_HTTPBIND, "body"),
        "{text}"
    );
    root
}

/// `text` is a `type='terminate'` body with `condition` (or none); returns it parsed.
fn assert_terminate(text: &str, condition: Option<&str>) -> Root {
    let root = parse_body(text);
    assert_eq!(root.attr("type"), Some("terminate"), "{text}");
    assert_eq!(root.attr("condition"), condition, "{text}");
    root
}

/// `text` is an ordinary (not terminating) body; returns it parsed.
fn assert_alive(text: &str) -> Root {
    let root = parse_body(text);
    assert_eq!(root.attr("type"), None, "{text}");
    root
}

/// The `id` attributes in `text`, in order.
fn ids(text: &str) -> Vec<String> {
    text.split(" id='")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap_or_default().to_string())
        .collect()
}

/// A BOSH client: the session's sid, the last rid used, and a kept-alive HTTP connection.
struct Bosh {
    addr: SocketAddr,
    conn: HttpConn,
    sid: String,
    rid: u64,
}

/// What opening a session produced on both sides.
struct Opened {
    bosh: Bosh,
    upstream: UpstreamConn<TcpStream>,
    /// The session creation response.
    created: String,
    /// The stream header the upstream received.
    header: String,
}

impl Bosh {
    /// Sends a session request with `attrs`, answers the upstream stream with `stream_id` and
    /// `features`, and reads the creation response.
    async fn open(
        gw: &TestGateway,
        up: &mut Upstream,
        attrs: &str,
        stream_id: &str,
        features: &str,
    ) -> Opened {
        let mut conn = HttpConn::connect(gw.addr).await;
        let request = session_request(FIRST_RID, attrs);
        conn.send("POST", "/http-bind", &[XML], request.as_bytes())
            .await;
        let mut upstream = up.next().await;
        let header = upstream.answer_stream(stream_id, features).await;
        let created = check_ok(&conn.response().await);
        let sid = assert_alive(&created)
            .attr("sid")
            .unwrap_or_else(|| panic!("no sid: {created}"))
            .to_string();
        Opened {
            bosh: Bosh {
                addr: gw.addr,
                conn,
                sid,
                rid: FIRST_RID,
            },
            upstream,
            created,
            header,
        }
    }

    /// A request body for this session.
    fn body(&self, rid: u64, attrs: &str, payload: &str) -> String {
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{}' rid='{rid}'{attrs}>{payload}</body>",
            self.sid
        )
    }

    /// The body of the next request (rid + 1).
    fn next(&mut self, attrs: &str, payload: &str) -> String {
        self.rid += 1;
        self.body(self.rid, attrs, payload)
    }

    /// The next request on the kept-alive connection, and its answer.
    async fn request(&mut self, attrs: &str, payload: &str) -> String {
        let body = self.next(attrs, payload);
        post(&mut self.conn, &body).await
    }

    /// Sends the next request on the kept-alive connection without waiting for the answer
    /// (it is held); read it with [`response`](Self::response).
    async fn send(&mut self, attrs: &str, payload: &str) {
        let body = self.next(attrs, payload);
        self.conn
            .send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
    }

    /// The answer to the request sent with [`send`](Self::send).
    async fn response(&mut self) -> String {
        check_ok(&self.conn.response().await)
    }

    /// Sends the next request on a new connection without waiting; returns the connection.
    async fn send_on_new_connection(&mut self, attrs: &str, payload: &str) -> HttpConn {
        let body = self.next(attrs, payload);
        let mut conn = HttpConn::connect(self.addr).await;
        conn.send("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        conn
    }
}

// ---------------------------------------------------------------------------------------------
// Session creation
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4 (XEP-0124 §7.2, XEP-0206 §3): the session creation response carries an
// unguessable sid, the negotiated limits (wait capped by config, requests = hold + 1), authid =
// the upstream stream id, the XEP-0206 attributes, and the upstream features without
// <starttls/> and without *-PLUS mechanisms (docs/protocol.md §1). The upstream stream header names
// the client's domain, from and xml:lang.
#[tokio::test]
async fn session_request_is_answered_with_sid_limits_authid_and_filtered_features() {
    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    c.bosh.max_wait_secs = 7;
    c.bosh.inactivity_secs = 45;
    c.bosh.polling_secs = 3;
    c.bosh.max_pause_secs = 90;
    let gw = start_gateway(c).await;
    let attrs = " wait='60' hold='1' ver='1.11' ack='1' xml:lang='de' from='juliet@example.test'";
    let opened = Bosh::open(&gw, &mut up, attrs, "s-create", FEATURES_STARTTLS_AND_SASL).await;

    let header = &opened.header;
    assert!(header.contains(&format!("to='{DOMAIN}'")), "{header}");
    assert!(header.contains("from='juliet@example.test'"), "{header}");
    assert!(header.contains("xml:lang='de'"), "{header}");

    let created = &opened.created;
    let root = parse_body(created);
    let sid = root.attr("sid").expect("sid");
    assert!(
        sid.len() >= 32 && sid.chars().all(|c| c.is_ascii_hexdigit()),
        "sid of at least 128 bits in hex: {sid}"
    );
    assert_eq!(
        root.attr("wait"),
        Some("7"),
        "wait capped by config: {created}"
    );
    assert_eq!(root.attr("hold"), Some("1"), "{created}");
    assert_eq!(root.attr("requests"), Some("2"), "hold + 1: {created}");
    assert_eq!(root.attr("inactivity"), Some("45"), "{created}");
    assert_eq!(root.attr("polling"), Some("3"), "{created}");
    assert_eq!(root.attr("maxpause"), Some("90"), "{created}");
    assert_eq!(root.attr("ver"), Some("1.11"), "{created}");
    assert_eq!(root.attr("authid"), Some("s-create"), "{created}");
    assert_eq!(root.attr("from"), Some(DOMAIN), "{created}");
    assert_eq!(
        root.attr("ack"),
        Some(FIRST_RID.to_string().as_str()),
        "{created}"
    );
    assert_eq!(root.attr("xmpp:version"), Some("1.0"), "{created}");
    assert_eq!(root.attr("xmlns:xmpp"), Some(NS_XBOSH), "{created}");
    assert_eq!(root.attr("xmlns:stream"), Some(NS_STREAM), "{created}");
    assert!(
        root.attr("accept").is_some_and(|a| a.contains("gzip")),
        "{created}"
    );
    assert_eq!(
        root.children,
        vec![(NS_STREAM.to_string(), "features".to_string())],
        "{created}"
    );
    assert!(!created.contains("starttls"), "{created}");
    assert!(!created.contains("-PLUS"), "{created}");
    assert!(
        created.contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "{created}"
    );
    assert!(
        created.contains("<mechanism>PLAIN</mechanism>"),
        "{created}"
    );

    // Another session gets another sid.
    let other = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-other", FEATURES_SASL).await;
    assert_ne!(other.bosh.sid, opened.bosh.sid);
    assert_eq!(up.connections(), 2);
}

// docs/protocol.md §4 ("hold" and clients): a client that asks for hold='2' (stanza does, with only
// two request channels) is granted hold='1' by default, so one of its channels is always free to
// send on; an operator who raises `bosh.max_hold` grants up to that.
#[tokio::test]
async fn hold_is_capped_at_one_unless_the_operator_raises_it() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let opened = Bosh::open(&gw, &mut up, " wait='10' hold='2'", "s-hold", FEATURES_SASL).await;
    let root = parse_body(&opened.created);
    assert_eq!(root.attr("hold"), Some("1"), "{}", opened.created);
    assert_eq!(root.attr("requests"), Some("2"), "{}", opened.created);

    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    c.bosh.max_hold = 2;
    let gw = start_gateway(c).await;
    let opened = Bosh::open(
        &gw,
        &mut up,
        " wait='10' hold='3'",
        "s-hold2",
        FEATURES_SASL,
    )
    .await;
    let root = parse_body(&opened.created);
    assert_eq!(root.attr("hold"), Some("2"), "{}", opened.created);
    assert_eq!(root.attr("requests"), Some("3"), "{}", opened.created);
}

// XEP-0124 §7.2: `ver` is the highest version the connection manager implements or the
// client's, whichever is lower (docs/protocol.md §4: honour `ver`).
#[tokio::test]
async fn session_response_ver_is_the_lower_of_client_and_gateway_versions() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let old = Bosh::open(
        &gw,
        &mut up,
        " wait='10' hold='1' ver='1.6'",
        "s-1",
        FEATURES_SASL,
    )
    .await;
    assert_eq!(
        parse_body(&old.created).attr("ver"),
        Some("1.6"),
        "{}",
        old.created
    );
    let new = Bosh::open(
        &gw,
        &mut up,
        " wait='10' hold='1' ver='1.99'",
        "s-2",
        FEATURES_SASL,
    )
    .await;
    assert_eq!(
        parse_body(&new.created).attr("ver"),
        Some("1.11"),
        "{}",
        new.created
    );
}

// docs/protocol.md §1: the gateway itself does STARTTLS against the configured CA; the BOSH client
// sees only the post-TLS stream (its id as authid, its features) and never <starttls/>.
#[tokio::test]
async fn session_over_required_starttls_shows_only_the_encrypted_stream() {
    let pki = TestPki::new(DOMAIN);
    let mut up = Upstream::start().await;
    let mut c = config(vec![route(DOMAIN, &[up.addr], TlsPolicy::Required)]);
    c.upstream_ca = Some(pki.ca_file.0.clone());
    let gw = start_gateway(c).await;

    let mut conn = HttpConn::connect(gw.addr).await;
    let request = session_request(FIRST_RID, DEFAULT_ATTRS);
    conn.send("POST", "/http-bind", &[XML], request.as_bytes())
        .await;
    let mut plain = up.next().await;
    plain
        .answer_stream("pre-tls", FEATURES_STARTTLS_REQUIRED)
        .await;
    assert_eq!(
        plain.read_until("/>").await,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    plain
        .write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    let mut tls = plain
        .start_tls(&pki.acceptor)
        .await
        .expect("TLS handshake with the gateway");
    tls.answer_stream("post-tls", FEATURES_SASL).await;

    let created = check_ok(&conn.response().await);
    let root = assert_alive(&created);
    assert_eq!(root.attr("authid"), Some("post-tls"), "{created}");
    assert!(!created.contains("starttls"), "{created}");
    assert!(!created.contains("-PLUS"), "{created}");
    assert!(
        created.contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "{created}"
    );

    let sid = root.attr("sid").expect("sid").to_string();
    let mut bosh = Bosh {
        addr: gw.addr,
        conn,
        sid,
        rid: FIRST_RID,
    };
    let message = "<message xmlns='jabber:client' to='romeo@example.test' id='t1'><body>sealed</body></message>";
    bosh.send("", message).await;
    assert_eq!(tls.read_until("</message>").await, message);
}

// ---------------------------------------------------------------------------------------------
// A full exchange
// ---------------------------------------------------------------------------------------------

const AUTH: &str =
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABzM2NyM3Q=</auth>";
const CLIENT_MESSAGE: &str =
    "<message xmlns='jabber:client' to='romeo@example.test' id='c1' type='chat'>\
<body>Grüße, ☃ 日本語 — &lt;&amp;&gt; &#x1F600; done</body></message>";

// docs/protocol.md §4, §2 (XEP-0206 §§4-5): SASL is relayed verbatim and its result delivered in a
// held response; xmpp:restart='true' restarts the upstream stream and the response carries the
// new features; client stanzas arrive upstream byte-identical; upstream stanzas arrive
// standalone in jabber:client; payload children without xmlns are forwarded as jabber:client.
#[tokio::test]
async fn sasl_restart_and_stanzas_flow_both_ways_intact() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;

    // SASL: forwarded verbatim; <success/> comes back in the held response.
    bosh.send("", AUTH).await;
    assert_eq!(server.read_until("</auth>").await, AUTH);
    server
        .write("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    let answer = bosh.response().await;
    let root = assert_alive(&answer);
    assert_eq!(
        root.children,
        vec![(NS_SASL.to_string(), "success".to_string())],
        "{answer}"
    );

    // Restart: a new stream header upstream; the new features in the response.
    bosh.send(
        &format!(" xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}' to='{DOMAIN}'"),
        "",
    )
    .await;
    let header = server.read_stream_header().await;
    assert!(header.contains(&format!("to='{DOMAIN}'")), "{header}");
    server
        .write(&format!("{}{FEATURES_BIND}", server_header("s-2")))
        .await;
    let answer = bosh.response().await;
    let root = assert_alive(&answer);
    assert_eq!(
        root.children,
        vec![(NS_STREAM.to_string(), "features".to_string())],
        "{answer}"
    );
    assert!(
        answer.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{answer}"
    );
    assert!(
        !answer.contains("<stream:stream"),
        "no stream header: {answer}"
    );

    // Client to server: byte-identical. Server to client: standalone in jabber:client.
    bosh.send("", CLIENT_MESSAGE).await;
    assert_eq!(server.read_until("</message>").await, CLIENT_MESSAGE);
    server
        .write(
            "<message from='romeo@example.test/orchard' to='juliet@example.test/balcony' id='u1' type='chat'>\
             <body>Wherefore &lt;&amp; — ☃ 日本語</body></message>",
        )
        .await;
    let answer = bosh.response().await;
    let root = assert_alive(&answer);
    assert_eq!(
        root.children,
        vec![(NS_CLIENT.to_string(), "message".to_string())],
        "{answer}"
    );
    assert!(
        answer.contains("<message xmlns='jabber:client'"),
        "the message declares its namespace: {answer}"
    );
    let message_start = answer.find("<message").expect("message");
    let message_end = answer.find("</message>").expect("message end") + "</message>".len();
    let message = parse_standalone(&answer[message_start..message_end]);
    assert_eq!(
        (message.ns.as_str(), message.attr("id")),
        (NS_CLIENT, Some("u1"))
    );
    assert!(
        answer.contains("<body>Wherefore &lt;&amp; — ☃ 日本語</body>"),
        "{answer}"
    );

    // Payload children without a namespace are forwarded (they become jabber:client upstream).
    let unqualified = "<presence/><iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>";
    bosh.send("", unqualified).await;
    assert_eq!(server.read_until("</iq>").await, unqualified);
    server
        .write("<iq type='result' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let answer = bosh.response().await;
    let root = assert_alive(&answer);
    assert_eq!(
        root.children,
        vec![(NS_CLIENT.to_string(), "iq".to_string())],
        "{answer}"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §1, §4: only configured domains are served; anything else is host-unknown and
// nothing is dialled.
#[tokio::test]
async fn session_for_unconfigured_domain_is_host_unknown_and_dials_nothing() {
    let up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let request = format!(
        "<body xmlns='{NS_HTTPBIND}' to='elsewhere.test' rid='{FIRST_RID}' wait='10' hold='1' \
         xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'/>"
    );
    let answer = post_once(gw.addr, &request).await;
    assert_terminate(&answer, Some("host-unknown"));
    assert_eq!(
        up.connections(),
        0,
        "the gateway dialled for an unconfigured domain"
    );
}

// docs/protocol.md §4 (XEP-0124 §17.2): a session request without `to` is improper-addressing.
#[tokio::test]
async fn session_without_to_is_improper_addressing() {
    let up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let request = format!(
        "<body xmlns='{NS_HTTPBIND}' rid='{FIRST_RID}' wait='10' hold='1' \
         xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'/>"
    );
    let answer = post_once(gw.addr, &request).await;
    assert_terminate(&answer, Some("improper-addressing"));
    assert_eq!(up.connections(), 0);
}

// docs/protocol.md §4: an unreachable upstream is remote-connection-failed.
#[tokio::test]
async fn unreachable_upstream_is_remote_connection_failed() {
    let gw = start_gateway(bosh_config(dead_port().await)).await;
    let answer = post_once(gw.addr, &session_request(FIRST_RID, DEFAULT_ATTRS)).await;
    assert_terminate(&answer, Some("remote-connection-failed"));
}

// docs/protocol.md §4 (upstream failures): an upstream stream error ends the session with a
// terminate body naming remote-stream-error and nothing else (stanza's BOSH transport cannot end
// a session whose terminate body carries the <stream:error/>); the gateway closes its side of the
// stream.
#[tokio::test]
async fn upstream_stream_error_is_remote_stream_error_without_children() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "").await;
    server
        .write(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text>\
             </stream:error></stream:stream>",
        )
        .await;
    let answer = bosh.response().await;
    let root = assert_terminate(&answer, Some("remote-stream-error"));
    assert!(root.children.is_empty(), "{answer}");
    assert_eq!(server.read_to_eof().await, STREAM_END);
}

// docs/protocol.md §1, §4: an upstream stream that breaks (here: XML the gateway refuses) ends
// the session with remote-connection-failed, as on WebSocket, and is dropped without a closing
// tag, as a lost connection would be (the server keeps an XEP-0198 session for resumption).
#[tokio::test]
async fn upstream_stream_that_breaks_is_remote_connection_failed_and_dropped() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "").await;
    server.write("<message><body>a</body></wrong>").await;
    let answer = bosh.response().await;
    assert_terminate(&answer, Some("remote-connection-failed"));
    assert_eq!(
        server.read_to_eof().await,
        "",
        "the socket is shut down without a closing tag"
    );
}

// docs/protocol.md §4 (XEP-0124 §17.2): an unknown sid is item-not-found.
#[tokio::test]
async fn unknown_sid_is_item_not_found() {
    let up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let request = format!(
        "<body xmlns='{NS_HTTPBIND}' sid='0123456789abcdef0123456789abcdef' rid='{}'/>",
        FIRST_RID + 1
    );
    let answer = post_once(gw.addr, &request).await;
    assert_terminate(&answer, Some("item-not-found"));
}

fn sha1_hex(s: &str) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A chain of keys (XEP-0124 §15): the session request `attrs` announce the last of three, and
/// the client's next requests carry the two keys returned, in order.
fn key_chain() -> ([String; 2], String) {
    let k1 = sha1_hex("seed");
    let k2 = sha1_hex(&k1);
    let k3 = sha1_hex(&k2);
    ([k2, k1], format!("{DEFAULT_ATTRS} newkey='{k3}'"))
}

// docs/protocol.md §4 (XEP-0124 §15): keys chain by SHA-1; a key that does not hash to the previous
// one is item-not-found for that request alone: it is not processed, and the session, whose sid
// is all its sender may know, goes on.
#[tokio::test]
async fn bad_key_is_item_not_found_and_the_session_goes_on() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let ([k2, k1], attrs) = key_chain();
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, &attrs, "s-1", FEATURES_SASL).await;

    // The right key is accepted: the request is held, its payload forwarded.
    bosh.send(&format!(" key='{k2}'"), "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");

    // A wrong one is refused, alone; the rid stays free for the client.
    let wrong = bosh.body(
        bosh.rid + 1,
        " key='not-the-preimage'",
        "<presence type='unavailable'/>",
    );
    assert_terminate(&post_once(gw.addr, &wrong).await, Some("item-not-found"));

    // The client's own next request goes through and releases the held one.
    let mut next = bosh
        .send_on_new_connection(
            &format!(" key='{k1}'"),
            "<iq xmlns='jabber:client' type='get' id='after'/>",
        )
        .await;
    assert_eq!(
        server.read_until("/>").await,
        "<iq xmlns='jabber:client' type='get' id='after'/>",
        "the payload of the refused request was forwarded"
    );
    assert_alive(&bosh.response().await);
    server.write("<message id='m1'/>").await;
    let answer = check_ok(&next.response().await);
    assert_eq!(ids(&answer), vec!["m1"], "{answer}");
}

// docs/protocol.md §4 (XEP-0124 §15): once a session uses keys, knowing its sid is not enough to
// read it. Replaying the session request's rid, without a key, does not return the stream
// features its answer carried; nor does replaying an answered rid return its stanzas.
#[tokio::test]
async fn replayed_rid_without_the_key_returns_nothing_of_the_session() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let ([k2, k1], attrs) = key_chain();
    let Opened {
        mut bosh,
        upstream: mut server,
        created,
        ..
    } = Bosh::open(&gw, &mut up, &attrs, "s-1", FEATURES_SASL).await;
    assert!(created.contains("<stream:features"), "{created}");

    let replay = bosh.body(FIRST_RID, "", "");
    let answer = post_once(gw.addr, &replay).await;
    assert_terminate(&answer, Some("item-not-found"));
    assert!(!answer.contains("features"), "{answer}");

    // The client goes on; the answer to its request is not for the stranger either.
    bosh.send(&format!(" key='{k2}'"), "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    server.write("<message id='m1'/>").await;
    let answer = bosh.response().await;
    assert_eq!(ids(&answer), vec!["m1"], "{answer}");
    let replay = bosh.body(bosh.rid, "", "");
    let stolen = post_once(gw.addr, &replay).await;
    assert_terminate(&stolen, Some("item-not-found"));
    let again = post_once(
        gw.addr,
        &bosh.body(bosh.rid, &format!(" key='{k2}'"), "<presence/>"),
    )
    .await;
    assert_eq!(again, answer, "the client's own repeat gets its answer");
    bosh.send(&format!(" key='{k1}'"), "").await;
    server.write("<message id='m2'/>").await;
    let answer = bosh.response().await;
    assert_eq!(ids(&answer), vec!["m2"], "{answer}");
}

// ---------------------------------------------------------------------------------------------
// HTTP level
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4: OPTIONS answers the CORS preflight.
#[tokio::test]
async fn options_preflight_answers_cors() {
    let gw = start_gateway(config(vec![])).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let r = conn
        .request(
            "OPTIONS",
            "/http-bind",
            &[
                ("Origin", "https://chat.example.test"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    let origin = r
        .header("access-control-allow-origin")
        .expect("allow-origin");
    assert!(
        origin == "*" || origin == "https://chat.example.test",
        "{r:?}"
    );
    let methods = r
        .header("access-control-allow-methods")
        .expect("allow-methods");
    assert!(methods.contains("POST"), "{methods}");
    let headers = r
        .header("access-control-allow-headers")
        .expect("allow-headers");
    assert!(
        headers.to_ascii_lowercase().contains("content-type"),
        "{headers}"
    );
}

// docs/protocol.md §4: allowed origins come from config; others are refused with 403, allowed ones
// are echoed.
#[tokio::test]
async fn disallowed_origin_is_403() {
    let mut c = config(vec![]);
    c.bosh.allowed_origins = vec!["https://chat.example.test".into()];
    let gw = start_gateway(c).await;
    let body = session_request(FIRST_RID, DEFAULT_ATTRS);
    for method in ["POST", "OPTIONS"] {
        let mut conn = HttpConn::connect(gw.addr).await;
        let r = conn
            .request(
                method,
                "/http-bind",
                &[XML, ("Origin", "https://evil.example")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 403, "{method}: {r:?}");
    }
    let mut conn = HttpConn::connect(gw.addr).await;
    let r = conn
        .request(
            "OPTIONS",
            "/http-bind",
            &[("Origin", "https://chat.example.test")],
            b"",
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://chat.example.test")
    );
}

// docs/protocol.md §4: BOSH requests are POSTed; anything else is an HTTP error.
#[tokio::test]
async fn get_is_405() {
    let gw = start_gateway(config(vec![])).await;
    let mut conn = HttpConn::connect(gw.addr).await;
    let r = conn.request("GET", "/http-bind", &[], b"").await;
    assert_eq!(r.status, 405, "{r:?}");
}

// docs/protocol.md §4: HTTP 4xx only for non-BOSH requests: a document that is not a <body/> in the
// httpbind namespace is HTTP 400.
#[tokio::test]
async fn non_bosh_body_is_400() {
    let gw = start_gateway(config(vec![])).await;
    for body in [
        "<foo xmlns='http://jabber.org/protocol/httpbind'/>".to_string(),
        format!("<body rid='{FIRST_RID}' to='{DOMAIN}'/>"),
        format!("<body xmlns='jabber:client' rid='{FIRST_RID}' to='{DOMAIN}'/>"),
        String::new(),
    ] {
        let mut conn = HttpConn::connect(gw.addr).await;
        let r = conn
            .request("POST", "/http-bind", &[XML], body.as_bytes())
            .await;
        assert_eq!(r.status, 400, "{body:?}: {r:?}");
    }
}

// docs/protocol.md §2, §4: a body over bosh.max_body_bytes is refused with 413 before parsing.
#[tokio::test]
async fn oversized_body_is_413() {
    let mut c = config(vec![]);
    c.bosh.max_body_bytes = 1024;
    let gw = start_gateway(c).await;
    let body = format!(
        "<body xmlns='{NS_HTTPBIND}' sid='x' rid='{FIRST_RID}'><message xmlns='jabber:client'><body>{}</body></message></body>",
        "a".repeat(2000)
    );
    let mut conn = HttpConn::connect(gw.addr).await;
    let r = conn
        .request("POST", "/http-bind", &[XML], body.as_bytes())
        .await;
    assert_eq!(r.status, 413, "{r:?}");
}

/// Hostile request bodies for a session: DTD and entity declarations, stream injection,
/// not-well-formed XML, a processing instruction.
fn hostile_bodies(bosh: &Bosh, rid: u64) -> Vec<String> {
    let sid = &bosh.sid;
    vec![
        format!(
            "<!DOCTYPE body [<!ENTITY x 'boom'>]><body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'>\
             <message xmlns='jabber:client' to='romeo@example.test'><body>&x;</body></message></body>"
        ),
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'><stream:stream \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' to='evil.test'/></body>"
        ),
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'><message xmlns='jabber:client' \
             to='romeo@example.test'><body>hi</body></message></stream:stream></body>"
        ),
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'><message xmlns='jabber:client' \
             to='romeo@example.test'><body>&nbsp;</body></message></body>"
        ),
        format!(
            "<body xmlns='{NS_HTTPBIND}' sid='{sid}' rid='{rid}'><?xml-stylesheet href='x'?>\
             <presence xmlns='jabber:client'/></body>"
        ),
    ]
}

// docs/protocol.md §2, §4: hostile input (DTD, entities, stream injection, not-well-formed XML) is
// answered terminate/bad-request, and not one byte of it is forwarded: the upstream receives
// nothing but the stream close when the session ends.
#[tokio::test]
async fn hostile_payload_is_bad_request_and_nothing_is_forwarded() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let probe = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-0", FEATURES_SASL).await;
    let count = hostile_bodies(&probe.bosh, probe.bosh.rid + 1).len();
    drop(probe);
    // Each hostile body ends its session (docs/protocol.md §2), so each gets a session of its own.
    for i in 0..count {
        let Opened {
            mut bosh,
            upstream: mut server,
            ..
        } = Bosh::open(
            &gw,
            &mut up,
            DEFAULT_ATTRS,
            &format!("s-{}", i + 1),
            FEATURES_SASL,
        )
        .await;
        let body = hostile_bodies(&bosh, bosh.rid + 1).swap_remove(i);
        let answer = post(&mut bosh.conn, &body).await;
        assert_terminate(&answer, Some("bad-request"));
        assert_eq!(
            server.read_until(STREAM_END).await,
            STREAM_END,
            "only the stream close reached the upstream: {body}"
        );
        assert_eq!(server.read_to_eof().await, "");
    }
}

// docs/protocol.md §2 ("Bad input ends that session") and XEP-0124 §17.2 (a terminal condition
// ends the session): after `type='terminate' condition='bad-request'` the session is over, its
// upstream stream closed, its sid unknown.
#[tokio::test]
async fn hostile_payload_ends_the_session() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    let hostile = hostile_bodies(&bosh, bosh.rid + 1).remove(1);
    let answer = post(&mut bosh.conn, &hostile).await;
    assert_terminate(&answer, Some("bad-request"));
    // Within TIMEOUT (5 s), well before inactivity (30 s).
    assert_eq!(server.read_until(STREAM_END).await, STREAM_END);
    let answer = bosh.request("", "").await;
    assert_terminate(&answer, Some("item-not-found"));
}

// docs/protocol.md §4: `accept='gzip'`: a response at least gzip_min_bytes long is compressed when
// the client accepts gzip, and decompresses to the same <body/>; a small one is not.
#[tokio::test]
async fn gzip_response_when_accepted_and_large_enough() {
    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    c.bosh.gzip_min_bytes = 200;
    let gw = start_gateway(c).await;
    let gzip = ("Accept-Encoding", "gzip, deflate");

    let mut conn = HttpConn::connect(gw.addr).await;
    let request = session_request(FIRST_RID, DEFAULT_ATTRS);
    conn.send("POST", "/http-bind", &[XML, gzip], request.as_bytes())
        .await;
    up.next().await.answer_stream("s-gz", FEATURES_SASL).await;
    let r = conn.response().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-encoding"), Some("gzip"), "{r:?}");
    let mut created = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut created)
        .expect("a gzip body");
    assert!(created.len() >= 200, "{created}");
    let root = assert_alive(&created);
    assert_eq!(root.attr("authid"), Some("s-gz"), "{created}");
    assert_eq!(
        root.children,
        vec![(NS_STREAM.to_string(), "features".to_string())],
        "{created}"
    );

    let small = format!(
        "<body xmlns='{NS_HTTPBIND}' sid='0123456789abcdef0123456789abcdef' rid='{}'/>",
        FIRST_RID + 1
    );
    let r = conn
        .request("POST", "/http-bind", &[XML, gzip], small.as_bytes())
        .await;
    assert_eq!(r.header("content-encoding"), None, "{r:?}");
    assert_terminate(&check_ok(&r), Some("item-not-found"));
}

// docs/protocol.md §4 (XEP-0124 §5: clients use HTTP/1.1 persistent connections): several requests
// of a session travel on one TCP connection.
#[tokio::test]
async fn requests_share_one_keep_alive_connection() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    for n in 1..=3 {
        let ping = format!(
            "<iq xmlns='jabber:client' type='get' id='p{n}'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        bosh.send("", &ping).await;
        assert_eq!(server.read_until("</iq>").await, ping);
        server
            .write(&format!("<iq type='result' id='p{n}'/>"))
            .await;
        let r = bosh.conn.response().await;
        assert_ne!(r.header("connection"), Some("close"), "{r:?}");
        assert_eq!(ids(&check_ok(&r)), vec![format!("p{n}")]);
    }
}

// ---------------------------------------------------------------------------------------------
// Holding
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4 (XEP-0124 §8): a held request with nothing to say is answered empty after
// `wait` seconds.
#[tokio::test]
async fn held_request_with_nothing_to_say_is_answered_empty_after_wait() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    // The upstream connection stays open (and silent) for the whole test.
    let Opened {
        mut bosh,
        created,
        upstream: _server,
        ..
    } = Bosh::open(&gw, &mut up, " wait='1' hold='1'", "s-1", FEATURES_SASL).await;
    assert_eq!(parse_body(&created).attr("wait"), Some("1"), "{created}");
    let asked = Instant::now();
    let answer = bosh.request("", "").await;
    let waited = asked.elapsed();
    let root = assert_alive(&answer);
    assert!(root.children.is_empty(), "{answer}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(3000),
        "answered after {waited:?}, expected about one second"
    );
}

// docs/protocol.md §4 (XEP-0124 §8): at most `hold` requests are held; with hold=1 a second request
// makes the first return at once, and the second is the one that carries the next stanza.
#[tokio::test]
async fn second_request_releases_the_held_one_at_once() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "").await;
    let asked = Instant::now();
    let mut second = bosh.send_on_new_connection("", "").await;
    let first = bosh.response().await;
    let waited = asked.elapsed();
    assert!(assert_alive(&first).children.is_empty(), "{first}");
    assert!(
        waited < Duration::from_secs(2),
        "the held request returned after {waited:?}; wait is 10 s"
    );
    server
        .write("<message id='m1'><body>x</body></message>")
        .await;
    let answer = check_ok(&second.response().await);
    assert_alive(&answer);
    assert_eq!(ids(&answer), vec!["m1"], "{answer}");
}

// ---------------------------------------------------------------------------------------------
// No loss
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4 (XEP-0124 §14.3): a response lost with its HTTP connection is recovered by
// repeating the rid: the client gets exactly the stanzas it carried, once, and the next rid
// continues without duplicates. The repeated request's payload is not forwarded twice.
#[tokio::test]
async fn response_lost_with_its_connection_is_recovered_by_repeating_the_rid() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;

    // The request is held once its payload has gone upstream; then its connection dies.
    let lost = bosh.next("", "<presence/>");
    let mut doomed = HttpConn::connect(gw.addr).await;
    doomed
        .send("POST", "/http-bind", &[XML], lost.as_bytes())
        .await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");

    // The stanzas are answered on that connection, and the answer is lost with it. (A held
    // request whose connection closes first is answered empty at once, and the stanzas go to
    // the next request instead, so the stanzas come before the connection dies here.)
    server
        .write("<message id='s1'/><message id='s2'/><message id='s3'/>")
        .await;
    let _lost_answer = doomed.response().await;
    drop(doomed);
    let answer = post_once(gw.addr, &lost).await;
    assert_eq!(ids(&answer), vec!["s1", "s2", "s3"], "{answer}");
    assert_alive(&answer);

    // The next rid carries only what came after.
    bosh.send("", "<iq xmlns='jabber:client' type='get' id='marker'/>")
        .await;
    assert_eq!(
        server.read_until("/>").await,
        "<iq xmlns='jabber:client' type='get' id='marker'/>",
        "the repeated request's payload was forwarded again"
    );
    server.write("<message id='s4'/>").await;
    let answer = bosh.response().await;
    assert_eq!(ids(&answer), vec!["s4"], "{answer}");
}

// docs/protocol.md §4 (XEP-0124 §14.3): a client that repeats a rid whose request is still held (it
// gave up on the first connection, which is in fact alive) gets the stanzas on the repeat, and
// the superseded connection is not told that the live session is gone: both get the same
// answer.
#[tokio::test]
async fn repeated_rid_while_held_does_not_terminate_the_superseded_connection() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    let request = bosh.next("", "<presence/>");
    bosh.conn
        .send("POST", "/http-bind", &[XML], request.as_bytes())
        .await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    let mut retry = HttpConn::connect(gw.addr).await;
    retry
        .send("POST", "/http-bind", &[XML], request.as_bytes())
        .await;
    server.write("<message id='r1'/>").await;
    let retried = check_ok(&retry.response().await);
    assert_eq!(ids(&retried), vec!["r1"], "{retried}");
    let first = bosh.response().await;
    assert_eq!(first, retried, "both connections get the same answer");
}

/// The messages the scale test's upstream sends: `<message id='N'>`, N counting from 1.
fn numbered_messages(from: usize, to: usize) -> String {
    (from..=to)
        .map(|n| {
            format!("<message id='{n}' to='juliet@example.test/balcony'><body>{n}</body></message>")
        })
        .collect()
}

// docs/protocol.md §4: no stanza is lost or duplicated while the session lives, at scale and over
// real HTTP: 10,000 stanzas polled with rid + 1, every 50th request's connection closed right
// after sending and the rid repeated on a fresh connection.
#[tokio::test]
async fn ten_thousand_stanzas_arrive_once_in_order_across_dropped_connections() {
    const TOTAL: usize = 10_000;
    const BATCH: usize = 100;
    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    // Small per-session buffer: each response carries a dozen stanzas or so, so the test
    // takes hundreds of requests and the upstream is pushed back by TCP meanwhile.
    c.limits.max_stanza_bytes = 1024;
    c.limits.max_buffered_bytes = 1024;
    let gw = start_gateway(c).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;

    let writer = tokio::spawn(async move {
        for start in (1..=TOTAL).step_by(BATCH) {
            server
                .write(&numbered_messages(start, start + BATCH - 1))
                .await;
        }
        server
    });

    let started = Instant::now();
    let mut received: Vec<usize> = Vec::with_capacity(TOTAL);
    let mut requests = 0usize;
    let mut dropped = 0usize;
    let run = async {
        while received.len() < TOTAL {
            requests += 1;
            let body = bosh.next("", "");
            if requests % 50 == 0 {
                // The connection dies right after the request is sent; the client repeats the
                // rid on a fresh one, which it keeps using.
                bosh.conn
                    .send("POST", "/http-bind", &[XML], body.as_bytes())
                    .await;
                bosh.conn = HttpConn::connect(gw.addr).await;
                dropped += 1;
            }
            let answer = post(&mut bosh.conn, &body).await;
            assert!(
                answer.starts_with(&format!("<body xmlns='{NS_HTTPBIND}'"))
                    && !answer.contains("type='terminate'"),
                "request {requests}: {answer}"
            );
            received.extend(ids(&answer).iter().map(|id| {
                id.parse::<usize>()
                    .unwrap_or_else(|_| panic!("id {id:?} in {answer}"))
            }));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("stalled after {} stanzas", received.len()));
    let elapsed = started.elapsed();

    let expected: Vec<usize> = (1..=TOTAL).collect();
    if received != expected {
        let first_bad = received
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(received.len().min(expected.len()));
        panic!(
            "{} stanzas received, first difference at index {first_bad}: got {:?}",
            received.len(),
            &received[first_bad..(first_bad + 5).min(received.len())]
        );
    }
    assert!(
        dropped >= 10,
        "only {dropped} dropped connections in {requests} requests"
    );
    let _server = tokio::time::timeout(TIMEOUT, writer)
        .await
        .expect("the upstream wrote everything")
        .expect("writer task");
    eprintln!(
        "{TOTAL} stanzas in {requests} requests ({dropped} dropped connections), {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Terminate, inactivity
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4 (XEP-0124 §13): the client's terminate forwards its payload, closes the
// upstream stream, is answered type='terminate', and so is every other held request; the sid
// is unknown afterwards.
#[tokio::test]
async fn client_terminate_forwards_payload_closes_upstream_and_answers_held_requests() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "").await;
    let mut terminate = bosh
        .send_on_new_connection(" type='terminate'", "<presence type='unavailable'/>")
        .await;
    assert_eq!(
        server.read_until(STREAM_END).await,
        format!("<presence type='unavailable'/>{STREAM_END}")
    );
    assert_terminate(&check_ok(&terminate.response().await), None);
    assert_terminate(&bosh.response().await, None);
    assert_eq!(
        server.read_to_eof().await,
        "",
        "the upstream socket is closed"
    );

    let answer = bosh.request("", "").await;
    assert_terminate(&answer, Some("item-not-found"));
}

// docs/protocol.md §4 (XEP-0124 §10): a session with no request for `inactivity` seconds is ended:
// its upstream stream is closed and its sid forgotten.
#[tokio::test]
async fn inactive_session_is_ended_and_its_upstream_stream_closed() {
    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    c.bosh.inactivity_secs = 1;
    let gw = start_gateway(c).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        created,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    let opened = Instant::now();
    assert_eq!(parse_body(&created).attr("inactivity"), Some("1"));
    assert_eq!(server.read_until(STREAM_END).await, STREAM_END);
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before the inactivity period"
    );
    assert_eq!(server.read_to_eof().await, "");
    let answer = bosh.request("", "").await;
    assert_terminate(&answer, Some("item-not-found"));
}

// ---------------------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §4, §6: a draining node answers a held request type='terminate'
// condition='system-shutdown' at once and then closes the upstream stream.
#[tokio::test]
async fn drain_terminates_held_request_with_system_shutdown() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    gw.gateway.shutdown.begin();
    assert_terminate(&bosh.response().await, Some("system-shutdown"));
    assert_eq!(server.read_until(STREAM_END).await, STREAM_END);
    assert_eq!(server.read_to_eof().await, "");
}

// docs/protocol.md §6: nothing in flight is silently dropped. A request that was already on its way
// when the client was told to leave still has its payload delivered upstream, before the
// stream is closed, and is answered with the same terminate body. (Stanzas from the server
// waiting in the session go out in that body: state_tests.rs.)
#[tokio::test]
async fn drain_still_delivers_a_request_already_on_its_way() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    gw.gateway.shutdown.begin();
    // The client's next request crossed the drain on the wire.
    let answer = bosh
        .request("", "<message xmlns='jabber:client' id='raced'/>")
        .await;
    assert_terminate(&answer, Some("system-shutdown"));
    let seen = server.read_until(STREAM_END).await;
    assert!(
        seen.contains("<message xmlns='jabber:client' id='raced'/>"),
        "the raced payload reached the server before the close: {seen}"
    );
}

// docs/protocol.md §6: a request on its way may need a connection of its own (a load balancer
// with no idle connection to this node opens one, a browser whose other connection is busy). The
// listener keeps taking connections while the drain lingers, so such a request still reaches
// its session and has its payload delivered, and a new session on such a connection is refused
// with 503 for the balancer to retry elsewhere. (Refused at the socket, a balancer retried the
// request on another node, which answered item-not-found.)
#[tokio::test]
async fn drain_still_delivers_a_request_on_a_new_connection() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    gw.gateway.shutdown.begin();
    assert_terminate(&bosh.response().await, Some("system-shutdown"));

    let raced = bosh.body(
        bosh.rid + 1,
        "",
        "<message xmlns='jabber:client' id='raced'/>",
    );
    assert_terminate(&post_once(gw.addr, &raced).await, Some("system-shutdown"));
    let mut fresh = HttpConn::connect(gw.addr).await;
    let body = session_request(FIRST_RID, DEFAULT_ATTRS);
    let reply = fresh
        .request("POST", "/http-bind", &[XML], body.as_bytes())
        .await;
    assert_eq!(reply.status, 503, "{reply:?}");
    // The session closes its stream once the linger is over.
    let seen = server.read_until(STREAM_END).await;
    assert!(seen.contains("id='raced'"), "{seen}");
    assert_eq!(up.connections(), 1);
}

// docs/protocol.md §4, §6 (XEP-0124 §15): while a drain lingers for requests on their way, a
// session with keys still answers and forwards only for its key: a replay of the held rid
// without it is not told how the session ended, and a stranger's payload never reaches the
// server, while the client's own does.
#[tokio::test]
async fn drain_linger_serves_only_the_key() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let ([k2, k1], attrs) = key_chain();
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, &attrs, "s-1", FEATURES_SASL).await;
    bosh.send(&format!(" key='{k2}'"), "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    // The stranger's connection is open before the drain, as a balancer's would be.
    let mut stranger = HttpConn::connect(gw.addr).await;
    let created = post(&mut stranger, &bosh.body(FIRST_RID, "", "")).await;
    assert_terminate(&created, Some("item-not-found"));
    gw.gateway.shutdown.begin();
    assert_terminate(&bosh.response().await, Some("system-shutdown"));

    let replay = post(&mut stranger, &bosh.body(bosh.rid, "", "<presence/>")).await;
    assert_terminate(&replay, Some("item-not-found"));
    let injected = bosh.body(
        bosh.rid + 1,
        "",
        "<message xmlns='jabber:client' id='injected'/>",
    );
    assert_terminate(
        &post(&mut stranger, &injected).await,
        Some("item-not-found"),
    );
    let answer = bosh
        .request(
            &format!(" key='{k1}'"),
            "<message xmlns='jabber:client' id='raced'/>",
        )
        .await;
    assert_terminate(&answer, Some("system-shutdown"));
    let seen = server.read_until(STREAM_END).await;
    assert!(seen.contains("id='raced'"), "{seen}");
    assert!(
        !seen.contains("injected"),
        "a stranger's payload was forwarded: {seen}"
    );
}

// docs/protocol.md §4, §6 (XEP-0124 §17.3): with drain.bosh_redirect, the held request is told
// condition='see-other-uri' with the URI in a <uri/> child.
#[tokio::test]
async fn drain_with_redirect_terminates_with_see_other_uri() {
    let mut up = Upstream::start().await;
    let mut c = bosh_config(up.addr);
    let uri = "https://other-node.example.test/http-bind?a=1&b=2";
    c.drain.bosh_redirect = Some(uri.into());
    let gw = start_gateway(c).await;
    let Opened {
        mut bosh,
        upstream: mut server,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-1", FEATURES_SASL).await;
    bosh.send("", "<presence/>").await;
    assert_eq!(server.read_until("<presence/>").await, "<presence/>");
    gw.gateway.shutdown.begin();
    let answer = bosh.response().await;
    let root = assert_terminate(&answer, Some("see-other-uri"));
    assert_eq!(
        root.children,
        vec![(NS_HTTPBIND.to_string(), "uri".to_string())],
        "{answer}"
    );
    assert!(
        answer.contains("<uri>https://other-node.example.test/http-bind?a=1&amp;b=2</uri>"),
        "{answer}"
    );
    assert_eq!(server.read_until(STREAM_END).await, STREAM_END);
}

// docs/protocol.md §6: a session request that arrives while the node drains is refused with
// system-shutdown, and nothing is dialled. (The request is already being read when the drain
// begins: `Expect: 100-continue` tells the test the gateway is reading its body.)
#[tokio::test]
async fn session_request_during_drain_is_system_shutdown() {
    let up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let body = session_request(FIRST_RID, DEFAULT_ATTRS);
    let mut conn = HttpConn::connect(gw.addr).await;
    let head = conn.head(
        "POST",
        "/http-bind",
        &[XML, ("Expect", "100-continue")],
        Some(body.len()),
    );
    conn.write_raw(head.as_bytes()).await;
    let interim = conn.response().await;
    assert_eq!(interim.status, 100, "{interim:?}");

    gw.gateway.shutdown.begin();
    conn.write_raw(body.as_bytes()).await;
    // HTTP 503 lets a load balancer retry on another node; the body still says why.
    let reply = conn.response().await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    assert_terminate(
        &String::from_utf8_lossy(&reply.body),
        Some("system-shutdown"),
    );
    assert_eq!(up.connections(), 0);
}

// ---------------------------------------------------------------------------------------------
// Sessions never share an upstream stream
// ---------------------------------------------------------------------------------------------

// docs/protocol.md §1: each session (here one BOSH, one WebSocket, same domain, same gateway) gets
// its own upstream stream; what each client sends arrives on its own connection only.
#[tokio::test]
async fn bosh_and_websocket_sessions_get_their_own_upstream_streams() {
    let mut up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let Opened {
        mut bosh,
        upstream: mut bosh_server,
        created,
        ..
    } = Bosh::open(&gw, &mut up, DEFAULT_ATTRS, "s-bosh", FEATURES_SASL).await;

    let mut ws = gw.ws().await;
    ws.send(&open_frame(DOMAIN)).await;
    let mut ws_server = up.next().await;
    ws_server.answer_stream("s-ws", FEATURES_SASL).await;
    let open = ws.recv().await;
    let _features = ws.recv().await;

    assert_eq!(
        up.connections(),
        2,
        "two sessions, two upstream connections"
    );
    assert_eq!(parse_body(&created).attr("authid"), Some("s-bosh"));
    assert_eq!(parse_standalone(&open).attr("id"), Some("s-ws"));

    let from_ws = "<message xmlns='jabber:client' to='a@example.test' id='from-ws'/>";
    let from_bosh = "<message xmlns='jabber:client' to='b@example.test' id='from-bosh'/>";
    ws.send(from_ws).await;
    bosh.send("", from_bosh).await;
    assert_eq!(ws_server.read_until("/>").await, from_ws);
    assert_eq!(bosh_server.read_until("/>").await, from_bosh);

    bosh_server.write("<message id='to-bosh'/>").await;
    ws_server.write("<message id='to-ws'/>").await;
    assert_eq!(ids(&bosh.response().await), vec!["to-bosh"]);
    assert_eq!(parse_standalone(&ws.recv().await).attr("id"), Some("to-ws"));
}

// The listener negotiates HTTP/2 too (h2c with prior knowledge, as a TLS-terminating proxy
// speaking HTTP/2 to its backends does): BOSH answers the same over it.
#[tokio::test]
async fn bosh_is_served_over_http2() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let up = Upstream::start().await;
    let gw = start_gateway(bosh_config(up.addr)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let body =
        format!("<body xmlns='{NS_HTTPBIND}' rid='1' to='elsewhere.test' wait='60' hold='1'/>");
    let req = http::Request::post("http://gateway/http-bind")
        .header("content-type", "text/xml; charset=utf-8")
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_terminate(&String::from_utf8_lossy(&text), Some("host-unknown"));
    assert_eq!(up.connections(), 0);
}
