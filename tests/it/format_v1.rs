//! Recordings of format version 1, made by the version 1 writer and kept in
//! `tests/it/data/v1/` (`fixture.ouli`: an SSE answer of three events
//! 200 ms apart whose upstream waited 300 ms before its head, and a JSON
//! answer; the config it was recorded with beside it). Today's ouli reads
//! them, replays them (a version 1 record has a time to first byte of 0),
//! verifies them, and appends to them in their own version.

use crate::support::ouli::{Log, OULI, Start};
use crate::support::upstream;
use ouli::recording::{FORMAT_VERSION_1, ReadBackend, Recording};
use std::path::{Path, PathBuf};
use std::process::Command;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/data/v1")
}

/// A scratch copy of the fixture (the tests append to it): the folder
/// holding `ouli.yaml` and `recordings/fixture.ouli`.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("recordings")).unwrap();
    for file in ["ouli.yaml", "recordings/fixture.ouli"] {
        std::fs::copy(data_dir().join(file), dir.path().join(file)).unwrap();
    }
    dir
}

fn start(mode: &str, dir: &Path) -> crate::support::ouli::Ouli {
    Start::with_config_file(mode, &dir.join("ouli.yaml"), &dir.join("recordings"))
        .log(Log::Create(dir.join(format!("ouli-{mode}.log"))))
        .spawn()
}

#[test]
fn a_version_1_file_reads_with_no_time_to_first_byte_and_no_trailers() {
    let path = data_dir().join("recordings/fixture.ouli");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &FORMAT_VERSION_1.to_le_bytes(), "a v1 file");
    for backend in [ReadBackend::Mmap, ReadBackend::IoUring] {
        let recording = Recording::open(&path, backend).unwrap();
        assert_eq!(recording.len(), 2);
        let views: Vec<_> = recording.iter().map(Result::unwrap).collect();
        for view in &views {
            assert_eq!(view.format_version(), FORMAT_VERSION_1);
            assert_eq!(view.response_head_offset_us(), 0);
            assert_eq!(view.response_trailers_shared().count(), 0);
        }
        let chunks: Vec<(u64, bytes::Bytes)> = views[0].response_chunks().collect();
        assert_eq!(chunks.len(), 3, "the SSE answer's events");
        assert!(chunks[2].0 >= 300_000, "its offsets are kept: {:?}", chunks);
        let interaction = views[1].to_interaction().unwrap();
        let ouli::interaction::Exchange::Http(response) = interaction.exchange else {
            panic!("an HTTP interaction");
        };
        assert_eq!(response.head_offset_us, 0);
        assert!(response.trailers.is_empty());
        assert_eq!(&response.chunks[0].data[..], b"{\"ok\":true}");
    }
}

#[test]
fn ouli_verify_accepts_a_version_1_file() {
    let output = Command::new(OULI)
        .arg("verify")
        .arg(data_dir().join("recordings"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("fixture.ouli: 2 record(s) ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_file_replays_its_chunks_with_their_gaps() {
    let dir = fixture_copy();
    let server = start("replay", dir.path());
    // The fixture was recorded with curl, whose `accept: */*` is identity.
    let headers = [
        ("test-name", "fixture"),
        ("accept", "*/*"),
        ("x-ouli-replay-timing", "recorded"),
    ];
    let sent = std::time::Instant::now();
    let (status, _, body) =
        crate::support::client::send_text(&server.addr, "GET", "/events", &headers, "").await;
    let took = sent.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\n"
    );
    // The two recorded gaps of 200 ms are played (no time to first byte).
    assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
    let (status, _, body) = crate::support::client::send_text(
        &server.addr,
        "POST",
        "/json",
        &[
            ("test-name", "fixture"),
            ("accept", "*/*"),
            ("content-type", "application/json"),
        ],
        "{\"q\":1}",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
    server.stop().assert_success();
}

/// An upstream answering `{"new":true}` followed by a `grpc-status`
/// trailer, which a version 1 record has no room for.
async fn trailer_upstream() -> u16 {
    use http_body_util::BodyExt;
    let upstream = upstream::start(upstream::Options::default(), |_, _| async move {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
            Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                b"{\"new\":true}",
            ))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let answer = http::Response::builder()
            .header("trailer", "grpc-status")
            .body(body.boxed())
            .unwrap();
        Ok::<_, std::convert::Infallible>(answer)
    })
    .await;
    upstream.port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_missing_appends_version_1_records_to_a_version_1_file() {
    let dir = fixture_copy();
    let port = trailer_upstream().await;
    // The fixture's config, pointed at this upstream: the recorded requests
    // (of another port) miss, and the new one is appended.
    let yaml = std::fs::read_to_string(dir.path().join("ouli.yaml")).unwrap();
    let yaml = regex::Regex::new(r"target_port: \d+")
        .unwrap()
        .replace(&yaml, format!("target_port: {port}").as_str())
        .into_owned();
    std::fs::write(dir.path().join("ouli.yaml"), &yaml).unwrap();
    let server = start("record-missing", dir.path());
    let headers = [("test-name", "fixture")];
    let (status, _, body) =
        crate::support::client::send_text(&server.addr, "GET", "/new", &headers, "").await;
    assert_eq!((status, body.as_str()), (200, "{\"new\":true}"));
    server.stop().assert_success();
    let log = std::fs::read_to_string(dir.path().join("ouli-record-missing.log")).unwrap();
    assert!(log.contains("format version 1 keeps no trailers"), "{log}");

    let path = dir.path().join("recordings/fixture.ouli");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[8..12], &FORMAT_VERSION_1.to_le_bytes(), "still v1");
    let recording = Recording::open(&path, ReadBackend::Mmap).unwrap();
    assert_eq!(recording.len(), 3);
    let last = recording.iter().last().unwrap().unwrap();
    assert_eq!(last.format_version(), FORMAT_VERSION_1);
    assert_eq!(last.response_head_offset_us(), 0);
    let output = Command::new(OULI)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // And what was appended replays.
    let server = start("replay", dir.path());
    let (status, _, body) =
        crate::support::client::send_text(&server.addr, "GET", "/new", &headers, "").await;
    assert_eq!((status, body.as_str()), (200, "{\"new\":true}"));
    server.stop().assert_success();
}
