//! Trailers, end to end: a real hyper upstream answers chunked with
//! trailers (gRPC's `grpc-status` and `grpc-message`, and one carrying a
//! secret); the real binary records them, and replays them with the
//! upstream stopped, read by a hyper client that sees them as a trailers
//! `Frame`. The secret never reaches the file. A client sending request
//! trailers over h2c: forwarded to the upstream, recorded redacted, shown by
//! `ouli show`, and no part of the request's identity.

use crate::support::config;
use crate::support::files::{assert_nowhere_under, interactions};
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "trailer-s3cr3t-7731";
const CHUNKS: [&str; 2] = ["{\"part\":1}", "{\"part\":2}"];
/// No answer in this long is a failure, not a hang.
const SAFETY_NET: Duration = Duration::from_secs(60);

type UpstreamBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The upstream's answer: two data frames, then the trailers, announced in
/// its head (hyper writes only announced trailers, and only to a request
/// that sent `TE: trailers`).
fn answer() -> http::Response<UpstreamBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "all good".parse().unwrap());
    trailers.insert("x-token", SECRET.parse().unwrap());
    let frames: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = vec![
        Ok(hyper::body::Frame::data(Bytes::from_static(
            CHUNKS[0].as_bytes(),
        ))),
        Ok(hyper::body::Frame::data(Bytes::from_static(
            CHUNKS[1].as_bytes(),
        ))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    http::Response::builder()
        .header("content-type", "application/json")
        .header("trailer", "grpc-status, grpc-message, x-token")
        .body(body.boxed())
        .unwrap()
}

/// An upstream answering [`answer`]; keeps each request's `TE` header.
async fn trailer_upstream() -> (upstream::Upstream, Arc<Mutex<Vec<Option<String>>>>) {
    let seen_te = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_te.clone();
    let upstream = upstream::start(
        Options::default(),
        move |_, request: http::Request<hyper::body::Incoming>| {
            let te = request
                .headers()
                .get("te")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push(te);
            async move { Ok::<_, Infallible>(answer()) }
        },
    )
    .await;
    (upstream, seen_te)
}

/// What a hyper client got: status, body, and the trailers frame if any.
struct Got {
    status: u16,
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// `GET /v1/call` with `headers`, read frame by frame.
async fn call(addr: &str, headers: &[(&str, &str)]) -> Got {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .uri(format!("http://{addr}/v1/call"))
        .header("test-name", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(SAFETY_NET, client.request(request))
        .await
        .expect("an answer within the safety net")
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut got = Got {
        status,
        body: Vec::new(),
        trailers: None,
    };
    while let Some(frame) = tokio::time::timeout(SAFETY_NET, body.frame())
        .await
        .unwrap()
    {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(data) => got.body.extend_from_slice(&data),
            Err(frame) => got.trailers = frame.into_trailers().ok(),
        }
    }
    got
}

fn start(mode: &str, dir: &Path, port: u16) -> Ouli {
    Start::new(mode, dir, &config(port, ""))
        .env("TEST_SERVER_SECRETS", SECRET)
        .log(Log::Create(dir.join(format!("ouli-{mode}.log"))))
        .spawn()
}

fn assert_recorded_trailers(trailers: &http::HeaderMap, what: &str) {
    assert_eq!(trailers["grpc-status"], "0", "{what}");
    assert_eq!(trailers["grpc-message"], "all good", "{what}");
    assert_eq!(
        trailers["x-token"], "REDACTED",
        "{what}: the secret is redacted"
    );
}

/// Records one call: the client (which asked for trailers) gets them live,
/// the upstream was asked for them by ouli's own `TE: trailers`.
async fn record(dir: &Path) -> u16 {
    let (upstream, seen_te) = trailer_upstream().await;
    let port = upstream.port;
    let server = start("record", dir, port);
    let live = call(&server.addr, &[("te", "trailers")]).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.body, CHUNKS.concat().as_bytes());
    let trailers = live.trailers.expect("record mode passes the trailers on");
    assert_eq!(trailers["grpc-status"], "0");
    // A client that asks for none gets none; the upstream is asked anyway.
    let without = call(&server.addr, &[]).await;
    assert_eq!(without.body, CHUNKS.concat().as_bytes());
    assert!(without.trailers.is_none(), "no TE: trailers, no trailers");
    server.stop().assert_success();
    upstream.stop().await;
    let seen = seen_te.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some("trailers".to_owned()); 2],
        "TE sent upstream"
    );
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_are_recorded_redacted_and_replayed_after_the_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let port = record(dir.path()).await;
    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let interactions = interactions(&recordings.join("trailers.ouli"));
    assert_eq!(interactions.len(), 2);
    for interaction in &interactions {
        let ouli::interaction::Exchange::Http(response) = &interaction.exchange else {
            panic!("an HTTP interaction");
        };
        let names: Vec<&[u8]> = response.trailers.iter().map(|(n, _)| &n[..]).collect();
        assert_eq!(names, [&b"grpc-status"[..], b"grpc-message", b"x-token"]);
        assert_eq!(&response.trailers[2].1[..], b"REDACTED");
    }

    let server = start("replay", dir.path(), port);
    for timing in ["none", "recorded"] {
        let replayed = call(
            &server.addr,
            &[("te", "trailers"), ("x-ouli-replay-timing", timing)],
        )
        .await;
        assert_eq!(replayed.status, 200, "{timing}");
        assert_eq!(replayed.body, CHUNKS.concat().as_bytes(), "{timing}");
        let trailers = replayed.trailers.expect("replayed after the body");
        assert_recorded_trailers(&trailers, timing);
    }
    server.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_did_not_ask_for_trailers_gets_the_body_without_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = record(dir.path()).await;
    let server = start("replay", dir.path(), port);
    let replayed = call(&server.addr, &[]).await;
    assert_eq!(replayed.status, 200);
    assert_eq!(replayed.body, CHUNKS.concat().as_bytes());
    assert!(replayed.trailers.is_none());
    server.stop().assert_success();
}

// --- request trailers ----------------------------------------------------------

const REQUEST_BODY: &str = "{\"upload\":\"part\"}";
const CHECKSUM: &str = "sha256=c0ffee";

/// What the upstream saw of each request: its body and trailers.
type Seen = Arc<Mutex<Vec<(Vec<u8>, Option<http::HeaderMap>)>>>;

/// An HTTP/1.1 upstream that keeps each request's body and trailers and
/// answers `stored`.
async fn trailer_reading_upstream() -> (upstream::Upstream, Seen) {
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    let upstream = upstream::start(
        Options::default(),
        move |_, request: http::Request<hyper::body::Incoming>| {
            let keep = keep.clone();
            async move {
                let collected = request.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned();
                keep.lock()
                    .unwrap()
                    .push((collected.to_bytes().to_vec(), trailers));
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                    b"stored",
                ))))
            }
        },
    )
    .await;
    (upstream, seen)
}

/// `POST /v1/upload` over HTTP/2 in clear (prior knowledge): the body in
/// one data frame, then `trailers` in a trailing HEADERS frame. Status
/// and body of the answer.
async fn post_with_trailers(addr: &str, trailers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut map = http::HeaderMap::new();
    for (name, value) in trailers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let mut frames: Vec<Result<hyper::body::Frame<Bytes>, Infallible>> = vec![Ok(
        hyper::body::Frame::data(Bytes::from_static(REQUEST_BODY.as_bytes())),
    )];
    if !map.is_empty() {
        frames.push(Ok(hyper::body::Frame::trailers(map)));
    }
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let request = http::Request::post(format!("http://{addr}/v1/upload"))
        .header("test-name", "request-trailers")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = tokio::time::timeout(SAFETY_NET, sender.send_request(request))
        .await
        .expect("an answer within the safety net")
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

fn run_show(args: &[&str]) -> String {
    let output = std::process::Command::new(crate::support::ouli::OULI)
        .arg("show")
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "ouli show {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_are_forwarded_recorded_redacted_shown_and_not_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, seen) = trailer_reading_upstream().await;
    let port = upstream.port;
    let server = start("record", dir.path(), port);
    let sent = [("x-checksum", CHECKSUM), ("x-token", SECRET)];
    let (status, body) = post_with_trailers(&server.addr, &sent).await;
    assert_eq!((status, &body[..]), (200, &b"stored"[..]));
    server.stop().assert_success();
    upstream.stop().await;

    // Over HTTP/1.1 to the upstream: chunked, the trailers after the last
    // chunk, as the client sent them (the secret too: only the file is
    // redacted).
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (upstream_body, upstream_trailers) = &seen[0];
    assert_eq!(upstream_body, REQUEST_BODY.as_bytes());
    let upstream_trailers = upstream_trailers.as_ref().expect("trailers upstream");
    assert_eq!(upstream_trailers["x-checksum"], CHECKSUM);
    assert_eq!(upstream_trailers["x-token"], SECRET);

    let recordings = dir.path().join("recordings");
    assert!(assert_nowhere_under(&recordings, SECRET.as_bytes()) > 0);
    let file = recordings.join("request-trailers.ouli");
    let recorded = interactions(&file);
    assert_eq!(recorded.len(), 1);
    let names: Vec<(&[u8], &[u8])> = recorded[0]
        .request
        .trailers
        .iter()
        .map(|(n, v)| (&n[..], &v[..]))
        .collect();
    assert_eq!(
        names,
        [
            (&b"x-checksum"[..], CHECKSUM.as_bytes()),
            (b"x-token", b"REDACTED")
        ]
    );

    let file = file.to_str().unwrap();
    let text = run_show(&[file, "1"]);
    assert!(
        text.contains(&format!("trailer x-checksum: {CHECKSUM}")),
        "{text}"
    );
    assert!(text.contains("trailer x-token: REDACTED"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run_show(&["--json", file, "1"])).unwrap();
    let trailers = json["request"]["trailers"].to_string();
    assert!(trailers.contains(CHECKSUM), "{json}");

    // Replay: trailers take no part in the identity; the same request
    // with other trailers, or none, is the recorded one.
    let server = start("replay", dir.path(), port);
    for trailers in [&[("x-checksum", "sha256=other")][..], &[]] {
        let (status, body) = post_with_trailers(&server.addr, trailers).await;
        assert_eq!((status, &body[..]), (200, &b"stored"[..]), "{trailers:?}");
        // The same request again is the chain's next position: back to
        // its head for the next one.
        let reset = "/__ouli/sessions/request-trailers/reset";
        let (status, _, _) =
            crate::support::client::send(&server.addr, "POST", reset, &[], Vec::new()).await;
        assert_eq!(status, 200);
    }
    server.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_http1_request_trailers_reach_the_upstream_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, seen) = trailer_reading_upstream().await;
    let server = start("record", dir.path(), upstream.port);
    let request = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTest-Name: chunked-trailers\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Trailer: x-checksum\r\nConnection: close\r\n\r\n\
         {:x}\r\n{REQUEST_BODY}\r\n0\r\nx-checksum: {CHECKSUM}\r\n\r\n",
        REQUEST_BODY.len()
    );
    let addr = server.addr.clone();
    let answer = tokio::task::spawn_blocking(move || {
        crate::support::raw::exchange(&addr, request.as_bytes(), false)
    })
    .await
    .unwrap();
    assert_eq!(
        (answer.status, &answer.body[..]),
        (200, &b"stored"[..]),
        "{answer:?}"
    );
    server.stop().assert_success();
    upstream.stop().await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, REQUEST_BODY.as_bytes());
    let trailers = seen[0].1.as_ref().expect("trailers upstream");
    assert_eq!(trailers["x-checksum"], CHECKSUM);

    let file = dir.path().join("recordings/chunked-trailers.ouli");
    let recorded = interactions(&file);
    assert_eq!(
        recorded[0].request.trailers,
        [(
            Bytes::from_static(b"x-checksum"),
            Bytes::from_static(CHECKSUM.as_bytes())
        )]
    );
}
