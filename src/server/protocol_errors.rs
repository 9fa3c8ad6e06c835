//! Answers to requests hyper refuses before ouli's service sees them: a
//! malformed or oversized head, a head that never arrives, an HTTP/2 preface
//! after an HTTP/1 request (one that opens a connection is served as h2c,
//! `listener/connection.rs`).
//!
//! hyper 1.x answers a head it cannot parse itself (`400`, `414`, `431`, an
//! empty body, then it closes) and closes silently on a header timeout or an
//! HTTP/2 preface; it has no hook to change those answers. So the connection's
//! socket is wrapped ([`ProtocolErrorIo`]): a write that is hyper's own error
//! head is held back, the listener tells the connection's state why hyper
//! stopped ([`connection_ended`]), and when the connection is dropped the
//! wrapper writes ouli's answer instead: the JSON body and `x-ouli-error` kind
//! every answer ouli makes itself has.
//!
//! A recorded answer can look like hyper's (a bare 400 with no body): the
//! service marks each request it is called for ([`ConnectionState::served`]),
//! and the first response head written after that mark is the service's, never
//! rewritten. Replay's cost is one prefix compare per write and one atomic per
//! response: 0.1 % more instructions per replayed 1 KiB answer (callgrind,
//! release build, 5,000 keep-alive requests, with and without the wrapper).

use http::StatusCode;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes of unread input read and dropped after writing an error answer
/// before the socket closes: closing with unread input sends a reset, which
/// can make the client lose the answer (a 431 arrives while the rest of an
/// oversized head is still queued). Bounded: a peer sending without end is
/// not waited for.
const DRAIN_BYTES_MAX: usize = 256 << 10;

/// hyper's own error head after its status line, up to the date's value
/// (`proto/h1/role.rs`: `connection: close`, an empty body, the date).
const HYPER_ERROR_HEADERS: &[u8] = b"connection: close\r\ncontent-length: 0\r\ndate: ";
/// An IMF-fixdate (`Wed, 02 Dec 2026 17:39:16 GMT`), as hyper writes it.
const HTTP_DATE_LEN: usize = 29;
/// The last bytes read on a connection, kept to tell apart the head errors
/// hyper reports alike (a request line in another HTTP version, 505, from one
/// that is malformed, 400): a request line is short, and a pipelined bad one
/// follows a few heads at most.
const RECENT_BYTES_MAX: usize = 1024;

/// What the service and the listener tell a connection's socket wrapper.
#[derive(Default)]
pub(super) struct ConnectionState {
    /// Set when the service is called for a request: the next response head
    /// written is its answer.
    called: AtomicBool,
    /// Why hyper stopped, once the connection has ended.
    ending: Mutex<Option<Ending>>,
}

impl ConnectionState {
    /// Called by the service for every request it gets.
    pub(super) fn served(&self) {
        self.called.store(true, Ordering::Release);
    }
}

/// An answer ouli writes in place of hyper's.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

#[derive(Debug)]
enum Ending {
    /// hyper wrote its own error head (held back): this is the answer.
    HeadError(Answer),
    /// hyper closed without answering: answered if part of a request was read.
    Unanswered(Answer),
}

/// The limits an answer names.
pub(super) struct HeadLimits {
    pub header_bytes_max: usize,
    pub header_count_max: usize,
    pub header_read_timeout_ms: u64,
}

/// Records why hyper ended the connection, before the connection (and its
/// socket wrapper, which writes the answer) is dropped.
pub(super) fn connection_ended(state: &ConnectionState, error: &hyper::Error, limits: &HeadLimits) {
    let ending = if error.is_timeout() {
        Ending::Unanswered(header_timeout(limits.header_read_timeout_ms))
    } else if error.is_parse_version_h2() {
        tracing::info!(
            "a client sent the HTTP/2 preface after an HTTP/1 request on the same connection; answered 505 and closed"
        );
        Ending::Unanswered(http2_preface_answer())
    } else if error.is_parse() {
        Ending::HeadError(head_error_answer(error, limits))
    } else {
        return;
    };
    *state.ending.lock().unwrap_or_else(|p| p.into_inner()) = Some(ending);
}

/// The whole answer to a head not received within
/// `limits.header_read_timeout_ms` (the replay lane's; hyper's goes through
/// [`connection_ended`]).
pub(super) fn header_timeout_answer(header_read_timeout_ms: u64) -> Vec<u8> {
    answer_bytes(&header_timeout(header_read_timeout_ms))
}

fn header_timeout(header_read_timeout_ms: u64) -> Answer {
    Answer {
        status: StatusCode::REQUEST_TIMEOUT,
        kind: "header-timeout",
        message: format!(
            "the request head was not received within limits.header_read_timeout_ms = {header_read_timeout_ms} ms"
        ),
    }
}

fn http2_preface_answer() -> Answer {
    Answer {
        status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        kind: "http-version-not-supported",
        message: "HTTP/2 is served on a connection that opens with its preface (prior knowledge) or by TLS ALPN, not after an HTTP/1 request".into(),
    }
}

fn head_error_answer(error: &hyper::Error, limits: &HeadLimits) -> Answer {
    let text = error.to_string();
    if text.contains("URI too long") {
        return answer_for_status(StatusCode::URI_TOO_LONG);
    }
    if error.is_parse_too_large() {
        return Answer {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            kind: "headers-too-large",
            message: format!(
                "the request head is over limits.header_bytes_max = {} bytes (request line, headers and blank line) or has more than limits.header_count_max = {} headers",
                limits.header_bytes_max, limits.header_count_max
            ),
        };
    }
    // hyper's message for a version httparse does not take (`HTTP/2.0`,
    // `HTTP/1.2`, no version at all as in HTTP/0.9).
    if text.contains("invalid HTTP version") {
        return Answer {
            status: StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            kind: "http-version-not-supported",
            message: "the request line's HTTP version is not one this listener speaks (HTTP/1.1, HTTP/1.0)".into(),
        };
    }
    Answer {
        status: StatusCode::BAD_REQUEST,
        kind: "bad-request",
        message: format!("the request head cannot be parsed: {text}"),
    }
}

/// The answer when only hyper's status is known.
fn answer_for_status(status: StatusCode) -> Answer {
    let (kind, message) = match status {
        StatusCode::URI_TOO_LONG => (
            "uri-too-long",
            "the request target is longer than this listener takes (65,534 bytes)",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers-too-large",
            "the request head is over limits.header_bytes_max or limits.header_count_max",
        ),
        _ => ("bad-request", "the request head cannot be parsed"),
    };
    Answer {
        status,
        kind,
        message: message.into(),
    }
}

/// The whole HTTP/1.1 answer, closing the connection.
fn answer_bytes(answer: &Answer) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(&serde_json::json!({
        "error": answer.kind, "fault": "client", "message": answer.message,
    }))
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-ouli-error: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        answer.status.as_u16(),
        answer.status.canonical_reason().unwrap_or(""),
        answer.kind,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The status of `bytes` if they are exactly hyper's own error head
/// (`HTTP/1.x <400|414|431> <reason>`, then [`HYPER_ERROR_HEADERS`], a date
/// and the blank line).
fn hyper_error_status(bytes: &[u8]) -> Option<StatusCode> {
    let rest = bytes
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => StatusCode::BAD_REQUEST,
        b"414 " => StatusCode::URI_TOO_LONG,
        b"431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let reason = status.canonical_reason()?.as_bytes();
    let rest = rest[4..].strip_prefix(reason)?.strip_prefix(b"\r\n")?;
    let rest = rest.strip_prefix(HYPER_ERROR_HEADERS)?;
    (rest.len() == HTTP_DATE_LEN + 4 && rest.ends_with(b"GMT\r\n\r\n")).then_some(status)
}

/// The connection's socket as hyper sees it; see the module docs.
pub(super) struct ProtocolErrorIo {
    stream: TcpStream,
    /// Bytes read before hyper took the connection (the replay lane's),
    /// given to hyper first.
    prefix: bytes::Bytes,
    /// Whether `prefix` came after the lane's last answer (else it was read
    /// with the answered requests, as hyper reads pipelined ones, and does
    /// not count as read since that write).
    prefix_after_write: bool,
    state: Arc<ConnectionState>,
    /// Bytes were read since the last write: a request (part of one) is in.
    read_since_write: bool,
    /// Bytes read since the last write (saturating): a head hyper calls too
    /// large while this is under the head limit was refused for its
    /// declared length, not its size.
    read_count: usize,
    /// The last [`RECENT_BYTES_MAX`] bytes read.
    recent: Vec<u8>,
    /// `limits.header_bytes_max`.
    header_bytes_max: usize,
    /// hyper's own error head, held back.
    held: Option<StatusCode>,
}

impl ProtocolErrorIo {
    pub(super) fn new(
        stream: TcpStream,
        (prefix, prefix_after_write): (bytes::Bytes, bool),
        state: Arc<ConnectionState>,
        header_bytes_max: usize,
    ) -> ProtocolErrorIo {
        ProtocolErrorIo {
            stream,
            prefix,
            prefix_after_write,
            state,
            read_since_write: false,
            read_count: 0,
            recent: Vec::new(),
            header_bytes_max,
            held: None,
        }
    }

    /// Whether a write that begins a response head (`first`, then `rest`)
    /// is hyper's own error head alone, and not the answer of a request the
    /// service was called for.
    #[cold]
    fn holds_back(&mut self, first: &[u8], rest: &[std::io::IoSlice<'_>]) -> bool {
        // An interim `100 Continue` is hyper's, before the service's answer.
        if first.get(9..13) == Some(b"100 ") {
            return false;
        }
        if self.state.called.swap(false, Ordering::AcqRel) || rest.iter().any(|b| !b.is_empty()) {
            return false;
        }
        match hyper_error_status(first) {
            Some(status) => {
                self.held = Some(status);
                true
            }
            None => false,
        }
    }

    /// Writes ouli's answer, if one is due, without blocking: the socket's
    /// send buffer is empty at this point (nothing else was written since
    /// the last answer finished) and the answer is a few hundred bytes.
    fn write_answer(&mut self) {
        let ending = self
            .state
            .ending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let answer = match (self.held, ending) {
            (Some(_), Some(Ending::HeadError(answer))) => self.refine(answer),
            (Some(status), _) => answer_for_status(status),
            (None, Some(Ending::Unanswered(answer))) if self.read_since_write => answer,
            _ => return,
        };
        let bytes = answer_bytes(&answer);
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.try_write(&bytes[written..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n,
            }
        }
        let mut sink = [0u8; 8192];
        let mut drained = 0;
        while drained < DRAIN_BYTES_MAX {
            match self.stream.try_read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

impl ProtocolErrorIo {
    /// What hyper's error text cannot tell, the bytes read can: a version
    /// error is 505 only when the request line is well formed in another
    /// HTTP version; a head "too large" that was not is a declared length
    /// hyper cannot take.
    #[cold]
    fn refine(&self, answer: Answer) -> Answer {
        if answer.status == StatusCode::HTTP_VERSION_NOT_SUPPORTED
            && !first_bad_request_line_is_other_version(&self.recent)
        {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                kind: "bad-request",
                message: "the request line is not `METHOD TARGET HTTP/1.1`".into(),
            };
        }
        if answer.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            && self.read_count < self.header_bytes_max
            && declares_huge_content_length(&self.recent)
        {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                kind: "bad-request",
                message: "the request's Content-Length is not a length this listener takes".into(),
            };
        }
        answer
    }
}

/// Whether `recent` holds a `Content-Length` of 19 digits or more: hyper
/// refuses `u64::MAX` (its own marker for "no length") as a head too large.
fn declares_huge_content_length(recent: &[u8]) -> bool {
    let lower = recent.to_ascii_lowercase();
    memchr::memmem::find_iter(&lower, b"content-length:").any(|at| {
        let value = &lower[at + b"content-length:".len()..];
        let value = &value[value
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count()..];
        value.iter().take_while(|b| b.is_ascii_digit()).count() >= 19
    })
}

/// Of the request heads that start in `recent` (at its start, or after a
/// blank line), whether the first whose request line is not HTTP/1.0 or 1.1
/// is a well-formed line in another version (`GET / HTTP/2.0`).
fn first_bad_request_line_is_other_version(recent: &[u8]) -> bool {
    let mut starts = vec![0];
    starts.extend(memchr::memmem::find_iter(recent, b"\r\n\r\n").map(|at| at + 4));
    for start in starts {
        let rest = &recent[start..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let method_ok = !method.is_empty()
            && method
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b));
        let target_ok = !target.is_empty() && target.iter().all(|b| b.is_ascii_graphic());
        let other_version = version.len() == 8
            && version.starts_with(b"HTTP/")
            && version[5].is_ascii_digit()
            && version[6] == b'.'
            && version[7].is_ascii_digit();
        if method_ok && target_ok && (version == b"HTTP/1.1" || version == b"HTTP/1.0") {
            continue;
        }
        return method_ok && target_ok && other_version;
    }
    false
}

impl Drop for ProtocolErrorIo {
    fn drop(&mut self) {
        self.write_answer();
    }
}

impl AsyncRead for ProtocolErrorIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let mut counts = true;
        let polled = if self.prefix.is_empty() {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        } else {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            counts = self.prefix_after_write;
            Poll::Ready(Ok(()))
        };
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let this = &mut *self;
            this.read_since_write |= counts;
            this.read_count = this.read_count.saturating_add(read.len());
            // Keep the last RECENT_BYTES_MAX bytes (a short copy per read).
            let tail = &read[read.len().saturating_sub(RECENT_BYTES_MAX)..];
            let keep = RECENT_BYTES_MAX - tail.len();
            if this.recent.len() > keep {
                this.recent.drain(..this.recent.len() - keep);
            }
            this.recent.extend_from_slice(tail);
        }
        polled
    }
}

impl AsyncWrite for ProtocolErrorIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.starts_with(b"HTTP/1.") && self.holds_back(buf, &[]) {
            return Poll::Ready(Ok(buf.len()));
        }
        self.read_since_write = false;
        self.read_count = 0;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(first) = bufs.first()
            && first.starts_with(b"HTTP/1.")
            && self.holds_back(first, &bufs[1..])
        {
            return Poll::Ready(Ok(first.len()));
        }
        self.read_since_write = false;
        self.read_count = 0;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    /// With an error head held back, the socket stays open: the answer is
    /// written when the connection is dropped, once the listener has said
    /// why hyper stopped.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.held.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_exactly_hypers_own_error_heads() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 17:39:16 GMT\r\n\r\n";
        assert_eq!(
            hyper_error_status(head),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 17:39:16 GMT\r\n\r\n";
        assert_eq!(hyper_error_status(bad), Some(StatusCode::BAD_REQUEST));
        // Another header, a body, another status: not hyper's.
        let other = b"HTTP/1.1 400 Bad Request\r\nx-a: 1\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 17:39:16 GMT\r\n\r\n";
        assert_eq!(hyper_error_status(other), None);
        let mut with_body = bad.to_vec();
        with_body.extend_from_slice(b"x");
        assert_eq!(hyper_error_status(&with_body), None);
        assert_eq!(hyper_error_status(&bad[..bad.len() - 1]), None);
        let not_found = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 17:39:16 GMT\r\n\r\n";
        assert_eq!(hyper_error_status(not_found), None);
    }

    #[test]
    fn a_version_error_is_505_only_for_a_well_formed_line_in_another_version() {
        assert!(first_bad_request_line_is_other_version(
            b"GET /a HTTP/2.0\r\n\r\n"
        ));
        // Pipelined: the first bad line decides, not the last.
        let pipelined =
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGE T /2 HTTP/1.1\r\n\r\nGET /3 HTTP/3.0\r\n\r\n";
        assert!(!first_bad_request_line_is_other_version(pipelined));
        for malformed in [
            &b"GE T /c HTTP/1.1\r\n\r\n"[..],
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET /c HTTPX/1.1\r\n\r\n",
            b"GET /c\r\n",
        ] {
            assert!(!first_bad_request_line_is_other_version(malformed));
        }
        assert!(declares_huge_content_length(
            b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n"
        ));
        assert!(!declares_huge_content_length(
            b"POST / HTTP/1.1\r\ncontent-length: 12\r\n"
        ));
    }

    #[test]
    fn answers_are_json_with_their_kind() {
        let bytes = answer_bytes(&answer_for_status(StatusCode::URI_TOO_LONG));
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"));
        assert!(head.contains("x-ouli-error: uri-too-long\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "uri-too-long");
        assert_eq!(json["fault"], "client");
    }
}
