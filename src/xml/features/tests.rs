//! Tests of the features filter.

use super::*;
use crate::xml::testutil::standalone_root;

const PROSODY_FEATURES: &str = "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>";

fn filtered(input: &str) -> String {
    let out = filter_features_for_client(input.as_bytes()).unwrap();
    standalone_root(&out);
    String::from_utf8(out.to_vec()).unwrap()
}

// docs/protocol.md §1: clients never see <starttls/> nor *-PLUS mechanisms.
#[test]
fn starttls_and_plus_mechanisms_are_removed_and_the_rest_kept() {
    assert_eq!(
        filtered(PROSODY_FEATURES),
        "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    );
}

#[test]
fn summary_reports_starttls_and_all_mechanisms() {
    assert_eq!(
        summarize_features(PROSODY_FEATURES.as_bytes()).unwrap(),
        FeatureSummary {
            starttls: true,
            starttls_required: true,
            mechanisms: vec![
                "SCRAM-SHA-1-PLUS".into(),
                "SCRAM-SHA-1".into(),
                "PLAIN".into()
            ],
        }
    );
    let optional = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>";
    assert_eq!(
        summarize_features(optional.as_bytes()).unwrap(),
        FeatureSummary {
            starttls: true,
            starttls_required: false,
            mechanisms: vec![],
        }
    );
}

#[test]
fn sasl2_plus_mechanisms_and_channel_binding_list_are_removed() {
    let input = "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism><inline><sm xmlns='urn:xmpp:sm:3'/></inline></authentication><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-server-end-point'/><channel-binding type='tls-exporter'/></sasl-channel-binding><sm xmlns='urn:xmpp:sm:3'/></stream:features>";
    assert_eq!(
        filtered(input),
        "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-256</mechanism><inline><sm xmlns='urn:xmpp:sm:3'/></inline></authentication><sm xmlns='urn:xmpp:sm:3'/></stream:features>"
    );
}

#[test]
fn pretty_printed_features_lose_the_whitespace_of_removed_children() {
    let input = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\n  <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n  <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\n    <mechanism>\n      SCRAM-SHA-1-PLUS\n    </mechanism>\n    <mechanism>PLAIN</mechanism>\n  </mechanisms>\n</stream:features>";
    assert_eq!(
        filtered(input),
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\n  <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\n    <mechanism>PLAIN</mechanism>\n  </mechanisms>\n</stream:features>"
    );
}

#[test]
fn features_without_anything_to_remove_are_unchanged() {
    let input = "<stream:features xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
    assert_eq!(filtered(input), input);
}

#[test]
fn mechanisms_in_other_namespaces_are_left_alone() {
    let input = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:example'><mechanism>X-PLUS</mechanism></mechanisms></stream:features>";
    assert_eq!(filtered(input), input);
}

#[test]
fn escaped_mechanism_names_are_decoded() {
    let input = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1&#x2D;PLUS</mechanism><mechanism><![CDATA[X-PLUS]]></mechanism></mechanisms></stream:features>";
    assert_eq!(
        filtered(input),
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'></mechanisms></stream:features>"
    );
}

#[test]
fn non_features_input_is_refused() {
    assert!(matches!(
        filter_features_for_client(b"<message xmlns='jabber:client'/>"),
        Err(XmlError::InvalidNamespace(_))
    ));
    assert!(matches!(
        filter_features_for_client(b"<stream:features>"),
        Err(XmlError::NotWellFormed(_))
    ));
    assert!(matches!(
        summarize_features(
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/><x/>"
        ),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn features_from_the_splitter_are_filtered() {
    use crate::xml::split::{ElementKind, StreamItem};
    use crate::xml::testutil::{prosody_stream, split_chunks};
    let items = split_chunks(Limits::default(), [prosody_stream().as_slice()]).unwrap();
    let mut seen = 0;
    for item in items {
        if let StreamItem::Element(element) = item {
            if element.kind == ElementKind::Features {
                let out = filter_features_for_client(&element.bytes).unwrap();
                let (ns, local) = standalone_root(&out);
                assert_eq!(
                    (ns.as_deref(), local.as_str()),
                    (Some(NS_STREAM), "features")
                );
                let text = std::str::from_utf8(&out).unwrap();
                assert!(
                    !text.contains("starttls") && !text.contains("-PLUS"),
                    "{text}"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 2);
}
