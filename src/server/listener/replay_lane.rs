//! The replay lane: cleartext HTTP/1.1 replay hits answered without hyper's
//! per-request machinery, the way a static file server answers.
//!
//! A replay server knows its answers in advance. For the requests tests
//! repeat (no body, no upgrade, nothing ouli itself must interpret), the
//! lane reads the head with hyper's own parser (`httparse`), remembers per
//! connection what the request identified as (a request with the same head
//! bytes has the same canonical form: the identity is a function of the
//! head and the body, and these have none), takes the chain step, and
//! writes the recorded answer as one vectored write: its head encoded once
//! per connection exactly as hyper encodes it (`encode_head`), its body the
//! recorded chunks, slices of the map.
//!
//! Anything else hands the connection to hyper for the rest of its life
//! ([`LaneEnd::HandOff`], with the bytes read so far), before any stage has
//! acted on the request: a head the lane does not take (a body, an upgrade,
//! `Expect`, `Connection`, an `x-ouli-` header, a control path, HTTP/1.0,
//! more than [`LANE_HEADERS_MAX`] fields, a head httparse refuses), a
//! request that misses (the miss report is the stages' job), or a session
//! that cannot be opened. What the client sees is what hyper's path would
//! have sent, byte for byte but the `date`: `tests/it/replay_lane.rs`
//! compares both on the same recordings.

use super::super::lookup::{Lookup, Policy, lookup};
use super::super::metrics::Outcome;
use super::super::replay::ReplayAnswer;
use super::super::response::ResponseBody;
use super::super::session::Session;
use super::super::{CONTROL_PREFIX, Server};
use crate::chain::HashedCanonical;
use crate::config::{ExhaustedPolicy, Limits, ReplayTiming};
use crate::session_name::SessionName;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Most header fields of a request the lane parses (hyper's own bound,
/// `limits.header_count_max`, is larger by default: a request with more
/// fields than this goes to hyper, which applies that one).
pub(super) const LANE_HEADERS_MAX: usize = 64;
/// Distinct request heads remembered per connection: a test's connection
/// repeats a few requests; one with more just identifies the others anew.
const LANE_MEMO_MAX: usize = 8;
/// Encoded answer heads kept per connection.
const LANE_HEADS_MAX: usize = 8;
/// Longest request head remembered (longer ones are identified every time).
const LANE_MEMO_KEY_BYTES_MAX: usize = 4096;
/// The read buffer's first size; it grows to `limits.header_bytes_max`.
const LANE_READ_BYTES: usize = 8 * 1024;
/// Request fields that need a stage the lane does not run: a body's
/// framing, the connection's management, an upgrade, an interim answer,
/// trailers.
const FIELDS_NOT_IN_LANE: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"upgrade",
    b"expect",
    b"te",
    b"trailer",
    b"keep-alive",
    b"proxy-connection",
];

/// How the lane left a connection.
pub(super) enum LaneEnd {
    /// Closed (by the client, a timeout or the server's stop).
    Closed,
    /// Hyper serves it from here; these bytes were read and not consumed,
    /// and whether any of them came after the lane's last answer.
    HandOff(Bytes, bool),
}

/// Whether the lane may serve `endpoint`'s connections at all: replay mode,
/// and answers that are not paced by default (a paced answer's timers are
/// the stages' job).
pub(super) fn serves(server: &Server, endpoint: usize) -> bool {
    server.replays_only() && server.endpoint_timing(endpoint) == ReplayTiming::None
}

/// What the lane remembers of one request head.
struct Remembered {
    head: Box<[u8]>,
    /// The session its header names; `None`: the active or default one.
    session: Option<SessionName>,
    hashed: HashedCanonical,
    head_request: bool,
}

/// An encoded answer head, and the record it is for.
struct CachedHead {
    /// Held so that the session (and its recording) is not freed and
    /// another put at the same address while the entry lives.
    session: Arc<Session>,
    recording: usize,
    offset: u64,
    head_request: bool,
    head: Arc<EncodedHead>,
}

/// One connection's lane.
pub(super) struct Lane<'a> {
    server: &'a Server,
    endpoint: usize,
    limits: &'a Limits,
    memo: Vec<Arc<Remembered>>,
    heads: Vec<CachedHead>,
}

/// A parsed request head the lane takes.
struct LaneRequest<'b> {
    /// The head's bytes (request line to blank line): the memo's key.
    raw: &'b [u8],
    method: &'b str,
    path: &'b str,
    headers: Vec<(&'b str, &'b [u8])>,
}

enum Parsed<'b> {
    Lane(LaneRequest<'b>),
    Partial,
    /// Not for the lane (or not valid): hyper's.
    Other,
}

impl<'a> Lane<'a> {
    pub(super) fn new(server: &'a Server, endpoint: usize, limits: &'a Limits) -> Lane<'a> {
        Lane {
            server,
            endpoint,
            limits,
            memo: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// Serves `stream` until it closes, the server stops, or a request is
    /// not the lane's.
    pub(super) async fn serve(
        mut self,
        stream: &mut TcpStream,
        stop: &mut watch::Receiver<bool>,
    ) -> LaneEnd {
        let mut buffer = BytesMut::with_capacity(LANE_READ_BYTES);
        // Bytes came after the last answer (hyper answers a head error only
        // then: `protocol_errors.rs`).
        let mut read_since_answer = true;
        let timeout = Duration::from_millis(self.limits.header_read_timeout_ms);
        loop {
            // hyper's header timeout runs from the end of the last answer
            // (an idle keep-alive connection is closed after it, silently).
            let deadline = tokio::time::Instant::now() + timeout;
            let len = loop {
                let step = match parse(&buffer, self.limits, self.server, self.endpoint) {
                    Parsed::Lane(request) => match self.answer(stream, &request).await {
                        Served::Answered => Step::Answered(request.raw.len()),
                        Served::NotLane => Step::HandOff,
                        Served::Close => return LaneEnd::Closed,
                    },
                    Parsed::Other => Step::HandOff,
                    Parsed::Partial if buffer.len() >= self.limits.header_bytes_max => {
                        Step::HandOff
                    }
                    Parsed::Partial => Step::ReadMore,
                };
                match step {
                    Step::Answered(len) => {
                        read_since_answer = false;
                        break len;
                    }
                    Step::HandOff => return LaneEnd::HandOff(buffer.freeze(), read_since_answer),
                    Step::ReadMore => {}
                }
                match read_more(stream, &mut buffer, deadline, stop).await {
                    Read::More => read_since_answer = true,
                    Read::Closed => return LaneEnd::Closed,
                    // Half a head at the end of input: hyper says what is wrong.
                    Read::EndedInHead => {
                        return LaneEnd::HandOff(buffer.freeze(), read_since_answer);
                    }
                    Read::TimedOut => {
                        let answer = super::super::protocol_errors::header_timeout_answer(
                            self.limits.header_read_timeout_ms,
                        );
                        let _ = stream.write_all(&answer).await;
                        return LaneEnd::Closed;
                    }
                }
            };
            bytes::Buf::advance(&mut buffer, len);
            if *stop.borrow() {
                return LaneEnd::Closed;
            }
        }
    }

    /// One request: identified (remembered or anew), looked up, answered.
    async fn answer(&mut self, stream: &mut TcpStream, request: &LaneRequest<'_>) -> Served {
        let started = std::time::Instant::now();
        let Some(remembered) = self.identified(request) else {
            return Served::NotLane;
        };
        // The mode can change at run time (`admin.rs`): a proxy mode's
        // requests are the stages'.
        if !self.server.replays_only() {
            return Served::NotLane;
        }
        let (hashed, head_request) = (&remembered.hashed, remembered.head_request);
        let Ok(state) = (match &remembered.session {
            Some(session) => self.server.session(session),
            None => self
                .server
                .session(&self.server.session_without_header(self.endpoint)),
        }) else {
            return Served::NotLane;
        };
        let (recording, location, hit) = match lookup(&state, hashed, false, Policy::Replay) {
            Lookup::Hit {
                recording,
                location,
                ..
            } => (recording, location, true),
            Lookup::Exhausted {
                recording, last, ..
            } if self.server.options.config.on_chain_exhausted == ExhaustedPolicy::RepeatLast => {
                (recording, last, false)
            }
            // The stages answer misses (nothing was taken: a miss commits
            // no step in replay).
            Lookup::Exhausted { .. } | Lookup::Miss { .. } => return Served::NotLane,
        };
        let view = recording.read(location);
        if let (true, Ok(view)) = (hit, &view) {
            state.usage.mark_served(view.ordinal());
        }
        let key = (std::ptr::from_ref(recording) as usize, location.offset);
        let mut outcome = Outcome::Hit;
        let (written, close) = match (&view, self.cached_head(&state, key, head_request)) {
            (Ok(view), Some(head)) => (
                write_answer(stream, &head, view.response_chunks()).await,
                head.close,
            ),
            _ => {
                let answer = ReplayAnswer {
                    head: head_request,
                    timing: ReplayTiming::None,
                    trailers: false,
                };
                let cacheable = view.is_ok();
                let response = self.server.serve_record_now(view, answer);
                // A damaged record's answer is marked (`recording_error`).
                if let Some(marked) = response.extensions().get::<Outcome>() {
                    outcome = *marked;
                }
                let head = Arc::new(encode_head(&response, head_request));
                if cacheable {
                    self.keep_head(state.clone(), key, head_request, head.clone());
                }
                (write_response(stream, &head, response).await, head.close)
            }
        };
        let Ok(body_bytes) = written else {
            return Served::Close;
        };
        self.server
            .metrics
            .count_lane_answer(self.endpoint, outcome, started, body_bytes);
        if close {
            return Served::Close;
        }
        Served::Answered
    }

    /// What `request` identifies as (remembered, or identified now);
    /// `None` when the stages must answer it (a bad session name, a target
    /// or field `http` refuses).
    fn identified(&mut self, request: &LaneRequest<'_>) -> Option<Arc<Remembered>> {
        if let Some(found) = self.memo.iter().find(|r| *r.head == *request.raw) {
            return Some(found.clone());
        }
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(value).ok()?;
            headers.append(name, value);
        }
        // The target as `http` takes it (hyper refuses what it refuses).
        http::uri::PathAndQuery::try_from(request.path).ok()?;
        let (session, hashed) =
            self.server
                .lane_identify(self.endpoint, request.method, request.path, &headers)?;
        let remembered = Arc::new(Remembered {
            head: request.raw.into(),
            session,
            hashed,
            head_request: request.method == "HEAD",
        });
        if request.raw.len() <= LANE_MEMO_KEY_BYTES_MAX {
            if self.memo.len() == LANE_MEMO_MAX {
                self.memo.remove(0);
            }
            self.memo.push(remembered.clone());
        }
        Some(remembered)
    }

    fn cached_head(
        &self,
        state: &Arc<Session>,
        (recording, offset): (usize, u64),
        head_request: bool,
    ) -> Option<Arc<EncodedHead>> {
        self.heads
            .iter()
            .find(|c| {
                c.recording == recording
                    && c.offset == offset
                    && c.head_request == head_request
                    && Arc::ptr_eq(&c.session, state)
            })
            .map(|c| c.head.clone())
    }

    fn keep_head(
        &mut self,
        session: Arc<Session>,
        (recording, offset): (usize, u64),
        head_request: bool,
        head: Arc<EncodedHead>,
    ) {
        if self.heads.len() == LANE_HEADS_MAX {
            self.heads.remove(0);
        }
        self.heads.push(CachedHead {
            session,
            recording,
            offset,
            head_request,
            head,
        });
    }
}

enum Step {
    Answered(usize),
    HandOff,
    ReadMore,
}

enum Served {
    Answered,
    NotLane,
    Close,
}

enum Read {
    More,
    Closed,
    EndedInHead,
    TimedOut,
}

/// Reads more of a head, until `deadline`. Waiting for a new head, the
/// server's stop closes the connection; in the middle of one, it waits for
/// the rest (hyper finishes a request in flight the same way).
async fn read_more(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> Read {
    let idle = buffer.is_empty();
    if idle && *stop.borrow() {
        return Read::Closed;
    }
    if buffer.capacity() - buffer.len() < LANE_READ_BYTES / 4 {
        buffer.reserve(LANE_READ_BYTES);
    }
    let read = tokio::time::timeout_at(deadline, stream.read_buf(buffer));
    let read = if idle {
        tokio::select! {
            read = read => read,
            _ = stop.wait_for(|stopping| *stopping) => return Read::Closed,
        }
    } else {
        read.await
    };
    match read {
        Ok(Ok(0)) if idle => Read::Closed,
        Ok(Ok(0)) => Read::EndedInHead,
        Ok(Ok(_)) => Read::More,
        Ok(Err(_)) => Read::Closed,
        Err(_) if idle => Read::Closed,
        Err(_) => Read::TimedOut,
    }
}

/// Parses the head at the start of `buffer` and says whether it is the
/// lane's (see the module doc).
fn parse<'b>(buffer: &'b [u8], limits: &Limits, server: &Server, endpoint: usize) -> Parsed<'b> {
    if buffer.is_empty() {
        return Parsed::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; LANE_HEADERS_MAX];
    let most = LANE_HEADERS_MAX.min(limits.header_count_max);
    let mut request = httparse::Request::new(&mut fields[..most]);
    let len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Other;
    };
    if len > limits.header_bytes_max
        || method == "CONNECT"
        || !path.starts_with('/')
        || path.starts_with(CONTROL_PREFIX)
        || server.is_health_path(endpoint, path.split('?').next().unwrap_or(path))
    {
        return Parsed::Other;
    }
    let mut hosts = 0;
    let mut headers = Vec::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        if FIELDS_NOT_IN_LANE
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
            || (name.len() >= 7 && name[..7].eq_ignore_ascii_case(b"x-ouli-"))
        {
            return Parsed::Other;
        }
        hosts += usize::from(name.eq_ignore_ascii_case(b"host"));
        headers.push((field.name, field.value));
    }
    if hosts > 1 {
        return Parsed::Other;
    }
    Parsed::Lane(LaneRequest {
        raw: &buffer[..len],
        method,
        path,
        headers,
    })
}

/// How an answer's body is framed on HTTP/1.1, as hyper frames it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// No body is sent (a `HEAD`, a 204 or 304).
    None,
    Length,
    Chunked,
}

/// An answer's head as hyper writes it, but its `date`.
#[derive(Debug)]
pub(super) struct EncodedHead {
    /// Status line and fields, without the blank line.
    bytes: Bytes,
    /// hyper adds a `date` when the answer has none.
    date: bool,
    body: BodyFraming,
    /// hyper closes the connection after it (a 1xx it replaced with 500).
    close: bool,
}

/// The head hyper writes for `response` to a request (`HEAD` or not), by
/// hyper's rules (`proto/h1/role.rs`): the canonical reason phrase (or
/// `<none>`), the fields in the map's order, then `content-length` from the
/// body's exact size or `transfer-encoding: chunked` without one, neither
/// for a 204 or 304, no length added to a `HEAD` answer, then `date` when
/// the answer has none.
pub(super) fn encode_head(response: &Response<ResponseBody>, head_request: bool) -> EncodedHead {
    let status = response.status();
    let mut out = Vec::with_capacity(256);
    // Not a final answer (replay of a damaged or odd record): hyper sends
    // 500 for it.
    let informational = status.is_informational();
    let status = if informational {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let no_length = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let mut wrote_length = false;
    let mut date = true;
    if !informational {
        for (name, value) in response.headers() {
            if name == http::header::DATE {
                date = false;
            }
            // Only a `HEAD` answer keeps its recorded length in the map.
            wrote_length |= name == http::header::CONTENT_LENGTH;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let size = http_body::Body::size_hint(response.body()).exact();
    let size = if informational { Some(0) } else { size };
    let body = if head_request || no_length {
        BodyFraming::None
    } else if size.is_some() {
        BodyFraming::Length
    } else {
        BodyFraming::Chunked
    };
    if !wrote_length && !no_length {
        match size {
            None if !head_request => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            None => {}
            Some(0) if head_request => {}
            Some(len) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    EncodedHead {
        bytes: out.into(),
        date,
        body,
        close: informational,
    }
}

/// Writes a head and the recorded chunks of its body; the body's bytes.
async fn write_answer(
    stream: &mut TcpStream,
    head: &EncodedHead,
    chunks: impl Iterator<Item = (u64, Bytes)>,
) -> std::io::Result<u64> {
    let mut parts: Vec<Bytes> = Vec::with_capacity(4);
    head_parts(head, &mut parts);
    match head.body {
        BodyFraming::None => {}
        BodyFraming::Length => parts.extend(chunks.map(|(_, data)| data)),
        BodyFraming::Chunked => {
            for (_, data) in chunks.filter(|(_, data)| !data.is_empty()) {
                chunk_parts(data, &mut parts);
            }
            parts.push(Bytes::from_static(b"0\r\n\r\n"));
        }
    }
    write_all(stream, &parts).await
}

/// Writes a head and `response`'s body (not a cached head: the body's
/// frames are the response's own); the body's bytes.
async fn write_response(
    stream: &mut TcpStream,
    head: &EncodedHead,
    response: Response<ResponseBody>,
) -> std::io::Result<u64> {
    let mut parts: Vec<Bytes> = Vec::with_capacity(4);
    head_parts(head, &mut parts);
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        // Not paced, no trailers (the lane's answers): every frame is
        // ready, and a body error is a damaged record's: the answer ends.
        let Ok(frame) = frame else {
            return Err(std::io::Error::other("replayed body failed"));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match head.body {
            BodyFraming::None => {}
            BodyFraming::Length => parts.push(data),
            BodyFraming::Chunked if data.is_empty() => {}
            BodyFraming::Chunked => chunk_parts(data, &mut parts),
        }
    }
    if head.body == BodyFraming::Chunked {
        parts.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    write_all(stream, &parts).await
}

fn head_parts(head: &EncodedHead, parts: &mut Vec<Bytes>) {
    parts.push(head.bytes.clone());
    if head.date {
        let mut line = Vec::with_capacity(40);
        line.extend_from_slice(b"date: ");
        line.extend_from_slice(&http_date_now());
        line.extend_from_slice(b"\r\n\r\n");
        parts.push(line.into());
    } else {
        parts.push(Bytes::from_static(b"\r\n"));
    }
}

fn chunk_parts(data: Bytes, parts: &mut Vec<Bytes>) {
    parts.push(format!("{:X}\r\n", data.len()).into());
    parts.push(data);
    parts.push(Bytes::from_static(b"\r\n"));
}

/// Writes every part, in as few `writev` calls as the socket takes; the
/// bytes after the head's two parts (the body, framed).
async fn write_all(stream: &mut TcpStream, parts: &[Bytes]) -> std::io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(parts.iter().skip(2).map(|p| p.len() as u64).sum())
}

/// The current time as an IMF-fixdate, formatted once a second per thread
/// (as hyper caches its own).
fn http_date_now() -> [u8; 29] {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            let mut bytes = [b' '; 29];
            let len = text.len().min(29);
            bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
            *cached = (second, bytes);
        }
        cached.1
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::response::full;

    fn response(
        status: u16,
        headers: &[(&str, &str)],
        body: &'static [u8],
    ) -> Response<ResponseBody> {
        let mut response = Response::new(full(Bytes::from_static(body)));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    #[test]
    fn a_head_is_encoded_as_hyper_encodes_it() {
        let head = encode_head(
            &response(200, &[("content-type", "application/json")], b"{}"),
            false,
        );
        assert_eq!(
            &head.bytes[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
        );
        assert!(head.date);
        assert_eq!(head.body, BodyFraming::Length);
        let recorded_date = encode_head(&response(404, &[("date", "x")], b""), false);
        assert_eq!(
            &recorded_date.bytes[..],
            b"HTTP/1.1 404 Not Found\r\ndate: x\r\ncontent-length: 0\r\n"
        );
        assert!(!recorded_date.date);
        let no_content = encode_head(&response(204, &[], b""), false);
        assert_eq!(&no_content.bytes[..], b"HTTP/1.1 204 No Content\r\n");
        assert_eq!(no_content.body, BodyFraming::None);
        let odd = encode_head(&response(599, &[], b""), false);
        assert_eq!(
            &odd.bytes[..],
            b"HTTP/1.1 599 <none>\r\ncontent-length: 0\r\n"
        );
    }

    #[test]
    fn a_head_request_gets_the_recorded_length_and_no_body() {
        let head = encode_head(&response(200, &[("content-length", "42")], b""), true);
        assert_eq!(
            &head.bytes[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n"
        );
        assert_eq!(head.body, BodyFraming::None);
        let without = encode_head(&response(200, &[], b""), true);
        assert_eq!(&without.bytes[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn the_date_has_the_imf_fixdate_shape() {
        let date = http_date_now();
        assert!(
            date.ends_with(b" GMT"),
            "{}",
            String::from_utf8_lossy(&date)
        );
        assert_eq!(date[3], b',');
    }
}
