//! Requests refused at the protocol level, through raw sockets against the
//! real binary, in replay and in record mode (with a real hyper upstream):
//! every answer is ouli's JSON one (`x-ouli-error`, `error`/`fault`/
//! `message`), and the process keeps serving afterwards.

use crate::support::config_with_limits;
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::raw::{self, exchange};
use crate::support::upstream::{self, Options, full};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// The real binary in `mode`, its endpoint's upstream at `upstream_port`,
/// `limits` (YAML lines under `limits:`); its log is not kept.
fn start(dir: &Path, mode: &str, upstream_port: u16, limits: &str) -> Ouli {
    let yaml = config_with_limits(
        upstream_port,
        &format!("  shutdown_timeout_ms: 2000\n{limits}"),
    );
    Start::new(mode, dir, &yaml)
        .create_recording_dir()
        .log(Log::Null)
        .spawn()
}

/// A real hyper upstream on its own thread: answers `200 upstream <path>`,
/// or a bare 400 (no header, empty body) for `/bare-400`, after `delay`.
fn upstream(delay: Duration) -> u16 {
    // No date: a bare 400 then has no header at all, and its replay is byte
    // for byte hyper's own error head.
    let options = Options {
        date_header: false,
        ..Options::default()
    };
    upstream::start_on_thread(options, move |_, request: http::Request<_>| async move {
        tokio::time::sleep(delay).await;
        let path = request.uri().path().to_owned();
        let mut response = http::Response::new(full(format!("upstream {path}")));
        if path == "/bare-400" {
            response = http::Response::new(full(bytes::Bytes::new()));
            *response.status_mut() = http::StatusCode::BAD_REQUEST;
        }
        Ok::<_, std::convert::Infallible>(response)
    })
}

/// Replay (nothing recorded) and record (a real upstream): each test runs
/// its cases against both.
fn both_modes(limits: &str, mut cases: impl FnMut(&mut Ouli)) {
    let port = upstream(Duration::ZERO);
    for mode in ["replay", "record"] {
        let dir = tempfile::tempdir().unwrap();
        let mut ouli = start(dir.path(), mode, port, limits);
        cases(&mut ouli);
        ouli.assert_serving_raw();
    }
}

/// A request head of exactly `size` bytes (request line, headers, blank line).
fn head_of_size(size: usize) -> Vec<u8> {
    let start = b"GET /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-pad: ";
    let end = b"\r\n\r\n";
    let mut head = start.to_vec();
    head.resize(size - end.len(), b'a');
    head.extend_from_slice(end);
    assert_eq!(head.len(), size);
    head
}

#[test]
fn a_malformed_head_gets_a_json_400_414_or_505() {
    // Room for a target over hyper's 65,534 bytes within the head's bound.
    both_modes("  header_bytes_max: 131072\n", |ouli| {
        // The HTTP/2 preface is not among them: it is served as h2c (h2_tls.rs).
        let cases: [(&[u8], u16, &str); 4] = [
            (b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad-request"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
                400,
                "bad-request",
            ),
            (
                b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
                505,
                "http-version-not-supported",
            ),
            (
                b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
                505,
                "http-version-not-supported",
            ),
        ];
        for (request, status, kind) in cases {
            exchange(&ouli.addr, request, false).assert_ouli_error(status, kind);
            ouli.assert_serving_raw();
        }
        let mut long = b"GET /".to_vec();
        long.resize(70_000, b'a');
        long.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        exchange(&ouli.addr, &long, false).assert_ouli_error(414, "uri-too-long");
        // HTTP/0.9: a request line without a version (httparse reads the
        // line's end as part of the target).
        exchange(&ouli.addr, b"GET /\r\n\r\n", false).assert_ouli_error(400, "bad-request");
    });
}

#[test]
fn a_good_request_after_a_pipelined_one_is_still_served_and_a_bad_one_after_it_answered() {
    both_modes("", |ouli| {
        let mut stream = raw::connect(&ouli.addr, raw::READ_TIMEOUT);
        stream
            .write_all(b"GET /__ouli/health HTTP/1.1\r\nHost: x\r\n\r\nG@T / HTTP/1.1\r\n\r\n")
            .unwrap();
        // Both answers, then the end of the stream.
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        assert!(
            all.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&all)
        );
        let second = all
            .windows(9)
            .skip(1)
            .position(|w| w == b"HTTP/1.1 ")
            .unwrap()
            + 1;
        let mut rest = std::io::Cursor::new(all[second..].to_vec());
        raw::read_to_close(&mut rest).assert_ouli_error(400, "bad-request");
    });
}

#[test]
fn header_bytes_max_bounds_the_head_exactly() {
    for limit in [1024, 16_384] {
        both_modes(&format!("  header_bytes_max: {limit}\n"), |ouli| {
            let answer = exchange(&ouli.addr, &head_of_size(limit), false);
            assert_ne!(answer.status, 431, "{answer:?}");
            assert!(answer.status != 0, "{answer:?}");
            exchange(&ouli.addr, &head_of_size(limit + 1), false)
                .assert_ouli_error(431, "headers-too-large");
        });
    }
    // The reported case: a 114,610-byte head under the default 65,536.
    both_modes("", |ouli| {
        exchange(&ouli.addr, &head_of_size(114_610), false)
            .assert_ouli_error(431, "headers-too-large");
        let answer = exchange(&ouli.addr, &head_of_size(65_536), false);
        assert_ne!(answer.status, 431, "{answer:?}");
    });
}

#[test]
fn header_count_max_is_a_json_431() {
    both_modes("  header_count_max: 8\n", |ouli| {
        // Host and Connection, then x-h*: 8 headers pass, 9 do not.
        let request = |count: usize| {
            let mut head = "GET /counted HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_owned();
            for i in 0..count - 2 {
                head.push_str(&format!("x-h{i}: v\r\n"));
            }
            head.push_str("\r\n");
            head.into_bytes()
        };
        let answer = exchange(&ouli.addr, &request(8), false);
        assert!(answer.status != 431 && answer.status != 0, "{answer:?}");
        exchange(&ouli.addr, &request(9), false).assert_ouli_error(431, "headers-too-large");
    });
}

#[test]
fn a_head_not_received_in_time_is_a_json_408_and_an_idle_connection_just_closes() {
    both_modes("  header_read_timeout_ms: 300\n", |ouli| {
        exchange(&ouli.addr, b"GET / HTTP/1.1\r\nHo", false)
            .assert_ouli_error(408, "header-timeout");
        let idle = exchange(&ouli.addr, b"", false);
        assert_eq!((idle.status, idle.body.len()), (0, 0), "{idle:?}");
    });
}

#[test]
fn a_declared_body_over_the_limit_is_a_413_before_the_body_is_sent() {
    both_modes("  request_body_bytes_max: 1024\n", |ouli| {
        // Headers only: the body would follow the answer.
        exchange(
            &ouli.addr,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
            false,
        )
        .assert_ouli_error(413, "body-too-large");
        // Exactly the limit is taken.
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1024\r\n\r\n"
                .to_vec();
        request.resize(request.len() + 1024, b'x');
        let answer = exchange(&ouli.addr, &request, false);
        assert!(answer.status != 413 && answer.status != 0, "{answer:?}");
    });
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    // A slow upstream: the answer comes well after the client's shutdown.
    let port = upstream(Duration::from_millis(300));
    for mode in ["record", "replay"] {
        let dir = tempfile::tempdir().unwrap();
        let mut ouli = start(dir.path(), mode, port, "");
        let answer = exchange(&ouli.addr, b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n", true);
        match mode {
            "record" => {
                assert_eq!(answer.status, 200, "{answer:?}");
                assert_eq!(answer.body, b"upstream /half");
            }
            _ => answer.assert_ouli_error(404, "replay-miss"),
        }
        ouli.assert_serving_raw();
    }
}

#[test]
fn a_bad_websocket_handshake_is_a_json_400() {
    both_modes("", |ouli| {
        let upgrade = |key: &str, version: &str| {
            format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
            )
        };
        for (key, version) in [
            ("not-a-nonce", "13"),
            ("dGhlIHNhbXBsZSBub25jZXh4eA==", "13"),
            ("dGhlIHNhbXBsZSBub25jZQ==", "12"),
        ] {
            exchange(&ouli.addr, upgrade(key, version).as_bytes(), false)
                .assert_ouli_error(400, "bad-websocket-upgrade");
        }
    });
}

#[test]
fn a_control_path_refuses_a_session_name_that_is_not_utf8() {
    both_modes("", |ouli| {
        for action in ["reset", "end"] {
            let request = format!(
                "POST /__ouli/sessions/ab%FF%FE/{action} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            exchange(&ouli.addr, request.as_bytes(), false).assert_ouli_error(400, "bad-test-name");
        }
        let fine = exchange(
            &ouli.addr,
            b"POST /__ouli/sessions/caf%C3%A9/reset HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(fine.status, 200, "{fine:?}");
    });
}

#[test]
fn a_miss_report_echoes_a_bounded_part_of_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut ouli = start(dir.path(), "replay", 9, "  header_bytes_max: 1048576\n");
    let big_header = format!(
        "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-big: {}\r\n\r\n",
        "b".repeat(100_000)
    );
    let query: Vec<String> = (0..5000).map(|i| format!("p{i}=v{i}")).collect();
    let many_params = format!(
        "GET /many?{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        query.join("&")
    );
    for request in [big_header, many_params] {
        let answer = exchange(&ouli.addr, request.as_bytes(), false);
        answer.assert_ouli_error(404, "replay-miss");
        // The bound the report is held to (src/server/miss.rs).
        assert!(answer.body.len() <= 64 << 10, "{} bytes", answer.body.len());
        assert!(String::from_utf8_lossy(&answer.body).contains("cut"));
    }
    ouli.assert_serving_raw();
}

#[test]
fn a_recorded_answer_that_looks_like_hypers_own_passes_untouched() {
    let port = upstream(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let request = b"GET /bare-400 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    {
        let mut record = start(dir.path(), "record", port, "");
        let answer = exchange(&record.addr, request, false);
        assert_eq!((answer.status, answer.body.len()), (400, 0), "{answer:?}");
        assert_eq!(answer.header("x-ouli-error"), None, "{answer:?}");
        record.assert_serving_raw();
        record.stop().assert_success();
    }
    let mut replay = start(dir.path(), "replay", port, "");
    let answer = exchange(&replay.addr, request, false);
    assert!(
        answer.head.starts_with(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: "
        ),
        "the replayed answer is not the look-alike this test needs: {answer:?}"
    );
    assert_eq!((answer.status, answer.body.len()), (400, 0), "{answer:?}");
    assert_eq!(answer.header("x-ouli-error"), None, "{answer:?}");
    replay.assert_serving_raw();
}
