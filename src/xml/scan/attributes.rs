//! The checks every start tag's attributes get: syntax, whitespace between them, names,
//! values, no name twice (XML §3.1), and the count.

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::BytesStart;

use crate::xml::ns::step;
use crate::xml::text::{check_attr_value, check_name, is_space};
use crate::xml::XmlError;

/// Validates every attribute of `tag` (syntax, duplicates, name, value, count) and hands each
/// one to `f`. Returns the number of attributes.
pub(crate) fn for_each_attribute<'t, F>(
    tag: &'t BytesStart<'_>,
    max: usize,
    mut f: F,
) -> Result<usize, XmlError>
where
    F: FnMut(Attribute<'t>) -> Result<(), XmlError>,
{
    let raw: &[u8] = tag;
    let mut count = 0;
    let mut names = AttributeNames::default();
    // quick-xml's own duplicate check compares each name with every earlier one; the check
    // here costs the same per attribute however many there are.
    for attr in tag.attributes().with_checks(false) {
        let attr = attr.map_err(|_| XmlError::syntax("bad attribute syntax"))?;
        // First, as when the whole tag was checked before its attributes were read.
        let spaced = match &attr.value {
            Cow::Borrowed(value) => spaced_after(raw, value),
            Cow::Owned(_) => None,
        };
        match spaced {
            Some(true) => {}
            Some(false) => return Err(XmlError::syntax("no whitespace between attributes")),
            // quick-xml gives every raw value as a slice of the tag (the test below holds it
            // to that). Were one not, the tag is refused rather than let through unchecked.
            None => return Err(XmlError::syntax("attribute value outside its tag")),
        }
        count += 1;
        if count > max {
            return Err(XmlError::TooManyAttributes);
        }
        names.insert(attr.key.into_inner())?;
        check_name(attr.key.as_ref())?;
        check_attr_value(&attr.value)?;
        f(attr)?;
    }
    Ok(count)
}

/// Whether the byte after the closing quote of `value`, a raw value sliced from the tag `raw`,
/// is whitespace or the end of the tag (XML §3.1). Found from where the slice lies in the tag,
/// so that the tag's bytes are not walked once more for this alone. `None` when `value` is
/// not a slice of `raw`.
fn spaced_after(raw: &[u8], value: &[u8]) -> Option<bool> {
    let start = (value.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    let end = start
        .checked_add(value.len())
        .filter(|&end| end <= raw.len())?;
    Some(!raw.get(end + 1).is_some_and(|&b| !is_space(b)))
}

/// The attribute names of one tag seen so far, for XML §3.1's "no attribute name appears more
/// than once". A few are compared directly; past that they go into a hash set, so a tag with
/// thousands of attributes (the server relays whatever another user wrote) is checked in
/// linear time.
#[derive(Default)]
struct AttributeNames<'t> {
    /// The first names, compared directly (no allocation for ordinary tags).
    few: [&'t [u8]; 8],
    len: usize,
    many: Option<HashSet<&'t [u8]>>,
}

impl<'t> AttributeNames<'t> {
    fn insert(&mut self, name: &'t [u8]) -> Result<(), XmlError> {
        let duplicate = || XmlError::syntax("duplicate attribute");
        if let Some(set) = &mut self.many {
            step(1);
            return if set.insert(name) {
                Ok(())
            } else {
                Err(duplicate())
            };
        }
        let few = self.few.get(..self.len).unwrap_or_default();
        step(few.len());
        if few.contains(&name) {
            return Err(duplicate());
        }
        match self.few.get_mut(self.len) {
            Some(slot) => {
                *slot = name;
                self.len += 1;
            }
            None => {
                let mut set: HashSet<&[u8]> = self.few.iter().copied().collect();
                set.insert(name);
                self.many = Some(set);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spacing check relies on this: each raw value quick-xml hands out lies inside the
    /// tag's own bytes, whether the tag borrows its bytes or owns them, and whatever the value
    /// holds (references, the other quote, nothing).
    #[test]
    fn every_raw_value_is_a_slice_of_its_tag() {
        let content = r#"a b='1' c="x&amp;y" d='"' e="" xml:lang='en'	f='2'"#;
        let borrowed = BytesStart::from_content(content, 1);
        let owned = BytesStart::from_content(content.to_owned(), 1);
        for tag in [borrowed, owned] {
            let raw: &[u8] = &tag;
            let mut seen = 0;
            for attr in tag.attributes().with_checks(false) {
                let attr = attr.expect("well-formed attributes");
                let Cow::Borrowed(value) = attr.value else {
                    panic!("an owned value for {:?}", attr.key);
                };
                assert_eq!(spaced_after(raw, value), Some(true), "{:?}", attr.key);
                seen += 1;
            }
            assert_eq!(seen, 6);
            assert_eq!(for_each_attribute(&tag, 10, |_| Ok(())), Ok(6));
        }
    }
}
