//! Rewriting of `<stream:features/>` for browsers, and the summary the upstream connector needs.
//!
//! The gateway terminates TLS itself and a browser's channel binding cannot survive a proxy
//! (docs/protocol.md §1), so before features reach a browser the STARTTLS offer, every `*-PLUS` SASL
//! mechanism and the XEP-0440 channel-binding list are removed. Everything else is kept byte
//! for byte: the kept parts are copied from the input, only the removed ranges are skipped.

use std::ops::Range;

use bytes::Bytes;

use super::ns::NoScope;
use super::scan::{ElementScanner, EndTag, Observer, Scan, StartTag};
use super::text::{check_chars, decode_text, is_space, leading_space};
use super::{Limits, XmlError, NS_SASL, NS_STREAM, NS_TLS};

/// SASL2 (XEP-0388) namespace.
const NS_SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0440 SASL channel-binding type capability namespace.
const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";

/// Rewrite a `<stream:features/>` element for a client: remove `<starttls xmlns=NS_TLS>`
/// entirely, remove every `<mechanism>` whose text ends in `-PLUS` from
/// `<mechanisms xmlns=NS_SASL>` and from SASL2 `<authentication xmlns='urn:xmpp:sasl:2'>`, and
/// remove XEP-0440 `<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>`. Whitespace right before
/// a removed element goes with it. The input must be standalone (as [`super::split`] makes it);
/// so is the output, since the root start tag is kept as it is.
pub fn filter_features_for_client(features: &[u8]) -> Result<Bytes, XmlError> {
    let (offset, observer) = inspect(features)?;
    if observer.drops.is_empty() {
        return Ok(Bytes::copy_from_slice(features));
    }
    let mut out = Vec::with_capacity(features.len());
    let mut from = 0;
    for drop in &observer.drops {
        let range = offset + drop.start..offset + drop.end;
        out.extend_from_slice(features.get(from..range.start).unwrap_or_default());
        from = range.end;
    }
    out.extend_from_slice(features.get(from..).unwrap_or_default());
    Ok(Bytes::from(out))
}

/// What the upstream connector needs from features before the client sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureSummary {
    /// The server offers STARTTLS.
    pub starttls: bool,
    /// The STARTTLS offer carries `<required/>`.
    pub starttls_required: bool,
    /// SASL mechanisms offered in `<mechanisms xmlns=NS_SASL>`, in order, `-PLUS` ones included.
    pub mechanisms: Vec<String>,
}

/// Reads the STARTTLS offer and the SASL mechanisms from a `<stream:features/>` element.
pub fn summarize_features(features: &[u8]) -> Result<FeatureSummary, XmlError> {
    inspect(features).map(|(_, observer)| observer.summary)
}

/// Scans the features element; returns the offset of its `<` and what was learnt.
fn inspect(features: &[u8]) -> Result<(usize, FeaturesObserver), XmlError> {
    check_chars(features)?;
    let offset = leading_space(features);
    let element = features.get(offset..).unwrap_or_default();
    if element.first() != Some(&b'<') {
        return Err(XmlError::syntax("features must be one element"));
    }
    // The element already passed the splitter's limits; these are not applied twice.
    let limits = Limits::size_only(usize::MAX);
    let mut observer = FeaturesObserver::default();
    let len = match ElementScanner::new(&limits).scan(element, &NoScope, &mut observer)? {
        Scan::Complete(len) => len,
        Scan::Incomplete => return Err(XmlError::syntax("unclosed element")),
    };
    if !element
        .get(len..)
        .unwrap_or_default()
        .iter()
        .all(|&b| is_space(b))
    {
        return Err(XmlError::syntax("more than one root element"));
    }
    if !observer.is_features {
        return Err(XmlError::InvalidNamespace(
            "not <features/> in the streams namespace".into(),
        ));
    }
    Ok((offset, observer))
}

/// A list of SASL mechanisms being read.
#[derive(Clone, Copy, PartialEq)]
enum MechanismList {
    /// RFC 6120 `<mechanisms/>`.
    Sasl,
    /// XEP-0388 `<authentication/>`.
    Sasl2,
}

impl MechanismList {
    fn ns(self) -> &'static [u8] {
        match self {
            MechanismList::Sasl => NS_SASL.as_bytes(),
            MechanismList::Sasl2 => NS_SASL2.as_bytes(),
        }
    }
}

/// Collects the ranges to remove and the summary. Feature children are depth 2, mechanisms
/// depth 3.
#[derive(Default)]
struct FeaturesObserver {
    is_features: bool,
    drops: Vec<Range<usize>>,
    /// Start of the feature child being removed.
    dropping: Option<usize>,
    in_starttls: bool,
    list: Option<MechanismList>,
    /// Start of the removable range of the `<mechanism>` being read, and its text so far.
    mechanism: Option<(usize, Vec<u8>)>,
    /// Whitespace-only text that ends where the next tag starts.
    space_before: Option<Range<usize>>,
    summary: FeatureSummary,
}

impl FeaturesObserver {
    /// Where removal of an element starting at `at` begins: the whitespace before it goes too.
    fn drop_start(&self, at: usize) -> usize {
        match &self.space_before {
            Some(space) if space.end == at => space.start,
            _ => at,
        }
    }
}

impl Observer for FeaturesObserver {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<(), XmlError> {
        let ns = tag.ns.unwrap_or_default();
        match tag.depth {
            1 => self.is_features = tag.local == b"features" && ns == NS_STREAM.as_bytes(),
            2 => match tag.local {
                b"starttls" if ns == NS_TLS.as_bytes() => {
                    self.summary.starttls = true;
                    self.in_starttls = true;
                    self.dropping = Some(self.drop_start(tag.span.start));
                }
                b"sasl-channel-binding" if ns == NS_SASL_CB.as_bytes() => {
                    self.dropping = Some(self.drop_start(tag.span.start));
                }
                b"mechanisms" if ns == NS_SASL.as_bytes() => self.list = Some(MechanismList::Sasl),
                b"authentication" if ns == NS_SASL2.as_bytes() => {
                    self.list = Some(MechanismList::Sasl2)
                }
                _ => {}
            },
            3 => {
                if self.in_starttls && tag.local == b"required" && ns == NS_TLS.as_bytes() {
                    self.summary.starttls_required = true;
                }
                if let Some(list) = self.list {
                    if tag.local == b"mechanism" && ns == list.ns() {
                        self.mechanism = Some((self.drop_start(tag.span.start), Vec::new()));
                    }
                }
            }
            _ => {}
        }
        self.space_before = None;
        Ok(())
    }

    fn end(&mut self, tag: &EndTag<'_>) -> Result<(), XmlError> {
        match tag.depth {
            2 => {
                if let Some(start) = self.dropping.take() {
                    self.drops.push(start..tag.span.end);
                }
                self.in_starttls = false;
                self.list = None;
            }
            3 => {
                if let (Some(list), Some((start, text))) = (self.list, self.mechanism.take()) {
                    let name =
                        String::from_utf8(text).map_err(|_| XmlError::syntax("invalid UTF-8"))?;
                    let name = name.trim();
                    // docs/protocol.md §1: channel binding cannot cross the gateway.
                    if name.ends_with("-PLUS") {
                        self.drops.push(start..tag.span.end);
                    }
                    if list == MechanismList::Sasl {
                        self.summary.mechanisms.push(name.to_owned());
                    }
                }
            }
            _ => {}
        }
        self.space_before = None;
        Ok(())
    }

    fn text(
        &mut self,
        depth: usize,
        raw: &[u8],
        span: Range<usize>,
        cdata: bool,
    ) -> Result<(), XmlError> {
        if let Some((_, text)) = self.mechanism.as_mut().filter(|_| depth == 3) {
            if cdata {
                text.extend_from_slice(raw);
            } else {
                decode_text(raw, text)?;
            }
        }
        self.space_before = (!cdata && raw.iter().all(|&b| is_space(b))).then_some(span);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
