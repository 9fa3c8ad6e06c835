//! test-server's `<name>.websocket.log`: a series of entries `>` (client to
//! server) or `<` (server to client), a decimal byte count N, one space, then N
//! bytes: the message plus the `\n` test-server appends (dropped here, as
//! test-server's replay drops it). No opcode and no timing are logged.

use crate::interaction::{WsDirection, WsFrame};

/// Digits accepted in one byte count: 19 fit in a u64 (and in any file).
pub const BYTE_COUNT_DIGITS_MAX: usize = 19;

/// Where and why a log could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError {
    /// Byte offset of the entry that is wrong.
    pub offset: usize,
    /// Index of that entry (0-based).
    pub entry: usize,
    pub what: String,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "entry {} at byte {}: {}",
            self.entry, self.offset, self.what
        )
    }
}

/// Parses a whole log into frames in logged order. Frames from the server get
/// opcode 2 (binary), as test-server's replay sends them; frames from the
/// client get 1 (text) when they are UTF-8, else 2 (test-server compares them
/// as strings and never looks at the opcode).
pub fn parse(log: &[u8]) -> Result<Vec<WsFrame>, LogError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < log.len() {
        let entry = frames.len();
        let start = at;
        let fail = |what: String| LogError {
            offset: start,
            entry,
            what,
        };
        let direction = match log[at] {
            b'>' => WsDirection::ClientToServer,
            b'<' => WsDirection::ServerToClient,
            other => {
                return Err(fail(format!(
                    "expected '>' or '<', found {:?}",
                    char::from(other)
                )));
            }
        };
        at += 1;
        let digits_start = at;
        while at < log.len() && log[at].is_ascii_digit() {
            at += 1;
        }
        let digits = &log[digits_start..at];
        if digits.is_empty() {
            return Err(fail("no byte count after the direction".into()));
        }
        if digits.len() > BYTE_COUNT_DIGITS_MAX {
            return Err(fail(format!(
                "byte count has more than {BYTE_COUNT_DIGITS_MAX} digits"
            )));
        }
        let count: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| fail("byte count is not a number".into()))?;
        if log.get(at) != Some(&b' ') {
            return Err(fail("no space after the byte count".into()));
        }
        at += 1;
        if count == 0 {
            return Err(fail(
                "byte count 0 (test-server counts the newline it appends, so at least 1)".into(),
            ));
        }
        let end = at
            .checked_add(count)
            .filter(|&end| end <= log.len())
            .ok_or_else(|| {
                fail(format!(
                    "byte count {count} runs past the end of the file ({} bytes left)",
                    log.len() - at
                ))
            })?;
        let payload = bytes::Bytes::copy_from_slice(&log[at..end - 1]);
        let opcode = match direction {
            WsDirection::ServerToClient => 2,
            WsDirection::ClientToServer if std::str::from_utf8(&payload).is_ok() => 1,
            WsDirection::ClientToServer => 2,
        };
        frames.push(WsFrame {
            direction,
            opcode,
            offset_us: 0,
            payload,
        });
        at = end;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let frames = parse(b">15 hello REDACTED\n<21 echo:hello REDACTED\n\n").unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].direction, WsDirection::ClientToServer);
        assert_eq!(&frames[0].payload[..], b"hello REDACTED");
        assert_eq!(frames[1].direction, WsDirection::ServerToClient);
        assert_eq!(&frames[1].payload[..], b"echo:hello REDACTED\n");
        assert_eq!(frames[1].opcode, 2);
    }

    #[test]
    fn names_the_entry_and_offset_of_a_count_past_the_end() {
        let error = parse(b">3 hi\n<50 short\n").unwrap_err();
        assert_eq!(error.entry, 1);
        assert_eq!(error.offset, 6);
        assert!(error.what.contains("past the end"), "{error}");
        assert!(parse(b"x3 hi\n").is_err());
        assert!(parse(b">3hi\n").is_err());
        assert!(parse(b"> hi\n").is_err());
        assert!(parse(b">0 ").is_err());
    }
}
