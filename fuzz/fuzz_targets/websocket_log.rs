//! Fuzz target `websocket_log`: the checks are `ouli_fuzz::checks::websocket_log` (also run on
//! the committed corpus by `tests/it/fuzz_corpora.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ouli_fuzz::checks::websocket_log::check(data));
