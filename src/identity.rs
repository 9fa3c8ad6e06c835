//! Request identity, compiled once per endpoint: what a request is for
//! matching (its canonical form, rfcs/0002) and what the recording keeps of
//! it (its stored form). The live path (`server`), the test-server importer
//! (`testserver`) and the benches all go through [`EndpointIdentity`], so
//! that a request imported and the same request made live are identified
//! alike: import-then-replay cannot drift from record-then-replay.
//!
//! * [`EndpointIdentity::compile`]: an endpoint's [`Target`], its [`Matcher`]
//!   (the configured rules; the session header never identifies a request)
//!   and its [`Redactor`], built once at start-up.
//! * [`EndpointIdentity::identify_live`]: a live request's head and collected
//!   body. The body is decoded first by the request direction's policy
//!   ([`decode_request_body`]), then [`EndpointIdentity::identify`].
//! * [`EndpointIdentity::identify`]: a head and its body as stored (decoded)
//!   → [`Identified`]: the canonical form of the request redacted, and the
//!   body kept for [`Identified::stored_request`], the request as the
//!   recording keeps it (redacted too).
//!
//! Secrets never take part in identity: the live request is redacted first,
//! as the recorded one was. The only error is the client's: a body that
//! decodes to more than `limits.request_body_bytes_max`.

use crate::config::{Config, Limits, Scheme};
use crate::fingerprint::{MatchRules, Matcher, RequestParts, Target};
use crate::interaction::RecordedRequest;
use crate::redact::{RedactError, RedactionRules, Redactor};
use bytes::Bytes;
use http::HeaderMap;
use std::sync::Arc;

/// Bytes reserved up front for a canonical form: a typical API call's (the
/// vector grows past it for a larger body).
const CANONICAL_CAPACITY_BYTES: usize = 256;

/// Why identity could not be set up or a request identified; each says
/// whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Operator's: `OULI_SECRETS_FILE` and friends could not be read.
    #[error("secrets: {0}")]
    Secrets(#[source] RedactError),
    /// Operator's: an endpoint's redaction rules do not compile.
    #[error("endpoint {index}: {source}")]
    Redaction {
        index: usize,
        #[source]
        source: RedactError,
    },
    /// Client's (413): the body decodes to more than the limit.
    #[error(
        "request body exceeds {key} = {limit} bytes once decoded (content-encoding {encoding})"
    )]
    DecodedBodyTooLarge {
        key: &'static str,
        limit: usize,
        encoding: String,
    },
}

/// The secrets every endpoint redacts: `OULI_SECRETS`, `TEST_SERVER_SECRETS`,
/// `OULI_SECRETS_FILE`, then the config's own.
pub fn configured_secrets(config: &Config) -> Result<Vec<Vec<u8>>, IdentityError> {
    let mut secrets = crate::redact::secrets_from_env().map_err(IdentityError::Secrets)?;
    secrets.extend(config.secrets.iter().map(|s| s.as_bytes().to_vec()));
    Ok(secrets)
}

/// A request's head as identity reads it. Borrowed: building it copies
/// nothing.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a [u8],
    /// Origin-form target as sent: path and raw query.
    pub path_and_query: &'a [u8],
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// A live request's head (a target without a path is `/`).
    pub fn of(parts: &'a http::request::Parts) -> RequestHead<'a> {
        RequestHead {
            method: parts.method.as_str().as_bytes(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
            headers: &parts.headers,
        }
    }
}

/// One endpoint's identity rules, compiled once.
#[derive(Clone, Debug)]
pub struct EndpointIdentity {
    target: Target,
    matcher: Matcher,
    /// Shared with the record path's end-of-body callback and the messages
    /// ouli writes: cloning the rules per request would allocate every list
    /// in them.
    redactor: Arc<Redactor>,
}

impl EndpointIdentity {
    /// From parts already built (the benches build theirs).
    pub fn new(target: Target, rules: &MatchRules, redactor: Arc<Redactor>) -> EndpointIdentity {
        EndpointIdentity {
            target,
            matcher: Matcher::new(rules),
            redactor,
        }
    }

    /// `config.endpoints[index]`'s rules, with `secrets`
    /// ([`configured_secrets`], read once for all endpoints).
    pub fn compile(
        config: &Config,
        index: usize,
        secrets: &[Vec<u8>],
    ) -> Result<EndpointIdentity, IdentityError> {
        let endpoint = &config.endpoints[index];
        let rules = RedactionRules {
            drop_request_headers: endpoint.redact_request_headers.clone(),
            secrets: secrets.to_vec(),
            sensitive_json_keys: config.sensitive_json_keys.clone(),
            response_header_replacements: endpoint.response_header_replacements.clone(),
        };
        let redactor =
            Redactor::new(&rules).map_err(|source| IdentityError::Redaction { index, source })?;
        // The session header names the test; it never identifies a request.
        let mut matching = endpoint.matching.clone();
        matching
            .ignore_headers
            .extend(config.session_header.iter().cloned());
        let target = Target {
            scheme: match endpoint.target_type {
                Scheme::Http => "http".into(),
                Scheme::Https => "https".into(),
            },
            host: endpoint.target_host.clone(),
            port: endpoint.target_port,
        };
        Ok(EndpointIdentity::new(target, &matching, Arc::new(redactor)))
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }

    /// A live request: its body decoded as it is stored
    /// ([`decode_request_body`]), then identified.
    pub fn identify_live(
        &self,
        head: RequestHead<'_>,
        body: Bytes,
        limits: &Limits,
    ) -> Result<Identified, IdentityError> {
        let stored_body = decode_request_body(head.headers, body, limits)?;
        Ok(self.identify(head, stored_body))
    }

    /// The canonical form of `head` and `stored_body` (decoded, not yet
    /// redacted), redacted first as the recorded request was.
    pub fn identify(&self, head: RequestHead<'_>, stored_body: Bytes) -> Identified {
        // Most requests carry nothing to redact: borrow their headers then.
        let redacted_headers;
        let headers = if header_map_needs_redaction(&self.redactor, head.headers) {
            let mut copy = head.headers.clone();
            self.redactor.redact_header_map(&mut copy);
            redacted_headers = copy;
            &redacted_headers
        } else {
            head.headers
        };
        let target = self.redactor.redact_bytes(head.path_and_query);
        let body = self.redactor.redact_body(&stored_body);
        let mut canonical = Vec::with_capacity(CANONICAL_CAPACITY_BYTES);
        self.matcher.canonical_form(
            &self.target,
            &RequestParts {
                method: head.method,
                path_and_query: &target,
                headers,
                body: &body,
            },
            &mut canonical,
        );
        Identified {
            canonical,
            stored_body,
            redactor: self.redactor.clone(),
        }
    }
}

/// A request identified: what it is matched by, and what is needed to store
/// it.
#[derive(Clone, Debug)]
pub struct Identified {
    /// The canonical form (rfcs/0002): with the chain link, what the
    /// fingerprint hashes.
    pub canonical: Vec<u8>,
    /// The body as stored: decoded, not yet redacted.
    pub stored_body: Bytes,
    redactor: Arc<Redactor>,
}

impl Identified {
    /// The request as the recording keeps it: `head` (the one identified)
    /// and the stored body, redacted (dropped headers, secrets, sensitive
    /// JSON keys; `content-length` kept consistent).
    pub fn stored_request(&self, head: RequestHead<'_>) -> RecordedRequest {
        self.stored_request_with_trailers(head, None)
    }

    /// [`Self::stored_request`] with the trailers the request body ended
    /// with, redacted as its headers are (they are not part of the
    /// identity: rfcs/0002, "Request trailers").
    pub fn stored_request_with_trailers(
        &self,
        head: RequestHead<'_>,
        trailers: Option<&HeaderMap>,
    ) -> RecordedRequest {
        let mut request = RecordedRequest {
            method: Bytes::copy_from_slice(head.method),
            target: Bytes::copy_from_slice(head.path_and_query),
            headers: owned_headers(head.headers),
            body: self.stored_body.clone(),
            trailers: trailers.map(owned_headers).unwrap_or_default(),
        };
        self.redactor.redact_request(&mut request);
        request
    }
}

/// Whether redaction would change `headers` (a dropped name, or a secret in
/// a value): only then is the map copied.
fn header_map_needs_redaction(redactor: &Redactor, headers: &HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        redactor.drops_request_header(name.as_str().as_bytes())
            || matches!(
                redactor.redact_header_value(value.as_bytes()),
                std::borrow::Cow::Owned(_)
            )
    })
}

/// The request body as it is fingerprinted and stored, by the request
/// direction's policy (`decode::for_storage`): decoded when the client sent
/// it with a `content-encoding` ouli can undo; as sent when it cannot (logged);
/// [`IdentityError::DecodedBodyTooLarge`], to be refused with 413 as a body
/// sent that large is, when it decodes to more than
/// `limits.request_body_bytes_max`.
pub fn decode_request_body(
    headers: &HeaderMap,
    body: Bytes,
    limits: &Limits,
) -> Result<Bytes, IdentityError> {
    use crate::decode::{Direction, Stored};
    let Some(encoding) = headers.get(http::header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    // Decoding up to the limit may take long: not on this executor thread.
    let stored = crate::record::off_executor(|| {
        crate::decode::for_storage(Direction::Request, limits, encoding.as_bytes(), &body)
    });
    match stored {
        Stored::AsSent => Ok(body),
        Stored::Decoded(decoded) => Ok(Bytes::from(decoded)),
        Stored::Undecodable(error) => {
            tracing::warn!("request body kept as sent: {error}");
            Ok(body)
        }
        Stored::TooLarge { limit } => {
            let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
            let key = Direction::Request.limit_key();
            tracing::warn!(
                "request body refused: over {key} = {limit} bytes once decoded ({encoding}, {} bytes sent)",
                body.len()
            );
            Err(IdentityError::DecodedBodyTooLarge {
                key,
                limit,
                encoding,
            })
        }
    }
}

/// A header map as the recording stores it, in order: every name and value
/// copied into one buffer and sliced from it (one allocation, not two per
/// header).
pub fn owned_headers(headers: &HeaderMap) -> Vec<(Bytes, Bytes)> {
    let total: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    let mut buffer = bytes::BytesMut::with_capacity(total);
    let mut owned = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        buffer.extend_from_slice(name.as_str().as_bytes());
        let name = buffer.split().freeze();
        buffer.extend_from_slice(value.as_bytes());
        owned.push((name, buffer.split().freeze()));
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interaction::Fingerprint;
    use std::io::Write;

    const SECRET: &str = "s3cr3t-value";
    const TOKEN: &str = "tok-123";

    fn config() -> Config {
        let text = format!(
            "secrets: [{SECRET}]\nendpoints:\n  - target_host: api.example.test\n    target_type: https\n    target_port: 443\n    source_port: 0\n    redact_request_headers: [x-api-token]\n"
        );
        let (config, _) = Config::from_text(
            &text,
            crate::config::Format::Yaml,
            std::path::Path::new("test.yml"),
        )
        .unwrap();
        config
    }

    fn gzip(bytes: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        memchr::memmem::find(haystack, needle.as_bytes()).is_some()
    }

    /// A request recorded by test-server (body kept decoded, headers as
    /// sent) and imported is identified as the same request made live with
    /// a gzip body: the same canonical form, so the same fingerprint.
    #[test]
    fn an_imported_request_has_the_canonical_form_of_the_live_one() {
        let config = config();
        let secrets = configured_secrets(&config).unwrap();
        let identity = EndpointIdentity::compile(&config, 0, &secrets).unwrap();
        let target = format!("/v1/items?key={SECRET}");
        let (parts, ()) = http::Request::post(target.as_str())
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("x-api-token", TOKEN)
            .header("x-tenant", "blue")
            .body(())
            .unwrap()
            .into_parts();
        let body = format!(r#"{{ "b": 2, "a": "{SECRET}" }}"#);
        let live = identity
            .identify_live(
                RequestHead::of(&parts),
                gzip(body.as_bytes()),
                &config.limits,
            )
            .unwrap();

        let file = serde_json::json!({ "interactions": [{
            "request": {
                "method": "POST", "url": target,
                "headers": {
                    "Content-Type": "application/json", "Content-Encoding": "gzip",
                    "X-Api-Token": TOKEN, "X-Tenant": "blue",
                },
                "bodySegments": [{ "a": SECRET, "b": 2 }],
                "serverAddress": "api.example.test", "port": 443,
            },
            "response": { "statusCode": 200, "headers": {}, "bodySegments": [] },
        }]});
        let imported =
            crate::testserver::convert_json_bytes(file.to_string().as_bytes(), &config).unwrap();

        assert_eq!(
            String::from_utf8_lossy(&imported[0].canonical),
            String::from_utf8_lossy(&live.canonical)
        );
        assert_eq!(
            imported[0].fingerprint,
            crate::fingerprint::fingerprint(&live.canonical, &Fingerprint::CHAIN_HEAD)
        );
        // Decoded, then redacted: the body's JSON and no secret.
        assert!(contains(&live.canonical, r#"{"a":"REDACTED","b":2}"#));
        assert!(contains(&live.canonical, "x-tenant"));
        for canonical in [&live.canonical[..], &imported[0].canonical] {
            assert!(!contains(canonical, SECRET) && !contains(canonical, TOKEN));
        }
        // Both stored requests lose the dropped header and the secret.
        let stored = live.stored_request(RequestHead::of(&parts));
        assert_eq!(&stored.body[..], br#"{ "b": 2, "a": "REDACTED" }"#);
        for request in [&stored, &imported[0].request] {
            assert!(!contains(&request.target, SECRET), "{:?}", request.target);
            assert!(!contains(&request.body, SECRET), "{:?}", request.body);
            assert!(request.headers.iter().all(|(name, value)| {
                !name.eq_ignore_ascii_case(b"x-api-token") && !contains(value, TOKEN)
            }));
        }
    }

    #[test]
    fn a_body_over_the_limit_once_decoded_is_the_clients_413() {
        let mut config = config();
        config.limits.request_body_bytes_max = 1024;
        let identity = EndpointIdentity::compile(&config, 0, &[]).unwrap();
        let (parts, ()) = http::Request::post("/")
            .header("content-encoding", "gzip")
            .body(())
            .unwrap()
            .into_parts();
        let bomb = gzip(&[b'x'; 4096]);
        assert!(bomb.len() < 1024);
        let error = identity
            .identify_live(RequestHead::of(&parts), bomb, &config.limits)
            .unwrap_err();
        assert!(
            matches!(
                error,
                IdentityError::DecodedBodyTooLarge { limit: 1024, .. }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("limits.request_body_bytes_max = 1024")
        );
    }
}
