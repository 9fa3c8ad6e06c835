//! The limits a client or an upstream can reach, each met by the real
//! binary: request bodies that stall (408), an upstream body that stalls
//! (cut, not recorded), more connections than `limits.connections_max` or
//! than the process has descriptors for (503, health still answered, no busy
//! loop), more sessions than `limits.sessions_max` (503, not recorded).

use crate::support::ouli::{Log, Ouli, Start};
use crate::support::raw::{self, Answer, is_closed, read_answer};
use crate::support::{config_with_limits as config, free_port, upstream};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
/// Safety net on every read: far longer than any limit these tests set.
const SAFETY: Duration = Duration::from_secs(15);

/// `ouli <mode>` with `yaml` as its config, its log in
/// `<dir>/ouli-<mode>.log`; with `nofile`, started under that
/// `RLIMIT_NOFILE` (the shell's `ulimit`).
fn start(mode: &str, dir: &Path, yaml: &str, nofile: Option<u32>) -> Ouli {
    let mut start = Start::new(mode, dir, yaml)
        .create_recording_dir()
        .log(Log::Create(dir.join(format!("ouli-{mode}.log"))));
    if let Some(limit) = nofile {
        start = start.shell_prefix(&format!("ulimit -n {limit} &&"));
    }
    start.spawn()
}

fn connect(server: &Ouli) -> TcpStream {
    raw::connect(&server.addr, SAFETY)
}

fn get(server: &Ouli, path: &str, extra_headers: &str) -> Answer {
    let mut stream = connect(server);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: ouli\r\n{extra_headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_answer(&mut BufReader::new(stream))
}

/// A real HTTP/1.1 upstream answering every request `200 upstream says hi`.
async fn hello_upstream() -> u16 {
    upstream::fixed("upstream says hi").await
}

const BODY_LIMITS: &str = "  request_body_timeout_ms: 60000\n  request_body_idle_timeout_ms: 300\n";

/// A body that goes silent (declared by length, or chunked and left open)
/// is answered 408 `body-timeout` after the idle limit, and the connection
/// closed, in every mode.
#[test]
fn a_request_body_that_goes_silent_is_408_and_the_connection_closes() {
    let heads = [
        "POST /upload HTTP/1.1\r\nHost: ouli\r\nContent-Length: 10\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: ouli\r\nContent-Length: 10\r\n\r\nabc",
        "POST /upload HTTP/1.1\r\nHost: ouli\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ];
    for mode in ["replay", "record", "record-missing", "passthrough"] {
        let dir = tempfile::tempdir().unwrap();
        let server = start(mode, dir.path(), &config(free_port(), BODY_LIMITS), None);
        for head in heads {
            let mut stream = connect(&server);
            stream.write_all(head.as_bytes()).unwrap();
            let mut reader = BufReader::new(stream);
            let answer = read_answer(&mut reader);
            answer.assert_error(408, "body-timeout");
            let message = answer.json()["message"].as_str().unwrap().to_owned();
            assert!(
                message.contains("limits.request_body_idle_timeout_ms = 300 ms"),
                "{mode}: {message}"
            );
            assert!(
                is_closed(&mut reader),
                "{mode} {head:?}: connection left open"
            );
        }
        assert!(server.stop().status.success());
    }
}

/// A body that trickles in (a byte every 100 ms, under the idle limit) is
/// cut by the whole-body deadline.
#[test]
fn a_request_body_that_trickles_is_408_at_the_whole_body_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "  request_body_timeout_ms: 500\n  request_body_idle_timeout_ms: 5000\n";
    let server = start("replay", dir.path(), &config(free_port(), limits), None);
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: ouli\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        let until = Instant::now() + SAFETY;
        while Instant::now() < until && writer.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader);
    answer.assert_error(408, "body-timeout");
    let message = answer.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("limits.request_body_timeout_ms = 500 ms"),
        "{message}"
    );
    assert!(is_closed(&mut reader), "connection left open");
    drop(reader);
    trickle.join().unwrap();
    assert!(server.stop().status.success());
}

/// Kernel clock ticks of CPU (user + system) the process has used so far.
#[cfg(target_os = "linux")]
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_second() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Stalled bodies take every descriptor the process may have (64): the
/// accept loop backs off instead of spinning (CPU time stays low, the log
/// stays small), a request meanwhile is answered 503
/// `too-many-connections` through the spare descriptor, and so is a health
/// probe, with its usual 200.
#[test]
#[cfg(target_os = "linux")]
fn at_the_descriptor_limit_accept_backs_off_and_health_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    // The bodies must stay stalled for the whole test.
    let limits = "  request_body_timeout_ms: 600000\n  request_body_idle_timeout_ms: 600000\n";
    let server = start("replay", dir.path(), &config(free_port(), limits), Some(64));
    let mut stalled = Vec::new();
    for _ in 0..80 {
        let mut stream = connect(&server);
        stream
            .write_all(b"POST /upload HTTP/1.1\r\nHost: ouli\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        stalled.push(stream);
    }
    // Queued behind them: by its turn the descriptors are gone.
    let answer = get(&server, "/anything", "");
    answer.assert_error(503, "too-many-connections");
    assert!(
        answer.json()["message"]
            .as_str()
            .unwrap()
            .contains("out of file descriptors"),
        "{answer:?}"
    );
    // Connections that say nothing wait in the backlog: each takes the
    // spare descriptor in turn, while the other accepts fail and back off.
    let silent: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // A safety bound, not a timing: the busy loop this guards against used
    // a whole CPU second per second.
    assert!(
        used < clock_ticks_per_second() / 2,
        "{used} ticks of CPU in 2 s at the descriptor limit"
    );
    let health = get(&server, "/__ouli/health", "");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
    let log_bytes = std::fs::metadata(server.log_path().unwrap()).unwrap().len();
    assert!(log_bytes < 256 << 10, "log grew to {log_bytes} bytes");
    assert!(server.log().contains("accept failed"), "{}", server.log());
    drop(silent);
    // Once the stalled ones go, descriptors free and requests are served.
    drop(stalled);
    let until = Instant::now() + SAFETY;
    loop {
        let answer = get(&server, "/anything", "");
        if answer.header("x-ouli-error") != Some("too-many-connections") {
            assert_ne!(answer.status, 503, "{answer:?}");
            break;
        }
        assert!(Instant::now() < until, "never served again: {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.stop().status.success());
}

/// Keeps a connection open after one answer on it (so it is counted).
fn open_kept_alive(server: &Ouli) -> BufReader<TcpStream> {
    let mut stream = connect(server);
    stream
        .write_all(b"GET /kept HTTP/1.1\r\nHost: ouli\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader);
    assert_eq!(answer.status, 200, "{answer:?}");
    reader
}

/// With `connections_max: 10` and 10 idle keep-alive connections open, an
/// 11th is answered 503 `too-many-connections` and closed (a health probe
/// gets its 200); when one of the 10 closes, a new one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_until_one_closes() {
    let upstream = hello_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        "passthrough",
        dir.path(),
        &config(upstream, "  connections_max: 10\n"),
        None,
    );
    tokio::task::spawn_blocking(move || {
        let mut open: Vec<_> = (0..10).map(|_| open_kept_alive(&server)).collect();
        let mut stream = connect(&server);
        stream
            .write_all(b"GET /kept HTTP/1.1\r\nHost: ouli\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let answer = read_answer(&mut reader);
        answer.assert_error(503, "too-many-connections");
        assert!(
            answer.json()["message"]
                .as_str()
                .unwrap()
                .contains("limits.connections_max"),
            "{answer:?}"
        );
        assert!(is_closed(&mut reader), "refused connection left open");
        let health = get(&server, "/__ouli/health", "");
        assert_eq!(health.status, 200, "{health:?}");
        assert!(
            server.log().contains("limits.connections_max = 10"),
            "{}",
            server.log()
        );
        drop(open.pop());
        let until = Instant::now() + SAFETY;
        loop {
            let answer = get(&server, "/kept", "");
            if answer.status == 200 {
                assert_eq!(answer.body, b"upstream says hi");
                break;
            }
            answer.assert_error(503, "too-many-connections");
            assert!(Instant::now() < until, "the freed slot was never used");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(server.stop().status.success());
    })
    .await
    .unwrap();
}

/// In record mode with `sessions_max: 5`: a 6th session is refused 503
/// `too-many-sessions` and nothing is recorded for it; the 5 keep working
/// and are recorded; one ended frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_the_limit_get_503_and_are_not_recorded() {
    let upstream = hello_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        "record",
        dir.path(),
        &config(upstream, "  sessions_max: 5\n"),
        None,
    );
    let recordings = dir.path().join("recordings");
    tokio::task::spawn_blocking(move || {
        for i in 1..=5 {
            let answer = get(&server, "/hi", &format!("Test-Name: s{i}\r\n"));
            assert_eq!(answer.status, 200, "s{i}: {answer:?}");
        }
        let refused = get(&server, "/hi", "Test-Name: s6\r\n");
        refused.assert_error(503, "too-many-sessions");
        assert!(
            refused.json()["message"]
                .as_str()
                .unwrap()
                .contains("limits.sessions_max = 5"),
            "{refused:?}"
        );
        assert!(server.log().contains("session s6 refused"), "{}", server.log());
        for i in 1..=5 {
            let answer = get(&server, "/again", &format!("Test-Name: s{i}\r\n"));
            assert_eq!(answer.status, 200, "s{i} again: {answer:?}");
        }
        let mut stream = connect(&server);
        stream
            .write_all(
                b"POST /__ouli/sessions/s1/end HTTP/1.1\r\nHost: ouli\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        assert_eq!(read_answer(&mut BufReader::new(stream)).status, 200);
        let answer = get(&server, "/hi", "Test-Name: s7\r\n");
        assert_eq!(answer.status, 200, "s7 after s1 ended: {answer:?}");
        assert!(server.stop().status.success());
    })
    .await
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&recordings)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "s1.ouli", "s2.ouli", "s3.ouli", "s4.ouli", "s5.ouli", "s7.ouli"
        ]
    );
}

/// A raw upstream that answers the head and 10 of the 100 bytes it declares,
/// then holds the connection open without a word (for the test's life).
fn stalling_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            held.push(stream);
        }
    });
    port
}

/// An upstream body that stops mid-way: after
/// `limits.upstream_body_idle_timeout_ms` the client's connection is cut
/// (its head was sent), the interaction is not recorded, and the log names
/// the upstream and the limit.
#[test]
fn an_upstream_body_that_stalls_is_cut_and_not_recorded() {
    for mode in ["record", "passthrough"] {
        let upstream = stalling_upstream();
        let dir = tempfile::tempdir().unwrap();
        let server = start(
            mode,
            dir.path(),
            &config(upstream, "  upstream_body_idle_timeout_ms: 300\n"),
            None,
        );
        let mut stream = connect(&server);
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: ouli\r\nTest-Name: cut\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line:?}");
        let mut rest = Vec::new();
        // Ends (close or reset) long before the safety net: the limit is 300 ms.
        let ended = reader.read_to_end(&mut rest);
        if let Err(error) = &ended {
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{mode}: {error}"
            );
        }
        let text = String::from_utf8_lossy(&rest);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(body.len() < 100, "{mode}: the whole body arrived: {text:?}");
        let log = server.log();
        assert!(
            log.contains(&format!("upstream 127.0.0.1:{upstream}"))
                && log.contains("limits.upstream_body_idle_timeout_ms"),
            "{mode}: {log}"
        );
        assert!(server.stop().status.success());
        let recorded: Vec<_> = std::fs::read_dir(dir.path().join("recordings"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(recorded.is_empty(), "{mode}: recorded {recorded:?}");
    }
}

/// The body time limits are read from YAML and TOML, are not reported as
/// unknown keys, and 0 is refused by name, as for every limit.
#[test]
fn the_body_time_limits_are_config_keys_in_yaml_and_toml() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("ouli.yaml");
    std::fs::write(
        &yaml,
        config(
            1,
            "  request_body_timeout_ms: 1234\n  request_body_idle_timeout_ms: 56\n",
        ),
    )
    .unwrap();
    let toml = dir.path().join("ouli.toml");
    std::fs::write(
        &toml,
        "[[endpoints]]\ntarget_host = \"127.0.0.1\"\ntarget_port = 1\nsource_port = 0\n[limits]\nrequest_body_timeout_ms = 1234\nrequest_body_idle_timeout_ms = 56\n",
    )
    .unwrap();
    for path in [&yaml, &toml] {
        let (loaded, warnings) = ouli::config::Config::load(path).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(loaded.limits.request_body_timeout_ms, 1234);
        assert_eq!(loaded.limits.request_body_idle_timeout_ms, 56);
    }
    let defaults = ouli::config::Limits::default();
    assert_eq!(defaults.request_body_timeout_ms, 30_000);
    assert_eq!(defaults.request_body_idle_timeout_ms, 10_000);
    for key in ["request_body_timeout_ms", "request_body_idle_timeout_ms"] {
        std::fs::write(&yaml, config(1, &format!("  {key}: 0\n"))).unwrap();
        let error = ouli::config::Config::load(&yaml).unwrap_err().to_string();
        assert!(error.contains(&format!("limits.{key}")), "{error}");
    }
}

/// A raw upstream that answers with a chunked body of `chunks` chunks, a
/// pause of `gap` before each.
fn steady_upstream(chunks: usize, gap: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                for i in 0..chunks {
                    std::thread::sleep(gap);
                    let _ = stream.write_all(format!("1\r\n{}\r\n", i % 10).as_bytes());
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            });
        }
    });
    port
}

/// The upstream limit is on each pause, not on the whole body: one that
/// takes longer than the limit in all, pausing far less each time, is
/// passed on whole and recorded.
#[test]
fn an_upstream_body_slower_than_the_idle_limit_in_all_is_kept_whole() {
    let upstream = steady_upstream(12, Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        "record",
        dir.path(),
        &config(upstream, "  upstream_body_idle_timeout_ms: 1000\n"),
        None,
    );
    let answer = get(&server, "/steady", "Test-Name: steady\r\n");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, b"012345678901");
    assert!(server.stop().status.success());
    let recorded: Vec<_> = std::fs::read_dir(dir.path().join("recordings"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(recorded, ["steady.ouli"]);
}
