//! Control endpoints under `/__ouli/`: end a session (finish its
//! recording), reset its chain. Never forwarded, never recorded.

use super::response::{RemoveErrorHeader, ResponseBody, error_response, json_response};
use super::{CONTROL_PREFIX, Server};
use crate::session_name::SessionName;
use http::{Response, StatusCode};

impl Server {
    pub(super) fn control(&self, path: &str, method: &http::Method) -> Response<ResponseBody> {
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some(name) = rest.strip_suffix("/end")
            && method == http::Method::POST
        {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            let name = match SessionName::parse(&name) {
                Ok(name) => name,
                Err(error) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "client",
                        "bad-test-name",
                        error.to_string(),
                    );
                }
            };
            self.forget_session(&name);
            let finished = match &self.writer {
                // One rename and fsync: short enough to block this request's task.
                Some(writer) => tokio::task::block_in_place(|| writer.finish(&name))
                    .map_err(|error| error.to_string()),
                None => Ok(None),
            };
            return match finished {
                Ok(path) => json_response(
                    StatusCode::OK,
                    "none",
                    serde_json::json!({ "session": name.as_str(), "recording": path.map(|p| p.display().to_string()) }),
                )
                .tap_remove_error_header(),
                Err(message) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "recording", "finish-failed", message),
            };
        }
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some(name) = rest.strip_suffix("/reset")
            && method == http::Method::POST
        {
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            return match SessionName::parse(&name) {
                Ok(name) => {
                    if let Some(session) = self.sessions.get(&name) {
                        session
                            .chain
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .reset();
                    }
                    json_response(
                        StatusCode::OK,
                        "none",
                        serde_json::json!({ "session": name.as_str(), "chain": "reset" }),
                    )
                    .tap_remove_error_header()
                }
                Err(error) => error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    error.to_string(),
                ),
            };
        }
        error_response(
            StatusCode::NOT_FOUND,
            "client",
            "unknown-control-path",
            format!(
                "{CONTROL_PREFIX}{path} is not an ouli control path (health, sessions/<name>/reset)"
            ),
        )
    }
}
