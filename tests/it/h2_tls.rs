//! HTTP/2 and TLS, end to end with the real binary: h2c (prior knowledge)
//! and h2 over TLS (ALPN) on the same port as HTTP/1.1; the generated CA
//! named by the ready line; a recording made with one protocol replayed
//! with the other; an upstream that only speaks h2 (over TLS, and h2c);
//! the HTTP/2 limits (raw frames, as an attacker sends them); user
//! certificate files and a bad certificate path.

use crate::support::ouli::{Ouli, Start};
use crate::support::{self, client, raw, upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_rustls::rustls;

/// An answer: status, headers, body.
type Answer = (u16, http::HeaderMap, Vec<u8>);

// --- clients ---------------------------------------------------------------

/// One request over HTTP/2 on `io` (prior knowledge: no upgrade dance).
async fn h2_send<I>(io: I, authority: &str, path: &str, headers: &[(&str, &str)]) -> Answer
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder().uri(format!("http://{authority}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    collect(response).await
}

/// One request over HTTP/1.1 on `io`.
async fn h1_send<I>(io: I, authority: &str, path: &str, headers: &[(&str, &str)]) -> Answer
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder().uri(path).header("host", authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    collect(response).await
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

/// h2c with prior knowledge to `addr`.
async fn h2c(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    h2_send(stream, addr, path, headers).await
}

/// A TLS connection to `addr` trusting only `ca_pem`, offering `alpn`;
/// `server_name` is what the certificate must be valid for.
async fn tls_connect(
    addr: &str,
    server_name: &str,
    ca_pem: &[u8],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    connector.connect(name, stream).await.unwrap()
}

/// h2 over TLS (ALPN `h2`), trusting `ca_pem`.
async fn h2_tls(addr: &str, ca_pem: &[u8], path: &str, headers: &[(&str, &str)]) -> Answer {
    let tls = tls_connect(addr, "127.0.0.1", ca_pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_send(tls, addr, path, headers).await
}

/// HTTP/1.1 over TLS (ALPN `http/1.1` only), trusting `ca_pem`.
async fn h1_tls(addr: &str, ca_pem: &[u8], path: &str, headers: &[(&str, &str)]) -> Answer {
    let tls = tls_connect(addr, "localhost", ca_pem, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    h1_send(tls, addr, path, headers).await
}

// --- the binary -------------------------------------------------------------

/// A config with one endpoint to 127.0.0.1:`port` over `target_type`, with
/// `endpoint` (more keys of the endpoint, indented by four) and `rest`
/// (top-level lines).
fn config(target_type: &str, port: u16, endpoint: &str, rest: &str) -> String {
    format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: {target_type}\n    target_port: {port}\n    source_port: 0\n{endpoint}{rest}"
    )
}

/// The `ca=` file of a ready line, read.
fn ca_of(ouli: &Ouli) -> (PathBuf, Vec<u8>) {
    let line = &ouli.ready_lines[0];
    let path = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("ca="))
        .unwrap_or_else(|| panic!("no ca= in {line:?}"));
    let pem = std::fs::read(path).unwrap();
    (PathBuf::from(path), pem)
}

/// A recording dir's files and sizes.
fn listing(dir: &Path) -> Vec<(PathBuf, usize)> {
    support::files::files_under(dir)
        .into_iter()
        .map(|(path, bytes)| (path, bytes.len()))
        .collect()
}

/// An upstream answering `<method> <path> <version> <n>` (the n-th
/// request it saw).
async fn echo_upstream() -> u16 {
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = upstream::start(upstream::Options::default(), move |_, request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let text = format!(
                "{} {} {:?} {n}",
                request.method(),
                request.uri(),
                request.version()
            );
            Ok::<_, std::convert::Infallible>(http::Response::new(upstream::full(text)))
        }
    })
    .await;
    upstream.port
}

// --- h2c and TLS on the listeners -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_over_http1_replays_over_h2c_and_the_other_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream().await;
    let yaml = config("http", port, "", "");
    let ouli = Ouli::start("record", dir.path(), &yaml);
    let session = [("test-name", "one")];
    let (status, _, by_h1) = client::send(&ouli.addr, "GET", "/a?x=1", &session, vec![]).await;
    assert_eq!(status, 200);
    let other = [("test-name", "two")];
    let (status, _, by_h2) = h2c(&ouli.addr, "/b?y=2", &other).await;
    assert_eq!(status, 200);
    ouli.stop().assert_success();
    // The upstream saw HTTP/1.1 both times: ouli speaks its own protocol
    // to the upstream, whatever the client spoke.
    assert_eq!(String::from_utf8_lossy(&by_h1), "GET /a?x=1 HTTP/1.1 1");
    assert_eq!(String::from_utf8_lossy(&by_h2), "GET /b?y=2 HTTP/1.1 2");

    let ouli = Ouli::start("replay", dir.path(), &yaml);
    let (status, headers, body) = h2c(&ouli.addr, "/a?x=1", &session).await;
    assert_eq!((status, body), (200, by_h1), "{headers:?}");
    let (status, _, body) = client::send(&ouli.addr, "GET", "/b?y=2", &other, vec![]).await;
    assert_eq!((status, body), (200, by_h2));
    // A different request over h2 is still a miss: the match is real.
    let (status, headers, _) = h2c(&ouli.addr, "/a?x=2", &session).await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-ouli-error"], "replay-miss");
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_h2_and_http1_by_alpn_with_the_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let port = echo_upstream().await;
    let ca_out = dir.path().join("ca.pem");
    let yaml = config(
        "http",
        port,
        "    source_type: https\n",
        &format!("tls_ca_out: {}\n", ca_out.display()),
    );
    let ouli = Ouli::start("record", dir.path(), &yaml);
    let line = ouli.ready_lines[0].clone();
    assert!(
        line.ends_with(&format!(" mode=record tls=on ca={}", ca_out.display())),
        "{line}"
    );
    let (ca_path, ca_pem) = ca_of(&ouli);
    assert_eq!(ca_path, ca_out);
    let ca_text = String::from_utf8(ca_pem.clone()).unwrap();
    assert!(ca_text.contains("BEGIN CERTIFICATE"), "{ca_text}");
    assert!(
        !ca_text.contains("PRIVATE KEY"),
        "the CA's key is never written"
    );
    let session = [("test-name", "tls")];
    let (status, _, over_h2) = h2_tls(&ouli.addr, &ca_pem, "/over/h2", &session).await;
    assert_eq!(
        (status, &over_h2[..]),
        (200, &b"GET /over/h2 HTTP/1.1 1"[..])
    );
    let (status, _, over_h1) = h1_tls(&ouli.addr, &ca_pem, "/over/h1", &session).await;
    assert_eq!(
        (status, &over_h1[..]),
        (200, &b"GET /over/h1 HTTP/1.1 2"[..])
    );
    ouli.stop().assert_success();

    // Replay, each recorded over one protocol asked over the other; a new
    // CA is made, and nothing is written into the recording dir.
    let before = listing(&dir.path().join("recordings"));
    let ouli = Ouli::start("replay", dir.path(), &yaml);
    let (_, ca_pem) = ca_of(&ouli);
    let (status, _, body) = h1_tls(&ouli.addr, &ca_pem, "/over/h2", &session).await;
    assert_eq!((status, body), (200, over_h2));
    let (status, _, body) = h2_tls(&ouli.addr, &ca_pem, "/over/h1", &session).await;
    assert_eq!((status, body), (200, over_h1));
    ouli.stop().assert_success();
    assert_eq!(listing(&dir.path().join("recordings")), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_tls_listener_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let yaml = config(
        "http",
        support::free_port(),
        "    source_type: https\n",
        &format!("tls_ca_out: {}\n", dir.path().join("ca.pem").display()),
    );
    let ouli = Ouli::start("replay", dir.path(), &yaml);
    let addr = ouli.addr.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = raw::connect(&addr, raw::READ_TIMEOUT);
        stream
            .write_all(b"GET /__ouli/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        got
    })
    .await
    .unwrap();
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_goes_to_the_temporary_directory_by_default_and_where_the_flag_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let yaml = config("http", support::free_port(), "    source_type: https\n", "");
    let ouli = Start::new("replay", dir.path(), &yaml)
        .env("TMPDIR", tmp.to_str().unwrap())
        .spawn();
    let (path, pem) = ca_of(&ouli);
    assert_eq!(path, tmp.join("ouli-ca.pem"));
    let (status, _, _) = h2_tls(&ouli.addr, &pem, "/__ouli/health", &[]).await;
    assert_eq!(status, 200);
    ouli.stop().assert_success();

    let flagged = dir.path().join("flag-ca.pem");
    let ouli = Start::new("replay", dir.path(), &yaml)
        .env("TMPDIR", tmp.to_str().unwrap())
        .mode_arg("--tls-ca-out")
        .mode_arg(&flagged)
        .spawn();
    let (path, pem) = ca_of(&ouli);
    assert_eq!(path, flagged);
    let (status, _, _) = h1_tls(&ouli.addr, &pem, "/__ouli/health", &[]).await;
    assert_eq!(status, 200);
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_h2c_and_h2_over_tls_to_it() {
    if !std::path::Path::new("/usr/bin/curl").exists() {
        eprintln!("skipped: no /usr/bin/curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let ca_out = dir.path().join("ca.pem");
    let yaml = format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: 1\n    source_port: 0\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: 1\n    source_port: 0\n    source_type: https\ntls_ca_out: {}\n",
        ca_out.display()
    );
    let ouli = Start::new("replay", dir.path(), &yaml).endpoints(2).spawn();
    assert!(
        !ouli.ready_lines[0].contains("tls="),
        "{:?}",
        ouli.ready_lines
    );
    let cleartext = ouli.addrs[0].clone();
    let tls_port = ouli.addrs[1].rsplit(':').next().unwrap().to_owned();
    let curl = move |args: Vec<String>| {
        let output = std::process::Command::new("/usr/bin/curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let h2c = curl(vec![
        "--http2-prior-knowledge".into(),
        format!("http://{cleartext}/__ouli/health"),
    ]);
    assert_eq!(h2c, "200 2");
    let h1 = curl(vec![format!("http://{cleartext}/__ouli/health")]);
    assert_eq!(h1, "200 1.1");
    let tls = curl(vec![
        "--http2".into(),
        "--cacert".into(),
        ca_out.display().to_string(),
        format!("https://localhost:{tls_port}/__ouli/health"),
    ]);
    assert_eq!(tls, "200 2");
    let tls_h1 = curl(vec![
        "--http1.1".into(),
        "--cacert".into(),
        ca_out.display().to_string(),
        format!("https://127.0.0.1:{tls_port}/__ouli/health"),
    ]);
    assert_eq!(tls_h1, "200 1.1");
    ouli.stop().assert_success();
}

// --- certificate files --------------------------------------------------------

/// A private CA (PEM) and a leaf for `localhost` it signed: (CA PEM, leaf
/// PEM, leaf key PEM).
fn private_ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), leaf_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_supplied_certificate_files_are_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let (ca, leaf, key) = private_ca_and_leaf();
    std::fs::write(dir.path().join("leaf.pem"), leaf).unwrap();
    std::fs::write(dir.path().join("leaf.key"), key).unwrap();
    let not_written = dir.path().join("never.pem");
    // Relative paths: relative to the config's folder. Top-level keys.
    let yaml = config(
        "http",
        support::free_port(),
        "    source_type: https\n",
        &format!(
            "tls_cert_file: leaf.pem\ntls_key_file: leaf.key\ntls_ca_out: {}\n",
            not_written.display()
        ),
    );
    let ouli = Ouli::start("replay", dir.path(), &yaml);
    assert!(
        ouli.ready_lines[0].ends_with(" mode=replay tls=on"),
        "{:?}",
        ouli.ready_lines
    );
    let (status, _, _) = h2_tls(&ouli.addr, ca.as_bytes(), "/__ouli/health", &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = h1_tls(&ouli.addr, ca.as_bytes(), "/__ouli/health", &[]).await;
    assert_eq!(status, 200);
    ouli.stop().assert_success();
    assert!(!not_written.exists(), "no CA is made for user certificates");
}

#[test]
fn a_bad_certificate_path_or_file_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let (_, _, key) = private_ca_and_leaf();
    std::fs::write(dir.path().join("leaf.key"), key).unwrap();
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    for (cert, named) in [
        ("missing-cert.pem", "missing-cert.pem"),
        ("garbage.pem", "garbage.pem"),
    ] {
        let yaml = config(
            "http",
            support::free_port(),
            &format!(
                "    source_type: https\n    tls_cert_file: {cert}\n    tls_key_file: leaf.key\n"
            ),
            "",
        );
        let failed = Start::new("replay", dir.path(), &yaml)
            .log(crate::support::ouli::Log::Collect)
            .try_spawn()
            .err()
            .unwrap_or_else(|| panic!("{cert}: started"));
        assert!(!failed.status.success());
        assert!(failed.line.is_empty(), "no ready line: {:?}", failed.line);
        assert!(failed.log.contains(named), "{cert}: {}", failed.log);
    }
}

// --- upstreams that speak HTTP/2 ------------------------------------------------

/// An upstream that speaks HTTP/2 only (TLS with ALPN `h2` alone when
/// `acceptor` is given, else h2c), answering `<path> <version>
/// connection=<n>`; the count of connections it accepted.
async fn h2_only_upstream(acceptor: Option<tokio_rustls::TlsAcceptor>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let text = format!(
                            "{} {:?} connection={n}",
                            request.uri().path(),
                            request.version()
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    },
                );
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        builder.serve_connection(TokioIo::new(tls), service).await
                    }
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (port, connections)
}

/// A TLS acceptor for `localhost` offering ALPN `h2` only, and its CA.
fn h2_only_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    use rustls::pki_types::pem::PemObject as _;
    let (ca, leaf, key) = private_ca_and_leaf();
    let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_that_only_speaks_h2_is_recorded_on_one_shared_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca) = h2_only_acceptor();
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let (port, connections) = h2_only_upstream(Some(acceptor)).await;
    let yaml = format!(
        "ca_file: {}\nendpoints:\n  - target_host: localhost\n    target_type: https\n    target_port: {port}\n    source_port: 0\n",
        ca_file.display()
    );
    let ouli = Ouli::start("record", dir.path(), &yaml);
    let session = [("test-name", "h2-upstream")];
    let mut recorded = Vec::new();
    // The first opens the upstream connection; the others, each on a
    // client connection of its own and all at once, share it.
    let sends = std::iter::once(0).chain(1..6).map(|i| {
        let addr = ouli.addr.clone();
        async move {
            let path = format!("/item/{i}");
            let (status, _, body) = client::send(&addr, "GET", &path, &session, vec![]).await;
            (path, status, body)
        }
    });
    let mut sends = sends.map(Box::pin);
    let first = sends.next().unwrap().await;
    for (path, status, body) in std::iter::once(first).chain(futures_join_all(sends).await) {
        assert_eq!(status, 200);
        assert!(
            String::from_utf8_lossy(&body).starts_with(&format!("{path} HTTP/2.0 connection=")),
            "{}",
            String::from_utf8_lossy(&body)
        );
        recorded.push((path, body));
    }
    ouli.stop().assert_success();
    // One HTTP/2 connection carried them all.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert!(
        recorded
            .iter()
            .all(|(_, body)| body.ends_with(b"connection=1"))
    );

    let ouli = Ouli::start("replay", dir.path(), &yaml);
    for (path, body) in recorded {
        let (status, _, got) = h2c(&ouli.addr, &path, &session).await;
        assert_eq!((status, got), (200, body), "{path}");
    }
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_h2c_upstream_is_spoken_to_with_target_protocol_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let (port, connections) = h2_only_upstream(None).await;
    let yaml = config("http", port, "    target_protocol: h2c\n", "");
    let ouli = Ouli::start("passthrough", dir.path(), &yaml);
    for i in 0..3 {
        let path = format!("/grpc-like/{i}");
        let (status, _, body) = client::send(&ouli.addr, "POST", &path, &[], vec![]).await;
        assert_eq!(status, 200);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("{path} HTTP/2.0 connection=1")
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    ouli.stop().assert_success();
}

#[test]
fn target_protocol_h2c_on_an_https_upstream_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config("https", 443, "    target_protocol: h2c\n", "");
    let failed = Start::new("record", dir.path(), &yaml)
        .log(crate::support::ouli::Log::Collect)
        .try_spawn()
        .err()
        .expect("refused");
    assert_eq!(failed.status.code(), Some(2));
    assert!(
        failed.log.contains("endpoints[0].target_protocol"),
        "{}",
        failed.log
    );
}

/// Every future of `futures`, run at once; their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

// --- HTTP/2 limits, with raw frames --------------------------------------------

const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read: type, flags, stream, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// HPACK integer with a 7-bit prefix (RFC 7541 §5.1), no Huffman flag.
fn hpack_length(len: usize, out: &mut Vec<u8>) {
    if len < 127 {
        out.push(len as u8);
        return;
    }
    out.push(127);
    let mut rest = len - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2).
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        hpack_length(name.len(), &mut block);
        block.extend_from_slice(name.as_bytes());
        hpack_length(value.len(), &mut block);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// A request's HEADERS frame on `stream` (a POST whose body never comes
/// unless `end_stream`), with `extra` fields.
fn request_headers(stream: u32, end_stream: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", "/held"),
    ];
    fields.extend_from_slice(extra);
    let flags = FLAG_END_HEADERS | if end_stream { FLAG_END_STREAM } else { 0 };
    frame(FRAME_HEADERS, flags, stream, &hpack(&fields))
}

/// A raw h2c connection past its preface: ours and the server's SETTINGS
/// exchanged and acknowledged.
fn raw_h2(addr: &str) -> std::net::TcpStream {
    let mut stream = raw::connect(addr, Duration::from_secs(10));
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    stream.write_all(&opening).unwrap();
    let settings = read_frame(&mut stream).expect("the server's SETTINGS");
    assert_eq!(settings.kind, FRAME_SETTINGS, "{settings:?}");
    stream
        .write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
        .unwrap();
    stream
}

fn read_frame(stream: &mut std::net::TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Frames until `done` says so, the connection closes or reads time out.
fn frames_until(stream: &mut std::net::TcpStream, done: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = read_frame(stream) {
        let stop = done(&frame);
        frames.push(frame);
        if stop {
            break;
        }
    }
    frames
}

fn error_code(frame: &Frame, at: usize) -> u32 {
    let bytes: [u8; 4] = frame.payload[at..at + 4].try_into().unwrap();
    u32::from_be_bytes(bytes)
}

/// A replay server with `limits` (lines under `limits:`).
fn replay_with_limits(dir: &Path, limits: &str) -> Ouli {
    std::fs::create_dir_all(dir.join("recordings")).unwrap();
    let yaml = support::config_with_limits(support::free_port(), limits);
    Ouli::start("replay", dir, &yaml)
}

#[test]
fn the_http2_preface_on_a_cleartext_port_is_served_as_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let mut ouli = replay_with_limits(dir.path(), "  h2_max_concurrent_streams: 7\n");
    let mut stream = raw::connect(&ouli.addr, Duration::from_secs(10));
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    opening.extend(frame(FRAME_SETTINGS, 0, 0, &[]));
    stream.write_all(&opening).unwrap();
    let settings = read_frame(&mut stream).expect("a frame, not an HTTP/1 answer");
    assert_eq!(settings.kind, FRAME_SETTINGS, "{settings:?}");
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) = the configured limit.
    let advertised = settings
        .payload
        .chunks(6)
        .find(|setting| setting[..2] == [0, 3])
        .map(|setting| u32::from_be_bytes(setting[2..6].try_into().unwrap()));
    assert_eq!(advertised, Some(7), "{settings:?}");
    ouli.assert_serving_raw();
    // Closed first: a graceful stop waits for an open HTTP/2 connection to
    // answer its GOAWAY's PING.
    drop(stream);
    ouli.stop().assert_success();
}

#[test]
fn a_stream_over_h2_max_concurrent_streams_is_refused_and_the_process_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut ouli = replay_with_limits(dir.path(), "  h2_max_concurrent_streams: 2\n");
    let mut stream = raw_h2(&ouli.addr);
    // Three requests whose bodies never come: the first two stay open.
    let mut burst = Vec::new();
    for id in [1, 3, 5] {
        burst.extend(request_headers(id, false, &[]));
    }
    stream.write_all(&burst).unwrap();
    let frames = frames_until(&mut stream, |f| {
        f.kind == FRAME_RST_STREAM || f.kind == FRAME_GOAWAY
    });
    let refused = frames
        .iter()
        .find(|f| f.kind == FRAME_RST_STREAM)
        .unwrap_or_else(|| panic!("no RST_STREAM: {frames:?}"));
    assert_eq!(
        (refused.stream, error_code(refused, 0)),
        (5, REFUSED_STREAM)
    );
    // The streams within the limit go on: their (empty) bodies end, and
    // each is answered on the same connection.
    let mut ends = frame(0x0, FLAG_END_STREAM, 1, &[]);
    ends.extend(frame(0x0, FLAG_END_STREAM, 3, &[]));
    stream.write_all(&ends).unwrap();
    let mut answered = Vec::new();
    for id in [1, 3] {
        if !answered
            .iter()
            .any(|f: &Frame| f.kind == FRAME_HEADERS && f.stream == id)
        {
            answered.extend(frames_until(&mut stream, |f| {
                f.kind == FRAME_HEADERS && f.stream == id
            }));
        }
    }
    for id in [1, 3] {
        assert!(
            answered
                .iter()
                .any(|f| f.kind == FRAME_HEADERS && f.stream == id),
            "stream {id}: {answered:?}"
        );
    }
    // Answered as requests (a replay miss), not cut off by a body timeout.
    let bodies: Vec<String> = answered
        .iter()
        .filter(|f| f.kind == 0x0)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert!(
        bodies.iter().all(|b| !b.contains("body-timeout")),
        "{bodies:?}"
    );
    ouli.assert_serving_raw();
    // Closed first: a graceful stop waits for an open HTTP/2 connection to
    // answer its GOAWAY's PING.
    drop(stream);
    ouli.stop().assert_success();
}

#[test]
fn a_header_list_over_h2_max_header_list_bytes_is_refused_and_the_process_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut ouli = replay_with_limits(dir.path(), "  h2_max_header_list_bytes: 2048\n");
    let mut stream = raw_h2(&ouli.addr);
    let big = "b".repeat(4096);
    stream
        .write_all(&request_headers(1, true, &[("x-big", &big)]))
        .unwrap();
    let frames = frames_until(&mut stream, |f| {
        f.stream == 1 && (f.kind == FRAME_RST_STREAM || f.flags & FLAG_END_STREAM != 0)
            || f.kind == FRAME_GOAWAY
    });
    // h2 answers 431 in a HEADERS frame that ends the stream, or resets it;
    // either way the request never reaches ouli (no DATA: no miss report).
    let refused = frames.iter().any(|f| {
        f.stream == 1
            && (f.kind == FRAME_RST_STREAM
                || (f.kind == FRAME_HEADERS && f.flags & FLAG_END_STREAM != 0))
    });
    assert!(refused, "{frames:?}");
    assert!(
        !frames.iter().any(|f| f.kind == 0x0 && f.stream == 1),
        "{frames:?}"
    );
    // Under the limit, the same connection is answered (a replay miss).
    stream
        .write_all(&request_headers(3, true, &[("x-small", "s")]))
        .unwrap();
    let answered = frames_until(&mut stream, |f| f.kind == 0x0 && f.stream == 3);
    assert!(
        answered.iter().any(|f| f.kind == 0x0 && f.stream == 3),
        "{answered:?}"
    );
    ouli.assert_serving_raw();
    // Closed first: a graceful stop waits for an open HTTP/2 connection to
    // answer its GOAWAY's PING.
    drop(stream);
    ouli.stop().assert_success();
}

#[test]
fn rapid_resets_over_h2_max_pending_reset_streams_close_the_connection_and_the_process_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut ouli = replay_with_limits(dir.path(), "  h2_max_pending_reset_streams: 5\n");
    let mut stream = raw_h2(&ouli.addr);
    // The rapid-reset attack: open and cancel, many times, in one write.
    let mut burst = Vec::new();
    for i in 0..200u32 {
        let id = 2 * i + 1;
        burst.extend(request_headers(id, false, &[]));
        burst.extend(frame(FRAME_RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = stream.write_all(&burst);
    let frames = frames_until(&mut stream, |f| f.kind == FRAME_GOAWAY);
    let goaway = frames
        .iter()
        .find(|f| f.kind == FRAME_GOAWAY)
        .unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    assert_eq!(error_code(goaway, 4), ENHANCE_YOUR_CALM, "{goaway:?}");
    ouli.assert_serving_raw();
    // Closed first: a graceful stop waits for an open HTTP/2 connection to
    // answer its GOAWAY's PING.
    drop(stream);
    ouli.stop().assert_success();
}

#[test]
fn connections_max_holds_for_tls_and_h2_connections() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let ca_out = dir.path().join("ca.pem");
    let yaml = format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: 1\n    source_port: 0\n    source_type: https\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: 1\n    source_port: 0\ntls_ca_out: {}\nlimits:\n  connections_max: 2\n",
        ca_out.display()
    );
    let ouli = Start::new("replay", dir.path(), &yaml).endpoints(2).spawn();
    let tls_addr = ouli.addrs[0].clone();
    let cleartext = ouli.addrs[1].clone();
    // Two h2c connections hold both slots.
    let first = raw_h2(&cleartext);
    let second = raw_h2(&cleartext);
    // A TLS client over the limit is closed, never answered in plaintext.
    let addr = tls_addr.clone();
    let got = std::thread::spawn(move || {
        let mut stream = raw::connect(&addr, Duration::from_secs(10));
        // A TLS ClientHello's first bytes are enough to be refused on.
        let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0]);
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        got
    })
    .join()
    .unwrap();
    assert!(
        !got.starts_with(b"HTTP/"),
        "plaintext on a TLS port: {got:?}"
    );
    assert!(got.is_empty(), "{got:?}");
    // A cleartext one over the limit gets the 503.
    let answer = raw::exchange(
        &cleartext,
        b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        false,
    );
    answer.assert_ouli_error(503, "too-many-connections");
    drop((first, second));
    // Slots free: TLS serves again.
    let pem = std::fs::read(&ca_out).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        for _ in 0..100 {
            // Until the slots are seen free, the handshake may still be
            // refused (the helper panics then): try again.
            let (addr, pem) = (tls_addr.clone(), pem.clone());
            let tried =
                tokio::spawn(async move { h2_tls(&addr, &pem, "/__ouli/health", &[]).await }).await;
            if let Ok((200, _, _)) = tried {
                return 200;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        0
    });
    assert_eq!(status, 200);
    ouli.stop().assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_count_max_holds_for_http2_requests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let yaml = support::config_with_limits(support::free_port(), "  header_count_max: 4\n");
    let ouli = Ouli::start("replay", dir.path(), &yaml);
    let many: Vec<(String, String)> = (0..6)
        .map(|i| (format!("x-many-{i}"), "v".into()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (status, headers, _) = h2c(&ouli.addr, "/many", &many).await;
    assert_eq!(status, 431);
    assert_eq!(headers["x-ouli-error"], "headers-too-large");
    let (status, headers, _) = h2c(&ouli.addr, "/few", &many[..2]).await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-ouli-error"], "replay-miss");
    ouli.stop().assert_success();
}

#[test]
fn a_tls_handshake_that_never_comes_is_dropped_after_header_read_timeout_ms() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("recordings")).unwrap();
    let yaml = config(
        "http",
        support::free_port(),
        "    source_type: https\n",
        &format!(
            "tls_ca_out: {}\nlimits:\n  header_read_timeout_ms: 300\n",
            dir.path().join("ca.pem").display()
        ),
    );
    let ouli = Ouli::start("replay", dir.path(), &yaml);
    let mut stream = raw::connect(&ouli.addr, Duration::from_secs(20));
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    ouli.stop().assert_success();
}
