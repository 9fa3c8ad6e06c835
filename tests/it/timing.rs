//! Replay timing beyond the gaps between chunks, end to end through the
//! real binary: the time to first byte of an HTTP answer (recorded from a
//! real upstream that waits before its head), and the gaps between a
//! WebSocket conversation's frames (a real tokio-tungstenite upstream that
//! waits before it answers). Tolerances are generous: a loaded machine may
//! add time, never take it away.

use crate::support::config;
use crate::support::ouli::Ouli;
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ouli::recording::{ReadBackend, Recording};
use ouli::session_name::SessionName;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long the upstream waits before its response head, and before it
/// answers a WebSocket frame.
const UPSTREAM_WAIT: Duration = Duration::from_millis(400);
/// What a replay paced as recorded must wait at least (the wait, less a
/// margin for timer granularity).
const PACED_AT_LEAST: Duration = Duration::from_millis(300);
/// No answer in this long is a failure, not a hang.
const SAFETY_NET: Duration = Duration::from_secs(60);

async fn safety_net<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(SAFETY_NET, future)
        .await
        .expect("within the safety net")
}

/// An upstream whose head comes [`UPSTREAM_WAIT`] after the request.
async fn slow_head_upstream() -> upstream::Upstream {
    upstream::start(
        Options::default(),
        |_, _request: http::Request<hyper::body::Incoming>| async move {
            tokio::time::sleep(UPSTREAM_WAIT).await;
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                b"{\"late\":true}",
            ))))
        },
    )
    .await
}

/// `GET /slow` with `headers`: the time until the head came, and the body.
async fn timed_get(addr: &str, headers: &[(&str, &str)]) -> (Duration, Vec<u8>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder().uri(format!("http://{addr}/slow"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let sent = Instant::now();
    let response = safety_net(client.request(request)).await.unwrap();
    let head_after = sent.elapsed();
    assert_eq!(response.status(), 200);
    let body = safety_net(response.into_body().collect()).await.unwrap();
    (head_after, body.to_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_replay_sends_the_head_after_the_recorded_time_to_first_byte() {
    let upstream = slow_head_upstream().await;
    let port = upstream.port;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(port, "on_chain_exhausted: repeat-last\n");
    let server = Ouli::start("record", dir.path(), &yaml);
    let (live, body) = timed_get(&server.addr, &[]).await;
    assert!(live >= UPSTREAM_WAIT, "the upstream waited: {live:?}");
    assert_eq!(body, b"{\"late\":true}");
    server.stop().assert_success();
    upstream.stop().await;

    // The recording holds the time to first byte.
    let path = SessionName::default_session().recording_path(&dir.path().join("recordings"));
    let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
    let view = recording.iter().next().unwrap().unwrap();
    assert_eq!(view.format_version(), ouli::recording::FORMAT_VERSION);
    let ttfb_us = view.response_head_offset_us();
    assert!(
        ttfb_us >= UPSTREAM_WAIT.as_micros() as u64 && ttfb_us < 30_000_000,
        "recorded time to first byte {ttfb_us} µs"
    );

    let server = Ouli::start("replay", dir.path(), &yaml);
    let (recorded, body) = timed_get(&server.addr, &[("x-ouli-replay-timing", "recorded")]).await;
    assert_eq!(body, b"{\"late\":true}");
    assert!(
        recorded >= PACED_AT_LEAST,
        "recorded: head after {recorded:?}"
    );
    let (quarter, _) = timed_get(&server.addr, &[("x-ouli-replay-timing", "0.25")]).await;
    assert!(
        quarter >= PACED_AT_LEAST / 4,
        "0.25: head after {quarter:?}"
    );
    let (none, _) = timed_get(&server.addr, &[]).await;
    assert!(
        none < recorded && quarter < recorded,
        "none {none:?}, 0.25 {quarter:?}, recorded {recorded:?}"
    );
    server.stop().assert_success();
}

/// A WebSocket upstream that answers each text frame after [`UPSTREAM_WAIT`].
async fn slow_ws_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        tokio::time::sleep(UPSTREAM_WAIT).await;
                        let reply = format!("{{\"answer\":{text}}}");
                        if socket.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, task)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: &str, timing: Option<&str>) -> Socket {
    let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    // A conversation is a script, never repeated: each replay starts over.
    request
        .headers_mut()
        .insert("x-ouli-chain-reset", "1".parse().unwrap());
    if let Some(timing) = timing {
        request
            .headers_mut()
            .insert("x-ouli-replay-timing", timing.parse().unwrap());
    }
    safety_net(tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .0
}

/// Sends `{"q":1}` and waits for the answer: the time it took, and its text.
async fn ask(socket: &mut Socket) -> (Duration, String) {
    let sent = Instant::now();
    socket.send(Message::text("{\"q\":1}")).await.unwrap();
    loop {
        match safety_net(socket.next()).await {
            Some(Ok(Message::Text(text))) => return (sent.elapsed(), text.as_str().to_owned()),
            Some(Ok(_)) => continue,
            other => panic!("no answer: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_server_frames_keep_their_recorded_gaps_when_paced() {
    let (port, upstream) = slow_ws_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(port, "on_chain_exhausted: repeat-last\n");
    let server = Ouli::start("record", dir.path(), &yaml);
    let mut socket = connect(&server.addr, None).await;
    let (live, answer) = ask(&mut socket).await;
    assert!(live >= UPSTREAM_WAIT, "{live:?}");
    assert_eq!(answer, "{\"answer\":{\"q\":1}}");
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = safety_net(socket.next()).await {}
    server.stop().assert_success();
    upstream.abort();

    // The same conversation three times (the chain reset), paced three ways.
    let server = Ouli::start("replay", dir.path(), &yaml);
    let mut gaps = Vec::new();
    for timing in [Some("recorded"), None, Some("none")] {
        let mut socket = connect(&server.addr, timing).await;
        let (gap, answer) = ask(&mut socket).await;
        assert_eq!(answer, "{\"answer\":{\"q\":1}}", "{timing:?}");
        gaps.push(gap);
        let _ = socket.close(None).await;
    }
    assert!(gaps[0] >= PACED_AT_LEAST, "recorded: {gaps:?}");
    // The endpoint's default (none) and an explicit none: back to back.
    assert!(
        gaps[1] < PACED_AT_LEAST && gaps[2] < PACED_AT_LEAST,
        "{gaps:?}"
    );
    server.stop().assert_success();
}
