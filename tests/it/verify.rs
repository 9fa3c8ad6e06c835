//! `ouli verify` against the reader: a recording written with the library,
//! then every byte of its index and footer flipped and every truncation past
//! its header. verify (the real binary) must call each damaged, naming the
//! file, the offset and the region, and exit 1; the reader must still serve
//! every sound record (it falls back to a scan when the index is damaged).

use bytes::Bytes;
use ouli::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse,
};
use ouli::recording::{Durability, ReadBackend, Recording, RecordingWriter};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::support::ouli::OULI;
const FILE_HEADER_LEN: usize = 64;
const FOOTER_LEN: usize = 32;

fn interaction(i: usize) -> Interaction {
    let label = format!("verify-{i}");
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    Interaction {
        fingerprint: Fingerprint(Sha256::digest(label.as_bytes()).into()),
        chain_link: Fingerprint(Sha256::digest(format!("link {label}")).into()),
        canonical: b(&format!("GET /{label}")),
        endpoint: 0,
        recorded_at_unix_us: 1_700_000_000_000_000 + i as u64,
        request: RecordedRequest {
            method: b("GET"),
            target: b(&format!("/{label}")),
            headers: vec![(b("host"), b("example.test"))],
            body: Bytes::new(),
            trailers: Vec::new(),
        },
        exchange: Exchange::Http(RecordedResponse {
            status: 200,
            headers: vec![(b("content-type"), b("text/plain"))],
            chunks: vec![BodyChunk {
                offset_us: 3,
                data: Bytes::from(vec![b'a' + i as u8; 40 + i]),
            }],
            original_encoding: Bytes::new(),
            ..Default::default()
        }),
    }
}

/// Five interactions, finished: the bytes and where the index record starts.
fn finished_recording(dir: &Path) -> (Vec<Interaction>, Vec<u8>, usize) {
    let interactions: Vec<Interaction> = (0..5).map(interaction).collect();
    let path = dir.join("source.ouli");
    let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
    for interaction in &interactions {
        writer.append(interaction).unwrap();
    }
    let records_end = writer.path().metadata().unwrap().len() as usize;
    writer.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (interactions, bytes, records_end)
}

/// `ouli verify DIR`: exit code and, per file name, its DAMAGED lines.
fn verify_dir(dir: &Path) -> (Option<i32>, String, HashMap<String, Vec<String>>) {
    let output = Command::new(OULI).arg("verify").arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut damaged: HashMap<String, Vec<String>> = HashMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("DAMAGED ") {
            let file = rest.split(": offset ").next().unwrap();
            let name = Path::new(file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            damaged.entry(name).or_default().push(rest.to_owned());
        }
    }
    (output.status.code(), stdout, damaged)
}

/// Every interaction is found by its fingerprint and reads back whole.
fn assert_reader_serves(path: &Path, interactions: &[Interaction], what: &str) {
    for backend in [ReadBackend::Mmap, ReadBackend::IoUring] {
        let recording =
            Recording::open(path, backend).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        for expected in interactions {
            let view = recording
                .get(&expected.fingerprint)
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .unwrap_or_else(|| panic!("{what}: sound record {} missed", expected.fingerprint));
            assert_eq!(&view.to_interaction().unwrap(), expected, "{what}");
        }
    }
}

#[test]
fn a_sound_recording_passes_and_interrupted_ones_in_a_directory_are_listed_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, records_end) = finished_recording(dir.path());
    std::fs::create_dir(dir.path().join("suite")).unwrap();
    std::fs::write(dir.path().join("suite/sound.ouli"), &bytes).unwrap();
    // An interrupted recording (records, no index), even a torn one.
    let partial = dir.path().join("suite/cut.ouli.partial");
    std::fs::write(&partial, &bytes[..records_end - 5]).unwrap();
    let (code, stdout, damaged) = verify_dir(dir.path());
    assert_eq!(code, Some(0), "{stdout}");
    assert!(damaged.is_empty(), "{stdout}");
    assert!(stdout.contains("sound.ouli: 5 record(s) ok"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "SKIPPED {}: interrupted recording",
            partial.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok: 1 file(s) sound, 1 skipped"),
        "{stdout}"
    );
    // Named, an interrupted recording is checked: no index is expected, a
    // torn tail is still damage.
    let output = Command::new(OULI)
        .arg("verify")
        .arg(&partial)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("4 record(s) ok"), "{stdout}");
    assert!(stdout.contains("torn tail"), "{stdout}");
    std::fs::write(&partial, &bytes[..records_end]).unwrap();
    let output = Command::new(OULI)
        .arg("verify")
        .arg(&partial)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn every_byte_flipped_in_the_index_or_footer_is_reported_and_the_reader_still_serves_every_record()
{
    let dir = tempfile::tempdir().unwrap();
    let (interactions, bytes, index_at) = finished_recording(dir.path());
    let footer_at = bytes.len() - FOOTER_LEN;
    let flips = dir.path().join("flips");
    std::fs::create_dir(&flips).unwrap();
    for offset in index_at..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[offset] ^= 0x01;
        let path = flips.join(format!("flip-{offset}.ouli"));
        std::fs::write(&path, &flipped).unwrap();
        assert_reader_serves(&path, &interactions, &format!("byte {offset} flipped"));
    }
    let (code, stdout, damaged) = verify_dir(&flips);
    assert_eq!(code, Some(1), "{stdout}");
    for offset in index_at..bytes.len() {
        let name = format!("flip-{offset}.ouli");
        let lines = damaged
            .get(&name)
            .unwrap_or_else(|| panic!("{name} reported intact"));
        let region = if offset < footer_at {
            format!("offset {index_at}: index record")
        } else {
            format!("offset {footer_at}: footer")
        };
        assert!(
            lines.iter().any(|line| line.contains(&region)),
            "{name}: {region:?} not named in {lines:?}"
        );
        assert!(
            stdout.contains(&format!("{name}: 5 record(s) ok")),
            "{name}"
        );
    }
}

#[test]
fn every_truncation_past_the_header_is_reported_a_torn_tail_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = finished_recording(dir.path());
    let boundaries: Vec<usize> = {
        // Where records end: a cut there leaves whole records, no footer.
        let path = dir.path().join("whole.ouli");
        std::fs::write(&path, &bytes).unwrap();
        let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
        let mut ends: Vec<usize> = recording
            .iter()
            .map(|view| {
                let location = view.unwrap().location();
                (location.offset + location.len) as usize
            })
            .collect();
        ends.push(FILE_HEADER_LEN);
        ends.push(bytes.len() - FOOTER_LEN); // the index record's end
        std::fs::remove_file(&path).unwrap();
        ends
    };
    let cuts = dir.path().join("cuts");
    std::fs::create_dir(&cuts).unwrap();
    for cut in FILE_HEADER_LEN..bytes.len() {
        std::fs::write(cuts.join(format!("cut-{cut}.ouli")), &bytes[..cut]).unwrap();
    }
    let (code, stdout, damaged) = verify_dir(&cuts);
    assert_eq!(code, Some(1), "{stdout}");
    for cut in FILE_HEADER_LEN..bytes.len() {
        let name = format!("cut-{cut}.ouli");
        let lines = damaged
            .get(&name)
            .unwrap_or_else(|| panic!("{name} reported intact"));
        let expected = if boundaries.contains(&cut) {
            "not finished"
        } else {
            "torn tail"
        };
        assert!(
            lines.iter().any(|line| line.contains(expected)),
            "{name}: {expected:?} not in {lines:?}"
        );
    }
}

#[test]
fn a_recording_extended_by_record_missing_is_sound_once_finished_and_not_finished_before() {
    let dir = tempfile::tempdir().unwrap();
    let (interactions, bytes, _) = finished_recording(dir.path());
    let path = dir.path().join("extended.ouli");
    std::fs::write(&path, &bytes).unwrap();
    let verify = |path: &Path| {
        let output = Command::new(OULI).arg("verify").arg(path).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    // Appended to, not finished: a stale footer, then a record, no footer.
    let mut writer = RecordingWriter::append_to(&path, Durability::None).unwrap();
    writer.append(&interaction(5)).unwrap();
    drop(writer);
    let (code, stdout) = verify(&path);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("6 record(s) ok"), "{stdout}");
    assert!(stdout.contains("not finished"), "{stdout}");
    let mut all = interactions.clone();
    all.push(interaction(5));
    assert_reader_serves(&path, &all, "extended, unfinished");
    // Finished: two index records and footers, the last one current.
    let mut writer = RecordingWriter::append_to(&path, Durability::None).unwrap();
    writer.append(&interaction(6)).unwrap();
    writer.finish().unwrap();
    let (code, stdout) = verify(&path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("7 record(s) ok"), "{stdout}");
    all.push(interaction(6));
    assert_reader_serves(&path, &all, "extended, finished");
}

/// Recomputes the CRC of the record at `bytes[at..end]` (no padding): an
/// index as a faulty writer would seal it, which no CRC can catch.
fn reseal(bytes: &mut [u8], at: usize, end: usize) {
    let head = crc32c::crc32c(&bytes[at..at + 16]);
    let crc = crc32c::crc32c_append(head, &bytes[at + 20..end]);
    bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn an_index_sealed_with_wrong_slots_or_counts_is_reported_slot_by_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, index_at) = finished_recording(dir.path());
    let footer_at = bytes.len() - FOOTER_LEN;
    let slots_at = (index_at + 96 + 32).next_multiple_of(64);
    let used: Vec<usize> = (0..(footer_at - slots_at) / 64)
        .filter(|i| bytes[slots_at + i * 64 + 52] == 1)
        .collect();
    assert_eq!(used.len(), 5);
    let check = |name: &str, edit: &dyn Fn(&mut Vec<u8>), expected: &[&str]| {
        let mut edited = bytes.clone();
        edit(&mut edited);
        reseal(&mut edited, index_at, footer_at);
        let path = dir.path().join(format!("{name}.ouli"));
        std::fs::write(&path, &edited).unwrap();
        let output = Command::new(OULI)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{name}: {stdout}");
        let region = format!("offset {index_at}: index record: ");
        for text in expected {
            assert!(
                stdout
                    .lines()
                    .any(|line| line.contains(&region) && line.contains(text)),
                "{name}: {text:?} not in {stdout}"
            );
        }
    };
    let slot = used[2];
    let at = slots_at + slot * 64;
    check(
        "fingerprint",
        &|b| b[at] ^= 0x80,
        &[
            &format!("slot {slot} points at offset"),
            "is not found through the index",
        ],
    );
    check(
        "offset",
        &|b| b[at + 32] ^= 0x08,
        &[&format!("slot {slot} points at offset")],
    );
    check(
        "unused",
        &|b| b[at + 52] = 0,
        &["is not found through the index"],
    );
    check(
        "record_count",
        &|b| b[index_at + 96 + 8] = 4,
        &["record_count is 4, but 5 records precede it"],
    );
    check(
        "records_end",
        &|b| b[index_at + 96 + 16] ^= 0x10, // lower: the reader's open accepts it
        &["records_end is"],
    );
}

#[test]
fn a_damaged_record_in_the_middle_is_named_and_the_walk_goes_on_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = finished_recording(dir.path());
    let path = dir.path().join("whole.ouli");
    std::fs::write(&path, &bytes).unwrap();
    let second = Recording::open(&path, ReadBackend::Mmap)
        .unwrap()
        .iter()
        .nth(1)
        .unwrap()
        .unwrap()
        .location();
    // A body byte (CRC) and, apart, the payload length (framing).
    for (name, at) in [
        ("body", second.offset + second.len - 16),
        ("length", second.offset + 9),
    ] {
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x01;
        let path = dir.path().join(format!("{name}.ouli"));
        std::fs::write(&path, &damaged).unwrap();
        let output = Command::new(OULI)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{name}: {stdout}");
        assert!(
            stdout.contains(&format!(
                "offset {}: record: CRC32C mismatch",
                second.offset
            )),
            "{name}: {stdout}"
        );
        assert!(stdout.contains("4 record(s) ok"), "{name}: {stdout}");
        // Reported once: not again as the index's slot and count.
        assert_eq!(stdout.matches("DAMAGED").count(), 1, "{name}: {stdout}");
    }
}
