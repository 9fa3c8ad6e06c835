//! `testserver_json`: a test-server `<name>.json` recording converted as
//! `ouli` serves or imports one. Nothing panics; a file that does not convert
//! is an error, not a crash; the requests converted hold no configured secret
//! (the importer redacts them as the proxy redacts a live request); and the
//! interactions, encoded as a recording, read back as they were.

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use ouli::config::{Config, Format};
use ouli::recording::{Recording, encode_recording};
use ouli::redact::REDACTED;
use ouli::testserver::convert_json_bytes;

use super::occurrences;

/// The secret the config names; inputs that hold it must not keep it.
pub const SECRET: &str = "fuzzSecret7q";

/// Two endpoints, so that `serverAddress`/`port` pick one.
const CONFIG: &str = "
endpoints:
  - target_host: api.example.com
    target_type: https
    target_port: 443
    source_type: http
    source_port: 0
    redact_request_headers: [X-Api-Key]
  - target_host: other.example.com
    target_type: http
    target_port: 8080
    source_type: http
    source_port: 0
secrets: [fuzzSecret7q]
";

fn config() -> &'static Config {
    static CONFIG_ONCE: OnceLock<Config> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| {
        Config::from_text(CONFIG, Format::Yaml, &PathBuf::from("fuzz.yaml"))
            .expect("the fuzz config validates")
            .0
    })
}

pub fn check(data: &[u8]) {
    let Ok(interactions) = convert_json_bytes(data, config()) else {
        return;
    };
    for interaction in &interactions {
        let request = &interaction.request;
        no_secret(&request.target);
        no_secret(&request.body);
        for (_, value) in &request.headers {
            no_secret(value);
        }
        no_secret(&interaction.canonical);
    }
    let encoded = encode_recording(&interactions);
    let recording = Recording::from_bytes(PathBuf::from("fuzz.ouli"), Bytes::from(encoded))
        .expect("an encoded recording opens");
    let read: Vec<_> = recording
        .iter()
        .map(|view| {
            view.and_then(|v| v.to_interaction())
                .expect("a fresh record reads")
        })
        .collect();
    assert!(read.len() <= interactions.len());
    for interaction in &read {
        assert!(interactions.contains(interaction), "read back otherwise");
    }
}

/// `SECRET` clear of every `REDACTED` (see `redact.rs` for why the overlap).
fn no_secret(bytes: &[u8]) {
    let markers = occurrences(bytes, REDACTED);
    for at in occurrences(bytes, SECRET.as_bytes()) {
        assert!(
            markers
                .iter()
                .any(|&m| m < at + SECRET.len() && at < m + REDACTED.len()),
            "secret kept in {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}
