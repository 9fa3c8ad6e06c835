//! Answers ouli makes itself: JSON bodies with an `x-ouli-error` kind and
//! whose fault it is (client, upstream or recording).

use super::OULI_ERROR_HEADER;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub(super) fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(super) fn json_response(
    status: StatusCode,
    kind: &str,
    body: serde_json::Value,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(OULI_ERROR_HEADER, value);
    }
    response
}

pub(super) fn error_response(
    status: StatusCode,
    fault: &str,
    kind: &str,
    message: String,
) -> Response<ResponseBody> {
    let answer = json_response(
        status,
        kind,
        serde_json::json!({ "error": kind, "fault": fault, "message": message }),
    );
    super::metrics::mark(answer, super::metrics::Outcome::of_fault(fault))
}

/// Successful control answers carry no error header.
pub(super) trait RemoveErrorHeader {
    fn tap_remove_error_header(self) -> Self;
}

impl RemoveErrorHeader for Response<ResponseBody> {
    fn tap_remove_error_header(mut self) -> Self {
        self.headers_mut().remove(OULI_ERROR_HEADER);
        self
    }
}

/// gRPC status codes ouli answers with itself (grpc/grpc doc/statuscodes.md).
pub(super) mod grpc_code {
    /// The call's answer is not there (a replay miss).
    pub const NOT_FOUND: u8 = 5;
    /// ouli cannot carry this kind of call.
    pub const UNIMPLEMENTED: u8 = 12;
}

/// Longest `grpc-message` ouli writes, in bytes before percent-encoding:
/// a status message is a summary, and a client's header list is bounded
/// (16 KiB by default in hyper and grpc-go).
pub(super) const GRPC_MESSAGE_BYTES_MAX: usize = 1024;

/// What `grpc-message` percent-encodes (gRPC over HTTP/2, "Responses"):
/// every byte outside printable ASCII, and `%` itself.
const GRPC_MESSAGE_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Whether a request is a gRPC call: `content-type: application/grpc`, or
/// a subtype of it (`application/grpc+proto`, `application/grpc-web`).
pub(super) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// A gRPC call ended by ouli with `code` and `message`, in the form a gRPC
/// client reads as the call's status rather than as a transport error:
/// HTTP 200, `content-type: application/grpc`, and `grpc-status` and
/// `grpc-message` in the head with no body ("Trailers-Only"). The message
/// is cut to [`GRPC_MESSAGE_BYTES_MAX`] and percent-encoded; `kind` goes
/// in `x-ouli-error` as on every answer ouli makes itself.
pub(super) fn grpc_status_response(code: u8, kind: &str, message: &str) -> Response<ResponseBody> {
    let mut cut = message.len().min(GRPC_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let encoded =
        percent_encoding::utf8_percent_encode(&message[..cut], GRPC_MESSAGE_ESCAPED).to_string();
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    if let Ok(value) = HeaderValue::from_str(kind) {
        headers.insert(OULI_ERROR_HEADER, value);
    }
    response
}

#[cfg(test)]
mod grpc_tests {
    use super::*;

    #[test]
    fn a_grpc_status_answer_is_trailers_only_with_an_encoded_message() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        assert!(!is_grpc(&http::HeaderMap::new()));

        let answer = grpc_status_response(grpc_code::NOT_FOUND, "replay-miss", "100% ça\nx");
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["grpc-status"], "5");
        assert_eq!(answer.headers()["grpc-message"], "100%25 %C3%A7a%0Ax");
        assert_eq!(answer.headers()[OULI_ERROR_HEADER], "replay-miss");

        let long = "é".repeat(GRPC_MESSAGE_BYTES_MAX);
        let answer = grpc_status_response(grpc_code::UNIMPLEMENTED, "k", &long);
        let encoded = answer.headers()["grpc-message"].to_str().unwrap();
        // 512 two-byte letters, six encoded characters each.
        assert_eq!(encoded.len(), GRPC_MESSAGE_BYTES_MAX / 2 * 6);
    }
}
