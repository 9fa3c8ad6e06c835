//! JSON nested a million levels deep: the redactor and the canonical form
//! walk it without recursion, and the real binary, in record and replay,
//! stays up and keeps the secret in it off the disk, whether the deep body
//! is a request's or an upstream's answer.
//!
//! The servers and upstreams here are shared with `decoding.rs`.

use crate::support::client::send;
use crate::support::config;
use crate::support::files::{assert_nowhere_under, recorded};
use crate::support::ouli::Ouli;
use crate::support::upstream::respond as upstream;
use bytes::Bytes;
use ouli::fingerprint::{JSON_DEPTH_MAX, MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, RecordedResponse};
use ouli::redact::{DEFAULT_SENSITIVE_JSON_KEYS, RedactionRules, Redactor};

/// Deep enough that any recursion over it overflows a thread's stack (the
/// unbounded walks did at some 9,300 levels).
const DEPTH: usize = 1_000_000;

const SECRET: &str = "hunter2-deep";

/// `DEPTH` levels of `open` around `{"password":"hunter2-deep"}`.
fn deep(open: &str, close: &str) -> String {
    let inner = format!(r#"{{"password":"{SECRET}"}}"#);
    let mut text = String::with_capacity(DEPTH * (open.len() + close.len()) + inner.len());
    text.extend(std::iter::repeat_n(open, DEPTH));
    text.push_str(&inner);
    text.extend(std::iter::repeat_n(close, DEPTH));
    text
}

/// The two shapes: arrays, and objects (`{"a":` … `}`).
fn deep_bodies() -> [(&'static str, String); 2] {
    [
        ("arrays", deep("[", "]")),
        ("objects", deep(r#"{"a":"#, "}")),
    ]
}

fn redactor() -> Redactor {
    Redactor::new(&RedactionRules {
        sensitive_json_keys: DEFAULT_SENSITIVE_JSON_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect(),
        ..RedactionRules::default()
    })
    .unwrap()
}

#[test]
fn a_sensitive_key_a_million_levels_deep_is_redacted() {
    let r = redactor();
    for (shape, body) in deep_bodies() {
        let out = r.redact_body(body.as_bytes());
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            body.replace(SECRET, "REDACTED"),
            "{shape}"
        );
    }
    // With whitespace, and the key's value itself a million levels deep:
    // replaced whole, not walked into.
    let spaced = format!(
        "{} {{ \"password\" : {}1{} , \"b\" : 2 }} {}",
        "[ ".repeat(DEPTH),
        "[".repeat(DEPTH),
        "]".repeat(DEPTH),
        " ]".repeat(DEPTH)
    );
    let out = r.redact_body(spaced.as_bytes());
    let expected = format!(
        r#"{}{{"password":"REDACTED","b":2}}{}"#,
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    assert!(out.as_ref() == expected.as_bytes(), "spaced, deep value");
}

#[test]
fn a_deep_response_in_chunks_is_redacted() {
    let r = redactor();
    let body = deep("[", "]");
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    let mut response = RecordedResponse {
        status: 200,
        headers: vec![(
            Bytes::from_static(b"content-length"),
            Bytes::from(body.len().to_string()),
        )],
        chunks: vec![
            BodyChunk {
                offset_us: 5,
                data: Bytes::copy_from_slice(a),
            },
            BodyChunk {
                offset_us: 9,
                data: Bytes::copy_from_slice(b),
            },
        ],
        original_encoding: Bytes::new(),
        ..Default::default()
    };
    r.redact_response(&mut response);
    let expected = body.replace(SECRET, "REDACTED");
    assert_eq!(response.chunks.len(), 1);
    assert!(response.chunks[0].data == expected.as_bytes());
    assert_eq!(response.headers[0].1, expected.len().to_string());
}

/// Invalid deep JSON is not JSON: left as it is (the secret search still
/// runs on it), and nothing overflows finding that out.
#[test]
fn deep_invalid_json_is_left_alone() {
    let r = redactor();
    let mut body = deep("[", "]");
    body.pop();
    assert!(matches!(
        r.redact_body(body.as_bytes()),
        std::borrow::Cow::Borrowed(_)
    ));
}

fn canonical(matcher: &Matcher, body: &[u8]) -> Vec<u8> {
    let target = Target {
        scheme: "http".into(),
        host: "api.example.test".into(),
        port: 80,
    };
    let headers = http::HeaderMap::new();
    let mut out = Vec::new();
    matcher.canonical_form(
        &target,
        &RequestParts {
            method: b"POST",
            path_and_query: b"/deep",
            headers: &headers,
            body,
        },
        &mut out,
    );
    out
}

/// Nesting up to `JSON_DEPTH_MAX` is canonical JSON; deeper is a raw body,
/// the same bytes each time (the fingerprint is deterministic).
#[test]
fn the_canonical_form_reads_json_up_to_its_depth_limit_and_deeper_as_raw() {
    let matcher = Matcher::new(&MatchRules::default());
    let nested = |depth: usize| format!("{} 1 {}", "[".repeat(depth), "]".repeat(depth));
    let at_limit = canonical(&matcher, nested(JSON_DEPTH_MAX).as_bytes());
    let compact = format!(
        "{}1{}",
        "[".repeat(JSON_DEPTH_MAX),
        "]".repeat(JSON_DEPTH_MAX)
    );
    let line = format!("body json {}\n", compact.len());
    assert!(
        at_limit.ends_with(format!("{line}{compact}").as_bytes()),
        "at the limit: json"
    );
    let over = nested(JSON_DEPTH_MAX + 1);
    let over_limit = canonical(&matcher, over.as_bytes());
    let line = format!("body raw {}\n", over.len());
    assert!(
        over_limit.ends_with(format!("{line}{over}").as_bytes()),
        "past the limit: raw"
    );
    for (shape, body) in deep_bodies() {
        let first = canonical(&matcher, body.as_bytes());
        assert_eq!(first, canonical(&matcher, body.as_bytes()), "{shape}");
        assert!(first.ends_with(body.as_bytes()), "{shape}: raw, as written");
    }
}

/// A deep request body, both shapes, recorded (through a real upstream) and
/// then replayed: the process stays up in both modes, the secret is in no
/// file, the stored body is the redacted one, and replay finds it (the
/// fingerprint of a deep body is the same from one run to the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_request_body_is_recorded_redacted_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let port = upstream(|path, body| {
        let answer = format!("answer {path} {} bytes", body.len());
        (200, vec![], answer.into_bytes())
    })
    .await;
    let yaml = config(port, "");
    let mut server = Ouli::start("record", dir.path(), &yaml);
    let mut answers = Vec::new();
    for (shape, body) in deep_bodies() {
        let path = format!("/deep/{shape}");
        let json = [("content-type", "application/json")];
        let (status, _, answer) = send(&server.addr, "POST", &path, &json, body.into()).await;
        assert_eq!(status, 200, "{shape}");
        server.assert_serving().await;
        answers.push(answer);
    }
    assert!(server.stop().status.success(), "record exits 0");
    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 2);
    for ((shape, body), interaction) in deep_bodies().iter().zip(&interactions) {
        assert!(
            interaction.request.body == body.replace(SECRET, "REDACTED").as_bytes(),
            "{shape}: stored redacted"
        );
    }

    let mut server = Ouli::start("replay", dir.path(), &yaml);
    for ((shape, body), recorded) in deep_bodies().into_iter().zip(answers) {
        let path = format!("/deep/{shape}");
        let json = [("content-type", "application/json")];
        let (status, _, answer) = send(&server.addr, "POST", &path, &json, body.into()).await;
        assert_eq!((status, answer), (200, recorded), "{shape}: replayed");
        server.assert_serving().await;
    }
    // A miss with a deep body (one level less) is answered too.
    let mut other = deep("[", "]");
    other.replace_range(0..1, " ");
    other.pop();
    let (status, _, answer) = send(&server.addr, "POST", "/deep/arrays", &[], other.into()).await;
    assert_ne!(status, 200);
    assert!(memchr::memmem::find(&answer, SECRET.as_bytes()).is_none());
    server.assert_serving().await;
    assert!(server.stop().status.success(), "replay exits 0");
    assert_nowhere_under(&recordings, SECRET.as_bytes());
}

/// An upstream answering with a deep JSON body: the client gets it whole,
/// the process stays up after the record is appended, and the stored
/// answer is redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_upstream_answer_is_recorded_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let port = upstream(|path, _| {
        let body = match path {
            "/deep/arrays" => deep("[", "]"),
            _ => deep(r#"{"a":"#, "}"),
        };
        let json = vec![("content-type", "application/json".to_owned())];
        (200, json, body.into_bytes())
    })
    .await;
    let mut server = Ouli::start("record", dir.path(), &config(port, ""));
    for (shape, body) in deep_bodies() {
        let path = format!("/deep/{shape}");
        let (status, _, answer) = send(&server.addr, "GET", &path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{shape}");
        assert!(answer == body.as_bytes(), "{shape}: the true answer");
        server.assert_serving().await;
    }
    assert!(server.stop().status.success(), "record exits 0");
    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 2);
    for ((shape, body), interaction) in deep_bodies().iter().zip(&interactions) {
        let Exchange::Http(response) = &interaction.exchange else {
            panic!("{shape}: not HTTP");
        };
        let stored: Vec<u8> = response
            .chunks
            .iter()
            .flat_map(|c| c.data.to_vec())
            .collect();
        assert!(
            stored == body.replace(SECRET, "REDACTED").as_bytes(),
            "{shape}: stored redacted"
        );
    }
}
