//! Fuzz target `canonical`: the checks are `ouli_fuzz::checks::canonical` (also run on
//! the committed corpus by `tests/it/fuzz_corpora.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ouli_fuzz::checks::canonical::check(data));
