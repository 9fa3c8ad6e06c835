//! A canonical form parsed back into its fields ([`CanonicalRequest`]), so
//! that a miss report can name the fields that differ from the nearest
//! recorded request (`server::miss`).

use super::CANONICAL_VERSION;

/// A canonical form parsed back into its fields, for miss diagnostics.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CanonicalRequest {
    pub target: String,
    pub method: String,
    pub path: String,
    /// (name, value) in canonical order.
    pub query: Vec<(String, String)>,
    /// (lower-case name, trimmed value) in canonical order.
    pub headers: Vec<(String, String)>,
    /// Canonical body: compact sorted JSON, sorted form pairs or raw bytes.
    pub body_kind: String,
    pub body: Vec<u8>,
}

impl CanonicalRequest {
    /// `None` when `canonical` is not a canonical form of this version.
    pub fn parse(canonical: &[u8]) -> Option<CanonicalRequest> {
        let mut rest = canonical.strip_prefix(CANONICAL_VERSION)?;
        let mut parsed = CanonicalRequest::default();
        loop {
            let line_end = memchr::memchr(b'\n', rest)?;
            let line = &rest[..line_end];
            let after = &rest[line_end + 1..];
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let (word, value) = match memchr::memchr(b' ', line) {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &b""[..]),
            };
            match word {
                b"target" => parsed.target = text(value),
                b"method" => parsed.method = text(value),
                b"path" => parsed.path = text(value),
                b"query" => {
                    let i = memchr::memchr(b'=', value)?;
                    parsed
                        .query
                        .push((text(&value[..i]), text(&value[i + 1..])));
                }
                b"header" => {
                    let i = memchr::memmem::find(value, b": ")?;
                    parsed
                        .headers
                        .push((text(&value[..i]), text(&value[i + 2..])));
                }
                b"body" => {
                    let i = memchr::memchr(b' ', value)?;
                    parsed.body_kind = text(&value[..i]);
                    let len: usize = std::str::from_utf8(&value[i + 1..]).ok()?.parse().ok()?;
                    if after.len() != len {
                        return None;
                    }
                    parsed.body = after.to_vec();
                    return Some(parsed);
                }
                _ => return None,
            }
            rest = after;
        }
    }
}
