//! Appending to a recording: begin (beside the old one), append, finish
//! (index, footer, fsync, rename). Synchronous: callers keep it off the
//! async executor.

use super::format::{
    self, FILE_HEADER_LEN, Footer, INDEX_HEAD_LEN, INDEX_SLOT_LEN, IndexHead, IndexSlot,
    KIND_INDEX, RECORD_HEADER_LEN, RECORD_MAGIC, RecordHeader,
};
use super::{Durability, RecordLocation, RecordingError};
use crate::interaction::Interaction;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

/// Writes one session's recording.
pub struct RecordingWriter {
    file: File,
    /// The file being written (`.partial` for a new recording).
    path: PathBuf,
    /// Where `finish` renames it to; `None` when appending in place.
    final_path: Option<PathBuf>,
    durability: Durability,
    /// The file's format version: a new file's is [`format::FORMAT_VERSION`];
    /// one appended to keeps its own (a file never mixes versions).
    version: u32,
    end: u64,
    entries: Vec<([u8; 32], RecordLocation, u32)>,
    /// `Durability::EveryInteraction` only: where appends wait for their
    /// `fdatasync`, outside whatever lock guards this writer.
    sync_point: Option<Arc<SyncPoint>>,
}

/// Group commit for [`Durability::EveryInteraction`]. An append writes its
/// record under the session's lock and then waits here, without that lock:
/// one `fdatasync` makes durable every record written before it started, so
/// appends that arrive while a sync runs share the next one instead of
/// queueing one each (a sync costs milliseconds; a write, microseconds).
pub struct SyncPoint {
    /// A second descriptor of the writer's file (`dup`): syncing it syncs
    /// the file.
    file: File,
    path: PathBuf,
    /// End of the bytes written so far; set after each write.
    written_to: AtomicU64,
    /// End of the bytes known durable. Its lock is held across the sync, so
    /// at most one sync per file runs at a time.
    synced_to: Mutex<u64>,
    syncs: AtomicU64,
}

impl SyncPoint {
    /// The sync point a writer of `file` needs: one for every-interaction
    /// durability, none otherwise. Nothing counts as durable yet.
    fn for_durability(
        durability: Durability,
        file: &File,
        path: &Path,
    ) -> Result<Option<Arc<SyncPoint>>, RecordingError> {
        if durability != Durability::EveryInteraction {
            return Ok(None);
        }
        Ok(Some(Arc::new(SyncPoint {
            file: file.try_clone().map_err(io(path))?,
            path: path.to_path_buf(),
            written_to: AtomicU64::new(0),
            synced_to: Mutex::new(0),
            syncs: AtomicU64::new(0),
        })))
    }

    /// Returns once every byte before `end` is durable, and whether this
    /// call made the sync (not one that covered it already). Blocking.
    fn sync_to(&self, end: u64) -> Result<bool, RecordingError> {
        let mut synced_to = self
            .synced_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *synced_to >= end {
            // A sync that started after this record was written covered it.
            return Ok(false);
        }
        // Everything written up to here is covered by the sync below,
        // including records appended while this caller waited for the lock.
        let target = self.written_to.load(Ordering::Acquire);
        assert!(target >= end, "a record is synced before it is written");
        self.file.sync_data().map_err(io(&self.path))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        *synced_to = target;
        Ok(true)
    }

    /// Number of `fdatasync` calls made so far.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// What an append still owes its caller before the record counts as
/// committed: nothing, or (every-interaction) its `fdatasync`.
#[must_use = "a record is not durable until its sync is waited for"]
pub struct PendingSync {
    point: Option<Arc<SyncPoint>>,
    end: u64,
}

impl PendingSync {
    /// Whether [`Self::wait`] may block (a sync is owed).
    pub fn is_owed(&self) -> bool {
        self.point.is_some()
    }

    /// Blocks until the record is durable (at once when no sync is owed);
    /// whether this call made an `fdatasync` (another append's may have
    /// covered it).
    pub fn wait(self) -> Result<bool, RecordingError> {
        match self.point {
            Some(point) => point.sync_to(self.end),
            None => Ok(false),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RecordingWriter {
    /// Begins a new recording for `final_path` (`<dir>/<session>.ouli`): writes
    /// to `<final_path>.partial` (a new file: a leftover one is unlinked, never
    /// truncated in place), creating parent folders. The old recording at
    /// `final_path`, if any, stays untouched until [`Self::finish`].
    pub fn create(final_path: &Path, durability: Durability) -> Result<Self, RecordingError> {
        Self::create_with_version(final_path, durability, format::FORMAT_VERSION)
    }

    /// [`Self::create`] in an older format `version` (from
    /// [`format::FORMAT_VERSION_OLDEST`]): for tools and tests that must
    /// write a file an older ouli reads. Another version is refused with
    /// [`RecordingError::UnsupportedVersion`].
    pub fn create_with_version(
        final_path: &Path,
        durability: Durability,
        version: u32,
    ) -> Result<Self, RecordingError> {
        let mut partial = final_path.as_os_str().to_owned();
        partial.push(".partial");
        let path = PathBuf::from(partial);
        if !(format::FORMAT_VERSION_OLDEST..=format::FORMAT_VERSION).contains(&version) {
            return Err(RecordingError::UnsupportedVersion {
                path,
                found: version,
                supported: format::FORMAT_VERSION,
            });
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        // A leftover partial file (a record run that died) may be mapped by
        // a replay server serving it: unlink it rather than truncate it in
        // place, so that the mapping keeps its bytes (rfcs/0001, "Read backends").
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&path)(error));
            }
            _ => {}
        }
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        file.write_all(format::new_file_header(now, version).as_bytes())
            .map_err(io(&path))?;
        let sync_point = SyncPoint::for_durability(durability, &file, &path)?;
        Ok(RecordingWriter {
            file,
            path,
            final_path: Some(final_path.to_path_buf()),
            durability,
            version,
            end: FILE_HEADER_LEN,
            entries: Vec::new(),
            sync_point,
        })
    }

    /// Re-opens an existing recording to append to it (record-missing mode):
    /// cuts a torn tail (or foreign bytes after the last record), then
    /// appends after the last complete record. A current footer is kept (it
    /// turns stale, and readers step over it, once records follow it).
    /// Refuses, with [`RecordingError::CorruptRecord`], to cut anything when
    /// a sound record follows the damage: that is a damaged record in the
    /// middle of the file, and cutting would destroy committed records.
    pub fn append_to(path: &Path, durability: Durability) -> Result<Self, RecordingError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let version = format::check_file_header(path, &bytes)?;
        let len = bytes.len() as u64;
        let (found, mut end, damage) = format::locate(&bytes, FILE_HEADER_LEN);
        if let Some(damage) = damage {
            return Err(RecordingError::CorruptRecord {
                path: path.to_path_buf(),
                offset: damage,
                what: "damaged record before sound ones; refusing to cut or append \
                       (move the file aside to re-record)"
                    .into(),
            });
        }
        let mut entries = Vec::new();
        for found in found {
            if let format::Found::Record(header, location) = found
                && header.kind.get() != KIND_INDEX
            {
                entries.push((header.fingerprint, location, entries.len() as u32));
            }
        }
        if end + format::FOOTER_LEN <= len && format::footer_at(&bytes, end).is_some() {
            end += format::FOOTER_LEN;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        if end < len {
            tracing::warn!(
                "{}: cutting {} bytes of torn or foreign tail at offset {end}",
                path.display(),
                len - end
            );
            file.set_len(end).map_err(io(path))?;
            if durability != Durability::None {
                file.sync_data().map_err(io(path))?;
            }
        }
        file.seek(SeekFrom::Start(end)).map_err(io(path))?;
        let sync_point = SyncPoint::for_durability(durability, &file, path)?;
        Ok(RecordingWriter {
            file,
            path: path.to_path_buf(),
            final_path: None,
            durability,
            version,
            end,
            entries,
            sync_point,
        })
    }

    /// Appends one interaction; once this returns, the record is in the file
    /// (page cache at least) and survives `kill -9`, and with
    /// `Durability::EveryInteraction` it is on the disk.
    pub fn append(&mut self, interaction: &Interaction) -> Result<RecordLocation, RecordingError> {
        let (location, pending) = self.append_deferring_sync(interaction)?;
        pending.wait()?;
        Ok(location)
    }

    /// [`Self::append`] without waiting for the disk: the record is in the
    /// file (it survives `kill -9`); with `Durability::EveryInteraction` it
    /// is durable once the returned [`PendingSync`] is waited for, which the
    /// caller does after releasing its lock on this writer, so that
    /// concurrent appends share one `fdatasync` (group commit).
    pub fn append_deferring_sync(
        &mut self,
        interaction: &Interaction,
    ) -> Result<(RecordLocation, PendingSync), RecordingError> {
        let too_large = |what: String| RecordingError::RecordTooLarge {
            path: self.path.clone(),
            what,
        };
        format::check_limits(interaction).map_err(too_large)?;
        let ordinal = u32::try_from(self.entries.len())
            .map_err(|_| too_large("the recording holds 2^32 interactions".into()))?;
        self.note_left_out(interaction);
        let record = format::encode_record(ordinal, interaction, self.version);
        if record.len() as u64 > format::RECORD_BYTES_MAX {
            return Err(too_large(format!(
                "the record is {} bytes (at most {})",
                record.len(),
                format::RECORD_BYTES_MAX
            )));
        }
        self.write(&record)?;
        let location = RecordLocation {
            offset: self.end,
            len: record.len() as u64,
        };
        self.end += record.len() as u64;
        self.entries
            .push((interaction.fingerprint.0, location, ordinal));
        if let Some(point) = &self.sync_point {
            point.written_to.store(self.end, Ordering::Release);
        }
        let pending = PendingSync {
            point: self.sync_point.clone(),
            end: self.end,
        };
        Ok((location, pending))
    }

    /// The format version records are written in (the file's).
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// A version 1 file has no room for a time to first byte or trailers:
    /// appended there (record-missing on an old recording), they are left
    /// out. Losing trailers changes what replay sends, so it is logged.
    fn note_left_out(&self, interaction: &Interaction) {
        if self.version >= format::FORMAT_VERSION_2 {
            return;
        }
        let response = match &interaction.exchange {
            crate::interaction::Exchange::Http(response) => response,
            crate::interaction::Exchange::WebSocket { response, .. } => response,
        };
        if !response.trailers.is_empty() {
            tracing::warn!(
                "{}: format version {} keeps no trailers: {} trailer field(s) of {} left out \
                 (re-record the session to keep them)",
                self.path.display(),
                self.version,
                response.trailers.len(),
                interaction.fingerprint
            );
        }
        if !interaction.request.trailers.is_empty() {
            tracing::info!(
                "{}: format version {} keeps no request trailers: {} of {} left out",
                self.path.display(),
                self.version,
                interaction.request.trailers.len(),
                interaction.fingerprint
            );
        }
    }

    /// The group-commit point of an every-interaction writer.
    pub fn sync_point(&self) -> Option<&Arc<SyncPoint>> {
        self.sync_point.as_ref()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), RecordingError> {
        // One write of the whole record: a crash leaves it whole or torn at
        // the tail, never interleaved.
        let written = self.file.write_all(bytes).map_err(io(&self.path));
        if written.is_err() {
            // A failed write (ENOSPC, EIO) may have left part of the record:
            // cut it, so that the next record does not follow garbage (which
            // would hide it from every reader). Best effort: if this fails
            // too, the part is a torn tail that the next writer cuts.
            let _ = self.file.set_len(self.end);
            let _ = self.file.seek(SeekFrom::Start(self.end));
        }
        written
    }

    /// Number of interactions in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this writer began a new file ([`Self::create`]) rather than
    /// appending to an existing one.
    pub fn is_new(&self) -> bool {
        self.final_path.is_some()
    }

    /// Writes the index, syncs per durability, and (for `create`) renames the
    /// partial file over the final path. Returns the final path.
    pub fn finish(self) -> Result<PathBuf, RecordingError> {
        self.finish_checked(None)
    }

    /// [`Self::finish`], with the file's bytes read back and scanned for
    /// secrets before it is completed (renamed into place, or, appended in
    /// place, reported complete). A hit removes the file (the `.partial`,
    /// or the file appended to): a recording holding a secret is neither
    /// completed nor left on the disk. The error names each hit.
    pub fn finish_checked(
        self,
        scan: Option<&super::secret_scan::SecretScan>,
    ) -> Result<PathBuf, RecordingError> {
        let path = self.path.clone();
        let final_path = self.final_path.clone();
        let finish = self.finish_unchecked()?;
        let Some(scan) = scan else {
            return finish.complete(final_path);
        };
        // Mapped, not read: a large recording is not held twice.
        let bytes = File::open(&path)
            .and_then(|file| super::mmap::map(&file))
            .map_err(io(&path))?;
        let hits = scan.scan(&bytes);
        drop(bytes);
        if hits.is_empty() {
            return finish.complete(final_path);
        }
        let hits: Vec<String> = hits.iter().map(ToString::to_string).collect();
        tracing::error!(
            "{}: secret in the written recording, removing it: {}",
            path.display(),
            hits.join("; ")
        );
        std::fs::remove_file(&path).map_err(io(&path))?;
        Err(RecordingError::SecretFound {
            path,
            hits: hits.join("; "),
        })
    }

    /// Index, footer and sync: all of finishing but putting the file in place.
    fn finish_unchecked(mut self) -> Result<Finished, RecordingError> {
        let slot_count = format::slot_count_for(self.entries.len());
        let mut slots = vec![
            IndexSlot {
                fingerprint: [0; 32],
                offset: U64::new(0),
                len: U64::new(0),
                ordinal: U32::new(0),
                used: U32::new(0),
                reserved: [0; 8]
            };
            slot_count as usize
        ];
        for (fingerprint, location, ordinal) in &self.entries {
            let mut i = format::home_slot(fingerprint, slot_count);
            // A fingerprint recorded twice keeps its first record.
            while slots[i as usize].used.get() == 1 && slots[i as usize].fingerprint != *fingerprint
            {
                i = (i + 1) & (slot_count - 1);
            }
            if slots[i as usize].used.get() == 1 {
                continue;
            }
            slots[i as usize] = IndexSlot {
                fingerprint: *fingerprint,
                offset: U64::new(location.offset),
                len: U64::new(location.len),
                ordinal: U32::new(*ordinal),
                used: U32::new(1),
                reserved: [0; 8],
            };
        }
        // Slots start on a 64-byte file offset: cache-line aligned in the map.
        let head_end = self.end + RECORD_HEADER_LEN + INDEX_HEAD_LEN;
        let pad_len = head_end.next_multiple_of(INDEX_SLOT_LEN) - head_end;
        let head = IndexHead {
            slot_count: U64::new(slot_count),
            record_count: U64::new(self.entries.len() as u64),
            records_end: U64::new(self.end),
            pad_len: U64::new(pad_len),
        };
        let mut payload =
            Vec::with_capacity((INDEX_HEAD_LEN + pad_len + slot_count * INDEX_SLOT_LEN) as usize);
        payload.extend_from_slice(head.as_bytes());
        payload.resize(payload.len() + pad_len as usize, 0);
        payload.extend_from_slice(slots.as_bytes());
        let header = RecordHeader {
            magic: U32::new(RECORD_MAGIC),
            kind: U16::new(KIND_INDEX),
            endpoint: U16::new(0),
            payload_len: U64::new(payload.len() as u64),
            crc: U32::new(0),
            ordinal: U32::new(0),
            fingerprint: [0; 32],
            chain_link: [0; 32],
            recorded_at_unix_us: U64::new(0),
        };
        let record = format::seal(header, &payload);
        let index_offset = self.end;
        let file_len = self.end + record.len() as u64 + format::FOOTER_LEN;
        let mut footer = Footer {
            magic: format::FOOTER_MAGIC,
            index_offset: U64::new(index_offset),
            file_len: U64::new(file_len),
            reserved: U32::new(0),
            crc: U32::new(0),
        };
        footer.crc = U32::new(crc32c::crc32c(&footer.as_bytes()[..28]));
        let mut tail = record;
        tail.extend_from_slice(footer.as_bytes());
        self.write(&tail)?;
        if self.durability != Durability::None {
            self.file.sync_all().map_err(io(&self.path))?;
        }
        Ok(Finished {
            path: self.path.clone(),
            durability: self.durability,
        })
    }
}

/// A recording whose index and footer are written and synced, not yet in
/// place.
struct Finished {
    path: PathBuf,
    durability: Durability,
}

impl Finished {
    /// Renames it over `final_path` (a new recording), or leaves it where
    /// it is (appended in place, `None`). Returns where it is.
    fn complete(self, final_path: Option<PathBuf>) -> Result<PathBuf, RecordingError> {
        let Some(final_path) = final_path else {
            return Ok(self.path);
        };
        std::fs::rename(&self.path, &final_path).map_err(io(&final_path))?;
        if self.durability != Durability::None
            && let Some(parent) = final_path.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(final_path)
    }
}

/// A whole recording file in memory (file header and records, no index: a
/// reader scans it), for recordings converted on the fly, such as a
/// test-server directory served as it is. Nothing touches the disk. An
/// interaction over the format's limits is left out (logged).
pub fn encode_recording(interactions: &[Interaction]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut bytes = format::new_file_header(now, format::FORMAT_VERSION)
        .as_bytes()
        .to_vec();
    let mut ordinal = 0u32;
    for interaction in interactions {
        if let Err(what) = format::check_limits(interaction) {
            tracing::warn!("interaction {} left out: {what}", interaction.fingerprint);
            continue;
        }
        let record = format::encode_record(ordinal, interaction, format::FORMAT_VERSION);
        if record.len() as u64 > format::RECORD_BYTES_MAX {
            tracing::warn!(
                "interaction {} left out: record too large",
                interaction.fingerprint
            );
            continue;
        }
        bytes.extend_from_slice(&record);
        ordinal += 1;
    }
    bytes
}
