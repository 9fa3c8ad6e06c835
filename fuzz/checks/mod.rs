//! What each fuzz target checks, one module per target, each with a
//! `check(data)` that panics when a property fails. The fuzz targets
//! (`fuzz/fuzz_targets/`) call them under libFuzzer; `tests/it/fuzz_corpora.rs`
//! includes this same file and runs every committed corpus and regression
//! input through them on stable, so a property found once stays checked.
//!
//! No dependency beyond the main crate's own: the inputs are decoded by
//! [`Input`], not by `arbitrary`.

pub mod canonical;
pub mod config;
pub mod recording;
pub mod redact;
pub mod testserver_json;
pub mod websocket_log;

/// Reads structured values off the front of a fuzz input; past its end
/// every read gives zeros or empty slices, so any input decodes.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A slice whose length is the next byte.
    pub fn short(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte());
        self.take(n)
    }

    /// A slice whose length is the next two bytes.
    pub fn long(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.take(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Where `needle` occurs in `haystack` (every start, overlapping ones too).
pub fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return Vec::new();
    }
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}
