//! Helpers shared by the XML tests: an independent standalone-document check and a realistic
//! upstream stream with the items it must split into.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::split::{ElementKind, StreamItem, StreamSplitter};
use super::Limits;

/// Parses `bytes` alone with quick-xml's namespace-aware reader (end names checked) and returns
/// the root's namespace and local name. Panics (failing the test) unless `bytes` is exactly one
/// element whose every prefix resolves.
pub(crate) fn standalone_root(bytes: &[u8]) -> (Option<String>, String) {
    let text = std::str::from_utf8(bytes).expect("element is UTF-8");
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut root = None;
    loop {
        let (resolved, event) = reader.read_resolved_event().expect("element parses alone");
        let ns = match &resolved {
            ResolveResult::Bound(ns) => Some(String::from_utf8(ns.as_ref().to_vec()).unwrap()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                panic!(
                    "unbound prefix {:?} in {text}",
                    String::from_utf8_lossy(prefix)
                )
            }
        };
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                for attr in tag.attributes() {
                    let attr = attr.expect("attribute parses");
                    if attr.key.as_namespace_binding().is_none() {
                        let (resolved, _) = reader.resolve_attribute(attr.key);
                        assert!(
                            !matches!(resolved, ResolveResult::Unknown(_)),
                            "unbound attribute prefix in {text}"
                        );
                    }
                }
                if depth == 0 {
                    roots += 1;
                    let local = String::from_utf8(tag.local_name().as_ref().to_vec()).unwrap();
                    root = Some((ns, local));
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::Text(ref t) if depth == 0 => {
                assert!(
                    t.iter().all(|b| b.is_ascii_whitespace()),
                    "text outside root in {text}"
                )
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(roots, 1, "exactly one root in {text}");
    root.expect("a root element")
}

/// The streams namespace declaration the splitter copies onto `stream:` elements.
pub(crate) const STREAM_DECL: &str = " xmlns:stream='http://etherx.jabber.org/streams'";
/// The default namespace declaration the splitter copies onto unqualified elements.
pub(crate) const CLIENT_DECL: &str = " xmlns='jabber:client'";

/// One piece of the realistic stream: its text, and what the splitter must make of it.
pub(crate) enum Part {
    /// Bytes that produce no item (declaration, whitespace, ignored trailer).
    Silent(&'static str),
    /// The stream header.
    Header(&'static str),
    /// A top-level element, the declarations to be inserted after its name, and its kind.
    Element(&'static str, &'static [&'static str], ElementKind),
    /// `</stream:stream>`.
    End(&'static str),
}

/// A Prosody-like session as the server sends it: header, features, SASL, restart, bound
/// session with stanzas and keepalives, stream error, close, and garbage after the close.
pub(crate) fn prosody_parts() -> Vec<Part> {
    use ElementKind::*;
    use Part::*;
    vec![
        Silent("<?xml version='1.0'?>"),
        Header("<stream:stream xmlns='jabber:client' xml:lang='en' xmlns:stream='http://etherx.jabber.org/streams' id='6a1f0e4c-3c2b-4f39' from='example.org' version='1.0'>"),
        Element("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>", &[CLIENT_DECL, STREAM_DECL], Features),
        Element("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtvK2QybGJiRmdPTlJ2OWZxa2hJS2hYZzMsczFPWGt2VkdSMEp3Pw==</challenge>", &[], Other),
        Element("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1wTk5ERlZFUXh1WHhDb1NFaVc4R0VaKzFSU289</success>", &[], SaslSuccess),
        Silent("<?xml version='1.0'?>"),
        Header("<stream:stream xmlns='jabber:client' xml:lang='en' xmlns:stream='http://etherx.jabber.org/streams' id='second-stream' from='example.org' version='1.0'>"),
        Element("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session><sm xmlns='urn:xmpp:sm:3'/><csi xmlns='urn:xmpp:csi:0'/></stream:features>", &[CLIENT_DECL, STREAM_DECL], Features),
        Element("<iq type='result' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@example.org/balcony</jid></bind></iq>", &[CLIENT_DECL], Other),
        Silent("\n "),
        Element("<message from='romeo@example.net/orchard' to='juliet@example.org/balcony' type='chat' id='m1' xml:lang='de'><body>Grüße aus Verona — 你好 &amp; &lt;3 &#x1F339;</body><thread>e0ffe42b</thread></message>", &[CLIENT_DECL], Other),
        Silent("\r\n\t"),
        Element("<message from='romeo@example.net/orchard' to='juliet@example.org/balcony' type='chat'><body><![CDATA[<b>not markup</b> & </stream:stream>]]></body><active xmlns='http://jabber.org/protocol/chatstates'/></message>", &[CLIENT_DECL], Other),
        Silent(" "),
        Element("<message from='pubsub.example.org' to='juliet@example.org'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:microblog:0'><item id='1'><entry xmlns='http://www.w3.org/2005/Atom'><title type='text'>Deep &quot;nested&quot;</title><author><name>Romeo</name></author></entry></item></items></event></message>", &[CLIENT_DECL], Other),
        Element("<presence from='romeo@example.net/orchard'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://conversations.im' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/><priority>5</priority></presence>", &[CLIENT_DECL], Other),
        Element("<r xmlns='urn:xmpp:sm:3'/>", &[], Other),
        Silent(" "),
        Element("<iq type='get' id='ping1' from='example.org'><ping xmlns='urn:xmpp:ping'/></iq>", &[CLIENT_DECL], Other),
        Element("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>Replaced by new connection</text></stream:error>", &[CLIENT_DECL, STREAM_DECL], StreamError),
        End("</stream:stream>"),
        Silent("<trailing garbage after the close is ignored"),
    ]
}

/// The whole realistic stream as bytes.
pub(crate) fn prosody_stream() -> Vec<u8> {
    prosody_parts()
        .iter()
        .flat_map(|part| match part {
            Part::Silent(s) | Part::Header(s) | Part::Element(s, _, _) | Part::End(s) => s.bytes(),
        })
        .collect()
}

/// `element` with `decls` inserted right after its name.
pub(crate) fn with_declarations(element: &str, decls: &[&str]) -> String {
    let name_end = element.find([' ', '/', '>']).expect("element has a name");
    let mut out = element[..name_end].to_owned();
    for decl in decls {
        out.push_str(decl);
    }
    out.push_str(&element[name_end..]);
    out
}

/// Feeds `chunks` one after another, collecting items the way the session code does: a stream
/// restart (`reset`) right after SASL success or STARTTLS proceed.
pub(crate) fn split_chunks<'a>(
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<StreamItem>, super::XmlError> {
    let mut splitter = StreamSplitter::new(limits);
    let mut items = Vec::new();
    for chunk in chunks {
        splitter.buffer_mut().extend_from_slice(chunk);
        while let Some(item) = splitter.next_item()? {
            if let StreamItem::Element(element) = &item {
                if matches!(
                    element.kind,
                    ElementKind::SaslSuccess | ElementKind::TlsProceed
                ) {
                    splitter.reset();
                }
            }
            items.push(item);
        }
    }
    Ok(items)
}
