//! What the integration tests share, one file per job (as ripgrep's
//! tests/util.rs): [`ouli`] starts and stops the real binary, [`upstream`]
//! serves in-process upstreams, [`client`] sends requests with a real hyper
//! client, [`raw`] speaks HTTP/1.1 over a bare socket, [`files`] looks at
//! what ended up on disk.

// Not every module uses every helper.
#![allow(dead_code)]

pub mod client;
pub mod files;
pub mod ouli;
pub mod raw;
pub mod upstream;

/// A config with one endpoint to the plain-HTTP upstream on 127.0.0.1:`port`
/// (ouli's own port chosen by the system), then `rest` (YAML lines as they
/// are: top-level keys, or more keys of the endpoint when indented by four).
pub fn config(port: u16, rest: &str) -> String {
    format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {port}\n    source_port: 0\n{rest}"
    )
}

/// [`config`] with `limits` as the lines under a `limits:` key.
pub fn config_with_limits(port: u16, limits: &str) -> String {
    config(port, &format!("limits:\n{limits}"))
}

/// A port nothing listens on now (bound, then released): for an upstream
/// that must refuse, or a `source_port` written into a config before start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bytes` gzipped at `level`.
pub fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
