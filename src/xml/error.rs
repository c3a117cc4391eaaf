//! The one error type of the XML layer, and its mapping to RFC 6120 stream error conditions.
//!
//! Every way in which XML from the browser or from the upstream server can be refused ends up
//! here, so the session code has a single place to turn a parse failure into a stream error and
//! a metrics label.

/// Why a piece of XML was refused.
///
/// Each variant maps to exactly one stream error condition ([`XmlError::condition`]) and one
/// low-cardinality label ([`XmlError::reason`]). The strings carried by some variants describe
/// the problem; they never contain element content.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Syntax error: mismatched or unclosed tags, bad attribute syntax, bad UTF-8, a second root
    /// element, text outside the root element, undeclared namespace prefixes.
    #[error("XML is not well-formed: {0}")]
    NotWellFormed(String),
    /// A feature XMPP forbids (RFC 6120 §11.1): DTD, processing instruction, comment, or an
    /// entity reference other than the five predefined ones and character references.
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    /// Markup that would close or reopen the stream, or framing markup inside a stanza.
    #[error("stream injection: {0}")]
    Injection(&'static str),
    /// An element (or a partially received one) is larger than the configured limit.
    #[error("element larger than the configured limit")]
    TooLarge,
    /// Elements are nested deeper than the configured limit.
    #[error("elements nested deeper than the configured limit")]
    TooDeep,
    /// One element carries more attributes than the configured limit.
    #[error("more attributes on one element than the configured limit")]
    TooManyAttributes,
    /// An element is not in the namespace it must be in (stream root, framing elements).
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition this error is reported with.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::Injection(_)
            | XmlError::TooLarge
            | XmlError::TooDeep
            | XmlError::TooManyAttributes => "policy-violation",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
        }
    }

    /// Short label for metrics and logs; one value per variant.
    pub fn reason(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not_well_formed",
            XmlError::Restricted(_) => "restricted",
            XmlError::Injection(_) => "injection",
            XmlError::TooLarge => "too_large",
            XmlError::TooDeep => "too_deep",
            XmlError::TooManyAttributes => "too_many_attributes",
            XmlError::InvalidNamespace(_) => "invalid_namespace",
        }
    }

    /// Shorthand for a [`XmlError::NotWellFormed`] with a fixed description.
    pub(crate) fn syntax(what: &str) -> Self {
        XmlError::NotWellFormed(what.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6120 §4.9.3: each refusal has one defined condition.
    #[test]
    fn every_variant_maps_to_one_condition_and_reason() {
        let cases = [
            (XmlError::syntax("x"), "not-well-formed", "not_well_formed"),
            (XmlError::Restricted("x"), "restricted-xml", "restricted"),
            (XmlError::Injection("x"), "policy-violation", "injection"),
            (XmlError::TooLarge, "policy-violation", "too_large"),
            (XmlError::TooDeep, "policy-violation", "too_deep"),
            (
                XmlError::TooManyAttributes,
                "policy-violation",
                "too_many_attributes",
            ),
            (
                XmlError::InvalidNamespace("x".into()),
                "invalid-namespace",
                "invalid_namespace",
            ),
        ];
        for (err, condition, reason) in cases {
            assert_eq!(err.condition(), condition, "{err:?}");
            assert_eq!(err.reason(), reason, "{err:?}");
        }
    }
}
