//! The upstream client of record and passthrough modes: connections to each
//! endpoint's upstream, http and https (rustls), trusting the system's CA
//! certificates plus `ca_file` and `SSL_CERT_FILE` (test-server's users
//! point it at a private CA).
//!
//! HTTP/1.1 by default. An https upstream is offered `h2` and `http/1.1` by
//! ALPN and spoken to in what it picks; a cleartext one with
//! `target_protocol: h2c` is spoken to in HTTP/2 with prior knowledge. An
//! HTTP/2 upstream gets one connection per endpoint, shared by every client
//! request ([`Upstream::send`]): its streams carry the requests side by side,
//! as many at once as the upstream's SETTINGS_MAX_CONCURRENT_STREAMS allows
//! (hyper queues the rest); when it closes, the next request opens another.
//!
//! A client connection keeps the upstream connection its last request used
//! ([`HeldConnection`]) and sends its next request on it: no pool lookup per
//! request. When the client connection closes, its upstream connection goes
//! to the endpoint's idle list for the next client connection. hyper-util's
//! pooled client did this with a lock and two SipHash lookups of the
//! (scheme, authority) key per request: 15 % of passthrough's user-space
//! instructions (rfcs/0003). deadpool would add the same per-request
//! checkout, so it is not used here.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The body of a request sent upstream: the client's body, collected
/// whole, in one frame, then the client's trailers (if it sent any) in a
/// trailers frame. Without trailers its length is exact, as `Full`'s is:
/// HTTP/1.1 sends it with a `content-length`. With trailers it has no
/// declared length: HTTP/1.1 sends it chunked, the only framing with room
/// for trailers (the caller names them in a `Trailer` header, without which
/// hyper writes none), HTTP/2 in a trailing HEADERS frame.
#[derive(Debug, Default)]
pub struct RequestBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl RequestBody {
    /// `data` (none when empty), then `trailers` (none when empty).
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> RequestBody {
        RequestBody {
            data: (!data.is_empty()).then_some(data),
            trailers: trailers.filter(|t| !t.is_empty()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.trailers.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Dials an upstream: TCP, then TLS for `https`.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// One upstream HTTP/1 connection's request side.
type Sender = SendRequest<RequestBody>;

/// An upstream HTTP/2 connection's request side (cloned for each request).
type H2Sender = hyper::client::conn::http2::SendRequest<RequestBody>;

/// A dialed upstream connection: TCP, TLS for `https`.
type Dialed = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// Idle upstream connections kept per endpoint, for client connections to come.
pub const IDLE_CONNECTIONS_PER_ENDPOINT_MAX: usize = 64;

/// An upstream connection idle longer than this is not reused: a NAT, load
/// balancer or firewall may have dropped it without a word, and a request
/// sent into it would wait for `upstream_response_timeout_ms`. 90 s, as
/// hyper-util's pool and Go's `http.Transport` (test-server's client).
pub const IDLE_REUSE_MAX: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("CA file {path}: {why}")]
    CaFile { path: PathBuf, why: String },
}

/// Why an upstream request failed (the upstream's fault, or the network's).
/// The causes are in the `source` chain ([`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request was written, and the connection closed before any
    /// answer: the upstream may have acted on it, and its method does not
    /// allow sending it again.
    #[error("no answer, and a {method} is not sent twice")]
    NotResent {
        method: http::Method,
        #[source]
        source: hyper::Error,
    },
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The upstream connections of a record or passthrough server.
pub struct Upstream {
    /// Offers `h2` and `http/1.1` by ALPN (requests).
    connector: Connector,
    /// Offers `http/1.1` only (WebSocket upgrades, which HTTP/2 does not
    /// carry here).
    connector_h1: Connector,
    /// Per endpoint: connections left by closed client connections.
    idle: Vec<Mutex<Vec<Parked>>>,
    /// Per endpoint: its upstream's HTTP/2 connection, once one is open.
    shared_h2: Vec<Mutex<Option<H2Sender>>>,
    /// Per endpoint: `target_protocol: h2c`.
    h2c: Vec<bool>,
}

/// A new upstream connection, in the protocol it speaks.
enum Connected {
    Http1(Sender),
    H2(H2Sender),
}

/// An upstream connection between two requests, and since when.
struct Parked {
    sender: Sender,
    since: Instant,
}

impl Parked {
    fn new(sender: Sender) -> Parked {
        Parked {
            sender,
            since: Instant::now(),
        }
    }

    /// Still open, and not idle for so long that the path to it may be gone.
    fn is_reusable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < IDLE_REUSE_MAX
    }

    fn reusable(self) -> Option<Sender> {
        self.is_reusable().then_some(self.sender)
    }
}

/// The upstream connection one client connection holds between its
/// requests (HTTP/1.1: one request at a time, so never contended). A client
/// connection that stays open keeps its upstream connection open too: an
/// upstream sees at most one connection per client connection of ouli's,
/// plus the idle ones.
#[derive(Default)]
pub struct HeldConnection(Mutex<Option<Parked>>);

impl HeldConnection {
    fn take(&self) -> Option<Sender> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .and_then(Parked::reusable)
    }

    fn put(&self, sender: Sender) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Parked::new(sender));
    }
}

impl Upstream {
    /// Sends the request `build` makes (origin-form URI, `Host` set) to the
    /// upstream at `upstream` (scheme and authority) of endpoint `endpoint`,
    /// on the connection `held` kept, else an idle one, else a new one.
    ///
    /// A reused connection may have been closed by the upstream just before
    /// (its idle timeout) without ouli having seen it yet. The request then
    /// goes on a new connection, once: when it comes back unsent, and when it
    /// was sent but the connection closed before any answer and the method is
    /// idempotent (RFC 9112 §9.3.1; Go's `http.Transport`, test-server's
    /// client, does the same). A non-idempotent request that may have reached
    /// the upstream is not sent twice: that is an error.
    ///
    /// An endpoint whose upstream speaks HTTP/2 sends on its shared
    /// connection instead, and on a new one when that one has closed and
    /// handed the request back unsent.
    pub async fn send(
        &self,
        endpoint: usize,
        upstream: &Uri,
        held: &HeldConnection,
        build: impl Fn() -> Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(mut shared) = self.shared_h2(endpoint) {
            match shared.try_send_request(as_h2(build(), upstream)).await {
                Ok(response) => return Ok(response),
                // Handed back unsent: the connection had closed.
                Err(mut error) => match error.take_message() {
                    Some(_) => self.forget_h2(endpoint),
                    None => return Err(error.into_error().into()),
                },
            }
        }
        let mut request = build();
        if let Some(mut sender) = held.take().or_else(|| self.take_idle(endpoint))
            && sender.ready().await.is_ok()
        {
            let method = request.method().clone();
            match sender.try_send_request(request).await {
                Ok(response) => {
                    held.put(sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None if error.error().is_incomplete_message() => {
                        if !method.is_idempotent() {
                            return Err(UpstreamError::NotResent {
                                method,
                                source: error.into_error(),
                            });
                        }
                        request = build();
                    }
                    None => return Err(error.into_error().into()),
                },
            }
        }
        // Boxed: the connect future (TCP, TLS, handshake) is large and rare;
        // inline, it would grow every client connection's idle state (hyper
        // keeps the service's future inline) by about 2 KB.
        match Box::pin(self.connect(endpoint, upstream)).await? {
            Connected::Http1(mut sender) => {
                let response = sender.send_request(request).await?;
                held.put(sender);
                Ok(response)
            }
            Connected::H2(mut sender) => {
                *self.shared_h2[endpoint]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
                Ok(sender.send_request(as_h2(request, upstream)).await?)
            }
        }
    }

    /// The endpoint's HTTP/2 connection, if one is open.
    fn shared_h2(&self, endpoint: usize) -> Option<H2Sender> {
        let shared = self.shared_h2[endpoint]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shared
            .as_ref()
            .filter(|sender| !sender.is_closed())
            .cloned()
    }

    fn forget_h2(&self, endpoint: usize) {
        let mut shared = self.shared_h2[endpoint]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shared.as_ref().is_some_and(H2Sender::is_closed) {
            *shared = None;
        }
    }

    /// A client connection of `endpoint` closed: its upstream connection,
    /// if still reusable, waits for the next one.
    pub fn release(&self, endpoint: usize, held: &HeldConnection) {
        let Some(sender) = held.take() else {
            return;
        };
        let mut idle = self.idle[endpoint]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= IDLE_CONNECTIONS_PER_ENDPOINT_MAX {
            // Make room from connections closed or gone stale since.
            idle.retain(Parked::is_reusable);
        }
        if idle.len() < IDLE_CONNECTIONS_PER_ENDPOINT_MAX {
            idle.push(Parked::new(sender));
        }
    }

    fn take_idle(&self, endpoint: usize) -> Option<Sender> {
        let mut idle = self.idle[endpoint]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(parked) = idle.pop() {
            if let Some(sender) = parked.reusable() {
                return Some(sender);
            }
        }
        None
    }

    /// Sends a WebSocket upgrade request (origin-form URI, `Host` set) on a
    /// new connection of its own, served with upgrades: once upgraded it
    /// carries frames, never another request, so it is neither held nor
    /// parked. `hyper::upgrade::on` of the `101` answer gives its IO.
    pub async fn upgrade(
        &self,
        upstream: &Uri,
        request: Request<http_body_util::Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let io = Box::pin(self.dial(&self.connector_h1, upstream)).await?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!("upstream upgrade connection ended: {error}");
            }
        });
        Ok(sender.send_request(request).await?)
    }

    /// TCP, then TLS for `https`.
    async fn dial(&self, connector: &Connector, upstream: &Uri) -> Result<Dialed, UpstreamError> {
        let mut connector = connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut connector, cx))
            .await
            .map_err(UpstreamError::Connect)?;
        tower_service::Service::call(&mut connector, upstream.clone())
            .await
            .map_err(UpstreamError::Connect)
    }

    /// A new connection: HTTP/2 when TLS negotiated `h2` or the endpoint
    /// is h2c, else HTTP/1.1.
    async fn connect(&self, endpoint: usize, upstream: &Uri) -> Result<Connected, UpstreamError> {
        let io = self.dial(&self.connector, upstream).await?;
        if io.connected().is_negotiated_h2() || self.h2c[endpoint] {
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .timer(hyper_util::rt::TokioTimer::new())
                    .handshake(io)
                    .await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!("upstream HTTP/2 connection ended: {error}");
                }
            });
            return Ok(Connected::H2(sender));
        }
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!("upstream connection ended: {error}");
            }
        });
        Ok(Connected::Http1(sender))
    }
}

/// An origin-form request with `Host` (HTTP/1's shape) in HTTP/2's: the
/// target absolute (`:scheme`, `:authority`, `:path`), the authority the
/// `Host` that would have been sent, and no `Host` field beside it.
fn as_h2(mut request: Request<RequestBody>, upstream: &Uri) -> Request<RequestBody> {
    let host = request.headers_mut().remove(http::header::HOST);
    let authority = host
        .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
        .or_else(|| upstream.authority().cloned());
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = upstream.scheme().cloned();
    parts.authority = authority;
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
    request
}

/// Builds the upstream client of `endpoints` endpoints. `ca_files` are PEM
/// bundles added to the roots.
pub fn build_client(
    ca_files: &[PathBuf],
    connect_timeout: Duration,
    protocols: &[crate::config::TargetProtocol],
) -> Result<Upstream, UpstreamSetupError> {
    let endpoints = protocols.len();
    let mut roots = rustls::RootCertStore::empty();
    add_system_roots(&mut roots);
    for path in ca_files {
        add_pem(&mut roots, path)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpstreamSetupError::CaFile {
        path: PathBuf::new(),
        why: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http.clone());
    let connector_h1 = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Upstream {
        connector,
        connector_h1,
        idle: (0..endpoints).map(|_| Mutex::default()).collect(),
        shared_h2: (0..endpoints).map(|_| Mutex::default()).collect(),
        h2c: protocols
            .iter()
            .map(|protocol| *protocol == crate::config::TargetProtocol::H2c)
            .collect(),
    })
}

/// The system's CA certificates (`/etc/ssl/certs` and the like, or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`): what test-server, a Go program, trusts.
/// Unreadable ones are logged and skipped; none at all is said once, at
/// start, not at the first HTTPS request.
fn add_system_roots(roots: &mut rustls::RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("system CA certificates: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found (install ca-certificates, or set ca_file or SSL_CERT_FILE): HTTPS upstreams will be refused"
        );
    }
}

/// The CA files to trust: the configured one and `SSL_CERT_FILE`.
pub fn ca_files(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = configured.map(Path::to_path_buf).into_iter().collect();
    if let Some(env) = std::env::var_os("SSL_CERT_FILE") {
        files.push(PathBuf::from(env));
    }
    files
}

fn add_pem(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), UpstreamSetupError> {
    let err = |why: String| UpstreamSetupError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut added = 0;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(())
}
