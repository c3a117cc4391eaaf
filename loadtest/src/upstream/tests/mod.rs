//! The fixture through real sockets on 127.0.0.1: what a client on the wire sees.

mod client;

use std::time::Duration;

use client::{attr, attr_count, Client};
use xmpp_gateway::xml::split::StreamItem;

use super::{start, Config, Fixture};

const PASSWORD: &str = "test-password";

/// A fixture on a free port; few SCRAM iterations keep the tests quick.
async fn fixture(tls: bool) -> Fixture {
    start(Config {
        password: PASSWORD.into(),
        tls,
        iterations: 16,
        ..Config::default()
    })
    .await
    .expect("fixture starts")
}

#[tokio::test]
async fn scram_over_starttls_and_plain_over_tcp_exchange_messages_stamped_with_the_sender() {
    let fixture = fixture(true).await;
    let ca = fixture.ca_der().expect("a CA with --tls").clone();

    let mut alice = Client::connect(fixture.addr()).await;
    let header = alice.open("localhost").await;
    assert_eq!(header.from.as_deref(), Some("localhost"));
    assert_eq!(header.version.as_deref(), Some("1.0"));
    assert_eq!(header.default_ns.as_deref(), Some("jabber:client"));
    assert!(header.id.is_some());
    let features = alice.element().await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-tls"),
        "{features}"
    );
    alice.starttls(&ca, "localhost").await;
    alice.open("localhost").await;
    let features = alice.element().await;
    assert!(!features.contains("starttls"), "{features}");
    assert!(
        features.contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "{features}"
    );
    let answer = alice.auth_scram("alice", PASSWORD).await;
    assert!(answer.starts_with("<success"), "{answer}");
    let features = alice.restart("localhost").await;
    assert!(
        features.contains("urn:ietf:params:xml:ns:xmpp-session"),
        "{features}"
    );
    let alice_jid = alice.bind("phone").await;
    assert_eq!(alice_jid, "alice@localhost/phone");

    let (mut bob, bob_jid) = Client::plain_session(fixture.addr(), "bob", "desk").await;
    assert_eq!(bob_jid, "bob@localhost/desk");

    // A forged `from` is replaced, not duplicated.
    alice
        .send(
            "<message to='bob@localhost/desk' from='mallory@localhost/x' id='m1' type='chat'>\
             <body>hello bob</body></message>",
        )
        .await;
    let got = bob.element().await;
    assert_eq!(attr(&got, "from").as_deref(), Some("alice@localhost/phone"));
    assert_eq!(attr_count(&got, "from"), 1, "{got}");
    assert_eq!(attr(&got, "id").as_deref(), Some("m1"));
    assert!(got.contains("<body>hello bob</body>"), "{got}");

    // To a bare JID: one online resource gets it.
    bob.send("<message to='alice@localhost' id='m2'><body>hi alice</body></message>")
        .await;
    let got = alice.element().await;
    assert_eq!(attr(&got, "from").as_deref(), Some("bob@localhost/desk"));
    assert!(got.contains("<body>hi alice</body>"), "{got}");
    assert!(fixture.counters().routed >= 2);
    assert_eq!(fixture.counters().logins, 2);
}

#[tokio::test]
async fn wrong_password_is_not_authorized_for_plain_and_scram() {
    let fixture = fixture(false).await;
    let mut client = Client::connect(fixture.addr()).await;
    client.open("localhost").await;
    client.element().await;
    let answer = client.auth_plain("carol", "wrong").await;
    assert!(answer.starts_with("<failure"), "{answer}");
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    // The stream stays open for another try (RFC 6120 §6.4.5).
    let answer = client.auth_scram("carol", "wrong").await;
    assert!(answer.contains("<not-authorized/>"), "{answer}");
    assert_eq!(fixture.counters().logins, 0);
}

#[tokio::test]
async fn ping_and_roster_are_answered_by_the_server() {
    let fixture = fixture(false).await;
    let (mut client, jid) = Client::plain_session(fixture.addr(), "dave", "r").await;
    client
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = client.element().await;
    assert_eq!(attr(&pong, "type").as_deref(), Some("result"), "{pong}");
    assert_eq!(attr(&pong, "id").as_deref(), Some("p1"));
    assert_eq!(attr(&pong, "from").as_deref(), Some("localhost"));
    assert_eq!(attr(&pong, "to"), Some(jid));
    client
        .send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = client.element().await;
    assert_eq!(attr(&roster, "type").as_deref(), Some("result"), "{roster}");
    assert!(
        roster.contains("<query xmlns='jabber:iq:roster'/>"),
        "{roster}"
    );
}

#[tokio::test]
async fn iq_to_an_offline_user_is_service_unavailable() {
    let fixture = fixture(false).await;
    let (mut client, _) = Client::plain_session(fixture.addr(), "erin", "r").await;
    client
        .send("<iq type='get' id='q1' to='nobody@localhost/x'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let error = client.element().await;
    assert_eq!(attr(&error, "type").as_deref(), Some("error"), "{error}");
    assert_eq!(attr(&error, "id").as_deref(), Some("q1"));
    assert_eq!(attr(&error, "from").as_deref(), Some("nobody@localhost/x"));
    assert!(error.contains("<service-unavailable"), "{error}");
}

#[tokio::test]
async fn unknown_domain_is_host_unknown() {
    let fixture = fixture(false).await;
    let mut client = Client::connect(fixture.addr()).await;
    client.open("elsewhere.example").await;
    let error = client.element().await;
    assert!(error.contains("<host-unknown"), "{error}");
    client.expect_end().await;
}

#[tokio::test]
async fn malformed_xml_is_not_well_formed() {
    let fixture = fixture(false).await;
    let mut client = Client::connect(fixture.addr()).await;
    client.open("localhost").await;
    client.element().await;
    client.send("<message><body>oops</message>").await;
    let error = client.element().await;
    assert!(error.contains("<not-well-formed"), "{error}");
    client.expect_end().await;
}

#[tokio::test]
async fn malformed_xml_after_bind_is_not_well_formed() {
    let fixture = fixture(false).await;
    let (mut client, _) = Client::plain_session(fixture.addr(), "frank", "r").await;
    client.send("<presence><x></presence>").await;
    let error = client.element().await;
    assert!(error.contains("<not-well-formed"), "{error}");
    client.expect_end().await;
}

#[tokio::test]
async fn binding_the_same_full_jid_again_kicks_the_first_with_conflict() {
    let fixture = fixture(false).await;
    let (mut first, _) = Client::plain_session(fixture.addr(), "gina", "same").await;
    let (mut second, _) = Client::plain_session(fixture.addr(), "gina", "same").await;
    let error = first.element().await;
    assert!(error.contains("<conflict"), "{error}");
    first.expect_end().await;
    // The new session is the one stanzas reach.
    let (mut other, _) = Client::plain_session(fixture.addr(), "hank", "r").await;
    other
        .send("<message to='gina@localhost/same'><body>x</body></message>")
        .await;
    let got = second.element().await;
    assert_eq!(attr(&got, "from").as_deref(), Some("hank@localhost/r"));
}

#[tokio::test]
async fn closing_the_stream_is_answered_and_the_user_goes_offline() {
    let fixture = fixture(false).await;
    let (mut leaving, _) = Client::plain_session(fixture.addr(), "ivy", "r").await;
    let (mut staying, _) = Client::plain_session(fixture.addr(), "jack", "r").await;
    leaving.send("</stream:stream>").await;
    leaving.expect_end().await;
    // Once the fixture has closed the socket its route is gone: the iq bounces.
    staying
        .send("<iq type='set' id='s1' to='ivy@localhost/r'><x xmlns='urn:example'/></iq>")
        .await;
    let error = staying.element().await;
    assert!(error.contains("<service-unavailable"), "{error}");
}

#[tokio::test]
async fn a_connection_that_does_not_bind_in_time_gets_connection_timeout() {
    let fixture = start(Config {
        pre_auth_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(fixture.addr()).await;
    // Nothing sent: the fixture opens its own stream to say why it closes.
    match client.item().await {
        Some(StreamItem::Header(_)) => {}
        other => panic!("expected a header, got {other:?}"),
    }
    let error = client.element().await;
    assert!(error.contains("<connection-timeout"), "{error}");
    client.expect_end().await;
}

#[tokio::test]
async fn require_tls_refuses_sasl_before_tls() {
    let fixture = start(Config {
        tls: true,
        require_tls: true,
        iterations: 16,
        ..Config::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(fixture.addr()).await;
    client.open("localhost").await;
    let features = client.element().await;
    assert!(features.contains("<required/>"), "{features}");
    assert!(!features.contains("<mechanisms"), "{features}");
    let answer = client.auth_plain("kim", "loadtest").await;
    assert!(answer.contains("<encryption-required/>"), "{answer}");
}
