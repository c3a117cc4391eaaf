//! The checks every start tag's attributes get: syntax, whitespace between them, names,
//! values, no name twice (XML §3.1), and the count.

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::attributes::Attribute;
use quick_xml::events::BytesStart;

use crate::xml::ns::step;
use crate::xml::text::{check_attr_value, check_name, find_byte, is_space};
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
    let mut whole_tag_checked = false;
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
            // Not a slice of the tag (quick-xml never does this for raw values): the whole
            // tag is checked instead, once.
            None if !whole_tag_checked => {
                whole_tag_checked = true;
                check_attribute_spacing(raw.get(tag.name().as_ref().len()..).unwrap_or_default())?;
            }
            None => {}
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

/// XML §3.1 requires whitespace between attributes (`<a b='1'c='2'>` is not well-formed);
/// quick-xml's attribute iterator does not insist on it. `attributes` is the part of the tag
/// after its name.
fn check_attribute_spacing(attributes: &[u8]) -> Result<(), XmlError> {
    let mut from = 0;
    // From one opening quote to its closing one at a time: the bytes between are a value.
    while let Some(open) = attributes
        .get(from..)
        .and_then(|rest| find_byte(rest, |b| b == b'\'' || b == b'"'))
    {
        let at = from + open;
        let quote = attributes.get(at).copied().unwrap_or_default();
        let Some(close) = attributes
            .get(at + 1..)
            .and_then(|rest| rest.iter().position(|&b| b == quote))
        else {
            // An unclosed value: quick-xml's attribute iterator reports it.
            return Ok(());
        };
        let end = at + 1 + close;
        if attributes.get(end + 1).is_some_and(|&next| !is_space(next)) {
            return Err(XmlError::syntax("no whitespace between attributes"));
        }
        from = end + 1;
    }
    Ok(())
}
