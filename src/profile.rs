//! CPU profiles of a running ouli (rfcs/0003-performance.md, Method): the CLI's
//! `--profile FILE` samples from start to shutdown ([`Profiler`]), and the
//! loopback-only `GET /__ouli/debug/pprof?seconds=N` samples for N seconds
//! ([`capture`]). Built only with the `profiling` feature. Both use `pprof` (SIGPROF sampling of every thread): no
//! hardware counters needed, which the benchmark machines lack.
//!
//! The output format follows the file name: `.svg` is a flamegraph, anything
//! else (`.pb`, `.pprof`) the pprof protobuf that `go tool pprof` and
//! `pprof -http` read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Samples per second. 999 rather than 1000 so that sampling does not run in
/// lockstep with millisecond timers.
pub const PROFILE_FREQUENCY_HZ: i32 = 999;

/// Longest profile `/__ouli/debug/pprof` takes: a request cannot hold the
/// (process-wide) profiler longer than this.
pub const PROFILE_SECONDS_MAX: u64 = 120;

/// Libraries whose frames are not sampled into: unwinding through them from a
/// signal handler is not safe (pprof's own advice).
const UNWIND_BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];

/// The two formats a profile is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileFormat {
    /// An interactive SVG flamegraph.
    Flamegraph,
    /// pprof's protobuf (`profile.proto`), uncompressed.
    Pprof,
}

impl ProfileFormat {
    /// `.svg` → flamegraph, anything else → pprof protobuf.
    pub fn for_path(path: &Path) -> ProfileFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("svg") => ProfileFormat::Flamegraph,
            _ => ProfileFormat::Pprof,
        }
    }

    /// The HTTP content type of a profile in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ProfileFormat::Flamegraph => "image/svg+xml",
            ProfileFormat::Pprof => "application/octet-stream",
        }
    }
}

/// Why a profile could not be taken or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// pprof allows one profiler per process.
    #[error("a CPU profile is already being taken in this process")]
    AlreadyRunning,
    #[error("profile of {asked} s asked; at most {max} s (PROFILE_SECONDS_MAX)")]
    TooLong { asked: u64, max: u64 },
    /// The process did too little for the sampler to see (nothing written).
    #[error("no CPU samples were taken (the run was shorter than one sample period)")]
    NoSamples,
    #[error("CPU profiler: {0}")]
    Profiler(String),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn start_sampling() -> Result<pprof::ProfilerGuard<'static>, ProfileError> {
    pprof::ProfilerGuardBuilder::default()
        .frequency(PROFILE_FREQUENCY_HZ)
        .blocklist(UNWIND_BLOCKLIST)
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => ProfileError::AlreadyRunning,
            other => ProfileError::Profiler(other.to_string()),
        })
}

/// Builds the report of `guard` in `format`.
fn encode(
    guard: &pprof::ProfilerGuard<'static>,
    format: ProfileFormat,
) -> Result<Vec<u8>, ProfileError> {
    let report = guard
        .report()
        .build()
        .map_err(|e| ProfileError::Profiler(e.to_string()))?;
    if report.data.is_empty() {
        return Err(ProfileError::NoSamples);
    }
    let mut out = Vec::new();
    match format {
        ProfileFormat::Flamegraph => report
            .flamegraph(&mut out)
            .map_err(|e| ProfileError::Profiler(e.to_string()))?,
        ProfileFormat::Pprof => {
            use pprof::protos::Message;
            let profile = report
                .pprof()
                .map_err(|e| ProfileError::Profiler(e.to_string()))?;
            profile
                .encode(&mut out)
                .map_err(|e| ProfileError::Profiler(e.to_string()))?;
        }
    }
    Ok(out)
}

/// A profile being taken for `--profile FILE`: started by [`Profiler::start`]
/// before the server starts, written by [`Profiler::finish`] after it stops.
pub struct Profiler {
    guard: pprof::ProfilerGuard<'static>,
    output: PathBuf,
    format: ProfileFormat,
}

impl Profiler {
    /// Starts sampling every thread of the process. Checks that `output` can
    /// be created now, so that a typo fails at start, not after the run.
    pub fn start(output: &Path) -> Result<Profiler, ProfileError> {
        std::fs::File::create(output).map_err(|source| ProfileError::Write {
            path: output.to_owned(),
            source,
        })?;
        Ok(Profiler {
            guard: start_sampling()?,
            output: output.to_owned(),
            format: ProfileFormat::for_path(output),
        })
    }

    /// Where the profile will be written.
    pub fn output(&self) -> &Path {
        &self.output
    }

    /// Stops sampling and writes the profile; returns its path. With no
    /// sample taken, removes the file created by [`Profiler::start`] and
    /// says so ([`ProfileError::NoSamples`]) rather than leave an empty file.
    pub fn finish(self) -> Result<PathBuf, ProfileError> {
        let encoded = encode(&self.guard, self.format);
        drop(self.guard);
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = std::fs::remove_file(&self.output);
                return Err(error);
            }
        };
        let write = |path: &Path| -> std::io::Result<()> {
            let mut file = std::fs::File::create(path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        };
        write(&self.output).map_err(|source| ProfileError::Write {
            path: self.output.clone(),
            source,
        })?;
        Ok(self.output)
    }
}

/// Samples the whole process for `seconds`, then returns the profile in
/// `format`. Blocks the calling thread for that long: call it from
/// `tokio::task::spawn_blocking`. For `/__ouli/debug/pprof?seconds=N`, which
/// must be answered only to loopback peers (see [`debug_peer_allowed`]).
pub fn capture(seconds: u64, format: ProfileFormat) -> Result<Vec<u8>, ProfileError> {
    if seconds > PROFILE_SECONDS_MAX {
        return Err(ProfileError::TooLong {
            asked: seconds,
            max: PROFILE_SECONDS_MAX,
        });
    }
    let guard = start_sampling()?;
    std::thread::sleep(Duration::from_secs(seconds));
    encode(&guard, format)
}

/// Whether a peer may fetch a profile: loopback only, whatever address the
/// listener is bound to (a profile shows code paths and timings).
pub fn debug_peer_allowed(peer: std::net::IpAddr) -> bool {
    match peer {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Parses the query of `/__ouli/debug/pprof`: `seconds=N` (default 10) and
/// `format=svg|pprof` (default pprof, what `go tool pprof URL` expects).
pub fn parse_debug_query(query: Option<&str>) -> Result<(u64, ProfileFormat), String> {
    let mut seconds = 10;
    let mut format = ProfileFormat::Pprof;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "seconds" => {
                seconds = value
                    .parse()
                    .map_err(|_| format!("seconds={value}: expected a whole number"))?;
            }
            "format" => {
                format = match value.as_ref() {
                    "svg" | "flamegraph" => ProfileFormat::Flamegraph,
                    "pprof" | "pb" | "proto" => ProfileFormat::Pprof,
                    other => return Err(format!("format={other}: expected svg or pprof")),
                };
            }
            _ => {}
        }
    }
    if seconds == 0 || seconds > PROFILE_SECONDS_MAX {
        return Err(format!(
            "seconds={seconds}: expected 1..={PROFILE_SECONDS_MAX}"
        ));
    }
    Ok((seconds, format))
}

/// The whole `GET /__ouli/debug/pprof?seconds=N[&format=svg]` answer, for the
/// control endpoint to return as is: 403 to a non-loopback peer, 400 for a bad
/// query, 409 while another profile runs, else 200 with the profile (pprof
/// protobuf by default, what `go tool pprof http://…/__ouli/debug/pprof`
/// expects). Errors are JSON `{"error": …}` marked with `x-ouli-error`.
/// Samples on a blocking thread: the runtime keeps serving meanwhile.
pub async fn debug_pprof_response(
    peer: std::net::IpAddr,
    query: Option<&str>,
) -> http::Response<bytes::Bytes> {
    fn error(status: http::StatusCode, message: &str) -> http::Response<bytes::Bytes> {
        let body = serde_json::json!({ "error": message }).to_string();
        let mut response = http::Response::new(bytes::Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert("x-ouli-error", http::HeaderValue::from_static("1"));
        response
    }
    if !debug_peer_allowed(peer) {
        return error(
            http::StatusCode::FORBIDDEN,
            "profiles are served to loopback clients only",
        );
    }
    let (seconds, format) = match parse_debug_query(query) {
        Ok(parsed) => parsed,
        Err(why) => return error(http::StatusCode::BAD_REQUEST, &why),
    };
    match tokio::task::spawn_blocking(move || capture(seconds, format)).await {
        Ok(Ok(bytes)) => {
            let mut response = http::Response::new(bytes::Bytes::from(bytes));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(format.content_type()),
            );
            response
        }
        Ok(Err(ProfileError::AlreadyRunning)) => error(
            http::StatusCode::CONFLICT,
            "a CPU profile is already being taken in this process",
        ),
        Ok(Err(other)) => error(http::StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
        Err(join) => error(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            &format!("profiler thread failed: {join}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            ProfileFormat::for_path(Path::new("x/run.svg")),
            ProfileFormat::Flamegraph
        );
        assert_eq!(
            ProfileFormat::for_path(Path::new("run.SVG")),
            ProfileFormat::Flamegraph
        );
        assert_eq!(
            ProfileFormat::for_path(Path::new("run.pb")),
            ProfileFormat::Pprof
        );
        assert_eq!(
            ProfileFormat::for_path(Path::new("run")),
            ProfileFormat::Pprof
        );
    }

    #[test]
    fn only_loopback_peers_may_profile() {
        assert!(debug_peer_allowed("127.0.0.1".parse().unwrap()));
        assert!(debug_peer_allowed("::1".parse().unwrap()));
        assert!(debug_peer_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!debug_peer_allowed("10.0.0.1".parse().unwrap()));
        assert!(!debug_peer_allowed("::ffff:10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn debug_endpoint_refuses_remote_peers_and_bad_queries() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let remote = debug_pprof_response("192.0.2.7".parse().unwrap(), None).await;
            assert_eq!(remote.status(), http::StatusCode::FORBIDDEN);
            assert!(remote.headers().contains_key("x-ouli-error"));
            let bad = debug_pprof_response("127.0.0.1".parse().unwrap(), Some("seconds=0")).await;
            assert_eq!(bad.status(), http::StatusCode::BAD_REQUEST);
            let body: serde_json::Value = serde_json::from_slice(bad.body()).unwrap();
            assert!(body["error"].as_str().unwrap().contains("seconds=0"));
        });
    }

    #[test]
    fn debug_query_is_parsed_and_bounded() {
        assert_eq!(parse_debug_query(None).unwrap(), (10, ProfileFormat::Pprof));
        assert_eq!(
            parse_debug_query(Some("seconds=3&format=svg")).unwrap(),
            (3, ProfileFormat::Flamegraph)
        );
        assert!(parse_debug_query(Some("seconds=0")).is_err());
        assert!(parse_debug_query(Some("seconds=121")).is_err());
        assert!(parse_debug_query(Some("seconds=x")).is_err());
        assert!(parse_debug_query(Some("format=gif")).is_err());
    }

    /// This thread's CPU time (user + system) in clock ticks (10 ms).
    fn thread_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesized command name: utime and stime are
        // the 12th and 13th.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// One test for everything that starts the process-wide profiler: two
    /// tests doing so in parallel would see each other's profiler.
    #[test]
    fn profiles_are_written_in_both_formats_and_one_runs_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["p.svg", "p.pb"] {
            let path = dir.path().join(name);
            let profiler = Profiler::start(&path).unwrap();
            let second = Profiler::start(&dir.path().join("second.pb"));
            assert!(matches!(second, Err(ProfileError::AlreadyRunning)));
            // Enough work for a few samples at 999 Hz: 50 ms of this
            // thread's CPU time, however busy the machine (a wall-clock
            // budget gave no sample when other builds took the cores).
            let mut x = 0u64;
            let start = thread_cpu_ticks();
            let give_up = std::time::Instant::now() + Duration::from_secs(20);
            while thread_cpu_ticks() < start + 5 && std::time::Instant::now() < give_up {
                for _ in 0..100_000 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
            }
            std::hint::black_box(x);
            let written = profiler.finish().unwrap();
            assert_eq!(written, path);
            let bytes = std::fs::read(&written).unwrap();
            assert!(!bytes.is_empty(), "{name} is empty");
            if name.ends_with(".svg") {
                assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
            }
        }
        let missing_dir = dir.path().join("no/such/dir/p.svg");
        assert!(matches!(
            Profiler::start(&missing_dir),
            Err(ProfileError::Write { .. })
        ));
    }
}
