//! Writes the shipped sample recording `recordings/default.ouli` with ouli's
//! own library, for the config beside it (`recordings/ouli.yaml`): the
//! canonical form is computed by `fingerprint::Matcher` with that endpoint's
//! target and matching rules, and chained by `chain::ChainState` in the
//! config's chain mode — exactly what `ouli replay` computes for the README's
//! `curl http://127.0.0.1:8080/get`. So the sample needs no network to make.
//!
//! The responses are the shape httpbin.org answers (`/get` echoes the request,
//! `/json` is its fixed slideshow document); `tests/it/cli.rs` starts the real
//! binary on the result and checks the replayed bytes.
//!
//! ```text
//! scripts/make-sample            # or:
//! cargo run --example make-sample -- --config recordings/ouli.yaml --recording-dir recordings
//! ```

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use ouli::chain::ChainState;
use ouli::config::{Config, Scheme};
use ouli::fingerprint::{Matcher, RequestParts, Target};
use ouli::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
use ouli::recording::RecordingWriter;
use ouli::session_name::SessionName;
use std::path::PathBuf;

#[derive(clap::Parser, Debug)]
#[command(about = "Write the sample recording served by the README's first command")]
struct Args {
    #[arg(long, default_value = "recordings/ouli.yaml")]
    config: PathBuf,
    #[arg(long, default_value = "recordings")]
    recording_dir: PathBuf,
}

/// The headers curl sends for `curl http://127.0.0.1:8080/<path>`.
const CURL_HEADERS: &[(&str, &str)] = &[
    ("host", "127.0.0.1:8080"),
    ("user-agent", "curl/8.5.0"),
    ("accept", "*/*"),
];

/// httpbin.org's answer to `GET /get` from curl (its `origin` is a
/// documentation address, RFC 5737).
const GET_BODY: &str = r#"{
  "args": {},
  "headers": {
    "Accept": "*/*",
    "Host": "httpbin.org",
    "User-Agent": "curl/8.5.0"
  },
  "origin": "203.0.113.7",
  "url": "https://httpbin.org/get"
}
"#;

/// httpbin.org's fixed `GET /json` document.
const JSON_BODY: &str = r#"{
  "slideshow": {
    "author": "Yours Truly",
    "date": "date of publication",
    "slides": [
      {
        "title": "Wake up to WonderWidgets!",
        "type": "all"
      },
      {
        "items": [
          "Why <em>WonderWidgets</em> are great",
          "Who <em>buys</em> WonderWidgets"
        ],
        "title": "Overview",
        "type": "all"
      }
    ],
    "title": "Sample Slide Show"
  }
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let (config, _warnings) = Config::load(&args.config)?;
    let endpoint = &config.endpoints[0];
    let target = Target {
        scheme: match endpoint.target_type {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
        .to_owned(),
        host: endpoint.target_host.clone(),
        port: endpoint.target_port,
    };
    let matcher = Matcher::new(&endpoint.matching);
    let mut chain = ChainState::new(config.chain);
    let path = SessionName::default_session().recording_path(&args.recording_dir);
    let mut writer = RecordingWriter::create(&path, config.durability)?;

    let mut headers = HeaderMap::new();
    for (name, value) in CURL_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    for (request_path, body) in [("/get", GET_BODY), ("/json", JSON_BODY)] {
        let mut canonical = Vec::new();
        matcher.canonical_form(
            &target,
            &RequestParts {
                method: b"GET",
                path_and_query: request_path.as_bytes(),
                headers: &headers,
                body: b"",
            },
            &mut canonical,
        );
        let step = chain.peek(&canonical);
        chain.commit(&step);
        let interaction = Interaction {
            fingerprint: step.fingerprint,
            chain_link: step.link,
            canonical: Bytes::from(canonical),
            endpoint: 0,
            // A fixed time keeps the sample byte-for-byte reproducible
            // (2026-01-01T00:00:00Z).
            recorded_at_unix_us: 1_767_225_600_000_000,
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from_static(request_path.as_bytes()),
                headers: CURL_HEADERS
                    .iter()
                    .map(|(name, value)| {
                        (
                            Bytes::from_static(name.as_bytes()),
                            Bytes::from_static(value.as_bytes()),
                        )
                    })
                    .collect(),
                body: Bytes::new(),
                trailers: Vec::new(),
            },
            exchange: Exchange::Http(RecordedResponse {
                status: 200,
                headers: vec![
                    (
                        Bytes::from_static(b"content-type"),
                        Bytes::from_static(b"application/json"),
                    ),
                    (
                        Bytes::from_static(b"server"),
                        Bytes::from_static(b"gunicorn/19.9.0"),
                    ),
                    (
                        Bytes::from_static(b"access-control-allow-origin"),
                        Bytes::from_static(b"*"),
                    ),
                ],
                chunks: vec![BodyChunk {
                    offset_us: 0,
                    data: Bytes::from_static(body.as_bytes()),
                }],
                original_encoding: Bytes::new(),
                // Made up, not recorded: no time to first byte, no trailers.
                ..RecordedResponse::default()
            }),
        };
        writer.append(&interaction)?;
    }
    let written = writer.len();
    let path = writer.finish()?;
    println!(
        "make-sample: wrote {written} interactions to {}",
        path.display()
    );
    Ok(())
}
