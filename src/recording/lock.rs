//! One writer per recording across processes: [`WriterLock`] is an advisory
//! `flock(2)` on `<session>.ouli.lock`, beside the recording, held from the
//! moment a record run starts writing a session until it has finished it.
//!
//! Two `ouli record` (or `record-missing`) processes on one recording dir
//! would otherwise each write `<session>.ouli.partial` and rename it over the
//! other's: the lock makes the second one's start fail with
//! [`RecordingError::Locked`], naming the file and the process that holds it.
//! Readers (`ouli replay`) take no lock: they map finished files only.
//!
//! The lock file is removed when the lock is released, so that a recording
//! dir is left as it was. Removing it opens a race that the acquire loop
//! closes: a process that opened the file just before it was removed, and
//! locks it just after, holds a lock on a file no longer at that path; it
//! sees that (the path's inode is not its file's) and tries again, at most
//! [`LOCK_ATTEMPTS_MAX`] times.
//!
//! The kernel drops an `flock` when its process dies, `kill -9` included: a
//! crashed writer never leaves a recording locked; a leftover lock file is
//! taken over by the next writer.

use super::RecordingError;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Attempts to lock a lock file that keeps being replaced under us (each
/// time, another writer released it between our open and our lock).
pub const LOCK_ATTEMPTS_MAX: u32 = 8;

/// Bytes of the holder's pid read from a lock file (a decimal `u32` and a
/// newline fit many times over).
const HOLDER_BYTES_MAX: u64 = 32;

/// Suffix of the lock file, appended to the recording's path.
pub const LOCK_SUFFIX: &str = ".lock";

/// A held lock on one recording; released (and its file removed) on drop.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Locks `recording` (`<dir>/<session>.ouli`) for writing, creating its
    /// folder if needed. Fails with [`RecordingError::Locked`] at once,
    /// without waiting, when another process holds it.
    pub fn acquire(recording: &Path) -> Result<WriterLock, RecordingError> {
        let path = lock_path(recording);
        let io = |source| RecordingError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        for _ in 0..LOCK_ATTEMPTS_MAX {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            // Fully qualified: newer toolchains have an inherent
            // `File::try_lock` that would shadow fs4's.
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => {
                    return Err(RecordingError::Locked {
                        path: recording.to_path_buf(),
                        holder: read_holder(&mut file),
                    });
                }
                Err(fs4::TryLockError::Error(source)) => return Err(io(source)),
            }
            if still_at_path(&file, &path) {
                write_holder(&mut file).map_err(io)?;
                return Ok(WriterLock { file, path });
            }
        }
        Err(io(std::io::Error::other(format!(
            "lock file replaced {LOCK_ATTEMPTS_MAX} times while locking it"
        ))))
    }
}

impl Drop for WriterLock {
    /// Removes the file while still holding the lock, then unlocks (by
    /// closing): see the module doc for why that order.
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("{}: cannot remove it: {error}", self.path.display());
        }
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// `<recording>.lock`.
pub fn lock_path(recording: &Path) -> PathBuf {
    let mut path = recording.as_os_str().to_owned();
    path.push(LOCK_SUFFIX);
    PathBuf::from(path)
}

/// Whether the file at `path` is still the one we locked (not removed, nor
/// replaced by a new one, by a writer that released it meanwhile).
fn still_at_path(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(ours), Ok(there)) => ours.dev() == there.dev() && ours.ino() == there.ino(),
        _ => false,
    }
}

/// Our pid in the lock file, for the error a second writer reports.
fn write_holder(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// The holder's pid, if its lock file says (it may not have written it yet).
fn read_holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    std::io::Read::take(&mut *file, HOLDER_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_recording_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("nested/a.ouli");
        let first = WriterLock::acquire(&recording).unwrap();
        assert!(lock_path(&recording).is_file());
        // flock locks belong to the open file description: a second open in
        // this process conflicts as another process would.
        match WriterLock::acquire(&recording) {
            Err(RecordingError::Locked { path, holder }) => {
                assert_eq!(path, recording);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(!lock_path(&recording).exists(), "lock file left behind");
        let again = WriterLock::acquire(&recording).unwrap();
        drop(again);
    }

    #[test]
    fn a_leftover_lock_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let recording = dir.path().join("b.ouli");
        std::fs::write(lock_path(&recording), "999999\n").unwrap();
        let lock = WriterLock::acquire(&recording).unwrap();
        let holder = std::fs::read_to_string(lock_path(&recording)).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        drop(lock);
    }
}
