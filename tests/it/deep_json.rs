//! JSON nested a million levels deep: the redactor and the canonical form
//! walk it without recursion, and the real binary, in record and replay,
//! stays up and keeps the secret in it off the disk, whether the deep body
//! is a request's or an upstream's answer.
//!
//! The servers and upstreams here are shared with `decoding.rs`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ouli::fingerprint::{JSON_DEPTH_MAX, MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, RecordedResponse};
use ouli::recording::{ReadBackend, Recording};
use ouli::redact::{DEFAULT_SENSITIVE_JSON_KEYS, RedactionRules, Redactor};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const OULI: &str = env!("CARGO_BIN_EXE_ouli");

/// Deep enough that any recursion over it overflows a thread's stack (the
/// unbounded walks did at some 9,300 levels).
const DEPTH: usize = 1_000_000;

const SECRET: &str = "hunter2-deep";

/// `DEPTH` levels of `open` around `{"password":"hunter2-deep"}`.
fn deep(open: &str, close: &str) -> String {
    let inner = format!(r#"{{"password":"{SECRET}"}}"#);
    let mut text = String::with_capacity(DEPTH * (open.len() + close.len()) + inner.len());
    text.extend(std::iter::repeat_n(open, DEPTH));
    text.push_str(&inner);
    text.extend(std::iter::repeat_n(close, DEPTH));
    text
}

/// The two shapes: arrays, and objects (`{"a":` … `}`).
fn deep_bodies() -> [(&'static str, String); 2] {
    [
        ("arrays", deep("[", "]")),
        ("objects", deep(r#"{"a":"#, "}")),
    ]
}

fn redactor() -> Redactor {
    Redactor::new(&RedactionRules {
        sensitive_json_keys: DEFAULT_SENSITIVE_JSON_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect(),
        ..RedactionRules::default()
    })
    .unwrap()
}

#[test]
fn a_sensitive_key_a_million_levels_deep_is_redacted() {
    let r = redactor();
    for (shape, body) in deep_bodies() {
        let out = r.redact_body(body.as_bytes());
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            body.replace(SECRET, "REDACTED"),
            "{shape}"
        );
    }
    // With whitespace, and the key's value itself a million levels deep:
    // replaced whole, not walked into.
    let spaced = format!(
        "{} {{ \"password\" : {}1{} , \"b\" : 2 }} {}",
        "[ ".repeat(DEPTH),
        "[".repeat(DEPTH),
        "]".repeat(DEPTH),
        " ]".repeat(DEPTH)
    );
    let out = r.redact_body(spaced.as_bytes());
    let expected = format!(
        r#"{}{{"password":"REDACTED","b":2}}{}"#,
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    assert!(out.as_ref() == expected.as_bytes(), "spaced, deep value");
}

#[test]
fn a_deep_response_in_chunks_is_redacted() {
    let r = redactor();
    let body = deep("[", "]");
    let (a, b) = body.as_bytes().split_at(body.len() / 2);
    let mut response = RecordedResponse {
        status: 200,
        headers: vec![(
            Bytes::from_static(b"content-length"),
            Bytes::from(body.len().to_string()),
        )],
        chunks: vec![
            BodyChunk {
                offset_us: 5,
                data: Bytes::copy_from_slice(a),
            },
            BodyChunk {
                offset_us: 9,
                data: Bytes::copy_from_slice(b),
            },
        ],
        original_encoding: Bytes::new(),
    };
    r.redact_response(&mut response);
    let expected = body.replace(SECRET, "REDACTED");
    assert_eq!(response.chunks.len(), 1);
    assert!(response.chunks[0].data == expected.as_bytes());
    assert_eq!(response.headers[0].1, expected.len().to_string());
}

/// Invalid deep JSON is not JSON: left as it is (the secret search still
/// runs on it), and nothing overflows finding that out.
#[test]
fn deep_invalid_json_is_left_alone() {
    let r = redactor();
    let mut body = deep("[", "]");
    body.pop();
    assert!(matches!(
        r.redact_body(body.as_bytes()),
        std::borrow::Cow::Borrowed(_)
    ));
}

fn canonical(matcher: &Matcher, body: &[u8]) -> Vec<u8> {
    let target = Target {
        scheme: "http".into(),
        host: "api.example.test".into(),
        port: 80,
    };
    let headers = http::HeaderMap::new();
    let mut out = Vec::new();
    matcher.canonical_form(
        &target,
        &RequestParts {
            method: b"POST",
            path_and_query: b"/deep",
            headers: &headers,
            body,
        },
        &mut out,
    );
    out
}

/// Nesting up to `JSON_DEPTH_MAX` is canonical JSON; deeper is a raw body,
/// the same bytes each time (the fingerprint is deterministic).
#[test]
fn the_canonical_form_reads_json_up_to_its_depth_limit_and_deeper_as_raw() {
    let matcher = Matcher::new(&MatchRules::default());
    let nested = |depth: usize| format!("{} 1 {}", "[".repeat(depth), "]".repeat(depth));
    let at_limit = canonical(&matcher, nested(JSON_DEPTH_MAX).as_bytes());
    let compact = format!(
        "{}1{}",
        "[".repeat(JSON_DEPTH_MAX),
        "]".repeat(JSON_DEPTH_MAX)
    );
    let line = format!("body json {}\n", compact.len());
    assert!(
        at_limit.ends_with(format!("{line}{compact}").as_bytes()),
        "at the limit: json"
    );
    let over = nested(JSON_DEPTH_MAX + 1);
    let over_limit = canonical(&matcher, over.as_bytes());
    let line = format!("body raw {}\n", over.len());
    assert!(
        over_limit.ends_with(format!("{line}{over}").as_bytes()),
        "past the limit: raw"
    );
    for (shape, body) in deep_bodies() {
        let first = canonical(&matcher, body.as_bytes());
        assert_eq!(first, canonical(&matcher, body.as_bytes()), "{shape}");
        assert!(first.ends_with(body.as_bytes()), "{shape}: raw, as written");
    }
}

/// The real binary, started with a config; its log goes beside the
/// recording dir, never into it.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
}

impl Server {
    pub(crate) fn start(mode: &str, dir: &Path, yaml: &str) -> Server {
        let config = dir.join("ouli.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("ouli-{mode}.log")))
            .unwrap();
        let mut child = Command::new(OULI)
            .args([mode, "--config"])
            .arg(&config)
            .arg("--recording-dir")
            .arg(dir.join("recordings"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("mode={mode}")),
            "ready line: {line:?}"
        );
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        Server { child, addr }
    }

    /// SIGTERM (recordings are completed); whether it exited 0.
    pub(crate) fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().success()
    }

    /// Still up: health answers, and the process has not exited.
    pub(crate) async fn assert_serving(&mut self) {
        let (status, _, body) = send(&self.addr, "GET", "/__ouli/health", &[], Vec::new()).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, body), (200, serde_json::json!({ "status": "ok" })));
        assert!(matches!(self.child.try_wait(), Ok(None)), "process exited");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An endpoint to the upstream on `port`, then `limits` (YAML lines).
pub(crate) fn config(port: u16, limits: &str) -> String {
    format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {port}\n    source_port: 0\n{limits}"
    )
}

/// One request with a real client; `None` status when the connection fails
/// (the server went down).
pub(crate) async fn try_send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<(u16, http::HeaderMap, Vec<u8>)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(120), client.request(request))
            .await
            .expect("an answer within the safety net")
            .ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, headers, body.to_vec()))
}

pub(crate) async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no answer (is the server down?)"))
}

/// A real HTTP/1.1 upstream: `answer(path, request body)` gives the status,
/// headers and body of each answer.
pub(crate) async fn upstream<F>(answer: F) -> u16
where
    F: Fn(&str, Bytes) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = request.into_body().collect().await?.to_bytes();
                            let (status, headers, body) = answer(&path, body);
                            let mut response = http::Response::builder().status(status);
                            for (name, value) in headers {
                                response = response.header(name, value);
                            }
                            Ok::<_, hyper::Error>(
                                response.body(Full::new(Bytes::from(body))).unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

/// Every file under `dir`, recursively, with its bytes.
pub(crate) fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.push((path, bytes));
            }
        }
    }
    files
}

/// No file under `dir` holds `needle`; returns how many files there are.
pub(crate) fn assert_nowhere_under(dir: &Path, needle: &[u8]) -> usize {
    let files = files_under(dir);
    for (path, bytes) in &files {
        assert!(
            memchr::memmem::find(bytes, needle).is_none(),
            "{} holds {:?}",
            path.display(),
            String::from_utf8_lossy(needle)
        );
    }
    files.len()
}

/// The interactions of the recording of the default session.
pub(crate) fn recorded(dir: &Path) -> Vec<ouli::interaction::Interaction> {
    let path = dir.join("recordings/default.ouli");
    let recording = Recording::open(&path, ReadBackend::Mmap)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    recording
        .iter()
        .map(|view| view.unwrap().to_interaction().unwrap())
        .collect()
}

/// A deep request body, both shapes, recorded (through a real upstream) and
/// then replayed: the process stays up in both modes, the secret is in no
/// file, the stored body is the redacted one, and replay finds it (the
/// fingerprint of a deep body is the same from one run to the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_request_body_is_recorded_redacted_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let port = upstream(|path, body| {
        let answer = format!("answer {path} {} bytes", body.len());
        (200, vec![], answer.into_bytes())
    })
    .await;
    let yaml = config(port, "");
    let mut server = Server::start("record", dir.path(), &yaml);
    let mut answers = Vec::new();
    for (shape, body) in deep_bodies() {
        let path = format!("/deep/{shape}");
        let json = [("content-type", "application/json")];
        let (status, _, answer) = send(&server.addr, "POST", &path, &json, body.into()).await;
        assert_eq!(status, 200, "{shape}");
        server.assert_serving().await;
        answers.push(answer);
    }
    assert!(server.stop(), "record exits 0");
    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 2);
    for ((shape, body), interaction) in deep_bodies().iter().zip(&interactions) {
        assert!(
            interaction.request.body == body.replace(SECRET, "REDACTED").as_bytes(),
            "{shape}: stored redacted"
        );
    }

    let mut server = Server::start("replay", dir.path(), &yaml);
    for ((shape, body), recorded) in deep_bodies().into_iter().zip(answers) {
        let path = format!("/deep/{shape}");
        let json = [("content-type", "application/json")];
        let (status, _, answer) = send(&server.addr, "POST", &path, &json, body.into()).await;
        assert_eq!((status, answer), (200, recorded), "{shape}: replayed");
        server.assert_serving().await;
    }
    // A miss with a deep body (one level less) is answered too.
    let mut other = deep("[", "]");
    other.replace_range(0..1, " ");
    other.pop();
    let (status, _, answer) = send(&server.addr, "POST", "/deep/arrays", &[], other.into()).await;
    assert_ne!(status, 200);
    assert!(memchr::memmem::find(&answer, SECRET.as_bytes()).is_none());
    server.assert_serving().await;
    assert!(server.stop(), "replay exits 0");
    assert_nowhere_under(&recordings, SECRET.as_bytes());
}

/// An upstream answering with a deep JSON body: the client gets it whole,
/// the process stays up after the record is appended, and the stored
/// answer is redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_upstream_answer_is_recorded_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let port = upstream(|path, _| {
        let body = match path {
            "/deep/arrays" => deep("[", "]"),
            _ => deep(r#"{"a":"#, "}"),
        };
        let json = vec![("content-type", "application/json".to_owned())];
        (200, json, body.into_bytes())
    })
    .await;
    let mut server = Server::start("record", dir.path(), &config(port, ""));
    for (shape, body) in deep_bodies() {
        let path = format!("/deep/{shape}");
        let (status, _, answer) = send(&server.addr, "GET", &path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{shape}");
        assert!(answer == body.as_bytes(), "{shape}: the true answer");
        server.assert_serving().await;
    }
    assert!(server.stop(), "record exits 0");
    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 2);
    for ((shape, body), interaction) in deep_bodies().iter().zip(&interactions) {
        let Exchange::Http(response) = &interaction.exchange else {
            panic!("{shape}: not HTTP");
        };
        let stored: Vec<u8> = response
            .chunks
            .iter()
            .flat_map(|c| c.data.to_vec())
            .collect();
        assert!(
            stored == body.replace(SECRET, "REDACTED").as_bytes(),
            "{shape}: stored redacted"
        );
    }
}
