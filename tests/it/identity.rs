//! Request identity (rfcs/0002): canonical form and fingerprint, matching
//! rules, chains, redaction and body decoding, through the public API.

use std::io::Write;

use bytes::Bytes;
use ouli::chain::{ChainMode, ChainState, steps_for};
use ouli::decode::{DecodeError, decode_body};
use ouli::fingerprint::{
    CANONICAL_VERSION, CanonicalRequest, MatchRules, Matcher, RequestParts, Target,
    VOLATILE_HEADER_PREFIXES, VOLATILE_HEADERS, canonical_and_fingerprint, canonical_hash,
    fingerprint,
};
use ouli::interaction::{
    BodyChunk, Fingerprint, RecordedRequest, RecordedResponse, WsDirection, WsFrame,
};
use ouli::redact::{
    DEFAULT_SENSITIVE_JSON_KEYS, HeaderReplacement, REDACTED, RedactError, RedactionRules,
    Redactor, secrets_from,
};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

/// A request as a test writes it.
#[derive(Clone, Debug)]
struct Req<'a> {
    method: &'a str,
    target: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

fn req(method: &'static str, target: &'static str) -> Req<'static> {
    Req {
        method,
        target,
        headers: Vec::new(),
        body: b"",
    }
}

impl<'a> Req<'a> {
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }
    fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }
}

fn api() -> Target {
    Target {
        scheme: "https".into(),
        host: "api.example.com".into(),
        port: 443,
    }
}

fn header_map(headers: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn canonical_with(matcher: &Matcher, target: &Target, r: &Req<'_>) -> Vec<u8> {
    let headers = header_map(&r.headers);
    let mut out = Vec::new();
    matcher.canonical_form(
        target,
        &RequestParts {
            method: r.method.as_bytes(),
            path_and_query: r.target.as_bytes(),
            headers: &headers,
            body: r.body,
        },
        &mut out,
    );
    out
}

fn canonical(r: &Req<'_>) -> Vec<u8> {
    canonical_with(&Matcher::new(&MatchRules::default()), &api(), r)
}

fn text(canonical: &[u8]) -> String {
    String::from_utf8_lossy(canonical).into_owned()
}

/// Asserts that two requests share a canonical form (and so a fingerprint).
#[track_caller]
fn assert_same(a: &Req<'_>, b: &Req<'_>) {
    let (ca, cb) = (canonical(a), canonical(b));
    assert_eq!(text(&ca), text(&cb), "\n{a:?}\n{b:?}");
}

/// Asserts that two requests never share a fingerprint.
#[track_caller]
fn assert_differ(a: &Req<'_>, b: &Req<'_>) {
    let (ca, cb) = (canonical(a), canonical(b));
    assert_ne!(text(&ca), text(&cb), "\n{a:?}\n{b:?}");
    assert_ne!(
        fingerprint(&ca, &Fingerprint::CHAIN_HEAD),
        fingerprint(&cb, &Fingerprint::CHAIN_HEAD)
    );
}

// ------------------------------------------------- matching: same request

#[test]
fn a_new_user_agent_and_other_volatile_headers_still_match() {
    let old = req("GET", "/v1/items")
        .header("User-Agent", "client/1.0")
        .header("X-Request-Id", "1111")
        .header("traceparent", "00-aaaa-01")
        .header("Date", "Mon, 23 Nov 2026 09:00:00 GMT")
        .header("Authorization", "Bearer real-token")
        .header("Accept-Encoding", "gzip")
        .header("X-Stainless-Retry-Count", "0");
    let new = req("GET", "/v1/items")
        .header("user-agent", "client/2.0 (rust)")
        .header("x-request-id", "2222")
        .header("x-b3-traceid", "abc")
        .header("authorization", "Bearer dummy")
        .header("Accept-Encoding", "br, zstd")
        .header("X-Ouli-Test-Name", "t")
        .header("Expect", "100-continue")
        .header("X-Forwarded-For", "10.0.0.1");
    assert_same(&old, &new);
}

#[test]
fn header_order_and_name_case_do_not_matter() {
    let a = req("GET", "/")
        .header("Accept", "application/json")
        .header("X-Custom", "  one  ")
        .header("Content-Type", "text/plain");
    let b = req("GET", "/")
        .header("content-type", "text/plain")
        .header("x-custom", "one")
        .header("ACCEPT", "application/json");
    assert_same(&a, &b);
}

#[test]
fn json_key_order_and_spacing_do_not_matter() {
    let a = req("POST", "/v1/chat")
        .header("content-type", "application/json")
        .body(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1}"#);
    let b = req("POST", "/v1/chat")
        .header("Content-Type", "application/json")
        .body(b"{\n  \"n\" : 1,\n  \"messages\": [ {\"content\": \"hi\", \"role\": \"user\"} ],\n  \"model\": \"m\"\n}\n");
    assert_same(&a, &b);
    // Escapes that spell the same string are the same string.
    let c = req("POST", "/v1/chat")
        .header("content-type", "application/json")
        .body(br#"{"model":"\u006d","messages":[{"role":"user","content":"hi"}],"n":1}"#);
    assert_same(&a, &c);
}

#[test]
fn query_order_plus_and_percent_encoding_case_do_not_matter() {
    assert_same(&req("GET", "/s?a=1&b=2"), &req("GET", "/s?b=2&a=1"));
    assert_same(&req("GET", "/s?q=a+b"), &req("GET", "/s?q=a%20b"));
    assert_same(&req("GET", "/s?q=%2f%7e"), &req("GET", "/s?q=%2F~"));
    assert_same(&req("GET", "/s?a=1&&b=2&"), &req("GET", "/s?b=2&a=1"));
}

#[test]
fn path_escapes_and_dot_segments_are_normalized() {
    assert_same(&req("GET", "/a/%7euser"), &req("GET", "/a/~user"));
    assert_same(&req("GET", "/a/%3a"), &req("GET", "/a/%3A"));
    assert_same(&req("GET", "/a/b/../c/./d"), &req("GET", "/a/c/d"));
    assert_same(&req("GET", "/a/%2E%2E/b"), &req("GET", "/b"));
    assert_same(&req("GET", "/a/b/.."), &req("GET", "/a/"));
    assert_same(&req("GET", "/../../x"), &req("GET", "/x"));
    assert_same(&req("GET", ""), &req("GET", "/"));
    // A byte a path may not hold raw is the byte its escape is.
    assert_same(&req("GET", "/a/{id}"), &req("GET", "/a/%7Bid%7D"));
    assert_same(&req("GET", "/100%"), &req("GET", "/100%25"));
}

// ------------------------------------------- matching: different requests

#[test]
fn what_a_server_may_treat_differently_does_not_match() {
    let base = req("GET", "/v1/items?a=1&a=2&b=x").header("accept", "application/json");
    assert_differ(
        &base,
        &req("GET", "/v1/item?a=1&a=2&b=x").header("accept", "application/json"),
    );
    assert_differ(
        &base,
        &req("GET", "/v1/items?a=1&a=2&b=y").header("accept", "application/json"),
    );
    // Repeated keys keep their order: a=1&a=2 is not a=2&a=1.
    assert_differ(
        &base,
        &req("GET", "/v1/items?a=2&a=1&b=x").header("accept", "application/json"),
    );
    assert_differ(
        &base,
        &req("DELETE", "/v1/items?a=1&a=2&b=x").header("accept", "application/json"),
    );
    // Methods are case-sensitive.
    assert_differ(
        &base,
        &req("get", "/v1/items?a=1&a=2&b=x").header("accept", "application/json"),
    );
    // An extra header that is not volatile.
    assert_differ(
        &base,
        &req("GET", "/v1/items?a=1&a=2&b=x")
            .header("accept", "application/json")
            .header("x-tenant", "blue"),
    );
    assert_differ(
        &base,
        &req("GET", "/v1/items?a=1&a=2&b=x").header("accept", "text/html"),
    );
    // Path escapes of reserved characters stay escapes: a%2Fb is one segment.
    assert_differ(&req("GET", "/a%2Fb"), &req("GET", "/a/b"));
    assert_differ(&req("GET", "/a/b/"), &req("GET", "/a/b"));
    // `+` is a space in a query, a plus in a path.
    assert_differ(&req("GET", "/a+b"), &req("GET", "/a%20b"));
    assert_differ(&req("GET", "/s?q=a%2Bb"), &req("GET", "/s?q=a+b"));
}

#[test]
fn another_json_value_does_not_match() {
    let json = |body: &'static [u8]| {
        req("POST", "/v1/x")
            .header("content-type", "application/json")
            .body(body)
    };
    assert_differ(
        &json(br#"{"a":1,"b":[1,2]}"#),
        &json(br#"{"a":2,"b":[1,2]}"#),
    );
    assert_differ(
        &json(br#"{"a":1,"b":[1,2]}"#),
        &json(br#"{"a":1,"b":[2,1]}"#),
    );
    assert_differ(&json(br#"{"a":"1"}"#), &json(br#"{"a":1}"#));
    assert_differ(&json(br#"{"a":1}"#), &json(br#"{"a":1.0}"#));
    // Past 2^64 and past f64 precision numbers stay distinct (kept as written).
    assert_differ(
        &json(br#"{"id":123456789012345678901234567890}"#),
        &json(br#"{"id":123456789012345678901234567891}"#),
    );
    assert_differ(
        &json(br#"{"x":0.1000000000000000000001}"#),
        &json(br#"{"x":0.1}"#),
    );
    // Without a content-type a body that looks like JSON is JSON.
    assert_same(
        &req("POST", "/v1/x").body(b"\n { \"b\": 1, \"a\": 2 }\n"),
        &req("POST", "/v1/x").body(br#"{"a":2,"b":1}"#),
    );
    // Duplicate keys are all kept.
    assert_differ(&json(br#"{"a":1,"a":2}"#), &json(br#"{"a":2}"#));
    // A JSON body and the same text declared as something else.
    assert_differ(
        &json(br#"{"a":1}"#),
        &req("POST", "/v1/x")
            .header("content-type", "text/plain")
            .body(br#"{"a":1}"#),
    );
}

#[test]
fn another_target_does_not_match() {
    let r = req("GET", "/");
    let matcher = Matcher::new(&MatchRules::default());
    let base = canonical_with(&matcher, &api(), &r);
    for other in [
        Target {
            scheme: "http".into(),
            ..api()
        },
        Target {
            host: "api2.example.com".into(),
            ..api()
        },
        Target {
            port: 8443,
            ..api()
        },
    ] {
        assert_ne!(canonical_with(&matcher, &other, &r), base, "{other:?}");
    }
    // Host names are case-insensitive.
    let upper = Target {
        host: "API.Example.COM".into(),
        ..api()
    };
    assert_eq!(canonical_with(&matcher, &upper, &r), base);
}

#[test]
fn form_bodies_match_by_sorted_pairs() {
    let form = |body: &'static [u8]| {
        req("POST", "/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    assert_same(&form(b"b=2&a=x+y"), &form(b"a=x%20y&b=2"));
    assert_differ(&form(b"a=1&a=2"), &form(b"a=2&a=1"));
    assert_differ(&form(b"a=1"), &form(b"a=2"));
}

#[test]
fn every_volatile_header_is_lower_case_and_left_out() {
    for name in VOLATILE_HEADERS {
        assert_eq!(*name, name.to_ascii_lowercase());
        let with = req("GET", "/").header(name, "v");
        assert_same(&with, &req("GET", "/"));
    }
    for prefix in VOLATILE_HEADER_PREFIXES {
        let name = format!("{prefix}anything");
        let headers = header_map(&[(name.as_str(), "v")]);
        let mut out = Vec::new();
        Matcher::new(&MatchRules::default()).canonical_form(
            &api(),
            &RequestParts {
                method: b"GET",
                path_and_query: b"/",
                headers: &headers,
                body: b"",
            },
            &mut out,
        );
        assert_eq!(out, canonical(&req("GET", "/")), "{name}");
    }
}

// ------------------------------------------------- matching configuration

#[test]
fn include_headers_makes_a_volatile_header_matter() {
    let matcher = Matcher::new(&MatchRules {
        include_headers: vec!["User-Agent".into()],
        ..MatchRules::default()
    });
    let a = canonical_with(
        &matcher,
        &api(),
        &req("GET", "/").header("user-agent", "a/1"),
    );
    let b = canonical_with(
        &matcher,
        &api(),
        &req("GET", "/").header("user-agent", "a/2"),
    );
    assert_ne!(a, b);
    assert!(
        text(&a).contains("header user-agent: a/1\n"),
        "{}",
        text(&a)
    );
    assert!(matcher.header_matches("user-agent"));
}

#[test]
fn ignore_headers_leaves_a_header_out() {
    let matcher = Matcher::new(&MatchRules {
        ignore_headers: vec!["X-Run".into()],
        ..MatchRules::default()
    });
    let a = canonical_with(
        &matcher,
        &api(),
        &req("GET", "/").header("x-run", "1").header("x-keep", "k"),
    );
    let b = canonical_with(
        &matcher,
        &api(),
        &req("GET", "/").header("X-Run", "2").header("x-keep", "k"),
    );
    assert_eq!(a, b);
    assert!(!matcher.header_matches("x-run"));
    // Ignoring wins over including.
    let both = Matcher::new(&MatchRules {
        include_headers: vec!["x-run".into()],
        ignore_headers: vec!["x-run".into()],
        ..MatchRules::default()
    });
    assert!(!both.header_matches("x-run"));
}

#[test]
fn ignore_query_params_leaves_parameters_out() {
    let matcher = Matcher::new(&MatchRules {
        ignore_query_params: vec!["ts".into(), "cache buster".into()],
        ..MatchRules::default()
    });
    let a = canonical_with(
        &matcher,
        &api(),
        &req("GET", "/s?q=1&ts=100&cache+buster=x"),
    );
    let b = canonical_with(&matcher, &api(), &req("GET", "/s?ts=200&q=1"));
    assert_eq!(text(&a), text(&b));
    let c = canonical_with(&matcher, &api(), &req("GET", "/s?q=2&ts=100"));
    assert_ne!(a, c);
}

#[test]
fn ignore_json_paths_nested_indexed_and_wildcard() {
    let matcher = Matcher::new(&MatchRules {
        ignore_json_paths: vec![
            "$.meta.request_id".into(),
            "items[1].id".into(),
            "$.events[*].at".into(),
            "$[\"odd.key\"]".into(),
        ],
        ..MatchRules::default()
    });
    let json = |body: &'static [u8]| {
        req("POST", "/x")
            .header("content-type", "application/json")
            .body(body)
    };
    let a = canonical_with(
        &matcher,
        &api(),
        &json(br#"{"meta":{"request_id":"r1","v":1},"items":[{"id":1},{"id":2}],"events":[{"at":1,"k":"a"},{"at":2,"k":"b"}],"odd.key":1}"#),
    );
    let b = canonical_with(
        &matcher,
        &api(),
        &json(br#"{"meta":{"request_id":"r2","v":1},"items":[{"id":1},{"id":99}],"events":[{"at":7,"k":"a"},{"at":8,"k":"b"}],"odd.key":2}"#),
    );
    assert_eq!(text(&a), text(&b));
    // What the paths do not name still counts.
    for other in [
        &br#"{"meta":{"request_id":"r1","v":2},"items":[{"id":1},{"id":2}],"events":[{"at":1,"k":"a"},{"at":2,"k":"b"}],"odd.key":1}"#[..],
        br#"{"meta":{"request_id":"r1","v":1},"items":[{"id":0},{"id":2}],"events":[{"at":1,"k":"a"},{"at":2,"k":"b"}],"odd.key":1}"#,
        br#"{"meta":{"request_id":"r1","v":1},"items":[{"id":1},{"id":2}],"events":[{"at":1,"k":"z"},{"at":2,"k":"b"}],"odd.key":1}"#,
    ] {
        let c = canonical_with(&matcher, &api(), &json(other));
        assert_ne!(text(&a), text(&c), "{}", String::from_utf8_lossy(other));
    }
}

// ------------------------------------------------------- canonical bytes

#[test]
fn canonical_form_bytes_of_a_small_request() {
    let r = req("POST", "/v1/items/../things?b=2&a=x+y")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header("User-Agent", "demo/1.0")
        .body(br#"{"name": "widget", "count": 2}"#);
    let c = canonical(&r);
    let expected = "ouli-canonical/1\n\
                    target https://api.example.com:443\n\
                    method POST\n\
                    path /v1/things\n\
                    query a=x%20y\n\
                    query b=2\n\
                    header accept: application/json\n\
                    header content-type: application/json\n\
                    body json 27\n\
                    {\"count\":2,\"name\":\"widget\"}";
    assert_eq!(text(&c), expected);
    let parsed = CanonicalRequest::parse(&c).unwrap();
    assert_eq!(parsed.target, "https://api.example.com:443");
    assert_eq!(parsed.method, "POST");
    assert_eq!(parsed.path, "/v1/things");
    assert_eq!(
        parsed.query,
        vec![("a".into(), "x%20y".into()), ("b".into(), "2".into())]
    );
    assert_eq!(parsed.body_kind, "json");
    assert_eq!(parsed.body, br#"{"count":2,"name":"widget"}"#);
    // The hashes are SHA-256 over the canonical bytes, then those and the link.
    let (hash, fp) = canonical_and_fingerprint(&c, &Fingerprint::CHAIN_HEAD);
    assert_eq!(hash, canonical_hash(&c));
    assert_eq!(fp, fingerprint(&c, &Fingerprint::CHAIN_HEAD));
    assert_ne!(fp, fingerprint(&c, &Fingerprint([1; 32])));
    // The worked example of rfcs/0002: a second implementation must get
    // these bytes and hashes.
    assert_eq!(c.len(), 214);
    assert_eq!(
        hex::encode(hash),
        "2c9c782eeee5f5dd7cce7a97a067e8015421f3fa1d061ba964ae59f306c80c6d"
    );
    assert_eq!(
        fp.to_hex(),
        "db0fa7dea25325976e98ddaf4154873940c9a9ea330d5e993f901707934ca67b"
    );
    let mut chain = ChainState::new(ChainMode::Request);
    let first = chain.peek(&c);
    chain.commit(&first);
    assert_eq!(first.fingerprint, fp);
    assert_eq!(
        chain.peek(&c).fingerprint.to_hex(),
        "cfb319f4c07ff8b0e5bee32d02d4347385ea555b1113975952dbab8f1b257cb8"
    );
}

#[test]
fn parse_refuses_what_is_not_a_canonical_form() {
    let c = canonical(&req("POST", "/").body(b"raw bytes"));
    assert!(CanonicalRequest::parse(&c).is_some());
    assert!(
        CanonicalRequest::parse(&c[..c.len() - 1]).is_none(),
        "short body"
    );
    assert!(
        CanonicalRequest::parse(&c[CANONICAL_VERSION.len()..]).is_none(),
        "no version"
    );
    let mut longer = c.clone();
    longer.push(b'!');
    assert!(CanonicalRequest::parse(&longer).is_none(), "long body");
}

// ------------------------------------------------------------- proptests

/// A JSON document as a test builds it: object keys distinct.
#[derive(Clone, Debug)]
enum Doc {
    Leaf(String),
    Array(Vec<Doc>),
    Object(Vec<(String, Doc)>),
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 é\"\\\\/]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("12345678901234567890123.5e-3".to_string()),
    ]
    .prop_map(Doc::Leaf);
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Doc::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..5)
                .prop_map(|m| Doc::Object(m.into_iter().collect())),
        ]
    })
}

/// Writes `doc`; `spaced` adds whitespace, `reversed` reverses every
/// object's keys.
fn write_doc(doc: &Doc, spaced: bool, reversed: bool, out: &mut String) {
    let gap = if spaced { " \n\t" } else { "" };
    match doc {
        Doc::Leaf(text) => out.push_str(text),
        Doc::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(gap);
                }
                write_doc(item, spaced, reversed, out);
            }
            out.push_str(gap);
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            out.push_str(gap);
            let mut order: Vec<&(String, Doc)> = members.iter().collect();
            if reversed {
                order.reverse();
            }
            for (i, (key, value)) in order.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(gap);
                out.push_str(&serde_json::to_string(key).unwrap());
                out.push_str(gap);
                out.push(':');
                out.push_str(gap);
                write_doc(value, spaced, reversed, out);
            }
            out.push('}');
        }
    }
}

fn header_name() -> impl Strategy<Value = String> {
    "x-[a-z]{1,8}"
}

fn flip_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn canonical_form_ignores_header_order_and_case(
        headers in prop::collection::btree_map(header_name(), "[ -~]{0,12}", 0..8),
        seed in any::<u64>(),
    ) {
        let pairs: Vec<(String, String)> = headers.into_iter().collect();
        let mut shuffled: Vec<(String, String)> =
            pairs.iter().map(|(n, v)| (flip_case(n, seed), v.clone())).collect();
        // A permutation derived from the seed.
        let len = shuffled.len().max(1);
        shuffled.rotate_left(seed as usize % len);
        if seed & 1 == 1 {
            shuffled.reverse();
        }
        let a: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let b: Vec<(&str, &str)> = shuffled.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let ra = Req { method: "GET", target: "/", headers: a, body: b"" };
        let rb = Req { method: "GET", target: "/", headers: b, body: b"" };
        prop_assert_eq!(canonical(&ra), canonical(&rb));
    }

    #[test]
    fn canonical_form_ignores_json_key_order_and_whitespace(doc in doc()) {
        let (mut compact, mut spaced) = (String::new(), String::new());
        write_doc(&doc, false, false, &mut compact);
        write_doc(&doc, true, true, &mut spaced);
        let json = |body: &[u8]| canonical(&Req {
            method: "POST",
            target: "/",
            headers: vec![("content-type", "application/json")],
            body,
        });
        let a = json(compact.as_bytes());
        prop_assert_eq!(text(&a), text(&json(spaced.as_bytes())));
        prop_assert_eq!(CanonicalRequest::parse(&a).unwrap().body_kind, "json");
    }

    #[test]
    fn parse_round_trips_the_canonical_form(
        method in "[A-Z]{1,7}",
        segments in prop::collection::vec("[a-zA-Z0-9._~%!$&'()*+,;=:@ -]{0,6}", 0..4),
        query in prop::collection::vec(("[a-z+%0-9]{0,4}", "[ -~]{0,6}"), 0..4),
        headers in prop::collection::vec((header_name(), "[!-~]([ -~]{0,8}[!-~])?"), 0..4),
        body in prop::collection::vec(any::<u8>(), 0..24),
        port in any::<u16>(),
    ) {
        let query: String = query
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(['&', '#'], "%26")))
            .collect::<Vec<_>>()
            .join("&");
        let target = format!("/{}?{query}", segments.join("/"));
        let header_refs: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let target_endpoint = Target { port, ..api() };
        let r = Req { method: &method, target: &target, headers: header_refs, body: &body };
        let c = canonical_with(&Matcher::new(&MatchRules::default()), &target_endpoint, &r);
        let parsed = CanonicalRequest::parse(&c).expect("a canonical form parses");
        prop_assert_eq!(&parsed.method, &method);
        prop_assert_eq!(&parsed.target, &format!("https://api.example.com:{port}"));
        // Headers: the request's, names lower-cased, sorted stably by name.
        let mut expected: Vec<(String, String)> = headers.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(&parsed.headers, &expected);
        // Writing the parsed fields back gives the same bytes.
        let mut again = CANONICAL_VERSION.to_vec();
        again.extend_from_slice(format!("target {}\nmethod {}\npath {}\n", parsed.target, parsed.method, parsed.path).as_bytes());
        for (k, v) in &parsed.query {
            again.extend_from_slice(format!("query {k}={v}\n").as_bytes());
        }
        for (k, v) in &parsed.headers {
            again.extend_from_slice(format!("header {k}: {v}\n").as_bytes());
        }
        again.extend_from_slice(format!("body {} {}\n", parsed.body_kind, parsed.body.len()).as_bytes());
        again.extend_from_slice(&parsed.body);
        prop_assert_eq!(text(&again), text(&c));
        prop_assert_eq!(again, c);
    }

    #[test]
    fn fingerprint_changes_when_any_single_field_changes(
        field in 0usize..FIELDS,
        a in "[a-z0-9]{1,8}",
        b in "[a-z0-9]{1,8}",
    ) {
        prop_assume!(a != b);
        prop_assume!(field != 1 || port_of(&a) != port_of(&b));
        prop_assert_ne!(fingerprint_with(Some(field), &a), fingerprint_with(Some(field), &b));
        // Unchanged fields: the two values make no difference.
        prop_assert_eq!(fingerprint_with(None, &a), fingerprint_with(None, &b));
    }
}

/// Fields of [`fingerprint_with`]: host, port, method, path, query value,
/// header value, JSON body value, chain link.
const FIELDS: usize = 8;

fn port_of(value: &str) -> u16 {
    let hash = canonical_hash(value.as_bytes());
    1 + u16::from_le_bytes([hash[0], hash[1]]) % 60_000
}

/// The fingerprint of a fixed JSON `POST` in which field number `changed`
/// (if any) holds `value`.
fn fingerprint_with(changed: Option<usize>, value: &str) -> Fingerprint {
    let pick = |field: usize, default: &str| {
        if changed == Some(field) {
            value.to_string()
        } else {
            default.to_string()
        }
    };
    let target = Target {
        scheme: "https".into(),
        host: format!("{}.example.com", pick(0, "api")),
        port: if changed == Some(1) {
            port_of(value)
        } else {
            443
        },
    };
    let method = pick(2, "POST").to_ascii_uppercase();
    let path_and_query = format!("/{}?k={}", pick(3, "p"), pick(4, "q"));
    let header_value = pick(5, "h");
    let body = format!("{{\"k\":\"{}\"}}", pick(6, "b")).into_bytes();
    let link = if changed == Some(7) {
        Fingerprint(canonical_hash(value.as_bytes()))
    } else {
        Fingerprint::CHAIN_HEAD
    };
    let request = Req {
        method: &method,
        target: &path_and_query,
        headers: vec![
            ("x-h", header_value.as_str()),
            ("content-type", "application/json"),
        ],
        body: &body,
    };
    let canonical = canonical_with(&Matcher::new(&MatchRules::default()), &target, &request);
    fingerprint(&canonical, &link)
}

// ---------------------------------------------------------------- chains

#[test]
fn request_mode_gives_the_nth_identical_request_the_nth_link() {
    let recorded = ["A", "B", "A", "C", "A", "B"];
    let steps = steps_for(ChainMode::Request, recorded.iter().map(|s| s.as_bytes()));
    let recorded_fps: Vec<(&str, Fingerprint)> = recorded
        .iter()
        .zip(&steps)
        .map(|(r, s)| (*r, s.fingerprint))
        .collect();
    assert_eq!(steps[2].link, steps[0].fingerprint);
    assert_eq!(steps[4].link, steps[2].fingerprint);
    assert_eq!(steps[4].position, 2);
    assert_eq!(steps[5].position, 1);
    // Replayed in another interleaving, each A, B, C finds its own response.
    let mut chain = ChainState::new(ChainMode::Request);
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for name in ["C", "A", "A", "B", "A", "B"] {
        let step = chain.peek(name.as_bytes());
        chain.commit(&step);
        let n = seen.entry(name).or_default();
        let expected = recorded_fps
            .iter()
            .filter(|(r, _)| *r == name)
            .nth(*n)
            .unwrap()
            .1;
        assert_eq!(step.fingerprint, expected, "{name} #{n}");
        assert_eq!(step.position as usize, *n);
        *n += 1;
    }
    // A fourth A was never recorded.
    let fourth = chain.peek(b"A");
    assert!(recorded_fps.iter().all(|(_, fp)| *fp != fourth.fingerprint));
    assert_eq!(fourth.position, 3);
}

#[test]
fn session_mode_links_every_request_to_the_one_before() {
    let steps = steps_for(ChainMode::Session, [&b"A"[..], b"B", b"A"]);
    assert_eq!(steps[0].link, Fingerprint::CHAIN_HEAD);
    assert_eq!(steps[1].link, steps[0].fingerprint);
    assert_eq!(steps[2].link, steps[1].fingerprint);
    assert_eq!(
        steps.iter().map(|s| s.position).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    // Another order is another chain: B first is not the recorded B.
    let other = steps_for(ChainMode::Session, [&b"B"[..], b"A", b"A"]);
    assert_ne!(other[0].fingerprint, steps[1].fingerprint);
    assert_ne!(other[1].fingerprint, steps[0].fingerprint);
    assert_eq!(
        ChainState::new(ChainMode::Session).mode(),
        ChainMode::Session
    );
}

#[test]
fn reset_serves_the_session_again_from_the_head() {
    for mode in [ChainMode::Request, ChainMode::Session] {
        let mut chain = ChainState::new(mode);
        let first: Vec<Fingerprint> = [b"A", b"B", b"A"]
            .iter()
            .map(|c| {
                let step = chain.peek(*c);
                chain.commit(&step);
                step.fingerprint
            })
            .collect();
        chain.reset();
        let again: Vec<Fingerprint> = [b"A", b"B", b"A"]
            .iter()
            .map(|c| {
                let step = chain.peek(*c);
                assert_eq!(chain.peek(*c), step, "peek does not advance");
                chain.commit(&step);
                step.fingerprint
            })
            .collect();
        assert_eq!(first, again, "{mode:?}");
    }
}

// ------------------------------------------------------------- redaction

fn redactor(secrets: &[&str]) -> Redactor {
    Redactor::new(&RedactionRules {
        drop_request_headers: vec!["X-Api-Token".into(), "cookie".into()],
        secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
        sensitive_json_keys: DEFAULT_SENSITIVE_JSON_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect(),
        response_header_replacements: vec![],
    })
    .unwrap()
}

fn pairs(headers: &[(&'static str, &'static str)]) -> Vec<(Bytes, Bytes)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                Bytes::from_static(n.as_bytes()),
                Bytes::from_static(v.as_bytes()),
            )
        })
        .collect()
}

fn chunks(parts: &[&'static str]) -> Vec<BodyChunk> {
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| BodyChunk {
            offset_us: i as u64 * 100,
            data: Bytes::from_static(p.as_bytes()),
        })
        .collect()
}

fn joined(chunks: &[BodyChunk]) -> String {
    chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.data).into_owned())
        .collect()
}

fn header<'a>(headers: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| &v[..])
}

#[test]
fn configured_headers_are_dropped_whatever_their_case() {
    let r = redactor(&[]);
    assert!(r.drops_request_header(b"X-API-TOKEN"));
    assert!(!r.drops_request_header(b"x-api"));
    let mut live = header_map(&[("X-Api-Token", "t"), ("Cookie", "c=1"), ("accept", "*/*")]);
    r.redact_header_map(&mut live);
    assert_eq!(live.len(), 1);
    assert!(live.contains_key("accept"));
    let mut recorded = RecordedRequest {
        method: Bytes::from_static(b"GET"),
        target: Bytes::from_static(b"/"),
        headers: pairs(&[("X-API-TOKEN", "t"), ("COOKIE", "c"), ("Accept", "*/*")]),
        body: Bytes::new(),
        trailers: Vec::new(),
    };
    r.redact_request(&mut recorded);
    assert_eq!(recorded.headers, pairs(&[("Accept", "*/*")]));
}

#[test]
fn secrets_are_replaced_in_every_part_of_a_request() {
    let r = redactor(&["s3cr3t", "hunter 2"]);
    let mut request = RecordedRequest {
        method: Bytes::from_static(b"POST"),
        target: Bytes::from_static(b"/v1/keys/s3cr3t?key=s3cr3t&p=hunter%202&q=hunter+2"),
        headers: pairs(&[
            ("x-key", "Bearer s3cr3t"),
            ("x-other", "s3cr3ts3cr3t and s3cr3"),
            ("content-length", "27"),
        ]),
        body: Bytes::from_static(b"data=s3cr3t&more=hunter%202"),
        trailers: Vec::new(),
    };
    r.redact_request(&mut request);
    assert_eq!(
        &request.target[..],
        b"/v1/keys/REDACTED?key=REDACTED&p=REDACTED&q=REDACTED"
    );
    assert_eq!(
        header(&request.headers, "x-key"),
        Some(&b"Bearer REDACTED"[..])
    );
    // Touching matches merge into one REDACTED; a partial secret stays.
    assert_eq!(
        header(&request.headers, "x-other"),
        Some(&b"REDACTED and s3cr3"[..])
    );
    assert_eq!(&request.body[..], b"data=REDACTED&more=REDACTED");
    assert_eq!(
        header(&request.headers, "content-length"),
        Some(request.body.len().to_string().as_bytes())
    );

    // The live request, redacted the same way, has the same canonical form
    // as the recorded one: replay finds what record stored.
    let live_headers = header_map(&[("x-key", "Bearer s3cr3t"), ("content-type", "text/plain")]);
    let mut redacted_headers = live_headers.clone();
    r.redact_header_map(&mut redacted_headers);
    assert_eq!(redacted_headers.get("x-key").unwrap(), "Bearer REDACTED");
    let target = r.redact_bytes(b"/k/s3cr3t");
    assert_eq!(&target[..], b"/k/REDACTED");
    let body = r.redact_body(br#"{"password":"p","note":"s3cr3t"}"#);
    assert_eq!(&body[..], br#"{"password":"REDACTED","note":"REDACTED"}"#);
    // Nothing to redact: borrowed, not copied.
    assert!(matches!(
        r.redact_bytes(b"plain"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn secrets_are_replaced_in_responses_and_websocket_frames() {
    let r = Redactor::new(&RedactionRules {
        secrets: vec![b"tok-123".to_vec()],
        response_header_replacements: vec![HeaderReplacement {
            header: "Set-Cookie".into(),
            regex: "session=[^;]+".into(),
            replace: "session=xyz".into(),
        }],
        ..RedactionRules::default()
    })
    .unwrap();
    let mut response = RecordedResponse {
        status: 200,
        headers: pairs(&[
            ("set-cookie", "session=abc123; Path=/"),
            ("x-echo", "tok-123"),
            ("Content-Length", "21"),
        ]),
        chunks: chunks(&["token is tok-123 ok\r\n"]),
        original_encoding: Bytes::new(),
        ..Default::default()
    };
    r.redact_response(&mut response);
    assert_eq!(
        header(&response.headers, "set-cookie"),
        Some(&b"session=xyz; Path=/"[..])
    );
    assert_eq!(header(&response.headers, "x-echo"), Some(REDACTED));
    assert_eq!(joined(&response.chunks), "token is REDACTED ok\r\n");
    assert_eq!(
        header(&response.headers, "content-length"),
        Some(response.body_len().to_string().as_bytes())
    );

    let mut frames = vec![
        WsFrame {
            direction: WsDirection::ClientToServer,
            opcode: 1,
            offset_us: 0,
            payload: Bytes::from_static(b"auth tok-123"),
        },
        WsFrame {
            direction: WsDirection::ServerToClient,
            opcode: 2,
            offset_us: 5,
            payload: Bytes::from_static(b"\x00tok-123\xff"),
        },
        WsFrame {
            direction: WsDirection::ServerToClient,
            opcode: 1,
            offset_us: 9,
            payload: Bytes::from_static(b"clean"),
        },
    ];
    r.redact_ws_frames(&mut frames);
    assert_eq!(&frames[0].payload[..], b"auth REDACTED");
    assert_eq!(&frames[1].payload[..], b"\x00REDACTED\xff");
    assert_eq!(&frames[2].payload[..], b"clean");
}

#[test]
fn overlapping_secrets_become_one_redaction() {
    let r = redactor(&["abcdef", "defghi"]);
    assert_eq!(&r.redact_bytes(b"xxabcdefghiyy")[..], b"xxREDACTEDyy");
    assert_eq!(&r.redact_bytes(b"abcdef defghi")[..], b"REDACTED REDACTED");
    // One secret inside another.
    let r = redactor(&["bcd", "abcdefg"]);
    assert_eq!(&r.redact_bytes(b"abcdefg bcd")[..], b"REDACTED REDACTED");
    // A chain of three overlapping secrets.
    let r = redactor(&["aaab", "abbb", "bbbc"]);
    assert_eq!(&r.redact_bytes(b"<aaabbbc>")[..], b"<REDACTED>");
}

#[test]
fn a_secret_split_across_two_chunks_is_redacted() {
    let r = redactor(&["s3cr3t"]);
    let mut body = chunks(&["one s3c", "r3t two"]);
    r.redact_chunks(&mut body);
    assert_eq!(joined(&body), "one REDACTED two");
    assert_eq!(body.len(), 2);
    assert_eq!(&body[0].data[..], b"one REDACTED");
    assert_eq!(&body[1].data[..], b" two");
    assert_eq!(body[1].offset_us, 100);
}

#[test]
fn a_secret_split_across_three_chunks_with_one_inside_it_is_redacted() {
    let r = redactor(&["abcdefgh"]);
    let mut body = chunks(&["x ab", "cdef", "gh y", "tail"]);
    r.redact_chunks(&mut body);
    assert_eq!(joined(&body), "x REDACTED ytail");
    // The chunk that lay inside the secret has nothing left of its own.
    assert_eq!(
        body.iter()
            .map(|c| (c.offset_us, String::from_utf8_lossy(&c.data).into_owned()))
            .collect::<Vec<_>>(),
        vec![
            (0, "x REDACTED".into()),
            (200, " y".into()),
            (300, "tail".into())
        ]
    );
    // Overlapping secrets across chunks, with content-length kept true.
    let r = redactor(&["abcdef", "defghi"]);
    let mut response = RecordedResponse {
        status: 200,
        headers: pairs(&[("content-length", "15")]),
        chunks: chunks(&["xxabc", "defg", "hiyy", "zz"]),
        original_encoding: Bytes::new(),
        ..Default::default()
    };
    r.redact_response(&mut response);
    assert_eq!(joined(&response.chunks), "xxREDACTEDyyzz");
    assert_eq!(
        header(&response.headers, "content-length"),
        Some(&b"14"[..])
    );
}

#[test]
fn sensitive_json_keys_nested_in_arrays_and_any_case() {
    let r = redactor(&[]);
    let body = br#"{"user":{"Password":"p1","profile":{"ACCESS_TOKEN":{"nested":1}}},"list":[{"token":"t1"},{"api_key":null},[{"Secret":7}]],"id":123456789012345678901234567890,"tokens":"not sensitive"}"#;
    let out = r.redact_body(body);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"user":{"Password":"REDACTED","profile":{"ACCESS_TOKEN":"REDACTED"}},"list":[{"token":"REDACTED"},{"api_key":"REDACTED"},[{"Secret":"REDACTED"}]],"id":123456789012345678901234567890,"tokens":"not sensitive"}"#
    );
    // Not JSON, or JSON without sensitive keys: left as it is.
    assert!(matches!(
        r.redact_body(b"password=x"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert!(matches!(
        r.redact_body(br#"{ "a": 1 }"#),
        std::borrow::Cow::Borrowed(_)
    ));

    // In a response of several chunks too, with content-length kept true.
    let mut response = RecordedResponse {
        status: 200,
        headers: pairs(&[("content-length", "35")]),
        chunks: chunks(&[r#"{"access_token": "#, r#""abc", "expires": 3600}"#]),
        original_encoding: Bytes::new(),
        ..Default::default()
    };
    r.redact_response(&mut response);
    assert_eq!(
        joined(&response.chunks),
        r#"{"access_token":"REDACTED","expires":3600}"#
    );
    assert_eq!(response.chunks.len(), 1);
    assert_eq!(
        header(&response.headers, "content-length"),
        Some(response.body_len().to_string().as_bytes())
    );
}

#[test]
fn a_bad_header_replacement_regex_is_a_typed_error() {
    let error = Redactor::new(&RedactionRules {
        response_header_replacements: vec![
            HeaderReplacement {
                header: "a".into(),
                regex: "ok".into(),
                replace: "x".into(),
            },
            HeaderReplacement {
                header: "b".into(),
                regex: "(unclosed".into(),
                replace: "x".into(),
            },
        ],
        ..RedactionRules::default()
    })
    .unwrap_err();
    match &error {
        RedactError::BadRegex { index, regex, .. } => {
            assert_eq!(*index, 1);
            assert_eq!(regex, "(unclosed");
        }
        other => panic!("expected BadRegex, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("response_header_replacements[1]")
    );
}

#[test]
fn secrets_come_from_lists_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.txt");
    std::fs::write(&file, b"line one\r\n\nline-two\n  spaced  \n").unwrap();
    let secrets = secrets_from(["a, b ,,c", "d"], Some(&file)).unwrap();
    let secrets: Vec<String> = secrets
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(
        secrets,
        ["a", "b", "c", "d", "line one", "line-two", "  spaced  "]
    );
    let missing = dir.path().join("missing.txt");
    match secrets_from([], Some(&missing)) {
        Err(RedactError::SecretsFile { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected SecretsFile, got {other:?}"),
    }
}

// -------------------------------------------------------------- decoding

const PLAIN: &[u8] =
    b"{\"hello\":\"world\",\"n\":[1,2,3,4,5,6,7,8,9,10],\"pad\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}
fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A content-coding's encoder.
type Encoder = fn(&[u8]) -> Vec<u8>;

fn encoders() -> Vec<(&'static str, Encoder)> {
    vec![
        ("gzip", gzip),
        ("deflate", zlib),
        ("deflate", raw_deflate),
        ("br", br),
        ("zstd", zstd),
    ]
}

#[test]
fn each_encoding_decodes() {
    for (name, encode) in encoders() {
        let decoded = decode_body(name.as_bytes(), &encode(PLAIN), 1 << 20).unwrap();
        assert_eq!(decoded.as_deref(), Some(PLAIN), "{name}");
    }
    assert_eq!(
        decode_body(b"X-GZIP", &gzip(PLAIN), 1 << 20)
            .unwrap()
            .as_deref(),
        Some(PLAIN)
    );
    assert_eq!(decode_body(b"", PLAIN, 1).unwrap(), None);
    assert_eq!(decode_body(b" identity ", PLAIN, 1).unwrap(), None);
    // An encoded empty body (HEAD, 204) is empty.
    assert_eq!(
        decode_body(b"br", b"", 1).unwrap().as_deref(),
        Some(&b""[..])
    );
}

#[test]
fn stacked_encodings_are_undone_in_reverse() {
    // content-encoding: gzip, br — gzip applied first, then br.
    let body = br(&gzip(PLAIN));
    assert_eq!(
        decode_body(b"gzip, br", &body, 1 << 20).unwrap().as_deref(),
        Some(PLAIN)
    );
    let body = zstd(&zlib(&br(PLAIN)));
    assert_eq!(
        decode_body(b"br,deflate,zstd", &body, 1 << 20)
            .unwrap()
            .as_deref(),
        Some(PLAIN)
    );
    // The wrong order does not decode.
    assert!(decode_body(b"br, gzip", &br(&gzip(PLAIN)), 1 << 20).is_err());
}

#[test]
fn corrupt_and_truncated_bodies_are_typed_errors() {
    for (name, encode) in encoders() {
        let garbage = b"this is not compressed at all, not even a little";
        match decode_body(name.as_bytes(), garbage, 1 << 20) {
            Err(DecodeError::Corrupt { encoding, .. }) => assert_eq!(encoding, name),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        let whole = encode(PLAIN);
        let truncated = &whole[..whole.len() / 2];
        assert!(
            matches!(
                decode_body(name.as_bytes(), truncated, 1 << 20),
                Err(DecodeError::Corrupt { .. })
            ),
            "{name}: truncated"
        );
    }
    match decode_body(b"gzip, compress", b"x", 1 << 20) {
        Err(DecodeError::Unsupported(name)) => assert_eq!(name, "compress"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 4 << 20];
    for (name, encode) in encoders() {
        let bomb = encode(&zeros);
        assert!(bomb.len() < 64 << 10, "{name}: {} bytes", bomb.len());
        match decode_body(name.as_bytes(), &bomb, 1 << 20) {
            Err(DecodeError::TooLarge { limit }) => assert_eq!(limit, 1 << 20),
            other => panic!(
                "{name}: expected TooLarge, got {:?}",
                other.map(|b| b.map(|b| b.len()))
            ),
        }
        // Exactly at the limit is allowed.
        let exact = encode(&zeros[..1 << 20]);
        assert_eq!(
            decode_body(name.as_bytes(), &exact, 1 << 20)
                .unwrap()
                .map(|b| b.len()),
            Some(1 << 20)
        );
    }
    // A bomb inside a stack of encodings is caught too.
    let stacked = gzip(&gzip(&zeros));
    assert!(matches!(
        decode_body(b"gzip, gzip", &stacked, 1 << 20),
        Err(DecodeError::TooLarge { .. })
    ));
}

// ------------------------------------- differential: the canonical form
//
// `tests/it/identity/reference.rs` is the canonicalizer as it was when the
// sample recordings were made (`ouli-canonical/1`). Whatever the library's
// implementation becomes, its bytes must be these: recordings on disk are
// found by the SHA-256 of the canonical form.

#[path = "identity/reference.rs"]
mod reference;

/// Canonical form by the library and by the reference, for one request.
fn both_canonical(
    rules: &MatchRules,
    target: &Target,
    method: &[u8],
    path_and_query: &[u8],
    headers: &http::HeaderMap,
    body: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let request = RequestParts {
        method,
        path_and_query,
        headers,
        body,
    };
    let mut new = b"prefix kept\n".to_vec();
    Matcher::new(rules).canonical_form(target, &request, &mut new);
    let mut old = b"prefix kept\n".to_vec();
    reference::Reference::new(rules).canonical_form(target, &request, &mut old);
    (new, old)
}

fn json_request_canonical(
    rules: &MatchRules,
    content_type: &str,
    body: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let mut headers = http::HeaderMap::new();
    if !content_type.is_empty() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type).unwrap(),
        );
    }
    both_canonical(rules, &api(), b"POST", b"/v1/x", &headers, body)
}

/// Whitespace between tokens: JSON's four, mostly; rarely a form feed or a
/// vertical tab, which JSON refuses.
fn ws() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(&b""[..]),
        2 => Just(&b" "[..]),
        1 => Just(&b"\n  "[..]),
        1 => Just(&b"\t"[..]),
        1 => Just(&b"\r\n"[..]),
        1 => Just(&b" \x0c"[..]),
        1 => Just(&b"\x0b"[..]),
    ]
    .prop_map(<[u8]>::to_vec)
}

/// The inside of a string token: plain text, UTF-8, every escape (short,
/// `\u` of either case, surrogate pairs, lone surrogates), and rarely what
/// JSON refuses (a raw control byte, a bad escape, invalid UTF-8).
fn string_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => "[a-zA-Z0-9 _.-]{0,6}".prop_map(String::into_bytes),
        1 => Just("é").prop_map(|s| s.as_bytes().to_vec()),
        1 => Just("😀").prop_map(|s| s.as_bytes().to_vec()),
        4 => prop::sample::select(vec![
            &br#"\""#[..], br"\\", br"\/", br"\b", br"\f", br"\n", br"\r", br"\t",
            br"\u0041", br"\u0061", br"\u00e9", br"\u00E9", br"\u0000", br"\u001f",
            br"\u001F", br"\u007f", br"\u2028", br"\ud83d\ude00", br"\uD83D\uDE00",
            br"\ud800", br"\udc00", br"\ud800\u0041", br"\ud800\ud800\udc00", br"\ud800\n",
            br"\ud800x", br"\u0022", br"\u005c", br"\u002F",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::sample::select(vec![
            &b"\x01"[..], b"\t", b"\x7f", br"\x", br"\u12", br"\uZZZZ", b"\xff", b"\xc3", b"\xed\xa0\x80",
        ])
        .prop_map(<[u8]>::to_vec),
    ]
}

fn string_token() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(string_piece(), 0..4).prop_map(|pieces| {
        let mut token = vec![b'"'];
        for piece in pieces {
            token.extend_from_slice(&piece);
        }
        token.push(b'"');
        token
    })
}

/// Keys: few, so that duplicates, equal decoded keys written differently
/// (`"a"`, `"\u0061"`) and the ignore paths below meet often.
fn key_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(vec![
            &br#""a""#[..], br#""b""#, br#""B""#, br#""id""#, br#""meta""#, br#""items""#,
            br#""0""#, br#""1""#, br#""a.b""#, br#""""#, br#""\u0061""#, br#""\u0062""#,
            "\"é\"".as_bytes(), br#""\u00e9""#, br#""a\/b""#, br#""\ud800""#, b"\"\xff\"",
            br#""ab""#, br#""a ""#,
        ])
        .prop_map(<[u8]>::to_vec),
        1 => string_token(),
    ]
}

fn number() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "0", "-0", "1", "1.0", "1.50", "1e5", "1E5", "1e+5", "1E-05", "-1.5e-3", "0.0",
            "-0.0e0", "123456789012345678901234567890", "0.1000000000000000000001",
            "1e999999", "-9223372036854775809", "18446744073709551616",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        2 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}").into_bytes()),
        1 => prop::sample::select(vec![
            "01", "-01", "1.", ".5", "+1", "-", "1e", "1e+", "0x10", "NaN", "Infinity", "1.e3", "--1",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn json_leaf() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => number(),
        3 => string_token(),
        1 => prop::sample::select(vec!["true", "false", "null"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::sample::select(vec!["tru", "nul", "True", "nulll", "falsey"]).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// JSON text: mostly valid, with everything the canonical form keeps or
/// normalizes; sometimes a near miss.
fn json_text() -> impl Strategy<Value = Vec<u8>> {
    json_leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            (
                prop::collection::vec((ws(), inner.clone(), ws()), 0..6),
                ws(),
                prop::bool::weighted(0.03)
            )
                .prop_map(|(items, gap, trailing_comma)| {
                    let mut out = vec![b'['];
                    out.extend_from_slice(&gap);
                    for (i, (before, item, after)) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(before);
                        out.extend_from_slice(item);
                        out.extend_from_slice(after);
                    }
                    if trailing_comma {
                        out.push(b',');
                    }
                    out.push(b']');
                    out
                }),
            (
                prop::collection::vec((ws(), key_token(), ws(), ws(), inner, ws()), 0..6),
                ws(),
                prop::bool::weighted(0.03),
            )
                .prop_map(|(members, gap, trailing_comma)| {
                    let mut out = vec![b'{'];
                    out.extend_from_slice(&gap);
                    for (i, (a, key, b, c, value, d)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(a);
                        out.extend_from_slice(key);
                        out.extend_from_slice(b);
                        out.push(b':');
                        out.extend_from_slice(c);
                        out.extend_from_slice(value);
                        out.extend_from_slice(d);
                    }
                    if trailing_comma {
                        out.push(b',');
                    }
                    out.push(b'}');
                    out
                }),
        ]
    })
}

/// A body: a JSON text (maybe wrapped in whitespace, maybe damaged once).
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    (
        ws(),
        json_text(),
        ws(),
        prop::option::weighted(0.15, (any::<prop::sample::Index>(), 0u8..4, any::<u8>())),
    )
        .prop_map(|(before, text, after, damage)| {
            let mut body = before;
            body.extend_from_slice(&text);
            body.extend_from_slice(&after);
            if let Some((at, how, byte)) = damage {
                let i = at.index(body.len() + 1);
                match how {
                    0 => body.truncate(i),
                    1 if i < body.len() => {
                        body.remove(i);
                    }
                    2 => {
                        let structural = b"{}[],:\"\\ 0a\xff";
                        body.insert(i, structural[byte as usize % structural.len()]);
                    }
                    _ => body.insert(i, byte),
                }
            }
            body
        })
}

/// `ignore_json_paths` entries over the keys of [`key_token`].
fn json_path() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "a", "b", "B", "id", "meta", "items", "0", "1", "*", "a.b", "é", "+1", "01", "",
                ]),
                0u8..4,
            ),
            0..4,
        ),
    )
        .prop_map(|(dollar, segments)| {
            let mut path = if dollar {
                "$".to_string()
            } else {
                String::new()
            };
            for (segment, form) in segments {
                match form {
                    0 | 1 => {
                        path.push('.');
                        path.push_str(segment);
                    }
                    2 => path.push_str(&format!("[{segment}]")),
                    _ => path.push_str(&format!("[\"{segment}\"]")),
                }
            }
            path
        })
}

fn content_type() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "application/json",
        "Application/JSON; charset=utf-8",
        " application/json ",
        "application/vnd.api+json",
        "application/problem+JSON;q=1",
        "",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "application/json ;charset=\"UTF-8\"",
        "text/plain;Charset=UTF-8;format=flowed",
        "multipart/form-data; boundary=\"a;b\"",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/json; charset=",
        "application/json;;",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn json_canonical_form_is_the_reference_one(
        body in json_body(),
        content_type in content_type(),
        paths in prop::collection::vec(json_path(), 0..3),
    ) {
        let rules = MatchRules { ignore_json_paths: paths, ..MatchRules::default() };
        let (new, old) = json_request_canonical(&rules, content_type, &body);
        prop_assert_eq!(text(&new), text(&old));
        prop_assert_eq!(new, old);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn whole_canonical_form_is_the_reference_one(
        scheme in prop::sample::select(vec!["http", "https"]),
        host in "[a-zA-Z0-9.-]{0,12}",
        port in any::<u16>(),
        method in "[A-Za-z]{1,7}",
        path in prop::collection::vec(any::<u8>(), 0..24),
        path_chars in prop::collection::vec(
            prop::sample::select(vec![&b"/"[..], b".", b"..", b"%2e", b"%2F", b"%7e", b"%zz", b"%", b"a", b"+", b"?", b"&", b"=", b"%20", b"\xc3\xa9"]),
            0..12,
        ),
        query in prop::collection::vec(
            prop::sample::select(vec![&b"a"[..], b"b", b"=", b"&", b"+", b"%20", b"%2", b"%zz", b"%41", b"ts", b"x y", b"\xff", b"=="]),
            0..12,
        ),
        headers in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "accept", "content-type", "user-agent", "x-ouli-test", "x-tenant", "cookie",
                    "authorization", "x-b3-traceid", "host", "accept-encoding", "x-a", "x-b",
                ]),
                prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'a', b'Z', b'1', b';', b'\x80', b'"']), 0..8),
            ),
            0..8,
        ),
        body_kind in 0u8..4,
        body in prop::collection::vec(any::<u8>(), 0..32),
        form in prop::collection::vec(
            prop::sample::select(vec![&b"a"[..], b"b", b"=", b"&", b"+", b"%20", b"%2", b"%41", b"\xff"]),
            0..10,
        ),
        include in prop::collection::vec(prop::sample::select(vec!["user-agent", "X-Tenant", " host ", "authorization"]), 0..2),
        ignore in prop::collection::vec(prop::sample::select(vec!["accept", "X-A", "cookie", " x-b "]), 0..2),
        ignore_query in prop::collection::vec(prop::sample::select(vec!["a", "b", "ts", "x y", "A"]), 0..2),
    ) {
        let target = Target { scheme: scheme.into(), host, port };
        let mut path_and_query = if path_chars.is_empty() { path } else { path_chars.concat() };
        if !query.is_empty() {
            path_and_query.push(b'?');
            path_and_query.extend(query.concat());
        }
        let mut map = http::HeaderMap::new();
        for (name, value) in &headers {
            if let Ok(value) = http::HeaderValue::from_bytes(value) {
                map.append(http::HeaderName::from_static(name), value);
            }
        }
        let (content_type, body) = match body_kind {
            0 => ("application/octet-stream", body),
            1 => ("application/x-www-form-urlencoded", form.concat()),
            2 => ("Application/X-WWW-Form-Urlencoded ; charset=x", form.concat()),
            _ => ("", body),
        };
        if !content_type.is_empty() {
            map.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        }
        let rules = MatchRules {
            include_headers: include.into_iter().map(String::from).collect(),
            ignore_headers: ignore.into_iter().map(String::from).collect(),
            ignore_query_params: ignore_query.into_iter().map(String::from).collect(),
            ignore_json_paths: Vec::new(),
        };
        let (new, old) = both_canonical(&rules, &target, method.as_bytes(), &path_and_query, &map, &body);
        prop_assert_eq!(text(&new), text(&old));
        prop_assert_eq!(new, old);
    }
}

/// Cases the generators above may miss, each against the reference.
#[test]
fn json_edge_cases_are_the_reference_ones() {
    let nested =
        |depth: usize, inner: &str| format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth));
    let mut bodies: Vec<Vec<u8>> = [
        "{}",
        "[]",
        "0",
        "-0",
        "\"\"",
        "null",
        " true ",
        "{\"b\":1,\"a\":2,\"b\":0,\"a\":1}",
        "{\"\\u0062\":1,\"a\":2,\"b\":0}",
        "[1,[2,[3,{\"z\":{\"y\":[],\"x\":{}}}]]]",
        "{\"a\":{\"c\":1,\"b\":{\"e\":[{\"g\":1,\"f\":2}],\"d\":3}},\"A\":0}",
        "{\"é\":1,\"e\":2,\"\\u00e9\":3,\"z\":4}",
        "{\"a\":1}x",
        "{\"a\":1} {}",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{\"a\" 1}",
        "{1:2}",
        "\"\\ud800\"",
        "{\"\\ud800\":1}",
        "{\"\\udc00\\ud800\":1}",
        "[\"\\ud83d\\ude00\",\"\\uD83D\\uDE00x\"]",
        "[\"a\\u0000b\\u001fc\\u007f\\b\\f\\n\\r\\t\\\"\\\\\\/\"]",
        "\u{feff}{}",
        "{\"a\":1}\u{0}",
        "[1e5,1E+5,-0.0,1.0e-0,123456789012345678901234567890]",
        " \t\r\n{ \"a\" : [ 1 , 2 ] } \r\n",
        "\x0c{}",
        "{\"a\":\"\x01\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(b"{\"a\":\"\xff\"}".to_vec());
    bodies.push(b"{\"\xff\":1}".to_vec());
    bodies.push(b"{\"\\u0041\xff\":1}".to_vec());
    bodies.push(b"[\"\\u0041\xff\"]".to_vec());
    // Wide objects: many duplicate keys, out of order (a sort that is not
    // stable would mix up their values).
    for width in [19, 20, 21, 64, 300] {
        let members: Vec<String> = (0..width)
            .map(|i| format!("\"{}\":{i}", ["k", "a", "\\u006b", "b"][(i * 7) % 4]))
            .collect();
        bodies.push(format!("{{{}}}", members.join(",")).into_bytes());
        bodies.push(format!("[{{{}}}]", members.join(" , ")).into_bytes());
    }
    for depth in [1, 2, 126, 127, 128, 129, 200, 1000] {
        bodies.push(nested(depth, "").into_bytes());
        bodies.push(nested(depth, "{\"b\":1,\"a\":2}").into_bytes());
        bodies.push(format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes());
        bodies.push(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).into_bytes());
    }
    let path_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["$.a"],
        vec!["$.*"],
        vec!["[0]"],
        vec!["$[*]"],
        vec!["a.b", "$.b"],
        vec!["$.a.c", "a.b.e[*].f", "$[\"A\"]"],
        vec!["$[1][1]", "*.*"],
        vec!["$"],
        vec!["é", "z"],
    ];
    for body in &bodies {
        for paths in &path_sets {
            for content_type in ["application/json", ""] {
                let rules = MatchRules {
                    ignore_json_paths: paths.iter().map(|p| p.to_string()).collect(),
                    ..MatchRules::default()
                };
                let (new, old) = json_request_canonical(&rules, content_type, body);
                assert_eq!(
                    text(&new),
                    text(&old),
                    "body {:?}, paths {paths:?}, content-type {content_type:?}",
                    String::from_utf8_lossy(body)
                );
                assert_eq!(new, old);
            }
        }
    }
}

/// The expected bytes, written out: the reference agrees with these too, so
/// a change to both would still be caught.
#[test]
fn json_canonical_bytes_written_out() {
    let rules = MatchRules {
        ignore_json_paths: vec!["$.meta.id".into(), "list[1]".into(), "gone".into()],
        ..MatchRules::default()
    };
    for (body, expected) in [
        (
            &br#" { "b" : 1.0 , "a" : [ 1e5 , -0 , "\u00e9\/\u0041" ] , "a" : null } "#[..],
            "body json 38\n{\"a\":[1e5,-0,\"é/A\"],\"a\":null,\"b\":1.0}",
        ),
        (
            br#"{"meta":{"id":7,"v":"\ud83d\ude00"},"list":[1,2,3],"gone":{"x":1},"z\n":"\u001F"}"#,
            "body json 54\n{\"list\":[1,null,3],\"meta\":{\"v\":\"😀\"},\"z\\n\":\"\\u001f\"}",
        ),
        (br#"{"a":"\ud800"}"#, "body json 14\n{\"a\":\"\\ud800\"}"),
        (br#"{"\ud800":1}"#, "body raw 12\n{\"\\ud800\":1}"),
        (br#"{"a":1,}"#, "body raw 8\n{\"a\":1,}"),
        (br#"[01]"#, "body raw 4\n[01]"),
    ] {
        let (new, old) = json_request_canonical(&rules, "application/json", body);
        let new = text(&new);
        let tail = &new[new.find("body ").unwrap()..];
        assert_eq!(tail, expected);
        assert_eq!(new, text(&old));
    }
}
/// Secrets from a small alphabet, so that they overlap, nest, share
/// prefixes and touch; some hold bytes that are percent-encoded.
fn small_secrets() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(b"ab".to_vec()), 1..6),
            1..5
        ),
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(b"ab /%+".to_vec()), 1..6),
            1..5
        ),
        // One provider's keys: a shared prefix.
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(b"ab".to_vec()), 0..4),
            1..6
        )
        .prop_map(|tails| tails
            .into_iter()
            .map(|t| [&b"sk_"[..], &t].concat())
            .collect()),
    ]
}

fn haystack() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            &b"a"[..],
            b"b",
            b"c",
            b" ",
            b"%20",
            b"+",
            b"%2F",
            b"%2f",
            b"%25",
            b"/",
            b"sk_",
            b"%2B",
            // Decoded forms: a byte escaped, JSON escapes, broken ones.
            b"%61",
            b"%62",
            br"\u0061",
            br"\u0020",
            br"\/",
            br"\",
            br"\ud83d\ude00",
            br"\ud800",
        ]),
        0..40,
    )
    .prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn secrets_are_redacted_as_the_reference_does(secrets in small_secrets(), bytes in haystack()) {
        let redactor = Redactor::new(&RedactionRules {
            secrets: secrets.clone(),
            ..RedactionRules::default()
        })
        .unwrap();
        let expected = reference::redact_bytes(&secrets, &bytes);
        prop_assert_eq!(text(&redactor.redact_bytes(&bytes)), text(&expected));
    }
}

/// Many occurrences, long ones, and the bench's 32 keys of one provider.
#[test]
fn secret_search_edge_cases_are_the_reference_ones() {
    let keys: Vec<Vec<u8>> = (0..32)
        .map(|i| format!("sk_live_{i:02}_7f3a9c").into_bytes())
        .collect();
    let mut body: Vec<u8> = b"sk_live_ sk_live_0 sk_live_31_7f3a9 ".repeat(40);
    for (i, key) in keys.iter().enumerate() {
        body.extend_from_slice(key);
        if i % 3 == 0 {
            body.extend_from_slice(&keys[(i + 5) % 32]);
        }
        body.extend_from_slice(b" x ");
    }
    let cases: Vec<(Vec<Vec<u8>>, Vec<u8>)> = vec![
        (keys.clone(), body.clone()),
        (keys[..1].to_vec(), body.clone()),
        (vec![b"aa".to_vec()], b"a".repeat(10_001)),
        (
            vec![b"aba".to_vec(), b"b".to_vec()],
            b"ababababa-bab".repeat(100),
        ),
        (
            vec![b"x".to_vec(), b"xyz".to_vec(), b"yz!".to_vec()],
            b"xyz! xy xyz!z x".to_vec(),
        ),
        (
            vec![b"a b".to_vec(), b"a+b".to_vec()],
            b"a b a+b a%20b a%2Bb".to_vec(),
        ),
    ];
    for (secrets, bytes) in cases {
        let redactor = Redactor::new(&RedactionRules {
            secrets: secrets.clone(),
            ..RedactionRules::default()
        })
        .unwrap();
        assert_eq!(
            text(&redactor.redact_bytes(&bytes)),
            text(&reference::redact_bytes(&secrets, &bytes)),
        );
    }
}

/// A document nested far deeper than any stack allows recursion for does
/// not exhaust it: past `JSON_DEPTH_MAX` it is a raw body, as written (the
/// reference recursed; past a few thousand levels it could not be compared).
#[test]
fn deeply_nested_json_does_not_exhaust_the_stack() {
    let depth = 200_000;
    let body = format!("{} {}", "[".repeat(depth), "]".repeat(depth));
    let c = canonical(
        &req("POST", "/")
            .header("content-type", "application/json")
            .body(body.as_bytes()),
    );
    let parsed = CanonicalRequest::parse(&c).unwrap();
    assert_eq!(parsed.body_kind, "raw");
    assert_eq!(parsed.body, body.into_bytes());
}
