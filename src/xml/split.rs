//! Incremental splitter of the upstream XMPP stream into standalone top-level elements.
//!
//! The upstream connection is one long XML document (RFC 6120 §4): a `<stream:stream>` header,
//! then top-level elements, then `</stream:stream>`. Browsers need each element as a document of
//! its own (docs/protocol.md §2), so the splitter cuts the stream at element boundaries and copies the
//! stream header's namespace declarations into each element that relies on them.
//!
//! Socket bytes are read straight into the splitter's buffer ([`StreamSplitter::buffer_mut`]);
//! [`StreamSplitter::next_item`] then checks whether a complete item is buffered and, if so,
//! splits it off — as a zero-copy slice of the read buffer unless declarations had to be added.

mod header;

use bytes::{Buf, Bytes, BytesMut};
use quick_xml::events::Event;

pub use self::header::StreamHeader;
use self::header::{parse_header, HeaderScope};
use super::scan::{non_element_markup, with_scratch, ElementScanner, Observer, Scan, StartTag};
use super::text::{check_chars, leading_space};
use super::tokens::{check_declaration, Token, Tokens};
use super::{escape_attr, Limits, XmlError, NS_SASL, NS_STREAM, NS_TLS};

/// Splits the upstream stream into [`StreamItem`]s.
pub struct StreamSplitter {
    limits: Limits,
    buf: BytesMut,
    state: State,
    /// Name of the stream root as written (`stream:stream`), to recognise its end tag.
    stream_name: Vec<u8>,
    scope: HeaderScope,
    scanner: ElementScanner,
    /// An element has started and `scanner` holds its progress.
    scanning: bool,
    kind: ElementKind,
}

impl std::fmt::Debug for StreamSplitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Prolog { .. } => "prolog",
            State::Open { .. } => "open",
            State::Ended => "ended",
            State::Failed(_) => "failed",
        };
        f.debug_struct("StreamSplitter")
            .field("state", &state)
            .field("buffered", &self.buf.len())
            .field("scanning", &self.scanning)
            .finish_non_exhaustive()
    }
}

/// One thing read from the upstream stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// The `<stream:stream ...>` opening tag.
    Header(StreamHeader),
    /// One complete top-level element, made standalone.
    Element(Element),
    /// `</stream:stream>`: the server closed the stream.
    End,
}

/// A top-level element, standalone: its bytes parse as an XML document by themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct Element {
    /// UTF-8 XML text of the element.
    pub bytes: Bytes,
    /// What the element is, as far as the gateway cares.
    pub kind: ElementKind,
}

/// Top-level elements the session code acts on; everything else is [`ElementKind::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// `<stream:features/>` (RFC 6120 §4.3.2).
    Features,
    /// `<stream:error/>` (RFC 6120 §4.9).
    StreamError,
    /// STARTTLS `<proceed/>` (RFC 6120 §5.4.2.3).
    TlsProceed,
    /// STARTTLS `<failure/>` (RFC 6120 §5.4.2.2).
    TlsFailure,
    /// SASL `<success/>` (RFC 6120 §6.4.6).
    SaslSuccess,
    /// Anything else: stanzas, SASL challenges, stream management, ...
    Other,
}

impl ElementKind {
    fn of(ns: Option<&[u8]>, local: &[u8]) -> Self {
        let ns = ns.unwrap_or_default();
        match (local, ns) {
            (b"features", ns) if ns == NS_STREAM.as_bytes() => ElementKind::Features,
            (b"error", ns) if ns == NS_STREAM.as_bytes() => ElementKind::StreamError,
            (b"proceed", ns) if ns == NS_TLS.as_bytes() => ElementKind::TlsProceed,
            (b"failure", ns) if ns == NS_TLS.as_bytes() => ElementKind::TlsFailure,
            (b"success", ns) if ns == NS_SASL.as_bytes() => ElementKind::SaslSuccess,
            _ => ElementKind::Other,
        }
    }
}

enum State {
    /// Waiting for the stream header; an XML declaration may still come first.
    Prolog { declaration_allowed: bool },
    /// Inside the stream. `end_pending` when the header was an empty-element tag.
    Open { end_pending: bool },
    /// After `</stream:stream>`: everything else is ignored.
    Ended,
    /// An error was returned; it is returned again.
    Failed(XmlError),
}

/// Learns the kind of a top-level element from its start tag.
struct KindObserver<'k>(&'k mut ElementKind);

impl Observer for KindObserver<'_> {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<(), XmlError> {
        if tag.depth != 1 {
            // Nested elements are payload, whatever their names: a remote user can put
            // anything inside a stanza the server routes, and refusing it would let them
            // end this session.
            return Ok(());
        }
        // A second stream header inside the stream means a restart the caller did not
        // announce with `reset()`; reading on would buffer the whole stream as one element.
        if tag.local == b"stream" && tag.ns == Some(NS_STREAM.as_bytes()) {
            return Err(XmlError::Injection("stream header inside the stream"));
        }
        *self.0 = ElementKind::of(tag.ns, tag.local);
        Ok(())
    }
}

/// What one step of the splitter produced.
enum Step {
    Item(StreamItem),
    /// Something was consumed; look again.
    Again,
    /// More bytes are needed.
    Wait,
}

impl StreamSplitter {
    /// A splitter expecting a stream header. Allocates nothing until bytes arrive.
    pub fn new(limits: Limits) -> Self {
        let scanner = ElementScanner::new(&limits);
        StreamSplitter {
            limits,
            buf: BytesMut::new(),
            state: State::Prolog {
                declaration_allowed: true,
            },
            stream_name: Vec::new(),
            scope: HeaderScope::default(),
            scanner,
            scanning: false,
            kind: ElementKind::Other,
        }
    }

    /// Buffer to read socket bytes into (`reader.read_buf(splitter.buffer_mut())`). The caller
    /// reserves capacity itself, and should keep the reservation small (a few KiB).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Next complete item, or `Ok(None)` if more bytes are needed. Call repeatedly until it
    /// returns `None`. After an error the stream is unusable and the same error is returned.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, XmlError> {
        loop {
            let step = match &self.state {
                State::Failed(err) => return Err(err.clone()),
                State::Ended => {
                    self.buf.clear();
                    return Ok(None);
                }
                State::Open { end_pending: true } => {
                    self.finish();
                    return Ok(Some(StreamItem::End));
                }
                State::Prolog {
                    declaration_allowed,
                } => self.prolog(*declaration_allowed),
                State::Open { end_pending: false } => self.stream_content(),
            };
            match step {
                Ok(Step::Item(item)) => return Ok(Some(item)),
                Ok(Step::Again) => {}
                Ok(Step::Wait) => return Ok(None),
                Err(err) => {
                    self.state = State::Failed(err.clone());
                    return Err(err);
                }
            }
        }
    }

    /// Stream restart (after STARTTLS or SASL success, RFC 6120 §4.3.3): forget the current
    /// stream header and expect a new XML declaration and `<stream:stream>` header. Bytes
    /// already buffered are kept.
    pub fn reset(&mut self) {
        self.state = State::Prolog {
            declaration_allowed: true,
        };
        self.stream_name.clear();
        self.scope = HeaderScope::default();
        self.scanner.reset();
        self.scanning = false;
    }

    /// Gives back buffer memory when nothing partial is buffered (an idle session). Returns
    /// true if memory was released.
    pub fn release_idle_memory(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let buffer_released = self.buf.capacity() > 0;
        self.buf = BytesMut::new();
        self.scanning = false;
        let scanner_released = self.scanner.release_memory();
        buffer_released || scanner_released
    }

    /// Bytes currently buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn finish(&mut self) {
        self.state = State::Ended;
        self.buf.clear();
    }

    /// Drops whitespace at the front of the buffer (between top-level elements it carries no
    /// meaning, and browsers must not be sent any, RFC 7395 §3.3.3).
    fn skip_space(&mut self) {
        let n = leading_space(&self.buf);
        self.buf.advance(n);
    }

    fn wait_unless_too_large(&self) -> Result<Step, XmlError> {
        if self.buf.len() > self.limits.max_element_bytes {
            Err(XmlError::TooLarge)
        } else {
            Ok(Step::Wait)
        }
    }

    /// Before the stream header: optional XML declaration, then the header.
    fn prolog(&mut self, declaration_allowed: bool) -> Result<Step, XmlError> {
        self.skip_space();
        let second = match self.buf.as_ref() {
            [] => return Ok(Step::Wait),
            [b'<'] => return Ok(Step::Wait),
            [b'<', second, ..] => *second,
            _ => return Err(XmlError::syntax("text before the stream header")),
        };
        match second {
            b'?' => self.declaration(declaration_allowed),
            b'!' => match non_element_markup(&self.buf) {
                Some(err) => Err(err),
                None => Ok(Step::Wait),
            },
            b'/' => Err(XmlError::syntax("end tag before the stream header")),
            _ => self.header(),
        }
    }

    /// The XML declaration, allowed once at the start of each stream.
    fn declaration(&mut self, allowed: bool) -> Result<Step, XmlError> {
        let end = {
            let mut tokens = Tokens::new(&self.buf);
            match tokens.next()? {
                Token::Incomplete(_) => {
                    let may_be_declaration = self.buf.len() < 6 || self.buf.starts_with(b"<?xml");
                    if !allowed || !may_be_declaration {
                        return Err(XmlError::Restricted("processing instruction"));
                    }
                    return self.wait_unless_too_large();
                }
                Token::Event(Event::Decl(decl), span) if allowed => {
                    check_declaration(&decl, self.buf.get(span.clone()).unwrap_or_default())?;
                    span.end
                }
                _ => return Err(XmlError::Restricted("processing instruction")),
            }
        };
        self.buf.advance(end.min(self.buf.len()));
        self.state = State::Prolog {
            declaration_allowed: false,
        };
        Ok(Step::Again)
    }

    /// The `<stream:stream>` start tag.
    fn header(&mut self) -> Result<Step, XmlError> {
        let (parsed, end, empty) = {
            let mut tokens = Tokens::new(&self.buf);
            match tokens.next()? {
                Token::Incomplete(_) => return self.wait_unless_too_large(),
                Token::Event(Event::Start(tag), span) => {
                    let raw = self.buf.get(span.clone()).unwrap_or_default();
                    (parse_header(&tag, raw, &self.limits)?, span.end, false)
                }
                Token::Event(Event::Empty(tag), span) => {
                    let raw = self.buf.get(span.clone()).unwrap_or_default();
                    (parse_header(&tag, raw, &self.limits)?, span.end, true)
                }
                _ => {
                    return Err(XmlError::syntax(
                        "unexpected markup before the stream header",
                    ))
                }
            }
        };
        self.buf.advance(end.min(self.buf.len()));
        self.stream_name = parsed.name;
        self.scope = parsed.scope;
        self.state = State::Open { end_pending: empty };
        Ok(Step::Item(StreamItem::Header(parsed.header)))
    }

    /// Inside the stream: whitespace, top-level elements, and the stream's end tag.
    fn stream_content(&mut self) -> Result<Step, XmlError> {
        if !self.scanning {
            self.skip_space();
            let second = match self.buf.as_ref() {
                [] | [b'<'] => return Ok(Step::Wait),
                [b'<', second, ..] => *second,
                _ => return Err(XmlError::syntax("text at stream level")),
            };
            match second {
                b'/' => return self.stream_end(),
                b'?' | b'!' => {
                    return match non_element_markup(&self.buf) {
                        Some(err) => Err(err),
                        None => Ok(Step::Wait),
                    }
                }
                _ => self.kind = ElementKind::Other,
            }
        }
        let element = if self.scanning {
            scan_element(
                &mut self.buf,
                &self.scope,
                &mut self.kind,
                &mut self.scanner,
            )?
        } else {
            // A new element is scanned with the thread's scanner: one that arrived whole costs
            // no allocation. One that did not takes the scanner's state along to resume.
            let (buf, scope, kind, own) = (
                &mut self.buf,
                &self.scope,
                &mut self.kind,
                &mut self.scanner,
            );
            with_scratch(&self.limits, |scratch| {
                let element = scan_element(buf, scope, kind, scratch);
                if matches!(element, Ok(None)) {
                    std::mem::swap(scratch, own);
                }
                element
            })?
        };
        match element {
            None => {
                self.scanning = true;
                Ok(Step::Wait)
            }
            Some(element) => {
                self.scanning = false;
                Ok(Step::Item(StreamItem::Element(element)))
            }
        }
    }

    /// `</stream:stream>`.
    fn stream_end(&mut self) -> Result<Step, XmlError> {
        let closes_stream = {
            let mut tokens = Tokens::new(&self.buf);
            match tokens.next()? {
                Token::Incomplete(_) => return self.wait_unless_too_large(),
                Token::Event(Event::End(tag), _) => {
                    tag.name().as_ref() == self.stream_name.as_slice()
                }
                _ => false,
            }
        };
        if !closes_stream {
            return Err(XmlError::syntax("end tag that does not close the stream"));
        }
        self.finish();
        Ok(Step::Item(StreamItem::End))
    }
}

/// Scans the element at the front of `buf` from where `scanner` stopped; splits it off once
/// complete (`None` until then).
fn scan_element(
    buf: &mut BytesMut,
    scope: &HeaderScope,
    kind: &mut ElementKind,
    scanner: &mut ElementScanner,
) -> Result<Option<Element>, XmlError> {
    let mut observer = KindObserver(kind);
    match scanner.scan(buf, scope, &mut observer)? {
        Scan::Incomplete => Ok(None),
        Scan::Complete(end) => take_element(buf, scope, *kind, scanner, end).map(Some),
    }
}

/// Splits the complete element `..end` off the buffer, adding the stream header's namespace
/// declarations it relies on (docs/protocol.md §2: every element stands alone).
fn take_element(
    buf: &mut BytesMut,
    scope: &HeaderScope,
    kind: ElementKind,
    scanner: &ElementScanner,
    end: usize,
) -> Result<Element, XmlError> {
    let bytes = buf
        .get(..end)
        .ok_or_else(|| XmlError::syntax("element end past the buffer"))?;
    check_chars(bytes)?;

    let default_ns = match scope.default_ns.as_deref() {
        Some(ns) if !scanner.root_declares_default() => Some(ns),
        _ => None,
    };
    let used = scanner.used_outer();
    if default_ns.is_none() && used.is_empty() {
        let bytes = buf.split_to(end).freeze();
        return Ok(Element { bytes, kind });
    }

    let name_end = scanner.root_name_end();
    let (head, tail) = match (bytes.get(..name_end), bytes.get(name_end..)) {
        (Some(head), Some(tail)) => (head, tail),
        _ => return Err(XmlError::syntax("element name past the buffer")),
    };
    let mut out = BytesMut::with_capacity(end + 64);
    out.extend_from_slice(head);
    if let Some(ns) = default_ns {
        push_declaration(&mut out, None, ns);
    }
    for (prefix, ns) in used.iter().filter_map(|&i| scope.prefixes.get(i)) {
        push_declaration(&mut out, Some(prefix), ns);
    }
    out.extend_from_slice(tail);
    buf.advance(end);
    Ok(Element {
        bytes: out.freeze(),
        kind,
    })
}

/// Appends ` xmlns='ns'` or ` xmlns:prefix='ns'`.
fn push_declaration(out: &mut BytesMut, prefix: Option<&str>, ns: &str) {
    out.extend_from_slice(b" xmlns");
    if let Some(prefix) = prefix {
        out.extend_from_slice(b":");
        out.extend_from_slice(prefix.as_bytes());
    }
    out.extend_from_slice(b"='");
    out.extend_from_slice(escape_attr(ns).as_bytes());
    out.extend_from_slice(b"'");
}

#[cfg(test)]
mod tests;
