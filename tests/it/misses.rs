//! `GET /__ouli/misses`, end to end: the real binary replays recordings made
//! from real upstreams (hyper, tokio-tungstenite); an HTTP miss and a
//! WebSocket client frame that differs both show up with their details, the
//! ring keeps only the newest `kept_max`, and a secret in a miss is
//! redacted there as everywhere.

use crate::support::client::send_text;
use crate::support::config;
use crate::support::ouli::Start;
use crate::support::upstream;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "miss-s3cr3t-5150";
/// What the ring holds at most (`MISSES_KEPT_MAX`).
const KEPT_MAX: usize = 100;
const SAFETY_NET: Duration = Duration::from_secs(60);

async fn misses(addr: &str) -> serde_json::Value {
    let (status, _, body) = send_text(addr, "GET", "/__ouli/misses", &[], "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A WebSocket upstream answering each text frame `{"op":X}` with
/// `{"done":X}`.
async fn ws_upstream() -> (u16, tokio::task::JoinHandle<()>) {
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
                        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                        let reply = serde_json::json!({ "done": value["op"] }).to_string();
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

async fn connect(addr: &str) -> Socket {
    let mut request = format!("ws://{addr}/v1/stream?x=1")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("test-name", "ws-session".parse().unwrap());
    tokio::time::timeout(SAFETY_NET, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap()
        .0
}

/// Sends `frame`; the next message that is not a ping or pong.
async fn exchange(socket: &mut Socket, frame: &str) -> Option<Message> {
    socket.send(Message::text(frame)).await.ok()?;
    loop {
        match tokio::time::timeout(SAFETY_NET, socket.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_miss_and_a_websocket_frame_mismatch_are_both_listed() {
    let http_port = upstream::fixed("{\"ok\":true}").await;
    let (ws_port, ws_task) = ws_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    // Two endpoints: HTTP first, WebSocket second.
    let yaml = format!(
        "{}  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {ws_port}\n    source_port: 0\n",
        config(http_port, "")
    );
    let start = |mode: &str| {
        Start::new(mode, dir.path(), &yaml)
            .endpoints(2)
            .env("TEST_SERVER_SECRETS", SECRET)
            .spawn()
    };
    let server = start("record");
    let headers = [("test-name", "http-session")];
    let (status, _, _) = send_text(&server.addr, "GET", "/items?page=1", &headers, "").await;
    assert_eq!(status, 200);
    let mut socket = connect(&server.addrs[1]).await;
    let reply = exchange(&mut socket, "{\"op\":\"start\"}").await;
    assert_eq!(reply, Some(Message::text("{\"done\":\"start\"}")));
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    server.stop().assert_success();
    ws_task.abort();

    let server = start("replay");
    assert_eq!(misses(&server.addr).await["misses"], serde_json::json!([]));
    let (status, _, _) = send_text(&server.addr, "GET", "/items?page=2", &headers, "").await;
    assert_eq!(status, 404, "a miss");
    let mut socket = connect(&server.addrs[1]).await;
    let reply = exchange(&mut socket, "{\"op\":\"stop\"}").await;
    assert!(
        matches!(&reply, Some(Message::Close(Some(frame))) if u16::from(frame.code) == 1011),
        "the mismatch closes with 1011: {reply:?}"
    );

    let listed = misses(&server.addr).await;
    assert_eq!(listed["kept_max"], KEPT_MAX, "{listed}");
    let misses = listed["misses"].as_array().unwrap();
    assert_eq!(misses.len(), 2, "{listed}");
    let http = &misses[0];
    assert_eq!(http["error"], "replay-miss", "{http}");
    assert_eq!(http["session"], "http-session", "{http}");
    assert_eq!(http["method"], "GET", "{http}");
    assert_eq!(http["target"], "/items?page=2", "{http}");
    let differences = http["differences"].as_array().unwrap();
    assert!(
        differences
            .iter()
            .any(|d| d["field"] == "query page" && d["expected"] == "1" && d["got"] == "2"),
        "{http}"
    );
    assert_eq!(
        http["closest_recorded"][0]["differences"],
        http["differences"]
    );
    let ws = &misses[1];
    assert_eq!(ws["error"], "websocket-frame-mismatch", "{ws}");
    assert_eq!(ws["session"], "ws-session", "{ws}");
    assert_eq!(ws["target"], "/v1/stream?x=1", "{ws}");
    assert_eq!(ws["frame_index"], 0, "{ws}");
    assert_eq!(ws["json_path"], "$.op", "{ws}");
    assert_eq!(ws["differences"][0]["field"], "json $.op", "{ws}");
    assert!(
        ws["differences"][0]["got"]
            .as_str()
            .unwrap()
            .contains("stop"),
        "{ws}"
    );
    server.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_kept_max_only_the_newest_misses_are_kept_and_secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(crate::support::free_port(), "");
    let server = Start::new("replay", dir.path(), &yaml)
        .create_recording_dir()
        .env("TEST_SERVER_SECRETS", SECRET)
        .spawn();
    let total = KEPT_MAX + 5;
    for i in 0..total {
        let path = format!("/n/{i}?key={SECRET}");
        let (status, _, body) = send_text(&server.addr, "GET", &path, &[], "").await;
        assert_eq!(status, 404, "{body}");
    }
    let listed = misses(&server.addr).await;
    let text = listed.to_string();
    assert!(!text.contains(SECRET), "a secret in /__ouli/misses");
    let misses = listed["misses"].as_array().unwrap();
    assert_eq!(misses.len(), KEPT_MAX);
    // Oldest first: the first five were dropped.
    assert_eq!(misses[0]["target"], "/n/5?key=REDACTED", "{}", misses[0]);
    assert_eq!(
        misses[KEPT_MAX - 1]["target"],
        format!("/n/{}?key=REDACTED", total - 1)
    );
    server.stop().assert_success();
}

/// The first shell word of `command` (single-quoted or plain), unquoted.
fn first_word(command: &str) -> String {
    match command.strip_prefix('\'') {
        Some(rest) => rest[..rest.find('\'').unwrap()].to_owned(),
        None => command.split(' ').next().unwrap().to_owned(),
    }
}

/// A miss's `record_command`, from a replay of an empty recording dir.
async fn record_command(start: Start) -> String {
    let server = start.create_recording_dir().spawn();
    let (status, _, body) = send_text(&server.addr, "GET", "/v1/x", &[], "").await;
    assert_eq!(status, 404, "{body}");
    server.stop().assert_success();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    report["record_command"].as_str().unwrap().to_owned()
}

/// The command a miss says would record the request runs this very binary
/// as it was invoked (an SDK runs it as `test-server`, a wheel or an npm
/// package from a folder that need not be on PATH), never a bare `ouli`:
/// a path is made absolute (and quoted when it needs it), a bare name found
/// on PATH becomes the executable's own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_command_names_the_binary_as_it_was_invoked() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sdk bin");
    std::fs::create_dir(&folder).unwrap();
    let link = folder.join("test-server");
    std::os::unix::fs::symlink(crate::support::ouli::OULI, &link).unwrap();
    let ouli = std::fs::canonicalize(crate::support::ouli::OULI).unwrap();
    let yaml = config(crate::support::free_port(), "");
    let start = || Start::new("replay", dir.path(), &yaml);

    // An absolute path, with a space: quoted as one shell word.
    let command = record_command(start().program(&link)).await;
    let quoted = format!("'{}' record-missing --config ", link.display());
    assert!(command.starts_with(&quoted), "{command}");
    assert!(
        command.ends_with(&format!(
            " --recording-dir {}",
            dir.path().join("recordings").display()
        )),
        "{command}"
    );

    // A relative path, as a shell in `dir` ran it: made absolute.
    let relative = start()
        .program(std::path::Path::new("./sdk bin/test-server"))
        .shell_prefix("")
        .current_dir(dir.path());
    let word = first_word(&record_command(relative).await);
    assert!(std::path::Path::new(&word).is_absolute(), "{word}");
    assert_eq!(std::fs::canonicalize(&word).unwrap(), ouli, "{word}");
    assert!(word.contains("sdk bin/test-server"), "{word}");

    // A bare name found on PATH: the executable itself.
    let path = format!(
        "{}:{}",
        folder.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bare = start()
        .program(std::path::Path::new("test-server"))
        .env("PATH", &path);
    let word = first_word(&record_command(bare).await);
    assert!(std::path::Path::new(&word).is_absolute(), "{word}");
    assert_eq!(std::fs::canonicalize(&word).unwrap(), ouli, "{word}");
}
