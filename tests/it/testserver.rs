//! End to end: directories written in google/test-server's format (by a
//! recorder in this file that follows test-server's rules: `shaSum` over Go's
//! `MarshalIndent` of the request, `HeadSHA` chain heads, `<>&` escaped, `_`
//! for spaces, `<sha>.json` for unnamed requests), served as they are by the
//! real `ouli replay` binary and imported by `ouli import test-server`, driven
//! by a real HTTP client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ouli::interaction::{Exchange, WsDirection};
use ouli::recording::{ReadBackend, Recording};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::ouli::{Log, OULI, Ouli, Start};

/// test-server's chain head (internal/store).
const HEAD_SHA: &str = "b4d6e60a9b97e7b98c63df9308728c5c88c0b40c398046772c63447b94608b4d";

const API: &str = "api.example.test";
const OTHER: &str = "other.example.test";

// ---------------------------------------------------------------------------
// A test-server recorder, by the format's rules.

/// Go's `json.MarshalIndent(v, "", "  ")`: serde's pretty printer writes the
/// same layout; Go also escapes `<`, `>`, `&`, U+2028 and U+2029 (they occur
/// only inside strings, so replacing them everywhere is exact).
fn go_marshal_indent(value: &Value) -> String {
    serde_json::to_string_pretty(value)
        .unwrap()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn sha_sum(request: &Value) -> String {
    hex::encode(Sha256::digest(go_marshal_indent(request).as_bytes()))
}

/// One request as a client sends it through test-server.
struct Call<'a> {
    test: Option<&'a str>,
    host: &'a str,
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: Option<Value>,
}

/// One response as test-server stores it.
struct Stored<'a> {
    status: u16,
    headers: &'a [(&'a str, &'a str)],
    segments: Option<Vec<Value>>,
}

/// Writes what test-server's record mode writes: per test a `<name>.json`
/// (spaces as `_`), per unnamed request a `<shaSum>.json`, chain links
/// crossing tests as test-server's do.
#[derive(Default)]
struct TestServerRecorder {
    files: BTreeMap<String, Vec<Value>>,
    /// Last named request's sha per endpoint host (test-server's links cross tests).
    last_named: HashMap<String, String>,
    tests_seen: Vec<String>,
}

impl TestServerRecorder {
    fn record(&mut self, call: Call<'_>, stored: Stored<'_>) -> String {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in call.headers {
            headers.insert((*name).to_owned(), (*value).to_owned());
        }
        if let Some(test) = call.test {
            headers.insert("Test-Name".into(), test.into());
        }
        let body_text = call
            .body
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        if !body_text.is_empty() {
            headers.insert("Content-Length".into(), body_text.len().to_string());
        }
        let previous = match call.test {
            Some(test) if self.tests_seen.iter().any(|t| t == test) => self
                .last_named
                .get(call.host)
                .cloned()
                .unwrap_or_else(|| HEAD_SHA.into()),
            Some(test) => {
                self.tests_seen.push(test.to_owned());
                HEAD_SHA.into()
            }
            None => self
                .last_named
                .get(call.host)
                .cloned()
                .unwrap_or_else(|| HEAD_SHA.into()),
        };
        let request = json!({
            "method": call.method,
            "url": call.url,
            "request": format!("{} {} HTTP/1.1", call.method, call.url),
            "headers": headers,
            "bodySegments": [call.body],
            "previousRequest": previous,
            "serverAddress": call.host,
            "port": 443,
            "protocol": "https",
        });
        let sha = sha_sum(&request);
        let mut response = json!({
            "statusCode": stored.status,
            "headers": stored
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                .collect::<BTreeMap<String, Value>>(),
        });
        if let Some(segments) = stored.segments {
            response["bodySegments"] = Value::Array(segments);
        }
        let interaction = json!({ "request": request, "shaSum": sha, "response": response });
        let stem = match call.test {
            Some(test) => {
                self.last_named.insert(call.host.to_owned(), sha.clone());
                test.replace(' ', "_")
            }
            None => sha.clone(),
        };
        self.files.entry(stem).or_default().push(interaction);
        sha
    }

    fn write(&self, dir: &Path) {
        for (stem, interactions) in &self.files {
            let file = json!({ "recordID": stem, "interactions": interactions });
            let path = dir.join(format!("{stem}.json"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            // MarshalIndent output, no trailing newline.
            std::fs::write(path, go_marshal_indent(&file)).unwrap();
        }
    }
}

#[test]
fn the_recorder_reproduces_test_servers_own_sha_sums() {
    // Requests and shaSums from test-server's own sample recordings (its
    // Python SDK's test-data): the second one has a `&` Go wrote as \u0026.
    let first = json!({
        "method": "GET", "url": "/", "request": "GET / HTTP/1.1",
        "headers": {
            "Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive",
            "Test-Name": "models/python-sample-test", "User-Agent": "python-requests/2.32.5"
        },
        "bodySegments": [null], "previousRequest": HEAD_SHA,
        "serverAddress": "github.com", "port": 443, "protocol": "https"
    });
    assert_eq!(
        sha_sum(&first),
        "9748ed13d3c561f5cda29daf7725f77db500063c5568a672d22fc6284b38b813"
    );
    let url = "/upload/v1beta/files?upload_id=AAwnv3IAwQ76sSSWtkOp94W-nNQLAGzqq5WadndVyvjNryp6rnZEJJ1_sO2ntd0p12NICkChbd2zSZVpsUM3qr2nEXhC6DIXeCJtvsS3bEH1Iw&upload_protocol=resumable";
    let second = json!({
        "method": "POST", "url": url, "request": format!("POST {url} HTTP/1.1"),
        "headers": {
            "Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive",
            "Content-Length": "394671", "X-Goog-Upload-Command": "upload, finalize",
            "X-Goog-Upload-Offset": "0"
        },
        "bodySegments": [null], "previousRequest": HEAD_SHA,
        "serverAddress": "generativelanguage.googleapis.com", "port": 443, "protocol": "https"
    });
    assert!(go_marshal_indent(&second).contains("\\u0026upload_protocol"));
    assert_eq!(
        sha_sum(&second),
        "c68c1d24af03f4c1b178db5de0a98fac46a05cc85b5b613d3fbd36b1c677d699"
    );
}

// ---------------------------------------------------------------------------
// The recordings used by most tests.

const OLD_CLIENT: &[(&str, &str)] = &[
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip"),
    ("Connection", "keep-alive"),
    ("User-Agent", "genai-sdk/1.0"),
];

fn call<'a>(test: Option<&'a str>, method: &'a str, url: &'a str, body: Option<Value>) -> Call<'a> {
    Call {
        test,
        host: API,
        method,
        url,
        headers: if body.is_some() {
            &[
                ("Accept", "application/json"),
                ("Accept-Encoding", "gzip"),
                ("Connection", "keep-alive"),
                ("Content-Type", "application/json"),
                ("User-Agent", "genai-sdk/1.0"),
            ]
        } else {
            OLD_CLIENT
        },
        body,
    }
}

fn json_response(segment: Value) -> Stored<'static> {
    Stored {
        status: 200,
        headers: &[
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Length", "999"),
            ("X-Upstream", "yes"),
        ],
        segments: Some(vec![segment]),
    }
}

const NESTED: &str = "suite/first test";
const SECOND: &str = "second";

/// Two tests recorded interleaved, plus an unnamed request, a secret, gzip,
/// SSE, a request to a second endpoint. Returns the unnamed request's sha.
fn standard_recordings(dir: &Path) -> String {
    let mut recorder = TestServerRecorder::default();
    let first = Some(NESTED);
    let second = Some(SECOND);
    recorder.record(
        call(first, "GET", "/v1/items", None),
        json_response(json!({"items": [], "note": "<b>&amp;</b>"})),
    );
    recorder.record(
        call(second, "GET", "/v1/items", None),
        json_response(json!({"items": ["second's"]})),
    );
    recorder.record(
        call(
            first,
            "POST",
            "/v1/items",
            Some(json!({"name": "a", "count": 2, "nested": {"z": 1, "a": [true, null]}})),
        ),
        Stored {
            status: 201,
            headers: &[
                ("Content-Type", "application/json"),
                ("Location", "/v1/items/1"),
            ],
            segments: Some(vec![json!({"id": 1, "name": "a"})]),
        },
    );
    // Repeated identical request: the list grew.
    recorder.record(
        call(first, "GET", "/v1/items", None),
        json_response(json!({"items": [{"id": 1, "name": "a"}]})),
    );
    // A secret: test-server wrote REDACTED where the key was.
    recorder.record(
        call(first, "GET", "/v1/private?key=REDACTED", None),
        json_response(json!({"private": true})),
    );
    // A gzip response: stored decoded, its wire headers kept.
    recorder.record(
        call(second, "GET", "/v1/zipped", None),
        Stored {
            status: 200,
            headers: &[
                ("Content-Encoding", "gzip"),
                ("Content-Length", "41"),
                ("Content-Type", "application/json"),
            ],
            segments: Some(vec![json!({"zipped": "yes, decoded", "ratio": 0.5})]),
        },
    );
    // Server-sent events under alt=sse.
    recorder.record(
        call(
            second,
            "POST",
            "/v1/models/m:stream?alt=sse",
            Some(json!({"prompt": "hi"})),
        ),
        Stored {
            status: 200,
            headers: &[("Content-Type", "text/event-stream")],
            segments: Some(vec![
                json!({"text": "Hel"}),
                json!({"text": "lo", "done": true}),
            ]),
        },
    );
    // The second endpoint.
    recorder.record(
        Call {
            host: OTHER,
            ..call(second, "GET", "/other", None)
        },
        json_response(json!({"endpoint": "other"})),
    );
    let unnamed = recorder.record(
        call(None, "GET", "/v1/unnamed", None),
        json_response(json!({"unnamed": 1})),
    );
    recorder.write(dir);
    unnamed
}

// ---------------------------------------------------------------------------
// The real binary and a real client.

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("test-server.yml");
    std::fs::write(
        &config,
        format!(
            "endpoints:\n\
             \x20 - target_host: {API}\n    target_type: https\n    target_port: 443\n    source_type: http\n    source_port: 0\n    health: /health\n\
             \x20 - target_host: {OTHER}\n    target_type: https\n    target_port: 443\n    source_type: http\n    source_port: 0\n"
        ),
    )
    .unwrap();
    config
}

/// `replay --config C --recording-dir D` exactly as test-server's SDKs run
/// it, both endpoints ready; its log in a temporary file.
fn start(program: &Path, config: &Path, recordings: &Path, secrets: &str) -> Ouli {
    let log = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let log = log.keep().unwrap();
    Start::with_config_file("replay", config, recordings)
        .program(program)
        .env("TEST_SERVER_SECRETS", secrets)
        .env_remove("OULI_SECRETS")
        .env_remove("RUST_LOG")
        .log(Log::Create(log))
        .endpoints(2)
        .spawn()
}

/// SIGTERM; it exits 0. Its log (the file is removed).
fn stop(server: Ouli) -> String {
    let path = server.log_path().map(Path::to_owned);
    let stopped = server.stop();
    stopped.assert_success();
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
    stopped.log
}

#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn send(
    addr: &str,
    test: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(test) = test {
        request = request.header("Test-Name", test);
    }
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
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A newer client library: another User-Agent, header names in lower case,
/// JSON keys in another order and spacing.
const NEW_CLIENT: &[(&str, &str)] = &[
    ("accept", "application/json"),
    ("user-agent", "genai-sdk/2.7 (rewritten)"),
    ("x-goog-api-client", "gl-rust/2"),
];
const NEW_CLIENT_JSON: &[(&str, &str)] = &[
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("user-agent", "genai-sdk/2.7 (rewritten)"),
];

/// Every file under `dir` with the SHA-256 of its bytes.
fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// The requests of [`standard_recordings`], each with what test-server
/// answers, played by a newer client and interleaved differently.
async fn play_standard_tests(server: &Ouli) -> Vec<Answer> {
    let api = &server.addrs[0];
    let other = &server.addrs[1];
    let first = Some(NESTED);
    let second = Some(SECOND);
    let mut answers = Vec::new();

    let a = send(api, second, "GET", "/v1/items", NEW_CLIENT, "").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"items":["second's"]}"#)
    );
    answers.push(a);

    let a = send(api, first, "GET", "/v1/items", NEW_CLIENT, "").await;
    // Go's json.Marshal: keys sorted, <>& escaped.
    assert_eq!(
        (a.status, a.body.as_str()),
        (
            200,
            r#"{"items":[],"note":"\u003cb\u003e\u0026amp;\u003c/b\u003e"}"#
        )
    );
    assert_eq!(a.header("x-upstream"), Some("yes"));
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=UTF-8")
    );
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str())
    );
    answers.push(a);

    let a = send(
        api,
        first,
        "POST",
        "/v1/items",
        NEW_CLIENT_JSON,
        r#"{ "nested": {"a": [true, null], "z": 1}, "count": 2, "name": "a" }"#,
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (201, r#"{"id":1,"name":"a"}"#));
    assert_eq!(a.header("location"), Some("/v1/items/1"));
    answers.push(a);

    let a = send(api, first, "GET", "/v1/items", NEW_CLIENT, "").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"items":[{"id":1,"name":"a"}]}"#),
        "the second identical request gets the second recorded answer"
    );
    answers.push(a);

    let a = send(
        api,
        first,
        "GET",
        "/v1/private?key=sekrit-key-123",
        NEW_CLIENT,
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"private":true}"#));
    answers.push(a);

    let a = send(api, second, "GET", "/v1/zipped", NEW_CLIENT, "").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"ratio":0.5,"zipped":"yes, decoded"}"#)
    );
    assert_eq!(a.header("content-encoding"), None);
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str())
    );
    answers.push(a);

    let a = send(
        api,
        second,
        "POST",
        "/v1/models/m:stream?alt=sse",
        NEW_CLIENT_JSON,
        r#"{"prompt":"hi"}"#,
    )
    .await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (
            200,
            "data: {\"text\":\"Hel\"}\n\ndata: {\"done\":true,\"text\":\"lo\"}\n\n"
        )
    );
    assert_eq!(a.header("content-type"), Some("text/event-stream"));
    answers.push(a);

    let a = send(other, second, "GET", "/other", NEW_CLIENT, "").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (200, r#"{"endpoint":"other"}"#)
    );
    answers.push(a);

    let a = send(api, None, "GET", "/v1/unnamed", NEW_CLIENT, "").await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"unnamed":1}"#));
    answers.push(a);

    // Past the recording: a miss, explained, never a bare 500.
    let a = send(api, first, "GET", "/v1/items", NEW_CLIENT, "").await;
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.header("x-ouli-error").is_some());
    assert!(a.body.contains(NESTED), "{}", a.body);
    answers.push(a);
    answers
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_test_server_directory_as_it_is_and_never_touches_it() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    let unnamed = standard_recordings(&recordings);
    // Hand-checked layout: nested folder, `_` for the space, `<sha>.json`.
    assert!(recordings.join("suite/first_test.json").is_file());
    assert!(recordings.join("second.json").is_file());
    assert!(recordings.join(format!("{unnamed}.json")).is_file());
    let first_file = std::fs::read_to_string(recordings.join("suite/first_test.json")).unwrap();
    assert!(first_file.contains(&format!("\"previousRequest\": \"{HEAD_SHA}\"")));
    assert!(
        first_file.contains("\\u003cb\\u003e"),
        "Go escaping in the file"
    );
    assert!(!first_file.ends_with('\n'));
    // An invalid file, as a concurrent test-server record can leave one.
    std::fs::write(
        recordings.join("broken.json"),
        "{\"interactions\": []}\n}garbage",
    )
    .unwrap();
    let config = write_config(dir.path());
    let before = hash_tree(&recordings);

    let server = start(Path::new(OULI), &config, &recordings, "sekrit-key-123");
    let broken = send(
        &server.addrs[0],
        Some("broken"),
        "GET",
        "/v1/items",
        NEW_CLIENT,
        "",
    )
    .await;
    assert_eq!(broken.status, 502, "{}", broken.body);
    assert!(broken.body.contains("broken.json"), "{}", broken.body);
    assert!(broken.body.contains("not valid JSON"), "{}", broken.body);
    assert!(broken.body.contains("line 2"), "the place: {}", broken.body);
    play_standard_tests(&server).await;
    // Still served after the broken file was met, and the chain was not reset.
    let again = send(
        &server.addrs[0],
        Some(SECOND),
        "GET",
        "/v1/items",
        NEW_CLIENT,
        "",
    )
    .await;
    assert_eq!(again.status, 404, "chain exhausted: {}", again.body);
    let log = stop(server);
    assert!(log.contains("broken.json"), "log: {log}");

    assert_eq!(
        hash_tree(&recordings),
        before,
        "replay changed the directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_named_with_the_place_and_other_tests_keep_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    let mut recorder = TestServerRecorder::default();
    recorder.record(
        call(Some("fine"), "GET", "/ok", None),
        json_response(json!({"ok": 1})),
    );
    recorder.record(
        call(Some("no response"), "GET", "/a", None),
        json_response(json!({})),
    );
    recorder.record(
        call(Some("no response"), "GET", "/b", None),
        json_response(json!({})),
    );
    recorder.record(
        call(Some("ws"), "GET", "/ws-http", None),
        json_response(json!({"ws": 0})),
    );
    recorder.write(&recordings);
    // Take the response out of the second interaction.
    let path = recordings.join("no_response.json");
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["interactions"][1]
        .as_object_mut()
        .unwrap()
        .remove("response");
    std::fs::write(&path, go_marshal_indent(&file)).unwrap();
    // A WebSocket log whose second byte count runs past the end.
    std::fs::write(recordings.join("ws.websocket.log"), ">3 hi\n<50 short\n").unwrap();
    let config = write_config(dir.path());
    let before = hash_tree(&recordings);

    let server = start(Path::new(OULI), &config, &recordings, "");
    let api = &server.addrs[0];
    let a = send(api, Some("no response"), "GET", "/a", NEW_CLIENT, "").await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert!(a.body.contains("no_response.json"), "{}", a.body);
    assert!(a.body.contains("interactions[1]"), "{}", a.body);
    assert!(a.body.contains("no \\\"response\\\""), "{}", a.body);
    let a = send(api, Some("fine"), "GET", "/ok", NEW_CLIENT, "").await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"ok":1}"#));
    // The test with the damaged log still has its HTTP requests served.
    let a = send(api, Some("ws"), "GET", "/ws-http", NEW_CLIENT, "").await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"ws":0}"#));
    let log = stop(server);
    assert!(log.contains("ws.websocket.log"), "log: {log}");
    assert!(log.contains("entry 1 at byte 6"), "log: {log}");
    assert!(log.contains("past the end"), "log: {log}");
    assert_eq!(hash_tree(&recordings), before);
}

fn import(src: &Path, dst: &Path, config: &Path) -> (i32, String, String) {
    let output = Command::new(OULI)
        .args(["import", "test-server"])
        .arg(src)
        .arg(dst)
        .arg("--config")
        .arg(config)
        .env_remove("TEST_SERVER_SECRETS")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_replay_answers_as_the_source_does() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("test-server-recordings");
    let dst = dir.path().join("ouli-recordings");
    std::fs::create_dir(&src).unwrap();
    standard_recordings(&src);
    std::fs::write(
        src.join("suite/first_test.websocket.log"),
        ">15 hello REDACTED\n<21 echo:hello REDACTED\n\n",
    )
    .unwrap();
    std::fs::write(src.join("broken.json"), "{\"interactions\": [}").unwrap();
    std::fs::write(src.join("cut.websocket.log"), ">3 hi\n<50 short\n").unwrap();
    // A body test-server dropped (an upload that was not JSON).
    let mut recorder = TestServerRecorder::default();
    recorder.record(
        Call {
            headers: &[("Content-Length", "394671"), ("Content-Type", "image/jpeg")],
            ..call(Some("upload"), "POST", "/upload", None)
        },
        Stored {
            status: 200,
            headers: &[("Content-Type", "text/html"), ("Content-Length", "120")],
            segments: None,
        },
    );
    recorder.write(&src);
    let config = write_config(dir.path());
    let src_before = hash_tree(&src);

    let server = start(Path::new(OULI), &config, &src, "sekrit-key-123");
    let from_src = play_standard_tests(&server).await;
    stop(server);

    let (code, stdout, stderr) = import(&src, &dst, &config);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    for line in [
        "converted ",
        "suite/first_test.json (4 interactions)",
        "suite/first_test.websocket.log (1 interactions)",
        "second.json (4 interactions)",
    ] {
        assert!(stdout.contains(line), "{line:?} not in: {stdout}");
    }
    let lines_starting = |prefix: &str| -> String {
        stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Files left out, with the place.
    let skipped = lines_starting("skipped ");
    assert!(skipped.contains("broken.json: not valid JSON"), "{stdout}");
    assert!(
        skipped.contains("cut.websocket.log: entry 1 at byte 6"),
        "{stdout}"
    );
    // What test-server lost in a file that was converted.
    let notes = lines_starting("note ");
    assert!(
        notes.contains("upload.json: interactions[0]: the request body (394671 bytes"),
        "{stdout}"
    );
    assert!(
        notes.contains("response body (120 bytes on the wire, Content-Type text/html) was dropped"),
        "{stdout}"
    );
    assert!(stdout.contains("upload.json (1 interactions)"), "{stdout}");
    assert!(stdout.contains(", 2 skipped, 2 note(s)"), "{stdout}");
    assert_eq!(hash_tree(&src), src_before, "import changed its source");

    // The session keeps its space (from the Test-Name header); unnamed
    // requests make the default session.
    assert!(dst.join("suite/first test.ouli").is_file());
    assert!(dst.join("second.ouli").is_file());
    assert!(dst.join("default.ouli").is_file());
    assert!(!dst.join("broken.ouli").exists());
    let verify = Command::new(OULI).arg("verify").arg(&dst).output().unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // The WebSocket log became a WebSocket record.
    let recording = Recording::open(&dst.join("suite/first test.ouli"), ReadBackend::Mmap).unwrap();
    let mut websockets = Vec::new();
    for view in recording.iter() {
        let interaction = view.unwrap().to_interaction().unwrap();
        if let Exchange::WebSocket { response, frames } = interaction.exchange {
            assert_eq!(response.status, 101);
            websockets.push(frames);
        }
    }
    assert_eq!(websockets.len(), 1);
    let frames = &websockets[0];
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].direction, WsDirection::ClientToServer);
    assert_eq!(&frames[0].payload[..], b"hello REDACTED");
    assert_eq!(frames[1].direction, WsDirection::ServerToClient);
    assert_eq!(&frames[1].payload[..], b"echo:hello REDACTED\n");

    // A test-server file added beside the imported recordings is served too.
    let mut extra = TestServerRecorder::default();
    extra.record(
        call(Some("extra"), "GET", "/extra", None),
        json_response(json!({"extra": true})),
    );
    extra.write(&dst);

    let server = start(Path::new(OULI), &config, &dst, "sekrit-key-123");
    let from_dst = play_standard_tests(&server).await;
    let a = send(
        &server.addrs[0],
        Some("extra"),
        "GET",
        "/extra",
        NEW_CLIENT,
        "",
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (200, r#"{"extra":true}"#));
    stop(server);
    // Same answers; a miss report names the recording dir, which differs.
    let (from_src_answers, src_miss) = from_src.split_at(from_src.len() - 1);
    let (from_dst_answers, dst_miss) = from_dst.split_at(from_dst.len() - 1);
    assert_eq!(from_src_answers, from_dst_answers);
    assert_eq!(src_miss[0].status, dst_miss[0].status);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_through_a_link_named_test_server() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let link = bin.join("test-server");
    std::os::unix::fs::symlink(OULI, &link).unwrap();
    // The Python SDK runs `<package>/bin/test-server --help` after install.
    let help = Command::new(&link).arg("--help").output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    let direct = Command::new(OULI).arg("--help").output().unwrap();
    assert_eq!(help.stdout, direct.stdout, "--help differs under the link");

    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    standard_recordings(&recordings);
    let config = write_config(dir.path());
    let server = start(&link, &config, &recordings, "sekrit-key-123");
    // The SDKs poll the health path before the first request.
    let health = send(&server.addrs[0], None, "GET", "/health", &[], "").await;
    assert_eq!(health.status, 200);
    play_standard_tests(&server).await;
    stop(server);
}
