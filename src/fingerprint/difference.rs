//! Field-by-field differences between two requests (or two responses), in
//! the vocabulary a miss report and `ouli diff` share: each difference is a
//! JSON object `{"field", "expected", "got"}` whose field is `target`,
//! `path`, `query NAME`, `header NAME`, `json $.a.b` (a JSON body's path) or
//! `body` (any other body, whole).
//!
//! The miss report (`server::miss`) compares a recorded request (expected)
//! with a live one (got); `tools::diff` compares recording A (expected) with
//! recording B (got), responses included.

use super::CanonicalRequest;
use serde_json::Value;

/// Field-by-field differences of two canonical requests, expected vs got:
/// target, path, each query parameter and header by name, then the body.
pub fn field_differences(expected: &CanonicalRequest, got: &CanonicalRequest) -> Vec<Value> {
    let mut out = Vec::new();
    let mut differ = |field: String, e: Option<&str>, g: Option<&str>| {
        if e != g {
            out.push(serde_json::json!({ "field": field, "expected": e, "got": g }));
        }
    };
    differ("target".into(), Some(&expected.target), Some(&got.target));
    differ("path".into(), Some(&expected.path), Some(&got.path));
    list_differences("query", &expected.query, &got.query, &mut out);
    list_differences("header", &expected.headers, &got.headers, &mut out);
    if expected.body != got.body || expected.body_kind != got.body_kind {
        out.extend(body_differences(expected, got));
    }
    out
}

/// The names whose values differ between two lists of (name, value), in
/// name order: `"<kind> <name>"`, each side's values joined with `", "`
/// (`null` where a side has none). Repeated names compare as lists.
pub fn list_differences(
    kind: &str,
    expected: &[(String, String)],
    got: &[(String, String)],
    out: &mut Vec<Value>,
) {
    let mut names: Vec<&str> = expected
        .iter()
        .chain(got.iter())
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let values = |list: &[(String, String)], name: &str| -> Option<String> {
        let values: Vec<&str> = list
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    for name in names {
        let (e, g) = (values(expected, name), values(got, name));
        if e != g {
            out.push(
                serde_json::json!({ "field": format!("{kind} {name}"), "expected": e, "got": g }),
            );
        }
    }
}

/// For two JSON bodies, the differing JSON paths; otherwise one `body` entry.
pub fn body_differences(expected: &CanonicalRequest, got: &CanonicalRequest) -> Vec<Value> {
    let mut out = Vec::new();
    bytes_differences(&expected.body, &got.body, &mut out);
    out
}

/// [`body_differences`] of two bodies as bytes: JSON paths when both parse
/// as JSON, else one `body` entry with both as text (lossy UTF-8).
pub fn bytes_differences(expected: &[u8], got: &[u8], out: &mut Vec<Value>) {
    let parse = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
    match (parse(expected), parse(got)) {
        (Some(e), Some(g)) => json_diff("$", &e, &g, out),
        _ => out.push(serde_json::json!({
            "field": "body",
            "expected": String::from_utf8_lossy(expected),
            "got": String::from_utf8_lossy(got),
        })),
    }
}

/// One step of [`json_diff`]'s walk: a pair to compare, or a difference
/// found already, waiting for its turn among its siblings.
enum Step<'a> {
    Compare(String, &'a Value, &'a Value),
    Found(Value),
}

/// The paths under `path` where two JSON values differ, depth first in key
/// order: members present on one side only are named with `null` on the
/// other; arrays and scalars compare whole. An explicit stack, never
/// recursion: a body is as deep as whoever sent it made it.
pub fn json_diff(path: &str, e: &Value, g: &Value, out: &mut Vec<Value>) {
    let mut stack = vec![Step::Compare(path.to_owned(), e, g)];
    while let Some(step) = stack.pop() {
        let (path, e, g) = match step {
            Step::Found(difference) => {
                out.push(difference);
                continue;
            }
            Step::Compare(path, e, g) => (path, e, g),
        };
        match (e, g) {
            (Value::Object(eo), Value::Object(go)) => {
                let mut keys: Vec<&String> = eo.keys().chain(go.keys()).collect();
                keys.sort_unstable();
                keys.dedup();
                // Pushed in reverse, so that the first key comes out first.
                for key in keys.into_iter().rev() {
                    let child = format!("{path}.{key}");
                    stack.push(match (eo.get(key), go.get(key)) {
                        (Some(a), Some(b)) => Step::Compare(child, a, b),
                        (a, b) => Step::Found(
                            serde_json::json!({ "field": format!("json {child}"), "expected": a, "got": b }),
                        ),
                    });
                }
            }
            _ if e != g => out.push(
                serde_json::json!({ "field": format!("json {path}"), "expected": e, "got": g }),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_differences_come_depth_first_in_key_order_one_sided_members_included() {
        let e = serde_json::json!({"b": {"y": 1, "x": [1]}, "a": 1, "c": 3});
        let g = serde_json::json!({"b": {"y": 2, "x": [2], "w": true}, "a": 1, "d": 4});
        let mut out = Vec::new();
        json_diff("$", &e, &g, &mut out);
        let fields: Vec<&str> = out.iter().map(|d| d["field"].as_str().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "json $.b.w",
                "json $.b.x",
                "json $.b.y",
                "json $.c",
                "json $.d"
            ]
        );
        assert_eq!(out[0]["expected"], Value::Null);
        assert_eq!(out[0]["got"], true);
        assert_eq!(out[3]["expected"], 3);
    }

    #[test]
    fn a_deep_body_is_walked_without_recursion() {
        // Built in a loop (a parse stops at 128 levels): deeper than a
        // recursive walk of a debug build survives on a test thread.
        let deep = |leaf: i32| {
            let mut value = serde_json::json!(leaf);
            for _ in 0..10_000 {
                // Moved in, not through `json!` (which serializes a copy).
                let mut object = serde_json::Map::new();
                object.insert("a".into(), value);
                value = Value::Object(object);
            }
            value
        };
        let (e, g) = (deep(1), deep(2));
        let mut out = Vec::new();
        json_diff("$", &e, &g, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0]["field"].as_str().unwrap().ends_with(".a.a"));
        assert_eq!(out[0]["expected"], 1);
        assert_eq!(out[0]["got"], 2);
        // Their drop recurses.
        std::mem::forget((e, g));
    }

    #[test]
    fn lists_compare_by_name_with_repeated_values_joined() {
        let list = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut out = Vec::new();
        list_differences(
            "header",
            &list(&[("a", "1"), ("a", "2"), ("b", "x")]),
            &list(&[("a", "1"), ("a", "2"), ("c", "y")]),
            &mut out,
        );
        assert_eq!(
            out,
            [
                serde_json::json!({"field": "header b", "expected": "x", "got": null}),
                serde_json::json!({"field": "header c", "expected": null, "got": "y"}),
            ]
        );
    }
}
