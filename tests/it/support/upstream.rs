//! In-process upstreams: real hyper HTTP/1.1 servers on 127.0.0.1, each
//! request answered by a closure the test gives.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How an upstream's connections behave.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `false`: each connection closes after its response
    /// (`Connection: close`), as an upstream with keep-alive off does.
    pub keep_alive: bool,
    /// `false`: no `Date` header (a bare answer has no header at all).
    pub date_header: bool,
    /// `true`: a `101` answer hands the connection over
    /// (`hyper::upgrade::on`), as a WebSocket endpoint needs.
    pub upgrades: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep_alive: true,
            date_header: true,
            upgrades: false,
        }
    }
}

/// A running upstream. Dropping it leaves it running (for the runtime's
/// life); [`Upstream::stop`] stops it and every connection it holds.
pub struct Upstream {
    pub port: u16,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Stops accepting and drops every open connection; returns once the
    /// port is closed.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// The task serving it, for a test that stops it itself.
    pub fn into_task(self) -> tokio::task::JoinHandle<()> {
        self.task
    }
}

/// Serves `listener`: every request is answered by `answer(connection,
/// request)`, `connection` numbering the accepted connections from 1.
pub fn serve<F, Fut, B, E>(
    listener: tokio::net::TcpListener,
    options: Options,
    answer: F,
) -> Upstream
where
    F: Fn(usize, http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // In a set, so that aborting the accept loop ends the connections.
        let mut connections = tokio::task::JoinSet::new();
        let mut connection = 0;
        loop {
            // An accept error (out of descriptors) is the moment's, not the
            // listener's: wait, and go on.
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            connection += 1;
            let answer = answer.clone();
            connections.spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| answer(connection, request));
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .keep_alive(options.keep_alive)
                    .auto_date_header(options.date_header);
                let connection =
                    builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = if options.upgrades {
                    connection.with_upgrades().await
                } else {
                    connection.await
                };
            });
            // Finished connections leave the set.
            while connections.try_join_next().is_some() {}
        }
    });
    Upstream {
        port: addr.port(),
        addr,
        task,
    }
}

/// [`serve`] on a new port.
pub async fn start<F, Fut, B, E>(options: Options, answer: F) -> Upstream
where
    F: Fn(usize, http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, options, answer)
}

/// [`start`] on a thread of its own with its own runtime, for a test
/// without one; it runs until the test binary ends. Its port.
pub fn start_on_thread<F, Fut, B, E>(options: Options, answer: F) -> u16
where
    F: Fn(usize, http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let upstream = start(options, answer).await;
            port_tx.send(upstream.port).unwrap();
            let _ = upstream.task.await;
        });
    });
    port_rx.recv().unwrap()
}

/// A full body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(bytes.into())
}

/// An upstream whose answer is `answer(path, request body)`: status,
/// headers and body. Its port.
pub async fn respond<F>(answer: F) -> u16
where
    F: Fn(&str, Bytes) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let upstream = start(Options::default(), move |_, request: http::Request<_>| {
        let answer = answer.clone();
        async move {
            let path = request.uri().path().to_owned();
            let body = request.into_body().collect().await?.to_bytes();
            let (status, headers, body) = answer(&path, body);
            let mut response = http::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            Ok::<_, hyper::Error>(response.body(full(body)).unwrap())
        }
    })
    .await;
    upstream.port
}

/// An upstream answering every request `200` with `body`. Its port.
pub async fn fixed(body: &'static str) -> u16 {
    let upstream = start(Options::default(), move |_, _| async move {
        Ok::<_, std::convert::Infallible>(http::Response::new(full(body)))
    })
    .await;
    upstream.port
}

/// An upstream whose answer changes from call to call: `call <n> <uri>
/// <body>`, with `x-upstream: yes`; the count of requests it got.
pub async fn counting() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let upstream = start(Options::default(), move |_, request: http::Request<_>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let path = request.uri().to_string();
            let body = request.into_body().collect().await?.to_bytes();
            let text = format!("call {n} {path} {}", String::from_utf8_lossy(&body));
            Ok::<_, hyper::Error>(
                http::Response::builder()
                    .header("x-upstream", "yes")
                    .body(full(text))
                    .unwrap(),
            )
        }
    })
    .await;
    (upstream.addr, calls)
}
