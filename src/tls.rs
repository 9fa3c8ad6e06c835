//! TLS on the listeners (`source_type: https`).
//!
//! [`ListenerTls::new`] builds one [`tokio_rustls::TlsAcceptor`] per TLS
//! endpoint. An endpoint with `tls_cert_file` and `tls_key_file` (PEM, the
//! endpoint's or the top level's) serves that chain and key. The others
//! share a certificate made at start: a CA (its key never leaves memory and
//! dies with the process) and a leaf it signs for `127.0.0.1`, `::1` and
//! `localhost`. The CA's certificate alone is written to `tls_ca_out`
//! (default [`DEFAULT_CA_FILE_NAME`] in the temporary directory), which the
//! ready line names, so that a test harness trusts it (`SSL_CERT_FILE`,
//! `NODE_EXTRA_CA_CERTS`, `curl --cacert`). Nothing goes into the recording
//! dir: replay writes nothing there.
//!
//! Every acceptor offers ALPN `h2` then `http/1.1`; the listener serves
//! what the handshake chose (`server/listener.rs`). Errors name the file
//! and say what is wrong with it: they are the user's to fix.

use crate::config::{Config, Scheme, TlsFiles};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The generated CA certificate's file name in the temporary directory when
/// `tls_ca_out` is not set.
pub const DEFAULT_CA_FILE_NAME: &str = "ouli-ca.pem";

/// Certificates read from one PEM file: a chain is a handful; this only
/// stops a wrong file (a bundle of every root) from being served.
pub const CERT_CHAIN_LEN_MAX: usize = 16;

/// Largest certificate or key file read.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// The names the generated leaf certificate is valid for: what a test
/// dials on the loopback listener.
pub const GENERATED_NAMES: &[&str] = &["127.0.0.1", "::1", "localhost"];

/// ALPN protocols a TLS listener offers, preferred first.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why the TLS listeners cannot start; the user's files or the machine.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS certificate file {path}: {why}")]
    CertFile { path: PathBuf, why: String },
    #[error("TLS key file {path}: {why}")]
    KeyFile { path: PathBuf, why: String },
    #[error("TLS certificate {cert} with key {key}: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("generating the listener CA and certificate: {0}")]
    Generate(String),
    #[error("tls_ca_out {path}: cannot write the generated CA certificate: {why}")]
    CaOut { path: PathBuf, why: String },
}

/// The TLS side of every endpoint's listener.
pub struct ListenerTls {
    /// Per endpoint: `Some` for a TLS listener.
    acceptors: Vec<Option<tokio_rustls::TlsAcceptor>>,
    /// Where the generated CA certificate was written, if one was made.
    ca_file: Option<PathBuf>,
}

impl ListenerTls {
    /// Loads or makes every TLS endpoint's certificate; writes the generated
    /// CA's certificate (only if an endpoint uses it) to `tls_ca_out`.
    pub fn new(config: &Config) -> Result<ListenerTls, TlsSetupError> {
        let mut generated: Option<Generated> = None;
        let mut acceptors = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            if endpoint.source_type != Scheme::Https {
                acceptors.push(None);
                continue;
            }
            let (chain, key) = match &endpoint.tls_files {
                Some(files) => load(files)?,
                None => {
                    if generated.is_none() {
                        generated = Some(generate()?);
                    }
                    let made = generated.as_ref().expect("generated just above");
                    (made.chain.clone(), made.key.clone_key())
                }
            };
            acceptors.push(Some(acceptor(chain, key, endpoint.tls_files.as_ref())?));
        }
        let ca_file = match &generated {
            None => None,
            Some(made) => {
                let path = config
                    .tls_ca_out
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join(DEFAULT_CA_FILE_NAME));
                write_ca(&path, &made.ca_pem)?;
                Some(path)
            }
        };
        Ok(ListenerTls { acceptors, ca_file })
    }

    /// Endpoint `index`'s acceptor; `None` for a plain-HTTP listener.
    pub fn acceptor(&self, index: usize) -> Option<&tokio_rustls::TlsAcceptor> {
        self.acceptors.get(index).and_then(Option::as_ref)
    }

    /// The ready line's TLS fields for endpoint `index` (with a leading
    /// space), empty for a plain-HTTP listener: ` tls=on ca=PATH` when it
    /// serves the generated certificate, ` tls=on` with the user's.
    pub fn ready_fields(&self, index: usize, config: &Config) -> String {
        if self.acceptor(index).is_none() {
            return String::new();
        }
        let generated = config.endpoints[index].tls_files.is_none();
        match (&self.ca_file, generated) {
            (Some(ca), true) => format!(" tls=on ca={}", ca.display()),
            _ => " tls=on".to_string(),
        }
    }
}

/// A CA made at start and the leaf it signed.
struct Generated {
    /// The CA's certificate, PEM: what is written out.
    ca_pem: String,
    /// The leaf, then the CA (a client that has the CA finds the path).
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn generate() -> Result<Generated, TlsSetupError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| TlsSetupError::Generate(e.to_string());
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ouli listener CA (generated at start)");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
    let names: Vec<String> = GENERATED_NAMES.iter().map(|n| n.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).map_err(err)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca).map_err(err)?;
    Ok(Generated {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    })
}

/// Reads the user's chain and key (PEM).
fn load(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let cert_err = |why: String| TlsSetupError::CertFile {
        path: files.cert_file.clone(),
        why,
    };
    let pem = read_bounded(&files.cert_file).map_err(cert_err)?;
    let mut chain = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| cert_err(format!("not PEM: {e}")))?;
        if chain.len() == CERT_CHAIN_LEN_MAX {
            return Err(cert_err(format!(
                "more than {CERT_CHAIN_LEN_MAX} certificates (a chain, not a bundle, is expected)"
            )));
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(cert_err(
            "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
        ));
    }
    let key_err = |why: String| TlsSetupError::KeyFile {
        path: files.key_file.clone(),
        why,
    };
    let pem = read_bounded(&files.key_file).map_err(key_err)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| key_err(format!("no PEM private key in it: {e}")))?;
    Ok((chain, key))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(format!(
            "larger than {PEM_FILE_BYTES_MAX} bytes: not a certificate or key"
        ));
    }
    Ok(bytes)
}

fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    files: Option<&TlsFiles>,
) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| match files {
            Some(files) => TlsSetupError::Mismatch {
                cert: files.cert_file.clone(),
                key: files.key_file.clone(),
                why: e.to_string(),
            },
            None => TlsSetupError::Generate(e.to_string()),
        })?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Writes the CA certificate whole or not at all (a temporary file renamed
/// over the old one): a harness reading it as soon as the ready line names
/// it never sees half a file.
fn write_ca(path: &Path, pem: &str) -> Result<(), TlsSetupError> {
    let err = |why: String| TlsSetupError::CaOut {
        path: path.to_path_buf(),
        why,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, pem).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        err(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_chain_is_a_leaf_then_its_ca_and_the_ca_pem_holds_no_key() {
        let made = generate().unwrap();
        assert_eq!(made.chain.len(), 2);
        assert!(made.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(!made.ca_pem.contains("PRIVATE KEY"));
        let ca = CertificateDer::from_pem_slice(made.ca_pem.as_bytes()).unwrap();
        assert_eq!(ca, made.chain[1]);
    }

    #[test]
    fn a_missing_or_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = TlsFiles {
            cert_file: empty.clone(),
            key_file: dir.path().join("missing.key"),
        };
        let error = load(&files).unwrap_err().to_string();
        assert!(error.contains("empty.pem"), "{error}");
        std::fs::write(&empty, generate().unwrap().ca_pem).unwrap();
        let error = load(&files).unwrap_err().to_string();
        assert!(error.contains("missing.key"), "{error}");
    }
}
