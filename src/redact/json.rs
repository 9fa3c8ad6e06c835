//! JSON as written, for sensitive-key redaction.
//!
//! `serde_json::Value` turns every number into an `f64`, `u64` or `i64`: an
//! integer past 2^64 or a decimal with many digits comes back as a different
//! number, so a redacted body could change a number; and its parser refuses
//! a document nested deeper than 128. [`redact_keys`] rewrites the text
//! instead, copying every number and string as its source token. The text is
//! validated by `serde_json` first (the grammar and escapes of a document it
//! ignores, which it checks in a loop, at any depth; neither UTF-8 nor
//! depth), so the rewriter only walks a document known to be valid. No tree
//! is built and nothing recurses: the open containers are a stack of one bit
//! each, so a document of any depth is walked in memory bounded by its
//! length.

use crate::fingerprint::canonical_json::decode_string;

/// The string token `"REDACTED"`.
pub const REDACTED_TOKEN: &[u8] = b"\"REDACTED\"";

/// `Some(new body)` when `text` is one JSON document holding a member
/// whose decoded key `sensitive` accepts and whose value is not the
/// string `"REDACTED"` already. Each such value, whatever it holds,
/// becomes `"REDACTED"` (and is not walked into); the rest is written
/// compact (no whitespace outside strings), members in their order,
/// numbers and string tokens as written. A key whose escapes do not
/// decode to UTF-8 is not sensitive.
pub fn redact_keys(text: &[u8], sensitive: impl Fn(&str) -> bool) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde::de::IgnoredAny>(text).ok()?;
    let mut walk = Walk {
        text,
        at: 0,
        out: Vec::with_capacity(text.len()),
        open: Open::default(),
    };
    let changed = walk.document(&sensitive)?;
    changed.then_some(walk.out)
}

/// The open containers, innermost last, one bit each (set: an object).
#[derive(Default)]
struct Open {
    bits: Vec<u64>,
    len: usize,
}

impl Open {
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.len / 64, self.len % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if object {
            self.bits[word] |= 1 << bit;
        } else {
            self.bits[word] &= !(1 << bit);
        }
        self.len += 1;
    }

    /// Whether the innermost one is an object; `None` at the top.
    fn last(&self) -> Option<bool> {
        let i = self.len.checked_sub(1)?;
        Some(self.bits[i / 64] >> (i % 64) & 1 == 1)
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

struct Walk<'t> {
    text: &'t [u8],
    at: usize,
    out: Vec<u8>,
    open: Open,
}

impl<'t> Walk<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Copies the document, a value or a member at a time; `Some`
    /// (whether a value was replaced) when it is one whole document.
    fn document(&mut self, sensitive: &impl Fn(&str) -> bool) -> Option<bool> {
        let mut changed = false;
        // What comes next: a member's key (after `{`, or a comma in an
        // object), else a value.
        let mut key_next = false;
        loop {
            self.skip_whitespace();
            if key_next {
                let key = self.string()?;
                self.out.extend_from_slice(key);
                self.skip_whitespace();
                (self.peek()? == b':').then_some(())?;
                self.at += 1;
                self.out.push(b':');
                if !decode_string(key).is_some_and(|key| sensitive(&key)) {
                    key_next = false;
                    continue;
                }
                self.skip_whitespace();
                changed |= self.skip_value()? != REDACTED_TOKEN;
                self.out.extend_from_slice(REDACTED_TOKEN);
            } else {
                match self.peek()? {
                    open @ (b'{' | b'[') => {
                        self.at += 1;
                        self.out.push(open);
                        self.skip_whitespace();
                        let close = if open == b'{' { b'}' } else { b']' };
                        if self.peek()? == close {
                            self.at += 1;
                            self.out.push(close);
                        } else {
                            self.open.push(open == b'{');
                            key_next = open == b'{';
                            continue;
                        }
                    }
                    b'"' => {
                        let token = self.string()?;
                        self.out.extend_from_slice(token);
                    }
                    _ => {
                        let token = self.literal()?;
                        self.out.extend_from_slice(token);
                    }
                }
            }
            // A value ended: commas and closing brackets up to the next
            // key or value, or the end.
            loop {
                self.skip_whitespace();
                let Some(object) = self.open.last() else {
                    return (self.at == self.text.len()).then_some(changed);
                };
                let b = self.peek()?;
                self.at += 1;
                self.out.push(b);
                match b {
                    b',' => {
                        key_next = object;
                        break;
                    }
                    b'}' | b']' => self.open.pop(),
                    _ => return None,
                }
            }
        }
    }

    /// A string token (at its opening quote), quotes included.
    fn string(&mut self) -> Option<&'t [u8]> {
        let start = self.at;
        (self.peek()? == b'"').then_some(())?;
        self.at += 1;
        loop {
            self.at += memchr::memchr2(b'"', b'\\', self.text.get(self.at..)?)?;
            if self.text[self.at] == b'\\' {
                self.at += 2;
            } else {
                self.at += 1;
                return Some(&self.text[start..self.at]);
            }
        }
    }

    /// `null`, `true`, `false` or a number, as written.
    fn literal(&mut self) -> Option<&'t [u8]> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
        (self.at > start).then(|| &self.text[start..self.at])
    }

    /// Skips one value (at its first byte), containers by counting
    /// brackets outside strings; returns its text.
    fn skip_value(&mut self) -> Option<&'t [u8]> {
        let start = self.at;
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                        }
                        b'{' | b'[' => {
                            depth += 1;
                            self.at += 1;
                        }
                        b'}' | b']' => {
                            depth -= 1;
                            self.at += 1;
                            if depth == 0 {
                                return Some(&self.text[start..self.at]);
                            }
                        }
                        _ => self.at += 1,
                    }
                }
            }
            _ => self.literal(),
        }
    }
}
