//! Namespace scopes: the declarations in force at a point of an element, and the bindings it
//! inherits from outside (the stream header, or the header the gateway writes upstream).
//!
//! Resolution follows Namespaces in XML 1.0. URIs are compared after decoding, so an escaped
//! spelling of a namespace cannot slip past a check that looks for that namespace.

use std::ops::Range;

use super::text::{decode_attr_value, XML_NS};
use super::XmlError;

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

/// Namespaces in XML §3: `xmlns:p=''` cannot undeclare, `xmlns` cannot be declared, and `xml`
/// can only be bound to its own namespace.
pub(crate) fn check_prefix_declaration(prefix: &[u8], value: &[u8]) -> Result<(), XmlError> {
    if value.is_empty() {
        return Err(XmlError::syntax("empty namespace for a prefix"));
    }
    if prefix == b"xmlns" || (prefix == b"xml" && value != XML_NS) {
        return Err(XmlError::syntax("reserved namespace prefix redeclared"));
    }
    Ok(())
}

/// Namespace declarations of the open elements, innermost last. URIs are stored decoded, so
/// `http://etherx.jabber.org/stream&#x73;` compares equal to the streams namespace.
#[derive(Default)]
pub(crate) struct NsStack {
    /// Prefixes and URIs, concatenated.
    text: Vec<u8>,
    entries: Vec<NsEntry>,
}

struct NsEntry {
    depth: usize,
    /// `None` for the default namespace.
    prefix: Option<Range<usize>>,
    uri: Range<usize>,
}

impl NsStack {
    /// Declares `prefix` (`None`: the default namespace) for elements at `depth` and below.
    pub(crate) fn push(
        &mut self,
        depth: usize,
        prefix: Option<&[u8]>,
        raw_uri: &[u8],
    ) -> Result<(), XmlError> {
        let prefix = prefix.map(|p| {
            let start = self.text.len();
            self.text.extend_from_slice(p);
            start..self.text.len()
        });
        let start = self.text.len();
        decode_attr_value(raw_uri, &mut self.text)?;
        let uri = start..self.text.len();
        self.entries.push(NsEntry { depth, prefix, uri });
        Ok(())
    }

    /// Drops the declarations made at `depth`.
    pub(crate) fn pop(&mut self, depth: usize) {
        let keep = self
            .entries
            .iter()
            .rposition(|e| e.depth < depth)
            .map_or(0, |i| i + 1);
        if let Some(first) = self.entries.get(keep) {
            let cut = first.prefix.as_ref().map_or(first.uri.start, |p| p.start);
            self.text.truncate(cut);
            self.entries.truncate(keep);
        }
    }

    /// The innermost URI bound to `prefix` (`None`: the default namespace).
    pub(crate) fn lookup(&self, prefix: Option<&[u8]>) -> Option<&[u8]> {
        self.entries.iter().rev().find_map(|e| {
            let matches = match (&e.prefix, prefix) {
                (None, None) => true,
                (Some(range), Some(p)) => self.text.get(range.clone()) == Some(p),
                _ => false,
            };
            if matches {
                self.text.get(e.uri.clone())
            } else {
                None
            }
        })
    }

    /// Forgets every declaration, keeping allocated memory.
    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }

    /// Bytes and entries allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.text.capacity() + self.entries.capacity()
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
        if !used_outer.contains(&index) {
            used_outer.push(index);
        }
    }
    Ok(Some(uri))
}
