//! Decompression bombs through the real binary: a request body is decoded
//! under `limits.request_body_bytes_max` and refused (413) past it, a
//! response body under `limits.response_body_bytes_max` and not recorded
//! past it, in every encoding; the recording stays small and the server
//! serves on.

use crate::support::client::send;
use crate::support::config;
use crate::support::files::recorded;
use crate::support::ouli::Ouli;
use crate::support::upstream::respond as upstream;
use ouli::interaction::Exchange;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The limit the tests configure, for either direction.
const LIMIT: usize = 1 << 20;

/// What a bomb decodes to: 50 times the limit.
const BOMB_BYTES: usize = 50 << 20;

/// `zeros` zero bytes in `encoding`, streamed through the encoder a MiB at
/// a time (a bomb: `BOMB_BYTES` of them).
fn encode(encoding: &str, zeros: usize) -> Vec<u8> {
    let chunk = vec![0u8; 1 << 20];
    let feed = |w: &mut dyn Write| {
        let mut left = zeros;
        while left > 0 {
            let n = left.min(chunk.len());
            w.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    };
    match encoding {
        "gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            feed(&mut w);
            w.finish().unwrap()
        }
        "br" => {
            let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
            feed(&mut w);
            w.into_inner()
        }
        _ => {
            let mut w = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
            feed(&mut w);
            w.finish().unwrap()
        }
    }
}

const ENCODINGS: [&str; 3] = ["gzip", "br", "zstd"];

fn total_size(dir: &Path) -> usize {
    crate::support::files::files_under(dir)
        .iter()
        .map(|(_, bytes)| bytes.len())
        .sum()
}

/// A counting upstream that echoes the length of what it got.
async fn counting_upstream() -> (u16, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let port = upstream(move |_, body| {
        counter.fetch_add(1, Ordering::SeqCst);
        (
            200,
            vec![],
            format!("got {} bytes", body.len()).into_bytes(),
        )
    })
    .await;
    (port, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_bomb_in_each_encoding_is_refused_in_record_mode_and_the_recording_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let (port, calls) = counting_upstream().await;
    let limits = format!("limits:\n  request_body_bytes_max: {LIMIT}\n");
    let mut server = Ouli::start("record", dir.path(), &config(port, &limits));
    for encoding in ENCODINGS {
        let body = encode(encoding, BOMB_BYTES);
        assert!(
            body.len() < LIMIT,
            "{encoding}: the bomb is under the limit as sent"
        );
        let headers = [("content-encoding", encoding)];
        let (status, answer_headers, answer) =
            send(&server.addr, "POST", "/upload", &headers, body).await;
        assert_eq!(
            status,
            413,
            "{encoding}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(answer_headers["x-ouli-error"], "body-too-large");
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["fault"], "client");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("limits.request_body_bytes_max"),
            "{answer}"
        );
        server.assert_serving().await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no bomb was forwarded");
    // Exactly the limit once decoded is recorded, decoded.
    let exact = encode("gzip", LIMIT);
    let headers = [("content-encoding", "gzip")];
    let sent = format!("got {} bytes", exact.len());
    let (status, _, answer) = send(&server.addr, "POST", "/upload", &headers, exact).await;
    assert_eq!(
        (status, answer),
        (200, sent.into_bytes()),
        "forwarded as sent"
    );
    assert!(server.stop().status.success(), "record exits 0");
    let recordings = dir.path().join("recordings");
    // The one body recorded is in it twice: the request, its canonical form.
    let size = total_size(&recordings);
    assert!(
        size < 3 * LIMIT,
        "recording of {size} bytes: more than the one body of {LIMIT}"
    );
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 1);
    assert_eq!(interactions[0].request.body.len(), LIMIT, "stored decoded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_bomb_is_refused_in_replay_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("recordings")).unwrap();
    let limits = format!("limits:\n  request_body_bytes_max: {LIMIT}\n");
    let mut server = Ouli::start("replay", dir.path(), &config(9, &limits));
    for encoding in ENCODINGS {
        let headers = [("content-encoding", encoding)];
        let body = encode(encoding, BOMB_BYTES);
        let (status, answer_headers, _) =
            send(&server.addr, "POST", "/upload", &headers, body).await;
        assert_eq!(status, 413, "{encoding}");
        assert_eq!(answer_headers["x-ouli-error"], "body-too-large");
        server.assert_serving().await;
    }
    assert!(server.stop().status.success());
}

/// An upstream answering with a bomb: the client gets the answer as sent;
/// decoded, it is over `limits.response_body_bytes_max`, so it is not
/// recorded (as an answer sent that large is not), and the recording holds
/// only the ordinary answer after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_bomb_in_each_encoding_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let bombs: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        ENCODINGS
            .iter()
            .map(|e| (e.to_string(), encode(e, BOMB_BYTES)))
            .collect(),
    );
    let served = bombs.clone();
    let port = upstream(move |path, _| {
        let name = path.trim_start_matches("/bomb/");
        match served.iter().find(|(e, _)| e == name) {
            Some((encoding, body)) => (
                200,
                vec![("content-encoding", encoding.clone())],
                body.clone(),
            ),
            None => (200, vec![], b"plain".to_vec()),
        }
    })
    .await;
    let limits = format!("limits:\n  response_body_bytes_max: {LIMIT}\n");
    let mut server = Ouli::start("record", dir.path(), &config(port, &limits));
    for (encoding, body) in bombs.iter() {
        let path = format!("/bomb/{encoding}");
        let (status, headers, answer) = send(&server.addr, "GET", &path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{encoding}");
        assert_eq!(headers["content-encoding"], encoding.as_str());
        assert!(answer == *body, "{encoding}: the true answer, as sent");
        server.assert_serving().await;
    }
    let (status, _, answer) = send(&server.addr, "GET", "/plain", &[], Vec::new()).await;
    assert_eq!((status, &answer[..]), (200, &b"plain"[..]));
    assert!(server.stop().status.success(), "record exits 0");
    let size = total_size(&dir.path().join("recordings"));
    assert!(size < LIMIT, "recording of {size} bytes");
    let interactions = recorded(dir.path());
    assert_eq!(interactions.len(), 1, "only the plain answer is recorded");
    let Exchange::Http(response) = &interactions[0].exchange else {
        panic!("not HTTP");
    };
    assert_eq!(&response.chunks[0].data[..], b"plain");
    let log = std::fs::read_to_string(dir.path().join("ouli-record.log")).unwrap();
    assert_eq!(
        log.matches("once decoded").count(),
        3,
        "one log line per bomb: {log}"
    );
}

/// An answer in an encoding ouli cannot undo (an unknown one, or data that
/// does not decode) is stored as it came and replayed with its
/// `content-encoding`: the replaying client gets what the recording one got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_ouli_cannot_decode_is_replayed_with_its_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let answers: [(&str, &str, &[u8]); 3] = [
        ("/unknown", "compress", b"\x1f\x9d\x90 compressed bytes"),
        ("/corrupt", "gzip", b"\x1f\x8b not gzip inside"),
        ("/gzip", "gzip", b""),
    ];
    let gzip = encode("gzip", 1000);
    let served = gzip.clone();
    let port = upstream(move |path, _| {
        let (_, encoding, body) = answers.iter().find(|(p, _, _)| *p == path).unwrap();
        let body = if body.is_empty() {
            served.clone()
        } else {
            body.to_vec()
        };
        (200, vec![("content-encoding", encoding.to_string())], body)
    })
    .await;
    let yaml = config(port, "");
    let server = Ouli::start("record", dir.path(), &yaml);
    let mut recorded = Vec::new();
    for (path, _, _) in answers {
        let (status, headers, body) = send(&server.addr, "GET", path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{path}");
        recorded.push((headers.get("content-encoding").cloned(), body));
    }
    assert!(server.stop().status.success());
    let server = Ouli::start("replay", dir.path(), &yaml);
    for ((path, _, _), (encoding, body)) in answers.iter().zip(recorded) {
        let (status, headers, replayed) = send(&server.addr, "GET", path, &[], Vec::new()).await;
        assert_eq!(status, 200, "{path}");
        if *path == "/gzip" {
            // Decoded for storage: served decoded, without the encoding.
            assert_eq!(headers.get("content-encoding"), None);
            assert_eq!(replayed, vec![0u8; 1000]);
            assert_eq!(body, gzip);
        } else {
            assert_eq!(headers.get("content-encoding"), encoding.as_ref(), "{path}");
            assert_eq!(replayed, body, "{path}");
        }
    }
    assert!(server.stop().status.success());
}
