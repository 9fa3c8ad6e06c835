//! Replay: a recorded answer leaves as status, headers and body read from the
//! mapped record: the body and every header value are `Bytes` slices of the
//! map, handed to hyper without a copy.
//!
//! The body goes as the chunks it was recorded in, one frame each (an SSE
//! event recorded as one chunk stays one chunk on the wire), paced by
//! `replay_timing`: paced, the head waits for the recorded time to first
//! byte and each chunk for its offset after the head. Its framing is the
//! recorded one: an answer recorded with a `Content-Length` keeps a length
//! (hyper sets it from the exact size hint); one recorded chunked, or an
//! event stream recorded without a length, is sent chunked. Recorded
//! trailers follow the last chunk, to a client that takes them
//! (`trailers.rs`): chunked then, as trailers need. An empty or one-chunk
//! body with no pacing and no trailers is one `Full` frame, as cheap as an
//! answer can be; only a paced answer has a timer.

use super::response::{ResponseBody, error_response, full};
use super::websocket;
use super::{Admitted, Endpoint, Server};
use crate::config::ReplayTiming;
use crate::recording::{RecordLocation, RecordView, Recording};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// Headers never replayed: hop-by-hop ones, and the length/encoding of a body
/// that is stored decoded (hyper sets the true length; the encoding of a body
/// stored as it came is replayed, see `serve_record`).
pub(super) const HEADERS_NOT_REPLAYED: &[&str] = &[
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

/// Request header choosing this answer's `replay_timing` (same values as the
/// config key); volatile, as every `x-ouli-` header, so never in identity.
pub const REPLAY_TIMING_HEADER: &str = "x-ouli-replay-timing";
/// Looked up by name, not by string: the probe every replayed request makes
/// then hashes the name without parsing it first.
const REPLAY_TIMING_HEADER_NAME: HeaderName = HeaderName::from_static(REPLAY_TIMING_HEADER);

/// Longest single wait before a replayed chunk. A recorded gap is at most
/// `limits.upstream_body_idle_timeout_ms` (60 s by default; a longer one ends
/// the recording), so this bounds only a damaged offset or a large scale
/// factor: neither can hold a connection for longer per chunk.
pub const REPLAY_GAP_MAX: Duration = Duration::from_secs(60);

/// What shapes one replayed answer besides its record.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReplayAnswer {
    /// A `HEAD` request: no body; the recorded `Content-Length` is kept.
    pub head: bool,
    pub timing: ReplayTiming,
    /// The client takes trailers (`trailers::client_takes_trailers`).
    pub trailers: bool,
}

/// How long the head of an answer recorded with a time to first byte of
/// `head_offset_us` waits under `timing` (at most [`REPLAY_GAP_MAX`]).
pub(super) fn head_wait(head_offset_us: u64, timing: ReplayTiming) -> Duration {
    timing
        .scale()
        .map_or(Duration::ZERO, |scale| gap(0, head_offset_us, scale))
}

/// The request's `x-ouli-replay-timing`, else its endpoint's setting;
/// `Err(why)` for a value that is not one ([`bad_replay_timing`]).
pub(super) fn replay_timing(
    endpoint: &Endpoint,
    headers: &HeaderMap,
) -> Result<ReplayTiming, String> {
    let Some(value) = headers.get(&REPLAY_TIMING_HEADER_NAME) else {
        return Ok(endpoint.replay_timing);
    };
    value
        .to_str()
        .map_err(|_| "not ASCII text".to_owned())
        .and_then(ReplayTiming::parse)
        .map_err(|why| format!("{REPLAY_TIMING_HEADER}: {why}"))
}

/// A bad `x-ouli-replay-timing`: the client's 400 `bad-replay-timing`.
pub(super) fn bad_replay_timing(why: String) -> Response<ResponseBody> {
    error_response(StatusCode::BAD_REQUEST, "client", "bad-replay-timing", why)
}

impl Server {
    /// The recorded answer; paced (`answer.timing`), it is returned once
    /// its recorded time to first byte has passed, so that its head leaves
    /// then.
    pub(super) async fn serve_record(
        &self,
        view: Result<RecordView, crate::recording::RecordingError>,
        answer: ReplayAnswer,
    ) -> Response<ResponseBody> {
        if let Ok(view) = &view {
            let wait = head_wait(view.response_head_offset_us(), answer.timing);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.serve_record_now(view, answer)
    }

    fn serve_record_now(
        &self,
        view: Result<RecordView, crate::recording::RecordingError>,
        answer: ReplayAnswer,
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
        let mut headers = HeaderMap::with_capacity(16);
        let framing = copy_headers(&view, &mut headers, answer.head);
        let trailers = match answer.trailers && !answer.head {
            true => super::trailers::replayed(view.response_trailers_shared()),
            false => None,
        };
        let trailers = trailers.map(|(trailers, announce)| {
            // hyper writes only the trailer fields the head announces.
            headers.insert(http::header::TRAILER, announce);
            trailers
        });
        let body = if answer.head {
            // hyper sends no body for HEAD, and keeps the length set above.
            full(Bytes::new())
        } else {
            replay_body(&view, framing, answer.timing, trailers)
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(view.response_status()).unwrap_or(StatusCode::OK);
        *response.headers_mut() = headers;
        response
    }
}

/// How the recorded answer was framed, as far as replay keeps it.
#[derive(Clone, Copy, Debug, Default)]
struct Framing {
    content_length: bool,
    chunked: bool,
    event_stream: bool,
}

impl Framing {
    /// Sent with a length unless recorded without one and chunked (or as
    /// an event stream, whose end is not known in advance).
    fn keeps_length(self) -> bool {
        self.content_length || !(self.chunked || self.event_stream)
    }
}

/// Copies the replayed headers into `headers` (values stay in the map) and
/// notes the recorded framing. For `head`, the recorded `Content-Length` is
/// kept: there is no body for hyper to measure. The length and transfer
/// headers are among those not replayed: a replayed header costs one more
/// comparison (is it the content type) than it did before.
fn copy_headers(view: &RecordView, headers: &mut HeaderMap, head: bool) -> Framing {
    let mut framing = Framing::default();
    for (name, value) in view.response_headers_shared() {
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        if HEADERS_NOT_REPLAYED.contains(&name.as_str()) {
            if name == http::header::CONTENT_LENGTH {
                framing.content_length = true;
            } else if name == http::header::TRANSFER_ENCODING {
                framing.chunked |= contains_token(&value, b"chunked");
            }
            // A body ouli could not decode is stored as it came, and its
            // `content-encoding` (the original encoding is then empty) is
            // replayed with it.
            let replayed = (name == http::header::CONTENT_ENCODING
                && view.response_original_encoding().is_empty())
                || (head && name == http::header::CONTENT_LENGTH);
            if !replayed {
                continue;
            }
        } else if name == http::header::CONTENT_TYPE {
            framing.event_stream |= contains_token(&value, b"text/event-stream");
        }
        // Zero-copy: the value stays in the mapped record.
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            headers.append(name, value);
        }
    }
    framing
}

/// Whether a comma-separated header value holds `token` (ASCII case
/// ignored), as in `gzip, chunked` or `text/event-stream; charset=utf-8`.
fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',' || b == b';').any(|part| {
        let part = part.trim_ascii();
        part.eq_ignore_ascii_case(token)
    })
}

/// The body: one `Full` frame when there is nothing to pace, split or
/// follow, else the recorded chunks one by one, then the trailers if any
/// (chunked: a length leaves no room for trailers in HTTP/1.1).
fn replay_body(
    view: &RecordView,
    framing: Framing,
    timing: ReplayTiming,
    trailers: Option<HeaderMap>,
) -> ResponseBody {
    let mut chunks = view.response_chunks();
    let mut first = chunks.next();
    let more = chunks.next();
    let scale = timing.scale();
    if trailers.is_none() {
        // An empty body has nothing to pace (and hyper sends a zero length
        // for it whatever the framing); one chunk unpaced with a length is
        // one frame.
        if first.is_none() {
            return full(Bytes::new());
        }
        if framing.keeps_length()
            && scale.is_none()
            && more.is_none()
            && let Some((_, data)) = first.take()
        {
            return full(data);
        }
    }
    let collected: Vec<(u64, Bytes)> = first.into_iter().chain(more).chain(chunks).collect();
    ChunkedReplay {
        remaining: view.response_body_len(),
        exact_length: framing.keeps_length() && trailers.is_none(),
        chunks: collected.into_iter(),
        pacing: scale.map(Pacing::new),
        trailers,
    }
    .map_err(|never| match never {})
    .boxed_unsync()
}

/// The recorded chunks as body frames, in order, each a slice of the map.
struct ChunkedReplay {
    chunks: std::vec::IntoIter<(u64, Bytes)>,
    /// Bytes not yet sent, for the size hint.
    remaining: u64,
    /// Recorded with a length: the size hint is exact, so hyper sends one.
    exact_length: bool,
    pacing: Option<Pacing>,
    /// Sent after the last chunk (taken then).
    trailers: Option<HeaderMap>,
}

/// Waits before each chunk so that it leaves at its recorded offset (scaled)
/// from the first poll (when hyper has written the head). Deadlines add up
/// gap by gap, so a late poll does not delay the chunks after it.
struct Pacing {
    scale: f64,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The deadline of the last chunk (armed or sent); `None` before the first.
    deadline: Option<tokio::time::Instant>,
    last_offset_us: u64,
    /// The sleep is set for the next chunk.
    armed: bool,
}

impl Pacing {
    fn new(scale: f64) -> Pacing {
        Pacing {
            scale,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            deadline: None,
            last_offset_us: 0,
            armed: false,
        }
    }

    /// Ready once the chunk recorded at `offset_us` is due.
    fn poll_due(&mut self, offset_us: u64, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let gap = gap(self.last_offset_us, offset_us, self.scale);
            let deadline = self.deadline.unwrap_or_else(tokio::time::Instant::now) + gap;
            self.sleep.as_mut().reset(deadline);
            self.deadline = Some(deadline);
            self.last_offset_us = offset_us;
            self.armed = true;
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.armed = false;
        Poll::Ready(())
    }
}

/// The wait between chunks recorded at `previous_us` and `offset_us`, times
/// `scale`: none for a damaged (decreasing) offset, at most
/// [`REPLAY_GAP_MAX`] for a huge one.
pub(super) fn gap(previous_us: u64, offset_us: u64, scale: f64) -> Duration {
    let gap_us = offset_us.saturating_sub(previous_us) as f64 * scale;
    Duration::try_from_secs_f64(gap_us / 1e6)
        .unwrap_or(REPLAY_GAP_MAX)
        .min(REPLAY_GAP_MAX)
}

impl http_body::Body for ChunkedReplay {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let Some(&(offset_us, _)) = this.chunks.as_slice().first() else {
                let trailers = this.trailers.take().map(http_body::Frame::trailers);
                return Poll::Ready(trailers.map(Ok));
            };
            if let Some(pacing) = &mut this.pacing {
                ready!(pacing.poll_due(offset_us, cx));
            }
            let Some((_, data)) = this.chunks.next() else {
                return Poll::Ready(None);
            };
            this.remaining = this.remaining.saturating_sub(data.len() as u64);
            // An empty data frame would say nothing (and in chunked framing
            // look like the end): only its timing counts.
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.as_slice().is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.exact_length {
            http_body::SizeHint::with_exact(self.remaining)
        } else {
            http_body::SizeHint::new()
        }
    }
}

impl Server {
    /// The answer stage of a hit: the recorded answer read from the map, or
    /// (an upgrade recorded as a conversation) the conversation played. An
    /// upgrade the upstream refused is answered as recorded.
    pub(super) async fn answer_hit(
        &self,
        endpoint: &Endpoint,
        admitted: Admitted,
        parts: &http::request::Parts,
        (recording, usage): (&Recording, &super::usage::Usage),
        location: RecordLocation,
    ) -> Response<ResponseBody> {
        let Admitted {
            session,
            upgrade,
            timing,
        } = admitted;
        let answer = ReplayAnswer {
            head: parts.method == http::Method::HEAD,
            timing,
            trailers: super::trailers::client_takes_trailers(&parts.headers, parts.version),
        };
        let view = recording.read(location);
        if let Ok(view) = &view {
            usage.mark_served(view.ordinal());
        }
        if let (Some(upgrade), Ok(view)) = (upgrade, &view)
            && view.is_websocket()
        {
            let Some(frames) = websocket::frames_of(view) else {
                return self
                    .serve_record(
                        Err(crate::recording::RecordingError::CorruptRecord {
                            path: session.recording_path(&self.options.recording_dir),
                            offset: location.offset,
                            what: "malformed WebSocket payload".into(),
                        }),
                        answer,
                    )
                    .await;
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
        self.serve_record(view, answer).await
    }
}

#[cfg(test)]
mod tests {
    use super::{REPLAY_GAP_MAX, contains_token, gap, head_wait};
    use crate::config::ReplayTiming;
    use std::time::Duration;

    #[test]
    fn the_head_waits_its_recorded_time_to_first_byte_when_paced() {
        assert_eq!(head_wait(300_000, ReplayTiming::None), Duration::ZERO);
        assert_eq!(
            head_wait(300_000, ReplayTiming::Recorded),
            Duration::from_millis(300)
        );
        assert_eq!(head_wait(u64::MAX, ReplayTiming::Recorded), REPLAY_GAP_MAX);
        // A version 1 record kept no time to first byte: the head goes at once.
        assert_eq!(head_wait(0, ReplayTiming::Recorded), Duration::ZERO);
    }

    #[test]
    fn gaps_are_scaled_and_bounded() {
        assert_eq!(gap(100_000, 400_000, 1.0), Duration::from_millis(300));
        assert_eq!(gap(100_000, 400_000, 0.5), Duration::from_millis(150));
        // A damaged offset: earlier than the one before, or absurdly late.
        assert_eq!(gap(400_000, 100_000, 1.0), Duration::ZERO);
        assert_eq!(gap(0, u64::MAX, 1.0), REPLAY_GAP_MAX);
        assert_eq!(gap(0, 50_000_000, 100.0), REPLAY_GAP_MAX);
    }

    #[test]
    fn tokens_are_found_in_lists_and_before_parameters() {
        assert!(contains_token(b"gzip, Chunked", b"chunked"));
        assert!(contains_token(
            b"text/event-stream; charset=utf-8",
            b"text/event-stream"
        ));
        assert!(!contains_token(b"notchunked", b"chunked"));
        assert!(!contains_token(b"application/json", b"text/event-stream"));
    }
}
