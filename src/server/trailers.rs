//! Trailers: fields sent after a body (HTTP/1.1 chunked trailers, an
//! HTTP/2 trailing HEADERS frame; gRPC's `grpc-status` and `grpc-message`
//! travel there). hyper carries them as a `Frame::trailers` at the end of a
//! body, the same frame over either protocol.
//!
//! Record asks the upstream for them (`TE: trailers`, which ouli sends as
//! its own: `TE` is hop-by-hop, never forwarded as the client sent it),
//! keeps them with the interaction (`crate::record::CaptureBody`) and passes
//! them to the client. Replay sends the recorded ones after the last chunk
//! to a client that can take them: over HTTP/1.1, one that sent
//! `TE: trailers` (RFC 9110 §6.5.1; hyper writes no trailer to another),
//! in chunked framing, with a `Trailer` header naming them (hyper writes
//! only the fields it names).
//!
//! A request may end with trailers too (a gRPC client sends none, but
//! HTTP allows them). The collect stage keeps them with the request's head
//! ([`RequestTrailers`], an extension of its `Parts`: they travel through
//! identify and forward with it); record forwards them to the upstream
//! after the body ([`forwarded`]) and stores them, redacted as headers are.
//! They take no part in the request's identity (rfcs/0002, "Request
//! trailers"); replay reads and ignores them.

use crate::record::TRAILERS_MAX;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The `TE` value ouli sends upstream: trailers are welcome.
pub(super) const TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Whether the client that sent `headers` over `version` takes trailers:
/// over HTTP/2 and later, always; over HTTP/1.1, when its `TE` lists
/// `trailers`.
pub(super) fn client_takes_trailers(headers: &HeaderMap, version: http::Version) -> bool {
    if version >= http::Version::HTTP_2 {
        return true;
    }
    headers.get_all(http::header::TE).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|token| {
            let token = token.split(|&b| b == b';').next().unwrap_or(&[]);
            token.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
    })
}

/// The upstream's `Trailer` header values, taken before the hop-by-hop
/// headers go: the client's answer announces the same trailers again
/// ([`announce_again`]), without which hyper would not write them.
pub(super) fn announced(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers
        .get_all(http::header::TRAILER)
        .iter()
        .cloned()
        .collect()
}

/// Puts the `Trailer` values [`announced`] took back on the client's head.
pub(super) fn announce_again(headers: &mut HeaderMap, announced: Vec<HeaderValue>) {
    for value in announced {
        headers.append(http::header::TRAILER, value);
    }
}

/// Recorded trailers as a header map (values stay in the map), and the
/// `Trailer` header value naming them; `None` when there is none to send.
/// A recorded name or value that is not valid any more is left out.
pub(super) fn replayed<'a>(
    recorded: impl Iterator<Item = (&'a [u8], Bytes)>,
) -> Option<(HeaderMap, HeaderValue)> {
    let mut trailers = HeaderMap::new();
    for (name, value) in recorded {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue;
        };
        trailers.append(name, value);
    }
    if trailers.is_empty() {
        return None;
    }
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    let announce = HeaderValue::from_str(&names.join(", ")).ok()?;
    Some((trailers, announce))
}

/// The trailers a request body ended with, kept in its head's extensions
/// by the collect stage: at most [`TRAILERS_MAX`] fields (the rest are
/// dropped, logged), never empty.
#[derive(Clone, Debug)]
pub(super) struct RequestTrailers(pub HeaderMap);

impl RequestTrailers {
    /// `trailers` bounded by [`TRAILERS_MAX`]; `None` when there is none.
    pub(super) fn bounded(trailers: HeaderMap) -> Option<RequestTrailers> {
        if trailers.is_empty() {
            return None;
        }
        if trailers.len() <= TRAILERS_MAX {
            return Some(RequestTrailers(trailers));
        }
        tracing::warn!(
            "request with {} trailer fields, over TRAILERS_MAX = {TRAILERS_MAX}: the rest are dropped",
            trailers.len()
        );
        let mut kept = HeaderMap::new();
        for (name, value) in trailers.iter().take(TRAILERS_MAX) {
            kept.append(name.clone(), value.clone());
        }
        Some(RequestTrailers(kept))
    }

    /// The request trailers `parts` carries, if any.
    pub(super) fn of(parts: &http::request::Parts) -> Option<&HeaderMap> {
        parts.extensions.get::<RequestTrailers>().map(|t| &t.0)
    }
}

/// Readies a request going upstream for `trailers`: over HTTP/1.1 they
/// need chunked framing (no `content-length`) and a `Trailer` header
/// naming them (hyper writes only the fields it names). The request's own
/// `Trailer` header was hop-by-hop and did not come along.
pub(super) fn forwarded(headers: &mut HeaderMap, trailers: &HeaderMap) {
    headers.remove(http::header::CONTENT_LENGTH);
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    if let Ok(announce) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(http::header::TRAILER, announce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let te = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::TE, HeaderValue::from_static(value));
            client_takes_trailers(&headers, http::Version::HTTP_11)
        };
        assert!(te("trailers"));
        assert!(te("gzip;q=0.5, Trailers"));
        assert!(!te("gzip"));
        assert!(!te("trailersx"));
        assert!(!client_takes_trailers(
            &HeaderMap::new(),
            http::Version::HTTP_11
        ));
        assert!(client_takes_trailers(
            &HeaderMap::new(),
            http::Version::HTTP_2
        ));
    }

    #[test]
    fn replayed_trailers_are_announced_by_name() {
        let recorded = [
            (&b"grpc-status"[..], Bytes::from_static(b"0")),
            (&b"grpc-message"[..], Bytes::from_static(b"ok")),
            (&b"bad name"[..], Bytes::from_static(b"x")),
        ];
        let (trailers, announce) = replayed(recorded.into_iter()).unwrap();
        assert_eq!(trailers.len(), 2);
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(announce, "grpc-status, grpc-message");
        assert!(replayed(std::iter::empty()).is_none());
    }

    #[test]
    fn request_trailers_are_bounded_and_announced_upstream() {
        assert!(RequestTrailers::bounded(HeaderMap::new()).is_none());
        let mut many = HeaderMap::new();
        for i in 0..TRAILERS_MAX + 3 {
            let name = HeaderName::from_bytes(format!("x-t{i}").as_bytes()).unwrap();
            many.insert(name, HeaderValue::from_static("v"));
        }
        let kept = RequestTrailers::bounded(many).unwrap();
        assert_eq!(kept.0.len(), TRAILERS_MAX);

        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc"));
        trailers.insert("x-count", HeaderValue::from_static("2"));
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        forwarded(&mut headers, &trailers);
        assert!(!headers.contains_key(http::header::CONTENT_LENGTH));
        assert_eq!(headers[http::header::TRAILER], "x-checksum, x-count");
    }
}
