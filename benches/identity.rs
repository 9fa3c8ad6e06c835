//! Request identity costs per request (rfcs/0002):
//!
//! * `identity/canonical+fingerprint` — [`EndpointIdentity::identify`] (the
//!   live path's and the importer's: redaction, canonical form) and SHA-256
//!   of a typical API call: `POST` with a query, five headers (two
//!   volatile), a small JSON body.
//! * `identity/chain_peek` — [`ChainState::peek_hashed`], what the lookup
//!   stage does under the session's lock, on that canonical form hashed
//!   beforehand in a session that has seen it and 100 other requests
//!   (`chain: request`).
//! * `identity/redact_bytes_64k_10_secrets` — [`Redactor::redact_bytes`] on a
//!   64 KiB body holding each of 10 secrets once.
//!
//! * `identity/fingerprint/{get,post-1k-json,post-1m-raw}` — `identify` and
//!   the fingerprint of a GET, a 1 KiB JSON POST and a 1 MiB opaque body.
//! * `identity/redact-1m/{1,32}-secrets` — [`Redactor::redact_bytes`] over
//!   1 MiB of text holding no secret (the common case: a pure scan).
//!
//! `cargo bench --bench identity -- --test` runs each once.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use ouli::chain::{ChainMode, ChainState, HashedCanonical};
use ouli::fingerprint::{MatchRules, Target, fingerprint};
use ouli::identity::{EndpointIdentity, RequestHead};
use ouli::interaction::Fingerprint;
use ouli::redact::{RedactionRules, Redactor};
use std::hint::black_box;
use std::sync::Arc;

/// Size of the body the redaction benchmark scans.
const REDACT_BODY_BYTES: usize = 64 * 1024;
/// Secrets in the redaction benchmark, each present once in the body.
const REDACT_SECRETS: usize = 10;

const BODY: &[u8] = br#"{"model":"gemini-2.0-flash","contents":[{"role":"user","parts":[{"text":"Write a haiku about proxies."}]}],"generationConfig":{"temperature":0.2,"maxOutputTokens":128}}"#;

fn typical_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("x-goog-api-client", "genai-py/1.2.0 gl-python/3.12"),
        ("user-agent", "google-genai-sdk/1.2.0"),
        ("x-tenant", "blue"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// An endpoint's identity with default matching and nothing to redact.
fn identity(target: Target) -> EndpointIdentity {
    let redactor = Redactor::new(&RedactionRules::default()).expect("default rules compile");
    EndpointIdentity::new(target, &MatchRules::default(), Arc::new(redactor))
}

fn canonical(identity: &EndpointIdentity, headers: &HeaderMap) -> Vec<u8> {
    let head = RequestHead {
        method: b"POST",
        path_and_query: b"/v1beta/models/gemini-2.0-flash:generateContent?alt=json&key=REDACTED",
        headers,
    };
    identity.identify(head, Bytes::from_static(BODY)).canonical
}

fn bench_identity(c: &mut Criterion) {
    let identity = identity(Target {
        scheme: "https".into(),
        host: "generativelanguage.googleapis.com".into(),
        port: 443,
    });
    let headers = typical_headers();
    let mut group = c.benchmark_group("identity");

    group.bench_function("canonical+fingerprint", |b| {
        b.iter(|| {
            let canonical = canonical(&identity, black_box(&headers));
            fingerprint(&canonical, &Fingerprint::CHAIN_HEAD)
        })
    });

    let request = canonical(&identity, &headers);
    let mut chain = ChainState::new(ChainMode::Request);
    for i in 0..100u32 {
        let other = format!("other request {i}");
        let step = chain.peek(other.as_bytes());
        chain.commit(&step);
    }
    let step = chain.peek(&request);
    chain.commit(&step);
    let hashed = HashedCanonical::new(&request);
    group.bench_function("chain_peek", |b| {
        b.iter(|| chain.peek_hashed(black_box(&hashed)))
    });

    let secrets: Vec<Vec<u8>> = (0..REDACT_SECRETS)
        .map(|i| format!("sk-live-{i:02}-9f8e7d6c5b4a").into_bytes())
        .collect();
    let redactor = Redactor::new(&RedactionRules {
        secrets: secrets.clone(),
        ..RedactionRules::default()
    })
    .expect("literal secrets compile");
    let mut body: Vec<u8> = b"lorem ipsum dolor sit amet, consectetur adipiscing elit. "
        .iter()
        .copied()
        .cycle()
        .take(REDACT_BODY_BYTES)
        .collect();
    let stride = REDACT_BODY_BYTES / REDACT_SECRETS;
    for (i, secret) in secrets.iter().enumerate() {
        let at = i * stride + stride / 2;
        body[at..at + secret.len()].copy_from_slice(secret);
    }
    assert_eq!(
        redactor.redact_bytes(&body).len(),
        REDACT_BODY_BYTES - secrets.iter().map(Vec::len).sum::<usize>() + REDACT_SECRETS * 8,
        "every secret found once"
    );
    group.throughput(Throughput::Bytes(REDACT_BODY_BYTES as u64));
    group.bench_function("redact_bytes_64k_10_secrets", |b| {
        b.iter(|| redactor.redact_bytes(black_box(&body)).len())
    });
    group.finish();
}

fn bench_sizes(c: &mut Criterion) {
    let identity = identity(Target {
        scheme: "https".into(),
        host: "api.example.com".into(),
        port: 443,
    });
    let mut json_headers = HeaderMap::new();
    json_headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("application/json"),
    );
    let mut raw_headers = HeaderMap::new();
    raw_headers.insert(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("application/octet-stream"),
    );
    let mut json = String::from("{\"items\":[");
    let mut n = 0;
    while json.len() < 1000 {
        json.push_str(&format!("{{\"id\":{n},\"name\":\"item {n}\"}},"));
        n += 1;
    }
    json.push_str("{\"id\":-1}]}");
    let large: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let empty = HeaderMap::new();
    let cases: [(&str, &[u8], &HeaderMap, Bytes); 3] = [
        ("get", b"GET", &empty, Bytes::new()),
        ("post-1k-json", b"POST", &json_headers, Bytes::from(json)),
        ("post-1m-raw", b"POST", &raw_headers, Bytes::from(large)),
    ];
    let mut group = c.benchmark_group("identity/fingerprint");
    for (name, method, headers, body) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let head = RequestHead {
                    method,
                    path_and_query: b"/v1/items?page=2&size=50",
                    headers,
                };
                let identified = identity.identify(head, black_box(body.clone()));
                fingerprint(&identified.canonical, &Fingerprint::CHAIN_HEAD)
            })
        });
    }
    group.finish();

    let text: Vec<u8> = b"The quick brown fox jumps over the lazy dog; 0123456789. "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let mut group = c.benchmark_group("identity/redact-1m");
    group.throughput(Throughput::Bytes(text.len() as u64));
    for count in [1usize, 32] {
        let secrets: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("sk_live_{i:02}_7f3a9c").into_bytes())
            .collect();
        let redactor = Redactor::new(&RedactionRules {
            secrets,
            ..RedactionRules::default()
        })
        .expect("literal secrets compile");
        group.bench_function(format!("{count}-secrets"), |b| {
            b.iter(|| redactor.redact_bytes(black_box(&text)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_identity, bench_sizes);
criterion_main!(benches);
