//! The server: one request's path, as a contract.
//!
//! `listener` accepts a connection and hyper parses the request; `handle`
//! (here) routes it: health and `/__ouli/` control paths (`control`), the
//! session it belongs to (`session`), the request body collected under its
//! size and time limits (`body_timeout`) and decoded, the live request redacted as the recorded one was, its
//! canonical form and chain step (`crate::fingerprint`, `crate::chain`).
//! Then, by mode:
//! - **replay**: one index probe (`crate::recording`), and the answer read
//!   from the mapped record (`replay`); a miss is a JSON report (`miss`).
//! - **record**, **record-missing** (on a miss), **passthrough**: forward
//!   (`proxy`), stream the answer back while capturing it, and (record)
//!   append it at its end (`crate::record`).
//!
//! A WebSocket upgrade takes the same path to its identity; then it is
//! proxied and its conversation recorded (`websocket_record`), or played
//! from the recording (`websocket`).
//!
//! Every answer ouli makes itself says whose fault it is (`response`).

mod body_timeout;
mod control;
mod listener;
mod miss;
mod protocol_errors;
mod proxy;
mod replay;
mod response;
mod session;
mod shed;
mod websocket;
mod websocket_record;

pub use listener::run;

use self::response::{RemoveErrorHeader, ResponseBody, error_response, json_response};
use self::session::Session;
use self::websocket::is_websocket_upgrade;
use crate::config::{Config, ExhaustedPolicy, Scheme};
use crate::fingerprint::{Matcher, RequestParts, Target};
use crate::recording::ReadBackend;
use crate::redact::{RedactionRules, Redactor};
use crate::session_name::SessionName;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the proxy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Proxy upstream and record; a session's new recording replaces the old
    /// one when complete.
    Record,
    /// Answer from recordings only; never touch the network.
    Replay,
    /// Replay what is recorded; proxy and append what is not.
    RecordMissing,
    /// Proxy; record nothing.
    Passthrough,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Record => "record",
            Mode::Replay => "replay",
            Mode::RecordMissing => "record-missing",
            Mode::Passthrough => "passthrough",
        }
    }
}

/// Everything `run` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub config: Config,
    pub mode: Mode,
    pub recording_dir: PathBuf,
}

/// Why ouli could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "endpoint {endpoint}: cannot listen on {addr} (another process on the port? `source_port: 0` takes a free one)"
    )]
    Bind {
        endpoint: usize,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("recording dir {path}: {why}")]
    RecordingDir { path: PathBuf, why: String },
    #[error("{0}")]
    Setup(String),
}

/// Header marking every answer ouli makes itself (errors, misses).
pub const OULI_ERROR_HEADER: &str = "x-ouli-error";
/// Request header that sends the session's chain back to its head first.
pub const CHAIN_RESET_HEADER: &str = "x-ouli-chain-reset";
/// Reserved path prefix: never forwarded, never recorded.
pub const CONTROL_PREFIX: &str = "/__ouli/";
/// Closest recorded requests listed in a miss report.
pub const MISS_CANDIDATES_MAX: usize = 3;
/// Distinct recorded requests a miss compares one by one: the session's
/// first this many (all of them, for most sessions). Bounds a miss's work
/// on a large recording (`miss.rs`).
pub const MISS_SCAN_REQUESTS_MAX: usize = 1024;
/// Past the first [`MISS_SCAN_REQUESTS_MAX`], the distinct recorded requests
/// of one method and path a miss compares.
pub const MISS_SAME_PATH_MAX: usize = 64;
/// Distinct methods and paths the miss index holds past the first
/// [`MISS_SCAN_REQUESTS_MAX`] (about 100 bytes each, for the session's
/// life); a miss on a path past these compares the first ones only.
pub const MISS_INDEX_PATHS_MAX: usize = 65_536;

/// One endpoint's compiled settings.
struct Endpoint {
    index: usize,
    target: Target,
    matcher: Matcher,
    /// Shared with the record path's end-of-body callback: cloning the rules
    /// per request would allocate every list in them.
    redactor: Arc<Redactor>,
    /// The `Host` header sent upstream (port left out when it is the
    /// scheme's default), built once.
    upstream_host: HeaderValue,
    /// The upstream's scheme and authority, parsed once: a request's URI
    /// upstream is these and its own path and query (no `format!` and parse
    /// per request).
    upstream_scheme: http::uri::Scheme,
    upstream_authority: http::uri::Authority,
    health: Option<String>,
    /// How its replayed answers are paced unless a request asks otherwise.
    replay_timing: crate::config::ReplayTiming,
}

struct Server {
    options: ServeOptions,
    endpoints: Vec<Endpoint>,
    sessions: DashMap<SessionName, Arc<Session>>,
    /// Entries of `sessions`, and slots taken for ones being opened: never
    /// over `limits.sessions_max` (`session.rs`).
    sessions_known: std::sync::atomic::AtomicUsize,
    sessions_refused_log: shed::LogEvery,
    backend: ReadBackend,
    /// Record and passthrough modes only.
    upstream: Option<crate::upstream::Upstream>,
    /// Record mode only.
    writer: Option<Arc<crate::record::Recorder>>,
    /// WebSocket conversations being proxied (waited for at shutdown).
    conversations: websocket_record::Conversations,
}

impl Server {
    /// Compiles every endpoint's settings (matching rules, redaction,
    /// upstream address) and starts what the mode needs: the upstream client
    /// (proxy modes), the recorder (record modes).
    fn new(options: &ServeOptions) -> Result<Server, ServeError> {
        let config = &options.config;
        let mut env_secrets = crate::redact::secrets_from_env()
            .map_err(|e| ServeError::Setup(format!("secrets: {e}")))?;
        env_secrets.extend(config.secrets.iter().map(|s| s.as_bytes().to_vec()));
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for (index, endpoint) in config.endpoints.iter().enumerate() {
            let rules = RedactionRules {
                drop_request_headers: endpoint.redact_request_headers.clone(),
                secrets: env_secrets.clone(),
                sensitive_json_keys: config.sensitive_json_keys.clone(),
                response_header_replacements: endpoint.response_header_replacements.clone(),
            };
            let redactor = Redactor::new(&rules)
                .map_err(|e| ServeError::Setup(format!("endpoint {index}: {e}")))?;
            let upstream_authority: http::uri::Authority = {
                let host = &endpoint.target_host;
                // An IPv6 literal is bracketed, as in a URI.
                let authority = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]:{}", endpoint.target_port)
                } else {
                    format!("{host}:{}", endpoint.target_port)
                };
                authority.parse().map_err(|error| {
                    ServeError::Setup(format!(
                        "endpoints[{index}]: target {authority:?} is not a host and port: {error}"
                    ))
                })?
            };
            // Host is the authority, without the port when it is the scheme's
            // default (`Authority::host` keeps an IPv6 literal's brackets).
            let default_port = match endpoint.target_type {
                Scheme::Https => 443,
                Scheme::Http => 80,
            };
            let upstream_host = if endpoint.target_port == default_port {
                upstream_authority.host()
            } else {
                upstream_authority.as_str()
            };
            let upstream_host = HeaderValue::from_str(upstream_host).map_err(|error| {
                ServeError::Setup(format!(
                    "endpoints[{index}]: {upstream_host:?} is not a Host header value: {error}"
                ))
            })?;
            endpoints.push(Endpoint {
                index,
                target: Target {
                    scheme: match endpoint.target_type {
                        Scheme::Http => "http".into(),
                        Scheme::Https => "https".into(),
                    },
                    host: endpoint.target_host.clone(),
                    port: endpoint.target_port,
                },
                matcher: Matcher::new(&{
                    // The session header names the test; it never identifies a request.
                    let mut rules = endpoint.matching.clone();
                    rules
                        .ignore_headers
                        .extend(config.session_header.iter().cloned());
                    rules
                }),
                redactor: Arc::new(redactor),
                upstream_host,
                upstream_scheme: match endpoint.target_type {
                    Scheme::Http => http::uri::Scheme::HTTP,
                    Scheme::Https => http::uri::Scheme::HTTPS,
                },
                upstream_authority,
                health: endpoint.health.clone(),
                replay_timing: endpoint.replay_timing,
            });
        }
        let backend = config.read_backend.resolve();
        let proxying = options.mode != Mode::Replay;
        let upstream = if proxying {
            let ca_files = crate::upstream::ca_files(config.ca_file.as_deref());
            let connect_timeout = Duration::from_millis(config.limits.upstream_connect_timeout_ms);
            let protocols: Vec<_> = config.endpoints.iter().map(|e| e.target_protocol).collect();
            Some(
                crate::upstream::build_client(&ca_files, connect_timeout, &protocols)
                    .map_err(|e| ServeError::Setup(e.to_string()))?,
            )
        } else {
            None
        };
        let writer = matches!(options.mode, Mode::Record | Mode::RecordMissing).then(|| {
            Arc::new(crate::record::Recorder::new(
                options.recording_dir.clone(),
                config.durability,
                options.mode == Mode::RecordMissing,
                &env_secrets,
            ))
        });
        Ok(Server {
            options: options.clone(),
            endpoints,
            sessions: DashMap::new(),
            sessions_known: std::sync::atomic::AtomicUsize::new(0),
            sessions_refused_log: shed::LogEvery::new(),
            backend,
            upstream,
            writer,
            conversations: websocket_record::Conversations::new(),
        })
    }
}

impl Server {
    pub(super) async fn handle(
        self: Arc<Self>,
        endpoint_index: usize,
        mut request: Request<Incoming>,
        held: Option<&crate::upstream::HeldConnection>,
    ) -> Response<ResponseBody> {
        let endpoint = &self.endpoints[endpoint_index];
        let path = request.uri().path();
        if path == "/__ouli/health" || endpoint.health.as_deref() == Some(path) {
            return json_response(
                StatusCode::OK,
                "none",
                serde_json::json!({ "status": "ok" }),
            )
            .tap_remove_error_header();
        }
        if let Some(control) = path.strip_prefix(CONTROL_PREFIX) {
            return self.control(endpoint, control, request.method());
        }
        if let Some(refused) = refuse_request_form(&request) {
            return refused;
        }
        let session = match self.session_name(request.headers()) {
            Ok(name) => name,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    endpoint
                        .redactor
                        .redact_str(&error.to_string())
                        .into_owned(),
                );
            }
        };
        // A WebSocket upgrade is identified like any request; its IO is
        // taken here, before the request is split.
        let mut upgrade = None;
        if is_websocket_upgrade(request.headers()) {
            if let Err(message) = websocket::check_handshake(request.headers()) {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-websocket-upgrade",
                    message,
                );
            }
            upgrade = Some(hyper::upgrade::on(&mut request));
        }
        // Read before the body, so that a bad value is answered at once; only
        // the modes that replay use it.
        let timing = match self.options.mode {
            Mode::Replay | Mode::RecordMissing => {
                match replay::replay_timing(endpoint, request.headers()) {
                    Ok(timing) => timing,
                    Err(why) => return replay::bad_replay_timing(why),
                }
            }
            Mode::Record | Mode::Passthrough => crate::config::ReplayTiming::None,
        };
        let limit = self.options.config.limits.request_body_bytes_max;
        // A declared length over the limit is answered at once: the client
        // may wait for the answer before sending the body.
        if hyper::body::Body::size_hint(request.body()).lower() > limit as u64 {
            return body_too_large(limit);
        }
        let (parts, body) = request.into_parts();
        let raw_body_for_upstream;
        let limits = &self.options.config.limits;
        let body = match body_timeout::collect_request_body(body, limits).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        if self.options.mode == Mode::Passthrough {
            // Nothing is recorded or looked up: no identity to compute.
            if let Some(upgrade) = upgrade {
                return Box::pin(self.proxy_websocket(endpoint, session, parts, upgrade, None))
                    .await;
            }
            // Boxed here and below: the proxy's future is large, and hyper keeps
            // the service's future inline in every connection's idle state.
            return Box::pin(self.proxy(endpoint, held, session, parts, body, None)).await;
        }
        raw_body_for_upstream = body.clone();
        // A compressed request body is identified (and stored) decoded: its
        // compression level must not change its identity, and a secret in it
        // must be found.
        let body = match stored_request_body(&parts.headers, body, limits) {
            Ok(body) => body,
            Err(message) => {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "client",
                    "body-too-large",
                    message,
                );
            }
        };
        let state = match self.session(&session) {
            Ok(state) => state,
            Err(error) => return error.into_response(),
        };
        // Secrets never take part in identity: redact the live request first,
        // as the recorded one was.
        // Most requests carry nothing to redact: borrow their headers then.
        let redacted_headers;
        let headers = if header_map_needs_redaction(&endpoint.redactor, &parts.headers) {
            let mut copy = parts.headers.clone();
            endpoint.redactor.redact_header_map(&mut copy);
            redacted_headers = copy;
            &redacted_headers
        } else {
            &parts.headers
        };
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = endpoint.redactor.redact_bytes(target.as_bytes());
        let stored_body = body.clone();
        let body = endpoint.redactor.redact_body(&body);
        let mut canonical = Vec::with_capacity(256);
        endpoint.matcher.canonical_form(
            &endpoint.target,
            &RequestParts {
                method: parts.method.as_str().as_bytes(),
                path_and_query: &target,
                headers,
                body: &body,
            },
            &mut canonical,
        );
        // The chain lock is held from peek to commit (so that concurrent
        // identical requests take successive positions) and never across an
        // await.
        let (step, hit, exhausted, recording) = {
            let mut chain = state.chain.lock().unwrap_or_else(|p| p.into_inner());
            if parts.headers.contains_key(CHAIN_RESET_HEADER) {
                chain.reset();
            }
            let step = chain.peek(&canonical);
            if self.options.mode == Mode::Record {
                // Record answers nothing from the recording.
                chain.commit(&step);
                (step, None, false, None)
            } else {
                let record_missing = self.options.mode == Mode::RecordMissing;
                let mut recording = state.recording();
                if record_missing && recording.is_none_or(|r| r.lookup(&step.fingerprint).is_none())
                {
                    // Records appended since the session was opened (by this
                    // process or another) must be found too.
                    recording = state.reload(
                        session.recording_path(&self.options.recording_dir),
                        self.backend,
                    );
                }
                let hit = recording.and_then(|r| r.lookup(&step.fingerprint));
                // record-missing records a miss: that takes the chain step too.
                if hit.is_some() || record_missing {
                    chain.commit(&step);
                }
                let exhausted =
                    step.position > 0 && recording.is_some_and(|r| r.lookup(&step.link).is_some());
                (step, hit, exhausted, recording)
            }
        };
        let answer = replay::ReplayAnswer {
            head: parts.method == http::Method::HEAD,
            timing,
        };
        if let (Some(location), Some(recording)) = (hit, recording) {
            let view = recording.read(location);
            if let (Some(upgrade), Ok(view)) = (upgrade, &view)
                && view.is_websocket()
            {
                let Some(frames) = websocket::frames_of(view) else {
                    return self.serve_record(
                        Err(crate::recording::RecordingError::CorruptRecord {
                            path: session.recording_path(&self.options.recording_dir),
                            offset: location.offset,
                            what: "malformed WebSocket payload".into(),
                        }),
                        answer,
                    );
                };
                // The subprotocol the upstream chose, which the client checks.
                let protocol = view
                    .response_headers()
                    .find(|(name, _)| name.eq_ignore_ascii_case(b"sec-websocket-protocol"))
                    .and_then(|(_, value)| HeaderValue::from_bytes(value).ok());
                return self.play_websocket(
                    endpoint,
                    session,
                    &parts.headers,
                    upgrade,
                    frames,
                    websocket::Conversation::Ouli(protocol),
                );
            }
            // An upgrade the upstream refused is answered as recorded.
            return self.serve_record(view, answer);
        }
        if self.options.mode == Mode::Replay {
            // test-server logs no upgrade request: its conversation is
            // played to an upgrade ouli's own recording has none for.
            let upgrading = upgrade.is_some();
            if let Some(upgrade) = upgrade
                && let Some(frames) = recording.and_then(websocket::test_server_conversation)
            {
                return self.play_websocket(
                    endpoint,
                    session,
                    &parts.headers,
                    upgrade,
                    frames,
                    websocket::Conversation::TestServer,
                );
            }
            // A conversation is not repeated: its frames are a script.
            if exhausted
                && !upgrading
                && self.options.config.on_chain_exhausted == ExhaustedPolicy::RepeatLast
            {
                let recording = recording.expect("exhausted implies a recording");
                if let Some(location) = recording.lookup(&step.link) {
                    return self.serve_record(recording.read(location), answer);
                }
            }
            return self.miss(endpoint, &session, &state, &step, &canonical, exhausted);
        }
        // Record, and record-missing's misses (not recorded yet): upstream,
        // and recorded.
        // Boxed, as above.
        if let Some(upgrade) = upgrade {
            return Box::pin(self.proxy_websocket(
                endpoint,
                session,
                parts,
                upgrade,
                Some((canonical, step, stored_body)),
            ))
            .await;
        }
        Box::pin(self.proxy(
            endpoint,
            held,
            session,
            parts,
            raw_body_for_upstream,
            Some((canonical, step, stored_body)),
        ))
        .await
    }
}

/// A CPU profile of the next N seconds (`--features profiling` builds only;
/// loopback peers only): `go tool pprof http://127.0.0.1:PORT/__ouli/debug/pprof?seconds=10`.
#[cfg(feature = "profiling")]
pub(super) const PPROF_PATH: &str = "/__ouli/debug/pprof";

#[cfg(feature = "profiling")]
async fn profile_answer(
    peer: Option<std::net::IpAddr>,
    query: Option<&str>,
) -> Response<ResponseBody> {
    // A peer whose address cannot be read is not known to be on loopback.
    let peer = peer.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    crate::profile::debug_pprof_response(peer, query)
        .await
        .map(self::response::full)
}

/// Requests ouli is not the server for, refused before anything else: a
/// CONNECT (ouli is a reverse proxy, not a forward one: 405), an asterisk
/// target on anything but OPTIONS, and two Host headers (RFC 9112 3.2: a
/// server must answer 400; which one would the upstream see?).
fn refuse_request_form(request: &Request<Incoming>) -> Option<Response<ResponseBody>> {
    if request.method() == http::Method::CONNECT {
        return Some(error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "client",
            "method-not-allowed",
            "CONNECT is not served: ouli is a reverse proxy for its configured upstreams".into(),
        ));
    }
    if request.uri().path() == "*" && request.method() != http::Method::OPTIONS {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "client",
            "bad-request",
            "the asterisk target `*` is for OPTIONS only".into(),
        ));
    }
    if request
        .headers()
        .get_all(http::header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return Some(error_response(
            StatusCode::BAD_REQUEST,
            "client",
            "bad-request",
            "the request has more than one Host header".into(),
        ));
    }
    None
}

/// 413 for a body over `limits.request_body_bytes_max`, declared or sent.
pub(super) fn body_too_large(limit: usize) -> Response<ResponseBody> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "client",
        "body-too-large",
        format!("request body exceeds limits.request_body_bytes_max = {limit} bytes"),
    )
}

fn path_and_query_of(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
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
/// `Err(why)`, to be refused with 413 as a body sent that large is, when it
/// decodes to more than `limits.request_body_bytes_max`.
fn stored_request_body(
    headers: &HeaderMap,
    body: Bytes,
    limits: &crate::config::Limits,
) -> Result<Bytes, String> {
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
            let encoding = String::from_utf8_lossy(encoding.as_bytes());
            let key = Direction::Request.limit_key();
            tracing::warn!(
                "request body refused: over {key} = {limit} bytes once decoded ({encoding}, {} bytes sent)",
                body.len()
            );
            Err(format!(
                "request body exceeds {key} = {limit} bytes once decoded (content-encoding {encoding})"
            ))
        }
    }
}
