//! One writer per recording across processes: two real `ouli record`
//! processes on one recording dir, the second refused for a session the
//! first is writing (the message names the file and says who holds it),
//! and let in once the first has exited.

use crate::support::ouli::{Log, Start};
use crate::support::{client, config, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_record_process_is_refused_a_session_the_first_writes() {
    let port = upstream::fixed("{\"ok\":true}").await;
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    let yaml = config(port, "");
    let first = Start::new("record", dir.path(), &yaml)
        .recording_dir(&recordings)
        .spawn();
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second = Start::new("record", &second_dir, &yaml)
        .recording_dir(&recordings)
        .log(Log::Collect)
        .spawn();
    let session = [("test-name", "locked/one")];

    let (status, _, body) = client::send_text(&first.addr, "GET", "/v1/x", &session, "").await;
    assert_eq!(status, 200, "{body}");
    let file = recordings.join("locked/one.ouli");
    let (status, _, body) = client::send_text(&second.addr, "GET", "/v1/x", &session, "").await;
    assert_eq!(status, 500, "the second writer was let in: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains(&file.display().to_string()),
        "the file is not named: {message}"
    );
    assert!(
        message.contains("held by another ouli process")
            && message.contains(&format!("pid {}", first.pid())),
        "the holder is not named: {message}"
    );
    // Another session is not held: the second process records it.
    let other = [("test-name", "locked/two")];
    let (status, _, body) = client::send_text(&second.addr, "GET", "/v1/y", &other, "").await;
    assert_eq!(status, 200, "{body}");

    let stopped = first.stop();
    stopped.assert_success();
    assert!(
        file.is_file(),
        "the first writer's recording is not in place"
    );
    assert!(
        !recordings.join("locked/one.ouli.lock").exists(),
        "the first writer left its lock file"
    );
    // The first has exited: the same session now records in the second.
    let (status, _, body) = client::send_text(&second.addr, "GET", "/v1/z", &session, "").await;
    assert_eq!(status, 200, "{body}");
    let stopped = second.stop();
    stopped.assert_success();
    assert!(
        stopped.log.contains("held by another ouli process"),
        "the refusal is not in the second writer's log: {}",
        stopped.log
    );
    let recorded = crate::support::files::interactions(&file);
    assert_eq!(recorded.len(), 1, "the second run's recording replaced it");
    assert_eq!(&recorded[0].request.target[..], b"/v1/z");
}
