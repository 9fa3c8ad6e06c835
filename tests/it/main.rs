//! The integration tests: one test binary, one module per subject, as
//! ripgrep's are (one link instead of one per file, and helpers shared
//! through `support`-style modules rather than copied).

mod cli;
mod config;
mod fuzz_corpora;
mod identity;
mod recording;
mod redaction_on_disk;
mod replay;
mod sample;
mod testserver;
mod websocket;
