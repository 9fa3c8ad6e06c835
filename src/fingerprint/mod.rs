//! Request identity: the canonical form of a request and its fingerprint
//! (rfcs/0002).
//!
//! `canonical = Matcher::canonical_form(target, request)` (after redaction), then
//! `fingerprint = SHA-256(canonical ‖ chain link)`. The canonical form is
//! parseable back into fields ([`CanonicalRequest::parse`]) so that a miss can
//! be explained field by field.
//!
//! One file per job; the items other modules use are re-exported here, so
//! their paths are `crate::fingerprint::…` whichever file holds them:
//!
//! * `canonical.rs`: the canonical form: [`Matcher`] (the compiled
//!   [`MatchRules`]) writes a request's lines, [`Target`] to body.
//! * `path_query.rs`: path and query (and form body) normalisation.
//! * `headers.rs`: which headers take part ([`VOLATILE_HEADERS`], the
//!   `Connection` list).
//! * `content_type.rs`: the `Content-Type` value and its parameters.
//! * `canonical_json/mod.rs`: JSON canonicalisation (what the canonical JSON
//!   is made of: [`JSON_DEPTH_MAX`], `ignore_json_paths`);
//!   `canonical_json/stream.rs`: the streaming canonicaliser that writes it.
//! * `hash.rs`: the fingerprint hash ([`fingerprint`], [`canonical_hash`]).
//! * `canonical_request.rs`: a canonical form parsed back, for miss reports.
//! * `difference.rs`: field-by-field differences of two canonical forms (or
//!   two responses), shared by miss reports and `ouli diff`.
//!
//! Dependencies go one way: this module reads neither `config` nor `redact`.
//! `config` holds [`MatchRules`] in its endpoints, and redaction's JSON
//! rewriter (`redact::json`) decodes keys with the string decoding of
//! `canonical_json`.

pub(crate) mod canonical_json;

mod canonical;
mod canonical_request;
mod content_type;
mod difference;
mod hash;
mod headers;
mod path_query;

pub use canonical::{CANONICAL_VERSION, MatchRules, Matcher, RequestParts, Target};
pub use canonical_json::JSON_DEPTH_MAX;
pub use canonical_request::CanonicalRequest;
pub use difference::{
    body_differences, bytes_differences, field_differences, json_diff, list_differences,
};
pub use hash::{canonical_and_fingerprint, canonical_hash, fingerprint};
pub use headers::{VOLATILE_HEADER_PREFIXES, VOLATILE_HEADERS};
