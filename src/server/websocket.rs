//! WebSocket replay: a recorded conversation played on a live upgrade as a
//! script. Server frames are sent in recorded order, each once the client
//! frame before it in the recording has come and matched; a client frame is
//! compared with the recorded one after redaction, JSON text canonically
//! (key order and spacing left out, `ignore_json_paths` applied, as bodies
//! are). A frame that differs closes the connection with 1011, as
//! test-server does; the log and `/__ouli/misses` name the frame and what
//! differs. Paced by `replay_timing` (the endpoint's, or the upgrade
//! request's `x-ouli-replay-timing`), a server frame waits for its recorded
//! gap after the frame before it, counted from when that frame was played
//! (sent, or received from the client).
//!
//! The conversations are ouli's own (an upgrade matched by fingerprint and
//! chain like any request, `websocket_record` records them) and test-server's
//! `.websocket.log` ones, imported: test-server logs no upgrade request and
//! plays a test's log to whatever upgrade it makes, so ouli does too when
//! its own recording has none for the upgrade.

use super::misses::{FrameMiss, Misses};
use super::response::{ResponseBody, error_response, full};
use super::{Endpoint, Server};
use crate::config::ReplayTiming;
use crate::fingerprint::Matcher;
use crate::interaction::{Exchange, WsDirection, WsFrame};
use crate::recording::{RecordView, Recording};
use crate::redact::Redactor;
use crate::session_name::SessionName;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use std::sync::Arc;

/// How a live client frame is compared with the recorded one.
pub(super) struct FrameRules {
    redactor: Arc<Redactor>,
    matcher: Matcher,
    /// Text and binary must match too (ouli's recordings); test-server
    /// compares payloads only, and logs no opcode.
    strict_opcode: bool,
}

/// A recorded conversation to play, and the upgrade target it was
/// recorded with (what a miss names).
pub(super) struct Script {
    pub frames: Vec<WsFrame>,
    pub target: String,
}

/// Where the script's mismatches go, and how it is paced.
struct Play {
    misses: Arc<Misses>,
    target: String,
    timing: ReplayTiming,
}

/// Where a conversation to play comes from.
pub(super) enum Conversation {
    /// With the subprotocol its `101` named, if any.
    Ouli(Option<HeaderValue>),
    TestServer,
}

impl Server {
    /// Accepts the upgrade (`101` with the accept key of the client's
    /// `Sec-WebSocket-Key`, checked by `check_handshake`) and plays `frames`.
    pub(super) fn play_websocket(
        &self,
        endpoint: &Endpoint,
        session: SessionName,
        headers: &HeaderMap,
        upgrade: OnUpgrade,
        script: Script,
        source: Conversation,
    ) -> Response<ResponseBody> {
        let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "client",
                "bad-websocket-upgrade",
                "a WebSocket upgrade needs sec-websocket-key".into(),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let rules = FrameRules {
            redactor: endpoint.redactor.clone(),
            matcher: endpoint.identity.matcher().clone(),
            strict_opcode: matches!(source, Conversation::Ouli(_)),
        };
        // A bad header value was refused before the upgrade was looked up.
        let timing =
            super::replay::replay_timing(endpoint, headers).unwrap_or(endpoint.replay_timing);
        let Script { frames, target } = script;
        let play = Play {
            misses: self.misses.clone(),
            target,
            timing,
        };
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        hyper_util::rt::TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    play_websocket_script(socket, frames, &rules, &session, &play).await;
                }
                Err(error) => {
                    tracing::warn!("session {session}: WebSocket upgrade failed: {error}")
                }
            }
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Conversation::Ouli(Some(protocol)) = source {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// The frames of a recorded WebSocket record, and its upgrade's target.
pub(super) fn frames_of(view: &RecordView) -> Option<Script> {
    let interaction = view.to_interaction().ok()?;
    let target = String::from_utf8_lossy(&interaction.request.target).into_owned();
    match interaction.exchange {
        Exchange::WebSocket { frames, .. } => Some(Script { frames, target }),
        Exchange::Http(_) => None,
    }
}

/// The session's first conversation imported from test-server, if any.
pub(super) fn test_server_conversation(recording: &Recording) -> Option<Script> {
    recording
        .iter()
        .filter_map(Result::ok)
        .filter(RecordView::is_websocket)
        .filter_map(|view| view.to_interaction().ok())
        .find(|i| i.request.target.as_ref() == crate::testserver::WEBSOCKET_TARGET.as_bytes())
        .and_then(|interaction| match interaction.exchange {
            Exchange::WebSocket { frames, .. } => Some(Script {
                frames,
                target: crate::testserver::WEBSOCKET_TARGET.to_owned(),
            }),
            Exchange::Http(_) => None,
        })
}

/// The handshake's checks (RFC 6455 section 4.2.1): `Sec-WebSocket-Key` is
/// the base64 of a 16-byte nonce, `Sec-WebSocket-Version` is 13. A client
/// that gets these wrong would fail on any server; replay and record refuse
/// it the same way.
pub(super) fn check_handshake(headers: &HeaderMap) -> Result<(), String> {
    let version = headers.get(http::header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes().trim_ascii() != b"13") {
        return Err("a WebSocket upgrade needs sec-websocket-version: 13".into());
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or("a WebSocket upgrade needs sec-websocket-key")?;
    if !is_base64_of_16_bytes(key.as_bytes().trim_ascii()) {
        return Err("sec-websocket-key is not the base64 of a 16-byte nonce".into());
    }
    Ok(())
}

/// 16 bytes in base64 are 22 alphabet characters and `==`; the last
/// character carries 2 bits, so its 4 low bits are zero.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c);
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&c| value(c).is_some())
        && value(key[21]).is_some_and(|v| v & 0b1111 == 0)
}

pub(super) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers.get_all(http::header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Plays the script: ping and pong frames are left out (tungstenite
/// answers a live ping itself); a recorded server close is sent as
/// recorded and ends the script, as a client close that came does.
async fn play_websocket_script<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    frames: Vec<WsFrame>,
    rules: &FrameRules,
    session: &SessionName,
    play: &Play,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let mut pacing = FramePacing::new(play.timing);
    for (index, frame) in frames.iter().enumerate() {
        if matches!(frame.opcode, OPCODE_PING | OPCODE_PONG) {
            continue;
        }
        match frame.direction {
            WsDirection::ServerToClient => {
                pacing.wait_for(frame.offset_us).await;
                let message = match frame.opcode {
                    OPCODE_CLOSE => Message::Close(close_frame(&frame.payload)),
                    OPCODE_TEXT => match std::str::from_utf8(&frame.payload) {
                        Ok(text) => Message::text(text),
                        Err(_) => Message::binary(frame.payload.clone()),
                    },
                    _ => Message::binary(frame.payload.clone()),
                };
                let last = frame.opcode == OPCODE_CLOSE;
                if socket.send(message).await.is_err() || last {
                    drain(&mut socket).await;
                    return;
                }
            }
            WsDirection::ClientToServer => {
                let (opcode, received) = loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) => {
                            break (OPCODE_TEXT, Bytes::copy_from_slice(text.as_bytes()));
                        }
                        Some(Ok(Message::Binary(data))) => break (OPCODE_BINARY, data),
                        Some(Ok(Message::Close(_))) => break (OPCODE_CLOSE, Bytes::new()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            continue;
                        }
                        None | Some(Err(_)) => return,
                    }
                };
                pacing.played(frame.offset_us);
                if let Some((what, json_path)) = rules.difference(frame, opcode, &received) {
                    tracing::warn!(
                        "{}",
                        rules.redactor.redact_str(&format!(
                            "session {session}: replay miss: WebSocket frame {index} (client to server) differs from the recording: {what}; closing with 1011"
                        ))
                    );
                    let got = rules.redactor.redact_ws_payload(opcode, &received);
                    play.misses.push(super::misses::frame_entry(
                        &rules.redactor,
                        &FrameMiss {
                            session: session.as_str(),
                            target: &play.target,
                            frame_index: index,
                            json_path: json_path.as_deref(),
                            what: &what,
                            expected: &frame.payload,
                            got: &got,
                        },
                    ));
                    let _ = socket
                        .close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: format!("ouli: frame {index} differs from the recording")
                                .into(),
                        }))
                        .await;
                    drain(&mut socket).await;
                    return;
                }
                if opcode == OPCODE_CLOSE {
                    // tungstenite sends the close reply on the next poll.
                    drain(&mut socket).await;
                    return;
                }
            }
        }
    }
    let _ = socket.close(None).await;
    drain(&mut socket).await;
}

/// Paces the server frames of a script: each waits for its recorded gap
/// after the frame played before it (sent, or received from the client),
/// times the scale; at most `REPLAY_GAP_MAX` per gap, as a chunk's.
struct FramePacing {
    /// `None`: not paced, frames go back to back.
    scale: Option<f64>,
    last_offset_us: u64,
    last_at: tokio::time::Instant,
}

impl FramePacing {
    /// Offsets count from the upgrade, which is now.
    fn new(timing: ReplayTiming) -> FramePacing {
        FramePacing {
            scale: timing.scale(),
            last_offset_us: 0,
            last_at: tokio::time::Instant::now(),
        }
    }

    /// Waits until the server frame recorded at `offset_us` is due.
    async fn wait_for(&mut self, offset_us: u64) {
        let Some(scale) = self.scale else {
            return;
        };
        // Deadlines add up gap by gap: a late send does not delay the next.
        let due = self.last_at + super::replay::gap(self.last_offset_us, offset_us, scale);
        tokio::time::sleep_until(due).await;
        self.last_offset_us = offset_us;
        self.last_at = due;
    }

    /// The client frame recorded at `offset_us` came now: the server frames
    /// after it count from here.
    fn played(&mut self, offset_us: u64) {
        self.last_offset_us = offset_us;
        self.last_at = tokio::time::Instant::now();
    }
}

const OPCODE_TEXT: u8 = 1;
const OPCODE_BINARY: u8 = 2;
const OPCODE_CLOSE: u8 = 8;
const OPCODE_PING: u8 = 9;
const OPCODE_PONG: u8 = 10;

/// After a close, how long the client has to answer it.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads until the client's side of the close handshake is over (bounded by
/// [`CLOSE_GRACE`]): a close reply is flushed by the next poll.
async fn drain<S>(socket: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// A recorded close payload (code big-endian, then the reason) as a frame.
fn close_frame(payload: &[u8]) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
    let code = u16::from_be_bytes(payload.get(..2)?.try_into().ok()?);
    Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: String::from_utf8_lossy(&payload[2..]).into_owned().into(),
    })
}

impl FrameRules {
    /// What differs between a live client frame and the recorded one, if
    /// anything: the opcode, the JSON path of a JSON text frame (also
    /// returned apart), or the first differing byte.
    fn difference(
        &self,
        recorded: &WsFrame,
        opcode: u8,
        payload: &[u8],
    ) -> Option<(String, Option<String>)> {
        let name = |opcode: u8| match opcode {
            OPCODE_TEXT => "text",
            OPCODE_BINARY => "binary",
            OPCODE_CLOSE => "close",
            _ => "control",
        };
        let kinds_differ = if self.strict_opcode {
            opcode != recorded.opcode
        } else {
            (opcode == OPCODE_CLOSE) != (recorded.opcode == OPCODE_CLOSE)
        };
        if kinds_differ {
            let what = format!(
                "a {} frame where a {} frame was recorded",
                name(opcode),
                name(recorded.opcode)
            );
            return Some((what, None));
        }
        if opcode == OPCODE_CLOSE {
            // The code and reason of a client's close are its own business.
            return None;
        }
        let payload = self.redactor.redact_ws_payload(opcode, payload);
        if payload.as_ref() == recorded.payload.as_ref() {
            return None;
        }
        if recorded.opcode == OPCODE_TEXT {
            let (mut live, mut stored) = (Vec::new(), Vec::new());
            if self.matcher.canonical_json(&payload, &mut live)
                && self.matcher.canonical_json(&recorded.payload, &mut stored)
            {
                if live == stored {
                    return None;
                }
                return Some(match first_json_difference(&live, &stored) {
                    Some(path) => (format!("JSON differs at {path}"), Some(path)),
                    None => ("JSON differs".into(), None),
                });
            }
        }
        let at = payload
            .iter()
            .zip(recorded.payload.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(payload.len().min(recorded.payload.len()));
        let what = format!(
            "payload differs at byte {at} ({} bytes, {} recorded)",
            payload.len(),
            recorded.payload.len()
        );
        Some((what, None))
    }
}

/// The first path (`$.a.b[0]`) where two canonical JSON documents differ,
/// depth first in key order; an explicit stack, never recursion.
fn first_json_difference(live: &[u8], recorded: &[u8]) -> Option<String> {
    use serde_json::Value;
    let live: Value = serde_json::from_slice(live).ok()?;
    let recorded: Value = serde_json::from_slice(recorded).ok()?;
    let mut stack = vec![("$".to_owned(), &live, &recorded)];
    while let Some((path, a, b)) = stack.pop() {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                // Pushed in reverse so the first key is compared first.
                for key in keys.into_iter().rev() {
                    let child = format!("{path}.{key}");
                    match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => stack.push((child, x, y)),
                        _ => stack.push((child, &Value::Null, &Value::Bool(false))),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (x, y)) in a.iter().zip(b).enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), x, y));
                }
            }
            (a, b) if a != b => return Some(path),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_difference_is_named_by_its_path() {
        let path = |a: &str, b: &str| first_json_difference(a.as_bytes(), b.as_bytes());
        assert_eq!(
            path(r#"{"a":{"b":[1,2]}}"#, r#"{"a":{"b":[1,3]}}"#).as_deref(),
            Some("$.a.b[1]")
        );
        assert_eq!(
            path(r#"{"a":1,"c":2}"#, r#"{"a":1,"d":2}"#).as_deref(),
            Some("$.c")
        );
        assert_eq!(path(r#"[1]"#, r#"[1,2]"#).as_deref(), Some("$"));
        assert_eq!(path(r#"{"a":1}"#, r#"{"a":1}"#), None);
    }

    #[test]
    fn a_handshake_key_is_the_base64_of_16_bytes() {
        // RFC 6455's sample key.
        assert!(is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25jZR=="));
        assert!(!is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!is_base64_of_16_bytes(b"not-a-key"));
        assert!(!is_base64_of_16_bytes(b"dGhlIHNhbXBsZSBub25jZXh4eA=="));
    }
}
