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
