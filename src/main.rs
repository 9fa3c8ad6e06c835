//! The `ouli` binary (also installed as `test-server`): parse → validate →
//! run; errors become exit codes (0 ok, 1 runtime, 2 usage or config). The
//! only place `anyhow` is used.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context as _;
use clap::Parser as _;
use ouli::cli::{Cli, CliError, Command, EXIT_RUNTIME, EXIT_USAGE, LogArgs, LogFormat};
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints --help/--version (exit 0) and usage errors (exit 2) itself.
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log) {
        eprintln!("ouli: {error:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    #[cfg(feature = "profiling")]
    let profile = cli.profile.clone();
    let (command, warnings) = match cli.validate() {
        Ok(validated) => validated,
        Err(error) => {
            eprintln!("ouli: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    #[cfg(feature = "profiling")]
    let profiler = match profile.as_deref().map(ouli::profile::Profiler::start) {
        None => None,
        Some(Ok(profiler)) => Some(profiler),
        Some(Err(error)) => {
            eprintln!("ouli: --profile: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let outcome = run(command);
    #[cfg(feature = "profiling")]
    if let Some(profiler) = profiler {
        match profiler.finish() {
            Ok(path) => tracing::info!("CPU profile written to {}", path.display()),
            Err(error) => eprintln!("ouli: --profile: {error}"),
        }
    }
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ouli: {error:#}");
            let usage = error.downcast_ref::<CliError>().is_some();
            ExitCode::from(if usage { EXIT_USAGE } else { EXIT_RUNTIME })
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(options) => {
            ouli::server::run(options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportTestServer { src, dst, config } => {
            let report = ouli::testserver::import_dir(&src, &dst, &config)
                .with_context(|| format!("importing {} into {}", src.display(), dst.display()))?;
            let mut stdout = std::io::stdout().lock();
            ouli::cli::write_import_report(&report, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { file, json } => {
            let mut stdout = std::io::stdout().lock();
            ouli::cli::inspect(&file, json, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { file, options } => {
            let mut stdout = std::io::stdout().lock();
            tool_outcome(ouli::tools::show(&file, &options, &mut stdout))
        }
        Command::Diff { a, b, config, json } => Ok(diff(&a, &b, config.as_deref(), json)),
        Command::ExportHar { src, output } => {
            let entries = match ouli::tools::export_har(&src, &output) {
                Ok(entries) => entries,
                Err(error) => return tool_outcome(Err(error)),
            };
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "wrote {} ({entries} entries)", output.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportHar {
            input,
            dst,
            session,
            config,
        } => {
            let report = match ouli::tools::import_har(&input, &dst, session.as_deref(), &config) {
                Ok(report) => report,
                Err(error) => return tool_outcome(Err(error)),
            };
            let mut stdout = std::io::stdout().lock();
            for (session, interactions) in &report.sessions {
                writeln!(stdout, "session {session}: {interactions} interaction(s)")?;
            }
            for problem in &report.problems {
                writeln!(stdout, "skipped {problem}")?;
            }
            writeln!(
                stdout,
                "{} session(s) written, {} entry(ies) skipped",
                report.sessions.len(),
                report.problems.len()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(shell) => {
            let mut stdout = std::io::stdout().lock();
            ouli::cli::write_completions(shell, &mut stdout);
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(page) => {
            let mut stdout = std::io::stdout().lock();
            ouli::cli::write_man(*page, &mut stdout)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { path } => {
            let report = ouli::cli::verify(&path)?;
            let mut stdout = std::io::stdout().lock();
            for (file, records) in &report.files {
                writeln!(stdout, "{}: {records} record(s) ok", file.display())?;
            }
            for (file, why) in &report.skipped {
                writeln!(stdout, "SKIPPED {}: {why}", file.display())?;
            }
            for damage in &report.damaged {
                writeln!(stdout, "DAMAGED {damage}")?;
            }
            if report.damaged.is_empty() {
                writeln!(
                    stdout,
                    "ok: {} file(s) sound, {} skipped",
                    report.files.len(),
                    report.skipped.len()
                )?;
                Ok(ExitCode::SUCCESS)
            } else {
                writeln!(stdout, "damaged: {} problem(s) found", report.damaged.len())?;
                Ok(ExitCode::from(EXIT_RUNTIME))
            }
        }
    }
}

/// Logs to stderr: stdout carries only the machine-readable ready lines.
///
/// The filter is a [`Targets`](tracing_subscriber::filter::Targets) list
/// (`info`, `ouli=debug,hyper=info`): the directives people write, without
/// `EnvFilter`'s span and field-value matching, which would link a regex
/// engine (~0.3 MB) into a binary held to 5 MB (rfcs/0003, Binary size).
fn init_logging(log: &LogArgs) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = match &log.log_level {
        Some(level) => parse_log_filter(level)
            .with_context(|| format!("--log-level {level:?} is not a log filter"))?,
        None => std::env::var("RUST_LOG")
            .ok()
            .and_then(|env| parse_log_filter(&env).ok())
            .unwrap_or_else(|| {
                tracing_subscriber::filter::Targets::new()
                    .with_default(tracing_subscriber::filter::LevelFilter::INFO)
            }),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(log_colour());
    let registry = tracing_subscriber::registry().with(filter);
    match log.log_format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
    Ok(())
}

/// Colour escapes in the logs only for a person at a terminal: never when
/// stderr is a pipe or a file (a CI log, a test harness reading it), nor when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn log_colour() -> bool {
    use std::io::IsTerminal as _;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Parses a comma-separated list of `LEVEL` and `TARGET=LEVEL` directives;
/// empty directives and spaces around them are ignored, as `EnvFilter` did.
fn parse_log_filter(text: &str) -> anyhow::Result<tracing_subscriber::filter::Targets> {
    let directives: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .collect();
    if directives.is_empty() {
        anyhow::bail!("no directive");
    }
    // The error's source repeats its message: keep the message only.
    directives
        .join(",")
        .parse()
        .map_err(|error: tracing_subscriber::filter::ParseError| anyhow::anyhow!("{error}"))
}

/// A tool's result as an exit code: 0, else the error on stderr and 2 when
/// the command line asked for something that is not there, 1 otherwise.
fn tool_outcome(result: Result<(), ouli::tools::ToolError>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("ouli: {error}");
            Ok(ExitCode::from(if error.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            }))
        }
    }
}

/// `ouli diff` as diff(1) exits: 0 equal, 1 different, 2 trouble.
fn diff(
    a: &std::path::Path,
    b: &std::path::Path,
    config: Option<&ouli::config::Config>,
    json: bool,
) -> ExitCode {
    let report = match ouli::tools::diff(a, b, config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("ouli: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut stdout, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        ouli::tools::diff::write_text(&report, &mut stdout)
    };
    match written {
        Err(error) => {
            eprintln!("ouli: writing output: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Ok(()) if report.is_equal() => ExitCode::SUCCESS,
        Ok(()) => ExitCode::from(EXIT_RUNTIME),
    }
}
