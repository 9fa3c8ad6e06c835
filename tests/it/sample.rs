//! The README's first command, run as written from the repository root:
//! `ouli replay --config recordings/ouli.yaml --recording-dir recordings`
//! serves the shipped sample, and the README's `curl` gets its answer.

use crate::support::ouli::{Log, Start};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

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
    let started = Start::with_config_file(
        "replay",
        Path::new("recordings/ouli.yaml"),
        Path::new("recordings"),
    )
    .current_dir(root)
    .log(Log::Collect)
    .try_spawn();
    let server = match started {
        Ok(server) => server,
        Err(failed) => {
            // Port 8080 taken by something else on this machine is the only
            // acceptable reason, and it must be said clearly.
            let err = failed.log;
            assert!(
                failed.line.is_empty()
                    && err.contains("8080")
                    && err.to_lowercase().contains("in use"),
                "ouli did not start: {err}"
            );
            eprintln!("port 8080 in use here; the sample was not served: {err}");
            assert!(!failed.status.success());
            return;
        }
    };
    assert_eq!(server.addr, "127.0.0.1:8080", "the ready line's address");
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
    server.stop().assert_success();
    assert_eq!(
        std::fs::read(root.join("recordings/default.ouli")).unwrap(),
        before
    );
}
