//! What the server relays from other users (docs/protocol.md §2): the server's stream is held to
//! well-formedness and its own size limit only, and splitting it costs the same per name
//! however many declarations or attributes an element carries.

use super::*;
use crate::xml::ns::cost;

/// The limits a session applies to its server's stream.
fn relayed() -> Limits {
    Limits::size_only(1024 * 1024)
}

fn split_relayed(body: &str) -> Result<Vec<StreamItem>, XmlError> {
    let mut items = split_with(relayed(), format!("{HEADER}{body}").as_bytes())?;
    items.remove(0);
    Ok(items)
}

/// A message as another user could send it: `levels` nested elements around a text.
fn deep_message(levels: usize) -> String {
    let mut s = String::from("<message from='mallory@example.net/x' to='alice@example.org'>");
    for i in 0..levels {
        s.push_str(&format!("<n{i} xmlns='urn:example:deep'>"));
    }
    s.push_str("the core");
    for i in (0..levels).rev() {
        s.push_str(&format!("</n{i}>"));
    }
    s.push_str("</message>");
    s
}

fn wide_message(attributes: usize) -> String {
    let mut s = String::from("<message to='alice@example.org'><x xmlns='urn:example:wide'");
    for i in 0..attributes {
        s.push_str(&format!(" a{i}='{i}'"));
    }
    s.push_str("/></message>");
    s
}

#[test]
fn relayed_deep_and_wide_stanzas_pass_intact() {
    for message in [
        deep_message(40),
        deep_message(5_000),
        wide_message(100),
        wide_message(5_000),
    ] {
        let items = split_relayed(&message).expect("the server's stream is only size-limited");
        assert_eq!(items.len(), 1);
        // The stanza gains the stream's default namespace and is otherwise byte for byte.
        let expected = message.replacen("<message", "<message xmlns='jabber:client'", 1);
        assert_eq!(element_text(&items[0]), expected);
    }
    // The limits meant for browsers refuse the same stanzas.
    assert_eq!(after_header(&deep_message(40)), Err(XmlError::TooDeep));
    assert_eq!(
        after_header(&wide_message(100)),
        Err(XmlError::TooManyAttributes)
    );
}

#[test]
fn relayed_stanzas_are_still_size_limited_and_well_formed() {
    let limits = Limits::size_only(4096);
    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "x".repeat(5000)
    );
    assert_eq!(split_with(limits, big.as_bytes()), Err(XmlError::TooLarge));
    let broken = deep_message(40).replace("</n7>", "</n8>");
    assert!(matches!(
        split_relayed(&broken),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn duplicate_attributes_are_refused_among_few_and_many() {
    for count in [2, 8, 9, 20, 5_000] {
        let mut message = wide_message(count);
        message = message.replace("/></message>", " a0='again'/></message>");
        assert!(
            matches!(split_relayed(&message), Err(XmlError::NotWellFormed(_))),
            "duplicate among {count} attributes"
        );
    }
}

/// Steps (entries examined, names compared) spent splitting `body` after the header.
fn steps_to_split(body: &str) -> u64 {
    let input = format!("{HEADER}{body}");
    cost::take();
    let items = split_with(relayed(), input.as_bytes()).expect("splits");
    assert_eq!(items.len(), 2, "the header and one stanza");
    cost::take()
}

/// An element declaring `n` prefixes, with `n` children each using one of them, the first
/// declared first (the worst order for a search from the innermost declaration).
fn many_declarations(n: usize) -> String {
    let mut s = String::from("<message");
    for i in 0..n {
        s.push_str(&format!(" xmlns:p{i}='urn:example:{i}'"));
    }
    s.push('>');
    for i in 0..n {
        s.push_str(&format!("<p{i}:x p{i}:y='1'/>"));
    }
    s.push_str("</message>");
    s
}

#[test]
fn name_lookups_cost_the_same_however_many_declarations_are_in_scope() {
    for n in [1_000, 10_000] {
        let steps = steps_to_split(&many_declarations(n));
        // Each child resolves two names; a search through the declarations in scope would
        // take about n * n steps.
        assert!(steps <= 8 * n as u64, "{steps} steps for {n} declarations");
    }
}

#[test]
fn duplicate_checks_cost_the_same_per_attribute_however_many_there_are() {
    for n in [1_000, 20_000] {
        let steps = steps_to_split(&wide_message(n));
        assert!(steps <= 16 * n as u64, "{steps} steps for {n} attributes");
    }
}
