//! `response_header_replacements` on the live answer, as test-server does:
//! the resumable-upload pattern (the upstream hands out an upload URL, the
//! rule points it back at ouli, the client follows it through ouli) recorded
//! through the real binary and replayed offline; passthrough and
//! record-missing rewrite what the client gets too; the stored answer gets
//! each replacement once.

use crate::support::client::send;
use crate::support::files::recorded;
use crate::support::free_port;
use crate::support::ouli::Ouli;
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ouli::interaction::Exchange;
use std::sync::{Arc, Mutex};

/// The requests an upstream saw, as `METHOD path body`.
type Seen = Arc<Mutex<Vec<String>>>;

/// A real upstream for the upload flow: `POST /upload/start` answers with
/// the upload URL (on its own address) and `X-Count: n`; a `PUT` to the
/// session stores the body. Aborting the returned task stops it, its
/// connections with it.
async fn upload_upstream() -> (u16, Seen, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let upstream = upstream::serve(
        listener,
        Options::default(),
        move |_, request: http::Request<hyper::body::Incoming>| {
            let log = log.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let body = request.into_body().collect().await?.to_bytes();
                log.lock().unwrap().push(format!(
                    "{method} {path} {}",
                    String::from_utf8_lossy(&body)
                ));
                let response = match (method.as_str(), path.as_str()) {
                    ("POST", "/upload/start") => http::Response::builder()
                        .header(
                            "x-goog-upload-url",
                            format!("http://127.0.0.1:{port}/upload/session/abc"),
                        )
                        .header("x-count", "n")
                        .body(Full::new(Bytes::from_static(b"{\"started\":true}"))),
                    ("PUT", "/upload/session/abc") => http::Response::builder().body(Full::new(
                        Bytes::from(format!("stored {} bytes", body.len())),
                    )),
                    _ => http::Response::builder()
                        .status(404)
                        .body(Full::new(Bytes::new())),
                };
                Ok::<_, hyper::Error>(response.unwrap())
            }
        },
    );
    (port, seen, upstream.into_task())
}

/// One endpoint to the upstream on `upstream`, listening on `source`, with
/// the upload URL rule and a rule whose output its own regex matches again
/// (`n` becomes `nn`, applied twice it would be `nnn`).
fn config(upstream: u16, source: u16) -> String {
    format!(
        "endpoints:
  - target_host: 127.0.0.1
    target_type: http
    target_port: {upstream}
    source_port: {source}
    response_header_replacements:
      - header: X-Goog-Upload-Url
        regex: '^http://127\\.0\\.0\\.1:\\d+/'
        replace: 'http://127.0.0.1:{source}/'
      - header: X-Count
        regex: '^(n+)$'
        replace: '${{1}}n'
"
    )
}

/// The upload flow as a client makes it: start, then PUT the data to the
/// URL it was given, wherever that points. The URL, the start answer's
/// `x-count`, and the PUT's answer.
async fn upload(addr: &str) -> (String, String, (u16, Vec<u8>)) {
    let (status, headers, body) = send(addr, "POST", "/upload/start", &[], b"{}".to_vec()).await;
    assert_eq!((status, body), (200, b"{\"started\":true}".to_vec()));
    let url = headers["x-goog-upload-url"].to_str().unwrap().to_owned();
    let count = headers["x-count"].to_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let (status, _, body) = send(authority, "PUT", path, &[], b"0123456789".to_vec()).await;
    (url, count, (status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_follows_the_rewritten_url_through_ouli_and_replays_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, seen, upstream_task) = upload_upstream().await;
    let source = free_port();
    let yaml = config(upstream, source);
    let ouli_url = format!("http://127.0.0.1:{source}/upload/session/abc");

    let server = Ouli::start("record", dir.path(), &yaml);
    assert_eq!(server.addr, format!("127.0.0.1:{source}"));
    let (url, count, put) = upload(&server.addr).await;
    assert_eq!(url, ouli_url, "the client is sent back to ouli");
    assert_eq!(count, "nn", "each replacement once on the live answer");
    assert_eq!(put, (200, b"stored 10 bytes".to_vec()));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "POST /upload/start {}",
            "PUT /upload/session/abc 0123456789"
        ],
        "the upstream saw both requests, the upload through ouli"
    );
    assert!(server.stop().status.success(), "record exits 0");

    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 2, "both requests recorded");
    let Exchange::Http(start) = &interactions[0].exchange else {
        panic!("an HTTP exchange");
    };
    let stored = |name: &str| {
        start
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        stored("x-goog-upload-url").as_deref(),
        Some(ouli_url.as_str())
    );
    assert_eq!(
        stored("x-count").as_deref(),
        Some("nn"),
        "stored once, not twice"
    );

    upstream_task.abort();
    let _ = upstream_task.await;
    let server = Ouli::start("replay", dir.path(), &yaml);
    let (url, count, put) = upload(&server.addr).await;
    assert_eq!((url, count), (ouli_url, "nn".to_owned()));
    assert_eq!(
        put,
        (200, b"stored 10 bytes".to_vec()),
        "the upload replays"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "nothing reached the upstream"
    );
    assert!(server.stop().status.success(), "replay exits 0");
}

/// Passthrough and record-missing's proxied miss: the client gets the
/// rewritten head as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_and_record_missing_rewrite_the_live_answer() {
    for mode in ["passthrough", "record-missing"] {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, seen, _task) = upload_upstream().await;
        let source = free_port();
        let server = Ouli::start(mode, dir.path(), &config(upstream, source));
        let (url, count, put) = upload(&server.addr).await;
        assert_eq!(
            url,
            format!("http://127.0.0.1:{source}/upload/session/abc"),
            "{mode}"
        );
        assert_eq!(count, "nn", "{mode}");
        assert_eq!(put, (200, b"stored 10 bytes".to_vec()), "{mode}");
        assert_eq!(seen.lock().unwrap().len(), 2, "{mode}: through ouli");
        assert!(server.stop().status.success(), "{mode} exits 0");
    }
}

/// On a live head: each rule in order, on every value of its header (any
/// case), once; a result that a header cannot hold leaves the value as it
/// came; a value that is not UTF-8 is left alone.
#[test]
fn live_replacements_apply_in_order_once_and_keep_what_a_header_cannot_hold() {
    use ouli::redact::{HeaderReplacement, RedactionRules, Redactor};
    let rule = |header: &str, regex: &str, replace: &str| HeaderReplacement {
        header: header.into(),
        regex: regex.into(),
        replace: replace.into(),
    };
    let redactor = Redactor::new(&RedactionRules {
        response_header_replacements: vec![
            rule("Location", "^https://up\\.example/", "http://127.0.0.1:1/"),
            rule("location", "/1/", "/2/"),
            rule("x-count", "^(n+)$", "${1}n"),
            rule("x-bad", "a", "b\nc"),
            rule("x-raw", "a", "b"),
        ],
        ..RedactionRules::default()
    })
    .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.append("location", "https://up.example/1/x".parse().unwrap());
    headers.append("location", "https://other/1/".parse().unwrap());
    headers.append("x-count", "n".parse().unwrap());
    headers.append("x-bad", "a".parse().unwrap());
    headers.append("x-raw", http::HeaderValue::from_bytes(b"a\xff").unwrap());
    redactor.replace_response_headers(&mut headers);
    let values =
        |name: &str| -> Vec<&[u8]> { headers.get_all(name).iter().map(|v| v.as_bytes()).collect() };
    assert_eq!(
        values("location"),
        [&b"http://127.0.0.1:1/2/x"[..], b"https://other/2/"]
    );
    assert_eq!(values("x-count"), [b"nn"]);
    assert_eq!(values("x-bad"), [b"a"]);
    assert_eq!(values("x-raw"), [b"a\xff"]);
}
