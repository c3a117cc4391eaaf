//! The upstream stream header (RFC 6120 §4.7, §4.8): its attributes, and the namespace
//! declarations every top-level element inherits from it.

use quick_xml::events::BytesStart;
use quick_xml::name::PrefixDeclaration;

use crate::xml::ns::{check_default_declaration, check_prefix_declaration, step, OuterScope};
use crate::xml::scan::for_each_attribute;
use crate::xml::text::{attr_string, check_chars, check_name};
use crate::xml::{Limits, XmlError, NS_STREAM};

/// Attributes of the upstream stream header (RFC 6120 §4.7), values decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamHeader {
    /// `from`: the server's domain.
    pub from: Option<String>,
    /// `to`: the client's address, if the server echoes it.
    pub to: Option<String>,
    /// `id`: the stream id (BOSH's `authid`).
    pub id: Option<String>,
    /// `version`, normally `1.0`.
    pub version: Option<String>,
    /// `xml:lang`: default language of the stream.
    pub lang: Option<String>,
    /// The default namespace declared on the header, normally `jabber:client`.
    pub default_ns: Option<String>,
}

/// Namespace declarations of the stream header, which every top-level element inherits.
#[derive(Default)]
pub(super) struct HeaderScope {
    pub(super) default_ns: Option<String>,
    pub(super) prefixes: Vec<(String, String)>,
}

impl OuterScope for HeaderScope {
    fn default_ns(&self) -> Option<&[u8]> {
        self.default_ns.as_deref().map(str::as_bytes)
    }

    fn lookup(&self, prefix: &[u8]) -> Option<(usize, &[u8])> {
        // At most HEADER_MAX_ATTRIBUTES entries.
        step(self.prefixes.len());
        self.prefixes
            .iter()
            .enumerate()
            .rev()
            .find(|(_, (p, _))| p.as_bytes() == prefix)
            .map(|(i, (_, uri))| (i, uri.as_bytes()))
    }
}

/// Most attributes (declarations included) accepted on the stream header.
const HEADER_MAX_ATTRIBUTES: usize = 64;

/// What the splitter keeps from the stream header.
pub(super) struct ParsedHeader {
    pub(super) header: StreamHeader,
    pub(super) scope: HeaderScope,
    pub(super) name: Vec<u8>,
}

/// Checks the stream header start tag and reads its attributes (RFC 6120 §4.7, §4.8).
pub(super) fn parse_header(
    tag: &BytesStart<'_>,
    raw: &[u8],
    limits: &Limits,
) -> Result<ParsedHeader, XmlError> {
    if raw.len() > limits.max_element_bytes {
        return Err(XmlError::TooLarge);
    }
    check_chars(raw)?;
    let name = tag.name();
    check_name(name.as_ref())?;

    let mut header = StreamHeader::default();
    let mut scope = HeaderScope::default();
    let mut prefixed_attributes = false;
    // The header is the server's own, not relayed from other users: it is held to a small
    // number of attributes, which bounds the declarations every element may inherit.
    let max_attributes = limits.max_attributes.min(HEADER_MAX_ATTRIBUTES);
    for_each_attribute(tag, max_attributes, |attr| {
        match attr.key.as_namespace_binding() {
            Some(PrefixDeclaration::Default) => {
                check_default_declaration(&attr.value)?;
                let ns = attr_string(&attr.value)?;
                scope.default_ns = (!ns.is_empty()).then(|| ns.clone());
                header.default_ns = (!ns.is_empty()).then_some(ns);
            }
            Some(PrefixDeclaration::Named(prefix)) => {
                check_prefix_declaration(prefix, &attr.value)?;
                let prefix =
                    std::str::from_utf8(prefix).map_err(|_| XmlError::syntax("invalid UTF-8"))?;
                scope
                    .prefixes
                    .push((prefix.to_owned(), attr_string(&attr.value)?));
            }
            None => {
                let value = || attr_string(&attr.value).map(Some);
                match attr.key.as_ref() {
                    b"from" => header.from = value()?,
                    b"to" => header.to = value()?,
                    b"id" => header.id = value()?,
                    b"version" => header.version = value()?,
                    b"xml:lang" => header.lang = value()?,
                    _ => prefixed_attributes |= attr.key.prefix().is_some(),
                }
            }
        }
        Ok(())
    })?;

    if prefixed_attributes {
        for attr in tag.attributes().with_checks(false).flatten() {
            if let Some(prefix) = attr.key.prefix() {
                let prefix = prefix.as_ref();
                if prefix != b"xml" && prefix != b"xmlns" && scope.lookup(prefix).is_none() {
                    return Err(XmlError::syntax("undeclared namespace prefix"));
                }
            }
        }
    }

    let (local, prefix) = name.decompose();
    let ns = match prefix {
        None => scope.default_ns(),
        Some(prefix) => scope.lookup(prefix.as_ref()).map(|(_, ns)| ns),
    };
    // RFC 6120 §4.8.1: the root is <stream> in the streams namespace, whatever its prefix.
    if local.as_ref() != b"stream" || ns != Some(NS_STREAM.as_bytes()) {
        return Err(XmlError::InvalidNamespace(
            "stream root is not <stream/> in the streams namespace".into(),
        ));
    }
    Ok(ParsedHeader {
        header,
        scope,
        name: name.as_ref().to_vec(),
    })
}
