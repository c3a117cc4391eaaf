//! Validation of one WebSocket text message from a browser before anything reaches upstream.
//!
//! RFC 7395 §3.3.3 puts exactly one complete element in each message. This module checks that
//! the message is that and nothing more (docs/protocol.md §2): well-formed, free of DTDs, comments,
//! processing instructions and unknown entities, within the limits, and unable to close or
//! reopen the upstream stream. The framing elements `<open/>` and `<close/>` are recognised and
//! decoded; any other element is returned as the same bytes, to be forwarded verbatim.

use bytes::Bytes;

use super::ns::OuterScope;
use super::scan::{with_scratch, ElementScanner, EndTag, Observer, Scan, StartTag};
use super::text::{attr_string, check_chars, check_str_chars, leading_space};
use super::{Limits, XmlError, NS_CLIENT, NS_FRAMING, NS_STREAM};

/// What a browser message turned out to be.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientFrame {
    /// `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' .../>`: open or restart the stream.
    Open(OpenFrame),
    /// `<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`: close the stream.
    Close {
        /// `see-other-uri`, if the message carries one.
        see_other_uri: Option<String>,
    },
    /// A stanza or other top-level element: the message's bytes, trimmed of surrounding
    /// whitespace, to forward upstream as they are.
    Element(Bytes),
    /// Only whitespace (a keepalive): nothing to do.
    Whitespace,
}

/// Attributes of a client `<open/>` (RFC 7395 §3.3.1), values decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpenFrame {
    /// `to`: the domain the client wants.
    pub to: Option<String>,
    /// `from`: the client's address, forwarded into the upstream header.
    pub from: Option<String>,
    /// `version`, normally `1.0`.
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
}

/// Parse and validate one message. `msg` is the whole message.
pub fn parse_client_frame(msg: Bytes, limits: &Limits) -> Result<ClientFrame, XmlError> {
    if msg.len() > limits.max_element_bytes {
        return Err(XmlError::TooLarge);
    }
    check_chars(&msg)?;
    parse_checked_frame(msg, limits)
}

/// [`parse_client_frame`] for a message already known to be UTF-8, such as a WebSocket text
/// message (its library has checked it, RFC 6455 §8.1): the bytes are not checked as UTF-8
/// a second time, only for the characters XML refuses.
pub fn parse_client_text<T>(text: T, limits: &Limits) -> Result<ClientFrame, XmlError>
where
    T: AsRef<str> + Into<Bytes>,
{
    let bytes = text.as_ref().as_bytes();
    if bytes.len() > limits.max_element_bytes {
        return Err(XmlError::TooLarge);
    }
    check_str_chars(bytes)?;
    parse_checked_frame(text.into(), limits)
}

/// [`parse_client_frame`] for a message whose characters are checked already (a BOSH
/// body's child: the whole body was).
pub(super) fn parse_checked_frame(msg: Bytes, limits: &Limits) -> Result<ClientFrame, XmlError> {
    if msg.len() > limits.max_element_bytes {
        return Err(XmlError::TooLarge);
    }
    let start = leading_space(&msg);
    let body = msg.get(start..).unwrap_or_default();
    match body.first() {
        None => return Ok(ClientFrame::Whitespace),
        Some(b'<') => {}
        Some(_) => return Err(XmlError::syntax("text outside the root element")),
    }

    let mut observer = ClientObserver::default();
    let scanned = with_scratch(limits, |scanner| {
        scanner.scan(body, &UpstreamScope, &mut observer)
    });
    let len = match scanned? {
        Scan::Complete(len) => len,
        Scan::Incomplete => return Err(XmlError::syntax("unclosed element")),
    };
    let trailing = body.get(len..).unwrap_or_default();
    let extra = leading_space(trailing);
    if let Some(rest) = trailing.get(extra..).filter(|rest| !rest.is_empty()) {
        return Err(classify_trailing(rest, limits));
    }

    match observer.root {
        Root::Element => Ok(ClientFrame::Element(msg.slice(start..start + len))),
        Root::Open(open) => Ok(ClientFrame::Open(open)),
        Root::Close(see_other_uri) => Ok(ClientFrame::Close { see_other_uri }),
        Root::BadFraming => Err(XmlError::InvalidNamespace(
            "framing root other than <open/> or <close/>".into(),
        )),
        Root::UnframedOpenClose => Err(XmlError::InvalidNamespace(
            "<open/> or <close/> outside the framing namespace".into(),
        )),
    }
}

/// Something follows the root element. Report it as what it tries to be: a stream header or
/// close is injection, a comment or PI is restricted, anything else is a second root.
fn classify_trailing(rest: &[u8], limits: &Limits) -> XmlError {
    if rest.first() != Some(&b'<') {
        return XmlError::syntax("text after the root element");
    }
    let mut observer = ClientObserver::default();
    match ElementScanner::new(limits).scan(rest, &UpstreamScope, &mut observer) {
        Err(err @ (XmlError::Injection(_) | XmlError::Restricted(_))) => err,
        _ => XmlError::syntax("more than one root element"),
    }
}

/// The bindings of the upstream stream header the gateway writes (RFC 6120 §4.8): a message
/// without declarations is read upstream as `jabber:client`, and `stream:` means the streams
/// namespace there.
struct UpstreamScope;

impl OuterScope for UpstreamScope {
    fn default_ns(&self) -> Option<&[u8]> {
        Some(NS_CLIENT.as_bytes())
    }

    fn lookup(&self, prefix: &[u8]) -> Option<(usize, &[u8])> {
        (prefix == b"stream").then_some((0, NS_STREAM.as_bytes()))
    }
}

/// What the root element of a message is.
#[derive(Default)]
enum Root {
    #[default]
    Element,
    Open(OpenFrame),
    Close(Option<String>),
    /// A framing element other than open/close.
    BadFraming,
    /// `<open/>` or `<close/>` in the client namespace: a framing mistake, not a stanza.
    UnframedOpenClose,
}

/// Looks for stream injection at every depth and classifies the root.
#[derive(Default)]
struct ClientObserver {
    root: Root,
}

/// `stream:stream` by name, or `stream` in the streams namespace under any prefix.
fn is_stream_root(name: &[u8], local: &[u8], ns: Option<&[u8]>) -> bool {
    name == b"stream:stream" || (local == b"stream" && ns == Some(NS_STREAM.as_bytes()))
}

impl Observer for ClientObserver {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<(), XmlError> {
        // docs/protocol.md §2: a stream header in a payload would reopen the upstream stream.
        if is_stream_root(tag.name, tag.local, tag.ns) {
            return Err(XmlError::Injection("stream header in client data"));
        }
        let framing = tag.ns == Some(NS_FRAMING.as_bytes());
        let open_or_close = matches!(tag.local, b"open" | b"close");
        if tag.depth > 1 {
            if framing && open_or_close {
                return Err(XmlError::Injection("framing element inside a stanza"));
            }
            return Ok(());
        }
        self.root = match (framing, tag.local) {
            (true, b"open") => Root::Open(read_open(tag)?),
            (true, b"close") => Root::Close(read_attribute(tag, b"see-other-uri")?),
            (true, _) => Root::BadFraming,
            (false, _) if open_or_close && matches!(tag.ns, None | Some(b"jabber:client")) => {
                Root::UnframedOpenClose
            }
            (false, _) => Root::Element,
        };
        Ok(())
    }

    fn end(&mut self, tag: &EndTag<'_>) -> Result<(), XmlError> {
        // docs/protocol.md §2: `</stream:stream>` would close the upstream stream.
        if is_stream_root(tag.name, tag.local, tag.ns) {
            return Err(XmlError::Injection("stream close in client data"));
        }
        Ok(())
    }
}

fn read_open(tag: &StartTag<'_>) -> Result<OpenFrame, XmlError> {
    let mut open = OpenFrame::default();
    for attr in tag.tag.attributes() {
        let attr = attr.map_err(|_| XmlError::syntax("bad attribute syntax"))?;
        let slot = match attr.key.as_ref() {
            b"to" => &mut open.to,
            b"from" => &mut open.from,
            b"version" => &mut open.version,
            b"xml:lang" => &mut open.lang,
            _ => continue,
        };
        *slot = Some(attr_string(&attr.value)?);
    }
    Ok(open)
}

fn read_attribute(tag: &StartTag<'_>, key: &[u8]) -> Result<Option<String>, XmlError> {
    for attr in tag.tag.attributes() {
        let attr = attr.map_err(|_| XmlError::syntax("bad attribute syntax"))?;
        if attr.key.as_ref() == key {
            return attr_string(&attr.value).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
