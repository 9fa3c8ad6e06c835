//! The one `unsafe` of the crate: mapping a recording file.

use bytes::Bytes;
use std::fs::File;

/// Maps `file` read-only and wraps the mapping in `Bytes`, so that every body
/// handed out points into it and keeps it alive.
pub fn map(file: &File) -> std::io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: a mapped file must not change under the mapping. ouli never
    // rewrites a byte of a recording once written (append-only, rfcs/0001): a
    // writer only appends past the length mapped here, and cuts a torn tail
    // only before any reader has mapped it (record-missing opens its writer
    // first). Another process truncating the file under us would make reads
    // of the lost pages fault (SIGBUS); that is the documented limit, as for
    // every mmap reader (ripgrep, git).
    let mmap = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(mmap))
}
