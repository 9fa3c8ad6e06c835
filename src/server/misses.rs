//! The last misses, kept for `GET /__ouli/misses`: a harness (or a person
//! looking at a shared fixture server) sees why its requests were not
//! answered without reading ouli's log.
//!
//! [`Misses`] is a bounded ring of reports, oldest dropped first once it
//! holds [`MISSES_KEPT_MAX`]. An HTTP miss keeps the report its answer
//! carried (session, method, target, the closest recorded requests and
//! their field differences, `miss.rs`); a WebSocket client frame that
//! differs from the recording keeps the frame's index and the JSON path
//! that differs (`websocket.rs`). Every report is redacted before it is
//! kept, as every message ouli writes is.

use super::miss::{MISS_ANSWER_BYTES_MAX, MISS_ECHO_VALUE_BYTES_MAX, cut_string, redact_json};
use super::response::{RemoveErrorHeader, ResponseBody, json_response};
use crate::fingerprint::CanonicalRequest;
use crate::redact::Redactor;
use http::{Response, StatusCode};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Misses kept at most; the oldest is dropped for a new one past this. Each
/// report is at most about `MISS_ANSWER_BYTES_MAX` (64 KiB) of JSON (the
/// miss answer's bound, plus its method and target), so the ring holds
/// about 6.5 MB at most, whatever the traffic.
pub const MISSES_KEPT_MAX: usize = 100;

/// The ring of the last misses, shared by every connection of the server.
pub(super) struct Misses {
    kept: Mutex<VecDeque<serde_json::Value>>,
}

impl Misses {
    pub(super) fn new() -> Misses {
        Misses {
            kept: Mutex::new(VecDeque::with_capacity(MISSES_KEPT_MAX)),
        }
    }

    /// Keeps `report` (already redacted), dropping the oldest past
    /// [`MISSES_KEPT_MAX`].
    pub(super) fn push(&self, report: serde_json::Value) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        while kept.len() >= MISSES_KEPT_MAX {
            kept.pop_front();
        }
        kept.push_back(report);
    }

    /// `{"kept_max": N, "misses": [...]}`, oldest first.
    pub(super) fn answer(&self) -> Response<ResponseBody> {
        let misses: Vec<serde_json::Value> = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        json_response(
            StatusCode::OK,
            "none",
            serde_json::json!({ "kept_max": MISSES_KEPT_MAX, "misses": misses }),
        )
        .tap_remove_error_header()
    }
}

/// An HTTP miss report as the ring keeps it: the answer's `report` (already
/// redacted), with the request's method and target (`path`, bounded, and
/// the query as canonicalized) beside the session, and the closest recorded
/// request's differences as `differences`.
pub(super) fn http_entry(
    redactor: &Redactor,
    report: &serde_json::Value,
    got: &CanonicalRequest,
    path: &str,
) -> serde_json::Value {
    let mut report = report.clone();
    let method = got.method.as_str();
    let target = redactor.redact_str(&target_of(got, path)).into_owned();
    let differences = report["closest_recorded"]
        .get(0)
        .and_then(|closest| closest.get("differences"))
        .cloned()
        .unwrap_or_else(|| serde_json::json!([]));
    if let Some(members) = report.as_object_mut() {
        members.insert("method".into(), method.into());
        members.insert("target".into(), target.into());
        members.insert("differences".into(), differences);
    }
    // The copy of the differences must not take a kept report past its
    // bound: they are in `closest_recorded` still.
    if report.to_string().len() > MISS_ANSWER_BYTES_MAX {
        report["differences"] = format!(
            "[cut: the report was over {MISS_ANSWER_BYTES_MAX} bytes; see closest_recorded]"
        )
        .into();
    }
    report
}

/// The request's target as a miss names it: its path and query parameters
/// as canonicalized (sorted), at most `MISS_ECHO_VALUE_BYTES_MAX` bytes.
fn target_of(got: &CanonicalRequest, path: &str) -> String {
    let mut target = path.to_owned();
    for (i, (name, value)) in got.query.iter().enumerate() {
        if target.len() > MISS_ECHO_VALUE_BYTES_MAX {
            break;
        }
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(name);
        target.push('=');
        target.push_str(value);
    }
    cut_string(&mut target, MISS_ECHO_VALUE_BYTES_MAX);
    target
}

/// What a WebSocket frame mismatch says: which frame, where, and what.
pub(super) struct FrameMiss<'a> {
    pub session: &'a str,
    /// The recorded upgrade's target (path and query).
    pub target: &'a str,
    /// 0-based index of the frame in the recorded conversation.
    pub frame_index: usize,
    /// The JSON path that differs (`$.a.b[0]`), when both frames are JSON.
    pub json_path: Option<&'a str>,
    /// What differs, in words.
    pub what: &'a str,
    /// The recorded and the live payload, as text (lossy), redacted.
    pub expected: &'a [u8],
    pub got: &'a [u8],
}

/// A WebSocket frame mismatch as the ring keeps it, redacted and bounded
/// like an HTTP miss report.
pub(super) fn frame_entry(redactor: &Redactor, miss: &FrameMiss<'_>) -> serde_json::Value {
    let text = |bytes: &[u8]| {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        cut_string(&mut text, MISS_ECHO_VALUE_BYTES_MAX);
        text
    };
    let bounded = |value: &str| text(value.as_bytes());
    let field = match miss.json_path {
        Some(path) => format!("json {}", bounded(path)),
        None => format!("frame {}", miss.frame_index),
    };
    let report = serde_json::json!({
        "error": "websocket-frame-mismatch",
        "fault": "recording",
        "message": format!(
            "session {}: WebSocket frame {} (client to server) differs from the recording: {}",
            bounded(miss.session), miss.frame_index, bounded(miss.what)
        ),
        "session": bounded(miss.session),
        "method": "GET",
        "target": bounded(miss.target),
        "frame_index": miss.frame_index,
        "json_path": miss.json_path.map(bounded),
        "differences": [{
            "field": field,
            "expected": text(miss.expected),
            "got": text(miss.got),
        }],
    });
    debug_assert!(report.to_string().len() <= MISS_ANSWER_BYTES_MAX);
    redact_json(redactor, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_kept_max() {
        let misses = Misses::new();
        for i in 0..MISSES_KEPT_MAX + 5 {
            misses.push(serde_json::json!({ "n": i }));
        }
        let kept = misses.kept.lock().unwrap();
        assert_eq!(kept.len(), MISSES_KEPT_MAX);
        assert_eq!(kept.front().unwrap()["n"], 5);
        assert_eq!(kept.back().unwrap()["n"], MISSES_KEPT_MAX + 4);
    }
}
