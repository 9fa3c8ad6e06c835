//! The command line: raw arguments ([`Cli`], clap) → validated [`Command`]
//! ([`Cli::validate`]) → run. Nothing starts before validation has passed:
//! the config is loaded and checked, the recording dir is created (record
//! modes) or found (replay), so that a mistake is reported before a port is
//! bound.
//!
//! The binary also runs under the name `test-server` (test-server's SDKs start
//! `<package>/bin/test-server record --config C --recording-dir D`); nothing
//! here depends on `argv[0]`.
//!
//! Exit codes: 0 ok, 1 runtime error (upstream, recording, I/O while serving,
//! damaged records found by `verify`), 2 usage or config error.

use crate::config::{Config, ConfigError};
use crate::interaction::Fingerprint;
use crate::recording::{Expect, ReadBackend, Recording, RecordingError, verify_file};
use crate::server::{Mode, ServeOptions};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Config file names looked for in the current directory when `--config` is
/// not given, in this order (test-server has no working default; its users'
/// files are often named `test-server.yml`).
pub const DEFAULT_CONFIG_NAMES: &[&str] = &[
    "ouli.yaml",
    "ouli.yml",
    "ouli.toml",
    "test-server.yml",
    "test-server.yaml",
];

/// Recording directory when `--recording-dir` is not given (test-server's).
pub const DEFAULT_RECORDING_DIR: &str = "recordings";

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: something failed while running (upstream, recording, I/O).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code: the command line or the config is wrong; nothing was started.
pub const EXIT_USAGE: u8 = 2;

/// A record/replay HTTP proxy for tests.
///
/// Record real API traffic once, replay it offline in every test run after.
/// A drop-in replacement for Google's test-server: same config file, same
/// flags, same Test-Name header.
#[derive(Debug, Parser)]
#[command(
    name = "ouli",
    // Fixed, so that help reads the same when run as `test-server`.
    bin_name = "ouli",
    version,
    propagate_version = true,
    after_help = "Start here:\n    ouli replay --config recordings/ouli.yaml --recording-dir recordings\n\n\
                  Exit codes: 0 ok, 1 runtime error, 2 usage or config error."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    /// Sample the CPU from start to shutdown and write the profile to FILE:
    /// a flamegraph when FILE ends in `.svg`, else pprof protobuf (read by
    /// `pprof` / `go tool pprof`). See rfcs/0003-performance.md.
    /// (Built with `--features profiling` only.)
    #[cfg(feature = "profiling")]
    #[arg(long, global = true, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    #[command(subcommand)]
    pub command: RawCommand,
}

/// Logging flags (every subcommand).
#[derive(Debug, Args, Clone)]
pub struct LogArgs {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// such as `ouli=debug`. Without it RUST_LOG is used, else `info`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of the serving subcommands.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Config file (YAML, or TOML by the `.toml` extension). Default: the
    /// first of ouli.yaml, ouli.yml, ouli.toml, test-server.yml,
    /// test-server.yaml in the current directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of recordings, one `<session>.ouli` file per test.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_RECORDING_DIR)]
    pub recording_dir: PathBuf,
    /// Where the CA certificate generated for `source_type: https`
    /// listeners without `tls_cert_file` is written (PEM, never its key).
    /// Overrides the config's `tls_ca_out`; default: ouli-ca.pem in the
    /// temporary directory. The ready line names it (`ca=PATH`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca_out: Option<PathBuf>,
    /// At shutdown, write the report of recorded interactions never served
    /// in this run (JSON: per session, its interactions, how many were
    /// served, and the unused ones) to FILE.
    #[arg(long, value_name = "FILE")]
    pub unused_report: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RawCommand {
    /// Proxy every request upstream and record it.
    ///
    /// Each session (the Test-Name header; requests without one go to the
    /// `default` session) is written to <recording-dir>/<session>.ouli; a
    /// session's new recording replaces the old one only once complete.
    /// The recording dir is created if missing.
    #[command(after_help = concat!(
        "Example:\n    ouli record --config ouli.yaml --recording-dir recordings\n\n",
        "Ready: once every endpoint listens, one line per endpoint goes to stdout:\n",
        "    ouli listening endpoint=<i> addr=<ip:port> mode=<mode> [tls=on [ca=<file>]]\n",
        "Logs go to stderr. SIGINT or SIGTERM stops it after closing every recording.\n\n",
        "Exit codes: 0 stopped cleanly, 1 runtime error, 2 usage or config error."
    ))]
    Record(ServeArgs),
    /// Answer every request from the recordings; never touch the network.
    ///
    /// A request that was not recorded gets a JSON "miss" answer naming the
    /// session, the fingerprint, the closest recorded requests and what
    /// differs. The recording dir must exist.
    #[command(after_help = concat!(
        "Example:\n    ouli replay --config recordings/ouli.yaml --recording-dir recordings\n",
        "    curl http://127.0.0.1:8080/get\n\n",
        "Ready: once every endpoint listens, one line per endpoint goes to stdout:\n",
        "    ouli listening endpoint=<i> addr=<ip:port> mode=<mode> [tls=on [ca=<file>]]\n",
        "Logs go to stderr. SIGINT or SIGTERM stops it.\n\n",
        "Exit codes: 0 stopped cleanly, 1 runtime error, 2 usage or config error."
    ))]
    Replay(ServeArgs),
    /// Replay what is recorded; proxy and append what is not.
    ///
    /// For growing a recording as tests are added. The recording dir is
    /// created if missing.
    #[command(after_help = concat!(
        "Example:\n    ouli record-missing --config ouli.yaml --recording-dir recordings\n\n",
        "Ready: once every endpoint listens, one line per endpoint goes to stdout:\n",
        "    ouli listening endpoint=<i> addr=<ip:port> mode=<mode> [tls=on [ca=<file>]]\n",
        "Logs go to stderr. SIGINT or SIGTERM stops it after closing every recording.\n\n",
        "Exit codes: 0 stopped cleanly, 1 runtime error, 2 usage or config error."
    ))]
    RecordMissing(ServeArgs),
    /// Proxy every request upstream; record nothing.
    #[command(after_help = concat!(
        "Example:\n    ouli passthrough --config ouli.yaml\n\n",
        "Ready: once every endpoint listens, one line per endpoint goes to stdout:\n",
        "    ouli listening endpoint=<i> addr=<ip:port> mode=<mode> [tls=on [ca=<file>]]\n",
        "Logs go to stderr. SIGINT or SIGTERM stops it.\n\n",
        "Exit codes: 0 stopped cleanly, 1 runtime error, 2 usage or config error."
    ))]
    Passthrough(ServeArgs),
    /// Convert recordings made by another tool into ouli recordings.
    #[command(subcommand)]
    Import(ImportCommand),
    /// List the interactions of a recording, one line each.
    ///
    /// Columns: ordinal (from 1, the N of `ouli show`), method, target,
    /// status, response body bytes, fingerprint (first 12 hex digits).
    #[command(
        after_help = "Example:\n    ouli inspect recordings/default.ouli\n    \
                            ouli inspect --json recordings/default.ouli | jq .\n\n\
                            Exit codes: 0 ok, 1 unreadable or damaged recording, 2 usage error."
    )]
    Inspect {
        /// The recording (`<session>.ouli`).
        file: PathBuf,
        /// One JSON object per interaction (JSON Lines) instead of columns.
        #[arg(long)]
        json: bool,
    },
    /// Check a recording (or, recursively, a directory of them): header,
    /// every record's framing and checksum (CRC32C) to the end of the file,
    /// the index and the footer.
    #[command(after_help = "Example:\n    ouli verify recordings\n\n\
                            Interrupted recordings (.ouli.partial) in a directory are listed \
                            as skipped; name one to check it.\n\
                            Exit codes: 0 every file sound, 1 damage (each named with file and \
                            offset) or an unreadable file, 2 usage error.")]
    Verify {
        /// A `.ouli` file, or a directory searched recursively for them.
        path: PathBuf,
    },
    /// Show interactions of a recording whole: request line, headers and
    /// body; response status, headers and body (a stream chunk by chunk with
    /// arrival offsets; a WebSocket conversation frame by frame).
    ///
    /// Text bodies are shown as text (JSON pretty-printed), others as a hex
    /// dump (base64 with --json). Each body shows its first 4096 bytes
    /// (SHOW_BODY_BYTES_MAX) and says how much was cut; --full shows all.
    #[command(after_help = "Example:\n    ouli show recordings/default.ouli 2\n    \
                            ouli show --json recordings/default.ouli 2 | jq .response\n\n\
                            N counts from 1, as `ouli inspect` lists interactions.\n\
                            Exit codes: 0 ok, 1 unreadable or damaged recording, 2 usage error \
                            (no interaction N).")]
    Show {
        /// The recording (`<session>.ouli`).
        file: PathBuf,
        /// The interaction to show (from 1, as `ouli inspect` numbers them);
        /// all of them without it.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        n: Option<u64>,
        /// One JSON document per interaction (JSON Lines when N is not given).
        #[arg(long)]
        json: bool,
        /// Bodies whole, not cut at 4096 bytes.
        #[arg(long)]
        full: bool,
    },
    /// Compare two recordings, or two recording dirs session by session.
    ///
    /// Lists sessions only in A or only in B and, per common session, the
    /// interactions added, removed and changed. Interactions are paired by
    /// request identity and chain order; a change is named by field
    /// (`status`, `header NAME`, `json $.a.b`, `body`) with A's and B's values.
    #[command(after_help = "Example:\n    ouli diff old-recordings recordings\n    \
                            ouli diff --config ouli.yaml a.ouli b.ouli\n\n\
                            --config: requests are identified, and answers compared, with the \
                            config's match rules (ignored headers, query parameters and JSON \
                            paths are left out on both sides).\n\
                            Exit codes: 0 equal, 1 different, 2 error (as diff).")]
    Diff {
        /// A recording, or a dir of them.
        a: PathBuf,
        /// A recording, or a dir of them (as A).
        b: PathBuf,
        /// Match rules to identify requests and compare answers with.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The report as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Write recordings in another format.
    #[command(subcommand)]
    Export(ExportCommand),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every interaction of a recording (or a dir of them) as one HAR 1.2
    /// log: entries in recorded order, each naming its session in
    /// `_ouliSession`, timings from the recorded offsets.
    #[command(
        after_help = "Example:\n    ouli export har recordings -o recordings.har\n\n\
                            Exit codes: 0 written, 1 unreadable recording or unwritable output, \
                            2 usage error."
    )]
    Har {
        /// A recording, or a dir of them.
        src: PathBuf,
        /// The HAR file to write (replaced if there).
        #[arg(short = 'o', long = "output", value_name = "OUT.har")]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Convert a google/test-server recording directory (`<name>.json`,
    /// `<name>.websocket.log`) into `<name>.ouli` files.
    #[command(
        after_help = "Example:\n    ouli import test-server old-recordings recordings --config ouli.yaml\n\n\
                            Files that cannot be converted are listed with the reason; \
                            the others are converted.\n\
                            Exit codes: 0 imported (problems listed), 1 I/O error, 2 usage or config error."
    )]
    TestServer {
        /// test-server's recording directory.
        src: PathBuf,
        /// Where the `.ouli` files go (created if missing).
        dst: PathBuf,
        /// The config the recordings were made with (fingerprints depend on
        /// its matching rules). Default: as for `record`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Convert a HAR file into `<session>.ouli` files: entries grouped by
    /// their `_ouliSession` field, else --session, else the default session.
    #[command(
        after_help = "Example:\n    ouli import har traffic.har recordings --config ouli.yaml\n\n\
                            Entries that cannot be converted are listed with the reason; the \
                            others are imported. A session's recording in DST is replaced.\n\
                            Exit codes: 0 imported (problems listed), 1 unreadable HAR or I/O \
                            error, 2 usage or config error."
    )]
    Har {
        /// The HAR file.
        input: PathBuf,
        /// Where the `.ouli` files go (created if missing).
        dst: PathBuf,
        /// Session of the entries without `_ouliSession`. Default: the
        /// default session.
        #[arg(long, value_name = "NAME")]
        session: Option<String>,
        /// The config whose redaction and identity rules apply (fingerprints
        /// depend on its matching rules). Default: as for `record`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// A validated command: everything `run` needs, checked.
#[derive(Debug)]
pub enum Command {
    Serve(ServeOptions),
    ImportTestServer {
        src: PathBuf,
        dst: PathBuf,
        config: Config,
    },
    Inspect {
        file: PathBuf,
        json: bool,
    },
    Verify {
        path: PathBuf,
    },
    Show {
        file: PathBuf,
        options: crate::tools::ShowOptions,
    },
    Diff {
        a: PathBuf,
        b: PathBuf,
        config: Option<Box<Config>>,
        json: bool,
    },
    ExportHar {
        src: PathBuf,
        output: PathBuf,
    },
    ImportHar {
        input: PathBuf,
        dst: PathBuf,
        session: Option<String>,
        config: Box<Config>,
    },
}

/// Why a command could not start: always the user's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no config file: none of {} in {}; pass --config FILE",
        DEFAULT_CONFIG_NAMES.join(", "),
        dir.display()
    )]
    NoConfig { dir: PathBuf },
    #[error("recording dir {path}: {why}")]
    RecordingDir { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Input { path: PathBuf, why: String },
}

impl Cli {
    /// Validates the raw arguments; returns the command and the config
    /// warnings (unknown keys, ignored values) to log.
    pub fn validate(self) -> Result<(Command, Vec<String>), CliError> {
        match self.command {
            RawCommand::Record(args) => serve(args, Mode::Record),
            RawCommand::Replay(args) => serve(args, Mode::Replay),
            RawCommand::RecordMissing(args) => serve(args, Mode::RecordMissing),
            RawCommand::Passthrough(args) => serve(args, Mode::Passthrough),
            RawCommand::Import(ImportCommand::TestServer { src, dst, config }) => {
                if !src.is_dir() {
                    return Err(CliError::Input {
                        path: src,
                        why: "not a directory (expected test-server's recording dir)".into(),
                    });
                }
                let (config, warnings) = load_config(config)?;
                let dst = prepare_writable_dir(&dst)?;
                Ok((Command::ImportTestServer { src, dst, config }, warnings))
            }
            RawCommand::Inspect { file, json } => {
                if !file.is_file() {
                    return Err(CliError::Input {
                        path: file,
                        why: "no such recording file".into(),
                    });
                }
                Ok((Command::Inspect { file, json }, Vec::new()))
            }
            RawCommand::Verify { path } => {
                let path = existing(path)?;
                Ok((Command::Verify { path }, Vec::new()))
            }
            RawCommand::Show {
                file,
                n,
                json,
                full,
            } => {
                if !file.is_file() {
                    return Err(CliError::Input {
                        path: file,
                        why: "no such recording file".into(),
                    });
                }
                let options = crate::tools::ShowOptions {
                    ordinal: n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                    json,
                    full,
                };
                Ok((Command::Show { file, options }, Vec::new()))
            }
            RawCommand::Diff { a, b, config, json } => {
                let (a, b) = (existing(a)?, existing(b)?);
                let (config, warnings) = match config {
                    Some(path) => {
                        let (config, warnings) = Config::load(&path)?;
                        (Some(Box::new(config)), warnings)
                    }
                    None => (None, Vec::new()),
                };
                Ok((Command::Diff { a, b, config, json }, warnings))
            }
            RawCommand::Export(ExportCommand::Har { src, output }) => {
                let src = existing(src)?;
                Ok((Command::ExportHar { src, output }, Vec::new()))
            }
            RawCommand::Import(ImportCommand::Har {
                input,
                dst,
                session,
                config,
            }) => {
                if !input.is_file() {
                    return Err(CliError::Input {
                        path: input,
                        why: "no such HAR file".into(),
                    });
                }
                if let Some(name) = &session {
                    crate::session_name::SessionName::parse(name).map_err(|error| {
                        CliError::Input {
                            path: PathBuf::from(name),
                            why: format!("--session: {error}"),
                        }
                    })?;
                }
                let (config, warnings) = load_config(config)?;
                let dst = prepare_writable_dir(&dst)?;
                let config = Box::new(config);
                Ok((
                    Command::ImportHar {
                        input,
                        dst,
                        session,
                        config,
                    },
                    warnings,
                ))
            }
        }
    }
}

/// `path` if something is there.
fn existing(path: PathBuf) -> Result<PathBuf, CliError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(CliError::Input {
            path,
            why: "no such file or directory".into(),
        })
    }
}

fn serve(args: ServeArgs, mode: Mode) -> Result<(Command, Vec<String>), CliError> {
    let (mut config, warnings) = load_config(args.config)?;
    if let Some(path) = args.tls_ca_out {
        config.tls_ca_out = Some(path);
    }
    let recording_dir = match mode {
        Mode::Record | Mode::RecordMissing => prepare_writable_dir(&args.recording_dir)?,
        Mode::Replay => existing_dir(&args.recording_dir)?,
        // Records nothing: the dir is neither needed nor created.
        Mode::Passthrough => args.recording_dir,
    };
    // Checked now: a typo must fail at start, not after the run.
    if let Some(report) = &args.unused_report
        && let Some(folder) = report.parent()
        && !folder.as_os_str().is_empty()
        && !folder.is_dir()
    {
        return Err(CliError::Input {
            path: report.clone(),
            why: "--unused-report: no such folder for the report".into(),
        });
    }
    let options = ServeOptions {
        config,
        mode,
        recording_dir,
        unused_report: args.unused_report,
    };
    Ok((Command::Serve(options), warnings))
}

/// `--config` as given, else the first default name present in the current dir.
fn load_config(path: Option<PathBuf>) -> Result<(Config, Vec<String>), CliError> {
    let path = match path {
        Some(path) => path,
        None => DEFAULT_CONFIG_NAMES
            .iter()
            .map(PathBuf::from)
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| CliError::NoConfig {
                dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            })?,
    };
    Ok(Config::load(&path)?)
}

/// Record modes: the dir is created if missing, then proved writable by
/// creating and removing a probe file, so that a read-only mount is reported
/// now rather than at the first recorded request.
fn prepare_writable_dir(dir: &Path) -> Result<PathBuf, CliError> {
    let fail = |why: String| CliError::RecordingDir {
        path: dir.to_path_buf(),
        why,
    };
    if let Err(error) = std::fs::create_dir_all(dir) {
        let why = match first_non_dir_ancestor(dir) {
            Some(blocker) => format!(
                "cannot be created: {} exists and is not a directory ({error})",
                blocker.display()
            ),
            None => format!("cannot be created: {error}"),
        };
        return Err(fail(why));
    }
    let probe = dir.join(format!(".ouli-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(dir.to_path_buf())
        }
        Err(error) => Err(fail(format!("is not writable: {error}"))),
    }
}

/// The path component that is a file where a directory was wanted.
fn first_non_dir_ancestor(dir: &Path) -> Option<PathBuf> {
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    ancestors
        .into_iter()
        .find(|p| !p.as_os_str().is_empty() && p.exists() && !p.is_dir())
        .map(Path::to_path_buf)
}

fn existing_dir(dir: &Path) -> Result<PathBuf, CliError> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => Ok(dir.to_path_buf()),
        Ok(_) => Err(CliError::RecordingDir {
            path: dir.to_path_buf(),
            why: "is not a directory".into(),
        }),
        Err(error) => Err(CliError::RecordingDir {
            path: dir.to_path_buf(),
            why: format!(
                "does not exist or cannot be read ({error}); replay serves an existing recording dir \
                 (record one first with `ouli record`)"
            ),
        }),
    }
}

/// `ouli import test-server`'s output: one line per file converted, one per
/// thing test-server lost in a converted file (`note`), one per file left out
/// (`skipped`), then a summary.
pub fn write_import_report(
    report: &crate::testserver::ImportReport,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let converted = |file: &Path| report.converted.iter().any(|(f, _)| f == file);
    for (file, interactions) in &report.converted {
        writeln!(
            out,
            "converted {} ({interactions} interactions)",
            file.display()
        )?;
    }
    let mut skipped = 0;
    let mut notes = 0;
    for (file, why) in &report.problems {
        if converted(file) {
            notes += 1;
            writeln!(out, "note {}: {why}", file.display())?;
        } else {
            skipped += 1;
            writeln!(out, "skipped {}: {why}", file.display())?;
        }
    }
    writeln!(
        out,
        "{} file(s) converted, {skipped} skipped, {notes} note(s)",
        report.converted.len()
    )
}

// ---------------------------------------------------------------------------
// Inspection tools.

/// Number of fingerprint hex digits `inspect` prints.
pub const FINGERPRINT_PREFIX_HEX_DIGITS: usize = 12;

/// `ouli inspect FILE`: one line (or JSON object) per interaction.
pub fn inspect(file: &Path, json: bool, out: &mut dyn Write) -> Result<(), ToolError> {
    let recording = Recording::open(file, ReadBackend::Mmap)?;
    for (index, record) in recording.iter().enumerate() {
        // From 1, as `ouli show N` and `ouli diff` number interactions.
        let ordinal = index + 1;
        let record = record?;
        let interaction = record.to_interaction()?;
        let method = String::from_utf8_lossy(&interaction.request.method);
        let target = String::from_utf8_lossy(&interaction.request.target);
        let status = record.response_status();
        let body_bytes = record.response_body_len();
        let fingerprint = record.fingerprint().to_hex();
        let websocket = record.is_websocket();
        if json {
            let line = serde_json::json!({
                "ordinal": ordinal,
                "method": method,
                "target": target,
                "status": status,
                "body_bytes": body_bytes,
                "fingerprint": fingerprint,
                "chain_link": record.chain_link().to_hex(),
                "websocket": websocket,
                "endpoint": interaction.endpoint,
                "offset": record.location().offset,
                "format_version": record.format_version(),
                "head_offset_us": record.response_head_offset_us(),
                "trailers": record.response_trailers_shared().count(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{ordinal:>5}  {method:<7} {target}  {status}{}  {body_bytes} B  {}",
                if websocket { " ws" } else { "" },
                fingerprint_prefix(&record.fingerprint()),
            )?;
        }
    }
    Ok(())
}

fn fingerprint_prefix(fingerprint: &Fingerprint) -> String {
    let mut hex = fingerprint.to_hex();
    hex.truncate(FINGERPRINT_PREFIX_HEX_DIGITS);
    hex
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Files checked and their sound interaction records.
    pub files: Vec<(PathBuf, usize)>,
    /// Damage, each message naming file, offset and what is wrong.
    pub damaged: Vec<String>,
    /// Files found but not checked, and why (interrupted recordings in a
    /// directory: `.ouli.partial`).
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// Suffix of a recording a record run is writing, or that one interrupted.
const PARTIAL_SUFFIX: &str = ".ouli.partial";

/// `ouli verify FILE|DIR`: checks every `.ouli` file (of a directory,
/// recursively) as `recording::verify_file` does: header, every record's
/// framing and CRC to the end of the file, the index and the footer. In a
/// directory, interrupted recordings (`.ouli.partial`) are listed as
/// skipped; given by name, one is checked (without expecting an index).
pub fn verify(path: &Path) -> Result<VerifyReport, ToolError> {
    let mut report = VerifyReport::default();
    let mut files = Vec::new();
    if path.is_dir() {
        let mut partials = Vec::new();
        collect_recordings(path, &mut files, &mut partials)?;
        files.sort();
        partials.sort();
        report.skipped = partials
            .into_iter()
            .map(|p| {
                (
                    p,
                    "interrupted recording (.ouli.partial), not checked; name it to check it",
                )
            })
            .collect();
    } else {
        files.push(path.to_path_buf());
    }
    for file in files {
        let expect = if file.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            Expect::Interrupted
        } else {
            Expect::Finished
        };
        let verified = match verify_file(&file, expect) {
            Ok(verified) => verified,
            Err(error) => {
                report.damaged.push(error.to_string()); // names the file
                continue;
            }
        };
        for damage in &verified.damage {
            report.damaged.push(format!(
                "{}: offset {}: {}",
                file.display(),
                damage.offset,
                damage.what
            ));
        }
        report.files.push((file, verified.records));
    }
    Ok(report)
}

/// The `.ouli` files under `dir`, and apart the `.ouli.partial` ones.
fn collect_recordings(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    partials: &mut Vec<PathBuf>,
) -> Result<(), ToolError> {
    let io = |source| ToolError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            collect_recordings(&path, out, partials)?;
        } else if path.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
            partials.push(path);
        } else if path.extension().is_some_and(|ext| ext == "ouli") {
            out.push(path);
        }
    }
    Ok(())
}

/// Why an inspection tool failed (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}
