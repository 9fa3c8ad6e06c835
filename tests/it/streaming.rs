//! Streaming replay, end to end: answers recorded through the real binary
//! from a real upstream that streams (an SSE answer as 4 chunks 300 ms apart,
//! a chunked JSON answer, a multi-chunk body with a length, a `HEAD`), then
//! replayed with the upstream gone, read by a raw-socket client that sees
//! each chunk of the chunked framing and when it arrived.

use crate::support::config;
use crate::support::ouli::Ouli;
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::BodyExt;
use ouli::recording::{ReadBackend, Recording};
use ouli::session_name::SessionName;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SSE answer's events, as the upstream sends them.
const EVENTS: [&str; 4] = [
    "data: {\"n\":0}\n\n",
    "data: {\"n\":1}\n\n",
    "data: {\"n\":2}\n\n",
    "data: {\"n\":3}\n\n",
];
/// The upstream's wait between two events.
const EVENT_GAP: Duration = Duration::from_millis(300);
/// The `HEAD` answer's length (no body follows).
const HEAD_LENGTH: &str = "1234";
/// The multi-chunk body with a length: chunks and their size.
const BLOB_CHUNKS: usize = 3;
const BLOB_CHUNK_BYTES: usize = 4096;
/// Safety net for one exchange; never reached by a working server.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn blob() -> Vec<u8> {
    (0..BLOB_CHUNKS * BLOB_CHUNK_BYTES)
        .map(|i| (i * 7 % 251) as u8)
        .collect()
}

/// `frames` sent one by one, each after its wait.
fn paced(frames: Vec<(Duration, Bytes)>) -> UpstreamBody {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        for (wait, data) in frames {
            tokio::time::sleep(wait).await;
            if tx.send(Ok(hyper::body::Frame::data(data))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    http_body_util::StreamBody::new(stream).boxed()
}

fn answer(path: &str) -> http::Response<UpstreamBody> {
    let builder = http::Response::builder();
    match path {
        "/events" => builder
            .header("content-type", "text/event-stream")
            .body(paced(
                EVENTS
                    .iter()
                    .enumerate()
                    .map(|(i, event)| {
                        let wait = if i == 0 { Duration::ZERO } else { EVENT_GAP };
                        (wait, Bytes::from_static(event.as_bytes()))
                    })
                    .collect(),
            )),
        "/json-stream" => builder
            .header("content-type", "application/json")
            .body(paced(vec![
                (Duration::ZERO, Bytes::from_static(b"[{\"a\":1},")),
                (Duration::from_millis(50), Bytes::from_static(b"{\"b\":2}]")),
            ])),
        "/blob" => builder
            .header("content-length", blob().len().to_string())
            .header("content-type", "application/octet-stream")
            .body(paced(
                blob()
                    .chunks(BLOB_CHUNK_BYTES)
                    .map(|chunk| (Duration::from_millis(30), Bytes::copy_from_slice(chunk)))
                    .collect(),
            )),
        // Only ever asked with HEAD: the length of a body not sent.
        "/file" => builder
            .header("content-length", HEAD_LENGTH)
            .body(http_body_util::Empty::new().boxed()),
        _ => builder
            .status(404)
            .body(http_body_util::Empty::new().boxed()),
    }
    .unwrap()
}

/// A real hyper upstream answering [`answer`]; aborted to stop it.
async fn streaming_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let upstream = upstream::start(
        Options::default(),
        |_, request: http::Request<hyper::body::Incoming>| {
            let reply = answer(request.uri().path());
            async move { Ok::<_, Infallible>(reply) }
        },
    )
    .await;
    (upstream.port, upstream.into_task())
}

/// What a raw client received: the head (names lower-cased) and, for a
/// chunked answer, each chunk of the framing with its arrival time.
struct Received {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunks: Vec<(Instant, Vec<u8>)>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunk_texts(&self) -> Vec<String> {
        self.chunks
            .iter()
            .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
            .collect()
    }

    /// Times between consecutive chunks.
    fn gaps(&self) -> Vec<Duration> {
        self.chunks
            .windows(2)
            .map(|pair| pair[1].0.duration_since(pair[0].0))
            .collect()
    }
}

/// One request on its own connection (`Connection: close`), read by hand.
async fn exchange(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Received {
    tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        exchange_inner(addr, method, path, headers),
    )
    .await
    .expect("the answer ends within the safety net")
}

async fn exchange_inner(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Received {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(read_more(&mut stream, &mut buf).await, "head incomplete");
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let status = status.parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut received = Received {
        status,
        headers,
        body: Vec::new(),
        chunks: Vec::new(),
    };
    let mut rest = buf.split_off(head_end);
    if method == "HEAD" {
        return received;
    }
    if received.header("transfer-encoding") == Some("chunked") {
        read_chunks(&mut stream, &mut rest, &mut received).await;
    } else {
        let length: usize = received.header("content-length").unwrap().parse().unwrap();
        while rest.len() < length {
            assert!(read_more(&mut stream, &mut rest).await, "body cut short");
        }
        received.body = rest;
    }
    received
}

async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut block = [0u8; 8192];
    let n = stream.read(&mut block).await.unwrap();
    buf.extend_from_slice(&block[..n]);
    n > 0
}

/// Parses chunked framing as it arrives; each chunk is timed when its last
/// byte is in.
async fn read_chunks(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, out: &mut Received) {
    loop {
        let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
            assert!(read_more(stream, buf).await, "chunk size line cut short");
            continue;
        };
        let size_line = std::str::from_utf8(&buf[..line_end]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        let needed = line_end + 2 + size + 2;
        while buf.len() < needed {
            assert!(read_more(stream, buf).await, "chunk cut short");
        }
        if size == 0 {
            return;
        }
        let data = buf[line_end + 2..line_end + 2 + size].to_vec();
        out.body.extend_from_slice(&data);
        out.chunks.push((Instant::now(), data));
        buf.drain(..needed);
    }
}

/// Records every answer of [`answer`] through ouli, then stops the upstream:
/// returns the dir holding the recording and the upstream's port (part of
/// every request's identity).
async fn record_all() -> (tempfile::TempDir, u16) {
    let (port, upstream) = streaming_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Ouli::start("record", dir.path(), &config(port, ""));
    for (method, path) in [
        ("GET", "/events"),
        ("GET", "/json-stream"),
        ("GET", "/blob"),
        ("HEAD", "/file"),
    ] {
        let live = exchange(&server.addr, method, path, &[]).await;
        assert_eq!(live.status, 200, "{method} {path} recorded");
    }
    assert!(server.stop().status.success());
    upstream.abort();
    assert_recorded_in_chunks(dir.path());
    (dir, port)
}

/// The SSE answer and the blob were recorded as several chunks: their replay
/// exercises the multi-chunk path.
fn assert_recorded_in_chunks(dir: &Path) {
    let path = SessionName::default_session().recording_path(&dir.join("recordings"));
    let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
    let mut counts = Vec::new();
    for view in recording.iter() {
        counts.push(view.unwrap().response_chunks().count());
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert_eq!(counts[0], EVENTS.len(), "one chunk per event: {counts:?}");
    assert!(counts[2] > 1, "the blob came in several chunks: {counts:?}");
}

/// Replay of the recording in `dir` made from the upstream on `port`, with
/// `endpoint` lines added to the endpoint; a repeated request gets the last
/// recorded answer again.
fn replay(dir: &Path, port: u16, endpoint: &str) -> Ouli {
    let yaml = config(port, "on_chain_exhausted: repeat-last\n")
        .replace("source_port: 0\n", &format!("source_port: 0\n{endpoint}"));
    Ouli::start("replay", dir, &yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replays_one_chunk_per_event_in_order_by_default() {
    let (dir, port) = record_all().await;
    let server = replay(dir.path(), port, "");
    let fast = exchange(&server.addr, "GET", "/events", &[]).await;
    assert_eq!(fast.status, 200, "{}", String::from_utf8_lossy(&fast.body));
    assert_eq!(fast.header("content-type"), Some("text/event-stream"));
    assert_eq!(fast.header("content-length"), None);
    assert_eq!(fast.chunk_texts(), EVENTS, "event boundaries kept");
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_timing_keeps_the_gaps_and_a_header_factor_scales_them() {
    let (dir, port) = record_all().await;
    // `recorded` for the endpoint: the events keep their 300 ms gaps.
    let server = replay(dir.path(), port, "    replay_timing: recorded\n");
    let recorded = exchange(&server.addr, "GET", "/events", &[]).await;
    assert_eq!(recorded.chunk_texts(), EVENTS);
    let recorded_gaps = recorded.gaps();
    for gap in &recorded_gaps {
        assert!(
            *gap >= Duration::from_millis(200) && *gap < Duration::from_secs(3),
            "recorded gaps {recorded_gaps:?}"
        );
    }
    // A factor in the request's header wins over the endpoint: half the gaps.
    let half = exchange(
        &server.addr,
        "GET",
        "/events",
        &[("x-ouli-replay-timing", "0.5")],
    )
    .await;
    assert_eq!(half.chunk_texts(), EVENTS);
    let half_gaps = half.gaps();
    for gap in &half_gaps {
        assert!(*gap >= Duration::from_millis(100), "0.5 gaps {half_gaps:?}");
    }
    let total = |gaps: &[Duration]| gaps.iter().sum::<Duration>();
    assert!(
        total(&half_gaps) < total(&recorded_gaps),
        "0.5 {half_gaps:?} against recorded {recorded_gaps:?}"
    );
    // `none` in the header wins too.
    let none = exchange(
        &server.addr,
        "GET",
        "/events",
        &[("x-ouli-replay-timing", "none")],
    )
    .await;
    assert_eq!(none.chunk_texts(), EVENTS);
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replay_timing_header_is_a_400_before_anything_is_served() {
    let (dir, port) = record_all().await;
    let server = replay(dir.path(), port, "");
    for bad in ["-1", "NaN", "fast", "1000", "inf", "1e3"] {
        let refused = exchange(
            &server.addr,
            "GET",
            "/events",
            &[("x-ouli-replay-timing", bad)],
        )
        .await;
        assert_eq!(refused.status, 400, "{bad}");
        assert_eq!(refused.header("x-ouli-error"), Some("bad-replay-timing"));
        let json: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
        assert_eq!(json["error"], "bad-replay-timing", "{json}");
        assert_eq!(json["fault"], "client", "{json}");
    }
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_replays_chunked_without_a_length() {
    let (dir, port) = record_all().await;
    let server = replay(dir.path(), port, "");
    let json = exchange(&server.addr, "GET", "/json-stream", &[]).await;
    assert_eq!(json.header("transfer-encoding"), Some("chunked"));
    assert_eq!(json.header("content-length"), None);
    assert_eq!(json.chunk_texts(), ["[{\"a\":1},", "{\"b\":2}]"]);
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_chunk_body_with_a_length_replays_byte_exact_with_its_length() {
    let (dir, port) = record_all().await;
    let server = replay(dir.path(), port, "");
    let expected = blob();
    let length = expected.len().to_string();
    // Unpaced and paced: the same bytes, the same length.
    for timing in ["none", "0.1"] {
        let answer = exchange(
            &server.addr,
            "GET",
            "/blob",
            &[("x-ouli-replay-timing", timing)],
        )
        .await;
        assert_eq!(answer.header("content-length"), Some(length.as_str()));
        assert_eq!(answer.header("transfer-encoding"), None);
        assert!(answer.body == expected, "{timing}: byte-exact body");
    }
    assert!(server.stop().status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_keeps_its_recorded_length() {
    let (dir, port) = record_all().await;
    let server = replay(dir.path(), port, "");
    let head = exchange(&server.addr, "HEAD", "/file", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(HEAD_LENGTH));
    assert!(server.stop().status.success());
}

#[test]
fn replay_timing_is_read_from_yaml_and_toml_and_checked() {
    use ouli::config::{Config, Format, ReplayTiming};
    let path = Path::new("ouli.yaml");
    let yaml = "replay_timing: 0.25\nendpoints:\n  - target_host: a\n    target_port: 1\n  - target_host: b\n    target_port: 2\n    replay_timing: recorded\n";
    let (config, warnings) = Config::from_text(yaml, Format::Yaml, path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        matches!(config.endpoints[0].replay_timing, ReplayTiming::Scaled(s) if s.get() == 0.25)
    );
    assert_eq!(config.endpoints[1].replay_timing, ReplayTiming::Recorded);

    let toml = "replay_timing = \"recorded\"\n[[endpoints]]\ntarget_host = \"a\"\ntarget_port = 1\nreplay_timing = 2\n[[endpoints]]\ntarget_host = \"b\"\ntarget_port = 2\n";
    let (config, _) = Config::from_text(toml, Format::Toml, Path::new("ouli.toml")).unwrap();
    assert!(matches!(config.endpoints[0].replay_timing, ReplayTiming::Scaled(s) if s.get() == 2.0));
    assert_eq!(config.endpoints[1].replay_timing, ReplayTiming::Recorded);
    let (config, _) =
        Config::from_text("endpoints:\n  - target_host: a\n", Format::Yaml, path).unwrap();
    assert_eq!(config.endpoints[0].replay_timing, ReplayTiming::None);

    let error = Config::from_text(
        "endpoints:\n  - target_host: a\n    replay_timing: [1]\n",
        Format::Yaml,
        path,
    );
    assert!(error.is_err(), "a list is no timing");
    for bad in ["-1", "1000", ".nan", "fast"] {
        let yaml = format!("endpoints:\n  - target_host: a\n    replay_timing: {bad}\n");
        let error = Config::from_text(&yaml, Format::Yaml, path).unwrap_err();
        assert!(
            error.to_string().contains("endpoints[0].replay_timing"),
            "{bad}: {error}"
        );
    }
}
