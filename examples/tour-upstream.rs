//! A small, deterministic local API for the README's tour and for
//! `scripts/scale-out`: record against it offline, with no account and no
//! network. Every answer depends only on the request (and, for `/v1/steps`,
//! on how many times the same session asked before), never on the clock.
//!
//! ```text
//! cargo run --example tour-upstream -- --port 8090
//! tour-upstream listening addr=127.0.0.1:8090
//! ```
//!
//! Endpoints:
//! * `GET /v1/items` — a JSON list of three items.
//! * `GET /v1/items/<id>` — one item (`404` JSON for an unknown id).
//! * `POST /v1/echo` — `{"received": <the JSON body>}` (`400` if not JSON).
//! * `GET /v1/steps` — `{"session": S, "step": N}`: N counts this session's
//!   calls (the `Test-Name` header, else `X-Ouli-Test-Name`, else `default`),
//!   so a recording holds a chain whose order replay must keep.
//! * `GET /v1/stream` — server-sent events: `count` events (query `count`,
//!   default 3, at most [`STREAM_EVENTS_MAX`]), one every `gap_ms`
//!   (default 100, at most [`STREAM_GAP_MS_MAX`]).
//!
//! Used by the docs and scripts only; never part of ouli.

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most events one `/v1/stream` answer sends.
const STREAM_EVENTS_MAX: u32 = 100;
/// Longest gap between two events.
const STREAM_GAP_MS_MAX: u64 = 5_000;
/// Largest request body read (`/v1/echo`).
const BODY_BYTES_MAX: usize = 64 * 1024;
/// Most sessions `/v1/steps` counts; past it, the counts start over.
const SESSIONS_MAX: usize = 10_000;

#[derive(clap::Parser, Debug)]
#[command(about = "A small deterministic JSON API to record against")]
struct Args {
    /// Port on 127.0.0.1; 0 takes a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

type Body = BoxBody<Bytes, Infallible>;
type Steps = Arc<Mutex<HashMap<String, u64>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(serve(args.port))
}

async fn serve(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "tour-upstream listening addr={}",
            listener.local_addr()?
        )?;
        out.flush()?;
    }
    let steps: Steps = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let steps = steps.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, steps.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: http::Request<Incoming>,
    steps: Steps,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let session = session_of(request.headers());
    let body = match http_body_util::Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                r#"{"error":"body too large"}"#.into(),
            ));
        }
    };
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/v1/items") => json(StatusCode::OK, items().to_string()),
        (&Method::GET, item) if item.starts_with("/v1/items/") => {
            one_item(&item["/v1/items/".len()..])
        }
        (&Method::POST, "/v1/echo") => echo(&body),
        (&Method::GET, "/v1/steps") => {
            let step = next_step(&steps, &session);
            json(
                StatusCode::OK,
                serde_json::json!({"session": session, "step": step}).to_string(),
            )
        }
        (&Method::GET, "/v1/stream") => stream(&query),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such endpoint", "path": path}).to_string(),
        ),
    })
}

fn session_of(headers: &HeaderMap) -> String {
    ["test-name", "x-ouli-test-name"]
        .into_iter()
        .find_map(|name| headers.get(name)?.to_str().ok())
        .unwrap_or("default")
        .to_owned()
}

fn items() -> serde_json::Value {
    serde_json::json!([
        {"id": 1, "name": "anchor", "price_cents": 1250},
        {"id": 2, "name": "bollard", "price_cents": 4200},
        {"id": 3, "name": "cleat", "price_cents": 380},
    ])
}

fn one_item(id: &str) -> Response<Body> {
    let wanted: Option<u64> = id.parse().ok();
    let found = items().as_array().and_then(|all| {
        all.iter()
            .find(|item| wanted.is_some() && item["id"].as_u64() == wanted)
            .cloned()
    });
    match found {
        Some(item) => json(StatusCode::OK, item.to_string()),
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no such item", "id": id}).to_string(),
        ),
    }
}

fn echo(body: &[u8]) -> Response<Body> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => json(
            StatusCode::OK,
            serde_json::json!({"received": value}).to_string(),
        ),
        Err(error) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": error.to_string()}).to_string(),
        ),
    }
}

fn next_step(steps: &Steps, session: &str) -> u64 {
    let mut steps = steps
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if steps.len() >= SESSIONS_MAX && !steps.contains_key(session) {
        steps.clear();
    }
    let step = steps.entry(session.to_owned()).or_insert(0);
    *step += 1;
    *step
}

fn query_number(query: &str, key: &str) -> Option<u64> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == key)
        .and_then(|(_, value)| value.parse().ok())
}

fn stream(query: &str) -> Response<Body> {
    let count = query_number(query, "count")
        .unwrap_or(3)
        .min(u64::from(STREAM_EVENTS_MAX));
    let gap = Duration::from_millis(
        query_number(query, "gap_ms")
            .unwrap_or(100)
            .min(STREAM_GAP_MS_MAX),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for n in 1..=count {
            let event = format!("event: tick\ndata: {{\"n\":{n},\"of\":{count}}}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
            if n < count {
                tokio::time::sleep(gap).await;
            }
        }
    });
    let mut rx = rx;
    let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
