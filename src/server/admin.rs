//! The admin API under `/__ouli/`: who may call it, and the endpoints that
//! read or change the running server (the older ones, end, reset and
//! misses, are in `control.rs`).
//!
//! | path | methods | answer |
//! |---|---|---|
//! | `health` | any | `{"status":"ok"}` (anyone: probes) |
//! | `ready` | GET | 200 `{"ready":true}`; 503 `{"ready":false}` from the start of shutdown (anyone: probes) |
//! | `sessions` | GET | every session known (`usage.rs`) |
//! | `sessions/<name>` | GET | one session, its interactions and the unused ones |
//! | `mode` | GET, PUT | the mode now; a switch between replay, record-missing and passthrough |
//! | `session` | GET, PUT, DELETE | the endpoint's active session |
//! | `debug/pprof` | GET | a CPU profile (`profiling` builds) |
//!
//! [`peer_may_use`] is the gate: a loopback peer may use everything; any
//! other peer only with the configured `admin_token` as a bearer token,
//! compared in constant time; else 403. Health and readiness are open to
//! all: a load balancer probes them and they say nothing else.
//!
//! [`AdminState`] holds what these change: the mode (an `AtomicU8`, one
//! load per request; the proxy sides a switch needs are built at the first
//! switch and kept), each endpoint's active session (an `AtomicBool` says
//! whether one is set, so a request that names none pays one load when
//! none is) and readiness.

use super::response::{RemoveErrorHeader, ResponseBody, error_response, json_response};
use super::{CONTROL_PREFIX, Mode, Proxy, Server};
use crate::config::AdminToken;
use crate::session_name::SessionName;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// Largest body an admin request may send (`{"mode": …}`, `{"name": …}`).
pub const ADMIN_BODY_BYTES_MAX: usize = 4096;

/// What the admin API changes at run time.
pub(super) struct AdminState {
    /// `Mode as u8` ([`mode_from_u8`]): the mode requests are served in.
    mode: AtomicU8,
    /// Proxy sides built by a switch to a mode the server did not start in.
    pub(super) record_missing: OnceLock<Proxy>,
    pub(super) passthrough: OnceLock<Proxy>,
    /// One switch at a time (building a side takes a while).
    switching: Mutex<()>,
    /// One per endpoint.
    active: Box<[ActiveSession]>,
    /// False from the start of shutdown: `/__ouli/ready` answers 503.
    ready: AtomicBool,
    /// Whether the run served from recordings at any time (replay or
    /// record-missing): the shutdown log of unused interactions is for such
    /// runs.
    pub(super) replayed: AtomicBool,
}

/// The session of an endpoint's requests that name none.
struct ActiveSession {
    set: AtomicBool,
    name: RwLock<Option<SessionName>>,
}

fn mode_from_u8(value: u8) -> Mode {
    match value {
        0 => Mode::Record,
        1 => Mode::Replay,
        2 => Mode::RecordMissing,
        _ => Mode::Passthrough,
    }
}

fn mode_to_u8(mode: Mode) -> u8 {
    match mode {
        Mode::Record => 0,
        Mode::Replay => 1,
        Mode::RecordMissing => 2,
        Mode::Passthrough => 3,
    }
}

impl AdminState {
    pub(super) fn new(mode: Mode, endpoints: usize) -> AdminState {
        AdminState {
            mode: AtomicU8::new(mode_to_u8(mode)),
            record_missing: OnceLock::new(),
            passthrough: OnceLock::new(),
            switching: Mutex::new(()),
            active: (0..endpoints)
                .map(|_| ActiveSession {
                    set: AtomicBool::new(false),
                    name: RwLock::new(None),
                })
                .collect(),
            ready: AtomicBool::new(true),
            replayed: AtomicBool::new(matches!(mode, Mode::Replay | Mode::RecordMissing)),
        }
    }

    /// The mode requests are served in now: one atomic load.
    pub(super) fn mode(&self) -> Mode {
        mode_from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Readiness ends: shutdown has started.
    pub(super) fn not_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// The active session of endpoint `index`, if one is set.
    pub(super) fn active_session(&self, index: usize) -> Option<SessionName> {
        let active = self.active.get(index)?;
        if !active.set.load(Ordering::Acquire) {
            return None;
        }
        active
            .name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or clears, `None`) endpoint `index`'s active session; returns
    /// the one before.
    fn set_active_session(&self, index: usize, name: Option<SessionName>) -> Option<SessionName> {
        let active = &self.active[index];
        let mut held = active.name.write().unwrap_or_else(|p| p.into_inner());
        active.set.store(name.is_some(), Ordering::Release);
        std::mem::replace(&mut *held, name)
    }
}

/// Whether `peer` may use the admin API: a loopback peer always; another
/// only with `token` configured and sent as `Authorization: Bearer
/// <token>`. `Err` says why not (the 403's message).
pub(super) fn peer_may_use(
    peer: Option<IpAddr>,
    token: Option<&AdminToken>,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    if peer.is_some_and(is_loopback) {
        return Ok(());
    }
    let Some(token) = token else {
        return Err(
            "the admin API answers loopback peers only; set admin_token in the config to let other peers use it with `Authorization: Bearer <token>`",
        );
    };
    let sent = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match sent {
        Some(sent) if same_token(sent, token.as_bytes()) => Ok(()),
        Some(_) => Err("the bearer token is not the configured admin_token"),
        None => Err("a peer off loopback must send `Authorization: Bearer <admin_token>`"),
    }
}

/// Loopback, IPv4-mapped loopback included (a dual-stack socket's view).
fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Compares the SHA-256 digests of both, every byte: the time taken says
/// nothing of where they differ, nor of the token's length.
fn same_token(sent: &[u8], token: &[u8]) -> bool {
    let sent: [u8; 32] = Sha256::digest(sent).into();
    let token: [u8; 32] = Sha256::digest(token).into();
    let differ = sent
        .iter()
        .zip(token.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(differ) == 0
}

/// The paths anyone may ask, loopback or not: what a load balancer probes.
fn is_probe(rest: &str) -> bool {
    rest == "health" || rest == "ready"
}

fn ok_json(body: serde_json::Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, "none", body).tap_remove_error_header()
}

fn method_not_allowed(
    path: &str,
    method: &Method,
    allowed: &'static str,
) -> Response<ResponseBody> {
    let mut answer = error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "client",
        "method-not-allowed",
        format!("{CONTROL_PREFIX}{path} takes {allowed}, not {method}"),
    );
    answer
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    answer
}

fn bad_body(why: String) -> Response<ResponseBody> {
    error_response(StatusCode::BAD_REQUEST, "client", "bad-admin-body", why)
}

impl Server {
    /// Every `/__ouli/` request: the gate, then the admin endpoints; the
    /// rest (health, end, reset, misses, unknown paths) go on to `handle`.
    pub(super) async fn admin(
        self: Arc<Self>,
        index: usize,
        request: Request<Incoming>,
        held: Option<&crate::upstream::HeldConnection>,
        peer: Option<IpAddr>,
    ) -> Response<ResponseBody> {
        let path = request.uri().path();
        let rest = path.strip_prefix(CONTROL_PREFIX).unwrap_or(path).to_owned();
        if rest == "ready" {
            return self.ready_answer();
        }
        if !is_probe(&rest)
            && let Err(why) = peer_may_use(
                peer,
                self.options.config.admin_token.as_ref(),
                request.headers(),
            )
        {
            return error_response(
                StatusCode::FORBIDDEN,
                "client",
                "admin-forbidden",
                why.into(),
            );
        }
        let method = request.method().clone();
        match rest.as_str() {
            "sessions" => return self.sessions_answer(&method).await,
            "mode" => return self.mode_answer(request).await,
            "session" => return self.active_session_answer(index, request).await,
            "debug/pprof" => return pprof_answer(peer, request.uri().query()).await,
            _ => {}
        }
        if let Some(name) = rest.strip_prefix("sessions/")
            && !name.ends_with("/end")
            && !name.ends_with("/reset")
        {
            return self
                .session_answer(&rest, name, &method, request.uri().query())
                .await;
        }
        self.handle(index, request, held).await
    }

    fn ready_answer(&self) -> Response<ResponseBody> {
        if self.admin.ready.load(Ordering::Acquire) {
            ok_json(serde_json::json!({ "ready": true }))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                serde_json::json!({ "ready": false }),
            )
        }
    }

    /// `GET /__ouli/sessions`.
    async fn sessions_answer(self: Arc<Self>, method: &Method) -> Response<ResponseBody> {
        if method != Method::GET {
            return method_not_allowed("sessions", method, "GET");
        }
        let server = self.clone();
        let reports = crate::record::off_executor(move || server.session_reports());
        let sessions: Vec<_> = reports.iter().map(|r| r.summary_json()).collect();
        ok_json(serde_json::json!({ "sessions": sessions }))
    }

    /// `GET /__ouli/sessions/<name>[?endpoint=N]`.
    async fn session_answer(
        self: Arc<Self>,
        path: &str,
        encoded: &str,
        method: &Method,
        query: Option<&str>,
    ) -> Response<ResponseBody> {
        if method != Method::GET {
            return method_not_allowed(path, method, "GET");
        }
        let name = match super::control::session_name(encoded) {
            Ok(name) => name,
            Err(message) => {
                return error_response(StatusCode::BAD_REQUEST, "client", "bad-test-name", message);
            }
        };
        let endpoint = match endpoint_of(query, self.endpoints.len()) {
            Ok(endpoint) => endpoint,
            Err(why) => return error_response(StatusCode::BAD_REQUEST, "client", "bad-query", why),
        };
        let server = self.clone();
        let lookup = name.clone();
        let reports = crate::record::off_executor(move || server.session_report(&lookup));
        match reports.into_iter().find(|r| r.endpoint == endpoint) {
            Some(report) => ok_json(report.detail_json()),
            None => error_response(
                StatusCode::NOT_FOUND,
                "client",
                "unknown-session",
                format!(
                    "session {name} has no recording in {} and no request of endpoint {endpoint} named it",
                    self.options.recording_dir.display()
                ),
            ),
        }
    }

    /// `GET`, `PUT /__ouli/mode`.
    async fn mode_answer(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let method = request.method().clone();
        if method == Method::GET {
            return ok_json(serde_json::json!({ "mode": self.admin.mode().as_str() }));
        }
        if method != Method::PUT {
            return method_not_allowed("mode", &method, "GET, PUT");
        }
        let body = match admin_body(request).await {
            Ok(body) => body,
            Err(refused) => return *refused,
        };
        let wanted = match body.get("mode").and_then(|m| m.as_str()) {
            Some("replay") => Mode::Replay,
            Some("record-missing") => Mode::RecordMissing,
            Some("passthrough") => Mode::Passthrough,
            other => {
                return bad_body(format!(
                    "{{\"mode\": …}} must be \"replay\", \"record-missing\" or \"passthrough\", not {}",
                    other.map_or_else(|| "missing".to_owned(), |m| format!("{m:?}"))
                ));
            }
        };
        match self.switch_mode(wanted) {
            Ok(previous) => ok_json(serde_json::json!({
                "mode": wanted.as_str(),
                "previous": previous.as_str(),
            })),
            Err(why) => error_response(StatusCode::CONFLICT, "client", "mode-not-switched", why),
        }
    }

    /// Switches to `wanted`, building its proxy side first if it needs one;
    /// returns the mode before. `Err`: why it cannot (409).
    fn switch_mode(&self, wanted: Mode) -> Result<Mode, String> {
        let _one = self
            .admin
            .switching
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let previous = self.admin.mode();
        if self.options.mode == Mode::Record {
            return Err("a record run does not switch modes (its recordings replace the old ones when it ends); start `ouli replay` or `ouli record-missing` to switch".into());
        }
        if wanted == previous {
            return Ok(previous);
        }
        if wanted != self.options.mode {
            match wanted {
                Mode::RecordMissing => {
                    writable_dir(&self.options.recording_dir)?;
                    if self.admin.record_missing.get().is_none() {
                        let proxy = self.build_proxy(Mode::RecordMissing)?;
                        let _ = self.admin.record_missing.set(proxy);
                    }
                }
                Mode::Passthrough => {
                    if self.admin.passthrough.get().is_none() {
                        let proxy = self.build_proxy(Mode::Passthrough)?;
                        let _ = self.admin.passthrough.set(proxy);
                    }
                }
                Mode::Replay | Mode::Record => {}
            }
        }
        if wanted == Mode::Replay {
            // What record-missing appended must answer now: replay does not
            // look for records appended since a session opened.
            self.refresh_sessions();
        }
        if matches!(wanted, Mode::Replay | Mode::RecordMissing) {
            self.admin.replayed.store(true, Ordering::Relaxed);
        }
        self.admin.mode.store(mode_to_u8(wanted), Ordering::Release);
        tracing::info!(
            "mode: {} -> {} (admin API)",
            previous.as_str(),
            wanted.as_str()
        );
        Ok(previous)
    }

    /// The upstream client and store of `mode`, as at start.
    fn build_proxy(&self, mode: Mode) -> Result<Proxy, String> {
        let config = &self.options.config;
        let secrets = crate::identity::configured_secrets(config).map_err(|e| e.to_string())?;
        let routes = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| super::Route::new(i, e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Server::proxy_side(&self.options, mode, routes, &secrets).map_err(|e| e.to_string())
    }

    /// Every open session sees the records appended since it opened.
    fn refresh_sessions(&self) {
        let live: Vec<_> = self
            .sessions
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (name, session) in live {
            session.reload(
                name.recording_path(&self.options.recording_dir),
                self.backend,
            );
        }
    }

    /// `GET`, `PUT`, `DELETE /__ouli/session`.
    async fn active_session_answer(
        &self,
        index: usize,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let method = request.method().clone();
        let now = |name: Option<&SessionName>| name.map(|n| n.as_str().to_owned());
        if method == Method::GET {
            let active = self.admin.active_session(index);
            return ok_json(serde_json::json!({ "name": now(active.as_ref()) }));
        }
        if method == Method::DELETE {
            let previous = self.admin.set_active_session(index, None);
            return ok_json(
                serde_json::json!({ "name": null, "previous": now(previous.as_ref()) }),
            );
        }
        if method != Method::PUT {
            return method_not_allowed("session", &method, "GET, PUT, DELETE");
        }
        let body = match admin_body(request).await {
            Ok(body) => body,
            Err(refused) => return *refused,
        };
        let Some(name) = body.get("name").and_then(|n| n.as_str()) else {
            return bad_body("the body must be {\"name\": \"<session>\"}".into());
        };
        let name = match SessionName::parse(name) {
            Ok(name) => name,
            Err(error) => {
                let message = self.endpoints[index]
                    .redactor
                    .redact_str(&error.to_string())
                    .into_owned();
                return error_response(StatusCode::BAD_REQUEST, "client", "bad-test-name", message);
            }
        };
        let answer = name.as_str().to_owned();
        let previous = self.admin.set_active_session(index, Some(name));
        ok_json(serde_json::json!({ "name": answer, "previous": now(previous.as_ref()) }))
    }
}

/// `?endpoint=N` (default 0), below the endpoint count.
fn endpoint_of(query: Option<&str>, endpoints: usize) -> Result<usize, String> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("endpoint="))
    else {
        return Ok(0);
    };
    match value.parse::<usize>() {
        Ok(n) if n < endpoints => Ok(n),
        _ => Err(format!(
            "endpoint={value:?}: expected an endpoint index below {endpoints}"
        )),
    }
}

/// The JSON object an admin request sends, at most
/// [`ADMIN_BODY_BYTES_MAX`] bytes.
async fn admin_body(
    request: Request<Incoming>,
) -> Result<serde_json::Value, Box<Response<ResponseBody>>> {
    let limited = http_body_util::Limited::new(request.into_body(), ADMIN_BODY_BYTES_MAX);
    let bytes: Bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(Box::new(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "client",
                "body-too-large",
                format!(
                    "an admin request's body is at most ADMIN_BODY_BYTES_MAX = {ADMIN_BODY_BYTES_MAX} bytes of JSON"
                ),
            )));
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(Box::new(bad_body("the body must be a JSON object".into()))),
    }
}

/// Whether record-missing could write in `dir`: created if missing, and a
/// file made and removed there.
fn writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let refused = |why: String| {
        format!(
            "record-missing needs a writable recording dir: {} {why}",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| refused(format!("cannot be created: {e}")))?;
    let probe = dir.join(format!(".ouli-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| refused(format!("is not writable: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `GET /__ouli/debug/pprof?seconds=N`: a CPU profile of the next N
/// seconds (at most `profile::PROFILE_SECONDS_MAX`).
#[cfg(feature = "profiling")]
async fn pprof_answer(_peer: Option<IpAddr>, query: Option<&str>) -> Response<ResponseBody> {
    // The gate has let this peer in (loopback, or the admin token): the
    // profile's own loopback check is for callers without one.
    let allowed = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    crate::profile::debug_pprof_response(allowed, query)
        .await
        .map(super::response::full)
}

#[cfg(not(feature = "profiling"))]
async fn pprof_answer(_peer: Option<IpAddr>, _query: Option<&str>) -> Response<ResponseBody> {
    error_response(
        StatusCode::NOT_FOUND,
        "client",
        "profiling-not-built",
        "this ouli was built without the `profiling` cargo feature: no CPU profile here (build with `cargo build --release --features profiling`)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    fn token(text: &str) -> AdminToken {
        let yaml = format!(
            "admin_token: {text}\nendpoints: [{{target_host: h, target_port: 1, source_port: 0}}]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        crate::config::Config::load(&path)
            .unwrap()
            .0
            .admin_token
            .unwrap()
    }

    #[test]
    fn loopback_peers_need_no_token_others_need_the_right_one() {
        let none = HeaderMap::new();
        let secret = token("s3cret");
        for loopback in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            let peer = Some(loopback.parse().unwrap());
            assert!(peer_may_use(peer, None, &none).is_ok(), "{loopback}");
        }
        let other = Some("192.0.2.7".parse().unwrap());
        assert!(peer_may_use(other, None, &bearer("s3cret")).is_err());
        assert!(peer_may_use(other, Some(&secret), &none).is_err());
        assert!(peer_may_use(other, Some(&secret), &bearer("s3cre")).is_err());
        assert!(peer_may_use(other, Some(&secret), &bearer("s3cret")).is_ok());
        // An unknown peer address is not loopback.
        assert!(peer_may_use(None, None, &none).is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"a"));
    }

    #[test]
    fn the_active_session_is_per_endpoint() {
        let state = AdminState::new(Mode::Replay, 2);
        assert!(state.active_session(0).is_none());
        let name = SessionName::parse("t/one").unwrap();
        assert!(state.set_active_session(1, Some(name.clone())).is_none());
        assert_eq!(state.active_session(1), Some(name.clone()));
        assert!(state.active_session(0).is_none());
        assert_eq!(state.set_active_session(1, None), Some(name));
        assert!(state.active_session(1).is_none());
    }

    #[test]
    fn modes_round_trip_through_the_atomic() {
        for mode in [
            Mode::Record,
            Mode::Replay,
            Mode::RecordMissing,
            Mode::Passthrough,
        ] {
            assert_eq!(mode_from_u8(mode_to_u8(mode)), mode);
        }
    }

    #[test]
    fn the_endpoint_query() {
        assert_eq!(endpoint_of(None, 1), Ok(0));
        assert_eq!(endpoint_of(Some("endpoint=1"), 2), Ok(1));
        assert!(endpoint_of(Some("endpoint=2"), 2).is_err());
        assert!(endpoint_of(Some("endpoint=x"), 2).is_err());
    }
}
