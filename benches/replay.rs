//! The in-process replay path, without sockets: what ouli does per replayed
//! request between hyper handing it a parsed request and hyper writing the
//! response (rfcs/0003-performance.md, "criterion figures").
//!
//! * `replay/canonical+chain` — identity of a wrk-like `GET`
//!   ([`EndpointIdentity::identify`]), its canonical form hashed and the
//!   chain step taken ([`ouli::server::take_step`]): the live path's stages.
//! * `replay/lookup+read/<n>` — index probe and record view in a recording of
//!   n interactions, random keys (the 100k-interaction case's memory pattern).
//! * `replay/response/<size>` — an `http::Response` built from a record view:
//!   headers copied from the map, body `Bytes` pointing into it.
//! * `replay/whole/<size>` — all of the above for one request, the lookup by
//!   the server's lookup stage ([`ouli::server::lookup`]).
//!
//! `cargo test --all-targets` runs each once (criterion's test mode), so the
//! setup stays small: recordings of at most 10k interactions.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use ouli::chain::{ChainMode, HashedCanonical};
use ouli::fingerprint::{MatchRules, Target};
use ouli::identity::{EndpointIdentity, RequestHead};
use ouli::interaction::{
    BodyChunk, Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse,
};
use ouli::recording::{Durability, ReadBackend, RecordView, Recording, RecordingWriter};
use ouli::redact::{RedactionRules, Redactor};
use ouli::server::{Lookup, Policy, Session, lookup, take_step};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

/// Interactions in the lookup benchmark's largest recording.
const LOOKUP_RECORDING_INTERACTIONS: u32 = 10_000;

/// The endpoint's identity: default matching, nothing to redact.
fn identity() -> EndpointIdentity {
    let target = Target {
        scheme: "http".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: 9,
    };
    let redactor = Redactor::new(&RedactionRules::default()).expect("default rules compile");
    EndpointIdentity::new(target, &MatchRules::default(), Arc::new(redactor))
}

/// A body-less `GET` of `path_and_query`, as the live path identifies it.
fn get<'a>(path_and_query: &'a [u8], headers: &'a HeaderMap) -> RequestHead<'a> {
    RequestHead {
        method: b"GET",
        path_and_query,
        headers,
    }
}

fn wrk_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("127.0.0.1:8080"),
    );
    headers
}

fn json_body(len: usize) -> Bytes {
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"data\":\"");
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

/// Writes `count` interactions `GET /items/<i>` with `body_len`-byte bodies and
/// returns their fingerprints, computed by the record path's stages
/// (identity, then the chain step of record mode).
fn write_recording(path: &Path, count: u32, body_len: usize) -> Vec<Fingerprint> {
    let identity = identity();
    let headers = wrk_headers();
    let body = json_body(body_len);
    let session = Session::new(None, ChainMode::Request);
    let mut writer = RecordingWriter::create(path, Durability::None).expect("create recording");
    let mut fingerprints = Vec::with_capacity(count as usize);
    for i in 0..count {
        let target_path = format!("/items/{i}");
        let canonical = identity
            .identify(get(target_path.as_bytes(), &headers), Bytes::new())
            .canonical;
        let step = take_step(&session, &HashedCanonical::new(&canonical), false);
        fingerprints.push(step.fingerprint);
        writer
            .append(&Interaction {
                fingerprint: step.fingerprint,
                chain_link: step.link,
                canonical: Bytes::from(canonical),
                endpoint: 0,
                recorded_at_unix_us: 0,
                request: RecordedRequest {
                    method: Bytes::from_static(b"GET"),
                    target: Bytes::from(target_path),
                    headers: vec![(
                        Bytes::from_static(b"host"),
                        Bytes::from_static(b"127.0.0.1:8080"),
                    )],
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
                        data: body.clone(),
                    }],
                    original_encoding: Bytes::new(),
                    ..Default::default()
                }),
            })
            .expect("append");
    }
    writer.finish().expect("finish recording");
    fingerprints
}

/// The response a replay answers with, built the way a server must: status,
/// recorded headers, body as `Bytes` slices of the map (copied only when the
/// body arrived in several chunks).
fn build_response(view: &RecordView) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::new());
    *response.status_mut() =
        http::StatusCode::from_u16(view.response_status()).expect("recorded status is valid");
    let headers = response.headers_mut();
    for (name, value) in view.response_headers() {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let mut chunks = view.response_chunks();
    let body = match (chunks.next(), chunks.next()) {
        (None, _) => Bytes::new(),
        (Some((_, only)), None) => only,
        (Some((_, first)), Some((_, second))) => {
            let mut all = Vec::with_capacity(view.response_body_len() as usize);
            all.extend_from_slice(&first);
            all.extend_from_slice(&second);
            for (_, chunk) in chunks {
                all.extend_from_slice(&chunk);
            }
            Bytes::from(all)
        }
    };
    *response.body_mut() = body;
    response
}

fn bench_canonical_and_chain(c: &mut Criterion) {
    let identity = identity();
    let headers = wrk_headers();
    let session = Session::new(None, ChainMode::Request);
    c.bench_function("replay/canonical+chain", |b| {
        b.iter(|| {
            let identified =
                identity.identify(get(black_box(b"/v1/items/42"), &headers), Bytes::new());
            let hashed = HashedCanonical::new(&identified.canonical);
            black_box(take_step(&session, &hashed, false).fingerprint)
        })
    });
}

fn bench_lookup_and_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("replay/lookup+read");
    for count in [1u32, LOOKUP_RECORDING_INTERACTIONS] {
        let path = dir.path().join(format!("lookup-{count}.ouli"));
        let fingerprints = write_recording(&path, count, 1024);
        let recording = Recording::open(&path, ReadBackend::Mmap).expect("open recording");
        // A fixed pseudo-random visiting order (xorshift): no RNG dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let fingerprint = &fingerprints[(state % fingerprints.len() as u64) as usize];
                let view = recording
                    .get(black_box(fingerprint))
                    .expect("read")
                    .expect("recorded fingerprint is found");
                black_box(view.response_status())
            })
        });
    }
    group.finish();
}

fn bench_response_and_whole(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = identity();
    let headers = wrk_headers();
    let mut response_group = c.benchmark_group("replay/response");
    let mut prepared = Vec::new();
    for size in [1024usize, 65536, 1 << 20] {
        let path = dir.path().join(format!("one-{size}.ouli"));
        let fingerprints = write_recording(&path, 1, size);
        let recording = Recording::open(&path, ReadBackend::Mmap).expect("open recording");
        let view = recording
            .get(&fingerprints[0])
            .expect("read")
            .expect("found");
        response_group.throughput(Throughput::Elements(1));
        response_group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| black_box(build_response(black_box(&view))))
        });
        // The lookup stage's own copy of the recording, in a session.
        let served = Recording::open(&path, ReadBackend::Mmap).expect("open recording");
        prepared.push((size, Session::new(Some(served), ChainMode::Request)));
    }
    response_group.finish();

    let mut whole_group = c.benchmark_group("replay/whole");
    for (size, session) in &prepared {
        whole_group.bench_with_input(BenchmarkId::from_parameter(size), size, |b, _| {
            b.iter(|| {
                let identified =
                    identity.identify(get(black_box(b"/items/0"), &headers), Bytes::new());
                let hashed = HashedCanonical::new(&identified.canonical);
                // Reset to the head: the recording holds position 0 only.
                let Lookup::Hit {
                    recording,
                    location,
                    ..
                } = lookup(session, &hashed, true, Policy::Replay)
                else {
                    panic!("recorded request is found");
                };
                let view = recording.read(location).expect("read");
                black_box(build_response(&view))
            })
        });
    }
    whole_group.finish();
}

criterion_group!(
    benches,
    bench_canonical_and_chain,
    bench_lookup_and_read,
    bench_response_and_whole
);
criterion_main!(benches);
