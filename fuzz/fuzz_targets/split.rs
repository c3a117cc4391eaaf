//! The upstream splitter (`xml::split::StreamSplitter`) on arbitrary server bytes, fed in
//! chunks whose sizes the input chooses, under the browser limits and under the size-only
//! limit the server's stream is held to.
//!
//! Input: one byte `f` (low 4 bits: how many chunk-size bytes follow; bit 4: give back idle
//! memory between chunks, as an idle session does), those chunk sizes (each byte + 1, used in
//! turn), then the stream. No chunk-size bytes means one byte at a time.
//!
//! Checked: no panic; after an error the same error again, even with more bytes; every element
//! stands alone (quick-xml reads it, and a fresh splitter returns it unchanged with the same
//! kind); the chunking changes nothing against reading all bytes at once.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xmpp_gateway::xml::split::{ElementKind, StreamItem, StreamSplitter};
use xmpp_gateway::xml::{Limits, XmlError};
use xmpp_gateway_fuzz::{assert_one_element_after, assert_standalone, neutral_header};

/// Items read, and the error that stopped the stream, if any.
type Outcome = (Vec<StreamItem>, Option<XmlError>);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(flags & 0x0f).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let release = flags & 0x10 != 0;
    let sizes: Vec<usize> = if sizes.is_empty() {
        vec![1]
    } else {
        sizes.iter().map(|&b| usize::from(b) + 1).collect()
    };

    for limits in [Limits::default(), Limits::size_only(1 << 20)] {
        let whole = read(&limits, std::iter::once(stream), false);
        let chunked = read(&limits, chunks(stream, &sizes), release);
        assert_eq!(whole, chunked, "chunking changed the outcome");
        for item in &whole.0 {
            if let StreamItem::Element(element) = item {
                check_element(&element.bytes, element.kind);
            }
        }
    }
});

/// `stream` cut into pieces of the given sizes, used in turn.
fn chunks<'a>(stream: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = stream;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = (*sizes.next()?).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Reads the chunks the way a session does: restart after SASL success or STARTTLS proceed
/// (RFC 6120 §4.3.3), and, if `release`, give back memory whenever nothing is buffered.
fn read<'a>(limits: &Limits, chunks: impl Iterator<Item = &'a [u8]>, release: bool) -> Outcome {
    let mut splitter = StreamSplitter::new(limits.clone());
    let mut items = Vec::new();
    for chunk in chunks {
        splitter.buffer_mut().extend_from_slice(chunk);
        loop {
            match splitter.next_item() {
                Ok(Some(item)) => {
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
                Ok(None) => break,
                Err(err) => {
                    assert_eq!(splitter.next_item(), Err(err.clone()), "error not repeated");
                    splitter.buffer_mut().extend_from_slice(b"<a/>");
                    assert_eq!(
                        splitter.next_item(),
                        Err(err.clone()),
                        "error not repeated after more bytes"
                    );
                    return (items, Some(err));
                }
            }
        }
        if release && splitter.buffered() == 0 {
            splitter.release_idle_memory();
        }
    }
    (items, None)
}

/// An element the splitter returned is a document of its own.
fn check_element(bytes: &[u8], kind: ElementKind) {
    assert_standalone(bytes);
    let (again, again_kind) = assert_one_element_after(&neutral_header(), bytes);
    assert_eq!(
        again,
        bytes,
        "a standalone element was changed when split again: {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(again_kind, kind, "kind changed when split again");
}
