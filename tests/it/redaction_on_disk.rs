//! Secrets never reach the disk (README, redaction): whatever the secrets
//! (arbitrary bytes, overlapping each other, split across body chunks,
//! inside a gzip body), no byte sequence equal to one of them is anywhere in
//! the written recording file. The pipeline is the record path's: decode,
//! redact, canonical form of the redacted request, append, finish.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ouli::chain::{ChainMode, ChainState};
use ouli::decode::decode_body;
use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
use ouli::recording::{Durability, RecordingWriter};
use ouli::redact::{RedactionRules, Redactor};
use proptest::prelude::*;
use std::io::Write;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Secrets: 1–3 random ones (8–20 arbitrary bytes), plus one that overlaps
/// the first (its last 4 bytes followed by new ones).
fn secrets() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 8..20), 1..4),
        prop::collection::vec(any::<u8>(), 4..12),
    )
        .prop_map(|(mut list, tail)| {
            let first = list[0].clone();
            let mut overlapping = first[first.len() - 4..].to_vec();
            overlapping.extend(tail);
            list.push(overlapping);
            list
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn no_secret_is_anywhere_in_the_written_file(
        secrets in secrets(),
        filler in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        gzipped in any::<bool>(),
    ) {
        let redactor = Redactor::new(&RedactionRules {
            drop_request_headers: vec!["authorization".into()],
            secrets: secrets.clone(),
            sensitive_json_keys: vec![],
            response_header_replacements: vec![],
        }).unwrap();
        // A body where every secret appears, the first two overlapping
        // (first secret, then the overlapping one's new bytes right after).
        let mut body = filler.clone();
        for secret in &secrets {
            body.extend_from_slice(secret);
            body.extend_from_slice(&filler[..filler.len().min(7)]);
        }
        let overlapping = secrets.last().unwrap();
        body.extend_from_slice(&secrets[0]);
        body.extend_from_slice(&overlapping[4..]);

        // Response: optionally gzip on the wire, arriving in chunks.
        let wire = if gzipped {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body).unwrap();
            encoder.finish().unwrap()
        } else {
            body.clone()
        };
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        points.dedup();
        let mut chunks: Vec<BodyChunk> = points
            .windows(2)
            .enumerate()
            .map(|(i, w)| BodyChunk { offset_us: i as u64, data: Bytes::copy_from_slice(&wire[w[0]..w[1]]) })
            .collect();
        if gzipped {
            let decoded = decode_body(b"gzip", &wire, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(&decoded, &body);
            chunks = vec![BodyChunk { offset_us: 0, data: Bytes::from(decoded) }];
        }
        let secret_text = |i: usize| Bytes::copy_from_slice(&secrets[i % secrets.len()]);
        let mut response = RecordedResponse {
            status: 200,
            headers: vec![(Bytes::from_static(b"x-echo"), secret_text(1))],
            chunks,
            original_encoding: if gzipped { Bytes::from_static(b"gzip") } else { Bytes::new() },
            ..Default::default()
        };
        redactor.redact_response(&mut response);

        // Request: a secret in the target, a header value, a dropped header
        // and the body; the canonical form is built from the redacted parts.
        let mut target = b"/v1/items?key=".to_vec();
        target.extend_from_slice(&secrets[0]);
        let mut request = RecordedRequest {
            method: Bytes::from_static(b"POST"),
            target: Bytes::from(target),
            headers: vec![
                (Bytes::from_static(b"authorization"), secret_text(0)),
                (Bytes::from_static(b"x-note"), secret_text(2)),
            ],
            body: Bytes::from(body.clone()),
            trailers: Vec::new(),
        };
        redactor.redact_request(&mut request);
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                headers.append(name, value);
            }
        }
        let mut canonical = Vec::new();
        Matcher::new(&MatchRules::default()).canonical_form(
            &Target { scheme: "http".into(), host: "api.test".into(), port: 80 },
            &RequestParts {
                method: &request.method,
                path_and_query: &request.target,
                headers: &headers,
                body: &request.body,
            },
            &mut canonical,
        );
        let step = ChainState::new(ChainMode::Request).peek(&canonical);

        let dir = tempfile::tempdir().unwrap();
        let mut writer = RecordingWriter::create(&dir.path().join("s.ouli"), Durability::None).unwrap();
        writer.append(&Interaction {
            fingerprint: step.fingerprint,
            chain_link: step.link,
            canonical: Bytes::from(canonical),
            endpoint: 0,
            recorded_at_unix_us: 0,
            request,
            exchange: Exchange::Http(response),
        }).unwrap();
        let path = writer.finish().unwrap();
        let file = std::fs::read(path).unwrap();
        prop_assert!(contains(&file, b"REDACTED"));
        for secret in &secrets {
            prop_assert!(!contains(&file, secret), "secret {:?} is in the file", secret);
        }
    }
}
