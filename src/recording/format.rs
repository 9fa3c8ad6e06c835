//! The bytes of a recording file (rfcs/0001): zerocopy structs, the payload
//! encoding of an interaction, and its decoding. Little-endian throughout.
//!
//! Two format versions are read, [`FORMAT_VERSION_1`] and
//! [`FORMAT_VERSION_2`] (which adds a response's time to first byte and its
//! trailers); which items a payload holds is its file's version, so the
//! encoder, [`layout`] and [`decode`] each take it ([`Layout::version`]).
//! A version 2 payload may end with one optional item, the request's
//! trailers (item 13, written only when there are some): a reader that
//! predates it ignores the bytes after the last item it knows, and loses
//! nothing replay needs (request trailers take no part in the identity).

use super::{RecordLocation, RecordingError};
use crate::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse, WsDirection,
    WsFrame,
};
use bytes::Bytes;
use std::path::Path;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First 8 bytes of every recording.
pub const MAGIC: [u8; 8] = *b"OULIREC\0";
/// Version 1: the first format. Still read, and still written when records
/// are appended to a version 1 file (record-missing): a file never mixes
/// versions.
pub const FORMAT_VERSION_1: u32 = 1;
/// Version 2 (written by new recordings): a response's time to first byte
/// and its trailers (rfcs/0001, "Version history").
pub const FORMAT_VERSION_2: u32 = 2;
/// The version new recordings are written in.
pub const FORMAT_VERSION: u32 = FORMAT_VERSION_2;
/// The oldest version read; every version from it to [`FORMAT_VERSION`] is.
pub const FORMAT_VERSION_OLDEST: u32 = FORMAT_VERSION_1;
const _: () = assert!(FORMAT_VERSION_OLDEST <= FORMAT_VERSION);
/// First 4 bytes of every record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"OREC");
/// Last 32 bytes of a file whose index is current.
pub const FOOTER_MAGIC: [u8; 8] = *b"OULIIDX\0";

pub const KIND_HTTP: u16 = 1;
pub const KIND_WEBSOCKET: u16 = 2;
pub const KIND_INDEX: u16 = 3;

/// Records start and end on 8-byte boundaries.
pub const RECORD_ALIGN: u64 = 8;
/// Largest record (header, payload and padding) written or accepted: 4 GiB.
/// Every length inside a payload is a `u32`, and a reader must be able to
/// hold a record in one `Bytes`; the proxy's body limits sit far below.
pub const RECORD_BYTES_MAX: u64 = 1 << 32;
/// Most headers in one request or response (far above any HTTP server's
/// limit; bounds the work of walking a damaged count).
pub const HEADERS_PER_MESSAGE_MAX: u32 = 65_536;
/// Most body chunks or WebSocket frames in one record.
pub const PARTS_PER_RECORD_MAX: u32 = 1 << 24;
/// Longest single length-prefixed field (a `u32` length).
pub const FIELD_BYTES_MAX: u64 = u32::MAX as u64;
const _: () = assert!(FIELD_BYTES_MAX < RECORD_BYTES_MAX);

/// The file header: 64 bytes at offset 0.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub header_len: U32,
    pub created_unix_us: U64,
    pub reserved: [u8; 36],
    /// CRC32C of bytes 0..60.
    pub crc: U32,
}
pub const FILE_HEADER_LEN: u64 = 64;
const _: () = assert!(size_of::<FileHeader>() as u64 == FILE_HEADER_LEN);

/// The fixed head of every record: 96 bytes, then the payload, then zero
/// padding to [`RECORD_ALIGN`].
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct RecordHeader {
    pub magic: U32,
    pub kind: U16,
    pub endpoint: U16,
    /// Bytes of payload after this header (padding excluded).
    pub payload_len: U64,
    /// CRC32C of header bytes 0..16, then header bytes 20..96 and the
    /// payload (everything but the CRC itself and the padding).
    pub crc: U32,
    /// 0-based position of the interaction in the file (index records: 0).
    pub ordinal: U32,
    pub fingerprint: [u8; 32],
    pub chain_link: [u8; 32],
    pub recorded_at_unix_us: U64,
}
pub const RECORD_HEADER_LEN: u64 = 96;
const _: () = assert!(size_of::<RecordHeader>() as u64 == RECORD_HEADER_LEN);
/// The record CRC field sits at header bytes 16..20; the CRC covers the
/// header bytes before and after it and the payload.
pub const RECORD_CRC_AT: usize = 16;
const RECORD_CRC_END: usize = RECORD_CRC_AT + 4;

/// One index slot: a cache line.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct IndexSlot {
    pub fingerprint: [u8; 32],
    pub offset: U64,
    pub len: U64,
    pub ordinal: U32,
    /// 1 when the slot holds an entry.
    pub used: U32,
    pub reserved: [u8; 8],
}
pub const INDEX_SLOT_LEN: u64 = 64;
const _: () = assert!(size_of::<IndexSlot>() as u64 == INDEX_SLOT_LEN);

/// Head of an index record's payload; slots follow at the next 64-byte
/// boundary of the file.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct IndexHead {
    pub slot_count: U64,
    pub record_count: U64,
    /// End of the last interaction record the index covers.
    pub records_end: U64,
    /// Zero bytes between this head and the first slot.
    pub pad_len: U64,
}
pub const INDEX_HEAD_LEN: u64 = 32;
const _: () = assert!(size_of::<IndexHead>() as u64 == INDEX_HEAD_LEN);

/// The last 32 bytes of a file whose persisted index is current.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub struct Footer {
    pub magic: [u8; 8],
    pub index_offset: U64,
    /// File length when the footer was written (= footer offset + 32).
    pub file_len: U64,
    pub reserved: U32,
    /// CRC32C of bytes 0..28.
    pub crc: U32,
}
pub const FOOTER_LEN: u64 = 32;
const _: () = assert!(size_of::<Footer>() as u64 == FOOTER_LEN);

pub fn padded(len: u64) -> u64 {
    len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// A file header of `version` (one this code reads and writes).
pub fn new_file_header(created_unix_us: u64, version: u32) -> FileHeader {
    debug_assert!((FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version));
    let mut header = FileHeader {
        magic: MAGIC,
        version: U32::new(version),
        header_len: U32::new(FILE_HEADER_LEN as u32),
        created_unix_us: U64::new(created_unix_us),
        reserved: [0; 36],
        crc: U32::new(0),
    };
    header.crc = U32::new(crc32c::crc32c(&header.as_bytes()[..60]));
    header
}

/// Checks the file header and returns the file's format version (one of
/// [`FORMAT_VERSION_OLDEST`]`..=`[`FORMAT_VERSION`]); the error names the file.
pub fn check_file_header(path: &Path, bytes: &[u8]) -> Result<u32, RecordingError> {
    let seen = bytes.len().min(MAGIC.len());
    if bytes[..seen] != MAGIC[..seen] {
        return Err(RecordingError::NotARecording {
            path: path.to_path_buf(),
        });
    }
    let Ok((header, _)) = FileHeader::read_from_prefix(bytes) else {
        return Err(RecordingError::TruncatedHeader {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    };
    let version = header.version.get();
    if !(FORMAT_VERSION_OLDEST..=FORMAT_VERSION).contains(&version) {
        return Err(RecordingError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if header.crc.get() != crc32c::crc32c(&header.as_bytes()[..60]) {
        return Err(RecordingError::CorruptRecord {
            path: path.to_path_buf(),
            offset: 0,
            what: "file header CRC mismatch".into(),
        });
    }
    Ok(version)
}

/// Why an interaction cannot be written: a field or count over its limit.
pub fn check_limits(interaction: &Interaction) -> Result<(), String> {
    let field = |what: &str, len: usize| {
        if len as u64 > FIELD_BYTES_MAX {
            Err(format!("{what} is {len} bytes (at most {FIELD_BYTES_MAX})"))
        } else {
            Ok(())
        }
    };
    let headers = |what: &str, headers: &[(Bytes, Bytes)]| {
        if headers.len() as u64 > u64::from(HEADERS_PER_MESSAGE_MAX) {
            return Err(format!(
                "{what} has {} headers (at most {HEADERS_PER_MESSAGE_MAX})",
                headers.len()
            ));
        }
        headers.iter().try_for_each(|(name, value)| {
            field("a header name", name.len())?;
            field("a header value", value.len())
        })
    };
    let parts = |what: &str, n: usize| {
        if n as u64 > u64::from(PARTS_PER_RECORD_MAX) {
            Err(format!("{n} {what} (at most {PARTS_PER_RECORD_MAX})"))
        } else {
            Ok(())
        }
    };
    let request = &interaction.request;
    field("the canonical request", interaction.canonical.len())?;
    field("the method", request.method.len())?;
    field("the target", request.target.len())?;
    headers("the request", &request.headers)?;
    field("the request body", request.body.len())?;
    headers("the request trailers", &request.trailers)?;
    let response = match &interaction.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, frames } => {
            parts("WebSocket frames", frames.len())?;
            for frame in frames {
                field("a WebSocket frame", frame.payload.len())?;
            }
            response
        }
    };
    headers("the response", &response.headers)?;
    headers("the response trailers", &response.trailers)?;
    field("the original encoding", response.original_encoding.len())?;
    parts("body chunks", response.chunks.len())?;
    for chunk in &response.chunks {
        field("a body chunk", chunk.data.len())?;
    }
    Ok(())
}

/// Encodes one record (header, payload, padding) of format `version` ready
/// to append; its kind follows from the exchange. A version 1 record has no
/// room for the time to first byte or trailers: they are left out (the
/// caller says so). Request trailers, when there are any, are item 13 of a
/// version 2 payload: its last, optional item. The caller has checked [`check_limits`]; the record may
/// still exceed [`RECORD_BYTES_MAX`] (checked on the result).
pub fn encode_record(ordinal: u32, interaction: &Interaction, version: u32) -> Vec<u8> {
    let kind = match interaction.exchange {
        Exchange::Http(_) => KIND_HTTP,
        Exchange::WebSocket { .. } => KIND_WEBSOCKET,
    };
    // One buffer, header space first: the payload is written in place and
    // never copied again (a 64 KiB body is copied once, into this buffer).
    let mut out = Vec::with_capacity(
        (RECORD_HEADER_LEN + RECORD_ALIGN + 256) as usize + interaction_bytes_hint(interaction),
    );
    out.resize(RECORD_HEADER_LEN as usize, 0);
    let payload = &mut out;
    put_bytes(payload, &interaction.canonical);
    let request = &interaction.request;
    put_bytes(payload, &request.method);
    put_bytes(payload, &request.target);
    put_headers(payload, &request.headers);
    put_bytes(payload, &request.body);
    let response = match &interaction.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, .. } => response,
    };
    let v2 = version >= FORMAT_VERSION_2;
    payload.extend_from_slice(&response.status.to_le_bytes());
    if v2 {
        payload.extend_from_slice(&response.head_offset_us.to_le_bytes());
    }
    put_headers(payload, &response.headers);
    put_bytes(payload, &response.original_encoding);
    payload.extend_from_slice(&(response.chunks.len() as u32).to_le_bytes());
    for chunk in &response.chunks {
        payload.extend_from_slice(&chunk.offset_us.to_le_bytes());
        put_bytes(payload, &chunk.data);
    }
    if v2 {
        put_headers(payload, &response.trailers);
    }
    if let Exchange::WebSocket { frames, .. } = &interaction.exchange {
        payload.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for frame in frames {
            payload.push(frame.direction as u8);
            payload.push(frame.opcode);
            payload.extend_from_slice(&frame.offset_us.to_le_bytes());
            put_bytes(payload, &frame.payload);
        }
    }
    if v2 && !request.trailers.is_empty() {
        put_headers(payload, &request.trailers);
    }
    let header = RecordHeader {
        magic: U32::new(RECORD_MAGIC),
        kind: U16::new(kind),
        endpoint: U16::new(interaction.endpoint),
        payload_len: U64::new(out.len() as u64 - RECORD_HEADER_LEN),
        crc: U32::new(0),
        ordinal: U32::new(ordinal),
        fingerprint: interaction.fingerprint.0,
        chain_link: interaction.chain_link.0,
        recorded_at_unix_us: U64::new(interaction.recorded_at_unix_us),
    };
    seal_in_place(header, out)
}

/// Bytes of bodies and fields an interaction holds: the capacity to reserve.
fn interaction_bytes_hint(interaction: &Interaction) -> usize {
    let request = &interaction.request;
    let response = match &interaction.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, .. } => response,
    };
    let headers =
        |h: &[(Bytes, Bytes)]| h.iter().map(|(n, v)| n.len() + v.len() + 8).sum::<usize>();
    interaction.canonical.len()
        + request.target.len()
        + request.body.len()
        + headers(&request.headers)
        + headers(&request.trailers)
        + headers(&response.headers)
        + headers(&response.trailers)
        + response
            .chunks
            .iter()
            .map(|c| c.data.len() + 12)
            .sum::<usize>()
}

/// Fills in the CRC of `out` (header space, then payload) and pads it.
fn seal_in_place(mut header: RecordHeader, mut out: Vec<u8>) -> Vec<u8> {
    debug_assert_eq!(
        out.len() as u64,
        RECORD_HEADER_LEN + header.payload_len.get()
    );
    let total = padded(out.len() as u64) as usize;
    out[..RECORD_HEADER_LEN as usize].copy_from_slice(header.as_bytes());
    header.crc = U32::new(record_crc(&out));
    out[..RECORD_HEADER_LEN as usize].copy_from_slice(header.as_bytes());
    out.resize(total, 0);
    out
}

/// Header + payload + padding, with the CRC filled in.
pub fn seal(mut header: RecordHeader, payload: &[u8]) -> Vec<u8> {
    let total = padded(RECORD_HEADER_LEN + payload.len() as u64) as usize;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    header.crc = U32::new(record_crc(&out));
    out[..RECORD_HEADER_LEN as usize].copy_from_slice(header.as_bytes());
    out.resize(total, 0);
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_headers(out: &mut Vec<u8>, headers: &[(Bytes, Bytes)]) {
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        put_bytes(out, name);
        put_bytes(out, value);
    }
}

/// CRC32C of a record's header (without its CRC field) and payload;
/// `covered` is header + payload, without padding.
fn record_crc(covered: &[u8]) -> u32 {
    let head = crc32c::crc32c(&covered[..RECORD_CRC_AT]);
    crc32c::crc32c_append(head, &covered[RECORD_CRC_END..])
}

/// Reads a record header at `offset` if the whole record fits before `end`;
/// `None` marks the end of the readable records (torn tail, garbage, or end
/// of file). Checks the header's shape only, not the CRC.
pub fn record_at(bytes: &[u8], offset: u64, end: u64) -> Option<(RecordHeader, RecordLocation)> {
    let end = end.min(bytes.len() as u64);
    if offset.checked_add(RECORD_HEADER_LEN)? > end || !offset.is_multiple_of(RECORD_ALIGN) {
        return None;
    }
    let (header, _) = RecordHeader::read_from_prefix(&bytes[offset as usize..]).ok()?;
    if header.magic.get() != RECORD_MAGIC || !(KIND_HTTP..=KIND_INDEX).contains(&header.kind.get())
    {
        return None;
    }
    // Bounded before it is padded: a payload length near u64::MAX would wrap
    // in the padding to a length of 0, a record that never ends a scan.
    let covered = RECORD_HEADER_LEN.checked_add(header.payload_len.get())?;
    if covered > RECORD_BYTES_MAX {
        return None;
    }
    let len = padded(covered);
    if len > RECORD_BYTES_MAX || offset.checked_add(len)? > end {
        return None;
    }
    Some((header, RecordLocation { offset, len }))
}

/// Whether the record's CRC matches its bytes.
pub fn crc_ok(record: &[u8], header: &RecordHeader) -> bool {
    let Some(covered) = RECORD_HEADER_LEN.checked_add(header.payload_len.get()) else {
        return false;
    };
    record.len() as u64 >= covered && record_crc(&record[..covered as usize]) == header.crc.get()
}

/// Whether a sound footer (magic and CRC) sits at `offset`. A footer left
/// mid-file by a later `append_to` is stale: walkers step over it.
pub fn footer_at(bytes: &[u8], offset: u64) -> Option<Footer> {
    let start = usize::try_from(offset).ok()?;
    let (footer, _) = Footer::read_from_prefix(bytes.get(start..)?).ok()?;
    (footer.magic == FOOTER_MAGIC && footer.crc.get() == crc32c::crc32c(&footer.as_bytes()[..28]))
        .then_some(footer)
}

/// Walks the records of `bytes[offset..end]` in file order, stepping over
/// stale footers. Stops at the first bytes that are no complete record, and
/// at a last record (one ending exactly at `end`) whose CRC fails: that is a
/// torn write, never served, cut by the next writer. [`Walk::offset`] is
/// then where the readable records end.
pub struct Walk<'a> {
    bytes: &'a [u8],
    /// End of the last record yielded (or the start).
    pub offset: u64,
    end: u64,
}

impl<'a> Walk<'a> {
    pub fn new(bytes: &'a [u8], offset: u64, end: u64) -> Walk<'a> {
        Walk {
            bytes,
            offset,
            end: end.min(bytes.len() as u64),
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = (RecordHeader, RecordLocation);

    fn next(&mut self) -> Option<Self::Item> {
        let mut at = self.offset;
        while at.checked_add(FOOTER_LEN)? <= self.end && footer_at(self.bytes, at).is_some() {
            at += FOOTER_LEN;
        }
        let (header, location) = record_at(self.bytes, at, self.end)?;
        let record_end = at + location.len;
        if record_end == self.end && !crc_ok(&self.bytes[at as usize..record_end as usize], &header)
        {
            return None;
        }
        // Footers stepped over belong to the readable part only once a record
        // follows them; a trailing footer is accounted for by the caller.
        self.offset = record_end;
        Some((header, location))
    }
}

/// What [`locate`] finds at one place of the file.
pub enum Found {
    /// A record whose header is well formed (its CRC is checked when read).
    Record(RecordHeader, RecordLocation),
    /// Bytes that are no record, followed by a sound record: damage in the
    /// middle of the file. Reading this location is a `CorruptRecord`.
    Damaged(RecordLocation),
}

/// The records of `bytes[from..]` in file order, like [`Walk`], but where
/// the walk stops before a later sound record (damage in the middle of the
/// file, never a torn tail) it reports the damage and resumes at that sound
/// record. Returns what it found, where the readable records end, and the
/// offset of the first damage, if any.
pub fn locate(bytes: &[u8], from: u64) -> (Vec<Found>, u64, Option<u64>) {
    let end = bytes.len() as u64;
    let mut found = Vec::new();
    let mut first_damage = None;
    let mut offset = from;
    loop {
        let mut walk = Walk::new(bytes, offset, end);
        let mut last: Option<(RecordHeader, RecordLocation)> = None;
        for (header, location) in walk.by_ref() {
            last = Some((header, location));
            found.push(Found::Record(header, location));
        }
        let stop = walk.offset;
        if stop >= end {
            return (found, stop, first_damage);
        }
        // A damaged length makes the walk stop inside or after its record:
        // search from just after the last record's start.
        let search_from = last.map_or(stop, |(_, location)| location.offset + 1);
        let Some(sound) = next_sound_record(bytes, search_from).filter(|&s| s > offset) else {
            return (found, stop, first_damage);
        };
        let last_is_damaged = last.is_some_and(|(header, location)| {
            let record =
                &bytes[location.offset as usize..(location.offset + location.len) as usize];
            !crc_ok(record, &header)
        });
        let damage = match last {
            Some((_, location)) if last_is_damaged => location.offset,
            _ => stop,
        };
        first_damage.get_or_insert(damage);
        if !last_is_damaged && sound > stop {
            found.push(Found::Damaged(RecordLocation {
                offset: stop,
                len: sound - stop,
            }));
        }
        offset = sound;
    }
}

/// The first 8-aligned offset in `bytes[from..]` where a complete record
/// with a sound CRC starts: proof that the bytes at `from` are damage in the
/// middle of the file, not a torn tail.
pub fn next_sound_record(bytes: &[u8], from: u64) -> Option<u64> {
    let end = bytes.len() as u64;
    let mut at = from.next_multiple_of(RECORD_ALIGN);
    let magic = RECORD_MAGIC.to_le_bytes();
    while at + RECORD_HEADER_LEN <= end {
        let rest = &bytes[at as usize..];
        let found = memchr::memmem::find(rest, &magic)?;
        at += found as u64;
        if at.is_multiple_of(RECORD_ALIGN)
            && let Some((header, location)) = record_at(bytes, at, end)
            && crc_ok(&bytes[at as usize..(at + location.len) as usize], &header)
        {
            return Some(at);
        }
        at = (at + 1).next_multiple_of(RECORD_ALIGN);
    }
    None
}

/// A bounds-checked reader over a record's payload.
pub struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn u8(&mut self) -> Option<u8> {
        let v = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    pub fn u16(&mut self) -> Option<u16> {
        let v = self.bytes.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_le_bytes([v[0], v[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        let v = self.bytes.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_le_bytes(v.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        let v = self.bytes.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        Some(u64::from_le_bytes(v.try_into().ok()?))
    }
    /// A length-prefixed field: its range within `bytes`.
    pub fn field(&mut self) -> Option<std::ops::Range<usize>> {
        let len = self.u32()? as usize;
        let start = self.pos;
        let end = start.checked_add(len)?;
        if end > self.bytes.len() {
            return None;
        }
        self.pos = end;
        Some(start..end)
    }
    pub fn count(&mut self, max: u32) -> Option<u32> {
        let n = self.u32()?;
        (n <= max).then_some(n)
    }
}

/// Positions of the parts of a record payload, found once per read.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The file's format version, which says which items the payload has.
    pub version: u32,
    pub canonical: std::ops::Range<usize>,
    pub request_start: usize,
    pub status: u16,
    /// Time to first byte (version 2; 0 in a version 1 record).
    pub head_offset_us: u64,
    pub response_headers_start: usize,
    pub chunks_start: usize,
    pub chunk_count: u32,
    pub body_len: u64,
    /// Where the trailer pair list starts (version 2 only).
    pub trailers_start: Option<usize>,
    /// Where the request trailers' pair list (item 13) starts: only in a
    /// version 2 record that has one.
    pub request_trailers_start: Option<usize>,
}

/// Walks a payload (relative to the record start) of a file of format
/// `version` and checks every length.
pub fn layout(record: &[u8], kind: u16, version: u32) -> Option<Layout> {
    let mut c = Cursor {
        bytes: record,
        pos: RECORD_HEADER_LEN as usize,
    };
    let canonical = c.field()?;
    let request_start = c.pos;
    c.field()?;
    c.field()?;
    skip_headers(&mut c)?;
    c.field()?;
    let status = c.u16()?;
    let v2 = version >= FORMAT_VERSION_2;
    let head_offset_us = if v2 { c.u64()? } else { 0 };
    let response_headers_start = c.pos;
    skip_headers(&mut c)?;
    c.field()?;
    let chunk_count = c.count(PARTS_PER_RECORD_MAX)?;
    let chunks_start = c.pos;
    let mut body_len = 0u64;
    for _ in 0..chunk_count {
        c.u64()?;
        body_len += c.field()?.len() as u64;
    }
    let trailers_start = v2.then_some(c.pos);
    if v2 {
        skip_headers(&mut c)?;
    }
    if kind == KIND_WEBSOCKET {
        let frames = c.count(PARTS_PER_RECORD_MAX)?;
        for _ in 0..frames {
            let direction = c.u8()?;
            if direction > 1 {
                return None;
            }
            c.u8()?;
            c.u64()?;
            c.field()?;
        }
    }
    // Item 13 is there when payload bytes are left after the last item
    // (the slice may go on with the record's zero padding: not payload).
    let payload_end = RecordHeader::read_from_prefix(record)
        .ok()
        .and_then(|(header, _)| usize::try_from(header.payload_len.get()).ok())
        .and_then(|len| len.checked_add(RECORD_HEADER_LEN as usize))?;
    let request_trailers_start = (v2 && c.pos < payload_end).then_some(c.pos);
    if request_trailers_start.is_some() {
        skip_headers(&mut c)?;
        if c.pos > payload_end {
            return None;
        }
    }
    Some(Layout {
        version,
        canonical,
        request_start,
        status,
        head_offset_us,
        response_headers_start,
        chunks_start,
        chunk_count,
        body_len,
        trailers_start,
        request_trailers_start,
    })
}

fn skip_headers(c: &mut Cursor<'_>) -> Option<()> {
    let n = c.count(HEADERS_PER_MESSAGE_MAX)?;
    for _ in 0..n {
        c.field()?;
        c.field()?;
    }
    Some(())
}

/// Decodes a whole record into its owned form (slices share `record`).
pub fn decode(record: &Bytes, header: &RecordHeader, layout: &Layout) -> Option<Interaction> {
    let slice = |r: std::ops::Range<usize>| record.slice(r);
    let mut c = Cursor {
        bytes: record,
        pos: layout.request_start,
    };
    let method = slice(c.field()?);
    let target = slice(c.field()?);
    let headers = read_headers(&mut c, record)?;
    let body = slice(c.field()?);
    c.u16()?;
    if layout.version >= FORMAT_VERSION_2 {
        c.u64()?;
    }
    let response_headers = read_headers(&mut c, record)?;
    let original_encoding = slice(c.field()?);
    let n = c.u32()?;
    let mut chunks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let offset_us = c.u64()?;
        chunks.push(BodyChunk {
            offset_us,
            data: slice(c.field()?),
        });
    }
    let trailers = if layout.version >= FORMAT_VERSION_2 {
        read_headers(&mut c, record)?
    } else {
        Vec::new()
    };
    let response = RecordedResponse {
        status: layout.status,
        head_offset_us: layout.head_offset_us,
        headers: response_headers,
        chunks,
        trailers,
        original_encoding,
    };
    let exchange = if header.kind.get() == KIND_WEBSOCKET {
        let n = c.u32()?;
        let mut frames = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let direction = if c.u8()? == 0 {
                WsDirection::ClientToServer
            } else {
                WsDirection::ServerToClient
            };
            let opcode = c.u8()?;
            let offset_us = c.u64()?;
            frames.push(WsFrame {
                direction,
                opcode,
                offset_us,
                payload: slice(c.field()?),
            });
        }
        Exchange::WebSocket { response, frames }
    } else {
        Exchange::Http(response)
    };
    let request_trailers = match layout.request_trailers_start {
        Some(start) => {
            let mut c = Cursor {
                bytes: record,
                pos: start,
            };
            read_headers(&mut c, record)?
        }
        None => Vec::new(),
    };
    Some(Interaction {
        fingerprint: Fingerprint(header.fingerprint),
        chain_link: Fingerprint(header.chain_link),
        canonical: slice(layout.canonical.clone()),
        endpoint: header.endpoint.get(),
        recorded_at_unix_us: header.recorded_at_unix_us.get(),
        request: RecordedRequest {
            method,
            target,
            headers,
            body,
            trailers: request_trailers,
        },
        exchange,
    })
}

fn read_headers(c: &mut Cursor<'_>, record: &Bytes) -> Option<Vec<(Bytes, Bytes)>> {
    let n = c.count(HEADERS_PER_MESSAGE_MAX)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = record.slice(c.field()?);
        let value = record.slice(c.field()?);
        out.push((name, value));
    }
    Some(out)
}

/// Slot index of a fingerprint in a table of `slot_count` (a power of two).
pub fn home_slot(fingerprint: &[u8; 32], slot_count: u64) -> u64 {
    let h = u64::from_le_bytes(fingerprint[..8].try_into().expect("8 bytes"));
    h & (slot_count - 1)
}

/// Slots for `entries` records: load factor at most 1/2.
pub fn slot_count_for(entries: usize) -> u64 {
    ((entries as u64).max(8) * 2).next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload length near `u64::MAX` is no record: padded, it would wrap
    /// to a length of 0, and a scan would never move past it.
    #[test]
    fn a_payload_length_that_would_wrap_in_the_padding_is_no_record() {
        let mut bytes = vec![0u8; 4096];
        let header = RecordHeader {
            magic: U32::new(RECORD_MAGIC),
            kind: U16::new(KIND_HTTP),
            endpoint: U16::new(0),
            payload_len: U64::new(u64::MAX - RECORD_HEADER_LEN - 3),
            crc: U32::new(0),
            ordinal: U32::new(0),
            fingerprint: [0; 32],
            chain_link: [0; 32],
            recorded_at_unix_us: U64::new(0),
        };
        bytes[64..64 + RECORD_HEADER_LEN as usize].copy_from_slice(header.as_bytes());
        assert!(record_at(&bytes, 64, bytes.len() as u64).is_none());
    }
}
