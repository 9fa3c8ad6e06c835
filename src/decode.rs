//! Body decoding for storage: gzip, deflate, br, zstd (rfcs/0001, Bodies).
//!
//! CONTRACT (skeleton — the identity helper replaces bodies, keeps the API).

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("{encoding} body does not decode: {why}")]
    Corrupt { encoding: String, why: String },
    #[error("decoded body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// Decodes `body` per a `content-encoding` value (a comma list applied in
/// order, e.g. `gzip, br`). `Ok(None)` when the encoding is identity/empty.
pub fn decode_body(
    content_encoding: &[u8],
    body: &[u8],
    limit_bytes: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    let _ = (content_encoding, body, limit_bytes);
    todo!()
}
