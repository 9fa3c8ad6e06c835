//! `ouli diff A B [--config C] [--json]`: what changed between two
//! recordings, or two recording dirs session by session.
//!
//! Interactions are paired by request identity and chain order: the n-th
//! occurrence of a canonical request in A's session with the n-th in B's
//! (as `chain: request` replays them). An unpaired one in A was *removed*,
//! in B *added*; a pair whose answers differ *changed*, each change named in
//! the miss report's vocabulary (`status`, `header NAME`, `json $.a.b`,
//! `body`; [`crate::fingerprint::field_differences`] and its parts) with
//! A's value and B's.
//!
//! Without `--config` the identity is the canonical form each record keeps
//! and response headers compare as the default match rules see request
//! headers (volatile ones such as `date` left out). With it, both sides'
//! canonical forms are computed again from the recorded requests with the
//! endpoint's match rules, and the same rules apply to the answers: ignored
//! headers are not compared, ignored JSON paths neither.

use super::{SessionFile, ToolError, header_map, identity, parse_target, session_files};
use crate::config::Config;
use crate::fingerprint::{
    CanonicalRequest, MatchRules, Matcher, RequestParts, bytes_differences, list_differences,
};
use crate::interaction::{Exchange, Interaction, WsFrame};
use crate::recording::{ReadBackend, Recording};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Changes listed per interaction; the rest are counted.
pub const DIFF_CHANGES_MAX: usize = 64;
/// Bytes of one value shown in a change (a header, a body): enough to see
/// where two differ, as in a miss report.
pub const DIFF_VALUE_BYTES_MAX: usize = 1024;

/// Everything `diff` found. Equal when it holds no difference.
#[derive(Debug, Default, Serialize)]
pub struct DiffReport {
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    /// Every session in both, equal or not.
    pub sessions: Vec<SessionDiff>,
}

impl DiffReport {
    pub fn is_equal(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.sessions.iter().all(SessionDiff::is_equal)
    }
}

/// One session in both A and B.
#[derive(Debug, Default, Serialize)]
pub struct SessionDiff {
    pub session: String,
    /// In A, not in B.
    pub removed: Vec<Listed>,
    /// In B, not in A.
    pub added: Vec<Listed>,
    pub changed: Vec<Changed>,
}

impl SessionDiff {
    pub fn is_equal(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty() && self.changed.is_empty()
    }
}

/// An interaction of one side.
#[derive(Debug, Serialize)]
pub struct Listed {
    /// Its number in its recording, from 1 (as `ouli inspect` lists it).
    pub ordinal: usize,
    pub method: String,
    pub target: String,
    /// How many times the same request came before it in the session.
    pub chain_position: usize,
}

/// A request in both whose answers differ.
#[derive(Debug, Serialize)]
pub struct Changed {
    pub ordinal_a: usize,
    pub ordinal_b: usize,
    pub method: String,
    pub target: String,
    pub chain_position: usize,
    /// `{"field", "a", "b"}` each.
    pub changes: Vec<Value>,
    /// Changes past [`DIFF_CHANGES_MAX`], not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_changes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `ouli diff A B`: two recordings, or two dirs of them.
pub fn diff(a: &Path, b: &Path, config: Option<&Config>) -> Result<DiffReport, ToolError> {
    if a.is_dir() != b.is_dir() {
        return Err(ToolError::Usage(format!(
            "{} and {}: compare two recordings or two recording dirs, not one of each",
            a.display(),
            b.display()
        )));
    }
    let rules = Rules::new(config)?;
    let (files_a, files_b) = (session_files(a)?, session_files(b)?);
    let mut report = DiffReport::default();
    if !a.is_dir() {
        // Two files: one session each, whatever their names.
        let session = files_a[0].session.clone();
        report
            .sessions
            .push(diff_session(session, &files_a[0], &files_b[0], &rules)?);
        return Ok(report);
    }
    let by_name = |files: &[SessionFile]| -> HashMap<String, SessionFile> {
        files
            .iter()
            .map(|f| (f.session.clone(), f.clone()))
            .collect()
    };
    let (map_a, map_b) = (by_name(&files_a), by_name(&files_b));
    let names: BTreeSet<&String> = map_a.keys().chain(map_b.keys()).collect();
    for name in names {
        match (map_a.get(name), map_b.get(name)) {
            (Some(fa), Some(fb)) => {
                report
                    .sessions
                    .push(diff_session(name.clone(), fa, fb, &rules)?)
            }
            (Some(_), None) => report.only_in_a.push(name.clone()),
            (None, _) => report.only_in_b.push(name.clone()),
        }
    }
    Ok(report)
}

/// How requests are identified and answers compared.
struct Rules {
    /// Per endpoint, with `--config`: identity computed again.
    endpoints: Option<Vec<Matcher>>,
    /// Which response headers and JSON paths are compared: endpoint 0's
    /// rules with `--config` for an endpoint the config lacks, the default
    /// rules without.
    default: Matcher,
}

impl Rules {
    fn new(config: Option<&Config>) -> Result<Rules, ToolError> {
        let Some(config) = config else {
            return Ok(Rules {
                endpoints: None,
                default: Matcher::new(&MatchRules::default()),
            });
        };
        let identity = identity(config)?;
        let matchers: Vec<Matcher> = identity
            .endpoints
            .into_iter()
            .map(|rules| rules.matcher().clone())
            .collect();
        Ok(Rules {
            default: matchers[0].clone(),
            endpoints: Some(matchers),
        })
    }

    fn matcher(&self, endpoint: u16) -> &Matcher {
        self.endpoints
            .as_ref()
            .and_then(|m| m.get(usize::from(endpoint)))
            .unwrap_or(&self.default)
    }

    /// The identity of `interaction`: its recorded canonical form, or one
    /// computed again with the config's rules.
    fn key(&self, interaction: &Interaction) -> Vec<u8> {
        let recorded = interaction.canonical.to_vec();
        if self.endpoints.is_none() {
            return recorded;
        }
        let Some(target) = CanonicalRequest::parse(&recorded).and_then(|c| parse_target(&c.target))
        else {
            return recorded;
        };
        let request = &interaction.request;
        let headers = header_map(&request.headers);
        let mut canonical = Vec::with_capacity(recorded.len());
        self.matcher(interaction.endpoint).canonical_form(
            &target,
            &RequestParts {
                method: &request.method,
                path_and_query: &request.target,
                headers: &headers,
                body: &request.body,
            },
            &mut canonical,
        );
        canonical
    }
}

/// One interaction as compared.
struct Side {
    ordinal: usize,
    key: Vec<u8>,
    interaction: Interaction,
}

fn read_sides(file: &SessionFile, rules: &Rules) -> Result<Vec<Side>, ToolError> {
    let recording = Recording::open(&file.path, ReadBackend::Mmap)?;
    let mut sides = Vec::with_capacity(recording.len());
    for (index, view) in recording.iter().enumerate() {
        let interaction = view?.to_interaction()?;
        sides.push(Side {
            ordinal: index + 1,
            key: rules.key(&interaction),
            interaction,
        });
    }
    Ok(sides)
}

/// Each side's chain position: how many times its key came before it.
fn positions(sides: &[Side]) -> Vec<usize> {
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    sides
        .iter()
        .map(|side| {
            let n = seen.entry(side.key.as_slice()).or_insert(0);
            *n += 1;
            *n - 1
        })
        .collect()
}

fn listed(side: &Side, chain_position: usize) -> Listed {
    Listed {
        ordinal: side.ordinal,
        method: String::from_utf8_lossy(&side.interaction.request.method).into_owned(),
        target: String::from_utf8_lossy(&side.interaction.request.target).into_owned(),
        chain_position,
    }
}

fn diff_session(
    session: String,
    a: &SessionFile,
    b: &SessionFile,
    rules: &Rules,
) -> Result<SessionDiff, ToolError> {
    let (sides_a, sides_b) = (read_sides(a, rules)?, read_sides(b, rules)?);
    let (positions_a, positions_b) = (positions(&sides_a), positions(&sides_b));
    let mut in_b: HashMap<(&[u8], usize), usize> = sides_b
        .iter()
        .zip(&positions_b)
        .enumerate()
        .map(|(i, (side, &n))| ((side.key.as_slice(), n), i))
        .collect();
    let mut report = SessionDiff {
        session,
        ..SessionDiff::default()
    };
    for (side, &n) in sides_a.iter().zip(&positions_a) {
        let Some(j) = in_b.remove(&(side.key.as_slice(), n)) else {
            report.removed.push(listed(side, n));
            continue;
        };
        let other = &sides_b[j];
        let matcher = rules.matcher(side.interaction.endpoint);
        let mut changes = answer_differences(&side.interaction, &other.interaction, matcher);
        if changes.is_empty() {
            continue;
        }
        let more_changes = changes.len().saturating_sub(DIFF_CHANGES_MAX);
        changes.truncate(DIFF_CHANGES_MAX);
        let base = listed(side, n);
        report.changed.push(Changed {
            ordinal_a: side.ordinal,
            ordinal_b: other.ordinal,
            method: base.method,
            target: base.target,
            chain_position: n,
            changes,
            more_changes,
        });
    }
    let mut added: Vec<usize> = in_b.into_values().collect();
    added.sort_unstable();
    report.added = added
        .into_iter()
        .map(|j| listed(&sides_b[j], positions_b[j]))
        .collect();
    Ok(report)
}

/// How two answers to one request differ: status, each compared header,
/// the body (JSON paths when both are JSON), WebSocket frames. Each
/// `{"field", "a", "b"}`, values cut to [`DIFF_VALUE_BYTES_MAX`].
fn answer_differences(a: &Interaction, b: &Interaction, matcher: &Matcher) -> Vec<Value> {
    let (response_a, frames_a) = parts(a);
    let (response_b, frames_b) = parts(b);
    let mut out = Vec::new();
    if response_a.status != response_b.status {
        out.push(serde_json::json!({
            "field": "status", "expected": response_a.status, "got": response_b.status,
        }));
    }
    list_differences(
        "header",
        &compared_headers(&response_a.headers, matcher),
        &compared_headers(&response_b.headers, matcher),
        &mut out,
    );
    let body = |r: &crate::interaction::RecordedResponse| -> Vec<u8> {
        r.chunks.iter().flat_map(|c| c.data.to_vec()).collect()
    };
    body_changes("", &body(response_a), &body(response_b), matcher, &mut out);
    if let (Some(fa), Some(fb)) = (frames_a, frames_b) {
        frame_changes(fa, fb, matcher, &mut out);
    }
    out.into_iter().map(as_a_and_b).collect()
}

fn parts(interaction: &Interaction) -> (&crate::interaction::RecordedResponse, Option<&[WsFrame]>) {
    match &interaction.exchange {
        Exchange::Http(response) => (response, None),
        Exchange::WebSocket { response, frames } => (response, Some(frames.as_slice())),
    }
}

/// Response headers that take part in the comparison, as request headers
/// take part in identity: lower-case names, trimmed values, sorted.
fn compared_headers(
    headers: &[crate::interaction::HeaderPair],
    matcher: &Matcher,
) -> Vec<(String, String)> {
    let mut compared: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).to_ascii_lowercase(),
                String::from_utf8_lossy(value).trim().to_owned(),
            )
        })
        .filter(|(name, _)| matcher.header_matches(name))
        .collect();
    compared.sort();
    compared
}

/// Two bodies compared: canonical JSON (ignored paths left out) when both
/// are JSON, else bytes. Fields get `prefix` (`frame 3 `).
fn body_changes(prefix: &str, a: &[u8], b: &[u8], matcher: &Matcher, out: &mut Vec<Value>) {
    let (mut ca, mut cb) = (Vec::new(), Vec::new());
    let both_json = matcher.canonical_json(a, &mut ca) && matcher.canonical_json(b, &mut cb);
    let (a, b) = if both_json {
        (ca.as_slice(), cb.as_slice())
    } else {
        (a, b)
    };
    if a == b {
        return;
    }
    let start = out.len();
    bytes_differences(a, b, out);
    if !prefix.is_empty() {
        for change in &mut out[start..] {
            if let Some(field) = change["field"].as_str() {
                change["field"] = format!("{prefix}{field}").into();
            }
        }
    }
}

/// A conversation's frames compared one by one, in order.
fn frame_changes(a: &[WsFrame], b: &[WsFrame], matcher: &Matcher, out: &mut Vec<Value>) {
    if a.len() != b.len() {
        out.push(serde_json::json!({ "field": "frames", "expected": a.len(), "got": b.len() }));
    }
    for (i, (fa, fb)) in a.iter().zip(b).enumerate() {
        let prefix = format!("frame {} ", i + 1);
        if (fa.direction, fa.opcode) != (fb.direction, fb.opcode) {
            out.push(serde_json::json!({
                "field": format!("{prefix}opcode"),
                "expected": format!("{:?} {}", fa.direction, fa.opcode),
                "got": format!("{:?} {}", fb.direction, fb.opcode),
            }));
        }
        body_changes(&prefix, &fa.payload, &fb.payload, matcher, out);
        if out.len() > DIFF_CHANGES_MAX {
            return; // enough to say they differ; the rest is not listed
        }
    }
}

/// A difference in the shared vocabulary (`expected` / `got`) as A's and
/// B's values, each cut to [`DIFF_VALUE_BYTES_MAX`].
fn as_a_and_b(change: Value) -> Value {
    let cut = |value: &Value| match value {
        Value::String(text) if text.len() > DIFF_VALUE_BYTES_MAX => {
            let mut end = DIFF_VALUE_BYTES_MAX;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}[{} bytes cut]", &text[..end], text.len() - end))
        }
        other => other.clone(),
    };
    serde_json::json!({
        "field": change["field"],
        "a": cut(&change["expected"]),
        "b": cut(&change["got"]),
    })
}

/// The text form of a report: only what differs, one line per item.
pub fn write_text(report: &DiffReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    for session in &report.only_in_a {
        writeln!(out, "only in A: session {session}")?;
    }
    for session in &report.only_in_b {
        writeln!(out, "only in B: session {session}")?;
    }
    for session in report.sessions.iter().filter(|s| !s.is_equal()) {
        writeln!(out, "session {}:", session.session)?;
        for l in &session.removed {
            writeln!(out, "  removed  A#{} {} {}", l.ordinal, l.method, l.target)?;
        }
        for l in &session.added {
            writeln!(out, "  added    B#{} {} {}", l.ordinal, l.method, l.target)?;
        }
        for c in &session.changed {
            writeln!(
                out,
                "  changed  A#{} B#{} {} {}",
                c.ordinal_a, c.ordinal_b, c.method, c.target
            )?;
            for change in &c.changes {
                writeln!(
                    out,
                    "    {}: {} -> {}",
                    change["field"].as_str().unwrap_or_default(),
                    change["a"],
                    change["b"]
                )?;
            }
            if c.more_changes > 0 {
                writeln!(out, "    ... {} more change(s)", c.more_changes)?;
            }
        }
    }
    if report.is_equal() {
        writeln!(out, "equal: {} session(s) compared", report.sessions.len())?;
    }
    Ok(())
}
