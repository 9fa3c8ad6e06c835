//! End to end: the real `ouli replay` binary serving a recording written with
//! the library, driven by a real HTTP client.

use crate::support::client::send_text as send;
use crate::support::gzip;
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ouli::chain::{ChainMode, ChainState};
use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
use ouli::recording::{Durability, RecordingWriter};
use ouli::session_name::SessionName;
use std::path::Path;

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
                trailers: Vec::new(),
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
                ..Default::default()
            }),
        };
        self.writer.append(&interaction).unwrap();
    }

    fn finish(self) {
        self.writer.finish().unwrap();
    }
}

/// `ouli replay` of the recordings in `dir` (its config written there too),
/// one endpoint to `api.example.test` with a health path, `extra_config`
/// appended; its log is not kept.
fn start_replay(dir: &Path, extra_config: &str) -> Ouli {
    let yaml = format!(
        "endpoints:\n  - target_host: api.example.test\n    target_type: http\n    target_port: 80\n    source_port: 0\n    health: /health\nlimits:\n  request_body_bytes_max: 1024\n{extra_config}"
    );
    Start::new("replay", dir, &yaml)
        .recording_dir(dir)
        .log(Log::Null)
        .spawn()
}

/// A miss on a recording larger than the part a miss compares one by one
/// (`MISS_SCAN_REQUESTS_MAX`) still names the closest recorded request,
/// wherever it was recorded (the miss index: same method and path), and a
/// chain's repeats are listed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_a_large_recording_names_the_closest_wherever_it_was_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SessionWriter::new(dir.path(), "big");
    let accept = [("accept", "application/json")];
    for _ in 0..5 {
        writer.add("GET", "/chained?page=1", &accept, "", 200, r#"{"n":0}"#);
    }
    let items = 3 * ouli::server::MISS_SCAN_REQUESTS_MAX;
    for i in 0..items {
        writer.add(
            "GET",
            &format!("/items/{i}"),
            &accept,
            "",
            200,
            r#"{"n":1}"#,
        );
    }
    writer.finish();
    let server = start_replay(dir.path(), "");
    let client = [("Test-Name", "big"), ("Accept", "application/json")];

    let (status, _, body) = send(&server.addr, "GET", "/items/1", &client, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));

    // Recorded far past the first requests: found by method and path, and
    // ranked first (one difference).
    let last = format!("/items/{}", items - 1);
    for _ in 0..2 {
        let (status, headers, body) = send(
            &server.addr,
            "GET",
            &format!("{last}?expand=true"),
            &client,
            "",
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(headers.get("x-ouli-error").unwrap(), "replay-miss");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        let closest = &report["closest_recorded"][0];
        assert_eq!(closest["path"], last.as_str(), "miss report: {body}");
        assert_eq!(
            closest["differences"],
            serde_json::json!([{"field": "query expand", "expected": null, "got": "true"}]),
            "miss report: {body}"
        );
    }

    // A chain recorded five times is one candidate, not five.
    let (status, _, body) = send(&server.addr, "GET", "/chained?page=2", &client, "").await;
    assert_eq!(status, 404, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths: Vec<&str> = report["closest_recorded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), ouli::server::MISS_CANDIDATES_MAX, "{body}");
    assert_eq!(paths[0], "/chained", "{body}");
    assert_eq!(
        paths.iter().filter(|p| **p == "/chained").count(),
        1,
        "repeats listed once: {body}"
    );
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
    let server = start_replay(dir.path(), "");

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
    let mut resetting = new_client.to_vec();
    resetting.push(("x-ouli-chain-reset", "1"));
    let (status, _, body) = send(&server.addr, "GET", "/items?a=1&b=2", &resetting, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));

    assert!(server.stop().status.success(), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = SessionWriter::new(dir.path(), "default");
    writer.add("GET", "/ok", &[], "", 200, "fine");
    writer.finish();
    let server = start_replay(dir.path(), "on_chain_exhausted: repeat-last\n");

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
    assert!(server.stop().status.success());
}

/// A real HTTP/1.1 upstream on `listener`: every request is answered by
/// `answer(connection, request)`, `connection` numbering the accepted
/// connections from 1; with `keep_alive` false each connection closes after
/// its response (`Connection: close`), as an upstream with keep-alive off does.
fn serve_upstream<F, Fut>(listener: tokio::net::TcpListener, keep_alive: bool, answer: F)
where
    F: Fn(usize, http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let options = Options {
        keep_alive,
        ..Options::default()
    };
    upstream::serve(listener, options, move |connection, request| {
        let reply = answer(connection, request);
        async move { Ok::<_, std::convert::Infallible>(reply.await) }
    });
}

fn start_mode(mode: &str, dir: &Path, upstream_port: u16, envs: &[(&str, &str)]) -> Ouli {
    start_mode_with(mode, dir, upstream_port, envs, "")
}

/// `start_mode` with `extra` appended to the config (top-level keys).
fn start_mode_with(
    mode: &str,
    dir: &Path,
    upstream_port: u16,
    envs: &[(&str, &str)],
    extra: &str,
) -> Ouli {
    start_with_config(
        mode,
        dir,
        &format!(
            "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {upstream_port}\n    source_port: 0\n{extra}"
        ),
        envs,
    )
}

/// The real binary in `mode` with the config `yaml`; its log goes to
/// `<dir>/ouli-<mode>.log`, beside the recording dir, not in it.
fn start_with_config(mode: &str, dir: &Path, yaml: &str, envs: &[(&str, &str)]) -> Ouli {
    let mut start = Start::new(mode, dir, yaml);
    for (name, value) in envs {
        start = start.env(name, value);
    }
    start.spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_every_environment_source_are_redacted_on_disk() {
    // OULI_SECRETS and TEST_SERVER_SECRETS (comma-separated, items trimmed)
    // and the file named by OULI_SECRETS_FILE (one per line, CRLF allowed)
    // all feed the redactor of the real binary.
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("secrets.txt");
    std::fs::write(&secrets_file, b"from-file-s3cret\r\n\n").unwrap();
    let (upstream, _calls) = upstream::counting().await;
    let env = [
        ("OULI_SECRETS", "ouli-s3cret-1, ouli-s3cret-2"),
        ("TEST_SERVER_SECRETS", "ts-s3cret"),
        ("OULI_SECRETS_FILE", secrets_file.to_str().unwrap()),
    ];
    let server = start_mode("record", dir.path(), upstream.port(), &env);
    let (status, _, _) = send(
        &server.addr,
        "POST",
        "/env?a=ouli-s3cret-1&b=ts-s3cret",
        &[("Test-Name", "env"), ("x-note", "ouli-s3cret-2")],
        "from-file-s3cret",
    )
    .await;
    assert_eq!(status, 200);
    assert!(server.stop().status.success());

    let file = std::fs::read(dir.path().join("recordings/env.ouli")).unwrap();
    for secret in [
        "ouli-s3cret-1",
        "ouli-s3cret-2",
        "ts-s3cret",
        "from-file-s3cret",
    ] {
        assert!(
            !file.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} on disk"
        );
    }
    assert!(file.windows(8).any(|w| w == b"REDACTED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_offline_in_order_with_the_secret_nowhere_on_disk() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (upstream, calls) = upstream::counting().await;
    let secrets = [("TEST_SERVER_SECRETS", "s3cr3t-value")];
    let server = start_mode("record", dir.path(), upstream.port(), &secrets);
    let named = [
        ("Test-Name", "rec/one"),
        ("user-agent", "lib/1.0"),
        ("x-api-key", "s3cr3t-value"),
    ];
    let mut recorded = Vec::new();
    for (method, path, body) in [
        ("GET", "/poll?token=s3cr3t-value", ""),
        ("POST", "/items", r#"{"b":1,"a":"s3cr3t-value"}"#),
        ("GET", "/poll?token=s3cr3t-value", ""),
    ] {
        let (status, headers, text) = send(&server.addr, method, path, &named, body).await;
        assert_eq!(status, 200);
        assert_eq!(headers.get("x-upstream").unwrap(), "yes");
        recorded.push(text);
    }
    assert!(
        recorded[0].starts_with("call 1 ") && recorded[2].starts_with("call 3 "),
        "{recorded:?}"
    );
    assert!(server.stop().status.success(), "SIGTERM exits 0");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Every byte written: no secret.
    let file = std::fs::read(dir.path().join("recordings/rec/one.ouli")).unwrap();
    assert!(
        !file.windows(12).any(|w| w == b"s3cr3t-value"),
        "secret on disk"
    );

    // Replay with a changed client; the upstream must see nothing.
    let server = start_mode("replay", dir.path(), upstream.port(), &secrets);
    let changed = [
        ("X-Api-Key", "s3cr3t-value"),
        ("User-Agent", "lib/2.0"),
        ("test-name", "rec/one"),
    ];
    let (_, _, first) = send(
        &server.addr,
        "GET",
        "/poll?token=s3cr3t-value",
        &changed,
        "",
    )
    .await;
    let (_, _, second) = send(
        &server.addr,
        "POST",
        "/items",
        &changed,
        r#"{"a": "s3cr3t-value", "b": 1}"#,
    )
    .await;
    let (_, _, third) = send(
        &server.addr,
        "GET",
        "/poll?token=s3cr3t-value",
        &changed,
        "",
    )
    .await;
    // The recorded bodies are redacted; compare with the redacted originals.
    let redacted: Vec<String> = recorded
        .iter()
        .map(|t| t.replace("s3cr3t-value", "REDACTED"))
        .collect();
    assert_eq!(vec![first, second, third], redacted);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "replay touched the upstream"
    );
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_forwards_every_request_with_its_query_and_body_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, calls) = upstream::counting().await;
    let server = start_mode("passthrough", dir.path(), upstream.port(), &[]);
    let session = [("Test-Name", "pass")];
    for n in 1..=3 {
        let (status, headers, body) =
            send(&server.addr, "POST", "/p?q=1&r=%2F", &session, "payload").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers.get("x-upstream").unwrap(), "yes");
        // The same request each time, yet each answer is a new upstream call.
        assert_eq!(body, format!("call {n} /p?q=1&r=%2F payload"));
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(server.stop().status.success());
    let recordings = dir.path().join("recordings");
    assert!(
        !recordings.exists() || std::fs::read_dir(&recordings).unwrap().next().is_none(),
        "passthrough wrote a recording"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_502_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = start_mode("passthrough", dir.path(), closed_port, &[]);
    let (status, headers, body) = send(&server.addr, "GET", "/x", &[], "").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers.get("x-ouli-error").unwrap(), "upstream-unreachable");
    let (status, _, _) = send(&server.addr, "GET", "/__ouli/health", &[], "").await;
    assert_eq!(status, 200);
    assert!(server.stop().status.success());
    assert!(
        !dir.path().join("recordings").exists()
            || std::fs::read_dir(dir.path().join("recordings"))
                .unwrap()
                .next()
                .is_none()
    );
}

/// A real upstream that counts the connections requests came on and answers
/// `connection <n>`; with `keep_alive` false it closes each one after its
/// response.
async fn connection_counting_upstream(
    keep_alive: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    serve_upstream(listener, keep_alive, move |n, _| {
        counter.fetch_max(n, Ordering::SeqCst);
        async move { http::Response::new(Full::new(Bytes::from(format!("connection {n}")))) }
    });
    (port, accepted)
}

/// Connection-specific headers, and those a `Connection` header names, stay
/// on their hop (RFC 9110 §7.6.1), both ways; every other header is
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_upstream(listener, true, |_, request| async move {
        let mut seen: Vec<&str> = request.headers().keys().map(|name| name.as_str()).collect();
        seen.sort_unstable();
        http::Response::builder()
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
            .header("keep-alive", "timeout=5")
            .header("x-upstream-kept", "1")
            .body(Full::new(Bytes::from(seen.join(","))))
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let server = start_mode("passthrough", dir.path(), port, &[]);
    let (status, headers, body) = send(
        &server.addr,
        "GET",
        "/hop",
        &[
            ("Connection", "X-Client-Private"),
            ("X-Client-Private", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("X-Client-Kept", "1"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Vec<&str> = body.split(',').collect();
    assert!(seen.contains(&"x-client-kept"), "upstream saw {body}");
    for dropped in [
        "connection",
        "x-client-private",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(!seen.contains(&dropped), "{dropped} forwarded: {body}");
    }
    assert_eq!(headers.get("x-upstream-kept").unwrap(), "1");
    for dropped in ["x-upstream-private", "keep-alive"] {
        assert!(
            headers.get(dropped).is_none(),
            "{dropped} forwarded: {headers:?}"
        );
    }
    assert!(server.stop().status.success());
}

/// One client connection to `addr`, kept alive: exactly one, where a pooled
/// client might open a second while the first is being returned to its pool.
/// Dropping the sender and awaiting the handle closes it.
async fn one_connection(
    addr: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// GET `path` on `connection`: the body of a 200.
async fn get_ok(
    connection: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: &str,
    path: &str,
) -> String {
    connection.ready().await.unwrap();
    let request = http::Request::get(path)
        .header(http::header::HOST, addr)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = connection.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A client connection's requests go on the upstream connection its first
/// request opened; a closed client connection leaves it to the next client;
/// an upstream that closes its connections gets a new one per request, and
/// no request fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_and_replaced_when_the_upstream_closes_them() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (port, accepted) = connection_counting_upstream(true).await;
    let server = start_mode("passthrough", dir.path(), port, &[]);
    let (mut keep_alive, open) = one_connection(&server.addr).await;
    for _ in 0..5 {
        let body = get_ok(&mut keep_alive, &server.addr, "/same").await;
        assert_eq!(body, "connection 1");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Five client connections one after another, each closed before the
    // next opens: each finds the upstream connection the last one left.
    // (ouli notices a close asynchronously: a short pause gives it the time,
    // and one slow notice is tolerated.)
    drop(keep_alive);
    open.await.unwrap().unwrap();
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (mut client, open) = one_connection(&server.addr).await;
        let body = get_ok(&mut client, &server.addr, "/new-client").await;
        assert!(body.starts_with("connection "), "{body}");
        drop(client);
        open.await.unwrap().unwrap();
    }
    assert!(
        accepted.load(Ordering::SeqCst) <= 2,
        "upstream connections: {}",
        accepted.load(Ordering::SeqCst)
    );
    assert!(server.stop().status.success());

    let (port, accepted) = connection_counting_upstream(false).await;
    let server = start_mode("passthrough", dir.path(), port, &[]);
    let (mut keep_alive, _open) = one_connection(&server.addr).await;
    for n in 1..=5 {
        let body = get_ok(&mut keep_alive, &server.addr, "/closing").await;
        assert_eq!(body, format!("connection {n}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    assert!(server.stop().status.success());
}

/// An upstream connection closed by the upstream after its last answer,
/// before ouli noticed (its idle timeout): the next request, a GET, is sent
/// into the closed connection, fails before any answer, and goes again on a
/// new connection; the client never sees the close. (One thread: the
/// connection's task cannot see the close before the request is queued.)
#[tokio::test(flavor = "current_thread")]
async fn a_request_on_a_connection_the_upstream_just_closed_goes_on_a_new_one() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // A plain upstream: one keep-alive answer per connection, then a close
    // (no `Connection: close` announced it).
    let upstream = std::thread::spawn(move || {
        for n in 1..=2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut buffer).unwrap();
                assert!(read > 0, "request cut short");
                request.extend_from_slice(&buffer[..read]);
            }
            let body = format!("connection {n}");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            stream.flush().unwrap();
            // Close once the client has gone idle on this connection.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    let upstream_client = ouli::upstream::build_client(
        &[],
        std::time::Duration::from_secs(5),
        &[Default::default()],
    )
    .unwrap();
    let authority: http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
    let held = ouli::upstream::HeldConnection::default();
    let get = || {
        http::Request::get("/")
            .header(http::header::HOST, format!("127.0.0.1:{port}"))
            .body(ouli::upstream::RequestBody::default())
            .unwrap()
    };
    let first = upstream_client
        .send(0, &authority, &held, get)
        .await
        .unwrap();
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"connection 1");
    // The upstream closes the first connection 50 ms after answering; block
    // this (only) thread past that, so that the connection's task cannot
    // notice the close before the next request is queued on it.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let second = upstream_client
        .send(0, &authority, &held, get)
        .await
        .unwrap();
    let body = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"connection 2");
    upstream.join().unwrap();
}

/// A raw upstream that answers its first connection's first request, reads
/// that connection's second request whole and then closes without a word
/// (as an upstream that crashed while handling it), and answers every
/// request on later connections. Returns its port and, in order, the
/// "<connection> <method> <path>" of every request it read.
fn answer_then_hang_up_upstream() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for connection in 1.. {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut pending = Vec::new();
            for request in 1.. {
                // One request: its head, then content-length bytes of body.
                let head_end = loop {
                    if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end + 4;
                    }
                    let mut buffer = [0u8; 4096];
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break 0,
                        Ok(read) => pending.extend_from_slice(&buffer[..read]),
                    }
                };
                if head_end == 0 {
                    break;
                }
                let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
                let body_len: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse().unwrap());
                while pending.len() < head_end + body_len {
                    let mut buffer = [0u8; 4096];
                    let read = stream.read(&mut buffer).unwrap();
                    assert!(read > 0, "request body cut short");
                    pending.extend_from_slice(&buffer[..read]);
                }
                pending.drain(..head_end + body_len);
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap(), words.next().unwrap());
                log.lock()
                    .unwrap()
                    .push(format!("{connection} {} {path}", method.to_uppercase()));
                if connection == 1 && request == 2 {
                    break; // hang up: the request was read, never answered
                }
                let body = format!("connection {connection}");
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        }
    });
    (port, seen)
}

/// A passthrough server in front of `answer_then_hang_up_upstream`, one
/// client connection to it, and that connection's first request answered
/// (so that its next one goes on the connection the upstream hangs up).
async fn passthrough_to_a_hang_up_upstream(
    dir: &Path,
) -> (
    Ouli,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let (port, seen) = answer_then_hang_up_upstream();
    let server = start_mode("passthrough", dir, port, &[]);
    let (mut client, _open) = one_connection(&server.addr).await;
    assert_eq!(
        get_ok(&mut client, &server.addr, "/first").await,
        "connection 1"
    );
    (server, client, seen)
}

/// An upstream that read a request and closed without answering it may
/// have acted on it. ouli sends an idempotent request (GET) again on a new
/// connection, and the client gets its answer; a POST it never sends twice:
/// the client gets a 502 that says the upstream closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_upstream_hung_up_on_is_sent_again_only_if_idempotent() {
    let dir = tempfile::tempdir().unwrap();

    let (server, mut client, seen) = passthrough_to_a_hang_up_upstream(dir.path()).await;
    assert_eq!(
        get_ok(&mut client, &server.addr, "/read").await,
        "connection 2"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["1 GET /first", "1 GET /read", "2 GET /read"]
    );
    assert!(server.stop().status.success());

    let (server, mut client, seen) = passthrough_to_a_hang_up_upstream(dir.path()).await;
    client.ready().await.unwrap();
    let post = http::Request::post("/pay")
        .header(http::header::HOST, &server.addr)
        .body(Full::new(Bytes::from_static(b"{\"amount\": 100}")))
        .unwrap();
    let response = client.send_request(post).await.unwrap();
    let status = response.status();
    let error = response.headers().get("x-ouli-error").cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{body}");
    assert_eq!(error.unwrap(), "upstream-unreachable");
    assert!(
        body.contains("/pay: no answer, and a POST is not sent twice"),
        "{body}"
    );
    // The server keeps serving, on a new upstream connection.
    assert_eq!(
        get_ok(&mut client, &server.addr, "/after").await,
        "connection 2"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        ["1 GET /first", "1 POST /pay", "2 GET /after"]
    );
    assert!(server.stop().status.success());
}

/// An IPv6 literal target is bracketed in the `Host` header sent upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_upstream_gets_a_bracketed_host_header() {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_upstream(listener, true, |_, request| async move {
        let host = request
            .headers()
            .get(http::header::HOST)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        http::Response::new(Full::new(Bytes::from(host)))
    });
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_config(
        "passthrough",
        dir.path(),
        &format!(
            "endpoints:\n  - target_host: \"::1\"\n    target_type: http\n    target_port: {port}\n    source_port: 0\n"
        ),
        &[],
    );
    let (status, _, body) = send(&server.addr, "GET", "/host", &[], "").await;
    assert_eq!((status, body), (200, format!("[::1]:{port}")));
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_sessions_in_parallel_record_and_replay_without_cross_talk() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _calls) = upstream::counting().await;
    let server = start_mode("record", dir.path(), upstream.port(), &[]);
    let addr = server.addr.clone();
    let record = (0..16).map(|s| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let name = format!("par/{s}");
            let mut bodies = Vec::new();
            for i in 0..20 {
                let path = format!("/same?i={}", i % 3);
                let (status, _, body) =
                    send(&addr, "GET", &path, &[("Test-Name", name.as_str())], "").await;
                assert_eq!(status, 200);
                bodies.push(body);
            }
            bodies
        })
    });
    let mut recorded = Vec::new();
    for task in record.collect::<Vec<_>>() {
        recorded.push(task.await.unwrap());
    }
    assert!(server.stop().status.success());

    let server = start_mode("replay", dir.path(), upstream.port(), &[]);
    let addr = server.addr.clone();
    let replay = (0..16).map(|s| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let name = format!("par/{s}");
            let mut bodies = Vec::new();
            for i in 0..20 {
                let path = format!("/same?i={}", i % 3);
                let (status, _, body) =
                    send(&addr, "GET", &path, &[("Test-Name", name.as_str())], "").await;
                assert_eq!(status, 200, "{body}");
                bodies.push(body);
            }
            bodies
        })
    });
    for (s, task) in replay.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), recorded[s], "session par/{s}");
    }
    assert!(server.stop().status.success());
}

/// Records `per_client` GETs from each of `clients` concurrent clients (one
/// session) with `extra` config, kills the server with SIGKILL as soon as the
/// last answer is in, then replays every path and expects the answer each
/// client got. No wait before the kill: a record is in the file before its
/// client sees the end of the response.
async fn kill_9_during_record_then_replay_everything(
    extra: &str,
    clients: usize,
    per_client: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _calls) = upstream::counting().await;
    let server = start_mode_with("record", dir.path(), upstream.port(), &[], extra);
    let tasks = (0..clients).map(|c| {
        let addr = server.addr.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in 0..per_client {
                let path = format!("/k/{c}/{i}");
                let (status, _, body) =
                    send(&addr, "GET", &path, &[("Test-Name", "killed")], "").await;
                assert_eq!(status, 200, "{body}");
                answers.push((path, body));
            }
            answers
        })
    });
    let mut recorded = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        recorded.extend(task.await.unwrap());
    }
    server.kill9();

    let server = start_mode("replay", dir.path(), upstream.port(), &[]);
    for (path, expected) in &recorded {
        let (status, _, body) =
            send(&server.addr, "GET", path, &[("Test-Name", "killed")], "").await;
        assert_eq!((status, &body), (200, expected), "{path}");
    }
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_record_keeps_the_completed_interactions() {
    kill_9_during_record_then_replay_everything("", 1, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interaction_durability_keeps_concurrent_interactions_through_kill_9() {
    // Several clients at once, so that appends wait on one shared fdatasync
    // (group commit): each response must still end only after its own
    // record is written, and none may be lost or torn.
    kill_9_during_record_then_replay_everything("durability: every-interaction\n", 4, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_a_431_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_replay(dir.path(), "  header_count_max: 16\n");
    let many: Vec<(String, String)> = (0..40).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _, _) = send(&server.addr, "GET", "/x", &many, "").await;
    assert_eq!(status, 431);
    let (status, _, _) = send(&server.addr, "GET", "/__ouli/health", &[], "").await;
    assert_eq!(status, 200);
    assert!(server.stop().status.success());
}

/// A TLS upstream whose certificate is signed by a private CA (rcgen); returns
/// its port and the CA's PEM.
async fn tls_upstream() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let server_config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |_request: http::Request<hyper::body::Incoming>| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"over tls"),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_tls_trusting_a_private_ca_from_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ca_pem) = tls_upstream().await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let config = dir.path().join("ouli.yaml");
    std::fs::write(
        &config,
        format!(
            "ca_file: {}\nendpoints:\n  - target_host: localhost\n    target_type: https\n    target_port: {port}\n    source_port: 0\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let recordings = dir.path().join("recordings");
    let spawn = |mode: &str| {
        Start::with_config_file(mode, &config, &recordings)
            .env_remove("SSL_CERT_FILE")
            .spawn()
    };
    let server = spawn("record");
    let (status, _, body) = send(&server.addr, "GET", "/secure", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "over tls"));
    assert!(server.stop().status.success());
    let server = spawn("replay");
    let (status, _, body) = send(&server.addr, "GET", "/secure", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "over tls"));
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_body_reaches_the_client_chunk_by_chunk() {
    // The upstream sends "first", then waits until the client has seen it
    // before sending "second": a proxy that buffered the whole body would hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let seen_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(seen_rx)));
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(move |_request: http::Request<hyper::body::Incoming>| {
                let seen_rx = seen_rx.clone();
                async move {
                    let (tx, rx) = tokio::sync::mpsc::channel::<
                        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
                    >(2);
                    tokio::spawn(async move {
                        tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"first"))))
                            .await
                            .unwrap();
                        let waiter = seen_rx.lock().await.take().unwrap();
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await;
                        tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))))
                            .await
                            .unwrap();
                    });
                    let stream = futures_stream(rx);
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::StreamBody::new(stream),
                    ))
                }
            });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    let dir = tempfile::tempdir().unwrap();
    let server = start_mode("record", dir.path(), port, &[]);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(format!("http://{}/stream", server.addr).parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives before the body has ended")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first"));
    seen_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
    assert!(server.stop().status.success());
}

/// An mpsc receiver as a `Stream`.
fn futures_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_missing_serves_what_exists_and_records_only_the_rest() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let (upstream, calls) = upstream::counting().await;
    let session = [("Test-Name", "rm/one")];
    let server = start_mode("record", dir.path(), upstream.port(), &[]);
    let (_, _, a) = send(&server.addr, "GET", "/a", &session, "").await;
    assert!(server.stop().status.success());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let server = start_mode("record-missing", dir.path(), upstream.port(), &[]);
    let (status, _, again) = send(&server.addr, "GET", "/a", &session, "").await;
    assert_eq!(
        (status, &again),
        (200, &a),
        "recorded: served, not forwarded"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let (status, _, b) = send(&server.addr, "GET", "/b", &session, "").await;
    assert_eq!(status, 200);
    assert!(b.starts_with("call 2 /b"), "{b}");
    // The second /a was never recorded: forwarded and recorded now.
    let (_, _, a2) = send(&server.addr, "GET", "/a", &session, "").await;
    assert!(a2.starts_with("call 3 /a"), "{a2}");
    // After a reset the whole session is served from the file, new records
    // included, without the upstream.
    let mut resetting = session.to_vec();
    resetting.push(("x-ouli-chain-reset", "1"));
    let (_, _, first) = send(&server.addr, "GET", "/a", &resetting, "").await;
    let (_, _, second) = send(&server.addr, "GET", "/b", &session, "").await;
    let (_, _, third) = send(&server.addr, "GET", "/a", &session, "").await;
    assert_eq!((first, second, third), (a.clone(), b.clone(), a2.clone()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(server.stop().status.success());

    // Replay, upstream untouched: all three, in order.
    let server = start_mode("replay", dir.path(), upstream.port(), &[]);
    let (_, _, first) = send(&server.addr, "GET", "/a", &session, "").await;
    let (_, _, second) = send(&server.addr, "GET", "/b", &session, "").await;
    let (_, _, third) = send(&server.addr, "GET", "/a", &session, "").await;
    assert_eq!((first, second, third), (a, b, a2));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(server.stop().status.success());
}

async fn send_bytes(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzipped_request_body_is_matched_and_redacted_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _calls) = upstream::counting().await;
    let secrets = [("OULI_SECRETS", "zipped-s3cret")];
    let headers = [
        ("Test-Name", "gz"),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let json = br#"{"key": "zipped-s3cret", "n": 1}"#;
    let server = start_mode("record", dir.path(), upstream.port(), &secrets);
    let (status, recorded) = send_bytes(&server.addr, "/upload", &headers, gzip(json, 9)).await;
    assert_eq!(status, 200);
    assert!(server.stop().status.success());
    let file = std::fs::read(dir.path().join("recordings/gz.ouli")).unwrap();
    assert!(
        !file.windows(13).any(|w| w == b"zipped-s3cret"),
        "the secret inside the compressed body reached the disk"
    );
    // The request body is stored decoded, its secret replaced.
    let stored = br#"{"key": "REDACTED", "n": 1}"#;
    assert!(file.windows(stored.len()).any(|w| w == stored));
    // Another compression level, other key order: the same request.
    let server = start_mode("replay", dir.path(), upstream.port(), &secrets);
    let other = br#"{"n":1,"key":"zipped-s3cret"}"#;
    let (status, replayed) = send_bytes(&server.addr, "/upload", &headers, gzip(other, 1)).await;
    assert_eq!((status, replayed), (200, recorded));
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rerecording_leaves_the_old_recording_in_force_and_says_how_to_adopt_it() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _calls) = upstream::counting().await;
    let session = [("Test-Name", "again")];
    let server = start_mode("record", dir.path(), upstream.port(), &[]);
    let (_, _, old) = send(&server.addr, "GET", "/x", &session, "").await;
    assert!(server.stop().status.success());

    // Record the session again, and crash before it is complete.
    let server = start_mode("record", dir.path(), upstream.port(), &[]);
    let (_, _, new) = send(&server.addr, "GET", "/x", &session, "").await;
    assert_ne!(old, new);
    let partial = dir.path().join("recordings/again.ouli.partial");
    server.kill9();
    assert!(partial.is_file(), "the interrupted recording is kept");

    let server = start_mode("replay", dir.path(), upstream.port(), &[]);
    let (status, _, body) = send(&server.addr, "GET", "/x", &session, "").await;
    assert_eq!(
        (status, body),
        (200, old),
        "the complete recording stays in force"
    );
    assert!(server.stop().status.success());
    let log = std::fs::read_to_string(dir.path().join("ouli-replay.log")).unwrap();
    assert!(
        log.contains("again.ouli.partial") && log.contains("to adopt it: mv"),
        "{log}"
    );
}

/// A build with the profiler serves a CPU profile of the running server to a
/// loopback client (`/__ouli/debug/pprof`), while the server goes on serving;
/// a bad query is a JSON 400.
#[cfg(feature = "profiling")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_profile_of_the_running_server_is_served_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_replay(dir.path(), "");
    let (status, headers, _) = send(
        &server.addr,
        "GET",
        "/__ouli/debug/pprof?seconds=0",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 400);
    assert!(headers.contains_key("x-ouli-error"));
    // Load while sampling, so that the profile has samples to show.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (addr, stop) = (server.addr.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(send(&addr, "GET", "/health", &[], "").await.0, 200);
            }
        }));
    }
    let (status, headers, body) = send(
        &server.addr,
        "GET",
        "/__ouli/debug/pprof?seconds=1&format=svg",
        &[],
        "",
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert!(body.contains("<svg"), "{body:.200}");
    server.stop();
}
