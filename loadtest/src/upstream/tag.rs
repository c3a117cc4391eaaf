//! Reading the start tag of one top-level element, and building the few replies the fixture
//! writes, without a DOM.
//!
//! Every element reaching this module came out of the gateway's `StreamSplitter`, which has
//! checked that it is well-formed, so a plain scan for `name='value'` pairs is exact: the only
//! `>` that can end the start tag is the one outside a quoted value.

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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes the five predefined entities and character references (the splitter refuses any
/// other reference). Borrows when there is none.
pub fn unescape(raw: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(raw);
    if !raw.contains(&b'&') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let Some(semi) = rest[amp..].find(';') else {
            out.push_str(&rest[amp..]);
            return Cow::Owned(out);
        };
        let entity = &rest[amp + 1..amp + semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..=amp + semi]),
        }
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
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
    fn unescape_decodes_entities_and_character_references() {
        assert_eq!(unescape(b"a&amp;b&#x41;&#66;&lt;"), "a&bAB<");
        assert!(matches!(unescape(b"plain"), Cow::Borrowed(_)));
    }
}
