//! Listener: binds every endpoint (and `[::1]` beside IPv4 loopback),
//! accepts connections (up to `limits.connections_max`; out of descriptors
//! it backs off and sheds, `shed`), hands each to [`connection`] (TLS,
//! HTTP/1.1 or HTTP/2, with the configured limits), and on SIGINT/SIGTERM
//! fails readiness (`/__ouli/ready` answers 503), lets in-flight requests
//! finish while still taking connections (so that a load balancer's probe
//! is answered, not refused), then stops accepting, closes the recordings
//! and writes the unused report (`usage.rs`).

mod connection;
mod replay_lane;

use super::session::report_interrupted_recordings;
use super::shed;
use super::{Mode, ServeError, ServeOptions, Server};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves until SIGINT/SIGTERM (builds its own tokio runtime). Prints one line
/// per endpoint to stdout when it is ready:
/// `ouli listening endpoint=<i> addr=<ip:port> mode=<mode>`, followed for a
/// TLS listener by ` tls=on`, and ` ca=<file>` when its certificate was
/// generated (the CA certificate to trust).
pub fn run(options: ServeOptions) -> Result<(), ServeError> {
    if matches!(options.mode, Mode::Record | Mode::RecordMissing) {
        std::fs::create_dir_all(&options.recording_dir).map_err(|e| ServeError::RecordingDir {
            path: options.recording_dir.clone(),
            why: format!("cannot be created: {e}"),
        })?;
    }
    if options.mode == Mode::Replay && !options.recording_dir.is_dir() {
        return Err(ServeError::RecordingDir {
            path: options.recording_dir.clone(),
            why: "not a directory (replay reads recordings from it)".into(),
        });
    }
    report_interrupted_recordings(&options.recording_dir, options.mode);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("cannot start the tokio runtime: {e}")))?;
    runtime.block_on(serve(options))
}

/// An accepted stream's connection (`connection.rs`), stopped by `stop`.
fn new_connection(
    server: &Arc<Server>,
    options: &Arc<ServeOptions>,
    tls: &crate::tls::ListenerTls,
    index: usize,
    stream: &tokio::net::TcpStream,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> connection::Connection {
    let _ = stream.set_nodelay(true);
    connection::Connection {
        server: server.clone(),
        index,
        options: options.clone(),
        tls: tls.acceptor(index).cloned(),
        stop: stop.clone(),
        peer: stream.peer_addr().ok().map(|addr| addr.ip()),
    }
}

pub(super) async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let options = Arc::new(options);
    let config = &options.config;
    let server = Arc::new(Server::new(&options)?);
    // Before any port is bound: a bad certificate stops the start.
    let tls = crate::tls::ListenerTls::new(config).map_err(|e| ServeError::Setup(e.to_string()))?;
    let mut listeners = Vec::with_capacity(config.endpoints.len());
    for (index, endpoint) in config.endpoints.iter().enumerate() {
        let addr = SocketAddr::new(config.listen_address, endpoint.source_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                endpoint: index,
                addr,
                source,
            })?;
        listeners.push(listener);
    }
    // `localhost` resolves to ::1 first on many machines, and some clients
    // (Node before 20, test-server's SDK health polls) do not fall back to
    // 127.0.0.1: on IPv4 loopback, each endpoint also listens on IPv6
    // loopback, same port, where the machine has it.
    let mut loopback_v6 = Vec::new();
    if config.listen_address == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST) {
        for (index, listener) in listeners.iter().enumerate() {
            let Ok(v4) = listener.local_addr() else {
                continue;
            };
            let v6 = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), v4.port());
            match tokio::net::TcpListener::bind(v6).await {
                Ok(extra) => loopback_v6.push((index, extra)),
                Err(error) => tracing::debug!("endpoint {index}: not also on {v6}: {error}"),
            }
        }
    }
    // Every connection task, so that shutdown can wait for in-flight
    // requests (hyper-util's GracefulShutdown does not take connections
    // with upgrades, which WebSocket replay needs).
    let mut connections = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Accepting stops after the drain (below), not with the connections.
    let (accept_stop_tx, accept_stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_tasks = Vec::new();
    // Before the ready line: a SIGTERM sent as soon as it is read must stop
    // the server gracefully, not find the default action (death) in place.
    let shutdown = shutdown_signal();
    {
        let mut stdout = std::io::stdout().lock();
        for (index, listener) in listeners.iter().enumerate() {
            let addr = listener
                .local_addr()
                .map_err(|e| ServeError::Setup(e.to_string()))?;
            let _ = writeln!(
                stdout,
                "ouli listening endpoint={index} addr={addr} mode={}{}",
                options.mode.as_str(),
                tls.ready_fields(index, config),
            );
        }
        let _ = stdout.flush();
    }
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel();
    let health_paths: Arc<Vec<Option<String>>> =
        Arc::new(config.endpoints.iter().map(|e| e.health.clone()).collect());
    // A connection refused on a TLS listener is closed, never answered in
    // plaintext; the others get their 503 (`shed`).
    let is_tls: Arc<Vec<bool>> = Arc::new(
        (0..config.endpoints.len())
            .map(|i| tls.acceptor(i).is_some())
            .collect(),
    );
    let spare = Arc::new(shed::Spare::open());
    let all_listeners = listeners.into_iter().enumerate().chain(loopback_v6);
    for (index, listener) in all_listeners {
        accept_tasks.push(tokio::spawn(accept_loop(
            index,
            listener,
            conn_tx.clone(),
            accept_stop_rx.clone(),
            spare.clone(),
            (health_paths.clone(), is_tls[index]),
        )));
    }
    drop(conn_tx);
    let slots = shed::ConnectionSlots::new(
        config.limits.connections_max,
        health_paths.clone(),
        is_tls.clone(),
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            next = conn_rx.recv() => {
                let Some((index, stream)) = next else { break };
                // Over the limit, the stream is answered 503 and closed.
                let Some((slot, stream)) = slots.admit(index, stream) else { continue };
                let connection = new_connection(&server, &options, &tls, index, &stream, &stop_rx);
                connections.spawn(async move {
                    // Freed when this connection closes.
                    let _slot = slot;
                    connection.serve(stream).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Readiness fails first, so that a load balancer drains this process
    // while its in-flight requests finish.
    server.admin.not_ready();
    let _ = stop_tx.send(true);
    let timeout = Duration::from_millis(options.config.limits.shutdown_timeout_ms);
    let all_closed = async {
        // Upgraded connections have left `connections`: their
        // conversations are told to end and waited for too.
        tokio::join!(
            async { while connections.join_next().await.is_some() {} },
            server.conversations.stop()
        );
    };
    // Meanwhile connections are still taken, so that a probe of
    // `/__ouli/ready` is answered 503 rather than refused.
    let (late_stop_tx, late_stop_rx) = tokio::sync::watch::channel(false);
    let mut late = tokio::task::JoinSet::new();
    let accepting = async {
        while let Some((index, stream)) = conn_rx.recv().await {
            let Some((slot, stream)) = slots.admit(index, stream) else {
                continue;
            };
            let connection = new_connection(&server, &options, &tls, index, &stream, &late_stop_rx);
            late.spawn(async move {
                let _slot = slot;
                connection.serve(stream).await;
            });
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        closed = tokio::time::timeout(timeout, all_closed) => {
            if closed.is_err() {
                tracing::warn!("shutdown: connections still open after {timeout:?}; closing them");
            }
        }
        () = accepting => {}
    }
    let _ = accept_stop_tx.send(true);
    for task in accept_tasks {
        let _ = task.await;
    }
    let _ = late_stop_tx.send(true);
    let late_closed = async { while late.join_next().await.is_some() {} };
    if tokio::time::timeout(LATE_CONNECTIONS_GRACE, late_closed)
        .await
        .is_err()
    {
        late.abort_all();
    }
    if let Some(writer) = server.recorder().cloned() {
        let errors = tokio::task::spawn_blocking(move || writer.finish_all())
            .await
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(ServeError::Setup(format!(
                "closing recordings: {}",
                errors.join("; ")
            )));
        }
    }
    // After the recordings are closed: the report reads them as they are.
    let replayed = server
        .admin
        .replayed
        .load(std::sync::atomic::Ordering::Relaxed);
    let reporter = server.clone();
    tokio::task::spawn_blocking(move || reporter.report_unused(replayed))
        .await
        .map_err(|e| ServeError::Setup(format!("unused report: {e}")))?
}

/// How long connections opened during the shutdown drain (probes of
/// `/__ouli/ready`, mostly) get to finish once the drain is over.
const LATE_CONNECTIONS_GRACE: Duration = Duration::from_secs(1);

/// Accepts one listener's connections and hands them to the serving loop.
/// An error that is the process's (out of descriptors or memory) pauses the
/// loop, longer each time (`shed::Backoff`), and is logged once per
/// interval; out of descriptors, the spare one is closed to take the
/// waiting connection and answer it (`shed::answer`).
async fn accept_loop(
    index: usize,
    listener: tokio::net::TcpListener,
    conn_tx: tokio::sync::mpsc::UnboundedSender<(usize, tokio::net::TcpStream)>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    spare: Arc<shed::Spare>,
    (health_paths, is_tls): (Arc<Vec<Option<String>>>, bool),
) {
    let mut backoff = shed::Backoff::new();
    let log = shed::LogEvery::new();
    // Set once the spare descriptor is closed for the next accepted stream.
    let mut spare_released = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let error = match accepted {
            Ok((stream, _)) if spare_released => {
                // Progress: the next pause starts short again, so that the
                // spare, back within milliseconds, serves the next one soon.
                backoff.reset();
                spare_released = false;
                let spare = spare.clone();
                let health = health_paths[index].clone();
                tokio::spawn(async move {
                    let answered = shed::answer(
                        stream,
                        health.as_deref(),
                        shed::Why::OutOfDescriptors,
                        is_tls,
                    )
                    .await;
                    spare.put_back(answered.into_std().ok());
                });
                continue;
            }
            Ok((stream, _)) => {
                backoff.reset();
                // A spare lost at the limit is taken again while there are
                // descriptors to take (a no-op while it is held).
                spare.refill();
                let _ = conn_tx.send((index, stream));
                continue;
            }
            Err(error) => error,
        };
        if let Some(suppressed) = log.hit() {
            tracing::warn!(
                "endpoint {index}: accept failed: {error} ({suppressed} more since the last line)"
            );
        }
        if shed::is_per_connection(&error) {
            continue;
        }
        if spare_released {
            // The descriptor freed went elsewhere (another listener's
            // accept, an upstream connection).
            spare_released = false;
            spare.lost();
        } else if spare.release() {
            spare_released = true;
            continue;
        } else {
            spare.refill();
        }
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(backoff.next_pause()) => {}
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C). The handlers are installed by this call,
/// not when the future is first polled.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Ok(mut only), Err(_)) | (Err(_), Ok(mut only)) => {
                    only.recv().await;
                }
                (Err(_), Err(_)) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
