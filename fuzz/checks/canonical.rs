//! `canonical`: the canonical form and fingerprint of an arbitrary request
//! under arbitrary matching rules. Nothing panics; the same request gives the
//! same bytes twice (with a reused and a fresh matcher); the form parses back
//! (`CanonicalRequest::parse`) with its method and body length; and it is
//! byte for byte the reference canonicalizer's (`tests/it/identity/reference.rs`)
//! wherever that one can judge: JSON nested less deeply than its parser's
//! limit.

use ouli::fingerprint::{self, CanonicalRequest, MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::Fingerprint;

use super::Input;

// The integration tests load this file a second time (tests/it/identity.rs):
// one reference, two users.
#[path = "../../tests/it/identity/reference.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod reference;

/// Content types the input picks from (the last: arbitrary bytes).
const CONTENT_TYPES: &[&str] = &[
    "",
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "APPLICATION/JSON",
];

/// Nesting the reference is compared at: below `serde_json`'s limit of 128,
/// past which the reference (a tree built by `serde_json`) gives up on JSON.
const REFERENCE_DEPTH_MAX: usize = 100;

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let rules = rules(&mut input);
    let target = Target {
        scheme: if input.byte() & 1 == 0 {
            "http"
        } else {
            "https"
        }
        .to_owned(),
        host: host(input.short()),
        port: input.u16(),
    };
    let method = input.short();
    let path_and_query = input.long();
    let mut headers = http::HeaderMap::new();
    for _ in 0..input.byte() % 8 {
        let name = input.short();
        let value = input.short();
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    let choice = usize::from(input.byte());
    if let Some(content_type) = CONTENT_TYPES.get(choice % (CONTENT_TYPES.len() + 1)) {
        if !content_type.is_empty() {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
        }
    } else if let Ok(value) = http::HeaderValue::from_bytes(input.short()) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    let body = input.rest();
    let request = RequestParts {
        method,
        path_and_query,
        headers: &headers,
        body,
    };

    let matcher = Matcher::new(&rules);
    let mut first = Vec::new();
    matcher.canonical_form(&target, &request, &mut first);
    let mut second = b"kept".to_vec();
    matcher.canonical_form(&target, &request, &mut second);
    assert_eq!(
        &second[4..],
        &first[..],
        "the same request, another canonical form"
    );
    let mut fresh = Vec::new();
    Matcher::new(&rules).canonical_form(&target, &request, &mut fresh);
    assert_eq!(fresh, first, "a fresh matcher, another canonical form");

    let link = Fingerprint([7; 32]);
    let fp = fingerprint::fingerprint(&first, &link);
    assert_eq!(fp, fingerprint::fingerprint(&first, &link));
    let (hash, fp2) = fingerprint::canonical_and_fingerprint(&first, &link);
    assert_eq!(fp, fp2);
    assert_eq!(hash, fingerprint::canonical_hash(&first));

    if http::Method::from_bytes(method).is_ok()
        && http::uri::PathAndQuery::try_from(path_and_query).is_ok()
    {
        let parsed = CanonicalRequest::parse(&first).expect("a canonical form parses back");
        assert_eq!(parsed.method.as_bytes(), method);
        let body_line = format!("body {} {}\n", parsed.body_kind, parsed.body.len());
        assert!(
            first.ends_with(&[body_line.as_bytes(), &parsed.body].concat()),
            "the body line does not give the body's length"
        );
    }

    if json_depth(body) <= REFERENCE_DEPTH_MAX {
        let mut expected = Vec::new();
        reference::Reference::new(&rules).canonical_form(&target, &request, &mut expected);
        assert!(
            first == expected,
            "canonical form differs from the reference:\n{}\nreference:\n{}",
            String::from_utf8_lossy(&first),
            String::from_utf8_lossy(&expected)
        );
    }
}

fn rules(input: &mut Input<'_>) -> MatchRules {
    let list = |input: &mut Input<'_>| -> Vec<String> {
        (0..input.byte() % 3)
            .map(|_| String::from_utf8_lossy(input.short()).into_owned())
            .collect()
    };
    MatchRules {
        include_headers: list(input),
        ignore_headers: list(input),
        ignore_query_params: list(input),
        ignore_json_paths: list(input),
    }
}

/// A host as a config holds one: letters, digits, dots and dashes.
fn host(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-";
    let host: String = bytes
        .iter()
        .map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect();
    if host.is_empty() {
        "localhost".into()
    } else {
        host
    }
}

/// An upper bound of the nesting of `body` read as JSON: its `[` and `{`
/// counted, inside strings too.
fn json_depth(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'[' || b == b'{').count()
}
