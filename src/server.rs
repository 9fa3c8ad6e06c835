//! Running ouli: bind every endpoint, serve until SIGINT/SIGTERM, close every
//! recording.
//!
//! CONTRACT (skeleton — the proxy engineer implements; the CLI calls only this).

use crate::config::Config;
use std::path::PathBuf;

/// What the proxy does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Proxy upstream and record; a session's new recording replaces the old
    /// one when complete.
    Record,
    /// Answer from recordings only; never touch the network.
    Replay,
    /// Replay what is recorded; proxy and append what is not.
    RecordMissing,
    /// Proxy; record nothing.
    Passthrough,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Record => "record",
            Mode::Replay => "replay",
            Mode::RecordMissing => "record-missing",
            Mode::Passthrough => "passthrough",
        }
    }
}

/// Everything `run` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub config: Config,
    pub mode: Mode,
    pub recording_dir: PathBuf,
}

/// Why ouli could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("endpoint {endpoint}: cannot listen on {addr}: {source}")]
    Bind {
        endpoint: usize,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("recording dir {path}: {why}")]
    RecordingDir { path: PathBuf, why: String },
    #[error("{0}")]
    Setup(String),
}

/// Serves until SIGINT/SIGTERM (builds its own tokio runtime). Prints one line
/// per endpoint to stdout when it is ready:
/// `ouli listening endpoint=<i> addr=<ip:port> mode=<mode>`.
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    let _ = options;
    todo!()
}
