//! Trailers, end to end: a real hyper upstream answers chunked with
//! trailers (gRPC's `grpc-status` and `grpc-message`, and one carrying a
//! secret); the real binary records them, and replays them with the
//! upstream stopped, read by a hyper client that sees them as a trailers
//! `Frame`. The secret never reaches the file.

use crate::support::config;
use crate::support::files::{assert_nowhere_under, interactions};
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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
