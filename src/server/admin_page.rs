//! The web page at `GET /__ouli/`: the sessions, each one's interactions
//! (served or not), and the recent misses with their differences (field,
//! recorded value, live value), for a person looking at a running ouli.
//!
//! One HTML file (`admin_page/index.html`) with its CSS and script inline,
//! compiled into the binary: no build step, nothing fetched from elsewhere,
//! it works offline. Its script reads the JSON control endpoints
//! (`sessions`, `sessions/<name>`, `misses`, `mode`) and builds the DOM from
//! text nodes only: what it shows comes from recordings and live requests,
//! which are untrusted. The answer's Content-Security-Policy allows only
//! that inline script and style (by their SHA-256) and requests to ouli
//! itself, so even a page that did render markup from data could neither
//! run it nor reach another host.

use super::response::{ResponseBody, full};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The page, as served.
pub(super) const PAGE: &str = include_str!("admin_page/index.html");

/// `Content-Security-Policy` of the page, computed once: its inline script
/// and style by hash, fetches to the same origin only, nothing else.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let script = inline_hash(PAGE, "<script>", "</script>");
    let style = inline_hash(PAGE, "<style>", "</style>");
    let policy = format!(
        "default-src 'none'; script-src '{script}'; style-src '{style}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// `sha256-<base64>` of the text between `open` and `close` (the first
/// such element), as CSP names an inline element.
fn inline_hash(page: &str, open: &str, close: &str) -> String {
    let inner = page
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inner, _)| inner);
    let digest = Sha256::digest(inner.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's answer.
pub(super) fn answer() -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from_static(PAGE.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(http::header::CONTENT_SECURITY_POLICY, POLICY.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_script_and_one_style_and_builds_no_markup_from_data() {
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(
            !PAGE.contains("innerHTML"),
            "the DOM is built from text nodes"
        );
        assert!(!PAGE.contains("outerHTML") && !PAGE.contains("insertAdjacentHTML"));
        assert!(!PAGE.contains("document.write"));
    }

    #[test]
    fn the_policy_names_the_inline_script_by_its_hash() {
        let policy = POLICY.to_str().unwrap();
        let script = inline_hash(PAGE, "<script>", "</script>");
        assert!(
            policy.contains(&format!("script-src '{script}'")),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert_ne!(script, inline_hash("", "<script>", "</script>"));
    }
}
