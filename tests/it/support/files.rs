//! What ended up on disk.

use ouli::recording::{ReadBackend, Recording};
use std::path::{Path, PathBuf};

/// Every file under `dir`, recursively, with its bytes (none when `dir` is
/// missing).
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files
}

/// Whether `needle` is in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// No file under `dir` holds `needle`; returns how many files there are.
pub fn assert_nowhere_under(dir: &Path, needle: &[u8]) -> usize {
    let files = files_under(dir);
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, needle),
            "{} holds {:?}",
            path.display(),
            String::from_utf8_lossy(needle)
        );
    }
    files.len()
}

/// Every interaction of the recording at `path`, in recorded order.
pub fn interactions(path: &Path) -> Vec<ouli::interaction::Interaction> {
    let recording = Recording::open(path, ReadBackend::Mmap)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    recording
        .iter()
        .map(|view| view.unwrap().to_interaction().unwrap())
        .collect()
}

/// The interactions of the default session recorded under `<dir>/recordings`.
pub fn recorded(dir: &Path) -> Vec<ouli::interaction::Interaction> {
    interactions(&dir.join("recordings/default.ouli"))
}
