//! Configuration: test-server's YAML keys read unchanged, ouli's own keys in the
//! same file; YAML or TOML (by extension, `.toml` → TOML).
//!
//! CONTRACT (skeleton — the config helper implements loading and validation and
//! may add fields; the proxy reads only this validated form).

use crate::chain::ChainMode;
use crate::fingerprint::MatchRules;
use crate::recording::{Durability, ReadBackend};
use crate::redact::HeaderReplacement;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Most endpoints one config may declare.
pub const ENDPOINTS_MAX: usize = 64;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// What a replayed request does when its chain has run past what was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExhaustedPolicy {
    /// Answer with a miss error (default).
    #[default]
    Error,
    /// Serve the last recorded response again.
    RepeatLast,
}

/// Read backend as configured: `auto` picks the measured default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadBackendChoice {
    #[default]
    Auto,
    Mmap,
    IoUring,
}

impl ReadBackendChoice {
    pub fn resolve(self) -> ReadBackend {
        match self {
            ReadBackendChoice::Auto | ReadBackendChoice::Mmap => ReadBackend::Mmap,
            ReadBackendChoice::IoUring => ReadBackend::IoUring,
        }
    }
}

/// One listener mapped to one upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    pub target_host: String,
    pub target_type: Scheme,
    pub target_port: u16,
    pub source_type: Scheme,
    /// 0 takes a free port.
    pub source_port: u16,
    /// Health path answered by ouli itself in every mode (e.g. `/health`).
    pub health: Option<String>,
    pub redact_request_headers: Vec<String>,
    pub response_header_replacements: Vec<HeaderReplacement>,
    /// Overrides [`Config::matching`] for this endpoint.
    pub matching: MatchRules,
}

/// Every limit, with its default (see `Limits::default`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub request_body_bytes_max: usize,
    pub response_body_bytes_max: usize,
    pub header_count_max: usize,
    pub header_bytes_max: usize,
    pub header_read_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    /// Time to the upstream's response head.
    pub upstream_response_timeout_ms: u64,
    /// Idle time between upstream body chunks.
    pub upstream_body_idle_timeout_ms: u64,
    pub connections_max: usize,
    pub sessions_max: usize,
    pub shutdown_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body_bytes_max: 64 << 20,
            response_body_bytes_max: 256 << 20,
            header_count_max: 128,
            header_bytes_max: 64 << 10,
            header_read_timeout_ms: 10_000,
            upstream_connect_timeout_ms: 10_000,
            upstream_response_timeout_ms: 60_000,
            upstream_body_idle_timeout_ms: 60_000,
            connections_max: 10_000,
            sessions_max: 100_000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the config was read from (for messages).
    pub source: Option<PathBuf>,
    pub endpoints: Vec<EndpointConfig>,
    /// Listen address of every endpoint; 127.0.0.1 unless told otherwise.
    pub listen_address: IpAddr,
    /// Extra session header besides `Test-Name` and `X-Ouli-Test-Name`.
    pub session_header: Option<String>,
    pub chain: ChainMode,
    pub on_chain_exhausted: ExhaustedPolicy,
    /// Default matching rules.
    pub matching: MatchRules,
    /// Secrets from the config (the environment adds more at start).
    pub secrets: Vec<String>,
    pub sensitive_json_keys: Vec<String>,
    pub limits: Limits,
    pub durability: Durability,
    pub read_backend: ReadBackendChoice,
    /// Extra CA certificates (PEM) trusted for upstream TLS.
    pub ca_file: Option<PathBuf>,
}

/// A config that cannot be used; names the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// Reads and validates a config file. Unknown keys are logged as warnings
    /// (returned in the second field so the CLI can print them).
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let _ = path;
        todo!()
    }
}
