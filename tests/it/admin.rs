//! The admin API and the unused-recording report, end to end: recordings
//! made by the real binary from real upstreams (hyper), replayed by it;
//! `/__ouli/sessions`, the `--unused-report` file and its log line, a mode
//! switch under concurrent traffic, the active session, readiness during a
//! graceful shutdown, the admin token from a peer off loopback (in a
//! network namespace of this test's own), and the profile route.

use crate::support::client::send_text;
use crate::support::config;
use crate::support::ouli::{Log, Ouli, Start};
use crate::support::upstream;
use std::path::Path;
use std::time::Duration;

/// An upstream answering `answer <path>` to every request, after `delay`
/// for paths starting with `/slow`. Its port.
async fn echo_upstream(delay: Duration) -> u16 {
    let upstream = upstream::start(
        upstream::Options::default(),
        move |_, request: http::Request<hyper::body::Incoming>| async move {
            let path = request.uri().to_string();
            if path.starts_with("/slow") {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(upstream::full(format!(
                "answer {path}"
            ))))
        },
    )
    .await;
    upstream.port
}

/// Records, through `ouli record`, each (session, path) as one GET.
async fn record(dir: &Path, port: u16, requests: &[(&str, &str)]) {
    let ouli = Ouli::start("record", dir, &config(port, ""));
    for (session, path) in requests {
        let (status, _, body) =
            send_text(&ouli.addr, "GET", path, &[("Test-Name", session)], "").await;
        assert_eq!(status, 200, "{body}");
    }
    ouli.stop().assert_success();
}

async fn get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = send_text(addr, "GET", path, &[], "").await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

async fn send_json(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, text) = send_text(addr, method, path, &[], body).await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, json)
}

fn session<'a>(sessions: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no session {name} in {sessions}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unused_report_lists_what_a_replay_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream(Duration::ZERO).await;
    record(
        dir.path(),
        port,
        &[("t1", "/a"), ("t1", "/b?q=1"), ("t1", "/c"), ("t2", "/x")],
    )
    .await;
    let report = dir.path().join("unused.json");
    let log = dir.path().join("replay.log");
    let ouli = Start::new("replay", dir.path(), &config(port, ""))
        .mode_arg("--unused-report")
        .mode_arg(&report)
        .log(Log::Create(log.clone()))
        .spawn();
    let addr = ouli.addr.clone();
    let (status, _, body) = send_text(&addr, "GET", "/a", &[("Test-Name", "t1")], "").await;
    assert_eq!((status, body.as_str()), (200, "answer /a"));
    // Served twice (after a reset): still one distinct interaction served.
    let again = [("Test-Name", "t1"), ("x-ouli-chain-reset", "1")];
    assert_eq!(send_text(&addr, "GET", "/a", &again, "").await.0, 200);
    let (status, _, _) = send_text(&addr, "GET", "/nope", &[("Test-Name", "t1")], "").await;
    assert_eq!(status, 404);

    let (status, sessions) = get_json(&addr, "/__ouli/sessions").await;
    assert_eq!(status, 200);
    let t1 = session(&sessions, "t1");
    assert_eq!(t1["endpoint"], 0);
    assert_eq!(t1["interactions"], 3);
    assert_eq!(t1["served"], 1);
    assert_eq!(t1["misses"], 1);
    let file = t1["file"].as_str().unwrap();
    assert!(
        file.starts_with('/') && file.ends_with("/t1.ouli"),
        "{file}"
    );
    let chains = t1["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3, "{t1}");
    let a = chains.iter().find(|c| c["request"] == "GET /a").unwrap();
    assert_eq!(
        (a["position"].as_u64(), a["length"].as_u64()),
        (Some(1), Some(1))
    );
    let b = chains
        .iter()
        .find(|c| c["request"] == "GET /b?q=1")
        .unwrap();
    assert_eq!(b["position"], 0);
    // Recorded, never touched in this run: listed with served 0.
    let t2 = session(&sessions, "t2");
    assert_eq!(
        (t2["interactions"].as_u64(), t2["served"].as_u64()),
        (Some(1), Some(0))
    );

    let (status, one) = get_json(&addr, "/__ouli/sessions/t1").await;
    assert_eq!(status, 200);
    let list = one["interaction_list"].as_array().unwrap();
    let listed: Vec<_> = list
        .iter()
        .map(|e| {
            (
                e["ordinal"].as_u64().unwrap(),
                e["path"].as_str().unwrap(),
                e["served"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(1, "/a", true), (2, "/b?q=1", false), (3, "/c", false)]
    );
    assert!(
        list.iter()
            .all(|e| e["method"] == "GET" && e["status"] == 200)
    );
    let unused: Vec<_> = one["unused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ordinal"].as_u64().unwrap())
        .collect();
    assert_eq!(unused, [2, 3]);
    let (status, missing) = get_json(&addr, "/__ouli/sessions/never-recorded").await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(missing["fault"], "client");

    ouli.stop().assert_success();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let t1 = session(&written, "t1");
    assert_eq!(
        (t1["interactions"].as_u64(), t1["served"].as_u64()),
        (Some(3), Some(1))
    );
    let paths: Vec<_> = t1["unused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/b?q=1", "/c"]);
    assert_eq!(t1["unused"][0]["ordinal"], 2);
    assert_eq!(t1["unused"][0]["status"], 200);
    let t2 = session(&written, "t2");
    assert_eq!(t2["served"], 0);
    assert_eq!(t2["unused"][0]["path"], "/x");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("unused: session t1 endpoint 0: 2 of 3 recorded interactions never served: GET /b?q=1, GET /c"),
        "{log}"
    );
    assert!(
        log.contains("unused: session t2 endpoint 0: 1 of 1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mode_switches_under_concurrent_traffic_and_a_miss_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream_addr, calls) = upstream::counting().await;
    let port = upstream_addr.port();
    let ouli = Ouli::start("record", dir.path(), &config(port, ""));
    let (status, _, recorded) = send_text(&ouli.addr, "GET", "/a", &[("Test-Name", "s")], "").await;
    assert_eq!(status, 200);
    ouli.stop().assert_success();
    let ouli = Ouli::start("replay", dir.path(), &config(port, ""));
    let addr = ouli.addr.clone();
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(get_json(&addr, "/__ouli/mode").await.1["mode"], "replay");

    // Traffic that keeps going while the mode changes: every answer is the
    // recorded one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for _ in 0..4 {
        let (addr, stop, recorded) = (addr.clone(), stop.clone(), recorded.clone());
        traffic.push(tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && served < 2000 {
                let headers = [("Test-Name", "s"), ("x-ouli-chain-reset", "1")];
                let (status, _, body) = send_text(&addr, "GET", "/a", &headers, "").await;
                assert_eq!((status, body.as_str()), (200, recorded.as_str()));
                served += 1;
            }
            served
        }));
    }
    let (status, switched) =
        send_json(&addr, "PUT", "/__ouli/mode", r#"{"mode":"record-missing"}"#).await;
    assert_eq!(status, 200, "{switched}");
    assert_eq!(
        switched,
        serde_json::json!({"mode": "record-missing", "previous": "replay"})
    );
    let (status, _, fresh) = send_text(&addr, "GET", "/new", &[("Test-Name", "s")], "").await;
    assert_eq!(status, 200, "{fresh}");
    assert!(
        fresh.starts_with("call ") && fresh.contains("/new"),
        "{fresh}"
    );
    // On disk before the switch back (the append follows the answer).
    let file = dir.path().join("recordings/s.ouli");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crate::support::files::interactions(&file).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "/new was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, back) = send_json(&addr, "PUT", "/__ouli/mode", r#"{"mode":"replay"}"#).await;
    assert_eq!(
        (status, back),
        (
            200,
            serde_json::json!({"mode": "replay", "previous": "record-missing"})
        )
    );
    let upstream_calls = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(upstream_calls, before + 1, "only /new went upstream");
    // Replayed now, from what record-missing recorded; upstream untouched.
    let headers = [("Test-Name", "s"), ("x-ouli-chain-reset", "1")];
    let (status, _, replayed) = send_text(&addr, "GET", "/new", &headers, "").await;
    assert_eq!((status, replayed.as_str()), (200, fresh.as_str()));
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        upstream_calls
    );
    // A miss in replay again is a miss.
    let (status, _, _) = send_text(&addr, "GET", "/newer", &[("Test-Name", "s")], "").await;
    assert_eq!(status, 404);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in traffic {
        assert!(task.await.unwrap() > 0);
    }
    // What cannot be switched to.
    for (body, want) in [
        (r#"{"mode":"record"}"#, 400),
        (r#"{"mode":"fast"}"#, 400),
        ("not json", 400),
    ] {
        let (status, answer) = send_json(&addr, "PUT", "/__ouli/mode", body).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert_eq!(answer["fault"], "client");
    }
    assert_eq!(get_json(&addr, "/__ouli/mode").await.1["mode"], "replay");
    ouli.stop().assert_success();
    let paths: Vec<_> = crate::support::files::interactions(&file)
        .iter()
        .map(|i| String::from_utf8_lossy(&i.request.target).into_owned())
        .collect();
    assert_eq!(paths, ["/a", "/new"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_missing_without_a_writable_dir_is_refused_with_409() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream(Duration::ZERO).await;
    let ouli = Start::new("replay", dir.path(), &config(port, ""))
        .create_recording_dir()
        .spawn();
    let addr = ouli.addr.clone();
    // A file where the recording dir was: nobody, root included, can write
    // recordings there.
    let recordings = dir.path().join("recordings");
    std::fs::remove_dir_all(&recordings).unwrap();
    std::fs::write(&recordings, b"").unwrap();
    let (status, refused) =
        send_json(&addr, "PUT", "/__ouli/mode", r#"{"mode":"record-missing"}"#).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "mode-not-switched");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("writable recording dir"),
        "{refused}"
    );
    assert_eq!(get_json(&addr, "/__ouli/mode").await.1["mode"], "replay");
    // Passthrough writes nothing: it switches, and proxies.
    let (status, switched) =
        send_json(&addr, "PUT", "/__ouli/mode", r#"{"mode":"passthrough"}"#).await;
    assert_eq!(
        (status, switched),
        (
            200,
            serde_json::json!({"mode": "passthrough", "previous": "replay"})
        )
    );
    let (status, _, body) = send_text(&addr, "GET", "/live", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "answer /live"));
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_active_session_serves_requests_that_name_none() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream(Duration::ZERO).await;
    record(dir.path(), port, &[("alpha", "/p1"), ("beta", "/p2")]).await;
    let ouli = Ouli::start("replay", dir.path(), &config(port, ""));
    let addr = ouli.addr.clone();
    assert_eq!(
        get_json(&addr, "/__ouli/session").await.1,
        serde_json::json!({"name": null})
    );
    // Requests that name their own session, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let named = {
        let (addr, stop) = (addr.clone(), stop.clone());
        tokio::spawn(async move {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && served < 2000 {
                let headers = [("Test-Name", "beta"), ("x-ouli-chain-reset", "1")];
                let (status, _, body) = send_text(&addr, "GET", "/p2", &headers, "").await;
                assert_eq!((status, body.as_str()), (200, "answer /p2"));
                served += 1;
            }
            served
        })
    };
    let (status, set) = send_json(&addr, "PUT", "/__ouli/session", r#"{"name":"alpha"}"#).await;
    assert_eq!(
        (status, set),
        (200, serde_json::json!({"name": "alpha", "previous": null}))
    );
    assert_eq!(
        get_json(&addr, "/__ouli/session").await.1,
        serde_json::json!({"name": "alpha"})
    );
    let (status, _, body) = send_text(&addr, "GET", "/p1", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "answer /p1"));
    // alpha has no /p2: the miss names alpha.
    let (status, _, miss) = send_text(&addr, "GET", "/p2", &[], "").await;
    assert_eq!(status, 404);
    let miss: serde_json::Value = serde_json::from_str(&miss).unwrap();
    assert_eq!(miss["session"], "alpha", "{miss}");
    // A bad name: the same error as a bad Test-Name header.
    let (status, bad) = send_json(&addr, "PUT", "/__ouli/session", r#"{"name":"../up"}"#).await;
    let (header_status, _, header_bad) =
        send_text(&addr, "GET", "/p1", &[("Test-Name", "../up")], "").await;
    let header_bad: serde_json::Value = serde_json::from_str(&header_bad).unwrap();
    assert_eq!((status, header_status), (400, 400));
    assert_eq!(bad["error"], "bad-test-name");
    assert_eq!(bad["error"], header_bad["error"]);
    assert_eq!(bad["message"], header_bad["message"]);
    assert_eq!(get_json(&addr, "/__ouli/session").await.1["name"], "alpha");
    let (status, cleared) = send_json(&addr, "DELETE", "/__ouli/session", "").await;
    assert_eq!(
        (status, cleared),
        (200, serde_json::json!({"name": null, "previous": "alpha"}))
    );
    // Back to the default session, which has no recording.
    let (status, _, miss) = send_text(&addr, "GET", "/p1", &[], "").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&miss).unwrap()["session"],
        "default"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(named.await.unwrap() > 0);
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_turns_503_at_sigterm_while_a_slow_request_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream(Duration::from_millis(2500)).await;
    record(dir.path(), port, &[("s", "/slow")]).await;
    let ouli = Ouli::start("replay", dir.path(), &config(port, ""));
    let addr = ouli.addr.clone();
    assert_eq!(
        get_json(&addr, "/__ouli/ready").await,
        (200, serde_json::json!({"ready": true}))
    );
    // Paced as recorded: its head waits the recorded 2.5 s.
    let slow = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let headers = [("Test-Name", "s"), ("x-ouli-replay-timing", "recorded")];
            send_text(&addr, "GET", "/slow", &headers, "").await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = ouli.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let drained = loop {
        let (status, body) = get_json(&addr, "/__ouli/ready").await;
        if status == 503 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ready stayed {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(drained, serde_json::json!({"ready": false}));
    assert!(!slow.is_finished(), "the probe came after the slow answer");
    // Health is not readiness: still 200 while draining.
    assert_eq!(get_json(&addr, "/__ouli/health").await.0, 200);
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "answer /slow"));
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_profile_route_answers_as_the_build_allows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let ouli = Ouli::start("replay", dir.path(), &config(1, ""));
    // Work to sample: an idle process takes no CPU samples in a second.
    let busy_addr = ouli.addr.clone();
    let busy = tokio::spawn(async move {
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        while std::time::Instant::now() < until {
            send_text(&busy_addr, "GET", "/__ouli/health", &[], "").await;
        }
    });
    let (status, _, body) =
        send_text(&ouli.addr, "GET", "/__ouli/debug/pprof?seconds=1", &[], "").await;
    busy.await.unwrap();
    if cfg!(feature = "profiling") {
        assert_eq!(status, 200, "{body}");
    } else {
        assert_eq!(status, 404, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "profiling-not-built");
        assert_eq!(json["fault"], "client");
    }
    ouli.stop().assert_success();
}

/// The address this test gives itself in its own network namespace: a
/// documentation address (RFC 5737), on nobody's network.
const OFF_LOOPBACK: &str = "192.0.2.1";

/// Runs `test` on a thread in a new network namespace whose loopback
/// interface also holds [`OFF_LOOPBACK`]: sockets the thread opens and
/// processes it starts live there, so a peer at that address is not on
/// loopback and no packet leaves the namespace. `false` when this machine
/// lets the test make none (not root): the test then says so and skips.
fn in_own_network(test: impl FnOnce() + Send + 'static) -> bool {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) changes only the calling thread's namespace;
        // it takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            eprintln!(
                "skipped: no network namespace here ({})",
                std::io::Error::last_os_error()
            );
            return false;
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", &format!("{OFF_LOOPBACK}/32"), "dev", "lo"],
        ] {
            let status = std::process::Command::new("ip").args(args).status();
            assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
        }
        test();
        true
    })
    .join()
    .unwrap()
}

#[test]
fn a_peer_off_loopback_needs_the_admin_token() {
    let ran = in_own_network(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
        let yaml = config(
            1,
            &format!("listen_address: {OFF_LOOPBACK}\nadmin_token: tok-3n1gma\n"),
        );
        let ouli = Ouli::start("replay", dir.path(), &yaml);
        assert!(ouli.addr.starts_with(OFF_LOOPBACK), "{}", ouli.addr);
        let ask = |method: &str, path: &str, auth: Option<&str>, body: &str| {
            let header = auth.map(|token| format!("Bearer {token}"));
            let headers: Vec<(&str, &str)> = header
                .iter()
                .map(|h| ("Authorization", h.as_str()))
                .collect();
            crate::support::raw::request(&ouli.addr, method, path, &headers, body)
        };
        for (method, path, body) in [
            ("GET", "/__ouli/sessions", ""),
            ("GET", "/__ouli/misses", ""),
            ("GET", "/__ouli/mode", ""),
            ("PUT", "/__ouli/mode", r#"{"mode":"passthrough"}"#),
            ("PUT", "/__ouli/session", r#"{"name":"x"}"#),
            ("POST", "/__ouli/sessions/x/reset", ""),
        ] {
            for auth in [None, Some("wrong")] {
                let (status, answer) = ask(method, path, auth, body);
                assert_eq!(status, 403, "{method} {path} {auth:?}: {answer}");
                assert!(answer.contains("\"fault\": \"client\""), "{answer}");
                assert!(answer.contains("admin-forbidden"), "{answer}");
            }
        }
        // The mode did not change.
        let (status, answer) = ask("GET", "/__ouli/mode", Some("tok-3n1gma"), "");
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"replay\""), "{answer}");
        for (method, path, body) in [
            ("GET", "/__ouli/sessions", ""),
            ("PUT", "/__ouli/session", r#"{"name":"x"}"#),
            ("POST", "/__ouli/sessions/x/reset", ""),
        ] {
            let (status, answer) = ask(method, path, Some("tok-3n1gma"), body);
            assert_eq!(status, 200, "{method} {path}: {answer}");
        }
        // Probes are open to anyone.
        assert_eq!(ask("GET", "/__ouli/ready", None, "").0, 200);
        assert_eq!(ask("GET", "/__ouli/health", None, "").0, 200);
        ouli.stop().assert_success();
    });
    if !ran {
        return;
    }
    // Without a token configured, even a right-looking one is refused.
    assert!(in_own_network(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
        let yaml = config(1, &format!("listen_address: {OFF_LOOPBACK}\n"));
        let ouli = Ouli::start("replay", dir.path(), &yaml);
        let (status, answer) = crate::support::raw::request(
            &ouli.addr,
            "GET",
            "/__ouli/sessions",
            &[("Authorization", "Bearer anything")],
            "",
        );
        assert_eq!(status, 403, "{answer}");
        assert!(answer.contains("admin_token"), "{answer}");
        ouli.stop().assert_success();
    }));
}
