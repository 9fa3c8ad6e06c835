//! Writes the recordings `scripts/bench-replay` serves, with the library itself
//! (`RecordingWriter`, `fingerprint::Matcher`, `chain::ChainState`), so that
//! each fingerprint is the one the server computes for the load generator's
//! request: the request built here is the one wrk sends (`GET <path>`, a
//! `Host` header, plus `Test-Name` for the sessions case), canonicalised for
//! the same target and chained the same way (`chain: request`).
//!
//! `scripts/bench-replay` checks that the first request of every case is a hit
//! before it measures anything, so a drift between this and the server shows
//! up as an error, never as a fast miss.
//!
//! ```text
//! gen-recording --dir D --target-port 9 --host 127.0.0.1:8080 one --body-bytes 1024
//! gen-recording --dir D --target-port 9 --host 127.0.0.1:8080 many --count 100000
//! gen-recording --dir D --target-port 9 --host 127.0.0.1:8080 sessions --count 256
//! gen-recording --dir D --target-port 9 --host 127.0.0.1:8080 chain --count 1000
//! ```

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use ouli::chain::{ChainMode, ChainState};
use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};
use ouli::interaction::{
    BodyChunk, Exchange, HeaderPair, Interaction, RecordedRequest, RecordedResponse,
};
use ouli::recording::{Durability, RecordingWriter};
use ouli::session_name::{DEFAULT_SESSION, RECORDING_EXTENSION};
use std::path::{Path, PathBuf};

#[derive(clap::Parser, Debug)]
#[command(about = "Write benchmark recordings with ouli's own library")]
struct Args {
    /// Recording directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// The endpoint's target_host in the replay config.
    #[arg(long, default_value = "127.0.0.1")]
    target_host: String,
    /// The endpoint's target_port in the replay config.
    #[arg(long)]
    target_port: u16,
    /// The `Host` header the load generator sends (`127.0.0.1:<ouli port>`).
    #[arg(long)]
    host: String,
    /// Response body length in bytes (a JSON object).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    #[command(subcommand)]
    case: Case,
}

#[derive(clap::Subcommand, Debug)]
enum Case {
    /// One interaction `GET <path>` in the default session.
    One {
        #[arg(long, default_value = "/v1/items/42")]
        path: String,
    },
    /// `count` distinct interactions `GET /items/<1..=count>` in the default session.
    Many {
        #[arg(long, default_value_t = 100_000)]
        count: u32,
    },
    /// `GET <path>` once in each of `count` sessions `s<0..count>` (Test-Name).
    Sessions {
        #[arg(long, default_value_t = 256)]
        count: u32,
        #[arg(long, default_value = "/v1/items/42")]
        path: String,
    },
    /// `count` identical `GET <path>` in session `<name>`: a chain of `count`.
    Chain {
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value = "/v1/poll")]
        path: String,
        /// Session names (comma-separated); each gets a copy of the chain.
        #[arg(long, default_value = "chain-0,chain-1")]
        sessions: String,
    },
}

/// One session's recording being written, with the chain state the server
/// will rebuild as it replays.
struct SessionWriter {
    writer: RecordingWriter,
    chain: ChainState,
}

struct Generator {
    matcher: Matcher,
    target: Target,
    host: HeaderValue,
    response_body: Bytes,
    canonical: Vec<u8>,
}

impl Generator {
    fn interaction(
        &mut self,
        session: &mut SessionWriter,
        path: &str,
        test_name: Option<&str>,
    ) -> Interaction {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, self.host.clone());
        let mut recorded_headers: Vec<HeaderPair> = vec![(
            Bytes::from_static(b"Host"),
            Bytes::copy_from_slice(self.host.as_bytes()),
        )];
        if let Some(name) = test_name {
            headers.insert(
                "test-name",
                HeaderValue::from_str(name).expect("session names are ASCII"),
            );
            recorded_headers.push((
                Bytes::from_static(b"Test-Name"),
                Bytes::copy_from_slice(name.as_bytes()),
            ));
        }
        self.canonical.clear();
        self.matcher.canonical_form(
            &self.target,
            &RequestParts {
                method: b"GET",
                path_and_query: path.as_bytes(),
                headers: &headers,
                body: b"",
            },
            &mut self.canonical,
        );
        let step = session.chain.peek(&self.canonical);
        session.chain.commit(&step);
        Interaction {
            fingerprint: step.fingerprint,
            chain_link: step.link,
            canonical: Bytes::copy_from_slice(&self.canonical),
            endpoint: 0,
            recorded_at_unix_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::copy_from_slice(path.as_bytes()),
                headers: recorded_headers,
                body: Bytes::new(),
                trailers: Vec::new(),
            },
            exchange: Exchange::Http(RecordedResponse {
                status: 200,
                headers: vec![(
                    Bytes::from_static(b"content-type"),
                    Bytes::from_static(b"application/json"),
                )],
                chunks: vec![BodyChunk {
                    offset_us: 0,
                    data: self.response_body.clone(),
                }],
                original_encoding: Bytes::new(),
                ..RecordedResponse::default()
            }),
        }
    }
}

fn open_session(dir: &Path, name: &str) -> Result<SessionWriter, Box<dyn std::error::Error>> {
    let path = dir.join(format!("{name}.{RECORDING_EXTENSION}"));
    Ok(SessionWriter {
        writer: RecordingWriter::create(&path, Durability::None)?,
        chain: ChainState::new(ChainMode::Request),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    std::fs::create_dir_all(&args.dir)?;
    let mut generator = Generator {
        matcher: Matcher::new(&MatchRules::default()),
        target: Target {
            scheme: "http".to_owned(),
            host: args.target_host.clone(),
            port: args.target_port,
        },
        host: HeaderValue::from_str(&args.host)?,
        response_body: json_body(args.body_bytes),
        canonical: Vec::with_capacity(1024),
    };
    let mut written = 0usize;
    match &args.case {
        Case::One { path } => {
            let mut session = open_session(&args.dir, DEFAULT_SESSION)?;
            let interaction = generator.interaction(&mut session, path, None);
            session.writer.append(&interaction)?;
            session.writer.finish()?;
            written += 1;
        }
        Case::Many { count } => {
            let mut session = open_session(&args.dir, DEFAULT_SESSION)?;
            for i in 1..=*count {
                let interaction = generator.interaction(&mut session, &format!("/items/{i}"), None);
                session.writer.append(&interaction)?;
            }
            written += session.writer.len();
            session.writer.finish()?;
        }
        Case::Sessions { count, path } => {
            for s in 0..*count {
                let name = format!("s{s}");
                let mut session = open_session(&args.dir, &name)?;
                let interaction = generator.interaction(&mut session, path, Some(&name));
                session.writer.append(&interaction)?;
                session.writer.finish()?;
                written += 1;
            }
        }
        Case::Chain {
            count,
            path,
            sessions,
        } => {
            for name in sessions.split(',').filter(|s| !s.is_empty()) {
                let mut session = open_session(&args.dir, name)?;
                for _ in 0..*count {
                    let interaction = generator.interaction(&mut session, path, Some(name));
                    session.writer.append(&interaction)?;
                }
                written += session.writer.len();
                session.writer.finish()?;
            }
        }
    }
    println!(
        "gen-recording wrote {written} interactions to {}",
        args.dir.display()
    );
    Ok(())
}

/// A JSON object of exactly `len` bytes (at least 16): `{"data":"xxx…"}`, the
/// same bytes examples/upstream.rs and examples/ceiling.rs serve.
fn json_body(len: usize) -> Bytes {
    let len = len.max(16);
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"data\":\"");
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}
