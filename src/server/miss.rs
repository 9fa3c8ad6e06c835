//! Miss: a request with no recorded answer gets a JSON report (whose fault:
//! the recording's) naming the closest recorded requests and how they differ,
//! never a bare 500.

use super::response::{ResponseBody, json_response};
use super::{Endpoint, MISS_CANDIDATES_MAX, Server};
use crate::chain::ChainStep;
use crate::fingerprint::CanonicalRequest;
use crate::recording::Recording;
use crate::session_name::SessionName;
use http::{Response, StatusCode};

impl Server {
    pub(super) fn miss(
        &self,
        endpoint: &Endpoint,
        session: &SessionName,
        recording: Option<&Recording>,
        step: &ChainStep,
        canonical: &[u8],
        exhausted: bool,
    ) -> Response<ResponseBody> {
        let got = CanonicalRequest::parse(canonical).unwrap_or_default();
        let mut candidates: Vec<(usize, CanonicalRequest)> = recording
            .map(|r| {
                r.iter()
                    .filter_map(Result::ok)
                    .filter_map(|view| CanonicalRequest::parse(view.canonical()))
                    .filter(|c| c.method == got.method)
                    .map(|c| (field_differences(&c, &got).len(), c))
                    .collect()
            })
            .unwrap_or_default();
        candidates.sort_by_key(|(score, c)| (*score, c.path != got.path));
        candidates.dedup_by(|a, b| a.1 == b.1);
        let closest: Vec<serde_json::Value> = candidates
            .iter()
            .take(MISS_CANDIDATES_MAX)
            .map(|(_, c)| {
                serde_json::json!({
                    "method": c.method, "path": c.path,
                    "differences": field_differences(c, &got),
                })
            })
            .collect();
        let config_arg = self
            .options
            .config
            .source
            .as_ref()
            .map(|p| format!(" --config {}", p.display()))
            .unwrap_or_default();
        let kind = if exhausted {
            "chain-exhausted"
        } else {
            "replay-miss"
        };
        let message = if recording.is_none() {
            format!(
                "no recording for session {session} in {}",
                self.options.recording_dir.display()
            )
        } else if exhausted {
            format!(
                "session {session}: this request was recorded {} time(s); the chain ran past the recording",
                step.position
            )
        } else {
            format!("session {session}: no recorded request matches")
        };
        tracing::warn!(
            "replay miss (endpoint {}): {message}; {} {}; closest: {}",
            endpoint.index,
            got.method,
            got.path,
            serde_json::to_string(&closest).unwrap_or_default()
        );
        json_response(
            StatusCode::NOT_FOUND,
            kind,
            serde_json::json!({
                "error": kind,
                "fault": "recording",
                "message": message,
                "session": session.as_str(),
                "fingerprint": step.fingerprint.to_hex(),
                "chain_position": step.position,
                "request": canonical_json(&got),
                "closest_recorded": closest,
                "record_command": format!(
                    "ouli record-missing{config_arg} --recording-dir {}",
                    self.options.recording_dir.display()
                ),
            }),
        )
    }
}

pub(super) fn canonical_json(c: &CanonicalRequest) -> serde_json::Value {
    serde_json::json!({
        "target": c.target, "method": c.method, "path": c.path,
        "query": c.query, "headers": c.headers,
        "body_kind": c.body_kind, "body": String::from_utf8_lossy(&c.body),
    })
}

/// Field-by-field differences, expected (recorded) vs got (live).
pub(super) fn field_differences(
    expected: &CanonicalRequest,
    got: &CanonicalRequest,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut differ = |field: String, e: Option<&str>, g: Option<&str>| {
        if e != g {
            out.push(serde_json::json!({ "field": field, "expected": e, "got": g }));
        }
    };
    differ("target".into(), Some(&expected.target), Some(&got.target));
    differ("path".into(), Some(&expected.path), Some(&got.path));
    for (kind, e_list, g_list) in [
        ("query", &expected.query, &got.query),
        ("header", &expected.headers, &got.headers),
    ] {
        let mut names: Vec<&str> = e_list
            .iter()
            .chain(g_list.iter())
            .map(|(k, _)| k.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let e: Vec<&str> = e_list
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let g: Vec<&str> = g_list
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if e != g {
                let join = |v: &[&str]| {
                    if v.is_empty() {
                        None
                    } else {
                        Some(v.join(", "))
                    }
                };
                out.push(serde_json::json!({ "field": format!("{kind} {name}"), "expected": join(&e), "got": join(&g) }));
            }
        }
    }
    if expected.body != got.body || expected.body_kind != got.body_kind {
        out.extend(body_differences(expected, got));
    }
    out
}

/// For two JSON bodies, the differing JSON paths; otherwise one `body` entry.
pub(super) fn body_differences(
    expected: &CanonicalRequest,
    got: &CanonicalRequest,
) -> Vec<serde_json::Value> {
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    let mut out = Vec::new();
    match (parse(&expected.body), parse(&got.body)) {
        (Some(e), Some(g)) => json_diff("$", &e, &g, &mut out),
        _ => out.push(serde_json::json!({
            "field": "body",
            "expected": String::from_utf8_lossy(&expected.body),
            "got": String::from_utf8_lossy(&got.body),
        })),
    }
    out
}

pub(super) fn json_diff(
    path: &str,
    e: &serde_json::Value,
    g: &serde_json::Value,
    out: &mut Vec<serde_json::Value>,
) {
    use serde_json::Value;
    match (e, g) {
        (Value::Object(eo), Value::Object(go)) => {
            let mut keys: Vec<&String> = eo.keys().chain(go.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let child = format!("{path}.{key}");
                match (eo.get(key), go.get(key)) {
                    (Some(a), Some(b)) => json_diff(&child, a, b, out),
                    (a, b) => out.push(serde_json::json!({ "field": format!("json {child}"), "expected": a, "got": b })),
                }
            }
        }
        _ if e != g => out
            .push(serde_json::json!({ "field": format!("json {path}"), "expected": e, "got": g })),
        _ => {}
    }
}
