//! Namespace scopes: the declarations in force at a point of an element, and the bindings it
//! inherits from outside (the stream header, or the header the gateway writes upstream).
//!
//! Resolution follows Namespaces in XML 1.0. URIs are compared after decoding, so an escaped
//! spelling of a namespace cannot slip past a check that looks for that namespace.

use std::collections::HashMap;
use std::ops::Range;

use super::text::{decode_attr_value, XML_NS};
use super::XmlError;

/// Counts the steps of name lookups (entries examined, names compared) on this thread, so that
/// tests can show that scanning costs the same per name however many are in scope.
#[cfg(test)]
pub(crate) mod cost {
    use std::cell::Cell;

    thread_local! {
        static STEPS: Cell<u64> = const { Cell::new(0) };
    }

    /// Adds `n` steps.
    pub(crate) fn step(n: usize) {
        STEPS.with(|s| s.set(s.get() + n as u64));
    }

    /// The steps counted since the last call, and a new count.
    pub(crate) fn take() -> u64 {
        STEPS.with(|s| s.replace(0))
    }
}

/// Counts a step of a lookup (nothing outside tests).
#[inline]
pub(crate) fn step(_n: usize) {
    #[cfg(test)]
    cost::step(_n);
}

/// Namespace bindings in force around the scanned element (the stream header's, for instance).
pub(crate) trait OuterScope {
    /// Default namespace, if any.
    fn default_ns(&self) -> Option<&[u8]>;
    /// Namespace bound to `prefix`, with an index identifying the binding.
    fn lookup(&self, prefix: &[u8]) -> Option<(usize, &[u8])>;
}

/// No bindings at all: the scanned element must declare everything it uses.
pub(crate) struct NoScope;

impl OuterScope for NoScope {
    fn default_ns(&self) -> Option<&[u8]> {
        None
    }
    fn lookup(&self, _prefix: &[u8]) -> Option<(usize, &[u8])> {
        None
    }
}

/// The namespace of `xmlns` attributes themselves (Namespaces in XML §3).
const XMLNS_NS: &[u8] = b"http://www.w3.org/2000/xmlns/";

/// Namespaces in XML §3: `xmlns:p=''` cannot undeclare, `xmlns` cannot be declared, `xml`
/// can only be bound to its own namespace, and no other prefix to that namespace or to the
/// xmlns one. `value` is the raw attribute value: `xml` must be bound to its namespace spelled
/// plainly, and another prefix is refused for any spelling of a reserved namespace.
pub(crate) fn check_prefix_declaration(prefix: &[u8], value: &[u8]) -> Result<(), XmlError> {
    if value.is_empty() {
        return Err(XmlError::syntax("empty namespace for a prefix"));
    }
    if prefix == b"xmlns" || (prefix == b"xml" && value != XML_NS) {
        return Err(XmlError::syntax("reserved namespace prefix redeclared"));
    }
    if prefix != b"xml" && is_reserved_namespace(value)? {
        return Err(XmlError::syntax("prefix bound to a reserved namespace"));
    }
    Ok(())
}

/// Namespaces in XML §3: neither the XML namespace nor the xmlns one may be the default
/// namespace, whatever its spelling.
pub(crate) fn check_default_declaration(value: &[u8]) -> Result<(), XmlError> {
    if is_reserved_namespace(value)? {
        return Err(XmlError::syntax(
            "default namespace set to a reserved namespace",
        ));
    }
    Ok(())
}

/// Whether a raw attribute value, once decoded, is the XML or the xmlns namespace.
fn is_reserved_namespace(value: &[u8]) -> Result<bool, XmlError> {
    let mut decoded = Vec::new();
    let uri = if value.contains(&b'&') {
        decode_attr_value(value, &mut decoded)?;
        decoded.as_slice()
    } else {
        value
    };
    Ok(uri == XML_NS || uri == XMLNS_NS)
}

/// Namespace declarations of the open elements, innermost last. URIs are stored decoded, so
/// `http://etherx.jabber.org/stream&#x73;` compares equal to the streams namespace.
///
/// Lookups are indexed by prefix, so each costs the same however many declarations are in
/// scope: what the server relays has no cap on declarations (docs/protocol.md §2), and a scan
/// must stay linear in the size of its input.
#[derive(Default)]
pub(crate) struct NsStack {
    /// Prefixes and URIs, concatenated.
    text: Vec<u8>,
    entries: Vec<NsEntry>,
    /// The innermost entry declaring each prefix.
    by_prefix: HashMap<Vec<u8>, usize>,
    /// The innermost entry declaring the default namespace.
    default_top: Option<usize>,
}

struct NsEntry {
    depth: usize,
    /// `None` for the default namespace.
    prefix: Option<Range<usize>>,
    uri: Range<usize>,
    /// The entry for the same prefix that this one hides, restored when this one is popped.
    shadows: Option<usize>,
}

impl NsStack {
    /// Declares `prefix` (`None`: the default namespace) for elements at `depth` and below.
    /// Depths never decrease between pops.
    pub(crate) fn push(
        &mut self,
        depth: usize,
        prefix: Option<&[u8]>,
        raw_uri: &[u8],
    ) -> Result<(), XmlError> {
        let index = self.entries.len();
        let (range, shadows) = match prefix {
            None => (None, self.default_top.replace(index)),
            Some(p) => {
                let start = self.text.len();
                self.text.extend_from_slice(p);
                let shadows = match self.by_prefix.get_mut(p) {
                    Some(top) => Some(std::mem::replace(top, index)),
                    None => {
                        self.by_prefix.insert(p.to_vec(), index);
                        None
                    }
                };
                (Some(start..self.text.len()), shadows)
            }
        };
        let start = self.text.len();
        let decoded = decode_attr_value(raw_uri, &mut self.text);
        self.entries.push(NsEntry {
            depth,
            prefix: range,
            uri: start..self.text.len(),
            shadows,
        });
        decoded
    }

    /// Drops the declarations made at `depth` (and deeper).
    pub(crate) fn pop(&mut self, depth: usize) {
        while let Some(entry) = self.entries.last() {
            if entry.depth < depth {
                break;
            }
            match &entry.prefix {
                None => self.default_top = entry.shadows,
                Some(range) => {
                    let prefix = self.text.get(range.clone()).unwrap_or_default();
                    match entry.shadows {
                        Some(hidden) => {
                            if let Some(top) = self.by_prefix.get_mut(prefix) {
                                *top = hidden;
                            }
                        }
                        None => {
                            self.by_prefix.remove(prefix);
                        }
                    }
                }
            }
            let cut = entry.prefix.as_ref().map_or(entry.uri.start, |p| p.start);
            self.text.truncate(cut);
            self.entries.pop();
        }
    }

    /// The innermost URI bound to `prefix` (`None`: the default namespace).
    pub(crate) fn lookup(&self, prefix: Option<&[u8]>) -> Option<&[u8]> {
        step(1);
        let index = match prefix {
            None => self.default_top?,
            Some(p) => *self.by_prefix.get(p)?,
        };
        let entry = self.entries.get(index)?;
        self.text.get(entry.uri.clone())
    }

    /// Forgets every declaration, keeping allocated memory.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
        self.by_prefix.clear();
        self.default_top = None;
    }

    /// Bytes and entries allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.text.capacity() + self.entries.capacity() + self.by_prefix.capacity()
    }
}

/// The default namespace in force: the innermost declaration, else the outer scope's.
pub(crate) fn resolve_default<'s, S: OuterScope + ?Sized>(
    ns: &'s NsStack,
    scope: &'s S,
) -> Option<&'s [u8]> {
    match ns.lookup(None) {
        Some([]) => None,
        Some(uri) => Some(uri),
        None => scope.default_ns(),
    }
}

/// The namespace bound to `prefix`, with the outer binding's index if it comes from outside.
pub(crate) fn lookup_prefix<'s, S: OuterScope + ?Sized>(
    ns: &'s NsStack,
    scope: &'s S,
    prefix: &[u8],
) -> Option<(Option<usize>, &'s [u8])> {
    if prefix == b"xml" {
        return Some((None, XML_NS));
    }
    if prefix == b"xmlns" {
        return None;
    }
    match ns.lookup(Some(prefix)) {
        Some(uri) => Some((None, uri)),
        None => scope.lookup(prefix).map(|(index, uri)| (Some(index), uri)),
    }
}

/// Resolves a prefix that must be declared, noting outer bindings the element relies on.
pub(crate) fn resolve_prefix<'s, S: OuterScope + ?Sized>(
    ns: &'s NsStack,
    scope: &'s S,
    used_outer: &mut Vec<usize>,
    prefix: &[u8],
) -> Result<Option<&'s [u8]>, XmlError> {
    let (outer, uri) = lookup_prefix(ns, scope, prefix)
        .ok_or_else(|| XmlError::syntax("undeclared namespace prefix"))?;
    if let Some(index) = outer {
        // At most as many as the stream header declares (HEADER_MAX_ATTRIBUTES in split.rs).
        step(used_outer.len());
        if !used_outer.contains(&index) {
            used_outer.push(index);
        }
    }
    Ok(Some(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_declarations_hide_outer_ones_until_popped() {
        let mut ns = NsStack::default();
        ns.push(1, Some(b"p"), b"urn:outer").unwrap();
        ns.push(1, None, b"urn:default").unwrap();
        ns.push(2, Some(b"p"), b"urn:inner").unwrap();
        ns.push(2, Some(b"q"), b"urn:q&#x31;").unwrap();
        ns.push(3, None, b"").unwrap();
        assert_eq!(ns.lookup(Some(b"p")), Some(&b"urn:inner"[..]));
        assert_eq!(ns.lookup(Some(b"q")), Some(&b"urn:q1"[..]));
        assert_eq!(ns.lookup(None), Some(&b""[..]));
        ns.pop(3);
        assert_eq!(ns.lookup(None), Some(&b"urn:default"[..]));
        ns.pop(2);
        assert_eq!(ns.lookup(Some(b"p")), Some(&b"urn:outer"[..]));
        assert_eq!(ns.lookup(Some(b"q")), None);
        ns.pop(1);
        assert_eq!(ns.lookup(Some(b"p")), None);
        assert_eq!(ns.lookup(None), None);
        ns.push(1, Some(b"p"), b"urn:again").unwrap();
        assert_eq!(ns.lookup(Some(b"p")), Some(&b"urn:again"[..]));
        ns.clear();
        assert_eq!(ns.lookup(Some(b"p")), None);
    }
}
