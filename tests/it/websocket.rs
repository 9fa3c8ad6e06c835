//! WebSocket replay of a test-server conversation (`<name>.websocket.log`),
//! end to end with the real binary and a real WebSocket client: the script
//! is played in order, a client frame is compared after redaction, and a
//! frame that differs closes the connection with 1011, as test-server does.

use crate::support::ouli::Start;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn connect(
    addr: &str,
    test_name: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}/v1/live")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("test-name", test_name.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_server_websocket_log_replays_as_a_strict_script() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chat.websocket.log"),
        ">15 hello REDACTED\n<21 echo:hello REDACTED\n\n",
    )
    .unwrap();
    let before = std::fs::read(dir.path().join("chat.websocket.log")).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        "endpoints:\n  - target_host: api.example.test\n    target_type: https\n    target_port: 443\n    source_port: 0\n    health: /health\n",
    )
    .unwrap();
    let server = Start::with_config_file("replay", &config, dir.path())
        .env("TEST_SERVER_SECRETS", "s3cret")
        .spawn();
    let addr = server.addr.clone();

    // The recorded exchange, the secret redacted before comparison.
    let mut socket = connect(&addr, "chat").await;
    socket.send(Message::text("hello s3cret")).await.unwrap();
    let answer = socket.next().await.unwrap().unwrap();
    assert_eq!(answer.into_data().as_ref(), b"echo:hello REDACTED\n");
    // The script is over: the server closes normally.
    match socket.next().await {
        Some(Ok(Message::Close(frame))) => {
            assert!(frame.is_none_or(|f| f.code == CloseCode::Normal))
        }
        other => panic!("expected a close, got {other:?}"),
    }

    // A client frame that differs from the recording: closed with 1011.
    let mut socket = connect(&addr, "chat").await;
    socket.send(Message::text("something else")).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Error),
        other => panic!("expected a 1011 close, got {other:?}"),
    }

    // A session without a conversation: the upgrade is refused, clearly.
    let mut request = format!("ws://{addr}/v1/live")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("test-name", "nothing-here".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404);
            assert_eq!(response.headers()["x-ouli-error"], "replay-miss");
        }
        other => panic!("expected a 404, got {:?}", other.map(|_| ())),
    }

    server.stop().assert_success();
    assert_eq!(
        std::fs::read(dir.path().join("chat.websocket.log")).unwrap(),
        before
    );
}
