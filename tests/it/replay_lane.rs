//! The replay lane (`src/server/listener/replay_lane.rs`) against hyper's
//! path, end to end: answers recorded through the real binary from a real
//! upstream, then replayed twice per request over raw sockets: once as the
//! lane takes it, once with an `x-ouli-replay-timing: none` header, which
//! changes nothing in the answer but sends the request through hyper and the
//! stages. Both must be the same bytes but the `date`.

use crate::support::config;
use crate::support::ouli::Ouli;
use crate::support::raw::{Answer, connect, read_answer};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::io::{BufReader, Write};
use std::time::Duration;

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The requests recorded and compared: (method, target).
const REQUESTS: &[(&str, &str)] = &[
    ("GET", "/v1/items/42"),
    ("GET", "/v1/stream"),
    ("GET", "/v1/empty"),
    ("GET", "/v1/missing?q=1"),
    ("HEAD", "/v1/items/42"),
    ("DELETE", "/v1/items/7"),
];

fn upstream_answer(method: &http::Method, path: &str) -> http::Response<UpstreamBody> {
    let builder = http::Response::builder();
    match path {
        "/v1/items/42" => builder
            .header("content-type", "application/json")
            .header("x-trace", "a")
            .header("set-cookie", "a=1")
            .header("x-trace", "b")
            .body(http_body_util::Full::from(r#"{"id":42,"name":"widget"}"#).boxed()),
        "/v1/stream" => {
            let chunks = ["data: 1\n\n", "data: 2\n\n", "data: 3\n\n"]
                .map(|c| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(c))));
            let stream = futures_util::stream::iter(chunks);
            builder
                .header("content-type", "text/event-stream")
                .body(http_body_util::StreamBody::new(stream).boxed())
        }
        "/v1/empty" => builder
            .status(204)
            .body(http_body_util::Empty::new().boxed()),
        _ if method == http::Method::DELETE => builder
            .status(202)
            .body(http_body_util::Full::from("gone").boxed()),
        _ => builder
            .status(404)
            .header("content-type", "text/plain")
            .body(http_body_util::Full::from("no such thing").boxed()),
    }
    .unwrap()
}

fn request_bytes(addr: &str, method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{extra}\r\n").into_bytes()
}

/// The head without its `date` line (the one field that may differ).
fn without_date(answer: &Answer) -> String {
    answer
        .head
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read(reader: &mut BufReader<std::net::TcpStream>, head_request: bool) -> Answer {
    if head_request {
        // No body follows a HEAD answer whatever its length says.
        let mut answer = read_answer_head(reader);
        answer.body.clear();
        return answer;
    }
    read_answer(reader)
}

fn read_answer_head(reader: &mut BufReader<std::net::TcpStream>) -> Answer {
    use std::io::BufRead;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line.trim_end().is_empty() {
            break;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        headers: Vec::new(),
        head,
        body: Vec::new(),
    }
}

/// The recordings, and the upstream's port (part of every fingerprint: the
/// replay's config names it too).
async fn recorded_dir() -> (tempfile::TempDir, u16) {
    let upstream = upstream::start(
        Options::default(),
        |_, request: http::Request<_>| async move {
            Ok::<_, Infallible>(upstream_answer(request.method(), request.uri().path()))
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let recorder = Ouli::start("record", dir.path(), &config(upstream.port, ""));
    let addr = recorder.addr.clone();
    tokio::task::spawn_blocking(move || {
        let mut stream = connect(&addr, Duration::from_secs(30));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        for (method, target) in REQUESTS {
            stream
                .write_all(&request_bytes(&addr, method, target, ""))
                .unwrap();
            let answer = read(&mut reader, *method == "HEAD");
            assert!(answer.status >= 200, "{answer:?}");
        }
    })
    .await
    .unwrap();
    recorder.stop().assert_success();
    let port = upstream.port;
    upstream.stop().await;
    (dir, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_answers_what_hypers_path_answers_byte_for_byte() {
    let (dir, port) = recorded_dir().await;
    let replay = Ouli::start(
        "replay",
        dir.path(),
        &config(port, "on_chain_exhausted: repeat-last\n"),
    );
    let addr = replay.addr.clone();
    tokio::task::spawn_blocking(move || {
        // One connection for each path, every request twice on it (the
        // second from the lane's memory and its cached head).
        let mut lane = connect(&addr, Duration::from_secs(30));
        let mut lane_reader = BufReader::new(lane.try_clone().unwrap());
        let mut hyper = connect(&addr, Duration::from_secs(30));
        let mut hyper_reader = BufReader::new(hyper.try_clone().unwrap());
        for round in 0..2 {
            for (method, target) in REQUESTS {
                let head_request = *method == "HEAD";
                lane.write_all(&request_bytes(&addr, method, target, ""))
                    .unwrap();
                let by_lane = read(&mut lane_reader, head_request);
                hyper
                    .write_all(&request_bytes(
                        &addr,
                        method,
                        target,
                        "X-Ouli-Replay-Timing: none\r\n",
                    ))
                    .unwrap();
                let by_hyper = read(&mut hyper_reader, head_request);
                assert_eq!(
                    without_date(&by_lane),
                    without_date(&by_hyper),
                    "round {round}, {method} {target}"
                );
                assert_eq!(
                    by_lane.body, by_hyper.body,
                    "round {round}, {method} {target}"
                );
                assert!(
                    by_lane.head.to_ascii_lowercase().contains("\ndate: "),
                    "{}",
                    by_lane.head
                );
            }
        }
        // What was recorded, as recorded.
        lane.write_all(&request_bytes(&addr, "GET", "/v1/stream", ""))
            .unwrap();
        let stream = read_answer(&mut lane_reader);
        assert_eq!(stream.body, b"data: 1\n\ndata: 2\n\ndata: 3\n\n");
        assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
        lane.write_all(&request_bytes(&addr, "GET", "/v1/items/42", ""))
            .unwrap();
        let item = read_answer(&mut lane_reader);
        assert_eq!(item.body, br#"{"id":42,"name":"widget"}"#);
        assert!(
            item.head.contains("x-trace: a\r\nx-trace: b\r\n"),
            "{}",
            item.head
        );
    })
    .await
    .unwrap();
    replay.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_a_miss_after_hits_and_a_silent_half_head() {
    let (dir, port) = recorded_dir().await;
    let replay = Ouli::start("replay", dir.path(), &config(port, ""));
    let addr = replay.addr.clone();
    tokio::task::spawn_blocking(move || {
        // Two requests in one write, then a miss on the same connection:
        // the lane answers the first two, the stages the miss.
        let mut stream = connect(&addr, Duration::from_secs(30));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut both = request_bytes(&addr, "GET", "/v1/items/42", "");
        both.extend(request_bytes(&addr, "DELETE", "/v1/items/7", ""));
        stream.write_all(&both).unwrap();
        assert_eq!(read_answer(&mut reader).status, 200);
        let deleted = read_answer(&mut reader);
        assert_eq!((deleted.status, &deleted.body[..]), (202, &b"gone"[..]));
        stream
            .write_all(&request_bytes(&addr, "GET", "/v1/never-recorded", ""))
            .unwrap();
        let missed = read_answer(&mut reader);
        assert_eq!(
            missed.header("x-ouli-error"),
            Some("replay-miss"),
            "{missed:?}"
        );
        assert!(missed.json()["message"].is_string(), "{missed:?}");
        // Exhausted (no repeat-last): the stages answer that too.
        stream
            .write_all(&request_bytes(&addr, "GET", "/v1/items/42", ""))
            .unwrap();
        let again = read_answer(&mut reader);
        assert_eq!(
            again.header("x-ouli-error"),
            Some("chain-exhausted"),
            "{again:?}"
        );
    })
    .await
    .unwrap();
    replay.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stops_halfway_is_408_after_the_header_timeout() {
    let (dir, port) = recorded_dir().await;
    let yaml = crate::support::config_with_limits(port, "  header_read_timeout_ms: 300\n");
    let replay = Ouli::start("replay", dir.path(), &yaml);
    let addr = replay.addr.clone();
    tokio::task::spawn_blocking(move || {
        // One answered request first: the lane has the connection.
        let mut stream = connect(&addr, Duration::from_secs(30));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream
            .write_all(&request_bytes(&addr, "GET", "/v1/items/42", ""))
            .unwrap();
        assert_eq!(read_answer(&mut reader).status, 200);
        stream
            .write_all(b"GET /v1/items/42 HTTP/1.1\r\nHo")
            .unwrap();
        let started = std::time::Instant::now();
        let answer = crate::support::raw::read_to_close(&mut reader);
        answer.assert_ouli_error(408, "header-timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await
    .unwrap();
    replay.stop().assert_success();
}
