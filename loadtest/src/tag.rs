//! Reading the start tag of one element, its first child and its text, without a DOM: what the
//! fixture server needs to route a stanza, and what the load tester needs to follow a login.
//!
//! Every element reaching this module is well-formed: the fixture's come out of the gateway's
//! `StreamSplitter`, the load tester's from a server, a gateway or quick-xml's reading of a
//! BOSH body. So a plain scan for `name='value'` pairs is exact: the only `>` that can end the
//! start tag is the one outside a quoted value.

use std::borrow::Cow;
use std::ops::Range;

/// An attribute of a start tag, as written.
#[derive(Clone, Debug)]
pub struct Attr<'a> {
    /// Qualified name (`to`, `xmlns`, `xmlns:p`).
    pub name: &'a [u8],
    /// The value between the quotes, still escaped.
    pub raw: &'a [u8],
    /// `'` or `"`.
    pub quote: u8,
    /// From the whitespace before the name to the closing quote: what removing it cuts out.
    pub span: Range<usize>,
}

impl Attr<'_> {
    /// The value with entity and character references decoded.
    pub fn value(&self) -> Cow<'_, str> {
        unescape(self.raw)
    }
}

/// The start tag of an element.
#[derive(Debug)]
pub struct StartTag<'a> {
    /// Qualified name as written.
    pub name: &'a [u8],
    /// Offset just past the name, where an attribute can be inserted.
    pub name_end: usize,
    /// The attributes in order.
    pub attrs: Vec<Attr<'a>>,
    /// Offset just past the tag's `>`.
    pub end: usize,
    /// `<x/>`: the element has no content.
    pub empty: bool,
}

impl<'a> StartTag<'a> {
    /// The attribute named `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&Attr<'a>> {
        self.attrs.iter().find(|a| a.name == name.as_bytes())
    }

    /// The local part of the name (after any prefix).
    pub fn local(&self) -> &'a [u8] {
        split_prefix(self.name).1
    }

    /// The namespace this element's own name is in, from the declarations on the tag itself
    /// or, failing that, on `parent` (the splitter puts every inherited one on the root).
    pub fn ns(&self, parent: Option<&StartTag<'_>>) -> Option<Cow<'_, str>> {
        let decl = match split_prefix(self.name).0 {
            None => "xmlns".to_owned(),
            Some(prefix) => format!("xmlns:{}", String::from_utf8_lossy(prefix)),
        };
        if let Some(attr) = self.attr(&decl) {
            return Some(attr.value());
        }
        let attr = parent?.attr(&decl)?;
        Some(Cow::Owned(attr.value().into_owned()))
    }
}

fn split_prefix(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Parses the start tag beginning at `at` (which must point at its `<`).
pub fn start_tag(bytes: &[u8], at: usize) -> Option<StartTag<'_>> {
    let mut i = at + 1;
    let name_start = i;
    while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'>' && bytes[i] != b'/' {
        i += 1;
    }
    let name = bytes.get(name_start..i)?;
    let name_end = i;
    let mut attrs = Vec::new();
    loop {
        let span_start = i;
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        match bytes.get(i)? {
            b'>' => {
                return Some(StartTag {
                    name,
                    name_end,
                    attrs,
                    end: i + 1,
                    empty: false,
                })
            }
            b'/' => {
                return Some(StartTag {
                    name,
                    name_end,
                    attrs,
                    end: i + 2,
                    empty: true,
                })
            }
            _ => {}
        }
        let attr_name_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !is_space(bytes[i]) {
            i += 1;
        }
        let attr_name = bytes.get(attr_name_start..i)?;
        while i < bytes.len() && bytes[i] != b'\'' && bytes[i] != b'"' {
            i += 1;
        }
        let quote = *bytes.get(i)?;
        let value_start = i + 1;
        let value_len = bytes.get(value_start..)?.iter().position(|&b| b == quote)?;
        i = value_start + value_len + 1;
        attrs.push(Attr {
            name: attr_name,
            raw: &bytes[value_start..value_start + value_len],
            quote,
            span: span_start..i,
        });
    }
}

/// The start tag of the first child element of `parent`, a start tag within `bytes`.
pub fn first_child<'a>(bytes: &'a [u8], parent: &StartTag<'_>) -> Option<StartTag<'a>> {
    if parent.empty {
        return None;
    }
    let mut i = parent.end;
    loop {
        let lt = i + bytes.get(i..)?.iter().position(|&b| b == b'<')?;
        match bytes.get(lt + 1)? {
            b'/' => return None,
            // CDATA sections may hold a `<`; comments and PIs were refused by the splitter.
            b'!' => i = lt + find(&bytes[lt..], b"]]>")? + 3,
            _ => return start_tag(bytes, lt),
        }
    }
}

/// The text content of a simple element (`<resource>text</resource>`): everything up to the
/// next tag, decoded. Empty for `<x/>`.
pub fn text(bytes: &[u8], tag: &StartTag<'_>) -> Option<String> {
    if tag.empty {
        return Some(String::new());
    }
    let rest = bytes.get(tag.end..)?;
    let len = rest.iter().position(|&b| b == b'<')?;
    Some(unescape(&rest[..len]).into_owned())
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Local name of the element starting at the beginning of `element` (`stream:features` gives
/// `features`), without reading its attributes.
pub fn local_name(element: &[u8]) -> &[u8] {
    let rest = element.strip_prefix(b"<").unwrap_or(element);
    let end = rest
        .iter()
        .position(|&b| is_space(b) || b == b'/' || b == b'>')
        .unwrap_or(rest.len());
    split_prefix(&rest[..end]).1
}

/// The text of the first element named `name` anywhere in `element` (`<jid>` in a bind
/// result, or the root itself, as `<challenge>`), decoded.
pub fn text_of(element: &[u8], name: &str) -> Option<String> {
    let open = format!("<{name}");
    let mut from = 0;
    loop {
        let at = from + find(&element[from..], open.as_bytes())?;
        let after = element.get(at + open.len()).copied();
        if after.is_some_and(|b| is_space(b) || b == b'/' || b == b'>') {
            return text(element, &start_tag(element, at)?);
        }
        from = at + 1;
    }
}

/// Decodes the predefined entities and character references (quick-xml's unescaping). Borrows
/// when there is none; text that does not decode is returned as written.
pub fn unescape(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(text) => quick_xml::escape::unescape(text).unwrap_or(Cow::Borrowed(text)),
        Err(_) => Cow::Owned(String::from_utf8_lossy(raw).into_owned()),
    }
}

/// Escapes text for a single-quoted attribute value or element content.
pub fn escape(s: &str) -> Cow<'_, str> {
    xmpp_gateway::xml::escape_attr(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_with_both_quotes_and_their_spans() {
        let xml =
            b"<message xmlns='jabber:client' to=\"a@b/it's\" from='x'><body>hi</body></message>";
        let tag = start_tag(xml, 0).unwrap();
        assert_eq!(tag.name, b"message");
        assert_eq!(tag.attr("to").unwrap().value(), "a@b/it's");
        let from = tag.attr("from").unwrap();
        assert_eq!(&xml[from.span.clone()], b" from='x'");
        assert_eq!(&xml[tag.end..tag.end + 6], b"<body>");
        assert!(!tag.empty);
    }

    #[test]
    fn first_child_skips_text_and_finds_its_namespace() {
        let xml = b"<iq xmlns='jabber:client' xmlns:p='urn:xmpp:ping' type='get'> <p:ping/></iq>";
        let iq = start_tag(xml, 0).unwrap();
        let child = first_child(xml, &iq).unwrap();
        assert_eq!(child.local(), b"ping");
        assert_eq!(child.ns(Some(&iq)).unwrap(), "urn:xmpp:ping");
        assert!(child.empty);
        let empty = start_tag(b"<iq type='get'/>", 0).unwrap();
        assert!(first_child(b"<iq type='get'/>", &empty).is_none());
    }

    #[test]
    fn names_and_texts_of_what_a_login_reads() {
        let features = b"<stream:features xmlns:stream='x'><bind/></stream:features>";
        assert_eq!(local_name(features), b"features");
        assert_eq!(local_name(b"<success xmlns='y'/>"), b"success");
        let bound = b"<iq type='result' id='b'><bind xmlns='b'><jid>u@d/r&amp;s</jid></bind></iq>";
        assert_eq!(text_of(bound, "jid").as_deref(), Some("u@d/r&s"));
        assert_eq!(text_of(bound, "ji"), None);
        assert_eq!(
            text_of(b"<success xmlns='s'/>", "success").as_deref(),
            Some("")
        );
        let error = b"<stream:error><host-unknown xmlns='e'/></stream:error>";
        let root = start_tag(error, 0).unwrap();
        assert_eq!(first_child(error, &root).unwrap().local(), b"host-unknown");
    }

    #[test]
    fn unescape_decodes_entities_and_character_references() {
        assert_eq!(unescape(b"a&amp;b&#x41;&#66;&lt;"), "a&bAB<");
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
    }
}
