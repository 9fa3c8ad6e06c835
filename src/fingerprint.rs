//! Request identity: the canonical form of a request and its fingerprint
//! (rfcs/0002).
//!
//! CONTRACT (skeleton — the identity helper replaces bodies, keeps the API).
//!
//! `canonical = Matcher::canonical_form(target, request)` (after redaction), then
//! `fingerprint = SHA-256(canonical ‖ chain link)`. The canonical form is
//! parseable back into fields ([`CanonicalRequest::parse`]) so that a miss can
//! be explained field by field.

use crate::interaction::Fingerprint;

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

/// Compiled matching rules.
#[derive(Clone, Debug)]
pub struct Matcher {
    _private: (),
}

impl Matcher {
    pub fn new(rules: &MatchRules) -> Matcher {
        let _ = rules;
        todo!()
    }

    /// Appends the canonical form of `request` to `out` (rfcs/0002).
    pub fn canonical_form(&self, target: &Target, request: &RequestParts<'_>, out: &mut Vec<u8>) {
        let _ = (target, request, out);
        todo!()
    }
}

/// SHA-256 of the canonical form alone: the key under which `chain: request`
/// finds the previous occurrence of the same request.
pub fn canonical_hash(canonical: &[u8]) -> [u8; 32] {
    let _ = canonical;
    todo!()
}

/// SHA-256(canonical ‖ link).
pub fn fingerprint(canonical: &[u8], link: &Fingerprint) -> Fingerprint {
    let _ = (canonical, link);
    todo!()
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
    pub fn parse(canonical: &[u8]) -> Option<CanonicalRequest> {
        let _ = canonical;
        todo!()
    }
}
