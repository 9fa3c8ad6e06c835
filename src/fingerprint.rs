//! Request identity: the canonical form of a request and its fingerprint
//! (rfcs/0002).
//!
//! `canonical = Matcher::canonical_form(target, request)` (after redaction), then
//! `fingerprint = SHA-256(canonical ‖ chain link)`. The canonical form is
//! parseable back into fields ([`CanonicalRequest::parse`]) so that a miss can
//! be explained field by field.

use std::borrow::Cow;

use crate::interaction::Fingerprint;
use sha2::{Digest, Sha256};

/// The upstream an endpoint points at; part of every canonical form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

/// Matching rules as configured (global default, overridable per endpoint).
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchRules {
    /// Headers that take part in matching in addition to the defaults
    /// (names, case-insensitive).
    pub include_headers: Vec<String>,
    /// Headers that never take part (added to the built-in volatile list).
    pub ignore_headers: Vec<String>,
    /// Query parameter names left out of the canonical form.
    pub ignore_query_params: Vec<String>,
    /// JSON body paths left out, e.g. `$.meta.request_id` or `meta.request_id`.
    pub ignore_json_paths: Vec<String>,
}

/// The parts of a live request the canonical form reads. Borrowed: building it
/// copies nothing.
pub struct RequestParts<'a> {
    pub method: &'a [u8],
    /// Origin-form target: path and raw query.
    pub path_and_query: &'a [u8],
    pub headers: &'a http::HeaderMap,
    /// Decoded, redacted body.
    pub body: &'a [u8],
}

/// Version line that opens every canonical form. A change to the canonical
/// form is a change of this line (and of every fingerprint).
pub const CANONICAL_VERSION: &[u8] = b"ouli-canonical/1\n";

/// Headers that never take part in matching by default: they change from one
/// client version, machine or run to the next without changing what a server
/// answers (rfcs/0002, Matching headers).
pub const VOLATILE_HEADERS: &[&str] = &[
    // RFC 9110 hop-by-hop and framing.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    // `Expect: 100-continue` depends on the client's body-size threshold.
    "expect",
    // Added by proxies between the test and ouli; they name machines.
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    // Client identity and negotiation that a library upgrade changes.
    "user-agent",
    "accept-encoding",
    "date",
    "x-goog-api-client",
    "x-client-version",
    // Not forwarded: ouli relays WebSocket messages, not extension frames.
    "sec-websocket-extensions",
    // Credentials: a replaying test usually runs with dummy ones.
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    // Per-request random ids and tracing.
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "b3",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "request-id",
    "idempotency-key",
    "x-idempotency-key",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-date",
    // A WebSocket handshake's nonce, new on every upgrade.
    "sec-websocket-key",
    // Session naming (test-server and ouli).
    "test-name",
];

/// Header name prefixes treated like [`VOLATILE_HEADERS`].
pub const VOLATILE_HEADER_PREFIXES: &[&str] = &["x-ouli-", "x-stainless-", "x-b3-", "x-datadog-"];

/// Compiled matching rules.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Lower-case names that take part although volatile.
    include_headers: Vec<String>,
    /// Lower-case names left out in addition to the volatile list.
    ignore_headers: Vec<String>,
    ignore_query_params: Vec<Vec<u8>>,
    /// Each path as segments; `*` matches any key or index.
    ignore_json_paths: Vec<Vec<canonical_json::Segment>>,
}

impl Matcher {
    pub fn new(rules: &MatchRules) -> Matcher {
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        Matcher {
            include_headers: lower(&rules.include_headers),
            ignore_headers: lower(&rules.ignore_headers),
            ignore_query_params: rules
                .ignore_query_params
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            ignore_json_paths: rules
                .ignore_json_paths
                .iter()
                .map(|p| {
                    json_path_segments(p)
                        .iter()
                        .map(|segment| canonical_json::Segment::new(segment))
                        .collect()
                })
                .collect(),
        }
    }

    /// Whether header `name` (lower case) takes part in matching.
    pub fn header_matches(&self, name: &str) -> bool {
        if self.ignore_headers.iter().any(|h| h == name) {
            return false;
        }
        if self.include_headers.iter().any(|h| h == name) {
            return true;
        }
        !(VOLATILE_HEADERS.contains(&name)
            || VOLATILE_HEADER_PREFIXES.iter().any(|p| name.starts_with(p)))
    }

    /// Appends the canonical JSON of `text` to `out`, as a JSON body's
    /// (key order and spacing left out, `ignore_json_paths` applied);
    /// `false`, `out` unchanged, when `text` is not one JSON document.
    pub fn canonical_json(&self, text: &[u8], out: &mut Vec<u8>) -> bool {
        canonical_json::write(text, &self.ignore_json_paths, out)
    }

    /// Appends the canonical form of `request` to `out` (rfcs/0002).
    pub fn canonical_form(&self, target: &Target, request: &RequestParts<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(CANONICAL_VERSION);
        out.extend_from_slice(b"target ");
        out.extend_from_slice(target.scheme.as_bytes());
        out.extend_from_slice(b"://");
        let host = target.host.as_bytes();
        if host.iter().any(u8::is_ascii_uppercase) {
            out.extend(host.iter().map(u8::to_ascii_lowercase));
        } else {
            out.extend_from_slice(host);
        }
        out.push(b':');
        let mut port = [0u8; 20];
        let digits = write_decimal(u64::from(target.port), &mut port);
        out.extend_from_slice(&port[..digits]);
        out.extend_from_slice(b"\nmethod ");
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
        out.extend_from_slice(request.method);
        out.push(b'\n');

        let (path, query) = match memchr::memchr(b'?', request.path_and_query) {
            Some(i) => (
                &request.path_and_query[..i],
                &request.path_and_query[i + 1..],
            ),
            None => (request.path_and_query, &b""[..]),
        };
        out.extend_from_slice(b"path ");
        normalize_path(path, out);
        out.push(b'\n');

        if !query.is_empty() {
            let mut pairs: Vec<Pair<'_>> = Vec::new();
            for piece in query.split(|&b| b == b'&') {
                if piece.is_empty() {
                    continue;
                }
                let (k, v) = match memchr::memchr(b'=', piece) {
                    Some(i) => (&piece[..i], &piece[i + 1..]),
                    None => (piece, &b""[..]),
                };
                let name = query_decode(k);
                if self.ignore_query_params.iter().any(|p| **p == *name) {
                    continue;
                }
                pairs.push((name, query_decode(v)));
            }
            // Stable: repeated names keep their order.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in &pairs {
                out.extend_from_slice(b"query ");
                query_encode(k, out);
                out.push(b'=');
                query_encode(v, out);
                out.push(b'\n');
            }
        }

        // Headers the request's `Connection` names are hop-by-hop (RFC 9110
        // §7.6.1): never forwarded, so no part of what an upstream answers.
        let connection = request.headers.get_all(http::header::CONNECTION);
        let has_connection = connection.iter().next().is_some();
        let hop_by_hop = |name: &str| {
            has_connection
                && !self.include_headers.iter().any(|h| h == name)
                && connection_names(&connection, name)
        };
        let mut headers: Vec<(&str, &[u8])> = request
            .headers
            .iter()
            .filter(|(name, _)| self.header_matches(name.as_str()) && !hop_by_hop(name.as_str()))
            .map(|(name, value)| (name.as_str(), trim_ows(value.as_bytes())))
            .collect();
        headers.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in &headers {
            out.extend_from_slice(b"header ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // Header values never hold CR or LF (hyper refuses them), so the
            // line stays a line.
            if *name == "content-type" {
                content_type::write(value, out);
            } else {
                out.extend_from_slice(value);
            }
            out.push(b'\n');
        }

        let content_type = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        self.canonical_body(content_type, request.body, out);
    }

    fn canonical_body(&self, content_type: &[u8], body: &[u8], out: &mut Vec<u8>) {
        if body.is_empty() {
            return out.extend_from_slice(b"body none 0\n");
        }
        let mime = media_type(content_type);
        let json_declared = mime.eq_ignore_ascii_case(b"application/json")
            || mime.len() >= 5 && mime[mime.len() - 5..].eq_ignore_ascii_case(b"+json");
        let json_sniffed = mime.is_empty()
            && matches!(
                body.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{' | b'[')
            );
        if json_declared || json_sniffed {
            // Written in place, then the body line put before it: its
            // length is known only once the body is written.
            let start = out.len();
            if canonical_json::write(body, &self.ignore_json_paths, out) {
                return insert_body_line(b"json", start, out);
            }
        }
        if mime.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") {
            let mut pairs: Vec<Pair<'_>> = body
                .split(|&b| b == b'&')
                .filter(|p| !p.is_empty())
                .map(|piece| match memchr::memchr(b'=', piece) {
                    Some(i) => (query_decode(&piece[..i]), query_decode(&piece[i + 1..])),
                    None => (query_decode(piece), Cow::Borrowed(&b""[..])),
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let start = out.len();
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b'&');
                }
                query_encode(k, out);
                out.push(b'=');
                query_encode(v, out);
            }
            return insert_body_line(b"form", start, out);
        }
        let mut line = [0u8; 40];
        out.extend_from_slice(body_line(b"raw", body.len(), &mut line));
        out.extend_from_slice(body);
    }
}

/// Whether a `Connection` header value lists `name` (lower case).
fn connection_names(connection: &http::header::GetAll<'_, http::HeaderValue>, name: &str) -> bool {
    connection.iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|listed| trim_ows(listed).eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// `Content-Type` as it takes part in the canonical form (rfcs/0002,
/// Content-Type): the media type in lower case, parameters as `; name=value`
/// with lower-case names, a `charset` value in lower case and unquoted, and
/// the parameters that do not change the body's meaning left out. A value
/// that is not `type/subtype *(; parameter)` (RFC 9110 §8.3.1) is kept as
/// it came.
mod content_type {
    use std::borrow::Cow;

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
}

/// A decoded query or form pair: (name, value).
type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Puts the body line before the canonical body written at `out[start..]`.
fn insert_body_line(kind: &[u8], start: usize, out: &mut Vec<u8>) {
    let len = out.len() - start;
    let mut line = [0u8; 40];
    let line = body_line(kind, len, &mut line);
    out.extend_from_slice(line);
    out.copy_within(start..start + len, start + line.len());
    out[start..start + line.len()].copy_from_slice(line);
}

/// `body <kind> <len>\n` in `buf`.
fn body_line<'b>(kind: &[u8], len: usize, buf: &'b mut [u8; 40]) -> &'b [u8] {
    buf[..5].copy_from_slice(b"body ");
    let mut at = 5;
    buf[at..at + kind.len()].copy_from_slice(kind);
    at += kind.len();
    buf[at] = b' ';
    at += 1;
    at += write_decimal(len as u64, &mut buf[at..]);
    buf[at] = b'\n';
    &buf[..at + 1]
}

/// Writes `n` in decimal at the start of `buf` (20 bytes suffice); returns
/// the number of digits.
fn write_decimal(mut n: u64, buf: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    buf[..len].copy_from_slice(&digits[i..]);
    len
}

/// The deepest nesting the canonical form reads as JSON (rfcs/0002 §1.4);
/// a deeper document is a raw body. The canonicalizer holds a frame of some
/// 80 bytes per open container, so an unbounded depth would let a 64 MiB
/// body of `[` take 5 GiB. 10 000 is the limit of Go's `encoding/json`
/// (test-server's parser): no API whose answers test-server recorded nests
/// deeper. Redaction has no such limit (`json::redact_keys`).
pub const JSON_DEPTH_MAX: usize = 10_000;

/// JSON as written, for sensitive-key redaction.
///
/// `serde_json::Value` turns every number into an `f64`, `u64` or `i64`: an
/// integer past 2^64 or a decimal with many digits comes back as a different
/// number, so a redacted body could change a number; and its parser refuses
/// a document nested deeper than 128. [`json::redact_keys`] rewrites the text
/// instead, copying every number and string as its source token. The text is
/// validated by `serde_json` first (the grammar and escapes of a document it
/// ignores, which it checks in a loop, at any depth; neither UTF-8 nor
/// depth), so the rewriter only walks a document known to be valid. No tree
/// is built and nothing recurses: the open containers are a stack of one bit
/// each, so a document of any depth is walked in memory bounded by its
/// length.
pub(crate) mod json {
    use std::borrow::Cow;

    /// The string token `"REDACTED"`.
    pub const REDACTED_TOKEN: &[u8] = b"\"REDACTED\"";

    /// Decodes a string token (quotes included).
    pub fn decode_string(token: &[u8]) -> Option<Cow<'_, str>> {
        let inner = token.get(1..token.len().checked_sub(1)?)?;
        if memchr::memchr(b'\\', inner).is_none() {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(token).ok().map(Cow::Owned)
    }

    /// `Some(new body)` when `text` is one JSON document holding a member
    /// whose decoded key `sensitive` accepts and whose value is not the
    /// string `"REDACTED"` already. Each such value, whatever it holds,
    /// becomes `"REDACTED"` (and is not walked into); the rest is written
    /// compact (no whitespace outside strings), members in their order,
    /// numbers and string tokens as written. A key whose escapes do not
    /// decode to UTF-8 is not sensitive.
    pub fn redact_keys(text: &[u8], sensitive: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).ok()?;
        let mut walk = Walk {
            text,
            at: 0,
            out: Vec::with_capacity(text.len()),
            open: Open::default(),
        };
        let changed = walk.document(&sensitive)?;
        changed.then_some(walk.out)
    }

    /// The open containers, innermost last, one bit each (set: an object).
    #[derive(Default)]
    struct Open {
        bits: Vec<u64>,
        len: usize,
    }

    impl Open {
        fn push(&mut self, object: bool) {
            let (word, bit) = (self.len / 64, self.len % 64);
            if word == self.bits.len() {
                self.bits.push(0);
            }
            if object {
                self.bits[word] |= 1 << bit;
            } else {
                self.bits[word] &= !(1 << bit);
            }
            self.len += 1;
        }

        /// Whether the innermost one is an object; `None` at the top.
        fn last(&self) -> Option<bool> {
            let i = self.len.checked_sub(1)?;
            Some(self.bits[i / 64] >> (i % 64) & 1 == 1)
        }

        fn pop(&mut self) {
            self.len = self.len.saturating_sub(1);
        }
    }

    struct Walk<'t> {
        text: &'t [u8],
        at: usize,
        out: Vec<u8>,
        open: Open,
    }

    impl<'t> Walk<'t> {
        fn peek(&self) -> Option<u8> {
            self.text.get(self.at).copied()
        }

        fn skip_whitespace(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        /// Copies the document, a value or a member at a time; `Some`
        /// (whether a value was replaced) when it is one whole document.
        fn document(&mut self, sensitive: &impl Fn(&str) -> bool) -> Option<bool> {
            let mut changed = false;
            // What comes next: a member's key (after `{`, or a comma in an
            // object), else a value.
            let mut key_next = false;
            loop {
                self.skip_whitespace();
                if key_next {
                    let key = self.string()?;
                    self.out.extend_from_slice(key);
                    self.skip_whitespace();
                    (self.peek()? == b':').then_some(())?;
                    self.at += 1;
                    self.out.push(b':');
                    if !decode_string(key).is_some_and(|key| sensitive(&key)) {
                        key_next = false;
                        continue;
                    }
                    self.skip_whitespace();
                    changed |= self.skip_value()? != REDACTED_TOKEN;
                    self.out.extend_from_slice(REDACTED_TOKEN);
                } else {
                    match self.peek()? {
                        open @ (b'{' | b'[') => {
                            self.at += 1;
                            self.out.push(open);
                            self.skip_whitespace();
                            let close = if open == b'{' { b'}' } else { b']' };
                            if self.peek()? == close {
                                self.at += 1;
                                self.out.push(close);
                            } else {
                                self.open.push(open == b'{');
                                key_next = open == b'{';
                                continue;
                            }
                        }
                        b'"' => {
                            let token = self.string()?;
                            self.out.extend_from_slice(token);
                        }
                        _ => {
                            let token = self.literal()?;
                            self.out.extend_from_slice(token);
                        }
                    }
                }
                // A value ended: commas and closing brackets up to the next
                // key or value, or the end.
                loop {
                    self.skip_whitespace();
                    let Some(object) = self.open.last() else {
                        return (self.at == self.text.len()).then_some(changed);
                    };
                    let b = self.peek()?;
                    self.at += 1;
                    self.out.push(b);
                    match b {
                        b',' => {
                            key_next = object;
                            break;
                        }
                        b'}' | b']' => self.open.pop(),
                        _ => return None,
                    }
                }
            }
        }

        /// A string token (at its opening quote), quotes included.
        fn string(&mut self) -> Option<&'t [u8]> {
            let start = self.at;
            (self.peek()? == b'"').then_some(())?;
            self.at += 1;
            loop {
                self.at += memchr::memchr2(b'"', b'\\', self.text.get(self.at..)?)?;
                if self.text[self.at] == b'\\' {
                    self.at += 2;
                } else {
                    self.at += 1;
                    return Some(&self.text[start..self.at]);
                }
            }
        }

        /// `null`, `true`, `false` or a number, as written.
        fn literal(&mut self) -> Option<&'t [u8]> {
            let start = self.at;
            while self
                .peek()
                .is_some_and(|b| !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                self.at += 1;
            }
            (self.at > start).then(|| &self.text[start..self.at])
        }

        /// Skips one value (at its first byte), containers by counting
        /// brackets outside strings; returns its text.
        fn skip_value(&mut self) -> Option<&'t [u8]> {
            let start = self.at;
            match self.peek()? {
                b'"' => self.string(),
                b'{' | b'[' => {
                    let mut depth = 0usize;
                    loop {
                        match self.peek()? {
                            b'"' => {
                                self.string()?;
                            }
                            b'{' | b'[' => {
                                depth += 1;
                                self.at += 1;
                            }
                            b'}' | b']' => {
                                depth -= 1;
                                self.at += 1;
                                if depth == 0 {
                                    return Some(&self.text[start..self.at]);
                                }
                            }
                            _ => self.at += 1,
                        }
                    }
                }
                _ => self.literal(),
            }
        }
    }
}

/// Canonical JSON (rfcs/0002 §1.4) in one pass over the body.
///
/// The text is validated as `serde_json` validates a document it ignores
/// (its grammar and escapes; no nesting limit, no UTF-8 check) and copied to
/// the output in runs: whatever the canonical form keeps as written (numbers,
/// literals, punctuation, strings without escapes) is copied a run at a time,
/// so a compact, sorted body is validated and copied in one piece. Where the
/// canonical form differs from the text, the run is cut: whitespace is left
/// out, a string with escapes is re-escaped, an ignored path is left out or
/// nulled. Each object's members are written where they come and moved into
/// key order when it closes, if they are not in order already.
///
/// Nothing is allocated per value: the bookkeeping (open containers, member
/// ranges, decoded keys that held escapes, ignore-path states) lives in
/// buffers a thread reuses from one request to the next. Nesting is an
/// explicit stack, never recursion, so no document can exhaust the stack.
///
/// A document nested deeper than [`JSON_DEPTH_MAX`] is not
/// canonicalized (its body is raw): each open container costs a frame.
///
/// It writes what a value tree wrote (parse, remove paths, write sorted),
/// byte for byte: `tests/it/identity.rs` compares the two on generated
/// documents (the tree's writer is kept in `tests/it/identity/reference.rs`).
pub(crate) mod canonical_json {
    use std::cell::RefCell;
    use std::cmp::Ordering;

    use super::JSON_DEPTH_MAX;
    use super::json::decode_string;

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

    /// A decoded key: `text[start..end]` (a key without escapes) or
    /// `arena[start..end]`.
    #[derive(Clone, Copy, Debug)]
    struct Key {
        start: usize,
        end: usize,
        in_arena: bool,
    }

    /// A kept member, written at `out[start..end]` (`"key":value`); `end`
    /// is set when its value has been read.
    #[derive(Clone, Copy, Debug)]
    struct Member {
        key: Key,
        start: usize,
        end: usize,
    }

    /// What becomes of the item being read.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fate {
        Keep,
        /// An object member named by a path's last segment: left out.
        Remove,
        /// An array element named by a path's last segment: `null`.
        Null,
    }

    /// An open object or array. Output positions are those of the output
    /// as it will be once the pending run is copied.
    #[derive(Clone, Copy, Debug)]
    struct Frame {
        object: bool,
        /// An array emptied by a path whose last segment is `*`.
        clear: bool,
        /// Output position just after the opening bracket.
        content: usize,
        /// This object's kept members are `members[members..]`.
        members: usize,
        /// Arena length when the object opened.
        arena: usize,
        /// Its ignore-path states: `states[states.0..states.1]`.
        states: (usize, usize),
        /// Elements read (array) or members kept (object).
        count: usize,
        /// The current item: output position of its comma (or of its
        /// start, when it has none), of its start, its fate. (A member's
        /// key is in its `Member`, pushed when the key is read.)
        item_at: usize,
        item_start: usize,
        item_fate: Fate,
    }

    #[derive(Default)]
    struct Scratch {
        frames: Vec<Frame>,
        members: Vec<Member>,
        /// Decoded keys that held escapes.
        arena: Vec<u8>,
        /// (path, segment): the segment of that path that applies to the
        /// children of a container (or to the root value).
        states: Vec<(usize, usize)>,
    }

    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    }

    /// Appends the canonical form of `text` to `out` and returns `true`; or
    /// leaves `out` as it was and returns `false` when `text` is not one
    /// JSON document or holds a key that does not decode to UTF-8.
    pub fn write(text: &[u8], paths: &[Vec<Segment>], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.reserve(text.len());
        let written = SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => run(text, paths, out, &mut scratch),
            Err(_) => run(text, paths, out, &mut Scratch::default()),
        });
        if written.is_none() {
            out.truncate(start);
        }
        written.is_some()
    }

    fn run(
        text: &[u8],
        paths: &[Vec<Segment>],
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Option<()> {
        scratch.frames.clear();
        scratch.members.clear();
        scratch.arena.clear();
        scratch.states.clear();
        scratch.states.extend(
            paths
                .iter()
                .enumerate()
                .filter(|(_, path)| !path.is_empty())
                .map(|(p, _)| (p, 0)),
        );
        let written = Canonicalizer {
            text,
            at: 0,
            run: 0,
            paths,
            out,
            s: scratch,
        }
        .document();
        // A deep or wide document does not leave its memory on the thread.
        const KEEP: usize = 1024;
        if scratch.frames.capacity() > KEEP {
            scratch.frames = Vec::new();
        }
        if scratch.members.capacity() > KEEP {
            scratch.members = Vec::new();
        }
        if scratch.arena.capacity() > 16 * KEEP {
            scratch.arena = Vec::new();
        }
        if scratch.states.capacity() > KEEP {
            scratch.states = Vec::new();
        }
        written
    }

    struct Canonicalizer<'t, 'o> {
        text: &'t [u8],
        /// Next byte to read.
        at: usize,
        /// Start of the pending run: `text[run..at]` is output not yet
        /// copied.
        run: usize,
        paths: &'t [Vec<Segment>],
        out: &'o mut Vec<u8>,
        s: &'o mut Scratch,
    }

    /// A string token: `text[start..end]`, quotes included.
    struct Token {
        start: usize,
        end: usize,
        escaped: bool,
        non_ascii: bool,
    }

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;

    /// Bytes of `chunk` (little-endian) that are exactly `byte`: the lowest
    /// flagged byte is exact, higher ones may be false.
    #[inline(always)]
    fn has_byte(chunk: u64, byte: u8) -> u64 {
        let x = chunk ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    }

    #[inline(always)]
    fn is_whitespace(b: u8) -> bool {
        matches!(b, b' ' | b'\n' | b'\t' | b'\r')
    }

    impl Canonicalizer<'_, '_> {
        /// The output position `text[at]` will have.
        #[inline(always)]
        fn pos(&self) -> usize {
            self.out.len() + (self.at - self.run)
        }

        /// Copies the pending run.
        #[inline]
        fn flush(&mut self) {
            self.out.extend_from_slice(&self.text[self.run..self.at]);
            self.run = self.at;
        }

        /// Skips whitespace, which the output leaves out.
        #[inline(always)]
        fn skip_whitespace(&mut self) {
            if self.text.get(self.at).is_some_and(|&b| is_whitespace(b)) {
                self.flush();
                self.at += 1;
                while self.text.get(self.at).is_some_and(|&b| is_whitespace(b)) {
                    self.at += 1;
                }
                self.run = self.at;
            }
        }

        #[inline(always)]
        fn peek(&self) -> Option<u8> {
            self.text.get(self.at).copied()
        }

        fn document(&mut self) -> Option<()> {
            'value: loop {
                self.skip_whitespace();
                match self.peek()? {
                    b'{' => {
                        self.at += 1;
                        self.open(true)?;
                        self.skip_whitespace();
                        if self.peek() == Some(b'}') {
                            self.at += 1;
                            self.close_object();
                        } else {
                            self.member()?;
                            continue 'value;
                        }
                    }
                    b'[' => {
                        self.at += 1;
                        self.open(false)?;
                        self.skip_whitespace();
                        if self.peek() == Some(b']') {
                            self.at += 1;
                            self.close_array();
                        } else {
                            self.element();
                            continue 'value;
                        }
                    }
                    b'"' => {
                        let token = self.string()?;
                        if token.escaped {
                            self.rewrite_string(&token, None);
                        }
                    }
                    b't' => self.literal(b"true")?,
                    b'f' => self.literal(b"false")?,
                    b'n' => self.literal(b"null")?,
                    b'-' | b'0'..=b'9' => self.number()?,
                    _ => return None,
                }
                // A value ended: a scalar, or a container just closed.
                loop {
                    let Some(object) = self.s.frames.last().map(|f| f.object) else {
                        self.flush();
                        self.skip_whitespace();
                        return (self.at == self.text.len()).then_some(());
                    };
                    self.finish_item();
                    self.skip_whitespace();
                    match self.peek()? {
                        b',' => {
                            self.comma(object);
                            if object {
                                self.member()?;
                            } else {
                                self.element();
                            }
                            continue 'value;
                        }
                        b'}' if object => {
                            self.at += 1;
                            self.close_object();
                        }
                        b']' if !object => {
                            self.at += 1;
                            self.close_array();
                        }
                        _ => return None,
                    }
                }
            }
        }

        /// Opens a container (its bracket just read) whose ignore-path
        /// states were pushed last; `None` past [`JSON_DEPTH_MAX`].
        fn open(&mut self, object: bool) -> Option<()> {
            if self.s.frames.len() >= JSON_DEPTH_MAX {
                return None;
            }
            let states_start = self.s.frames.last().map_or(0, |parent| parent.states.1);
            let states = (states_start, self.s.states.len());
            // `*` as the last segment empties an array.
            let clear = !object
                && self.s.states[states.0..states.1]
                    .iter()
                    .any(|&(p, seg)| seg + 1 == self.paths[p].len() && self.paths[p][seg].star);
            let content = self.pos();
            self.s.frames.push(Frame {
                object,
                clear,
                content,
                members: self.s.members.len(),
                arena: self.s.arena.len(),
                states,
                count: 0,
                item_at: content,
                item_start: content,
                item_fate: Fate::Keep,
            });
            Some(())
        }

        /// A comma between items (at `at`): kept unless nothing precedes it
        /// in the output (the members before it were all left out) or the
        /// array is being emptied.
        #[inline]
        fn comma(&mut self, object: bool) {
            let Some(frame) = self.s.frames.last_mut() else {
                return;
            };
            let item_at = self.out.len() + (self.at - self.run);
            self.at += 1;
            if frame.count == 0 && object || frame.clear {
                self.out
                    .extend_from_slice(&self.text[self.run..self.at - 1]);
                self.run = self.at;
            }
            frame.item_at = item_at;
        }

        /// Reads a member's key and colon; its value comes next.
        fn member(&mut self) -> Option<()> {
            self.skip_whitespace();
            let item_start = self.pos();
            if self.peek()? != b'"' {
                return None;
            }
            let token = self.string()?;
            let key = if token.escaped {
                let start = self.s.arena.len();
                self.rewrite_string(&token, Some(()))?;
                Key {
                    start,
                    end: self.s.arena.len(),
                    in_arena: true,
                }
            } else {
                if token.non_ascii
                    && std::str::from_utf8(&self.text[token.start + 1..token.end - 1]).is_err()
                {
                    return None;
                }
                Key {
                    start: token.start + 1,
                    end: token.end - 1,
                    in_arena: false,
                }
            };
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            let frame = self.s.frames.last()?;
            let mut fate = Fate::Keep;
            if frame.states.0 != frame.states.1 {
                let states = frame.states;
                let key_bytes = key_bytes(self.text, &self.s.arena, key);
                for i in states.0..states.1 {
                    let (p, seg) = self.s.states[i];
                    let segment = &self.paths[p][seg];
                    if segment.star || *segment.key == *key_bytes {
                        if seg + 1 == self.paths[p].len() {
                            fate = Fate::Remove;
                        } else {
                            self.s.states.push((p, seg + 1));
                        }
                    }
                }
            }
            if fate == Fate::Keep {
                self.s.members.push(Member {
                    key,
                    start: item_start,
                    end: item_start,
                });
            }
            let frame = self.s.frames.last_mut()?;
            if frame.count == 0 {
                frame.item_at = item_start;
            }
            frame.item_start = item_start;
            frame.item_fate = fate;
            Some(())
        }

        /// An element comes next.
        fn element(&mut self) {
            self.skip_whitespace();
            let item_start = self.pos();
            let Some(frame) = self.s.frames.last_mut() else {
                return;
            };
            let mut fate = Fate::Keep;
            if frame.states.0 != frame.states.1 && !frame.clear {
                let (states, index) = (frame.states, frame.count);
                for i in states.0..states.1 {
                    let (p, seg) = self.s.states[i];
                    let segment = &self.paths[p][seg];
                    if segment.star || segment.index == Some(index) {
                        if seg + 1 == self.paths[p].len() {
                            // (`*` last: the array is emptied, see `open`.)
                            fate = Fate::Null;
                        } else {
                            self.s.states.push((p, seg + 1));
                        }
                    }
                }
            }
            let Some(frame) = self.s.frames.last_mut() else {
                return;
            };
            frame.item_start = item_start;
            frame.item_fate = fate;
        }

        /// The current item of the last frame has been read.
        #[inline]
        fn finish_item(&mut self) {
            let end = self.pos();
            let Some(frame) = self.s.frames.last_mut() else {
                return;
            };
            self.s.states.truncate(frame.states.1);
            if frame.object {
                if frame.item_fate == Fate::Remove {
                    self.out.extend_from_slice(&self.text[self.run..self.at]);
                    self.run = self.at;
                    self.out.truncate(frame.item_at);
                    return;
                }
                // Its member is the last one: those of objects inside it
                // went when they closed.
                if let Some(member) = self.s.members.last_mut() {
                    member.end = end;
                }
            } else if frame.clear {
                self.out.extend_from_slice(&self.text[self.run..self.at]);
                self.run = self.at;
                self.out.truncate(frame.content);
            } else if frame.item_fate == Fate::Null {
                self.out.extend_from_slice(&self.text[self.run..self.at]);
                self.run = self.at;
                self.out.truncate(frame.item_start);
                self.out.extend_from_slice(b"null");
            }
            frame.count += 1;
        }

        /// Closes the last frame, an object (its `}` just read): members in
        /// key order.
        fn close_object(&mut self) {
            let Some(frame) = self.s.frames.pop() else {
                return;
            };
            let Scratch {
                members,
                arena,
                states,
                ..
            } = &mut *self.s;
            let text = self.text;
            let key = |m: &Member| key_bytes(text, arena, m.key);
            let own = &mut members[frame.members..];
            if own
                .windows(2)
                .any(|w| compare(key(&w[0]), key(&w[1])) == Ordering::Greater)
            {
                // The `}` is copied with the next run.
                self.at -= 1;
                self.out.extend_from_slice(&self.text[self.run..self.at]);
                self.run = self.at;
                self.at += 1;
                // Stable: duplicate keys keep their order.
                own.sort_by(|a, b| compare(key(a), key(b)));
                let out = &mut *self.out;
                let tail = out.len();
                for (i, member) in own.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_within(member.start..member.end);
                }
                out.copy_within(tail.., frame.content);
                out.truncate(frame.content + (out.len() - tail));
            }
            members.truncate(frame.members);
            arena.truncate(frame.arena);
            states.truncate(frame.states.0);
        }

        /// Closes the last frame, an array (its `]` just read).
        fn close_array(&mut self) {
            let Some(frame) = self.s.frames.pop() else {
                return;
            };
            self.s.states.truncate(frame.states.0);
        }

        /// Reads a string token (at its opening quote), as serde_json checks
        /// one it ignores: no control byte, valid escapes, any other byte.
        #[inline(always)]
        fn string(&mut self) -> Option<Token> {
            let text = self.text;
            let start = self.at;
            let mut at = start + 1;
            let mut escaped = false;
            let mut high = 0u64;
            loop {
                // Eight bytes at a time to the next quote, backslash or
                // control byte.
                while let Some(chunk) = text.get(at..at + 8) {
                    let chunk = u64::from_le_bytes(chunk.try_into().ok()?);
                    let stop = has_byte(chunk, b'"')
                        | has_byte(chunk, b'\\')
                        | (chunk.wrapping_sub(ONES * 0x20) & !chunk & HIGHS);
                    if stop == 0 {
                        high |= chunk;
                        at += 8;
                    } else {
                        // (Bytes past the stop may set `high` for nothing:
                        // it only asks for a UTF-8 check.)
                        high |= chunk;
                        at += stop.trailing_zeros() as usize / 8;
                        break;
                    }
                }
                let b = *text.get(at)?;
                match b {
                    b'"' => {
                        at += 1;
                        self.at = at;
                        return Some(Token {
                            start,
                            end: at,
                            escaped,
                            non_ascii: high & HIGHS != 0,
                        });
                    }
                    b'\\' => {
                        escaped = true;
                        match *text.get(at + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                            b'u' => {
                                let hex = text.get(at + 2..at + 6)?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return None;
                                }
                                at += 6;
                            }
                            _ => return None,
                        }
                    }
                    0..0x20 => return None,
                    _ => {
                        high |= u64::from(b);
                        at += 1;
                    }
                }
            }
        }

        /// A string with escapes (just read): re-escaped the way serde_json
        /// writes it. A value that does not decode stays as written; a key
        /// (`key` given) that does not decode fails the document, and one
        /// that does is also put in the arena.
        #[cold]
        fn rewrite_string(&mut self, token: &Token, key: Option<()>) -> Option<()> {
            let raw = &self.text[token.start..token.end];
            let decoded = decode_string(raw);
            let Some(decoded) = decoded else {
                return if key.is_some() { None } else { Some(()) };
            };
            self.out
                .extend_from_slice(&self.text[self.run..token.start]);
            self.run = token.end;
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *self.out, decoded.as_ref());
            if key.is_some() {
                self.s.arena.extend_from_slice(decoded.as_bytes());
            }
            Some(())
        }

        #[inline]
        fn literal(&mut self, word: &[u8]) -> Option<()> {
            if !self.text[self.at..].starts_with(word) {
                return None;
            }
            self.at += word.len();
            Some(())
        }

        /// A number, as JSON's grammar has it (kept as written).
        #[inline]
        fn number(&mut self) -> Option<()> {
            let text = self.text;
            let mut at = self.at;
            let digits = |mut at: usize| {
                while text.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
                at
            };
            if text[at] == b'-' {
                at += 1;
            }
            match *text.get(at)? {
                b'0' => at += 1,
                b'1'..=b'9' => at = digits(at + 1),
                _ => return None,
            }
            if text.get(at) == Some(&b'.') {
                let after = digits(at + 1);
                if after == at + 1 {
                    return None;
                }
                at = after;
            }
            if let Some(b'e' | b'E') = text.get(at) {
                at += 1;
                if let Some(b'+' | b'-') = text.get(at) {
                    at += 1;
                }
                let after = digits(at);
                if after == at {
                    return None;
                }
                at = after;
            }
            // A digit after a leading zero (`01`) is caught by what follows
            // a value: only whitespace, `,`, `]`, `}` or the end may.
            self.at = at;
            Some(())
        }
    }

    #[inline(always)]
    fn key_bytes<'a>(text: &'a [u8], arena: &'a [u8], key: Key) -> &'a [u8] {
        if key.in_arena {
            &arena[key.start..key.end]
        } else {
            &text[key.start..key.end]
        }
    }

    /// Bytewise order, inline: keys are short, a call to memcmp is not.
    #[inline(always)]
    fn compare(a: &[u8], b: &[u8]) -> Ordering {
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return x.cmp(y);
            }
        }
        a.len().cmp(&b.len())
    }
}

/// SHA-256 of the canonical form alone: the key under which `chain: request`
/// finds the previous occurrence of the same request.
pub fn canonical_hash(canonical: &[u8]) -> [u8; 32] {
    Sha256::digest(canonical).into()
}

/// SHA-256(canonical ‖ link).
pub fn fingerprint(canonical: &[u8], link: &Fingerprint) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(canonical);
    hasher.update(link.0);
    Fingerprint(hasher.finalize().into())
}

/// Both hashes with one pass over the canonical form: the SHA-256 state after
/// the canonical bytes is shared by the two.
pub fn canonical_and_fingerprint(canonical: &[u8], link: &Fingerprint) -> ([u8; 32], Fingerprint) {
    let mut hasher = Sha256::new();
    hasher.update(canonical);
    let with_link = hasher.clone().chain_update(link.0);
    (
        hasher.finalize().into(),
        Fingerprint(with_link.finalize().into()),
    )
}

/// `type/subtype` (any case), parameters dropped.
fn media_type(content_type: &[u8]) -> &[u8] {
    let end = memchr::memchr(b';', content_type).unwrap_or(content_type.len());
    trim_ows(&content_type[..end])
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

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` and `/`, without `%`: unreserved, sub-delims, `:`, `@`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_pct(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
}

/// RFC 3986 §6.2.2: percent-encodings upper-cased, unreserved ones decoded,
/// dot segments removed; an empty path is `/`.
fn normalize_path(path: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // Nothing below writes a `/` but a `/` (an escaped one stays `%2F`), so
    // the normalized path starts with one exactly when `path` does.
    if path.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex_value(path[i + 1]), hex_value(path[i + 2]))
        {
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                out.push(decoded);
            } else {
                push_pct(decoded, out);
            }
            i += 3;
            continue;
        }
        // Allowed as they are: a raw byte outside the path's character set
        // (or a `%` that starts no escape) is the byte its escape would be.
        if is_path_char(b) {
            out.push(b);
        } else {
            push_pct(b, out);
        }
        i += 1;
    }
    let written = &out[start..];
    if memchr::memchr(b'.', written).is_none()
        || !written
            .split(|&b| b == b'/')
            .any(|s| s == b"." || s == b"..")
    {
        return;
    }
    let normalized = out.split_off(start);
    // RFC 3986 §5.2.4, on whole segments.
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = normalized[1..].split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            b"." => trailing_slash = i == last,
            b".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if segments.is_empty() || trailing_slash {
        out.push(b'/');
    }
}

/// Query and form components: `+` is a space, `%XX` a byte (a malformed
/// escape stays as it is). Borrows when there is nothing to decode.
fn query_decode(bytes: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'+', b'%', bytes).is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Every byte but the unreserved ones percent-encoded, upper-case hex.
fn query_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b);
        } else {
            push_pct(b, out);
        }
    }
}

/// `$.a.b[0].c`, `a.b.0.c`, `a.*.c`, `a["key.with.dots"]` → segments.
fn json_path_segments(path: &str) -> Vec<String> {
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
