//! WebSocket record and replay in ouli's own format, end to end: a real
//! tokio-tungstenite upstream (each text frame answered with a JSON reply,
//! each binary frame with its bytes reversed), a real tokio-tungstenite
//! client, the real binary in between, recorded and then replayed with the
//! upstream gone.

use crate::support::config;
use crate::support::files::assert_nowhere_under;
use crate::support::ouli::{Log, Ouli, Start};
use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "sk-ws-s3cr3t-0042";

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The upstream: connection `n` (from 1) answers text with
/// `{"conn":n,"seq":k,"got":<the frame's "op">}` and binary reversed.
/// Returns its port and a handle that stops it.
async fn upstream() -> (u16, tokio::task::JoinHandle<()>) {
    upstream_over(None).await
}

/// [`upstream`], over TLS when an acceptor is given.
async fn upstream_over(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_conversation(stream, conn).await;
                        }
                    }
                    None => serve_conversation(stream, conn).await,
                }
            });
        }
    });
    (port, task)
}

/// The first subprotocol the client offers, if any, is chosen.
// The error type is tungstenite's callback signature, not this test's.
#[allow(clippy::result_large_err)]
fn choose_subprotocol(
    request: &tokio_tungstenite::tungstenite::handshake::server::Request,
    mut response: tokio_tungstenite::tungstenite::handshake::server::Response,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::server::Response,
    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
> {
    if let Some(offered) = request.headers().get("sec-websocket-protocol") {
        let first = offered.to_str().unwrap().split(',').next().unwrap().trim();
        let first = http::HeaderValue::from_str(first).unwrap();
        response
            .headers_mut()
            .insert("sec-websocket-protocol", first);
    }
    Ok(response)
}

async fn serve_conversation<S>(stream: S, conn: usize)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, choose_subprotocol).await
    else {
        return;
    };
    let mut seq = 0;
    while let Some(Ok(message)) = socket.next().await {
        let answer = match message {
            Message::Text(text) => {
                seq += 1;
                let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let reply = serde_json::json!({
                    "conn": conn, "seq": seq, "got": value["op"],
                });
                Message::text(reply.to_string())
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
}

/// `ouli <mode>` to the upstream on `upstream_port`, `limits` appended to
/// its config; its log (stderr) goes to `<dir>/ouli-<mode>.log`.
fn start(mode: &str, dir: &Path, upstream_port: u16, limits: &str) -> Ouli {
    start_with(mode, dir, &config(upstream_port, limits))
}

fn start_with(mode: &str, dir: &Path, yaml: &str) -> Ouli {
    Start::new(mode, dir, yaml)
        .env("TEST_SERVER_SECRETS", SECRET)
        .env_remove("SSL_CERT_FILE")
        .log(Log::Create(dir.join(format!("ouli-{mode}.log"))))
        .spawn()
}

/// SIGTERM: recordings are completed, and it exits 0.
fn stop(ouli: Ouli) {
    ouli.stop().assert_success();
}

async fn connect(addr: &str) -> Client {
    let mut request = format!("ws://{addr}/v1/live?model=m1")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("test-name", "live-chat".parse().unwrap());
    let connected = tokio_tungstenite::connect_async(request);
    safety_net(connected).await.unwrap().0
}

async fn safety_net<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .expect("within the safety net")
}

/// The next data message, or the close frame that came instead.
async fn next(socket: &mut Client) -> Message {
    loop {
        match safety_net(socket.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The first conversation: JSON text (with the secret) and binary frames;
/// `reordered` sends the same JSON with its keys in another order and
/// other spacing. Returns what the server sent.
async fn first_conversation(addr: &str, reordered: bool) -> Vec<Message> {
    let mut socket = connect(addr).await;
    let hello = if reordered {
        format!(r#"{{ "auth" : "{SECRET}", "n": 1, "password": "pw-7781", "op": "hello" }}"#)
    } else {
        format!(r#"{{"op":"hello","n":1,"auth":"{SECRET}","password":"pw-7781"}}"#)
    };
    let bye = if reordered {
        r#"{"n":2,  "op":"bye"}"#
    } else {
        r#"{"op":"bye","n":2}"#
    };
    let mut got = Vec::new();
    socket.send(Message::text(hello)).await.unwrap();
    got.push(next(&mut socket).await);
    socket
        .send(Message::binary(vec![1u8, 2, 3, 4, 5]))
        .await
        .unwrap();
    got.push(next(&mut socket).await);
    socket.send(Message::text(bye)).await.unwrap();
    got.push(next(&mut socket).await);
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = safety_net(socket.next()).await {}
    got
}

async fn second_conversation(addr: &str) -> Message {
    let mut socket = connect(addr).await;
    socket
        .send(Message::text(r#"{"op":"again"}"#))
        .await
        .unwrap();
    let got = next(&mut socket).await;
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = safety_net(socket.next()).await {}
    got
}

fn json(message: &Message) -> serde_json::Value {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Records both conversations of session `live-chat` through ouli; returns
/// what the clients got.
async fn record(dir: &Path) -> (u16, Vec<Message>, Message) {
    let (port, upstream) = upstream().await;
    let ouli = start("record", dir, port, "");
    let first = first_conversation(&ouli.addr, false).await;
    let second = second_conversation(&ouli.addr).await;
    stop(ouli);
    upstream.abort();
    (port, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_records_through_the_upstream_and_replays_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (port, first, second) = record(dir.path()).await;
    // Live, through ouli: the upstream's own answers.
    assert_eq!(
        json(&first[0]),
        serde_json::json!({"conn": 1, "seq": 1, "got": "hello"})
    );
    assert_eq!(first[1], Message::binary(vec![5u8, 4, 3, 2, 1]));
    assert_eq!(
        json(&first[2]),
        serde_json::json!({"conn": 1, "seq": 2, "got": "bye"})
    );
    assert_eq!(
        json(&second),
        serde_json::json!({"conn": 2, "seq": 1, "got": "again"})
    );

    // One interaction per conversation, frames with direction and opcode.
    let recording = dir.path().join("recordings/live-chat.ouli");
    let recording =
        ouli::recording::Recording::open(&recording, ouli::recording::ReadBackend::Mmap).unwrap();
    let interactions: Vec<_> = recording
        .iter()
        .map(|view| view.unwrap().to_interaction().unwrap())
        .collect();
    assert_eq!(interactions.len(), 2);
    let ouli::interaction::Exchange::WebSocket { response, frames } = &interactions[0].exchange
    else {
        panic!("not a WebSocket exchange: {:?}", interactions[0].exchange);
    };
    assert_eq!(response.status, 101);
    let shape: Vec<(u8, u8)> = frames
        .iter()
        .map(|f| (f.direction as u8, f.opcode))
        .take(7)
        .collect();
    assert_eq!(
        shape,
        [(0, 1), (1, 1), (0, 2), (1, 2), (0, 1), (1, 1), (0, 8)]
    );
    let redacted = String::from_utf8_lossy(&frames[0].payload).into_owned();
    assert!(redacted.contains("REDACTED"), "{redacted}");
    drop(recording);
    assert!(assert_nowhere_under(&dir.path().join("recordings"), SECRET.as_bytes()) > 0);
    // A sensitive JSON key's value, as in a body.
    assert_nowhere_under(&dir.path().join("recordings"), b"pw-7781");

    // Replay with the upstream gone, JSON keys reordered: the same answers,
    // and the second connection gets the second conversation.
    let ouli = start("replay", dir.path(), port, "");
    assert_eq!(first_conversation(&ouli.addr, true).await, first);
    assert_eq!(second_conversation(&ouli.addr).await, second);
    stop(ouli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_frame_that_differs_is_closed_with_1011_and_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (port, _, _) = record(dir.path()).await;
    let ouli = start("replay", dir.path(), port, "");
    let mut socket = connect(&ouli.addr).await;
    socket
        .send(Message::text(format!(
            r#"{{"op":"hello","n":7,"auth":"{SECRET}","password":"pw-7781"}}"#
        )))
        .await
        .unwrap();
    match next(&mut socket).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Error);
            assert!(frame.reason.as_str().contains("frame 0"), "{frame:?}");
        }
        other => panic!("expected a close 1011, got {other:?}"),
    }
    stop(ouli);
    let log = std::fs::read_to_string(dir.path().join("ouli-replay.log")).unwrap();
    assert!(
        log.contains("WebSocket frame 0") && log.contains("JSON differs at $.n"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
}

/// Records, under `response_body_bytes_max: 4096`, a small JSON exchange
/// then binary messages of `sizes` bytes, each answered, until ouli closes
/// with 1009; returns how many frames were recorded.
async fn frames_recorded_over_the_limit(sizes: &[usize]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = upstream().await;
    let limits = "limits:\n  response_body_bytes_max: 4096\n";
    let ouli = start("record", dir.path(), port, limits);
    let mut socket = connect(&ouli.addr).await;
    socket
        .send(Message::text(r#"{"op":"small"}"#))
        .await
        .unwrap();
    assert_eq!(json(&next(&mut socket).await)["got"], "small");
    let mut closed = false;
    for &size in sizes {
        socket.send(Message::binary(vec![7u8; size])).await.unwrap();
        match next(&mut socket).await {
            Message::Binary(_) => {}
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Size);
                closed = true;
                break;
            }
            other => panic!("expected an answer or a close 1009, got {other:?}"),
        }
    }
    assert!(closed, "no close 1009");
    stop(ouli);
    upstream.abort();
    let log = std::fs::read_to_string(dir.path().join("ouli-record.log")).unwrap();
    assert!(log.contains("closed with 1009"), "{log}");
    let path = dir.path().join("recordings/live-chat.ouli");
    let recording =
        ouli::recording::Recording::open(&path, ouli::recording::ReadBackend::Mmap).unwrap();
    let interaction = recording.iter().next().unwrap().unwrap().to_interaction();
    let ouli::interaction::Exchange::WebSocket { frames, .. } = interaction.unwrap().exchange
    else {
        panic!("not a WebSocket exchange");
    };
    frames.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_closed_with_1009_and_recorded_up_to_there() {
    // The small exchange (2 frames), then one message of 8 KiB.
    assert_eq!(frames_recorded_over_the_limit(&[8192]).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_over_the_limit_is_closed_with_1009_and_recorded_up_to_there() {
    // 46 bytes, then 1500 and its answer (3046), then 1500 more: over 4096.
    assert_eq!(frames_recorded_over_the_limit(&[1500, 1500, 1500]).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_the_upgrade_is_answered_and_recorded_as_is() {
    let dir = tempfile::tempdir().unwrap();
    // 403 to an upgrade it saw as one, 400 to a request stripped of it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let status =
                if head.contains("upgrade: websocket") && head.contains("sec-websocket-key") {
                    "403 Forbidden"
                } else {
                    "400 Bad Request"
                };
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let ouli = start("record", dir.path(), port, "");
    let mut request = format!("ws://{}/v1/live", ouli.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("test-name", "refused".parse().unwrap());
    match safety_net(tokio_tungstenite::connect_async(request)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert!(response.headers().get("x-ouli-error").is_none());
        }
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
    stop(ouli);
    let path = dir.path().join("recordings/refused.ouli");
    let recording =
        ouli::recording::Recording::open(&path, ouli::recording::ReadBackend::Mmap).unwrap();
    let interaction = recording.iter().next().unwrap().unwrap().to_interaction();
    let ouli::interaction::Exchange::Http(response) = interaction.unwrap().exchange else {
        panic!("not an HTTP exchange");
    };
    assert_eq!(response.status, 403);
}

/// A TLS acceptor for `localhost` whose certificate a private CA (rcgen)
/// signed, and that CA's PEM.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let server_config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(server_config)),
        ca.pem(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_upstream_records_over_tls_and_replays_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_pem) = tls_acceptor();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let (port, upstream) = upstream_over(Some(acceptor)).await;
    let yaml = format!(
        "ca_file: {}\nendpoints:\n  - target_host: localhost\n    target_type: https\n    target_port: {port}\n    source_port: 0\n",
        ca_file.display()
    );
    let ouli = start_with("record", dir.path(), &yaml);
    let first = first_conversation(&ouli.addr, false).await;
    stop(ouli);
    upstream.abort();
    assert_eq!(
        json(&first[0]),
        serde_json::json!({"conn": 1, "seq": 1, "got": "hello"})
    );
    assert_eq!(first[1], Message::binary(vec![5u8, 4, 3, 2, 1]));
    let ouli = start_with("replay", dir.path(), &yaml);
    assert_eq!(first_conversation(&ouli.addr, true).await, first);
    stop(ouli);
}

/// A record-missing session, recorded with the upstream up and played with
/// it gone; the client offers subprotocols, and the chosen one is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_missing_records_a_miss_then_replays_it_with_its_subprotocol() {
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = upstream().await;
    let talk = |addr: String| async move {
        let mut request = format!("ws://{addr}/v1/live")
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("test-name", "rm".parse().unwrap());
        headers.insert(
            "sec-websocket-protocol",
            "chat.v1, chat.v0".parse().unwrap(),
        );
        let (mut socket, response) = safety_net(tokio_tungstenite::connect_async(request))
            .await
            .unwrap();
        let protocol = response.headers().get("sec-websocket-protocol").cloned();
        socket
            .send(Message::text(r#"{"op":"once"}"#))
            .await
            .unwrap();
        let got = next(&mut socket).await;
        socket.close(None).await.unwrap();
        while let Some(Ok(_)) = safety_net(socket.next()).await {}
        (protocol, got)
    };
    let ouli = start("record-missing", dir.path(), port, "");
    let live = talk(ouli.addr.clone()).await;
    stop(ouli);
    upstream.abort();
    assert_eq!(
        live.0.as_ref().map(|v| v.to_str().unwrap()),
        Some("chat.v1")
    );
    assert_eq!(json(&live.1)["got"], "once");
    let ouli = start("record-missing", dir.path(), port, "");
    assert_eq!(talk(ouli.addr.clone()).await, live);
    stop(ouli);
}

/// A test that stops ouli with its WebSocket still open: the conversation
/// is closed with 1001 (going away) and recorded before ouli exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_an_open_conversation_with_1001_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, upstream) = upstream().await;
    let ouli = start("record", dir.path(), port, "");
    let mut socket = connect(&ouli.addr).await;
    socket
        .send(Message::text(r#"{"op":"left-open"}"#))
        .await
        .unwrap();
    assert_eq!(json(&next(&mut socket).await)["got"], "left-open");
    let closed = tokio::spawn(async move { next(&mut socket).await });
    tokio::task::spawn_blocking(move || stop(ouli))
        .await
        .unwrap();
    match closed.await.unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close 1001, got {other:?}"),
    }
    upstream.abort();
    let path = dir.path().join("recordings/live-chat.ouli");
    let recording =
        ouli::recording::Recording::open(&path, ouli::recording::ReadBackend::Mmap).unwrap();
    let interaction = recording.iter().next().unwrap().unwrap().to_interaction();
    let ouli::interaction::Exchange::WebSocket { frames, .. } = interaction.unwrap().exchange
    else {
        panic!("not a WebSocket exchange");
    };
    assert_eq!(frames.len(), 2, "{frames:?}");
}

/// `ignore_json_paths` applies to JSON frames as to bodies: a frame that
/// differs only there matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_json_path_takes_no_part_in_matching_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (port, first, _) = record(dir.path()).await;
    let matching = "matching:\n  ignore_json_paths: [\"$.n\"]\n";
    let ouli = start("replay", dir.path(), port, matching);
    let mut socket = connect(&ouli.addr).await;
    socket
        .send(Message::text(format!(
            r#"{{"op":"hello","n":7,"auth":"{SECRET}","password":"pw-7781"}}"#
        )))
        .await
        .unwrap();
    assert_eq!(next(&mut socket).await, first[0]);
    stop(ouli);
}
