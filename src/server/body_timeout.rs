//! Time limits on bodies in flight. A request body must arrive whole within
//! `limits.request_body_timeout_ms`, with no gap longer than
//! `limits.request_body_idle_timeout_ms` (the wait for its first bytes
//! included): else 408 `body-timeout` and the connection is closed. An
//! upstream answer's body may pause at most
//! `limits.upstream_body_idle_timeout_ms` between chunks: else it is cut, and
//! the client, which already has the head, sees its connection end early.

use super::response::{BoxError, ResponseBody, error_response};
use crate::config::Limits;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The collect stage: a body declared longer than
/// `limits.request_body_bytes_max` is refused at once (the client may wait
/// for the answer before sending it); else the head, and the body collected
/// by [`collect_request_body`]; trailers it ended with go into the head's
/// extensions (`trailers::RequestTrailers`).
pub(super) async fn collect<B>(
    request: http::Request<B>,
    limits: &Limits,
) -> Result<(http::request::Parts, Bytes), Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let limit = limits.request_body_bytes_max;
    if request.body().size_hint().lower() > limit as u64 {
        return Err(super::body_too_large(limit));
    }
    let (mut parts, body) = request.into_parts();
    let grpc = super::response::is_grpc(&parts.headers);
    let (body, trailers) = collect_request_body(body, limits, grpc).await?;
    if let Some(trailers) = trailers.and_then(super::trailers::RequestTrailers::bounded) {
        parts.extensions.insert(trailers);
    }
    Ok((parts, body))
}

/// The request body, collected under `limits.request_body_bytes_max` and
/// both time limits, and the trailers it ended with; the refusal, ready to
/// send, when it breaks one (to a gRPC call, `grpc`, a time limit is
/// answered as a gRPC status: [`grpc_timed_out`]).
pub(super) async fn collect_request_body<B>(
    body: B,
    limits: &Limits,
    grpc: bool,
) -> Result<(Bytes, Option<HeaderMap>), Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    // Most requests have no body: no timer, no buffer.
    if body.is_end_stream() {
        return Ok((Bytes::new(), None));
    }
    let size_max = limits.request_body_bytes_max;
    let idle = Duration::from_millis(limits.request_body_idle_timeout_ms);
    let deadline = Instant::now() + Duration::from_millis(limits.request_body_timeout_ms);
    let mut body = Limited::new(body, size_max);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut trailers = None;
    while !body.is_end_stream() {
        let wait_until = (Instant::now() + idle).min(deadline);
        let frame = match tokio::time::timeout_at(wait_until, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(body_error(&error, size_max)),
            Err(_elapsed) if grpc => return Err(grpc_timed_out(limits)),
            Err(_elapsed) => return Err(timed_out(Instant::now() >= deadline, limits)),
        };
        match frame.into_data() {
            Ok(data) if !data.is_empty() => chunks.push(data),
            Ok(_) => {}
            // A body ends with one trailers frame at most.
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((join(chunks), trailers))
}

/// One chunk as it came (no copy), more joined.
fn join(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() <= 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in &chunks {
        joined.extend_from_slice(chunk);
    }
    joined.freeze()
}

fn body_error(error: &BoxError, size_max: usize) -> Response<ResponseBody> {
    if error
        .downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        return super::body_too_large(size_max);
    }
    error_response(
        StatusCode::BAD_REQUEST,
        "client",
        "bad-body",
        error.to_string(),
    )
}

/// 408, and the connection closed: what is left of the body would otherwise
/// be read as the next request.
fn timed_out(deadline_passed: bool, limits: &Limits) -> Response<ResponseBody> {
    let message = if deadline_passed {
        format!(
            "request body not complete within limits.request_body_timeout_ms = {} ms",
            limits.request_body_timeout_ms
        )
    } else {
        format!(
            "no request body bytes for limits.request_body_idle_timeout_ms = {} ms",
            limits.request_body_idle_timeout_ms
        )
    };
    tracing::info!("{message}: answered 408, connection closed");
    let mut response = error_response(
        StatusCode::REQUEST_TIMEOUT,
        "client",
        "body-timeout",
        message,
    );
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A gRPC call whose request stream did not end in time. ouli needs a
/// call's request messages whole (the client half-closed) before it
/// forwards or replays the call, so a bidirectional call whose client
/// waits for an answer before it sends its last message can never end
/// its stream here: the client gets `UNIMPLEMENTED` naming that
/// limitation (and the limit that ended the wait), a status it reads as
/// the call's, not a 408 it would report as a transport failure.
fn grpc_timed_out(limits: &Limits) -> Response<ResponseBody> {
    use super::response::{grpc_code, grpc_status_response};
    let message = format!(
        "ouli needs a gRPC call's request stream whole (half-closed) before it forwards or \
         replays the call: this one did not end within limits.request_body_idle_timeout_ms = \
         {} ms (or request_body_timeout_ms = {} ms). A bidirectional call whose client waits \
         for answers before it half-closes cannot go through ouli",
        limits.request_body_idle_timeout_ms, limits.request_body_timeout_ms
    );
    tracing::info!("{message}: answered grpc-status 12");
    let mut response = grpc_status_response(
        grpc_code::UNIMPLEMENTED,
        "grpc-stream-not-half-closed",
        &message,
    );
    // Over HTTP/1.1, what is left of the body would be read as the next
    // request (HTTP/2 ends the stream alone; hyper drops this header there).
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// An upstream answer's body went quiet for longer than its limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "upstream {upstream}: no response body bytes for {idle_ms} ms (limits.upstream_body_idle_timeout_ms)"
)]
pub struct UpstreamBodyIdle {
    pub upstream: String,
    pub idle_ms: u64,
}

/// An upstream body that fails with [`UpstreamBodyIdle`] once it has kept
/// ouli waiting `idle` for its next frame. Only time spent waiting on the
/// upstream counts: a client slow to take a frame does not, since the clock
/// starts when the upstream has nothing ready.
pub(super) struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Made at the first wait only: a body whose frames are always ready
    /// never touches the timer.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    upstream: http::uri::Authority,
    failed: bool,
}

impl<B> IdleTimeout<B> {
    pub(super) fn new(inner: B, idle: Duration, upstream: http::uri::Authority) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            waiting: false,
            upstream,
            failed: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        let idle = this.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if !this.waiting {
            // The upstream has nothing ready: its silence starts now.
            this.waiting = true;
            timer.as_mut().reset(Instant::now() + idle);
        }
        ready!(timer.as_mut().poll(cx));
        this.failed = true;
        let error = UpstreamBodyIdle {
            upstream: this.upstream.to_string(),
            idle_ms: idle.as_millis() as u64,
        };
        tracing::warn!("{error}: the answer to the client is cut, and not recorded");
        Poll::Ready(Some(Err(error.into())))
    }

    fn is_end_stream(&self) -> bool {
        !self.failed && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn limits(request_body_bytes_max: usize) -> Limits {
        Limits {
            request_body_bytes_max,
            ..Limits::default()
        }
    }

    #[tokio::test]
    async fn collect_refuses_a_declared_length_over_the_limit_and_joins_the_rest() {
        let over = http::Request::post("/").body(Full::new(Bytes::from_static(b"12345")));
        let refused = collect(over.unwrap(), &limits(4)).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // Sent in two frames, with no length declared: joined.
        let frames = futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
        ]);
        let request = http::Request::put("/x?q=1")
            .body(StreamBody::new(frames))
            .unwrap();
        let (parts, body) = collect(request, &limits(4)).await.unwrap();
        assert!(super::super::trailers::RequestTrailers::of(&parts).is_none());
        assert_eq!((parts.method, parts.uri.path()), (http::Method::PUT, "/x"));
        assert_eq!(&body[..], b"abcd");
    }

    #[tokio::test]
    async fn collect_keeps_the_trailers_a_body_ended_with_in_the_head() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("c0ffee"));
        let frames = futures_util::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let request = http::Request::post("/")
            .body(StreamBody::new(frames))
            .unwrap();
        let (parts, body) = collect(request, &limits(4)).await.unwrap();
        assert_eq!(&body[..], b"ab");
        let kept = super::super::trailers::RequestTrailers::of(&parts).unwrap();
        assert_eq!(kept["x-checksum"], "c0ffee");
    }
}
