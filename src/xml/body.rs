//! Validation of one BOSH request body from a browser (XEP-0124 §4, docs/protocol.md §2 and §4)
//! with the same scanner and rules as a WebSocket message: the `<body/>` wrapper and all it
//! holds pass the shared element scanner (well-formedness, no DTD, comment, processing
//! instruction or unknown entity, the depth and attribute limits, text only inside payload
//! elements), then each payload child must be what a WebSocket message must be: one standalone
//! element that cannot close or reopen the upstream stream
//! ([`parse_client_frame`](super::client::parse_client_frame)). Children are returned as slices
//! of the request, to be forwarded verbatim.
//!
//! What the attributes mean is the BOSH adapter's business; this module hands them over decoded.

use bytes::Bytes;
use quick_xml::events::BytesStart;

use super::client::{parse_checked_frame, ClientFrame};
use super::ns::OuterScope;
use super::scan::{ElementScanner, EndTag, Observer, Scan, StartTag};
use super::text::{attr_string, check_chars, leading_space};
use super::tokens::{check_declaration, Token, Tokens};
use super::{Limits, XmlError, NS_HTTPBIND, NS_XBOSH};

/// A valid request body.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClientBody {
    /// The wrapper's attributes in document order: names as written, values decoded.
    pub attributes: Vec<(String, String)>,
    /// Payload elements, each standalone, in order.
    pub children: Vec<Bytes>,
}

/// What a request document turned out to be.
#[derive(Debug, PartialEq)]
pub enum BodyDocument {
    /// A `<body/>` in the httpbind namespace, valid throughout.
    Body(ClientBody),
    /// Not a BOSH body at all (no root, or another root element): an HTTP error, not a session
    /// error.
    NotBody(&'static str),
}

/// Parses and validates one request body.
pub fn parse_client_body(data: &Bytes, limits: &Limits) -> Result<BodyDocument, XmlError> {
    check_chars(data)?;
    let start = prolog_end(data)?;
    let rest = data.get(start..).unwrap_or_default();
    match rest.first() {
        None => return Ok(BodyDocument::NotBody("no <body/> element")),
        Some(b'<') => {}
        Some(_) => return Err(XmlError::syntax("text outside the root element")),
    }
    // Another root is not a BOSH request at all, whatever else is wrong with it.
    let name_end = rest
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
        .unwrap_or(rest.len());
    if &rest[1..name_end] != b"body" && !rest.starts_with(b"<!") && !rest.starts_with(b"<?") {
        return Ok(BodyDocument::NotBody("root element is not <body/>"));
    }
    // The wrapper adds one level: a payload child may nest as deep as a WebSocket message.
    let wrapper_limits = Limits {
        max_element_bytes: usize::MAX,
        max_depth: limits.max_depth.saturating_add(1),
        max_attributes: limits.max_attributes,
    };
    let mut observer = BodyObserver::default();
    let scanned = ElementScanner::new(&wrapper_limits).scan(rest, &BoshScope, &mut observer);
    if let Some(why) = observer.not_body {
        return Ok(BodyDocument::NotBody(why));
    }
    let len = match scanned? {
        Scan::Complete(len) => len,
        Scan::Incomplete => return Err(XmlError::syntax("unclosed <body>")),
    };
    let trailing = rest.get(len..).unwrap_or_default();
    let trailing = trailing.get(leading_space(trailing)..).unwrap_or_default();
    if !trailing.is_empty() {
        return Err(
            if trailing.starts_with(b"<?") || trailing.starts_with(b"<!") {
                XmlError::Restricted("DTD, processing instruction or comment")
            } else {
                XmlError::syntax("content after </body>")
            },
        );
    }
    let mut body = ClientBody {
        attributes: observer.attributes,
        children: Vec::with_capacity(observer.children.len()),
    };
    for (from, to) in observer.children {
        let child = data.slice(start + from..start + to);
        // The whole body's characters were checked above.
        match parse_checked_frame(child, limits)? {
            ClientFrame::Element(el) => body.children.push(el),
            // Framing elements belong to WebSocket only.
            _ => return Err(XmlError::Injection("framing element inside a BOSH body")),
        }
    }
    Ok(BodyDocument::Body(body))
}

/// The attributes of a `<body/>` whose content was refused, so that the request can still be
/// tied to its session (sid, rid, key) and end it properly; `None` when not even the wrapper's
/// start tag can be read.
pub fn refused_body_attributes(data: &[u8]) -> Option<Vec<(String, String)>> {
    let data = data.strip_prefix(BOM).unwrap_or(data);
    let start = leading_space(data);
    let mut tokens = Tokens::new(data.get(start..)?);
    loop {
        match tokens.next().ok()? {
            Token::Event(
                quick_xml::events::Event::Start(tag) | quick_xml::events::Event::Empty(tag),
                _,
            ) => {
                if tag.name().as_ref() != b"body" {
                    return None;
                }
                let attributes = decoded_attributes(&tag).ok()?;
                let in_httpbind = attributes
                    .iter()
                    .any(|(name, value)| name == "xmlns" && value == NS_HTTPBIND);
                return in_httpbind.then_some(attributes);
            }
            // The document is refused already; what comes before the wrapper (a DTD, say)
            // is passed over to find it.
            Token::Event(_, _) => {}
            Token::Incomplete(_) => return None,
        }
    }
}

/// The scope a request body is read in: the document stands alone, except that the `xmpp:`
/// prefix of XEP-0206's attributes (`xmpp:version`, `xmpp:restart`) means `urn:xmpp:xbosh`
/// even where a client forgets to declare it. Nothing of the wrapper is forwarded, and payload
/// children are checked again on their own, where `xmpp:` means nothing.
struct BoshScope;

impl OuterScope for BoshScope {
    fn default_ns(&self) -> Option<&[u8]> {
        None
    }

    fn lookup(&self, prefix: &[u8]) -> Option<(usize, &[u8])> {
        (prefix == b"xmpp").then_some((0, NS_XBOSH.as_bytes()))
    }
}

/// UTF-8 byte order mark, which some clients put before the document.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A start tag's attributes: names as written, values decoded.
fn decoded_attributes(tag: &BytesStart<'_>) -> Result<Vec<(String, String)>, XmlError> {
    tag.attributes()
        .with_checks(true)
        .map(|attr| {
            let attr = attr.map_err(|_| XmlError::syntax("bad attribute syntax"))?;
            let name = std::str::from_utf8(attr.key.as_ref())
                .map_err(|_| XmlError::syntax("attribute name is not UTF-8"))?;
            Ok((name.to_owned(), attr_string(&attr.value)?))
        })
        .collect()
}

/// Where the root element may start: after a byte order mark, leading whitespace and one XML
/// declaration.
fn prolog_end(data: &[u8]) -> Result<usize, XmlError> {
    let mut at = if data.starts_with(BOM) { BOM.len() } else { 0 };
    at += leading_space(data.get(at..).unwrap_or_default());
    let rest = data.get(at..).unwrap_or_default();
    if rest.starts_with(b"<?") {
        match Tokens::new(rest).next()? {
            Token::Event(quick_xml::events::Event::Decl(decl), span) => {
                check_declaration(&decl, rest.get(span.clone()).unwrap_or_default())?;
                at += span.end;
                at += leading_space(data.get(at..).unwrap_or_default());
            }
            _ => return Err(XmlError::Restricted("processing instruction")),
        }
    }
    Ok(at)
}

/// Reads the wrapper, finds the payload children, refuses text between them.
#[derive(Default)]
struct BodyObserver {
    attributes: Vec<(String, String)>,
    /// Spans of the payload children in the scanned slice.
    children: Vec<(usize, usize)>,
    child_start: usize,
    /// Set (and the scan stopped) when the `<body/>` is not in the httpbind namespace.
    not_body: Option<&'static str>,
}

impl Observer for BodyObserver {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<(), XmlError> {
        match tag.depth {
            1 => {
                // The name was checked before the scan; the namespace is known only now.
                if tag.ns != Some(NS_HTTPBIND.as_bytes()) {
                    self.not_body = Some("<body/> is not in the httpbind namespace");
                    return Err(XmlError::syntax("not a BOSH body"));
                }
                self.attributes = decoded_attributes(tag.tag)?;
            }
            2 => self.child_start = tag.span.start,
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, tag: &EndTag<'_>) -> Result<(), XmlError> {
        if tag.depth == 2 {
            self.children.push((self.child_start, tag.span.end));
        }
        Ok(())
    }

    fn text(
        &mut self,
        depth: usize,
        raw: &[u8],
        _span: std::ops::Range<usize>,
        cdata: bool,
    ) -> Result<(), XmlError> {
        if depth <= 1 && (cdata || !raw.iter().all(u8::is_ascii_whitespace)) {
            return Err(XmlError::syntax("text outside payload elements"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &'static str) -> Result<BodyDocument, XmlError> {
        parse_client_body(&Bytes::from_static(s.as_bytes()), &Limits::default())
    }

    fn body(s: &'static str) -> ClientBody {
        match parse(s) {
            Ok(BodyDocument::Body(b)) => b,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn wrapper_attributes_are_decoded_in_order() {
        let b = body("<?xml version='1.0' encoding='utf-8'?>\n<body xmlns='http://jabber.org/protocol/httpbind' rid='7' to='a&amp;b'/>");
        assert_eq!(
            b.attributes,
            vec![
                ("xmlns".into(), NS_HTTPBIND.into()),
                ("rid".into(), "7".into()),
                ("to".into(), "a&b".into())
            ]
        );
        assert!(b.children.is_empty());
    }

    // XEP-0206 attributes whose prefix the client did not declare, a byte order mark: the
    // wrapper is read as clients write it.
    #[test]
    fn what_clients_write_on_the_wrapper_is_read() {
        let b = body("\u{feff}<body xmlns='http://jabber.org/protocol/httpbind' rid='8' xmpp:version='1.0' xmpp:restart='true'/>");
        assert!(b
            .attributes
            .contains(&("xmpp:version".into(), "1.0".into())));
        assert!(b
            .attributes
            .contains(&("xmpp:restart".into(), "true".into())));
        let b = body("<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'/>");
        assert!(b
            .attributes
            .contains(&("xmpp:version".into(), "1.0".into())));
        // In a payload child, `xmpp:` means nothing: refused as in a WebSocket message.
        assert_eq!(
            parse("<body xmlns='http://jabber.org/protocol/httpbind'><message xmpp:x='1'/></body>")
                .map_err(|e| e.reason()),
            Err("not_well_formed")
        );
    }

    #[test]
    fn children_are_slices_validated_as_websocket_messages() {
        let b = body("<body xmlns='http://jabber.org/protocol/httpbind'> <message to='x'><body>hi</body></message>\n<presence/></body>");
        assert_eq!(
            b.children,
            vec![
                Bytes::from_static(b"<message to='x'><body>hi</body></message>"),
                Bytes::from_static(b"<presence/>")
            ]
        );
    }

    // A child gets the depth a WebSocket message gets: the wrapper does not eat into it.
    #[test]
    fn a_child_may_nest_as_deep_as_a_websocket_message() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let ok = Bytes::from_static(
            b"<body xmlns='http://jabber.org/protocol/httpbind'><a><b><c/></b></a></body>",
        );
        assert!(matches!(
            parse_client_body(&ok, &limits),
            Ok(BodyDocument::Body(_))
        ));
        let deep = Bytes::from_static(
            b"<body xmlns='http://jabber.org/protocol/httpbind'><a><b><c><d/></c></b></a></body>",
        );
        assert_eq!(parse_client_body(&deep, &limits), Err(XmlError::TooDeep));
    }

    #[test]
    fn other_documents_are_not_bodies() {
        for s in [
            "",
            "  ",
            "<foo/>",
            "<body rid='1'/>",
            "<b:body xmlns:b='http://jabber.org/protocol/httpbind'/>",
            "<foo a='1'b='2'/>",
            "<bodyx xmlns='http://jabber.org/protocol/httpbind'/>",
        ] {
            assert!(matches!(parse(s), Ok(BodyDocument::NotBody(_))), "{s}");
        }
    }

    #[test]
    fn hostile_bodies_get_the_websocket_refusals() {
        let cases = [
            ("<!DOCTYPE x [<!ENTITY a 'b'>]><body xmlns='http://jabber.org/protocol/httpbind'/>", "restricted"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><message>&a;</message></body>", "restricted"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><stream:stream xmlns:stream='http://etherx.jabber.org/streams'/></body>", "injection"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='x'/></body>", "injection"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><message></presence></body>", "not_well_formed"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'>text</body>", "not_well_formed"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><![CDATA[x]]></body>", "not_well_formed"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><?pi x?></body>", "restricted"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><!-- c --></body>", "restricted"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'/><body xmlns='http://jabber.org/protocol/httpbind'/>", "not_well_formed"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'/><!-- after -->", "restricted"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><message>", "not_well_formed"),
            ("<body xmlns='http://jabber.org/protocol/httpbind'><x:message/></body>", "not_well_formed"),
        ];
        for (c, reason) in cases {
            match parse(c) {
                Err(e) => assert_eq!(e.reason(), reason, "{c}: {e:?}"),
                other => panic!("{c}: accepted as {other:?}"),
            }
        }
    }

    #[test]
    fn a_refused_body_still_names_its_session() {
        let a = refused_body_attributes(
            b"<body xmlns='http://jabber.org/protocol/httpbind' sid='s' rid='3'><message>&a;</message></body>",
        )
        .expect("wrapper readable");
        assert!(a.contains(&("sid".into(), "s".into())));
        assert!(a.contains(&("rid".into(), "3".into())));
        assert_eq!(refused_body_attributes(b"<foo sid='s'/>"), None);
        assert_eq!(refused_body_attributes(b"<body sid='s'/>"), None);
        assert_eq!(refused_body_attributes(b"garbage"), None);
        let a = refused_body_attributes(
            b"<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind' sid='s' rid='4'>&x;</body>",
        )
        .expect("wrapper after a DTD is found");
        assert!(a.contains(&("rid".into(), "4".into())));
    }
}
