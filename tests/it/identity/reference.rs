//! The canonical form as `src/fingerprint.rs` wrote it at commit 69d1af6
//! (`ouli-canonical/1`), kept verbatim as the reference of the differential
//! tests in `tests/it/identity.rs`: the library's canonicalizer may get faster,
//! its bytes may not change (recordings are found by their SHA-256). At the
//! end, the secret search of `src/redact.rs` at the same commit, for the same
//! reason: what is redacted may not change.
//!
//! Two rules were added since, each marked "Rule added after 69d1af6" and
//! written apart from the library's code: headers named by `Connection` are
//! left out, and `Content-Type` is normalised (rfcs/0002). A request with
//! neither keeps its 69d1af6 bytes.
//!
//! Only the names changed (the struct `Matcher` is `Reference` here), and the
//! constant that redaction alone used is left out; nothing here is used by
//! the library. (One comment below is not accurate and is kept as it was:
//! `serde_json` checks neither UTF-8 nor nesting depth of a document it
//! ignores.)

use ouli::fingerprint::{
    MatchRules, RequestParts, Target, VOLATILE_HEADER_PREFIXES, VOLATILE_HEADERS,
};

/// Compiled matching rules.
#[derive(Clone, Debug)]
pub struct Reference {
    /// Lower-case names that take part although volatile.
    include_headers: Vec<String>,
    /// Lower-case names left out in addition to the volatile list.
    ignore_headers: Vec<String>,
    ignore_query_params: Vec<Vec<u8>>,
    /// Each path as segments; `*` matches any key or index.
    ignore_json_paths: Vec<Vec<String>>,
}

impl Reference {
    pub fn new(rules: &MatchRules) -> Reference {
        let lower = |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        Reference {
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
                .map(|p| json_path_segments(p))
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

    /// Appends the canonical form of `request` to `out` (rfcs/0002).
    pub fn canonical_form(&self, target: &Target, request: &RequestParts<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(b"ouli-canonical/1\n");
        out.extend_from_slice(b"target ");
        out.extend_from_slice(target.scheme.as_bytes());
        out.extend_from_slice(b"://");
        out.extend_from_slice(target.host.to_ascii_lowercase().as_bytes());
        out.push(b':');
        out.extend_from_slice(target.port.to_string().as_bytes());
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
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for piece in query.split(|&b| b == b'&') {
                if piece.is_empty() {
                    continue;
                }
                let (k, v) = match memchr::memchr(b'=', piece) {
                    Some(i) => (&piece[..i], &piece[i + 1..]),
                    None => (piece, &b""[..]),
                };
                let name = query_decode(k);
                if self.ignore_query_params.contains(&name) {
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

        // Rule added after 69d1af6: a header the request's `Connection`
        // names is left out unless `include_headers` names it.
        let listed: Vec<Vec<u8>> = request
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(|name| trim_ows(name).to_ascii_lowercase())
            .collect();
        let mut headers: Vec<(&str, Vec<u8>)> = request
            .headers
            .iter()
            .filter(|(name, _)| self.header_matches(name.as_str()))
            .filter(|(name, _)| {
                self.include_headers.iter().any(|h| h == name.as_str())
                    || !listed.iter().any(|l| l == name.as_str().as_bytes())
            })
            .map(|(name, value)| {
                let value = trim_ows(value.as_bytes());
                // Rule added after 69d1af6: `Content-Type` normalised.
                let value = match name.as_str() {
                    "content-type" => reference_content_type(value),
                    _ => value.to_vec(),
                };
                (name.as_str(), value)
            })
            .collect();
        headers.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in &headers {
            out.extend_from_slice(b"header ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // Header values never hold CR or LF (hyper refuses them), so the
            // line stays a line.
            out.extend_from_slice(value);
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
        let mut write = |kind: &str, bytes: &[u8]| {
            out.extend_from_slice(b"body ");
            out.extend_from_slice(kind.as_bytes());
            out.push(b' ');
            out.extend_from_slice(bytes.len().to_string().as_bytes());
            out.push(b'\n');
            out.extend_from_slice(bytes);
        };
        if body.is_empty() {
            return write("none", b"");
        }
        let mime = media_type(content_type);
        let json_declared = mime == b"application/json" || mime.ends_with(b"+json");
        let json_sniffed = mime.is_empty()
            && matches!(
                body.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{' | b'[')
            );
        if (json_declared || json_sniffed)
            && let Some(mut value) = json::parse(body)
        {
            for path in &self.ignore_json_paths {
                json::remove_path(&mut value, path);
            }
            let mut canonical = Vec::with_capacity(body.len());
            json::write(&value, true, &mut canonical);
            return write("json", &canonical);
        }
        if mime == b"application/x-www-form-urlencoded" {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = body
                .split(|&b| b == b'&')
                .filter(|p| !p.is_empty())
                .map(|piece| match memchr::memchr(b'=', piece) {
                    Some(i) => (query_decode(&piece[..i]), query_decode(&piece[i + 1..])),
                    None => (query_decode(piece), Vec::new()),
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            let mut canonical = Vec::with_capacity(body.len());
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    canonical.push(b'&');
                }
                query_encode(k, &mut canonical);
                canonical.push(b'=');
                query_encode(v, &mut canonical);
            }
            return write("form", &canonical);
        }
        write("raw", body)
    }
}

/// JSON as written, for canonical forms and key redaction.
///
/// `serde_json::Value` turns every number into an `f64`, `u64` or `i64`: an
/// integer past 2^64 or a decimal with many digits comes back as a different
/// number, so two different requests could share a canonical form and a
/// redacted body could change a number. This tree keeps every number as its
/// source text and every string as its source token. The text is validated by
/// `serde_json` first (syntax, UTF-8, its nesting limit of 128), so the parser
/// below only splits a document known to be valid.
mod json {
    use std::borrow::Cow;

    /// One JSON value; slices borrow the body.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Json<'a> {
        /// `null`, `true`, `false` or a number, as written.
        Literal(&'a [u8]),
        /// A string token, quotes included, as written.
        String(&'a [u8]),
        Array(Vec<Json<'a>>),
        /// Members in document order; duplicate keys kept.
        Object(Vec<Member<'a>>),
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Member<'a> {
        /// The key token, quotes included, as written.
        pub raw_key: &'a [u8],
        /// The key with escapes decoded.
        pub key: Cow<'a, str>,
        pub value: Json<'a>,
    }

    /// `None` unless `text` is one valid JSON document.
    pub fn parse(text: &[u8]) -> Option<Json<'_>> {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).ok()?;
        let mut parser = Parser { text, at: 0 };
        let value = parser.value()?;
        parser.skip_whitespace();
        (parser.at == text.len()).then_some(value)
    }

    /// Decodes a string token (quotes included).
    pub fn decode_string(token: &[u8]) -> Option<Cow<'_, str>> {
        let inner = token.get(1..token.len().checked_sub(1)?)?;
        if memchr::memchr(b'\\', inner).is_none() {
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(token).ok().map(Cow::Owned)
    }

    struct Parser<'a> {
        text: &'a [u8],
        at: usize,
    }

    impl<'a> Parser<'a> {
        fn skip_whitespace(&mut self) {
            while matches!(self.text.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.at += 1;
            }
        }

        fn value(&mut self) -> Option<Json<'a>> {
            self.skip_whitespace();
            match *self.text.get(self.at)? {
                b'{' => self.object(),
                b'[' => self.array(),
                b'"' => self.string().map(Json::String),
                _ => {
                    let start = self.at;
                    while self.text.get(self.at).is_some_and(|b| {
                        !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                    }) {
                        self.at += 1;
                    }
                    (self.at > start).then(|| Json::Literal(&self.text[start..self.at]))
                }
            }
        }

        fn string(&mut self) -> Option<&'a [u8]> {
            let start = self.at;
            self.at += 1;
            loop {
                let found = memchr::memchr2(b'"', b'\\', &self.text[self.at..])?;
                self.at += found;
                if self.text[self.at] == b'\\' {
                    self.at += 2;
                } else {
                    self.at += 1;
                    return Some(&self.text[start..self.at]);
                }
            }
        }

        fn expect(&mut self, byte: u8) -> Option<()> {
            self.skip_whitespace();
            (self.text.get(self.at) == Some(&byte)).then(|| self.at += 1)
        }

        /// After a member or element: `true` at the closing `close`.
        fn end_or_comma(&mut self, close: u8) -> Option<bool> {
            self.skip_whitespace();
            let b = *self.text.get(self.at)?;
            self.at += 1;
            match b {
                b',' => Some(false),
                b if b == close => Some(true),
                _ => None,
            }
        }

        fn array(&mut self) -> Option<Json<'a>> {
            self.at += 1;
            let mut items = Vec::new();
            self.skip_whitespace();
            if self.text.get(self.at) == Some(&b']') {
                self.at += 1;
                return Some(Json::Array(items));
            }
            loop {
                items.push(self.value()?);
                if self.end_or_comma(b']')? {
                    return Some(Json::Array(items));
                }
            }
        }

        fn object(&mut self) -> Option<Json<'a>> {
            self.at += 1;
            let mut members = Vec::new();
            self.skip_whitespace();
            if self.text.get(self.at) == Some(&b'}') {
                self.at += 1;
                return Some(Json::Object(members));
            }
            loop {
                self.skip_whitespace();
                let raw_key = self.string()?;
                self.expect(b':')?;
                let value = self.value()?;
                members.push(Member {
                    raw_key,
                    key: decode_string(raw_key)?,
                    value,
                });
                if self.end_or_comma(b'}')? {
                    return Some(Json::Object(members));
                }
            }
        }
    }

    /// Compact JSON. `canonical`: object members sorted by decoded key
    /// (bytes; duplicates keep their order) and strings re-escaped the one
    /// way `serde_json` writes them; otherwise members and string tokens as
    /// written.
    pub fn write(value: &Json<'_>, canonical: bool, out: &mut Vec<u8>) {
        match value {
            Json::Literal(text) => out.extend_from_slice(text),
            Json::String(token) => write_string(token, canonical, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, canonical, out);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                let mut order: Vec<&Member<'_>> = members.iter().collect();
                if canonical {
                    order.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
                }
                out.push(b'{');
                for (i, member) in order.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(member.raw_key, canonical, out);
                    out.push(b':');
                    write(&member.value, canonical, out);
                }
                out.push(b'}');
            }
        }
    }

    fn write_string(token: &[u8], canonical: bool, out: &mut Vec<u8>) {
        // Without a backslash a valid token holds no quote or control
        // byte: it already is what serde_json would write.
        if !canonical || memchr::memchr(b'\\', token).is_none() {
            return out.extend_from_slice(token);
        }
        match decode_string(token) {
            // Writing into a Vec cannot fail.
            Some(text) => {
                let _ = serde_json::to_writer(&mut *out, text.as_ref());
            }
            None => out.extend_from_slice(token),
        }
    }

    /// Removes what `path` names (segments; `*` is any key or index). An
    /// array element named by index becomes `null` so that the other
    /// indices stay where they were.
    pub fn remove_path(value: &mut Json<'_>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        match value {
            Json::Object(members) => {
                if rest.is_empty() {
                    members.retain(|m| first != "*" && m.key != first.as_str());
                } else {
                    for member in members
                        .iter_mut()
                        .filter(|m| first == "*" || m.key == first.as_str())
                    {
                        remove_path(&mut member.value, rest);
                    }
                }
            }
            Json::Array(items) => {
                if first == "*" {
                    if rest.is_empty() {
                        items.clear();
                    } else {
                        for item in items.iter_mut() {
                            remove_path(item, rest);
                        }
                    }
                } else if let Ok(index) = first.parse::<usize>()
                    && let Some(item) = items.get_mut(index)
                {
                    if rest.is_empty() {
                        *item = Json::Literal(b"null");
                    } else {
                        remove_path(item, rest);
                    }
                }
            }
            Json::Literal(_) | Json::String(_) => {}
        }
    }
}

/// `type/subtype` lower-cased, parameters dropped.
/// Rule added after 69d1af6, written apart from the library's: a
/// `Content-Type` of the form `type/subtype *( OWS ";" OWS [ name=value ] )`
/// (tokens, or a quoted string for a value) becomes the lower-case media type
/// then `; name=value` per parameter (name lower case; a `charset` value that
/// is a token once unquoted, lower case and unquoted), leaving out `charset`
/// for `application/json` and `*+json`, and `charset=utf-8` for
/// `application/x-www-form-urlencoded`. Anything else is kept as it is.
fn reference_content_type(value: &[u8]) -> Vec<u8> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let token_len = |s: &[u8]| s.iter().take_while(|&&b| tchar(b)).count();
    let kept = value.to_vec();
    let (essence, mut rest) = {
        let t = token_len(value);
        if t == 0 || value.get(t) != Some(&b'/') {
            return kept;
        }
        let s = token_len(&value[t + 1..]);
        if s == 0 {
            return kept;
        }
        value.split_at(t + 1 + s)
    };
    let essence = essence.to_ascii_lowercase();
    let json = essence == b"application/json" || essence.ends_with(b"+json");
    let form = essence == b"application/x-www-form-urlencoded";
    let mut out = essence.clone();
    let ows = |s: &[u8]| -> usize { s.iter().take_while(|b| **b == b' ' || **b == b'\t').count() };
    loop {
        rest = &rest[ows(rest)..];
        let Some(after) = rest.strip_prefix(b";") else {
            if rest.is_empty() {
                return out;
            }
            return kept;
        };
        rest = &after[ows(after)..];
        if rest.is_empty() || rest[0] == b';' {
            continue;
        }
        let n = token_len(rest);
        if n == 0 || rest.get(n) != Some(&b'=') {
            return kept;
        }
        let name = rest[..n].to_ascii_lowercase();
        rest = &rest[n + 1..];
        let (raw, plain): (Vec<u8>, Vec<u8>) = if rest.first() == Some(&b'"') {
            let mut plain = Vec::new();
            let mut i = 1;
            loop {
                match rest.get(i) {
                    None => return kept,
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let Some(&c) = rest.get(i + 1) else {
                            return kept;
                        };
                        plain.push(c);
                        i += 2;
                    }
                    Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                        plain.push(c);
                        i += 1;
                    }
                    Some(_) => return kept,
                }
            }
            (rest[..=i].to_vec(), plain)
        } else {
            let v = token_len(rest);
            if v == 0 {
                return kept;
            }
            (rest[..v].to_vec(), rest[..v].to_vec())
        };
        rest = &rest[raw.len()..];
        if name == b"charset" && (json || form && plain.eq_ignore_ascii_case(b"utf-8")) {
            continue;
        }
        out.extend_from_slice(b"; ");
        out.extend_from_slice(&name);
        out.push(b'=');
        if name == b"charset" && !plain.is_empty() && plain.iter().all(|&b| tchar(b)) {
            out.extend_from_slice(&plain.to_ascii_lowercase());
        } else {
            out.extend_from_slice(&raw);
        }
    }
}

fn media_type(content_type: &[u8]) -> Vec<u8> {
    let end = memchr::memchr(b';', content_type).unwrap_or(content_type.len());
    trim_ows(&content_type[..end]).to_ascii_lowercase()
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
    let mut normalized = Vec::with_capacity(path.len() + 1);
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex_value(path[i + 1]), hex_value(path[i + 2]))
        {
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                normalized.push(decoded);
            } else {
                push_pct(decoded, &mut normalized);
            }
            i += 3;
            continue;
        }
        // Allowed as they are: a raw byte outside the path's character set
        // (or a `%` that starts no escape) is the byte its escape would be.
        if is_path_char(b) {
            normalized.push(b);
        } else {
            push_pct(b, &mut normalized);
        }
        i += 1;
    }
    if normalized.first() != Some(&b'/') {
        normalized.insert(0, b'/');
    }
    if !normalized
        .split(|&b| b == b'/')
        .any(|s| s == b"." || s == b"..")
    {
        out.extend_from_slice(&normalized);
        return;
    }
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
/// escape stays as it is).
fn query_decode(bytes: &[u8]) -> Vec<u8> {
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
    out
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

// ----------------------------------------- src/redact.rs at 69d1af6

/// `Redactor::redact_bytes`: the search as it was at 69d1af6
/// ([`raw_ranges`]), and, written here as plainly as can be, each
/// secret also found in the text percent-decoded (`+` kept, and `+` a
/// space) and JSON-unescaped, the escapes it covers replaced whole.
pub fn redact_bytes(secrets: &[Vec<u8>], bytes: &[u8]) -> Vec<u8> {
    let secrets: Vec<&Vec<u8>> = secrets.iter().filter(|s| !s.is_empty()).collect();
    // Covered bytes: adjacent ones (touching or overlapping occurrences)
    // make one range, as the library merges them.
    let mut covered = vec![false; bytes.len()];
    let owned: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
    for range in raw_ranges(&owned, bytes) {
        covered[range].iter_mut().for_each(|c| *c = true);
    }
    for (decoded, spans) in [
        percent_decode(bytes, false),
        percent_decode(bytes, true),
        json_unescape(bytes),
    ] {
        for secret in &secrets {
            for start in 0..decoded.len() {
                if decoded[start..].starts_with(secret) {
                    let (from, to) = (spans[start].0, spans[start + secret.len() - 1].1);
                    covered[from..to].iter_mut().for_each(|c| *c = true);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if !covered[at] {
            out.push(bytes[at]);
            at += 1;
            continue;
        }
        while at < bytes.len() && covered[at] {
            at += 1;
        }
        out.extend_from_slice(b"REDACTED");
    }
    out
}

/// Percent-decoded text and, per decoded byte, the raw span it came from.
fn percent_decode(bytes: &[u8], plus_is_space: bool) -> (Vec<u8>, Vec<(usize, usize)>) {
    let hex = |b: u8| (b as char).to_digit(16);
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && at + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[at + 1]), hex(bytes[at + 2]))
        {
            out.push((h * 16 + l) as u8);
            spans.push((at, at + 3));
            at += 3;
        } else if bytes[at] == b'+' && plus_is_space {
            out.push(b' ');
            spans.push((at, at + 1));
            at += 1;
        } else {
            out.push(bytes[at]);
            spans.push((at, at + 1));
            at += 1;
        }
    }
    (out, spans)
}

/// JSON-unescaped text and, per decoded byte, the raw span it came from.
fn json_unescape(bytes: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let (mut out, mut spans) = (Vec::new(), Vec::new());
    let unit = |at: usize| -> Option<u32> {
        if bytes.get(at..at + 2)? != b"\\u" {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(bytes.get(at + 2..at + 6)?).ok()?, 16).ok()
    };
    let mut at = 0;
    while at < bytes.len() {
        let simple = match (bytes[at], bytes.get(at + 1)) {
            (b'\\', Some(b'"')) => Some(b'"'),
            (b'\\', Some(b'\\')) => Some(b'\\'),
            (b'\\', Some(b'/')) => Some(b'/'),
            (b'\\', Some(b'b')) => Some(8),
            (b'\\', Some(b'f')) => Some(12),
            (b'\\', Some(b'n')) => Some(b'\n'),
            (b'\\', Some(b'r')) => Some(b'\r'),
            (b'\\', Some(b't')) => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            spans.push((at, at + 2));
            at += 2;
            continue;
        }
        let c = match unit(at) {
            Some(hi @ 0xD800..=0xDBFF) => unit(at + 6)
                .filter(|lo| (0xDC00..=0xDFFF).contains(lo))
                .and_then(|lo| char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)))
                .map(|c| (c, 12)),
            Some(0xDC00..=0xDFFF) | None => None,
            Some(u) => char::from_u32(u).map(|c| (c, 6)),
        };
        if let Some((c, len)) = c {
            let mut utf8 = [0u8; 4];
            for &b in c.encode_utf8(&mut utf8).as_bytes() {
                out.push(b);
                spans.push((at, at + len));
            }
            at += len;
            continue;
        }
        out.push(bytes[at]);
        spans.push((at, at + 1));
        at += 1;
    }
    (out, spans)
}

/// `Redactor::redact_bytes`'s search as it was at 69d1af6: every secret and
/// its percent-encoded forms in one automaton, overlapping matches merged;
/// each range is replaced by `REDACTED`.
fn raw_ranges(secrets: &[Vec<u8>], bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    use aho_corasick::{AhoCorasickBuilder, MatchKind};
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        patterns.push(secret.clone());
        patterns.extend(percent_encoded_forms(secret));
    }
    if patterns.is_empty() {
        return Vec::new();
    }
    let automaton = AhoCorasickBuilder::new()
        .match_kind(MatchKind::Standard)
        .build(&patterns)
        .expect("secret literals always build an automaton");
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for found in automaton.find_overlapping_iter(bytes) {
        let range = found.range();
        // Overlapping iteration reports matches by end position, so a
        // later match may start before an earlier one: merge backwards.
        let mut merged = range;
        while let Some(last) = ranges.last()
            && last.end >= merged.start
        {
            merged = last.start.min(merged.start)..last.end.max(merged.end);
            ranges.pop();
        }
        ranges.push(merged);
    }
    ranges
}

fn percent_encoded_forms(secret: &[u8]) -> Vec<Vec<u8>> {
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
