//! The canonical form of a request (rfcs/0002 §1): [`Matcher`], the compiled
//! [`MatchRules`] of an endpoint, writes a request's lines in order: version,
//! target, method, path, query, headers, body. Each part's normalisation is
//! in its own file beside this one (`path_query`, `headers`, `content_type`,
//! `canonical_json`); this file decides what takes part and puts it in order.

use std::borrow::Cow;

use super::canonical_json::{self, json_path_segments};
use super::content_type::{self, media_type};
use super::headers::{VOLATILE_HEADER_PREFIXES, VOLATILE_HEADERS, connection_names, trim_ows};
use super::path_query::{Pair, normalize_path, query_decode, query_encode};

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
