//! What a recording holds: one HTTP interaction (a request and its response, the
//! body kept as the chunks it arrived in) or one WebSocket conversation.
//!
//! These are the owned forms, used to write a record and by tools that inspect a
//! recording. The replay hot path never builds them: it reads a
//! [`crate::recording::RecordView`], which borrows the mapped file.
//!
//! Every byte field is [`Bytes`]: header names and values are kept as bytes, not
//! strings, because a recording must reproduce non-UTF-8 headers exactly.

use bytes::Bytes;
use std::fmt;

/// SHA-256 of a request's canonical form plus its chain link (rfcs/0002).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The link of the first request of a chain: 32 zero bytes.
    pub const CHAIN_HEAD: Fingerprint = Fingerprint([0u8; 32]);

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Fingerprint> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One header as it was on the wire (after redaction): name and value bytes.
pub type HeaderPair = (Bytes, Bytes);

/// The request as recorded, after redaction.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecordedRequest {
    /// Method token, e.g. `GET`.
    pub method: Bytes,
    /// Origin-form target as the client sent it: path and raw query.
    pub target: Bytes,
    /// Headers in arrival order, names as received.
    pub headers: Vec<HeaderPair>,
    /// Decoded, redacted body.
    pub body: Bytes,
    /// Trailer fields the request body ended with (an HTTP/2 trailing
    /// HEADERS frame, HTTP/1.1 chunked trailers), redacted as headers are.
    /// Not part of the request's identity (rfcs/0002). Empty when there
    /// were none, in a version 1 record, and in a version 2 record written
    /// before they were kept (rfcs/0001, item 13).
    pub trailers: Vec<HeaderPair>,
}

/// A piece of a response body and when it arrived, in microseconds after the
/// response head.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BodyChunk {
    pub offset_us: u64,
    pub data: Bytes,
}

/// The response as recorded: status, headers in order, body chunks (decoded),
/// trailers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RecordedResponse {
    pub status: u16,
    /// Time to first byte: microseconds from the request's sending to the
    /// upstream until its response head arrived. 0 when not known (a record
    /// of format version 1, an import).
    pub head_offset_us: u64,
    pub headers: Vec<HeaderPair>,
    pub chunks: Vec<BodyChunk>,
    /// Trailer fields that followed the body (HTTP/1.1 chunked trailers, an
    /// HTTP/2 trailing HEADERS frame: gRPC's `grpc-status`), redacted as
    /// headers are. Empty when there were none, and in a version 1 record.
    pub trailers: Vec<HeaderPair>,
    /// The `content-encoding` the upstream used (e.g. `gzip`) for a body
    /// stored decoded; empty when the chunks are stored as they came
    /// (unencoded, or in an encoding ouli could not undo: a stored
    /// `content-encoding` header then describes them and is replayed).
    pub original_encoding: Bytes,
}

impl RecordedResponse {
    /// Total body length over all chunks.
    pub fn body_len(&self) -> usize {
        self.chunks.iter().map(|c| c.data.len()).sum()
    }
}

/// Who sent a WebSocket frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WsDirection {
    ClientToServer = 0,
    ServerToClient = 1,
}

/// One WebSocket frame (message) of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsFrame {
    pub direction: WsDirection,
    /// RFC 6455 opcode: 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// Microseconds since the upgrade completed.
    pub offset_us: u64,
    pub payload: Bytes,
}

/// What followed the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// A plain HTTP response.
    Http(RecordedResponse),
    /// A WebSocket upgrade: the `101` response, then the frames in order.
    WebSocket {
        response: RecordedResponse,
        frames: Vec<WsFrame>,
    },
}

/// One recorded interaction: identity, the request, and what followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    /// The key this interaction is found by.
    pub fingerprint: Fingerprint,
    /// The chain link that went into `fingerprint` (rfcs/0002).
    pub chain_link: Fingerprint,
    /// The canonical form the fingerprint was computed from (rfcs/0002). Kept so
    /// that a miss can be explained field by field without the original config.
    pub canonical: Bytes,
    /// Index of the endpoint (in config order) that served it.
    pub endpoint: u16,
    /// Wall-clock time of the request, microseconds since the Unix epoch.
    pub recorded_at_unix_us: u64,
    pub request: RecordedRequest,
    pub exchange: Exchange,
}
