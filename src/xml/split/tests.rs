//! Tests of the upstream stream splitter.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::xml::testutil::{
    prosody_parts, prosody_stream, split_chunks, standalone_root, with_declarations, Part,
};

/// A header with one attribute, for tests of small limits.
const SHORT_HEADER: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='abc' version='1.0'>";

fn split_all(input: &[u8]) -> Result<Vec<StreamItem>, XmlError> {
    split_chunks(Limits::default(), [input])
}

fn split_with(limits: Limits, input: &[u8]) -> Result<Vec<StreamItem>, XmlError> {
    split_chunks(limits, [input])
}

/// Items after the stream header, for inputs that start with [`HEADER`].
fn after_header(body: &str) -> Result<Vec<StreamItem>, XmlError> {
    let mut items = split_all(format!("{HEADER}{body}").as_bytes())?;
    assert!(matches!(items.first(), Some(StreamItem::Header(_))));
    items.remove(0);
    Ok(items)
}

fn element_text(item: &StreamItem) -> &str {
    match item {
        StreamItem::Element(element) => std::str::from_utf8(&element.bytes).unwrap(),
        other => panic!("not an element: {other:?}"),
    }
}

/// The items the realistic stream must produce.
fn expected_items() -> Vec<StreamItem> {
    let mut items = Vec::new();
    let mut headers = 0;
    for part in prosody_parts() {
        match part {
            Part::Silent(_) => {}
            Part::Header(_) => {
                headers += 1;
                items.push(StreamItem::Header(StreamHeader {
                    from: Some("example.org".into()),
                    to: None,
                    id: Some(
                        if headers == 1 {
                            "6a1f0e4c-3c2b-4f39"
                        } else {
                            "second-stream"
                        }
                        .into(),
                    ),
                    version: Some("1.0".into()),
                    lang: Some("en".into()),
                    default_ns: Some(NS_CLIENT_STR.into()),
                }))
            }
            Part::Element(text, decls, kind) => items.push(StreamItem::Element(Element {
                bytes: Bytes::from(with_declarations(text, decls)),
                kind,
            })),
            Part::End(_) => items.push(StreamItem::End),
        }
    }
    items
}

const NS_CLIENT_STR: &str = crate::xml::NS_CLIENT;

// docs/protocol.md §2: upstream bytes become standalone top-level elements.
#[test]
fn realistic_stream_splits_into_expected_standalone_elements() {
    let items = split_all(&prosody_stream()).unwrap();
    assert_eq!(items, expected_items());
    for item in &items {
        if let StreamItem::Element(element) = item {
            let (ns, local) = standalone_root(&element.bytes);
            let expected_kind = ElementKind::of(ns.as_deref().map(str::as_bytes), local.as_bytes());
            assert_eq!(element.kind, expected_kind, "{local}");
        }
    }
}

// docs/protocol.md §2 / interop note: stream-level elements carry their own xmlns:stream.
#[test]
fn stream_prefixed_elements_carry_streams_declaration() {
    let items =
        after_header("<stream:features><sm xmlns='urn:xmpp:sm:3'/></stream:features>").unwrap();
    assert_eq!(
        element_text(&items[0]),
        "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
    );
}

#[test]
fn nested_use_of_stream_prefix_is_declared_on_the_root() {
    let items =
        after_header("<message><x xmlns='urn:example'><stream:note/></x></message>").unwrap();
    assert_eq!(
        element_text(&items[0]),
        "<message xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><x xmlns='urn:example'><stream:note/></x></message>"
    );
    standalone_root(element_text(&items[0]).as_bytes());
}

#[test]
fn element_declaring_its_own_namespaces_is_not_copied() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    assert!(matches!(
        splitter.next_item(),
        Ok(Some(StreamItem::Header(_)))
    ));
    splitter
        .buffer_mut()
        .extend_from_slice(b"<r xmlns='urn:xmpp:sm:3'/>");
    let start = splitter.buffer_mut().as_ptr();
    let Ok(Some(StreamItem::Element(element))) = splitter.next_item() else {
        panic!("expected an element")
    };
    assert_eq!(
        element.bytes.as_ptr(),
        start,
        "zero-copy slice of the read buffer"
    );
    assert_eq!(&element.bytes[..], b"<r xmlns='urn:xmpp:sm:3'/>");
}

#[test]
fn header_fields_are_decoded() {
    let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client' from='ex&amp;ample.org' to='juliet@example.org' id='a&#x27;b' version='1.0' xml:lang='fr'>";
    let items = split_all(input.as_bytes()).unwrap();
    assert_eq!(
        items,
        vec![StreamItem::Header(StreamHeader {
            from: Some("ex&ample.org".into()),
            to: Some("juliet@example.org".into()),
            id: Some("a'b".into()),
            version: Some("1.0".into()),
            lang: Some("fr".into()),
            default_ns: Some("jabber:client".into()),
        })]
    );
}

#[test]
fn any_prefix_for_the_streams_namespace_works() {
    let input = "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'><s:features/><message/></s:stream>";
    let items = split_all(input.as_bytes()).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(
        element_text(&items[1]),
        "<s:features xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'/>"
    );
    assert!(matches!(&items[1], StreamItem::Element(e) if e.kind == ElementKind::Features));
    assert_eq!(element_text(&items[2]), "<message xmlns='jabber:client'/>");
    assert_eq!(items[3], StreamItem::End);
}

#[test]
fn default_namespace_form_of_the_stream_root_works() {
    let input = "<stream xmlns='http://etherx.jabber.org/streams'><features/><message xmlns='jabber:client'/></stream>";
    let items = split_all(input.as_bytes()).unwrap();
    assert_eq!(
        element_text(&items[1]),
        "<features xmlns='http://etherx.jabber.org/streams'/>"
    );
    assert!(matches!(&items[1], StreamItem::Element(e) if e.kind == ElementKind::Features));
    assert_eq!(element_text(&items[2]), "<message xmlns='jabber:client'/>");
    assert_eq!(items[3], StreamItem::End);
}

#[test]
fn tls_proceed_and_failure_are_recognised() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    splitter.buffer_mut().extend_from_slice(
        b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
    );
    let mut kinds = Vec::new();
    while let Some(item) = splitter.next_item().unwrap() {
        if let StreamItem::Element(e) = item {
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            ElementKind::TlsProceed,
            ElementKind::TlsFailure,
            ElementKind::Other
        ]
    );
}

#[test]
fn whitespace_between_elements_is_dropped_and_not_buffered() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    assert!(splitter.next_item().unwrap().is_some());
    for _ in 0..1000 {
        splitter.buffer_mut().extend_from_slice(b" \n\t\r ");
        assert_eq!(splitter.next_item(), Ok(None));
        assert_eq!(splitter.buffered(), 0);
    }
}

#[test]
fn bytes_after_stream_end_are_ignored() {
    let items = after_header("<message/></stream:stream><message/>junk").unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1], StreamItem::End);
}

#[test]
fn empty_element_stream_root_is_header_then_end() {
    let items =
        split_all(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>").unwrap();
    assert!(matches!(
        items.as_slice(),
        [StreamItem::Header(_), StreamItem::End]
    ));
}

#[test]
fn reset_keeps_buffered_bytes_and_expects_a_new_header() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    splitter
        .buffer_mut()
        .extend_from_slice(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    assert!(matches!(
        splitter.next_item(),
        Ok(Some(StreamItem::Header(_)))
    ));
    assert!(matches!(
        splitter.next_item(),
        Ok(Some(StreamItem::Element(_)))
    ));
    splitter.reset();
    assert!(matches!(
        splitter.next_item(),
        Ok(Some(StreamItem::Header(_)))
    ));
}

#[test]
fn restart_without_reset_is_refused() {
    let err = after_header("<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
        .unwrap_err();
    assert_eq!(err.reason(), "injection");
    let err = after_header("<?xml version='1.0'?>").unwrap_err();
    assert_eq!(err, XmlError::Restricted("processing instruction"));
}

#[test]
fn nested_stream_and_framing_elements_from_the_server_pass() {
    // A remote user can put any payload in a stanza the server routes to us; refusing it
    // would let them end this session.
    let items = after_header(
        "<message><x xmlns='urn:example'><stream:stream/><open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/></x></message>",
    )
    .unwrap();
    standalone_root(element_text(&items[0]).as_bytes());
}

#[test]
fn splitter_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<StreamSplitter>();
    assert_send_sync::<StreamItem>();
}

#[test]
fn new_splitter_allocates_nothing() {
    let mut splitter = StreamSplitter::new(Limits::default());
    assert_eq!(splitter.buffer_mut().capacity(), 0);
    assert_eq!(splitter.buffered(), 0);
    assert!(!splitter.release_idle_memory());
}

#[test]
fn idle_memory_is_released_only_when_nothing_is_partial() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter.buffer_mut().reserve(4096);
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    splitter
        .buffer_mut()
        .extend_from_slice(b"<message><body>half");
    assert!(splitter.next_item().unwrap().is_some());
    assert_eq!(splitter.next_item(), Ok(None));
    assert!(!splitter.release_idle_memory());
    splitter
        .buffer_mut()
        .extend_from_slice(b"</body></message>");
    assert!(splitter.next_item().unwrap().is_some());
    assert_eq!(splitter.buffered(), 0);
    assert!(splitter.release_idle_memory());
    assert_eq!(splitter.buffer_mut().capacity(), 0);
    // Still usable afterwards.
    splitter.buffer_mut().extend_from_slice(b"<message/>");
    assert!(matches!(
        splitter.next_item(),
        Ok(Some(StreamItem::Element(_)))
    ));
}

#[test]
fn element_split_inside_a_reference_is_reassembled() {
    let chunks: [&[u8]; 4] = [
        HEADER.as_bytes(),
        b"<message><body>a &am",
        b"p; b ]",
        b"]&gt; c</body></message>",
    ];
    let items = split_chunks(Limits::default(), chunks).unwrap();
    assert_eq!(
        element_text(&items[1]),
        "<message xmlns='jabber:client'><body>a &amp; b ]]&gt; c</body></message>"
    );
}

#[test]
fn cdata_end_marker_split_across_reads_is_caught() {
    let chunks: [&[u8]; 3] = [
        HEADER.as_bytes(),
        b"<message><body>a ]",
        b"]> b</body></message>",
    ];
    assert!(matches!(
        split_chunks(Limits::default(), chunks),
        Err(XmlError::NotWellFormed(_))
    ));
}

mod hostile;
mod relayed;

// Elements that arrive whole are scanned with the thread's scratch scanner; one that arrives
// in pieces takes the scanner's state along. Two sessions on one thread, each with a partial
// element while the other uses the scratch, must each get their own element back.
#[test]
fn partial_elements_of_two_streams_on_one_thread_stay_apart() {
    let mut a = StreamSplitter::new(Limits::default());
    let mut b = StreamSplitter::new(Limits::default());
    let feed = |s: &mut StreamSplitter, bytes: &str| {
        s.buffer_mut().extend_from_slice(bytes.as_bytes());
        let mut items = Vec::new();
        while let Some(item) = s.next_item().unwrap() {
            items.push(item);
        }
        items
    };
    assert_eq!(feed(&mut a, HEADER).len(), 1);
    assert_eq!(feed(&mut b, HEADER).len(), 1);
    assert!(feed(&mut a, "<message to='a'><body>one ").is_empty());
    let whole_and_part = feed(&mut b, "<iq type='get' id='1'/><presence from='b'><show>a");
    assert_eq!(whole_and_part.len(), 1);
    assert_eq!(
        element_text(&whole_and_part[0]),
        "<iq xmlns='jabber:client' type='get' id='1'/>"
    );
    let a_done = feed(&mut a, "two</body></message>");
    let b_done = feed(&mut b, "way</show></presence>");
    assert_eq!(
        element_text(&a_done[0]),
        "<message xmlns='jabber:client' to='a'><body>one two</body></message>"
    );
    assert_eq!(
        element_text(&b_done[0]),
        "<presence xmlns='jabber:client' from='b'><show>away</show></presence>"
    );
}

// The scratch scanner keeps what ordinary stanzas need, and gives back what a large one took.
#[test]
fn the_scratch_scanner_gives_back_what_a_large_element_took() {
    let mut deep = String::from(HEADER);
    // 20 levels, each declaring 20 prefixes with long names: some 60 KB of declarations.
    for i in 0..20 {
        deep.push_str(&format!("<x{i}"));
        for j in 0..20 {
            deep.push_str(&format!(" xmlns:p{i}_{j}='urn:{}:{j}'", "n".repeat(100)));
        }
        deep.push('>');
    }
    for i in (0..20).rev() {
        deep.push_str(&format!("</x{i}>"));
    }
    let items = split_all(deep.as_bytes()).unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        crate::xml::scan::scratch_capacity() <= 4096,
        "{}",
        crate::xml::scan::scratch_capacity()
    );
    let items = after_header("<message><body>hi</body></message>").unwrap();
    assert_eq!(items.len(), 1);
    assert!(
        crate::xml::scan::scratch_capacity() > 0,
        "an ordinary element's memory is kept"
    );
}
