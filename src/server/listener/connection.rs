//! One client connection, from its first byte to its close: TLS when the
//! endpoint is `source_type: https`, then HTTP/1.1 or HTTP/2 on the same
//! port. Over TLS the protocol is the one ALPN chose (`h2`, else
//! HTTP/1.1); over cleartext a connection that opens with the 24-byte
//! HTTP/2 preface is h2c with prior knowledge, any other is HTTP/1.
//!
//! Both protocols end in the same `Server::handle`: an HTTP/2 request is
//! first put in HTTP/1's shape ([`normalise_h2`]: `:authority` becomes the
//! `Host` header, the target is origin-form), so that the same request gets
//! the same fingerprint whichever protocol carried it, and a recording made
//! over one replays over the other.

use super::super::metrics::{CountedBody, OpenConnection};
use super::super::protocol_errors::{
    ConnectionState, HeadLimits, ProtocolErrorIo, connection_ended,
};
use super::super::response::{ResponseBody, error_response};
use super::super::{ServeOptions, Server};
use crate::upstream::HeldConnection;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub(super) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Pause between two looks at a connection whose first bytes are the start
/// of the HTTP/2 preface but not all of it yet (a client writes the preface
/// at once: this is the rare split case, bounded by the head's timeout).
const PREFACE_POLL: Duration = Duration::from_millis(2);

/// What a connection is served with, and what it needs.
pub(super) struct Connection {
    pub server: Arc<Server>,
    pub index: usize,
    pub options: Arc<ServeOptions>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub stop: watch::Receiver<bool>,
    /// The client's address (the profile path answers loopback only).
    pub peer: Option<std::net::IpAddr>,
}

/// What a cleartext connection opened with.
enum Opening {
    H2,
    Http1,
    /// Nothing (or half a preface) within the head's timeout, or closed.
    Silent,
}

impl Connection {
    /// Serves `stream` until it closes or the server stops.
    pub(super) async fn serve(self, stream: TcpStream) {
        let _open = OpenConnection::new(self.server.metrics.clone(), self.index);
        let timeout = Duration::from_millis(self.options.config.limits.header_read_timeout_ms);
        let Some(acceptor) = self.tls.clone() else {
            match opening(&stream, timeout).await {
                Opening::H2 => self.serve_h2(TokioIo::new(stream)).await,
                Opening::Http1 => self.serve_h1_cleartext(stream).await,
                Opening::Silent => {}
            }
            return;
        };
        // The handshake is part of the head: a client that connects and
        // never finishes it is dropped after the same time.
        let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!("endpoint {}: TLS handshake failed: {error}", self.index);
                return;
            }
            Err(_) => {
                tracing::debug!(
                    "endpoint {}: TLS handshake not done within limits.header_read_timeout_ms",
                    self.index
                );
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            self.serve_h2(TokioIo::new(tls)).await;
        } else {
            self.serve_h1(TokioIo::new(tls), None).await;
        }
    }

    /// HTTP/1 on a cleartext socket, whose errors ouli answers itself
    /// (`protocol_errors.rs`).
    async fn serve_h1_cleartext(self, mut stream: TcpStream) {
        let limits = &self.options.config.limits;
        let mut prefix = (Bytes::new(), true);
        if super::replay_lane::serves(&self.server, self.index) {
            let lane = super::replay_lane::Lane::new(&self.server, self.index, limits);
            let mut stop = self.stop.clone();
            match lane.serve(&mut stream, &mut stop).await {
                super::replay_lane::LaneEnd::Closed => return,
                super::replay_lane::LaneEnd::HandOff(read, after_answer) => {
                    prefix = (read, after_answer);
                }
            }
        }
        let protocol = Arc::new(ConnectionState::default());
        let io = ProtocolErrorIo::new(stream, prefix, protocol.clone(), limits.header_bytes_max);
        self.serve_h1(TokioIo::new(io), Some(protocol)).await;
    }

    /// HTTP/1.1 (and 1.0), with upgrades (WebSocket). `protocol` is the
    /// cleartext socket's error state; over TLS hyper's own error answers
    /// go out as they are.
    async fn serve_h1<I>(self, io: I, protocol: Option<Arc<ConnectionState>>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let limits = &self.options.config.limits;
        let held = self
            .server
            .upstream()
            .is_some()
            .then(|| Arc::new(HeldConnection::default()));
        let service = {
            let server = self.server.clone();
            let held = held.clone();
            let protocol = protocol.clone();
            let index = self.index;
            let peer = self.peer;
            hyper::service::service_fn(move |request| {
                if let Some(protocol) = &protocol {
                    protocol.served();
                }
                let server = server.clone();
                let held = held.clone();
                async move {
                    let metrics = server.metrics.clone();
                    let response = answer(server, index, request, held.as_deref(), peer).await;
                    Ok::<_, Infallible>(response.map(|b| CountedBody::new(b, metrics, index)))
                }
            })
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
            .max_headers(limits.header_count_max)
            // The head's exact bound (request line, headers, blank line);
            // the buffer only bounds one read.
            .max_header_size(limits.header_bytes_max)
            .max_buf_size(limits.header_bytes_max.max(8192))
            // A client that shuts its sending side after its request still
            // gets the answer.
            .half_close(true);
        let head_limits = HeadLimits {
            header_bytes_max: limits.header_bytes_max,
            header_count_max: limits.header_count_max,
            header_read_timeout_ms: limits.header_read_timeout_ms,
        };
        let connection = builder.serve_connection(io, service).with_upgrades();
        let mut stop = self.stop.clone();
        let ended = {
            let mut connection = std::pin::pin!(connection);
            let ended =
                until_stopped(connection.as_mut(), &mut stop, |c| c.graceful_shutdown()).await;
            // Before the connection (and its socket) is dropped: the socket
            // writes the answer hyper did not.
            if let (Err(error), Some(protocol)) = (&ended, &protocol) {
                connection_ended(protocol, error, &head_limits);
            }
            ended
        };
        if let Err(error) = ended {
            tracing::debug!("connection ended: {error}");
        }
        if let (Some(upstream), Some(held)) = (self.server.upstream(), &held) {
            upstream.release(self.index, held);
        }
    }

    /// HTTP/2, cleartext (prior knowledge) or over TLS. Streams run
    /// concurrently, each on its own task, up to
    /// `limits.h2_max_concurrent_streams`.
    async fn serve_h2<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let limits = &self.options.config.limits;
        let service = {
            let server = self.server.clone();
            let index = self.index;
            let header_count_max = limits.header_count_max;
            let peer = self.peer;
            hyper::service::service_fn(move |request| {
                let server = server.clone();
                async move {
                    let metrics = server.metrics.clone();
                    let response =
                        answer_h2(server, index, request, (header_count_max, peer)).await;
                    Ok::<_, Infallible>(response.map(|b| CountedBody::new(b, metrics, index)))
                }
            })
        };
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(limits.h2_max_header_list_bytes)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams);
        let connection = builder.serve_connection(io, service);
        let mut stop = self.stop.clone();
        let mut connection = std::pin::pin!(connection);
        // GOAWAY on stop: streams in flight finish, no new ones start.
        let ended = until_stopped(connection.as_mut(), &mut stop, |c| c.graceful_shutdown()).await;
        if let Err(error) = ended {
            tracing::debug!("HTTP/2 connection ended: {error}");
        }
    }
}

/// Runs `connection` to its end; when the server stops first, asks it to
/// finish what is in flight (`shutdown`) and waits for that.
async fn until_stopped<C>(
    mut connection: Pin<&mut C>,
    stop: &mut watch::Receiver<bool>,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        ended = connection.as_mut() => ended,
        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            shutdown(connection.as_mut());
            connection.await
        }
    }
}

/// Looks at a cleartext connection's first bytes without taking them: the
/// HTTP/2 preface, or anything else (HTTP/1's request line).
async fn opening(stream: &TcpStream, timeout: Duration) -> Opening {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(seen)) => seen,
            Ok(Err(_)) | Err(_) => return Opening::Silent,
        };
        if seen == 0 {
            return Opening::Silent;
        }
        if first[..seen] != H2_PREFACE[..seen] {
            return Opening::Http1;
        }
        if seen == H2_PREFACE.len() {
            return Opening::H2;
        }
        if tokio::time::Instant::now() + PREFACE_POLL >= deadline {
            return Opening::Silent;
        }
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// One request of either protocol, to `Server::handle`, or under
/// `/__ouli/` to `Server::admin`.
async fn answer(
    server: Arc<Server>,
    index: usize,
    request: Request<Incoming>,
    held: Option<&HeldConnection>,
    peer: Option<std::net::IpAddr>,
) -> Response<ResponseBody> {
    // The admin API decides by the peer (`admin.rs`).
    if request
        .uri()
        .path()
        .starts_with(super::super::CONTROL_PREFIX)
    {
        return server.admin(index, request, held, peer).await;
    }
    server.handle(index, request, held).await
}

/// One HTTP/2 stream. In proxy modes it takes an upstream connection of its
/// own for its request (streams run at once; HTTP/1's one held connection
/// per client connection would be contended), and gives it back to the
/// endpoint's idle list when its response body is done.
async fn answer_h2(
    server: Arc<Server>,
    index: usize,
    mut request: Request<Incoming>,
    (header_count_max, peer): (usize, Option<std::net::IpAddr>),
) -> Response<ReleaseOnEnd> {
    if request.headers().len() > header_count_max {
        let response = error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "client",
            "headers-too-large",
            format!(
                "the request has {} header fields; limits.header_count_max = {header_count_max}",
                request.headers().len()
            ),
        );
        return response.map(|body| ReleaseOnEnd { body, held: None });
    }
    normalise_h2(&mut request);
    let held = server.upstream().is_some().then(HeldConnection::default);
    let response = answer(server.clone(), index, request, held.as_ref(), peer).await;
    response.map(|body| ReleaseOnEnd {
        body,
        held: held.map(|held| (server, index, held)),
    })
}

/// Puts an HTTP/2 request in the shape HTTP/1 gives it: the `:authority`
/// pseudo-header becomes `Host` (replacing one the client also sent: RFC
/// 9113 §8.3.1 makes `:authority` the one that counts), and the target is
/// origin-form. `te: trailers`, the one hop-by-hop field HTTP/2 allows, is
/// left to the same rules as HTTP/1's hop-by-hop fields (never matched,
/// never forwarded).
pub(super) fn normalise_h2<B>(request: &mut Request<B>) {
    let uri = request.uri().clone();
    if let Some(authority) = uri.authority()
        && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, host);
    }
    if let Some(path_and_query) = uri.path_and_query() {
        *request.uri_mut() = http::Uri::from(path_and_query.clone());
    }
}

/// An HTTP/2 stream's response body, which gives the stream's upstream
/// connection back when it is dropped: by then the upstream's response has
/// been read to its end (or abandoned, and the connection is not reused).
pub(super) struct ReleaseOnEnd {
    body: ResponseBody,
    held: Option<(Arc<Server>, usize, HeldConnection)>,
}

impl Drop for ReleaseOnEnd {
    fn drop(&mut self) {
        if let Some((server, index, held)) = &self.held
            && let Some(upstream) = server.upstream()
        {
            upstream.release(*index, held);
        }
    }
}

impl hyper::body::Body for ReleaseOnEnd {
    type Data = Bytes;
    type Error = super::super::response::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2_request_gets_http1_s_host_and_origin_form_target() {
        let mut request = Request::builder()
            .uri("https://example.test:8443/v1/items?b=2&a=1")
            .header("host", "other.test")
            .body(())
            .unwrap();
        normalise_h2(&mut request);
        assert_eq!(request.uri(), "/v1/items?b=2&a=1");
        assert_eq!(request.headers()["host"], "example.test:8443");
        assert_eq!(request.headers().get_all("host").iter().count(), 1);
    }
}
