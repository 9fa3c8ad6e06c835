//! Mapping a recording file: the mmap backend's one `unsafe` (the io_uring
//! backend's submissions are in uring.rs).

use bytes::Bytes;
use std::fs::File;

/// Maps `file` read-only and wraps the mapping in `Bytes`, so that every body
/// handed out points into it and keeps it alive.
pub fn map(file: &File) -> std::io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: `Mmap::map` is unsafe because the bytes behind the mapping
    // may change, or vanish, while Rust holds `&[u8]` into them. For a
    // recording (rfcs/0001, "Read backends"):
    // * Bytes are never rewritten in place: writers only append past the
    //   current end. A reader touches only bytes below the length it mapped,
    //   and serves only complete records (whole before it mapped them), so
    //   no byte it hands out changes under it.
    // * The one in-place change ouli makes is cutting a torn tail (by the
    //   next `append_to`, or after a failed write): those bytes are never
    //   served, and a reader looks at them only while scanning, at open or
    //   refresh. Racing that scan with the cut can fault (SIGBUS) on a page
    //   wholly past the new end: a window of one scan, only for a file with
    //   a torn tail that is being reopened for appending at that moment.
    // * Another program truncating or rewriting a recording in place while
    //   it is served breaks the argument (SIGBUS, or changed bytes): that is
    //   outside the contract, as for every mmap reader (ripgrep, git).
    //   Replacing a recording by rename (as ouli's own writer does) is safe:
    //   the mapping keeps the old file. Where recordings may be rewritten in
    //   place, the io_uring backend reads owned copies and cannot fault.
    let mmap = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(mmap))
}
