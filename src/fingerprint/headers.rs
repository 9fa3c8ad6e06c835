//! Which headers take part in the canonical form (rfcs/0002 §1.3): the
//! built-in volatile names and prefixes that never do by default, the
//! hop-by-hop names a request's `Connection` lists, and optional whitespace
//! around a value. The choice per name is `Matcher::header_matches`
//! (`canonical.rs`), which adds the configured include and ignore lists.

/// Headers that never take part in matching by default: they change from one
/// client version, machine or run to the next without changing what a server
/// answers (rfcs/0002, Matching headers).
pub const VOLATILE_HEADERS: &[&str] = &[
    // RFC 9110 hop-by-hop and framing.
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    // `Expect: 100-continue` depends on the client's body-size threshold.
    "expect",
    // Added by proxies between the test and ouli; they name machines.
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    // Client identity and negotiation that a library upgrade changes.
    "user-agent",
    "accept-encoding",
    "date",
    "x-goog-api-client",
    "x-client-version",
    // Not forwarded: ouli relays WebSocket messages, not extension frames.
    "sec-websocket-extensions",
    // Credentials: a replaying test usually runs with dummy ones.
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    // Per-request random ids and tracing.
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "b3",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "request-id",
    "idempotency-key",
    "x-idempotency-key",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-date",
    // gRPC's deadline, sent as the time left when the call leaves ("gRPC
    // over HTTP2"): the same call made later, or with another deadline,
    // carries another value; the server's answer does not change.
    "grpc-timeout",
    // A WebSocket handshake's nonce, new on every upgrade.
    "sec-websocket-key",
    // Session naming (test-server and ouli).
    "test-name",
];

/// Header name prefixes treated like [`VOLATILE_HEADERS`].
pub const VOLATILE_HEADER_PREFIXES: &[&str] = &["x-ouli-", "x-stainless-", "x-b3-", "x-datadog-"];

/// Whether a `Connection` header value lists `name` (lower case).
pub(super) fn connection_names(
    connection: &http::header::GetAll<'_, http::HeaderValue>,
    name: &str,
) -> bool {
    connection.iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|listed| trim_ows(listed).eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// A header value without its optional whitespace (RFC 9110 §5.6.3).
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}
