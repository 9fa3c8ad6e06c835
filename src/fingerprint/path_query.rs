//! Path and query normalisation (rfcs/0002 §1.1, §1.2): the path by RFC
//! 3986 §6.2.2 (percent-encodings upper-cased, unreserved ones decoded, dot
//! segments removed), query and form pairs decoded (`+` a space, `%XX` a
//! byte) and encoded again one way (every byte but the unreserved ones as
//! `%XX`), so that spellings of one URL share a canonical form.

use std::borrow::Cow;

/// A decoded query or form pair: (name, value).
pub(super) type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` and `/`, without `%`: unreserved, sub-delims, `:`, `@`.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_pct(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
}

/// RFC 3986 §6.2.2: percent-encodings upper-cased, unreserved ones decoded,
/// dot segments removed; an empty path is `/`.
pub(super) fn normalize_path(path: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // Nothing below writes a `/` but a `/` (an escaped one stays `%2F`), so
    // the normalized path starts with one exactly when `path` does.
    if path.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%'
            && i + 2 < path.len()
            && let (Some(h), Some(l)) = (hex_value(path[i + 1]), hex_value(path[i + 2]))
        {
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                out.push(decoded);
            } else {
                push_pct(decoded, out);
            }
            i += 3;
            continue;
        }
        // Allowed as they are: a raw byte outside the path's character set
        // (or a `%` that starts no escape) is the byte its escape would be.
        if is_path_char(b) {
            out.push(b);
        } else {
            push_pct(b, out);
        }
        i += 1;
    }
    let written = &out[start..];
    if memchr::memchr(b'.', written).is_none()
        || !written
            .split(|&b| b == b'/')
            .any(|s| s == b"." || s == b"..")
    {
        return;
    }
    let normalized = out.split_off(start);
    // RFC 3986 §5.2.4, on whole segments.
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = normalized[1..].split(|&b| b == b'/').collect();
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in parts.iter().enumerate() {
        match *segment {
            b"." => trailing_slash = i == last,
            b".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if segments.is_empty() || trailing_slash {
        out.push(b'/');
    }
}

/// Query and form components: `+` is a space, `%XX` a byte (a malformed
/// escape stays as it is). Borrows when there is nothing to decode.
pub(super) fn query_decode(bytes: &[u8]) -> Cow<'_, [u8]> {
    if memchr::memchr2(b'+', b'%', bytes).is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Every byte but the unreserved ones percent-encoded, upper-case hex.
pub(super) fn query_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b);
        } else {
            push_pct(b, out);
        }
    }
}
