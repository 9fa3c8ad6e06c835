//! Body decoding for storage: gzip, deflate, br, zstd (rfcs/0001, Bodies).
//!
//! Each decoder reads through a `take(limit + 1)` so that a decompression bomb
//! stops at the limit instead of filling memory. [`for_storage`] is the one
//! policy every caller uses: a request body is decoded under
//! `limits.request_body_bytes_max`, a response body under
//! `limits.response_body_bytes_max`, whichever path it takes.

use std::io::Read;

use crate::config::Limits;

/// Which way a body travels: each direction has its one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    /// The most bytes a body of this direction may hold, decoded.
    pub fn limit(self, limits: &Limits) -> usize {
        match self {
            Direction::Request => limits.request_body_bytes_max,
            Direction::Response => limits.response_body_bytes_max,
        }
    }

    /// The config key of [`Direction::limit`], for messages.
    pub fn limit_key(self) -> &'static str {
        match self {
            Direction::Request => "limits.request_body_bytes_max",
            Direction::Response => "limits.response_body_bytes_max",
        }
    }
}

/// What a body becomes before it is matched and stored.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// No encoding to undo (none, or `identity`): the body as sent.
    AsSent,
    /// Decoded, within its direction's limit.
    Decoded(Vec<u8>),
    /// An encoding ouli cannot undo (unknown, or the data does not decode):
    /// the body is kept as sent, its `content-encoding` with it.
    Undecodable(DecodeError),
    /// Over its direction's limit once decoded (decoding stopped one byte
    /// past it): a request is refused (413), a response not recorded.
    TooLarge { limit: usize },
}

/// Decodes a body of `direction` per its `content-encoding`, under that
/// direction's limit.
pub fn for_storage(
    direction: Direction,
    limits: &Limits,
    content_encoding: &[u8],
    body: &[u8],
) -> Stored {
    match decode_body(content_encoding, body, direction.limit(limits)) {
        Ok(None) => Stored::AsSent,
        Ok(Some(decoded)) => Stored::Decoded(decoded),
        Err(DecodeError::TooLarge { limit }) => Stored::TooLarge { limit },
        Err(error) => Stored::Undecodable(error),
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
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
    let encodings: Vec<String> = String::from_utf8_lossy(content_encoding)
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect();
    if encodings.is_empty() {
        return Ok(None);
    }
    // A HEAD response or a 204/304 may carry a content-encoding and no
    // body; some decoders call empty input truncated.
    if body.is_empty() {
        return Ok(Some(Vec::new()));
    }
    // Applied in order when encoding, so undone in reverse.
    let mut current: Option<Vec<u8>> = None;
    for encoding in encodings.iter().rev() {
        let input: &[u8] = current.as_deref().unwrap_or(body);
        current = Some(decode_one(encoding, input, limit_bytes)?);
    }
    Ok(current)
}

fn decode_one(encoding: &str, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |why: std::io::Error| DecodeError::Corrupt {
        encoding: encoding.to_string(),
        why: why.to_string(),
    };
    let cap = (limit as u64).saturating_add(1);
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit));
    match encoding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out)
            .map_err(corrupt)?,
        // RFC 9110 says zlib-wrapped; some servers send raw deflate.
        "deflate" => match flate2::read::ZlibDecoder::new(input)
            .take(cap)
            .read_to_end(&mut out)
        {
            Ok(n) => n,
            Err(_) => {
                out.clear();
                flate2::read::DeflateDecoder::new(input)
                    .take(cap)
                    .read_to_end(&mut out)
                    .map_err(corrupt)?
            }
        },
        "br" => brotli_decompressor::Decompressor::new(input, 64 * 1024)
            .take(cap)
            .read_to_end(&mut out)
            .map_err(corrupt)?,
        "zstd" => {
            decode_zstd(input, cap, &mut out).map_err(corrupt)?;
            out.len()
        }
        other => return Err(DecodeError::Unsupported(other.to_string())),
    };
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// zstd (RFC 8878) with ruzstd, a decoder only: a body may hold several
/// frames, decoded in turn, and skippable frames, skipped; a frame's checksum,
/// when it has one, is checked; a frame asking for a window over 128 MiB is
/// refused (libzstd's default limit too). Stops once `out` holds `cap` bytes.
fn decode_zstd(mut input: &[u8], cap: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
    use ruzstd::decoding::{FrameDecoder, StreamingDecoder};
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let mut decoder = FrameDecoder::new();
    while !input.is_empty() {
        let mut frame = match StreamingDecoder::new_with_decoder(&mut input, &mut decoder) {
            Ok(frame) => frame,
            Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                length,
                ..
            })) => {
                input = input
                    .get(length as usize..)
                    .ok_or_else(|| invalid("skippable frame runs past the end".into()))?;
                continue;
            }
            Err(error) => return Err(invalid(error.to_string())),
        };
        let room = cap.saturating_sub(out.len() as u64);
        (&mut frame).take(room).read_to_end(out)?;
        if out.len() as u64 >= cap {
            return Ok(());
        }
        let frame = frame.into_frame_decoder();
        if !frame.is_finished() {
            return Err(invalid("frame ends early".into()));
        }
        if let (Some(stored), Some(computed)) = (
            frame.get_checksum_from_data(),
            frame.get_calculated_checksum(),
        ) && stored != computed
        {
            return Err(invalid(format!(
                "checksum mismatch: frame says {stored:08x}, content is {computed:08x}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = b"{\"hello\":\"world\",\"n\":[1,2,3,4,5,6,7,8,9,10]}";

    #[test]
    fn every_encoding_round_trips() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(TEXT).unwrap();
        let gz = gz.finish().unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(TEXT).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(TEXT).unwrap();
        let raw = raw.finish().unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(TEXT)
            .unwrap();
        let zst = zstd::encode_all(TEXT, 3).unwrap();
        for (encoding, body) in [
            ("gzip", &gz),
            ("deflate", &zlib),
            ("deflate", &raw),
            ("br", &br),
            ("zstd", &zst),
        ] {
            assert_eq!(
                decode_body(encoding.as_bytes(), body, 1 << 20)
                    .unwrap()
                    .unwrap(),
                TEXT,
                "{encoding}"
            );
        }
        // Two encodings, applied gzip then zstd: undone zstd then gzip.
        let both = zstd::encode_all(&gz[..], 3).unwrap();
        assert_eq!(
            decode_body(b"gzip, zstd", &both, 1 << 20).unwrap().unwrap(),
            TEXT
        );
        assert_eq!(decode_body(b"identity", TEXT, 10).unwrap(), None);
    }

    /// Each direction is decoded under its own limit, whatever the other's.
    #[test]
    fn each_direction_has_its_own_limit() {
        let limits = Limits {
            request_body_bytes_max: 1000,
            response_body_bytes_max: 4000,
            ..Limits::default()
        };
        let zeros = zstd::encode_all(&vec![0u8; 2000][..], 3).unwrap();
        assert_eq!(
            for_storage(Direction::Request, &limits, b"zstd", &zeros),
            Stored::TooLarge { limit: 1000 }
        );
        assert_eq!(
            for_storage(Direction::Response, &limits, b"zstd", &zeros),
            Stored::Decoded(vec![0u8; 2000])
        );
        assert_eq!(
            for_storage(Direction::Request, &limits, b"identity", b"x"),
            Stored::AsSent
        );
        assert!(matches!(
            for_storage(Direction::Response, &limits, b"compress", b"x"),
            Stored::Undecodable(DecodeError::Unsupported(_))
        ));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            decode_body(b"gzip", b"not gzip", 1 << 20),
            Err(DecodeError::Corrupt { .. })
        ));
        assert!(matches!(
            decode_body(b"compress", b"x", 1 << 20),
            Err(DecodeError::Unsupported(_))
        ));
        let zeros = zstd::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
        assert!(matches!(
            decode_body(b"zstd", &zeros, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        ));
    }

    /// What libzstd's decoder accepted and refused, ruzstd's must too:
    /// several frames, skippable frames, checksums.
    #[test]
    fn zstd_frames_checksums_and_skippable_frames() {
        let mut with_checksum = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        with_checksum.include_checksum(true).unwrap();
        with_checksum.write_all(TEXT).unwrap();
        let with_checksum = with_checksum.finish().unwrap();
        assert_eq!(
            decode_body(b"zstd", &with_checksum, 1 << 20)
                .unwrap()
                .unwrap(),
            TEXT
        );
        // Two frames, a skippable frame between them.
        let mut body = zstd::encode_all(&b"first "[..], 3).unwrap();
        body.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&with_checksum);
        let mut expected = b"first ".to_vec();
        expected.extend_from_slice(TEXT);
        assert_eq!(
            decode_body(b"zstd", &body, 1 << 20).unwrap().unwrap(),
            expected
        );
        // The limit counts every frame.
        assert!(matches!(
            decode_body(b"zstd", &body, TEXT.len()),
            Err(DecodeError::TooLarge { .. })
        ));
        // A damaged checksum, trailing garbage, a skippable frame cut short.
        let mut damaged = with_checksum.clone();
        *damaged.last_mut().unwrap() ^= 0xff;
        let mut trailing = with_checksum.clone();
        trailing.extend_from_slice(b"garbage");
        let mut cut = with_checksum.clone();
        cut.extend_from_slice(&0x184D_2A5Fu32.to_le_bytes());
        cut.extend_from_slice(&100u32.to_le_bytes());
        for bad in [damaged, trailing, cut] {
            assert!(matches!(
                decode_body(b"zstd", &bad, 1 << 20),
                Err(DecodeError::Corrupt { .. })
            ));
        }
    }
}
