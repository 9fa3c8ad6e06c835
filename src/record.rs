//! Record path: the upstream response streams to the client frame by frame
//! while it is captured; at its end the interaction is decoded, redacted and
//! handed to the writer thread, which appends it to the session's recording.
//!
//! Writes never run on an async executor thread: one dedicated thread owns
//! every [`RecordingWriter`] (a write is a `write(2)` of one record, so one
//! thread keeps up with the proxy; it also serializes appends per file
//! without any lock).

use crate::interaction::{BodyChunk, Interaction};
use crate::recording::{Durability, RecordingWriter};
use crate::session_name::SessionName;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;

/// One interaction to append to a session's recording.
pub struct SessionWriteRequest {
    pub session: SessionName,
    pub interaction: Interaction,
}

/// Messages to the writer thread.
pub enum WriterMessage {
    Append(Box<SessionWriteRequest>),
    /// Finish one session's recording (it becomes `<name>.ouli`).
    Finish(SessionName, mpsc::Sender<Result<Option<PathBuf>, String>>),
    /// Finish every recording and stop.
    Shutdown(mpsc::Sender<Vec<String>>),
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct WriterHandle {
    sender: mpsc::Sender<WriterMessage>,
}

impl WriterHandle {
    /// Starts the writer thread for `recording_dir`.
    /// With `extend_existing` (record-missing), a session that already has a
    /// recording gets its new records appended to it; otherwise (record) a
    /// new recording replaces the old one when it is complete.
    pub fn start(
        recording_dir: PathBuf,
        durability: Durability,
        extend_existing: bool,
    ) -> WriterHandle {
        let (sender, receiver) = mpsc::channel::<WriterMessage>();
        std::thread::Builder::new()
            .name("ouli-writer".into())
            .spawn(move || writer_loop(recording_dir, durability, extend_existing, receiver))
            .expect("spawning the writer thread");
        WriterHandle { sender }
    }

    pub fn append(&self, session: SessionName, interaction: Interaction) {
        let _ = self
            .sender
            .send(WriterMessage::Append(Box::new(SessionWriteRequest {
                session,
                interaction,
            })));
    }

    /// Finishes one session; blocking (call from spawn_blocking).
    pub fn finish(&self, session: SessionName) -> Result<Option<PathBuf>, String> {
        let (tx, rx) = mpsc::channel();
        self.sender
            .send(WriterMessage::Finish(session, tx))
            .map_err(|_| "writer thread stopped".to_string())?;
        rx.recv().map_err(|_| "writer thread stopped".to_string())?
    }

    /// Finishes every recording; returns the errors. Blocking.
    pub fn shutdown(&self) -> Vec<String> {
        let (tx, rx) = mpsc::channel();
        if self.sender.send(WriterMessage::Shutdown(tx)).is_err() {
            return vec!["writer thread stopped".into()];
        }
        rx.recv()
            .unwrap_or_else(|_| vec!["writer thread stopped".into()])
    }
}

/// How a session's writer starts: a fresh recording beside the old one, or
/// (record-missing) appending to what exists, the complete recording first,
/// else an interrupted one (renamed into place when finished).
fn open_writer(
    path: &std::path::Path,
    durability: Durability,
    extend_existing: bool,
) -> Result<(RecordingWriter, Option<PathBuf>), crate::recording::RecordingError> {
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
) -> Result<PathBuf, crate::recording::RecordingError> {
    let written = writer.finish()?;
    match rename_to {
        Some(target) => {
            std::fs::rename(&written, &target).map_err(|source| {
                crate::recording::RecordingError::Io {
                    path: written.clone(),
                    source,
                }
            })?;
            Ok(target)
        }
        None => Ok(written),
    }
}

fn writer_loop(
    dir: PathBuf,
    durability: Durability,
    extend_existing: bool,
    receiver: mpsc::Receiver<WriterMessage>,
) {
    let mut writers: HashMap<SessionName, (RecordingWriter, Option<PathBuf>)> = HashMap::new();
    // A session whose writer failed: logged once, its appends dropped.
    let mut failed: HashMap<SessionName, String> = HashMap::new();
    while let Ok(message) = receiver.recv() {
        match message {
            WriterMessage::Append(request) => {
                let SessionWriteRequest {
                    session,
                    interaction,
                } = *request;
                if failed.contains_key(&session) {
                    continue;
                }
                if !writers.contains_key(&session) {
                    let path = session.recording_path(&dir);
                    match open_writer(&path, durability, extend_existing) {
                        Ok(writer) => {
                            writers.insert(session.clone(), writer);
                        }
                        Err(error) => {
                            tracing::error!(
                                "session {session}: cannot start its recording: {error}"
                            );
                            failed.insert(session, error.to_string());
                            continue;
                        }
                    }
                }
                let (writer, _) = writers.get_mut(&session).expect("inserted above");
                if let Err(error) = writer.append(&interaction) {
                    tracing::error!("session {session}: append failed: {error}");
                }
            }
            WriterMessage::Finish(session, reply) => {
                let result = match writers.remove(&session) {
                    Some((writer, rename_to)) => finish_writer(writer, rename_to)
                        .map(Some)
                        .map_err(|e| e.to_string()),
                    None => Ok(None),
                };
                failed.remove(&session);
                let _ = reply.send(result);
            }
            WriterMessage::Shutdown(reply) => {
                let mut errors = Vec::new();
                for (session, (writer, rename_to)) in writers.drain() {
                    match finish_writer(writer, rename_to) {
                        Ok(path) => tracing::info!(
                            "session {session}: recording complete: {}",
                            path.display()
                        ),
                        Err(error) => errors.push(format!("session {session}: {error}")),
                    }
                }
                let _ = reply.send(errors);
                return;
            }
        }
    }
    // Every handle dropped without a shutdown: still never lose a recording.
    for (_, (writer, rename_to)) in writers.drain() {
        let _ = finish_writer(writer, rename_to);
    }
}

/// Called once with the captured chunks when the upstream body has ended.
pub type OnBodyEnd = Box<dyn FnOnce(Vec<BodyChunk>) + Send>;

/// The upstream body on its way to the client: every data frame is passed on
/// as it arrives and a copy kept with its arrival offset; at the end of the
/// body `on_end` receives the copy. A client that goes away mid-body drops
/// this, and the incomplete interaction is not recorded.
pub struct CaptureBody {
    inner: hyper::body::Incoming,
    started: std::time::Instant,
    chunks: Vec<BodyChunk>,
    bytes_captured: usize,
    bytes_max: usize,
    on_end: Option<OnBodyEnd>,
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
        }
    }
}

impl CaptureBody {
    fn end(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end(std::mem::take(&mut self.chunks));
        }
    }
}

impl Drop for CaptureBody {
    /// A body that was empty from the start is never polled: it ends here.
    /// One cut short (client gone) is not complete and is not recorded.
    fn drop(&mut self) {
        if http_body::Body::is_end_stream(&self.inner) {
            self.end();
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
                if this.inner.is_end_stream() {
                    this.end();
                }
            }
            std::task::Poll::Ready(None) => this.end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
