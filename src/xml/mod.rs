//! XML handling for both directions of a session (docs/protocol.md §2): splitting the upstream stream
//! into standalone elements, validating what browsers send, and rewriting stream features.
//!
//! Nothing here builds a DOM. Input is checked with quick-xml's pull parser over byte slices and
//! handed on as `bytes::Bytes` slices of the original buffers wherever possible. The submodules:
//!
//! - [`split`]: the upstream stream, cut into top-level elements that stand alone.
//! - [`client`]: one WebSocket message from a browser, validated before it is forwarded.
//! - [`body`]: one BOSH request body from a browser, validated by the same rules.
//! - [`features`]: `<stream:features/>` as the browser must see it.
//!
//! The private modules hold the rules the three share: `scan` (the validating element
//! scanner), `ns` (namespace scopes), `text` (characters, names, references) and `tokens`
//! (quick-xml's reader with positions).

use std::borrow::Cow;

pub mod body;
pub mod client;
mod error;
pub mod features;
mod ns;
mod scan;
pub mod split;
mod text;
mod tokens;

#[cfg(test)]
mod testutil;

pub use error::XmlError;

/// Limits applied to XML from either side (docs/protocol.md §2, "Limits").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest element accepted, in bytes of its XML text (the stream header counts as one
    /// element). A partially received element that grows past this is refused too.
    pub max_element_bytes: usize,
    /// Deepest nesting accepted; a top-level element (stanza) is depth 1.
    pub max_depth: usize,
    /// Most attributes, namespace declarations included, on a single element.
    pub max_attributes: usize,
}

impl Limits {
    /// Only a size limit: what the server's stream is held to (docs/protocol.md §2). The
    /// server relays stanzas from any user on the network, and a depth or attribute limit
    /// there would let a stranger end the recipient's session.
    pub fn size_only(max_element_bytes: usize) -> Self {
        Limits {
            max_element_bytes,
            max_depth: usize::MAX,
            max_attributes: usize::MAX,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_element_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// Namespace of the stream root and of `stream:features`/`stream:error` (RFC 6120 §4.8.5).
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Default content namespace of a client-to-server stream (RFC 6120 §4.8.3).
pub const NS_CLIENT: &str = "jabber:client";
/// Namespace of the WebSocket framing elements `<open/>` and `<close/>` (RFC 7395 §3.3.1).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// Namespace of the BOSH `<body/>` wrapper (XEP-0124 §4).
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// Namespace of XEP-0206's `xmpp:` attributes on the BOSH wrapper.
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// STARTTLS namespace (RFC 6120 §5.4.2).
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL namespace (RFC 6120 §6.4).
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// Appends ` name='value'` to a start tag being built, escaping the value; nothing for `None`.
pub fn push_attr(tag: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        tag.push(' ');
        tag.push_str(name);
        tag.push_str("='");
        tag.push_str(&escape_attr(value));
        tag.push('\'');
    }
}

/// Escape text for use inside a single-quoted XML attribute value (and text): `&`, `<`, `>`,
/// `'` and `"` become predefined entity references. Borrows when nothing needs escaping.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    if !s
        .bytes()
        .any(|b| matches!(b, b'&' | b'<' | b'>' | b'\'' | b'"'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_attr_borrows_plain_text() {
        assert!(matches!(escape_attr("example.org"), Cow::Borrowed(_)));
    }

    #[test]
    fn escape_attr_escapes_all_five_specials() {
        assert_eq!(
            escape_attr(r#"a&b<c>d'e"f — é"#),
            "a&amp;b&lt;c&gt;d&apos;e&quot;f — é"
        );
    }

    #[test]
    fn default_limits_match_documented_values() {
        let limits = Limits::default();
        assert_eq!(limits.max_element_bytes, 262_144);
        assert_eq!(limits.max_depth, 32);
        assert_eq!(limits.max_attributes, 64);
    }
}
