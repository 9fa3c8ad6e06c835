//! The post-write secret scan: the last check before a recording is made
//! complete (renamed into place, or closed after appending in place).
//!
//! The redactor replaces secrets before anything is written; this reads
//! what was written, whole, for every configured secret in each form it can
//! take in a file: as it is, percent-encoded (only the bytes that need it,
//! and every byte; upper and lower case hex), JSON-escaped (as serde_json
//! writes it, with `/` escaped, and every character as `\uXXXX`), and
//! base64 (standard and URL-safe alphabets, at each of the three
//! alignments a secret can have inside a longer base64 text). A file with
//! a hit is not completed: the writer removes it ([`super::RecordingWriter::finish_checked`]),
//! and the hit names the record (ordinal and offset) and the field, never
//! the secret.

use super::format::{self, FILE_HEADER_LEN, KIND_INDEX};
use crate::interaction::Exchange;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::Bytes;

/// Base64 forms shorter than this are not searched for: a secret's
/// interior at an alignment can be a handful of characters, and a short
/// run of letters and digits is found in any text by chance. Eight
/// characters (48 bits) are not.
pub const BASE64_FORM_LEN_MIN: usize = 8;

/// One form a secret was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    AsIs,
    PercentEncoded,
    JsonEscaped,
    Base64,
}

impl Form {
    fn as_str(self) -> &'static str {
        match self {
            Form::AsIs => "as is",
            Form::PercentEncoded => "percent-encoded",
            Form::JsonEscaped => "JSON-escaped",
            Form::Base64 => "base64",
        }
    }
}

/// Where a secret was found in a recording file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretHit {
    /// Byte offset in the file.
    pub offset: u64,
    /// Which configured secret (its index in the list; never its text).
    pub secret: usize,
    pub form: Form,
    /// The record holding it: its ordinal and offset; `None` outside any
    /// record (file header, index, footer, foreign bytes).
    pub record: Option<(u32, u64)>,
    /// The field: `canonical`, `request target`, `request header NAME`,
    /// `request body`, `response header NAME`, `response body`,
    /// `websocket frame N`, or `record` when it is in none of them whole.
    pub field: String,
}

impl std::fmt::Display for SecretHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret #{} ({}) at offset {}",
            self.secret + 1,
            self.form.as_str(),
            self.offset
        )?;
        match self.record {
            Some((ordinal, offset)) => {
                write!(f, " in record {ordinal} (offset {offset}), {}", self.field)
            }
            None => write!(f, ", outside any record"),
        }
    }
}

/// Every form of every configured secret, compiled once.
#[derive(Clone, Debug)]
pub struct SecretScan {
    automaton: AhoCorasick,
    /// Per pattern: the secret it is a form of, and which form.
    patterns: Vec<(usize, Form)>,
}

impl SecretScan {
    /// `None` when there is no secret (nothing to scan for).
    pub fn new(secrets: &[Vec<u8>]) -> Option<SecretScan> {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        let mut patterns = Vec::new();
        for (index, secret) in secrets.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            for (form, text) in forms_of(secret) {
                if !forms.contains(&text) {
                    forms.push(text);
                    patterns.push((index, form));
                }
            }
        }
        if forms.is_empty() {
            return None;
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&forms)
            .expect("secret literals always build an automaton");
        Some(SecretScan {
            automaton,
            patterns,
        })
    }

    /// The hits in a recording file's bytes. A body stored in several
    /// chunks is also read joined (a secret split across two chunks is not
    /// contiguous in the file).
    pub fn scan(&self, bytes: &[u8]) -> Vec<SecretHit> {
        let records = records_of(bytes);
        let mut hits: Vec<SecretHit> = Vec::new();
        for found in self.automaton.find_iter(bytes) {
            let (secret, form) = self.patterns[found.pattern().as_usize()];
            let offset = found.start() as u64;
            let record = records
                .iter()
                .find(|r| r.offset <= offset && offset < r.offset + r.len);
            hits.push(SecretHit {
                offset,
                secret,
                form,
                record: record.map(|r| (r.ordinal, r.offset)),
                field: match record {
                    Some(r) => self.field_of(r, bytes).unwrap_or_else(|| "record".into()),
                    None => String::new(),
                },
            });
        }
        for record in &records {
            // Most bodies are one chunk: only the others are decoded.
            if record.chunk_count(bytes) < 2 {
                continue;
            }
            let Some(fields) = record.fields(bytes, self) else {
                continue;
            };
            for (name, parts) in fields.split_bodies {
                let joined: Vec<u8> = parts.concat();
                if let Some(found) = self.automaton.find(&joined[..]) {
                    let (secret, form) = self.patterns[found.pattern().as_usize()];
                    hits.push(SecretHit {
                        offset: record.offset,
                        secret,
                        form,
                        record: Some((record.ordinal, record.offset)),
                        field: format!("{name} (across chunks)"),
                    });
                }
            }
        }
        hits
    }

    /// The first field of `record` that holds a form of a secret.
    fn field_of(&self, record: &Record, bytes: &[u8]) -> Option<String> {
        let fields = record.fields(bytes, self)?;
        fields
            .named
            .into_iter()
            .find(|(_, value)| self.automaton.is_match(&value[..]))
            .map(|(name, _)| name)
    }
}

/// One record of the file, as the walk found it.
struct Record {
    ordinal: u32,
    offset: u64,
    len: u64,
    kind: u16,
    /// The file's format version (its payload layout).
    version: u32,
}

/// A record's fields, each named.
struct Fields {
    named: Vec<(String, Bytes)>,
    /// Bodies stored in more than one chunk: the chunks.
    split_bodies: Vec<(String, Vec<Bytes>)>,
}

impl Record {
    fn slice<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        let start = usize::try_from(self.offset).ok()?;
        bytes.get(start..start.checked_add(usize::try_from(self.len).ok()?)?)
    }

    /// Response body chunks, read from the layout alone (no copy).
    fn chunk_count(&self, bytes: &[u8]) -> u32 {
        self.slice(bytes)
            .and_then(|record| format::layout(record, self.kind, self.version))
            .map_or(0, |layout| layout.chunk_count)
    }

    fn fields(&self, bytes: &[u8], scan: &SecretScan) -> Option<Fields> {
        let record = Bytes::copy_from_slice(self.slice(bytes)?);
        let (header, _) = format::record_at(&record, 0, record.len() as u64)?;
        let layout = format::layout(&record, self.kind, self.version)?;
        let interaction = format::decode(&record, &header, &layout)?;
        let mut named = vec![
            ("canonical".to_owned(), interaction.canonical.clone()),
            (
                "request target".to_owned(),
                interaction.request.target.clone(),
            ),
        ];
        for (i, (name, value)) in interaction.request.headers.iter().enumerate() {
            let label = header_label(scan, i, name);
            named.push((format!("request header {label} (name)"), name.clone()));
            named.push((format!("request header {label}"), value.clone()));
        }
        named.push(("request body".to_owned(), interaction.request.body.clone()));
        for (i, (name, value)) in interaction.request.trailers.iter().enumerate() {
            let label = header_label(scan, i, name);
            named.push((format!("request trailer {label} (name)"), name.clone()));
            named.push((format!("request trailer {label}"), value.clone()));
        }
        let (response, frames) = match &interaction.exchange {
            Exchange::Http(response) => (response, &[][..]),
            Exchange::WebSocket { response, frames } => (response, &frames[..]),
        };
        for (i, (name, value)) in response.headers.iter().enumerate() {
            let label = header_label(scan, i, name);
            named.push((format!("response header {label} (name)"), name.clone()));
            named.push((format!("response header {label}"), value.clone()));
        }
        for (i, chunk) in response.chunks.iter().enumerate() {
            named.push((format!("response body (chunk {i})"), chunk.data.clone()));
        }
        for (i, (name, value)) in response.trailers.iter().enumerate() {
            let label = header_label(scan, i, name);
            named.push((format!("response trailer {label} (name)"), name.clone()));
            named.push((format!("response trailer {label}"), value.clone()));
        }
        for (i, frame) in frames.iter().enumerate() {
            named.push((format!("websocket frame {i}"), frame.payload.clone()));
        }
        let mut split_bodies = Vec::new();
        if response.chunks.len() > 1 {
            split_bodies.push((
                "response body".to_owned(),
                response.chunks.iter().map(|c| c.data.clone()).collect(),
            ));
        }
        Some(Fields {
            named,
            split_bodies,
        })
    }
}

/// A header named by its name, or by its place when the name itself holds
/// a secret (the hit must not print it).
fn header_label(scan: &SecretScan, index: usize, name: &[u8]) -> String {
    if scan.automaton.is_match(name) {
        format!("#{index}")
    } else {
        String::from_utf8_lossy(name).into_owned()
    }
}

/// The interaction records of a file, in file order (the index record
/// left out; damaged bytes are reported by offset only).
fn records_of(bytes: &[u8]) -> Vec<Record> {
    if (bytes.len() as u64) < FILE_HEADER_LEN {
        return Vec::new();
    }
    // Read as the writer wrote it; a header this code does not read leaves
    // the payloads unnamed (hits are still reported by offset).
    let Ok(version) = format::check_file_header(std::path::Path::new(""), bytes) else {
        return Vec::new();
    };
    let (found, _, _) = format::locate(bytes, FILE_HEADER_LEN);
    found
        .into_iter()
        .filter_map(|found| match found {
            format::Found::Record(header, location) if header.kind.get() != KIND_INDEX => {
                Some(Record {
                    ordinal: header.ordinal.get(),
                    offset: location.offset,
                    len: location.len,
                    kind: header.kind.get(),
                    version,
                })
            }
            _ => None,
        })
        .collect()
}

/// Every form of `secret` searched for, the secret itself first.
fn forms_of(secret: &[u8]) -> Vec<(Form, Vec<u8>)> {
    let mut forms = vec![(Form::AsIs, secret.to_vec())];
    for form in crate::redact::percent_encoded_forms(secret) {
        forms.push((Form::PercentEncoded, form));
    }
    for hex in [b"0123456789ABCDEF", b"0123456789abcdef"] {
        let every: Vec<u8> = secret
            .iter()
            .flat_map(|&b| [b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]])
            .collect();
        forms.push((Form::PercentEncoded, every));
    }
    if let Ok(text) = std::str::from_utf8(secret) {
        for form in json_escaped_forms(text) {
            forms.push((Form::JsonEscaped, form));
        }
    }
    for alphabet in [BASE64_STANDARD, BASE64_URL_SAFE] {
        for align in 0..3 {
            let form = base64_interior(secret, align, alphabet);
            if form.len() >= BASE64_FORM_LEN_MIN {
                forms.push((Form::Base64, form));
            }
        }
    }
    forms.retain(|(form, text)| *form == Form::AsIs || text != secret);
    forms
}

/// A secret inside a JSON string: as serde_json escapes it, the same with
/// `/` as `\/`, and every character as `\uXXXX` (lower and upper case hex;
/// a character past U+FFFF as its surrogate pair).
fn json_escaped_forms(text: &str) -> Vec<Vec<u8>> {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    let serde_form = quoted.as_bytes()[1..quoted.len() - 1].to_vec();
    let mut slash_form = Vec::with_capacity(serde_form.len());
    for &b in &serde_form {
        if b == b'/' {
            slash_form.push(b'\\');
        }
        slash_form.push(b);
    }
    let every = |upper: bool| {
        let mut out = String::with_capacity(text.len() * 6);
        for unit in text.encode_utf16() {
            if upper {
                out.push_str(&format!("\\u{unit:04X}"));
            } else {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
        out.into_bytes()
    };
    vec![serde_form, slash_form, every(false), every(true)]
}

const BASE64_STANDARD: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64_URL_SAFE: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The base64 characters that depend on `secret` alone when it starts
/// `align` bytes into a base64-encoded text: whatever precedes and follows
/// it, these characters are in the encoding.
fn base64_interior(secret: &[u8], align: usize, alphabet: &[u8; 64]) -> Vec<u8> {
    let mut padded = vec![0u8; align];
    padded.extend_from_slice(secret);
    let bits_start = align * 8;
    let bits_end = padded.len() * 8;
    // Characters whose six bits lie wholly inside the secret's bits.
    let first = bits_start.div_ceil(6);
    let last = bits_end / 6;
    (first..last)
        .map(|i| {
            let bit = i * 6;
            let mut value = 0u8;
            for k in 0..6 {
                let at = bit + k;
                let byte = padded[at / 8];
                value = value << 1 | (byte >> (7 - at % 8)) & 1;
            }
            alphabet[value as usize]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64(bytes: &[u8]) -> Vec<u8> {
        base64_interior(bytes, 0, BASE64_STANDARD)
    }

    #[test]
    fn base64_interiors_are_found_in_any_encoding_around_the_secret() {
        let secret = b"s3cr3t-AbC";
        for prefix in [&b""[..], b"u", b"us", b"use", b"user:"] {
            let mut text = prefix.to_vec();
            text.extend_from_slice(secret);
            text.extend_from_slice(b":tail");
            let encoded = base64(&text);
            let align = prefix.len() % 3;
            let interior = base64_interior(secret, align, BASE64_STANDARD);
            assert!(interior.len() >= BASE64_FORM_LEN_MIN);
            assert!(
                encoded.windows(interior.len()).any(|w| w == interior),
                "prefix {prefix:?}"
            );
        }
        // Aligned, whole groups: the plain encoding (YWJj = base64("abc")).
        assert_eq!(base64(b"abcabc"), b"YWJjYWJj");
    }

    #[test]
    fn json_escaped_forms_cover_serde_and_every_character() {
        let forms = json_escaped_forms("a/\"b");
        assert_eq!(forms[0], br#"a/\"b"#);
        assert_eq!(forms[1], br#"a\/\"b"#);
        assert_eq!(forms[2], br#"\u0061\u002f\u0022\u0062"#);
        assert_eq!(forms[3], br#"\u0061\u002F\u0022\u0062"#);
    }
}
