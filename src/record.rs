//! Record path: the upstream response streams to the client frame by frame
//! while it is captured; at its end the interaction is decoded, redacted and
//! handed to the writer thread, and the last frame reaches the client only
//! once the writer says the record is in the file.
//!
//! One thread owns every [`RecordingWriter`]: no write, `fsync` or file open
//! ever blocks an executor thread (under writeback pressure a `write(2)` to
//! the page cache can stall for milliseconds, and there are as many executor
//! threads as cores). The writer drains what has queued up and writes each
//! session's records with one `write(2)` (and with `every-interaction`, one
//! `fdatasync`): under load, records go to disk in batches, and the thread
//! sleeps and wakes once per batch, not once per interaction. Holding the
//! last frame until the record is written makes "completed interactions
//! survive `kill -9`" exact, and bounds the queue: each connection has at
//! most one record in it.

use crate::interaction::{BodyChunk, Interaction};
use crate::recording::{Durability, RecordingError, RecordingWriter};
use crate::session_name::SessionName;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Messages taken from the queue in one go, at most: bounds the batch
/// written with one `write(2)` (and the acknowledgements it delays).
pub const BATCH_MESSAGES_MAX: usize = 256;

/// Resolves once the record is in the file (or its append failed, logged).
pub type AppendDone = tokio::sync::oneshot::Receiver<()>;

enum WriterMessage {
    Append {
        session: SessionName,
        interaction: Box<Interaction>,
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// Finish one session's recording (it becomes `<name>.ouli`).
    Finish(
        SessionName,
        mpsc::Sender<Result<Option<PathBuf>, RecordingError>>,
    ),
    /// Finish every recording (the thread goes on serving).
    FinishAll(mpsc::Sender<Vec<String>>),
}

/// One session's writer, or why it has none.
enum SessionWriter {
    /// Appending; `rename_to` is where an interrupted recording resumed by
    /// record-missing goes when finished.
    Open {
        writer: RecordingWriter,
        rename_to: Option<PathBuf>,
    },
    /// Starting its recording failed: logged once, its appends dropped until
    /// the session is finished.
    Failed,
}

/// The recordings of a record or record-missing server: a handle to the
/// writer thread.
pub struct Recorder {
    sender: Option<mpsc::Sender<WriterMessage>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Starts the writer thread for `recording_dir`. With `extend_existing`
    /// (record-missing), a session that already has a recording gets its new
    /// records appended to it; otherwise (record) a new recording replaces
    /// the old one when it is complete.
    pub fn new(recording_dir: PathBuf, durability: Durability, extend_existing: bool) -> Recorder {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ouli-writer".into())
            .spawn(move || writer_loop(recording_dir, durability, extend_existing, receiver))
            .expect("spawning the writer thread");
        Recorder {
            sender: Some(sender),
            thread: Some(thread),
        }
    }

    fn send(&self, message: WriterMessage) -> Result<(), ()> {
        let sender = self.sender.as_ref().ok_or(())?;
        sender.send(message).map_err(|_| ())
    }

    /// Queues one interaction for its session's recording (started at the
    /// session's first interaction). Errors are logged by the writer, never
    /// returned: the client already has its answer but for the last frame,
    /// and one failed append must not stop the others.
    pub fn append(&self, session: SessionName, interaction: Interaction) -> AppendDone {
        let (done, waiting) = tokio::sync::oneshot::channel();
        let message = WriterMessage::Append {
            session,
            interaction: Box::new(interaction),
            done,
        };
        if self.send(message).is_err() {
            tracing::error!("the writer thread has stopped: an interaction was not recorded");
        }
        waiting
    }

    /// Finishes one session's recording (it becomes `<name>.ouli`); `None`
    /// when the session recorded nothing. Blocking (fsync, rename).
    pub fn finish(&self, session: &SessionName) -> Result<Option<PathBuf>, String> {
        let (reply, answer) = mpsc::channel();
        self.send(WriterMessage::Finish(session.clone(), reply))
            .map_err(|()| "the writer thread has stopped".to_string())?;
        answer
            .recv()
            .map_err(|_| "the writer thread has stopped".to_string())?
            .map_err(|error| error.to_string())
    }

    /// Finishes every recording; returns one message per failure. Blocking.
    pub fn finish_all(&self) -> Vec<String> {
        let (reply, answer) = mpsc::channel();
        if self.send(WriterMessage::FinishAll(reply)).is_err() {
            return vec!["the writer thread has stopped".into()];
        }
        answer
            .recv()
            .unwrap_or_else(|_| vec!["the writer thread has stopped".into()])
    }
}

impl Drop for Recorder {
    /// Dropped without `finish_all` (a panic unwinding the server): the
    /// writer thread finishes what it holds before it ends.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn writer_loop(
    dir: PathBuf,
    durability: Durability,
    extend_existing: bool,
    receiver: mpsc::Receiver<WriterMessage>,
) {
    let mut sessions: HashMap<SessionName, SessionWriter> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH_MESSAGES_MAX);
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < BATCH_MESSAGES_MAX {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for message in batch.drain(..) {
            match message {
                WriterMessage::Append {
                    session,
                    interaction,
                    done,
                } => appends.push((session, interaction, done)),
                WriterMessage::Finish(session, reply) => {
                    // In queue order: what was queued before is in.
                    append_batch(
                        &dir,
                        durability,
                        extend_existing,
                        &mut sessions,
                        &mut appends,
                    );
                    let result = match sessions.remove(&session) {
                        Some(SessionWriter::Open { writer, rename_to }) => {
                            finish_writer(writer, rename_to).map(Some)
                        }
                        Some(SessionWriter::Failed) | None => Ok(None),
                    };
                    let _ = reply.send(result);
                }
                WriterMessage::FinishAll(reply) => {
                    append_batch(
                        &dir,
                        durability,
                        extend_existing,
                        &mut sessions,
                        &mut appends,
                    );
                    let _ = reply.send(finish_all(&mut sessions));
                }
            }
        }
        append_batch(
            &dir,
            durability,
            extend_existing,
            &mut sessions,
            &mut appends,
        );
    }
    // Every handle dropped: still never lose a recording.
    for error in finish_all(&mut sessions) {
        tracing::error!("{error}");
    }
}

/// Writes the queued appends, one `append_all` per session, in queue order
/// within each session, then says so to every waiting client.
fn append_batch(
    dir: &Path,
    durability: Durability,
    extend_existing: bool,
    sessions: &mut HashMap<SessionName, SessionWriter>,
    appends: &mut Vec<(
        SessionName,
        Box<Interaction>,
        tokio::sync::oneshot::Sender<()>,
    )>,
) {
    if appends.is_empty() {
        return;
    }
    // Sessions in order of first appearance; most batches hold one.
    let mut order: Vec<&SessionName> = Vec::new();
    for (session, _, _) in appends.iter() {
        if !order.contains(&session) {
            order.push(session);
        }
    }
    for session in order {
        let writer = match sessions.get_mut(session) {
            Some(writer) => writer,
            None => {
                let path = session.recording_path(dir);
                let started = match open_writer(&path, durability, extend_existing) {
                    Ok((writer, rename_to)) => SessionWriter::Open { writer, rename_to },
                    Err(error) => {
                        tracing::error!("session {session}: cannot start its recording: {error}");
                        SessionWriter::Failed
                    }
                };
                sessions.entry(session.clone()).or_insert(started)
            }
        };
        let SessionWriter::Open { writer, .. } = writer else {
            continue;
        };
        let interactions: Vec<&Interaction> = appends
            .iter()
            .filter(|(s, _, _)| s == session)
            .map(|(_, interaction, _)| &**interaction)
            .collect();
        for result in writer.append_all(&interactions) {
            if let Err(error) = result {
                tracing::error!("session {session}: append failed: {error}");
            }
        }
    }
    for (_, _, done) in appends.drain(..) {
        let _ = done.send(());
    }
}

fn finish_all(sessions: &mut HashMap<SessionName, SessionWriter>) -> Vec<String> {
    let mut errors = Vec::new();
    for (session, state) in sessions.drain() {
        let SessionWriter::Open { writer, rename_to } = state else {
            continue;
        };
        match finish_writer(writer, rename_to) {
            Ok(path) => {
                tracing::info!("session {session}: recording complete: {}", path.display())
            }
            Err(error) => errors.push(format!("session {session}: {error}")),
        }
    }
    errors
}

/// How a session's writer starts: a fresh recording beside the old one, or
/// (record-missing) appending to what exists, the complete recording first,
/// else an interrupted one (renamed into place when finished).
fn open_writer(
    path: &Path,
    durability: Durability,
    extend_existing: bool,
) -> Result<(RecordingWriter, Option<PathBuf>), RecordingError> {
    if extend_existing {
        if path.is_file() {
            return Ok((RecordingWriter::append_to(path, durability)?, None));
        }
        let partial = path.with_extension("ouli.partial");
        if partial.is_file() {
            return Ok((
                RecordingWriter::append_to(&partial, durability)?,
                Some(path.to_path_buf()),
            ));
        }
    }
    Ok((RecordingWriter::create(path, durability)?, None))
}

/// Finishes a writer; an interrupted recording resumed by record-missing is
/// then renamed into place.
fn finish_writer(
    writer: RecordingWriter,
    rename_to: Option<PathBuf>,
) -> Result<PathBuf, RecordingError> {
    let written = writer.finish()?;
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

/// Called once with the captured chunks when the upstream body has ended;
/// the last frame is held until what it returns resolves.
pub type OnBodyEnd = Box<dyn FnOnce(Vec<BodyChunk>) -> Option<AppendDone> + Send>;

/// The upstream body on its way to the client: every data frame is passed on
/// as it arrives and a copy kept with its arrival offset; at the end of the
/// body `on_end` receives the copy, and the last frame (or the end) is held
/// until the record is written. A client that goes away mid-body drops
/// this, and the incomplete interaction is not recorded.
pub struct CaptureBody {
    inner: hyper::body::Incoming,
    started: std::time::Instant,
    chunks: Vec<BodyChunk>,
    bytes_captured: usize,
    bytes_max: usize,
    on_end: Option<OnBodyEnd>,
    /// The record is on its way to the file: `held` (the last frame, or
    /// `None` for the end) is released when it is in.
    waiting: Option<AppendDone>,
    held: Option<http_body::Frame<bytes::Bytes>>,
}

impl CaptureBody {
    pub fn new(inner: hyper::body::Incoming, bytes_max: usize, on_end: OnBodyEnd) -> CaptureBody {
        CaptureBody {
            inner,
            started: std::time::Instant::now(),
            chunks: Vec::new(),
            bytes_captured: 0,
            bytes_max,
            on_end: Some(on_end),
            waiting: None,
            held: None,
        }
    }

    fn end(&mut self) -> Option<AppendDone> {
        let on_end = self.on_end.take()?;
        on_end(std::mem::take(&mut self.chunks))
    }
}

impl Drop for CaptureBody {
    /// A body that was empty from the start is never polled: it ends here
    /// (nothing to hold back). One cut short (client gone) is not complete
    /// and is not recorded.
    fn drop(&mut self) {
        if self.waiting.is_none() && http_body::Body::is_end_stream(&self.inner) {
            let _ = self.end();
        }
    }
}

impl http_body::Body for CaptureBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        if let Some(waiting) = this.waiting.as_mut() {
            // Written, or the writer is gone (logged): release either way.
            let _ = std::task::ready!(std::pin::Pin::new(waiting).poll(cx));
            this.waiting = None;
            return Poll::Ready(this.held.take().map(Ok));
        }
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
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
                    } else if this.on_end.is_some() {
                        let offset_us = this.started.elapsed().as_micros() as u64;
                        this.chunks.push(BodyChunk {
                            offset_us,
                            data: data.clone(),
                        });
                    }
                }
                // hyper stops polling once a body says it has ended (a
                // content-length reached), so the end is seen here, not as
                // a `None` that never comes.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            _ => false,
        };
        if !ended {
            return polled;
        }
        let Some(waiting) = this.end() else {
            return polled;
        };
        this.held = match polled {
            Poll::Ready(Some(Ok(frame))) => Some(frame),
            _ => None,
        };
        this.waiting = Some(waiting);
        // Poll it now: registers the waker, or releases at once.
        std::pin::Pin::new(this).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.held {
            // What is held is all that is left.
            Some(frame) => {
                let left = frame.data_ref().map_or(0, |data| data.len() as u64);
                http_body::SizeHint::with_exact(left)
            }
            None if self.waiting.is_some() => http_body::SizeHint::with_exact(0),
            None => self.inner.size_hint(),
        }
    }
}
