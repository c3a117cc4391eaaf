//! The validating scanner for one XML element, shared by the upstream splitter, the browser
//! input parser and the features filter.
//!
//! It is the "check" half of check-then-parse (STYLE.md): it walks quick-xml events over a byte
//! slice to find where a complete element ends, enforcing well-formedness, RFC 6120 §11.1
//! restrictions, namespace declarations and the configured limits on the way. It never builds a
//! tree. What a caller wants to learn on the way (the kind of the root, injection attempts,
//! which features to drop) it gets through the [`Observer`] hooks.
//!
//! A scan can be resumed when more bytes arrive: the scanner remembers the last complete
//! markup boundary and its own stack of open element names and namespace declarations, so
//! the bytes of a large element are parsed once, not once per socket read. Because a resumed
//! quick-xml reader does not know the elements opened before it, end-tag names are checked
//! against this module's own stack rather than with quick-xml's `check_end_names`.

mod attributes;

use std::cell::RefCell;
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName};

pub(crate) use self::attributes::for_each_attribute;
use super::ns::{
    check_default_declaration, check_prefix_declaration, lookup_prefix, resolve_default,
    resolve_prefix, NsStack, OuterScope,
};
use super::text::{check_name, check_text, check_text_prefix, find_byte};
use super::tokens::{Token, Tokens};
use super::{Limits, XmlError};

/// A start tag (or empty-element tag), with its names resolved.
pub(crate) struct StartTag<'a> {
    /// Depth of the element; the scanned root is 1.
    pub depth: usize,
    /// Position of the tag, `<` to `>`, in the scanned slice.
    pub span: Range<usize>,
    /// Name as written, prefix included.
    pub name: &'a [u8],
    /// Name without its prefix.
    pub local: &'a [u8],
    /// Namespace the name resolves to.
    pub ns: Option<&'a [u8]>,
    /// The tag itself, for reading attributes (already validated).
    pub tag: &'a BytesStart<'a>,
}

/// The end of an element: its end tag, or the empty-element tag again.
pub(crate) struct EndTag<'a> {
    /// Depth of the element being closed; 0 for an end tag without a start.
    pub depth: usize,
    /// Position of the tag in the scanned slice.
    pub span: Range<usize>,
    /// Name as written.
    pub name: &'a [u8],
    /// Name without its prefix.
    pub local: &'a [u8],
    /// Namespace the name resolves to (`None` as well when the prefix is undeclared).
    pub ns: Option<&'a [u8]>,
}

/// Hooks called while an element is scanned. Each piece of markup is reported once, even
/// across resumed scans. Character data may be reported in several pieces.
pub(crate) trait Observer {
    /// A start or empty-element tag passed all checks.
    fn start(&mut self, _tag: &StartTag<'_>) -> Result<(), XmlError> {
        Ok(())
    }
    /// An end tag, before it is matched against its start tag; also called right after
    /// [`Observer::start`] for an empty-element tag.
    fn end(&mut self, _tag: &EndTag<'_>) -> Result<(), XmlError> {
        Ok(())
    }
    /// Checked character data (raw, references not replaced) or CDATA content.
    fn text(
        &mut self,
        _depth: usize,
        _raw: &[u8],
        _span: Range<usize>,
        _cdata: bool,
    ) -> Result<(), XmlError> {
        Ok(())
    }
}

/// Outcome of a scan.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The element ends at this offset (exclusive) of the scanned slice.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
}

/// Resumable scanner of one element. The slice passed to [`ElementScanner::scan`] must start
/// with the element's `<` and may only grow between calls.
pub(crate) struct ElementScanner {
    max_bytes: usize,
    max_depth: usize,
    max_attributes: usize,
    /// Offset up to which the slice has been checked.
    resume: usize,
    depth: usize,
    /// Names of the open elements, concatenated; `name_starts` indexes them.
    names: Vec<u8>,
    name_starts: Vec<usize>,
    ns: NsStack,
    /// Indices of outer bindings the element relies on, in order of first use.
    used_outer: Vec<usize>,
    root_name_end: usize,
    root_declares_default: bool,
}

impl ElementScanner {
    /// A scanner enforcing `limits`. Allocates nothing until it scans.
    pub(crate) fn new(limits: &Limits) -> Self {
        ElementScanner {
            max_bytes: limits.max_element_bytes,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            resume: 0,
            depth: 0,
            names: Vec::new(),
            name_starts: Vec::new(),
            ns: NsStack::default(),
            used_outer: Vec::new(),
            root_name_end: 0,
            root_declares_default: false,
        }
    }

    /// Takes `limits` and forgets the element scanned so far, keeping allocated capacity.
    fn configure(&mut self, limits: &Limits) {
        self.max_bytes = limits.max_element_bytes;
        self.max_depth = limits.max_depth;
        self.max_attributes = limits.max_attributes;
        self.reset();
    }

    /// Bytes and entries allocated.
    fn capacity(&self) -> usize {
        self.names.capacity()
            + self.name_starts.capacity()
            + self.ns.capacity()
            + self.used_outer.capacity()
    }

    /// Forgets the element scanned so far, keeping allocated capacity for the next one.
    pub(crate) fn reset(&mut self) {
        self.resume = 0;
        self.depth = 0;
        self.names.clear();
        self.name_starts.clear();
        self.ns.clear();
        self.used_outer.clear();
        self.root_name_end = 0;
        self.root_declares_default = false;
    }

    /// Resets and gives back allocated memory; returns true if there was any.
    pub(crate) fn release_memory(&mut self) -> bool {
        let had = self.capacity() > 0;
        self.names = Vec::new();
        self.name_starts = Vec::new();
        self.ns = NsStack::default();
        self.used_outer = Vec::new();
        self.reset();
        had
    }

    /// Offset just after the root element's name in its start tag: where namespace
    /// declarations can be inserted.
    pub(crate) fn root_name_end(&self) -> usize {
        self.root_name_end
    }

    /// Whether the root element declares a default namespace itself.
    pub(crate) fn root_declares_default(&self) -> bool {
        self.root_declares_default
    }

    /// Indices (as given by [`OuterScope::lookup`]) of the outer prefixes the element uses.
    pub(crate) fn used_outer(&self) -> &[usize] {
        &self.used_outer
    }

    /// Scans `buf` (which starts at the element's `<`) from where the last call stopped.
    pub(crate) fn scan<S, O>(
        &mut self,
        buf: &[u8],
        scope: &S,
        obs: &mut O,
    ) -> Result<Scan, XmlError>
    where
        S: OuterScope + ?Sized,
        O: Observer,
    {
        match self.scan_events(buf, scope, obs)? {
            Scan::Complete(end) if end > self.max_bytes => Err(XmlError::TooLarge),
            Scan::Incomplete if buf.len() > self.max_bytes => Err(XmlError::TooLarge),
            outcome => Ok(outcome),
        }
    }

    fn scan_events<S, O>(&mut self, buf: &[u8], scope: &S, obs: &mut O) -> Result<Scan, XmlError>
    where
        S: OuterScope + ?Sized,
        O: Observer,
    {
        loop {
            // Character data up to the next markup, checked without quick-xml so that a long
            // text node arriving in pieces is looked at once.
            let rest = buf
                .get(self.resume..)
                .ok_or_else(|| XmlError::syntax("scanner position past the input"))?;
            match find_byte(rest, |b| b == b'<') {
                None => {
                    let settled = self.partial_text(rest, obs)?;
                    self.resume += settled;
                    return Ok(Scan::Incomplete);
                }
                Some(0) => {}
                Some(len) => {
                    let text = rest.get(..len).unwrap_or_default();
                    self.text(text, self.resume..self.resume + len, obs)?;
                    self.resume += len;
                }
            }

            // A run of markup and complete text, read by one quick-xml reader.
            let base = self.resume;
            let mut tokens = Tokens::new(buf.get(base..).unwrap_or_default());
            loop {
                let (event, span) = match tokens.next() {
                    Ok(Token::Event(event, span)) => (event, base + span.start..base + span.end),
                    Ok(Token::Incomplete(at)) => {
                        self.resume = base + at;
                        if let Some(err) =
                            restricted_markup(buf.get(self.resume..).unwrap_or_default())
                        {
                            return Err(err);
                        }
                        break;
                    }
                    Err(err) => {
                        return Err(
                            restricted_markup(buf.get(self.resume..).unwrap_or_default())
                                .unwrap_or(err),
                        );
                    }
                };
                match event {
                    Event::Text(text) => self.text(&text, span.clone(), obs)?,
                    Event::CData(data) => {
                        if self.depth == 0 {
                            return Err(XmlError::syntax("CDATA section outside the root element"));
                        }
                        obs.text(self.depth, &data, span.clone(), true)?;
                    }
                    Event::Start(tag) => self.start(&tag, span.clone(), false, scope, obs)?,
                    Event::Empty(tag) => {
                        self.start(&tag, span.clone(), true, scope, obs)?;
                        if self.depth == 0 {
                            self.resume = span.end;
                            return Ok(Scan::Complete(span.end));
                        }
                    }
                    Event::End(tag) => {
                        self.end(tag.name(), span.clone(), scope, obs)?;
                        if self.depth == 0 {
                            self.resume = span.end;
                            return Ok(Scan::Complete(span.end));
                        }
                    }
                    Event::Comment(_) => return Err(XmlError::Restricted("comment")),
                    Event::PI(_) | Event::Decl(_) => {
                        return Err(XmlError::Restricted("processing instruction"))
                    }
                    Event::DocType(_) => return Err(XmlError::Restricted("DTD")),
                    Event::Eof => break,
                }
                self.resume = span.end;
            }
            // The reader stopped on incomplete input; only text mode can make progress now if
            // the stop was inside character data.
            if buf.get(self.resume) == Some(&b'<') {
                return Ok(Scan::Incomplete);
            }
        }
    }

    /// Complete character data between two pieces of markup.
    fn text<O: Observer>(
        &mut self,
        text: &[u8],
        span: Range<usize>,
        obs: &mut O,
    ) -> Result<(), XmlError> {
        if self.depth == 0 {
            return Err(XmlError::syntax("text outside the root element"));
        }
        check_text(text)?;
        obs.text(self.depth, text, span, false)
    }

    /// Character data that runs to the end of the input; returns how much of it is settled.
    fn partial_text<O: Observer>(&mut self, text: &[u8], obs: &mut O) -> Result<usize, XmlError> {
        if text.is_empty() {
            return Ok(0);
        }
        if self.depth == 0 {
            return Err(XmlError::syntax("text outside the root element"));
        }
        let settled = check_text_prefix(text)?;
        if settled > 0 {
            let piece = text.get(..settled).unwrap_or_default();
            obs.text(self.depth, piece, self.resume..self.resume + settled, false)?;
        }
        Ok(settled)
    }

    fn start<S, O>(
        &mut self,
        tag: &BytesStart<'_>,
        span: Range<usize>,
        empty: bool,
        scope: &S,
        obs: &mut O,
    ) -> Result<(), XmlError>
    where
        S: OuterScope + ?Sized,
        O: Observer,
    {
        let name = tag.name();
        check_name(name.as_ref())?;
        let depth = self.depth + 1;
        if depth > self.max_depth {
            return Err(XmlError::TooDeep);
        }

        let mut declares_default = false;
        let mut prefixed_attributes = false;
        let ns_stack = &mut self.ns;
        for_each_attribute(tag, self.max_attributes, |attr| {
            match attr.key.as_namespace_binding() {
                Some(PrefixDeclaration::Default) => {
                    declares_default = true;
                    check_default_declaration(&attr.value)?;
                    ns_stack.push(depth, None, &attr.value)
                }
                Some(PrefixDeclaration::Named(prefix)) => {
                    check_prefix_declaration(prefix, &attr.value)?;
                    ns_stack.push(depth, Some(prefix), &attr.value)
                }
                None => {
                    prefixed_attributes |= attr.key.prefix().is_some();
                    Ok(())
                }
            }
        })?;

        if prefixed_attributes {
            // Already checked for duplicates above.
            for attr in tag.attributes().with_checks(false) {
                let attr = attr.map_err(|_| XmlError::syntax("bad attribute syntax"))?;
                if attr.key.as_namespace_binding().is_none() {
                    if let Some(prefix) = attr.key.prefix() {
                        resolve_prefix(&self.ns, scope, &mut self.used_outer, prefix.as_ref())?;
                    }
                }
            }
        }

        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(prefix) => resolve_prefix(&self.ns, scope, &mut self.used_outer, prefix.as_ref())?,
            None => resolve_default(&self.ns, scope),
        };
        if depth == 1 {
            self.root_name_end = span.start + 1 + name.as_ref().len();
            self.root_declares_default = declares_default;
        }
        obs.start(&StartTag {
            depth,
            span: span.clone(),
            name: name.as_ref(),
            local: local.as_ref(),
            ns,
            tag,
        })?;

        if empty {
            obs.end(&EndTag {
                depth,
                span,
                name: name.as_ref(),
                local: local.as_ref(),
                ns,
            })?;
            self.ns.pop(depth);
        } else {
            self.name_starts.push(self.names.len());
            self.names.extend_from_slice(name.as_ref());
            self.depth = depth;
        }
        Ok(())
    }

    fn end<S, O>(
        &mut self,
        name: QName<'_>,
        span: Range<usize>,
        scope: &S,
        obs: &mut O,
    ) -> Result<(), XmlError>
    where
        S: OuterScope + ?Sized,
        O: Observer,
    {
        let (local, prefix) = name.decompose();
        let ns = match prefix {
            Some(prefix) => lookup_prefix(&self.ns, scope, prefix.as_ref()).map(|(_, ns)| ns),
            None => resolve_default(&self.ns, scope),
        };
        obs.end(&EndTag {
            depth: self.depth,
            span,
            name: name.as_ref(),
            local: local.as_ref(),
            ns,
        })?;

        let Some(start) = self.name_starts.pop() else {
            return Err(XmlError::syntax("end tag without a start tag"));
        };
        if self.names.get(start..) != Some(name.as_ref()) {
            return Err(XmlError::syntax("end tag does not match its start tag"));
        }
        self.names.truncate(start);
        self.ns.pop(self.depth);
        self.depth -= 1;
        Ok(())
    }
}

thread_local! {
    /// This thread's reusable scanner: see [`with_scratch`].
    static SCRATCH: RefCell<ElementScanner> = RefCell::new(ElementScanner::new(&Limits::default()));
}

/// What the scratch scanner may keep between elements: enough for ordinary stanzas. A larger
/// element (a roster, or a hostile one with thousands of declarations) gives its memory back.
const SCRATCH_KEEP: usize = 4096;

/// Runs `f` with this thread's reusable scanner, set to `limits` and holding no element. An
/// element scanned in one go (a browser's message, or a server stanza that arrived whole)
/// then costs no allocation, and no session holds a scanner's memory while idle. A caller
/// whose element is incomplete swaps the scanner's state into one of its own before `f`
/// returns, to resume it later.
pub(crate) fn with_scratch<R>(limits: &Limits, f: impl FnOnce(&mut ElementScanner) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scanner) => {
            scanner.configure(limits);
            let result = f(&mut scanner);
            if scanner.capacity() > SCRATCH_KEEP {
                scanner.release_memory();
            }
            result
        }
        // A scan inside a scan (no caller does this) gets a scanner of its own.
        Err(_) => f(&mut ElementScanner::new(limits)),
    })
}

/// What this thread's scratch scanner holds allocated.
#[cfg(test)]
pub(crate) fn scratch_capacity() -> usize {
    SCRATCH.with(|cell| cell.borrow().capacity())
}

/// Errors for markup that is refused whatever follows, so that a comment or DTD never has to
/// be buffered to its end before it is rejected. `bytes` starts at a `<`.
fn restricted_markup(bytes: &[u8]) -> Option<XmlError> {
    match bytes {
        [b'<', b'?', ..] => Some(XmlError::Restricted("processing instruction")),
        [b'<', b'!', b'-', ..] => Some(XmlError::Restricted("comment")),
        [b'<', b'!', b'D' | b'd', ..] => Some(XmlError::Restricted("DTD")),
        _ => None,
    }
}

/// The error for markup at stream level (outside any element) that is not an element: `bytes`
/// starts with `<?` or `<!`. `None` when too few bytes have arrived to tell.
pub(crate) fn non_element_markup(bytes: &[u8]) -> Option<XmlError> {
    if let Some(err) = restricted_markup(bytes) {
        return Some(err);
    }
    match bytes {
        [b'<', b'!', b'[', ..] => Some(XmlError::syntax("CDATA section outside an element")),
        [b'<', b'!', _, ..] => Some(XmlError::syntax("unknown markup after '<!'")),
        _ => None,
    }
}
