//! The real binary, run as a test harness runs it: flags, help, exit codes,
//! and every refusal before start (config, recording dir) with its message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::ouli::OULI;

const VALID_CONFIG: &str = "\
endpoints:
  - target_host: api.example.com
    target_type: https
    target_port: 443
    source_type: http
    source_port: 0
    health: /health
";

fn ouli(args: &[&str], cwd: &Path) -> Output {
    Command::new(OULI)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .output()
        .expect("the ouli binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts a refusal: exit code 2, a message on stderr, nothing on stdout
/// (stdout is for ready lines only), no panic.
fn assert_refused(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(stdout(output).is_empty(), "stdout: {}", stdout(output));
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in stderr: {err}");
    }
}

#[test]
fn help_lists_every_subcommand_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let output = ouli(&["--help"], dir.path());
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    for subcommand in [
        "record",
        "replay",
        "record-missing",
        "passthrough",
        "import",
        "inspect",
        "verify",
        "show",
        "diff",
        "export",
    ] {
        assert!(help.contains(subcommand), "{subcommand} missing: {help}");
    }
    assert!(help.contains("--log-level"), "{help}");
    assert!(help.contains("Exit codes"), "{help}");
}

#[test]
fn serving_subcommands_teach_example_ready_line_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for subcommand in ["record", "replay", "record-missing", "passthrough"] {
        let output = ouli(&[subcommand, "--help"], dir.path());
        assert_eq!(output.status.code(), Some(0), "{subcommand}");
        let help = stdout(&output);
        assert!(
            help.contains(&format!("ouli {subcommand} --config")),
            "{help}"
        );
        assert!(
            help.contains("ouli listening endpoint=<i> addr=<ip:port> mode=<mode>"),
            "{help}"
        );
        assert!(help.contains("Exit codes"), "{help}");
        assert!(help.contains("--recording-dir"), "{help}");
    }
    for args in [
        &["inspect", "--help"][..],
        &["verify", "--help"],
        &["import", "test-server", "--help"],
        &["import", "har", "--help"],
        &["export", "har", "--help"],
        &["show", "--help"],
        &["diff", "--help"],
    ] {
        let output = ouli(args, dir.path());
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(
            stdout(&output).contains("Example"),
            "{args:?}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn version_prints_the_crate_version() {
    let dir = tempfile::tempdir().unwrap();
    let output = ouli(&["--version"], dir.path());
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output).trim(),
        format!("ouli {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs a binary this test has just written. Another test's child, forked
/// while the copy's file was still open for writing, holds that descriptor
/// until it execs: meanwhile executing the copy fails with ETXTBSY (26).
fn run_copied_binary(command: &mut Command) -> Output {
    for _ in 0..100 {
        match command.output() {
            Err(error) if error.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            result => return result.unwrap(),
        }
    }
    panic!("the copied binary stayed busy (ETXTBSY) for 2 s");
}

#[test]
fn runs_under_the_name_test_server() {
    // test-server's SDKs run `<package>/bin/test-server --help` after install.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("test-server");
    std::fs::copy(OULI, &copy).unwrap();
    let output = run_copied_binary(Command::new(&copy).arg("--help"));
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("replay"));
    // And refuses exactly as ouli does.
    let output = run_copied_binary(
        Command::new(&copy)
            .args(["replay", "--config", "absent.yml", "--recording-dir", "r"])
            .current_dir(dir.path()),
    );
    assert_refused(&output, &["absent.yml"]);
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ouli(&[], dir.path()).status.code(), Some(2));
    assert_eq!(ouli(&["serve-forever"], dir.path()).status.code(), Some(2));
    assert_eq!(
        ouli(&["replay", "--bogus"], dir.path()).status.code(),
        Some(2)
    );
    let config = write(dir.path(), "ouli.yaml", VALID_CONFIG);
    let output = ouli(
        &[
            "replay",
            "--log-level",
            "=[",
            "--config",
            config.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_refused(&output, &["--log-level"]);
}

#[test]
fn missing_config_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let output = ouli(
        &[
            "replay",
            "--config",
            "nowhere/ouli.yaml",
            "--recording-dir",
            ".",
        ],
        dir.path(),
    );
    assert_refused(&output, &["nowhere/ouli.yaml"]);
}

#[test]
fn no_config_and_no_default_file_lists_the_names_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let output = ouli(&["record"], dir.path());
    assert_refused(&output, &["ouli.yaml", "ouli.toml", "--config"]);
}

#[test]
fn malformed_yaml_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yml",
        "endpoints:\n  - target_host: a\n   oops: [\n",
    );
    let output = ouli(
        &["replay", "--config", "bad.yml", "--recording-dir", "."],
        dir.path(),
    );
    assert_refused(&output, &["bad.yml:3"]);
}

#[test]
fn bad_regex_is_refused_before_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{VALID_CONFIG}    response_header_replacements:\n      - header: Location\n        regex: \"[\"\n        replace: x\n"
    );
    write(dir.path(), "ouli.yaml", &text);
    let output = ouli(&["record", "--recording-dir", "rec"], dir.path());
    assert_refused(
        &output,
        &["endpoints[0].response_header_replacements[0].regex"],
    );
    assert!(
        !dir.path().join("rec").exists(),
        "nothing is created for a refused config"
    );
}

#[test]
fn recording_dir_under_a_file_says_why() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ouli.yaml", VALID_CONFIG);
    write(dir.path(), "blocker", "a file, not a directory");
    for mode in ["record", "record-missing"] {
        let output = ouli(&[mode, "--recording-dir", "blocker/recordings"], dir.path());
        assert_refused(&output, &["blocker/recordings", "not a directory"]);
    }
}

#[test]
fn replay_of_a_missing_recording_dir_names_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ouli.yaml", VALID_CONFIG);
    let output = ouli(&["replay", "--recording-dir", "never-recorded"], dir.path());
    assert_refused(&output, &["never-recorded", "does not exist"]);
    assert!(
        !dir.path().join("never-recorded").exists(),
        "replay creates nothing"
    );
}

#[test]
fn inspect_and_verify_of_missing_paths_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_refused(
        &ouli(&["inspect", "absent.ouli"], dir.path()),
        &["absent.ouli"],
    );
    assert_refused(
        &ouli(&["verify", "absent-dir"], dir.path()),
        &["absent-dir"],
    );
}

#[test]
fn import_of_a_missing_source_dir_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ouli.yaml", VALID_CONFIG);
    let output = ouli(&["import", "test-server", "old", "new"], dir.path());
    assert_refused(&output, &["old", "not a directory"]);
    assert!(!dir.path().join("new").exists());
}

/// `--log-level` and `RUST_LOG` take a level or `target=level` directives
/// (comma-separated); the config's unknown-key warning is logged by target
/// `ouli`, so it shows or not by the filter.
#[test]
fn log_filters_select_by_level_and_target() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ouli.yaml",
        &format!("{VALID_CONFIG}not_an_ouli_key: 1\n"),
    );
    std::fs::create_dir(dir.path().join("old")).unwrap();
    let import = |log_level: Option<&str>, rust_log: Option<&str>| {
        let mut command = Command::new(OULI);
        if let Some(level) = log_level {
            command.args(["--log-level", level]);
        }
        command.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command
            .args(["import", "test-server", "old", "new"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stderr(&output).contains("not_an_ouli_key")
    };
    assert!(import(None, None), "info by default");
    assert!(!import(Some("error"), None));
    assert!(import(Some("ouli=warn"), None));
    assert!(import(Some(" hyper=debug , ouli=info ,"), None));
    assert!(!import(Some("hyper=trace"), None), "other targets are off");
    assert!(
        !import(Some("warn,ouli=error"), None),
        "the longest target wins"
    );
    assert!(!import(None, Some("error")));
    assert!(import(None, Some("ouli=debug")));
    assert!(import(Some("warn"), Some("error")), "--log-level wins");
    assert!(import(None, Some("=[")), "a bad RUST_LOG means info");
}

// ---------------------------------------------------------------------------
// Shell conveniences: completions, the manual page, --port, log colour.

/// The subcommands a user completes or looks up first.
const SUBCOMMANDS: &[&str] = &[
    "record",
    "replay",
    "record-missing",
    "passthrough",
    "inspect",
    "verify",
    "show",
    "diff",
    "completions",
    "man",
];

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef ouli"),
        ("fish", "complete -c ouli"),
    ] {
        let output = ouli(&["completions", shell], dir.path());
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shell}: {}",
            stderr(&output)
        );
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: no {marker:?}: {script}");
        for subcommand in SUBCOMMANDS {
            assert!(
                script.contains(subcommand),
                "{shell}: {subcommand} missing: {script}"
            );
        }
        assert!(script.contains("recording-dir"), "{shell}: no flags");
    }
    assert_refused(&ouli(&["completions", "tcsh"], dir.path()), &["tcsh"]);
}

#[test]
fn man_page_is_roff_naming_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let output = ouli(&["man"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let page = stdout(&output);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains(".TH ouli 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "{section} missing: {page}");
    }
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("ouli\\-{}", subcommand.replace('-', "\\-"))),
            "{subcommand} missing: {page}"
        );
    }
    assert_roff_clean(&page);
    // Each page the SUBCOMMANDS section refers to is there.
    let record = stdout(&ouli(&["man", "record"], dir.path()));
    assert!(record.contains(".TH ouli-record 1"), "{record}");
    assert!(record.contains("\"ouli 0.1.0\""), "{record}");
    assert!(record.contains("\\-\\-recording\\-dir"), "{record}");
    assert_roff_clean(&record);
    let har = stdout(&ouli(&["man", "import", "har"], dir.path()));
    assert!(har.contains(".TH ouli-import-har 1"), "{har}");
    assert_refused(
        &ouli(&["man", "nope"], dir.path()),
        &["nope", "no such subcommand"],
    );
}

/// groff, where it is installed, formats `page` without a warning.
fn assert_roff_clean(page: &str) {
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut groff) = groff {
        use std::io::Write as _;
        groff
            .stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let checked = groff.wait_with_output().unwrap();
        assert!(checked.status.success(), "groff failed");
        assert!(
            checked.stderr.is_empty(),
            "groff warns: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

#[test]
fn port_flag_overrides_the_first_endpoints_source_port() {
    use crate::support::ouli::Start;
    let dir = tempfile::tempdir().unwrap();
    let (configured, wanted, second) = (
        crate::support::free_port(),
        crate::support::free_port(),
        crate::support::free_port(),
    );
    let yaml = format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_port: 9\n    source_port: {configured}\n  \
         - target_host: 127.0.0.1\n    target_port: 9\n    source_port: {second}\n"
    );
    let server = Start::new("replay", dir.path(), &yaml)
        .create_recording_dir()
        .endpoints(2)
        .mode_arg("--port")
        .mode_arg(wanted.to_string())
        .spawn();
    assert!(
        server.ready_lines[0].contains(&format!("addr=127.0.0.1:{wanted} ")),
        "{:?}",
        server.ready_lines
    );
    assert!(
        server.ready_lines[1].contains(&format!("addr=127.0.0.1:{second} ")),
        "the second endpoint moved: {:?}",
        server.ready_lines
    );
    server.stop().assert_success();

    // The port of another endpoint is refused before anything listens.
    write(dir.path(), "ouli.yaml", &yaml);
    std::fs::create_dir_all(dir.path().join("r")).unwrap();
    let clash = ouli(
        &[
            "replay",
            "--recording-dir",
            "r",
            "--port",
            &second.to_string(),
        ],
        dir.path(),
    );
    assert_refused(&clash, &[&format!("--port {second}"), "endpoints[1]"]);
}

/// `ouli import` of a config with an unknown key logs a warning: its log
/// line, under `env`, through a pipe or (`script`) a terminal.
fn warning_log(dir: &Path, env: &[(&str, &str)], terminal: bool) -> String {
    let mut command = if terminal {
        let mut script = Command::new("script");
        script
            .args(["-q", "-e", "-c"])
            .arg(format!("'{OULI}' import test-server old new-{}", env.len()));
        script.arg("/dev/null");
        script
    } else {
        let mut direct = Command::new(OULI);
        direct.args(["import", "test-server", "old", "new"]);
        direct
    };
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        text.contains("not_an_ouli_key"),
        "no warning logged: {text}"
    );
    text
}

#[test]
fn logs_carry_no_colour_escapes_when_piped_or_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ouli.yaml",
        &format!("{VALID_CONFIG}not_an_ouli_key: 1\n"),
    );
    std::fs::create_dir(dir.path().join("old")).unwrap();
    let piped = warning_log(dir.path(), &[], false);
    assert!(!piped.contains("\x1b["), "escapes in a pipe: {piped:?}");
    let piped = warning_log(dir.path(), &[("NO_COLOR", "1")], false);
    assert!(!piped.contains("\x1b["), "{piped:?}");
    if Command::new("script").arg("--version").output().is_err() {
        return; // no util-linux `script`: the terminal half cannot run
    }
    // At a terminal, colour (so the checks above are not vacuous) ...
    let terminal = warning_log(dir.path(), &[], true);
    assert!(
        terminal.contains("\x1b["),
        "no colour at a terminal: {terminal:?}"
    );
    // ... unless NO_COLOR says otherwise; an empty NO_COLOR does not.
    let terminal = warning_log(dir.path(), &[("NO_COLOR", "1")], true);
    assert!(
        !terminal.contains("\x1b["),
        "NO_COLOR ignored: {terminal:?}"
    );
    let terminal = warning_log(dir.path(), &[("NO_COLOR", ""), ("X", "")], true);
    assert!(terminal.contains("\x1b["), "empty NO_COLOR: {terminal:?}");
}
