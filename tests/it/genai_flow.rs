//! A team testing Google's Gen AI SDK through ouli, end to end: a streamed
//! answer (`streamGenerateContent?alt=sse`), a resumable upload whose
//! `X-Goog-Upload-Url` ouli points back at itself, and a Live API WebSocket
//! conversation, all in one session. Recorded through the real binary from
//! a real upstream (hyper, its WebSocket endpoint on the same port), then
//! replayed with the upstream gone to a client that orders its headers and
//! JSON keys otherwise: every answer is the recorded one, paced as asked,
//! and the API key is in no file.

use crate::support::files::assert_nowhere_under;
use crate::support::ouli::{Ouli, Start};
use crate::support::upstream::{self, Options, Upstream, full};
use crate::support::{files, free_port};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The API key: sent in `x-goog-api-key` and `Authorization`, named as a
/// secret through `TEST_SERVER_SECRETS`.
const API_KEY: &str = "AIzaSy-genai-flow-s3cr3t-77";
const SESSION: &str = "genai/flow";
const STREAM_PATH: &str = "/v1beta/models/m:streamGenerateContent?alt=sse";
const UPLOAD_PATH: &str = "/upload/v1beta/files";
const LIVE_PATH: &str =
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
/// The streamed answer's events, as Gemini frames them.
const EVENTS: [&str; 3] = [
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once\"}],\"role\":\"model\"}}]}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" upon\"}],\"role\":\"model\"}}]}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" a time\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"totalTokenCount\":9}}\r\n\r\n",
];
/// The upstream's pause before each event after the first.
const EVENT_GAP: Duration = Duration::from_millis(200);
/// The recorded gap from first to last event is about 2 × 200 ms; replayed
/// `recorded` it must be at least this (generous: timers run late, not early).
const RECORDED_SPREAD_MIN: Duration = Duration::from_millis(250);
/// Replayed `none`, the events come back to back: well under the recorded
/// gap.
const UNPACED_SPREAD_MAX: Duration = Duration::from_millis(150);
/// How long a frame the script must not send yet is waited for.
const NOTHING_EARLY_WAIT: Duration = Duration::from_millis(300);
const UPLOAD_DATA: &[u8] = b"0123456789";
/// Safety net on every exchange; never reached by a working server.
const SAFETY_NET: Duration = Duration::from_secs(60);

type Body = BoxBody<Bytes, Infallible>;

/// `frames` sent one by one, each after its wait.
fn paced(frames: Vec<(Duration, Bytes)>) -> Body {
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
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

fn plain(status: u16, body: &'static str) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(full(body).boxed())
        .unwrap()
}

/// The Gen AI API as the test sees it: the live request must carry the real
/// key (ouli redacts what it stores, never what it forwards).
async fn answer(request: http::Request<hyper::body::Incoming>, port: u16) -> http::Response<Body> {
    let key = request.headers().get("x-goog-api-key").cloned();
    if key.as_ref().map(|k| k.as_bytes()) != Some(API_KEY.as_bytes()) {
        return plain(
            401,
            "{\"error\":{\"code\":401,\"status\":\"UNAUTHENTICATED\"}}",
        );
    }
    let target = request.uri().path_and_query().unwrap().as_str().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (method, command) = (request.method().clone(), header("x-goog-upload-command"));
    if request.headers().contains_key("sec-websocket-key") {
        return live_upgrade(request);
    }
    match (method.as_str(), target.as_str()) {
        ("POST", STREAM_PATH) => http::Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-content-type-options", "nosniff")
            .body(paced(
                EVENTS
                    .iter()
                    .enumerate()
                    .map(|(i, event)| {
                        let wait = if i == 0 { Duration::ZERO } else { EVENT_GAP };
                        (wait, Bytes::from_static(event.as_bytes()))
                    })
                    .collect(),
            ))
            .unwrap(),
        ("POST", UPLOAD_PATH)
            if header("x-goog-upload-protocol") == "resumable" && command == "start" =>
        {
            http::Response::builder()
                .header(
                    "x-goog-upload-url",
                    format!("http://127.0.0.1:{port}{UPLOAD_PATH}?upload_id=abc"),
                )
                .header("x-goog-upload-status", "active")
                .header("x-goog-upload-chunk-granularity", "8388608")
                .body(full("").boxed())
                .unwrap()
        }
        ("POST" | "PUT", "/upload/v1beta/files?upload_id=abc") if command == "upload, finalize" => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.as_ref(), UPLOAD_DATA, "the upload's data");
            http::Response::builder()
                .header("content-type", "application/json; charset=UTF-8")
                .header("x-goog-upload-status", "final")
                .body(
                    full(format!(
                        "{{\"file\":{{\"name\":\"files/abc\",\"sizeBytes\":\"{}\",\"state\":\"ACTIVE\"}}}}",
                        body.len()
                    ))
                    .boxed(),
                )
                .unwrap()
        }
        _ => plain(404, "{\"error\":{\"code\":404}}"),
    }
}

/// The Live API: `101`, then [`live_conversation`] on the upgraded
/// connection.
fn live_upgrade(mut request: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    let key = request.headers()["sec-websocket-key"].clone();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        live_conversation(socket).await;
    });
    http::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(full("").boxed())
        .unwrap()
}

/// The server frames answering one client frame of the Live API.
fn live_answers(frame: &serde_json::Value) -> Vec<String> {
    if frame.get("setup").is_some() {
        return vec![r#"{"setupComplete":{}}"#.to_owned()];
    }
    let text = frame["clientContent"]["turns"][0]["parts"][0]["text"]
        .as_str()
        .expect("a client turn");
    vec![
        format!(r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"text":"echo: "}}]}}}}}}"#),
        format!(r#"{{"serverContent":{{"modelTurn":{{"parts":[{{"text":"{text}"}}]}}}}}}"#),
        r#"{"serverContent":{"turnComplete":true}}"#.to_owned(),
    ]
}

async fn live_conversation<S>(mut socket: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        for answer in live_answers(&frame) {
            if socket.send(Message::text(answer)).await.is_err() {
                return;
            }
        }
    }
}

async fn gen_ai_upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = Options {
        upgrades: true,
        ..Options::default()
    };
    upstream::serve(listener, options, move |_, request| async move {
        Ok::<_, Infallible>(answer(request, port).await)
    })
}

/// ouli's endpoint to the upstream on `upstream`, on `source`, rewriting the
/// upload URL to its own address.
fn config(upstream: u16, source: u16) -> String {
    format!(
        "endpoints:
  - target_host: 127.0.0.1
    target_type: http
    target_port: {upstream}
    source_port: {source}
    health: /health
    response_header_replacements:
      - header: X-Goog-Upload-Url
        regex: '^http://127\\.0\\.0\\.1:\\d+/'
        replace: 'http://127.0.0.1:{source}/'
"
    )
}

fn start(mode: &str, dir: &Path, upstream: u16, source: u16) -> Ouli {
    Start::new(mode, dir, &config(upstream, source))
        .env("TEST_SERVER_SECRETS", API_KEY)
        .env_remove("OULI_SECRETS")
        .env_remove("OULI_SECRETS_FILE")
        .spawn()
}

/// How a client library sends its requests: the SDK's order, or a newer
/// release's (other header order and case, JSON keys in another order and
/// spacing).
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    Sdk,
    Newer,
}

impl Caller {
    /// The headers every request carries, the session's and the key's first
    /// or last.
    fn headers(self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("Test-Name", SESSION.to_owned()),
            ("x-goog-api-key", API_KEY.to_owned()),
            ("Authorization", format!("Bearer {API_KEY}")),
            (
                "x-goog-api-client",
                "google-genai-sdk/1.0.0 gl-python/3.12".to_owned(),
            ),
            ("User-Agent", "google-genai-sdk/1.0.0".to_owned()),
        ];
        if self == Caller::Newer {
            headers.reverse();
            for (name, value) in &mut headers {
                if *name == "User-Agent" {
                    *value = "google-genai-sdk/1.9.0".to_owned();
                }
            }
            headers[0].0 = "user-agent";
            headers[2].0 = "X-Goog-Api-Client";
        }
        headers
    }

    fn generate_body(self) -> &'static str {
        match self {
            Caller::Sdk => {
                r#"{"contents":[{"role":"user","parts":[{"text":"Tell me a story"}]}],"generationConfig":{"temperature":0.5,"candidateCount":1}}"#
            }
            Caller::Newer => {
                "{ \"generationConfig\": { \"candidateCount\": 1, \"temperature\": 0.5 },\n  \"contents\": [ { \"parts\": [ { \"text\": \"Tell me a story\" } ], \"role\": \"user\" } ] }"
            }
        }
    }

    fn upload_start_body(self) -> &'static str {
        match self {
            Caller::Sdk => r#"{"file":{"displayName":"notes","mimeType":"text/plain"}}"#,
            Caller::Newer => {
                "{\"file\": {\"mimeType\": \"text/plain\", \"displayName\": \"notes\"}}"
            }
        }
    }

    fn live_frames(self) -> [&'static str; 3] {
        match self {
            Caller::Sdk => [
                r#"{"setup":{"model":"models/m","generationConfig":{"responseModalities":["TEXT"]}}}"#,
                r#"{"clientContent":{"turns":[{"role":"user","parts":[{"text":"hello"}]}],"turnComplete":true}}"#,
                r#"{"clientContent":{"turns":[{"role":"user","parts":[{"text":"and again"}]}],"turnComplete":true}}"#,
            ],
            Caller::Newer => [
                "{\"setup\": {\"generationConfig\": {\"responseModalities\": [\"TEXT\"]}, \"model\": \"models/m\"}}",
                "{\"clientContent\": {\"turnComplete\": true, \"turns\": [{\"parts\": [{\"text\": \"hello\"}], \"role\": \"user\"}]}}",
                "{ \"clientContent\" : { \"turnComplete\" : true , \"turns\" : [ { \"parts\" : [ { \"text\" : \"and again\" } ] , \"role\" : \"user\" } ] } }",
            ],
        }
    }
}

/// One HTTP answer as the client got it: status, headers (lower case, sorted,
/// without `date`), body, and when each SSE event was complete.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    events_at: Vec<Instant>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// From the first event complete to the last.
    fn spread(&self) -> Duration {
        self.events_at[self.events_at.len() - 1] - self.events_at[0]
    }

    /// What must be equal between the recorded answer and a replayed one.
    fn seen(&self) -> (u16, &[(String, String)], &[u8]) {
        (self.status, &self.headers, &self.body)
    }
}

async fn call(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Answer {
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{target}"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(full(body)).unwrap();
    let response = tokio::time::timeout(SAFETY_NET, client.request(request))
        .await
        .expect("an answer within the safety net")
        .expect("an answer");
    let status = response.status().as_u16();
    let mut seen: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut events_at = Vec::new();
    while let Some(frame) = tokio::time::timeout(SAFETY_NET, body.frame())
        .await
        .expect("the body within the safety net")
    {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        bytes.extend_from_slice(&data);
        let now = Instant::now();
        let complete = memchr::memmem::find_iter(&bytes, b"\r\n\r\n").count();
        while events_at.len() < complete {
            events_at.push(now);
        }
    }
    Answer {
        status,
        headers: seen,
        body: bytes,
        events_at,
    }
}

/// The streamed answer, paced by `timing` (`None`: no header).
async fn generate(addr: &str, client: Caller, timing: Option<&str>) -> Answer {
    let mut headers = client.headers();
    headers.push(("Content-Type", "application/json".to_owned()));
    if let Some(timing) = timing {
        headers.push(("x-ouli-replay-timing", timing.to_owned()));
    }
    let answer = call(
        addr,
        "POST",
        STREAM_PATH,
        &headers,
        client.generate_body().into(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        answer.body,
        EVENTS.concat().as_bytes(),
        "every event, in order"
    );
    assert_eq!(answer.events_at.len(), EVENTS.len());
    answer
}

/// The resumable upload as the SDK makes it: start, then upload and
/// finalize at the URL the answer gave, wherever it points. Both answers.
async fn upload(addr: &str, client: Caller) -> (Answer, Answer) {
    let mut headers = client.headers();
    let start_headers = [
        ("X-Goog-Upload-Protocol", "resumable"),
        ("X-Goog-Upload-Command", "start"),
        ("X-Goog-Upload-Header-Content-Length", "10"),
        ("X-Goog-Upload-Header-Content-Type", "text/plain"),
        ("Content-Type", "application/json"),
    ];
    let mut extra: Vec<(&str, String)> = start_headers
        .iter()
        .map(|(n, v)| (*n, (*v).to_owned()))
        .collect();
    if client == Caller::Newer {
        extra.reverse();
        headers.splice(0..0, extra);
    } else {
        headers.extend(extra);
    }
    let started = call(
        addr,
        "POST",
        UPLOAD_PATH,
        &headers,
        client.upload_start_body().into(),
    )
    .await;
    assert_eq!(started.status, 200, "{started:?}");
    let url = started
        .header("x-goog-upload-url")
        .expect("an upload URL")
        .to_owned();
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, target) = rest.split_at(rest.find('/').unwrap());
    let mut headers = client.headers();
    headers.push(("X-Goog-Upload-Command", "upload, finalize".to_owned()));
    headers.push(("X-Goog-Upload-Offset", "0".to_owned()));
    if client == Caller::Newer {
        headers.reverse();
    }
    let finished = call(authority, "POST", target, &headers, UPLOAD_DATA.to_vec()).await;
    assert_eq!(finished.status, 200, "{finished:?}");
    assert_eq!(finished.header("x-goog-upload-status"), Some("final"));
    (started, finished)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next data frame (pings and pongs are the connection's, not the
/// conversation's).
async fn next_frame(socket: &mut Socket) -> Message {
    loop {
        match tokio::time::timeout(SAFETY_NET, socket.next())
            .await
            .expect("a frame within the safety net")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The Live API conversation: each client frame, then the server frames
/// answering it, nothing of them before it was sent. Every server frame, in
/// order.
async fn live(addr: &str, client: Caller) -> Vec<String> {
    let mut request = format!("ws://{addr}{LIVE_PATH}")
        .into_client_request()
        .unwrap();
    for (name, value) in client.headers() {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let connect = tokio_tungstenite::connect_async(request);
    let (mut socket, response) = tokio::time::timeout(SAFETY_NET, connect)
        .await
        .expect("a handshake within the safety net")
        .expect("the upgrade");
    assert_eq!(response.status(), 101);
    let mut got = Vec::new();
    for frame in client.live_frames() {
        let early = tokio::time::timeout(NOTHING_EARLY_WAIT, socket.next()).await;
        assert!(
            early.is_err(),
            "a frame came before the client frame it answers: {early:?}"
        );
        socket.send(Message::text(frame)).await.unwrap();
        let value: serde_json::Value = serde_json::from_str(frame).unwrap();
        for expected in live_answers(&value) {
            let Message::Text(text) = next_frame(&mut socket).await else {
                panic!("a text frame");
            };
            assert_eq!(text.as_str(), expected, "after {frame}");
            got.push(text.as_str().to_owned());
        }
    }
    socket.close(None).await.unwrap();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(SAFETY_NET, socket.next()).await {
        assert!(
            message.is_close(),
            "nothing after the last answer: {message:?}"
        );
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gen_ai_session_records_and_replays_offline_to_a_newer_client() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = gen_ai_upstream().await;
    let upstream_port = upstream.port;
    let source = free_port();
    let ouli_url = format!("http://127.0.0.1:{source}{UPLOAD_PATH}?upload_id=abc");

    // Record: the flow once, the story asked twice (the second replayed
    // unpaced).
    let record = start("record", dir.path(), upstream_port, source);
    let live_stream = generate(&record.addr, Caller::Sdk, None).await;
    assert!(
        live_stream.spread() >= RECORDED_SPREAD_MIN,
        "the upstream paces its events: {:?}",
        live_stream.spread()
    );
    let live_stream_again = generate(&record.addr, Caller::Sdk, None).await;
    let (live_started, live_finished) = upload(&record.addr, Caller::Sdk).await;
    assert_eq!(
        live_started.header("x-goog-upload-url"),
        Some(ouli_url.as_str()),
        "the live answer points the upload at ouli"
    );
    let live_frames = live(&record.addr, Caller::Sdk).await;
    record.stop().assert_success();
    upstream.stop().await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", upstream_port)).is_err(),
        "the upstream is gone"
    );
    let recording = dir.path().join("recordings/genai/flow.ouli");
    assert_eq!(
        files::interactions(&recording).len(),
        5,
        "2 streams, 2 upload steps, 1 conversation"
    );

    // Replay, offline, to the newer client.
    let replay = start("replay", dir.path(), upstream_port, source);
    let paced = generate(&replay.addr, Caller::Newer, Some("recorded")).await;
    assert_eq!(paced.seen(), live_stream.seen());
    assert!(
        paced.spread() >= RECORDED_SPREAD_MIN,
        "replayed at the recorded pace: {:?} from first to last event",
        paced.spread()
    );
    let unpaced = generate(&replay.addr, Caller::Newer, Some("none")).await;
    assert_eq!(unpaced.seen(), live_stream_again.seen());
    assert!(
        unpaced.spread() < UNPACED_SPREAD_MAX,
        "replayed back to back: {:?} from first to last event",
        unpaced.spread()
    );
    let (started, finished) = upload(&replay.addr, Caller::Newer).await;
    assert_eq!(started.header("x-goog-upload-url"), Some(ouli_url.as_str()));
    assert_eq!(started.seen(), live_started.seen());
    assert_eq!(finished.seen(), live_finished.seen());
    assert_eq!(live(&replay.addr, Caller::Newer).await, live_frames);
    replay.stop().assert_success();

    assert!(assert_nowhere_under(&dir.path().join("recordings"), API_KEY.as_bytes()) > 0);
}
