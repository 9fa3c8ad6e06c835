//! The integration tests: one test binary, one module per subject, as
//! ripgrep's are (one link instead of one per file). What the modules
//! share (the real binary, upstreams, clients) is in `support/`, not copied.

mod admin;
mod bad_input;
mod cli;
mod config;
mod decoding;
mod deep_json;
mod format_v1;
mod fuzz_corpora;
mod genai_flow;
mod grpc;
mod h2_tls;
mod header_rewrite;
mod identity;
mod identity_rules;
mod limits;
mod misses;
mod protocol_errors;
mod recording;
mod redaction_on_disk;
mod replay;
mod sample;
mod secrets;
mod session_names;
mod streaming;
mod support;
mod testserver;
mod timing;
mod tools;
mod trailers;
mod verify;
mod websocket;
mod websocket_record;
