//! `Content-Type` as it takes part in the canonical form (rfcs/0002,
//! Content-Type): the media type in lower case, parameters as `; name=value`
//! with lower-case names, a `charset` value in lower case and unquoted, and
//! the parameters that do not change the body's meaning left out. A value
//! that is not `type/subtype *(; parameter)` (RFC 9110 §8.3.1) is kept as
//! it came.
//!
//! The body's kind (JSON, form, raw) reads the media type alone:
//! [`media_type`].

use std::borrow::Cow;

use super::headers::trim_ows;

/// One parameter: lower-case-able name, value as written (a token or a
/// quoted string, quotes included).
type Parameter<'a> = (&'a [u8], &'a [u8]);

pub fn write(value: &[u8], out: &mut Vec<u8>) {
    let Some((essence, parameters)) = parse(value) else {
        return out.extend_from_slice(value);
    };
    out.extend(essence.iter().map(u8::to_ascii_lowercase));
    for (name, raw) in parameters {
        let charset = name.eq_ignore_ascii_case(b"charset");
        // Only a charset is compared by its value.
        let unquoted = match charset {
            true => unquote(raw),
            false => Cow::Borrowed(raw),
        };
        if charset && meaningless_charset(essence, &unquoted) {
            continue;
        }
        out.extend_from_slice(b"; ");
        out.extend(name.iter().map(u8::to_ascii_lowercase));
        out.push(b'=');
        if charset && !unquoted.is_empty() && unquoted.iter().copied().all(is_tchar) {
            out.extend(unquoted.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(raw);
        }
    }
}

/// `charset` has no meaning for JSON (RFC 8259 §11: JSON is UTF-8, the
/// type defines no such parameter); `utf-8` is what a form is in anyway
/// (the WHATWG URL Standard's `application/x-www-form-urlencoded`).
fn meaningless_charset(essence: &[u8], charset: &[u8]) -> bool {
    let suffix = essence.len().saturating_sub(5);
    essence.eq_ignore_ascii_case(b"application/json")
        || essence[suffix..].eq_ignore_ascii_case(b"+json")
        || essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
            && charset.eq_ignore_ascii_case(b"utf-8")
}

/// `type/subtype` and its parameters, or `None` when `value` is not one.
fn parse(value: &[u8]) -> Option<(&[u8], Vec<Parameter<'_>>)> {
    let mut at = token(value, 0)?;
    if value.get(at) != Some(&b'/') {
        return None;
    }
    at = token(value, at + 1)?;
    let essence = &value[..at];
    let mut parameters = Vec::new();
    loop {
        at = skip_ows(value, at);
        if at == value.len() {
            return Some((essence, parameters));
        }
        if value[at] != b';' {
            return None;
        }
        at = skip_ows(value, at + 1);
        // `*( OWS ";" OWS [ parameter ] )`: an empty one is allowed.
        if at == value.len() || value[at] == b';' {
            continue;
        }
        let name_end = token(value, at)?;
        if value.get(name_end) != Some(&b'=') {
            return None;
        }
        let value_start = name_end + 1;
        let value_end = match value.get(value_start) {
            Some(b'"') => quoted_string(value, value_start)?,
            _ => token(value, value_start)?,
        };
        parameters.push((&value[at..name_end], &value[value_start..value_end]));
        at = value_end;
    }
}

/// The end of a non-empty token starting at `at`.
fn token(value: &[u8], at: usize) -> Option<usize> {
    let len = value[at.min(value.len())..]
        .iter()
        .take_while(|&&b| is_tchar(b))
        .count();
    (len > 0).then_some(at + len)
}

/// The end (after the closing quote) of a quoted string opening at `at`.
fn quoted_string(value: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < value.len() {
        match value[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

/// A parameter value without its quotes and escapes.
fn unquote(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(inner) = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")) else {
        return Cow::Borrowed(raw);
    };
    let mut unquoted = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped || b != b'\\' {
            unquoted.push(b);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    Cow::Owned(unquoted)
}

fn skip_ows(value: &[u8], at: usize) -> usize {
    at + value[at..]
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `type/subtype` (any case), parameters dropped.
pub(super) fn media_type(content_type: &[u8]) -> &[u8] {
    let end = memchr::memchr(b';', content_type).unwrap_or(content_type.len());
    trim_ows(&content_type[..end])
}
