//! Redaction: secrets never reach the disk (rfcs/0002, section Redaction).
//!
//! CONTRACT (skeleton — the identity helper replaces bodies, keeps the API).
//!
//! Applied to a request before it is fingerprinted and before it is written;
//! applied to a response before it is written (the client in record mode still
//! gets the true upstream response).

use crate::interaction::{RecordedRequest, RecordedResponse, WsFrame};

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

/// Secrets from the environment: `OULI_SECRETS` and `TEST_SERVER_SECRETS`
/// (comma-separated) and the file named by `OULI_SECRETS_FILE` (one per line).
pub fn secrets_from_env() -> Result<Vec<Vec<u8>>, RedactError> {
    todo!()
}

/// Compiled redaction rules (aho-corasick automaton over the secrets).
#[derive(Clone, Debug)]
pub struct Redactor {
    _private: (),
}

impl Redactor {
    pub fn new(rules: &RedactionRules) -> Result<Redactor, RedactError> {
        let _ = rules;
        todo!()
    }

    /// Replaces every secret in `bytes`; borrows when there is none.
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let _ = bytes;
        todo!()
    }

    /// Drops configured headers, replaces secrets in values (live request,
    /// before fingerprinting).
    pub fn redact_header_map(&self, headers: &mut http::HeaderMap) {
        let _ = headers;
        todo!()
    }

    /// Target (URL), headers, body (secrets, then sensitive JSON keys);
    /// `content-length` kept consistent.
    pub fn redact_request(&self, request: &mut RecordedRequest) {
        let _ = request;
        todo!()
    }

    /// Header replacements and secrets in headers; secrets in the body across
    /// chunk boundaries; sensitive JSON keys; `content-length` kept consistent.
    pub fn redact_response(&self, response: &mut RecordedResponse) {
        let _ = response;
        todo!()
    }

    pub fn redact_ws_frames(&self, frames: &mut [WsFrame]) {
        let _ = frames;
        todo!()
    }
}
