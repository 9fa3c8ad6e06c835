//! Running ouli: bind every endpoint, serve until SIGINT/SIGTERM.
//!
//! Every request: session (from `Test-Name` / `X-Ouli-Test-Name`) → redaction
//! of the live request → canonical form and chain step. Then
//! **replay**: index probe → status, headers and body from the mapped file; a
//! miss is answered with a JSON report (never a bare 500).
//! **record** / **passthrough**: forward upstream (`upstream`), stream the
//! response back while capturing it, and (record) append it (`record`).

use crate::chain::{ChainState, ChainStep};
use crate::config::{Config, ExhaustedPolicy, Scheme};
use crate::fingerprint::{CanonicalRequest, Matcher, RequestParts, Target};
use crate::recording::{ReadBackend, RecordView, Recording};
use crate::redact::{RedactionRules, Redactor};
use crate::session_name::SessionName;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// Headers never replayed: hop-by-hop ones, and the length/encoding of a body
/// that is stored decoded (hyper sets the true length).
const HEADERS_NOT_REPLAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-encoding",
];

/// Serves until SIGINT/SIGTERM (builds its own tokio runtime). Prints one line
/// per endpoint to stdout when it is ready:
/// `ouli listening endpoint=<i> addr=<ip:port> mode=<mode>`.
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    if matches!(options.mode, Mode::Record | Mode::RecordMissing) {
        std::fs::create_dir_all(&options.recording_dir).map_err(|e| ServeError::RecordingDir {
            path: options.recording_dir.clone(),
            why: format!("cannot be created: {e}"),
        })?;
    }
    if options.mode == Mode::Replay && !options.recording_dir.is_dir() {
        return Err(ServeError::RecordingDir {
            path: options.recording_dir.clone(),
            why: "not a directory (replay reads recordings from it)".into(),
        });
    }
    report_interrupted_recordings(&options.recording_dir, options.mode);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(serve(options))
}

/// Directory levels searched for interrupted recordings (nested session
/// names are folders); bounds the start-up walk.
const INTERRUPTED_SEARCH_DEPTH_MAX: usize = 16;

/// Finds the recordings a crash interrupted (`<session>.ouli.partial`) and
/// says, for each, what this start does with it.
fn report_interrupted_recordings(dir: &Path, mode: Mode) {
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if depth < INTERRUPTED_SEARCH_DEPTH_MAX {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".ouli.partial") else {
                continue;
            };
            let complete = path.with_file_name(format!("{stem}.ouli"));
            let interactions = Recording::open(&path, ReadBackend::Mmap)
                .map(|r| r.len().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            if complete.is_file() {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) kept beside {}, which stays in force; to adopt it: mv '{}' '{}'",
                    path.display(),
                    complete.display(),
                    path.display(),
                    complete.display()
                );
            } else if mode == Mode::Record {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) is replaced if this run records session {stem} again; keep it with: mv '{}' '{}'",
                    path.display(),
                    path.display(),
                    complete.display()
                );
            } else {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) is served as it is; make it the session's recording with: mv '{}' '{}'",
                    path.display(),
                    path.display(),
                    complete.display()
                );
            }
        }
    }
}

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
    upstream_host: Option<HeaderValue>,
    /// The upstream's scheme and authority, parsed once: a request's URI
    /// upstream is these and its own path and query (no `format!` and parse
    /// per request).
    upstream_scheme: http::uri::Scheme,
    upstream_authority: http::uri::Authority,
    health: Option<String>,
}

/// One session's replay state; its lock is never shared with another session.
struct Session {
    recording: Option<Recording>,
    /// record-missing only: the recording this process started for a session
    /// that had none, opened once its first record is on disk.
    late_recording: std::sync::OnceLock<Recording>,
    chain: Mutex<ChainState>,
}

impl Session {
    fn recording(&self) -> Option<&Recording> {
        self.recording
            .as_ref()
            .or_else(|| self.late_recording.get())
    }

    /// Sees records appended since open (record-missing): refreshes the open
    /// recording, or opens the one started since.
    fn reload(&self, path: PathBuf, backend: ReadBackend) -> Option<&Recording> {
        if let Some(recording) = self.recording() {
            if let Err(error) = recording.refresh() {
                tracing::warn!("{error}");
            }
            return Some(recording);
        }
        let partial = path.with_extension("ouli.partial");
        let found = [path, partial].into_iter().find(|p| p.is_file())?;
        match Recording::open(&found, backend) {
            Ok(recording) => Some(self.late_recording.get_or_init(|| recording)),
            Err(error) => {
                tracing::warn!("{error}");
                None
            }
        }
    }
}

struct Replayer {
    options: ServeOptions,
    endpoints: Vec<Endpoint>,
    sessions: DashMap<SessionName, Arc<Session>>,
    backend: ReadBackend,
    /// Record and passthrough modes only.
    upstream: Option<crate::upstream::UpstreamClient>,
    /// Record mode only.
    writer: Option<Arc<crate::record::Recorder>>,
}

async fn serve(options: ServeOptions) -> Result<(), ServeError> {
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
            upstream_host: {
                let default_port = if endpoint.target_type == Scheme::Https {
                    443
                } else {
                    80
                };
                let host = if endpoint.target_port == default_port {
                    endpoint.target_host.clone()
                } else {
                    format!("{}:{}", endpoint.target_host, endpoint.target_port)
                };
                HeaderValue::from_str(&host).ok()
            },
            upstream_scheme: match endpoint.target_type {
                Scheme::Http => http::uri::Scheme::HTTP,
                Scheme::Https => http::uri::Scheme::HTTPS,
            },
            upstream_authority: {
                let host = &endpoint.target_host;
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
            },
            health: endpoint.health.clone(),
        });
    }
    let mut listeners = Vec::with_capacity(endpoints.len());
    for (index, endpoint) in config.endpoints.iter().enumerate() {
        let addr = SocketAddr::new(config.listen_address, endpoint.source_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                endpoint: index,
                addr,
                source,
            })?;
        listeners.push(listener);
    }
    // `localhost` resolves to ::1 first on many machines, and some clients
    // (Node before 20, test-server's SDK health polls) do not fall back to
    // 127.0.0.1: on IPv4 loopback, each endpoint also listens on IPv6
    // loopback, same port, where the machine has it.
    let mut loopback_v6 = Vec::new();
    if config.listen_address == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
        for (index, listener) in listeners.iter().enumerate() {
            let Ok(v4) = listener.local_addr() else {
                continue;
            };
            let v6 = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), v4.port());
            match tokio::net::TcpListener::bind(v6).await {
                Ok(extra) => loopback_v6.push((index, extra)),
                Err(error) => tracing::debug!("endpoint {index}: not also on {v6}: {error}"),
            }
        }
    }
    let backend = config.read_backend.resolve();
    let proxying = options.mode != Mode::Replay;
    let upstream = if proxying {
        let ca_files = crate::upstream::ca_files(config.ca_file.as_deref());
        let connect_timeout = Duration::from_millis(config.limits.upstream_connect_timeout_ms);
        Some(
            crate::upstream::build_client(&ca_files, connect_timeout)
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
        ))
    });
    let replayer = Arc::new(Replayer {
        options: options.clone(),
        endpoints,
        sessions: DashMap::new(),
        backend,
        upstream,
        writer,
    });
    // Every connection task, so that shutdown can wait for in-flight
    // requests (hyper-util's GracefulShutdown does not take connections
    // with upgrades, which WebSocket replay needs).
    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_tasks = Vec::new();
    // Before the ready line: a SIGTERM sent as soon as it is read must stop
    // the server gracefully, not find the default action (death) in place.
    let shutdown = shutdown_signal();
    {
        let mut stdout = std::io::stdout().lock();
        for (index, listener) in listeners.iter().enumerate() {
            let addr = listener
                .local_addr()
                .map_err(|e| ServeError::Setup(e.to_string()))?;
            let _ = writeln!(
                stdout,
                "ouli listening endpoint={index} addr={addr} mode={}",
                options.mode.as_str()
            );
        }
        let _ = stdout.flush();
    }
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let all_listeners = listeners.into_iter().enumerate().chain(loopback_v6);
    for (index, listener) in all_listeners {
        let mut stop = stop_rx.clone();
        let conn_tx = conn_tx.clone();
        accept_tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => { let _ = conn_tx.send((index, stream)); }
                        Err(error) => tracing::warn!("endpoint {index}: accept failed: {error}"),
                    }
                }
            }
        }));
    }
    drop(conn_tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = conn_rx.recv() => {
                let Some((index, stream)) = next else { break };
                let _ = stream.set_nodelay(true);
                let replayer = replayer.clone();
                let service = hyper::service::service_fn(move |request| {
                    let replayer = replayer.clone();
                    async move { Ok::<_, std::convert::Infallible>(replayer.handle(index, request).await) }
                });
                let limits = &options.config.limits;
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
                    .max_headers(limits.header_count_max)
                    .max_buf_size(limits.header_bytes_max.max(8192));
                let connection = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades();
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let mut connection = std::pin::pin!(connection);
                    let ended = tokio::select! {
                        ended = connection.as_mut() => ended,
                        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                            // Finish the request in flight, then close.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(error) = ended {
                        tracing::debug!("connection ended: {error}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    for task in accept_tasks {
        let _ = task.await;
    }
    let timeout = Duration::from_millis(options.config.limits.shutdown_timeout_ms);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all_closed).await.is_err() {
        tracing::warn!("shutdown: connections still open after {timeout:?}; closing them");
    }
    if let Some(writer) = replayer.writer.clone() {
        let errors = tokio::task::spawn_blocking(move || writer.finish_all())
            .await
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(ServeError::Setup(format!(
                "closing recordings: {}",
                errors.join("; ")
            )));
        }
    }
    Ok(())
}

/// SIGTERM or SIGINT (Ctrl-C). The handlers are installed by this call,
/// not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(
    status: StatusCode,
    kind: &str,
    body: serde_json::Value,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(OULI_ERROR_HEADER, value);
    }
    response
}

fn error_response(
    status: StatusCode,
    fault: &str,
    kind: &str,
    message: String,
) -> Response<ResponseBody> {
    json_response(
        status,
        kind,
        serde_json::json!({ "error": kind, "fault": fault, "message": message }),
    )
}

impl Replayer {
    async fn handle(
        self: Arc<Self>,
        endpoint_index: usize,
        request: Request<Incoming>,
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
            return self.control(control, request.method());
        }
        let session = match self.session_name(request.headers()) {
            Ok(name) => name,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    error.to_string(),
                );
            }
        };
        if self.options.mode == Mode::Replay && is_websocket_upgrade(request.headers()) {
            return self.replay_websocket(endpoint, session, request);
        }
        let (parts, body) = request.into_parts();
        let raw_body_for_upstream;
        let limit = self.options.config.limits.request_body_bytes_max;
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return if error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "client",
                        "body-too-large",
                        format!(
                            "request body exceeds limits.request_body_bytes_max = {limit} bytes"
                        ),
                    )
                } else {
                    error_response(
                        StatusCode::BAD_REQUEST,
                        "client",
                        "bad-body",
                        error.to_string(),
                    )
                };
            }
        };
        if self.options.mode == Mode::Passthrough {
            // Nothing is recorded or looked up: no identity to compute.
            return self.proxy(endpoint, session, parts, body, None).await;
        }
        raw_body_for_upstream = body.clone();
        // A compressed request body is identified (and stored) decoded: its
        // compression level must not change its identity, and a secret in it
        // must be found.
        let body = stored_request_body(&parts.headers, body, limit);
        let state = match self.session(&session) {
            Ok(state) => state,
            Err(message) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "recording",
                    "recording-unreadable",
                    message,
                );
            }
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
        if self.options.mode == Mode::Record {
            let step = {
                let mut chain = state.chain.lock().unwrap_or_else(|p| p.into_inner());
                if parts.headers.contains_key(CHAIN_RESET_HEADER) {
                    chain.reset();
                }
                let step = chain.peek(&canonical);
                chain.commit(&step);
                step
            };
            return self
                .proxy(
                    endpoint,
                    session,
                    parts,
                    raw_body_for_upstream,
                    Some((canonical, step)),
                )
                .await;
        }
        let record_missing = self.options.mode == Mode::RecordMissing;
        // The chain lock is held from peek to commit (so that concurrent
        // identical requests take successive positions) and never across an
        // await.
        let (step, hit, exhausted, recording) = {
            let mut chain = state.chain.lock().unwrap_or_else(|p| p.into_inner());
            if parts.headers.contains_key(CHAIN_RESET_HEADER) {
                chain.reset();
            }
            let step = chain.peek(&canonical);
            let mut recording = state.recording();
            if record_missing && recording.is_none_or(|r| r.lookup(&step.fingerprint).is_none()) {
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
        };
        if let (Some(location), Some(recording)) = (hit, recording) {
            return self.serve_record(recording.read(location));
        }
        if record_missing {
            // Not recorded yet: record it now, as record mode would.
            return self
                .proxy(
                    endpoint,
                    session,
                    parts,
                    raw_body_for_upstream,
                    Some((canonical, step)),
                )
                .await;
        }
        if exhausted && self.options.config.on_chain_exhausted == ExhaustedPolicy::RepeatLast {
            let recording = recording.expect("exhausted implies a recording");
            if let Some(location) = recording.lookup(&step.link) {
                return self.serve_record(recording.read(location));
            }
        }
        self.miss(endpoint, &session, recording, &step, &canonical, exhausted)
    }

    /// Replays a session's recorded WebSocket conversation as a strict
    /// script, as test-server does: the upgrade is accepted, recorded server
    /// frames are sent in order, and each client frame must equal the
    /// recorded one after redaction, else the connection closes with 1011.
    fn replay_websocket(
        &self,
        endpoint: &Endpoint,
        session: SessionName,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let state = match self.session(&session) {
            Ok(state) => state,
            Err(message) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "recording",
                    "recording-unreadable",
                    message,
                );
            }
        };
        let frames = state.recording().and_then(|recording| {
            recording
                .iter()
                .filter_map(Result::ok)
                .find(RecordView::is_websocket)
                .and_then(|view| view.to_interaction().ok())
                .and_then(|interaction| match interaction.exchange {
                    crate::interaction::Exchange::WebSocket { frames, .. } => Some(frames),
                    crate::interaction::Exchange::Http(_) => None,
                })
        });
        let Some(frames) = frames else {
            return error_response(
                StatusCode::NOT_FOUND,
                "recording",
                "replay-miss",
                format!("session {session}: no WebSocket conversation was recorded"),
            );
        };
        let Some(key) = request.headers().get(http::header::SEC_WEBSOCKET_KEY) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "client",
                "bad-websocket-upgrade",
                "a WebSocket upgrade needs sec-websocket-key".into(),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        let redactor = endpoint.redactor.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        hyper_util::rt::TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    play_websocket_script(socket, frames, &redactor, &session).await;
                }
                Err(error) => {
                    tracing::warn!("session {session}: WebSocket upgrade failed: {error}")
                }
            }
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }

    fn serve_record(
        &self,
        view: Result<RecordView, crate::recording::RecordingError>,
    ) -> Response<ResponseBody> {
        let view = match view {
            Ok(view) => view,
            Err(error) => {
                tracing::error!("{error}");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "recording",
                    "damaged-record",
                    error.to_string(),
                );
            }
        };
        let mut chunks = view.response_chunks();
        let body = match (chunks.next(), chunks.next()) {
            (None, _) => Bytes::new(),
            (Some((_, only)), None) => only,
            (Some((_, first)), Some((_, second))) => {
                let mut joined = BytesMut::with_capacity(view.response_body_len() as usize);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&second);
                for (_, chunk) in chunks {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        };
        let mut response = Response::new(full(body));
        *response.status_mut() =
            StatusCode::from_u16(view.response_status()).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        headers.reserve(16);
        for (name, value) in view.response_headers_shared() {
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            if HEADERS_NOT_REPLAYED.contains(&name.as_str()) {
                continue;
            }
            // Zero-copy: the value stays in the mapped record.
            if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                headers.append(name, value);
            }
        }
        response
    }

    fn session_name(
        &self,
        headers: &HeaderMap,
    ) -> Result<SessionName, crate::session_name::SessionNameError> {
        let configured = self.options.config.session_header.as_deref();
        let value = ["test-name", "x-ouli-test-name"]
            .into_iter()
            .chain(configured)
            .find_map(|name| headers.get(name));
        match value {
            Some(value) => SessionName::parse_bytes(value.as_bytes()),
            None => Ok(SessionName::default_session()),
        }
    }

    fn session(&self, name: &SessionName) -> Result<Arc<Session>, String> {
        if let Some(session) = self.sessions.get(name) {
            return Ok(session.clone());
        }
        let dir = &self.options.recording_dir;
        let path = name.recording_path(dir);
        let partial = path.with_extension("ouli.partial");
        let recording = if !matches!(self.options.mode, Mode::Replay | Mode::RecordMissing) {
            None
        } else if path.is_file() {
            Some(Recording::open(&path, self.backend).map_err(|e| e.to_string())?)
        } else if partial.is_file() {
            tracing::warn!(
                "session {name}: serving the interrupted recording {} (adopt it with `mv {} {}`)",
                partial.display(),
                partial.display(),
                path.display()
            );
            Some(Recording::open(&partial, self.backend).map_err(|e| e.to_string())?)
        } else {
            // Reading and converting a JSON file blocks: let the runtime move
            // other work off this thread meanwhile (first request only).
            tokio::task::block_in_place(|| {
                crate::testserver::open_session(dir, name, &self.options.config)
            })
            .map_err(|e| e.to_string())?
        };
        let session = Arc::new(Session {
            recording,
            late_recording: std::sync::OnceLock::new(),
            chain: Mutex::new(ChainState::new(self.options.config.chain)),
        });
        Ok(self.sessions.entry(name.clone()).or_insert(session).clone())
    }

    fn control(&self, path: &str, method: &http::Method) -> Response<ResponseBody> {
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some(name) = rest.strip_suffix("/end")
            && method == http::Method::POST
        {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let name = match SessionName::parse(&name) {
                Ok(name) => name,
                Err(error) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "client",
                        "bad-test-name",
                        error.to_string(),
                    );
                }
            };
            self.sessions.remove(&name);
            let finished = match &self.writer {
                // One rename and fsync: short enough to block this request's task.
                Some(writer) => tokio::task::block_in_place(|| writer.finish(&name))
                    .map_err(|error| error.to_string()),
                None => Ok(None),
            };
            return match finished {
                Ok(path) => json_response(
                    StatusCode::OK,
                    "none",
                    serde_json::json!({ "session": name.as_str(), "recording": path.map(|p| p.display().to_string()) }),
                )
                .tap_remove_error_header(),
                Err(message) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "recording", "finish-failed", message),
            };
        }
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some(name) = rest.strip_suffix("/reset")
            && method == http::Method::POST
        {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            return match SessionName::parse(&name) {
                Ok(name) => {
                    if let Some(session) = self.sessions.get(&name) {
                        session
                            .chain
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reset();
                    }
                    json_response(
                        StatusCode::OK,
                        "none",
                        serde_json::json!({ "session": name.as_str(), "chain": "reset" }),
                    )
                    .tap_remove_error_header()
                }
                Err(error) => error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    error.to_string(),
                ),
            };
        }
        error_response(
            StatusCode::NOT_FOUND,
            "client",
            "unknown-control-path",
            format!(
                "{CONTROL_PREFIX}{path} is not an ouli control path (health, sessions/<name>/reset)"
            ),
        )
    }

    /// Record and passthrough: forward upstream, stream the answer back while
    /// capturing it; at its end (record) decode, redact and append.
    async fn proxy(
        &self,
        endpoint: &Endpoint,
        session: SessionName,
        parts: http::request::Parts,
        body: Bytes,
        identity: Option<(Vec<u8>, ChainStep)>,
    ) -> Response<ResponseBody> {
        let config = &self.options.config;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(endpoint.upstream_scheme.clone());
        uri.authority = Some(endpoint.upstream_authority.clone());
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        let uri = match http::Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-target",
                    error.to_string(),
                );
            }
        };
        let mut upstream_request = Request::new(Full::new(body.clone()));
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri.clone();
        let headers = upstream_request.headers_mut();
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name, &parts.headers) && name != http::header::HOST {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(host) = &endpoint.upstream_host {
            headers.insert(http::header::HOST, host.clone());
        }
        let client = self.upstream.as_ref().expect("proxy modes have a client");
        let timeout = Duration::from_millis(config.limits.upstream_response_timeout_ms);
        let started_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let response = match tokio::time::timeout(timeout, client.request(upstream_request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let message = format!(
                    "upstream {uri}: {error} ({:?})",
                    std::error::Error::source(&error)
                );
                tracing::warn!("{message}");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    "upstream-unreachable",
                    message,
                );
            }
            Err(_) => {
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream",
                    "upstream-timeout",
                    format!(
                        "upstream {uri}: no response head within {timeout:?} (limits.upstream_response_timeout_ms)"
                    ),
                );
            }
        };
        let (response_parts, upstream_body) = response.into_parts();
        let mut client_response = Response::from_parts(response_parts.clone(), ());
        let client_headers = client_response.headers_mut();
        let hop: Vec<HeaderName> = client_headers
            .keys()
            .filter(|name| is_hop_by_hop(name, &response_parts.headers))
            .cloned()
            .collect();
        for name in hop {
            client_headers.remove(name);
        }
        let (Some(writer), Some((canonical, step))) = (self.writer.clone(), identity) else {
            return client_response.map(|()| upstream_body.map_err(BoxError::from).boxed_unsync());
        };
        let redactor = endpoint.redactor.clone();
        let endpoint_index = endpoint.index as u16;
        let decode_limit = config.limits.response_body_bytes_max;
        let on_end: crate::record::OnBodyEnd = Box::new(move |chunks| {
            let mut request = crate::interaction::RecordedRequest {
                method: Bytes::copy_from_slice(parts.method.as_str().as_bytes()),
                target: Bytes::copy_from_slice(path_and_query_of(&parts).as_bytes()),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            Bytes::copy_from_slice(k.as_str().as_bytes()),
                            Bytes::copy_from_slice(v.as_bytes()),
                        )
                    })
                    .collect(),
                body: stored_request_body(&parts.headers, body, decode_limit),
            };
            redactor.redact_request(&mut request);
            let encoding = response_parts
                .headers
                .get(http::header::CONTENT_ENCODING)
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .unwrap_or_default();
            let chunks = decode_chunks(&encoding, chunks, decode_limit);
            let mut recorded = crate::interaction::RecordedResponse {
                status: response_parts.status.as_u16(),
                headers: response_parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            Bytes::copy_from_slice(k.as_str().as_bytes()),
                            Bytes::copy_from_slice(v.as_bytes()),
                        )
                    })
                    .collect(),
                chunks,
                original_encoding: encoding,
            };
            redactor.redact_response(&mut recorded);
            writer.append(
                &session,
                &crate::interaction::Interaction {
                    fingerprint: step.fingerprint,
                    chain_link: step.link,
                    canonical: Bytes::from(canonical),
                    endpoint: endpoint_index,
                    recorded_at_unix_us: started_unix_us,
                    request,
                    exchange: crate::interaction::Exchange::Http(recorded),
                },
            );
        });
        let captured = crate::record::CaptureBody::new(upstream_body, decode_limit, on_end);
        client_response.map(|()| captured.map_err(BoxError::from).boxed_unsync())
    }

    fn miss(
        &self,
        endpoint: &Endpoint,
        session: &SessionName,
        recording: Option<&Recording>,
        step: &ChainStep,
        canonical: &[u8],
        exhausted: bool,
    ) -> Response<ResponseBody> {
        let got = CanonicalRequest::parse(canonical).unwrap_or_default();
        let mut candidates: Vec<(usize, CanonicalRequest)> = recording
            .map(|r| {
                r.iter()
                    .filter_map(Result::ok)
                    .filter_map(|view| CanonicalRequest::parse(view.canonical()))
                    .filter(|c| c.method == got.method)
                    .map(|c| (field_differences(&c, &got).len(), c))
                    .collect()
            })
            .unwrap_or_default();
        candidates.sort_by_key(|(score, c)| (*score, c.path != got.path));
        candidates.dedup_by(|a, b| a.1 == b.1);
        let closest: Vec<serde_json::Value> = candidates
            .iter()
            .take(MISS_CANDIDATES_MAX)
            .map(|(_, c)| {
                serde_json::json!({
                    "method": c.method, "path": c.path,
                    "differences": field_differences(c, &got),
                })
            })
            .collect();
        let config_arg = self
            .options
            .config
            .source
            .as_ref()
            .map(|p| format!(" --config {}", p.display()))
            .unwrap_or_default();
        let kind = if exhausted {
            "chain-exhausted"
        } else {
            "replay-miss"
        };
        let message = if recording.is_none() {
            format!(
                "no recording for session {session} in {}",
                self.options.recording_dir.display()
            )
        } else if exhausted {
            format!(
                "session {session}: this request was recorded {} time(s); the chain ran past the recording",
                step.position
            )
        } else {
            format!("session {session}: no recorded request matches")
        };
        tracing::warn!(
            "replay miss (endpoint {}): {message}; {} {}; closest: {}",
            endpoint.index,
            got.method,
            got.path,
            serde_json::to_string(&closest).unwrap_or_default()
        );
        json_response(
            StatusCode::NOT_FOUND,
            kind,
            serde_json::json!({
                "error": kind,
                "fault": "recording",
                "message": message,
                "session": session.as_str(),
                "fingerprint": step.fingerprint.to_hex(),
                "chain_position": step.position,
                "request": canonical_json(&got),
                "closest_recorded": closest,
                "record_command": format!(
                    "ouli record-missing{config_arg} --recording-dir {}",
                    self.options.recording_dir.display()
                ),
            }),
        )
    }
}

fn canonical_json(c: &CanonicalRequest) -> serde_json::Value {
    serde_json::json!({
        "target": c.target, "method": c.method, "path": c.path,
        "query": c.query, "headers": c.headers,
        "body_kind": c.body_kind, "body": String::from_utf8_lossy(&c.body),
    })
}

/// Field-by-field differences, expected (recorded) vs got (live).
fn field_differences(
    expected: &CanonicalRequest,
    got: &CanonicalRequest,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut differ = |field: String, e: Option<&str>, g: Option<&str>| {
        if e != g {
            out.push(serde_json::json!({ "field": field, "expected": e, "got": g }));
        }
    };
    differ("target".into(), Some(&expected.target), Some(&got.target));
    differ("path".into(), Some(&expected.path), Some(&got.path));
    for (kind, e_list, g_list) in [
        ("query", &expected.query, &got.query),
        ("header", &expected.headers, &got.headers),
    ] {
        let mut names: Vec<&str> = e_list
            .iter()
            .chain(g_list.iter())
            .map(|(k, _)| k.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let e: Vec<&str> = e_list
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let g: Vec<&str> = g_list
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if e != g {
                let join = |v: &[&str]| {
                    if v.is_empty() {
                        None
                    } else {
                        Some(v.join(", "))
                    }
                };
                out.push(serde_json::json!({ "field": format!("{kind} {name}"), "expected": join(&e), "got": join(&g) }));
            }
        }
    }
    if expected.body != got.body || expected.body_kind != got.body_kind {
        out.extend(body_differences(expected, got));
    }
    out
}

/// For two JSON bodies, the differing JSON paths; otherwise one `body` entry.
fn body_differences(expected: &CanonicalRequest, got: &CanonicalRequest) -> Vec<serde_json::Value> {
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    let mut out = Vec::new();
    match (parse(&expected.body), parse(&got.body)) {
        (Some(e), Some(g)) => json_diff("$", &e, &g, &mut out),
        _ => out.push(serde_json::json!({
            "field": "body",
            "expected": String::from_utf8_lossy(&expected.body),
            "got": String::from_utf8_lossy(&got.body),
        })),
    }
    out
}

fn json_diff(
    path: &str,
    e: &serde_json::Value,
    g: &serde_json::Value,
    out: &mut Vec<serde_json::Value>,
) {
    use serde_json::Value;
    match (e, g) {
        (Value::Object(eo), Value::Object(go)) => {
            let mut keys: Vec<&String> = eo.keys().chain(go.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let child = format!("{path}.{key}");
                match (eo.get(key), go.get(key)) {
                    (Some(a), Some(b)) => json_diff(&child, a, b, out),
                    (a, b) => out.push(serde_json::json!({ "field": format!("json {child}"), "expected": a, "got": b })),
                }
            }
        }
        _ if e != g => out
            .push(serde_json::json!({ "field": format!("json {path}"), "expected": e, "got": g })),
        _ => {}
    }
}

/// Successful control answers carry no error header.
trait RemoveErrorHeader {
    fn tap_remove_error_header(self) -> Self;
}

impl RemoveErrorHeader for Response<ResponseBody> {
    fn tap_remove_error_header(mut self) -> Self {
        self.headers_mut().remove(OULI_ERROR_HEADER);
        self
    }
}

fn path_and_query_of(parts: &http::request::Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
}

async fn play_websocket_script<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    frames: Vec<crate::interaction::WsFrame>,
    redactor: &Redactor,
    session: &SessionName,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::interaction::WsDirection;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    for (index, frame) in frames.iter().enumerate() {
        match frame.direction {
            WsDirection::ServerToClient => {
                let message = if frame.opcode == 1 {
                    match std::str::from_utf8(&frame.payload) {
                        Ok(text) => Message::text(text),
                        Err(_) => Message::binary(frame.payload.clone()),
                    }
                } else {
                    Message::binary(frame.payload.clone())
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            WsDirection::ClientToServer => {
                let received = loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) => {
                            break Bytes::copy_from_slice(text.as_bytes());
                        }
                        Some(Ok(Message::Binary(data))) => break data,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    }
                };
                if redactor.redact_bytes(&received).as_ref() != frame.payload.as_ref() {
                    tracing::warn!(
                        "session {session}: WebSocket frame {index} differs from the recording; closing with 1011"
                    );
                    let _ = socket
                        .close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: format!("ouli: frame {index} differs from the recording")
                                .into(),
                        }))
                        .await;
                    return;
                }
            }
        }
    }
    let _ = socket.close(None).await;
}

/// Whether redaction would change `headers` (a dropped name, or a secret in
/// a value): only then is the map copied.
fn header_map_needs_redaction(redactor: &Redactor, headers: &HeaderMap) -> bool {
    headers.iter().any(|(name, value)| {
        redactor.drops_request_header(name.as_str().as_bytes())
            || matches!(
                redactor.redact_bytes(value.as_bytes()),
                std::borrow::Cow::Owned(_)
            )
    })
}

/// RFC 9110 §7.6.1: connection-specific headers, and those the `Connection`
/// header names, are not forwarded.
fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP_BY_HOP.contains(&name.as_str())
        || headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| {
                value
                    .to_str()
                    .unwrap_or("")
                    .split(',')
                    .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
            })
}

/// The request body as it is fingerprinted and stored: decoded when the
/// client sent it with a `content-encoding` ouli can undo, else as sent.
fn stored_request_body(headers: &HeaderMap, body: Bytes, limit: usize) -> Bytes {
    let Some(encoding) = headers.get(http::header::CONTENT_ENCODING) else {
        return body;
    };
    match crate::decode::decode_body(encoding.as_bytes(), &body, limit) {
        Ok(Some(decoded)) => Bytes::from(decoded),
        Ok(None) => body,
        Err(error) => {
            tracing::warn!("request body kept as sent: {error}");
            body
        }
    }
}

/// Bodies are stored decoded: an encoded body is joined and decoded into one
/// chunk (its arrival times describe the encoded stream, not these bytes).
fn decode_chunks(
    encoding: &[u8],
    chunks: Vec<crate::interaction::BodyChunk>,
    limit: usize,
) -> Vec<crate::interaction::BodyChunk> {
    if encoding.is_empty() {
        return chunks;
    }
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    match crate::decode::decode_body(encoding, &joined, limit) {
        Ok(Some(decoded)) => vec![crate::interaction::BodyChunk {
            offset_us: 0,
            data: Bytes::from(decoded),
        }],
        Ok(None) => chunks,
        Err(error) => {
            tracing::warn!("response body kept encoded: {error}");
            chunks
        }
    }
}
