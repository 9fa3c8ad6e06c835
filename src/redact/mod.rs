//! Redaction: secrets never reach the disk (rfcs/0002, section Redaction).
//!
//! Applied to a request before it is fingerprinted and before it is written;
//! applied to a response before it is written (the client in record mode still
//! gets the true upstream response).
//!
//! `json.rs` is the sensitive-key rewriter of JSON bodies; this file the
//! rest (secrets, their encoded forms, headers). Redaction reads no config:
//! `config` holds, and validates with, what is defined here
//! ([`HeaderReplacement`], [`header_regex`], [`DEFAULT_SENSITIVE_JSON_KEYS`]),
//! and the rewriter
//! decodes keys with `fingerprint::canonical_json`'s string decoding, so the
//! dependencies go config → redact → fingerprint.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, Anchored, Input, MatchKind, StartKind};
use bytes::Bytes;

use crate::interaction::{BodyChunk, RecordedRequest, RecordedResponse, WsFrame};

mod json;

/// The text every secret is replaced with.
pub const REDACTED: &[u8] = b"REDACTED";

/// Default sensitive JSON keys whose values are replaced whatever they hold.
pub const DEFAULT_SENSITIVE_JSON_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
];

/// One `response_header_replacements` entry (test-server): in header `header`,
/// replace matches of `regex` with `replace`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct HeaderReplacement {
    pub header: String,
    pub regex: String,
    pub replace: String,
}

/// Compiles a `response_header_replacements` pattern as test-server's Go
/// `regexp` reads it (`crate::go_regexp`).
pub fn header_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    crate::go_regexp::compile(pattern)
}

/// What to redact, as configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedactionRules {
    /// Header names dropped from recorded requests (case-insensitive).
    pub drop_request_headers: Vec<String>,
    /// Secret literals replaced by `REDACTED` everywhere (empty ones ignored).
    pub secrets: Vec<Vec<u8>>,
    /// JSON keys whose values are replaced (case-insensitive).
    pub sensitive_json_keys: Vec<String>,
    pub response_header_replacements: Vec<HeaderReplacement>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("response_header_replacements[{index}]: regex {regex:?} does not compile: {why}")]
    BadRegex {
        index: usize,
        regex: String,
        why: String,
    },
    #[error("secrets file {path}: {source}")]
    SecretsFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Environment variables holding comma-separated secrets, in the order
/// read: ouli's own, then test-server's.
pub const SECRETS_ENV_VARS: [&str; 2] = ["OULI_SECRETS", "TEST_SERVER_SECRETS"];

/// Environment variable naming a file of secrets, one per line.
pub const SECRETS_FILE_ENV_VAR: &str = "OULI_SECRETS_FILE";

/// Secrets from the environment: `OULI_SECRETS` and `TEST_SERVER_SECRETS`
/// (comma-separated) and the file named by `OULI_SECRETS_FILE` (one per line).
pub fn secrets_from_env() -> Result<Vec<Vec<u8>>, RedactError> {
    let lists: Vec<String> = SECRETS_ENV_VARS
        .iter()
        .filter_map(std::env::var_os)
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    let file = std::env::var_os(SECRETS_FILE_ENV_VAR).map(std::path::PathBuf::from);
    secrets_from(lists.iter().map(String::as_str), file.as_deref())
}

/// The pure part of [`secrets_from_env`]: comma-separated `lists` (items
/// trimmed, empty ones skipped) then the lines of `file` (a trailing CR
/// dropped, empty lines skipped; nothing else trimmed, a secret may hold
/// spaces).
pub fn secrets_from<'a>(
    lists: impl IntoIterator<Item = &'a str>,
    file: Option<&std::path::Path>,
) -> Result<Vec<Vec<u8>>, RedactError> {
    let mut secrets = Vec::new();
    for list in lists {
        secrets.extend(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec()),
        );
    }
    if let Some(path) = file {
        let text = std::fs::read(path).map_err(|source| RedactError::SecretsFile {
            path: path.to_path_buf(),
            source,
        })?;
        secrets.extend(
            text.split(|&b| b == b'\n')
                .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
                .filter(|line| !line.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    Ok(secrets)
}

/// A secret as it appears in a URL when a client percent-encodes it: every
/// byte outside RFC 3986 unreserved as `%XX`, in upper and in lower case
/// hex, and a space as `+` (query and form encoding). Only the forms that
/// differ from the secret are returned.
pub(crate) fn percent_encoded_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if secret.iter().all(|&b| unreserved(b)) {
        return Vec::new();
    }
    let encode = |hex: &[u8; 16], space_as_plus: bool| {
        let mut out = Vec::with_capacity(secret.len() * 3);
        for &b in secret {
            if unreserved(b) {
                out.push(b);
            } else if b == b' ' && space_as_plus {
                out.push(b'+');
            } else {
                out.extend_from_slice(&[b'%', hex[(b >> 4) as usize], hex[(b & 15) as usize]]);
            }
        }
        out
    };
    let mut forms = vec![
        encode(b"0123456789ABCDEF", false),
        encode(b"0123456789abcdef", false),
        encode(b"0123456789ABCDEF", true),
        encode(b"0123456789abcdef", true),
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// Compiled redaction rules.
#[derive(Clone, Debug)]
pub struct Redactor {
    /// Lower-case header names dropped from requests.
    drop_request_headers: Vec<String>,
    /// The configured secrets as given (empty ones left out).
    secret_list: Vec<Vec<u8>>,
    /// All secrets and their encoded forms. `None` when there are none.
    secrets: Option<SecretSearch>,
    /// The secrets alone, for decoded text (where an encoded form is not
    /// the secret: `%2B` decodes to `+`, which is not a secret ` `).
    plain_secrets: Option<SecretSearch>,
    /// Some secret holds a space: a `+` in a query or form is then decoded
    /// as one too before searching.
    secret_has_space: bool,
    /// Lower-case sensitive JSON keys.
    sensitive_json_keys: Vec<String>,
    /// Cheap pre-filter: `"key"` for every sensitive key, case-insensitive.
    sensitive_key_quoted: Option<AhoCorasick>,
    header_replacements: Vec<(String, regex::Regex, String)>,
}

impl Redactor {
    pub fn new(rules: &RedactionRules) -> Result<Redactor, RedactError> {
        let secret_list: Vec<Vec<u8>> = rules
            .secrets
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let secrets = compile_secrets(&secret_list);
        let plain_secrets = (!secret_list.is_empty()).then(|| SecretSearch::new(&secret_list));
        let sensitive_json_keys: Vec<String> = rules
            .sensitive_json_keys
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        let sensitive_key_quoted = if sensitive_json_keys.is_empty() {
            None
        } else {
            let quoted: Vec<String> = sensitive_json_keys
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect();
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .build(&quoted)
                    .expect("key literals always build an automaton"),
            )
        };
        let mut header_replacements = Vec::with_capacity(rules.response_header_replacements.len());
        for (index, replacement) in rules.response_header_replacements.iter().enumerate() {
            let regex = header_regex(&replacement.regex).map_err(|e| RedactError::BadRegex {
                index,
                regex: replacement.regex.clone(),
                why: e.to_string(),
            })?;
            header_replacements.push((
                replacement.header.to_ascii_lowercase(),
                regex,
                replacement.replace.clone(),
            ));
        }
        Ok(Redactor {
            drop_request_headers: rules
                .drop_request_headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            secret_has_space: secret_list.iter().any(|s| s.contains(&b' ')),
            secret_list,
            secrets,
            plain_secrets,
            sensitive_json_keys,
            sensitive_key_quoted,
            header_replacements,
        })
    }

    /// Whether header `name` is dropped from requests (case-insensitive).
    pub fn drops_request_header(&self, name: &[u8]) -> bool {
        self.drop_request_headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    }

    /// The configured secrets (not their encoded forms).
    pub fn secrets(&self) -> &[Vec<u8>] {
        &self.secret_list
    }

    /// These rules with `extra` secrets added (those of one interaction:
    /// [`Self::derived_secrets`]); a clone of these when there are none.
    pub fn with_extra_secrets(&self, extra: &[Vec<u8>]) -> Redactor {
        let mut redactor = self.clone();
        let fresh: Vec<&Vec<u8>> = extra
            .iter()
            .filter(|s| !s.is_empty() && !self.secret_list.contains(s))
            .collect();
        if fresh.is_empty() {
            return redactor;
        }
        redactor.secret_list.extend(fresh.into_iter().cloned());
        redactor.secret_has_space = redactor.secret_list.iter().any(|s| s.contains(&b' '));
        redactor.secrets = compile_secrets(&redactor.secret_list);
        redactor.plain_secrets = Some(SecretSearch::new(&redactor.secret_list));
        redactor
    }

    /// The values of the request headers this redactor drops, as secrets
    /// for the rest of their interaction: an upstream that echoes a
    /// credential in its answer must not write it to the disk. For each
    /// value: the value, its credential after an auth scheme (`Bearer x`:
    /// `x`), and for `Basic` the decoded `user:password` and the password;
    /// those shorter than [`DERIVED_SECRET_LEN_MIN`] are left out. A `Basic`
    /// credential in any other header that holds a configured secret is one
    /// too, as sent (value and base64 text).
    pub fn derived_secrets(&self, headers: &http::HeaderMap) -> Vec<Vec<u8>> {
        let mut derived: Vec<Vec<u8>> = Vec::new();
        let mut add = |candidate: &[u8]| {
            let candidate = trim_ows(candidate);
            if candidate.len() >= DERIVED_SECRET_LEN_MIN
                && !derived.iter().any(|d| d.as_slice() == candidate)
            {
                derived.push(candidate.to_vec());
            }
        };
        for (name, value) in headers {
            let value = value.as_bytes();
            // A Basic credential found to hold a secret is replaced in the
            // request; as sent, it is a secret of the answer too.
            if !self.drops_request_header(name.as_str().as_bytes()) {
                if self.secrets.is_some()
                    && let Some(decoded) = basic_credential(value)
                    && !self.secret_ranges(&decoded).is_empty()
                {
                    add(value);
                    add(&trim_ows(value)[6..]);
                }
                continue;
            }
            add(value);
            let Some(space) = memchr::memchr2(b' ', b'\t', trim_ows(value)) else {
                continue;
            };
            let credential = &trim_ows(value)[space + 1..];
            add(credential);
            if let Some(decoded) = basic_credential(value) {
                add(&decoded);
                if let Some(colon) = memchr::memchr(b':', &decoded) {
                    add(&decoded[colon + 1..]);
                }
            }
        }
        derived
    }

    /// The byte ranges covered by secrets, overlapping and touching matches
    /// merged, in order: a secret found as it is, or in the text
    /// percent-decoded (a URL, a form) or JSON-unescaped (a JSON string),
    /// which is how the canonical form reads those parts (rfcs/0002,
    /// Redaction). A text without `%`, `\` (or `+`, when a secret holds a
    /// space) is searched once, as it is, and nothing is decoded.
    fn secret_ranges(&self, bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let (Some(search), Some(plain)) = (&self.secrets, &self.plain_secrets) else {
            return Vec::new();
        };
        let mut ranges = search.ranges(bytes);
        // One pass tells most texts apart: nothing that decodes.
        let first = if self.secret_has_space {
            memchr::memchr3(b'%', b'\\', b'+', bytes)
        } else {
            memchr::memchr2(b'%', b'\\', bytes)
        };
        let Some(first) = first else {
            return ranges;
        };
        let rest = &bytes[first..];
        let percent = memchr::memchr(b'%', rest).is_some();
        let backslash = memchr::memchr(b'\\', rest).is_some();
        let plus = self.secret_has_space && memchr::memchr(b'+', rest).is_some();
        let before = ranges.len();
        let mut add = |decoded: Decoded| {
            for found in plain.ranges(&decoded.bytes) {
                ranges.push(decoded.raw_range(found));
            }
        };
        if percent {
            add(Decoded::percent(bytes, false));
        }
        // `+` is a space in a query or form, itself in a path.
        if self.secret_has_space && (percent || plus) {
            add(Decoded::percent(bytes, true));
        }
        if backslash {
            add(Decoded::json(bytes));
        }
        if ranges.len() > before {
            ranges = merge_ranges(ranges);
        }
        ranges
    }

    /// Replaces every secret in `text` (UTF-8 in, UTF-8 out): for messages
    /// ouli writes itself (answers, logs).
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// A header value: a `Basic` credential whose decoded `user:password`
    /// holds a secret is replaced whole (its base64 text cannot be searched
    /// for: it depends on the user name); anything else as [`Self::redact_bytes`].
    pub fn redact_header_value<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        if self.secrets.is_some()
            && let Some(decoded) = basic_credential(value)
            && !self.secret_ranges(&decoded).is_empty()
        {
            let scheme_len = value.len() - trim_ows(value).len()
                + memchr::memchr2(b' ', b'\t', trim_ows(value)).unwrap_or(0);
            let mut out = value[..scheme_len].to_vec();
            out.push(b' ');
            out.extend_from_slice(REDACTED);
            return Cow::Owned(out);
        }
        self.redact_bytes(value)
    }

    /// Replaces every secret in `bytes`; borrows when there is none.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let ranges = self.secret_ranges(bytes);
        if ranges.is_empty() {
            return Cow::Borrowed(bytes);
        }
        Cow::Owned(replace_ranges(bytes, &ranges))
    }

    /// A WebSocket frame's payload as it is compared and stored: a text
    /// frame (opcode 1) as a body is, any other with its secrets replaced.
    pub fn redact_ws_payload<'a>(&self, opcode: u8, payload: &'a [u8]) -> Cow<'a, [u8]> {
        match opcode {
            1 => self.redact_body(payload),
            _ => self.redact_bytes(payload),
        }
    }

    /// Secrets, then sensitive JSON keys: the body as it is fingerprinted and
    /// stored.
    pub fn redact_body<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match self.redact_bytes(bytes) {
            Cow::Borrowed(b) => match self.redact_json_keys(b) {
                Some(owned) => Cow::Owned(owned),
                None => Cow::Borrowed(b),
            },
            Cow::Owned(o) => match self.redact_json_keys(&o) {
                Some(owned) => Cow::Owned(owned),
                None => Cow::Owned(o),
            },
        }
    }

    /// `Some(new body)` when `bytes` is JSON holding a sensitive key. The
    /// body comes back compact, members in their order, numbers and strings
    /// as written (rfcs/0002, Sensitive JSON keys), at any depth: the walk
    /// keeps its open containers in an explicit stack, never recursion.
    fn redact_json_keys(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let prefilter = self.sensitive_key_quoted.as_ref()?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
        if !matches!(first, b'{' | b'[') {
            return None;
        }
        // A key may be written with escapes (`"pass\u0077ord"`), which the
        // prefilter's literal `"key"` does not see: `\u` can spell any
        // character, the short escapes only `"`, `\`, `/` and controls.
        let escaped_key_possible = || {
            memchr::memmem::find(bytes, b"\\u").is_some()
                || memchr::memchr(b'\\', bytes).is_some()
                    && self.sensitive_json_keys.iter().any(|k| {
                        k.bytes()
                            .any(|b| matches!(b, b'"' | b'\\' | b'/') || b < 0x20)
                    })
        };
        if !prefilter.is_match(bytes) && !escaped_key_possible() {
            return None;
        }
        json::redact_keys(bytes, |key| {
            self.sensitive_json_keys
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key))
        })
    }

    /// Drops configured headers, replaces secrets in values (live request,
    /// before fingerprinting).
    pub fn redact_header_map(&self, headers: &mut http::HeaderMap) {
        if !self.drop_request_headers.is_empty() {
            let doomed: Vec<http::HeaderName> = headers
                .keys()
                .filter(|name| self.drops_request_header(name.as_str().as_bytes()))
                .cloned()
                .collect();
            for name in doomed {
                headers.remove(name);
            }
        }
        if self.secrets.is_none() {
            return;
        }
        let mut replaced: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
        let mut touched: Vec<http::HeaderName> = Vec::new();
        for (name, value) in headers.iter() {
            let redacted = self.redact_header_value(value.as_bytes());
            if matches!(redacted, Cow::Owned(_)) && !touched.contains(name) {
                touched.push(name.clone());
            }
        }
        for name in touched {
            for value in headers.get_all(&name) {
                let redacted = self.redact_header_value(value.as_bytes());
                let value = http::HeaderValue::from_bytes(&redacted)
                    .expect("REDACTED keeps a valid header value valid");
                replaced.push((name.clone(), value));
            }
            headers.remove(&name);
        }
        for (name, value) in replaced {
            headers.append(name, value);
        }
    }

    /// Rewrites an existing `content-length` (none is added) to the
    /// redacted body's length. The new digits go through the header
    /// redaction too: a secret that is a run of digits (`1`) may be spelled
    /// by the new length, and nothing written may hold a secret.
    fn set_content_length(&self, headers: &mut [(Bytes, Bytes)], len: usize) {
        for (name, value) in headers.iter_mut() {
            if name.eq_ignore_ascii_case(b"content-length") {
                let digits = len.to_string();
                *value = Bytes::from(self.redact_header_value(digits.as_bytes()).into_owned());
            }
        }
    }

    /// Target (URL), headers, body (secrets, then sensitive JSON keys);
    /// `content-length` kept consistent.
    pub fn redact_request(&self, request: &mut RecordedRequest) {
        if let Cow::Owned(target) = self.redact_bytes(&request.target) {
            request.target = Bytes::from(target);
        }
        // Trailers are header fields sent late: the same rules.
        request
            .headers
            .retain(|(name, _)| !self.drops_request_header(name));
        request
            .trailers
            .retain(|(name, _)| !self.drops_request_header(name));
        for (_, value) in request
            .headers
            .iter_mut()
            .chain(request.trailers.iter_mut())
        {
            if let Cow::Owned(v) = self.redact_header_value(value) {
                *value = Bytes::from(v);
            }
        }
        if let Cow::Owned(body) = self.redact_body(&request.body) {
            request.body = Bytes::from(body);
            self.set_content_length(&mut request.headers, request.body.len());
        }
    }

    /// Header replacements and secrets in headers and trailers; secrets in the body across
    /// chunk boundaries; sensitive JSON keys; `content-length` kept consistent.
    pub fn redact_response(&self, response: &mut RecordedResponse) {
        for (name, value) in response
            .headers
            .iter_mut()
            .chain(response.trailers.iter_mut())
        {
            if let Some(v) = self.replaced_header(name, value) {
                *value = Bytes::from(v);
            }
        }
        self.redact_response_content(response);
    }

    /// The header replacements on a live answer's head, as test-server's
    /// `applyResponseHeaderReplacements` does before writing it: the client
    /// follows what it gets (an upload URL pointing back at ouli). The
    /// proxy stores this head with [`Self::redact_response_content`], so
    /// a replacement applies once, even one whose output its regex matches.
    pub fn replace_response_headers(&self, headers: &mut http::HeaderMap) {
        if self.header_replacements.is_empty() {
            return;
        }
        for (name, value) in headers.iter_mut() {
            let Some(replaced) = self.replaced_header(name.as_str().as_bytes(), value.as_bytes())
            else {
                continue;
            };
            match http::HeaderValue::from_bytes(replaced.as_bytes()) {
                Ok(replaced) => *value = replaced,
                // `replace` may produce what a header cannot hold (a line
                // break from `$1` of a wide group): kept as it came.
                Err(_) => tracing::warn!(
                    "response header {name}: its replacement is not a valid header value; kept as it came"
                ),
            }
        }
    }

    /// Header `name`'s value after every replacement configured for it, or
    /// `None` when none changed it. A value that is not UTF-8 is left as it
    /// is (Go's regexp would see invalid bytes as U+FFFD and rarely match).
    fn replaced_header(&self, name: &[u8], value: &[u8]) -> Option<String> {
        let mut current: Option<String> = None;
        for (header, regex, replace) in &self.header_replacements {
            if !header.as_bytes().eq_ignore_ascii_case(name) {
                continue;
            }
            let text = match &current {
                Some(text) => text.as_str(),
                None => match std::str::from_utf8(value) {
                    Ok(text) => text,
                    Err(_) => return None,
                },
            };
            if let Cow::Owned(v) = regex.replace_all(text, replace.as_str()) {
                current = Some(v);
            }
        }
        current
    }

    /// [`Self::redact_response`] without the header replacements: for a
    /// response recorded by test-server, or proxied by ouli
    /// ([`Self::replace_response_headers`]), which applied them already.
    pub fn redact_response_content(&self, response: &mut RecordedResponse) {
        // Trailers are header fields sent late: the same rules.
        for (_, value) in response
            .headers
            .iter_mut()
            .chain(response.trailers.iter_mut())
        {
            if let Cow::Owned(v) = self.redact_header_value(value) {
                *value = Bytes::from(v);
            }
        }
        let before = response.body_len();
        self.redact_chunks(&mut response.chunks);
        let json = self.redact_chunked_json(&mut response.chunks);
        if json || response.body_len() != before {
            let len = response.body_len();
            self.set_content_length(&mut response.headers, len);
        }
    }

    /// Sensitive JSON keys in a body of one or more chunks. A JSON document
    /// only parses whole: when a key is replaced in a body of several
    /// chunks, the body becomes one chunk at the first chunk's time.
    fn redact_chunked_json(&self, chunks: &mut Vec<BodyChunk>) -> bool {
        let Some(first) = chunks.first() else {
            return false;
        };
        let offset_us = first.offset_us;
        let body = if chunks.len() == 1 {
            self.redact_json_keys(&first.data)
        } else if matches!(
            first.data.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        ) {
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
            self.redact_json_keys(&joined)
        } else {
            None
        };
        let Some(body) = body else {
            return false;
        };
        *chunks = vec![BodyChunk {
            offset_us,
            data: Bytes::from(body),
        }];
        true
    }

    /// Secrets in a body split into chunks, found across chunk boundaries.
    /// A chunk boundary inside a secret moves to the end of its `REDACTED`.
    pub fn redact_chunks(&self, chunks: &mut Vec<BodyChunk>) {
        if self.secrets.is_none() || chunks.is_empty() {
            return;
        }
        if chunks.len() == 1 {
            if let Cow::Owned(v) = self.redact_bytes(&chunks[0].data) {
                chunks[0].data = Bytes::from(v);
            }
            return;
        }
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        let ranges = self.secret_ranges(&joined);
        if ranges.is_empty() {
            return;
        }
        let redacted = replace_ranges(&joined, &ranges);
        // Map each original chunk end to its offset in the redacted body.
        let map = |offset: usize| -> usize {
            let mut shift: isize = 0;
            for range in &ranges {
                if offset <= range.start {
                    break;
                }
                if offset < range.end {
                    // Inside a secret: the boundary moves past REDACTED.
                    return (range.start as isize + shift) as usize + REDACTED.len();
                }
                shift += REDACTED.len() as isize - range.len() as isize;
            }
            (offset as isize + shift) as usize
        };
        let redacted = Bytes::from(redacted);
        let mut start = 0;
        let mut old_end = 0;
        let mut out = Vec::with_capacity(chunks.len());
        for chunk in chunks.iter() {
            old_end += chunk.data.len();
            let end = map(old_end).max(start);
            if end > start {
                out.push(BodyChunk {
                    offset_us: chunk.offset_us,
                    data: redacted.slice(start..end),
                });
            }
            start = end;
        }
        debug_assert_eq!(start, redacted.len());
        *chunks = out;
    }

    pub fn redact_ws_frames(&self, frames: &mut [WsFrame]) {
        for frame in frames {
            if let Cow::Owned(v) = self.redact_ws_payload(frame.opcode, &frame.payload) {
                frame.payload = Bytes::from(v);
            }
        }
    }
}

/// Finds the ranges covered by secrets: the union of every occurrence of
/// every secret, overlapping ones included, touching ones merged
/// (rfcs/0002 §4.2).
///
/// One leftmost-longest automaton answers both questions the search asks:
/// unanchored, where the next occurrence starts and how far the longest one
/// starting there reaches; anchored at a position, how far the longest one
/// starting there reaches. After an occurrence, every position inside the
/// covered range is asked the second question (an occurrence starting inside
/// may reach further), then the search goes on from the range's end.
///
/// When every secret starts with the same two or more bytes (keys of one
/// provider: `sk_live_…`), that prefix is looked for with `memmem` and each
/// place it occurs asked the anchored question: the automaton's own
/// prefilter would look for the first byte alone, frequent in text (`s`).
#[derive(Clone, Debug)]
struct SecretSearch {
    automaton: AhoCorasick,
    prefix: Option<memchr::memmem::Finder<'static>>,
    /// The first bytes of the secrets: a position inside a range is asked
    /// only when its byte is one.
    first_bytes: [bool; 256],
}

impl SecretSearch {
    /// `secrets`: not empty, none empty.
    fn new(secrets: &[Vec<u8>]) -> SecretSearch {
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .start_kind(StartKind::Both)
            .build(secrets)
            .expect("secret literals always build an automaton");
        let first = &secrets[0];
        let common = secrets
            .iter()
            .map(|s| first.iter().zip(s).take_while(|(a, b)| a == b).count())
            .min()
            .unwrap_or(0);
        let prefix =
            (common >= 2).then(|| memchr::memmem::Finder::new(&first[..common]).into_owned());
        let mut first_bytes = [false; 256];
        for secret in secrets {
            first_bytes[usize::from(secret[0])] = true;
        }
        SecretSearch {
            automaton,
            prefix,
            first_bytes,
        }
    }

    /// End of the longest secret that starts at `at`.
    #[inline]
    fn longest_at(&self, bytes: &[u8], at: usize) -> Option<usize> {
        self.automaton
            .find(Input::new(bytes).range(at..).anchored(Anchored::Yes))
            .map(|m| m.end())
    }

    /// The first secret starting at or after `from`: its start and the end
    /// of the longest one starting there.
    #[inline]
    fn next(&self, bytes: &[u8], mut from: usize) -> Option<(usize, usize)> {
        let Some(prefix) = &self.prefix else {
            let found = self.automaton.find(Input::new(bytes).range(from..))?;
            return Some((found.start(), found.end()));
        };
        loop {
            let at = from + prefix.find(&bytes[from..])?;
            if let Some(end) = self.longest_at(bytes, at) {
                return Some((at, end));
            }
            from = at + 1;
        }
    }

    fn ranges(&self, bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        let mut from = 0;
        while let Some((start, mut end)) = self.next(bytes, from) {
            let mut at = start + 1;
            while at < end {
                if self.first_bytes[usize::from(bytes[at])]
                    && let Some(further) = self.longest_at(bytes, at)
                {
                    end = end.max(further);
                }
                at += 1;
            }
            match ranges.last_mut() {
                // Touching the range before: one range.
                Some(last) if last.end >= start => last.end = end,
                _ => ranges.push(start..end),
            }
            from = end;
        }
        ranges
    }
}

/// Shortest value of a dropped header (or credential in it) that is
/// searched for as a secret in the rest of its interaction: a short value
/// (`X-Debug: 1`) would turn every `1` in the answer into `REDACTED`. Eight
/// bytes is shorter than any token, key or password worth the name.
pub const DERIVED_SECRET_LEN_MIN: usize = 8;

/// The secrets and the encoded forms of them that can be searched for as
/// literals: as they are, and percent-encoded (upper and lower case hex).
fn compile_secrets(secrets: &[Vec<u8>]) -> Option<SecretSearch> {
    let mut forms: Vec<Vec<u8>> = Vec::with_capacity(secrets.len());
    for secret in secrets {
        forms.push(secret.clone());
        forms.extend(percent_encoded_forms(secret));
    }
    (!forms.is_empty()).then(|| SecretSearch::new(&forms))
}

/// Sorted, overlapping and touching ranges merged.
fn merge_ranges(mut ranges: Vec<std::ops::Range<usize>>) -> Vec<std::ops::Range<usize>> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.end >= range.start => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The decoded `user:password` of a `Basic` credential (RFC 7617); `None`
/// for any other value, or base64 that does not decode.
fn basic_credential(value: &[u8]) -> Option<Vec<u8>> {
    let value = trim_ows(value);
    let scheme = value.get(..6)?;
    if !scheme[..5].eq_ignore_ascii_case(b"basic") || !matches!(scheme[5], b' ' | b'\t') {
        return None;
    }
    base64_decode(trim_ows(&value[6..]))
}

/// Base64, standard or URL-safe alphabet, padding optional; `None` on any
/// other byte.
pub(crate) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let text = match memchr::memchr(b'=', text) {
        Some(at) if text[at..].iter().all(|&b| b == b'=') && text.len() - at <= 2 => &text[..at],
        Some(_) => return None,
        None => text,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in text {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One escape in a text: `raw_len` bytes at `raw` that decode to
/// `decoded_len` bytes at `decoded`.
#[derive(Clone, Copy, Debug)]
struct Escape {
    decoded: usize,
    decoded_len: usize,
    raw: usize,
    raw_len: usize,
}

/// A text decoded, and where each decoded byte came from: a secret found in
/// the decoded text is replaced in the raw one, escapes and all. Only the
/// escapes are listed (bytes between them map one to one), so a large text
/// with few escapes costs one copy.
struct Decoded {
    bytes: Vec<u8>,
    escapes: Vec<Escape>,
}

impl Decoded {
    /// Every `%XX` a byte; `+` a space when `plus_is_space` (query, form).
    /// A `%` that starts no escape is itself.
    fn percent(raw: &[u8], plus_is_space: bool) -> Decoded {
        let mut decoded = Decoded {
            bytes: Vec::with_capacity(raw.len()),
            escapes: Vec::new(),
        };
        let mut at = 0;
        while at < raw.len() {
            let next = if plus_is_space {
                memchr::memchr2(b'%', b'+', &raw[at..])
            } else {
                memchr::memchr(b'%', &raw[at..])
            };
            let Some(found) = next else {
                decoded.bytes.extend_from_slice(&raw[at..]);
                break;
            };
            decoded.bytes.extend_from_slice(&raw[at..at + found]);
            at += found;
            if raw[at] == b'+' {
                decoded.push(b" ", at, 1);
                at += 1;
            } else if let Some(byte) = raw.get(at + 1..at + 3).and_then(hex_byte) {
                decoded.push(&[byte], at, 3);
                at += 3;
            } else {
                decoded.bytes.push(b'%');
                at += 1;
            }
        }
        decoded
    }

    /// JSON string escapes (RFC 8259 §7) decoded wherever they are, the
    /// text around them as it is: `\uXXXX` to UTF-8 (a surrogate pair to
    /// one character; a lone surrogate, or any other backslash, stays as
    /// written, as the canonical form keeps a string it cannot decode).
    fn json(raw: &[u8]) -> Decoded {
        let mut decoded = Decoded {
            bytes: Vec::with_capacity(raw.len()),
            escapes: Vec::new(),
        };
        let mut at = 0;
        while let Some(found) = memchr::memchr(b'\\', &raw[at..]) {
            decoded.bytes.extend_from_slice(&raw[at..at + found]);
            at += found;
            let simple = match raw.get(at + 1) {
                Some(b'"') => Some(b'"'),
                Some(b'\\') => Some(b'\\'),
                Some(b'/') => Some(b'/'),
                Some(b'b') => Some(8),
                Some(b'f') => Some(12),
                Some(b'n') => Some(b'\n'),
                Some(b'r') => Some(b'\r'),
                Some(b't') => Some(b'\t'),
                _ => None,
            };
            if let Some(byte) = simple {
                decoded.push(&[byte], at, 2);
                at += 2;
                continue;
            }
            if let Some((c, len)) = json_unicode_escape(&raw[at..]) {
                let mut utf8 = [0u8; 4];
                decoded.push(c.encode_utf8(&mut utf8).as_bytes(), at, len);
                at += len;
                continue;
            }
            decoded.bytes.push(b'\\');
            at += 1;
        }
        decoded.bytes.extend_from_slice(&raw[at..]);
        decoded
    }

    fn push(&mut self, bytes: &[u8], raw: usize, raw_len: usize) {
        self.escapes.push(Escape {
            decoded: self.bytes.len(),
            decoded_len: bytes.len(),
            raw,
            raw_len,
        });
        self.bytes.extend_from_slice(bytes);
    }

    /// The raw bytes decoded byte `at` came from (one byte, or its escape).
    fn raw_unit(&self, at: usize) -> std::ops::Range<usize> {
        let i = self.escapes.partition_point(|e| e.decoded <= at);
        let Some(e) = i.checked_sub(1).map(|i| self.escapes[i]) else {
            return at..at + 1;
        };
        if at < e.decoded + e.decoded_len {
            return e.raw..e.raw + e.raw_len;
        }
        let raw = e.raw + e.raw_len + (at - e.decoded - e.decoded_len);
        raw..raw + 1
    }

    /// The raw bytes a decoded range (not empty) came from, whole escapes.
    fn raw_range(&self, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.raw_unit(range.start).start..self.raw_unit(range.end - 1).end
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// `\uXXXX` (or a `\uD8xx\uDCxx` pair) at the start of `text`: the
/// character and the escape's length.
fn json_unicode_escape(text: &[u8]) -> Option<(char, usize)> {
    let unit = |at: usize| -> Option<u32> {
        if text.get(at..at + 2)? != b"\\u" {
            return None;
        }
        let hex = std::str::from_utf8(text.get(at + 2..at + 6)?).ok()?;
        u32::from_str_radix(hex, 16).ok()
    };
    let first = unit(0)?;
    match first {
        0xD800..=0xDBFF => {
            let second = unit(6).filter(|s| (0xDC00..=0xDFFF).contains(s))?;
            let c = char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?;
            Some((c, 12))
        }
        0xDC00..=0xDFFF => None,
        _ => Some((char::from_u32(first)?, 6)),
    }
}

fn replace_ranges(bytes: &[u8], ranges: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for range in ranges {
        out.extend_from_slice(&bytes[at..range.start]);
        out.extend_from_slice(REDACTED);
        at = range.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        Redactor::new(&RedactionRules {
            drop_request_headers: vec!["Authorization".into()],
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            sensitive_json_keys: vec!["password".into()],
            response_header_replacements: vec![],
        })
        .unwrap()
    }

    #[test]
    fn overlapping_secrets_are_both_covered() {
        let r = redactor(&["abcdef", "defghi"]);
        assert_eq!(&*r.redact_bytes(b"xxabcdefghiyy"), b"xxREDACTEDyy");
        let r = redactor(&["bcd", "abcdefg"]);
        assert_eq!(&*r.redact_bytes(b"abcdefg bcd"), b"REDACTED REDACTED");
    }

    #[test]
    fn a_secret_split_across_chunks_is_redacted_and_offsets_kept() {
        let r = redactor(&["s3cr3t"]);
        let mut chunks = vec![
            BodyChunk {
                offset_us: 0,
                data: Bytes::from_static(b"one s3"),
            },
            BodyChunk {
                offset_us: 10,
                data: Bytes::from_static(b"cr3t two"),
            },
            BodyChunk {
                offset_us: 20,
                data: Bytes::from_static(b" three"),
            },
        ];
        r.redact_chunks(&mut chunks);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
        assert_eq!(joined, b"one REDACTED two three");
        assert_eq!(chunks.len(), 3);
        assert_eq!(&chunks[0].data[..], b"one REDACTED");
        assert_eq!(chunks[2].offset_us, 20);
    }

    /// A sensitive key written with escapes is found too.
    #[test]
    fn an_escaped_sensitive_key_is_redacted() {
        let r = redactor(&[]);
        for body in [
            &br#"{"pass\u0077ord":"hunter2"}"#[..],
            br#"[{"PASS\u0057ORD" : "hunter2"}]"#,
            br#"{"\u0070\u0061ssword":{"x":"hunter2"}}"#,
        ] {
            let out = r.redact_body(body);
            assert!(
                memchr::memmem::find(&out, b"hunter2").is_none(),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
        let slashed = Redactor::new(&RedactionRules {
            sensitive_json_keys: vec!["a/b".into()],
            ..RedactionRules::default()
        })
        .unwrap();
        assert_eq!(
            &*slashed.redact_body(br#"{"a\/b":"hunter2"}"#),
            br#"{"a\/b":"REDACTED"}"#
        );
        // Escapes elsewhere change nothing.
        let plain = br#"{"note":"a\u0020b\n"}"#;
        assert!(matches!(r.redact_body(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn sensitive_json_keys_and_content_length() {
        let r = redactor(&[]);
        let mut request = RecordedRequest {
            method: Bytes::from_static(b"POST"),
            target: Bytes::from_static(b"/login"),
            headers: vec![
                (
                    Bytes::from_static(b"authorization"),
                    Bytes::from_static(b"Bearer x"),
                ),
                (
                    Bytes::from_static(b"content-length"),
                    Bytes::from_static(b"33"),
                ),
            ],
            body: Bytes::from_static(br#"{"user":"u","PassWord":"hunter2"}"#),
            // Trailers follow the headers' rules: a dropped name goes.
            trailers: vec![
                (
                    Bytes::from_static(b"Authorization"),
                    Bytes::from_static(b"Bearer late"),
                ),
                (Bytes::from_static(b"x-sum"), Bytes::from_static(b"abc")),
            ],
        };
        r.redact_request(&mut request);
        assert_eq!(&request.body[..], br#"{"user":"u","PassWord":"REDACTED"}"#);
        assert_eq!(request.headers.len(), 1);
        assert_eq!(request.headers[0].1, request.body.len().to_string());
        assert_eq!(
            request.trailers,
            [(Bytes::from_static(b"x-sum"), Bytes::from_static(b"abc"))]
        );
    }
}

#[cfg(test)]
mod decoded_form_tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        Redactor::new(&RedactionRules {
            drop_request_headers: vec!["authorization".into(), "x-api-key".into()],
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            sensitive_json_keys: vec![],
            response_header_replacements: vec![],
        })
        .unwrap()
    }

    #[test]
    fn a_secret_percent_encoded_any_way_is_redacted_whole() {
        let r = redactor(&["s3cr3t-AbC"]);
        for target in [
            "/p?k=s3cr3t%2DAbC",
            "/p?k=%73%33%63%72%33%74%2d%41%62%43",
            "/p?k=%73%33%63%72%33%74%2D%41%62%43",
            "/s3cr3t%2dAbC/x",
        ] {
            let redacted = r.redact_bytes(target.as_bytes());
            assert!(
                !redacted.windows(3).any(|w| w == b"AbC" || w == b"%41"),
                "{target}: {}",
                String::from_utf8_lossy(&redacted)
            );
            assert!(redacted.windows(8).any(|w| w == REDACTED), "{target}");
        }
        assert_eq!(
            &*r.redact_bytes(b"/p?a=1&k=s3cr3t%2DAbC&b=2"),
            b"/p?a=1&k=REDACTED&b=2"
        );
        // Nothing to find: borrowed, decoded or not.
        assert!(matches!(r.redact_bytes(b"/p?k=a%2Db"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_with_a_space_is_found_as_a_plus_in_a_query() {
        let r = redactor(&["two words"]);
        assert_eq!(&*r.redact_bytes(b"q=two+words&x=1"), b"q=REDACTED&x=1");
        assert_eq!(&*r.redact_bytes(b"q=two%20wo%72ds"), b"q=REDACTED");
    }

    #[test]
    fn a_secret_json_escaped_is_redacted_escapes_and_all() {
        let r = redactor(&["s3cr3t-AbC", "b\"q"]);
        assert_eq!(
            &*r.redact_bytes(br#"{"k":"s3cr3t\u002dAbC","n":1}"#),
            br#"{"k":"REDACTED","n":1}"#
        );
        assert_eq!(
            &*r.redact_bytes(br#"["\u0073\u0033cr3t-A\u0062C"]"#),
            br#"["REDACTED"]"#
        );
        assert_eq!(
            &*r.redact_bytes(br#"{"a":"xb\"qx"}"#),
            br#"{"a":"xREDACTEDx"}"#
        );
        // A lone surrogate stays as written; nothing found, nothing changed.
        assert!(matches!(
            r.redact_bytes(br#"{"a":"\ud800 \n"}"#),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_basic_credential_holding_a_secret_is_replaced_whole() {
        let r = redactor(&["s3cr3t-AbC"]);
        // base64("alice:s3cr3t-AbC")
        let value = b"Basic YWxpY2U6czNjcjN0LUFiQw==";
        assert_eq!(&*r.redact_header_value(value), b"Basic REDACTED");
        // base64("s3cr3t-AbC:x"), unpadded
        assert_eq!(
            &*r.redact_header_value(b"basic czNjcjN0LUFiQzp4"),
            b"basic REDACTED"
        );
        // base64("alice:other")
        assert!(matches!(
            r.redact_header_value(b"Basic YWxpY2U6b3RoZXI="),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn dropped_header_values_become_the_interactions_secrets() {
        let r = redactor(&[]);
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer tok-123456789".parse().unwrap());
        headers.insert("x-api-key", "short".parse().unwrap());
        headers.insert("accept", "application/json-everything".parse().unwrap());
        let derived = r.derived_secrets(&headers);
        assert_eq!(
            derived,
            vec![b"Bearer tok-123456789".to_vec(), b"tok-123456789".to_vec()]
        );
        let r = r.with_extra_secrets(&derived);
        assert_eq!(
            &*r.redact_bytes(b"{\"echo\":\"tok-123456789\"}"),
            b"{\"echo\":\"REDACTED\"}"
        );
    }

    #[test]
    fn decoded_ranges_map_back_to_whole_escapes() {
        let d = Decoded::percent(b"a%41b+c", true);
        assert_eq!(d.bytes, b"aAb c");
        assert_eq!(d.raw_range(1..2), 1..4);
        assert_eq!(d.raw_range(0..5), 0..7);
        assert_eq!(d.raw_range(3..4), 5..6);
        let d = Decoded::json(br#"x\ud83d\ude00y"#);
        assert_eq!(d.bytes, "x\u{1F600}y".as_bytes());
        assert_eq!(d.raw_range(1..5), 1..13);
        assert_eq!(d.raw_range(5..6), 13..14);
    }
}
