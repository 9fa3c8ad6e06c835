//! End to end: the real `ouli replay` binary serving a recording written with
//! the library, driven by a real HTTP client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ouli::chain::{ChainMode, ChainState};
use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
use ouli::recording::{Durability, RecordingWriter};
use ouli::session_name::SessionName;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const OULI: &str = env!("CARGO_BIN_EXE_ouli");

fn target() -> Target {
    Target {
        scheme: "http".into(),
        host: "api.example.test".into(),
        port: 80,
    }
}

/// Records what the server would compute for this request: same matcher,
/// same chain, so replay must find it.
struct SessionWriter {
    writer: RecordingWriter,
    chain: ChainState,
    matcher: Matcher,
}

impl SessionWriter {
    fn new(dir: &Path, session: &str) -> SessionWriter {
        let path = SessionName::parse(session).unwrap().recording_path(dir);
        SessionWriter {
            writer: RecordingWriter::create(&path, Durability::OnClose).unwrap(),
            chain: ChainState::new(ChainMode::Request),
            matcher: Matcher::new(&MatchRules::default()),
        }
    }

    fn add(
        &mut self,
        method: &str,
        target_uri: &str,
        headers: &[(&str, &str)],
        body: &str,
        status: u16,
        response: &str,
    ) {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut canonical = Vec::new();
        self.matcher.canonical_form(
            &target(),
            &RequestParts {
                method: method.as_bytes(),
                path_and_query: target_uri.as_bytes(),
                headers: &map,
                body: body.as_bytes(),
            },
            &mut canonical,
        );
        let step = self.chain.peek(&canonical);
        self.chain.commit(&step);
        let interaction = Interaction {
            fingerprint: step.fingerprint,
            chain_link: step.link,
            canonical: Bytes::from(canonical),
            endpoint: 0,
            recorded_at_unix_us: 1,
            request: RecordedRequest {
                method: Bytes::copy_from_slice(method.as_bytes()),
                target: Bytes::copy_from_slice(target_uri.as_bytes()),
                headers: headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            Bytes::copy_from_slice(k.as_bytes()),
                            Bytes::copy_from_slice(v.as_bytes()),
                        )
                    })
                    .collect(),
                body: Bytes::copy_from_slice(body.as_bytes()),
            },
            exchange: Exchange::Http(RecordedResponse {
                status,
                headers: vec![
                    (
                        Bytes::from_static(b"content-type"),
                        Bytes::from_static(b"application/json"),
                    ),
                    (
                        Bytes::from_static(b"content-length"),
                        Bytes::from_static(b"999"),
                    ),
                ],
                chunks: vec![
                    BodyChunk {
                        offset_us: 0,
                        data: Bytes::copy_from_slice(&response.as_bytes()[..1]),
                    },
                    BodyChunk {
                        offset_us: 10,
                        data: Bytes::copy_from_slice(&response.as_bytes()[1..]),
                    },
                ],
                original_encoding: Bytes::new(),
            }),
        };
        self.writer.append(&interaction).unwrap();
    }

    fn finish(self) {
        self.writer.finish().unwrap();
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path, extra_config: &str) -> Server {
        let config = dir.join("ouli.yaml");
        std::fs::write(
            &config,
            format!(
                "endpoints:\n  - target_host: api.example.test\n    target_type: http\n    target_port: 80\n    source_port: 0\n    health: /health\nlimits:\n  request_body_bytes_max: 1024\n{extra_config}"
            ),
        )
        .unwrap();
        let mut child = Command::new(OULI)
            .args(["replay", "--config"])
            .arg(&config)
            .arg("--recording-dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("ouli listening endpoint=0 addr="),
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
        assert!(line.trim_end().ends_with("mode=replay"));
        Server { child, addr }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_in_order_despite_a_changed_client_and_explains_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SessionWriter::new(dir.path(), "suite/test one");
    let old_client = [
        ("user-agent", "lib/1.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
    ];
    writer.add("GET", "/items?a=1&b=2", &old_client, "", 200, r#"{"n":1}"#);
    writer.add(
        "POST",
        "/items",
        &old_client,
        r#"{"name": "x", "size": 2}"#,
        201,
        r#"{"created":true}"#,
    );
    writer.add("GET", "/items?a=1&b=2", &old_client, "", 200, r#"{"n":2}"#);
    writer.finish();
    let server = Server::start(dir.path(), "");

    let (status, _, _) = send(&server.addr, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);

    // A new library version: other User-Agent, header order and case, query
    // order, JSON key order and spacing.
    let new_client = [
        ("Test-Name", "suite/test one"),
        ("Content-Type", "application/json"),
        ("User-Agent", "lib/2.0"),
        ("Accept", "application/json"),
    ];
    let (status, headers, body) =
        send(&server.addr, "GET", "/items?b=2&a=1", &new_client, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));
    assert_eq!(
        headers.get("content-length").unwrap(),
        "7",
        "length is the stored body's, not the recorded header's"
    );
    let (status, _, body) = send(
        &server.addr,
        "POST",
        "/items",
        &new_client,
        r#"{"size":2,"name":"x"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (201, r#"{"created":true}"#));
    let (status, _, body) = send(&server.addr, "GET", "/items?a=1&b=2", &new_client, "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"n":2}"#),
        "the second identical request gets the second response"
    );

    // The chain ran out: a clear error, not a repeat.
    let (status, headers, body) =
        send(&server.addr, "GET", "/items?a=1&b=2", &new_client, "").await;
    assert_eq!(status, 404);
    assert_eq!(headers.get("x-ouli-error").unwrap(), "chain-exhausted");
    assert!(body.contains("\"chain_position\": 2"), "{body}");

    // A miss names the differing field.
    let (status, headers, body) = send(
        &server.addr,
        "POST",
        "/items",
        &new_client,
        r#"{"size":3,"name":"x"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers.get("x-ouli-error").unwrap(), "replay-miss");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["session"], "suite/test one");
    assert!(
        report["record_command"]
            .as_str()
            .unwrap()
            .contains("ouli record-missing")
    );
    let diffs = report["closest_recorded"][0]["differences"].to_string();
    assert!(
        diffs.contains("size") && diffs.contains('3'),
        "miss report: {body}"
    );

    // Reset: the session can be served again from the start.
    let (status, _, _) = send(
        &server.addr,
        "POST",
        "/__ouli/sessions/suite/test one/reset"
            .replace(' ', "%20")
            .as_str(),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "reset by control path");
    let (status, _, body) = send(&server.addr, "GET", "/items?a=1&b=2", &new_client, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));
    // Reset by request header.
    let (status, _, body) = send(
        &server.addr,
        "GET",
        "/items?a=1&b=2",
        &[("Test-Name", "suite/test one"), ("x-ouli-chain-reset", "1")],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));

    assert!(server.stop().success(), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SessionWriter::new(dir.path(), "default");
    writer.add("GET", "/ok", &[], "", 200, "fine");
    writer.finish();
    let server = Server::start(dir.path(), "on_chain_exhausted: repeat-last\n");

    let (status, headers, _) = send(
        &server.addr,
        "GET",
        "/ok",
        &[("Test-Name", "../escape")],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers.get("x-ouli-error").unwrap(), "bad-test-name");
    let (status, _, _) = send(&server.addr, "POST", "/ok", &[], &"x".repeat(4096)).await;
    assert_eq!(status, 413);
    let (status, _, body) = send(&server.addr, "GET", "/ok", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "fine"));
    // repeat-last: the exhausted chain serves the last response again.
    let (status, _, body) = send(&server.addr, "GET", "/ok", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "fine"));
    assert!(!dir.path().join("..").join("escape.ouli").exists());
    assert!(server.stop().success());
}
