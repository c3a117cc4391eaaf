//! Checks shared by the fuzz targets: what the gateway hands on must stand alone as XML, by
//! quick-xml's reading and by the gateway's own splitter.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use xmpp_gateway::xml::split::{ElementKind, StreamItem, StreamSplitter};
use xmpp_gateway::xml::{Limits, NS_STREAM};

/// The start of the stream the gateway writes upstream (RFC 6120 §4.8): browser data is read
/// there with `jabber:client` as default namespace and `stream:` bound.
pub const UPSTREAM_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Panics unless `bytes` alone is one XML element whose every prefix resolves, read by
/// quick-xml's namespace-aware reader with end names checked (an implementation independent
/// of the gateway's scanner). Returns the root's namespace and local name.
pub fn assert_standalone(bytes: &[u8]) -> (Option<Vec<u8>>, Vec<u8>) {
    let text = std::str::from_utf8(bytes).expect("element is UTF-8");
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut root = None;
    loop {
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(pair) => pair,
            Err(e) => panic!("element does not parse alone ({e}): {text:?}"),
        };
        let ns = match resolved {
            ResolveResult::Bound(ns) => Some(ns.as_ref().to_vec()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => panic!("unbound prefix {prefix:?} in {text:?}"),
        };
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                for attr in tag.attributes() {
                    let attr = attr.unwrap_or_else(|e| panic!("attribute ({e}) in {text:?}"));
                    if attr.key.as_namespace_binding().is_none() {
                        let (resolved, _) = reader.resolve_attribute(attr.key);
                        assert!(
                            !matches!(resolved, ResolveResult::Unknown(_)),
                            "unbound attribute prefix in {text:?}"
                        );
                    }
                }
                if depth == 0 {
                    assert!(root.is_none(), "second root in {text:?}");
                    root = Some((ns, tag.local_name().as_ref().to_vec()));
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::Text(ref t) if depth == 0 => assert!(
                t.iter().all(u8::is_ascii_whitespace),
                "text outside the root in {text:?}"
            ),
            Event::CData(_) if depth == 0 => panic!("CDATA outside the root in {text:?}"),
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unclosed element in {text:?}");
    root.unwrap_or_else(|| panic!("no root element in {text:?}"))
}

/// Panics unless the gateway's own splitter, reading `bytes` after `header` with only a size
/// limit, finds exactly one element and nothing else. Returns that element as it would be
/// handed on (declarations from the header added).
pub fn assert_one_element_after(header: &str, bytes: &[u8]) -> (Vec<u8>, ElementKind) {
    let mut splitter = StreamSplitter::new(Limits::size_only(usize::MAX));
    splitter.buffer_mut().extend_from_slice(header.as_bytes());
    splitter.buffer_mut().extend_from_slice(bytes);
    let text = String::from_utf8_lossy(bytes);
    let mut items = Vec::new();
    loop {
        match splitter.next_item() {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(e) => panic!("splitter refuses ({e}) what was handed on: {text:?}"),
        }
    }
    assert_eq!(splitter.buffered(), 0, "bytes left over after {text:?}");
    match items.as_slice() {
        [StreamItem::Header(_), StreamItem::Element(element)] => {
            (element.bytes.to_vec(), element.kind)
        }
        other => panic!("not one element but {other:?} from {text:?}"),
    }
}

/// Panics unless `bytes`, as the gateway writes it into its upstream stream, is read there as
/// exactly one element that stands alone once the stream's declarations are added.
pub fn assert_forwardable(bytes: &[u8]) {
    let (element, _) = assert_one_element_after(UPSTREAM_HEADER, bytes);
    assert_standalone(&element);
}

/// A header that binds the streams namespace to a prefix no stream uses, and declares no
/// default namespace: an element read after it must carry every declaration it needs itself.
pub fn neutral_header() -> String {
    format!("<fz:stream xmlns:fz='{NS_STREAM}'>")
}
