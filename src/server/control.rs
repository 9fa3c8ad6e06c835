//! Control endpoints under `/__ouli/`: end a session (finish its
//! recording), reset its chain, the last misses (`misses.rs`). Never
//! forwarded, never recorded.

use super::response::{RemoveErrorHeader, ResponseBody, error_response, json_response};
use super::{CONTROL_PREFIX, Endpoint, Server};
use crate::session_name::SessionName;
use http::{Response, StatusCode};

impl Server {
    pub(super) fn control(
        &self,
        endpoint: &Endpoint,
        path: &str,
        method: &http::Method,
    ) -> Response<ResponseBody> {
        // A control path echoes what the client sent: secrets go first.
        let redacted = |message: String| endpoint.redactor.redact_str(&message).into_owned();
        if path == "misses" {
            return self.misses.answer();
        }
        if let Some(rest) = path.strip_prefix("sessions/")
            && (rest.ends_with("/end") || rest.ends_with("/reset"))
            && method != http::Method::POST
        {
            let mut answer = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "client",
                "method-not-allowed",
                redacted(format!("{CONTROL_PREFIX}{path} takes POST, not {method}")),
            );
            answer
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            return answer;
        }
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some(name) = rest.strip_suffix("/end")
            && method == http::Method::POST
        {
            let name = match session_name(name) {
                Ok(name) => name,
                Err(message) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "client",
                        "bad-test-name",
                        redacted(message),
                    );
                }
            };
            self.forget_session(&name);
            let finished = match self.recorder() {
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
            return match session_name(name) {
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
                Err(message) => error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-test-name",
                    redacted(message),
                ),
            };
        }
        error_response(
            StatusCode::NOT_FOUND,
            "client",
            "unknown-control-path",
            redacted(format!(
                "{CONTROL_PREFIX}{path} is not an ouli control path (health, ready, sessions, sessions/<name>, sessions/<name>/reset, sessions/<name>/end, misses, mode, session, debug/pprof)"
            )),
        )
    }
}

/// A control path's session name, percent-decoded: it must be UTF-8, as the
/// session header's value must (a lossy decoding would name another session).
pub(super) fn session_name(encoded: &str) -> Result<SessionName, String> {
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| "the session name in the path is not UTF-8 once percent-decoded".to_owned())?;
    SessionName::parse(&decoded).map_err(|error| error.to_string())
}
