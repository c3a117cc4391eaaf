//! Parsing of one BOSH request: the `<body/>` wrapper's attributes (XEP-0124 §7, XEP-0206) and
//! its payload children as zero-copy slices of the request, each validated with the same rules
//! as a WebSocket message (PROTOCOL.md §2).

use bytes::Bytes;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::state::NS_HTTPBIND;
use crate::xml::client::{parse_client_frame, ClientFrame};
use crate::xml::{Limits, XmlError};

/// A parsed request body.
#[derive(Debug, Default, Clone)]
pub struct Body {
    /// `sid`; absent on the session request.
    pub sid: Option<String>,
    /// `rid`.
    pub rid: Option<u64>,
    /// `to`.
    pub to: Option<String>,
    /// `from`.
    pub from: Option<String>,
    /// `wait` in seconds.
    pub wait: Option<u64>,
    /// `hold`.
    pub hold: Option<u64>,
    /// `ver`.
    pub ver: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// `xmpp:version`.
    pub xmpp_version: Option<String>,
    /// `ack`.
    pub ack: Option<u64>,
    /// `route`.
    pub route: Option<String>,
    /// `content`.
    pub content: Option<String>,
    /// `key`.
    pub key: Option<String>,
    /// `newkey`.
    pub newkey: Option<String>,
    /// `pause` in seconds.
    pub pause: Option<u64>,
    /// `xmpp:restart='true'`.
    pub restart: bool,
    /// `type='terminate'`.
    pub terminate: bool,
    /// Payload elements, each standalone.
    pub children: Vec<Bytes>,
}

/// Why a request body is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    /// Not a `<body/>` in the httpbind namespace: answered with HTTP 400.
    #[error("not a BOSH body: {0}")]
    NotBosh(&'static str),
    /// The XML is bad; the session (if any) ends with `bad-request`.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// An attribute value is malformed.
    #[error("bad attribute {0}")]
    Attribute(&'static str),
}

/// Parses and validates one request.
pub fn parse(data: Bytes, limits: &Limits) -> Result<Body, BodyError> {
    let mut reader = Reader::from_reader(&data[..]);
    reader.config_mut().check_end_names = true;
    let mut body: Option<Body> = None;
    let mut depth = 0usize;
    let mut child_start = 0usize;
    let mut closed = false;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        match event {
            Event::Eof => break,
            Event::Decl(_) if body.is_none() && depth == 0 => {}
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {
                return Err(XmlError::Restricted("DTD, processing instruction or comment").into())
            }
            Event::Start(e) | Event::Empty(e) if closed => {
                let _ = e;
                return Err(XmlError::NotWellFormed("content after </body>".into()).into());
            }
            Event::Start(e) => {
                if depth == 0 {
                    body = Some(root(&e, limits)?);
                } else if depth == 1 {
                    child_start = before;
                }
                depth += 1;
                if depth > limits.max_depth {
                    return Err(XmlError::TooDeep.into());
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    body = Some(root(&e, limits)?);
                    closed = true;
                } else if depth == 1 {
                    push_child(
                        &data,
                        before,
                        reader.buffer_position() as usize,
                        &mut body,
                        limits,
                    )?;
                }
            }
            Event::End(_) => {
                depth -= 1;
                if depth == 1 {
                    push_child(
                        &data,
                        child_start,
                        reader.buffer_position() as usize,
                        &mut body,
                        limits,
                    )?;
                } else if depth == 0 {
                    closed = true;
                }
            }
            Event::Text(t) => {
                if depth <= 1 && !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(
                        XmlError::NotWellFormed("text outside payload elements".into()).into(),
                    );
                }
            }
            Event::CData(_) if depth <= 1 => {
                return Err(XmlError::NotWellFormed("text outside payload elements".into()).into())
            }
            Event::CData(_) => {}
        }
    }
    match body {
        Some(b) if closed => Ok(b),
        Some(_) => Err(XmlError::NotWellFormed("unclosed <body>".into()).into()),
        None => Err(BodyError::NotBosh("no <body/> element")),
    }
}

/// The `<body/>` attributes of a request whose payload was refused, so the request can still
/// be tied to its session (sid, rid, key); `None` when not even the root start tag parses.
pub fn root_attributes(data: &[u8], limits: &Limits) -> Option<Body> {
    let mut reader = Reader::from_reader(data);
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) | Event::Empty(e) => return root(&e, limits).ok(),
            Event::Eof => return None,
            _ => {}
        }
    }
}

fn push_child(
    data: &Bytes,
    start: usize,
    end: usize,
    body: &mut Option<Body>,
    limits: &Limits,
) -> Result<(), BodyError> {
    let child = data.slice(start..end);
    match parse_client_frame(child, limits)? {
        ClientFrame::Element(el) => {
            if let Some(b) = body.as_mut() {
                b.children.push(el);
            }
            Ok(())
        }
        // Framing elements belong to WebSocket only.
        _ => Err(XmlError::Injection("framing element inside a BOSH body").into()),
    }
}

fn root(e: &BytesStart<'_>, limits: &Limits) -> Result<Body, BodyError> {
    if e.name().as_ref() != b"body" {
        return Err(BodyError::NotBosh("root element is not <body/>"));
    }
    let mut body = Body::default();
    let mut ns_ok = false;
    for (n, attr) in e.attributes().with_checks(true).enumerate() {
        if n >= limits.max_attributes {
            return Err(XmlError::TooManyAttributes.into());
        }
        let attr = attr.map_err(|err| XmlError::NotWellFormed(err.to_string()))?;
        let value = attr
            .unescape_value()
            .map_err(|_| XmlError::Restricted("entity other than the predefined ones"))?
            .into_owned();
        match attr.key.as_ref() {
            b"xmlns" => ns_ok = value == NS_HTTPBIND,
            b"sid" => body.sid = Some(value),
            b"rid" => body.rid = Some(number(&value, "rid")?),
            b"to" => body.to = Some(value),
            b"from" => body.from = Some(value),
            b"wait" => body.wait = Some(number(&value, "wait")?),
            b"hold" => body.hold = Some(number(&value, "hold")?),
            b"ver" => body.ver = Some(value),
            b"xml:lang" => body.lang = Some(value),
            b"xmpp:version" => body.xmpp_version = Some(value),
            b"ack" => body.ack = Some(number(&value, "ack")?),
            b"route" => body.route = Some(value),
            b"content" => body.content = Some(value),
            b"key" => body.key = Some(value),
            b"newkey" => body.newkey = Some(value),
            b"pause" => body.pause = Some(number(&value, "pause")?),
            b"xmpp:restart" => body.restart = value == "true" || value == "1",
            b"type" => body.terminate = value == "terminate",
            _ => {}
        }
    }
    if !ns_ok {
        return Err(BodyError::NotBosh(
            "<body/> is not in the httpbind namespace",
        ));
    }
    Ok(body)
}

fn number(v: &str, name: &'static str) -> Result<u64, BodyError> {
    // XEP-0124 §14: rid is at most 2^53 - 1 so JavaScript clients can count it.
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n < (1 << 53))
        .ok_or(BodyError::Attribute(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static str) -> Result<Body, BodyError> {
        parse(Bytes::from_static(s.as_bytes()), &Limits::default())
    }

    #[test]
    fn session_request_attributes_are_read() {
        let b = p("<body xmlns='http://jabber.org/protocol/httpbind' content='text/xml; charset=utf-8' hold='1' rid='1573741820' to='example.com' route='xmpp:example.com:9999' ver='1.6' wait='60' ack='1' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>").unwrap();
        assert_eq!(b.rid, Some(1573741820));
        assert_eq!(b.to.as_deref(), Some("example.com"));
        assert_eq!(b.hold, Some(1));
        assert_eq!(b.wait, Some(60));
        assert_eq!(b.xmpp_version.as_deref(), Some("1.0"));
        assert!(b.children.is_empty());
    }

    #[test]
    fn payload_children_are_sliced_in_order() {
        let b = p("<body xmlns='http://jabber.org/protocol/httpbind' rid='2' sid='s'>\n<message to='a@b'><body>x &amp; y</body></message><presence/></body>").unwrap();
        assert_eq!(b.children.len(), 2);
        assert_eq!(
            &b.children[0][..],
            b"<message to='a@b'><body>x &amp; y</body></message>"
        );
        assert_eq!(&b.children[1][..], b"<presence/>");
    }

    #[test]
    fn restart_and_terminate_flags() {
        let b = p("<body xmlns='http://jabber.org/protocol/httpbind' rid='3' sid='s' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'/>").unwrap();
        assert!(b.restart);
        let b = p("<body xmlns='http://jabber.org/protocol/httpbind' rid='4' sid='s' type='terminate'><presence type='unavailable'/></body>").unwrap();
        assert!(b.terminate);
        assert_eq!(b.children.len(), 1);
    }

    #[test]
    fn non_bosh_documents_are_refused() {
        assert!(matches!(p("<foo/>"), Err(BodyError::NotBosh(_))));
        assert!(matches!(p("<body rid='1'/>"), Err(BodyError::NotBosh(_))));
        assert!(matches!(p(""), Err(BodyError::NotBosh(_))));
    }

    #[test]
    fn hostile_bodies_are_refused() {
        let cases = [
            "<!DOCTYPE x [<!ENTITY a 'b'>]><body xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><message>&a;</message></body>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><stream:stream xmlns:stream='http://etherx.jabber.org/streams'/></body>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><message></presence></body>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>text</body>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'><?pi x?></body>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='1'/><body xmlns='http://jabber.org/protocol/httpbind'/>",
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='x'/>",
        ];
        for c in cases {
            assert!(
                matches!(p(c), Err(BodyError::Xml(_) | BodyError::Attribute(_))),
                "{c}: {:?}",
                p(c)
            );
        }
    }
}
