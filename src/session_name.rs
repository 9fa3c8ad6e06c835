//! Session (test) names and the recording path they map to.
//!
//! A name comes from the `Test-Name` / `X-Ouli-Test-Name` header, i.e. from the
//! client, so it is untrusted: it must never name a file outside the recording
//! directory. `a/b/c` is allowed (nested folders, as test-server allows).

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest accepted name, in bytes (DESIGN.md: at most 255 bytes).
pub const SESSION_NAME_BYTES_MAX: usize = 255;

/// File extension of an ouli recording.
pub const RECORDING_EXTENSION: &str = "ouli";

/// Name of the session that requests without a test-name header belong to.
pub const DEFAULT_SESSION: &str = "default";

/// A validated session name.
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

    /// Validates a name: non-empty, at most [`SESSION_NAME_BYTES_MAX`] bytes, no
    /// leading `/`, no `\`, no NUL or control character, no empty, `.` or `..`
    /// segment, no segment ending in `.ouli.partial`-like suffixes that would
    /// collide with ouli's own files.
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
        for segment in name.split('/') {
            match segment {
                "" => return err("contains an empty path segment"),
                "." | ".." => return err("contains a '.' or '..' segment"),
                _ => {}
            }
            if segment.starts_with(".ouli") {
                return err("a segment starts with '.ouli' (reserved)");
            }
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
        assert!(SessionName::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn recording_path_stays_inside_dir() {
        let dir = Path::new("/tmp/rec");
        let p = SessionName::parse("a/b").unwrap().recording_path(dir);
        assert_eq!(p, Path::new("/tmp/rec/a/b.ouli"));
    }
}
