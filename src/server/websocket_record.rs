//! WebSocket record (and passthrough): the upgrade goes to the upstream on a
//! connection of its own with its `Upgrade`, `Connection` and
//! `Sec-WebSocket-*` headers, the upstream's `101` goes back to the client,
//! and both directions are relayed live, message by message. When the
//! conversation ends (a close from either side, or either connection gone)
//! it is stored as one interaction: the handshake request (identified like
//! any request), the `101`, then every frame with its direction, opcode,
//! payload and time offset, secrets redacted.
//!
//! An upstream that refuses the upgrade (any status but `101`) is answered
//! and recorded as a plain interaction: that refusal is the upstream's own.

use super::proxy::{decode_chunks, error_chain, hop_by_hop_headers, owned_headers};
use super::response::{ResponseBody, error_response, full};
use super::{Endpoint, Outgoing, Proxy, Route, Server, path_and_query_of};
use crate::identity::RequestHead;
use crate::interaction::{
    BodyChunk, Exchange, Interaction, RecordedResponse, WsDirection, WsFrame,
};
use crate::session_name::SessionName;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Largest message (and frame) relayed, in either direction: tungstenite's
/// own default frame limit. A message over it ends the conversation (close
/// 1009 to both sides) before it is buffered whole.
pub const WS_MESSAGE_BYTES_MAX: usize = 16 << 20;

/// Frames one recorded conversation holds. Each costs its payload and about
/// 64 bytes of bookkeeping until the conversation ends; a record may hold
/// up to `PARTS_PER_RECORD_MAX` (16 Mi), far more than a test exchanges.
pub const WS_FRAMES_MAX: usize = 1 << 20;

/// After one side has closed, how long the other gets to finish its close
/// handshake before its connection is dropped.
pub const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The conversations being recorded or relayed. At shutdown each is told
/// to end (close 1001, going away, to both sides) and is waited for, so
/// that it is recorded before the recordings are closed: a test that stops
/// ouli with its WebSocket still open keeps its conversation.
pub(super) struct Conversations {
    tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Conversations {
    pub(super) fn new() -> Conversations {
        Conversations {
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Ended ones are let go here: the set holds the live ones only.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Tells every conversation to end, and waits until they have.
    pub(super) async fn stop(&self) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while tasks.join_next().await.is_some() {}
    }
}

/// What a recorded conversation may still take. The payload total is
/// `limits.response_body_bytes_max`: a conversation is held in memory until
/// it ends, as a captured response body is.
#[derive(Debug)]
pub(super) struct Budget {
    frames_left: usize,
    bytes_left: usize,
}

impl Budget {
    pub(super) fn new(frames: usize, bytes: usize) -> Budget {
        Budget {
            frames_left: frames,
            bytes_left: bytes,
        }
    }

    /// Takes one frame of `len` bytes, or says which limit it would pass.
    pub(super) fn take(&mut self, len: usize) -> Result<(), &'static str> {
        if self.frames_left == 0 {
            return Err("WS_FRAMES_MAX frames");
        }
        if len > self.bytes_left {
            return Err("limits.response_body_bytes_max bytes");
        }
        self.frames_left -= 1;
        self.bytes_left -= len;
        Ok(())
    }
}

/// An interaction to append when the conversation ends.
struct ToRecord {
    writer: Arc<crate::record::Recorder>,
    interaction: Interaction,
    /// Secrets of this request's dropped headers (an upstream may echo them).
    derived: Vec<Vec<u8>>,
}

impl Server {
    /// Record, record-missing's misses (`identity` given) and passthrough
    /// (`None`): the upgrade proxied, the conversation relayed and, with an
    /// identity, recorded when it ends.
    pub(super) async fn proxy_websocket(
        &self,
        proxy: &Proxy,
        endpoint: &Endpoint,
        outgoing: Outgoing,
        client_upgrade: OnUpgrade,
    ) -> Response<ResponseBody> {
        // An upgrade has no body to forward.
        let Outgoing {
            session,
            parts,
            identity,
            ..
        } = outgoing;
        let config = &self.options.config;
        let route = proxy.route(endpoint);
        let path_and_query = http::uri::PathAndQuery::try_from(path_and_query_of(&parts))
            .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(route.scheme.clone());
        uri.authority = Some(route.authority.clone());
        uri.path_and_query = Some(path_and_query.clone());
        let Ok(uri) = http::Uri::from_parts(uri) else {
            return error_response(
                StatusCode::BAD_REQUEST,
                "client",
                "bad-target",
                "the request target is not a path and query".into(),
            );
        };
        let recording = match (proxy.recorder().cloned(), identity) {
            (Some(writer), Some(identity)) => Some((writer, identity)),
            _ => None,
        };
        if let Some((writer, _)) = &recording
            && let Err(error) = writer.start(&session)
        {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording",
                "recording-failed",
                format!("session {session}: its recording cannot be started: {error}"),
            );
        }
        let started_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let upstream = &proxy.upstream;
        let timeout = Duration::from_millis(config.limits.upstream_response_timeout_ms);
        let sent_at = Instant::now();
        let sent = upstream.upgrade(&uri, upgrade_request(route, &parts, path_and_query));
        let mut response = match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                let message = format!("upstream {uri}: {}", error_chain(&error));
                let message = endpoint.redactor.redact_str(&message).into_owned();
                tracing::warn!("{message}");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    "upstream-unreachable",
                    message,
                );
            }
            Err(_) => {
                let message = format!(
                    "upstream {uri}: no response head within {timeout:?} (limits.upstream_response_timeout_ms)"
                );
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream",
                    "upstream-timeout",
                    endpoint.redactor.redact_str(&message).into_owned(),
                );
            }
        };
        let head_offset_us = sent_at.elapsed().as_micros() as u64;
        let to_record = |mut response: RecordedResponse, frames: Option<Vec<WsFrame>>| {
            response.head_offset_us = head_offset_us;
            recording.map(|(writer, (identified, step))| {
                let request = identified.stored_request(RequestHead::of(&parts));
                ToRecord {
                    writer,
                    derived: endpoint.redactor.derived_secrets(&parts.headers),
                    interaction: Interaction {
                        fingerprint: step.fingerprint,
                        chain_link: step.link,
                        canonical: Bytes::from(identified.canonical),
                        endpoint: endpoint.index as u16,
                        recorded_at_unix_us: started_unix_us,
                        request,
                        exchange: match frames {
                            Some(frames) => Exchange::WebSocket { response, frames },
                            None => Exchange::Http(response),
                        },
                    },
                }
            })
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self
                .refused_upgrade(endpoint, &session, response, |r| to_record(r, None))
                .await;
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let (mut head, _) = response.into_parts();
        let recorded_101 = RecordedResponse {
            status: 101,
            headers: owned_headers(&head.headers),
            original_encoding: Bytes::new(),
            ..RecordedResponse::default()
        };
        let pending = to_record(recorded_101, Some(Vec::new()));
        // ouli relays messages, not extension-encoded frames: none was
        // offered upstream, none is passed on.
        head.headers.remove(http::header::SEC_WEBSOCKET_EXTENSIONS);
        let redactor = endpoint.redactor.clone();
        let message_max = WS_MESSAGE_BYTES_MAX.min(config.limits.response_body_bytes_max);
        let budget = Budget::new(WS_FRAMES_MAX, config.limits.response_body_bytes_max);
        let stop = self.conversations.stop.subscribe();
        self.conversations.spawn(async move {
            let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
                (Ok(client), Ok(upstream)) => (client, upstream),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!("session {session}: WebSocket upgrade failed: {error}");
                    return;
                }
            };
            let socket_config = WebSocketConfig::default()
                .max_message_size(Some(message_max))
                .max_frame_size(Some(message_max));
            let client = WebSocketStream::from_raw_socket(
                TokioIo::new(client),
                Role::Server,
                Some(socket_config),
            )
            .await;
            let upstream = WebSocketStream::from_raw_socket(
                TokioIo::new(upstream),
                Role::Client,
                Some(socket_config),
            )
            .await;
            let record = pending.is_some();
            let frames = relay(client, upstream, budget, record, stop, &session).await;
            let Some(mut pending) = pending else {
                return;
            };
            if let Exchange::WebSocket { frames: slot, .. } = &mut pending.interaction.exchange {
                *slot = frames;
            }
            redact_exchange(&redactor, &mut pending);
            // The client already talked: a failure is logged and counted
            // (`Recorder::append`), and the run ends with an error.
            pending.writer.append(&session, &pending.interaction);
        });
        Response::from_parts(head, full(Bytes::new()))
    }

    /// The upstream refused the upgrade: its answer (body bounded by
    /// `limits.response_body_bytes_max`) is the client's, and recorded as a
    /// plain interaction.
    async fn refused_upgrade(
        &self,
        endpoint: &Endpoint,
        session: &SessionName,
        response: Response<hyper::body::Incoming>,
        to_record: impl FnOnce(RecordedResponse) -> Option<ToRecord>,
    ) -> Response<ResponseBody> {
        let limits = &self.options.config.limits;
        let (mut head, body) = response.into_parts();
        let idle = Duration::from_millis(limits.upstream_body_idle_timeout_ms);
        let limited = http_body_util::Limited::new(body, limits.response_body_bytes_max);
        let body = match tokio::time::timeout(idle, limited.collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    "upstream-unreachable",
                    format!("upstream refused the WebSocket upgrade, and its body failed: {error}"),
                );
            }
            Err(_) => {
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream",
                    "upstream-timeout",
                    "upstream refused the WebSocket upgrade, and its body stalled".into(),
                );
            }
        };
        tracing::info!(
            "session {session}: upstream refused the WebSocket upgrade with {}",
            head.status
        );
        let encoding = head
            .headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| Bytes::copy_from_slice(v.as_bytes()))
            .unwrap_or_default();
        let chunks = vec![BodyChunk {
            offset_us: 0,
            data: body.clone(),
        }];
        if let Some((chunks, encoding)) = decode_chunks(encoding, chunks, limits) {
            let recorded = RecordedResponse {
                status: head.status.as_u16(),
                headers: owned_headers(&head.headers),
                chunks,
                original_encoding: encoding,
                ..RecordedResponse::default()
            };
            if let Some(mut pending) = to_record(recorded) {
                redact_exchange(&endpoint.redactor, &mut pending);
                if !pending.writer.append(session, &pending.interaction) {
                    return error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "recording",
                        "recording-failed",
                        format!("session {session}: the upstream's answer could not be recorded"),
                    );
                }
            }
        }
        for name in hop_by_hop_headers(&head.headers) {
            head.headers.remove(name);
        }
        head.headers.remove(http::header::CONTENT_LENGTH);
        Response::from_parts(head, full(body))
    }
}

/// The upgrade request as the upstream gets it: the client's headers
/// without the hop-by-hop ones, then the upgrade's own (`Upgrade`,
/// `Connection`; `Sec-WebSocket-Key`, `-Version` and `-Protocol` pass as
/// end-to-end headers) and the upstream's `Host`. No extension is offered:
/// ouli relays messages, and could not undo one (permessage-deflate).
fn upgrade_request(
    route: &Route,
    parts: &http::request::Parts,
    path_and_query: http::uri::PathAndQuery,
) -> Request<Full<Bytes>> {
    let hop_by_hop = hop_by_hop_headers(&parts.headers);
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = http::Uri::from(path_and_query);
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        if name != http::header::HOST
            && name != http::header::SEC_WEBSOCKET_EXTENSIONS
            && !hop_by_hop.contains(name)
        {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(http::header::HOST, route.host.clone());
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    request
}

/// Redacts what is stored: the response or the frames, with the request's
/// derived secrets too.
fn redact_exchange(redactor: &crate::redact::Redactor, pending: &mut ToRecord) {
    let extended;
    let redactor = if pending.derived.is_empty() {
        redactor
    } else {
        extended = redactor.with_extra_secrets(&pending.derived);
        &extended
    };
    match &mut pending.interaction.exchange {
        Exchange::Http(response) => redactor.redact_response(response),
        Exchange::WebSocket { response, frames } => {
            redactor.redact_response(response);
            redactor.redact_ws_frames(frames);
        }
    }
}

/// Which side a message came from, in the relay.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Upstream,
}

/// Relays messages both ways until a close from either side or either
/// connection ends; returns the frames in the order they crossed ouli
/// (none when `record` is false). At a limit, both sides are closed with
/// 1009 (message too big) and the frames are kept up to there.
async fn relay(
    mut client: Socket,
    mut upstream: Socket,
    mut budget: Budget,
    record: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
    session: &SessionName,
) -> Vec<WsFrame> {
    let upgraded = Instant::now();
    let mut frames = Vec::new();
    let closed_by = loop {
        let (side, next) = tokio::select! {
            next = client.next() => (Side::Client, next),
            next = upstream.next() => (Side::Upstream, next),
            () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                tracing::info!("session {session}: shutting down: WebSocket conversation closed with 1001, recorded up to there");
                close_both(&mut client, &mut upstream, CloseCode::Away, "ouli: shutting down").await;
                return frames;
            }
        };
        let (from, to) = match side {
            Side::Client => (&mut client, &mut upstream),
            Side::Upstream => (&mut upstream, &mut client),
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(error))) => {
                tracing::warn!(
                    "session {session}: WebSocket message over WS_MESSAGE_BYTES_MAX or limits.response_body_bytes_max ({error}): closed with 1009, recorded up to there"
                );
                close_too_big(from, to).await;
                return frames;
            }
            // The connection is gone (or broke the protocol): the
            // conversation ends there.
            Some(Err(_)) | None => break side,
        };
        let Some(frame) = frame_of(&message, side, upgraded.elapsed()) else {
            continue;
        };
        if record {
            if let Err(limit) = budget.take(frame.payload.len()) {
                tracing::warn!(
                    "session {session}: WebSocket conversation over {limit}: closed with 1009, recorded up to there"
                );
                close_too_big(from, to).await;
                return frames;
            }
            frames.push(frame);
        }
        let is_close = matches!(message, Message::Close(_));
        if to.send(message).await.is_err() || is_close {
            break side;
        }
    };
    // The side that closed gets tungstenite's close reply; the other has a
    // moment to answer the close it was sent.
    let (closer, other) = match closed_by {
        Side::Client => (&mut client, &mut upstream),
        Side::Upstream => (&mut upstream, &mut client),
    };
    let _ = tokio::time::timeout(WS_CLOSE_GRACE, async {
        let _ = closer.flush().await;
        while let Some(Ok(_)) = other.next().await {}
    })
    .await;
    frames
}

/// Both sides closed with 1009 (message too big).
async fn close_too_big(a: &mut Socket, b: &mut Socket) {
    close_both(a, b, CloseCode::Size, "ouli: over its WebSocket limit").await;
}

/// Both sides sent a close; each gets [`WS_CLOSE_GRACE`] to answer it.
async fn close_both(a: &mut Socket, b: &mut Socket, code: CloseCode, reason: &'static str) {
    let close = || {
        Some(CloseFrame {
            code,
            reason: reason.into(),
        })
    };
    let _ = tokio::time::timeout(WS_CLOSE_GRACE, async {
        let _ = tokio::join!(a.close(close()), b.close(close()));
    })
    .await;
}

/// A message as a recorded frame; a close is its wire payload (the code,
/// two bytes big-endian, then the reason).
fn frame_of(message: &Message, side: Side, offset: Duration) -> Option<WsFrame> {
    let (opcode, payload) = match message {
        Message::Text(text) => (1, Bytes::copy_from_slice(text.as_bytes())),
        Message::Binary(data) => (2, data.clone()),
        Message::Close(frame) => {
            let mut payload = Vec::new();
            if let Some(frame) = frame {
                payload.extend_from_slice(&u16::from(frame.code).to_be_bytes());
                payload.extend_from_slice(frame.reason.as_bytes());
            }
            (8, Bytes::from(payload))
        }
        Message::Ping(data) => (9, data.clone()),
        Message::Pong(data) => (10, data.clone()),
        // Raw frames are only ever written, never read.
        Message::Frame(_) => return None,
    };
    Some(WsFrame {
        direction: match side {
            Side::Client => WsDirection::ClientToServer,
            Side::Upstream => WsDirection::ServerToClient,
        },
        opcode,
        offset_us: offset.as_micros() as u64,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_the_frame_past_either_limit() {
        let mut budget = Budget::new(2, 10);
        assert!(budget.take(4).is_ok());
        assert_eq!(budget.take(7), Err("limits.response_body_bytes_max bytes"));
        assert!(budget.take(6).is_ok());
        assert_eq!(budget.take(0), Err("WS_FRAMES_MAX frames"));
    }
}
