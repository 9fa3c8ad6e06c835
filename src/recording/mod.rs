//! The recording file: `<recording-dir>/<session>.ouli` (layout: rfcs/0001).
//!
//! * [`RecordingWriter`] — begin a session's recording (written beside the old
//!   one as `<session>.ouli.partial`, renamed over it by [`RecordingWriter::finish`]),
//!   append interactions, finish (index + fsync per [`Durability`]). Synchronous:
//!   callers run it off the async executor.
//! * [`Recording`] — open (O(1) with a persisted index, rebuilt when missing or
//!   stale), look up by fingerprint (no allocation), read a record as a
//!   [`RecordView`] whose bodies are `Bytes` pointing into the map, iterate in
//!   recorded order, [`Recording::refresh`] to see records appended since open.
//! * Read backends ([`ReadBackend`]): `mmap.rs` maps the file (zero-copy, the
//!   default); `uring.rs` reads it into an owned buffer with io_uring, probed
//!   once per process, falling back to mmap (logged) where the kernel refuses.
//! * `format.rs` holds the bytes: zerocopy structs, payload encoding, the
//!   record walker that finds torn tails and steps over damage.
//! * [`WriterLock`] (`lock.rs`) — one writer per recording across
//!   processes: an advisory lock on `<session>.ouli.lock`.
//! * `verify.rs` — `ouli verify`: every record, the index and the footer
//!   checked, each problem named with its offset.

mod format;
mod lock;
mod mmap;
mod reader;
pub mod secret_scan;
mod uring;
mod verify;
mod writer;

pub use format::{
    FORMAT_VERSION, FORMAT_VERSION_1, FORMAT_VERSION_2, FORMAT_VERSION_OLDEST, MAGIC,
};
pub use lock::{LOCK_ATTEMPTS_MAX, WriterLock, lock_path};
pub use reader::{RecordView, Recording};
pub use verify::{Damage, Expect, Verified, verify_bytes, verify_file};
pub use writer::{PendingSync, RecordingWriter, SyncPoint, encode_recording};

/// Whether io_uring works for this process (a ring was set up and a read
/// through it completed; probed once). Where it does not,
/// [`ReadBackend::IoUring`] falls back to mmap.
pub fn io_uring_available() -> bool {
    uring::probe().is_ok()
}

use std::path::PathBuf;

/// Everything that can go wrong with a recording file. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: not an ouli recording (bad magic)")]
    NotARecording { path: PathBuf },
    #[error(
        "{path}: recording format version {found} is not supported (this ouli reads versions 1 to {supported})"
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
    #[error("{path}: interaction not recorded: {what}")]
    RecordTooLarge { path: PathBuf, what: String },
    #[error("{path}: index is invalid: {what}")]
    BadIndex { path: PathBuf, what: String },
    /// The post-write scan found a secret ([`secret_scan`]): the file was
    /// removed, not completed.
    #[error("{path}: a secret is in the written recording; it was removed, not completed: {hits}")]
    SecretFound { path: PathBuf, hits: String },
    /// Another process writes this recording ([`WriterLock`]): the
    /// operator's to fix (two record runs on one recording dir).
    #[error(
        "{path}: recording is held by another ouli process{} (one writer per recording; stop the other record run or give this one another --recording-dir)",
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, holder: Option<u32> },
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
