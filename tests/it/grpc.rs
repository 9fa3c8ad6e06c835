//! gRPC end to end: a real tonic server (a hand-written service, messages
//! derived with prost, no protoc) recorded through the real `ouli record`
//! with `target_protocol: h2c`, then replayed by `ouli replay` with the
//! server stopped, to an unmodified tonic client (a `Channel` to ouli's
//! port, h2c by prior knowledge): a unary call, a server-streaming call, a
//! call that fails with a status (trailers-only, and after messages), the
//! session taken from `test-name` metadata, and a deadline that changed.
//! A client-streaming call (several messages, then half-close) records and
//! replays; so does a bidirectional one whose client half-closes before it
//! reads. A bidirectional call whose client waits for an answer before it
//! half-closes cannot work (ouli collects a request stream whole): it ends
//! with `UNIMPLEMENTED` naming the limitation, not a hang.

use crate::support::config;
use crate::support::ouli::{Log, Ouli, Start};
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codec::ProstCodec;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// No answer in this long is a failure, not a hang.
const SAFETY_NET: Duration = Duration::from_secs(60);
/// The gap between two streamed messages: each leaves as its own frame.
const STREAM_GAP: Duration = Duration::from_millis(20);

const SERVICE: &str = "ouli.test.Greeter";
const GREET: &str = "/ouli.test.Greeter/Greet";
const COUNT: &str = "/ouli.test.Greeter/Count";
/// Client streaming: every name sent, greeted in one answer.
const COLLECT: &str = "/ouli.test.Greeter/Collect";
/// Bidirectional: each name answered as it arrives.
const CHAT: &str = "/ouli.test.Greeter/Chat";
/// The name the server has no greeting for: NOT_FOUND.
const NOBODY: &str = "nobody";
/// Its status message: spaces and a non-ASCII letter, which `grpc-message`
/// carries percent-encoded.
const NOT_FOUND_MESSAGE: &str = "no greeting for nobody, désolé";

#[derive(Clone, PartialEq, prost::Message)]
struct Hello {
    #[prost(string, tag = "1")]
    name: String,
    /// How many messages `Count` streams.
    #[prost(uint32, tag = "2")]
    count: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Greeting {
    #[prost(string, tag = "1")]
    text: String,
    /// The server's call counter when it answered: a second identical call
    /// gets another one, so a replayed answer shows which call it was.
    #[prost(uint32, tag = "2")]
    call: u32,
    #[prost(uint32, tag = "3")]
    seq: u32,
}

// --- the tonic server ---------------------------------------------------------

/// The service, written as tonic's generated code would be: routes by
/// path to `tonic::server::Grpc`.
#[derive(Clone, Default)]
struct Greeter {
    calls: Arc<AtomicU32>,
}

impl Greeter {
    fn next_call(&self) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;
type GreetingStream = Pin<Box<dyn futures_util::Stream<Item = Result<Greeting, Status>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let greeter = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Greeting, Hello>::default());
            Ok(match request.uri().path() {
                GREET => grpc.unary(GreetMethod(greeter), request).await,
                COUNT => grpc.server_streaming(CountMethod(greeter), request).await,
                COLLECT => grpc.client_streaming(CollectMethod(greeter), request).await,
                CHAT => grpc.streaming(ChatMethod(greeter), request).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// `Greet`: one greeting, or NOT_FOUND for [`NOBODY`].
struct GreetMethod(Greeter);

impl tonic::server::UnaryService<Hello> for GreetMethod {
    type Response = Greeting;
    type Future = BoxFuture<tonic::Response<Greeting>, Status>;

    fn call(&mut self, request: tonic::Request<Hello>) -> Self::Future {
        let call = self.0.next_call();
        let hello = request.into_inner();
        Box::pin(async move {
            if hello.name == NOBODY {
                return Err(Status::not_found(NOT_FOUND_MESSAGE));
            }
            Ok(tonic::Response::new(Greeting {
                text: format!("hello {}", hello.name),
                call,
                seq: 0,
            }))
        })
    }
}

/// `Count`: `count` greetings, [`STREAM_GAP`] apart; for [`NOBODY`], the
/// same then NOT_FOUND (the status in trailers, after messages).
struct CountMethod(Greeter);

impl tonic::server::ServerStreamingService<Hello> for CountMethod {
    type Response = Greeting;
    type ResponseStream = GreetingStream;
    type Future = BoxFuture<tonic::Response<GreetingStream>, Status>;

    fn call(&mut self, request: tonic::Request<Hello>) -> Self::Future {
        let call = self.0.next_call();
        let hello = request.into_inner();
        let stream = futures_util::stream::unfold(1, move |seq| {
            let name = hello.name.clone();
            let count = hello.count;
            async move {
                if seq > count + 1 || (seq == count + 1 && name != NOBODY) {
                    return None;
                }
                tokio::time::sleep(STREAM_GAP).await;
                let item = match seq > count {
                    true => Err(Status::not_found(NOT_FOUND_MESSAGE)),
                    false => Ok(Greeting {
                        text: format!("{name} {seq}/{count}"),
                        call,
                        seq,
                    }),
                };
                Some((item, seq + 1))
            }
        });
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(stream) as GreetingStream)) })
    }
}

/// `Collect`: reads every message to the client's half-close, then one
/// greeting naming them all, `seq` their count.
struct CollectMethod(Greeter);

impl tonic::server::ClientStreamingService<Hello> for CollectMethod {
    type Response = Greeting;
    type Future = BoxFuture<tonic::Response<Greeting>, Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Hello>>) -> Self::Future {
        let call = self.0.next_call();
        let mut messages = request.into_inner();
        Box::pin(async move {
            let mut names = Vec::new();
            while let Some(hello) = messages.message().await? {
                names.push(hello.name);
            }
            Ok(tonic::Response::new(Greeting {
                text: format!("hello {}", names.join(", ")),
                call,
                seq: names.len() as u32,
            }))
        })
    }
}

/// `Chat`: a greeting for each message as soon as it arrives.
struct ChatMethod(Greeter);

impl tonic::server::StreamingService<Hello> for ChatMethod {
    type Response = Greeting;
    type ResponseStream = GreetingStream;
    type Future = BoxFuture<tonic::Response<GreetingStream>, Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<Hello>>) -> Self::Future {
        let call = self.0.next_call();
        let messages = request.into_inner();
        let answers =
            futures_util::stream::unfold((messages, 0), move |(mut messages, seq)| async move {
                let hello = messages.message().await.transpose()?;
                let item = hello.map(|hello| Greeting {
                    text: format!("hi {}", hello.name),
                    call,
                    seq: seq + 1,
                });
                Some((item, (messages, seq + 1)))
            });
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(answers) as GreetingStream)) })
    }
}

/// A running tonic server (`tonic::transport::Server`) on 127.0.0.1.
struct Upstream {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(Greeter::default())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Upstream { port, stop, task }
}

impl Upstream {
    /// Stops it and checks that its port refuses connections: what replays
    /// after this cannot have come from it.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(SAFETY_NET, self.task)
            .await
            .expect("the server stops")
            .unwrap();
        let refused = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await;
        assert!(refused.is_err(), "the upstream still listens");
    }
}

// --- the tonic client ---------------------------------------------------------

/// An unmodified tonic client for the server at `addr` (ouli's).
async fn channel(addr: &str) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    tokio::time::timeout(SAFETY_NET, endpoint.connect())
        .await
        .expect("connected within the safety net")
        .unwrap()
}

/// A request in `session` (its `test-name` metadata).
fn request(session: &str, name: &str, count: u32) -> tonic::Request<Hello> {
    let mut request = tonic::Request::new(Hello {
        name: name.to_owned(),
        count,
    });
    request
        .metadata_mut()
        .insert("test-name", session.parse().unwrap());
    request
}

/// `Greet` over `channel`.
async fn greet(channel: &Channel, request: tonic::Request<Hello>) -> Result<Greeting, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(GREET);
    let codec = ProstCodec::<Hello, Greeting>::default();
    let call = grpc.unary(request, path, codec);
    tokio::time::timeout(SAFETY_NET, call)
        .await
        .expect("an answer within the safety net")
        .map(tonic::Response::into_inner)
}

/// `Count` over `channel`: the messages read, and the status that ended
/// the stream if it was not OK.
async fn count(
    channel: &Channel,
    request: tonic::Request<Hello>,
) -> (Vec<Greeting>, Option<Status>) {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(COUNT);
    let codec = ProstCodec::<Hello, Greeting>::default();
    let call = tokio::time::timeout(SAFETY_NET, grpc.server_streaming(request, path, codec));
    let mut stream = match call.await.expect("a head within the safety net") {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(SAFETY_NET, stream.message()).await;
        match next.expect("a message within the safety net") {
            Ok(Some(message)) => got.push(message),
            Ok(None) => return (got, None),
            Err(status) => return (got, Some(status)),
        }
    }
}

/// `names` as a request stream in `session`, [`STREAM_GAP`] apart (each
/// in its own DATA frame), then the half-close.
fn name_stream(
    session: &str,
    names: &[&str],
) -> tonic::Request<impl futures_util::Stream<Item = Hello> + Send + 'static> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let stream = futures_util::stream::unfold(names.into_iter(), |mut names| async move {
        let name = names.next()?;
        tokio::time::sleep(STREAM_GAP).await;
        Some((Hello { name, count: 0 }, names))
    });
    let mut request = tonic::Request::new(stream);
    request
        .metadata_mut()
        .insert("test-name", session.parse().unwrap());
    request
}

/// `Collect` over `channel`.
async fn collect(channel: &Channel, names: &[&str]) -> Result<Greeting, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(COLLECT);
    let codec = ProstCodec::<Hello, Greeting>::default();
    let call = grpc.client_streaming(name_stream("collect", names), path, codec);
    tokio::time::timeout(SAFETY_NET, call)
        .await
        .expect("an answer within the safety net")
        .map(tonic::Response::into_inner)
}

/// `Chat` over `channel`, the client half-closing after `names`: every
/// answer read.
async fn chat(channel: &Channel, names: &[&str]) -> Result<Vec<Greeting>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(CHAT);
    let codec = ProstCodec::<Hello, Greeting>::default();
    let call = grpc.streaming(name_stream("chat", names), path, codec);
    let mut answers = tokio::time::timeout(SAFETY_NET, call)
        .await
        .expect("a head within the safety net")?
        .into_inner();
    let mut got = Vec::new();
    while let Some(answer) = tokio::time::timeout(SAFETY_NET, answers.message())
        .await
        .expect("a message within the safety net")?
    {
        got.push(answer);
    }
    Ok(got)
}

// --- record, then replay -------------------------------------------------------

fn start(mode: &str, dir: &Path, port: u16) -> Ouli {
    Start::new(mode, dir, &config(port, "    target_protocol: h2c\n"))
        .log(Log::Create(dir.join(format!("ouli-{mode}.log"))))
        .spawn()
}

/// Runs `script` with a tonic client through `ouli record` to a real tonic
/// server, stops both, then runs it again through `ouli replay`: what the
/// client got live, and replayed.
async fn live_then_replayed<T, F, Fut>(dir: &Path, script: F) -> (T, T)
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = T>,
{
    let upstream = start_upstream().await;
    let port = upstream.port;
    let ouli = start("record", dir, port);
    let live = script(channel(&ouli.addr).await).await;
    ouli.stop().assert_success();
    upstream.stop().await;
    let ouli = start("replay", dir, port);
    let replayed = script(channel(&ouli.addr).await).await;
    ouli.stop().assert_success();
    (live, replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_replays_the_same_reply() {
    let dir = tempfile::tempdir().unwrap();
    let (live, replayed) = live_then_replayed(dir.path(), |channel| async move {
        greet(&channel, request("unary", "ada", 0)).await.unwrap()
    })
    .await;
    assert_eq!(live.text, "hello ada");
    assert_eq!(live.call, 1);
    assert_eq!(replayed, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_streaming_call_replays_its_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (live, replayed) = live_then_replayed(dir.path(), |channel| async move {
        count(&channel, request("streaming", "ada", 5)).await
    })
    .await;
    let (messages, status) = live;
    assert!(status.is_none(), "{status:?}");
    let seqs: Vec<u32> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(messages[4].text, "ada 5/5");
    let (replayed_messages, replayed_status) = replayed;
    assert!(replayed_status.is_none(), "{replayed_status:?}");
    assert_eq!(replayed_messages, messages);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_replays_its_status_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let (live, replayed) = live_then_replayed(dir.path(), |channel| async move {
        // Trailers-only (the status in the only HEADERS frame), and after
        // two messages (the status in the trailing HEADERS frame).
        let unary = greet(&channel, request("failing", NOBODY, 0)).await;
        let streamed = count(&channel, request("failing", NOBODY, 2)).await;
        (unary.map(|_| ()).unwrap_err(), streamed)
    })
    .await;
    for (what, (unary, (messages, status))) in [("live", live), ("replayed", replayed)] {
        assert_eq!(unary.code(), Code::NotFound, "{what}: {unary:?}");
        assert_eq!(unary.message(), NOT_FOUND_MESSAGE, "{what}");
        assert_eq!(messages.len(), 2, "{what}: {messages:?}");
        assert_eq!(messages[1].text, "nobody 2/2", "{what}");
        let status = status.unwrap_or_else(|| panic!("{what}: the stream ends in a status"));
        assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
        assert_eq!(status.message(), NOT_FOUND_MESSAGE, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_test_name_metadata_replay_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let port = upstream.port;
    let ouli = start("record", dir.path(), port);
    let client = channel(&ouli.addr).await;
    // The same request in two sessions: the server counts calls, so each
    // got its own answer.
    let alpha = greet(&client, request("alpha", "ada", 0)).await.unwrap();
    let beta = greet(&client, request("beta", "ada", 0)).await.unwrap();
    assert_eq!((alpha.call, beta.call), (1, 2));
    ouli.stop().assert_success();
    upstream.stop().await;
    let recordings = dir.path().join("recordings");
    assert!(recordings.join("alpha.ouli").is_file());
    assert!(recordings.join("beta.ouli").is_file());

    let ouli = start("replay", dir.path(), port);
    let client = channel(&ouli.addr).await;
    // In the other order: each session answers from its own recording.
    assert_eq!(
        greet(&client, request("beta", "ada", 0)).await.unwrap(),
        beta
    );
    assert_eq!(
        greet(&client, request("alpha", "ada", 0)).await.unwrap(),
        alpha
    );
    // A session that recorded nothing misses: the match is real. A miss
    // is the call's status, NOT_FOUND with the miss's summary (not an HTTP
    // 404 the client would report as a transport error).
    let missed = greet(&client, request("gamma", "ada", 0))
        .await
        .unwrap_err();
    assert_eq!(missed.code(), Code::NotFound, "{missed:?}");
    assert!(
        missed
            .message()
            .starts_with("ouli replay-miss: no recording for session gamma")
            && missed.message().ends_with(&format!("POST {GREET}")),
        "{missed:?}"
    );
    assert_eq!(
        missed.metadata().get("x-ouli-error").unwrap(),
        "replay-miss"
    );
    // Another message body in a recorded session misses too.
    let other = greet(&client, request("alpha", "bob", 0)).await;
    let other = other.unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");
    assert!(
        other
            .message()
            .contains("session alpha: no recorded request matches"),
        "{other:?}"
    );
    assert_eq!(other.metadata().get("x-ouli-error").unwrap(), "replay-miss");
    // The full reports are kept as for any miss.
    let (status, _, misses) =
        crate::support::client::send(&ouli.addr, "GET", "/__ouli/misses", &[], Vec::new()).await;
    assert_eq!(status, 200);
    let misses: serde_json::Value = serde_json::from_slice(&misses).unwrap();
    let sessions: Vec<&str> = misses["misses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["session"].as_str())
        .collect();
    assert!(
        sessions.contains(&"gamma") && sessions.contains(&"alpha"),
        "{misses}"
    );
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_another_deadline_replays_the_same_reply() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let port = upstream.port;
    let ouli = start("record", dir.path(), port);
    let mut live = request("deadline", "ada", 0);
    live.set_timeout(Duration::from_secs(30));
    let live = greet(&channel(&ouli.addr).await, live).await.unwrap();
    ouli.stop().assert_success();
    upstream.stop().await;

    // `grpc-timeout` is the time left: a client sets another, or the same
    // deadline leaves less of it; the answer does not depend on it.
    let ouli = start("replay", dir.path(), port);
    let mut replayed = request("deadline", "ada", 0);
    replayed.set_timeout(Duration::from_millis(12_345));
    let replayed = greet(&channel(&ouli.addr).await, replayed).await.unwrap();
    assert_eq!(replayed, live);
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_streaming_call_replays_the_reply_to_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (live, replayed) = live_then_replayed(dir.path(), |channel| async move {
        // Two calls that differ in their messages only: two interactions.
        let all = collect(&channel, &["ada", "bob", "cy"]).await.unwrap();
        let fewer = collect(&channel, &["ada", "bob"]).await.unwrap();
        (all, fewer)
    })
    .await;
    let (all, fewer) = &live;
    assert_eq!((all.text.as_str(), all.seq), ("hello ada, bob, cy", 3));
    assert_eq!((fewer.text.as_str(), fewer.call), ("hello ada, bob", 2));
    assert_eq!(replayed, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_that_half_closes_first_replays_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (live, replayed) = live_then_replayed(dir.path(), |channel| async move {
        chat(&channel, &["ada", "bob"]).await.unwrap()
    })
    .await;
    let texts: Vec<&str> = live.iter().map(|g| g.text.as_str()).collect();
    assert_eq!(texts, ["hi ada", "hi bob"]);
    assert_eq!(replayed, live);
}

/// Request streams idle this long end the wait in the test below.
const IDLE_TIMEOUT_MS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_call_waiting_for_an_answer_ends_unimplemented_not_hung() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let yaml = config(
        upstream.port,
        &format!(
            "    target_protocol: h2c\nlimits:\n  request_body_idle_timeout_ms: {IDLE_TIMEOUT_MS}\n"
        ),
    );
    for mode in ["record", "replay"] {
        let ouli = Start::new(mode, dir.path(), &yaml)
            .log(Log::Create(dir.path().join(format!("ouli-{mode}.log"))))
            .spawn();
        let channel = channel(&ouli.addr).await;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // One message, then the client waits for its answer before it
        // sends more: the stream stays open.
        let (more, waiting) = tokio::sync::mpsc::channel::<Hello>(1);
        more.send(Hello {
            name: "ada".into(),
            count: 0,
        })
        .await
        .unwrap();
        let messages = futures_util::stream::unfold(waiting, |mut waiting| async move {
            waiting.recv().await.map(|hello| (hello, waiting))
        });
        let mut request = tonic::Request::new(messages);
        request
            .metadata_mut()
            .insert("test-name", "ping-pong".parse().unwrap());
        let path = http::uri::PathAndQuery::from_static(CHAT);
        let codec = ProstCodec::<Hello, Greeting>::default();
        let started = std::time::Instant::now();
        let call = tokio::time::timeout(SAFETY_NET, grpc.streaming(request, path, codec));
        let status = call
            .await
            .expect("answered within the safety net")
            .map(|_| ())
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{mode}: {status:?}");
        assert!(
            status.message().contains("bidirectional")
                && status.message().contains("request_body_idle_timeout_ms"),
            "{mode}: {status:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(IDLE_TIMEOUT_MS));
        assert_eq!(
            status.metadata().get("x-ouli-error").unwrap(),
            "grpc-stream-not-half-closed"
        );
        drop(more);
        ouli.stop().assert_success();
    }
    upstream.stop().await;
}
