//! Session: which test a request belongs to (`Test-Name`), and that test's
//! state: its recording, opened at its first request, and its chain.
//! Sessions never share a lock. Also the start-up report of recordings a
//! crash interrupted.

use super::response::{ResponseBody, error_response};
use super::{Mode, Server};
use crate::chain::{ChainMode, ChainState};
use crate::recording::{ReadBackend, Recording};
use crate::session_name::SessionName;
use http::{HeaderMap, Response, StatusCode};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// One session's state: its recording and its chain; its lock is never
/// shared with another session.
pub struct Session {
    pub(super) recording: Option<Recording>,
    /// record-missing only: the recording this process started for a session
    /// that had none, opened once its first record is on disk.
    pub(super) late_recording: std::sync::OnceLock<Recording>,
    pub(super) chain: Mutex<ChainState>,
    /// Where a miss looks for the closest recorded requests; built at the
    /// session's first miss.
    pub(super) miss_index: std::sync::OnceLock<super::miss::MissIndex>,
    /// Which recorded interactions were served, misses (`usage.rs`).
    pub(super) usage: super::usage::Usage,
}

impl Session {
    /// A session serving `recording` (none: every request misses), its
    /// chain at the head.
    pub fn new(recording: Option<Recording>, chain: ChainMode) -> Session {
        Session {
            usage: super::usage::Usage::new(recording.as_ref().map_or(0, Recording::len)),
            recording,
            late_recording: std::sync::OnceLock::new(),
            chain: Mutex::new(ChainState::new(chain)),
            miss_index: std::sync::OnceLock::new(),
        }
    }

    pub(super) fn recording(&self) -> Option<&Recording> {
        self.recording
            .as_ref()
            .or_else(|| self.late_recording.get())
    }

    /// Sees records appended since open (record-missing): refreshes the open
    /// recording, or opens the one started since.
    pub(super) fn reload(&self, path: PathBuf, backend: ReadBackend) -> Option<&Recording> {
        if let Some(recording) = self.recording() {
            if let Err(error) = recording.refresh() {
                tracing::warn!("{error}");
            }
            return Some(recording);
        }
        let partial = path.with_extension("ouli.partial");
        let found = [path, partial].into_iter().find(|p| p.is_file())?;
        match Recording::open(&found, backend) {
            Ok(recording) => Some(self.late_recording.get_or_init(|| recording)),
            Err(error) => {
                tracing::warn!("{error}");
                None
            }
        }
    }
}

impl Server {
    /// The request's own session header, else the endpoint's active
    /// session (`admin.rs`), else the default session.
    pub(super) fn session_name(
        &self,
        endpoint: usize,
        headers: &HeaderMap,
    ) -> Result<SessionName, crate::session_name::SessionNameError> {
        let configured = self.options.config.session_header.as_deref();
        let value = ["test-name", "x-ouli-test-name"]
            .into_iter()
            .chain(configured)
            .find_map(|name| headers.get(name));
        match value {
            Some(value) => SessionName::parse_bytes(value.as_bytes()),
            None => Ok(self
                .admin
                .active_session(endpoint)
                .unwrap_or_else(SessionName::default_session)),
        }
    }

    /// The session's state, opened at its first request. A new session is
    /// refused while `limits.sessions_max` are known to the process; one
    /// ended (`/__ouli/sessions/<name>/end`) is no longer counted.
    pub(super) fn session(&self, name: &SessionName) -> Result<Arc<Session>, SessionError> {
        if let Some(session) = self.sessions.get(name) {
            return Ok(session.clone());
        }
        if !self.reserve_session_slot() {
            // A request of the same new session may have taken the last slot.
            if let Some(session) = self.sessions.get(name) {
                return Ok(session.clone());
            }
            return Err(self.too_many_sessions(name));
        }
        let opened = self.open_session(name);
        let session = match opened {
            Ok(session) => session,
            Err(message) => {
                self.sessions_known.fetch_sub(1, Ordering::AcqRel);
                return Err(SessionError::Unreadable(message));
            }
        };
        match self.sessions.entry(name.clone()) {
            dashmap::Entry::Occupied(entry) => {
                // Opened meanwhile by a request of the same session.
                self.sessions_known.fetch_sub(1, Ordering::AcqRel);
                Ok(entry.get().clone())
            }
            dashmap::Entry::Vacant(entry) => Ok(entry.insert(session).clone()),
        }
    }

    /// Drops `name` from the sessions held, freeing its `limits.sessions_max`
    /// slot.
    pub(super) fn forget_session(&self, name: &SessionName) {
        if self.sessions.remove(name).is_some() {
            self.sessions_known.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes one of the `limits.sessions_max` slots, if one is free.
    fn reserve_session_slot(&self) -> bool {
        let max = self.options.config.limits.sessions_max;
        self.sessions_known
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |known| {
                (known < max).then_some(known + 1)
            })
            .is_ok()
    }

    fn too_many_sessions(&self, name: &SessionName) -> SessionError {
        let max = self.options.config.limits.sessions_max;
        if let Some(suppressed) = self.sessions_refused_log.hit() {
            tracing::warn!(
                "session {name} refused (503): limits.sessions_max = {max} sessions are known ({suppressed} more refused since the last line)"
            );
        }
        SessionError::TooMany { max }
    }

    fn open_session(&self, name: &SessionName) -> Result<Arc<Session>, String> {
        let dir = &self.options.recording_dir;
        let path = name.recording_path(dir);
        let partial = path.with_extension("ouli.partial");
        // Every mode but record serves from recordings, or may once the
        // admin API switches it (passthrough opens no session).
        let recording = if self.options.mode == Mode::Record {
            None
        } else if path.is_file() {
            Some(Recording::open(&path, self.backend).map_err(|e| e.to_string())?)
        } else if partial.is_file() {
            tracing::warn!(
                "session {name}: serving the interrupted recording {} (adopt it with `mv {} {}`)",
                partial.display(),
                partial.display(),
                path.display()
            );
            Some(Recording::open(&partial, self.backend).map_err(|e| e.to_string())?)
        } else {
            // Reading and converting a JSON file blocks: let the runtime move
            // other work off this thread meanwhile (first request only).
            crate::record::off_executor(|| {
                crate::testserver::open_session(dir, name, &self.options.config)
            })
            .map_err(|e| e.to_string())?
        };
        Ok(Arc::new(Session::new(recording, self.options.config.chain)))
    }
}

/// Why a request's session could not be had.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// Its recording could not be opened.
    #[error("{0}")]
    Unreadable(String),
    #[error("a new session would be one over limits.sessions_max = {max}")]
    TooMany { max: usize },
}

impl SessionError {
    pub(super) fn into_response(self) -> Response<ResponseBody> {
        match self {
            SessionError::Unreadable(message) => error_response(
                StatusCode::BAD_GATEWAY,
                "recording",
                "recording-unreadable",
                message,
            ),
            too_many @ SessionError::TooMany { .. } => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "client",
                "too-many-sessions",
                too_many.to_string(),
            ),
        }
    }
}

/// Directory levels searched for interrupted recordings (nested session
/// names are folders); bounds the start-up walk.
pub(super) const INTERRUPTED_SEARCH_DEPTH_MAX: usize = 16;

/// Finds the recordings a crash interrupted (`<session>.ouli.partial`) and
/// says, for each, what this start does with it.
pub(super) fn report_interrupted_recordings(dir: &Path, mode: Mode) {
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if depth < INTERRUPTED_SEARCH_DEPTH_MAX {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(stem) = name.strip_suffix(".ouli.partial") else {
                continue;
            };
            let complete = path.with_file_name(format!("{stem}.ouli"));
            let interactions = Recording::open(&path, ReadBackend::Mmap)
                .map(|r| r.len().to_string())
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            if complete.is_file() {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) kept beside {}, which stays in force; to adopt it: mv '{}' '{}'",
                    path.display(),
                    complete.display(),
                    path.display(),
                    complete.display()
                );
            } else if mode == Mode::Record {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) is replaced if this run records session {stem} again; keep it with: mv '{}' '{}'",
                    path.display(),
                    path.display(),
                    complete.display()
                );
            } else {
                tracing::warn!(
                    "interrupted recording {} ({interactions} interactions) is served as it is; make it the session's recording with: mv '{}' '{}'",
                    path.display(),
                    path.display(),
                    complete.display()
                );
            }
        }
    }
}
