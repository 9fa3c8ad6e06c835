//! ouli — a record/replay HTTP proxy for tests.
//!
//! **Replay path** (its stages: the `server` module doc): `server::listener`
//! accepts the connection → the body is collected → `identity` decodes and
//! redacts the request and writes its canonical form (`fingerprint`) →
//! `server::session` names the test (`Test-Name`) and holds its recording and
//! chain → `server::lookup` takes the chain step (`chain`) and probes the
//! index (`recording::Recording::lookup`) → `server::replay` answers with
//! status, headers and body as `Bytes` slices of the mapped file → socket. A
//! miss is `server::miss`'s JSON report.
//!
//! **Record path**: the same stages up to the chain step, then
//! `server::proxy` → `upstream` (the client connection's own upstream
//! connection); the answer streams to the client while `record::CaptureBody`
//! keeps a copy → `decode` → `redact` → `record::Recorder::append`
//! (`recording::RecordingWriter`), before the client sees the end of the
//! response. The test-server importer (`testserver`) identifies a recorded
//! request with the same `identity` function as a live one.
//!
//! The file format is rfcs/0001, request identity rfcs/0002.

pub mod chain;
pub mod cli;
pub mod config;
pub mod decode;
pub mod fingerprint;
pub mod go_regexp;
pub mod identity;
pub mod interaction;
#[cfg(feature = "profiling")]
pub mod profile;
pub mod record;
pub mod recording;
pub mod redact;
pub mod server;
pub mod session_name;
pub mod testserver;
pub mod tls;
pub mod tools;
pub mod upstream;
