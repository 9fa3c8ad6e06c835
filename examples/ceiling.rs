//! The ceiling: the fastest a hyper 1.x server on this runtime can answer one
//! static response. `scripts/bench-replay` measures `ouli replay` against it in
//! the same run and prints the ratio (rfcs/0003-performance.md).
//!
//! It serves the same bytes and headers as ouli's replayed response: the script
//! captures one replayed response (`curl -D`) and hands its headers and body in
//! (`--headers-file`, `--body-file`). It sets up tokio the way ouli's server
//! does (`--runtime`, `--workers`), so the only difference left is the work
//! ouli does per request: session, fingerprint, chain, lookup, response build.
//!
//! Used only for comparison; never part of ouli.
//!
//! Over TLS (`--tls-cert`, `--tls-key`: the PEM pair ouli's endpoint is
//! given too) it offers ALPN `h2` then `http/1.1` and serves what the
//! handshake chose, as ouli's TLS listener does (tokio-rustls, ring).
//!
//! ```text
//! cargo run --release --example ceiling -- --port 0 --body-bytes 1024
//! ceiling listening addr=127.0.0.1:40123
//! ```

// The allocator ouli's binary uses (src/main.rs): same allocator, same runtime.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Response headers hyper computes itself: a captured value would be wrong
/// (length) or stale (date), so they are not copied from `--headers-file`.
const HEADERS_HYPER_SETS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "date",
    "connection",
    "keep-alive",
];

#[derive(clap::Parser, Debug)]
#[command(about = "Minimal static-response hyper server (the benchmark ceiling)")]
struct Args {
    /// Port on 127.0.0.1; 0 takes a free one (printed on stdout).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Body: this file's bytes.
    #[arg(long, conflicts_with = "body_bytes")]
    body_file: Option<PathBuf>,
    /// Body: this many bytes of JSON (used when no --body-file).
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Response headers, one `name: value` a line (e.g. `curl -D` output; the
    /// status line and the headers hyper sets itself are skipped).
    #[arg(long)]
    headers_file: Option<PathBuf>,
    /// Extra header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// `multi` (tokio multi-thread scheduler) or `current` (one current-thread
    /// runtime per worker thread, each accepting on its own SO_REUSEPORT socket).
    #[arg(long, default_value = "multi")]
    runtime: String,
    /// Worker threads; 0 = one per CPU (tokio's default).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// `http1` (hyper's HTTP/1 connection) or `auto` (hyper-util's builder,
    /// which sniffs for an HTTP/2 preface first), as ouli's listener does.
    #[arg(long, default_value = "http1")]
    protocol: String,
    /// TLS: the certificate chain (PEM) to serve; needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// What every request gets.
struct StaticResponse {
    headers: HeaderMap,
    body: Bytes,
    /// Serve with hyper-util's auto (HTTP/1 or HTTP/2) builder.
    auto: bool,
    /// TLS handshake first (`--tls-cert`); then the protocol ALPN chose.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    let body = match &args.body_file {
        Some(path) => Bytes::from(std::fs::read(path)?),
        None => json_body(args.body_bytes),
    };
    let mut headers = HeaderMap::new();
    let mut lines: Vec<String> = args.headers.clone();
    if let Some(path) = &args.headers_file {
        lines.extend(std::fs::read_to_string(path)?.lines().map(str::to_owned));
    }
    for line in &lines {
        let Some((name, value)) = line.split_once(':') else {
            continue; // the status line, or the blank line that ends the head
        };
        let name = name.trim().to_ascii_lowercase();
        if HEADERS_HYPER_SETS.contains(&name.as_str()) {
            continue;
        }
        headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    let auto = match args.protocol.as_str() {
        "http1" => false,
        "auto" => true,
        other => return Err(format!("--protocol {other}: expected http1 or auto").into()),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let response = Arc::new(StaticResponse {
        headers,
        body,
        auto,
        tls,
    });
    let workers = if args.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.workers
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    match args.runtime.as_str() {
        "multi" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                announce(listener.local_addr()?);
                accept_loop(listener, response).await
            })?;
        }
        "current" => {
            // One socket per thread with SO_REUSEPORT: the kernel spreads
            // connections, no work stealing between threads. The first thread
            // binds (maybe port 0) and tells the others which port it got.
            let (bound_tx, bound_rx) = std::sync::mpsc::channel();
            let mut threads = Vec::new();
            for worker in 0..workers {
                let response = response.clone();
                let bind_addr = if worker == 0 { addr } else { bound_rx.recv()? };
                let bound_tx = bound_tx.clone();
                threads.push(std::thread::spawn(move || -> std::io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener = reuseport_listener(bind_addr)?;
                        let bound = listener.local_addr()?;
                        if worker == 0 {
                            announce(bound);
                        }
                        let _ = bound_tx.send(bound);
                        accept_loop(listener, response).await
                    })
                }));
            }
            for thread in threads {
                thread.join().expect("ceiling worker panicked")?;
            }
        }
        other => return Err(format!("--runtime {other}: expected multi or current").into()),
    }
    Ok(())
}

fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ceiling listening addr={addr}");
    let _ = out.flush();
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    response: Arc<StaticResponse>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let response = response.clone();
        tokio::spawn(async move {
            match response.tls.clone() {
                None => serve(stream, response).await,
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    serve(tls, response).await;
                }
            }
        });
    }
}

/// One connection: HTTP/2 when ALPN chose `h2`, else as `--protocol` says.
async fn serve<S>(stream: S, response: Arc<StaticResponse>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static + Alpn,
{
    let h2 = stream.alpn_h2();
    let auto = response.auto;
    let service = service_fn(move |_request: Request<Incoming>| {
        let response = response.clone();
        async move {
            let mut reply = Response::new(Full::new(response.body.clone()));
            *reply.status_mut() = StatusCode::OK;
            *reply.headers_mut() = response.headers.clone();
            Ok::<_, Infallible>(reply)
        }
    });
    let io = TokioIo::new(stream);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else if auto {
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
            .await;
    }
}

/// Whether the connection's TLS handshake chose `h2` (never, in clear).
trait Alpn {
    fn alpn_h2(&self) -> bool;
}

impl Alpn for tokio::net::TcpStream {
    fn alpn_h2(&self) -> bool {
        false
    }
}

impl Alpn for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn alpn_h2(&self) -> bool {
        self.get_ref().1.alpn_protocol() == Some(b"h2")
    }
}

/// A TLS acceptor serving `cert` and `key`, offering `h2` then `http/1.1`.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
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
