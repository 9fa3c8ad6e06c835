//! ouli — a record/replay HTTP proxy for tests.
//!
//! **Replay path**: `listener` accepts a request → `session` names it and holds
//! its chain → `fingerprint` computes the canonical form and `chain` its link →
//! `recording::Recording::lookup` probes the index → the body leaves as `Bytes`
//! pointing into the mapped file → socket.
//!
//! **Record path**: `listener` → `upstream` (pooled hyper client) streams the
//! response to the client while capturing it → `decode` → `redact` →
//! `record::Recorder::append` (the session's `recording::RecordingWriter`),
//! before the client sees the end of the response.
//!
//! The file format is rfcs/0001, request identity rfcs/0002.

pub mod chain;
pub mod cli;
pub mod config;
pub mod decode;
pub mod fingerprint;
pub mod interaction;
pub mod profile;
pub mod record;
pub mod recording;
pub mod redact;
pub mod server;
pub mod session_name;
pub mod testserver;
pub mod upstream;
