//! Proxy (record, record-missing, passthrough): the request goes to the
//! upstream client (`crate::upstream`); the answer streams back to the client
//! while it is captured, and at its end (record) it is decoded, redacted and
//! appended (`crate::record`).

use super::body_timeout::IdleTimeout;
use super::response::{ResponseBody, error_response};
use super::{Endpoint, Outgoing, Proxy, Server};
use crate::identity::RequestHead;
pub(super) use crate::identity::owned_headers;
use crate::upstream::RequestBody;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;

impl Server {
    /// Record and passthrough: forward upstream, stream the answer back while
    /// capturing it; at its end (record) decode, redact and append.
    pub(super) async fn proxy(
        &self,
        proxy: &Proxy,
        endpoint: &Endpoint,
        held: Option<&crate::upstream::HeldConnection>,
        outgoing: Outgoing,
    ) -> Response<ResponseBody> {
        let Outgoing {
            session,
            parts,
            body,
            identity,
        } = outgoing;
        let config = &self.options.config;
        let route = proxy.route(endpoint);
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(route.scheme.clone());
        uri.authority = Some(route.authority.clone());
        uri.path_and_query = Some(path_and_query.clone());
        let uri = match http::Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(error) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "client",
                    "bad-target",
                    error.to_string(),
                );
            }
        };
        let hop_by_hop = hop_by_hop_headers(&parts.headers);
        let request_trailers = super::trailers::RequestTrailers::of(&parts);
        // Built again only if a reused connection fails it (`Upstream::send`).
        let upstream_request = || {
            let body = RequestBody::new(body.clone(), request_trailers.cloned());
            let mut request = Request::new(body);
            *request.method_mut() = parts.method.clone();
            // Origin-form on the wire; the scheme and authority pick the connection.
            *request.uri_mut() = http::Uri::from(path_and_query.clone());
            let headers = request.headers_mut();
            for (name, value) in &parts.headers {
                if name != http::header::HOST && !hop_by_hop.contains(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            headers.insert(http::header::HOST, route.host.clone());
            headers.insert(http::header::TE, super::trailers::TE_TRAILERS);
            if let Some(trailers) = request_trailers {
                super::trailers::forwarded(headers, trailers);
            }
            request
        };
        let upstream = &proxy.upstream;
        let Some(held) = held else {
            unreachable!(
                "the listener holds an upstream connection per client connection in proxy modes"
            );
        };
        let timeout = Duration::from_millis(config.limits.upstream_response_timeout_ms);
        let recording = match (proxy.recorder().cloned(), identity) {
            (Some(writer), Some(identity)) => Some((writer, identity)),
            _ => None,
        };
        let started_unix_us = match recording {
            Some(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
            None => 0,
        };
        if let Some((writer, _)) = &recording
            && let Err(error) = writer.start(&session)
        {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording",
                "recording-failed",
                format!("session {session}: its recording cannot be started: {error}"),
            );
        }
        let sent_at = std::time::Instant::now();
        let sent = upstream.send(endpoint.index, &uri, held, upstream_request);
        let response = match tokio::time::timeout(timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                // The URI is the client's: it may carry a secret, as may
                // the error's text.
                let message = format!("upstream {uri}: {}", error_chain(&error));
                let message = endpoint.redactor.redact_str(&message).into_owned();
                tracing::warn!("{message}");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream",
                    "upstream-unreachable",
                    message,
                );
            }
            Err(_) => {
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream",
                    "upstream-timeout",
                    endpoint
                        .redactor
                        .redact_str(&format!(
                            "upstream {uri}: no response head within {timeout:?} (limits.upstream_response_timeout_ms)"
                        ))
                        .into_owned(),
                );
            }
        };
        let head_offset_us = sent_at.elapsed().as_micros() as u64;
        let (mut client_parts, upstream_body) = response.into_parts();
        // `response_header_replacements` on the answer the client gets, as
        // test-server does; the stored head is this one, not replaced again.
        endpoint
            .redactor
            .replace_response_headers(&mut client_parts.headers);
        // The recording keeps the upstream's head as it came, replacements
        // aside (passthrough copies nothing).
        let recording = recording.map(|recording| (recording, client_parts.clone()));
        let trailer = super::trailers::announced(&client_parts.headers);
        for name in hop_by_hop_headers(&client_parts.headers) {
            client_parts.headers.remove(name);
        }
        super::trailers::announce_again(&mut client_parts.headers, trailer);
        let upstream_body = IdleTimeout::new(
            upstream_body,
            Duration::from_millis(config.limits.upstream_body_idle_timeout_ms),
            route.authority.clone(),
        );
        let Some(((writer, (identified, step)), response_parts)) = recording else {
            return Response::from_parts(client_parts, upstream_body.boxed_unsync());
        };
        let client_response = Response::from_parts(client_parts, ());
        let redactor = endpoint.redactor.clone();
        let endpoint_index = endpoint.index as u16;
        let limits = config.limits.clone();
        let on_end: crate::record::OnBodyEnd = Box::new(move |captured| {
            let crate::record::Captured { chunks, trailers } = captured;
            let request = identified.stored_request_with_trailers(
                RequestHead::of(&parts),
                super::trailers::RequestTrailers::of(&parts),
            );
            let encoding = response_parts
                .headers
                .get(http::header::CONTENT_ENCODING)
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .unwrap_or_default();
            // Over its limit once decoded: not recorded, by policy (logged by
            // `decode_chunks`); not a failure to record.
            let Some((chunks, encoding)) = decode_chunks(encoding, chunks, &limits) else {
                return true;
            };
            let mut recorded = crate::interaction::RecordedResponse {
                status: response_parts.status.as_u16(),
                head_offset_us,
                headers: owned_headers(&response_parts.headers),
                chunks,
                trailers,
                original_encoding: encoding,
            };
            // A credential the request carried in a dropped header is a
            // secret of this interaction: an upstream may echo it. The
            // header replacements were applied to the live head already.
            let derived = redactor.derived_secrets(&parts.headers);
            if derived.is_empty() {
                redactor.redact_response_content(&mut recorded);
            } else {
                redactor
                    .with_extra_secrets(&derived)
                    .redact_response_content(&mut recorded);
            }
            // A record that could not be written breaks the response off.
            writer.append(
                &session,
                &crate::interaction::Interaction {
                    fingerprint: step.fingerprint,
                    chain_link: step.link,
                    canonical: Bytes::from(identified.canonical),
                    endpoint: endpoint_index,
                    recorded_at_unix_us: started_unix_us,
                    request,
                    exchange: crate::interaction::Exchange::Http(recorded),
                },
            )
        });
        let captured = crate::record::CaptureBody::new(
            upstream_body,
            config.limits.response_body_bytes_max,
            on_end,
        );
        client_response.map(|()| captured.boxed_unsync())
    }
}

/// An error and its causes, outermost first, as one line ("cannot connect:
/// tcp connect error: Connection refused (os error 111)"); a cause that only
/// repeats the text before it is left out.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = inner.source();
    }
    line
}

/// RFC 9110 §7.6.1: a message's connection-specific headers, and those its
/// `Connection` header names, are not forwarded. Usually there are none, and
/// then nothing is allocated; the `Connection` header is read once.
pub(super) fn hop_by_hop_headers(headers: &HeaderMap) -> Vec<HeaderName> {
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let connection = headers.get_all(http::header::CONNECTION);
    let listed = |name: &HeaderName| {
        connection.iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
        })
    };
    let has_connection = connection.iter().next().is_some();
    headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()) || (has_connection && listed(name)))
        .cloned()
        .collect()
}

/// Bodies are stored decoded, by the response direction's policy
/// (`decode::for_storage`): an encoded body is joined and decoded into one
/// chunk (its arrival times describe the encoded stream, not these bytes).
/// With the chunks comes the original encoding to record: `encoding` for a
/// body decoded, empty for one stored as it came, such as a body ouli cannot
/// decode (kept encoded, logged; its `content-encoding` is replayed). `None`
/// (not recorded, logged) when it decodes to more than
/// `limits.response_body_bytes_max`, as a body that large as sent is not.
pub(super) fn decode_chunks(
    encoding: Bytes,
    chunks: Vec<crate::interaction::BodyChunk>,
    limits: &crate::config::Limits,
) -> Option<(Vec<crate::interaction::BodyChunk>, Bytes)> {
    use crate::decode::{Direction, Stored};
    if encoding.is_empty() {
        return Some((chunks, encoding));
    }
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    // Decoding up to the limit may take long: not on this executor thread.
    let stored = crate::record::off_executor(|| {
        crate::decode::for_storage(Direction::Response, limits, &encoding, &joined)
    });
    match stored {
        Stored::Decoded(decoded) => Some((
            vec![crate::interaction::BodyChunk {
                offset_us: 0,
                data: Bytes::from(decoded),
            }],
            encoding,
        )),
        // `identity`: nothing was undone, and there is nothing to replay.
        Stored::AsSent => Some((chunks, encoding)),
        Stored::Undecodable(error) => {
            tracing::warn!("response body kept encoded: {error}");
            Some((chunks, Bytes::new()))
        }
        Stored::TooLarge { limit } => {
            tracing::warn!(
                "response body over {} = {limit} bytes once decoded ({}, {} bytes sent): not recorded",
                Direction::Response.limit_key(),
                String::from_utf8_lossy(&encoding),
                joined.len()
            );
            None
        }
    }
}
