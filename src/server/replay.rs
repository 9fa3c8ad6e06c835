//! Replay: a recorded answer leaves as status, headers and body read from the
//! mapped record: the body and every header value are `Bytes` slices of the
//! map, handed to hyper without a copy.

use super::Server;
use super::response::{ResponseBody, error_response, full};
use crate::recording::RecordView;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Response, StatusCode};

/// Headers never replayed: hop-by-hop ones, and the length/encoding of a body
/// that is stored decoded (hyper sets the true length; the encoding of a body
/// stored as it came is replayed, see `serve_record`).
pub(super) const HEADERS_NOT_REPLAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-encoding",
];

impl Server {
    pub(super) fn serve_record(
        &self,
        view: Result<RecordView, crate::recording::RecordingError>,
    ) -> Response<ResponseBody> {
        let view = match view {
            Ok(view) => view,
            Err(error) => {
                tracing::error!("{error}");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "recording",
                    "damaged-record",
                    error.to_string(),
                );
            }
        };
        let mut chunks = view.response_chunks();
        let body = match (chunks.next(), chunks.next()) {
            (None, _) => Bytes::new(),
            (Some((_, only)), None) => only,
            (Some((_, first)), Some((_, second))) => {
                let mut joined = BytesMut::with_capacity(view.response_body_len() as usize);
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&second);
                for (_, chunk) in chunks {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        };
        let mut response = Response::new(full(body));
        *response.status_mut() =
            StatusCode::from_u16(view.response_status()).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        headers.reserve(16);
        for (name, value) in view.response_headers_shared() {
            let Ok(name) = HeaderName::from_bytes(name) else {
                continue;
            };
            // A body ouli could not decode is stored as it came, and its
            // `content-encoding` (the original encoding is then empty) is
            // replayed with it.
            if HEADERS_NOT_REPLAYED.contains(&name.as_str())
                && !(name == http::header::CONTENT_ENCODING
                    && view.response_original_encoding().is_empty())
            {
                continue;
            }
            // Zero-copy: the value stays in the mapped record.
            if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                headers.append(name, value);
            }
        }
        response
    }
}
