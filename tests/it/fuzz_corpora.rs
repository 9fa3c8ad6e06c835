//! The fuzz targets' corpora as tests: every committed input of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (crashes found,
//! kept once fixed) goes through the same checks the fuzzer runs
//! (`fuzz/checks/`), on stable, without libFuzzer. `scripts/fuzz` runs the
//! fuzzer itself.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/mod.rs"]
mod checks;

/// Every file of the target's corpus and regressions, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .map(|entry| entry.expect("corpus entry").path())
                .filter(|path| path.is_file()),
        );
    }
    files.sort();
    files
}

/// Runs `check` on every input; a failure names the file.
fn run(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target}/ has no inputs");
    for path in &files {
        let data = std::fs::read(path).expect("corpus file reads");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!(
                "fuzz target {target}: the check fails on {}",
                path.display()
            );
        }
    }
}

#[test]
fn recording_corpus_passes() {
    run("recording", checks::recording::check);
}

#[test]
fn config_corpus_passes() {
    run("config", checks::config::check);
}

#[test]
fn canonical_corpus_passes() {
    run("canonical", checks::canonical::check);
}

#[test]
fn redact_corpus_passes() {
    run("redact", checks::redact::check);
}

#[test]
fn testserver_json_corpus_passes() {
    run("testserver_json", checks::testserver_json::check);
}

#[test]
fn websocket_log_corpus_passes() {
    run("websocket_log", checks::websocket_log::check);
}
