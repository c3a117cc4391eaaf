//! Tests of browser input validation.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn parse(msg: &str) -> Result<ClientFrame, XmlError> {
    parse_client_frame(Bytes::copy_from_slice(msg.as_bytes()), &Limits::default())
}

fn parse_with(limits: Limits, msg: &str) -> Result<ClientFrame, XmlError> {
    parse_client_frame(Bytes::copy_from_slice(msg.as_bytes()), &limits)
}

fn assert_not_well_formed(msg: &str) {
    let result = parse(msg);
    assert!(
        matches!(result, Err(XmlError::NotWellFormed(_))),
        "{msg:?}: {result:?}"
    );
}

fn assert_injection(msg: &str) {
    let result = parse(msg);
    assert!(
        matches!(result, Err(XmlError::Injection(_))),
        "{msg:?}: {result:?}"
    );
}

// ---- Accepted input (RFC 7395 §3.3) ----

#[test]
fn client_open_is_decoded() {
    let frame = parse(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' from='juliet@example.org' version='1.0' xml:lang='en'/>",
    )
    .unwrap();
    assert_eq!(
        frame,
        ClientFrame::Open(OpenFrame {
            to: Some("example.org".into()),
            from: Some("juliet@example.org".into()),
            version: Some("1.0".into()),
            lang: Some("en".into()),
        })
    );
}

#[test]
fn client_open_values_are_unescaped_and_start_end_form_is_accepted() {
    let frame = parse(
        "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"ex&amp;ample&#46;org\"></open>",
    )
    .unwrap();
    assert_eq!(
        frame,
        ClientFrame::Open(OpenFrame {
            to: Some("ex&ample.org".into()),
            ..OpenFrame::default()
        })
    );
}

#[test]
fn client_open_under_a_prefix_is_recognised() {
    let frame =
        parse("<f:open xmlns:f='urn:ietf:params:xml:ns:xmpp-framing' to='example.org'/>").unwrap();
    assert!(matches!(frame, ClientFrame::Open(open) if open.to.as_deref() == Some("example.org")));
}

#[test]
fn client_close_is_recognised() {
    assert_eq!(
        parse("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>").unwrap(),
        ClientFrame::Close {
            see_other_uri: None
        }
    );
    assert_eq!(
        parse("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='wss://b.example/ws'/>").unwrap(),
        ClientFrame::Close {
            see_other_uri: Some("wss://b.example/ws".into())
        }
    );
}

#[test]
fn client_whitespace_message_is_a_keepalive() {
    assert_eq!(parse(" \r\n\t ").unwrap(), ClientFrame::Whitespace);
    assert_eq!(parse("").unwrap(), ClientFrame::Whitespace);
}

#[test]
fn client_stanza_is_forwarded_verbatim_without_copy() {
    let stanza = "<message to='romeo@example.net' type='chat'><body>Grüße &amp; &#x1F339; <![CDATA[<b>]]></body></message>";
    let msg = Bytes::from(format!("\n {stanza} \n"));
    let ClientFrame::Element(bytes) = parse_client_frame(msg.clone(), &Limits::default()).unwrap()
    else {
        panic!("expected an element")
    };
    assert_eq!(&bytes[..], stanza.as_bytes());
    assert_eq!(
        bytes.as_ptr(),
        msg[2..].as_ptr(),
        "a slice of the message, not a copy"
    );
}

#[test]
fn client_stanza_without_namespace_is_accepted() {
    assert!(matches!(parse("<presence/>"), Ok(ClientFrame::Element(_))));
    assert!(matches!(
        parse("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"),
        Ok(ClientFrame::Element(_))
    ));
}

#[test]
fn client_stream_level_elements_are_forwarded() {
    for msg in [
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>",
        "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
        "<r xmlns='urn:xmpp:sm:3'/>",
        "<a xmlns='urn:xmpp:sm:3' h='3'/>",
        "<stream:features/>",
    ] {
        assert!(matches!(parse(msg), Ok(ClientFrame::Element(_))), "{msg}");
    }
}

#[test]
fn client_allows_cdata_even_with_markup_inside() {
    assert!(matches!(
        parse("<message><body><![CDATA[</stream:stream><stream:stream>]]></body></message>"),
        Ok(ClientFrame::Element(_))
    ));
}

#[test]
fn client_allows_escaped_stream_markup_in_text() {
    assert!(matches!(
        parse("<message><body>&lt;/stream:stream&gt;</body></message>"),
        Ok(ClientFrame::Element(_))
    ));
}

#[test]
fn client_accepts_limits_exactly() {
    let limits = Limits {
        max_element_bytes: 30,
        max_depth: 3,
        max_attributes: 2,
    };
    assert!(parse_with(limits.clone(), "<a x='1' y='2'><b><c/></b></a>").is_ok());
}

// ---- Refused input (docs/protocol.md §2) ----

#[test]
fn client_rejects_xml_declaration() {
    assert_eq!(
        parse("<?xml version='1.0'?><message/>"),
        Err(XmlError::Restricted("processing instruction"))
    );
}

#[test]
fn client_rejects_doctype() {
    assert_eq!(
        parse("<!DOCTYPE message><message/>"),
        Err(XmlError::Restricted("DTD"))
    );
    assert_eq!(
        parse("<!doctype message><message/>"),
        Err(XmlError::Restricted("DTD"))
    );
}

#[test]
fn client_rejects_internal_entity_declaration() {
    assert_eq!(
        parse("<!DOCTYPE m [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;'>]><m>&lol2;</m>"),
        Err(XmlError::Restricted("DTD"))
    );
    assert_eq!(
        parse("<message><!ENTITY x 'y'></message>"),
        Err(XmlError::syntax("unknown markup after '<!'"))
    );
}

#[test]
fn client_rejects_unknown_entity() {
    assert_eq!(
        parse("<message><body>&xxe;</body></message>"),
        Err(XmlError::Restricted("entity reference"))
    );
    assert_eq!(
        parse("<message to='&nbsp;'/>"),
        Err(XmlError::Restricted("entity reference"))
    );
}

#[test]
fn client_rejects_processing_instruction() {
    assert_eq!(
        parse("<message><?evil x?></message>"),
        Err(XmlError::Restricted("processing instruction"))
    );
    assert_eq!(
        parse("<message/><?evil x?>"),
        Err(XmlError::Restricted("processing instruction"))
    );
}

#[test]
fn client_rejects_comment() {
    assert_eq!(
        parse("<!-- x --><message/>"),
        Err(XmlError::Restricted("comment"))
    );
    assert_eq!(
        parse("<message><!-- x --></message>"),
        Err(XmlError::Restricted("comment"))
    );
    assert_eq!(
        parse("<message><!-- unterminated"),
        Err(XmlError::Restricted("comment"))
    );
}

#[test]
fn client_rejects_stream_injection_in_body() {
    assert_injection("<message><body></stream:stream></body></message>");
    assert_injection("<message><body></stream:stream><stream:stream to='evil'>");
}

#[test]
fn client_rejects_stream_close_message() {
    assert_injection("</stream:stream>");
    assert_injection("<message/></stream:stream>");
    assert_injection("<message/>\n</stream:stream>");
}

#[test]
fn client_rejects_stream_header_as_payload() {
    assert_injection("<stream:stream to='example.org' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    assert_injection("<message><stream:stream/></message>");
    assert_injection("<message><s:stream xmlns:s='http://etherx.jabber.org/streams'/></message>");
    assert_injection("<message><stream xmlns='http://etherx.jabber.org/streams'/></message>");
    // An escaped namespace is the same namespace.
    assert_injection("<message><stream xmlns='http://etherx.jabber.org/stream&#x73;'/></message>");
    assert_injection("<message/><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>");
}

#[test]
fn client_rejects_nested_open_and_close() {
    assert_injection(
        "<message><open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='evil'/></message>",
    );
    assert_injection(
        "<iq><query xmlns='x'><close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/></query></iq>",
    );
    assert_injection("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/></open>");
}

#[test]
fn client_rejects_two_roots() {
    assert_not_well_formed("<message/><message/>");
    assert_not_well_formed("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/><presence/>");
}

#[test]
fn client_rejects_unknown_framing_root() {
    let result = parse("<restart xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
    assert!(
        matches!(result, Err(XmlError::InvalidNamespace(_))),
        "{result:?}"
    );
}

#[test]
fn client_rejects_open_without_framing_namespace() {
    for msg in ["<open to='example.org'/>", "<close xmlns='jabber:client'/>"] {
        let result = parse(msg);
        assert!(
            matches!(result, Err(XmlError::InvalidNamespace(_))),
            "{msg}: {result:?}"
        );
    }
}

#[test]
fn client_rejects_mismatched_and_unclosed_tags() {
    assert_not_well_formed("<z><x/></y>");
    assert_not_well_formed("<message><body></message></body>");
    assert_not_well_formed("<message><body>");
    assert_not_well_formed("<message");
    assert_not_well_formed("<message to='a");
    assert_not_well_formed("</message>");
}

#[test]
fn client_rejects_text_outside_the_root() {
    assert_not_well_formed("hello");
    assert_not_well_formed("hello<message/>");
    assert_not_well_formed("<message/>hello");
    assert_not_well_formed("<![CDATA[x]]>");
}

#[test]
fn client_rejects_bad_utf8_and_control_characters() {
    let msg = Bytes::from_static(b"<message><body>\xc3\x28</body></message>");
    assert!(matches!(
        parse_client_frame(msg, &Limits::default()),
        Err(XmlError::NotWellFormed(_))
    ));
    assert_not_well_formed("<message><body>\u{0}</body></message>");
    assert_not_well_formed("<message><body>&#0;</body></message>");
}

#[test]
fn client_rejects_bad_attribute_syntax() {
    for msg in [
        "<message to=a/>",
        "<message to/>",
        "<message to='a' to='b'/>",
        "<message to='<'/>",
        "<message a:b='1'/>",
        "<p:message/>",
        "<message xmlns:xmlns='x'/>",
        "<message xmlns:xml='urn:not-xml'/>",
        "<message to='a'type='chat'/>",
        "<message to='a' type=\"chat\"id='1'><body/></message>",
        "<message><body xml:lang='en'a='b'/></message>",
        "<message =''/>",
        "<message \"to\"='a'/>",
    ] {
        assert_not_well_formed(msg);
    }
}

// XML §3.1: whitespace of any kind separates attributes, and may end the tag.
#[test]
fn client_accepts_any_whitespace_after_an_attribute() {
    for msg in [
        "<message to='a'\ttype='chat' />",
        "<message to=\"a\"\r\ntype='chat'\n><body a='\"'\n/></message>",
    ] {
        assert!(matches!(parse(msg), Ok(ClientFrame::Element(_))), "{msg:?}");
    }
}

// Namespaces in XML §3: no prefix but `xml` may be bound to the XML namespace, none to the
// xmlns namespace; the server's parser refuses such a binding and ends the stream. Found by
// the client_frame fuzz target (the first message is its minimized input).
#[test]
fn client_rejects_prefix_bound_to_a_reserved_namespace() {
    for msg in [
        "<message>m<op xmlns:f='http://www.w3.org/XML/1998/namespace'/>'></message>",
        "<message xmlns:f='http://www.w3.org/2000/xmlns/'/>",
        "<message xmlns:f='http://www.w3.org/XML/1998/namespac&#x65;'/>",
        // Neither may be the default namespace either.
        "<message><x xmlns='http://www.w3.org/XML/1998/namespace'/></message>",
        "<message><x xmlns='http://www.w3.org/2000/xmln&#x73;/'/></message>",
    ] {
        assert_not_well_formed(msg);
    }
    assert!(matches!(
        parse("<message xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>"),
        Ok(ClientFrame::Element(_))
    ));
}

#[test]
fn client_rejects_over_deep_nesting() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        parse_with(limits, "<a><b><c><d/></c></b></a>"),
        Err(XmlError::TooDeep)
    );
    let deep = format!("<m>{}", "<a>".repeat(100));
    assert_eq!(parse(&deep), Err(XmlError::TooDeep));
}

// A missing space is reported as such whatever comes after it: the tag was checked for it
// before its attributes were counted, and still is.
#[test]
fn missing_whitespace_is_reported_before_the_attribute_count() {
    let limits = Limits {
        max_attributes: 1,
        ..Limits::default()
    };
    assert_eq!(
        parse_with(limits, "<a b='1' c='2'd='3'/>"),
        Err(XmlError::syntax("no whitespace between attributes"))
    );
}

#[test]
fn client_rejects_too_many_attributes() {
    let limits = Limits {
        max_attributes: 2,
        ..Limits::default()
    };
    assert_eq!(
        parse_with(limits, "<a x='1' y='2' z='3'/>"),
        Err(XmlError::TooManyAttributes)
    );
}

#[test]
fn client_rejects_oversized_message_before_parsing() {
    let limits = Limits {
        max_element_bytes: 20,
        ..Limits::default()
    };
    assert_eq!(
        parse_with(
            limits.clone(),
            "<message><body>much too long</body></message>"
        ),
        Err(XmlError::TooLarge)
    );
    // Even garbage is refused for its size first.
    assert_eq!(
        parse_with(limits, &"\u{0}".repeat(21)),
        Err(XmlError::TooLarge)
    );
}

proptest! {
    // docs/protocol.md §2: never a panic, never bytes passed on from bad input.
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let limits = Limits { max_element_bytes: 300, max_depth: 5, max_attributes: 4 };
        let _ = parse_client_frame(Bytes::from(data), &limits);
    }

    #[test]
    fn mutated_stanzas_never_panic_and_accepted_ones_reparse(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..5),
    ) {
        let mut msg = b"<message to='a@b' xmlns='jabber:client'><body>x &amp; y</body><x xmlns='urn:e'><open/><![CDATA[z]]></x></message>".to_vec();
        for (at, byte) in edits {
            let at = at % msg.len();
            msg[at] = b"<>/'\"=&;:! ?x\xff"[usize::from(byte) % 14];
        }
        if let Ok(ClientFrame::Element(bytes)) = parse_client_frame(Bytes::from(msg), &Limits::default()) {
            crate::xml::testutil::standalone_root(&bytes);
        }
    }
}

/// `cargo test --release -- --ignored --nocapture client_cost`: prints ns per message.
#[test]
#[ignore]
fn client_cost_per_message() {
    let msg = Bytes::from_static(b"<message to='romeo@example.net' type='chat' id='m1'><body>Hello there, how are you doing today? &amp; more text</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>");
    let count = 200_000u32;
    let limits = Limits::default();
    let start = std::time::Instant::now();
    for _ in 0..count {
        let frame = parse_client_frame(msg.clone(), &limits).unwrap();
        std::hint::black_box(frame);
    }
    let elapsed = start.elapsed();
    println!(
        "client: {} bytes/message, {:.0} ns/message",
        msg.len(),
        elapsed.as_nanos() as f64 / f64::from(count)
    );
}

// ---- Text already known to be UTF-8 (a WebSocket text message) ----

/// `parse_client_text` skips only the UTF-8 check: for any string it answers exactly as
/// `parse_client_frame` does, control characters, U+FFFE/U+FFFF and size included.
#[test]
fn text_known_as_utf8_is_judged_as_bytes_are() {
    let limits = Limits {
        max_element_bytes: 85,
        ..Limits::default()
    };
    let cases = [
        "<message xmlns='jabber:client'><body>é ✓ 😀</body></message>",
        "<message xmlns='jabber:client'><body>nul\0</body></message>",
        "<message xmlns='jabber:client'><body>esc\x1b</body></message>",
        "<message xmlns='jabber:client'><body>\u{FFFE}</body></message>",
        "<message xmlns='jabber:client'><body>\u{FFFF}</body></message>",
        "<message xmlns='jabber:client' id='\t\r\n'/>",
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>",
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        " \n ",
        "<message xmlns='jabber:client'><body>longer than the limit that is set here</body></message>",
    ];
    for case in cases {
        assert_eq!(
            parse_client_text(case, &limits),
            parse_with(limits.clone(), case),
            "{case:?}"
        );
    }
    assert!(matches!(
        parse_client_text(
            "<message xmlns='jabber:client'><body>\x07</body></message>",
            &limits
        ),
        Err(XmlError::NotWellFormed(_))
    ));
}

proptest! {
    #[test]
    fn any_text_is_judged_as_its_bytes_are(text in "\\PC{0,40}|[\\x00-\\x20<>a-z'=/ ]{0,40}") {
        let limits = Limits::default();
        prop_assert_eq!(parse_client_text(text.clone(), &limits), parse(&text));
    }
}
