//! `redact`: the redactor with secrets, sensitive keys and bodies from the
//! input. Nothing panics; no secret survives anywhere the redactor writes
//! (bytes, bodies, chunked bodies, request targets and headers, header maps,
//! WebSocket frames); a chunked body redacts as the same bytes whole; a
//! `content-length` that gave the body's length still gives it (unless that
//! length, in digits, holds a secret: then it is rightly `REDACTED`).
//!
//! "Survives" is judged soundly: an occurrence of a secret in the output
//! that overlaps a `REDACTED` could have been made by the replacement itself
//! (secret `Dx`, text `<secret>x`), so only occurrences clear of every
//! `REDACTED` count. Where a JSON body is rewritten (sensitive keys), its
//! whitespace goes and tokens are joined, which could make an occurrence out
//! of two pieces: there only secrets of token bytes ([`TOKEN_BYTES`]), which
//! never straddle a JSON token boundary, are judged.

use std::cell::RefCell;

use bytes::Bytes;
use ouli::interaction::{BodyChunk, RecordedRequest, RecordedResponse, WsDirection, WsFrame};
use ouli::redact::{DEFAULT_SENSITIVE_JSON_KEYS, REDACTED, RedactionRules, Redactor};

use super::{Input, occurrences};

/// Secrets one input configures at most.
const SECRETS_MAX: u8 = 4;

/// Longest secret taken from the input.
const SECRET_BYTES_MAX: usize = 24;

/// Bytes a secret judged in rewritten JSON may hold: none of JSON's
/// punctuation, quotes or whitespace.
const TOKEN_BYTES: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=%";

pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let secrets: Vec<Vec<u8>> = (0..1 + input.byte() % SECRETS_MAX)
        .map(|_| {
            let raw = input.short();
            raw[..raw.len().min(SECRET_BYTES_MAX)].to_vec()
        })
        .filter(|s| !s.is_empty())
        .collect();
    let mut sensitive_json_keys: Vec<String> = DEFAULT_SENSITIVE_JSON_KEYS
        .iter()
        .map(|k| k.to_string())
        .collect();
    let extra_key = String::from_utf8_lossy(input.short()).into_owned();
    if !extra_key.is_empty() {
        sensitive_json_keys.push(extra_key);
    }
    let dropped = String::from_utf8_lossy(input.short()).into_owned();
    let rules = RedactionRules {
        drop_request_headers: vec!["authorization".into(), dropped.clone()],
        secrets: secrets.clone(),
        sensitive_json_keys,
        response_header_replacements: Vec::new(),
    };
    let redactor = compiled(&rules);
    let tokens: Vec<Vec<u8>> = secrets
        .iter()
        .filter(|s| s.iter().all(|b| TOKEN_BYTES.contains(b)))
        .cloned()
        .collect();

    let pieces: Vec<Vec<u8>> = (0..input.byte() % 6)
        .map(|_| text(&mut input, &secrets))
        .collect();
    let body = text(&mut input, &secrets);

    let redacted = redactor.redact_bytes(&body);
    no_secret(&redacted, &secrets, "redact_bytes");
    no_secret(&redactor.redact_body(&body), &tokens, "redact_body");

    chunks(&redactor, &pieces, &secrets, &tokens);
    request(&redactor, &mut input, &body, &secrets, &tokens, &dropped);
    header_map(&redactor, &pieces, &secrets, &dropped);

    let mut frames: Vec<WsFrame> = pieces
        .iter()
        .map(|p| WsFrame {
            direction: WsDirection::ServerToClient,
            opcode: 1,
            offset_us: 0,
            payload: Bytes::from(p.clone()),
        })
        .collect();
    redactor.redact_ws_frames(&mut frames);
    for frame in &frames {
        no_secret(&frame.payload, &secrets, "redact_ws_frames");
    }
}

/// `Redactor::new(rules)`, reused while the rules stay the same: building
/// its automata is most of an input's time, and the fuzzer's mutations
/// mostly change the text, not the secrets.
fn compiled(rules: &RedactionRules) -> Redactor {
    thread_local! {
        static LAST: RefCell<Option<(RedactionRules, Redactor)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((cached, redactor)) = last.as_ref()
            && cached == rules
        {
            return redactor.clone();
        }
        let redactor = Redactor::new(rules).expect("rules without regexes compile");
        *last = Some((rules.clone(), redactor.clone()));
        redactor
    })
}

/// Text made of literal pieces and secrets, as the input says.
fn text(input: &mut Input<'_>, secrets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..input.byte() % 8 {
        let op = input.byte();
        match secrets.get(usize::from(op >> 2) % secrets.len().max(1)) {
            Some(secret) if op & 3 == 0 => out.extend_from_slice(secret),
            _ => out.extend_from_slice(input.short()),
        }
    }
    out
}

/// Panics when a secret occurs in `output` clear of every `REDACTED`.
fn no_secret(output: &[u8], secrets: &[Vec<u8>], what: &str) {
    let markers = occurrences(output, REDACTED);
    for secret in secrets {
        for at in occurrences(output, secret) {
            let end = at + secret.len();
            let excused = markers.iter().any(|&m| m < end && at < m + REDACTED.len());
            assert!(
                excused,
                "{what}: secret {:?} survives at {at} in {:?}",
                String::from_utf8_lossy(secret),
                String::from_utf8_lossy(output)
            );
        }
    }
}

fn joined(chunks: &[BodyChunk]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.data.iter().copied()).collect()
}

/// A body in chunks: redacted as it is whole, chunk times kept in order,
/// no empty chunk made; as a response, `content-length` follows the body.
fn chunks(redactor: &Redactor, pieces: &[Vec<u8>], secrets: &[Vec<u8>], tokens: &[Vec<u8>]) {
    let original: Vec<BodyChunk> = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| BodyChunk {
            offset_us: i as u64,
            data: Bytes::from(p.clone()),
        })
        .collect();
    let whole = joined(&original);
    let mut split = original.clone();
    redactor.redact_chunks(&mut split);
    let redacted = joined(&split);
    assert_eq!(
        redacted,
        redactor.redact_bytes(&whole).into_owned(),
        "a chunked body redacts otherwise than whole"
    );
    no_secret(&redacted, secrets, "redact_chunks");
    assert!(
        split.windows(2).all(|w| w[0].offset_us < w[1].offset_us),
        "chunk times out of order"
    );
    let empty = |chunks: &[BodyChunk]| chunks.iter().filter(|c| c.data.is_empty()).count();
    assert!(
        empty(&split) <= empty(&original),
        "redaction made an empty chunk"
    );

    let mut response = RecordedResponse {
        status: 200,
        headers: vec![
            (
                Bytes::from_static(b"Content-Length"),
                Bytes::from(whole.len().to_string()),
            ),
            (Bytes::from_static(b"x-echo"), header_text(&whole)),
        ],
        chunks: original,
        // A trailer is a header sent late: the same rules.
        trailers: vec![(Bytes::from_static(b"x-echo-trailer"), header_text(&whole))],
        original_encoding: Bytes::new(),
        ..RecordedResponse::default()
    };
    redactor.redact_response(&mut response);
    let body = joined(&response.chunks);
    no_secret(&body, tokens, "redact_response body");
    no_secret(&response.headers[1].1, secrets, "redact_response header");
    no_secret(&response.trailers[0].1, secrets, "redact_response trailer");
    if !holds_secret(whole.len(), secrets) && !holds_secret(body.len(), secrets) {
        assert_eq!(
            response.headers[0].1,
            body.len().to_string().as_bytes(),
            "content-length is not the redacted body's length"
        );
    }
}

/// Whether the decimal `length` holds a secret (`1`, `12`): then the
/// redactor rightly writes `REDACTED` over the `content-length` it was
/// given or would write (the redacted body's length), and the length
/// cannot be both kept and hidden.
fn holds_secret(length: usize, secrets: &[Vec<u8>]) -> bool {
    let digits = length.to_string();
    secrets
        .iter()
        .any(|s| !occurrences(digits.as_bytes(), s).is_empty())
}

/// Bytes that a header value may hold (no CR, LF, NUL or DEL).
fn header_text(bytes: &[u8]) -> Bytes {
    bytes
        .iter()
        .map(|&b| {
            if b == b'\t' || (b >= 0x20 && b != 0x7f) {
                b
            } else {
                b' '
            }
        })
        .collect::<Vec<u8>>()
        .into()
}

fn request(
    redactor: &Redactor,
    input: &mut Input<'_>,
    body: &[u8],
    secrets: &[Vec<u8>],
    tokens: &[Vec<u8>],
    dropped: &str,
) {
    let target = text(input, secrets);
    let mut request = RecordedRequest {
        method: Bytes::from_static(b"POST"),
        target: Bytes::from(target),
        headers: vec![
            (
                Bytes::from_static(b"content-length"),
                Bytes::from(body.len().to_string()),
            ),
            (
                Bytes::from_static(b"Authorization"),
                Bytes::from(text(input, secrets)),
            ),
            (
                Bytes::from(dropped.as_bytes().to_vec()),
                Bytes::from_static(b"v"),
            ),
            (
                Bytes::from_static(b"x-other"),
                Bytes::from(text(input, secrets)),
            ),
        ],
        body: Bytes::from(body.to_vec()),
        trailers: Vec::new(),
    };
    redactor.redact_request(&mut request);
    no_secret(&request.target, secrets, "redact_request target");
    for (name, value) in &request.headers {
        no_secret(value, secrets, "redact_request header");
        assert!(
            !name.eq_ignore_ascii_case(b"authorization")
                && !name.eq_ignore_ascii_case(dropped.trim().as_bytes()),
            "a dropped header is kept"
        );
    }
    no_secret(&request.body, tokens, "redact_request body");
    if !holds_secret(body.len(), secrets) && !holds_secret(request.body.len(), secrets) {
        assert_eq!(
            request.headers[0].1,
            request.body.len().to_string().as_bytes(),
            "content-length is not the redacted body's length"
        );
    }
}

fn header_map(redactor: &Redactor, pieces: &[Vec<u8>], secrets: &[Vec<u8>], dropped: &str) {
    let mut headers = http::HeaderMap::new();
    for (i, piece) in pieces.iter().enumerate() {
        let name = if i % 2 == 0 { "x-a" } else { "authorization" };
        if let Ok(value) = http::HeaderValue::from_bytes(&header_text(piece)) {
            headers.append(name, value);
        }
    }
    if let (Ok(name), Ok(value)) = (
        http::HeaderName::from_bytes(dropped.trim().as_bytes()),
        http::HeaderValue::from_str("v"),
    ) {
        headers.append(name, value);
    }
    redactor.redact_header_map(&mut headers);
    for (name, value) in &headers {
        no_secret(value.as_bytes(), secrets, "redact_header_map");
        assert!(
            !redactor.drops_request_header(name.as_str().as_bytes()),
            "a dropped header is kept"
        );
    }
}
