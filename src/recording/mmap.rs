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

/// Recordings at least this large are pre-faulted in the background (below
/// it, the first requests fault the few pages in at no visible cost).
pub const PREFAULT_BYTES_MIN: usize = 4 << 20;

/// Recordings larger than this are not pre-faulted: pulling a recording of
/// many GiB into memory on every start costs more than the faults it saves.
pub const PREFAULT_BYTES_MAX: usize = 1 << 30;

/// Maps every page of `bytes` into the process on a background thread, so
/// that requests do not pay a page fault (and the address-space lock it
/// takes) the first time they touch a page. Measured: 100k interactions in
/// random order at 256 connections (rfcs/0003). Start-up does not wait.
pub fn prefault_in_background(bytes: &Bytes) {
    if bytes.len() < PREFAULT_BYTES_MIN || bytes.len() > PREFAULT_BYTES_MAX {
        return;
    }
    let bytes = bytes.clone();
    let _ = std::thread::Builder::new()
        .name("ouli-prefault".into())
        .spawn(move || {
            const PAGE: usize = 4096;
            let mut sum = 0u8;
            for offset in (0..bytes.len()).step_by(PAGE) {
                sum = sum.wrapping_add(bytes[offset]);
            }
            std::hint::black_box(sum);
        });
}
