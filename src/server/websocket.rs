//! WebSocket replay: a recorded test-server conversation played on a live
//! upgrade as a strict script.

use super::response::{ResponseBody, error_response, full};
use super::{Endpoint, Server};
use crate::recording::RecordView;
use crate::redact::Redactor;
use crate::session_name::SessionName;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

impl Server {
    /// Replays a session's recorded WebSocket conversation as a strict
    /// script, as test-server does: the upgrade is accepted, recorded server
    /// frames are sent in order, and each client frame must equal the
    /// recorded one after redaction, else the connection closes with 1011.
    pub(super) fn replay_websocket(
        &self,
        endpoint: &Endpoint,
        session: SessionName,
        mut request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let state = match self.session(&session) {
            Ok(state) => state,
            Err(error) => return error.into_response(),
        };
        let frames = state.recording().and_then(|recording| {
            recording
                .iter()
                .filter_map(Result::ok)
                .find(RecordView::is_websocket)
                .and_then(|view| view.to_interaction().ok())
                .and_then(|interaction| match interaction.exchange {
                    crate::interaction::Exchange::WebSocket { frames, .. } => Some(frames),
                    crate::interaction::Exchange::Http(_) => None,
                })
        });
        let Some(frames) = frames else {
            return error_response(
                StatusCode::NOT_FOUND,
                "recording",
                "replay-miss",
                format!("session {session}: no WebSocket conversation was recorded"),
            );
        };
        let Some(key) = request.headers().get(http::header::SEC_WEBSOCKET_KEY) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "client",
                "bad-websocket-upgrade",
                "a WebSocket upgrade needs sec-websocket-key".into(),
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        let redactor = endpoint.redactor.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        hyper_util::rt::TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    play_websocket_script(socket, frames, &redactor, &session).await;
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
        response
    }
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

pub(super) async fn play_websocket_script<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    frames: Vec<crate::interaction::WsFrame>,
    redactor: &Redactor,
    session: &SessionName,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::interaction::WsDirection;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    for (index, frame) in frames.iter().enumerate() {
        match frame.direction {
            WsDirection::ServerToClient => {
                let message = if frame.opcode == 1 {
                    match std::str::from_utf8(&frame.payload) {
                        Ok(text) => Message::text(text),
                        Err(_) => Message::binary(frame.payload.clone()),
                    }
                } else {
                    Message::binary(frame.payload.clone())
                };
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            WsDirection::ClientToServer => {
                let received = loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(text))) => {
                            break Bytes::copy_from_slice(text.as_bytes());
                        }
                        Some(Ok(Message::Binary(data))) => break data,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    }
                };
                if redactor.redact_bytes(&received).as_ref() != frame.payload.as_ref() {
                    tracing::warn!(
                        "session {session}: WebSocket frame {index} differs from the recording; closing with 1011"
                    );
                    let _ = socket
                        .close(Some(CloseFrame {
                            code: CloseCode::Error,
                            reason: format!("ouli: frame {index} differs from the recording")
                                .into(),
                        }))
                        .await;
                    return;
                }
            }
        }
    }
    let _ = socket.close(None).await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
