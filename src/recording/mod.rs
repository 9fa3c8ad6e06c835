//! The recording file: `<recording-dir>/<session>.ouli` (layout: rfcs/0001).
//!
//! CONTRACT (skeleton — the recording helper replaces the bodies, keeps the API;
//! additions are fine, changes must be told to the lead).
//!
//! * [`RecordingWriter`] — begin a session's recording (written beside the old
//!   one as `<session>.ouli.partial`, renamed over it by [`RecordingWriter::finish`]),
//!   append interactions, finish (index + fsync per [`Durability`]). Synchronous:
//!   callers run it off the async executor.
//! * [`Recording`] — open (O(1) with a persisted index, rebuilt when missing or
//!   stale), look up by fingerprint (no allocation), read a record as a
//!   [`RecordView`] whose bodies are `Bytes` pointing into the map, iterate in
//!   recorded order, [`Recording::refresh`] to see records appended since open.

use crate::interaction::{Fingerprint, Interaction};
use bytes::Bytes;
use std::path::{Path, PathBuf};

/// Everything that can go wrong with a recording file. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: not an ouli recording (bad magic)")]
    NotARecording { path: PathBuf },
    #[error(
        "{path}: recording format version {found} is not supported (this ouli reads {supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: truncated header ({len} bytes)")]
    TruncatedHeader { path: PathBuf, len: u64 },
    #[error("{path}: damaged record at offset {offset}: {what}")]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: index is invalid: {what}")]
    BadIndex { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// When the writer calls `fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Never: data reaches the page cache (survives `kill -9`, not power loss).
    None,
    /// Once, when the recording is finished.
    #[default]
    OnClose,
    /// After every appended interaction.
    EveryInteraction,
}

/// Which read backend a [`Recording`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadBackend {
    /// Memory-mapped file, zero-copy bodies.
    #[default]
    Mmap,
    /// io_uring reads into owned buffers; falls back to mmap (logged) where
    /// the kernel refuses io_uring.
    IoUring,
}

/// Where a record sits in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordLocation {
    pub offset: u64,
    pub len: u64,
}

/// Writes one session's recording.
pub struct RecordingWriter {
    _private: (),
}

impl RecordingWriter {
    /// Begins a new recording for `final_path` (`<dir>/<session>.ouli`): writes
    /// to `<final_path>.partial`, creating parent folders. The old recording at
    /// `final_path`, if any, stays untouched until [`Self::finish`].
    pub fn create(final_path: &Path, durability: Durability) -> Result<Self, RecordingError> {
        let _ = (final_path, durability);
        todo!()
    }

    /// Re-opens an existing recording to append to it (record-missing mode):
    /// cuts a torn tail, then appends after the last complete record.
    pub fn append_to(path: &Path, durability: Durability) -> Result<Self, RecordingError> {
        let _ = (path, durability);
        todo!()
    }

    /// Appends one interaction; once this returns, the record is in the file
    /// (page cache at least) and survives `kill -9`.
    pub fn append(&mut self, interaction: &Interaction) -> Result<RecordLocation, RecordingError> {
        let _ = interaction;
        todo!()
    }

    /// Number of interactions in the file.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Writes the index, syncs per durability, and (for `create`) renames the
    /// partial file over the final path. Returns the final path.
    pub fn finish(self) -> Result<PathBuf, RecordingError> {
        todo!()
    }
}

/// An open recording: shared by all connections of a session (`Send + Sync`).
pub struct Recording {
    _private: (),
}

impl Recording {
    pub fn open(path: &Path, backend: ReadBackend) -> Result<Recording, RecordingError> {
        let _ = (path, backend);
        todo!()
    }

    /// A recording held in memory (e.g. built from a test-server directory);
    /// `name` is used in errors.
    pub fn from_bytes(name: PathBuf, bytes: Bytes) -> Result<Recording, RecordingError> {
        let _ = (name, bytes);
        todo!()
    }

    pub fn path(&self) -> &Path {
        todo!()
    }

    /// Number of interactions visible.
    pub fn len(&self) -> usize {
        todo!()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One index probe; never allocates.
    pub fn lookup(&self, fingerprint: &Fingerprint) -> Option<RecordLocation> {
        let _ = fingerprint;
        todo!()
    }

    /// Reads a record. Its CRC is checked the first time it is read; a
    /// damaged record is an error naming file and offset.
    pub fn read(&self, location: RecordLocation) -> Result<RecordView, RecordingError> {
        let _ = location;
        todo!()
    }

    /// `lookup` + `read`.
    pub fn get(&self, fingerprint: &Fingerprint) -> Result<Option<RecordView>, RecordingError> {
        match self.lookup(fingerprint) {
            Some(loc) => self.read(loc).map(Some),
            None => Ok(None),
        }
    }

    /// Every interaction in recorded order; a damaged record yields its error
    /// and iteration goes on.
    pub fn iter(&self) -> impl Iterator<Item = Result<RecordView, RecordingError>> + '_ {
        std::iter::empty()
    }

    /// Picks up records appended since open (by this process or another).
    /// Returns whether anything new became visible.
    pub fn refresh(&self) -> Result<bool, RecordingError> {
        todo!()
    }
}

/// A borrowed view of one record: accessors parse lazily; bodies are `Bytes`
/// slices of the mapping (mmap backend) or of one read buffer (io_uring).
/// Cloning is a reference-count increment.
#[derive(Clone)]
pub struct RecordView {
    _private: (),
}

impl RecordView {
    pub fn location(&self) -> RecordLocation {
        todo!()
    }
    pub fn fingerprint(&self) -> Fingerprint {
        todo!()
    }
    pub fn chain_link(&self) -> Fingerprint {
        todo!()
    }
    pub fn canonical(&self) -> &[u8] {
        todo!()
    }
    pub fn is_websocket(&self) -> bool {
        todo!()
    }
    pub fn response_status(&self) -> u16 {
        todo!()
    }
    /// Response headers in recorded order.
    pub fn response_headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        std::iter::empty()
    }
    /// Response body chunks: (arrival offset µs, bytes pointing into the map).
    pub fn response_chunks(&self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        std::iter::empty()
    }
    /// Sum of the chunk lengths.
    pub fn response_body_len(&self) -> u64 {
        todo!()
    }
    /// The whole interaction in owned form (allocates; not for the hot path).
    pub fn to_interaction(&self) -> Result<Interaction, RecordingError> {
        todo!()
    }
}
