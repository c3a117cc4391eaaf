//! One BOSH request's `<body/>`: what its attributes mean (XEP-0124 §7, XEP-0206) and its
//! payload children. The XML itself is validated by the shared XML layer
//! (`xml::body::parse_client_body`), with the same rules as a WebSocket message
//! (docs/protocol.md §2).

use bytes::Bytes;

use crate::xml::body::{parse_client_body, refused_body_attributes, BodyDocument};
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
pub fn parse(data: &Bytes, limits: &Limits) -> Result<Body, BodyError> {
    match parse_client_body(data, limits)? {
        BodyDocument::NotBody(why) => Err(BodyError::NotBosh(why)),
        BodyDocument::Body(b) => {
            let mut body = read_attributes(b.attributes)?;
            body.children = b.children;
            Ok(body)
        }
    }
}

/// The `<body/>` attributes of a request whose payload was refused, so the request can still
/// be tied to its session (sid, rid, key); `None` when not even the wrapper can be read.
pub fn root_attributes(data: &[u8]) -> Option<Body> {
    read_attributes(refused_body_attributes(data)?).ok()
}

fn read_attributes(attributes: Vec<(String, String)>) -> Result<Body, BodyError> {
    let mut body = Body::default();
    for (name, value) in attributes {
        match name.as_str() {
            "sid" => body.sid = Some(value),
            "rid" => body.rid = Some(number(&value, "rid")?),
            "to" => body.to = Some(value),
            "from" => body.from = Some(value),
            "wait" => body.wait = Some(number(&value, "wait")?),
            "hold" => body.hold = Some(number(&value, "hold")?),
            "ver" => body.ver = Some(value),
            "xml:lang" => body.lang = Some(value),
            "xmpp:version" => body.xmpp_version = Some(value),
            "ack" => body.ack = Some(number(&value, "ack")?),
            "route" => body.route = Some(value),
            "content" => body.content = Some(value),
            "key" => body.key = Some(value),
            "newkey" => body.newkey = Some(value),
            "pause" => body.pause = Some(number(&value, "pause")?),
            "xmpp:restart" => body.restart = value == "true" || value == "1",
            "type" => body.terminate = value == "terminate",
            _ => {}
        }
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
        parse(&Bytes::from_static(s.as_bytes()), &Limits::default())
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
