//! Character-level rules of XML that quick-xml leaves to its users: valid characters, names,
//! entity and character references, and attribute value decoding.
//!
//! quick-xml's reader finds markup boundaries but does not check references or characters, and
//! RFC 6120 §11.1 forbids every entity except the five predefined ones. These checks run over
//! raw byte slices without allocating, so they can be applied to every stanza.

use super::XmlError;

/// Namespace the `xml` prefix is bound to by definition (Namespaces in XML §3).
pub(crate) const XML_NS: &[u8] = b"http://www.w3.org/XML/1998/namespace";

/// XML whitespace (the `S` production): space, tab, line feed, carriage return.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Number of leading whitespace bytes.
pub(crate) fn leading_space(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(bytes.len())
}

/// Offset of the first byte of `bytes` for which `hit` is true. Blocks of 32 bytes without a
/// hit are skipped with a branch-free test the compiler can vectorise: these scans run over
/// every byte of every stanza.
pub(crate) fn find_byte(bytes: &[u8], hit: impl Fn(u8) -> bool) -> Option<usize> {
    const BLOCK: usize = 32;
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut offset = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |any, &b| any | hit(b)) {
            return block.iter().position(|&b| hit(b)).map(|i| offset + i);
        }
        offset += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(|&b| hit(b))
        .map(|i| offset + i)
}

/// Checks that `bytes` is UTF-8 made only of characters XML 1.0 allows (§2.2): no control
/// characters other than tab, line feed and carriage return, and no U+FFFE or U+FFFF.
/// (UTF-8 itself cannot encode surrogates, so `from_utf8` covers those.)
pub(crate) fn check_chars(bytes: &[u8]) -> Result<(), XmlError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(XmlError::syntax("invalid UTF-8"));
    }
    check_str_chars(bytes)
}

/// [`check_chars`] for bytes already known to be UTF-8 (a `str`'s): the characters only.
pub(crate) fn check_str_chars(bytes: &[u8]) -> Result<(), XmlError> {
    let mut from = 0;
    while let Some(offset) = bytes.get(from..).and_then(find_control_or_ef) {
        let at = from + offset;
        match bytes.get(at..) {
            Some([b'\t' | b'\n' | b'\r', ..]) => {}
            Some([0xEF, 0xBF, 0xBE | 0xBF, ..]) => {
                return Err(XmlError::syntax("character U+FFFE or U+FFFF"));
            }
            Some([0xEF, ..]) => {}
            _ => return Err(XmlError::syntax("control character")),
        }
        from = at + 1;
    }
    Ok(())
}

/// Offset of the first byte below 0x20 (a control character, or tab, line feed, carriage
/// return) or equal to 0xEF (the lead byte of U+FFFE and U+FFFF). [`check_chars`] runs over
/// every byte of every stanza, and the compiler does not vectorise this test on its own, so
/// eight bytes are tested at a time in a `u64` (a byte below `n` borrows in `x - n`, and then
/// has its top bit set where the byte itself did not).
fn find_control_or_ef(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let hit = |b: u8| b < 0x20 || b == 0xEF;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        if below(x, 0x20) || below(x ^ (ONES * 0xEF), 1) {
            return word.iter().position(|&b| hit(b)).map(|i| offset + i);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| hit(b))
        .map(|i| offset + i)
}

/// Checks a (possibly prefixed) element or attribute name. ASCII characters are limited to the
/// ones XML allows in names; non-ASCII characters are accepted as they are. At most one colon,
/// separating two non-empty parts (Namespaces in XML §4).
///
/// One pass with a table: it runs for every element and attribute name of every stanza.
pub(crate) fn check_name(name: &[u8]) -> Result<(), XmlError> {
    let mut colon = None;
    for (i, &b) in name.iter().enumerate() {
        match NAME_BYTES[usize::from(b)] {
            NAME_START => {}
            NAME_CHAR if i != 0 && colon != Some(i - 1) => {}
            COLON if colon.is_none() && i != 0 => colon = Some(i),
            _ => return Err(XmlError::syntax("invalid element or attribute name")),
        }
    }
    match (name.len(), colon) {
        (0, _) => Err(XmlError::syntax("invalid element or attribute name")),
        (len, Some(at)) if at + 1 == len => {
            Err(XmlError::syntax("invalid element or attribute name"))
        }
        _ => Ok(()),
    }
}

/// [`check_name`]'s classes: bytes that may start a name part, that may only follow its first
/// byte, the colon between prefix and local name, and the rest.
const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;
const COLON: u8 = 3;
const NAME_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            NAME_START
        } else if c.is_ascii_digit() || c == b'-' || c == b'.' {
            NAME_CHAR
        } else if c == b':' {
            COLON
        } else {
            0
        };
        b += 1;
    }
    table
};

/// Bytes that can appear between `&` and `;` of a reference we are willing to look at.
fn is_reference_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'#' | b'_' | b'-' | b'.' | b':') || b >= 0x80
}

/// Reads the reference that starts right after an `&`. Returns the character it stands for
/// and the number of bytes it takes, `;` included.
fn read_reference(rest: &[u8]) -> Result<(char, usize), XmlError> {
    let len = rest
        .iter()
        .position(|&b| !is_reference_byte(b))
        .unwrap_or(rest.len());
    if rest.get(len) != Some(&b';') {
        return Err(XmlError::syntax("'&' that does not start a reference"));
    }
    let name = rest.get(..len).unwrap_or_default();
    let c = match name {
        b"amp" => '&',
        b"lt" => '<',
        b"gt" => '>',
        b"apos" => '\'',
        b"quot" => '"',
        [b'#', b'x', hex @ ..] => char_reference(hex, 16)?,
        [b'#', decimal @ ..] => char_reference(decimal, 10)?,
        [] => return Err(XmlError::syntax("empty reference")),
        // RFC 6120 §11.1: no entities beyond the predefined ones.
        _ => return Err(XmlError::Restricted("entity reference")),
    };
    Ok((c, len + 1))
}

/// Value of a character reference `&#N;`/`&#xN;`, which must name an XML character.
fn char_reference(digits: &[u8], radix: u32) -> Result<char, XmlError> {
    let bad = || XmlError::syntax("invalid character reference");
    if digits.is_empty() {
        return Err(bad());
    }
    let mut value: u32 = 0;
    for &d in digits {
        let digit = char::from(d).to_digit(radix).ok_or_else(bad)?;
        value = value
            .checked_mul(radix)
            .and_then(|v| v.checked_add(digit))
            .ok_or_else(bad)?;
    }
    let c = char::from_u32(value).ok_or_else(bad)?;
    let allowed = matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
    if allowed {
        Ok(c)
    } else {
        Err(bad())
    }
}

/// Checks character data that is complete (ends before a `<`): every `&` starts an allowed
/// reference and `]]>` does not appear (XML §2.4).
pub(crate) fn check_text(text: &[u8]) -> Result<(), XmlError> {
    check_text_from(text, false).map(|_| ())
}

/// Checks the start of character data whose end has not arrived yet. Returns how many bytes
/// are settled; the rest (a reference still being received, or a possible `]]` of `]]>`) must
/// be checked again once more data is there.
pub(crate) fn check_text_prefix(text: &[u8]) -> Result<usize, XmlError> {
    check_text_from(text, true)
}

fn check_text_from(text: &[u8], partial: bool) -> Result<usize, XmlError> {
    let mut from = 0;
    while let Some(offset) = text
        .get(from..)
        .and_then(|rest| find_byte(rest, |b| b == b'&' || b == b'>'))
    {
        let at = from + offset;
        if text.get(at) == Some(&b'>') {
            if at >= 2 && text.get(at - 2..at) == Some(b"]]") {
                return Err(XmlError::syntax("']]>' in character data"));
            }
            from = at + 1;
            continue;
        }
        let rest = text.get(at + 1..).unwrap_or_default();
        match read_reference(rest) {
            Ok((_, len)) => from = at + 1 + len,
            Err(_) if partial && rest.iter().all(|&b| is_reference_byte(b)) => return Ok(at),
            Err(e) => return Err(e),
        }
    }
    if partial {
        // Leave a trailing "]]" for the next round, which sees what follows it.
        Ok(text.len().saturating_sub(2))
    } else {
        Ok(text.len())
    }
}

/// Checks a raw attribute value: no `<` (XML §3.1) and only allowed references.
pub(crate) fn check_attr_value(raw: &[u8]) -> Result<(), XmlError> {
    let mut from = 0;
    while let Some(offset) = raw
        .get(from..)
        .and_then(|rest| find_byte(rest, |b| b == b'&' || b == b'<'))
    {
        let at = from + offset;
        if raw.get(at) == Some(&b'<') {
            return Err(XmlError::syntax("'<' in attribute value"));
        }
        let (_, len) = read_reference(raw.get(at + 1..).unwrap_or_default())?;
        from = at + 1 + len;
    }
    Ok(())
}

/// Appends the value of a raw attribute value to `out`, with references replaced and
/// whitespace normalised as XML §3.3.3 requires (each line end, tab or newline becomes a space).
pub(crate) fn decode_attr_value(raw: &[u8], out: &mut Vec<u8>) -> Result<(), XmlError> {
    decode(raw, out, true)
}

/// Appends the value of raw character data to `out`, with references replaced and line ends
/// normalised to `\n` (XML §2.11).
pub(crate) fn decode_text(raw: &[u8], out: &mut Vec<u8>) -> Result<(), XmlError> {
    decode(raw, out, false)
}

/// Decodes a raw attribute value into a `String`.
pub(crate) fn attr_string(raw: &[u8]) -> Result<String, XmlError> {
    let mut out = Vec::with_capacity(raw.len());
    decode_attr_value(raw, &mut out)?;
    String::from_utf8(out).map_err(|_| XmlError::syntax("invalid UTF-8"))
}

fn decode(raw: &[u8], out: &mut Vec<u8>, attribute: bool) -> Result<(), XmlError> {
    out.reserve(raw.len());
    let mut i = 0;
    loop {
        // Bytes that stand for themselves are copied a run at a time.
        let rest = raw.get(i..).unwrap_or_default();
        let plain = find_byte(rest, |b| matches!(b, b'&' | b'<' | b'\r' | b'\n' | b'\t'))
            .unwrap_or(rest.len());
        out.extend_from_slice(rest.get(..plain).unwrap_or_default());
        i += plain;
        let Some(&b) = raw.get(i) else { break };
        match b {
            b'&' => {
                let (c, len) = read_reference(raw.get(i + 1..).unwrap_or_default())?;
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                i += 1 + len;
                continue;
            }
            b'<' if attribute => return Err(XmlError::syntax("'<' in attribute value")),
            b'\r' => {
                // "\r\n" and a lone "\r" are one line end.
                if raw.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                out.push(if attribute { b' ' } else { b'\n' });
            }
            b'\n' | b'\t' if attribute => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/protocol.md §2: only the five predefined entities and character references.
    #[test]
    fn predefined_and_character_references_are_accepted() {
        assert!(check_text(b"a &amp; b &lt; &gt; &apos; &quot; &#65; &#x1F600;").is_ok());
    }

    #[test]
    fn unknown_entity_is_restricted() {
        assert_eq!(
            check_text(b"x &xxe; y"),
            Err(XmlError::Restricted("entity reference"))
        );
        assert_eq!(
            check_attr_value(b"&nbsp;"),
            Err(XmlError::Restricted("entity reference"))
        );
    }

    #[test]
    fn bare_ampersand_and_bad_char_refs_are_not_well_formed() {
        for bad in [
            &b"a & b"[..],
            b"&;",
            b"&#;",
            b"&#x;",
            b"&#0;",
            b"&#xD800;",
            b"&#99999999999;",
            b"&#X41;",
            b"&amp",
        ] {
            assert!(
                matches!(check_text(bad), Err(XmlError::NotWellFormed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cdata_end_marker_in_text_is_not_well_formed() {
        assert!(check_text(b"a ]]> b").is_err());
        assert!(check_text(b"a ]] > b").is_ok());
    }

    #[test]
    fn partial_text_stops_before_an_unfinished_reference() {
        assert_eq!(check_text_prefix(b"abc &am"), Ok(4));
        assert_eq!(check_text_prefix(b"abc &amp; def"), Ok(11));
        assert!(check_text_prefix(b"abc & def").is_err());
        assert!(check_text_prefix(b"abc &bogus; def").is_err());
    }

    #[test]
    fn find_byte_finds_the_first_hit_at_any_offset() {
        for len in [0, 1, 31, 32, 33, 64, 100] {
            let mut bytes = vec![b'a'; len];
            assert_eq!(find_byte(&bytes, |b| b == b'<'), None);
            for at in (0..len).rev() {
                bytes[at] = b'<';
                assert_eq!(find_byte(&bytes, |b| b == b'<'), Some(at), "len {len}");
            }
        }
    }

    // The word-at-a-time test finds what the byte-at-a-time one does: every byte value at
    // every position of a word, next to every neighbour that could borrow into it.
    #[test]
    fn control_or_ef_is_found_at_any_offset_whatever_surrounds_it() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&b| b < 0x20 || b == 0xEF);
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for value in 0..=255u8 {
                    for fill in [0x20u8, 0x21, 0x7F, 0x80, 0xEE, 0xF0, 0xFF] {
                        let mut bytes = vec![fill; len];
                        bytes[at] = value;
                        assert_eq!(find_control_or_ef(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn control_characters_and_bad_utf8_are_refused() {
        assert!(check_chars("tab\tnl\ncr\r é ✓ 😀".as_bytes()).is_ok());
        assert!(check_chars(b"nul\0").is_err());
        assert!(check_chars(b"\x1b[0m").is_err());
        assert!(check_chars(b"\xff").is_err());
        assert!(check_chars("\u{FFFE}".as_bytes()).is_err());
        assert!(check_chars("\u{FFFD}".as_bytes()).is_ok());
    }

    #[test]
    fn names_follow_xml_rules() {
        for good in [
            &b"message"[..],
            b"stream:stream",
            b"xml:lang",
            b"a-b.c_d",
            b"\xc3\xa9t\xc3\xa9",
        ] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            &b""[..],
            b"1a",
            b"a<b",
            b"a\"b",
            b":a",
            b"a:",
            b"a:b:c",
            b"a:1b",
            b"a=b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_values_are_decoded_and_normalised() {
        assert_eq!(attr_string(b"a&amp;b&#x20;c\td\r\ne").unwrap(), "a&b c d e");
        assert!(attr_string(b"a<b").is_err());
        let mut out = Vec::new();
        decode_text(b"x\r\ny&lt;", &mut out).unwrap();
        assert_eq!(out, b"x\ny<");
    }
}
