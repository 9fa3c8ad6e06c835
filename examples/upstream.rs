//! A minimal local upstream for `scripts/bench-record` (and for making the
//! recordings `scripts/bench-replay` serves): answers every request with `200`,
//! `content-type: application/json` and a JSON body of `--body-bytes` bytes,
//! after reading the request body to its end.
//!
//! Used only for benchmarks; never part of ouli.
//!
//! ```text
//! cargo run --release --example upstream -- --port 0 --body-bytes 65536
//! upstream listening addr=127.0.0.1:40125
//! ```

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

#[derive(clap::Parser, Debug)]
#[command(about = "Minimal HTTP upstream answering a fixed JSON body")]
struct Args {
    /// Port on 127.0.0.1; 0 takes a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Response body length in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Worker threads; 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let body = json_body(args.body_bytes);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        builder.worker_threads(args.workers);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "upstream listening addr={}", listener.local_addr()?)?;
            out.flush()?;
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        // Drain the request body so that the connection can be
                        // reused; its bytes are not needed.
                        let _ = request.into_body().collect().await;
                        let mut reply = Response::new(Full::new(body));
                        reply.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(reply)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A JSON object of exactly `len` bytes (at least 16): `{"data":"xxx…"}`.
fn json_body(len: usize) -> Bytes {
    let len = len.max(16);
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(b"{\"data\":\"");
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}
