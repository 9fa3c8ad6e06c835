//! Miss: a request with no recorded answer gets a JSON report (whose fault:
//! the recording's) naming the closest recorded requests and how they differ,
//! never a bare 500.
//!
//! Finding the closest is bounded, whatever the recording's size: a miss
//! compares the session's first [`MISS_SCAN_REQUESTS_MAX`] distinct recorded
//! requests and, past those, the ones with the same method and path
//! ([`MissIndex`], built at the session's first miss). Comparing every record
//! cost 145 ms per miss on a recording of 100k interactions (rfcs/0003), time
//! a shared fixture server's other clients waited for.

use super::lookup::Lookup;
use super::replay::ReplayAnswer;
use super::response::{ResponseBody, json_response};
use super::websocket::{self, Conversation};
use super::{
    Endpoint, MISS_CANDIDATES_MAX, MISS_INDEX_PATHS_MAX, MISS_SAME_PATH_MAX,
    MISS_SCAN_REQUESTS_MAX, Server,
};
use crate::config::ExhaustedPolicy;
use crate::fingerprint::{CANONICAL_VERSION, CanonicalRequest, field_differences};
use crate::record::off_executor;
use crate::recording::{RecordLocation, RecordView, Recording};
use crate::session_name::SessionName;
use http::{HeaderMap, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

/// Candidates (best by the quick line score) compared field by field.
const MISS_SHORTLIST_MAX: usize = 16;

/// Bytes of one echoed value (a header, a query value, a body, a path) in a
/// miss report: enough to see where two values differ; a 100 KB header or
/// body is not worth a 100 KB answer.
pub(super) const MISS_ECHO_VALUE_BYTES_MAX: usize = 1024;
/// Items of one echoed list or object (query parameters, headers, fields
/// differing, a JSON body's members) in a miss report.
pub(super) const MISS_ECHO_FIELDS_MAX: usize = 64;
/// Bytes of everything a miss report echoes of the request and the closest
/// recorded ones together; each echoed item costs [`ECHO_ITEM_COST`] too.
pub(super) const MISS_ECHO_BYTES_MAX: usize = 32 << 10;
/// A miss answer's bytes at most: past this (many long keys, say), the echo
/// is left out altogether.
pub(super) const MISS_ANSWER_BYTES_MAX: usize = 64 << 10;
/// What an echoed item costs of [`MISS_ECHO_BYTES_MAX`] besides its text
/// (quotes, separators, a key): bounds the items as well as their bytes.
const ECHO_ITEM_COST: usize = 16;

/// Where a miss looks for the closest recorded requests: the session's
/// distinct recorded requests, the first ones in order and the rest by
/// method and path. Built once per session, at its first miss: a replayed
/// recording does not change (record-missing records its misses instead of
/// reporting them).
pub(super) struct MissIndex {
    first: Vec<RecordLocation>,
    by_method_and_path: HashMap<u64, Vec<RecordLocation>>,
    hasher: RandomState,
}

impl MissIndex {
    /// One pass over the recording. Blocking: reads every record once.
    fn build(recording: &Recording) -> MissIndex {
        let hasher = RandomState::new();
        let mut seen = HashSet::new();
        let mut first = Vec::new();
        let mut by_method_and_path: HashMap<u64, Vec<RecordLocation>> = HashMap::new();
        for view in recording.iter().filter_map(Result::ok) {
            let canonical = view.canonical();
            if !seen.insert(hasher.hash_one(canonical)) {
                continue; // a chain's later links: the same request again
            }
            if first.len() < MISS_SCAN_REQUESTS_MAX {
                first.push(view.location());
                continue;
            }
            let key = method_and_path_key(&hasher, canonical);
            if by_method_and_path.len() >= MISS_INDEX_PATHS_MAX
                && !by_method_and_path.contains_key(&key)
            {
                continue;
            }
            let same = by_method_and_path.entry(key).or_default();
            if same.len() < MISS_SAME_PATH_MAX {
                same.push(view.location());
            }
        }
        MissIndex {
            first,
            by_method_and_path,
            hasher,
        }
    }

    /// The recorded requests a miss of `canonical` compares.
    fn candidates(&self, canonical: &[u8]) -> impl Iterator<Item = RecordLocation> + '_ {
        let key = method_and_path_key(&self.hasher, canonical);
        let same = self
            .by_method_and_path
            .get(&key)
            .map_or(&[][..], Vec::as_slice);
        self.first.iter().chain(same).copied()
    }
}

/// The lines of a canonical form, each a field (`method GET`, `query a=1`,
/// ...), the body last with its bytes.
fn canonical_lines(canonical: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = canonical.strip_prefix(CANONICAL_VERSION).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let line = match memchr::memchr(b'\n', rest) {
            Some(end) if !rest.starts_with(b"body ") => &rest[..end],
            _ => rest,
        };
        rest = rest.get(line.len() + 1..).unwrap_or(&[]);
        Some(line)
    })
}

fn line_starting<'a>(canonical: &'a [u8], word: &[u8]) -> &'a [u8] {
    canonical_lines(canonical)
        .find(|line| line.starts_with(word))
        .unwrap_or(&[])
}

fn method_and_path_key(hasher: &RandomState, canonical: &[u8]) -> u64 {
    hasher.hash_one((
        line_starting(canonical, b"method "),
        line_starting(canonical, b"path "),
    ))
}

/// The closest recorded requests to `canonical` (same method), best first,
/// with their field differences: a quick score (lines in one canonical form
/// and not the other) picks a shortlist, which is then ranked by its field
/// differences.
fn closest(
    recording: &Recording,
    index: &MissIndex,
    canonical: &[u8],
    got: &CanonicalRequest,
) -> Vec<(CanonicalRequest, Vec<serde_json::Value>)> {
    let got_lines: HashSet<&[u8]> = canonical_lines(canonical).collect();
    let got_method = line_starting(canonical, b"method ");
    let mut scored: Vec<(usize, RecordView)> = Vec::new();
    for location in index.candidates(canonical) {
        let Ok(view) = recording.read(location) else {
            continue;
        };
        let recorded = view.canonical();
        if line_starting(recorded, b"method ") != got_method {
            continue;
        }
        let (mut only_recorded, mut shared) = (0, 0);
        for line in canonical_lines(recorded) {
            if got_lines.contains(line) {
                shared += 1;
            } else {
                only_recorded += 1;
            }
        }
        let score = only_recorded + got_lines.len().saturating_sub(shared);
        scored.push((score, view));
    }
    scored.sort_by_key(|(score, view)| (*score, view.location().offset));
    let mut ranked: Vec<(usize, CanonicalRequest, Vec<serde_json::Value>)> = scored
        .into_iter()
        .take(MISS_SHORTLIST_MAX)
        .filter_map(|(_, view)| {
            let recorded = CanonicalRequest::parse(view.canonical())?;
            let differences = field_differences(&recorded, got);
            Some((differences.len(), recorded, differences))
        })
        .collect();
    ranked.sort_by_key(|(count, recorded, _)| (*count, recorded.path != got.path));
    ranked
        .into_iter()
        .take(MISS_CANDIDATES_MAX)
        .map(|(_, recorded, differences)| (recorded, differences))
        .collect()
}

/// What a miss is answered from, as plain values: the lookup (its step and
/// the session's recording), the session's miss index, the request.
pub(super) struct Missed<'a> {
    pub session: &'a SessionName,
    /// A miss or an exhausted chain (a hit is `replay::answer_hit`'s).
    pub lookup: &'a Lookup<'a>,
    /// Built at the session's first miss (`MissIndex`).
    pub miss_index: &'a OnceLock<MissIndex>,
    pub canonical: &'a [u8],
}

impl Server {
    /// Replay's answer to a request its recording does not answer at its
    /// chain position: test-server's conversation for an upgrade, the last
    /// recorded answer again if so configured, else the miss report.
    pub(super) async fn answer_miss(
        &self,
        endpoint: &Endpoint,
        missed: Missed<'_>,
        upgrade: Option<OnUpgrade>,
        headers: &HeaderMap,
        answer: ReplayAnswer,
    ) -> Response<ResponseBody> {
        // test-server logs no upgrade request: its conversation is
        // played to an upgrade ouli's own recording has none for.
        let upgrading = upgrade.is_some();
        if let Some(upgrade) = upgrade
            && let Some(frames) = missed
                .lookup
                .recording()
                .and_then(websocket::test_server_conversation)
        {
            return self.play_websocket(
                endpoint,
                missed.session.clone(),
                headers,
                upgrade,
                frames,
                Conversation::TestServer,
            );
        }
        // A conversation is not repeated: its frames are a script.
        if let Lookup::Exhausted {
            recording, last, ..
        } = *missed.lookup
            && !upgrading
            && self.options.config.on_chain_exhausted == ExhaustedPolicy::RepeatLast
        {
            return self.serve_record(recording.read(last), answer).await;
        }
        self.miss(endpoint, &missed, super::response::is_grpc(headers))
    }

    /// The miss report (module doc). To a gRPC call (`grpc`) it is
    /// answered as the call's status, `NOT_FOUND` with the report's short
    /// summary, which a gRPC client shows as it shows any status (an HTTP
    /// 404 it would report as a transport error with no message); the
    /// whole report is logged and kept for `/__ouli/misses` all the same.
    fn miss(&self, endpoint: &Endpoint, missed: &Missed<'_>, grpc: bool) -> Response<ResponseBody> {
        let Missed {
            session,
            lookup,
            miss_index,
            canonical,
        } = *missed;
        let step = lookup.step();
        let exhausted = matches!(lookup, Lookup::Exhausted { .. });
        let recording = lookup.recording();
        let got = CanonicalRequest::parse(canonical).unwrap_or_default();
        let mut closest: Vec<serde_json::Value> = match recording {
            Some(recording) => {
                // Building reads the whole recording (once per session):
                // the runtime moves this thread's other work meanwhile, and
                // a concurrent miss waits for it the same way.
                let index = match miss_index.get() {
                    Some(index) => index,
                    None => off_executor(|| miss_index.get_or_init(|| MissIndex::build(recording))),
                };
                closest(recording, index, canonical, &got)
                    .into_iter()
                    .map(|(c, differences)| {
                        serde_json::json!({
                            "method": c.method, "path": c.path,
                            "differences": differences,
                        })
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let config_arg = self
            .options
            .config
            .source
            .as_ref()
            .map(|p| format!(" --config {}", shell_word(&p.to_string_lossy())))
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
        // What is echoed of the request is bounded, in the answer and the log.
        let mut budget = MISS_ECHO_BYTES_MAX;
        let mut request = canonical_json(&got);
        bound_echo(&mut request, &mut budget);
        for candidate in &mut closest {
            bound_echo(candidate, &mut budget);
        }
        let mut path = got.path.clone();
        cut_string(&mut path, MISS_ECHO_VALUE_BYTES_MAX);
        // What a miss echoes was redacted before it was recorded or
        // canonicalized; it goes through the redactor again all the same,
        // as every message ouli writes does (a session name is the
        // client's too).
        let line = format!(
            "replay miss (endpoint {}): {message}; {} {path}; closest: {}",
            endpoint.index,
            got.method,
            serde_json::to_string(&closest).unwrap_or_default()
        );
        tracing::warn!("{}", endpoint.redactor.redact_str(&line));
        let mut report = serde_json::json!({
                "error": kind,
                "fault": "recording",
                "message": message,
                "session": session.as_str(),
                "fingerprint": step.fingerprint.to_hex(),
                "chain_position": step.position,
                "request": request,
                "closest_recorded": closest,
                "record_command": format!(
                    "{} record-missing{config_arg} --recording-dir {}",
                    invoked_binary(),
                    shell_word(&self.options.recording_dir.to_string_lossy())
                ),
        });
        if serde_json::to_vec_pretty(&report).map_or(0, |b| b.len()) > MISS_ANSWER_BYTES_MAX {
            let cut = format!("[cut: the report was over {MISS_ANSWER_BYTES_MAX} bytes]");
            report["request"] = cut.clone().into();
            report["closest_recorded"] = cut.into();
        }
        let report = redact_json(&endpoint.redactor, report);
        let entry = super::misses::http_entry(&endpoint.redactor, &report, &got, &path);
        self.misses.push(entry);
        let outcome = match exhausted {
            true => super::metrics::Outcome::Exhausted,
            false => super::metrics::Outcome::Miss,
        };
        if grpc {
            let summary = format!("ouli {kind}: {message}; {} {path}", got.method);
            return super::metrics::mark(
                super::response::grpc_status_response(
                    super::response::grpc_code::NOT_FOUND,
                    kind,
                    &endpoint.redactor.redact_str(&summary),
                ),
                outcome,
            );
        }
        super::metrics::mark(json_response(StatusCode::NOT_FOUND, kind, report), outcome)
    }
}

/// The binary a miss's `record_command` runs: this one, as it was invoked
/// (an SDK runs it as `test-server`, a wheel or npm package from a folder
/// that may not be on PATH), so that the command works when pasted. A
/// path with a `/` is made absolute; a bare name (found on PATH) becomes
/// the executable's own path, PATH being the invoker's.
fn invoked_binary() -> &'static str {
    static BINARY: OnceLock<String> = OnceLock::new();
    BINARY.get_or_init(|| {
        let invoked = std::env::args_os().next().map(std::path::PathBuf::from);
        let path = match invoked {
            Some(path) if path.as_os_str().as_encoded_bytes().contains(&b'/') => {
                std::path::absolute(&path).ok()
            }
            _ => std::env::current_exe().ok(),
        };
        path.map_or_else(|| "ouli".to_owned(), |p| shell_word(&p.to_string_lossy()))
    })
}

/// `word` as one POSIX shell word: as it is when it holds nothing the shell
/// reads, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-=:@,%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// `value` with every secret replaced, in any string of it. Its JSON text is
/// redacted (strings there are JSON-escaped, a form the redactor reads) and
/// parsed back; should a secret span JSON syntax, so that the text no longer
/// parses, only a note is left.
pub(super) fn redact_json(
    redactor: &crate::redact::Redactor,
    value: serde_json::Value,
) -> serde_json::Value {
    let text = value.to_string();
    match redactor.redact_str(&text) {
        std::borrow::Cow::Borrowed(_) => value,
        std::borrow::Cow::Owned(redacted) => serde_json::from_str(&redacted).unwrap_or_else(|_| {
            serde_json::json!({
                "error": value.get("error"),
                "fault": value.get("fault"),
                "message": "REDACTED (the report held a secret)",
            })
        }),
    }
}

/// Cuts what `value` echoes to the limits above, in order, from `budget`
/// (shared by the values of one report), marking what was cut. Iterative:
/// an echoed JSON body is as deep as the client made it.
pub(super) fn bound_echo(value: &mut serde_json::Value, budget: &mut usize) {
    use serde_json::Value;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) => {
                cut_string(text, MISS_ECHO_VALUE_BYTES_MAX.min(*budget));
                *budget = budget.saturating_sub(text.len());
            }
            Value::Array(items) => {
                let keep = items_kept(items.len(), budget);
                if items.len() > keep {
                    let cut = items.len() - keep;
                    items.truncate(keep);
                    items.push(Value::String(format!("[{cut} more cut]")));
                }
                let kept = items.len().min(keep);
                stack.extend(items[..kept].iter_mut().rev());
            }
            Value::Object(members) => {
                let keep = items_kept(members.len(), budget);
                if members.len() > keep {
                    let cut = members.len() - keep;
                    let all = std::mem::take(members);
                    members.extend(all.into_iter().take(keep));
                    members.insert("[cut]".into(), format!("{cut} more members").into());
                }
                let mut children: Vec<&mut Value> = Vec::with_capacity(keep);
                for (key, child) in members.iter_mut().take(keep) {
                    *budget = budget.saturating_sub(key.len());
                    children.push(child);
                }
                stack.extend(children.into_iter().rev());
            }
            _ => {}
        }
    }
}

/// How many of `len` items are kept, each charged [`ECHO_ITEM_COST`].
fn items_kept(len: usize, budget: &mut usize) -> usize {
    let keep = len.min(MISS_ECHO_FIELDS_MAX).min(*budget / ECHO_ITEM_COST);
    *budget -= keep * ECHO_ITEM_COST;
    keep
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how
/// many were cut.
pub(super) fn cut_string(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("[{cut} bytes cut]"));
}

pub(super) fn canonical_json(c: &CanonicalRequest) -> serde_json::Value {
    serde_json::json!({
        "target": c.target, "method": c.method, "path": c.path,
        "query": c.query, "headers": c.headers,
        "body_kind": c.body_kind, "body": String::from_utf8_lossy(&c.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_word_is_quoted_only_when_the_shell_would_read_it() {
        assert_eq!(shell_word("/usr/bin/ouli"), "/usr/bin/ouli");
        assert_eq!(shell_word("/a b/ouli"), "'/a b/ouli'");
        assert_eq!(shell_word("/it's/$HOME"), "'/it'\\''s/$HOME'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn an_echo_is_cut_to_its_bounds_whatever_its_shape() {
        let long = "é".repeat(10_000);
        let mut value = serde_json::json!({
            "body": long,
            "query": (0..5000).map(|i| [format!("p{i}"), format!("v{i}")]).collect::<Vec<_>>(),
        });
        // Deeper than the budget reaches (serde_json parses at most 128
        // levels; its drop recurses, so this stays droppable).
        let mut deep = serde_json::json!("leaf");
        for _ in 0..1000 {
            deep = serde_json::json!([deep, "x"]);
        }
        value["deep"] = deep;
        let mut budget = MISS_ECHO_BYTES_MAX;
        bound_echo(&mut value, &mut budget);
        let body = value["body"].as_str().unwrap();
        assert!(
            body.len() <= MISS_ECHO_VALUE_BYTES_MAX + 32,
            "{}",
            body.len()
        );
        assert!(body.ends_with("bytes cut]"));
        let query = value["query"].as_array().unwrap();
        assert_eq!(query.len(), MISS_ECHO_FIELDS_MAX + 1);
        assert_eq!(query[MISS_ECHO_FIELDS_MAX], "[4936 more cut]");
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(bytes.len() <= MISS_ANSWER_BYTES_MAX, "{}", bytes.len());
        assert!(String::from_utf8_lossy(&bytes).contains("more cut]"));
    }
}
