//! The recording file on its own (rfcs/0001-recording-format.md):
//!
//! * `recording/open/<kind>/<backend>/<n>` — open a recording of n 1 KiB
//!   interactions: `indexed` (finished: header, footer, index head; O(1) with
//!   mmap, one read of the whole file with io_uring) or `scanned` (never
//!   finished: every record header walked).
//! * `recording/get/<backend>` — index probe + record view of a random key,
//!   CRCs already checked (the replay hot path).
//! * `recording/first-read/<backend>` — the same on a freshly opened
//!   recording: the CRC of each record is checked at its first read.
//! * `recording/append/<durability>` — encode and append one 1 KiB
//!   interaction (no fsync: `None`).
//!
//! * `recording/lookup/{hit,miss}/<n>` — the index probe alone, in a
//!   recording of n = 100k interactions (10k in test mode).
//! * `recording/read-64k/<backend>` — get and touch a 64 KiB body.
//!
//! `cargo test --all-targets` runs each once (criterion's test mode), so the
//! setup stays small there: at most 10k interactions (about 11 MiB); under
//! `cargo bench` the lookup and open cases use 100k (about 110 MiB).

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ouli::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse,
};
use ouli::recording::{Durability, ReadBackend, Recording, RecordingWriter};
use std::hint::black_box;
use std::path::{Path, PathBuf};

/// Interactions in the largest recording opened.
const INTERACTIONS_MAX: u32 = 10_000;
const BODY_BYTES: usize = 1024;

fn fingerprint(i: u32) -> Fingerprint {
    // Spread over the home slots like a SHA-256 would.
    let mut bytes = [0u8; 32];
    let mixed = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    bytes[..8].copy_from_slice(&mixed.to_le_bytes());
    bytes[8..12].copy_from_slice(&i.to_le_bytes());
    Fingerprint(bytes)
}

fn interaction(i: u32) -> Interaction {
    Interaction {
        fingerprint: fingerprint(i),
        chain_link: Fingerprint::CHAIN_HEAD,
        canonical: Bytes::from(format!("GET /item/{i}")),
        endpoint: 0,
        recorded_at_unix_us: 0,
        request: RecordedRequest {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from(format!("/item/{i}")),
            headers: vec![(Bytes::from_static(b"host"), Bytes::from_static(b"api"))],
            body: Bytes::new(),
            trailers: Vec::new(),
        },
        exchange: Exchange::Http(RecordedResponse {
            status: 200,
            headers: vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"application/json"),
            )],
            chunks: vec![BodyChunk {
                offset_us: 0,
                data: Bytes::from(vec![b'x'; BODY_BYTES]),
            }],
            original_encoding: Bytes::new(),
            ..Default::default()
        }),
    }
}

/// A recording of `n` interactions; `finish` decides whether it is indexed.
fn recording_file(dir: &Path, n: u32, finish: bool) -> PathBuf {
    let path = dir.join(format!("r{n}-{finish}.ouli"));
    let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
    for i in 0..n {
        writer.append(&interaction(i)).unwrap();
    }
    if finish {
        writer.finish().unwrap()
    } else {
        writer.path().to_path_buf()
    }
}

/// Interactions of the lookup and large open cases: 100k under `cargo
/// bench`, 10k in test mode (criterion's `--bench` flag is absent there).
fn large_count() -> u32 {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        INTERACTIONS_MAX
    }
}

const BACKENDS: [(&str, ReadBackend); 2] = [
    ("mmap", ReadBackend::Mmap),
    ("io_uring", ReadBackend::IoUring),
];

fn open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("recording/open");
    let mut counts = vec![100, INTERACTIONS_MAX];
    if large_count() > INTERACTIONS_MAX {
        counts.push(large_count());
    }
    for n in counts {
        for (kind, finish) in [("indexed", true), ("scanned", false)] {
            let path = recording_file(dir.path(), n, finish);
            for (name, backend) in BACKENDS {
                group.bench_with_input(
                    BenchmarkId::new(format!("{kind}/{name}"), n),
                    &path,
                    |b, path| b.iter(|| black_box(Recording::open(path, backend).unwrap())),
                );
            }
        }
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = recording_file(dir.path(), INTERACTIONS_MAX, true);
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(1));
    for (name, backend) in BACKENDS {
        let recording = Recording::open(&path, backend).unwrap();
        let mut i = 0u32;
        group.bench_function(BenchmarkId::new("get", name), |b| {
            b.iter(|| {
                i = (i + 7919) % INTERACTIONS_MAX;
                black_box(recording.get(&fingerprint(i)).unwrap().unwrap())
            })
        });
        group.bench_function(BenchmarkId::new("first-read", name), |b| {
            b.iter_batched(
                || Recording::open(&path, backend).unwrap(),
                |fresh| black_box(fresh.get(&fingerprint(1)).unwrap().unwrap()),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer =
        RecordingWriter::create(&dir.path().join("append.ouli"), Durability::None).unwrap();
    let record = interaction(1);
    let mut group = c.benchmark_group("recording/append");
    group.throughput(Throughput::Bytes(BODY_BYTES as u64));
    group.bench_function("none", |b| {
        b.iter(|| black_box(writer.append(&record).unwrap()))
    });
    group.finish();
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let n = large_count();
    let path = recording_file(dir.path(), n, true);
    let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
    let mut group = c.benchmark_group("recording/lookup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    group.bench_function(BenchmarkId::new("hit", n), |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(recording.lookup(black_box(&fingerprint(i))).unwrap())
        })
    });
    let mut j = 0u32;
    group.bench_function(BenchmarkId::new("miss", n), |b| {
        b.iter(|| {
            j = j.wrapping_add(7919);
            let absent = fingerprint(n + j % n);
            assert!(recording.lookup(black_box(&absent)).is_none());
        })
    });
    group.finish();
}

fn read_64k(c: &mut Criterion) {
    const LARGE_BODY: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.ouli");
    let mut writer = RecordingWriter::create(&path, Durability::None).unwrap();
    for i in 0..64 {
        let mut record = interaction(i);
        if let Exchange::Http(response) = &mut record.exchange {
            response.chunks[0].data = Bytes::from(vec![b'y'; LARGE_BODY]);
        }
        writer.append(&record).unwrap();
    }
    let path = writer.finish().unwrap();
    let mut group = c.benchmark_group("recording/read-64k");
    group.throughput(Throughput::Bytes(LARGE_BODY as u64));
    for (name, backend) in BACKENDS {
        let recording = Recording::open(&path, backend).unwrap();
        let mut i = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 17) % 64;
                let view = recording.get(&fingerprint(i)).unwrap().unwrap();
                // Touch every byte: the body is read, not only located.
                view.response_chunks()
                    .map(|(_, data)| data.iter().map(|&b| u64::from(b)).sum::<u64>())
                    .sum::<u64>()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, open, get, append, lookup, read_64k);
criterion_main!(benches);
