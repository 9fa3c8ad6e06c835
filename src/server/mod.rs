//! The server: one request's path, as a contract.
//!
//! A request goes through named stages. Each is a function (or type) in a
//! file of its own, takes what the stage before it returns, and can be
//! called and tested without a socket, but for the ones that are one
//! (accept, forward). A stage that refuses answers at once, saying whose
//! fault it is (`response`): the client's, the upstream's or the
//! recording's.
//!
//! | stage | where | takes | returns | refusals (fault) |
//! |---|---|---|---|---|
//! | accept | `listener` | a connection | hyper's parsed request | 400, 408, 431 (client, `protocol_errors`); 503 over `limits.connections_max` (`shed`) |
//! | admit | `Server::admit` | the request head | `Admitted`: session name, WebSocket upgrade, replay timing; or the health and `/__ouli/` answers (`control`) | 400 test name, upgrade, replay timing, request form; 405 CONNECT (client) |
//! | collect | `body_timeout::collect` | the request | head and body | 413 declared or sent, 408 (client) |
//! | identify | [`crate::identity`] | head and body | `Identified`: canonical form, body as stored | 413 once decoded (client) |
//! | session | `session` | the session name | its [`Session`]: recording, chain | 502 unreadable (recording); 503 `limits.sessions_max` (client) |
//! | lookup | [`lookup()`], `lookup.rs` | session, canonical form hashed, chain reset asked | [`Lookup`]: hit, miss, exhausted; record mode: the chain step | none |
//! | answer | `replay::answer_hit`, `miss::answer_miss`, `websocket` | a lookup | the recorded answer, from the map; a miss report | 404 miss, 502 damaged record (recording) |
//! | forward, capture, store | `proxy`, `websocket_record`, `crate::record` | head, body as sent, identity and chain step | the upstream's answer, streamed back while captured; appended at its end | 502, 504 (upstream); 500 recording not started (recording) |
//!
//! Which stages run is chosen from the mode, as the server's `Side`, at
//! start; the admin API (`admin.rs`) may switch between replay,
//! record-missing and passthrough at run time, and each request then reads
//! the mode with one atomic load (`Server::proxy_now`):
//! - **replay**: admit → collect → identify → session → lookup →
//!   `answer_hit` | `answer_miss`. `Side::Replay` holds no upstream client:
//!   this mode cannot reach the network by construction, until the admin
//!   API is asked to switch to a proxy mode and builds one.
//! - **record**: admit → collect → identify → session → chain step →
//!   forward → capture → store.
//! - **record-missing**: as replay up to the lookup; a hit is answered from
//!   the recording, anything else forwarded, captured and stored.
//! - **passthrough**: admit → collect → forward; nothing is identified.
//!
//! A WebSocket upgrade takes the same path to its identity; then it is
//! proxied and its conversation recorded (`websocket_record`), or played
//! from the recording (`websocket`).

mod admin;
mod body_timeout;
mod control;
mod listener;
mod lookup;
mod miss;
mod misses;
mod protocol_errors;
mod proxy;
mod replay;
mod response;
mod session;
mod shed;
mod trailers;
mod usage;
mod websocket;
mod websocket_record;

pub use listener::run;
pub use lookup::{Lookup, Policy, lookup, take_step};
pub use session::Session;

use self::response::{RemoveErrorHeader, ResponseBody, error_response, json_response};
use self::websocket::is_websocket_upgrade;
use crate::chain::{ChainStep, HashedCanonical};
use crate::config::{Config, ReplayTiming, Scheme};
use crate::identity::{EndpointIdentity, Identified, RequestHead};
use crate::recording::ReadBackend;
use crate::redact::Redactor;
use crate::session_name::SessionName;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
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
    /// `--unused-report FILE`: where the report of recorded interactions
    /// never served is written at shutdown (`usage.rs`).
    pub unused_report: Option<PathBuf>,
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
    #[error("unused report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// Its identity rules, compiled once (`crate::identity`).
    identity: EndpointIdentity,
    /// The identity's redactor (the same `Arc`): every message ouli writes
    /// about this endpoint's requests goes through it.
    redactor: Arc<Redactor>,
    health: Option<String>,
    /// How its replayed answers are paced unless a request asks otherwise.
    replay_timing: ReplayTiming,
}

/// Where one endpoint's requests go upstream (proxy modes).
struct Route {
    /// The `Host` header sent upstream (port left out when it is the
    /// scheme's default), built once.
    host: HeaderValue,
    /// The upstream's scheme and authority, parsed once: a request's URI
    /// upstream is these and its own path and query (no `format!` and parse
    /// per request).
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Route {
    /// `endpoints[index]`'s upstream address. Checked in every mode, so that
    /// a config replay accepts is one record accepts.
    fn new(index: usize, endpoint: &crate::config::EndpointConfig) -> Result<Route, ServeError> {
        let authority: http::uri::Authority = {
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
        let host = if endpoint.target_port == default_port {
            authority.host()
        } else {
            authority.as_str()
        };
        let host = HeaderValue::from_str(host).map_err(|error| {
            ServeError::Setup(format!(
                "endpoints[{index}]: {host:?} is not a Host header value: {error}"
            ))
        })?;
        Ok(Route {
            host,
            scheme: match endpoint.target_type {
                Scheme::Http => http::uri::Scheme::HTTP,
                Scheme::Https => http::uri::Scheme::HTTPS,
            },
            authority,
        })
    }
}

/// What the server does past a request's identity, chosen once from the
/// mode.
enum Side {
    /// Answers from recordings only. There is no upstream client to reach.
    Replay,
    /// record, record-missing, passthrough.
    Proxy(Proxy),
}

/// The proxy modes' upstream side: the only holder of the upstream client.
struct Proxy {
    upstream: crate::upstream::Upstream,
    /// One per endpoint, by index.
    routes: Vec<Route>,
    store: Store,
}

/// What a proxy mode keeps of what it forwards.
enum Store {
    /// passthrough: nothing, and nothing is identified.
    Nothing,
    /// record: every request, each taking its chain step.
    All(Arc<crate::record::Recorder>),
    /// record-missing: what the recording does not answer.
    Missing(Arc<crate::record::Recorder>),
}

impl Proxy {
    fn recorder(&self) -> Option<&Arc<crate::record::Recorder>> {
        match &self.store {
            Store::Nothing => None,
            Store::All(recorder) | Store::Missing(recorder) => Some(recorder),
        }
    }

    fn route(&self, endpoint: &Endpoint) -> &Route {
        &self.routes[endpoint.index]
    }
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
    side: Side,
    /// WebSocket conversations being proxied (waited for at shutdown).
    conversations: websocket_record::Conversations,
    /// The last misses, for `/__ouli/misses`.
    misses: Arc<misses::Misses>,
    /// What the admin API changes at run time: the mode, the active
    /// sessions, readiness (`admin.rs`).
    admin: admin::AdminState,
}

impl Server {
    /// Compiles every endpoint's settings (identity, upstream address) and
    /// starts what the mode needs: the upstream client (proxy modes), the
    /// recorder (record modes).
    fn new(options: &ServeOptions) -> Result<Server, ServeError> {
        let config = &options.config;
        let secrets = crate::identity::configured_secrets(config)
            .map_err(|e| ServeError::Setup(e.to_string()))?;
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        let mut routes = Vec::with_capacity(config.endpoints.len());
        for (index, endpoint) in config.endpoints.iter().enumerate() {
            let identity = EndpointIdentity::compile(config, index, &secrets)
                .map_err(|e| ServeError::Setup(e.to_string()))?;
            routes.push(Route::new(index, endpoint)?);
            endpoints.push(Endpoint {
                index,
                redactor: identity.redactor().clone(),
                identity,
                health: endpoint.health.clone(),
                replay_timing: endpoint.replay_timing,
            });
        }
        let side = match options.mode {
            Mode::Replay => Side::Replay,
            Mode::Record | Mode::RecordMissing | Mode::Passthrough => {
                Side::Proxy(Self::proxy_side(options, options.mode, routes, &secrets)?)
            }
        };
        Ok(Server {
            options: options.clone(),
            endpoints,
            sessions: DashMap::new(),
            sessions_known: std::sync::atomic::AtomicUsize::new(0),
            sessions_refused_log: shed::LogEvery::new(),
            backend: config.read_backend.resolve(),
            side,
            conversations: websocket_record::Conversations::new(),
            misses: Arc::new(misses::Misses::new()),
            admin: admin::AdminState::new(options.mode, config.endpoints.len()),
        })
    }

    /// The upstream client and, in the record modes, the recorder, of
    /// `mode` (the start mode, or one the admin API switches to).
    fn proxy_side(
        options: &ServeOptions,
        mode: Mode,
        routes: Vec<Route>,
        secrets: &[Vec<u8>],
    ) -> Result<Proxy, ServeError> {
        let config = &options.config;
        let ca_files = crate::upstream::ca_files(config.ca_file.as_deref());
        let connect_timeout = Duration::from_millis(config.limits.upstream_connect_timeout_ms);
        let protocols: Vec<_> = config.endpoints.iter().map(|e| e.target_protocol).collect();
        let upstream = crate::upstream::build_client(&ca_files, connect_timeout, &protocols)
            .map_err(|e| ServeError::Setup(e.to_string()))?;
        let recorder = || {
            Arc::new(crate::record::Recorder::new(
                options.recording_dir.clone(),
                config.durability,
                mode == Mode::RecordMissing,
                secrets,
            ))
        };
        let store = match mode {
            Mode::Record => Store::All(recorder()),
            Mode::RecordMissing => Store::Missing(recorder()),
            Mode::Passthrough | Mode::Replay => Store::Nothing,
        };
        Ok(Proxy {
            upstream,
            routes,
            store,
        })
    }

    /// The upstream client (proxy modes only: replay has none, until the
    /// admin API switches to a proxy mode).
    fn upstream(&self) -> Option<&crate::upstream::Upstream> {
        match &self.side {
            Side::Replay => self.switched_proxies().next().map(|p| &p.upstream),
            Side::Proxy(proxy) => Some(&proxy.upstream),
        }
    }

    /// Where recordings are appended (record modes only, or record-missing
    /// once switched to).
    fn recorder(&self) -> Option<&Arc<crate::record::Recorder>> {
        let switched = self.admin.record_missing.get().and_then(Proxy::recorder);
        match &self.side {
            Side::Replay => switched,
            Side::Proxy(proxy) => proxy.recorder().or(switched),
        }
    }

    /// The proxy sides built by mode switches.
    fn switched_proxies(&self) -> impl Iterator<Item = &Proxy> {
        self.admin
            .record_missing
            .get()
            .into_iter()
            .chain(self.admin.passthrough.get())
    }

    /// The side of the mode now: `None` for replay. One atomic load; the
    /// start mode's side unless the admin API switched.
    fn proxy_now(&self) -> Option<&Proxy> {
        let mode = self.admin.mode();
        if mode == self.options.mode {
            return match &self.side {
                Side::Replay => None,
                Side::Proxy(proxy) => Some(proxy),
            };
        }
        match mode {
            Mode::Replay => None,
            Mode::RecordMissing => self.admin.record_missing.get(),
            Mode::Passthrough => self.admin.passthrough.get(),
            // A record run never switches.
            Mode::Record => None,
        }
    }
}

/// What admission found out about a request before its body is read.
struct Admitted {
    session: SessionName,
    /// A WebSocket upgrade's IO, taken before the request is split.
    upgrade: Option<OnUpgrade>,
    /// How a replayed answer is paced (replay modes; none otherwise).
    timing: ReplayTiming,
}

impl Server {
    /// The request path (module doc): admit, collect, then the side's stages.
    pub(super) async fn handle(
        self: Arc<Self>,
        endpoint_index: usize,
        mut request: Request<Incoming>,
        held: Option<&crate::upstream::HeldConnection>,
    ) -> Response<ResponseBody> {
        let endpoint = &self.endpoints[endpoint_index];
        let admitted = match self.admit(endpoint, &mut request) {
            Ok(admitted) => admitted,
            Err(answer) => return *answer,
        };
        let (parts, body) = match body_timeout::collect(request, &self.options.config.limits).await
        {
            Ok(collected) => collected,
            Err(refused) => return refused,
        };
        match self.proxy_now() {
            None => self.replay_request(endpoint, admitted, parts, body).await,
            // Boxed: the proxy's future is large, and hyper keeps the
            // service's future inline in every connection's idle state.
            Some(proxy) => {
                Box::pin(self.proxy_request(proxy, endpoint, held, admitted, parts, body)).await
            }
        }
    }

    /// Health and `/__ouli/` control paths answered, requests ouli does not
    /// serve refused; else the session named, the upgrade taken, the replay
    /// timing read. All before the body: a bad value is answered at once.
    fn admit(
        &self,
        endpoint: &Endpoint,
        request: &mut Request<Incoming>,
    ) -> Result<Admitted, Box<Response<ResponseBody>>> {
        let path = request.uri().path();
        if path == "/__ouli/health" || endpoint.health.as_deref() == Some(path) {
            let healthy = json_response(
                StatusCode::OK,
                "none",
                serde_json::json!({ "status": "ok" }),
            );
            return Err(Box::new(healthy.tap_remove_error_header()));
        }
        if let Some(control) = path.strip_prefix(CONTROL_PREFIX) {
            return Err(Box::new(self.control(endpoint, control, request.method())));
        }
        if let Some(refused) = refuse_request_form(request) {
            return Err(Box::new(refused));
        }
        let session = self
            .session_name(endpoint.index, request.headers())
            .map_err(|error| {
                Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    endpoint
                        .redactor
                        .redact_str(&error.to_string())
                        .into_owned(),
                ))
            })?;
        // A WebSocket upgrade is identified like any request; its IO is
        // taken here, before the request is split.
        let mut upgrade = None;
        if is_websocket_upgrade(request.headers()) {
            if let Err(message) = websocket::check_handshake(request.headers()) {
                return Err(Box::new(error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-websocket-upgrade",
                    message,
                )));
            }
            upgrade = Some(hyper::upgrade::on(&mut *request));
        }
        // Only the modes that replay use it.
        let timing = match self.admin.mode() {
            Mode::Replay | Mode::RecordMissing => {
                replay::replay_timing(endpoint, request.headers())
                    .map_err(|why| Box::new(replay::bad_replay_timing(why)))?
            }
            Mode::Record | Mode::Passthrough => ReplayTiming::None,
        };
        Ok(Admitted {
            session,
            upgrade,
            timing,
        })
    }

    /// replay: identify → session → lookup → `answer_hit` | `answer_miss`.
    async fn replay_request(
        &self,
        endpoint: &Endpoint,
        admitted: Admitted,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Response<ResponseBody> {
        let identified = match self.identify(endpoint, &parts, body) {
            Ok(identified) => identified,
            Err(refused) => return *refused,
        };
        let state = match self.session(&admitted.session) {
            Ok(state) => state,
            Err(error) => return error.into_response(),
        };
        state.usage.note_endpoint(endpoint.index);
        // Hashed before the session's lock is taken (`lookup`).
        let hashed = HashedCanonical::new(&identified.canonical);
        let reset = parts.headers.contains_key(CHAIN_RESET_HEADER);
        let found = lookup(&state, &hashed, reset, Policy::Replay);
        if let Lookup::Hit {
            recording,
            location,
            ..
        } = found
        {
            return self
                .answer_hit(
                    endpoint,
                    admitted,
                    &parts,
                    (recording, &state.usage),
                    location,
                )
                .await;
        }
        state.usage.note_miss(endpoint.index);
        let answer = replay::ReplayAnswer {
            head: parts.method == http::Method::HEAD,
            timing: admitted.timing,
            trailers: trailers::client_takes_trailers(&parts.headers, parts.version),
        };
        let missed = miss::Missed {
            session: &admitted.session,
            lookup: &found,
            miss_index: &state.miss_index,
            canonical: &identified.canonical,
        };
        self.answer_miss(endpoint, missed, admitted.upgrade, &parts.headers, answer)
            .await
    }

    /// record, record-missing, passthrough: identify → session → chain step
    /// (record-missing: lookup, a hit answered as replay answers it) →
    /// forward → capture → store. Passthrough only forwards.
    async fn proxy_request(
        &self,
        proxy: &Proxy,
        endpoint: &Endpoint,
        held: Option<&crate::upstream::HeldConnection>,
        admitted: Admitted,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Response<ResponseBody> {
        let missing_only = match &proxy.store {
            // Nothing is recorded or looked up: no identity to compute.
            Store::Nothing => {
                let outgoing = Outgoing {
                    session: admitted.session,
                    parts,
                    body,
                    identity: None,
                };
                return self
                    .forward(proxy, endpoint, held, outgoing, admitted.upgrade)
                    .await;
            }
            Store::All(_) => false,
            Store::Missing(_) => true,
        };
        let raw_body_for_upstream = body.clone();
        let identified = match self.identify(endpoint, &parts, body) {
            Ok(identified) => identified,
            Err(refused) => return *refused,
        };
        let state = match self.session(&admitted.session) {
            Ok(state) => state,
            Err(error) => return error.into_response(),
        };
        state.usage.note_endpoint(endpoint.index);
        let hashed = HashedCanonical::new(&identified.canonical);
        let reset = parts.headers.contains_key(CHAIN_RESET_HEADER);
        let step = if missing_only {
            let policy = Policy::RecordMissing {
                recording_dir: &self.options.recording_dir,
                session: &admitted.session,
                backend: self.backend,
            };
            match lookup(&state, &hashed, reset, policy) {
                Lookup::Hit {
                    recording,
                    location,
                    ..
                } => {
                    return self
                        .answer_hit(
                            endpoint,
                            admitted,
                            &parts,
                            (recording, &state.usage),
                            location,
                        )
                        .await;
                }
                // Not recorded yet: upstream, and recorded.
                other => *other.step(),
            }
        } else {
            // Record answers nothing from the recording.
            take_step(&state, &hashed, reset)
        };
        let outgoing = Outgoing {
            session: admitted.session,
            parts,
            body: raw_body_for_upstream,
            identity: Some((identified, step)),
        };
        self.forward(proxy, endpoint, held, outgoing, admitted.upgrade)
            .await
    }

    /// The identify stage on a live request; its refusal (413, the
    /// client's) ready to send (boxed: refusals are rare, identities not).
    fn identify(
        &self,
        endpoint: &Endpoint,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Identified, Box<Response<ResponseBody>>> {
        let limits = &self.options.config.limits;
        endpoint
            .identity
            .identify_live(RequestHead::of(parts), body, limits)
            .map_err(|error| {
                Box::new(error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "client",
                    "body-too-large",
                    error.to_string(),
                ))
            })
    }

    /// Forward, to `proxy` or `proxy_websocket` (inline: `handle` boxed
    /// this whole side).
    async fn forward(
        &self,
        proxy: &Proxy,
        endpoint: &Endpoint,
        held: Option<&crate::upstream::HeldConnection>,
        outgoing: Outgoing,
        upgrade: Option<OnUpgrade>,
    ) -> Response<ResponseBody> {
        if let Some(upgrade) = upgrade {
            return self
                .proxy_websocket(proxy, endpoint, outgoing, upgrade)
                .await;
        }
        self.proxy(proxy, endpoint, held, outgoing).await
    }
}

/// A request to forward: what the forward, capture and store stages take.
struct Outgoing {
    session: SessionName,
    parts: http::request::Parts,
    /// The body as the client sent it (not decoded).
    body: Bytes,
    /// A request to record: its identity and chain step (`None` in
    /// passthrough).
    identity: Option<(Identified, ChainStep)>,
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
