//! Session (test) names and the recording path they map to.
//!
//! A name comes from the `Test-Name` / `X-Ouli-Test-Name` header, i.e. from the
//! client, so it is untrusted: it must never name a file outside the recording
//! directory. `a/b/c` is allowed (nested folders, as test-server allows).
//!
//! A name is accepted exactly when it can be stored: its files
//! (`<name>.ouli`, `<name>.ouli.partial`) fit the file system's name limit,
//! and none of its folders can be a file ouli writes for another session.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted name, in bytes: a file name's limit on common file
/// systems (each segment must also fit with its `.ouli.partial` suffix).
pub const SESSION_NAME_BYTES_MAX: usize = 255;

/// File extension of an ouli recording.
pub const RECORDING_EXTENSION: &str = "ouli";

/// `.` and [`RECORDING_EXTENSION`]: what ends a finished recording's name.
const RECORDING_SUFFIX: &str = ".ouli";

/// Longest file name (one path segment), in bytes: `NAME_MAX` of the Linux
/// file systems ouli runs on (ext4, xfs, btrfs, tmpfs, overlayfs).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// The longest suffix ouli appends to a name's last segment: the recording
/// being written (`RecordingWriter::create`). The finished one is
/// `.ouli`; ouli writes no other file for a session.
pub const PARTIAL_SUFFIX: &str = ".ouli.partial";

/// Every suffix that turns a session name into one of its files: ouli's
/// (finished, being written) and test-server's (`<name>.json`,
/// `<name>.websocket.log`: replay serves such a directory as it is and
/// `import test-server` reads it). A folder ending in one of them would be
/// another session's file.
const SESSION_FILE_SUFFIXES: [&str; 4] =
    [RECORDING_SUFFIX, PARTIAL_SUFFIX, ".json", ".websocket.log"];

/// Longest last segment: with [`PARTIAL_SUFFIX`] it must fit
/// [`FILE_NAME_BYTES_MAX`] (242 bytes).
pub const LAST_SEGMENT_BYTES_MAX: usize = FILE_NAME_BYTES_MAX - PARTIAL_SUFFIX.len();

/// Name of the session that requests without a test-name header belong to.
pub const DEFAULT_SESSION: &str = "default";

/// A validated session name: one that can be stored. Accepted exactly when
///
/// * it is 1 to [`SESSION_NAME_BYTES_MAX`] bytes of UTF-8 without a control
///   character or `\`, not starting with `/`;
/// * its `/`-separated segments are neither empty, `.` nor `..` (it stays
///   inside the recording dir), and none starts with `.ouli` (reserved for
///   ouli's own files there, such as the write probe of `record`);
/// * its last segment is at most [`LAST_SEGMENT_BYTES_MAX`] bytes, so that
///   `<last>.ouli.partial` fits a file name ([`FILE_NAME_BYTES_MAX`]);
/// * no other segment (a folder) ends in `.ouli`, `.ouli.partial`, `.json`
///   or `.websocket.log`: that is the file of the session named by the
///   folder's stem, in ouli's layout or in test-server's, which replay serves
///   as it is (`a.ouli/x` and `a` cannot both be stored, nor `a.json/x` and
///   test-server's `a`).
///
/// ouli writes no other file for a session. The last segment needs no such
/// rule (`a.ouli` is stored as `a.ouli.ouli`), and test-server's longer
/// suffix (`.websocket.log`) is only read, never written, so it does not
/// bound the last segment. A foreign file in the way (a file where a folder
/// is wanted) is found when the recording starts, and the request is
/// answered `500 recording-failed`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionName(String);

/// Why a session name was refused. The client's fault: answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid test name {name:?}: {why}")]
pub struct SessionNameError {
    pub name: String,
    pub why: &'static str,
}

impl SessionName {
    /// Validates a name taken from a request header (raw bytes).
    pub fn parse_bytes(raw: &[u8]) -> Result<SessionName, SessionNameError> {
        match std::str::from_utf8(raw) {
            Ok(s) => SessionName::parse(s),
            Err(_) => Err(SessionNameError {
                name: String::from_utf8_lossy(raw).into_owned(),
                why: "not UTF-8",
            }),
        }
    }

    /// Validates a name: accepted exactly when it can be stored (see
    /// [`SessionName`]).
    pub fn parse(name: &str) -> Result<SessionName, SessionNameError> {
        let err = |why| {
            Err(SessionNameError {
                name: name.chars().take(300).collect(),
                why,
            })
        };
        if name.is_empty() {
            return err("empty");
        }
        if name.len() > SESSION_NAME_BYTES_MAX {
            return err("longer than 255 bytes");
        }
        if name.starts_with('/') {
            return err("starts with '/'");
        }
        if name.contains('\\') {
            return err("contains '\\'");
        }
        if name.chars().any(|c| c.is_control()) {
            return err("contains a control character");
        }
        let (folders, last) = match name.rsplit_once('/') {
            Some((folders, last)) => (Some(folders), last),
            None => (None, name),
        };
        for segment in folders.into_iter().flat_map(|f| f.split('/')) {
            if let Err(why) = check_segment(segment) {
                return err(why);
            }
            if SESSION_FILE_SUFFIXES.iter().any(|s| segment.ends_with(s)) {
                // `a.ouli/x` would need a folder where session `a` keeps its
                // recording (`a.ouli.partial/x`: where it writes it;
                // `a.json/x`: where test-server's layout keeps it).
                return err(
                    "a folder ends in '.ouli', '.ouli.partial', '.json' or '.websocket.log' (a session's file name)",
                );
            }
        }
        if let Err(why) = check_segment(last) {
            return err(why);
        }
        if last.len() > LAST_SEGMENT_BYTES_MAX {
            return err(
                "the last segment is longer than 242 bytes (with '.ouli.partial' it would not fit a file name)",
            );
        }
        Ok(SessionName(name.to_owned()))
    }

    /// The session of requests that carry no name.
    pub fn default_session() -> SessionName {
        SessionName(DEFAULT_SESSION.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<dir>/<name>.ouli`; nested names become folders under `dir`.
    pub fn recording_path(&self, dir: &Path) -> PathBuf {
        let mut p = dir.to_path_buf();
        p.push(format!("{}.{RECORDING_EXTENSION}", self.0));
        debug_assert!(p.starts_with(dir));
        p
    }
}

/// What every segment, folder or last, must be: a name inside its folder
/// that is not one of ouli's own.
fn check_segment(segment: &str) -> Result<(), &'static str> {
    match segment {
        "" => Err("contains an empty path segment"),
        "." | ".." => Err("contains a '.' or '..' segment"),
        _ if segment.starts_with(".ouli") => Err("a segment starts with '.ouli' (reserved)"),
        _ => Ok(()),
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_names_and_refuses_escapes() {
        assert!(SessionName::parse("a/b/c").is_ok());
        assert!(SessionName::parse("my test 1").is_ok());
        for bad in [
            "", "/abs", "a/../b", "..", "a\\b", "a\0b", "a\nb", "a//b", "a/",
        ] {
            assert!(SessionName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SessionName::parse(&"x".repeat(256)).is_err());
    }

    #[test]
    fn accepts_exactly_the_names_whose_files_fit_and_do_not_collide() {
        let last = "x".repeat(LAST_SEGMENT_BYTES_MAX);
        assert!(SessionName::parse(&last).is_ok());
        assert!(SessionName::parse(&format!("{last}y")).is_err());
        // Folders take no suffix: only the whole name's limit applies.
        let folder = "d".repeat(SESSION_NAME_BYTES_MAX - 2);
        assert!(SessionName::parse(&format!("{folder}/x")).is_ok());
        let full = format!(
            "{}/{last}",
            "d".repeat(SESSION_NAME_BYTES_MAX - 1 - last.len())
        );
        assert_eq!(full.len(), SESSION_NAME_BYTES_MAX);
        assert!(SessionName::parse(&full).is_ok());
        for bad in [
            "coll.ouli/x",
            "x.ouli.partial/y",
            "a/b.ouli/c",
            "t.json/x",
            "t.websocket.log/x",
            ".ouli-write-probe-1",
        ] {
            assert!(SessionName::parse(bad).is_err(), "{bad:?} accepted");
        }
        // As a last segment these are file names of their own (`a.ouli.ouli`).
        for good in [
            "a.ouli",
            "a.ouli.partial",
            "x.json",
            "x.jsonl/y",
            "x.ouli2/y",
        ] {
            assert!(SessionName::parse(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn recording_path_stays_inside_dir() {
        let dir = Path::new("/tmp/rec");
        let p = SessionName::parse("a/b").unwrap().recording_path(dir);
        assert_eq!(p, Path::new("/tmp/rec/a/b.ouli"));
    }
}
