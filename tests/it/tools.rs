//! The tools around recordings, end to end with the real binary: `ouli
//! show`, `ouli diff`, `ouli export har` / `ouli import har`, on recordings
//! the real binary made of a real upstream (text, JSON, binary, streamed
//! and WebSocket answers).

use crate::support::config;
use crate::support::ouli::{OULI, Ouli, Start};
use crate::support::upstream::{self, Options};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream answers, by bit: 1 changes status, a header and a
/// JSON field; 2 changes only the volatile `generated` field.
const CHANGED: usize = 1;
const VOLATILE: usize = 2;

/// The streamed answer's chunks and the upstream's wait before each but
/// the first.
const STREAM_CHUNKS: [&str; 3] = ["data: one\n\n", "data: two\n\n", "data: three\n\n"];
const STREAM_GAP: Duration = Duration::from_millis(100);

/// Bytes of the answer longer than `show`'s cut.
const BIG_BYTES: usize = 6000;

fn binary_body() -> Vec<u8> {
    (0..=255u8).chain(0..=255u8).collect()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).boxed()
}

/// `chunks`, one at a time, [`STREAM_GAP`] apart.
fn paced(chunks: &'static [&'static str]) -> Body {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(STREAM_GAP).await;
            }
            let frame = hyper::body::Frame::data(Bytes::from_static(chunk.as_bytes()));
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

/// The upstream's answer to `path` (`body`: the request's) in `variant`.
fn answer(variant: usize, path: &str, body: Bytes) -> http::Response<Body> {
    let changed = variant & CHANGED != 0;
    let builder = http::Response::builder();
    match path {
        "/text" => builder
            .header("content-type", "text/plain")
            .body(full("plain text body\nline two")),
        "/json" => builder
            .status(if changed { 503 } else { 200 })
            .header("content-type", "application/json")
            .header("x-flavour", if changed { "chocolate" } else { "vanilla" })
            .body(full(
                serde_json::json!({
                    "answer": { "value": if changed { 2 } else { 1 }, "unit": "m" },
                    "generated": if variant & VOLATILE != 0 { "later" } else { "earlier" },
                })
                .to_string(),
            )),
        "/binary" => builder
            .header("content-type", "application/octet-stream")
            .body(full(binary_body())),
        "/stream" => builder
            .header("content-type", "text/event-stream")
            .body(paced(&STREAM_CHUNKS)),
        "/big" => builder
            .header("content-type", "text/plain")
            .body(full("x".repeat(BIG_BYTES))),
        "/echo" => builder
            .header("content-type", "application/json")
            .body(full(body)),
        _ => builder.status(404).body(full("no such path")),
    }
    .unwrap()
}

/// The HTTP upstream, answering in the variant `variant` holds at the time.
async fn http_upstream(variant: Arc<AtomicUsize>) -> u16 {
    let upstream = upstream::start(Options::default(), move |_, request: http::Request<_>| {
        let variant = variant.load(Ordering::SeqCst);
        async move {
            let path = request.uri().path().to_owned();
            let body = request.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>(answer(variant, &path, body))
        }
    })
    .await;
    upstream.port
}

/// The requests every HTTP recording here is made of, in order: (method,
/// path, body).
const REQUESTS: [(&str, &str, &str); 6] = [
    ("GET", "/text", ""),
    ("GET", "/json", ""),
    ("GET", "/binary", ""),
    ("GET", "/stream", ""),
    ("GET", "/big", ""),
    ("POST", "/echo", r#"{"q": "echo me", "n": 1}"#),
];

/// Records [`REQUESTS`], then `extra`, in session `session` (the default
/// one for `None`) through the real binary into `<dir>/recordings`.
async fn record(dir: &Path, port: u16, session: Option<&str>, extra: &[(&str, &str)]) {
    let ouli = Ouli::start("record", dir, &config(port, ""));
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(session) = session {
        headers.push(("test-name", session));
    }
    // Then `extra`: (method, path), no body.
    let extra = extra.iter().map(|&(method, path)| (method, path, ""));
    for (method, path, body) in REQUESTS.into_iter().chain(extra) {
        let body = body.as_bytes().to_vec();
        let (status, _, _) =
            crate::support::client::send(&ouli.addr, method, path, &headers, body).await;
        assert_ne!(status, 502, "{method} {path}: the upstream answers");
    }
    ouli.stop().assert_success();
}

fn run(args: &[&str]) -> Output {
    Command::new(OULI).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `args`; asserts its exit code; its stdout.
fn run_ok(args: &[&str], code: i32) -> String {
    let output = run(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------
// show

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_text_json_binary_streamed_and_long_interactions_whole() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_upstream(Arc::new(AtomicUsize::new(0))).await;
    record(dir.path(), port, None, &[]).await;
    let file = dir.path().join("recordings/default.ouli");
    let file = path(&file);

    // `inspect` numbers from 1, and `show N` takes that number.
    let listing = run_ok(&["inspect", file], 0);
    let first = listing.lines().next().unwrap();
    assert!(
        first.trim_start().starts_with("1 ") && first.contains("/text"),
        "{listing}"
    );

    let text = run_ok(&["show", file, "1"], 0);
    assert!(text.contains("GET /text"), "{text}");
    assert!(text.contains("200 OK"), "{text}");
    assert!(text.contains("content-type: text/plain"), "{text}");
    assert!(text.contains("plain text body\nline two"), "{text}");
    assert_eq!(text.matches("=== interaction").count(), 1, "{text}");

    let json = run_ok(&["show", file, "2"], 0);
    // Pretty-printed: one member a line, indented.
    assert!(
        json.contains("\n  \"answer\": {\n    \"value\": 1,"),
        "{json}"
    );
    assert!(json.contains("x-flavour: vanilla"), "{json}");

    let binary = run_ok(&["show", file, "3"], 0);
    assert!(binary.contains("(binary, 512 bytes)"), "{binary}");
    assert!(
        binary.contains("00000000  00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f"),
        "{binary}"
    );
    assert!(binary.contains("00000040  40 41 42"), "{binary}");
    assert!(binary.contains("|@ABCDEFGHIJKLMNO|"), "{binary}");

    let stream = run_ok(&["show", file, "4"], 0);
    assert!(stream.contains("stream: 3 chunk(s)"), "{stream}");
    assert!(stream.contains("chunk 3 at +"), "{stream}");
    assert!(stream.contains("data: three"), "{stream}");

    // Cut at 4 KiB, saying how much; --full shows all.
    let big = run_ok(&["show", file, "5"], 0);
    let cut = BIG_BYTES - ouli::tools::SHOW_BODY_BYTES_MAX;
    assert!(
        big.contains(&format!("[{cut} of {BIG_BYTES} bytes cut")),
        "{}",
        &big[big.len().saturating_sub(300)..]
    );
    assert!(!big.contains(&"x".repeat(BIG_BYTES)));
    let whole = run_ok(&["show", "--full", file, "5"], 0);
    assert!(whole.contains(&"x".repeat(BIG_BYTES)));
    assert!(!whole.contains("bytes cut"));

    let post = run_ok(&["show", file, "6"], 0);
    assert!(post.contains("POST /echo"), "{post}");
    assert!(post.contains("\"q\": \"echo me\""), "{post}");

    // All of them without N.
    let all = run_ok(&["show", file], 0);
    assert_eq!(
        all.matches("=== interaction").count(),
        REQUESTS.len(),
        "{all}"
    );
    assert!(all.contains("=== interaction 6 of 6: POST /echo"), "{all}");

    // Past the end: the user's mistake (exit 2), saying how many there are.
    let past = run(&["show", file, "7"]);
    assert_eq!(past.status.code(), Some(2));
    assert!(
        stderr(&past).contains("no interaction 7: it holds 6"),
        "{}",
        stderr(&past)
    );
    assert_eq!(run(&["show", file, "0"]).status.code(), Some(2));
}

/// The `--json` document of interaction `n` of `file`.
fn show_json(file: &str, n: &str, full: bool) -> serde_json::Value {
    let mut args = vec!["show", "--json", file, n];
    if full {
        args.push("--full");
    }
    serde_json::from_str(&run_ok(&args, 0)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn show_json_gives_bodies_as_text_or_base64_and_chunks_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_upstream(Arc::new(AtomicUsize::new(0))).await;
    record(dir.path(), port, None, &[]).await;
    let file = dir.path().join("recordings/default.ouli");
    let file = path(&file);

    let text = show_json(file, "1", false);
    assert_eq!(text["ordinal"], 1);
    assert_eq!(text["request"]["method"], "GET");
    assert_eq!(text["request"]["target"], "/text");
    assert_eq!(text["response"]["status"], 200);
    assert_eq!(text["response"]["body"]["kind"], "text");
    assert_eq!(
        text["response"]["body"]["text"],
        "plain text body\nline two"
    );

    let json = show_json(file, "2", false);
    assert_eq!(json["response"]["body"]["kind"], "json");
    let parsed: serde_json::Value =
        serde_json::from_str(json["response"]["body"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["answer"]["value"], 1);

    let binary = show_json(file, "3", false);
    assert_eq!(binary["response"]["body"]["kind"], "binary");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(binary["response"]["body"]["base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, binary_body());

    let stream = show_json(file, "4", false);
    let chunks = stream["response"]["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), STREAM_CHUNKS.len(), "{stream}");
    let offsets: Vec<u64> = chunks
        .iter()
        .map(|c| c["offset_us"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    // Two gaps of 100 ms went by before the last chunk.
    assert!(offsets[2] >= 150_000, "{offsets:?}");
    for (chunk, sent) in chunks.iter().zip(STREAM_CHUNKS) {
        assert_eq!(chunk["body"]["text"], sent);
    }

    let big = show_json(file, "5", false);
    assert_eq!(
        big["response"]["body"]["cut_bytes"],
        BIG_BYTES - ouli::tools::SHOW_BODY_BYTES_MAX
    );
    let big = show_json(file, "5", true);
    assert_eq!(
        big["response"]["body"]["text"].as_str().unwrap().len(),
        BIG_BYTES
    );

    // Without N: one JSON document a line.
    let lines = run_ok(&["show", "--json", file], 0);
    let ordinals: Vec<u64> = lines
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["ordinal"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ordinals, [1, 2, 3, 4, 5, 6]);
}

/// A WebSocket upstream: text frames answered `{"got": <the frame's op>}`,
/// binary ones reversed.
async fn websocket_upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let answer = match message {
                        Message::Text(text) => {
                            let value: serde_json::Value =
                                serde_json::from_str(text.as_str()).unwrap();
                            Message::text(serde_json::json!({ "got": value["op"] }).to_string())
                        }
                        Message::Binary(data) => {
                            let mut reversed = data.to_vec();
                            reversed.reverse();
                            Message::binary(reversed)
                        }
                        _ => continue,
                    };
                    if socket.send(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_a_websocket_conversation_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    let port = websocket_upstream().await;
    let ouli = Ouli::start("record", dir.path(), &config(port, ""));
    let url = format!("ws://{}/live", ouli.addr);
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap()
    .unwrap();
    socket
        .send(Message::text(r#"{"op":"hello"}"#))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), r#"{"got":"hello"}"#);
    socket
        .send(Message::binary(vec![1u8, 2, 3, 0]))
        .await
        .unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply.into_data().to_vec(), vec![0u8, 3, 2, 1]);
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    ouli.stop().assert_success();
    let file = dir.path().join("recordings/default.ouli");
    let file = path(&file);

    let text = run_ok(&["show", file, "1"], 0);
    assert!(text.contains("(WebSocket)"), "{text}");
    assert!(text.contains("101 Switching Protocols"), "{text}");
    assert!(
        text.contains("frame 1 client -> server text (opcode 1) at +"),
        "{text}"
    );
    assert!(text.contains("\"op\": \"hello\""), "{text}");
    assert!(
        text.contains("frame 2 server -> client text (opcode 1)"),
        "{text}"
    );
    assert!(
        text.contains("frame 3 client -> server binary (opcode 2)"),
        "{text}"
    );
    assert!(text.contains("00000000  01 02 03 00"), "{text}");

    let json = show_json(file, "1", false);
    assert_eq!(json["websocket"], true);
    assert_eq!(json["response"]["status"], 101);
    let frames = json["frames"].as_array().unwrap();
    assert!(frames.len() >= 4, "{json}");
    assert_eq!(frames[0]["direction"], "client");
    assert_eq!(frames[0]["opcode"], 1);
    assert_eq!(frames[0]["payload"]["text"], r#"{"op":"hello"}"#);
    assert_eq!(frames[1]["direction"], "server");
    assert_eq!(frames[3]["opcode"], 2);
    assert_eq!(frames[3]["payload"]["kind"], "binary");
    assert_eq!(frames[3]["payload"]["base64"], "AAMCAQ==");
    let offsets: Vec<u64> = frames
        .iter()
        .map(|f| f["offset_us"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");

    // Through HAR and back: Chromium-style messages, the same conversation.
    let har_file = dir.path().join("ws.har");
    run_ok(&["export", "har", file, "-o", path(&har_file)], 0);
    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&har_file).unwrap()).unwrap();
    assert_valid_har(&har_validator(), &har);
    let messages = har["log"]["entries"][0]["_webSocketMessages"]
        .as_array()
        .unwrap();
    assert_eq!(messages.len(), frames.len());
    assert_eq!(messages[0]["type"], "send");
    assert_eq!(messages[0]["data"], r#"{"op":"hello"}"#);
    assert_eq!(messages[3]["type"], "receive");
    assert_eq!(messages[3]["data"], "AAMCAQ==");
    let imported = dir.path().join("imported");
    let config_file = dir.path().join("ouli.yaml");
    run_ok(
        &[
            "import",
            "har",
            path(&har_file),
            path(&imported),
            "--config",
            path(&config_file),
        ],
        0,
    );
    let again = show_json(path(&imported.join("default.ouli")), "1", false);
    assert_eq!(again["fingerprint"], json["fingerprint"]);
    assert_eq!(again["frames"], json["frames"]);
    run_ok(&["diff", file, path(&imported.join("default.ouli"))], 0);
}

// ---------------------------------------------------------------------------
// diff

/// Records [`REQUESTS`] into `<dir>/<name>/recordings` with the upstream in
/// `variant_now`; returns that recording dir.
async fn record_variant(
    dir: &Path,
    name: &str,
    port: u16,
    variant: &AtomicUsize,
    variant_now: usize,
) -> std::path::PathBuf {
    variant.store(variant_now, Ordering::SeqCst);
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    record(&run_dir, port, None, &[]).await;
    run_dir.join("recordings")
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_exits_0_when_equal_1_when_changed_and_2_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let variant = Arc::new(AtomicUsize::new(0));
    let port = http_upstream(variant.clone()).await;
    let a = record_variant(dir.path(), "a", port, &variant, 0).await;
    let b = record_variant(dir.path(), "b", port, &variant, 0).await;
    let c = record_variant(dir.path(), "c", port, &variant, CHANGED).await;

    // Recorded twice from the same upstream: equal (the `date` header,
    // volatile, is not compared).
    let same = run_ok(&["diff", path(&a), path(&b)], 0);
    assert!(same.contains("equal: 1 session(s) compared"), "{same}");
    let files = |d: &Path| d.join("default.ouli");
    run_ok(&["diff", path(&files(&a)), path(&files(&b))], 0);

    let changed = run_ok(&["diff", path(&a), path(&c)], 1);
    assert!(changed.contains("session default:"), "{changed}");
    assert!(changed.contains("changed  A#2 B#2 GET /json"), "{changed}");
    assert!(changed.contains("status: 200 -> 503"), "{changed}");
    assert!(
        changed.contains("header x-flavour: \"vanilla\" -> \"chocolate\""),
        "{changed}"
    );
    assert!(changed.contains("json $.answer.value: 1 -> 2"), "{changed}");
    assert!(
        !changed.contains("/text"),
        "unchanged interactions are not listed: {changed}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&run_ok(&["diff", "--json", path(&a), path(&c)], 1)).unwrap();
    let session = &report["sessions"][0];
    assert_eq!(session["session"], "default");
    let changes = &session["changed"][0]["changes"];
    let fields: Vec<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["status", "header x-flavour", "json $.answer.value"]
    );
    assert_eq!(changes[0]["a"], 200);
    assert_eq!(changes[0]["b"], 503);
    assert_eq!(changes[2]["a"], 1);
    assert_eq!(changes[2]["b"], 2);

    // Errors: 2, as diff(1).
    let missing = run(&["diff", path(&a), path(&dir.path().join("absent"))]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let mixed = run(&["diff", path(&a), path(&files(&b))]);
    assert_eq!(mixed.status.code(), Some(2), "{}", stderr(&mixed));
    assert!(
        stderr(&mixed).contains("not one of each"),
        "{}",
        stderr(&mixed)
    );
    let not_a_recording = dir.path().join("junk.ouli");
    std::fs::write(&not_a_recording, "not a recording").unwrap();
    let junk = run(&["diff", path(&files(&a)), path(&not_a_recording)]);
    assert_eq!(junk.status.code(), Some(2), "{}", stderr(&junk));
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_lists_sessions_and_interactions_on_one_side_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_upstream(Arc::new(AtomicUsize::new(0))).await;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    record(&a, port, Some("suite/first"), &[]).await;
    record(&a, port, Some("shared"), &[]).await;
    record(
        &b,
        port,
        Some("shared"),
        &[("GET", "/text"), ("DELETE", "/gone")],
    )
    .await;
    record(&b, port, Some("third"), &[]).await;

    let (a, b) = (a.join("recordings"), b.join("recordings"));
    let text = run_ok(&["diff", path(&a), path(&b)], 1);
    assert!(text.contains("only in A: session suite/first"), "{text}");
    assert!(text.contains("only in B: session third"), "{text}");
    // The second /text is the chain's next step: added, as is the DELETE.
    assert!(text.contains("added    B#7 GET /text"), "{text}");
    assert!(text.contains("added    B#8 DELETE /gone"), "{text}");
    let reverse = run_ok(&["diff", path(&b), path(&a)], 1);
    assert!(reverse.contains("removed  A#7 GET /text"), "{reverse}");

    let report: serde_json::Value =
        serde_json::from_str(&run_ok(&["diff", "--json", path(&a), path(&b)], 1)).unwrap();
    assert_eq!(report["only_in_a"], serde_json::json!(["suite/first"]));
    assert_eq!(report["only_in_b"], serde_json::json!(["third"]));
    let added = &report["sessions"][0]["added"];
    assert_eq!(added[0]["chain_position"], 1);
    assert_eq!(added[1]["method"], "DELETE");
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_with_a_config_ignores_what_its_match_rules_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let variant = Arc::new(AtomicUsize::new(0));
    let port = http_upstream(variant.clone()).await;
    let a = record_variant(dir.path(), "a", port, &variant, 0).await;
    let d = record_variant(dir.path(), "d", port, &variant, VOLATILE).await;

    let plain = run_ok(&["diff", path(&a), path(&d)], 1);
    assert!(
        plain.contains("json $.generated: \"earlier\" -> \"later\""),
        "{plain}"
    );

    let yaml = config(port, "matching:\n  ignore_json_paths: [$.generated]\n");
    let config_file = dir.path().join("ignore.yaml");
    std::fs::write(&config_file, yaml).unwrap();
    let ignored = run_ok(
        &["diff", "--config", path(&config_file), path(&a), path(&d)],
        0,
    );
    assert!(ignored.contains("equal"), "{ignored}");

    // The rules apply to identity too: a request differing only in an
    // ignored query parameter pairs with its counterpart.
    let q = dir.path().join("q");
    std::fs::create_dir_all(&q).unwrap();
    let ouli = Ouli::start("record", &q, &config(port, ""));
    for nonce in ["1", "2"] {
        let (target, session) = (format!("/text?nonce={nonce}"), format!("n{nonce}"));
        let headers = [("test-name", session.as_str())];
        crate::support::client::send(&ouli.addr, "GET", &target, &headers, Vec::new()).await;
    }
    ouli.stop().assert_success();
    let (n1, n2) = (q.join("recordings/n1.ouli"), q.join("recordings/n2.ouli"));
    let by_canonical = run_ok(&["diff", path(&n1), path(&n2)], 1);
    assert!(
        by_canonical.contains("removed  A#1 GET /text?nonce=1"),
        "{by_canonical}"
    );
    let yaml = config(port, "matching:\n  ignore_query_params: [nonce]\n");
    std::fs::write(&config_file, yaml).unwrap();
    run_ok(
        &["diff", "--config", path(&config_file), path(&n1), path(&n2)],
        0,
    );
}

// ---------------------------------------------------------------------------
// HAR

fn har_validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("data/har-1.2.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid_har(validator: &jsonschema::Validator, har: &serde_json::Value) {
    let errors: Vec<String> = validator
        .iter_errors(har)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not HAR 1.2: {errors:#?}");
}

/// (status, content-type, body) of each of [`REQUESTS`] sent to `addr` in
/// session `session`.
async fn answers(addr: &str, session: &str) -> Vec<(u16, Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    for (method, path, body) in REQUESTS {
        let headers = [("content-type", "application/json"), ("test-name", session)];
        let (status, headers, body) =
            crate::support::client::send(addr, method, path, &headers, body.as_bytes().to_vec())
                .await;
        let content_type = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        out.push((status, content_type, body));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_har_export_is_valid_har_1_2_and_its_import_replays_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let port = http_upstream(Arc::new(AtomicUsize::new(0))).await;
    let yaml = config(port, "");
    let recorder = Ouli::start("record", dir.path(), &yaml);
    let recorded = answers(&recorder.addr, "har/one").await;
    let recorded_two = answers(&recorder.addr, "two").await;
    recorder.stop().assert_success();
    let recordings = dir.path().join("recordings");

    let har_file = dir.path().join("out.har");
    let written = run_ok(
        &["export", "har", path(&recordings), "-o", path(&har_file)],
        0,
    );
    assert!(written.contains("12 entries"), "{written}");
    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&har_file).unwrap()).unwrap();
    let validator = har_validator();
    assert_valid_har(&validator, &har);
    // The validator can fail: an entry without its timings is not HAR.
    let mut broken = har.clone();
    broken["log"]["entries"][0]
        .as_object_mut()
        .unwrap()
        .remove("timings");
    assert!(!validator.is_valid(&broken));

    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    assert_eq!(entries.len(), 2 * REQUESTS.len());
    // Sessions in name order, each in recorded order.
    let sessions: Vec<&str> = entries
        .iter()
        .map(|e| e["_ouliSession"].as_str().unwrap())
        .collect();
    assert_eq!(sessions[..6], ["har/one"; 6]);
    assert_eq!(sessions[6..], ["two"; 6]);
    let urls: Vec<&str> = entries[..6]
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls[0], format!("http://127.0.0.1:{port}/text"));
    assert_eq!(urls[5], format!("http://127.0.0.1:{port}/echo"));
    let binary = &entries[2]["response"]["content"];
    assert_eq!(binary["encoding"], "base64");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(binary["text"].as_str().unwrap())
            .unwrap(),
        binary_body()
    );
    assert_eq!(
        entries[1]["response"]["content"]["mimeType"],
        "application/json"
    );
    assert_eq!(entries[5]["request"]["postData"]["text"], REQUESTS[5].2);
    // Timings from the recorded offsets: the stream's last chunk came two
    // gaps after its head.
    let stream = &entries[3];
    assert!(
        stream["timings"]["receive"].as_f64().unwrap() >= 150.0,
        "{stream}"
    );
    assert_eq!(
        stream["_ouliChunks"].as_array().unwrap().len(),
        STREAM_CHUNKS.len()
    );
    assert!(stream["time"].as_f64().unwrap() >= stream["timings"]["receive"].as_f64().unwrap());

    // Imported into a new dir with the same config, replayed by the real
    // binary with the upstream unused: the same answers.
    let imported_dir = dir.path().join("imported");
    let config_file = dir.path().join("ouli.yaml");
    let report = run_ok(
        &[
            "import",
            "har",
            path(&har_file),
            path(&imported_dir),
            "--config",
            path(&config_file),
        ],
        0,
    );
    assert!(
        report.contains("session har/one: 6 interaction(s)"),
        "{report}"
    );
    assert!(
        report.contains("2 session(s) written, 0 entry(ies) skipped"),
        "{report}"
    );
    let replay_dir = dir.path().join("replay");
    std::fs::create_dir_all(&replay_dir).unwrap();
    let replay = Start::new("replay", &replay_dir, &yaml)
        .recording_dir(&imported_dir)
        .spawn();
    assert_eq!(answers(&replay.addr, "har/one").await, recorded);
    assert_eq!(answers(&replay.addr, "two").await, recorded_two);
    replay.stop().assert_success();

    // The stream kept its chunks and offsets through the round trip.
    let original = show_json(path(&recordings.join("two.ouli")), "4", false);
    let again = show_json(path(&imported_dir.join("two.ouli")), "4", false);
    assert_eq!(original["response"]["chunks"], again["response"]["chunks"]);
    assert_eq!(original["fingerprint"], again["fingerprint"]);
    // And a diff of the two finds nothing.
    run_ok(&["diff", path(&recordings), path(&imported_dir)], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_har_without_sessions_goes_to_the_named_or_the_default_session() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(9, "");
    let config_file = dir.path().join("ouli.yaml");
    std::fs::write(&config_file, &yaml).unwrap();
    // As another tool writes it: no `_ouli` fields, a pseudo-header, a
    // base64 body.
    let har = serde_json::json!({"log": {"version": "1.2", "creator": {"name": "browser", "version": "1"},
    "entries": [{
        "startedDateTime": "2026-01-02T03:04:05.678Z", "time": 1.5,
        "request": {"method": "GET", "url": "http://127.0.0.1:9/hello?x=1", "httpVersion": "HTTP/2",
            "cookies": [], "headers": [{"name": ":authority", "value": "127.0.0.1:9"}],
            "queryString": [{"name": "x", "value": "1"}], "headersSize": -1, "bodySize": 0},
        "response": {"status": 202, "statusText": "Accepted", "httpVersion": "HTTP/2", "cookies": [],
            "headers": [{"name": "content-type", "value": "application/octet-stream"}],
            "content": {"size": 3, "mimeType": "application/octet-stream", "text": "AAEC", "encoding": "base64"},
            "redirectURL": "", "headersSize": -1, "bodySize": 3},
        "cache": {}, "timings": {"send": 0, "wait": 1, "receive": 0.5}
    }, {
        "startedDateTime": "2026-01-02T03:04:06Z", "time": 0,
        "request": {"method": "GET", "url": "not a url", "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": [], "queryString": [], "headersSize": -1, "bodySize": 0},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": [], "content": {"size": 0, "mimeType": ""}, "redirectURL": "",
            "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 0}
    }]}});
    // The first entry is HAR 1.2; the second's relative URL is not.
    let mut first_only = har.clone();
    first_only["log"]["entries"]
        .as_array_mut()
        .unwrap()
        .truncate(1);
    assert_valid_har(&har_validator(), &first_only);
    assert!(!har_validator().is_valid(&har));
    let har_file = dir.path().join("in.har");
    std::fs::write(&har_file, har.to_string()).unwrap();
    let dst = dir.path().join("recordings");
    let named = run_ok(
        &[
            "import",
            "har",
            path(&har_file),
            path(&dst),
            "--session",
            "from browser",
            "--config",
            path(&config_file),
        ],
        0,
    );
    assert!(
        named.contains("skipped entries[1]: request.url \"not a url\""),
        "{named}"
    );
    assert!(dst.join("from browser.ouli").is_file());
    run_ok(
        &[
            "import",
            "har",
            path(&har_file),
            path(&dst),
            "--config",
            path(&config_file),
        ],
        0,
    );
    assert!(dst.join("default.ouli").is_file());

    let replay = Start::new("replay", dir.path(), &yaml).spawn();
    for session in [None, Some("from browser")] {
        let headers: Vec<(&str, &str)> = session.map(|s| ("test-name", s)).into_iter().collect();
        let (status, _, body) =
            crate::support::client::send(&replay.addr, "GET", "/hello?x=1", &headers, Vec::new())
                .await;
        assert_eq!((status, body), (202, vec![0u8, 1, 2]), "{session:?}");
    }
    replay.stop().assert_success();

    // A file that is not HAR: exit 1, naming it; a bad --session: exit 2.
    std::fs::write(&har_file, "{\"log\": 3}").unwrap();
    let bad = run(&[
        "import",
        "har",
        path(&har_file),
        path(&dst),
        "--config",
        path(&config_file),
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("not a HAR file"), "{}", stderr(&bad));
    let bad_session = run(&[
        "import",
        "har",
        path(&har_file),
        path(&dst),
        "--session",
        "../up",
        "--config",
        path(&config_file),
    ]);
    assert_eq!(
        bad_session.status.code(),
        Some(2),
        "{}",
        stderr(&bad_session)
    );
}
