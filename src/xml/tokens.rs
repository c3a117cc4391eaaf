//! quick-xml's pull reader over a byte slice, reporting where each event lies and telling
//! "the input stops inside this construct" apart from real syntax errors.
//!
//! The splitter reads from a buffer that holds only part of the stream, so running out of
//! bytes is normal there; quick-xml reports it as a syntax error, which is translated here.

use std::ops::Range;

use quick_xml::errors::{Error as QxError, SyntaxError};
use quick_xml::events::{BytesDecl, Event};
use quick_xml::Reader;

use super::text::check_chars;
use super::XmlError;

/// One step of a quick-xml reader over a slice, with byte positions.
pub(crate) enum Token<'a> {
    /// A complete event and its position in the slice.
    Event(Event<'a>, Range<usize>),
    /// The input ends inside the construct that starts at this offset.
    Incomplete(usize),
}

/// quick-xml's reader over a byte slice, configured for our checks, reporting positions.
pub(crate) struct Tokens<'a> {
    reader: Reader<&'a [u8]>,
    len: usize,
}

impl<'a> Tokens<'a> {
    /// Reads `input`, which must start with `<`: quick-xml skips a byte order mark at the start
    /// of its input without counting it in positions.
    pub(crate) fn new(input: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(input);
        let config = reader.config_mut();
        // End tags are matched by the scanner's own stack: a reader started in the middle of
        // an element does not know the elements opened before it (see `scan`).
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Tokens {
            reader,
            len: input.len(),
        }
    }

    fn position(&self) -> usize {
        usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    /// The next complete event, or where the input stops being complete.
    pub(crate) fn next(&mut self) -> Result<Token<'a>, XmlError> {
        let start = self.position();
        match self.reader.read_event() {
            Ok(Event::Eof) => Ok(Token::Incomplete(start)),
            Ok(Event::Text(text)) => {
                // Text runs to the end of the input: its end is not known yet.
                let end = self.position();
                if end >= self.len {
                    Ok(Token::Incomplete(start))
                } else {
                    Ok(Token::Event(Event::Text(text), start..end))
                }
            }
            Ok(event) => Ok(Token::Event(event, start..self.position())),
            // "<!" followed by nothing yet.
            Err(QxError::Syntax(SyntaxError::InvalidBangMarkup))
                if self.len.saturating_sub(start) < 3 =>
            {
                Ok(Token::Incomplete(start))
            }
            Err(QxError::Syntax(SyntaxError::InvalidBangMarkup)) => {
                Err(XmlError::syntax("unknown markup after '<!'"))
            }
            // Every other syntax error of a slice reader means the input ended inside markup.
            Err(QxError::Syntax(_)) => Ok(Token::Incomplete(start)),
            Err(_) => Err(XmlError::syntax("malformed markup")),
        }
    }
}

/// Checks an XML declaration (`raw` is its text): a version, and UTF-8 as the only encoding
/// (RFC 6120 §11.6).
pub(crate) fn check_declaration(decl: &BytesDecl<'_>, raw: &[u8]) -> Result<(), XmlError> {
    check_chars(raw)?;
    decl.version()
        .map_err(|_| XmlError::syntax("XML declaration without version"))?;
    if let Some(encoding) = decl.encoding() {
        let encoding = encoding.map_err(|_| XmlError::syntax("bad XML declaration"))?;
        if !encoding.eq_ignore_ascii_case(b"utf-8") {
            return Err(XmlError::syntax("encoding other than UTF-8"));
        }
    }
    Ok(())
}
