//! Configuration: test-server's YAML keys read unchanged, ouli's own keys in the
//! same file; YAML or TOML (by extension, `.toml` → TOML).
//!
//! Two types, as ripgrep splits its flags into low and high arguments:
//!
//! * `RawConfig` (private) mirrors the file: every field optional, nothing
//!   checked but syntax and types. Parse errors carry the file and line.
//! * [`Config`] is the validated form the proxy reads: defaults filled in,
//!   ports in range, regexes compiled once to prove they compile, paths
//!   resolved. Validation errors name the file and the key
//!   (`endpoints[1].response_header_replacements[0].regex`).
//!
//! Keys the file holds but ouli does not know are not errors (test-server
//! ignores unknown keys, and its users' files carry their own): [`Config::load`]
//! returns them as warnings, which the CLI logs.
//!
//! Dependencies go one way: the rule types a config holds belong to the
//! modules that apply them ([`MatchRules`] to `fingerprint`,
//! [`HeaderReplacement`] and [`header_regex`] to `redact`), and config reads
//! them from there; none of those modules reads config.
//!
//! ```no_run
//! let (config, warnings) = ouli::config::Config::load("ouli.yaml".as_ref())?;
//! for warning in &warnings {
//!     eprintln!("warning: {warning}");
//! }
//! assert!(!config.endpoints.is_empty());
//! # Ok::<(), ouli::config::ConfigError>(())
//! ```

use crate::chain::ChainMode;
use crate::fingerprint::MatchRules;
use crate::recording::{Durability, ReadBackend};
use crate::redact::{DEFAULT_SENSITIVE_JSON_KEYS, HeaderReplacement};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Config validates `response_header_replacements` patterns with it.
pub use crate::redact::header_regex;

/// Most endpoints one config may declare.
pub const ENDPOINTS_MAX: usize = 64;

/// Largest config file read (a config is a few KiB; this only stops a wrong
/// path such as a recording from being slurped).
pub const CONFIG_FILE_BYTES_MAX: u64 = 4 << 20;

/// The reserved path prefix: answered by ouli, never forwarded or recorded.
pub const CONTROL_PATH_PREFIX: &str = "/__ouli/";

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// How ouli speaks to a cleartext upstream: `target_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetProtocol {
    /// HTTP/1.1 (`http1`, the default). An `https` upstream negotiates
    /// HTTP/2 or HTTP/1.1 by ALPN whatever this says.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext (`h2c`), as a local gRPC
    /// server speaks it.
    H2c,
}

/// A TLS listener's certificate chain and private key (PEM files), when the
/// user supplies them; without them ouli makes its own at start (`tls.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
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

/// Most a `replay_timing` scale factor may stretch recorded gaps: 100× turns
/// a 100 ms gap into 10 s, slower than any test wants; past it a typo (`20`
/// for `0.2`, an extra zero) is refused instead of hanging a test.
pub const REPLAY_TIMING_SCALE_MAX: f64 = 100.0;

/// How a replayed answer's body is paced (`replay_timing`, per endpoint or
/// top level; per request with `x-ouli-replay-timing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplayTiming {
    /// Chunks back to back (default).
    #[default]
    None,
    /// Each chunk at its recorded offset.
    Recorded,
    /// Recorded offsets times a factor (`0.1`: ten times faster).
    Scaled(TimingScale),
}

/// A `replay_timing` factor: finite, over 0, at most
/// [`REPLAY_TIMING_SCALE_MAX`] (built by [`ReplayTiming::parse`] only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimingScale(f64);

// Never NaN: `ReplayTiming::from_factor` refuses it.
impl Eq for TimingScale {}

impl TimingScale {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl ReplayTiming {
    /// `none`, `recorded` or a factor (`0.5`, `2`), as the config key and
    /// the request header take it.
    pub fn parse(text: &str) -> Result<ReplayTiming, String> {
        match text.trim() {
            "none" => Ok(ReplayTiming::None),
            "recorded" => Ok(ReplayTiming::Recorded),
            other => match other.parse::<f64>() {
                Ok(factor) if other.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                    ReplayTiming::from_factor(factor)
                }
                _ => Err(format!(
                    "{other:?}: expected none, recorded or a factor from 0 to {REPLAY_TIMING_SCALE_MAX} (0.1 plays ten times faster)"
                )),
            },
        }
    }

    /// The factor recorded times are multiplied by; `None`: not paced.
    pub fn scale(self) -> Option<f64> {
        match self {
            ReplayTiming::None => None,
            ReplayTiming::Recorded => Some(1.0),
            ReplayTiming::Scaled(scale) => Some(scale.get()),
        }
    }

    /// A factor: 0 is `none` (no gaps, no timers); 1 is `recorded`.
    pub fn from_factor(factor: f64) -> Result<ReplayTiming, String> {
        if !factor.is_finite() || !(0.0..=REPLAY_TIMING_SCALE_MAX).contains(&factor) {
            return Err(format!(
                "{factor}: a factor must be from 0 to {REPLAY_TIMING_SCALE_MAX} (0.1 plays ten times faster)"
            ));
        }
        Ok(if factor == 0.0 {
            ReplayTiming::None
        } else if factor == 1.0 {
            ReplayTiming::Recorded
        } else {
            ReplayTiming::Scaled(TimingScale(factor))
        })
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
    /// This endpoint's `replay_timing`, else the top level's.
    pub replay_timing: ReplayTiming,
    /// `target_protocol`: HTTP/1.1 or h2c to a cleartext upstream.
    pub target_protocol: TargetProtocol,
    /// `tls_cert_file` and `tls_key_file` of the endpoint, else of the top
    /// level; `None` on a TLS listener means a generated certificate.
    pub tls_files: Option<TlsFiles>,
}

/// Every limit, with its default (see `Limits::default`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub request_body_bytes_max: usize,
    pub response_body_bytes_max: usize,
    pub header_count_max: usize,
    pub header_bytes_max: usize,
    pub header_read_timeout_ms: u64,
    /// Time from the request head to the end of its body.
    pub request_body_timeout_ms: u64,
    /// Idle time between request body chunks (and before the first).
    pub request_body_idle_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    /// Time to the upstream's response head.
    pub upstream_response_timeout_ms: u64,
    /// Idle time between upstream body chunks.
    pub upstream_body_idle_timeout_ms: u64,
    pub connections_max: usize,
    pub sessions_max: usize,
    pub shutdown_timeout_ms: u64,
    /// HTTP/2 streams one client connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS); one more is refused (RST_STREAM
    /// REFUSED_STREAM).
    pub h2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113
    /// §6.5.2 sizes); by default `header_bytes_max`, HTTP/1's head bound.
    pub h2_max_header_list_bytes: u32,
    /// HTTP/2 streams a client may open and reset before ouli has taken
    /// them up; past it the connection is closed (GOAWAY
    /// ENHANCE_YOUR_CALM): the rapid-reset attack's guard.
    pub h2_max_pending_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body_bytes_max: 64 << 20,
            response_body_bytes_max: 256 << 20,
            header_count_max: 128,
            header_bytes_max: 64 << 10,
            header_read_timeout_ms: 10_000,
            // A body at `request_body_bytes_max` (64 MiB) crosses loopback in
            // well under a second; 30 s leaves room for a loaded CI machine
            // and still frees a connection a stalled client holds.
            request_body_timeout_ms: 30_000,
            // As the head's: a client that sends nothing for 10 s mid-body
            // has stalled; a busy one sends a chunk far sooner.
            request_body_idle_timeout_ms: 10_000,
            upstream_connect_timeout_ms: 10_000,
            upstream_response_timeout_ms: 60_000,
            upstream_body_idle_timeout_ms: 60_000,
            connections_max: 10_000,
            sessions_max: 100_000,
            shutdown_timeout_ms: 10_000,
            // RFC 9113 §6.5.2 recommends no fewer than 100; hyper's default.
            h2_max_concurrent_streams: 100,
            h2_max_header_list_bytes: 64 << 10,
            // hyper's (h2's) default since the rapid-reset fix.
            h2_max_pending_reset_streams: 20,
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
    /// Where a generated listener CA's certificate is written (`tls_ca_out`,
    /// or `--tls-ca-out`); `None`: `ouli-ca.pem` in the temporary directory.
    pub tls_ca_out: Option<PathBuf>,
    /// Top-level `replay_timing`: every endpoint's unless it sets its own.
    pub replay_timing: ReplayTiming,
    /// `admin_token`: what a peer off loopback sends (`Authorization:
    /// Bearer <token>`) to use the admin API; without it such a peer gets
    /// 403 (`server/admin.rs`).
    pub admin_token: Option<AdminToken>,
}

/// Longest `admin_token` accepted, in bytes.
pub const ADMIN_TOKEN_BYTES_MAX: usize = 256;

/// The admin token: never printed (its `Debug` says only that it is set).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(set)")
    }
}

/// A config that cannot be used; names the file, the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
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

impl Default for Config {
    /// No endpoints; every other key at its documented default.
    fn default() -> Self {
        Config {
            source: None,
            endpoints: Vec::new(),
            listen_address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            session_header: None,
            chain: ChainMode::default(),
            on_chain_exhausted: ExhaustedPolicy::default(),
            matching: MatchRules::default(),
            secrets: Vec::new(),
            sensitive_json_keys: DEFAULT_SENSITIVE_JSON_KEYS
                .iter()
                .map(|key| key.to_string())
                .collect(),
            limits: Limits::default(),
            durability: Durability::default(),
            read_backend: ReadBackendChoice::default(),
            ca_file: None,
            tls_ca_out: None,
            replay_timing: ReplayTiming::default(),
            admin_token: None,
        }
    }
}

impl Config {
    /// Reads and validates a config file. Unknown keys are logged as warnings
    /// (returned in the second field so the CLI can print them).
    ///
    /// `.toml` files are read as TOML, anything else as YAML (test-server's
    /// `.yml`/`.yaml`). `SSL_CERT_FILE` (test-server's way to trust a private CA)
    /// fills `ca_file` when the file has none.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let text = read_config_file(path)?;
        let format = Format::of(path);
        let (raw, mut warnings) = parse(&text, format, path)?;
        let ssl_cert_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
        let config = validate(raw, path, ssl_cert_file, &mut warnings)?;
        Ok((config, warnings))
    }

    /// Parses and validates config text, as [`Config::load`] does for a file;
    /// `path` only names the source in messages and resolves relative paths.
    /// The environment is not read.
    pub fn from_text(
        text: &str,
        format: Format,
        path: &Path,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let (raw, mut warnings) = parse(text, format, path)?;
        let config = validate(raw, path, None, &mut warnings)?;
        Ok((config, warnings))
    }
}

/// The syntax of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// `.toml` → TOML; everything else (`.yaml`, `.yml`, none) → YAML.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.is_dir() {
        return Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other("is a directory, not a config file"),
        });
    }
    if metadata.len() > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "{} bytes is larger than a config can be ({CONFIG_FILE_BYTES_MAX} bytes)",
                metadata.len()
            )),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    String::from_utf8(bytes).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        line: None,
        message: format!("not UTF-8 text: {error}"),
    })
}

// ---------------------------------------------------------------------------
// Raw form: the file as written.

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RawConfig {
    endpoints: Option<Vec<RawEndpoint>>,
    listen_address: Option<String>,
    session_header: Option<String>,
    chain: Option<String>,
    on_chain_exhausted: Option<String>,
    matching: Option<RawMatching>,
    secrets: Option<Vec<String>>,
    sensitive_json_keys: Option<Vec<String>>,
    limits: Option<RawLimits>,
    durability: Option<String>,
    read_backend: Option<String>,
    ca_file: Option<PathBuf>,
    replay_timing: Option<RawReplayTiming>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_out: Option<PathBuf>,
    admin_token: Option<String>,
}

/// `replay_timing` as written: a word or a number.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum RawReplayTiming {
    Factor(f64),
    Word(String),
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RawEndpoint {
    target_host: Option<String>,
    target_type: Option<String>,
    target_port: Option<i64>,
    source_type: Option<String>,
    source_port: Option<i64>,
    health: Option<String>,
    redact_request_headers: Option<Vec<String>>,
    response_header_replacements: Option<Vec<RawReplacement>>,
    shutdown_timeout_seconds: Option<i64>,
    matching: Option<RawMatching>,
    replay_timing: Option<RawReplayTiming>,
    target_protocol: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RawReplacement {
    header: Option<String>,
    regex: Option<String>,
    replace: Option<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default)]
struct RawMatching {
    include_headers: Option<Vec<String>>,
    ignore_headers: Option<Vec<String>>,
    ignore_query_params: Option<Vec<String>>,
    ignore_json_paths: Option<Vec<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct RawLimits {
    request_body_bytes_max: Option<i64>,
    response_body_bytes_max: Option<i64>,
    header_count_max: Option<i64>,
    header_bytes_max: Option<i64>,
    header_read_timeout_ms: Option<i64>,
    request_body_timeout_ms: Option<i64>,
    request_body_idle_timeout_ms: Option<i64>,
    upstream_connect_timeout_ms: Option<i64>,
    upstream_response_timeout_ms: Option<i64>,
    upstream_body_idle_timeout_ms: Option<i64>,
    connections_max: Option<i64>,
    sessions_max: Option<i64>,
    shutdown_timeout_ms: Option<i64>,
    h2_max_concurrent_streams: Option<i64>,
    h2_max_header_list_bytes: Option<i64>,
    h2_max_pending_reset_streams: Option<i64>,
}

/// Every key ouli reads, by place in the file: the unknown-key walk diffs the
/// file against these lists. Keep in step with the `Raw*` structs.
const TOP_LEVEL_KEYS: &[&str] = &[
    "endpoints",
    "listen_address",
    "session_header",
    "chain",
    "on_chain_exhausted",
    "matching",
    "secrets",
    "sensitive_json_keys",
    "limits",
    "durability",
    "read_backend",
    "ca_file",
    "replay_timing",
    "tls_cert_file",
    "tls_key_file",
    "tls_ca_out",
    "admin_token",
];
const ENDPOINT_KEYS: &[&str] = &[
    "target_host",
    "target_type",
    "target_port",
    "source_type",
    "source_port",
    "health",
    "redact_request_headers",
    "response_header_replacements",
    "shutdown_timeout_seconds",
    "matching",
    "replay_timing",
    "target_protocol",
    "tls_cert_file",
    "tls_key_file",
];
const REPLACEMENT_KEYS: &[&str] = &["header", "regex", "replace"];
const MATCHING_KEYS: &[&str] = &[
    "include_headers",
    "ignore_headers",
    "ignore_query_params",
    "ignore_json_paths",
];
const LIMITS_KEYS: &[&str] = &[
    "request_body_bytes_max",
    "response_body_bytes_max",
    "header_count_max",
    "header_bytes_max",
    "header_read_timeout_ms",
    "request_body_timeout_ms",
    "request_body_idle_timeout_ms",
    "upstream_connect_timeout_ms",
    "upstream_response_timeout_ms",
    "upstream_body_idle_timeout_ms",
    "connections_max",
    "sessions_max",
    "shutdown_timeout_ms",
    "h2_max_concurrent_streams",
    "h2_max_header_list_bytes",
    "h2_max_pending_reset_streams",
];

fn parse(text: &str, format: Format, path: &Path) -> Result<(RawConfig, Vec<String>), ConfigError> {
    // Two passes: a generic tree for the unknown-key walk, then the typed
    // struct, whose errors carry the key and the line.
    let (tree, raw) = match format {
        Format::Yaml => {
            let tree: Option<serde_json::Value> =
                serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?;
            // An empty file is an empty mapping (validation then asks for endpoints).
            let raw: RawConfig = match tree {
                Some(_) => serde_yaml_ng::from_str(text).map_err(|e| yaml_error(path, e))?,
                None => RawConfig::default(),
            };
            (tree.unwrap_or(serde_json::Value::Null), raw)
        }
        Format::Toml => {
            let tree: serde_json::Value =
                toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
            let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, e))?;
            (tree, raw)
        }
    };
    let mut unknown = Vec::new();
    unknown_keys(&tree, &mut unknown);
    let warnings = unknown
        .into_iter()
        .map(|key| {
            format!(
                "{}: unknown key `{key}` ignored (not a test-server or ouli key)",
                path.display()
            )
        })
        .collect();
    Ok((raw, warnings))
}

fn yaml_error(path: &Path, error: serde_yaml_ng::Error) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        line: error.location().map(|location| location.line()),
        message: error.to_string(),
    }
}

fn toml_error(path: &Path, text: &str, error: toml::de::Error) -> ConfigError {
    let line = error.span().map(|span| line_of_offset(text, span.start));
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        message: error.message().trim_end().to_string(),
    }
}

/// 1-based line of a byte offset.
fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Collects the dotted paths of keys ouli does not read.
fn unknown_keys(tree: &serde_json::Value, out: &mut Vec<String>) {
    let Some(top) = tree.as_object() else { return };
    diff_keys(top, TOP_LEVEL_KEYS, "", out);
    if let Some(matching) = top.get("matching").and_then(|v| v.as_object()) {
        diff_keys(matching, MATCHING_KEYS, "matching.", out);
    }
    if let Some(limits) = top.get("limits").and_then(|v| v.as_object()) {
        diff_keys(limits, LIMITS_KEYS, "limits.", out);
    }
    let endpoints = top.get("endpoints").and_then(|v| v.as_array());
    for (i, endpoint) in endpoints.into_iter().flatten().enumerate() {
        let Some(endpoint) = endpoint.as_object() else {
            continue;
        };
        let prefix = format!("endpoints[{i}].");
        diff_keys(endpoint, ENDPOINT_KEYS, &prefix, out);
        if let Some(matching) = endpoint.get("matching").and_then(|v| v.as_object()) {
            diff_keys(matching, MATCHING_KEYS, &format!("{prefix}matching."), out);
        }
        let replacements = endpoint
            .get("response_header_replacements")
            .and_then(|v| v.as_array());
        for (j, replacement) in replacements.into_iter().flatten().enumerate() {
            if let Some(replacement) = replacement.as_object() {
                let prefix = format!("{prefix}response_header_replacements[{j}].");
                diff_keys(replacement, REPLACEMENT_KEYS, &prefix, out);
            }
        }
    }
}

fn diff_keys(
    map: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
    prefix: &str,
    out: &mut Vec<String>,
) {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            out.push(format!("{prefix}{key}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Validation: raw → Config.

/// Context for validation messages: which file.
struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn port(&self, key: &str, value: i64) -> Result<u16, ConfigError> {
        u16::try_from(value)
            .map_err(|_| self.invalid(key, format!("{value} is not a port (0..=65535)")))
    }

    fn positive(&self, key: &str, value: Option<i64>, default: u64) -> Result<u64, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v > 0 => Ok(v as u64),
            Some(v) => Err(self.invalid(key, format!("must be greater than 0, got {v}"))),
        }
    }

    fn positive_usize(
        &self,
        key: &str,
        value: Option<i64>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        let v = self.positive(key, value, default as u64)?;
        usize::try_from(v).map_err(|_| self.invalid(key, format!("{v} is too large")))
    }

    fn positive_u32(
        &self,
        key: &str,
        value: Option<i64>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let v = self.positive(key, value, u64::from(default))?;
        u32::try_from(v)
            .map_err(|_| self.invalid(key, format!("{v} is too large (at most {})", u32::MAX)))
    }

    fn header_name(&self, key: &str, name: &str) -> Result<String, ConfigError> {
        http::HeaderName::from_bytes(name.as_bytes())
            .map(|name| name.as_str().to_string())
            .map_err(|_| self.invalid(key, format!("{name:?} is not a valid header name")))
    }
}

fn validate(
    raw: RawConfig,
    path: &Path,
    ssl_cert_file: Option<PathBuf>,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let check = Checker { path };
    let defaults = Config::default();

    let raw_endpoints = raw.endpoints.unwrap_or_default();
    if raw_endpoints.is_empty() {
        return Err(check.invalid(
            "endpoints",
            "at least one endpoint is required (a list of {target_host, target_port, source_port, ...})",
        ));
    }
    if raw_endpoints.len() > ENDPOINTS_MAX {
        return Err(check.invalid(
            "endpoints",
            format!(
                "{} endpoints declared; at most {ENDPOINTS_MAX} are allowed",
                raw_endpoints.len()
            ),
        ));
    }

    let global_matching = matching_rules(&check, "matching", raw.matching.as_ref(), None)?;
    let replay_timing = replay_timing(&check, "replay_timing", raw.replay_timing.as_ref())?
        .unwrap_or(defaults.replay_timing);
    let global_tls = tls_files(
        &check,
        "",
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
    )?;
    let mut endpoints = Vec::with_capacity(raw_endpoints.len());
    let mut shutdown_timeout_seconds_max: Option<u64> = None;
    for (index, raw_endpoint) in raw_endpoints.into_iter().enumerate() {
        if let Some(seconds) = raw_endpoint.shutdown_timeout_seconds {
            let key = format!("endpoints[{index}].shutdown_timeout_seconds");
            let seconds = check.positive(&key, Some(seconds), 0)?;
            shutdown_timeout_seconds_max =
                Some(shutdown_timeout_seconds_max.map_or(seconds, |max| max.max(seconds)));
        }
        endpoints.push(endpoint(
            &check,
            index,
            raw_endpoint,
            (&global_matching, replay_timing, global_tls.as_ref()),
            warnings,
        )?);
    }
    check_distinct_source_ports(&check, &endpoints)?;

    let listen_address = match raw.listen_address {
        None => defaults.listen_address,
        Some(text) => text.trim().parse::<IpAddr>().map_err(|_| {
            check.invalid(
                "listen_address",
                format!("{text:?} is not an IP address (e.g. 127.0.0.1 or ::1)"),
            )
        })?,
    };
    let session_header = raw
        .session_header
        .map(|name| check.header_name("session_header", &name))
        .transpose()?;
    let chain = match raw.chain.as_deref() {
        None => defaults.chain,
        Some("request") => ChainMode::Request,
        Some("session") => ChainMode::Session,
        Some(other) => {
            return Err(check.invalid("chain", format!("{other:?}: expected request or session")));
        }
    };
    let on_chain_exhausted = match raw.on_chain_exhausted.as_deref() {
        None => defaults.on_chain_exhausted,
        Some("error") => ExhaustedPolicy::Error,
        Some("repeat-last") | Some("repeat_last") => ExhaustedPolicy::RepeatLast,
        Some(other) => {
            return Err(check.invalid(
                "on_chain_exhausted",
                format!("{other:?}: expected error or repeat-last"),
            ));
        }
    };
    let secrets = raw
        .secrets
        .unwrap_or_default()
        .into_iter()
        .filter(|secret| !secret.is_empty())
        .collect();
    let sensitive_json_keys = raw
        .sensitive_json_keys
        .unwrap_or(defaults.sensitive_json_keys);
    let limits = limits(
        &check,
        raw.limits.unwrap_or_default(),
        shutdown_timeout_seconds_max,
    )?;
    let durability = match raw.durability.as_deref() {
        None => defaults.durability,
        Some("none") => Durability::None,
        Some("on-close") | Some("on_close") => Durability::OnClose,
        Some("every-interaction") | Some("every_interaction") => Durability::EveryInteraction,
        Some(other) => {
            return Err(check.invalid(
                "durability",
                format!("{other:?}: expected none, on-close or every-interaction"),
            ));
        }
    };
    let read_backend = match raw.read_backend.as_deref() {
        None => defaults.read_backend,
        Some("auto") => ReadBackendChoice::Auto,
        Some("mmap") => ReadBackendChoice::Mmap,
        Some("io-uring") | Some("io_uring") => ReadBackendChoice::IoUring,
        Some(other) => {
            return Err(check.invalid(
                "read_backend",
                format!("{other:?}: expected auto, mmap or io-uring"),
            ));
        }
    };
    let ca_file = match (raw.ca_file, ssl_cert_file) {
        (Some(file), _) => Some(readable_file(&check, "ca_file", &relative_to(path, &file))?),
        (None, Some(file)) => Some(readable_file(&check, "SSL_CERT_FILE (environment)", &file)?),
        (None, None) => None,
    };
    let tls_ca_out = raw.tls_ca_out.map(|file| relative_to(path, &file));
    let admin_token = raw
        .admin_token
        .map(|token| admin_token(&check, token))
        .transpose()?;

    Ok(Config {
        source: Some(path.to_path_buf()),
        endpoints,
        listen_address,
        session_header,
        chain,
        on_chain_exhausted,
        matching: global_matching,
        secrets,
        sensitive_json_keys,
        limits,
        durability,
        read_backend,
        ca_file,
        tls_ca_out,
        replay_timing,
        admin_token,
    })
}

/// `admin_token`: 1..=[`ADMIN_TOKEN_BYTES_MAX`] bytes of visible ASCII, as
/// a bearer token in an `Authorization` header must be.
fn admin_token(check: &Checker<'_>, token: String) -> Result<AdminToken, ConfigError> {
    if token.is_empty() || token.len() > ADMIN_TOKEN_BYTES_MAX {
        return Err(check.invalid(
            "admin_token",
            format!("must be 1 to {ADMIN_TOKEN_BYTES_MAX} bytes long"),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(check.invalid(
            "admin_token",
            "must be visible ASCII (no spaces or control characters): it is sent as `Authorization: Bearer <token>`",
        ));
    }
    Ok(AdminToken(token))
}

fn endpoint(
    check: &Checker<'_>,
    index: usize,
    raw: RawEndpoint,
    // The top level's matching rules, replay timing and TLS files, which
    // the endpoint's own keys override.
    (global_matching, global_timing, global_tls): (&MatchRules, ReplayTiming, Option<&TlsFiles>),
    warnings: &mut Vec<String>,
) -> Result<EndpointConfig, ConfigError> {
    let key = |name: &str| format!("endpoints[{index}].{name}");
    let target_host = raw.target_host.unwrap_or_default().trim().to_string();
    if target_host.is_empty() {
        return Err(check.invalid(key("target_host"), "required and must not be empty"));
    }
    if target_host.contains(['/', ' ']) || target_host.contains("://") {
        return Err(check.invalid(
            key("target_host"),
            format!("{target_host:?} must be a bare host name (no scheme, path or spaces)"),
        ));
    }
    // test-server always dials https whatever target_type says, so a file
    // written for it without target_type means https.
    let target_type = match raw.target_type.as_deref() {
        None => Scheme::Https,
        Some(text) => scheme(check, &key("target_type"), text)?,
    };
    let target_port = match raw.target_port {
        None => match target_type {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(port) => {
            let port = check.port(&key("target_port"), port)?;
            if port == 0 {
                return Err(check.invalid(key("target_port"), "0 is not a port one can dial"));
            }
            port
        }
    };
    let source_type = match raw.source_type.as_deref() {
        None => Scheme::Http,
        Some(text) => scheme(check, &key("source_type"), text)?,
    };
    let own_tls = tls_files(
        check,
        &format!("endpoints[{index}]."),
        raw.tls_cert_file.as_deref(),
        raw.tls_key_file.as_deref(),
    )?;
    let tls_files = match source_type {
        Scheme::Https => own_tls.or_else(|| global_tls.cloned()),
        Scheme::Http => {
            if own_tls.is_some() {
                warnings.push(format!(
                    "{}: {}: ignored: the endpoint's source_type is http (set source_type: https to serve TLS)",
                    check.path.display(),
                    key("tls_cert_file"),
                ));
            }
            None
        }
    };
    let target_protocol = match raw.target_protocol.as_deref() {
        None | Some("http1") => TargetProtocol::Http1,
        Some("h2c") if target_type == Scheme::Https => {
            return Err(check.invalid(
                key("target_protocol"),
                "h2c is cleartext HTTP/2; an https upstream negotiates HTTP/2 by ALPN (leave target_protocol out)",
            ));
        }
        Some("h2c") => TargetProtocol::H2c,
        Some(other) => {
            return Err(check.invalid(
                key("target_protocol"),
                format!("{other:?}: expected http1 or h2c"),
            ));
        }
    };
    let source_port = match raw.source_port {
        None => 0,
        Some(port) => check.port(&key("source_port"), port)?,
    };
    let health = match raw.health {
        None => None,
        Some(health) => {
            if !health.starts_with('/') {
                return Err(check.invalid(
                    key("health"),
                    format!("{health:?} must be a path starting with `/`"),
                ));
            }
            if health.starts_with(CONTROL_PATH_PREFIX) {
                return Err(check.invalid(
                    key("health"),
                    format!("{health:?} is under the reserved prefix {CONTROL_PATH_PREFIX}"),
                ));
            }
            Some(health)
        }
    };
    let redact_request_headers = raw
        .redact_request_headers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(j, name)| check.header_name(&key(&format!("redact_request_headers[{j}]")), name))
        .collect::<Result<Vec<_>, _>>()?;
    let response_header_replacements = raw
        .response_header_replacements
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, replacement)| {
            header_replacement(
                check,
                &key(&format!("response_header_replacements[{j}]")),
                replacement,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let matching = matching_rules(
        check,
        &key("matching"),
        raw.matching.as_ref(),
        Some(global_matching),
    )?;
    let replay_timing = replay_timing(check, &key("replay_timing"), raw.replay_timing.as_ref())?
        .unwrap_or(global_timing);
    Ok(EndpointConfig {
        target_host,
        target_type,
        target_port,
        source_type,
        source_port,
        health,
        redact_request_headers,
        response_header_replacements,
        matching,
        replay_timing,
        target_protocol,
        tls_files,
    })
}

/// `tls_cert_file` and `tls_key_file` at `prefix` (the top level, or an
/// endpoint's `endpoints[i].`): both or neither, each a readable file
/// (relative to the config's folder), so that a wrong path stops the start.
fn tls_files(
    check: &Checker<'_>,
    prefix: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let cert_key = format!("{prefix}tls_cert_file");
    let key_key = format!("{prefix}tls_key_file");
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert_file: readable_file(check, &cert_key, &relative_to(check.path, cert))?,
            key_file: readable_file(check, &key_key, &relative_to(check.path, key))?,
        })),
        (Some(_), None) => Err(check.invalid(
            key_key,
            format!("required with {cert_key} (the certificate's private key, PEM)"),
        )),
        (None, Some(_)) => Err(check.invalid(
            cert_key,
            format!("required with {key_key} (the certificate chain, PEM)"),
        )),
    }
}

fn replay_timing(
    check: &Checker<'_>,
    key: &str,
    raw: Option<&RawReplayTiming>,
) -> Result<Option<ReplayTiming>, ConfigError> {
    let parsed = match raw {
        None => return Ok(None),
        Some(RawReplayTiming::Factor(factor)) => ReplayTiming::from_factor(*factor),
        Some(RawReplayTiming::Word(word)) => ReplayTiming::parse(word),
    };
    parsed
        .map(Some)
        .map_err(|message| check.invalid(key, message))
}

fn scheme(check: &Checker<'_>, key: &str, text: &str) -> Result<Scheme, ConfigError> {
    if text.eq_ignore_ascii_case("http") {
        Ok(Scheme::Http)
    } else if text.eq_ignore_ascii_case("https") {
        Ok(Scheme::Https)
    } else {
        Err(check.invalid(key, format!("{text:?}: expected http or https")))
    }
}

fn header_replacement(
    check: &Checker<'_>,
    key: &str,
    raw: RawReplacement,
) -> Result<HeaderReplacement, ConfigError> {
    let header = raw
        .header
        .ok_or_else(|| check.invalid(format!("{key}.header"), "required"))?;
    let header = check.header_name(&format!("{key}.header"), &header)?;
    let regex = raw
        .regex
        .ok_or_else(|| check.invalid(format!("{key}.regex"), "required"))?;
    // Compiled here so that a bad pattern stops the start, not the first
    // response that carries the header.
    if let Err(error) = header_regex(&regex) {
        return Err(check.invalid(
            format!("{key}.regex"),
            format!("{regex:?} does not compile: {error}"),
        ));
    }
    Ok(HeaderReplacement {
        header,
        regex,
        replace: raw.replace.unwrap_or_default(),
    })
}

/// `base` given: per-endpoint rules, each key present replacing the global one.
fn matching_rules(
    check: &Checker<'_>,
    key: &str,
    raw: Option<&RawMatching>,
    base: Option<&MatchRules>,
) -> Result<MatchRules, ConfigError> {
    let mut rules = base.cloned().unwrap_or_default();
    let Some(raw) = raw else { return Ok(rules) };
    let header_list = |name: &str, list: &[String]| -> Result<Vec<String>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, header)| check.header_name(&format!("{key}.{name}[{i}]"), header))
            .collect()
    };
    if let Some(list) = &raw.include_headers {
        rules.include_headers = header_list("include_headers", list)?;
    }
    if let Some(list) = &raw.ignore_headers {
        rules.ignore_headers = header_list("ignore_headers", list)?;
    }
    if let Some(list) = &raw.ignore_query_params {
        rules.ignore_query_params = list.clone();
    }
    if let Some(list) = &raw.ignore_json_paths {
        for (i, json_path) in list.iter().enumerate() {
            if json_path
                .trim_start_matches("$.")
                .trim_start_matches('$')
                .is_empty()
            {
                return Err(check.invalid(
                    format!("{key}.ignore_json_paths[{i}]"),
                    format!("{json_path:?} names no field (e.g. $.meta.request_id)"),
                ));
            }
        }
        rules.ignore_json_paths = list.clone();
    }
    Ok(rules)
}

fn limits(
    check: &Checker<'_>,
    raw: RawLimits,
    shutdown_timeout_seconds: Option<u64>,
) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    // limits.shutdown_timeout_ms wins over test-server's per-endpoint seconds
    // (the largest of which applies: one process stops all endpoints at once).
    let shutdown_default = shutdown_timeout_seconds
        .map(|seconds| seconds.saturating_mul(1000))
        .unwrap_or(d.shutdown_timeout_ms);
    Ok(Limits {
        request_body_bytes_max: check.positive_usize(
            "limits.request_body_bytes_max",
            raw.request_body_bytes_max,
            d.request_body_bytes_max,
        )?,
        response_body_bytes_max: check.positive_usize(
            "limits.response_body_bytes_max",
            raw.response_body_bytes_max,
            d.response_body_bytes_max,
        )?,
        header_count_max: check.positive_usize(
            "limits.header_count_max",
            raw.header_count_max,
            d.header_count_max,
        )?,
        header_bytes_max: check.positive_usize(
            "limits.header_bytes_max",
            raw.header_bytes_max,
            d.header_bytes_max,
        )?,
        header_read_timeout_ms: check.positive(
            "limits.header_read_timeout_ms",
            raw.header_read_timeout_ms,
            d.header_read_timeout_ms,
        )?,
        request_body_timeout_ms: check.positive(
            "limits.request_body_timeout_ms",
            raw.request_body_timeout_ms,
            d.request_body_timeout_ms,
        )?,
        request_body_idle_timeout_ms: check.positive(
            "limits.request_body_idle_timeout_ms",
            raw.request_body_idle_timeout_ms,
            d.request_body_idle_timeout_ms,
        )?,
        upstream_connect_timeout_ms: check.positive(
            "limits.upstream_connect_timeout_ms",
            raw.upstream_connect_timeout_ms,
            d.upstream_connect_timeout_ms,
        )?,
        upstream_response_timeout_ms: check.positive(
            "limits.upstream_response_timeout_ms",
            raw.upstream_response_timeout_ms,
            d.upstream_response_timeout_ms,
        )?,
        upstream_body_idle_timeout_ms: check.positive(
            "limits.upstream_body_idle_timeout_ms",
            raw.upstream_body_idle_timeout_ms,
            d.upstream_body_idle_timeout_ms,
        )?,
        connections_max: check.positive_usize(
            "limits.connections_max",
            raw.connections_max,
            d.connections_max,
        )?,
        sessions_max: check.positive_usize(
            "limits.sessions_max",
            raw.sessions_max,
            d.sessions_max,
        )?,
        shutdown_timeout_ms: check.positive(
            "limits.shutdown_timeout_ms",
            raw.shutdown_timeout_ms,
            shutdown_default,
        )?,
        h2_max_concurrent_streams: check.positive_u32(
            "limits.h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams,
            d.h2_max_concurrent_streams,
        )?,
        h2_max_header_list_bytes: h2_max_header_list_bytes(check, &raw)?,
        h2_max_pending_reset_streams: check.positive_usize(
            "limits.h2_max_pending_reset_streams",
            raw.h2_max_pending_reset_streams,
            d.h2_max_pending_reset_streams,
        )?,
    })
}

/// `limits.h2_max_header_list_bytes`, else `limits.header_bytes_max` (the
/// same bound on a request's head in both protocols), capped to what
/// HTTP/2's setting can carry.
fn h2_max_header_list_bytes(check: &Checker<'_>, raw: &RawLimits) -> Result<u32, ConfigError> {
    if raw.h2_max_header_list_bytes.is_some() {
        return check.positive_u32(
            "limits.h2_max_header_list_bytes",
            raw.h2_max_header_list_bytes,
            0,
        );
    }
    let head = check.positive_usize(
        "limits.header_bytes_max",
        raw.header_bytes_max,
        Limits::default().header_bytes_max,
    )?;
    Ok(u32::try_from(head).unwrap_or(u32::MAX))
}

fn check_distinct_source_ports(
    check: &Checker<'_>,
    endpoints: &[EndpointConfig],
) -> Result<(), ConfigError> {
    for (i, endpoint) in endpoints.iter().enumerate() {
        if endpoint.source_port == 0 {
            continue;
        }
        if let Some(first) = endpoints[..i]
            .iter()
            .position(|earlier| earlier.source_port == endpoint.source_port)
        {
            return Err(check.invalid(
                format!("endpoints[{i}].source_port"),
                format!(
                    "port {} is already the source_port of endpoints[{first}]; each endpoint needs its own port",
                    endpoint.source_port
                ),
            ));
        }
    }
    Ok(())
}

/// A relative path in the config is relative to the config file's folder.
fn relative_to(config_path: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        return file.to_path_buf();
    }
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(file),
        _ => file.to_path_buf(),
    }
}

fn readable_file(check: &Checker<'_>, key: &str, file: &Path) -> Result<PathBuf, ConfigError> {
    match std::fs::File::open(file) {
        Ok(opened) => match opened.metadata() {
            Ok(metadata) if metadata.is_file() => Ok(file.to_path_buf()),
            Ok(_) => Err(check.invalid(key, format!("{} is not a file", file.display()))),
            Err(error) => Err(check.invalid(key, format!("{}: {error}", file.display()))),
        },
        Err(error) => {
            Err(check.invalid(key, format!("{} cannot be read: {error}", file.display())))
        }
    }
}
