//! The web page at `GET /__ouli/`, end to end: the real binary replays
//! recordings made from a real upstream (hyper) and has had one miss; a
//! real browser (headless Chromium) loads the page, runs its script, and
//! the rendered DOM is checked for the session names, an interaction, the
//! miss's differing field with its recorded and live values, and for
//! recorded markup shown as text, never as markup. A screenshot is taken.
//! A plain fetch checks that the page names no other host.

use crate::support::client::send_text;
use crate::support::config;
use crate::support::ouli::{Ouli, Start};
use crate::support::upstream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser's run is killed past this (it normally takes a few seconds).
const BROWSER_RUN_MAX: Duration = Duration::from_secs(90);
/// Virtual time the page gets to fetch and render before the DOM is read.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5000;
/// A screenshot of a rendered page is tens of kilobytes; a blank one of
/// this size a few.
const SCREENSHOT_BYTES_MIN: u64 = 20_000;
/// Recorded markup, which the page must show as text.
const MARKUP: &str = "<i>injected</i>";

/// The browser to drive: `OULI_CHROMIUM`, else Debian's `chromium`.
fn chromium() -> String {
    let program = std::env::var("OULI_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} not found: install Debian's chromium (.ci/run does) or set OULI_CHROMIUM"
    );
    program
}

/// Runs headless Chromium on `url` with `args`, killed past
/// [`BROWSER_RUN_MAX`]; its stdout.
fn browse(profile: &Path, url: &str, args: &[String]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let deadline = Instant::now() + BROWSER_RUN_MAX;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?}: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} still running after {BROWSER_RUN_MAX:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// Two sessions recorded from a real upstream, then a replay that has
/// missed once (`/v1/items?page=2`, where page 1 was recorded) and once
/// in a session whose name is markup.
async fn replay_with_a_miss(dir: &Path) -> Ouli {
    let upstream = upstream::fixed("{\"items\":[]}").await;
    let yaml = config(upstream, "");
    let server = Start::new("record", dir, &yaml).spawn();
    for (session, path) in [
        ("alpha-session", "/v1/items?page=1"),
        ("beta/nested", "/v1/other"),
    ] {
        let headers = [("test-name", session)];
        let (status, _, _) = send_text(&server.addr, "GET", path, &headers, "").await;
        assert_eq!(status, 200);
    }
    server.stop().assert_success();
    let server = Start::new("replay", dir, &yaml).spawn();
    let headers = [("test-name", "alpha-session")];
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/items?page=2", &headers, "").await;
    assert_eq!(status, 404, "a miss");
    // A session name is shown as it came (a query value stays
    // percent-encoded in a miss report).
    let markup = [("test-name", MARKUP)];
    let (status, _, _) = send_text(&server.addr, "GET", "/v1/items", &markup, "").await;
    assert_eq!(status, 404, "a miss with markup in it");
    server
}

/// The texts of the elements whose class is exactly `class`, in order.
fn cells_of_class<'a>(dom: &'a str, class: &str) -> Vec<&'a str> {
    let marker = format!("class=\"{class}\">");
    dom.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &dom[at + marker.len()..];
            rest.split_once('<').map(|(text, _)| text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_renders_the_sessions_and_the_miss_differences() {
    let dir = tempfile::tempdir().unwrap();
    let server = replay_with_a_miss(dir.path()).await;
    let url = format!("http://{}/__ouli/", server.addr);
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        let profile = profile.path().to_owned();
        move || browse(&profile, &url, &["--dump-dom".into()])
    })
    .await
    .unwrap();
    assert!(dom.contains("alpha-session"), "{dom}");
    let (listing, _, _) = send_text(&server.addr, "GET", "/__ouli/sessions", &[], "").await;
    if listing == 200 {
        assert!(dom.contains("beta/nested"), "{dom}");
        assert!(dom.contains("/v1/other"), "an interaction listed: {dom}");
    } else {
        // A build without the sessions endpoint: the page says so.
        assert!(
            dom.contains("GET /__ouli/sessions answered 404"),
            "the page tells why it lists no session: {dom}"
        );
    }
    let fields = cells_of_class(&dom, "mono field");
    let recorded = cells_of_class(&dom, "mono recorded");
    let live = cells_of_class(&dom, "mono live");
    let rows: Vec<_> = fields.iter().zip(&recorded).zip(&live).collect();
    assert!(
        rows.iter()
            .any(|((f, r), l)| **f == "query page" && **r == "1" && **l == "2"),
        "the difference table: field, recorded, live: {rows:?}\n{dom}"
    );
    assert!(
        dom.contains("&lt;i&gt;injected&lt;/i&gt;"),
        "recorded markup is shown as text: {dom}"
    );
    assert!(
        !dom.contains(MARKUP),
        "recorded markup became markup: {dom}"
    );

    let shot = profile.path().join("page.png");
    let args = [
        format!("--screenshot={}", shot.display()),
        "--window-size=1200,900".into(),
        "--hide-scrollbars".into(),
    ];
    let shot_profile = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking({
        let shot_profile = shot_profile.path().to_owned();
        move || browse(&shot_profile, &url, &args)
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(
        png.len() as u64 >= SCREENSHOT_BYTES_MIN,
        "a screenshot of {} bytes is a blank page",
        png.len()
    );
    server.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_and_names_no_other_host() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(crate::support::free_port(), "");
    let server = Start::new("replay", dir.path(), &yaml)
        .create_recording_dir()
        .spawn();
    let (status, headers, html) = send_text(&server.addr, "GET", "/__ouli/", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<script>") && html.contains("fetch("));
    for external in [
        "http://", "https://", "//cdn", "src=", "<link", "@import", "url(",
    ] {
        assert!(!html.contains(external), "the page names {external:?}");
    }
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(
        !policy.contains("unsafe-inline"),
        "the inline script is allowed by its hash only: {policy}"
    );
    server.stop().assert_success();
}
