//! HAR 1.2 out and in: `ouli export har SRC -o OUT.har`, `ouli import har
//! IN.har DST [--session NAME] [--config C]`.
//!
//! **Export**: one HAR log of every interaction of a recording (or of every
//! recording of a dir, session after session in name order), each session's
//! entries in recorded order, each entry naming its session in
//! `_ouliSession`. Bodies that are text are given as text, others as base64
//! (`content.encoding: "base64"`; a request body's `postData._encoding`,
//! HAR 1.2 having no field for it). Timings come from the recorded offsets:
//! `receive` is the last chunk's arrival after the response head, and a
//! stream keeps its chunk boundaries and offsets in `_ouliChunks`. A
//! WebSocket conversation is an entry whose response is the `101`, its
//! frames in `_webSocketMessages` (the field Chromium's HAR export uses:
//! `type` send/receive, `time` in seconds since the epoch, `opcode`, `data`,
//! base64 for a frame that is not text) with the exact offset in
//! `_offsetUs`.
//!
//! **Import**: entries become interactions grouped into sessions by
//! `_ouliSession`, else `--session`, else the default session, one
//! `<DST>/<session>.ouli` each (replacing one there). Identity is built as
//! the proxy builds it for a live request (the config's endpoint for the
//! URL's host and port, its redaction, its match rules, the session's chain
//! in entry order), so that `ouli replay` of an imported export answers as
//! the original recording did. An entry that cannot be converted is skipped
//! and reported.
//!
//! The HAR types are serde structs; everything not in HAR 1.2 is a `_`
//! field, as the spec asks of custom fields.

use super::show::BodyKind;
use super::{SessionFile, ToolError, identity, io_error, session_files};
use crate::chain::steps_for;
use crate::config::Config;
use crate::fingerprint::CanonicalRequest;
use crate::interaction::{
    BodyChunk, Exchange, HeaderPair, Interaction, RecordedRequest, RecordedResponse, WsDirection,
    WsFrame,
};
use crate::recording::secret_scan::SecretScan;
use crate::recording::{Durability, ReadBackend, Recording, RecordingWriter};
use crate::session_name::{DEFAULT_SESSION, SessionName};
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

/// Largest HAR file imported: it is read and parsed whole.
pub const HAR_FILE_BYTES_MAX: u64 = 1 << 30;
/// Entries of one HAR file imported at most.
pub const HAR_ENTRIES_MAX: usize = 1_000_000;

const HAR_VERSION: &str = "1.2";
const HTTP_VERSION: &str = "HTTP/1.1";
const BASE64: &str = "base64";

/// A HAR file: `{"log": ...}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Har {
    pub log: Log,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Log {
    pub version: String,
    pub creator: Creator,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Creator {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub started_date_time: String,
    /// Milliseconds: the sum of the timings.
    pub time: f64,
    pub request: Request,
    pub response: Response,
    #[serde(default)]
    pub cache: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub timings: Timings,
    #[serde(
        rename = "_ouliSession",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ouli_session: Option<String>,
    /// The response's chunks: arrival offset after the head and size.
    #[serde(
        rename = "_ouliChunks",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ouli_chunks: Option<Vec<ChunkMark>>,
    #[serde(
        rename = "_webSocketMessages",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub web_socket_messages: Option<Vec<WsMessage>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkMark {
    pub offset_us: u64,
    pub size: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WsMessage {
    /// `send` (client to server) or `receive`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub opcode: u8,
    pub data: String,
    #[serde(rename = "_offsetUs", default, skip_serializing_if = "Option::is_none")]
    pub offset_us: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub http_version: String,
    #[serde(default)]
    pub cookies: Vec<serde_json::Value>,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    #[serde(default)]
    pub query_string: Vec<NameValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    #[serde(default = "unknown_size")]
    pub headers_size: i64,
    #[serde(default = "unknown_size")]
    pub body_size: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub text: String,
    /// `base64` for a body that is not text (not in HAR 1.2; `encoding`
    /// is read too, as some tools write it).
    #[serde(
        rename = "_encoding",
        alias = "encoding",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub encoding: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status: u16,
    #[serde(default)]
    pub status_text: String,
    #[serde(default)]
    pub http_version: String,
    #[serde(default)]
    pub cookies: Vec<serde_json::Value>,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    #[serde(default)]
    pub content: Content,
    #[serde(rename = "redirectURL", default)]
    pub redirect_url: String,
    #[serde(default = "unknown_size")]
    pub headers_size: i64,
    #[serde(default = "unknown_size")]
    pub body_size: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub size: i64,
    #[serde(default)]
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// The `content-encoding` the upstream used for a body stored decoded
    /// (empty: stored as it came).
    #[serde(
        rename = "_ouliOriginalEncoding",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ouli_original_encoding: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub send: f64,
    #[serde(default)]
    pub wait: f64,
    #[serde(default)]
    pub receive: f64,
}

fn unknown_size() -> i64 {
    -1
}

// ---------------------------------------------------------------------------
// Export.

/// `ouli export har SRC -o OUT`: writes the HAR of every interaction under
/// `src`; returns how many entries it holds.
pub fn export_har(src: &Path, out: &Path) -> Result<usize, ToolError> {
    let mut entries = Vec::new();
    for file in session_files(src)? {
        export_session(&file, &mut entries)?;
    }
    let har = Har {
        log: Log {
            version: HAR_VERSION.into(),
            creator: Creator {
                name: "ouli".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            entries,
        },
    };
    let count = har.log.entries.len();
    let file = std::fs::File::create(out).map_err(io_error(out))?;
    let mut writer = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut writer, &har)
        .map_err(|e| io_error(out)(std::io::Error::other(e)))?;
    writer.flush().map_err(io_error(out))?;
    Ok(count)
}

fn export_session(file: &SessionFile, entries: &mut Vec<Entry>) -> Result<(), ToolError> {
    let recording = Recording::open(&file.path, ReadBackend::Mmap)?;
    for (index, view) in recording.iter().enumerate() {
        let interaction = view?.to_interaction()?;
        let origin = CanonicalRequest::parse(&interaction.canonical)
            .and_then(|c| super::parse_target(&c.target))
            .map(|t| {
                let host = if t.host.contains(':') {
                    format!("[{}]", t.host)
                } else {
                    t.host
                };
                format!("{}://{host}:{}", t.scheme, t.port)
            })
            .ok_or_else(|| ToolError::Input {
                path: file.path.clone(),
                what: format!(
                    "interaction {}: its canonical form names no target",
                    index + 1
                ),
            })?;
        entries.push(to_entry(&interaction, &origin, &file.session));
    }
    Ok(())
}

/// A body as HAR text: itself when it is text, else base64.
fn har_text(bytes: &[u8]) -> (String, Option<String>) {
    match BodyKind::of(bytes) {
        BodyKind::Binary => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some(BASE64.into()),
        ),
        _ => (String::from_utf8_lossy(bytes).into_owned(), None),
    }
}

fn header_value<'a>(headers: &'a [HeaderPair], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_ref())
}

fn name_values(headers: &[HeaderPair]) -> Vec<NameValue> {
    headers
        .iter()
        .map(|(name, value)| NameValue {
            name: String::from_utf8_lossy(name).into_owned(),
            value: String::from_utf8_lossy(value).into_owned(),
        })
        .collect()
}

/// The query of an origin-form target, decoded, in order.
fn query_string(target: &str) -> Vec<NameValue> {
    let Some((_, query)) = target.split_once('?') else {
        return Vec::new();
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            NameValue {
                name: decode(name),
                value: decode(value),
            }
        })
        .collect()
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn to_entry(interaction: &Interaction, origin: &str, session: &str) -> Entry {
    let request = &interaction.request;
    let target = String::from_utf8_lossy(&request.target).into_owned();
    let (response, frames) = match &interaction.exchange {
        Exchange::Http(response) => (response, None),
        Exchange::WebSocket { response, frames } => (response, Some(frames)),
    };
    let post_data = (!request.body.is_empty()).then(|| {
        let (text, encoding) = har_text(&request.body);
        PostData {
            mime_type: header_value(&request.headers, "content-type")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
            text,
            encoding,
        }
    });
    let body: Vec<u8> = response
        .chunks
        .iter()
        .flat_map(|c| c.data.to_vec())
        .collect();
    let (text, encoding) = har_text(&body);
    let streamed = response.chunks.len() > 1 || response.chunks.iter().any(|c| c.offset_us > 0);
    let receive_us = response.chunks.last().map_or(0, |c| c.offset_us);
    let timings = Timings {
        send: 0.0,
        // The recorded time to the response head (0 in a version 1
        // record); the chunks' offsets count from the head.
        wait: ms(response.head_offset_us),
        receive: ms(receive_us),
    };
    Entry {
        started_date_time: iso8601(interaction.recorded_at_unix_us),
        time: timings.send + timings.wait + timings.receive,
        request: Request {
            method: String::from_utf8_lossy(&request.method).into_owned(),
            url: format!("{origin}{target}"),
            http_version: HTTP_VERSION.into(),
            cookies: Vec::new(),
            headers: name_values(&request.headers),
            query_string: query_string(&target),
            post_data,
            headers_size: -1,
            body_size: request.body.len() as i64,
        },
        response: Response {
            status: response.status,
            status_text: http::StatusCode::from_u16(response.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .into(),
            http_version: HTTP_VERSION.into(),
            cookies: Vec::new(),
            headers: name_values(&response.headers),
            content: Content {
                size: body.len() as i64,
                mime_type: header_value(&response.headers, "content-type")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
                text: (!body.is_empty()).then_some(text),
                encoding,
                ouli_original_encoding: Some(
                    String::from_utf8_lossy(&response.original_encoding).into_owned(),
                ),
            },
            redirect_url: header_value(&response.headers, "location")
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
            headers_size: -1,
            // Bytes on the wire: unknown for a body stored decoded.
            body_size: if response.original_encoding.is_empty() {
                body.len() as i64
            } else {
                -1
            },
        },
        cache: serde_json::Map::new(),
        timings,
        ouli_session: Some(session.to_owned()),
        ouli_chunks: streamed.then(|| {
            response
                .chunks
                .iter()
                .map(|c| ChunkMark {
                    offset_us: c.offset_us,
                    size: c.data.len(),
                })
                .collect()
        }),
        web_socket_messages: frames
            .map(|frames| ws_messages(frames, interaction.recorded_at_unix_us)),
    }
}

fn ws_messages(frames: &[WsFrame], started_us: u64) -> Vec<WsMessage> {
    frames
        .iter()
        .map(|frame| {
            let text = frame.opcode == 1 && std::str::from_utf8(&frame.payload).is_ok();
            WsMessage {
                kind: match frame.direction {
                    WsDirection::ClientToServer => "send".into(),
                    WsDirection::ServerToClient => "receive".into(),
                },
                time: started_us.saturating_add(frame.offset_us) as f64 / 1e6,
                opcode: frame.opcode,
                data: if text {
                    String::from_utf8_lossy(&frame.payload).into_owned()
                } else {
                    base64::engine::general_purpose::STANDARD.encode(&frame.payload)
                },
                offset_us: Some(frame.offset_us),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Import.

/// What `ouli import har` did.
#[derive(Debug, Default)]
pub struct ImportHarReport {
    /// (session, interactions written), in session order.
    pub sessions: Vec<(String, usize)>,
    /// Entries skipped, each with its place (`entries[3]`) and why.
    pub problems: Vec<String>,
}

/// An entry converted, not yet chained.
struct Pending {
    endpoint: usize,
    canonical: Vec<u8>,
    recorded_at_unix_us: u64,
    request: RecordedRequest,
    exchange: Exchange,
}

/// `ouli import har IN DST`: the entries of `input` into recordings in
/// `dst`, fingerprinted with `config`'s rules.
pub fn import_har(
    input: &Path,
    dst: &Path,
    session: Option<&str>,
    config: &Config,
) -> Result<ImportHarReport, ToolError> {
    let har = read_har(input)?;
    let rules = identity(config)?;
    let fallback = session.unwrap_or(DEFAULT_SESSION);
    let mut report = ImportHarReport::default();
    let mut sessions: BTreeMap<String, (SessionName, Vec<Pending>)> = BTreeMap::new();
    for (index, entry) in har.log.entries.iter().enumerate() {
        let place = format!("entries[{index}]");
        let name = entry.ouli_session.as_deref().unwrap_or(fallback);
        let session = match SessionName::parse(name) {
            Ok(session) => session,
            Err(error) => {
                report
                    .problems
                    .push(format!("{place}: session {name:?}: {error}"));
                continue;
            }
        };
        match convert_entry(entry, &rules) {
            Ok(pending) => sessions
                .entry(session.as_str().to_owned())
                .or_insert_with(|| (session, Vec::new()))
                .1
                .push(pending),
            Err(why) => report.problems.push(format!("{place}: {why}")),
        }
    }
    let scan = SecretScan::new(&rules.secrets);
    for (name, (session, pending)) in sessions {
        // One chain per session in entry order, WebSocket upgrades in it as
        // the proxy chains them.
        let steps = steps_for(rules.chain, pending.iter().map(|p| p.canonical.as_slice()));
        let mut writer =
            RecordingWriter::create(&session.recording_path(dst), Durability::OnClose)?;
        let count = pending.len();
        for (p, step) in pending.into_iter().zip(steps) {
            writer.append(&Interaction {
                fingerprint: step.fingerprint,
                chain_link: step.link,
                canonical: Bytes::from(p.canonical),
                endpoint: p.endpoint as u16,
                recorded_at_unix_us: p.recorded_at_unix_us,
                request: p.request,
                exchange: p.exchange,
            })?;
        }
        // Scanned before it is put in place, as a recorded one is.
        writer.finish_checked(scan.as_ref())?;
        report.sessions.push((name, count));
    }
    Ok(report)
}

fn read_har(input: &Path) -> Result<Har, ToolError> {
    let invalid = |what: String| ToolError::Input {
        path: input.to_path_buf(),
        what,
    };
    let len = std::fs::metadata(input).map_err(io_error(input))?.len();
    if len > HAR_FILE_BYTES_MAX {
        return Err(invalid(format!(
            "{len} bytes, larger than the {HAR_FILE_BYTES_MAX} bytes read (HAR_FILE_BYTES_MAX)"
        )));
    }
    let bytes = std::fs::read(input).map_err(io_error(input))?;
    let har: Har =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a HAR file: {e}")))?;
    if har.log.entries.len() > HAR_ENTRIES_MAX {
        return Err(invalid(format!(
            "{} entries, more than the {HAR_ENTRIES_MAX} imported (HAR_ENTRIES_MAX)",
            har.log.entries.len()
        )));
    }
    Ok(har)
}

/// `text` as bytes: base64-decoded when `encoding` says so.
fn decode_text(text: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    match encoding {
        Some(encoding) if encoding.eq_ignore_ascii_case(BASE64) => {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("base64 body does not decode: {e}"))
        }
        Some("") | None => Ok(text.as_bytes().to_vec()),
        Some(other) => Err(format!("body encoding {other:?} is not base64")),
    }
}

/// Scheme, port, host and origin-form target of an absolute URL.
fn split_url(url: &str) -> Option<(&str, u16, &str, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, target) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => 443,
        _ => 80,
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // A fragment is the client's; it never reaches a server.
    let target = target.split('#').next().unwrap_or(target);
    let target = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    };
    Some((scheme, port, host, target))
}

/// The endpoint whose target is the URL's host and port, else the first
/// with that host, else the first.
fn endpoint_for(rules: &crate::testserver::Converter, host: &str, port: u16) -> usize {
    let same_host =
        |e: &&crate::identity::EndpointIdentity| e.target().host.eq_ignore_ascii_case(host);
    rules
        .endpoints
        .iter()
        .position(|e| same_host(&e) && e.target().port == port)
        .or_else(|| rules.endpoints.iter().position(|e| same_host(&e)))
        .unwrap_or(0)
}

fn convert_entry(entry: &Entry, rules: &crate::testserver::Converter) -> Result<Pending, String> {
    let request = &entry.request;
    let method = request.method.as_str();
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(format!("request.method {method:?} is not an HTTP method"));
    }
    let (_, port, host, target) = split_url(&request.url)
        .ok_or_else(|| format!("request.url {:?} is not an absolute URL", request.url))?;
    let endpoint_index = endpoint_for(rules, host, port);
    let endpoint = &rules.endpoints[endpoint_index];
    let mut headers = http::HeaderMap::new();
    for header in &request.headers {
        // HTTP/2 pseudo-headers (`:authority`) are not headers.
        if header.name.starts_with(':') {
            continue;
        }
        match (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_str(&header.value),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                return Err(format!(
                    "request header {:?} is not valid HTTP",
                    header.name
                ));
            }
        }
    }
    let body = match &request.post_data {
        Some(post) => decode_text(&post.text, post.encoding.as_deref())?,
        None => Vec::new(),
    };
    // As the proxy does: a dropped header's value is a secret of this
    // interaction's response too.
    let derived = endpoint.redactor().derived_secrets(&headers);
    // Identified as the live path identifies a request (`crate::identity`):
    // an imported interaction replays to the same live request.
    let head = crate::identity::RequestHead {
        method: method.as_bytes(),
        path_and_query: target.as_bytes(),
        headers: &headers,
    };
    let identified = endpoint.identify(head, Bytes::from(body));
    let recorded_request = identified.stored_request(head);
    let canonical = identified.canonical;
    let mut response = convert_response(entry)?;
    let redactor = endpoint.redactor().with_extra_secrets(&derived);
    redactor.redact_response(&mut response);
    let exchange = match &entry.web_socket_messages {
        Some(messages) => {
            let mut frames = convert_messages(messages, &entry.started_date_time)?;
            redactor.redact_ws_frames(&mut frames);
            Exchange::WebSocket { response, frames }
        }
        None => Exchange::Http(response),
    };
    Ok(Pending {
        endpoint: endpoint_index,
        canonical,
        recorded_at_unix_us: parse_iso8601(&entry.started_date_time).unwrap_or(0),
        request: recorded_request,
        exchange,
    })
}

fn convert_response(entry: &Entry) -> Result<RecordedResponse, String> {
    let response = &entry.response;
    if !(100..=999).contains(&response.status) {
        return Err(format!(
            "response.status {} is not an HTTP status (a request that got no answer?)",
            response.status
        ));
    }
    let mut headers = Vec::with_capacity(response.headers.len());
    for header in &response.headers {
        if header.name.starts_with(':') {
            continue;
        }
        if http::HeaderName::from_bytes(header.name.as_bytes()).is_err()
            || http::HeaderValue::from_str(&header.value).is_err()
        {
            return Err(format!(
                "response header {:?} is not valid HTTP",
                header.name
            ));
        }
        headers.push((
            Bytes::from(header.name.to_ascii_lowercase()),
            Bytes::from(header.value.clone()),
        ));
    }
    let content = &response.content;
    let body = decode_text(
        content.text.as_deref().unwrap_or(""),
        content.encoding.as_deref(),
    )?;
    // HAR content is decoded: the encoding a header names is undone.
    let original_encoding = match &content.ouli_original_encoding {
        Some(encoding) => Bytes::from(encoding.clone()),
        None => header_value(&headers, "content-encoding")
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
    };
    Ok(RecordedResponse {
        status: response.status,
        headers,
        chunks: chunks(Bytes::from(body), entry.ouli_chunks.as_deref()),
        original_encoding,
        head_offset_us: wait_us(entry.timings.wait),
        trailers: Vec::new(),
    })
}

/// HAR's `timings.wait` (milliseconds, -1 when not known) as a time to
/// first byte in microseconds, bounded as a recorded gap is.
fn wait_us(wait_ms: f64) -> u64 {
    if wait_ms.is_finite() && wait_ms > 0.0 {
        (wait_ms.min(WAIT_MS_MAX) * 1000.0) as u64
    } else {
        0
    }
}

/// Most a HAR's `timings.wait` is taken as (an hour; replay caps its own
/// waits lower).
const WAIT_MS_MAX: f64 = 3_600_000.0;

/// The body cut at the recorded chunk boundaries when they add up to it,
/// else one chunk (none for an empty body).
fn chunks(body: Bytes, marks: Option<&[ChunkMark]>) -> Vec<BodyChunk> {
    let fits = marks.is_some_and(|m| m.iter().map(|c| c.size).sum::<usize>() == body.len());
    match marks {
        Some(marks) if fits => {
            let mut at = 0;
            marks
                .iter()
                .map(|mark| {
                    let data = body.slice(at..at + mark.size);
                    at += mark.size;
                    BodyChunk {
                        offset_us: mark.offset_us,
                        data,
                    }
                })
                .collect()
        }
        _ if body.is_empty() => Vec::new(),
        _ => vec![BodyChunk {
            offset_us: 0,
            data: body,
        }],
    }
}

fn convert_messages(messages: &[WsMessage], started: &str) -> Result<Vec<WsFrame>, String> {
    let started_us = parse_iso8601(started).unwrap_or(0);
    let mut frames = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let direction = match message.kind.as_str() {
            "send" => WsDirection::ClientToServer,
            "receive" => WsDirection::ServerToClient,
            other => return Err(format!("_webSocketMessages[{i}].type {other:?}")),
        };
        let payload = if message.opcode == 1 {
            message.data.as_bytes().to_vec()
        } else {
            decode_text(&message.data, Some(BASE64))
                .map_err(|e| format!("_webSocketMessages[{i}]: {e}"))?
        };
        let offset_us = message.offset_us.unwrap_or_else(|| {
            let at_us = (message.time * 1e6) as u64;
            at_us.saturating_sub(started_us)
        });
        frames.push(WsFrame {
            direction,
            opcode: message.opcode,
            offset_us,
            payload: Bytes::from(payload),
        });
    }
    Ok(frames)
}

// ---------------------------------------------------------------------------
// ISO 8601 times (UTC, as HAR's `startedDateTime`), without a date crate:
// the civil-from-days conversion of the proleptic Gregorian calendar.

const US_PER_DAY: u64 = 86_400_000_000;

/// `2026-12-03T13:05:46.123Z` for microseconds since the Unix epoch.
pub fn iso8601(unix_us: u64) -> String {
    let days = (unix_us / US_PER_DAY) as i64;
    let of_day = unix_us % US_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    let seconds = of_day / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        of_day % 1_000_000 / 1000
    )
}

/// Microseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`;
/// `None` for anything else or a time before 1970.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut micros = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let mut scaled: String = fraction[..digits].chars().take(6).collect();
        while scaled.len() < 6 {
            scaled.push('0');
        }
        micros = scaled.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(seconds * 1_000_000 + micros).ok()
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_times_round_trip_and_read_offsets() {
        // 2000-02-29T12:34:56.789Z: a leap day of a year divisible by 400.
        let us = 951_827_696_789_000;
        assert_eq!(iso8601(us), "2000-02-29T12:34:56.789Z");
        assert_eq!(parse_iso8601("2000-02-29T12:34:56.789Z"), Some(us));
        assert_eq!(parse_iso8601("2000-02-29T14:34:56.789+02:00"), Some(us));
        assert_eq!(parse_iso8601("2000-02-29T12:34:56.789123Z"), Some(us + 123));
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_iso8601("2000-13-01T00:00:00Z"), None);
        for days in [0, 59, 60, 365, 10_956, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn urls_split_into_host_port_and_origin_form_target() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a/b?x=1#frag"),
            Some(("http", 8080, "127.0.0.1", "/a/b?x=1".to_owned()))
        );
        assert_eq!(
            split_url("https://api.example.test?q"),
            Some(("https", 443, "api.example.test", "/?q".to_owned()))
        );
        assert_eq!(
            split_url("http://[::1]/"),
            Some(("http", 80, "::1", "/".to_owned()))
        );
        assert_eq!(split_url("/relative"), None);
    }

    #[test]
    fn chunk_marks_split_a_body_only_when_they_add_up_to_it() {
        let body = Bytes::from_static(b"abcdef");
        let marks = [
            ChunkMark {
                offset_us: 0,
                size: 2,
            },
            ChunkMark {
                offset_us: 500,
                size: 4,
            },
        ];
        let split = chunks(body.clone(), Some(&marks));
        assert_eq!(split.len(), 2);
        assert_eq!(
            (split[1].offset_us, &split[1].data[..]),
            (500, &b"cdef"[..])
        );
        let whole = chunks(body, Some(&marks[..1]));
        assert_eq!(whole.len(), 1);
        assert!(chunks(Bytes::new(), None).is_empty());
    }
}
