//! Which recorded interactions a run served, and the report of those it
//! never did.
//!
//! [`Usage`] lives in every open [`Session`]: one bit per recorded
//! interaction (by its ordinal in the file), set at the hit with one atomic
//! load (and one `fetch_or` the first time), never under a lock. It also
//! counts the session's misses and which endpoints its requests came on.
//!
//! [`SessionReport`] is one (endpoint, session): the recording's
//! interactions, which were served, the misses and the chain positions. It
//! is built on demand, off the hot path, for `GET /__ouli/sessions`
//! (`admin.rs`), for the `--unused-report FILE` written at shutdown and for
//! the shutdown log line. Every recording in the recording dir is in it,
//! opened only then for one that no request touched (served 0).

use super::Server;
use super::session::Session;
use crate::recording::{ReadBackend, Recording};
use crate::session_name::SessionName;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request lines of never-served interactions the shutdown log names per
/// session (the rest are counted).
pub const UNUSED_LOGGED_MAX: usize = 5;
/// Interactions of one session that a report lists (admin answers and the
/// `--unused-report` file); past it the lists stop and say how many were
/// left out (`"left_out"`). The counts stay exact.
pub const REPORT_INTERACTIONS_MAX: usize = 100_000;
/// Recording files the report looks at in the recording dir (the first
/// found); a larger dir is reported in part, and says so in the log.
pub const REPORT_FILES_MAX: usize = 10_000;
/// Folder levels the report walks under the recording dir (nested session
/// names are folders).
pub const REPORT_DEPTH_MAX: usize = super::session::INTERRUPTED_SEARCH_DEPTH_MAX;
/// Served ordinals kept past the bits sized at the session's open (records
/// appended by record-missing during the run); more are not tracked.
pub const SERVED_LATE_MAX: usize = 65_536;
/// Bytes of a request target a report echoes.
pub const REPORT_TARGET_BYTES_MAX: usize = 2048;

/// One session's use of its recording: what was served, misses, endpoints.
pub(super) struct Usage {
    /// Bit `o` of the word `o / 64`: the interaction of ordinal `o` (0-based)
    /// was served at least once. Sized at open to the recording's length.
    served: Box<[AtomicU64]>,
    /// Served ordinals past `served` (records appended since the open),
    /// at most [`SERVED_LATE_MAX`]; off the replay path of a recording
    /// opened whole.
    late: Mutex<BTreeSet<u32>>,
    /// One bit per endpoint index, set when a request of this session came
    /// on that endpoint (a config has at most 64 endpoints: asserted below).
    endpoints_seen: AtomicU64,
    /// Misses by endpoint (a miss is the slow path: a lock is fine).
    misses: Mutex<Vec<(usize, u64)>>,
}

const _: () = assert!(crate::config::ENDPOINTS_MAX <= 64);

impl Usage {
    /// Tracks a recording of `interactions` interactions (0: none open yet).
    pub(super) fn new(interactions: usize) -> Usage {
        Usage {
            served: (0..interactions.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            late: Mutex::new(BTreeSet::new()),
            endpoints_seen: AtomicU64::new(0),
            misses: Mutex::new(Vec::new()),
        }
    }

    /// The interaction of `ordinal` was served. One atomic load once it
    /// is marked; the first time, one `fetch_or` too.
    pub(super) fn mark_served(&self, ordinal: u32) {
        let bit = 1u64 << (ordinal % 64);
        match self.served.get(ordinal as usize / 64) {
            Some(word) => {
                if word.load(Ordering::Relaxed) & bit == 0 {
                    word.fetch_or(bit, Ordering::Relaxed);
                }
            }
            None => {
                let mut late = self.late.lock().unwrap_or_else(|p| p.into_inner());
                if late.len() < SERVED_LATE_MAX {
                    late.insert(ordinal);
                }
            }
        }
    }

    pub(super) fn is_served(&self, ordinal: u32) -> bool {
        match self.served.get(ordinal as usize / 64) {
            Some(word) => word.load(Ordering::Relaxed) & (1u64 << (ordinal % 64)) != 0,
            None => self
                .late
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&ordinal),
        }
    }

    /// A request of the session came on endpoint `index`: a load, and an
    /// `fetch_or` the first time only.
    pub(super) fn note_endpoint(&self, index: usize) {
        let bit = 1u64 << (index % 64);
        if self.endpoints_seen.load(Ordering::Relaxed) & bit == 0 {
            self.endpoints_seen.fetch_or(bit, Ordering::Relaxed);
        }
    }

    fn endpoints_seen(&self) -> impl Iterator<Item = usize> {
        let seen = self.endpoints_seen.load(Ordering::Relaxed);
        (0..64).filter(move |i| seen & (1u64 << i) != 0)
    }

    pub(super) fn note_miss(&self, index: usize) {
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        match misses.iter_mut().find(|(i, _)| *i == index) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => misses.push((index, 1)),
        }
    }

    fn misses(&self, index: usize) -> u64 {
        let misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        misses
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, n)| *n)
    }
}

/// One recorded interaction as a report lists it.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// 1-based place in the recording.
    pub ordinal: u64,
    pub method: String,
    /// Path and query as recorded (redacted), at most
    /// [`REPORT_TARGET_BYTES_MAX`] bytes.
    pub path: String,
    pub status: u16,
    pub served: bool,
}

/// One chain of a session: a distinct recorded request, how many times it
/// was recorded and how far this run's chain has gone along it.
#[derive(Clone, Debug)]
pub(super) struct Chain {
    pub request: String,
    pub position: u32,
    pub length: u32,
}

/// One (endpoint, session) of a report.
#[derive(Clone, Debug)]
pub(super) struct SessionReport {
    pub endpoint: usize,
    pub name: String,
    pub file: Option<PathBuf>,
    pub interactions: usize,
    pub served: usize,
    pub misses: u64,
    pub chains: Vec<Chain>,
    /// In recorded order, at most [`REPORT_INTERACTIONS_MAX`].
    pub list: Vec<Entry>,
    /// Interactions past [`REPORT_INTERACTIONS_MAX`], not listed.
    pub left_out: usize,
}

impl SessionReport {
    /// `S` of the admin API: name, file, counts, chain positions.
    pub(super) fn summary_json(&self) -> serde_json::Value {
        let chains: Vec<_> = self
            .chains
            .iter()
            .map(|c| {
                serde_json::json!({ "request": c.request, "position": c.position, "length": c.length })
            })
            .collect();
        serde_json::json!({
            "endpoint": self.endpoint,
            "name": self.name,
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "interactions": self.interactions,
            "served": self.served,
            "misses": self.misses,
            "chains": chains,
        })
    }

    /// `S` with `interaction_list` and `unused`.
    pub(super) fn detail_json(&self) -> serde_json::Value {
        let mut json = self.summary_json();
        let list: Vec<_> = self
            .list
            .iter()
            .map(|e| {
                serde_json::json!({
                    "ordinal": e.ordinal, "method": e.method, "path": e.path,
                    "status": e.status, "served": e.served,
                })
            })
            .collect();
        json["interaction_list"] = list.into();
        json["unused"] = self.unused_json();
        json["left_out"] = self.left_out.into();
        json
    }

    /// The `--unused-report` file's entry for this (endpoint, session).
    pub(super) fn file_json(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.endpoint,
            "name": self.name,
            "file": self.file.as_ref().map(|f| f.display().to_string()),
            "interactions": self.interactions,
            "served": self.served,
            "unused": self.unused_json(),
            "left_out": self.left_out,
        })
    }

    fn unused_json(&self) -> serde_json::Value {
        self.list
            .iter()
            .filter(|e| !e.served)
            .map(|e| {
                serde_json::json!({
                    "ordinal": e.ordinal, "method": e.method, "path": e.path, "status": e.status,
                })
            })
            .collect::<Vec<_>>()
            .into()
    }

    /// The shutdown log line, when something was never served.
    fn log_unused(&self) {
        let unused = self.interactions - self.served;
        if unused == 0 {
            return;
        }
        let lines: Vec<String> = self
            .list
            .iter()
            .filter(|e| !e.served)
            .take(UNUSED_LOGGED_MAX)
            .map(|e| format!("{} {}", e.method, e.path))
            .collect();
        let more = unused.saturating_sub(lines.len());
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        tracing::info!(
            "unused: session {} endpoint {}: {unused} of {} recorded interactions never served: {}{more}",
            self.name,
            self.endpoint,
            self.interactions,
            lines.join(", "),
        );
    }
}

/// What one recording holds, per endpoint, before chains and usage are
/// laid over it.
struct Scanned {
    /// Per endpoint: entries (listed ones), their canonical hashes, counts.
    by_endpoint: HashMap<usize, EndpointScan>,
}

#[derive(Default)]
struct EndpointScan {
    interactions: usize,
    served: usize,
    list: Vec<Entry>,
    left_out: usize,
    /// Distinct canonical hashes in first-recorded order, with their
    /// request line and count.
    chains: Vec<([u8; 32], String, u32)>,
    chain_of: HashMap<[u8; 32], usize>,
}

/// Reads every interaction's head of `recording` (never its body).
fn scan(recording: &Recording, usage: Option<&Usage>) -> Scanned {
    let mut by_endpoint: HashMap<usize, EndpointScan> = HashMap::new();
    for view in recording.iter() {
        let Ok(view) = view else {
            continue; // a damaged record is `verify`'s to report
        };
        let ordinal = view.ordinal();
        let served = usage.is_some_and(|u| u.is_served(ordinal));
        let (method, target) = view.request_method_and_target();
        let method = String::from_utf8_lossy(method).into_owned();
        let mut path = String::from_utf8_lossy(target).into_owned();
        super::miss::cut_string(&mut path, REPORT_TARGET_BYTES_MAX);
        let scan = by_endpoint.entry(view.endpoint() as usize).or_default();
        scan.interactions += 1;
        scan.served += usize::from(served);
        let hash: [u8; 32] = Sha256::digest(view.canonical()).into();
        match scan.chain_of.get(&hash) {
            Some(&i) => scan.chains[i].2 = scan.chains[i].2.saturating_add(1),
            None => {
                scan.chain_of.insert(hash, scan.chains.len());
                scan.chains.push((hash, format!("{method} {path}"), 1));
            }
        }
        if scan.list.len() < REPORT_INTERACTIONS_MAX {
            scan.list.push(Entry {
                ordinal: u64::from(ordinal) + 1,
                method,
                path,
                status: view.response_status(),
                served,
            });
        } else {
            scan.left_out += 1;
        }
    }
    Scanned { by_endpoint }
}

/// The reports of one session: one per endpoint its recording holds or its
/// requests came on (endpoint 0 when neither).
fn reports_of(
    name: &SessionName,
    recording: Option<&Recording>,
    session: Option<&Session>,
) -> Vec<SessionReport> {
    let usage = session.map(|s| &s.usage);
    let mut scanned = recording.map_or_else(
        || Scanned {
            by_endpoint: HashMap::new(),
        },
        |r| scan(r, usage),
    );
    for index in usage.into_iter().flat_map(Usage::endpoints_seen) {
        scanned.by_endpoint.entry(index).or_default();
    }
    if scanned.by_endpoint.is_empty() {
        scanned.by_endpoint.insert(0, EndpointScan::default());
    }
    let file = recording.map(|r| absolute(r.path()));
    let chain = session.map(|s| s.chain.lock().unwrap_or_else(|p| p.into_inner()));
    let mut reports: Vec<SessionReport> = scanned
        .by_endpoint
        .into_iter()
        .map(|(endpoint, scan)| SessionReport {
            endpoint,
            name: name.as_str().to_owned(),
            file: file.clone(),
            interactions: scan.interactions,
            served: scan.served,
            misses: usage.map_or(0, |u| u.misses(endpoint)),
            chains: scan
                .chains
                .iter()
                .map(|(hash, request, length)| Chain {
                    request: request.clone(),
                    position: chain.as_ref().map_or(0, |c| c.position_of(hash)),
                    length: *length,
                })
                .collect(),
            list: scan.list,
            left_out: scan.left_out,
        })
        .collect();
    reports.sort_by_key(|r| r.endpoint);
    reports
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The session names of the recordings under `dir` (`<name>.ouli`, or an
/// interrupted `<name>.ouli.partial` with none beside it), at most
/// [`REPORT_FILES_MAX`], walked to [`REPORT_DEPTH_MAX`] levels.
fn recorded_sessions(dir: &Path) -> Vec<(SessionName, PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            if found.len() >= REPORT_FILES_MAX {
                tracing::warn!(
                    "report: {} holds more than REPORT_FILES_MAX = {REPORT_FILES_MAX} recordings; the first are reported",
                    dir.display()
                );
                return found;
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if depth < REPORT_DEPTH_MAX {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            if let Some(name) = session_of(dir, &path) {
                found.push((name, path));
            }
        }
    }
    found
}

/// The session whose recording `path` is, if it is one.
fn session_of(dir: &Path, path: &Path) -> Option<SessionName> {
    let relative = path.strip_prefix(dir).ok()?.to_str()?;
    let stem = match relative.strip_suffix(".ouli.partial") {
        Some(stem) if !path.with_extension("").is_file() => stem,
        Some(_) => return None, // the complete one beside it is in force
        None => relative.strip_suffix(".ouli")?,
    };
    SessionName::parse(stem).ok()
}

impl Server {
    /// Every (endpoint, session) known: the live sessions, then the
    /// recordings on disk that no request touched. Blocking (opens files):
    /// run it off the executor.
    pub(super) fn session_reports(&self) -> Vec<SessionReport> {
        let live: Vec<(SessionName, std::sync::Arc<Session>)> = self
            .sessions
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut reports = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, session) in &live {
            reports.extend(reports_of(
                name,
                session.recording(),
                Some(session.as_ref()),
            ));
            seen.insert(name.clone());
        }
        for (name, path) in recorded_sessions(&self.options.recording_dir) {
            if seen.contains(&name) {
                continue;
            }
            match Recording::open(&path, ReadBackend::Mmap) {
                Ok(recording) => reports.extend(reports_of(&name, Some(&recording), None)),
                Err(error) => tracing::warn!("report: {error}"),
            }
            seen.insert(name);
        }
        reports.sort_by(|a, b| (&a.name, a.endpoint).cmp(&(&b.name, b.endpoint)));
        reports
    }

    /// One session's reports (one per endpoint), live or on disk; empty
    /// when it is neither.
    pub(super) fn session_report(&self, name: &SessionName) -> Vec<SessionReport> {
        if let Some(session) = self.sessions.get(name).map(|s| s.clone()) {
            return reports_of(name, session.recording(), Some(session.as_ref()));
        }
        let path = name.recording_path(&self.options.recording_dir);
        let partial = path.with_extension("ouli.partial");
        let Some(found) = [path, partial].into_iter().find(|p| p.is_file()) else {
            return Vec::new();
        };
        match Recording::open(&found, ReadBackend::Mmap) {
            Ok(recording) => reports_of(name, Some(&recording), None),
            Err(error) => {
                tracing::warn!("report: {error}");
                Vec::new()
            }
        }
    }

    /// At shutdown: logs what each session never served (runs that served
    /// from recordings) and writes the `--unused-report` file.
    pub(super) fn report_unused(&self, log: bool) -> Result<(), super::ServeError> {
        if !log && self.options.unused_report.is_none() {
            return Ok(());
        }
        let reports = self.session_reports();
        if log {
            for report in &reports {
                report.log_unused();
            }
        }
        let Some(path) = &self.options.unused_report else {
            return Ok(());
        };
        let sessions: Vec<_> = reports.iter().map(SessionReport::file_json).collect();
        let json = serde_json::json!({ "sessions": sessions });
        write_report(path, &json).map_err(|source| super::ServeError::Report {
            path: path.clone(),
            source,
        })?;
        tracing::info!("unused report written to {}", path.display());
        Ok(())
    }
}

/// Writes beside `path` and renames over it: a reader never sees half.
fn write_report(path: &Path, json: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    serde_json::to_writer_pretty(&mut file, json)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_bits_and_late_ordinals() {
        let usage = Usage::new(70);
        assert!(!usage.is_served(0) && !usage.is_served(69));
        usage.mark_served(0);
        usage.mark_served(69);
        usage.mark_served(69);
        assert!(usage.is_served(0) && usage.is_served(69) && !usage.is_served(1));
        // Past the bits sized at open: kept beside them.
        assert!(!usage.is_served(500));
        usage.mark_served(500);
        assert!(usage.is_served(500));
    }

    #[test]
    fn endpoints_and_misses() {
        let usage = Usage::new(0);
        usage.note_endpoint(3);
        usage.note_endpoint(0);
        usage.note_endpoint(3);
        assert_eq!(usage.endpoints_seen().collect::<Vec<_>>(), [0, 3]);
        usage.note_miss(3);
        usage.note_miss(3);
        assert_eq!((usage.misses(3), usage.misses(0)), (2, 0));
    }

    #[test]
    fn a_recording_file_names_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b.ouli");
        assert_eq!(session_of(dir.path(), &nested).unwrap().as_str(), "a/b");
        assert!(session_of(dir.path(), &dir.path().join("x.json")).is_none());
        let partial = dir.path().join("p.ouli.partial");
        assert_eq!(session_of(dir.path(), &partial).unwrap().as_str(), "p");
        std::fs::write(dir.path().join("p.ouli"), b"").unwrap();
        assert!(session_of(dir.path(), &partial).is_none());
    }
}
