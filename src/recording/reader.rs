//! Opening and reading a recording: O(1) open with a current persisted
//! index, a scan otherwise; lookups probe 64-byte slots in the mapping; a
//! record's CRC is checked the first time it is read.

use super::format::{
    self, FILE_HEADER_LEN, FOOTER_LEN, INDEX_HEAD_LEN, INDEX_SLOT_LEN, IndexHead, IndexSlot,
    KIND_INDEX, KIND_WEBSOCKET, RECORD_HEADER_LEN, RecordHeader,
};
use super::{ReadBackend, RecordLocation, RecordingError};
use crate::interaction::{Fingerprint, Interaction};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use zerocopy::FromBytes;

/// The persisted table: where its slots sit in the file.
#[derive(Clone, Copy)]
pub(super) struct PersistedIndex {
    /// Where the index record starts (its CRC covers the slots).
    pub(super) record_offset: u64,
    pub(super) slots_offset: u64,
    pub(super) slot_count: u64,
}

/// Which file a snapshot was read from: (device, inode). A refresh that
/// finds another file at the path (a new recording renamed over it) reads
/// that file afresh.
type FileIdentity = (u64, u64);

/// What a reader sees at one moment; replaced whole by `refresh`.
struct Snapshot {
    bytes: Bytes,
    /// The file's format version (its header's): how payloads are laid out.
    version: u32,
    /// `None` for a recording built in memory ([`Recording::from_bytes`]).
    identity: Option<FileIdentity>,
    persisted: Option<PersistedIndex>,
    /// Interaction records visible (a fingerprint recorded twice counts twice).
    record_count: usize,
    /// Records not in the persisted index (all of them without one); a
    /// fingerprint recorded twice keeps its first record.
    overflow: HashMap<Fingerprint, RecordLocation>,
    /// Interaction records in file order, kept only without a persisted
    /// index (with one, `iter` walks the file).
    order: Vec<RecordLocation>,
    /// Where the next scan starts: the end of the last complete record seen.
    scanned_end: u64,
    /// CRC verification cache, one word per ordinal: the offset of the
    /// record with that ordinal whose CRC was found sound, 0 for none yet.
    /// Keyed by ordinal for size, tagged by offset so that a record carrying
    /// another record's ordinal (damage) is never served unchecked. Sized by
    /// the records actually present, never by a header's claim.
    verified: Arc<Verified>,
    /// With a persisted index: the table a scan builds, made at the first
    /// lookup the index cannot answer if the index record's CRC then fails
    /// (`None`: the index is sound and its miss is a miss). See
    /// [`Snapshot::fallback`].
    fallback: OnceLock<Option<HashMap<Fingerprint, RecordLocation>>>,
}

impl Snapshot {
    /// The scanned table to answer from when the persisted index is
    /// damaged, `None` when it is sound. Checked once, at the first lookup
    /// the index does not answer (a miss, or a slot pointing at no such
    /// record): so that open stays O(1) and a hit costs no CRC, while a
    /// damaged slot never hides a sound record.
    fn fallback(
        &self,
        path: &Path,
        index: PersistedIndex,
    ) -> Option<&HashMap<Fingerprint, RecordLocation>> {
        self.fallback
            .get_or_init(|| {
                if index_crc_ok(&self.bytes, index) {
                    return None;
                }
                tracing::warn!(
                    "{}: index record at offset {} fails its CRC32C; lookups use a scan of the records",
                    path.display(),
                    index.record_offset
                );
                Some(scanned_table(&self.bytes))
            })
            .as_ref()
    }
}

/// Whether the index record of `index` is sound (its CRC).
fn index_crc_ok(bytes: &[u8], index: PersistedIndex) -> bool {
    format::record_at(bytes, index.record_offset, bytes.len() as u64).is_some_and(
        |(header, location)| {
            let record =
                &bytes[location.offset as usize..(location.offset + location.len) as usize];
            format::crc_ok(record, &header)
        },
    )
}

/// Every interaction record's location by fingerprint, first wins, as a
/// scan of the whole file finds them.
fn scanned_table(bytes: &[u8]) -> HashMap<Fingerprint, RecordLocation> {
    let (found, _, _) = format::locate(bytes, FILE_HEADER_LEN);
    let mut table = HashMap::new();
    for found in found {
        if let format::Found::Record(header, location) = found
            && header.kind.get() != KIND_INDEX
        {
            table
                .entry(Fingerprint(header.fingerprint))
                .or_insert(location);
        }
    }
    table
}

/// The CRC verification cache of [`Snapshot::verified`]: allocated at the
/// first read, so that opening a recording with an index stays O(1).
struct Verified {
    len: usize,
    tags: OnceLock<Box<[AtomicU64]>>,
}

impl Verified {
    fn new(len: usize) -> Verified {
        Verified {
            len,
            tags: OnceLock::new(),
        }
    }

    /// The tag of `ordinal`, if the table has one.
    fn tag(&self, ordinal: usize) -> Option<&AtomicU64> {
        if ordinal >= self.len {
            return None;
        }
        let tags = self
            .tags
            .get_or_init(|| (0..self.len).map(|_| AtomicU64::new(0)).collect());
        tags.get(ordinal)
    }

    /// A table for `len` ordinals keeping this one's checks.
    fn grown(&self, len: usize) -> Verified {
        let grown = Verified::new(len.max(self.len));
        if let Some(old) = self.tags.get() {
            for (ordinal, tag) in old.iter().enumerate() {
                let offset = tag.load(Ordering::Relaxed);
                if offset != 0
                    && let Some(new) = grown.tag(ordinal)
                {
                    new.store(offset, Ordering::Relaxed);
                }
            }
        }
        grown
    }
}

/// An open recording: shared by all connections of a session (`Send + Sync`).
pub struct Recording {
    /// Shared with every view, so that their errors name the file too.
    path: Arc<Path>,
    backend: ReadBackend,
    snapshot: RwLock<Arc<Snapshot>>,
    /// One refresh at a time (each extends the snapshot the last one made).
    refreshing: Mutex<()>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The backend to use for `wanted`: io_uring only where the probe succeeded
/// (the first refusal is logged once per process).
fn resolve(path: &Path, wanted: ReadBackend) -> ReadBackend {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if wanted == ReadBackend::Mmap {
        return wanted; // no ring is set up for a process that never asks
    }
    let (backend, refusal) = resolve_with(wanted, super::uring::probe());
    if let Some(why) = refusal
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            "{}: io_uring is refused here ({why}); reading recordings through mmap",
            path.display()
        );
    }
    backend
}

/// [`resolve`] given the probe's answer: the backend, and why io_uring was
/// refused when it was wanted and is not used.
fn resolve_with(wanted: ReadBackend, probe: &Result<(), String>) -> (ReadBackend, Option<&str>) {
    match (wanted, probe) {
        (ReadBackend::Mmap, _) => (ReadBackend::Mmap, None),
        (ReadBackend::IoUring, Ok(())) => (ReadBackend::IoUring, None),
        (ReadBackend::IoUring, Err(why)) => (ReadBackend::Mmap, Some(why)),
    }
}

/// Reads `file` (of length `len`) whole with `backend`.
fn load(file: &File, len: u64, backend: ReadBackend) -> std::io::Result<Bytes> {
    match backend {
        ReadBackend::Mmap => super::mmap::map(file),
        ReadBackend::IoUring => super::uring::read(file, 0, len).map(Bytes::from),
    }
}

fn identity(metadata: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

impl Recording {
    /// Opens a recording with `backend` (see [`Recording::backend`] for the
    /// one actually used). O(1) when the file ends with a current index;
    /// otherwise the records are scanned once (headers only: CRCs are
    /// checked lazily, the first time each record is read).
    pub fn open(path: &Path, backend: ReadBackend) -> Result<Recording, RecordingError> {
        let backend = resolve(path, backend);
        let file = File::open(path).map_err(io_error(path))?;
        let metadata = file.metadata().map_err(io_error(path))?;
        let bytes = load(&file, metadata.len(), backend).map_err(io_error(path))?;
        let snapshot = build(path, bytes, Some(identity(&metadata)))?;
        Ok(Recording {
            path: Arc::from(path),
            backend,
            snapshot: RwLock::new(Arc::new(snapshot)),
            refreshing: Mutex::new(()),
        })
    }

    /// A recording held in memory (e.g. built from a test-server directory);
    /// `name` is used in errors. Reports [`ReadBackend::Mmap`] (its bytes are
    /// served in place, as from a mapping); `refresh` finds nothing new.
    pub fn from_bytes(name: PathBuf, bytes: Bytes) -> Result<Recording, RecordingError> {
        let snapshot = build(&name, bytes, None)?;
        Ok(Recording {
            path: Arc::from(name),
            backend: ReadBackend::Mmap,
            snapshot: RwLock::new(Arc::new(snapshot)),
            refreshing: Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend actually in use (io_uring falls back to mmap where the
    /// kernel refuses it).
    pub fn backend(&self) -> ReadBackend {
        self.backend
    }

    /// Whether lookups probe the index persisted in the file (it was current
    /// at open: nothing was scanned) rather than a table rebuilt by a scan.
    pub fn uses_persisted_index(&self) -> bool {
        self.current().persisted.is_some()
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Number of interactions visible (a fingerprint recorded twice counts
    /// twice).
    pub fn len(&self) -> usize {
        self.current().record_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One index probe; never allocates, except once per snapshot when the
    /// index does not answer and its CRC fails: then the records are
    /// scanned, and lookups are answered from that table (a damaged index
    /// never hides a sound record).
    pub fn lookup(&self, fingerprint: &Fingerprint) -> Option<RecordLocation> {
        let s = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = s.persisted {
            if let Some(location) = probe(&self.path, &s.bytes, index, fingerprint) {
                return Some(location);
            }
            if let Some(location) = s
                .fallback(&self.path, index)
                .and_then(|table| table.get(fingerprint))
            {
                return Some(*location);
            }
        }
        s.overflow.get(fingerprint).copied()
    }

    /// Reads a record. Its CRC is checked the first time it is read; a
    /// damaged record is an error naming file and offset.
    pub fn read(&self, location: RecordLocation) -> Result<RecordView, RecordingError> {
        let s = self.current();
        self.view(&s, location)
    }

    fn view(&self, s: &Snapshot, location: RecordLocation) -> Result<RecordView, RecordingError> {
        let corrupt = |what: &str| RecordingError::CorruptRecord {
            path: self.path.to_path_buf(),
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
        let Some((header, found)) = format::record_at(&s.bytes, location.offset, end) else {
            return Err(corrupt("no record header here"));
        };
        if found.len != location.len || header.kind.get() == KIND_INDEX {
            return Err(corrupt("no interaction record here"));
        }
        let record = s.bytes.slice(location.offset as usize..end as usize);
        let tag = s.verified.tag(header.ordinal.get() as usize);
        if tag.is_none_or(|t| t.load(Ordering::Relaxed) != location.offset) {
            if !format::crc_ok(&record, &header) {
                return Err(corrupt("CRC32C mismatch"));
            }
            if let Some(t) = tag {
                t.store(location.offset, Ordering::Relaxed);
            }
        }
        let layout = format::layout(&record, header.kind.get(), s.version)
            .ok_or_else(|| corrupt("malformed payload"))?;
        Ok(RecordView {
            record,
            header,
            layout,
            location,
            path: self.path.clone(),
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
        let locations = match s.persisted {
            Some(index) => locations_in_order(&self.path, &s, index),
            None => s.order.clone(),
        };
        locations
            .into_iter()
            .map(move |location| self.view(&s, location))
    }

    /// Picks up records appended since open (by this process or another):
    /// the bytes past the last complete record are read again (mmap: the
    /// file is mapped anew; io_uring: only the new bytes are read). A file
    /// replaced at the path (a new recording renamed over it) or cut shorter
    /// is read afresh. Returns whether anything new became visible.
    pub fn refresh(&self) -> Result<bool, RecordingError> {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.current();
        let Some(old_identity) = old.identity else {
            return Ok(false); // built in memory: nothing to re-read
        };
        let path = &self.path;
        let file = File::open(path).map_err(io_error(path))?;
        let metadata = file.metadata().map_err(io_error(path))?;
        let len = metadata.len();
        let old_len = old.bytes.len() as u64;
        let next = if identity(&metadata) != old_identity || len < old_len {
            let bytes = load(&file, len, self.backend).map_err(io_error(path))?;
            build(path, bytes, Some(identity(&metadata)))?
        } else if len == old_len {
            return Ok(false);
        } else {
            let bytes = match self.backend {
                ReadBackend::Mmap => super::mmap::map(&file).map_err(io_error(path))?,
                ReadBackend::IoUring => {
                    let tail = super::uring::read(&file, old_len, len - old_len)
                        .map_err(io_error(path))?;
                    let mut joined = BytesMut::with_capacity(old.bytes.len() + tail.len());
                    joined.extend_from_slice(&old.bytes);
                    joined.extend_from_slice(&tail);
                    joined.freeze()
                }
            };
            let mut next = Snapshot {
                bytes,
                version: old.version,
                identity: old.identity,
                persisted: old.persisted,
                record_count: old.record_count,
                overflow: old.overflow.clone(),
                order: old.order.clone(),
                scanned_end: old.scanned_end,
                verified: old.verified.clone(),
                fallback: OnceLock::new(),
            };
            scan(path, &mut next);
            if next.record_count == old.record_count {
                // Nothing complete yet: keep the old snapshot (and its map).
                return Ok(false);
            }
            next
        };
        let grew = next.record_count != old.record_count || next.identity != old.identity;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(grew)
    }
}

/// A snapshot of `bytes`: the persisted index if current, else a scan.
fn build(
    path: &Path,
    bytes: Bytes,
    identity: Option<FileIdentity>,
) -> Result<Snapshot, RecordingError> {
    let version = format::check_file_header(path, &bytes)?;
    let persisted = persisted_index(path, &bytes).unwrap_or_else(|error| {
        // A damaged index must not hide sound records: rebuild it.
        tracing::warn!("{error}; rebuilding it from the records");
        None
    });
    let mut snapshot = Snapshot {
        identity,
        persisted: persisted.map(|(index, _)| index),
        record_count: 0,
        overflow: HashMap::new(),
        order: Vec::new(),
        scanned_end: FILE_HEADER_LEN,
        verified: Arc::new(Verified::new(0)),
        fallback: OnceLock::new(),
        version,
        bytes,
    };
    match persisted {
        Some((_, head)) => {
            // Nothing follows a current index: a refresh resumes at the end.
            let count = head.record_count.get() as usize;
            snapshot.record_count = count;
            snapshot.verified = Arc::new(Verified::new(count));
            snapshot.scanned_end = snapshot.bytes.len() as u64;
        }
        None => scan(path, &mut snapshot),
    }
    Ok(snapshot)
}

/// The footer's index if it is current and sound; `Ok(None)` means rebuild.
pub(super) fn persisted_index(
    path: &Path,
    bytes: &[u8],
) -> Result<Option<(PersistedIndex, IndexHead)>, RecordingError> {
    let len = bytes.len() as u64;
    if len < FILE_HEADER_LEN + FOOTER_LEN {
        return Ok(None);
    }
    let Some(footer) = format::footer_at(bytes, len - FOOTER_LEN) else {
        return Ok(None); // no footer: a recording never finished
    };
    if footer.file_len.get() != len {
        return Ok(None); // a footer that came with bytes from elsewhere
    }
    let bad = |what: &str| RecordingError::BadIndex {
        path: path.to_path_buf(),
        what: what.to_owned(),
    };
    let index_offset = footer.index_offset.get();
    let Some((header, location)) = format::record_at(bytes, index_offset, len - FOOTER_LEN) else {
        return Err(bad("the footer points outside the file or at no record"));
    };
    if header.kind.get() != KIND_INDEX || index_offset + location.len != len - FOOTER_LEN {
        return Err(bad(
            "the footer does not point at the index record before it",
        ));
    }
    let head_at = (index_offset + RECORD_HEADER_LEN) as usize;
    let (head, _) =
        IndexHead::read_from_prefix(&bytes[head_at..]).map_err(|_| bad("truncated index head"))?;
    let slot_count = head.slot_count.get();
    let slots_end = (index_offset + RECORD_HEADER_LEN + INDEX_HEAD_LEN)
        .checked_add(head.pad_len.get())
        .and_then(|slots_offset| {
            let end = slot_count
                .checked_mul(INDEX_SLOT_LEN)?
                .checked_add(slots_offset)?;
            Some((slots_offset, end))
        });
    let Some((slots_offset, slots_end)) = slots_end else {
        return Err(bad("slot count overflows"));
    };
    let payload_end = index_offset + RECORD_HEADER_LEN + header.payload_len.get();
    if !slot_count.is_power_of_two()
        || !slots_offset.is_multiple_of(INDEX_SLOT_LEN)
        || slots_end > payload_end
        || head.records_end.get() > index_offset
        || head.record_count.get() > slot_count
    {
        return Err(bad("index head is inconsistent with the file"));
    }
    Ok(Some((
        PersistedIndex {
            record_offset: index_offset,
            slots_offset,
            slot_count,
        },
        head,
    )))
}

/// Probes the persisted table from the fingerprint's home slot to the first
/// empty slot. A hit is trusted only if the record it points at carries the
/// same fingerprint (the index's own CRC is not checked at open, to keep
/// open O(1)); a damaged slot is logged and treated as a miss.
fn probe(
    path: &Path,
    bytes: &[u8],
    index: PersistedIndex,
    fingerprint: &Fingerprint,
) -> Option<RecordLocation> {
    let mask = index.slot_count - 1;
    let mut i = format::home_slot(&fingerprint.0, index.slot_count);
    for _ in 0..index.slot_count {
        let at = (index.slots_offset + i * INDEX_SLOT_LEN) as usize;
        let (slot, _) = IndexSlot::ref_from_prefix(&bytes[at..]).ok()?;
        if slot.used.get() == 0 {
            return None;
        }
        if slot.fingerprint == fingerprint.0 {
            let location = RecordLocation {
                offset: slot.offset.get(),
                len: slot.len.get(),
            };
            let sound = location
                .offset
                .checked_add(location.len)
                .and_then(|end| format::record_at(bytes, location.offset, end))
                .is_some_and(|(header, found)| {
                    found.len == location.len
                        && header.kind.get() != KIND_INDEX
                        && header.fingerprint == fingerprint.0
                });
            if !sound {
                tracing::warn!(
                    "{}: index slot {i} for {fingerprint} points at no such record (damaged index)",
                    path.display()
                );
                return None;
            }
            return Some(location);
        }
        i = (i + 1) & mask;
    }
    None
}

/// Adds the complete records after `scanned_end` (see [`format::locate`]:
/// stale footers stepped over, a torn tail never served, damage in the
/// middle of the file reported where it is read and stepped over).
fn scan(path: &Path, s: &mut Snapshot) {
    let (found, end, damage) = format::locate(&s.bytes, s.scanned_end);
    if let Some(offset) = damage {
        tracing::warn!("{}: damaged record at offset {offset}", path.display());
    }
    for found in found {
        let (header, location) = match found {
            format::Found::Record(header, location) => (header, location),
            format::Found::Damaged(location) => {
                if s.persisted.is_none() {
                    s.order.push(location); // iter reports it
                }
                continue;
            }
        };
        if header.kind.get() == KIND_INDEX {
            continue;
        }
        let fingerprint = Fingerprint(header.fingerprint);
        let indexed = s
            .persisted
            .is_some_and(|index| probe(path, &s.bytes, index, &fingerprint).is_some());
        if !indexed {
            s.overflow.entry(fingerprint).or_insert(location);
        }
        if s.persisted.is_none() {
            s.order.push(location);
        }
        s.record_count += 1;
    }
    s.scanned_end = end;
    if s.record_count > s.verified.len {
        s.verified = Arc::new(s.verified.grown(s.record_count));
    }
}

/// Every interaction location of a file with a persisted index, in file
/// order: the records a walk finds, plus any the index holds that damage
/// hid from the walk.
fn locations_in_order(path: &Path, s: &Snapshot, index: PersistedIndex) -> Vec<RecordLocation> {
    let (found, _, _) = format::locate(&s.bytes, FILE_HEADER_LEN);
    let mut locations: Vec<RecordLocation> = found
        .into_iter()
        .filter_map(|found| match found {
            format::Found::Record(header, location) => {
                (header.kind.get() != KIND_INDEX).then_some(location)
            }
            format::Found::Damaged(location) => Some(location),
        })
        .collect();
    if s.fallback(path, index).is_some() {
        // A damaged index's slots may point anywhere: the walk alone.
        return locations;
    }
    let walked: std::collections::HashSet<u64> = locations.iter().map(|l| l.offset).collect();
    for i in 0..index.slot_count {
        let at = (index.slots_offset + i * INDEX_SLOT_LEN) as usize;
        if let Ok((slot, _)) = IndexSlot::ref_from_prefix(&s.bytes[at..])
            && slot.used.get() != 0
            && !walked.contains(&slot.offset.get())
        {
            locations.push(RecordLocation {
                offset: slot.offset.get(),
                len: slot.len.get(),
            });
        }
    }
    locations.sort_by_key(|l| l.offset);
    locations.dedup_by_key(|l| l.offset);
    locations
}

/// A view of one record: accessors parse lazily; bodies are `Bytes` slices of
/// the mapping. Cloning is a reference-count increment.
#[derive(Clone)]
pub struct RecordView {
    record: Bytes,
    header: RecordHeader,
    layout: format::Layout,
    location: RecordLocation,
    path: Arc<Path>,
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
    /// The record's 0-based place in its file (the writer's count of records
    /// before it).
    pub fn ordinal(&self) -> u32 {
        self.header.ordinal.get()
    }
    /// The recorded request's method and target (path and query), as
    /// stored (redacted); empty where the payload lacks them.
    pub fn request_method_and_target(&self) -> (&[u8], &[u8]) {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.request_start,
        };
        let method = c.field().map_or(&[][..], |range| &self.record[range]);
        let target = c.field().map_or(&[][..], |range| &self.record[range]);
        (method, target)
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
    /// Response headers with each value as `Bytes` pointing into the map:
    /// a replayed header block copies no value.
    pub fn response_headers_shared(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.response_headers_start,
        };
        let n = c.u32().unwrap_or(0);
        (0..n).map_while(move |_| {
            let name = c.field()?;
            let value = c.field()?;
            Some((&self.record[name], self.record.slice(value)))
        })
    }

    /// Time to first byte: µs from the request's sending upstream to the
    /// response head (0 in a version 1 record, which did not keep it).
    pub fn response_head_offset_us(&self) -> u64 {
        self.layout.head_offset_us
    }

    /// Response trailers in recorded order, each value as `Bytes` pointing
    /// into the map (none in a version 1 record).
    pub fn response_trailers_shared(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.trailers_start.unwrap_or(self.record.len()),
        };
        let n = match self.layout.trailers_start {
            Some(_) => c.u32().unwrap_or(0),
            None => 0,
        };
        (0..n).map_while(move |_| {
            let name = c.field()?;
            let value = c.field()?;
            Some((&self.record[name], self.record.slice(value)))
        })
    }

    /// The recording's format version (of its file header).
    pub fn format_version(&self) -> u32 {
        self.layout.version
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
    /// The response's original `content-encoding`; empty when its body is
    /// stored as it came (then a stored `content-encoding` describes it).
    pub fn response_original_encoding(&self) -> &[u8] {
        let mut c = format::Cursor {
            bytes: &self.record,
            pos: self.layout.response_headers_start,
        };
        let n = c.u32().unwrap_or(0);
        for _ in 0..n {
            if c.field().and_then(|_| c.field()).is_none() {
                return &[];
            }
        }
        c.field().map_or(&[], |range| &self.record[range])
    }
    /// The whole interaction in owned form (allocates; not for the hot path).
    pub fn to_interaction(&self) -> Result<Interaction, RecordingError> {
        format::decode(&self.record, &self.header, &self.layout).ok_or_else(|| {
            RecordingError::CorruptRecord {
                path: self.path.to_path_buf(),
                offset: self.location.offset,
                what: "malformed payload".into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_refused_by_the_kernel_falls_back_to_mmap_and_says_why() {
        let refused = Err("Operation not permitted (os error 1)".to_owned());
        assert_eq!(
            resolve_with(ReadBackend::IoUring, &refused),
            (
                ReadBackend::Mmap,
                Some("Operation not permitted (os error 1)")
            )
        );
        assert_eq!(
            resolve_with(ReadBackend::IoUring, &Ok(())),
            (ReadBackend::IoUring, None)
        );
        assert_eq!(
            resolve_with(ReadBackend::Mmap, &refused),
            (ReadBackend::Mmap, None)
        );
    }

    #[test]
    fn the_verification_cache_is_allocated_at_first_read_and_keeps_checks_when_grown() {
        let verified = Verified::new(3);
        assert!(verified.tags.get().is_none());
        assert!(
            verified.tag(3).is_none(),
            "past the table: checked every read"
        );
        verified.tag(1).unwrap().store(640, Ordering::Relaxed);
        let grown = verified.grown(5);
        assert_eq!(grown.tag(1).unwrap().load(Ordering::Relaxed), 640);
        assert_eq!(grown.tag(4).unwrap().load(Ordering::Relaxed), 0);
    }
}
