//! Compatibility with Google's `test-server` recording directories
//! (README, "Coming from test-server"): serve them as they are, import them.
//!
//! A test-server file is converted into ouli [`Interaction`]s the same way for
//! both uses, so that `ouli replay` answers the same on a directory and on its
//! import:
//! * **identity** is ouli's, never test-server's: each recorded request is
//!   redacted, put in canonical form and stored by the function the proxy
//!   uses for a live request ([`EndpointIdentity::identify`]), and chained in the file's array order with the configured chain mode.
//!   test-server's `shaSum` hashes every header (so a new `User-Agent` misses)
//!   and its `previousRequest` links cross tests; neither is used.
//! * **answers** are test-server's: status, headers but `Content-Length` and
//!   `Content-Encoding`, and the body test-server sends — `bodySegments[0]` as
//!   Go-marshalled JSON, or every segment as `data: <json>\n\n` when the URL
//!   holds `alt=sse`, or nothing.
//!
//! Sessions map to files as test-server names them: `<name>.json` with spaces
//! as `_` (`a/b` is a folder). The default session (requests without a test
//! name) is every unnamed-request file `<64 hex digits>.json` at the top of the
//! directory, after `default.json` if there is one, in file-name order, merged
//! into one chain: test-server gives each unnamed request a file of its own and
//! records no order between them.
//!
//! Nothing here writes into the test-server directory; serving caches nothing
//! on disk.

pub mod gojson;
pub mod websocket;

use crate::chain::{ChainMode, steps_for};
use crate::config::Config;
use crate::identity::{EndpointIdentity, RequestHead};
use crate::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
use crate::recording::secret_scan::SecretScan;
use crate::recording::{Recording, RecordingError, RecordingWriter, encode_recording};
use crate::session_name::{DEFAULT_SESSION, SessionName};
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config cannot be compiled (a bad regex, an unreadable secrets file).
    #[error("config: {0}")]
    Config(String),
    /// Writing an imported recording failed.
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// The chain head test-server links a test's first request to. Only written
/// and recognised, never used for ordering.
pub const HEAD_SHA: &str = "b4d6e60a9b97e7b98c63df9308728c5c88c0b40c398046772c63447b94608b4d";

/// Largest test-server file read (`.json` or `.websocket.log`): the whole file
/// is read into memory to be parsed. Larger files are reported, not read.
pub const FILE_BYTES_MAX: u64 = 1 << 30;

/// Request target given to an imported WebSocket conversation.
/// test-server does not log the upgrade request (its replay plays a test's log
/// to whatever upgrade the test makes); a path under ouli's reserved prefix
/// is never answered from a recording, so this record can never be taken for
/// an HTTP request of the same test.
pub const WEBSOCKET_TARGET: &str = "/__ouli/test-server-websocket";

const JSON_SUFFIX: &str = ".json";
const WEBSOCKET_SUFFIX: &str = ".websocket.log";

/// For replay: when `<dir>/<session>.ouli` does not exist, the proxy asks this
/// for `<dir>/<session with spaces as _>.json` (and `.websocket.log`) converted
/// in memory into a [`Recording`], fingerprinted with `config`'s matching rules.
/// `Ok(None)` when there is no such file. Never writes into `dir`.
///
/// A `.json` file that cannot be converted (not JSON, an interaction without a
/// response) is an error naming the file and the place; a damaged
/// `.websocket.log` is logged and left out, so that the test's HTTP requests
/// are still served (test-server reads that log only on an upgrade).
pub fn open_session(
    dir: &Path,
    session: &SessionName,
    config: &Config,
) -> Result<Option<Recording>, TestServerError> {
    let sources = session_sources(dir, session)?;
    let Some(name) = sources.json.first().or(sources.websocket.first()).cloned() else {
        return Ok(None);
    };
    let converter = Converter::new(config)?;
    let mut pending = Vec::new();
    for path in &sources.json {
        let bytes = read_limited(path)?;
        match converter.convert_json(&bytes) {
            Ok((converted, problems)) => {
                for problem in problems {
                    tracing::warn!("{}: {problem}", path.display());
                }
                pending.extend(converted);
            }
            Err(what) => {
                let error = TestServerError::Invalid {
                    path: path.clone(),
                    what,
                };
                tracing::error!("session {session}: {error}");
                return Err(error);
            }
        }
    }
    for path in &sources.websocket {
        let bytes = read_limited(path)?;
        match converter.convert_websocket(&bytes) {
            Ok(conversation) => pending.push(conversation),
            Err(what) => tracing::error!(
                "session {session}: {}: {what}; its WebSocket conversation is left out",
                path.display()
            ),
        }
    }
    let interactions = converter.finish(pending);
    let recording = Recording::from_bytes(name, Bytes::from(encode_recording(&interactions)))?;
    Ok(Some(recording))
}

/// The interactions of one `<name>.json`, given as bytes, converted as
/// [`open_session`] converts the file: redacted, fingerprinted and chained
/// with `config`'s rules. For the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub fn convert_json_bytes(
    bytes: &[u8],
    config: &Config,
) -> Result<Vec<Interaction>, TestServerError> {
    let converter = Converter::new(config)?;
    let (pending, _problems) =
        converter
            .convert_json(bytes)
            .map_err(|what| TestServerError::Invalid {
                path: PathBuf::from("<bytes>"),
                what,
            })?;
    Ok(converter.finish(pending))
}

/// What `ouli import test-server SRC DST` did, per file.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// (source file, interactions converted).
    pub converted: Vec<(PathBuf, usize)>,
    /// (source file, what could not be converted and why).
    pub problems: Vec<(PathBuf, String)>,
}

/// Converts a test-server recording directory into ouli recordings: one
/// `<dst>/<session>.ouli` per test (the session named by the `Test-Name` its
/// requests carried, so that a name with spaces keeps them), and
/// `<dst>/default.ouli` for every unnamed-request file. A file that cannot be
/// converted is skipped and listed in the report with the reason, as is
/// anything test-server dropped (a non-JSON body); only I/O errors (an
/// unreadable source, an unwritable destination) are errors.
pub fn import_dir(
    src: &Path,
    dst: &Path,
    config: &Config,
) -> Result<ImportReport, TestServerError> {
    let converter = Converter::new(config)?;
    let scan = SecretScan::new(&converter.secrets);
    let mut groups: BTreeMap<String, Sources> = BTreeMap::new();
    let mut report = ImportReport::default();
    collect_sources(src, src, dst, &mut groups, &mut report)?;
    // `default.*` comes before the unnamed files (already in name order), as
    // when serving.
    if let Some(group) = groups.get_mut(DEFAULT_SESSION) {
        let is_unnamed = |p: &PathBuf| {
            unnamed_stem(p.file_name().and_then(|n| n.to_str()).unwrap_or("")).is_some()
        };
        group.json.sort_by_key(is_unnamed);
        group.websocket.sort_by_key(is_unnamed);
    }
    for (stem, sources) in groups {
        let mut pending = Vec::new();
        let mut converted_files = Vec::new();
        let mut header_name: Option<String> = None;
        for path in &sources.json {
            let bytes = read_limited(path)?;
            match converter.convert_json(&bytes) {
                Ok((converted, problems)) => {
                    report
                        .problems
                        .extend(problems.into_iter().map(|why| (path.clone(), why)));
                    if header_name.is_none() {
                        header_name = converted.iter().find_map(|p| p.test_name.clone());
                    }
                    converted_files.push((path.clone(), converted.len()));
                    pending.extend(converted);
                }
                Err(why) => report.problems.push((path.clone(), why)),
            }
        }
        for path in &sources.websocket {
            let bytes = read_limited(path)?;
            match converter.convert_websocket(&bytes) {
                Ok(conversation) => {
                    converted_files.push((path.clone(), 1));
                    pending.push(conversation);
                }
                Err(why) => report.problems.push((path.clone(), why)),
            }
        }
        if converted_files.is_empty() {
            continue;
        }
        // The header keeps the spaces that the file name lost; it names this
        // file only if it mangles back to it.
        let name = match header_name {
            Some(name) if stem != DEFAULT_SESSION && name.replace(' ', "_") == stem => name,
            _ => stem.clone(),
        };
        let session = match SessionName::parse(&name) {
            Ok(session) => session,
            Err(error) => {
                for (path, _) in converted_files {
                    report.problems.push((path, error.to_string()));
                }
                continue;
            }
        };
        let interactions = converter.finish(pending);
        let mut writer = RecordingWriter::create(
            &session.recording_path(dst),
            crate::recording::Durability::OnClose,
        )?;
        for interaction in &interactions {
            writer.append(interaction)?;
        }
        // Scanned before it is put in place, as a recorded one is.
        writer.finish_checked(scan.as_ref())?;
        report.converted.extend(converted_files);
    }
    Ok(report)
}

/// The test-server files of one session.
#[derive(Debug, Default)]
struct Sources {
    json: Vec<PathBuf>,
    websocket: Vec<PathBuf>,
}

/// `<name>.json` / `<name>.websocket.log` for a named session; for the default
/// session `default.*` then every top-level unnamed-request file.
fn session_sources(dir: &Path, session: &SessionName) -> Result<Sources, TestServerError> {
    let stem = session.as_str().replace(' ', "_");
    let mut sources = Sources::default();
    let json = dir.join(format!("{stem}{JSON_SUFFIX}"));
    if json.is_file() {
        sources.json.push(json);
    }
    let log = dir.join(format!("{stem}{WEBSOCKET_SUFFIX}"));
    if log.is_file() {
        sources.websocket.push(log);
    }
    if session.as_str() == DEFAULT_SESSION {
        let entries = std::fs::read_dir(dir).map_err(|source| TestServerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut unnamed: Vec<PathBuf> = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if unnamed_stem(file_name).is_some() && entry.path().is_file() {
                unnamed.push(entry.path());
            }
        }
        unnamed.sort();
        for path in unnamed {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(WEBSOCKET_SUFFIX) {
                sources.websocket.push(path);
            } else {
                sources.json.push(path);
            }
        }
    }
    Ok(sources)
}

/// `Some(stem)` for test-server's file of an unnamed request:
/// `<64 lower-case hex digits>.json` or `.websocket.log`.
fn unnamed_stem(file_name: &str) -> Option<&str> {
    let stem = file_name
        .strip_suffix(JSON_SUFFIX)
        .or_else(|| file_name.strip_suffix(WEBSOCKET_SUFFIX))?;
    (stem.len() == 64 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(stem)
}

/// Walks `dir` (under `root`) and groups test-server files by session stem;
/// unnamed-request files and `default.*` at the top go to the default group.
/// `skip` (the import destination) is not walked when it lies inside `root`.
fn collect_sources(
    root: &Path,
    dir: &Path,
    skip: &Path,
    groups: &mut BTreeMap<String, Sources>,
    report: &mut ImportReport,
) -> Result<(), TestServerError> {
    let io = |source| TestServerError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            if path != skip {
                collect_sources(root, &path, skip, groups, report)?;
            }
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        // Session names use `/` whatever the platform's separator.
        let segments: Option<Vec<&str>> = relative
            .components()
            .map(|c| c.as_os_str().to_str())
            .collect();
        let Some(segments) = segments else {
            let lossy = path.to_string_lossy();
            if lossy.ends_with(JSON_SUFFIX) || lossy.ends_with(WEBSOCKET_SUFFIX) {
                report
                    .problems
                    .push((path.clone(), "file name is not UTF-8".into()));
            }
            continue;
        };
        let relative = segments.join("/");
        let relative = relative.as_str();
        let top_level = segments.len() == 1;
        let (stem, websocket) = if let Some(stem) = relative.strip_suffix(WEBSOCKET_SUFFIX) {
            (stem, true)
        } else if let Some(stem) = relative.strip_suffix(JSON_SUFFIX) {
            (stem, false)
        } else {
            continue;
        };
        let key = if top_level && (stem == DEFAULT_SESSION || unnamed_stem(relative).is_some()) {
            DEFAULT_SESSION.to_owned()
        } else {
            stem.to_owned()
        };
        let group = groups.entry(key).or_default();
        if websocket {
            group.websocket.push(path);
        } else {
            group.json.push(path);
        }
    }
    Ok(())
}

fn read_limited(path: &Path) -> Result<Vec<u8>, TestServerError> {
    let io = |source| TestServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > FILE_BYTES_MAX {
        return Err(TestServerError::Invalid {
            path: path.to_path_buf(),
            what: format!(
                "{len} bytes, larger than the {FILE_BYTES_MAX} bytes read (FILE_BYTES_MAX)"
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// Converts test-server files with one config's identity rules (also the
/// identity `tools` imports and compares with).
pub(crate) struct Converter {
    /// Compiled as the proxy compiles them.
    pub(crate) endpoints: Vec<EndpointIdentity>,
    /// The configured secrets (the post-write scan looks for them).
    pub(crate) secrets: Vec<Vec<u8>>,
    pub(crate) chain: ChainMode,
}

/// An interaction converted but not yet chained.
struct Pending {
    endpoint: usize,
    canonical: Vec<u8>,
    request: RecordedRequest,
    exchange: Exchange,
    /// The `Test-Name` header the request carried, if any.
    test_name: Option<String>,
}

impl Converter {
    pub(crate) fn new(config: &Config) -> Result<Converter, TestServerError> {
        let secrets = crate::identity::configured_secrets(config)
            .map_err(|e| TestServerError::Config(e.to_string()))?;
        let endpoints = (0..config.endpoints.len())
            .map(|index| EndpointIdentity::compile(config, index, &secrets))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TestServerError::Config(e.to_string()))?;
        if endpoints.is_empty() {
            return Err(TestServerError::Config("no endpoints".into()));
        }
        Ok(Converter {
            endpoints,
            secrets,
            chain: config.chain,
        })
    }

    /// The endpoint a recorded request went to: the one whose target host and
    /// port are the recorded `serverAddress` and `port`, else the first with
    /// that host, else the first endpoint.
    fn endpoint_for(&self, host: Option<&str>, port: Option<u64>) -> usize {
        let Some(host) = host else { return 0 };
        let same_host = |e: &&EndpointIdentity| e.target().host.eq_ignore_ascii_case(host);
        self.endpoints
            .iter()
            .position(|e| same_host(&e) && Some(u64::from(e.target().port)) == port)
            .or_else(|| self.endpoints.iter().position(|e| same_host(&e)))
            .unwrap_or(0)
    }

    /// A whole `<name>.json`: the interactions in array order, and what
    /// test-server dropped (reported, not fatal). `Err` names the place.
    fn convert_json(&self, bytes: &[u8]) -> Result<(Vec<Pending>, Vec<String>), String> {
        let file: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let Some(object) = file.as_object() else {
            return Err("not a test-server recording (the top level is not an object)".into());
        };
        let interactions = match object.get("interactions") {
            None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
            Some(Value::Array(items)) => items,
            Some(_) => return Err("\"interactions\" is not an array".into()),
        };
        let mut converted = Vec::with_capacity(interactions.len());
        let mut problems = Vec::new();
        for (index, interaction) in interactions.iter().enumerate() {
            let place = format!("interactions[{index}]");
            converted.push(self.convert_interaction(&place, interaction, &mut problems)?);
        }
        Ok((converted, problems))
    }

    fn convert_interaction(
        &self,
        place: &str,
        interaction: &Value,
        problems: &mut Vec<String>,
    ) -> Result<Pending, String> {
        let request = interaction
            .get("request")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{place}: no \"request\" object"))?;
        let response = interaction
            .get("response")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{place}: no \"response\" object"))?;
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| format!("{place}.request: no \"method\""))?;
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{place}.request: no \"url\""))?;
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return Err(format!(
                "{place}.request.method {method:?} is not an HTTP method"
            ));
        }
        let endpoint_index = self.endpoint_for(
            request.get("serverAddress").and_then(Value::as_str),
            request.get("port").and_then(Value::as_u64),
        );
        let endpoint = &self.endpoints[endpoint_index];

        // The request as the proxy sees a live one, then redacted as it is.
        let mut headers = http::HeaderMap::new();
        let mut test_name = None;
        if let Some(recorded) = request.get("headers").and_then(Value::as_object) {
            for (name, value) in recorded {
                let Some(value) = header_text(value) else {
                    problems.push(format!(
                        "{place}.request.headers.{name}: not a string; left out"
                    ));
                    continue;
                };
                match (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(&value),
                ) {
                    (Ok(name), Ok(value)) => {
                        if name == "test-name" {
                            test_name = value.to_str().ok().map(str::to_owned);
                        }
                        headers.append(name, value);
                    }
                    _ => problems.push(format!(
                        "{place}.request.headers.{name}: not a valid HTTP header; left out"
                    )),
                }
            }
        }
        let body = match request.get("bodySegments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(segments)) => {
                if segments.len() > 1 {
                    problems.push(format!(
                        "{place}.request.bodySegments: {} segments; only the first is a request body",
                        segments.len()
                    ));
                }
                match segments.first() {
                    None | Some(Value::Null) => Vec::new(),
                    Some(segment) => serde_json::to_vec(segment).unwrap_or_default(),
                }
            }
            Some(_) => return Err(format!("{place}.request.bodySegments is not an array")),
        };
        if body.is_empty()
            && let Some(length) = content_length(&headers)
            && length > 0
        {
            problems.push(format!(
                "{place}: the request body ({length} bytes{}) was not kept by test-server \
                 (it keeps JSON objects only); this interaction answers only a request \
                 without a body",
                content_type_note(
                    headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|v| v.as_bytes())
                )
            ));
        }
        // As the proxy does: a dropped header's value is a secret of this
        // interaction's response too.
        let derived = endpoint.redactor().derived_secrets(&headers);
        // Identified and stored as the proxy does a live request, its body
        // as stored (test-server keeps bodies decoded).
        let head = RequestHead {
            method: method.as_bytes(),
            path_and_query: url.as_bytes(),
            headers: &headers,
        };
        let identified = endpoint.identify(head, Bytes::from(body));
        let recorded_request = identified.stored_request(head);
        let mut response = convert_response(place, response, url.contains("alt=sse"), problems)?;
        // Everything imported is redacted, the response as the request.
        endpoint
            .redactor()
            .with_extra_secrets(&derived)
            .redact_response_content(&mut response);
        Ok(Pending {
            endpoint: endpoint_index,
            canonical: identified.canonical,
            request: recorded_request,
            exchange: Exchange::Http(response),
            test_name,
        })
    }

    /// A `<name>.websocket.log`: one WebSocket conversation on endpoint 0
    /// (test-server logs no URL, so no endpoint either).
    fn convert_websocket(&self, bytes: &[u8]) -> Result<Pending, String> {
        let mut frames = websocket::parse(bytes).map_err(|e| e.to_string())?;
        let endpoint = &self.endpoints[0];
        endpoint.redactor().redact_ws_frames(&mut frames);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("websocket"),
        );
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        let head = RequestHead {
            method: b"GET",
            path_and_query: WEBSOCKET_TARGET.as_bytes(),
            headers: &headers,
        };
        let canonical = endpoint.identify(head, Bytes::new()).canonical;
        let pair = |name: &'static str, value: &'static str| {
            (
                Bytes::from_static(name.as_bytes()),
                Bytes::from_static(value.as_bytes()),
            )
        };
        Ok(Pending {
            endpoint: 0,
            canonical,
            request: RecordedRequest {
                method: Bytes::from_static(b"GET"),
                target: Bytes::from_static(WEBSOCKET_TARGET.as_bytes()),
                headers: vec![pair("upgrade", "websocket"), pair("connection", "Upgrade")],
                body: Bytes::new(),
                trailers: Vec::new(),
            },
            exchange: Exchange::WebSocket {
                response: RecordedResponse {
                    status: 101,
                    headers: vec![pair("upgrade", "websocket"), pair("connection", "Upgrade")],
                    original_encoding: Bytes::new(),
                    ..RecordedResponse::default()
                },
                frames,
            },
            test_name: None,
        })
    }

    /// Chains the session's HTTP interactions in order with the configured
    /// mode; WebSocket conversations form a chain of their own, so that they
    /// never take a step of the HTTP chain that no live request takes.
    fn finish(&self, pending: Vec<Pending>) -> Vec<Interaction> {
        let (http, ws): (Vec<&Pending>, Vec<&Pending>) = pending
            .iter()
            .partition(|p| matches!(p.exchange, Exchange::Http(_)));
        let http_steps = steps_for(self.chain, http.iter().map(|p| p.canonical.as_slice()));
        let ws_steps = steps_for(
            ChainMode::Request,
            ws.iter().map(|p| p.canonical.as_slice()),
        );
        let mut http_steps = http_steps.into_iter();
        let mut ws_steps = ws_steps.into_iter();
        pending
            .into_iter()
            .map(|p| {
                let step = match p.exchange {
                    Exchange::Http(_) => http_steps.next(),
                    Exchange::WebSocket { .. } => ws_steps.next(),
                }
                .expect("one step per interaction");
                Interaction {
                    fingerprint: step.fingerprint,
                    chain_link: step.link,
                    canonical: Bytes::from(p.canonical),
                    endpoint: p.endpoint as u16,
                    // test-server records no time.
                    recorded_at_unix_us: 0,
                    request: p.request,
                    exchange: p.exchange,
                }
            })
            .collect()
    }
}

/// The response test-server would send for this interaction.
fn convert_response(
    place: &str,
    response: &serde_json::Map<String, Value>,
    sse: bool,
    problems: &mut Vec<String>,
) -> Result<RecordedResponse, String> {
    let status = response
        .get("statusCode")
        .and_then(Value::as_u64)
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| format!("{place}.response: no \"statusCode\" between 100 and 999"))?
        as u16;
    let mut headers = Vec::new();
    let mut original_encoding = Bytes::new();
    let mut wire_length = None;
    let mut content_type = None;
    if let Some(recorded) = response.get("headers").and_then(Value::as_object) {
        for (name, value) in recorded {
            let Some(value) = header_text(value) else {
                problems.push(format!(
                    "{place}.response.headers.{name}: not a string; left out"
                ));
                continue;
            };
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                // test-server never sends these two: the body is stored decoded.
                "content-length" => wire_length = value.trim().parse::<u64>().ok(),
                "content-encoding" => original_encoding = Bytes::from(value.into_bytes()),
                _ => {
                    if lower == "content-type" {
                        content_type = Some(value.clone());
                    }
                    headers.push((
                        Bytes::from(lower.into_bytes()),
                        Bytes::from(value.into_bytes()),
                    ));
                }
            }
        }
    }
    let segments: &[Value] = match response.get("bodySegments") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(segments)) => segments,
        Some(_) => return Err(format!("{place}.response.bodySegments is not an array")),
    };
    let chunks = if sse {
        segments
            .iter()
            .map(|segment| {
                let mut line = b"data: ".to_vec();
                gojson::write(segment, &mut line);
                line.extend_from_slice(b"\n\n");
                BodyChunk {
                    offset_us: 0,
                    data: Bytes::from(line),
                }
            })
            .collect()
    } else {
        segments
            .first()
            .map(|segment| BodyChunk {
                offset_us: 0,
                data: Bytes::from(gojson::to_vec(segment)),
            })
            .into_iter()
            .collect()
    };
    let bodyless_status = status < 200 || status == 204 || status == 304;
    if segments.is_empty()
        && !bodyless_status
        && (wire_length.is_some_and(|n| n > 0) || (wire_length.is_none() && content_type.is_some()))
    {
        problems.push(format!(
            "{place}: the response body ({}{}) was dropped by test-server (it keeps JSON \
             objects only); it is answered empty, as test-server answers it",
            wire_length.map_or("length unknown".to_owned(), |n| format!(
                "{n} bytes on the wire"
            )),
            content_type_note(content_type.as_deref().map(str::as_bytes)),
        ));
    }
    Ok(RecordedResponse {
        status,
        headers,
        chunks,
        original_encoding,
        ..RecordedResponse::default()
    })
}

/// A header value as test-server wrote it: a string (repeated values already
/// joined with `", "`), or a list of strings (joined the same way).
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str())
            .collect::<Option<Vec<&str>>>()
            .map(|parts| parts.join(", ")),
        _ => None,
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn content_type_note(content_type: Option<&[u8]>) -> String {
    content_type
        .map(|t| format!(", Content-Type {}", String::from_utf8_lossy(t)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let (config, _) = Config::from_text(
            "endpoints:\n  - target_host: api.example.test\n    target_port: 443\n    source_port: 0\n",
            crate::config::Format::Yaml,
            Path::new("test.yml"),
        )
        .unwrap();
        config
    }

    #[test]
    fn unnamed_files_are_64_lower_case_hex_digits() {
        let sha = "a".repeat(64);
        assert_eq!(unnamed_stem(&format!("{sha}.json")), Some(sha.as_str()));
        assert_eq!(
            unnamed_stem(&format!("{sha}.websocket.log")),
            Some(sha.as_str())
        );
        assert_eq!(unnamed_stem(&format!("{}.json", "A".repeat(64))), None);
        assert_eq!(unnamed_stem(&format!("{}.json", "a".repeat(63))), None);
        assert_eq!(unnamed_stem("default.json"), None);
    }

    #[test]
    fn default_session_is_default_json_then_unnamed_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let (b, a) = ("b".repeat(64), "a".repeat(64));
        for name in [
            format!("{b}.json"),
            format!("{a}.json"),
            "default.json".into(),
            "named.json".into(),
            format!("{a}.websocket.log"),
        ] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        let sources = session_sources(dir.path(), &SessionName::default_session()).unwrap();
        let names: Vec<String> = sources
            .json
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "default.json".to_owned(),
                format!("{a}.json"),
                format!("{b}.json")
            ]
        );
        assert_eq!(sources.websocket.len(), 1);
        let named = session_sources(dir.path(), &SessionName::parse("named").unwrap()).unwrap();
        assert_eq!(named.json.len(), 1);
        assert!(named.websocket.is_empty());
    }

    #[test]
    fn a_file_without_interactions_is_an_empty_recording_and_no_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("empty_test.json"),
            r#"{"recordID": "empty_test"}"#,
        )
        .unwrap();
        let recording = open_session(
            dir.path(),
            &SessionName::parse("empty test").unwrap(),
            &config(),
        )
        .unwrap()
        .expect("the file exists");
        assert!(recording.is_empty());
        assert!(
            open_session(
                dir.path(),
                &SessionName::parse("absent").unwrap(),
                &config()
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn a_response_without_segments_is_empty_and_sse_segments_are_events() {
        let converter = Converter::new(&config()).unwrap();
        let file = serde_json::json!({"interactions": [
            {"request": {"method": "GET", "url": "/page"},
             "response": {"statusCode": 200, "headers": {"Content-Type": "text/html", "Content-Length": "12"}}},
            {"request": {"method": "GET", "url": "/s?alt=sse"},
             "response": {"statusCode": 200, "bodySegments": [{"b": 1, "a": "<"}, {"c": 1e21}]}}
        ]});
        let (converted, problems) = converter.convert_json(file.to_string().as_bytes()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("interactions[0]"), "{problems:?}");
        let body = |p: &Pending| match &p.exchange {
            Exchange::Http(r) => r
                .chunks
                .iter()
                .flat_map(|c| c.data.to_vec())
                .collect::<Vec<u8>>(),
            Exchange::WebSocket { .. } => panic!("an HTTP interaction was expected"),
        };
        assert!(body(&converted[0]).is_empty());
        assert_eq!(
            String::from_utf8(body(&converted[1])).unwrap(),
            "data: {\"a\":\"\\u003c\",\"b\":1}\n\ndata: {\"c\":1e+21}\n\n"
        );
    }
}
