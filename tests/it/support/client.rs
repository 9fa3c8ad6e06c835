//! Requests sent with a real hyper client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// No answer in this long is a failure, not a hang.
pub const SAFETY_NET: Duration = Duration::from_secs(120);

/// One request on a new client; `None` when the connection fails (the
/// server went down) or the body breaks off.
pub async fn try_send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<(u16, http::HeaderMap, Vec<u8>)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(SAFETY_NET, client.request(request))
        .await
        .expect("an answer within the safety net")
        .ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, headers, body.to_vec()))
}

/// [`try_send`]; panics when there is no answer.
pub async fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|| panic!("{method} {path}: no answer (is the server down?)"))
}

/// [`send`] with a text body, the answer's body as text.
pub async fn send_text(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, String) {
    let (status, headers, body) = send(addr, method, path, headers, body.as_bytes().to_vec()).await;
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// `ouli`'s health answer is 200 `{"status":"ok"}`.
pub async fn assert_healthy(addr: &str) {
    let (status, _, body) = send(addr, "GET", "/__ouli/health", &[], Vec::new()).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body), (200, serde_json::json!({ "status": "ok" })));
}
