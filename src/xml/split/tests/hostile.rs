//! The splitter against hostile and broken input from the server (docs/protocol.md §2): every
//! refusal is an error, never a panic or bytes passed on.

use super::*;

#[test]
fn splitter_rejects_doctype() {
    let err = split_all(b"<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream>")
        .unwrap_err();
    assert_eq!(err, XmlError::Restricted("DTD"));
    assert_eq!(
        after_header("<!DOCTYPE foo>").unwrap_err(),
        XmlError::Restricted("DTD")
    );
}

#[test]
fn splitter_rejects_internal_entity_declaration_without_waiting_for_its_end() {
    let mut splitter = StreamSplitter::new(Limits::default());
    splitter
        .buffer_mut()
        .extend_from_slice(b"<!DOCTYPE x [<!ENTITY lol 'lol'>");
    assert_eq!(splitter.next_item(), Err(XmlError::Restricted("DTD")));
}

#[test]
fn splitter_rejects_unknown_entity() {
    let err = after_header("<message><body>&xxe;</body></message>").unwrap_err();
    assert_eq!(err, XmlError::Restricted("entity reference"));
    let err = after_header("<message to='&xxe;'/>").unwrap_err();
    assert_eq!(err, XmlError::Restricted("entity reference"));
}

#[test]
fn splitter_rejects_processing_instruction() {
    assert_eq!(
        after_header("<?php echo 1; ?>").unwrap_err(),
        XmlError::Restricted("processing instruction")
    );
    assert_eq!(
        after_header("<message><?pi x?></message>").unwrap_err(),
        XmlError::Restricted("processing instruction")
    );
    assert_eq!(
        split_all(b"<?xml-stylesheet href='x'?>").unwrap_err(),
        XmlError::Restricted("processing instruction")
    );
}

#[test]
fn splitter_rejects_comment() {
    assert_eq!(
        after_header("<!-- hi -->").unwrap_err(),
        XmlError::Restricted("comment")
    );
    assert_eq!(
        after_header("<message><!-- hi --></message>").unwrap_err(),
        XmlError::Restricted("comment")
    );
    assert_eq!(
        split_all(b"<!-- before header").unwrap_err(),
        XmlError::Restricted("comment")
    );
}

#[test]
fn splitter_rejects_stream_close_inside_an_element() {
    let err = after_header("<message><body></stream:stream>").unwrap_err();
    assert!(matches!(err, XmlError::NotWellFormed(_)), "{err:?}");
}

#[test]
fn splitter_rejects_wrong_stream_namespace() {
    for input in [
        "<stream:stream xmlns:stream='urn:wrong'>",
        "<stream:stream xmlns='jabber:client'>",
        "<stream xmlns='jabber:client'>",
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams/'>",
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>",
    ] {
        let input = if input.ends_with('>') {
            input.to_owned()
        } else {
            format!("{input}>")
        };
        let err = split_all(input.as_bytes()).unwrap_err();
        assert_eq!(err.reason(), "invalid_namespace", "{input}");
    }
}

#[test]
fn splitter_rejects_text_and_cdata_at_stream_level() {
    assert!(matches!(
        after_header("hello"),
        Err(XmlError::NotWellFormed(_))
    ));
    assert!(matches!(
        after_header("<![CDATA[x]]>"),
        Err(XmlError::NotWellFormed(_))
    ));
    assert!(matches!(
        split_all(b"hello <stream:stream>"),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn splitter_rejects_mismatched_and_stray_end_tags() {
    for body in [
        "<z><x/></y>",
        "<message></presence>",
        "</message>",
        "<a></a ></b>",
    ] {
        let err = after_header(body).unwrap_err();
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{body}: {err:?}");
    }
}

#[test]
fn splitter_rejects_bad_syntax_and_characters() {
    for body in [
        "<message to=a/>",
        "<message to='a' to='b'/>",
        "<message to/>",
        "<message a='<'/>",
        "<1message/>",
        "<message>\u{1}</message>",
        "<message xmlns:p=''/>",
        "<p:message/>",
        "<message p:a='1'/>",
        "<message>a & b</message>",
    ] {
        let err = after_header(body).unwrap_err();
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{body}: {err:?}");
    }
    let mut bad_utf8 = HEADER.as_bytes().to_vec();
    bad_utf8.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    assert!(matches!(
        split_all(&bad_utf8),
        Err(XmlError::NotWellFormed(_))
    ));
}

// Namespaces in XML §3: only `xml` may be bound to the XML namespace and no prefix to the
// xmlns namespace, in an element or in the stream header (the same rule the client_frame fuzz
// target found missing in browser messages).
#[test]
fn splitter_rejects_prefix_bound_to_a_reserved_namespace() {
    for body in [
        "<message><op xmlns:f='http://www.w3.org/XML/1998/namespace'/></message>",
        "<message xmlns:f='http://www.w3.org/2000/xmlns/'/>",
    ] {
        let err = after_header(body).unwrap_err();
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{body}: {err:?}");
    }
    let header = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns:f='http://www.w3.org/XML/1998/namespace'>";
    assert!(matches!(
        split_all(header.as_bytes()),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn splitter_rejects_over_deep_nesting() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let ok = format!("{HEADER}<a><b><c><d/></c></b></a>");
    assert!(split_with(limits.clone(), ok.as_bytes()).is_ok());
    let deep = format!("{HEADER}<a><b><c><d><e/></d></c></b></a>");
    assert_eq!(split_with(limits, deep.as_bytes()), Err(XmlError::TooDeep));
    let very_deep = format!("{HEADER}{}", "<a>".repeat(10_000));
    assert_eq!(split_all(very_deep.as_bytes()), Err(XmlError::TooDeep));
}

#[test]
fn splitter_rejects_too_many_attributes() {
    let limits = Limits {
        max_attributes: 3,
        ..Limits::default()
    };
    let ok = format!("{SHORT_HEADER}<message a='1' b='2' c='3'/>");
    assert!(split_with(limits.clone(), ok.as_bytes()).is_ok());
    let many = format!("{SHORT_HEADER}<message a='1' b='2' c='3' d='4'/>");
    assert_eq!(
        split_with(limits.clone(), many.as_bytes()),
        Err(XmlError::TooManyAttributes)
    );
    let header =
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='1' b='2' c='3'>";
    assert_eq!(
        split_with(limits, header.as_bytes()),
        Err(XmlError::TooManyAttributes)
    );
}

#[test]
fn splitter_rejects_oversized_element() {
    let limits = Limits {
        max_element_bytes: 100,
        ..Limits::default()
    };
    let body = "x".repeat(100);
    let big = format!("{SHORT_HEADER}<message><body>{body}</body></message>");
    assert_eq!(
        split_with(limits.clone(), big.as_bytes()),
        Err(XmlError::TooLarge)
    );
    let fits = format!(
        "{SHORT_HEADER}<message><body>{}</body></message>",
        "x".repeat(68)
    );
    assert!(split_with(limits, fits.as_bytes()).is_ok());
}

#[test]
fn splitter_fed_an_endless_element_stops_with_too_large() {
    let limits = Limits {
        max_element_bytes: 64 * 1024,
        ..Limits::default()
    };
    let mut splitter = StreamSplitter::new(limits);
    splitter.buffer_mut().extend_from_slice(HEADER.as_bytes());
    splitter.buffer_mut().extend_from_slice(b"<message><body>");
    assert!(splitter.next_item().unwrap().is_some());
    let chunk = [b'a'; 4096];
    let mut result = Ok(None);
    for _ in 0..1000 {
        splitter.buffer_mut().extend_from_slice(&chunk);
        result = splitter.next_item();
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(XmlError::TooLarge));
    assert!(splitter.buffered() <= 64 * 1024 + 4096);
    // The error sticks.
    assert_eq!(splitter.next_item(), Err(XmlError::TooLarge));
}

#[test]
fn splitter_fed_an_endless_start_tag_or_header_stops_with_too_large() {
    let limits = Limits {
        max_element_bytes: 1024,
        ..Limits::default()
    };
    for prefix in [
        "<stream:stream a='".to_owned(),
        format!("{HEADER}<message a='"),
        "<?xml version='1.0".to_owned(),
        format!("{HEADER}</stream:stream"),
    ] {
        let mut splitter = StreamSplitter::new(limits.clone());
        splitter.buffer_mut().extend_from_slice(prefix.as_bytes());
        let mut result = Ok(None);
        for _ in 0..100 {
            splitter.buffer_mut().extend_from_slice(&[b' '; 100]);
            result = splitter.next_item();
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(XmlError::TooLarge), "{prefix}");
    }
}

// ---- Properties ----

/// Cuts `input` at the given points (taken modulo its length, sorted).
fn chunked(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for point in points.into_iter().chain([input.len()]) {
        chunks.push(input[from..point].to_vec());
        from = point;
    }
    chunks
}

#[test]
fn one_byte_at_a_time_gives_the_same_items() {
    let stream = prosody_stream();
    let items = split_chunks(Limits::default(), stream.chunks(1)).unwrap();
    assert_eq!(items, expected_items());
}

proptest! {
    // STYLE.md: any chunking of a valid stream yields the same elements.
    #[test]
    fn any_chunking_gives_the_same_items(cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let stream = prosody_stream();
        let chunks = chunked(&stream, &cuts);
        let items = split_chunks(Limits::default(), chunks.iter().map(Vec::as_slice)).unwrap();
        prop_assert_eq!(items, expected_items());
    }

    // Re-joining the elements, with the copied declarations taken out again, reproduces the
    // stream's content.
    #[test]
    fn elements_rejoin_to_the_stream_content(cuts in prop::collection::vec(any::<usize>(), 0..20)) {
        let stream = prosody_stream();
        let chunks = chunked(&stream, &cuts);
        let items = split_chunks(Limits::default(), chunks.iter().map(Vec::as_slice)).unwrap();
        let mut rejoined = String::new();
        for item in &items {
            if let StreamItem::Element(element) = item {
                let text = std::str::from_utf8(&element.bytes).unwrap();
                let name_end = text.find([' ', '/', '>']).unwrap();
                let (head, tail) = text.split_at(name_end);
                let tail = tail
                    .replacen(crate::xml::testutil::CLIENT_DECL, "", 1)
                    .replacen(crate::xml::testutil::STREAM_DECL, "", 1);
                rejoined.push_str(head);
                rejoined.push_str(&tail);
            }
        }
        let original: String = prosody_parts()
            .iter()
            .filter_map(|part| match part {
                Part::Element(text, _, _) => Some(*text),
                _ => None,
            })
            .collect();
        prop_assert_eq!(rejoined, original);
    }

    // docs/protocol.md §2: never a panic, whatever the server sends.
    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for input in [data.clone(), [HEADER.as_bytes(), &data].concat()] {
            let chunks = chunked(&input, &cuts);
            let _ = split_chunks(Limits { max_element_bytes: 300, max_depth: 5, max_attributes: 4 }, chunks.iter().map(Vec::as_slice));
        }
    }

    // Mutations of a valid stream reach deeper into the parser than random bytes.
    #[test]
    fn mutated_stream_never_panics_and_chunking_does_not_change_the_outcome(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = prosody_stream();
        for (at, byte) in edits {
            let at = at % stream.len();
            stream[at] = b"<>/'\"=&;:! ?x\xff"[usize::from(byte) % 14];
        }
        let whole = split_chunks(Limits::default(), [stream.as_slice()]);
        let chunks = chunked(&stream, &cuts);
        let pieces = split_chunks(Limits::default(), chunks.iter().map(Vec::as_slice));
        // Same items, or both refused (the error may be found at a different place first).
        match (&whole, &pieces) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "whole {:?} vs chunked {:?}", whole, pieces),
        }
    }
}

// ---- Cost ----

/// Splits `stream` fed in 4 KiB reads, as a socket delivers it: elements seen, time taken.
fn split_in_4k_reads(stream: &[u8]) -> (usize, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut splitter = StreamSplitter::new(Limits::default());
    let mut elements = 0;
    for chunk in stream.chunks(4096) {
        splitter.buffer_mut().reserve(4096);
        splitter.buffer_mut().extend_from_slice(chunk);
        while let Some(item) = splitter.next_item().unwrap() {
            if let StreamItem::Element(e) = item {
                std::hint::black_box(&e);
                elements += 1;
            }
        }
    }
    (elements, start.elapsed())
}

/// `cargo test --release -- --ignored --nocapture split_cost`: prints ns per element.
#[test]
#[ignore]
fn split_cost_per_element() {
    let stanza = "<message from='romeo@example.net/orchard' to='juliet@example.org/balcony' type='chat' id='m1'><body>Hello there, how are you doing today? &amp; more text</body><active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>";
    let count = 200_000;
    let mut stream = HEADER.as_bytes().to_vec();
    for _ in 0..count {
        stream.extend_from_slice(stanza.as_bytes());
    }
    let (elements, elapsed) = split_in_4k_reads(&stream);
    assert_eq!(elements, count);
    println!(
        "splitter: {} bytes/element, {:.0} ns/element",
        stanza.len(),
        elapsed.as_nanos() as f64 / count as f64
    );
}

/// `cargo test --release -- --ignored --nocapture split_cost`: a 200 KB element read in 4 KiB
/// pieces is scanned once, not once per read.
#[test]
#[ignore]
fn split_cost_of_a_large_element_read_in_pieces() {
    let mut stream = HEADER.as_bytes().to_vec();
    let body = "QUJD".repeat(50_000);
    let count = 50;
    for _ in 0..count {
        stream.extend_from_slice(format!("<iq type='result' id='v1'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{body}</BINVAL></PHOTO></vCard></iq>").as_bytes());
    }
    let (elements, elapsed) = split_in_4k_reads(&stream);
    assert_eq!(elements, count);
    println!(
        "splitter: {} bytes/element in 4 KiB reads, {:.0} µs/element",
        body.len() + 100,
        elapsed.as_micros() as f64 / count as f64
    );
}
