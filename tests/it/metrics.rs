//! `GET /__ouli/metrics`, end to end: the real binary records from a real
//! upstream (hyper), then replays and record-missing runs; each scrape is
//! parsed by a real Prometheus text parser (Python's `prometheus_client`,
//! installed into a venv under the target dir on first use) and the
//! counters are checked to move as hits, misses, exhausted chains,
//! proxied requests and client errors are made; the histogram counts every
//! request; open connections go up and back down.

use crate::support::client::send_text;
use crate::support::config;
use crate::support::ouli::Start;
use crate::support::upstream;
use std::io::{BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The content type the Prometheus text format is served with.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Longest wait for a closed connection to leave the gauge.
const CLOSE_SEEN_WITHIN: Duration = Duration::from_secs(20);
/// Longest the venv and its pip install may take.
const VENV_SETUP_MAX: Duration = Duration::from_secs(300);

/// Reads the exposition text on stdin; prints every family (name, type,
/// help) and sample (name, labels, value) as JSON.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families, samples = {}, []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type, "help": family.documentation}
    for sample in family.samples:
        samples.append([sample.name, sample.labels, sample.value])
print(json.dumps({"families": families, "samples": samples}))
"#;

/// A Python with `prometheus_client`: the venv under the target dir,
/// made (and the package installed from PyPI) on first use. `None` only
/// when there is no `python3` at all.
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> Option<PathBuf> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no python3 on PATH: the Prometheus parser cannot run");
        return None;
    }
    let ouli = PathBuf::from(env!("CARGO_BIN_EXE_ouli"));
    let venv = ouli.parent().unwrap().join("py-metrics");
    let python = venv.join("bin").join("python");
    let has_parser = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_parser(&python) {
        return Some(python);
    }
    let started = Instant::now();
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(made.success(), "python3 -m venv {}", venv.display());
    let installed = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "prometheus_client"])
        .status()
        .unwrap();
    assert!(installed.success(), "pip install prometheus_client");
    assert!(started.elapsed() < VENV_SETUP_MAX);
    assert!(
        has_parser(&python),
        "prometheus_client installed but not importable"
    );
    Some(python)
}

/// One scrape as the parser read it.
struct Scrape {
    parsed: serde_json::Value,
}

impl Scrape {
    /// The value of the sample `name` whose labels include `labels`; 0 when
    /// there is none.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let samples = self.parsed["samples"].as_array().unwrap();
        let found: Vec<f64> = samples
            .iter()
            .filter(|s| s[0] == name)
            .filter(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
            .map(|s| s[2].as_f64().unwrap())
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().copied().unwrap_or(0.0)
    }

    /// Requests of endpoint 0 in `mode` with `outcome`.
    fn requests(&self, mode: &str, outcome: &str) -> f64 {
        let labels = [("endpoint", "0"), ("mode", mode), ("outcome", outcome)];
        self.value("ouli_requests_total", &labels)
    }

    /// Every request of endpoint 0, whatever its mode and outcome.
    fn requests_all(&self) -> f64 {
        let samples = self.parsed["samples"].as_array().unwrap();
        samples
            .iter()
            .filter(|s| s[0] == "ouli_requests_total" && s[1]["endpoint"] == "0")
            .map(|s| s[2].as_f64().unwrap())
            .sum()
    }

    fn histogram_count(&self) -> f64 {
        self.value("ouli_request_duration_seconds_count", &[("endpoint", "0")])
    }

    fn open_connections(&self) -> f64 {
        self.value("ouli_open_connections", &[("endpoint", "0")])
    }

    fn family(&self, name: &str) -> &serde_json::Value {
        &self.parsed["families"][name]
    }
}

/// Scrapes `/__ouli/metrics` and parses it with `python`.
async fn scrape(python: &PathBuf, addr: &str) -> Scrape {
    let (status, headers, text) = send_text(addr, "GET", "/__ouli/metrics", &[], "").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], CONTENT_TYPE);
    let mut parser = Command::new(python)
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Scrape {
        parsed: serde_json::from_slice(&output.stdout).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_hits_misses_and_proxied_requests_in_every_mode() {
    let Some(python) = python() else { return };
    let upstream = upstream::fixed("{\"ok\":true}").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(upstream, "durability: every-interaction\n");
    let headers = [("test-name", "metrics-session")];

    let server = Start::new("record", dir.path(), &yaml).spawn();
    let before = scrape(&python, &server.addr).await;
    assert_eq!(before.requests("record", "proxied"), 0.0);
    assert_eq!(before.histogram_count(), 0.0, "a scrape is not a request");
    for path in ["/v1/a", "/v1/b"] {
        let (status, _, body) = send_text(&server.addr, "GET", path, &headers, "").await;
        assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
    }
    let recorded = scrape(&python, &server.addr).await;
    assert_eq!(recorded.requests("record", "proxied"), 2.0);
    assert_eq!(recorded.histogram_count(), 2.0);
    assert!(recorded.value("ouli_recording_bytes_appended_total", &[("endpoint", "0")]) > 0.0);
    assert!(recorded.value("ouli_recording_syncs_total", &[]) >= 1.0);
    assert!(recorded.value("ouli_response_bytes_total", &[("endpoint", "0")]) >= 22.0);
    assert_eq!(recorded.value("ouli_sessions", &[]), 1.0);
    for (family, kind) in [
        ("ouli_requests", "counter"),
        ("ouli_request_duration_seconds", "histogram"),
        ("ouli_response_bytes", "counter"),
        ("ouli_open_connections", "gauge"),
        ("ouli_sessions", "gauge"),
        ("ouli_recording_bytes_appended", "counter"),
        ("ouli_recording_syncs", "counter"),
    ] {
        assert_eq!(recorded.family(family)["type"], kind, "{family}");
        assert!(
            !recorded.family(family)["help"].as_str().unwrap().is_empty(),
            "{family} has HELP"
        );
    }
    server.stop().assert_success();

    let server = Start::new("replay", dir.path(), &yaml).spawn();
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/a", &headers, "").await;
    assert_eq!(status, 200, "a hit");
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/a", &headers, "").await;
    assert_eq!(status, 404, "recorded once: the chain is exhausted");
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/zzz", &headers, "").await;
    assert_eq!(status, 404, "a miss");
    let bad = [("test-name", "../escape")];
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/a", &bad, "").await;
    assert_eq!(status, 400, "a bad test name: the client's fault");
    let replayed = scrape(&python, &server.addr).await;
    assert_eq!(replayed.requests("replay", "hit"), 1.0);
    assert_eq!(replayed.requests("replay", "exhausted"), 1.0);
    assert_eq!(replayed.requests("replay", "miss"), 1.0);
    assert_eq!(replayed.requests("replay", "client_error"), 1.0);
    assert_eq!(replayed.requests("replay", "proxied"), 0.0);
    assert_eq!(replayed.requests_all(), 4.0);
    assert_eq!(replayed.histogram_count(), 4.0, "every request, once");
    let inf = [("endpoint", "0"), ("le", "+Inf")];
    assert_eq!(
        replayed.value("ouli_request_duration_seconds_bucket", &inf),
        4.0
    );
    assert!(replayed.value("ouli_request_duration_seconds_sum", &[("endpoint", "0")]) > 0.0);
    assert!(
        replayed.family("ouli_recording_syncs").is_null(),
        "replay writes nothing"
    );
    server.stop().assert_success();

    let server = Start::new("record-missing", dir.path(), &yaml).spawn();
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/b", &headers, "").await;
    assert_eq!(status, 200, "recorded: a hit");
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/new", &headers, "").await;
    assert_eq!(status, 200, "not recorded: proxied");
    let missing = scrape(&python, &server.addr).await;
    assert_eq!(missing.requests("record-missing", "hit"), 1.0);
    assert_eq!(missing.requests("record-missing", "proxied"), 1.0);
    assert_eq!(missing.histogram_count(), 2.0);
    assert!(missing.value("ouli_recording_bytes_appended_total", &[("endpoint", "0")]) > 0.0);
    server.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_go_up_and_back_down() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(crate::support::free_port(), "");
    let server = Start::new("replay", dir.path(), &yaml)
        .create_recording_dir()
        .spawn();
    let idle = scrape(&python, &server.addr).await.open_connections();
    // Held open: each has had an answer, so it is being served.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let stream = crate::support::raw::connect(&server.addr, Duration::from_secs(10));
            let mut writer = stream.try_clone().unwrap();
            writer
                .write_all(b"GET /__ouli/health HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let mut reader = BufReader::new(stream);
            let answer = crate::support::raw::read_answer(&mut reader);
            assert_eq!(answer.status, 200);
            reader
        })
        .collect();
    let busy = scrape(&python, &server.addr).await.open_connections();
    assert!(busy >= 4.0, "three held and the scrape's own: {busy}");
    assert!(busy >= idle + 3.0, "idle {idle}, busy {busy}");
    drop(held);
    let deadline = Instant::now() + CLOSE_SEEN_WITHIN;
    loop {
        let open = scrape(&python, &server.addr).await.open_connections();
        if open <= busy - 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {open} open after closing three"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().assert_success();
}
