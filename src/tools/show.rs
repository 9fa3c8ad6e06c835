//! `ouli show FILE [N] [--json] [--full]`: interactions whole, numbered from
//! 1 as `ouli inspect` lists them.
//!
//! Each body is classified once ([`BodyKind`]): JSON (pretty-printed in the
//! text form), text, or binary (a hex dump in the text form, base64 in
//! `--json`). A response with more than one chunk is shown chunk by chunk
//! with each chunk's arrival offset; a WebSocket conversation frame by frame
//! (direction, opcode, offset, payload). The trailers a request or
//! response body ended with follow it, one `trailer name: value` a line
//! (`"trailers"` in `--json`).
//!
//! Output is bounded unless `--full`: each body shows its first
//! [`SHOW_BODY_BYTES_MAX`] bytes and says how many were cut. A stream's
//! chunks share one such budget, as do a conversation's frames, so that a
//! stream of 100k chunks prints its offsets, not 100k bodies.

use super::ToolError;
use crate::interaction::{Exchange, HeaderPair, Interaction, WsDirection};
use crate::recording::{ReadBackend, Recording};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// Bytes of one body shown without `--full` (for JSON, of its
/// pretty-printed text).
pub const SHOW_BODY_BYTES_MAX: usize = 4 << 10;

/// Bytes per line of a hex dump.
const HEX_LINE_BYTES: usize = 16;

/// What `show` prints.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShowOptions {
    /// The interaction to show (1-based); every one when `None`.
    pub ordinal: Option<usize>,
    /// One JSON document per interaction (JSON Lines without an ordinal).
    pub json: bool,
    /// Bodies whole, not cut at [`SHOW_BODY_BYTES_MAX`].
    pub full: bool,
}

/// `ouli show`: the interaction numbered `options.ordinal` of `file`, or
/// all of them, to `out`.
pub fn show(file: &Path, options: &ShowOptions, out: &mut dyn Write) -> Result<(), ToolError> {
    let recording = Recording::open(file, ReadBackend::Mmap)?;
    let total = recording.len();
    if let Some(n) = options.ordinal
        && (n == 0 || n > total)
    {
        return Err(ToolError::Usage(format!(
            "{}: no interaction {n}: it holds {total}, numbered from 1 (as `ouli inspect` lists them)",
            file.display()
        )));
    }
    for (index, view) in recording.iter().enumerate() {
        let ordinal = index + 1;
        if options.ordinal.is_some_and(|n| n != ordinal) {
            continue;
        }
        let interaction = view?.to_interaction()?;
        if options.json {
            let document = to_json(&interaction, ordinal, options.full);
            writeln!(out, "{document}")?;
        } else {
            write_text(&interaction, ordinal, total, options.full, out)?;
        }
    }
    Ok(())
}

/// How a body is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Empty,
    /// One JSON document.
    Json,
    /// UTF-8 without control characters but tab, CR and LF.
    Text,
    Binary,
}

impl BodyKind {
    pub fn of(bytes: &[u8]) -> BodyKind {
        if bytes.is_empty() {
            return BodyKind::Empty;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return BodyKind::Binary;
        };
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
        {
            return BodyKind::Binary;
        }
        let looks_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
        if looks_json && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            return BodyKind::Json;
        }
        BodyKind::Text
    }

    fn name(self) -> &'static str {
        match self {
            BodyKind::Empty => "empty",
            BodyKind::Json => "json",
            BodyKind::Text => "text",
            BodyKind::Binary => "binary",
        }
    }
}

/// Bytes still to show of one body (or of a stream's chunks together);
/// unlimited with `--full`.
struct Budget(Option<usize>);

impl Budget {
    fn new(full: bool) -> Budget {
        Budget((!full).then_some(SHOW_BODY_BYTES_MAX))
    }

    /// How many of `len` bytes to show, taken from the budget.
    fn take(&mut self, len: usize) -> usize {
        match &mut self.0 {
            None => len,
            Some(left) => {
                let shown = len.min(*left);
                *left -= shown;
                shown
            }
        }
    }
}

/// `text` cut to `max` bytes on a character boundary.
fn cut_text(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `--json` form of a body: kind, size, the bytes shown (as text, or
/// base64 when binary) and how many were cut.
fn body_json(bytes: &[u8], budget: &mut Budget) -> Value {
    let kind = BodyKind::of(bytes);
    let mut body = json!({ "kind": kind.name(), "bytes": bytes.len() });
    let shown = match kind {
        BodyKind::Empty => return body,
        BodyKind::Binary => {
            let shown = budget.take(bytes.len());
            body["base64"] = base64::engine::general_purpose::STANDARD
                .encode(&bytes[..shown])
                .into();
            shown
        }
        BodyKind::Json | BodyKind::Text => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let shown = cut_text(text, budget.take(text.len()));
            body["text"] = shown.into();
            shown.len()
        }
    };
    if shown < bytes.len() {
        body["cut_bytes"] = (bytes.len() - shown).into();
    }
    body
}

fn headers_json(headers: &[HeaderPair]) -> Value {
    headers
        .iter()
        .map(|(name, value)| {
            json!({
                "name": String::from_utf8_lossy(name),
                "value": String::from_utf8_lossy(value),
            })
        })
        .collect()
}

/// The `--json` document of one interaction.
pub fn to_json(interaction: &Interaction, ordinal: usize, full: bool) -> Value {
    let request = &interaction.request;
    let (response, frames) = match &interaction.exchange {
        Exchange::Http(response) => (response, None),
        Exchange::WebSocket { response, frames } => (response, Some(frames)),
    };
    let body: Vec<u8> = response
        .chunks
        .iter()
        .flat_map(|c| c.data.to_vec())
        .collect();
    let mut chunk_budget = Budget::new(full);
    let chunks: Vec<Value> = response
        .chunks
        .iter()
        .map(|chunk| {
            json!({
                "offset_us": chunk.offset_us,
                "bytes": chunk.data.len(),
                "body": body_json(&chunk.data, &mut chunk_budget),
            })
        })
        .collect();
    let mut document = json!({
        "ordinal": ordinal,
        "fingerprint": interaction.fingerprint.to_hex(),
        "chain_link": interaction.chain_link.to_hex(),
        "endpoint": interaction.endpoint,
        "recorded_at_unix_us": interaction.recorded_at_unix_us,
        "websocket": frames.is_some(),
        "request": {
            "method": String::from_utf8_lossy(&request.method),
            "target": String::from_utf8_lossy(&request.target),
            "headers": headers_json(&request.headers),
            "body": body_json(&request.body, &mut Budget::new(full)),
            "trailers": headers_json(&request.trailers),
        },
        "response": {
            "status": response.status,
            "headers": headers_json(&response.headers),
            "original_encoding": String::from_utf8_lossy(&response.original_encoding),
            "body": body_json(&body, &mut Budget::new(full)),
            "chunks": chunks,
            "trailers": headers_json(&response.trailers),
        },
    });
    if let Some(frames) = frames {
        let mut budget = Budget::new(full);
        document["frames"] = frames
            .iter()
            .map(|frame| {
                json!({
                    "direction": direction_name(frame.direction),
                    "opcode": frame.opcode,
                    "offset_us": frame.offset_us,
                    "payload": body_json(&frame.payload, &mut budget),
                })
            })
            .collect();
    }
    document
}

fn direction_name(direction: WsDirection) -> &'static str {
    match direction {
        WsDirection::ClientToServer => "client",
        WsDirection::ServerToClient => "server",
    }
}

fn opcode_name(opcode: u8) -> &'static str {
    match opcode {
        0 => "continuation",
        1 => "text",
        2 => "binary",
        8 => "close",
        9 => "ping",
        10 => "pong",
        _ => "reserved",
    }
}

/// Microseconds as milliseconds with three decimals.
fn millis(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// The text form of one interaction.
fn write_text(
    interaction: &Interaction,
    ordinal: usize,
    total: usize,
    full: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let request = &interaction.request;
    let (response, frames) = match &interaction.exchange {
        Exchange::Http(response) => (response, None),
        Exchange::WebSocket { response, frames } => (response, Some(frames)),
    };
    let method = String::from_utf8_lossy(&request.method);
    let target = String::from_utf8_lossy(&request.target);
    writeln!(
        out,
        "=== interaction {ordinal} of {total}: {method} {target} -> {}{} ===",
        response.status,
        if frames.is_some() { " (WebSocket)" } else { "" }
    )?;
    writeln!(out, "endpoint: {}", interaction.endpoint)?;
    writeln!(out, "fingerprint: {}", interaction.fingerprint)?;
    writeln!(out, "chain link: {}", interaction.chain_link)?;
    writeln!(
        out,
        "recorded at: {} ({} unix µs)",
        super::har::iso8601(interaction.recorded_at_unix_us),
        interaction.recorded_at_unix_us
    )?;
    writeln!(out, "--- request ---")?;
    writeln!(out, "{method} {target}")?;
    write_headers(&request.headers, out)?;
    write_body(&request.body, &mut Budget::new(full), out)?;
    write_trailers(&request.trailers, out)?;
    writeln!(out, "--- response ---")?;
    let reason = http::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    writeln!(out, "{} {reason}", response.status)?;
    write_headers(&response.headers, out)?;
    if !response.original_encoding.is_empty() {
        writeln!(
            out,
            "(body stored decoded; it came with content-encoding {})",
            String::from_utf8_lossy(&response.original_encoding)
        )?;
    }
    match response.chunks.as_slice() {
        [] => write_body(b"", &mut Budget::new(full), out)?,
        [only] if only.offset_us == 0 => write_body(&only.data, &mut Budget::new(full), out)?,
        chunks => {
            let mut budget = Budget::new(full);
            writeln!(
                out,
                "stream: {} chunk(s), {} bytes",
                chunks.len(),
                response.body_len()
            )?;
            for (i, chunk) in chunks.iter().enumerate() {
                writeln!(
                    out,
                    "chunk {} at +{}, {} bytes:",
                    i + 1,
                    millis(chunk.offset_us),
                    chunk.data.len()
                )?;
                write_body(&chunk.data, &mut budget, out)?;
            }
        }
    }
    write_trailers(&response.trailers, out)?;
    if let Some(frames) = frames {
        writeln!(out, "--- websocket: {} frame(s) ---", frames.len())?;
        let mut budget = Budget::new(full);
        for (i, frame) in frames.iter().enumerate() {
            let arrow = match frame.direction {
                WsDirection::ClientToServer => "client -> server",
                WsDirection::ServerToClient => "server -> client",
            };
            writeln!(
                out,
                "frame {} {arrow} {} (opcode {}) at +{}, {} bytes:",
                i + 1,
                opcode_name(frame.opcode),
                frame.opcode,
                millis(frame.offset_us),
                frame.payload.len()
            )?;
            write_body(&frame.payload, &mut budget, out)?;
        }
    }
    writeln!(out)
}

fn write_headers(headers: &[HeaderPair], out: &mut dyn Write) -> std::io::Result<()> {
    for (name, value) in headers {
        writeln!(
            out,
            "{}: {}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        )?;
    }
    Ok(())
}

/// Trailer fields after the body they ended, one `trailer name: value` a
/// line (nothing when there are none).
fn write_trailers(trailers: &[HeaderPair], out: &mut dyn Write) -> std::io::Result<()> {
    for (name, value) in trailers {
        writeln!(
            out,
            "trailer {}: {}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        )?;
    }
    Ok(())
}

/// A body in the text form, after a blank line: pretty JSON, text, or a hex
/// dump, cut to what `budget` allows with a line saying how much was cut.
fn write_body(bytes: &[u8], budget: &mut Budget, out: &mut dyn Write) -> std::io::Result<()> {
    let kind = BodyKind::of(bytes);
    let (shown, of) = match kind {
        BodyKind::Empty => return writeln!(out, "(no body)"),
        BodyKind::Json | BodyKind::Text => {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            let pretty = (kind == BodyKind::Json)
                .then(|| serde_json::from_str::<Value>(text).ok())
                .flatten()
                .and_then(|value| serde_json::to_string_pretty(&value).ok());
            let text = pretty.as_deref().unwrap_or(text);
            let shown = cut_text(text, budget.take(text.len()));
            writeln!(out)?;
            writeln!(out, "{}", shown.trim_end_matches('\n'))?;
            (shown.len(), text.len())
        }
        BodyKind::Binary => {
            let shown = budget.take(bytes.len());
            writeln!(out, "\n(binary, {} bytes)", bytes.len())?;
            hex_dump(&bytes[..shown], out)?;
            (shown, bytes.len())
        }
    };
    if shown < of {
        writeln!(
            out,
            "[{} of {of} bytes cut (SHOW_BODY_BYTES_MAX {SHOW_BODY_BYTES_MAX}); --full shows all]",
            of - shown
        )?;
    }
    Ok(())
}

/// `offset  hex bytes  |ascii|`, [`HEX_LINE_BYTES`] a line.
fn hex_dump(bytes: &[u8], out: &mut dyn Write) -> std::io::Result<()> {
    for (line, chunk) in bytes.chunks(HEX_LINE_BYTES).enumerate() {
        let mut hex = String::with_capacity(HEX_LINE_BYTES * 3);
        for (i, byte) in chunk.iter().enumerate() {
            if i == HEX_LINE_BYTES / 2 {
                hex.push(' ');
            }
            hex.push_str(&format!("{byte:02x} "));
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(
            out,
            "{:08x}  {hex:<width$} |{ascii}|",
            line * HEX_LINE_BYTES,
            width = HEX_LINE_BYTES * 3 + 1
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified_json_text_or_binary() {
        assert_eq!(BodyKind::of(b""), BodyKind::Empty);
        assert_eq!(BodyKind::of(br#" {"a": [1]}"#), BodyKind::Json);
        assert_eq!(BodyKind::of(b"{not json"), BodyKind::Text);
        assert_eq!(BodyKind::of("héllo\r\n\tworld".as_bytes()), BodyKind::Text);
        assert_eq!(BodyKind::of(b"a\x00b"), BodyKind::Binary);
        assert_eq!(BodyKind::of(b"\xff\xfe"), BodyKind::Binary);
    }

    #[test]
    fn a_hex_dump_shows_offsets_bytes_and_printable_ascii() {
        let mut out = Vec::new();
        hex_dump(&(0u8..20).chain(*b"AB").collect::<Vec<_>>(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("00000000  00 01 02 03 04 05 06 07  08 09"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("00000010  10 11 12 13 41 42"),
            "{text}"
        );
        assert!(lines[1].ends_with("|....AB|"), "{text}");
    }

    #[test]
    fn a_cut_body_says_how_much_was_cut_and_full_shows_all() {
        let body = "x".repeat(SHOW_BODY_BYTES_MAX + 100);
        let mut out = Vec::new();
        write_body(body.as_bytes(), &mut Budget::new(false), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(&format!("[100 of {} bytes cut", body.len())),
            "{text}"
        );
        let json = body_json(body.as_bytes(), &mut Budget::new(false));
        assert_eq!(json["cut_bytes"], 100);
        let json = body_json(body.as_bytes(), &mut Budget::new(true));
        assert_eq!(json["text"].as_str().unwrap().len(), body.len());
        assert!(json.get("cut_bytes").is_none());
    }
}
