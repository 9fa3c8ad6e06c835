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
    pub fn start(recording_dir: PathBuf, durability: Durability) -> WriterHandle {
        let (sender, receiver) = mpsc::channel::<WriterMessage>();
        std::thread::Builder::new()
            .name("ouli-writer".into())
            .spawn(move || writer_loop(recording_dir, durability, receiver))
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

fn writer_loop(dir: PathBuf, durability: Durability, receiver: mpsc::Receiver<WriterMessage>) {
    let mut writers: HashMap<SessionName, RecordingWriter> = HashMap::new();
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
                    match RecordingWriter::create(&path, durability) {
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
                let writer = writers.get_mut(&session).expect("inserted above");
                if let Err(error) = writer.append(&interaction) {
                    tracing::error!("session {session}: append failed: {error}");
                }
            }
            WriterMessage::Finish(session, reply) => {
                let result = match writers.remove(&session) {
                    Some(writer) => writer.finish().map(Some).map_err(|e| e.to_string()),
                    None => Ok(None),
                };
                failed.remove(&session);
                let _ = reply.send(result);
            }
            WriterMessage::Shutdown(reply) => {
                let mut errors = Vec::new();
                for (session, writer) in writers.drain() {
                    match writer.finish() {
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
    for (_, writer) in writers.drain() {
        let _ = writer.finish();
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
