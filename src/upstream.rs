//! The upstream client of record and passthrough modes: one pooled hyper-util
//! client per process, http and https (rustls), trusting the system's CA certificates plus
//! `ca_file` and `SSL_CERT_FILE` (test-server's users point it at a private CA).
//!
//! hyper-util's pool keeps idle connections per host; deadpool would repeat
//! that job, so it is not used here (rfcs/0003).

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The client type shared by every connection.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle upstream connections kept per host.
pub const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("CA file {path}: {why}")]
    CaFile { path: PathBuf, why: String },
}

/// Builds the pooled client. `ca_files` are PEM bundles added to the roots.
pub fn build_client(
    ca_files: &[PathBuf],
    connect_timeout: Duration,
) -> Result<UpstreamClient, UpstreamSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    add_system_roots(&mut roots);
    for path in ca_files {
        add_pem(&mut roots, path)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpstreamSetupError::CaFile {
        path: PathBuf::new(),
        why: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
        .build(https))
}

/// The system's CA certificates (`/etc/ssl/certs` and the like, or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`): what test-server, a Go program, trusts.
/// Unreadable ones are logged and skipped; none at all is said once, at
/// start, not at the first HTTPS request.
fn add_system_roots(roots: &mut rustls::RootCertStore) {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("system CA certificates: {error}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no system CA certificates found (install ca-certificates, or set ca_file or SSL_CERT_FILE): HTTPS upstreams will be refused"
        );
    }
}

/// The CA files to trust: the configured one and `SSL_CERT_FILE`.
pub fn ca_files(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = configured.map(Path::to_path_buf).into_iter().collect();
    if let Some(env) = std::env::var_os("SSL_CERT_FILE") {
        files.push(PathBuf::from(env));
    }
    files
}

fn add_pem(roots: &mut rustls::RootCertStore, path: &Path) -> Result<(), UpstreamSetupError> {
    let err = |why: String| UpstreamSetupError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| err(e.to_string()))?;
        roots.add(cert).map_err(|e| err(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(())
}
