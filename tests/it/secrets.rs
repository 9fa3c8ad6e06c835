//! A secret never reaches a file or a log, in any form: end to end through
//! the real binary, with a real upstream. For each way in (a percent-encoded
//! or JSON-escaped secret, a failing upstream, a Basic credential, a dropped
//! header the upstream echoes, an imported recording), the secret is in
//! none of: the answers ouli made, its log lines (stdout and stderr), any
//! file under the recording dir; and replay still matches what was
//! recorded. Then the post-write scan: a secret that got past the redactor
//! (written directly, or in a form the redactor does not read) keeps the
//! recording from being completed and fails the run.

use crate::support::config;
use crate::support::files::{self, files_under};
use crate::support::ouli::OULI;
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::raw;
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::Path;
use std::process::{Command, ExitStatus};
const SECRET: &str = "s3cr3t-AbC";

/// The forms of [`SECRET`] the tests send; none may be anywhere.
const FORMS: &[&str] = &[
    SECRET,
    "s3cr3t%2DAbC",
    "s3cr3t%2dAbC",
    "%73%33%63%72%33%74%2d%41%62%43",
    "%73%33%63%72%33%74%2D%41%62%43",
    r"s3cr3t\u002dAbC",
    // base64("alice:s3cr3t-AbC")
    "YWxpY2U6czNjcjN0LUFiQw==",
];

/// The real binary in `mode`, config `yaml`, recordings in
/// `dir/recordings`, the secret named by `TEST_SERVER_SECRETS`, logging at
/// debug to `dir/<mode>.stderr`.
fn start(mode: &str, dir: &Path, yaml: &str) -> Ouli {
    Start::new(mode, dir, yaml)
        .env("TEST_SERVER_SECRETS", SECRET)
        .env("RUST_LOG", "debug")
        .log(Log::Create(dir.join(format!("{mode}.stderr"))))
        .spawn()
}

/// SIGTERM; the exit status and everything the process wrote (stdout,
/// then its log).
fn stop(ouli: Ouli) -> (ExitStatus, String) {
    let stopped = ouli.stop();
    (stopped.status, stopped.stdout + &stopped.log)
}

/// One request on its own connection, the target sent byte for byte: the
/// status and the body.
fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, answer) = raw::request(addr, method, target, headers, body);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// A real upstream answering every request with its method, target,
/// headers (sorted) and body, as an echo service does; `extra` is appended.
async fn echo_upstream(extra: &'static str) -> u16 {
    let upstream = upstream::start(
        Options::default(),
        move |_, request: http::Request<hyper::body::Incoming>| async move {
            let mut text = format!("{} {}\n", request.method(), request.uri());
            let mut headers: Vec<String> = request
                .headers()
                .iter()
                .filter(|(name, _)| *name != "host")
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            headers.sort();
            text.push_str(&headers.join("\n"));
            let body = request.into_body().collect().await.unwrap().to_bytes();
            text.push_str(&format!("\n\n{}{extra}", String::from_utf8_lossy(&body)));
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(text))))
        },
    )
    .await;
    upstream.port
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    files::contains(haystack, needle.as_bytes())
}

/// No form of the secret (nor `others`) in any answer, the logs or any
/// file (content or name) under `dir`.
fn assert_nowhere(dir: &Path, answers: &[&str], log: &str, others: &[&str]) {
    for form in FORMS.iter().chain(others) {
        for answer in answers {
            assert!(!answer.contains(form), "{form} in an answer: {answer}");
        }
        assert!(!log.contains(form), "{form} in the log: {log}");
        for (path, bytes) in files_under(dir) {
            assert!(!contains(&bytes, form), "{form} in {}", path.display());
            assert!(
                !path.to_string_lossy().contains(form),
                "{form} in a file name"
            );
        }
    }
}

/// Requests carrying the secret percent-encoded (one byte; every byte, lower
/// case hex) and JSON-escaped: recorded, the secret nowhere, every one
/// replayed; a miss carrying it reports and logs it redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_or_json_escaped_secret_is_redacted_where_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream("").await;
    let yaml = config(port, "");
    let session = [
        ("Test-Name", "decoded"),
        ("Content-Type", "application/json"),
    ];
    let requests = [
        ("GET", "/q?k=s3cr3t%2DAbC&n=1", ""),
        ("GET", "/q/%73%33%63%72%33%74%2d%41%62%43?n=2", ""),
        ("POST", "/j", r#"{"k":"s3cr3t\u002dAbC","n":3}"#),
    ];
    let ouli = start("record", dir.path(), &yaml);
    let mut recorded = Vec::new();
    for (method, target, body) in requests {
        let (status, answer) = request(&ouli.addr, method, target, &session, body);
        assert_eq!(status, 200, "{answer}");
        recorded.push(answer);
    }
    let (exit, log) = stop(ouli);
    assert!(exit.success(), "record exits 0: {log}");
    assert!(
        dir.path().join("recordings/decoded.ouli").is_file(),
        "{log}"
    );
    assert_nowhere(&dir.path().join("recordings"), &[], &log, &[]);

    let ouli = start("replay", dir.path(), &yaml);
    let mut answers = Vec::new();
    for ((method, target, body), live) in requests.iter().zip(&recorded) {
        let (status, answer) = request(&ouli.addr, method, target, &session, body);
        assert_eq!(status, 200, "{target}: {answer}");
        // The upstream echoed the secret; the recording holds it redacted.
        assert!(answer.contains("REDACTED"), "{answer}");
        let mut expected = live.clone();
        for form in FORMS {
            expected = expected.replace(form, "REDACTED");
        }
        assert_eq!(answer, expected, "replayed as recorded");
        answers.push(answer);
    }
    let (status, miss) = request(&ouli.addr, "GET", "/q?k=s3cr3t%2DAbC&n=9", &session, "");
    assert_eq!(status, 404, "{miss}");
    assert!(
        miss.contains("REDACTED"),
        "the miss shows the redacted query: {miss}"
    );
    let (status, miss_json) = request(
        &ouli.addr,
        "POST",
        "/j",
        &session,
        r#"{"k":"s3cr3t\u002dAbC","n":9}"#,
    );
    assert_eq!(status, 404, "{miss_json}");
    let (_, log) = stop(ouli);
    answers.push(miss);
    answers.push(miss_json);
    let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
    assert_nowhere(&dir.path().join("recordings"), &answers, &log, &[]);
}

/// An upstream that cannot be reached: the 502 and its log line name the
/// upstream URL with the secret redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_reported_without_the_secret_in_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let ouli = start("record", dir.path(), &config(port, ""));
    let mut answers = Vec::new();
    for target in ["/x?k=s3cr3t-AbC", "/x?k=s3cr3t%2DAbC", "/s3cr3t%2dAbC/y"] {
        let (status, answer) = request(&ouli.addr, "GET", target, &[("Test-Name", "down")], "");
        assert_eq!(status, 502, "{answer}");
        assert!(
            answer.contains("upstream-unreachable") && answer.contains("REDACTED"),
            "{answer}"
        );
        answers.push(answer);
    }
    let (_, log) = stop(ouli);
    assert!(
        log.contains("upstream http://127.0.0.1"),
        "the 502 is logged: {log}"
    );
    let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
    assert_nowhere(&dir.path().join("recordings"), &answers, &log, &[]);
}

/// An upstream that takes the request and never answers: the 504 and its
/// log line name the upstream URL with the secret redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_reported_without_the_secret_in_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let yaml = format!(
        "{}limits:\n  upstream_response_timeout_ms: 200\n",
        config(port, "")
    );
    let ouli = start("record", dir.path(), &yaml);
    let (status, answer) = request(
        &ouli.addr,
        "GET",
        "/x?k=s3cr3t%2DAbC",
        &[("Test-Name", "slow")],
        "",
    );
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer.contains("upstream-timeout") && answer.contains("REDACTED"),
        "{answer}"
    );
    let (_, log) = stop(ouli);
    assert_nowhere(&dir.path().join("recordings"), &[&answer], &log, &[]);
}

/// `Authorization: Basic base64(alice:secret)`: stored as `Basic
/// REDACTED`, its echo in the answer redacted too; replay matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_credential_holding_the_secret_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream("").await;
    let yaml = config(port, "");
    let headers = [
        ("Test-Name", "basic"),
        ("Authorization", "Basic YWxpY2U6czNjcjN0LUFiQw=="),
    ];
    let ouli = start("record", dir.path(), &yaml);
    let (status, live) = request(&ouli.addr, "GET", "/me", &headers, "");
    assert_eq!(status, 200);
    assert!(
        live.contains("YWxpY2U6czNjcjN0LUFiQw=="),
        "the client gets the true answer"
    );
    let (exit, log) = stop(ouli);
    assert!(exit.success(), "{log}");
    let file = std::fs::read(dir.path().join("recordings/basic.ouli")).unwrap();
    assert!(contains(&file, "Basic REDACTED"));
    assert_nowhere(&dir.path().join("recordings"), &[], &log, &[]);

    let ouli = start("replay", dir.path(), &yaml);
    let (status, replayed) = request(&ouli.addr, "GET", "/me", &headers, "");
    assert_eq!(status, 200, "{replayed}");
    // The echoed header was the credential as sent: a secret of the answer.
    assert_eq!(
        replayed,
        live.replace("Basic YWxpY2U6czNjcjN0LUFiQw==", "REDACTED")
    );
    let (_, log) = stop(ouli);
    assert_nowhere(&dir.path().join("recordings"), &[&replayed], &log, &[]);
}

/// A header named in `redact_request_headers` is dropped from the
/// recording; when the upstream echoes its value, the value is redacted in
/// the recorded answer too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_header_echoed_by_the_upstream_does_not_reach_the_disk() {
    const KEY: &str = "key-7f3a9c0d1e2b";
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream("").await;
    let yaml = config(
        port,
        "    redact_request_headers: [x-api-key, authorization]\n",
    );
    let headers = [
        ("Test-Name", "dropped"),
        ("X-Api-Key", KEY),
        ("Authorization", "Bearer tok-0123456789"),
    ];
    let ouli = start("record", dir.path(), &yaml);
    let (status, live) = request(&ouli.addr, "POST", "/echo", &headers, "body");
    assert_eq!(status, 200);
    assert!(
        live.contains(KEY) && live.contains("tok-0123456789"),
        "{live}"
    );
    let (exit, log) = stop(ouli);
    assert!(exit.success(), "{log}");
    assert_nowhere(
        &dir.path().join("recordings"),
        &[],
        &log,
        &[KEY, "tok-0123456789"],
    );

    let ouli = start("replay", dir.path(), &yaml);
    let (status, replayed) = request(&ouli.addr, "POST", "/echo", &headers, "body");
    assert_eq!(status, 200, "{replayed}");
    assert!(replayed.contains("x-api-key: REDACTED"), "{replayed}");
    assert!(
        replayed.contains("authorization: Bearer REDACTED")
            || replayed.contains("authorization: REDACTED"),
        "{replayed}"
    );
    let (_, log) = stop(ouli);
    assert_nowhere(
        &dir.path().join("recordings"),
        &[],
        &log,
        &[KEY, "tok-0123456789"],
    );
}

/// A test-server recording whose response headers, response body and
/// WebSocket frames hold the secret: imported, the secret is in none of
/// the `.ouli` files; replay of the import answers redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_redacts_responses_and_websocket_frames() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("test-server");
    let dst = dir.path().join("recordings");
    std::fs::create_dir(&src).unwrap();
    let interaction = serde_json::json!({
        "request": {
            "method": "GET", "url": "/info", "request": "GET /info HTTP/1.1",
            "headers": {"Test-Name": "imported"}, "bodySegments": [null],
            "previousRequest": ouli::testserver::HEAD_SHA,
            "serverAddress": "127.0.0.1", "port": 80, "protocol": "http",
        },
        "shaSum": "0",
        "response": {
            "statusCode": 200,
            "headers": {"X-Token": SECRET, "Content-Type": "application/json"},
            "bodySegments": [{"token": "s3cr3t-AbC", "url": "/cb?k=s3cr3t%2DAbC"}],
        },
    });
    let file = serde_json::json!({"recordID": "imported", "interactions": [interaction]});
    std::fs::write(src.join("imported.json"), file.to_string()).unwrap();
    std::fs::write(
        src.join("imported.websocket.log"),
        format!(
            ">{} hello {SECRET}\n<{} echo {SECRET}\n",
            6 + SECRET.len(),
            5 + SECRET.len()
        ),
    )
    .unwrap();
    let yaml = config(9, "");
    let config_path = dir.path().join("ouli.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let output = Command::new(OULI)
        .args(["import", "test-server"])
        .arg(&src)
        .arg(&dst)
        .arg("--config")
        .arg(&config_path)
        .env("TEST_SERVER_SECRETS", SECRET)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{log}");
    assert!(dst.join("imported.ouli").is_file(), "{log}");
    assert_nowhere(&dst, &[], &log, &[]);

    let ouli = start("replay", dir.path(), &yaml);
    let (status, answer) =
        raw::request(&ouli.addr, "GET", "/info", &[("Test-Name", "imported")], "");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("x-token: REDACTED"), "{answer}");
    assert!(answer.contains(r#""token":"REDACTED""#), "{answer}");
    let (_, log) = stop(ouli);
    assert_nowhere(&dst, &[&answer], &log, &[]);
}

/// base64 of `"xy" + secret` (the secret at the third alignment).
const BASE64_OF_SECRET: &str = "eHlzM2NyM3QtQWJD";

/// A secret in a form the redactor does not read (base64 in a body, which
/// no canonical form decodes) reaches the written file: the post-write scan
/// refuses to complete it. The `.partial` is removed, no recording is put
/// in place, the log names the record and field, and the run exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_write_scan_refuses_a_recording_holding_the_secret_in_record_mode() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream(concat!("{\"blob\":\"", "eHlzM2NyM3QtQWJD", "\"}")).await;
    let ouli = start("record", dir.path(), &config(port, ""));
    let (status, _) = request(&ouli.addr, "GET", "/blob", &[("Test-Name", "leaky")], "");
    assert_eq!(status, 200);
    let (exit, log) = stop(ouli);
    assert_eq!(
        exit.code(),
        Some(1),
        "a recording refused fails the run: {log}"
    );
    assert!(
        log.contains("secret #1 (base64)") && log.contains("in record 0"),
        "{log}"
    );
    assert!(log.contains("response body"), "the field is named: {log}");
    let recordings = dir.path().join("recordings");
    assert!(
        files_under(&recordings).is_empty(),
        "nothing left: {:?}",
        files_under(&recordings)
            .iter()
            .map(|f| f.0.clone())
            .collect::<Vec<_>>()
    );
    assert_nowhere(&recordings, &[], &log, &[BASE64_OF_SECRET]);
}

/// record-missing closes a recording it appended to only after the scan:
/// a secret written into it past the redactor (here: by the library
/// directly, in a response header) makes the close fail, the file removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_write_scan_refuses_a_recording_holding_the_secret_in_record_missing_mode() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let path = recordings.join("injected.ouli");
    std::fs::create_dir_all(&recordings).unwrap();
    let mut writer =
        ouli::recording::RecordingWriter::create(&path, ouli::recording::Durability::None).unwrap();
    writer.append(&injected_interaction()).unwrap();
    writer.finish().unwrap();
    assert!(contains(&std::fs::read(&path).unwrap(), SECRET));

    let port = echo_upstream("").await;
    let ouli = start("record-missing", dir.path(), &config(port, ""));
    let (status, _) = request(&ouli.addr, "GET", "/new", &[("Test-Name", "injected")], "");
    assert_eq!(status, 200);
    let (exit, log) = stop(ouli);
    assert_eq!(exit.code(), Some(1), "{log}");
    assert!(
        log.contains("secret #1 (as is)") && log.contains("response header x-leak"),
        "{log}"
    );
    assert_nowhere(&recordings, &[], &log, &[]);
}

/// The scan without a socket: a recording written by the library with the
/// secret in a response header is removed by `finish_checked`, and the
/// error names record and field, never the secret.
#[test]
fn the_post_write_scan_names_record_and_field() {
    use ouli::recording::secret_scan::SecretScan;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.ouli");
    let scan = SecretScan::new(&[SECRET.as_bytes().to_vec()]).unwrap();
    let mut writer =
        ouli::recording::RecordingWriter::create(&path, ouli::recording::Durability::None).unwrap();
    writer.append(&injected_interaction()).unwrap();
    let error = writer.finish_checked(Some(&scan)).unwrap_err().to_string();
    assert!(
        error.contains("record 0") && error.contains("response header x-leak"),
        "{error}"
    );
    assert!(!error.contains(SECRET));
    assert!(
        files_under(dir.path()).is_empty(),
        "neither .partial nor .ouli is left"
    );

    // Split across two chunks, it is not contiguous in the file: the body
    // is read joined too.
    let mut writer =
        ouli::recording::RecordingWriter::create(&path, ouli::recording::Durability::None).unwrap();
    let mut split = injected_interaction();
    if let ouli::interaction::Exchange::Http(response) = &mut split.exchange {
        response.headers.clear();
        response.chunks = ["s3cr3", "t-AbC"]
            .iter()
            .enumerate()
            .map(|(i, part)| ouli::interaction::BodyChunk {
                offset_us: i as u64,
                data: Bytes::from_static(part.as_bytes()),
            })
            .collect();
    }
    writer.append(&split).unwrap();
    let error = writer.finish_checked(Some(&scan)).unwrap_err().to_string();
    assert!(error.contains("response body (across chunks)"), "{error}");
    assert!(files_under(dir.path()).is_empty());

    // Clean, the same writer completes.
    let mut writer =
        ouli::recording::RecordingWriter::create(&path, ouli::recording::Durability::None).unwrap();
    let mut clean = injected_interaction();
    if let ouli::interaction::Exchange::Http(response) = &mut clean.exchange {
        response.headers.clear();
    }
    writer.append(&clean).unwrap();
    assert_eq!(writer.finish_checked(Some(&scan)).unwrap(), path);
}

/// `ouli import test-server` runs the scan before putting its output in
/// place: a response body with the secret in base64 fails the import.
#[test]
fn import_refuses_an_output_holding_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("test-server");
    let dst = dir.path().join("recordings");
    std::fs::create_dir(&src).unwrap();
    let interaction = serde_json::json!({
        "request": {"method": "GET", "url": "/b", "headers": {"Test-Name": "b64"}, "bodySegments": [null],
            "previousRequest": ouli::testserver::HEAD_SHA, "serverAddress": "127.0.0.1", "port": 80},
        "shaSum": "0",
        "response": {"statusCode": 200, "headers": {}, "bodySegments": [{"blob": BASE64_OF_SECRET}]},
    });
    let file = serde_json::json!({"recordID": "b64", "interactions": [interaction]});
    std::fs::write(src.join("b64.json"), file.to_string()).unwrap();
    let config_path = dir.path().join("ouli.yaml");
    std::fs::write(&config_path, config(9, "")).unwrap();
    let output = Command::new(OULI)
        .args(["import", "test-server"])
        .arg(&src)
        .arg(&dst)
        .arg("--config")
        .arg(&config_path)
        .env("TEST_SERVER_SECRETS", SECRET)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("secret #1 (base64)"), "{log}");
    assert_nowhere(&dst, &[], &log, &[BASE64_OF_SECRET]);
}

fn injected_interaction() -> ouli::interaction::Interaction {
    use ouli::interaction::{
        Exchange, Fingerprint, Interaction, RecordedRequest, RecordedResponse,
    };
    Interaction {
        fingerprint: Fingerprint([7; 32]),
        chain_link: Fingerprint([0; 32]),
        canonical: Bytes::from_static(
            b"ouli-canonical/1\ntarget http://127.0.0.1:9\nmethod GET\npath /old\nbody none 0\n",
        ),
        endpoint: 0,
        recorded_at_unix_us: 0,
        request: RecordedRequest {
            method: Bytes::from_static(b"GET"),
            target: Bytes::from_static(b"/old"),
            headers: vec![],
            body: Bytes::new(),
            trailers: Vec::new(),
        },
        exchange: Exchange::Http(RecordedResponse {
            status: 200,
            headers: vec![(Bytes::from_static(b"x-leak"), Bytes::from(SECRET))],
            chunks: vec![],
            original_encoding: Bytes::new(),
            ..Default::default()
        }),
    }
}
