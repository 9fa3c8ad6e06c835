//! Two request-identity rules (rfcs/0002): a header the request's
//! `Connection` names is hop-by-hop and takes no part in the canonical form,
//! and `Content-Type` parameters that do not change the body's meaning
//! (`charset` for JSON, `charset=utf-8` for a form) do not either; the media
//! type is compared without case or spacing. At the library, then through
//! the real binary: a recording made without them replays to a request with
//! them.

use crate::support::client::send;
use crate::support::config;
use crate::support::ouli::Ouli;
use crate::support::upstream::respond as upstream;
use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};

fn canonical_with(rules: &MatchRules, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let target = Target {
        scheme: "https".into(),
        host: "api.example.com".into(),
        port: 443,
    };
    let request = RequestParts {
        method: b"POST",
        path_and_query: b"/v1/items",
        headers: &map,
        body,
    };
    let mut out = Vec::new();
    Matcher::new(rules).canonical_form(&target, &request, &mut out);
    String::from_utf8(out).unwrap()
}

fn canonical(headers: &[(&str, &str)], body: &[u8]) -> String {
    canonical_with(&MatchRules::default(), headers, body)
}

/// What `curl --http2` adds to an `http://` request.
const H2C: [(&str, &str); 3] = [
    ("connection", "Upgrade, HTTP2-Settings"),
    ("upgrade", "h2c"),
    ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
];

#[test]
fn a_header_named_by_connection_takes_no_part() {
    let plain = canonical(&[("x-tenant", "a")], b"");
    let mut with = vec![("x-tenant", "a")];
    with.extend(H2C);
    assert_eq!(canonical(&with, b""), plain);
    // Any spelling of the list, several `Connection` headers.
    let listed = [
        ("connection", "keep-alive"),
        ("Connection", " x-hop ,http2-settings"),
        ("x-hop", "1"),
        ("HTTP2-Settings", "AAMA"),
        ("x-tenant", "a"),
    ];
    assert_eq!(canonical(&listed, b""), plain);
    // Not named by `Connection`, it takes part as before.
    let unlisted = canonical(&[("x-tenant", "a"), ("http2-settings", "AAMA")], b"");
    assert!(
        unlisted.contains("header http2-settings: AAMA\n"),
        "{unlisted}"
    );
    // `include_headers` brings it back, as it does for the fixed list.
    let rules = MatchRules {
        include_headers: vec!["HTTP2-Settings".into()],
        ..MatchRules::default()
    };
    let included = canonical_with(&rules, &with, b"");
    assert!(
        included.contains("header http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\n"),
        "{included}"
    );
}

#[test]
fn content_type_parameters_without_meaning_take_no_part() {
    let json = br#"{"a":1}"#;
    let same = |a: &str, b: &str, body: &[u8]| {
        assert_eq!(
            canonical(&[("content-type", a)], body),
            canonical(&[("content-type", b)], body),
            "{a:?} and {b:?} match"
        );
    };
    same("application/json", "application/json; charset=utf-8", json);
    same(
        "application/json",
        "Application/JSON ;Charset=\"UTF-8\"",
        json,
    );
    same(
        "application/json",
        "application/json; charset=iso-8859-1",
        json,
    );
    same("application/json", "application/json;", json);
    same(
        "application/vnd.api+json",
        "application/vnd.api+json; charset=utf-8",
        json,
    );
    same(
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"a=1",
    );
    same(
        "text/plain; charset=utf-8",
        "TEXT/plain;charset=\"UTF-8\"",
        b"hi",
    );
    same(
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data;BOUNDARY=XyZ",
        b"--XyZ--",
    );

    let differ = |a: &str, b: &str, body: &[u8]| {
        assert_ne!(
            canonical(&[("content-type", a)], body),
            canonical(&[("content-type", b)], body),
            "{a:?} and {b:?} do not match"
        );
    };
    // text/plain is US-ASCII without the parameter (RFC 2046 §4.1.2).
    differ("text/plain", "text/plain; charset=utf-8", b"hi");
    differ(
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=iso-8859-1",
        b"a=1",
    );
    // The boundary is how the body splits; its value is case-sensitive.
    differ(
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data; boundary=xyz",
        b"--XyZ--",
    );
    differ("application/json", "application/json; profile=x", json);
}

/// The bytes of a request without these cases are what they were:
/// recordings are found by the SHA-256 of these bytes.
#[test]
fn a_plain_content_type_keeps_its_canonical_bytes() {
    for value in [
        "application/json",
        "multipart/form-data; boundary=----abc",
        "text/plain; charset=utf-8",
        "not a media type;;Charset=UTF-8",
    ] {
        let form = canonical(&[("content-type", value)], b"x");
        assert!(
            form.contains(&format!("\nheader content-type: {value}\n")),
            "{form}"
        );
    }
}

/// Recorded with `application/json` and no `HTTP2-Settings`, replayed to
/// `application/json; charset=utf-8` with the headers `curl --http2` adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_to_a_charset_and_connection_named_headers() {
    let dir = tempfile::tempdir().unwrap();
    let port =
        upstream(|path, body| (200, vec![], format!("{path} {}", body.len()).into_bytes())).await;
    let yaml = config(port, "");
    let body = br#"{"prompt":"hi","n":1}"#.to_vec();
    let server = Ouli::start("record", dir.path(), &yaml);
    let json = [("content-type", "application/json")];
    let (status, _, answer) = send(&server.addr, "POST", "/v1/generate", &json, body.clone()).await;
    assert_eq!(status, 200);
    assert!(server.stop().status.success(), "record exits 0");

    let server = Ouli::start("replay", dir.path(), &yaml);
    let mut headers = vec![("content-type", "application/json; charset=utf-8")];
    headers.extend(H2C);
    let reordered = br#"{ "n": 1, "prompt": "hi" }"#.to_vec();
    let (status, replayed_headers, replayed) =
        send(&server.addr, "POST", "/v1/generate", &headers, reordered).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&replayed)),
        (200, String::from_utf8_lossy(&answer)),
        "{replayed_headers:?}"
    );
    assert!(server.stop().status.success(), "replay exits 0");
}
