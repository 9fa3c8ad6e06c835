//! `ouli verify`: every byte a reader relies on, checked (rfcs/0001,
//! "Verifying"). The reader itself is lenient where it can be (it skips a
//! torn tail, rebuilds a damaged index by a scan); verify reports each of
//! those as damage, with its offset, so that a file is called sound only
//! when every record, the index and the footer are.

use super::RecordingError;
use super::format::{
    self, FILE_HEADER_LEN, FOOTER_LEN, INDEX_SLOT_LEN, IndexSlot, KIND_INDEX, RecordHeader,
};
use super::reader::persisted_index;
use crate::interaction::Fingerprint;
use std::collections::HashMap;
use std::path::Path;
use zerocopy::FromBytes;

/// One thing wrong with a recording: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub what: String,
}

/// What [`verify_file`] found in one recording.
#[derive(Debug, Default)]
pub struct Verified {
    /// Interaction records whose framing, CRC and payload are sound.
    pub records: usize,
    /// Everything wrong, in file order; empty for a sound file.
    pub damage: Vec<Damage>,
    /// The file's format version (0 when its header is unreadable).
    pub version: u32,
}

/// Whether a file is expected to end with its index: a finished recording
/// (`.ouli`) does, an interrupted one (`.ouli.partial`) need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Finished,
    Interrupted,
}

/// Reads (maps, as the default reader does) and checks one recording;
/// `Err` only when it cannot be read.
pub fn verify_file(path: &Path, expect: Expect) -> Result<Verified, RecordingError> {
    let io = |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let bytes = super::mmap::map(&file).map_err(io)?;
    Ok(verify_bytes(path, &bytes, expect))
}

/// The checks of [`verify_file`] on a file's bytes (`path` only names it).
pub fn verify_bytes(path: &Path, bytes: &[u8], expect: Expect) -> Verified {
    let mut verified = Verified::default();
    let version = match format::check_file_header(path, bytes) {
        Ok(version) => version,
        Err(error) => {
            verified.damage.push(Damage {
                offset: 0,
                what: header_problem(&error),
            });
            return verified;
        }
    };
    verified.version = version;
    let walk = walk(bytes, version, &mut verified);
    verified.records = walk.records.len();
    let len = bytes.len() as u64;
    let ends_with_footer = walk.footers.last() == Some(&(len - FOOTER_LEN.min(len)))
        && len >= FILE_HEADER_LEN + FOOTER_LEN;
    if ends_with_footer {
        check_index(path, bytes, &walk, &mut verified);
    } else if expect == Expect::Finished && walk.clean_end {
        verified.damage.push(Damage {
            offset: len,
            what: "no footer at the end: the recording was not finished (cut short, or a \
                   record-missing run that did not end); the reader scans its records"
                .into(),
        });
    }
    verified
}

/// What the walk of the records found.
struct Walked {
    /// Sound interaction records: (fingerprint, offset, length, ordinal).
    records: Vec<([u8; 32], u64, u64, u32)>,
    /// Offsets of sound index records.
    indexes: Vec<u64>,
    /// Offsets of sound footers.
    footers: Vec<u64>,
    /// Offsets where damage was reported: the index's slots for them and
    /// its count are not reported again.
    damaged: Vec<u64>,
    /// Whether the walk reached the end of the file on a record or footer
    /// boundary with nothing damaged at the end.
    clean_end: bool,
}

/// Walks every record and footer from the header to the end of the file,
/// as the reader does, checking each record's framing, CRC and payload and
/// each footer's fields; anything else is damage.
fn walk(bytes: &[u8], version: u32, verified: &mut Verified) -> Walked {
    let len = bytes.len() as u64;
    // The index the last footer names, to name damage there as the index's.
    let final_index = (len >= FILE_HEADER_LEN + FOOTER_LEN)
        .then(|| format::footer_at(bytes, len - FOOTER_LEN))
        .flatten()
        .map(|footer| footer.index_offset.get());
    let mut walked = Walked {
        records: Vec::new(),
        indexes: Vec::new(),
        footers: Vec::new(),
        damaged: Vec::new(),
        clean_end: false,
    };
    let mut damage = |offset: u64, what: String| {
        walked.damaged.push(offset);
        verified.damage.push(Damage { offset, what });
    };
    let mut at = FILE_HEADER_LEN;
    let mut previous: Option<(RecordHeader, u64)> = None;
    while at < len {
        let name = |kind: u16| match (Some(at) == final_index, kind) {
            (true, _) | (false, KIND_INDEX) => "index record",
            _ => "record",
        };
        if let Some(footer) = format::footer_at(bytes, at) {
            if let Some(what) = footer_problem(&footer, at, previous.as_ref()) {
                damage(at, format!("footer: {what}"));
            }
            walked.footers.push(at);
            at += FOOTER_LEN;
            continue;
        }
        let Some((header, location)) = format::record_at(bytes, at, len) else {
            let what = not_a_record(bytes, at, previous.as_ref());
            let what = match Some(at) == final_index {
                true => format!("index record: {what}"),
                false => what,
            };
            match format::next_sound_record(bytes, at + 1) {
                Some(next) => {
                    damage(
                        at,
                        format!(
                            "{what}; {} bytes up to the next sound record at offset {next}",
                            next - at
                        ),
                    );
                    at = next;
                    previous = None;
                    continue;
                }
                None => {
                    damage(
                        at,
                        format!(
                            "{what}; the reader ignores the {} bytes from here to the end",
                            len - at
                        ),
                    );
                    return walked;
                }
            }
        };
        let end = at + location.len;
        let record = &bytes[at as usize..end as usize];
        let kind = header.kind.get();
        if !format::crc_ok(record, &header) {
            let what = if end == len {
                format!(
                    "{}: CRC32C mismatch in the last record: a torn tail (a write cut short, or damage); the reader ignores it",
                    name(kind)
                )
            } else {
                format!("{}: CRC32C mismatch", name(kind))
            };
            let what = if Some(at) == final_index {
                format!("{what} (a lookup the index misses falls back to a scan of the records)")
            } else {
                what
            };
            damage(at, what);
            // A damaged length may hide sound records: resume where the
            // reader would, at the next sound record after this one's start.
            match format::next_sound_record(bytes, at + 1) {
                Some(next) => {
                    at = next;
                    previous = None;
                    continue;
                }
                None => return walked,
            }
        }
        if kind == KIND_INDEX {
            walked.indexes.push(at);
        } else if format::layout(record, kind, version).is_none() {
            damage(
                at,
                format!(
                    "{}: malformed payload (a length runs past the record)",
                    name(kind)
                ),
            );
        } else {
            walked
                .records
                .push((header.fingerprint, at, location.len, header.ordinal.get()));
        }
        previous = Some((header, at));
        at = end;
    }
    walked.clean_end = true;
    walked
}

/// Why the bytes at `at` are no record (the walk stops there).
fn not_a_record(bytes: &[u8], at: u64, previous: Option<&(RecordHeader, u64)>) -> String {
    let rest = bytes.len() as u64 - at;
    let after_index = previous.is_some_and(|(header, _)| header.kind.get() == KIND_INDEX);
    if after_index && rest == FOOTER_LEN {
        return "footer: damaged (magic or CRC32C mismatch); the reader scans the records \
                instead of using the index"
            .into();
    }
    if rest < format::RECORD_HEADER_LEN {
        return format!("torn tail: {rest} bytes, less than a record header");
    }
    match RecordHeader::read_from_prefix(&bytes[at as usize..]) {
        Ok((header, _))
            if header.magic.get() == format::RECORD_MAGIC
                && (format::KIND_HTTP..=KIND_INDEX).contains(&header.kind.get()) =>
        {
            format!(
                "torn tail or damaged length: a record of {} payload bytes runs past the end of the file",
                header.payload_len.get()
            )
        }
        _ => "no record or footer here (bad magic or kind)".into(),
    }
}

/// What is wrong with a sound footer at `at`: it must name the index record
/// right before it, and the file length it was written at.
fn footer_problem(
    footer: &format::Footer,
    at: u64,
    previous: Option<&(RecordHeader, u64)>,
) -> Option<String> {
    let index_before = previous
        .filter(|(header, _)| header.kind.get() == KIND_INDEX)
        .map(|(_, offset)| *offset);
    if index_before != Some(footer.index_offset.get()) {
        return Some(format!(
            "points at offset {}, not at the index record right before it",
            footer.index_offset.get()
        ));
    }
    (footer.file_len.get() != at + FOOTER_LEN).then(|| {
        format!(
            "file_len is {}, but the footer ends at {}",
            footer.file_len.get(),
            at + FOOTER_LEN
        )
    })
}

/// The index the reader trusts (the last one, before the final footer):
/// its head agrees with the file, every used slot points at a sound record
/// of that fingerprint, and every record is found by probing for it.
fn check_index(path: &Path, bytes: &[u8], walked: &Walked, verified: &mut Verified) {
    let (index, head) = match persisted_index(path, bytes) {
        Ok(Some(found)) => found,
        Ok(None) => return, // the footer's own problem is reported by the walk
        Err(error) => {
            // The footer is sound (the walk checked it): what it names is
            // wrong, or the head of the index it points at.
            let footer_at = bytes.len() as u64 - FOOTER_LEN;
            let what = bad_index(&error);
            let damage = match format::footer_at(bytes, footer_at) {
                Some(footer) if !what.starts_with("the footer") => Damage {
                    offset: footer.index_offset.get(),
                    what: format!("index record: {what}"),
                },
                _ => Damage {
                    offset: footer_at,
                    what: format!("footer: {what}"),
                },
            };
            verified.damage.push(damage);
            return;
        }
    };
    let at = index.record_offset;
    if !walked.indexes.contains(&at) {
        return; // its CRC failed: reported by the walk
    }
    let mut damage = |what: String| {
        verified.damage.push(Damage {
            offset: at,
            what: format!("index record: {what}"),
        })
    };
    let before: Vec<_> = walked.records.iter().filter(|r| r.1 < at).collect();
    let damage_before = walked.damaged.iter().any(|&offset| offset < at);
    if !damage_before && head.record_count.get() != before.len() as u64 {
        damage(format!(
            "record_count is {}, but {} records precede it",
            head.record_count.get(),
            before.len()
        ));
    }
    if head.records_end.get() != at {
        damage(format!(
            "records_end is {}, not {at}",
            head.records_end.get()
        ));
    }
    let by_offset: HashMap<u64, &([u8; 32], u64, u64, u32)> =
        walked.records.iter().map(|r| (r.1, r)).collect();
    let slot = |i: u64| {
        let start = (index.slots_offset + i * INDEX_SLOT_LEN) as usize;
        IndexSlot::ref_from_prefix(&bytes[start..])
            .ok()
            .map(|(slot, _)| slot)
    };
    for i in 0..index.slot_count {
        let Some(slot) = slot(i) else { break };
        if slot.used.get() == 0 || walked.damaged.contains(&slot.offset.get()) {
            continue;
        }
        let found = by_offset.get(&slot.offset.get());
        let sound = found.is_some_and(|r| r.0 == slot.fingerprint && r.2 == slot.len.get());
        if !sound {
            damage(format!(
                "slot {i} points at offset {} ({} bytes), where no record of fingerprint {} is",
                slot.offset.get(),
                slot.len.get(),
                Fingerprint(slot.fingerprint)
            ));
        }
    }
    let mut first: HashMap<[u8; 32], u64> = HashMap::new();
    for record in &before {
        first.entry(record.0).or_insert(record.1);
    }
    for (fingerprint, offset) in first {
        let found = probe(bytes, index.slots_offset, index.slot_count, &fingerprint);
        if found != Some(offset) {
            damage(format!(
                "the record at offset {offset} is not found through the index"
            ));
        }
    }
}

/// The offset the index gives for `fingerprint` (the reader's probe,
/// without its checks of the record).
fn probe(bytes: &[u8], slots_offset: u64, slot_count: u64, fingerprint: &[u8; 32]) -> Option<u64> {
    let mut i = format::home_slot(fingerprint, slot_count);
    for _ in 0..slot_count {
        let start = (slots_offset + i * INDEX_SLOT_LEN) as usize;
        let (slot, _) = IndexSlot::ref_from_prefix(&bytes[start..]).ok()?;
        if slot.used.get() == 0 {
            return None;
        }
        if slot.fingerprint == *fingerprint {
            return Some(slot.offset.get());
        }
        i = (i + 1) & (slot_count - 1);
    }
    None
}

/// A header error without the path (the report names the file).
fn header_problem(error: &RecordingError) -> String {
    match error {
        RecordingError::NotARecording { .. } => "not an ouli recording (bad magic)".into(),
        RecordingError::TruncatedHeader { len, .. } => {
            format!("truncated file header ({len} of 64 bytes)")
        }
        RecordingError::UnsupportedVersion {
            found, supported, ..
        } => format!("format version {found} (this ouli reads versions 1 to {supported})"),
        RecordingError::CorruptRecord { what, .. } => what.clone(),
        other => other.to_string(),
    }
}

fn bad_index(error: &RecordingError) -> String {
    match error {
        RecordingError::BadIndex { what, .. } => {
            format!("{what} (the reader rebuilds the index by a scan)")
        }
        other => other.to_string(),
    }
}
