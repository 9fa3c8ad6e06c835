//! JSON canonicalisation (rfcs/0002 §1.4): a JSON body's canonical form is
//! the document compact, object members sorted by decoded key, strings with
//! escapes re-escaped the one way `serde_json` writes them, numbers as
//! written, and the `ignore_json_paths` members left out (array elements
//! nulled). This file holds what that form is made of: the nesting limit
//! ([`JSON_DEPTH_MAX`]), the `ignore_json_paths` syntax and its compiled
//! [`Segment`]s, and a string token's decoding. The streaming canonicaliser
//! that writes it in one pass is `stream.rs` ([`write()`]).

use std::borrow::Cow;

mod stream;

pub use stream::write;

/// The deepest nesting the canonical form reads as JSON (rfcs/0002 §1.4);
/// a deeper document is a raw body. The canonicalizer holds a frame of some
/// 80 bytes per open container, so an unbounded depth would let a 64 MiB
/// body of `[` take 5 GiB. 10 000 is the limit of Go's `encoding/json`
/// (test-server's parser): no API whose answers test-server recorded nests
/// deeper. Redaction has no such limit (`redact::json::redact_keys`).
pub const JSON_DEPTH_MAX: usize = 10_000;

/// One `ignore_json_paths` segment, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The key it names: the segment's text.
    key: Box<[u8]>,
    /// `*`: every key of an object, every element of an array.
    star: bool,
    /// The array index it names, as `str::parse::<usize>` reads it.
    index: Option<usize>,
}

impl Segment {
    pub fn new(segment: &str) -> Segment {
        let star = segment == "*";
        Segment {
            key: segment.as_bytes().into(),
            star,
            index: if star { None } else { segment.parse().ok() },
        }
    }
}

/// Decodes a string token (quotes included). Also the key decoding of
/// redaction's JSON rewriter (`redact::json`).
pub(crate) fn decode_string(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(token).ok().map(Cow::Owned)
}

/// `$.a.b[0].c`, `a.b.0.c`, `a.*.c`, `a["key.with.dots"]` → segments.
pub(super) fn json_path_segments(path: &str) -> Vec<String> {
    let path = path.trim();
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    let mut segments = Vec::new();
    let mut current = String::new();
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '.' => segments.push(std::mem::take(&mut current)),
            '[' => {
                segments.push(std::mem::take(&mut current));
                let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'');
                let (inside, after) = match quote {
                    Some(q) => {
                        let body = &rest[1..];
                        let end = body.find(q).unwrap_or(body.len());
                        let after = body[end..].strip_prefix(q).unwrap_or(&body[end..]);
                        (&body[..end], after)
                    }
                    None => {
                        let end = rest.find(']').unwrap_or(rest.len());
                        (rest[..end].trim(), &rest[end..])
                    }
                };
                segments.push(inside.to_string());
                rest = after.strip_prefix(']').unwrap_or(after);
            }
            c => current.push(c),
        }
    }
    segments.push(current);
    segments.retain(|s| !s.is_empty());
    segments
}
