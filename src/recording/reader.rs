//! Opening and reading a recording: O(1) open with a current persisted
//! index, a scan otherwise; lookups probe 64-byte slots in the mapping; a
//! record's CRC is checked the first time it is read.

use super::format::{
    self, FILE_HEADER_LEN, FOOTER_LEN, Footer, INDEX_HEAD_LEN, INDEX_SLOT_LEN, IndexHead,
    IndexSlot, KIND_INDEX, KIND_WEBSOCKET, RECORD_HEADER_LEN, RecordHeader,
};
use super::{ReadBackend, RecordLocation, RecordingError};
use crate::interaction::{Fingerprint, Interaction};
use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use zerocopy::FromBytes;

/// The persisted table: where its slots sit in the mapping.
#[derive(Clone, Copy)]
struct PersistedIndex {
    slots_offset: u64,
    slot_count: u64,
}

/// What a reader sees at one moment; replaced whole by `refresh`.
struct Snapshot {
    bytes: Bytes,
    persisted: Option<PersistedIndex>,
    /// Interactions the persisted index holds.
    persisted_records: usize,
    /// Records not in the persisted index (all of them after a rebuild).
    overflow: HashMap<Fingerprint, (RecordLocation, u32)>,
    /// Interaction records in file order.
    order: Vec<RecordLocation>,
    /// End of the last complete record seen (scan resumes here).
    scanned_end: u64,
    /// One bit per ordinal: CRC already checked.
    verified: Arc<Vec<AtomicU64>>,
}

/// An open recording: shared by all connections of a session (`Send + Sync`).
pub struct Recording {
    path: PathBuf,
    backend: ReadBackend,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Recording {
    pub fn open(path: &Path, backend: ReadBackend) -> Result<Recording, RecordingError> {
        if backend == ReadBackend::IoUring {
            tracing::warn!(
                "{}: the io_uring read backend is not built yet; reading through mmap",
                path.display()
            );
        }
        let file = std::fs::File::open(path).map_err(|source| RecordingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes = super::mmap::map(&file).map_err(|source| RecordingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut recording = Recording::from_bytes(path.to_path_buf(), bytes)?;
        recording.backend = ReadBackend::Mmap;
        Ok(recording)
    }

    /// A recording held in memory (e.g. built from a test-server directory);
    /// `name` is used in errors.
    pub fn from_bytes(name: PathBuf, bytes: Bytes) -> Result<Recording, RecordingError> {
        format::check_file_header(&name, &bytes)?;
        let snapshot = match persisted_index(&name, &bytes)? {
            Some((persisted, head)) => {
                let records_end = head.records_end.get();
                let count = head.record_count.get() as usize;
                // File order is needed only to iterate: found then.
                Snapshot {
                    verified: Arc::new(bitset(count)),
                    bytes,
                    persisted: Some(persisted),
                    persisted_records: count,
                    overflow: HashMap::new(),
                    order: Vec::new(),
                    scanned_end: records_end,
                }
            }
            None => {
                let mut snapshot = Snapshot {
                    verified: Arc::new(Vec::new()),
                    bytes,
                    persisted: None,
                    persisted_records: 0,
                    overflow: HashMap::new(),
                    order: Vec::new(),
                    scanned_end: FILE_HEADER_LEN,
                };
                scan(&mut snapshot);
                snapshot
            }
        };
        Ok(Recording {
            path: name,
            backend: ReadBackend::Mmap,
            snapshot: RwLock::new(Arc::new(snapshot)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend actually in use (io_uring falls back to mmap).
    pub fn backend(&self) -> ReadBackend {
        self.backend
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of interactions visible.
    pub fn len(&self) -> usize {
        let s = self.current();
        match s.persisted {
            Some(_) => s.persisted_records + s.overflow.len(),
            None => s.order.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One index probe; never allocates.
    pub fn lookup(&self, fingerprint: &Fingerprint) -> Option<RecordLocation> {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = s.persisted
            && let Some((location, _)) = probe(&s.bytes, index, fingerprint)
        {
            return Some(location);
        }
        s.overflow.get(fingerprint).map(|(location, _)| *location)
    }

    /// Reads a record. Its CRC is checked the first time it is read; a
    /// damaged record is an error naming file and offset.
    pub fn read(&self, location: RecordLocation) -> Result<RecordView, RecordingError> {
        let s = self.current();
        self.view(&s, location)
    }

    fn view(&self, s: &Snapshot, location: RecordLocation) -> Result<RecordView, RecordingError> {
        let corrupt = |what: &str| RecordingError::CorruptRecord {
            path: self.path.clone(),
            offset: location.offset,
            what: what.to_owned(),
        };
        let end = location
            .offset
            .checked_add(location.len)
            .ok_or_else(|| corrupt("length overflows"))?;
        if end > s.bytes.len() as u64 || location.len < RECORD_HEADER_LEN {
            return Err(corrupt("record lies outside the file"));
        }
        let record = s.bytes.slice(location.offset as usize..end as usize);
        let (header, _) = RecordHeader::read_from_prefix(&record)
            .map_err(|_| corrupt("truncated record header"))?;
        if format::record_at(&s.bytes, location.offset, end).is_none()
            || header.kind.get() == KIND_INDEX
        {
            return Err(corrupt("no interaction record here"));
        }
        let ordinal = header.ordinal.get() as usize;
        let word = s.verified.get(ordinal / 64);
        let bit = 1u64 << (ordinal % 64);
        if word.is_none_or(|w| w.load(Ordering::Relaxed) & bit == 0) {
            if !format::crc_ok(&record, &header) {
                return Err(corrupt("CRC32C mismatch"));
            }
            if let Some(w) = word {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
        let layout = format::layout(&record, header.kind.get())
            .ok_or_else(|| corrupt("malformed payload"))?;
        Ok(RecordView {
            record,
            header,
            layout,
            location,
        })
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
        let s = self.current();
        let locations: Vec<RecordLocation> = if s.persisted.is_some() {
            let mut order = Vec::new();
            let mut offset = FILE_HEADER_LEN;
            let end = s.bytes.len() as u64;
            while let Some((header, location)) = format::record_at(&s.bytes, offset, end) {
                if header.kind.get() != KIND_INDEX {
                    order.push(location);
                }
                offset += location.len;
            }
            order
        } else {
            s.order.clone()
        };
        locations
            .into_iter()
            .map(move |location| self.view(&s, location))
    }

    /// Picks up records appended since open (by this process or another).
    /// Returns whether anything new became visible.
    pub fn refresh(&self) -> Result<bool, RecordingError> {
        let file = std::fs::File::open(&self.path).map_err(|source| RecordingError::Io {
            path: self.path.clone(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| RecordingError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        let old = self.current();
        if len <= old.bytes.len() as u64 {
            return Ok(false);
        }
        let bytes = super::mmap::map(&file).map_err(|source| RecordingError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut next = Snapshot {
            bytes,
            persisted: old.persisted,
            persisted_records: old.persisted_records,
            overflow: old.overflow.clone(),
            order: old.order.clone(),
            scanned_end: old.scanned_end,
            verified: old.verified.clone(),
        };
        let before = next.overflow.len() + next.order.len();
        scan(&mut next);
        let grew = next.overflow.len() + next.order.len() > before;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(grew)
    }
}

fn bitset(count: usize) -> Vec<AtomicU64> {
    (0..count.div_ceil(64) + 1)
        .map(|_| AtomicU64::new(0))
        .collect()
}

/// The footer's index if it is current and sound; `Ok(None)` means rebuild.
fn persisted_index(
    path: &Path,
    bytes: &[u8],
) -> Result<Option<(PersistedIndex, IndexHead)>, RecordingError> {
    let len = bytes.len() as u64;
    if len < FILE_HEADER_LEN + FOOTER_LEN {
        return Ok(None);
    }
    let Ok((footer, _)) = Footer::read_from_prefix(&bytes[(len - FOOTER_LEN) as usize..]) else {
        return Ok(None);
    };
    if footer.magic != format::FOOTER_MAGIC
        || footer.crc.get() != crc32c::crc32c(&zerocopy::IntoBytes::as_bytes(&footer)[..28])
        || footer.file_len.get() != len
    {
        return Ok(None); // stale (records appended after it) or missing
    }
    let bad = |what: &str| RecordingError::BadIndex {
        path: path.to_path_buf(),
        what: what.to_owned(),
    };
    let index_offset = footer.index_offset.get();
    let Some((header, location)) = format::record_at(bytes, index_offset, len - FOOTER_LEN) else {
        return Err(bad("the footer points outside the file or at no record"));
    };
    if header.kind.get() != KIND_INDEX {
        return Err(bad("the footer does not point at an index record"));
    }
    let head_at = (index_offset + RECORD_HEADER_LEN) as usize;
    let (head, _) =
        IndexHead::read_from_prefix(&bytes[head_at..]).map_err(|_| bad("truncated index head"))?;
    let slot_count = head.slot_count.get();
    let slots_offset = index_offset + RECORD_HEADER_LEN + INDEX_HEAD_LEN + head.pad_len.get();
    let slots_end = slot_count
        .checked_mul(INDEX_SLOT_LEN)
        .and_then(|n| n.checked_add(slots_offset))
        .ok_or_else(|| bad("slot count overflows"))?;
    if !slot_count.is_power_of_two()
        || slots_end > index_offset + location.len
        || head.records_end.get() > index_offset
        || head.record_count.get() > slot_count
    {
        return Err(bad("index head is inconsistent with the file"));
    }
    Ok(Some((
        PersistedIndex {
            slots_offset,
            slot_count,
        },
        head,
    )))
}

fn probe(
    bytes: &[u8],
    index: PersistedIndex,
    fingerprint: &Fingerprint,
) -> Option<(RecordLocation, u32)> {
    let mask = index.slot_count - 1;
    let mut i = format::home_slot(&fingerprint.0, index.slot_count);
    for _ in 0..index.slot_count {
        let at = (index.slots_offset + i * INDEX_SLOT_LEN) as usize;
        let (slot, _) = IndexSlot::ref_from_prefix(&bytes[at..]).ok()?;
        if slot.used.get() == 0 {
            return None;
        }
        if slot.fingerprint == fingerprint.0 {
            return Some((
                RecordLocation {
                    offset: slot.offset.get(),
                    len: slot.len.get(),
                },
                slot.ordinal.get(),
            ));
        }
        i = (i + 1) & mask;
    }
    None
}

/// Indexes the complete records after `scanned_end` into the overflow
/// table. Stops at the first incomplete or foreign bytes (a torn tail).
fn scan(s: &mut Snapshot) {
    let end = s.bytes.len() as u64;
    let mut offset = s.scanned_end;
    let mut ordinals = s.verified.len() * 64;
    loop {
        offset = format::skip_inner_footer(&s.bytes, offset, end);
        let Some((header, location)) = format::record_at(&s.bytes, offset, end) else {
            break;
        };
        let record = &s.bytes[offset as usize..(offset + location.len) as usize];
        let is_last = offset + location.len >= end;
        if is_last && !format::crc_ok(record, &header) {
            break; // torn last record: ignored, the next writer cuts it
        }
        if header.kind.get() != KIND_INDEX {
            let fingerprint = Fingerprint(header.fingerprint);
            let known = s
                .persisted
                .is_some_and(|index| probe(&s.bytes, index, &fingerprint).is_some());
            if !known {
                s.overflow
                    .entry(fingerprint)
                    .or_insert((location, header.ordinal.get()));
            }
            if s.persisted.is_none() {
                s.order.push(location);
            }
            ordinals = ordinals.max(header.ordinal.get() as usize + 1);
        }
        offset += location.len;
    }
    s.scanned_end = offset;
    if ordinals > s.verified.len() * 64 {
        let mut grown = bitset(ordinals);
        for (new, old) in grown.iter_mut().zip(s.verified.iter()) {
            *new.get_mut() = old.load(Ordering::Relaxed);
        }
        s.verified = Arc::new(grown);
    }
}

/// A view of one record: accessors parse lazily; bodies are `Bytes` slices of
/// the mapping. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct RecordView {
    record: Bytes,
    header: RecordHeader,
    layout: format::Layout,
    location: RecordLocation,
}

impl RecordView {
    pub fn location(&self) -> RecordLocation {
        self.location
    }
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.header.fingerprint)
    }
    pub fn chain_link(&self) -> Fingerprint {
        Fingerprint(self.header.chain_link)
    }
    pub fn canonical(&self) -> &[u8] {
        &self.record[self.layout.canonical.clone()]
    }
    pub fn is_websocket(&self) -> bool {
        self.header.kind.get() == KIND_WEBSOCKET
    }
    pub fn endpoint(&self) -> u16 {
        self.header.endpoint.get()
    }
    pub fn response_status(&self) -> u16 {
        self.layout.status
    }
    /// Response headers in recorded order.
    pub fn response_headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.response_headers_start,
        };
        let n = c.u32().unwrap_or(0);
        (0..n).map_while(move |_| {
            let name = c.field()?;
            let value = c.field()?;
            Some((&self.record[name], &self.record[value]))
        })
    }
    /// Response body chunks: (arrival offset µs, bytes pointing into the map).
    pub fn response_chunks(&self) -> impl Iterator<Item = (u64, Bytes)> + '_ {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.chunks_start,
        };
        (0..self.layout.chunk_count).map_while(move |_| {
            let offset = c.u64()?;
            let range = c.field()?;
            Some((offset, self.record.slice(range)))
        })
    }
    /// Sum of the chunk lengths.
    pub fn response_body_len(&self) -> u64 {
        self.layout.body_len
    }
    /// The whole interaction in owned form (allocates; not for the hot path).
    pub fn to_interaction(&self) -> Result<Interaction, RecordingError> {
        format::decode(&self.record, &self.header, &self.layout).ok_or_else(|| {
            RecordingError::CorruptRecord {
                path: PathBuf::new(),
                offset: self.location.offset,
                what: "malformed payload".into(),
            }
        })
    }
}
