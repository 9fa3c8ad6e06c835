//! Record path: the upstream response streams to the client frame by frame
//! while it is captured; at its end the interaction is decoded, redacted and
//! appended to the session's recording, before the last frame is released
//! to the client. A record that cannot be written breaks the response off
//! there (the client sees an error, not an answer that was never recorded);
//! a failure is also logged, counted, and makes the run end with an error.
//!
//! The append runs on the task that carried the response, under its
//! session's lock: a `write(2)` of one record to the page cache costs a few
//! microseconds, less than handing it to another thread (a futex wake and
//! two context switches per interaction cost record mode 20 % of its
//! throughput, rfcs/0003). It also makes "completed interactions survive
//! `kill -9`" exact: a client never sees the end of a response whose record
//! is not in the file. What may block for long (opening a session's
//! recording, which reads an existing one in record-missing mode; the
//! `fdatasync` of every-interaction durability) runs in `block_in_place`, so
//! the executor hands this worker's other tasks to another thread meanwhile.
//! That sync is taken after the session's lock is released: appends that
//! arrive while one runs share the next (group commit, `SyncPoint`).

use crate::interaction::{BodyChunk, HeaderPair, Interaction};
use crate::recording::secret_scan::SecretScan;
use crate::recording::{Durability, RecordingError, RecordingWriter, WriterLock};
use crate::session_name::SessionName;
use dashmap::DashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One session's writer, if its recording has started.
enum SessionWriter {
    /// No recording started yet (or the last one was finished, or starting
    /// it failed: the next request tries again).
    Idle,
    /// Appending; `rename_to` is where an interrupted recording resumed by
    /// record-missing goes when finished. `lock` keeps other ouli processes
    /// from writing the same recording until it is finished.
    Open {
        writer: RecordingWriter,
        rename_to: Option<PathBuf>,
        lock: WriterLock,
    },
}

/// The recordings of a record or record-missing server, one writer per
/// session. Sessions never wait on each other: each has its own lock.
pub struct Recorder {
    recording_dir: PathBuf,
    durability: Durability,
    /// record-missing: a session that already has a recording gets its new
    /// records appended to it; record: a new recording replaces the old one
    /// when it is complete.
    extend_existing: bool,
    sessions: DashMap<SessionName, Arc<Mutex<SessionWriter>>>,
    /// The post-write scan every recording passes before it is complete;
    /// `None` when no secret is configured.
    scan: Option<SecretScan>,
    /// Interactions answered but not recorded (an append or its sync
    /// failed): each is logged, and the run ends with an error
    /// ([`Recorder::finish_all`]), so that a lost record is never silent.
    failed: AtomicU64,
    /// What `/__ouli/metrics` reports of the writing.
    totals: RecordingTotals,
}

/// Bytes appended (per endpoint) and syncs made, counted as they happen
/// (relaxed adds) for `/__ouli/metrics`.
pub struct RecordingTotals {
    bytes_appended: [AtomicU64; crate::config::ENDPOINTS_MAX],
    syncs: AtomicU64,
}

impl RecordingTotals {
    fn new() -> RecordingTotals {
        RecordingTotals {
            bytes_appended: std::array::from_fn(|_| AtomicU64::new(0)),
            syncs: AtomicU64::new(0),
        }
    }

    /// Bytes of the records appended for `endpoint`'s interactions.
    pub fn bytes_appended(&self, endpoint: usize) -> u64 {
        self.bytes_appended
            .get(endpoint)
            .map_or(0, |bytes| bytes.load(Ordering::Relaxed))
    }

    /// `fdatasync` (every interaction, one per group commit) and `fsync`
    /// (a recording finished) calls made.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn appended(&self, endpoint: u16, bytes: u64) {
        if let Some(total) = self.bytes_appended.get(usize::from(endpoint)) {
            total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn synced(&self) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recorder {
    /// `secrets`: the configured ones, which the post-write scan looks for.
    pub fn new(
        recording_dir: PathBuf,
        durability: Durability,
        extend_existing: bool,
        secrets: &[Vec<u8>],
    ) -> Recorder {
        Recorder {
            recording_dir,
            durability,
            extend_existing,
            sessions: DashMap::new(),
            scan: SecretScan::new(secrets),
            failed: AtomicU64::new(0),
            totals: RecordingTotals::new(),
        }
    }

    /// Bytes appended and syncs made so far.
    pub fn totals(&self) -> &RecordingTotals {
        &self.totals
    }

    fn session_slot(&self, session: &SessionName) -> Arc<Mutex<SessionWriter>> {
        if let Some(slot) = self.sessions.get(session) {
            return slot.clone();
        }
        self.sessions
            .entry(session.clone())
            .or_insert_with(|| Arc::new(Mutex::new(SessionWriter::Idle)))
            .clone()
    }

    /// Starts the session's recording if it has not started, before its
    /// request is forwarded: a recording that cannot be started (a file in
    /// the way of its folder, a read-only folder) is then the request's
    /// error (500 `recording-failed`), not a record lost after the client got
    /// its answer. Blocking (creates or reads the file); a failure is logged.
    pub fn start(&self, session: &SessionName) -> Result<(), RecordingError> {
        let slot = self.session_slot(session);
        let mut state = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.open_if_idle(session, &mut state)
    }

    fn open_if_idle(
        &self,
        session: &SessionName,
        state: &mut SessionWriter,
    ) -> Result<(), RecordingError> {
        if !matches!(*state, SessionWriter::Idle) {
            return Ok(());
        }
        let path = session.recording_path(&self.recording_dir);
        match off_executor(|| open_writer(&path, self.durability, self.extend_existing)) {
            Ok((writer, rename_to, lock)) => {
                *state = SessionWriter::Open {
                    writer,
                    rename_to,
                    lock,
                };
                Ok(())
            }
            Err(error) => {
                tracing::error!("session {session}: recording failed: cannot start it: {error}");
                Err(error)
            }
        }
    }

    /// Appends one interaction to its session's recording (started by
    /// [`Recorder::start`], or here if it was finished meanwhile). Once this
    /// returns, the record is in the file (page cache at least). The client
    /// already has the response head, so a failure cannot be its answer: it
    /// is logged and counted, and the run ends with an error; `false` tells
    /// the caller to break the response off (its last bytes are not sent).
    pub fn append(&self, session: &SessionName, interaction: &Interaction) -> bool {
        let Err(error) = self.try_append(session, interaction) else {
            return true;
        };
        let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(
            "session {session}: recording failed: interaction not recorded ({failed} so far): {error}"
        );
        false
    }

    fn try_append(
        &self,
        session: &SessionName,
        interaction: &Interaction,
    ) -> Result<(), RecordingError> {
        let slot = self.session_slot(session);
        let pending = {
            let mut state = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.open_if_idle(session, &mut state)?;
            let SessionWriter::Open { writer, .. } = &mut *state else {
                unreachable!("open_if_idle leaves the session open or fails");
            };
            let (location, pending) = writer.append_deferring_sync(interaction)?;
            self.totals.appended(interaction.endpoint, location.len);
            pending
        };
        // Every-interaction: the fdatasync runs without the session's lock,
        // so the appends that come meanwhile share the next one.
        if pending.is_owed() && off_executor(|| pending.wait())? {
            self.totals.synced();
        }
        Ok(())
    }

    /// Interactions answered but not recorded so far.
    pub fn failed_appends(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Finishes one session's recording (it becomes `<name>.ouli`); `None`
    /// when the session recorded nothing. Blocking (fsync, rename).
    pub fn finish(&self, session: &SessionName) -> Result<Option<PathBuf>, RecordingError> {
        let Some((_, slot)) = self.sessions.remove(session) else {
            return Ok(None);
        };
        let mut state = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match std::mem::replace(&mut *state, SessionWriter::Idle) {
            // The lock is released only once the file is in place (or gone).
            SessionWriter::Open { writer, lock, .. } if writer.is_empty() => {
                discard(writer);
                drop(lock);
                Ok(None)
            }
            SessionWriter::Open {
                writer,
                rename_to,
                lock,
            } => {
                let synced = self.durability != Durability::None;
                let finished = finish_writer(writer, rename_to, self.scan.as_ref());
                drop(lock);
                let finished = finished?;
                if synced {
                    self.totals.synced();
                }
                Ok(Some(finished))
            }
            SessionWriter::Idle => Ok(None),
        }
    }

    /// Finishes every recording; returns one message per failure, and one
    /// for the interactions that could not be recorded, if any. Blocking.
    pub fn finish_all(&self) -> Vec<String> {
        let sessions: Vec<SessionName> = self.sessions.iter().map(|e| e.key().clone()).collect();
        let mut errors = Vec::new();
        for session in sessions {
            match self.finish(&session) {
                Ok(Some(path)) => {
                    tracing::info!("session {session}: recording complete: {}", path.display())
                }
                Ok(None) => {}
                Err(error) => errors.push(format!("session {session}: {error}")),
            }
        }
        let failed = self.failed_appends();
        if failed > 0 {
            errors.push(format!(
                "{failed} interaction(s) answered but not recorded (logged as \"recording failed\")"
            ));
        }
        errors
    }
}

impl Drop for Recorder {
    /// Dropped without `finish_all` (a panic unwinding the server): still
    /// never lose a recording.
    fn drop(&mut self) {
        let _ = self.finish_all();
    }
}

/// Runs `f`, which may block for long, without stalling the other tasks of
/// this executor thread (multi-thread runtime); elsewhere it just runs.
pub(crate) fn off_executor<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// How a session's writer starts: a fresh recording beside the old one, or
/// (record-missing) appending to what exists, the complete recording first,
/// else an interrupted one (renamed into place when finished). The
/// recording's lock is taken first: nothing is touched while another
/// process writes it.
fn open_writer(
    path: &Path,
    durability: Durability,
    extend_existing: bool,
) -> Result<(RecordingWriter, Option<PathBuf>, WriterLock), RecordingError> {
    let lock = WriterLock::acquire(path)?;
    if extend_existing {
        if path.is_file() {
            return Ok((RecordingWriter::append_to(path, durability)?, None, lock));
        }
        let partial = path.with_extension("ouli.partial");
        if partial.is_file() {
            return Ok((
                RecordingWriter::append_to(&partial, durability)?,
                Some(path.to_path_buf()),
                lock,
            ));
        }
    }
    Ok((RecordingWriter::create(path, durability)?, None, lock))
}

/// A session started (its request was forwarded) but nothing recorded, as
/// when its upstream failed: the recording in force is kept as it was, as
/// if the session had never started. A new recording's partial file goes.
fn discard(writer: RecordingWriter) {
    let created = writer.path().to_path_buf();
    let is_new = writer.is_new();
    drop(writer);
    if is_new && let Err(error) = std::fs::remove_file(&created) {
        tracing::warn!("{}: cannot remove it: {error}", created.display());
    }
}

/// Finishes a writer, its bytes scanned for secrets first (a hit removes
/// the file: it is never put in place); an interrupted recording resumed by
/// record-missing is then renamed into place.
fn finish_writer(
    writer: RecordingWriter,
    rename_to: Option<PathBuf>,
    scan: Option<&SecretScan>,
) -> Result<PathBuf, RecordingError> {
    let written = writer.finish_checked(scan)?;
    match rename_to {
        Some(target) => {
            std::fs::rename(&written, &target).map_err(|source| RecordingError::Io {
                path: written.clone(),
                source,
            })?;
            Ok(target)
        }
        None => Ok(written),
    }
}

/// What [`CaptureBody`] kept of an upstream body that ended.
#[derive(Debug, Default)]
pub struct Captured {
    /// The data frames, each with its offset after the response head.
    pub chunks: Vec<BodyChunk>,
    /// The trailer fields that ended it, in order (none for most bodies).
    pub trailers: Vec<HeaderPair>,
}

/// Called once with what was captured when the upstream body has ended;
/// returns whether the interaction was recorded.
pub type OnBodyEnd = Box<dyn FnOnce(Captured) -> bool + Send>;

/// The error a response is broken off with when its record could not be
/// written: the client sees a failed response, not a complete one that was
/// never recorded (the status line had already been sent).
#[derive(Debug, thiserror::Error)]
#[error("recording failed: the interaction could not be recorded")]
pub struct RecordingFailed;

/// The upstream body on its way to the client: every data frame is passed on
/// as it arrives and a copy kept with its arrival offset, a trailers frame
/// passed on and kept too; at the end of the body `on_end` receives the
/// copy. A client that goes away mid-body drops
/// this, and an upstream body that fails (cut, or idle past its limit) ends
/// it with an error: either way the incomplete interaction is not recorded.
pub struct CaptureBody<B: http_body::Body = hyper::body::Incoming> {
    inner: B,
    started: std::time::Instant,
    chunks: Vec<BodyChunk>,
    trailers: Vec<HeaderPair>,
    bytes_captured: usize,
    bytes_max: usize,
    on_end: Option<OnBodyEnd>,
}

impl<B: http_body::Body> CaptureBody<B> {
    pub fn new(inner: B, bytes_max: usize, on_end: OnBodyEnd) -> CaptureBody<B> {
        CaptureBody {
            inner,
            started: std::time::Instant::now(),
            chunks: Vec::new(),
            trailers: Vec::new(),
            bytes_captured: 0,
            bytes_max,
            on_end: Some(on_end),
        }
    }
}

impl<B: http_body::Body> CaptureBody<B> {
    /// Hands the copy over; `false` when it could not be recorded.
    fn end(&mut self) -> bool {
        match self.on_end.take() {
            Some(on_end) => on_end(Captured {
                chunks: std::mem::take(&mut self.chunks),
                trailers: std::mem::take(&mut self.trailers),
            }),
            None => true,
        }
    }
}

impl<B: http_body::Body> Drop for CaptureBody<B> {
    /// A body that was empty from the start is never polled: it ends here.
    /// One cut short (client gone) is not complete and is not recorded.
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            // Nothing is left to send: a failure is logged and counted only.
            let _ = self.end();
        }
    }
}

impl<B> http_body::Body for CaptureBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_captured += data.len();
                    if this.bytes_captured > this.bytes_max {
                        // Too large to record: the client still gets it all.
                        if this.on_end.take().is_some() {
                            tracing::warn!(
                                "response body over limits.response_body_bytes_max = {}: not recorded",
                                this.bytes_max
                            );
                        }
                        this.chunks.clear();
                        this.trailers.clear();
                    } else if this.on_end.is_some() {
                        let offset_us = this.started.elapsed().as_micros() as u64;
                        this.chunks.push(BodyChunk {
                            offset_us,
                            data: data.clone(),
                        });
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && this.on_end.is_some()
                {
                    this.trailers
                        .extend(crate::record::trailer_pairs(trailers, this.trailers.len()));
                }
                // hyper stops polling once a body says it has ended (a
                // content-length reached) or has sent its trailers (always
                // its last frame), so the end is seen here, not as a `None`
                // that never comes.
                if (frame.is_trailers() || this.inner.is_end_stream()) && !this.end() {
                    return std::task::Poll::Ready(Some(Err(Box::new(RecordingFailed))));
                }
            }
            std::task::Poll::Ready(None) if !this.end() => {
                return std::task::Poll::Ready(Some(Err(Box::new(RecordingFailed))));
            }
            _ => {}
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Trailer fields one recorded response keeps at most, as a header block's
/// count is bounded; past it, the rest are left out (logged).
pub const TRAILERS_MAX: usize = 256;

/// `trailers` as stored pairs, in order, up to [`TRAILERS_MAX`] counting the
/// `already` kept (a body may end with one trailers frame only, but a body
/// that is not hyper's could send several).
pub(crate) fn trailer_pairs(trailers: &http::HeaderMap, already: usize) -> Vec<HeaderPair> {
    let room = TRAILERS_MAX.saturating_sub(already);
    if trailers.len() > room {
        tracing::warn!(
            "{} trailer fields, over TRAILERS_MAX = {TRAILERS_MAX}: the rest are not recorded",
            trailers.len() + already
        );
    }
    trailers
        .iter()
        .take(room)
        .map(|(name, value)| {
            (
                bytes::Bytes::copy_from_slice(name.as_str().as_bytes()),
                bytes::Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{TRAILERS_MAX, trailer_pairs};

    #[test]
    fn trailers_past_their_limit_are_left_out() {
        let mut trailers = http::HeaderMap::new();
        for i in 0..TRAILERS_MAX + 44 {
            let name = http::HeaderName::from_bytes(format!("x-t{i}").as_bytes()).unwrap();
            trailers.insert(name, http::HeaderValue::from_static("v"));
        }
        assert_eq!(trailer_pairs(&trailers, 0).len(), TRAILERS_MAX);
        assert_eq!(trailer_pairs(&trailers, TRAILERS_MAX - 6).len(), 6);
        assert!(trailer_pairs(&trailers, TRAILERS_MAX).is_empty());
        let one: http::HeaderMap = [(
            http::header::HeaderName::from_static("grpc-status"),
            http::HeaderValue::from_static("0"),
        )]
        .into_iter()
        .collect();
        assert_eq!(
            trailer_pairs(&one, 0),
            [(
                bytes::Bytes::from_static(b"grpc-status"),
                bytes::Bytes::from_static(b"0")
            )]
        );
    }
}
