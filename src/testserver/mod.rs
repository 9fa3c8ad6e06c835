//! Compatibility with Google's `test-server` recording directories
//! (/work/shared/TEST-SERVER-FORMAT.md): serve them as they are, import them.
//!
//! CONTRACT (skeleton — the test-server engineer implements).

use crate::config::Config;
use crate::recording::Recording;
use crate::session_name::SessionName;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// For replay: when `<dir>/<session>.ouli` does not exist, the proxy asks this
/// for `<dir>/<session with spaces as _>.json` (and `.websocket.log`) converted
/// in memory into a [`Recording`], fingerprinted with `config`'s matching rules.
/// `Ok(None)` when there is no such file. Never writes into `dir`.
pub fn open_session(
    dir: &Path,
    session: &SessionName,
    config: &Config,
) -> Result<Option<Recording>, TestServerError> {
    let _ = (dir, session, config);
    Ok(None)
}

/// What `ouli import test-server SRC DST` did, per file.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// (source file, interactions converted).
    pub converted: Vec<(PathBuf, usize)>,
    /// (source file, what could not be converted and why).
    pub problems: Vec<(PathBuf, String)>,
}

/// Converts a test-server recording directory into ouli recordings.
pub fn import_dir(
    src: &Path,
    dst: &Path,
    config: &Config,
) -> Result<ImportReport, TestServerError> {
    let _ = (src, dst, config);
    todo!()
}
