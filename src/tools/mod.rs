//! The tools around recordings, each a library function the CLI calls:
//!
//! * [`show`] — `ouli show FILE [N]`: one interaction (or all) whole:
//!   request, response, stream chunks, WebSocket frames; bodies as text,
//!   pretty JSON or a hex dump, cut at [`SHOW_BODY_BYTES_MAX`].
//! * [`diff`] — `ouli diff A B`: two recordings (or dirs of them) compared
//!   session by session, interactions paired by request identity and chain
//!   order, changes named in the miss report's vocabulary
//!   (`crate::fingerprint::field_differences`).
//! * [`har`] — `ouli export har` / `ouli import har`: HAR 1.2 out and in.
//!
//! All read recordings through [`crate::recording::Recording`] (never the
//! raw layout); `import har` writes them through
//! [`crate::recording::RecordingWriter`], identity built as the proxy
//! builds it. Errors are [`ToolError`], each saying whose fault it is: the
//! command line's ([`ToolError::is_usage`]), a recording's, an input file's.

pub mod diff;
pub mod har;
pub mod show;

pub use diff::{DiffReport, diff};
pub use har::{ImportHarReport, export_har, import_har};
pub use show::{SHOW_BODY_BYTES_MAX, ShowOptions, show};

use crate::recording::RecordingError;
use std::path::{Path, PathBuf};

/// Recordings a tool reads from one directory at most: a dir is walked
/// whole before anything is compared or exported.
pub const RECORDINGS_MAX: usize = 100_000;

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The command line asks for something that is not there (an
    /// interaction past the end, a file compared with a dir).
    #[error("{0}")]
    Usage(String),
    /// The config cannot be used (a bad regex, an unreadable secrets file).
    #[error("config: {0}")]
    Config(String),
    /// A recording is damaged or unreadable: the recording's fault.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// An input file (a HAR) is not what it should be: its maker's fault.
    #[error("{path}: {what}")]
    Input { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl ToolError {
    /// The user's to fix on the command line (exit 2), not a failure while
    /// running (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, ToolError::Usage(_) | ToolError::Config(_))
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One recording and the session it holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionFile {
    /// The session name: the file's path under its dir without `.ouli`
    /// (`a/b` for `<dir>/a/b.ouli`), or a lone file's stem.
    pub session: String,
    pub path: PathBuf,
}

/// The recordings at `path`: the file itself, or every `.ouli` file under
/// the dir (interrupted `.ouli.partial` ones left out), in session order.
/// Walked with an explicit stack: a dir tree is as deep as its maker made it.
pub fn session_files(path: &Path) -> Result<Vec<SessionFile>, ToolError> {
    let metadata = std::fs::metadata(path).map_err(io_error(path))?;
    if !metadata.is_dir() {
        let session = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![SessionFile {
            session,
            path: path.to_path_buf(),
        }]);
    }
    let mut found = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let file = entry.path();
            if entry.file_type().map_err(io_error(&file))?.is_dir() {
                pending.push(file);
                continue;
            }
            if file.extension().is_none_or(|ext| ext != "ouli") {
                continue;
            }
            if found.len() == RECORDINGS_MAX {
                return Err(ToolError::Usage(format!(
                    "{}: more than {RECORDINGS_MAX} recordings (RECORDINGS_MAX)",
                    path.display()
                )));
            }
            found.push(SessionFile {
                session: session_of(path, &file),
                path: file,
            });
        }
    }
    found.sort();
    Ok(found)
}

/// `a/b` for `<root>/a/b.ouli`, `/`-separated whatever the platform.
fn session_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).unwrap_or(file).with_extension("");
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A config's identity rules per endpoint (target, matcher, redactor), its
/// secrets and chain mode, compiled as the proxy compiles them. The one
/// place the tools take them from.
pub(crate) fn identity(
    config: &crate::config::Config,
) -> Result<crate::testserver::Converter, ToolError> {
    crate::testserver::Converter::new(config).map_err(|error| match error {
        crate::testserver::TestServerError::Config(what) => ToolError::Config(what),
        other => ToolError::Config(other.to_string()),
    })
}

/// The upstream of a canonical form's `target` line (`http://host:port`).
pub(crate) fn parse_target(target: &str) -> Option<crate::fingerprint::Target> {
    let (scheme, rest) = target.split_once("://")?;
    let (host, port) = rest.rsplit_once(':')?;
    Some(crate::fingerprint::Target {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

/// Recorded headers as a map, the ones that are not valid HTTP headers left
/// out (they take part in no canonical form).
pub(crate) fn header_map(headers: &[crate::interaction::HeaderPair]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}
