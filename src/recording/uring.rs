//! The io_uring read backend (rfcs/0001, "Read backends"): the whole file is
//! read once, at open, into one owned buffer with batched `IORING_OP_READ`s;
//! a refresh reads only the bytes appended since. Nothing is mapped, so a
//! file cut by another process cannot fault a reader (no SIGBUS): the
//! price is the file's size in anonymous memory instead of shared page cache.
//!
//! Whether the kernel lets this process use io_uring is probed once per
//! process ([`probe`]: a ring is set up and one read completes); containers
//! and seccomp profiles often refuse it (`EPERM`, `ENOSYS`), and then
//! [`super::Recording::open`] falls back to mmap and says so.

use io_uring::{IoUring, opcode, types};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// Bytes asked for by one read: large enough that a recording of a few MiB
/// takes a handful of reads, small enough to fit the `u32` length of a read
/// and to keep several reads in flight on one file.
pub const READ_BYTES_MAX: usize = 1 << 20;
/// Reads in flight at once: the ring's submission queue size.
pub const READS_IN_FLIGHT_MAX: u32 = 8;
const _: () = assert!(READ_BYTES_MAX as u64 <= u32::MAX as u64);

/// Whether io_uring works for this process: `Ok` once a ring was set up and
/// a read through it completed, else why not. Probed once per process.
pub fn probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let zero = File::open("/dev/zero").map_err(|e| format!("/dev/zero: {e}"))?;
        // /dev/zero is not seekable: its reads use offset 0.
        let bytes = read(&zero, 0, 8).map_err(|e| e.to_string())?;
        if bytes == [0u8; 8] {
            Ok(())
        } else {
            Err(format!("a probe read of /dev/zero returned {bytes:?}"))
        }
    })
}

/// Reads `len` bytes of `file` from `offset` into an owned buffer: fewer
/// when the file ends first (it may have been cut since its length was read).
pub fn read(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file larger than memory"))?;
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let mut ring = IoUring::new(READS_IN_FLIGHT_MAX)?;
    match read_into(&mut ring, file, offset, &mut buf) {
        Ok(filled) => {
            buf.truncate(filled);
            Ok(buf)
        }
        Err(ReadFailure::Drained(error)) => Err(error),
        Err(ReadFailure::InFlight(error)) => {
            // Reads may still target `buf` and the ring cannot be drained:
            // leak the buffer rather than free memory the kernel may write.
            std::mem::forget(buf);
            Err(error)
        }
    }
}

enum ReadFailure {
    /// No read is in flight: the buffer may be freed.
    Drained(io::Error),
    /// The ring failed with reads still in flight into the buffer.
    InFlight(io::Error),
}

/// Fills `buf` with the file's bytes from `offset`; returns how many bytes
/// are valid (all, unless the file ended first). Returns only when no read
/// is in flight, except with [`ReadFailure::InFlight`].
fn read_into(
    ring: &mut IoUring,
    file: &File,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, ReadFailure> {
    let fd = types::Fd(file.as_raw_fd());
    let base = buf.as_mut_ptr();
    let len = buf.len();
    let mut pending: Vec<Range<usize>> = (0..len)
        .step_by(READ_BYTES_MAX)
        .map(|start| start..(start + READ_BYTES_MAX).min(len))
        .rev()
        .collect();
    // user_data of a read = its position here.
    let mut submitted: Vec<Range<usize>> = Vec::new();
    let mut in_flight = 0u32;
    let mut end_of_file: Option<usize> = None;
    let mut first_error: Option<io::Error> = None;
    loop {
        while first_error.is_none() && in_flight < READS_IN_FLIGHT_MAX {
            let Some(piece) = pending.pop() else { break };
            let entry = opcode::Read::new(fd, base.wrapping_add(piece.start), piece.len() as u32)
                .offset(offset + piece.start as u64)
                .build()
                .user_data(submitted.len() as u64);
            // SAFETY: the read writes `piece` of `buf`, which is in bounds
            // (pieces lie within 0..len) and outlives the read: `buf` is
            // borrowed mutably for this whole call and not touched through
            // any reference until every read is reaped (this function
            // returns only with in_flight == 0, or with InFlight, on which
            // the caller leaks the buffer). Pieces in flight never overlap.
            // `fd` stays open: `file` is borrowed for the whole call.
            let pushed = unsafe { ring.submission().push(&entry) };
            if pushed.is_err() {
                pending.push(piece); // queue full: submit what is queued first
                break;
            }
            submitted.push(piece);
            in_flight += 1;
        }
        if in_flight == 0 {
            break;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ReadFailure::InFlight(error)),
        }
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|cqe| (cqe.user_data(), cqe.result()))
            .collect();
        for (user_data, result) in completions {
            in_flight -= 1;
            let piece = submitted[user_data as usize].clone();
            if result < 0 {
                let error = io::Error::from_raw_os_error(-result);
                if matches!(
                    error.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    pending.push(piece);
                } else {
                    first_error.get_or_insert(error);
                }
            } else if result == 0 {
                let at = end_of_file.get_or_insert(piece.start);
                *at = (*at).min(piece.start);
            } else {
                let rest = piece.start + result as usize..piece.end;
                if !rest.is_empty() {
                    pending.push(rest); // short read: ask for the rest
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(ReadFailure::Drained(error)),
        None => Ok(end_of_file.unwrap_or(len)),
    }
}
