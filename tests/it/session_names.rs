//! Session names end to end: the real binary in record mode against a real
//! hyper upstream. A name is accepted exactly when it can be stored (the
//! longest one is recorded and replayed, one byte more is a 400), and a
//! recording that cannot be written is never silent: a 500
//! `recording-failed` when it cannot start, else a response broken off
//! before its end and a logged, counted failure that makes the run exit
//! non-zero.

use crate::support::config;
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest last segment a name may have: 255 (a file name) minus
/// `.ouli.partial`.
const LAST_SEGMENT_MAX: usize = 242;

/// `ouli <mode>` recording into `dir/recordings`, forwarding to
/// `upstream_port`, its log collected by a thread (so that a file size limit
/// on the process never applies to it); `file_blocks_max` runs it under
/// `ulimit -f` (512-byte blocks) with SIGXFSZ ignored, so that a write past
/// it fails (`EFBIG`).
fn start(mode: &str, dir: &Path, upstream_port: u16, file_blocks_max: Option<u64>) -> Ouli {
    let mut start = Start::new(mode, dir, &config(upstream_port, "")).log(Log::Collect);
    if let Some(blocks) = file_blocks_max {
        start = start.shell_prefix(&format!("ulimit -f {blocks}; trap '' XFSZ;"));
    }
    start.spawn()
}

/// SIGTERM, then the exit status and everything it logged.
fn stop(ouli: Ouli) -> (ExitStatus, String) {
    let stopped = ouli.stop();
    (stopped.status, stopped.log)
}

/// A real upstream answering every request with `body-of <path>` padded to
/// the length the `size` query asks for (default: as is); counts the
/// requests it got.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = upstream::start(Options::default(), move |_, request: http::Request<_>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let path = request.uri().path().to_owned();
            let size = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("size="))
                .and_then(|n| n.parse::<usize>().ok());
            let mut body = format!("body-of {path}").into_bytes();
            if let Some(size) = size {
                body.resize(size, b'.');
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
        }
    })
    .await;
    (upstream.port, calls)
}

/// GET `path` with `Test-Name: name`: status, `x-ouli-error`, body.
async fn get(addr: &str, name: &str, path: &str) -> (u16, String, String) {
    let (status, kind, body) = get_body(addr, name, path).await;
    (status, kind, body.expect("the response body"))
}

/// [`get`], the body as it ended: `Err` when the response was broken off.
async fn get_body(
    addr: &str,
    name: &str,
    path: &str,
) -> (u16, String, Result<String, hyper::Error>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("Test-Name", name)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-ouli-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await;
    let body = body.map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned());
    (status, kind, body)
}

/// POST to a control path: status and `x-ouli-error`.
async fn post(addr: &str, path: &str) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let kind = response
        .headers()
        .get("x-ouli-error")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status().as_u16(), kind)
}

fn recording(dir: &Path, name: &str) -> PathBuf {
    dir.join("recordings").join(format!("{name}.ouli"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_storable_names_are_recorded_and_replayed_and_one_byte_more_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _) = upstream().await;
    let longest = "x".repeat(LAST_SEGMENT_MAX);
    // The whole name at its limit (255 bytes), its last segment too.
    let nested = format!(
        "{}/{}",
        "d".repeat(255 - 1 - LAST_SEGMENT_MAX),
        "y".repeat(LAST_SEGMENT_MAX)
    );
    assert_eq!(nested.len(), 255);
    let ouli = start("record", dir.path(), port, None);
    for name in [&longest, &nested] {
        let (status, kind, body) = get(&ouli.addr, name, "/stored").await;
        assert_eq!((status, kind.as_str()), (200, ""), "{name}: {body}");
    }
    let refused = [
        format!("{longest}x"),
        format!("d/{longest}x"),
        // Folders that are, or are being written as, another session's file.
        "coll.ouli/x".to_owned(),
        "x.ouli.partial/y".to_owned(),
        "t.json/x".to_owned(),
    ];
    for name in &refused {
        let (status, kind, body) = get(&ouli.addr, name, "/refused").await;
        assert_eq!(
            (status, kind.as_str()),
            (400, "bad-test-name"),
            "{name}: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["fault"], "client", "{body}");
    }
    // The control path takes the same names.
    let (status, kind) = post(&ouli.addr, &format!("/__ouli/sessions/{longest}x/end")).await;
    assert_eq!((status, kind.as_str()), (400, "bad-test-name"));
    let (status, _) = post(&ouli.addr, &format!("/__ouli/sessions/{longest}/end")).await;
    assert_eq!(status, 200);
    assert!(recording(dir.path(), &longest).is_file());
    // The sessions whose file the refused folders would have been.
    for name in ["coll", "x"] {
        assert_eq!(get(&ouli.addr, name, "/sibling").await.0, 200);
    }
    let (status, log) = stop(ouli);
    assert!(status.success(), "record run failed: {log}");
    for name in [longest.as_str(), nested.as_str(), "coll", "x"] {
        assert!(
            recording(dir.path(), name).is_file(),
            "{name} not recorded: {log}"
        );
    }
    let leftovers: Vec<_> = walk(&dir.path().join("recordings"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let ouli = start("replay", dir.path(), port, None);
    for name in [longest.as_str(), nested.as_str()] {
        let (status, _, body) = get(&ouli.addr, name, "/stored").await;
        assert_eq!((status, body.as_str()), (200, "body-of /stored"), "{name}");
    }
    let (status, log) = stop(ouli);
    assert!(status.success(), "{log}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_start_is_a_500_recording_failed_and_nothing_is_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (port, calls) = upstream().await;
    let ouli = start("record", dir.path(), port, None);
    // After the start: a file where session `blocked/case` needs a folder.
    std::fs::write(dir.path().join("recordings/blocked"), b"not a folder").unwrap();
    let (status, kind, body) = get(&ouli.addr, "blocked/case", "/lost").await;
    assert_eq!((status, kind.as_str()), (500, "recording-failed"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "recording-failed");
    assert_eq!(json["fault"], "recording");
    assert!(
        json["message"].as_str().unwrap().contains("blocked/case"),
        "{body}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "forwarded though not recordable"
    );
    // Other sessions are recorded as ever.
    assert_eq!(get(&ouli.addr, "fine", "/kept").await.0, 200);
    let (status, log) = stop(ouli);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("session blocked/case: recording failed"),
        "{log}"
    );
    assert!(recording(dir.path(), "fine").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_fails_after_the_head_was_sent_breaks_the_body_off_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _) = upstream().await;
    // 8 blocks of 512 bytes: room for the file header, one small record and
    // the index written at the end, not for a 16 KB body.
    let ouli = start("record", dir.path(), port, Some(8));
    assert_eq!(get(&ouli.addr, "limited", "/small").await.0, 200);
    let (status, _, body) = get_body(&ouli.addr, "limited", "/big?size=16000").await;
    // The head was sent before the record could be written; the body is
    // broken off, so the client does not take it for a recorded answer.
    assert_eq!(status, 200);
    assert!(
        body.is_err(),
        "the client got a whole answer that was not recorded"
    );
    // The server goes on serving, and recording what fits.
    assert_eq!(get(&ouli.addr, "limited", "/after").await.0, 200);
    let (status, log) = stop(ouli);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("session limited: recording failed: interaction not recorded"),
        "{log}"
    );
    assert!(
        log.contains("1 interaction(s) answered but not recorded"),
        "{log}"
    );
    // What could be recorded was: the small interaction, in a finished file.
    let recording = ouli::recording::Recording::open(
        &recording(dir.path(), "limited"),
        ouli::recording::ReadBackend::Mmap,
    )
    .unwrap();
    assert_eq!(recording.len(), 2);
    assert!(recording.uses_persisted_index());
}
