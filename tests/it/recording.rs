//! The recording file through its library API, on real files in temp dirs:
//! round trips of every shape of interaction on both read backends, crash
//! recovery (cut at every offset, garbage, flipped bytes), the persisted
//! index (current, missing, stale), growth while read, replacement only when
//! complete, bad input, and property tests (rfcs/0001-recording-format.md).

use bytes::Bytes;
use ouli::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse, WsDirection,
    WsFrame,
};
use ouli::recording::{
    Durability, FORMAT_VERSION, ReadBackend, RecordLocation, Recording, RecordingError,
    RecordingWriter, io_uring_available,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const BACKENDS: [ReadBackend; 2] = [ReadBackend::Mmap, ReadBackend::IoUring];

/// The backend a reader must report for `wanted` on this machine.
fn expected_backend(wanted: ReadBackend) -> ReadBackend {
    if wanted == ReadBackend::IoUring && io_uring_available() {
        ReadBackend::IoUring
    } else {
        ReadBackend::Mmap
    }
}

fn open(path: &Path, backend: ReadBackend) -> Recording {
    let recording = Recording::open(path, backend)
        .unwrap_or_else(|e| panic!("open {} with {backend:?}: {e}", path.display()));
    assert_eq!(recording.backend(), expected_backend(backend));
    recording
}

fn fingerprint(label: &str) -> Fingerprint {
    Fingerprint(Sha256::digest(label.as_bytes()).into())
}

fn b(bytes: impl Into<Vec<u8>>) -> Bytes {
    Bytes::from(bytes.into())
}

/// A plain HTTP interaction keyed by `label`, its body in one chunk.
fn http(label: &str, body: impl Into<Vec<u8>>) -> Interaction {
    let body = b(body);
    let chunks = if body.is_empty() {
        Vec::new()
    } else {
        vec![BodyChunk {
            offset_us: 7,
            data: body,
        }]
    };
    Interaction {
        fingerprint: fingerprint(label),
        chain_link: fingerprint(&format!("link of {label}")),
        canonical: b(format!("GET /{label} canonical")),
        endpoint: 3,
        recorded_at_unix_us: 1_700_000_000_000_000,
        request: RecordedRequest {
            method: b("GET"),
            target: b(format!("/{label}?q=1")),
            headers: vec![(b("host"), b("example.test"))],
            body: Bytes::new(),
            trailers: Vec::new(),
        },
        exchange: Exchange::Http(RecordedResponse {
            status: 200,
            headers: vec![(b("content-type"), b("application/octet-stream"))],
            chunks,
            original_encoding: Bytes::new(),
            ..Default::default()
        }),
    }
}

fn response_of(interaction: &Interaction) -> &RecordedResponse {
    match &interaction.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, .. } => response,
    }
}

fn response_mut(interaction: &mut Interaction) -> &mut RecordedResponse {
    match &mut interaction.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, .. } => response,
    }
}

/// One interaction of every shape the format must carry byte-exact; with
/// `big`, one with a 10 MiB body too.
fn every_shape(big: bool) -> Vec<Interaction> {
    let mut shapes = vec![http("empty", Vec::new())];
    let binary: Vec<u8> = (0..=255u8).cycle().take(4099).collect();
    let mut with_binary = http("binary", binary.clone());
    with_binary.request.body = b(binary);
    with_binary.request.method = b("POST");
    shapes.push(with_binary);

    let mut non_utf8 = http("non-utf8", "ok");
    non_utf8
        .request
        .headers
        .push((b("x-raw"), b(vec![0xff, 0xfe, 0x00, 0x80])));
    response_mut(&mut non_utf8)
        .headers
        .push((b(vec![b'x', 0xc3]), b(vec![0xc3, 0x28, b'\t', 0x7f])));
    response_mut(&mut non_utf8).status = 418;
    response_mut(&mut non_utf8).original_encoding = b("gzip");
    shapes.push(non_utf8);

    let mut many = http("many-headers", "m");
    many.request.headers = (0..300)
        .map(|i| (b(format!("x-req-{i}")), b(format!("value {i}"))))
        .collect();
    response_mut(&mut many).headers = (0..300)
        .map(|i| (b("set-cookie"), b(format!("c{i}={i}"))))
        .collect();
    shapes.push(many);

    let mut chunked = http("chunked", Vec::new());
    response_mut(&mut chunked).chunks = (0..17u64)
        .map(|i| BodyChunk {
            offset_us: i * 1_000 + 3,
            data: b(vec![i as u8; (i as usize) * 31]),
        })
        .collect();
    shapes.push(chunked);

    let mut websocket = http("websocket", Vec::new());
    let mut upgrade = response_mut(&mut websocket).clone();
    upgrade.status = 101;
    upgrade.headers = vec![(b("upgrade"), b("websocket"))];
    websocket.exchange = Exchange::WebSocket {
        response: upgrade,
        frames: vec![
            ws(WsDirection::ClientToServer, 1, 0, "hello"),
            ws(WsDirection::ServerToClient, 1, 250, "world"),
            ws(WsDirection::ServerToClient, 2, 900, vec![0, 159, 146, 150]),
            ws(WsDirection::ClientToServer, 9, 1_000, Vec::new()),
            ws(WsDirection::ServerToClient, 10, 1_001, Vec::new()),
            ws(WsDirection::ClientToServer, 8, u64::MAX, vec![3, 232]),
        ],
    };
    shapes.push(websocket);

    if big {
        let body: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
        shapes.push(http("ten-mib", body));
    }
    shapes
}

fn ws(direction: WsDirection, opcode: u8, offset_us: u64, payload: impl Into<Vec<u8>>) -> WsFrame {
    WsFrame {
        direction,
        opcode,
        offset_us,
        payload: b(payload),
    }
}

/// Writes `interactions` with `create`; returns the partial path (readable
/// before finish) and, after `finish` if asked, the final path.
fn write(dir: &Path, name: &str, interactions: &[Interaction], finish: bool) -> PathBuf {
    let path = dir.join(format!("{name}.ouli"));
    let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
    for interaction in interactions {
        writer.append(interaction).unwrap();
    }
    if finish {
        assert_eq!(writer.finish().unwrap(), path);
        path
    } else {
        let partial = writer.path().to_path_buf();
        drop(writer);
        partial
    }
}

/// Every interaction is found by fingerprint (the first one recorded under
/// a fingerprint wins) with the same bytes, and `iter` yields all in order.
fn assert_serves(recording: &Recording, interactions: &[Interaction]) {
    assert_eq!(
        recording.len(),
        interactions.len(),
        "{}",
        recording.path().display()
    );
    for expected in interactions {
        let first = interactions
            .iter()
            .find(|i| i.fingerprint == expected.fingerprint)
            .unwrap();
        let view = recording
            .get(&expected.fingerprint)
            .unwrap()
            .unwrap_or_else(|| panic!("{} not found", expected.fingerprint));
        assert_eq!(&view.to_interaction().unwrap(), first);
        assert_view_matches(&view, first);
    }
    let read: Vec<Interaction> = recording
        .iter()
        .map(|view| view.unwrap().to_interaction().unwrap())
        .collect();
    assert_eq!(read, interactions);
}

/// The zero-copy accessors agree with the owned form.
fn assert_view_matches(view: &ouli::recording::RecordView, expected: &Interaction) {
    let response = match &expected.exchange {
        Exchange::Http(response) => response,
        Exchange::WebSocket { response, .. } => response,
    };
    assert_eq!(view.fingerprint(), expected.fingerprint);
    assert_eq!(view.chain_link(), expected.chain_link);
    assert_eq!(view.canonical(), &expected.canonical[..]);
    assert_eq!(view.endpoint(), expected.endpoint);
    assert_eq!(view.response_status(), response.status);
    assert_eq!(
        view.is_websocket(),
        matches!(expected.exchange, Exchange::WebSocket { .. })
    );
    let headers: Vec<(Vec<u8>, Vec<u8>)> = view
        .response_headers()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    let expected_headers: Vec<(Vec<u8>, Vec<u8>)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(headers, expected_headers);
    let chunks: Vec<(u64, Bytes)> = view.response_chunks().collect();
    let expected_chunks: Vec<(u64, Bytes)> = response
        .chunks
        .iter()
        .map(|c| (c.offset_us, c.data.clone()))
        .collect();
    assert_eq!(chunks, expected_chunks);
    assert_eq!(view.response_body_len(), response.body_len() as u64);
}

#[test]
fn io_uring_backend_is_used_where_the_kernel_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s", &[http("a", "x")], true);
    let recording = Recording::open(&path, ReadBackend::IoUring).unwrap();
    if io_uring_available() {
        assert_eq!(recording.backend(), ReadBackend::IoUring);
    } else {
        assert_eq!(
            recording.backend(),
            ReadBackend::Mmap,
            "fallback must say so"
        );
    }
    assert_eq!(
        Recording::open(&path, ReadBackend::Mmap).unwrap().backend(),
        ReadBackend::Mmap
    );
    assert_serves(&recording, &[http("a", "x")]);
}

#[test]
fn every_shape_round_trips_byte_exact_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let shapes = every_shape(true);
    let path = dir.path().join("shapes.ouli");
    let mut writer = RecordingWriter::create(&path, Durability::OnClose).unwrap();
    for interaction in &shapes {
        writer.append(interaction).unwrap();
    }
    // Before finish: the partial file has no index; readers scan it.
    for backend in BACKENDS {
        let recording = open(writer.path(), backend);
        assert!(!recording.uses_persisted_index());
        assert_serves(&recording, &shapes);
    }
    writer.finish().unwrap();
    for backend in BACKENDS {
        let recording = open(&path, backend);
        assert!(recording.uses_persisted_index());
        assert_serves(&recording, &shapes);
    }
}

#[test]
fn a_fingerprint_recorded_twice_serves_its_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let first = http("same", "first");
    let mut second = http("same", "second");
    second.recorded_at_unix_us += 1;
    let interactions = [first.clone(), http("other", "o"), second];
    for finish in [false, true] {
        let path = write(
            dir.path(),
            &format!("twice-{finish}"),
            &interactions,
            finish,
        );
        for backend in BACKENDS {
            let recording = open(&path, backend);
            assert_serves(&recording, &interactions);
            let body: Vec<_> = recording
                .get(&first.fingerprint)
                .unwrap()
                .unwrap()
                .response_chunks()
                .map(|(_, data)| data)
                .collect();
            assert_eq!(body, [b("first")]);
        }
    }
}

/// Records with short bodies; the last one is what the cut tests cut.
fn small_records() -> Vec<Interaction> {
    (0..3)
        .map(|i| http(&format!("small-{i}"), vec![i as u8; 40]))
        .collect()
}

/// `bytes[..cut]` as a recording: a reader serves `complete`, and a writer
/// resumes after them (cutting the rest) with a record that is then read.
fn assert_recovers(dir: &Path, bytes: &[u8], cut: usize, complete: &[Interaction]) {
    let path = dir.join("cut.ouli");
    std::fs::write(&path, &bytes[..cut]).unwrap();
    for backend in BACKENDS {
        let recording = open(&path, backend);
        assert_serves(&recording, complete);
    }
    let resumed = http(&format!("resumed-after-{cut}"), "new");
    let mut writer = RecordingWriter::append_to(&path, Durability::None).unwrap();
    assert_eq!(writer.len(), complete.len());
    let location = writer.append(&resumed).unwrap();
    drop(writer);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        &after[..location.offset as usize],
        &bytes[..location.offset as usize],
        "the writer changed bytes before its new record (cut at {cut})"
    );
    let mut expected = complete.to_vec();
    expected.push(resumed);
    assert_serves(&open(&path, ReadBackend::Mmap), &expected);
}

#[test]
fn cut_at_every_offset_inside_the_last_record_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let path = write(dir.path(), "full", &records, false);
    let bytes = std::fs::read(&path).unwrap();
    let last = open(&path, ReadBackend::Mmap)
        .lookup(&records[2].fingerprint)
        .unwrap();
    assert_eq!(last.offset + last.len, bytes.len() as u64);
    for cut in last.offset as usize..bytes.len() {
        assert_recovers(dir.path(), &bytes, cut, &records[..2]);
    }
    assert_recovers(dir.path(), &bytes, bytes.len(), &records);
}

#[test]
fn cut_at_every_offset_inside_the_index_and_footer_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let unfinished = std::fs::read(write(dir.path(), "u", &records, false)).unwrap();
    let bytes = std::fs::read(write(dir.path(), "f", &records, true)).unwrap();
    assert_eq!(&bytes[64..unfinished.len()], &unfinished[64..]);
    // Every cut from the end of the last record to just before the end of
    // the footer; the whole file is the finished case.
    for cut in unfinished.len()..bytes.len() {
        assert_recovers(dir.path(), &bytes, cut, &records);
    }
}

#[test]
fn garbage_after_a_good_file_is_never_served_and_is_cut_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let mut record_magic_then_noise = b"OREC".to_vec();
    record_magic_then_noise.extend((0..200u32).map(|i| (i * 7 + 3) as u8));
    let garbages: [Vec<u8>; 4] = [
        vec![0; 4096],
        (0..1000u32).map(|i| (i * 131 % 256) as u8).collect(),
        record_magic_then_noise,
        vec![0xff; 7],
    ];
    for finish in [false, true] {
        let good = std::fs::read(write(dir.path(), "good", &records, finish)).unwrap();
        for garbage in &garbages {
            let mut bytes = good.clone();
            bytes.extend_from_slice(garbage);
            assert_recovers(dir.path(), &bytes, bytes.len(), &records);
        }
    }
}

/// The payload length a record's header declares.
fn payload_len(bytes: &[u8], location: RecordLocation) -> u64 {
    let at = location.offset as usize + 8;
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn assert_damage_is_typed(path: &Path, damaged: RecordLocation, others: &[Interaction]) {
    for backend in BACKENDS {
        let recording = open(path, backend);
        // The others first: a verified neighbour must not vouch for it.
        for other in others {
            let view = recording.get(&other.fingerprint).unwrap().unwrap();
            assert_eq!(&view.to_interaction().unwrap(), other);
        }
        match recording.read(damaged) {
            Err(RecordingError::CorruptRecord {
                path: named,
                offset,
                ..
            }) => {
                assert_eq!(named, path);
                assert_eq!(offset, damaged.offset);
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("damaged record at {} served", damaged.offset),
        }
        let errors: Vec<_> = recording.iter().filter_map(Result::err).collect();
        let served = recording.iter().filter(Result::is_ok).count();
        assert!(errors.len() <= 1 && served == others.len());
    }
}

#[test]
fn a_flipped_byte_in_one_record_is_a_typed_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let others = [records[0].clone(), records[2].clone()];
    for finish in [true, false] {
        let path = write(dir.path(), "flip", &records, finish);
        let good = std::fs::read(&path).unwrap();
        let middle = open(&path, ReadBackend::Mmap)
            .lookup(&records[1].fingerprint)
            .unwrap();
        let covered = 96 + payload_len(&good, middle);
        for at in 0..covered {
            // XOR 1 turns the ordinal 1 into 0: the first record's.
            for flip in [0x01u8, 0x80] {
                let mut bytes = good.clone();
                bytes[(middle.offset + at) as usize] ^= flip;
                std::fs::write(&path, &bytes).unwrap();
                assert_damage_is_typed(&path, middle, &others);
            }
        }
    }
}

#[test]
fn a_damaged_index_never_serves_another_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let unfinished_len = std::fs::read(write(dir.path(), "u", &records, false))
        .unwrap()
        .len();
    let path = write(dir.path(), "index", &records, true);
    let good = std::fs::read(&path).unwrap();
    // Every byte of the index record (head, padding, slots) and the footer.
    for at in unfinished_len..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        for backend in BACKENDS {
            let recording = open(&path, backend);
            for record in &records {
                // A miss at worst (a damaged slot), never a wrong record.
                if let Some(view) = recording.get(&record.fingerprint).unwrap() {
                    assert_eq!(&view.to_interaction().unwrap(), record, "flip at {at}");
                }
            }
            let served: Vec<Interaction> = recording
                .iter()
                .filter_map(Result::ok)
                .map(|view| view.to_interaction().unwrap())
                .collect();
            assert_eq!(served, records, "flip at {at}");
        }
    }
}

#[test]
fn a_writer_refuses_to_cut_committed_records_after_damage_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let path = write(dir.path(), "mid", &records, false);
    let middle = open(&path, ReadBackend::Mmap)
        .lookup(&records[1].fingerprint)
        .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[middle.offset as usize + 8] ^= 0x40; // payload length
    std::fs::write(&path, &bytes).unwrap();
    // Readers step over the damage to the next sound record.
    assert_damage_is_typed(&path, middle, &[records[0].clone(), records[2].clone()]);
    match RecordingWriter::append_to(&path, Durability::None) {
        Err(RecordingError::CorruptRecord {
            path: named,
            offset,
            ..
        }) => {
            assert_eq!(named, path);
            assert_eq!(offset, middle.offset);
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("append_to accepted a damaged middle record"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}

fn many_records() -> Vec<Interaction> {
    let mut records: Vec<Interaction> = (0..50)
        .map(|i| http(&format!("r{i}"), format!("body {i}")))
        .collect();
    records.push(http("r7", "recorded again"));
    records
}

#[test]
fn lookups_agree_with_and_without_the_persisted_index() {
    let dir = tempfile::tempdir().unwrap();
    let records = many_records();
    let finished = write(dir.path(), "indexed", &records, true);
    let unfinished = write(dir.path(), "scanned", &records, false);
    let absent: Vec<Fingerprint> = (0..100)
        .map(|i| fingerprint(&format!("absent {i}")))
        .collect();
    for backend in BACKENDS {
        let indexed = open(&finished, backend);
        let scanned = open(&unfinished, backend);
        assert!(
            indexed.uses_persisted_index(),
            "a finished recording is not scanned"
        );
        assert!(!scanned.uses_persisted_index());
        assert_serves(&indexed, &records);
        assert_serves(&scanned, &records);
        for record in &records {
            assert_eq!(
                indexed.lookup(&record.fingerprint),
                scanned.lookup(&record.fingerprint)
            );
        }
        for fingerprint in &absent {
            assert_eq!(indexed.lookup(fingerprint), None);
            assert_eq!(scanned.lookup(fingerprint), None);
        }
    }
}

#[test]
fn an_index_left_stale_by_later_appends_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let records = many_records();
    let path = write(dir.path(), "stale", &records[..10], true);
    let mut expected = records[..10].to_vec();
    // Two rounds of append_to without finish: the stale footer of the first
    // finish stays mid-file; readers and the second writer step over it.
    for round in [10..20, 20..30] {
        let mut writer = RecordingWriter::append_to(&path, Durability::None).unwrap();
        assert_eq!(writer.len(), expected.len());
        for record in &records[round.clone()] {
            writer.append(record).unwrap();
        }
        drop(writer);
        expected.extend_from_slice(&records[round]);
        for backend in BACKENDS {
            let recording = open(&path, backend);
            assert!(!recording.uses_persisted_index(), "stale index trusted");
            assert_serves(&recording, &expected);
        }
    }
    let mut writer = RecordingWriter::append_to(&path, Durability::OnClose).unwrap();
    for record in &records[30..] {
        writer.append(record).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), path);
    for backend in BACKENDS {
        let recording = open(&path, backend);
        assert!(recording.uses_persisted_index());
        assert_serves(&recording, &records);
    }
}

#[test]
fn refresh_sees_records_appended_by_another_writer_after_open() {
    let dir = tempfile::tempdir().unwrap();
    let records = many_records();
    for backend in BACKENDS {
        let path = write(dir.path(), "grow", &records[..2], true);
        let recording = open(&path, backend);
        assert_eq!(recording.len(), 2);
        assert!(!recording.refresh().unwrap(), "nothing appended yet");

        let mut writer = RecordingWriter::append_to(&path, Durability::None).unwrap();
        writer.append(&records[2]).unwrap();
        assert_eq!(recording.lookup(&records[2].fingerprint), None);
        assert!(recording.refresh().unwrap());
        assert_serves(&recording, &records[..3]);

        // Half a record: not visible until it is complete.
        let encoded = ouli::recording::encode_recording(&records[3..4]);
        let record = &encoded[64..];
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, &record[..record.len() / 2]).unwrap();
        assert!(!recording.refresh().unwrap());
        assert_serves(&recording, &records[..3]);
        std::io::Write::write_all(&mut file, &record[record.len() / 2..]).unwrap();
        assert!(recording.refresh().unwrap());
        assert_serves(&recording, &records[..4]);
        drop(writer);

        // A new recording renamed over the path is read afresh.
        let replaced = write(dir.path(), "grow", &records[10..12], true);
        assert_eq!(replaced, path);
        assert!(recording.refresh().unwrap());
        assert_serves(&recording, &records[10..12]);
    }
}

#[test]
fn a_partial_recording_is_readable_while_its_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let records = many_records();
    for backend in BACKENDS {
        let path = dir.path().join(format!("live-{backend:?}.ouli"));
        let mut writer = RecordingWriter::create(&path, Durability::EveryInteraction).unwrap();
        writer.append(&records[0]).unwrap();
        let recording = open(writer.path(), backend);
        for n in 1..records.len() {
            writer.append(&records[n]).unwrap();
            assert!(recording.refresh().unwrap());
            assert_eq!(recording.len(), n + 1);
            let first = records
                .iter()
                .find(|r| r.fingerprint == records[n].fingerprint);
            let view = recording.get(&records[n].fingerprint).unwrap().unwrap();
            assert_eq!(Some(&view.to_interaction().unwrap()), first);
        }
        assert_serves(&recording, &records);
    }
}

#[test]
fn every_interaction_sync_covers_records_written_before_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("group.ouli");
    let records = small_records();
    let mut writer = RecordingWriter::create(&path, Durability::EveryInteraction).unwrap();
    let point = writer.sync_point().unwrap().clone();
    let (_, first) = writer.append_deferring_sync(&records[0]).unwrap();
    let (_, second) = writer.append_deferring_sync(&records[1]).unwrap();
    assert_eq!(point.sync_count(), 0, "no sync before one is waited for");
    second.wait().unwrap();
    assert_eq!(point.sync_count(), 1);
    // The first record was written before that sync started: covered.
    first.wait().unwrap();
    assert_eq!(point.sync_count(), 1, "a covered record syncs again");
    // A plain append still returns only once its own record is synced.
    writer.append(&records[2]).unwrap();
    assert_eq!(point.sync_count(), 2);
    let finished = writer.finish().unwrap();
    assert_serves(&open(&finished, ReadBackend::Mmap), &records[..3]);
}

#[test]
fn concurrent_every_interaction_appends_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concurrent.ouli");
    let records: Vec<Interaction> = (0..64)
        .map(|i| http(&format!("concurrent {i}"), format!("body {i}")))
        .collect();
    let writer = std::sync::Mutex::new(
        RecordingWriter::create(&path, Durability::EveryInteraction).unwrap(),
    );
    let point = writer.lock().unwrap().sync_point().unwrap().clone();
    std::thread::scope(|scope| {
        for chunk in records.chunks(8) {
            let writer = &writer;
            scope.spawn(move || {
                for record in chunk {
                    let (_, pending) = writer
                        .lock()
                        .unwrap()
                        .append_deferring_sync(record)
                        .unwrap();
                    pending.wait().unwrap();
                }
            });
        }
    });
    // At least one sync ran, never more than one per record; every record
    // is readable afterwards (how many syncs were shared depends on timing).
    assert!(point.sync_count() >= 1 && point.sync_count() <= records.len() as u64);
    let finished = writer.into_inner().unwrap().finish().unwrap();
    let recording = open(&finished, ReadBackend::Mmap);
    assert_eq!(recording.len(), records.len());
    for record in &records {
        let view = recording.get(&record.fingerprint).unwrap().unwrap();
        assert_eq!(&view.to_interaction().unwrap(), record);
    }
}

#[test]
fn a_new_recording_replaces_the_old_one_only_when_finished() {
    let dir = tempfile::tempdir().unwrap();
    let old_records = small_records();
    let path = write(dir.path(), "session", &old_records, true);
    let old_bytes = std::fs::read(&path).unwrap();

    let mut writer = RecordingWriter::create(&path, Durability::OnClose).unwrap();
    writer.append(&http("new", "new body")).unwrap();
    let partial = writer.path().to_path_buf();
    assert_ne!(partial, path);
    drop(writer); // a record run that died: no finish
    assert_eq!(
        std::fs::read(&path).unwrap(),
        old_bytes,
        "old recording touched"
    );
    assert_serves(&open(&path, ReadBackend::Mmap), &old_records);

    let mut writer = RecordingWriter::create(&path, Durability::OnClose).unwrap();
    writer.append(&http("new", "new body")).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
    assert_eq!(writer.finish().unwrap(), path);
    assert!(!partial.exists(), "the partial file was renamed");
    for backend in BACKENDS {
        assert_serves(&open(&path, backend), &[http("new", "new body")]);
    }
}

#[test]
fn a_new_record_run_leaves_a_served_partial_file_intact_for_its_readers() {
    let dir = tempfile::tempdir().unwrap();
    let records = small_records();
    let partial = write(dir.path(), "interrupted", &records, false);
    let path = dir.path().join("interrupted.ouli");
    for backend in BACKENDS {
        // A replay server serving the interrupted run's partial file...
        let served = open(&partial, backend);
        // ...while a new record run begins at the same path: were the old
        // partial file truncated in place, reading its map would fault.
        let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
        assert_eq!(writer.path(), partial);
        assert_eq!(open(&partial, ReadBackend::Mmap).len(), 0);
        assert_serves(&served, &records);
        for record in &records {
            writer.append(record).unwrap();
        }
        drop(writer);
    }
}

#[test]
fn an_interaction_over_the_limits_is_refused_and_the_file_stays_sound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limits.ouli");
    let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
    writer.append(&http("before", "b")).unwrap();
    let mut too_many = http("too-many-headers", "x");
    response_mut(&mut too_many).headers = vec![(b("h"), b("v")); 65_537];
    match writer.append(&too_many) {
        Err(RecordingError::RecordTooLarge { path: named, what }) => {
            assert_eq!(&named, writer.path());
            assert!(what.contains("65537 headers"), "{what}");
        }
        other => panic!("expected RecordTooLarge, got {:?}", other.map(|_| ())),
    }
    writer.append(&http("after", "a")).unwrap();
    writer.finish().unwrap();
    assert_serves(
        &open(&path, ReadBackend::Mmap),
        &[http("before", "b"), http("after", "a")],
    );
}

fn assert_names(error: &RecordingError, path: &Path) {
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error} does not name {}",
        path.display()
    );
}

#[test]
fn a_file_that_is_not_a_recording_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.ouli");
    std::fs::write(&path, b"{\"this is\": \"json, not a recording\"}").unwrap();
    for backend in BACKENDS {
        let error = Recording::open(&path, backend).err().unwrap();
        assert!(matches!(&error, RecordingError::NotARecording { path: p } if p == &path));
        assert_names(&error, &path);
    }
    let error = RecordingWriter::append_to(&path, Durability::None)
        .err()
        .unwrap();
    assert!(matches!(error, RecordingError::NotARecording { .. }));
}

#[test]
fn a_future_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "future", &small_records(), true);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    for backend in BACKENDS {
        let error = Recording::open(&path, backend).err().unwrap();
        match &error {
            RecordingError::UnsupportedVersion {
                path: p,
                found,
                supported,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*found, *supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            other => panic!("wrong error: {other}"),
        }
        assert_names(&error, &path);
    }
    let error = RecordingWriter::append_to(&path, Durability::None)
        .err()
        .unwrap();
    assert!(matches!(error, RecordingError::UnsupportedVersion { .. }));
}

#[test]
fn a_truncated_header_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(write(dir.path(), "whole", &small_records(), true)).unwrap();
    let path = dir.path().join("short.ouli");
    for len in [0usize, 5, 8, 63] {
        std::fs::write(&path, &good[..len]).unwrap();
        for backend in BACKENDS {
            let error = Recording::open(&path, backend).err().unwrap();
            assert!(
                matches!(&error, RecordingError::TruncatedHeader { path: p, len: l } if p == &path && *l == len as u64),
                "{error}"
            );
            assert_names(&error, &path);
        }
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.ouli");
    for backend in BACKENDS {
        let error = Recording::open(&path, backend).err().unwrap();
        assert!(matches!(&error, RecordingError::Io { path: p, .. } if p == &path));
    }
}

/// Reads everything a recording offers; must never panic.
fn exercise(recording: &Recording, probes: &[Fingerprint]) -> usize {
    let mut served = 0;
    for view in recording.iter().filter_map(Result::ok) {
        let owned = view.to_interaction().unwrap();
        assert_eq!(view.fingerprint(), owned.fingerprint);
        assert_eq!(
            view.response_chunks().count(),
            response_of(&owned).chunks.len()
        );
        assert_eq!(
            view.response_headers().count(),
            response_of(&owned).headers.len()
        );
        served += 1;
    }
    for fingerprint in probes {
        let _ = recording.get(fingerprint);
    }
    served
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_headers() -> impl Strategy<Value = Vec<(Bytes, Bytes)>> {
    proptest::collection::vec((arb_bytes(12), arb_bytes(24)), 0..6)
}

fn arb_response() -> impl Strategy<Value = RecordedResponse> {
    (
        any::<u16>(),
        arb_headers(),
        proptest::collection::vec((any::<u64>(), arb_bytes(64)), 0..4),
        arb_bytes(6),
    )
        .prop_map(
            |(status, headers, chunks, original_encoding)| RecordedResponse {
                status,
                headers,
                chunks: chunks
                    .into_iter()
                    .map(|(offset_us, data)| BodyChunk { offset_us, data })
                    .collect(),
                original_encoding,
                ..Default::default()
            },
        )
}

fn arb_interaction() -> impl Strategy<Value = Interaction> {
    let frames = proptest::collection::vec(
        (any::<bool>(), any::<u8>(), any::<u64>(), arb_bytes(32)),
        0..5,
    );
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        arb_bytes(48),
        any::<u16>(),
        any::<u64>(),
        (arb_bytes(8), arb_bytes(32), arb_headers(), arb_bytes(64)),
        arb_response(),
        proptest::option::of(frames),
    )
        .prop_map(
            |(
                fp,
                link,
                canonical,
                endpoint,
                at,
                (method, target, headers, body),
                response,
                frames,
            )| {
                let exchange = match frames {
                    None => Exchange::Http(response),
                    Some(frames) => Exchange::WebSocket {
                        response,
                        frames: frames
                            .into_iter()
                            .map(|(from_server, opcode, offset_us, payload)| WsFrame {
                                direction: if from_server {
                                    WsDirection::ServerToClient
                                } else {
                                    WsDirection::ClientToServer
                                },
                                opcode,
                                offset_us,
                                payload,
                            })
                            .collect(),
                    },
                };
                Interaction {
                    fingerprint: Fingerprint(fp),
                    chain_link: Fingerprint(link),
                    canonical,
                    endpoint,
                    recorded_at_unix_us: at,
                    request: RecordedRequest {
                        method,
                        target,
                        headers,
                        body,
                        trailers: Vec::new(),
                    },
                    exchange,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_an_error_or_fewer_records_never_a_panic(
        noise in proptest::collection::vec(any::<u8>(), 0..2048),
        after_header in any::<bool>(),
    ) {
        let mut bytes = Vec::new();
        if after_header {
            bytes.extend_from_slice(&ouli::recording::encode_recording(&[])[..]);
        }
        bytes.extend_from_slice(&noise);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise.ouli");
        std::fs::write(&path, &bytes).unwrap();
        for backend in BACKENDS {
            if let Ok(recording) = Recording::open(&path, backend) {
                let served = exercise(&recording, &[Fingerprint::default()]);
                prop_assert!(served <= recording.len());
            }
        }
        if let Ok(recording) = Recording::from_bytes("noise.ouli".into(), Bytes::from(bytes)) {
            let served = exercise(&recording, &[Fingerprint::default()]);
            prop_assert!(served <= recording.len());
        }
    }

    #[test]
    fn damaged_recordings_are_an_error_or_fewer_records_never_a_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        finish in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let records = small_records();
        let path = write(dir.path(), "damaged", &records, finish);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        std::fs::write(&path, &bytes).unwrap();
        let probes: Vec<_> = records.iter().map(|r| r.fingerprint).collect();
        for backend in BACKENDS {
            if let Ok(recording) = Recording::open(&path, backend) {
                let served = exercise(&recording, &probes);
                prop_assert!(served <= records.len());
                let _ = recording.refresh();
            }
        }
        if let Ok(recording) = Recording::from_bytes(path.clone(), Bytes::from(bytes)) {
            exercise(&recording, &probes);
        }
    }

    #[test]
    fn arbitrary_interactions_round_trip(
        interactions in proptest::collection::vec(arb_interaction(), 0..6),
        finish in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "arbitrary", &interactions, finish);
        for backend in BACKENDS {
            let recording = open(&path, backend);
            prop_assert_eq!(recording.uses_persisted_index(), finish);
            assert_serves(&recording, &interactions);
        }
        let in_memory = ouli::recording::encode_recording(&interactions);
        let recording = Recording::from_bytes("memory".into(), Bytes::from(in_memory)).unwrap();
        assert_serves(&recording, &interactions);
    }
}
