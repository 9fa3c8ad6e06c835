//! `recording`: a recording file read by `Recording` (open, lookup, read of
//! every record). The first byte picks the variant:
//! * even: the rest is the file, as it is. Nothing may panic, and whatever a
//!   lookup serves is a record of the fingerprint asked for.
//! * odd: a model. Interactions decoded from the input are written with
//!   `RecordingWriter` (format version 1 when the byte's second bit is
//!   set, else the current version: a version 1 record keeps no time to
//!   first byte and no trailers, and reads back without them), the
//!   finished file is damaged as the input says
//!   (cut short, bytes flipped), then opened: every record served (looked
//!   up by fingerprint or iterated) is one that was written, byte for byte,
//!   or it is reported missing or damaged; never a wrong body. Undamaged,
//!   every interaction is served.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use ouli::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse, WsDirection,
    WsFrame,
};
use ouli::recording::{
    Durability, FORMAT_VERSION, FORMAT_VERSION_1, ReadBackend, Recording, RecordingError,
    RecordingWriter,
};

use super::Input;

/// Interactions one model input writes at most: enough for duplicates,
/// index probing past a collision and a scan over several records.
const INTERACTIONS_MAX: u8 = 8;

/// Distinct fingerprints the model draws from: few, so that duplicates occur.
const FINGERPRINTS: u8 = 6;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let first = input.byte();
    if first & 1 == 0 {
        check_raw(input.rest());
    } else {
        let version = match first & 2 {
            0 => FORMAT_VERSION,
            _ => FORMAT_VERSION_1,
        };
        check_model(&mut input, version);
    }
}

fn check_raw(bytes: &[u8]) {
    let Ok(recording) =
        Recording::from_bytes(PathBuf::from("fuzz.ouli"), Bytes::copy_from_slice(bytes))
    else {
        return;
    };
    let _ = recording.len();
    let mut seen = Vec::new();
    for view in recording.iter().flatten() {
        let _ = view.to_interaction();
        let _ = view.response_status();
        let _ = view.response_headers().count();
        let _ = view.response_chunks().count();
        seen.push(view.fingerprint());
    }
    for fingerprint in &seen {
        if let Ok(Some(view)) = recording.get(fingerprint) {
            assert_eq!(
                view.fingerprint(),
                *fingerprint,
                "lookup served another record"
            );
        }
    }
    assert!(
        !recording.refresh().unwrap(),
        "an in-memory recording has nothing new"
    );
}

fn check_model(input: &mut Input<'_>, version: u32) {
    let count = input.byte() % (INTERACTIONS_MAX + 1);
    let written: Vec<Interaction> = (0..count).map(|_| interaction(input)).collect();
    let dir = scratch_dir();
    let final_path = dir.join(format!("{}.ouli", NEXT.fetch_add(1, Ordering::Relaxed)));
    let kept = write(&final_path, &written, version);
    let mut bytes = std::fs::read(&final_path).expect("the finished recording reads back");
    let damaged = damage(input, &mut bytes);
    std::fs::write(&final_path, &bytes).expect("the damaged copy is written");
    let opened = Recording::open(&final_path, ReadBackend::Mmap);
    let from_bytes = Recording::from_bytes(final_path.clone(), Bytes::from(bytes));
    let _ = std::fs::remove_file(&final_path);
    for recording in [opened, from_bytes] {
        match recording {
            Ok(recording) => served_as_written(&recording, &kept, damaged),
            Err(error) => assert!(damaged, "an undamaged recording does not open: {error}"),
        }
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One folder per process under the temp dir (`TMPDIR`), made once.
fn scratch_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ouli-fuzz-recording-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch folder is made");
        dir
    })
    .clone()
}

/// Writes `interactions` in format `version` and finishes the file; returns
/// those the writer took as they read back (one over the format's limits is
/// refused, and then not expected; version 1 keeps no time to first byte
/// and no trailers).
fn write(final_path: &Path, interactions: &[Interaction], version: u32) -> Vec<Interaction> {
    let mut writer = RecordingWriter::create_with_version(final_path, Durability::None, version)
        .expect("writer");
    assert_eq!(writer.format_version(), version);
    let mut kept = Vec::new();
    for interaction in interactions {
        match writer.append(interaction) {
            Ok(_) => {
                let mut read_back = interaction.clone();
                if version == FORMAT_VERSION_1 {
                    let response = response_mut(&mut read_back);
                    response.head_offset_us = 0;
                    response.trailers.clear();
                }
                kept.push(read_back);
            }
            Err(RecordingError::RecordTooLarge { .. }) => {}
            Err(error) => panic!("append failed: {error}"),
        }
    }
    writer.finish().expect("finish");
    kept
}

/// Cuts the file short and/or flips bytes, as the input says; returns
/// whether any byte changed.
fn damage(input: &mut Input<'_>, bytes: &mut Vec<u8>) -> bool {
    let mut damaged = false;
    for _ in 0..input.byte() % 5 {
        let op = input.byte();
        let at = usize::from(input.u16());
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        if op & 1 == 0 {
            bytes.truncate(at);
            damaged = true;
        } else {
            let mask = (op >> 1).max(1);
            bytes[at] ^= mask;
            damaged = true;
        }
    }
    damaged
}

/// The model's check: what `recording` serves is what was written.
fn served_as_written(recording: &Recording, written: &[Interaction], damaged: bool) {
    let written_as = |fingerprint: &Fingerprint| -> Vec<&Interaction> {
        written
            .iter()
            .filter(|w| w.fingerprint == *fingerprint)
            .collect()
    };
    for id in 0..FINGERPRINTS + 1 {
        let fingerprint = fingerprint_of(id);
        let candidates = written_as(&fingerprint);
        match recording.get(&fingerprint) {
            Ok(Some(view)) => {
                assert_eq!(
                    view.fingerprint(),
                    fingerprint,
                    "lookup served another record"
                );
                assert!(
                    !candidates.is_empty(),
                    "a record served that was never written"
                );
                let served = view.to_interaction();
                if let Ok(served) = &served {
                    assert!(
                        candidates.contains(&served),
                        "served {served:?}, written {candidates:?}"
                    );
                }
                // What replay answers with: status, time to first byte,
                // body chunks, trailers.
                let body: Vec<u8> = view
                    .response_chunks()
                    .flat_map(|(_, data)| data.to_vec())
                    .collect();
                let trailers: Vec<(Bytes, Bytes)> = view
                    .response_trailers_shared()
                    .map(|(name, value)| (bytes(name), value))
                    .collect();
                assert!(
                    candidates.iter().any(|c| {
                        let response = response_of(c);
                        response.status == view.response_status()
                            && response.head_offset_us == view.response_head_offset_us()
                            && body_of(response) == body
                            && response.trailers == trailers
                    }),
                    "served a wrong status, time to first byte, body or trailers"
                );
                if !damaged {
                    assert_eq!(
                        served.as_ref().ok(),
                        Some(candidates[0]),
                        "undamaged: the first record of a fingerprint is served"
                    );
                }
            }
            Ok(None) | Err(_) => assert!(
                damaged || candidates.is_empty(),
                "undamaged, a written interaction is not served"
            ),
        }
    }
    let mut served = 0;
    for view in recording.iter() {
        match view.and_then(|v| v.to_interaction()) {
            Ok(interaction) => {
                assert!(
                    written.contains(&interaction),
                    "iterated a record never written"
                );
                served += 1;
            }
            Err(error) => assert!(damaged, "undamaged, a record reads as damaged: {error}"),
        }
    }
    if !damaged {
        assert_eq!(served, written.len(), "undamaged, every record is iterated");
        assert_eq!(recording.len(), written.len());
    }
}

fn response_of(interaction: &Interaction) -> &RecordedResponse {
    match &interaction.exchange {
        Exchange::Http(response) | Exchange::WebSocket { response, .. } => response,
    }
}

fn response_mut(interaction: &mut Interaction) -> &mut RecordedResponse {
    match &mut interaction.exchange {
        Exchange::Http(response) | Exchange::WebSocket { response, .. } => response,
    }
}

fn body_of(response: &RecordedResponse) -> Vec<u8> {
    response
        .chunks
        .iter()
        .flat_map(|c| c.data.to_vec())
        .collect()
}

/// Fingerprint `id`: distinct ids, distinct fingerprints, spread over the
/// index (a fingerprint's first bytes pick its slot).
fn fingerprint_of(id: u8) -> Fingerprint {
    let mut bytes = [id; 32];
    bytes[0] = id.wrapping_mul(0x9d);
    Fingerprint(bytes)
}

fn bytes(slice: &[u8]) -> Bytes {
    Bytes::copy_from_slice(slice)
}

fn headers(input: &mut Input<'_>) -> Vec<(Bytes, Bytes)> {
    (0..input.byte() % 4)
        .map(|_| (bytes(input.short()), bytes(input.short())))
        .collect()
}

fn interaction(input: &mut Input<'_>) -> Interaction {
    let fingerprint = fingerprint_of(input.byte() % FINGERPRINTS);
    let flags = input.byte();
    let request = RecordedRequest {
        method: bytes(input.short()),
        target: bytes(input.short()),
        headers: headers(input),
        body: bytes(input.long()),
        trailers: Vec::new(),
    };
    let response = RecordedResponse {
        status: input.u16(),
        head_offset_us: input.u64(),
        headers: headers(input),
        chunks: (0..input.byte() % 4)
            .map(|_| BodyChunk {
                offset_us: input.u64(),
                data: bytes(input.long()),
            })
            .collect(),
        trailers: headers(input),
        original_encoding: bytes(input.short()),
    };
    let exchange = if flags & 1 == 0 {
        Exchange::Http(response)
    } else {
        let frames = (0..input.byte() % 4)
            .map(|_| WsFrame {
                direction: if input.byte() & 1 == 0 {
                    WsDirection::ClientToServer
                } else {
                    WsDirection::ServerToClient
                },
                opcode: input.byte(),
                offset_us: input.u64(),
                payload: bytes(input.long()),
            })
            .collect();
        Exchange::WebSocket { response, frames }
    };
    Interaction {
        fingerprint,
        chain_link: Fingerprint([flags; 32]),
        canonical: bytes(input.short()),
        endpoint: input.u16(),
        recorded_at_unix_us: input.u64(),
        request,
        exchange,
    }
}
