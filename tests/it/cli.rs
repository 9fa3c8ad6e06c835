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
