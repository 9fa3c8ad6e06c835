//! Connections ouli does not serve: one over `limits.connections_max`, or
//! one taken while the process is out of file descriptors (with the spare
//! descriptor kept for that). Each is answered from its request line and
//! closed: a health probe gets its usual 200 (the process is up), any other
//! request 503 `too-many-connections`. Also the accept loop's back-off and
//! the rate limit on the log lines all of this would otherwise repeat.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// First pause after an accept error that is not one connection's own
/// (out of descriptors, out of memory): about what closing one takes.
pub(super) const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// Longest pause between accept attempts while the errors go on: a slot
/// that frees is used within a second, and a stuck process wakes only once
/// a second.
pub(super) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this interval for each repeated refusal; the
/// line counts the ones left out. An error that repeats thousands of times
/// a second says nothing new after the first.
pub(super) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// How long a shed connection may take to send its request line: a client
/// writes it right after connecting, and a silent one must not keep the
/// spare descriptor long.
pub(super) const SHED_REQUEST_WAIT: Duration = Duration::from_secs(1);
/// Bytes read of a shed connection's request: its request line is all
/// that is looked at.
pub(super) const SHED_REQUEST_BYTES_MAX: usize = 2048;
/// Shed connections answered at once; past these, one over the limit is
/// closed without an answer (each answer holds a descriptor for up to
/// [`SHED_REQUEST_WAIT`]).
pub(super) const SHED_CONCURRENT_MAX: usize = 64;

/// The `limits.connections_max` open connections (all endpoints together):
/// one over it is answered and closed, at most [`SHED_CONCURRENT_MAX`] at a
/// time.
pub(super) struct ConnectionSlots {
    max: usize,
    open: Arc<Semaphore>,
    answering: Arc<Semaphore>,
    log: LogEvery,
    health_paths: Arc<Vec<Option<String>>>,
    /// Per endpoint: a TLS listener, whose refused connections are closed.
    is_tls: Arc<Vec<bool>>,
}

impl ConnectionSlots {
    pub(super) fn new(
        max: usize,
        health_paths: Arc<Vec<Option<String>>>,
        is_tls: Arc<Vec<bool>>,
    ) -> ConnectionSlots {
        ConnectionSlots {
            max,
            // Tokio's semaphore holds at most `MAX_PERMITS`; a larger limit
            // is no limit.
            open: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            answering: Arc::new(Semaphore::new(SHED_CONCURRENT_MAX)),
            log: LogEvery::new(),
            health_paths,
            is_tls,
        }
    }

    /// The connection's slot (it frees when dropped) and its stream; `None`
    /// when there is none, and then the stream is being answered, or was
    /// closed unanswered past `SHED_CONCURRENT_MAX` answers in progress.
    pub(super) fn admit(
        &self,
        endpoint: usize,
        stream: TcpStream,
    ) -> Option<(OwnedSemaphorePermit, TcpStream)> {
        if let Ok(slot) = self.open.clone().try_acquire_owned() {
            return Some((slot, stream));
        }
        let max = self.max;
        if let Some(suppressed) = self.log.hit() {
            tracing::warn!(
                "endpoint {endpoint}: connection refused (503): limits.connections_max = {max} reached ({suppressed} more refused since the last line)"
            );
        }
        if let Ok(answering) = self.answering.clone().try_acquire_owned() {
            let health = self.health_paths[endpoint].clone();
            let is_tls = self.is_tls[endpoint];
            tokio::spawn(async move {
                let why = Why::ConnectionsMax(max);
                drop(answer(stream, health.as_deref(), why, is_tls).await);
                drop(answering);
            });
        }
        None
    }
}

/// Whether an accept error is about one connection only (it went away
/// before it was taken): the next accept may succeed at once. Every other
/// error (EMFILE, ENFILE, ENOMEM, ENOBUFS) is the process's, and the next
/// accept would fail the same way: back off.
pub(super) fn is_per_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Exponential pause between failing accepts, reset by one that succeeds.
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff(None)
    }

    pub(super) fn reset(&mut self) {
        self.0 = None;
    }

    pub(super) fn next_pause(&mut self) -> Duration {
        let pause = self.0.map_or(ACCEPT_BACKOFF_FIRST, |last| {
            (last * 2).min(ACCEPT_BACKOFF_MAX)
        });
        self.0 = Some(pause);
        pause
    }
}

/// One log line per [`REFUSAL_LOG_INTERVAL`] for an event that may repeat
/// without end.
pub(super) struct LogEvery {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogEvery {
    pub(super) fn new() -> LogEvery {
        LogEvery {
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(left out since the last line)` when this one is to be logged.
    pub(super) fn hit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = &mut *state;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

/// A descriptor kept open for the moment the process runs out: closing it
/// lets the accept loop take one waiting connection and answer it, where
/// otherwise it could only fail again. It starts on `/dev/null`; after use,
/// the answered connection's own descriptor is kept in its place (its
/// socket shut down), so that no other open can take the descriptor
/// between the close and a reopen.
pub(super) struct Spare(Mutex<SpareState>);

enum SpareState {
    Held(#[allow(dead_code)] Placeholder),
    /// Given up for one shed connection, until that one is answered.
    InUse,
    /// Could not be opened (the descriptors were gone already).
    Empty,
}

/// Held for its descriptor only, never read.
#[allow(dead_code)]
enum Placeholder {
    File(std::fs::File),
    Socket(std::net::TcpStream),
}

impl Spare {
    pub(super) fn open() -> Spare {
        let spare = Spare(Mutex::new(SpareState::Empty));
        spare.refill();
        spare
    }

    /// Closes the spare descriptor for a connection to take; `false` when it
    /// is in use or gone.
    pub(super) fn release(&self) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, SpareState::Held(_)) {
            *state = SpareState::InUse;
            return true;
        }
        false
    }

    /// The connection the spare was released for, answered: its descriptor
    /// is the spare now.
    pub(super) fn put_back(&self, answered: Option<std::net::TcpStream>) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(socket), SpareState::InUse | SpareState::Empty) = (answered, &*state) {
            *state = SpareState::Held(Placeholder::Socket(socket));
            return;
        }
        drop(state);
        self.refill();
    }

    /// The descriptor freed for a connection went elsewhere: none is in use.
    pub(super) fn lost(&self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, SpareState::InUse) {
            *state = SpareState::Empty;
        }
        drop(state);
        self.refill();
    }

    /// Opens the spare again if it is gone (not while it is in use).
    pub(super) fn refill(&self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, SpareState::Empty)
            && let Ok(file) = std::fs::File::open("/dev/null")
        {
            *state = SpareState::Held(Placeholder::File(file));
        }
    }
}

/// What a shed connection is answered: the 503 says which limit.
#[derive(Clone, Copy)]
pub(super) enum Why {
    ConnectionsMax(usize),
    OutOfDescriptors,
}

/// Answers a connection ouli does not serve, from its request line, and
/// closes it. `health` is its endpoint's own health path, if it has one.
/// On a TLS listener (`is_tls`) the connection is closed unanswered: a
/// plaintext answer would be garbage to a TLS client, and a handshake is
/// the work an overloaded server must not take on.
/// Returns the stream, shut down, for its descriptor (`Spare::put_back`).
pub(super) async fn answer(
    mut stream: TcpStream,
    health: Option<&str>,
    why: Why,
    is_tls: bool,
) -> TcpStream {
    if is_tls {
        let _ = tokio::time::timeout(SHED_REQUEST_WAIT, stream.shutdown()).await;
        return stream;
    }
    let mut head = Vec::with_capacity(256);
    let _ =
        tokio::time::timeout(SHED_REQUEST_WAIT, read_request_line(&mut stream, &mut head)).await;
    let response = if is_health_probe(&head, health) {
        json_answer("200 OK", None, &serde_json::json!({ "status": "ok" }))
    } else {
        let message = match why {
            Why::ConnectionsMax(max) => {
                format!("{max} connections are open, the most limits.connections_max allows")
            }
            Why::OutOfDescriptors => {
                "the process is out of file descriptors (too many open connections)".to_string()
            }
        };
        json_answer(
            "503 Service Unavailable",
            Some("too-many-connections"),
            &serde_json::json!({
                "error": "too-many-connections",
                "fault": "client",
                "message": message,
            }),
        )
    };
    let _ = tokio::time::timeout(SHED_REQUEST_WAIT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    stream
}

/// Reads until the end of the request line, [`SHED_REQUEST_BYTES_MAX`], or
/// the end of the stream.
async fn read_request_line(stream: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buffer = [0u8; 512];
    while head.len() < SHED_REQUEST_BYTES_MAX && !head.contains(&b'\n') {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(())
}

/// `GET /__ouli/health HTTP/1.1` (or the endpoint's health path); a query
/// string is allowed, as the server's own routing allows it.
fn is_health_probe(head: &[u8], health: Option<&str>) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return false;
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    matches!(method, b"GET" | b"HEAD")
        && (path == b"/__ouli/health" || health.is_some_and(|h| h.as_bytes() == path))
}

fn json_answer(status: &str, kind: Option<&str>, body: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(kind) = kind {
        answer.push_str(&format!("{}: {kind}\r\n", super::OULI_ERROR_HEADER));
    }
    answer.push_str("\r\n");
    let mut bytes = answer.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_probes_are_told_apart_by_their_request_line() {
        assert!(is_health_probe(b"GET /__ouli/health HTTP/1.1\r\n", None));
        assert!(is_health_probe(
            b"GET /__ouli/health?x=1 HTTP/1.1\r\n",
            None
        ));
        assert!(is_health_probe(b"GET /up HTTP/1.1\r\n", Some("/up")));
        assert!(!is_health_probe(b"GET /up HTTP/1.1\r\n", None));
        assert!(!is_health_probe(b"POST /__ouli/health HTTP/1.1\r\n", None));
        assert!(!is_health_probe(b"GET /__ouli/healthz HTTP/1.1\r\n", None));
        assert!(!is_health_probe(b"", None));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_pause(), ACCEPT_BACKOFF_FIRST);
        assert_eq!(backoff.next_pause(), ACCEPT_BACKOFF_FIRST * 2);
        for _ in 0..20 {
            backoff.next_pause();
        }
        assert_eq!(backoff.next_pause(), ACCEPT_BACKOFF_MAX);
        backoff.reset();
        assert_eq!(backoff.next_pause(), ACCEPT_BACKOFF_FIRST);
    }

    #[test]
    fn the_spare_is_given_up_once_and_comes_back_as_the_answered_socket() {
        let held = |spare: &Spare| match &*spare.0.lock().unwrap() {
            SpareState::Held(Placeholder::File(_)) => "file",
            SpareState::Held(Placeholder::Socket(_)) => "socket",
            SpareState::InUse => "in use",
            SpareState::Empty => "empty",
        };
        let spare = Spare::open();
        assert_eq!(held(&spare), "file");
        assert!(spare.release());
        assert!(!spare.release(), "given up twice");
        spare.refill();
        assert_eq!(held(&spare), "in use", "reopened while in use");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        spare.put_back(Some(socket));
        assert_eq!(held(&spare), "socket");
        assert!(spare.release());
        spare.lost();
        assert_eq!(held(&spare), "file");
    }

    #[test]
    fn a_repeated_refusal_is_logged_once_per_interval_with_a_count() {
        let log = LogEvery::new();
        assert_eq!(log.hit(), Some(0));
        assert_eq!(log.hit(), None);
        assert_eq!(log.hit(), None);
        log.state.lock().unwrap().0 = Some(Instant::now() - REFUSAL_LOG_INTERVAL);
        assert_eq!(log.hit(), Some(2));
    }
}
