//! The README's first command, run as written from the repository root:
//! `ouli replay --config recordings/ouli.yaml --recording-dir recordings`
//! serves the shipped sample, and the README's `curl` gets its answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};

const OULI: &str = env!("CARGO_BIN_EXE_ouli");

/// One HTTP/1.1 request the way `curl http://127.0.0.1:8080/<path>` sends it.
fn curl(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.11.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn the_readme_command_serves_the_shipped_sample() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let before = std::fs::read(root.join("recordings/default.ouli")).unwrap();
    let mut child = Command::new(OULI)
        .args([
            "replay",
            "--config",
            "recordings/ouli.yaml",
            "--recording-dir",
            "recordings",
        ])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        // Port 8080 taken by something else on this machine is the only
        // acceptable reason, and it must be said clearly.
        assert!(
            err.contains("8080") && err.to_lowercase().contains("in use"),
            "ouli did not start: {err}"
        );
        eprintln!("port 8080 in use here; the sample was not served: {err}");
        assert!(!child.wait().unwrap().success());
        return;
    }
    assert_eq!(
        line.trim(),
        "ouli listening endpoint=0 addr=127.0.0.1:8080 mode=replay"
    );
    let (status, body) = curl("127.0.0.1:8080", "/get");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"url\": \"https://httpbin.org/get\""),
        "{body}"
    );
    // `localhost` may resolve to ::1 first: ouli answers there too where the
    // machine has IPv6 loopback.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let (status, body) = curl("[::1]:8080", "/__ouli/health");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = curl("127.0.0.1:8080", "/json");
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl("127.0.0.1:8080", "/not-recorded");
    assert_eq!(status, 404);
    assert!(body.contains("\"error\": \"replay-miss\""), "{body}");
    // SIGTERM: graceful exit, and replay changed nothing on disk.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::read(root.join("recordings/default.ouli")).unwrap(),
        before
    );
}
