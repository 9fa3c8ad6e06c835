//! `GET /__ouli/metrics`: counters in the Prometheus text exposition
//! format (version 0.0.4), written by hand over atomics.
//!
//! [`Metrics`] holds one [`EndpointMetrics`] per endpoint: fixed arrays of
//! `AtomicU64` indexed by [`Mode`] and [`Outcome`], a latency histogram of
//! fixed buckets, bytes served and open connections. Counting a request
//! costs a handful of relaxed atomic adds and takes no lock and allocates
//! nothing; the scrape (rare) reads them and writes the text. What the
//! recorder counts (bytes appended, syncs) is kept by the recorder itself
//! (`crate::record::RecordingTotals`) and read here at the scrape.
//!
//! Where each number is taken:
//! - a request's outcome and its time to the response head: once, when
//!   `Server::handle` returns its answer ([`Metrics::observe`]). The outcome
//!   is the answer's: ouli's own answers carry it as a response extension
//!   ([`mark`], set where they are made: `response::error_response`, the
//!   miss report, a request record-missing forwarded); any other answer is
//!   the mode's usual one (a hit when replaying, proxied otherwise). The
//!   control paths (`/__ouli/`, health) are not requests of the endpoint
//!   and are not counted.
//! - bytes served: as the body's frames leave ([`CountedBody`]), every
//!   answer's (control paths' included).
//! - open connections: while a connection task runs ([`OpenConnection`]).

use super::response::{ResponseBody, full};
use super::{Mode, Server};
use crate::config::ENDPOINTS_MAX;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The content type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What became of one request (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the recording.
    Hit,
    /// Not in the recording: the miss report (404).
    Miss,
    /// Recorded fewer times than asked: the chain ran past the recording.
    Exhausted,
    /// Forwarded upstream and its answer relayed (whatever its status).
    Proxied,
    /// The upstream could not be reached or did not answer in time (502, 504).
    UpstreamError,
    /// Refused as the client's fault (400, 405, 408, 413, 431, 503 over a limit).
    ClientError,
    /// The recording could not be read or written (500, 502).
    RecordingError,
}

impl Outcome {
    const ALL: [Outcome; OUTCOMES] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Exhausted,
        Outcome::Proxied,
        Outcome::UpstreamError,
        Outcome::ClientError,
        Outcome::RecordingError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Exhausted => "exhausted",
            Outcome::Proxied => "proxied",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientError => "client_error",
            Outcome::RecordingError => "recording_error",
        }
    }

    /// The outcome of an answer ouli makes itself, from whose fault it is
    /// (`response::error_response`'s `fault`).
    pub(super) fn of_fault(fault: &str) -> Outcome {
        match fault {
            "upstream" => Outcome::UpstreamError,
            "recording" => Outcome::RecordingError,
            _ => Outcome::ClientError,
        }
    }
}

const OUTCOMES: usize = 7;
const MODES: usize = 4;
const MODES_ALL: [Mode; MODES] = [
    Mode::Replay,
    Mode::Record,
    Mode::RecordMissing,
    Mode::Passthrough,
];

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Replay => 0,
        Mode::Record => 1,
        Mode::RecordMissing => 2,
        Mode::Passthrough => 3,
    }
}

/// Upper bounds of the latency buckets, in microseconds (the `+Inf`
/// bucket follows them), and the same as the `le` label writes them.
const BUCKET_BOUNDS_US: [u64; BUCKETS] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKET_LABELS: [&str; BUCKETS] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10",
];
const BUCKETS: usize = 16;

/// Bytes of text a scrape writes at most per endpoint and mode (about 60
/// lines of at most 120 bytes): the answer's buffer is sized from it once.
const SCRAPE_BYTES_PER_ENDPOINT_MODE_MAX: usize = 8 << 10;
const _: () = assert!(ENDPOINTS_MAX * MODES * SCRAPE_BYTES_PER_ENDPOINT_MODE_MAX <= 4 << 20);

/// One endpoint's counters.
pub(super) struct EndpointMetrics {
    requests: [[AtomicU64; OUTCOMES]; MODES],
    /// Requests per latency bucket (not cumulative: the scrape adds them
    /// up), the last one past every bound (`+Inf`).
    duration_buckets: [AtomicU64; BUCKETS + 1],
    duration_sum_ns: AtomicU64,
    response_bytes: AtomicU64,
    /// Connections opened minus closed (never below zero: each close
    /// follows its open).
    open_connections: AtomicU64,
}

impl EndpointMetrics {
    fn new() -> EndpointMetrics {
        EndpointMetrics {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            duration_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_sum_ns: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            open_connections: AtomicU64::new(0),
        }
    }
}

/// Every endpoint's counters, shared by the connections of one server.
pub(super) struct Metrics {
    endpoints: Box<[EndpointMetrics]>,
}

/// When a counted request started; `None` for a control path, which is
/// not counted.
pub(super) struct Started(Option<Instant>);

impl Metrics {
    pub(super) fn new(endpoints: usize) -> Metrics {
        Metrics {
            endpoints: (0..endpoints).map(|_| EndpointMetrics::new()).collect(),
        }
    }

    /// The start of a request to `path`, unless it is a control path
    /// (`/__ouli/...` or the endpoint's health path).
    pub(super) fn start(path: &str, health: Option<&str>) -> Started {
        let control = path.starts_with(super::CONTROL_PREFIX) || health == Some(path);
        Started((!control).then(Instant::now))
    }

    /// Counts a request's outcome (from its answer) and its time to the
    /// response head.
    pub(super) fn observe(
        &self,
        endpoint: usize,
        mode: Mode,
        started: Started,
        answer: &Response<ResponseBody>,
    ) {
        let Some(started) = started.0 else {
            return;
        };
        let outcome = answer
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or(match mode {
                Mode::Replay | Mode::RecordMissing => Outcome::Hit,
                Mode::Record | Mode::Passthrough => Outcome::Proxied,
            });
        self.count(endpoint, mode, outcome, started.elapsed());
    }

    /// Counts a request the replay lane answered (`listener/replay_lane.rs`:
    /// replay mode, no hyper `Response` on its fast path), with the body
    /// bytes it wrote.
    pub(super) fn count_lane_answer(
        &self,
        endpoint: usize,
        outcome: Outcome,
        started: Instant,
        body_bytes: u64,
    ) {
        self.count(endpoint, Mode::Replay, outcome, started.elapsed());
        self.endpoint(endpoint)
            .response_bytes
            .fetch_add(body_bytes, Ordering::Relaxed);
    }

    fn count(&self, endpoint: usize, mode: Mode, outcome: Outcome, elapsed: Duration) {
        let counters = &self.endpoints[endpoint];
        counters.requests[mode_index(mode)][outcome as usize].fetch_add(1, Ordering::Relaxed);
        let elapsed_us = elapsed.as_micros() as u64;
        let bucket = BUCKET_BOUNDS_US.partition_point(|&bound| bound < elapsed_us);
        counters.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counters
            .duration_sum_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn endpoint(&self, endpoint: usize) -> &EndpointMetrics {
        &self.endpoints[endpoint]
    }
}

/// Marks an answer ouli made with its outcome (a response extension: only
/// ouli's own answers, which allocate their JSON body anyway, carry one).
/// An outcome already marked stays.
pub(super) fn mark<B>(mut answer: Response<B>, outcome: Outcome) -> Response<B> {
    if answer.extensions().get::<Outcome>().is_none() {
        answer.extensions_mut().insert(outcome);
    }
    answer
}

/// Counts one open connection of an endpoint until it is dropped.
pub(super) struct OpenConnection {
    metrics: Arc<Metrics>,
    endpoint: usize,
}

impl OpenConnection {
    pub(super) fn new(metrics: Arc<Metrics>, endpoint: usize) -> OpenConnection {
        metrics
            .endpoint(endpoint)
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        OpenConnection { metrics, endpoint }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .endpoint(self.endpoint)
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts its data bytes as they leave.
pub(super) struct CountedBody<B> {
    body: B,
    metrics: Arc<Metrics>,
    endpoint: usize,
}

impl<B> CountedBody<B> {
    pub(super) fn new(body: B, metrics: Arc<Metrics>, endpoint: usize) -> CountedBody<B> {
        CountedBody {
            body,
            metrics,
            endpoint,
        }
    }
}

impl<B> hyper::body::Body for CountedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.metrics
                .endpoint(self.endpoint)
                .response_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Server {
    /// `GET /__ouli/metrics`: every counter, in the text format.
    pub(super) fn metrics_answer(&self) -> Response<ResponseBody> {
        let recording = self.recorder().map(|recorder| recorder.totals());
        let scrape = Scrape {
            metrics: &self.metrics,
            mode: self.admin.mode(),
            sessions: self.sessions.len() as u64,
            recording,
        };
        let mut response = Response::new(full(Bytes::from(scrape.text())));
        *response.status_mut() = StatusCode::OK;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        );
        response
    }
}

/// What one scrape reads.
struct Scrape<'a> {
    metrics: &'a Metrics,
    /// The server's mode: its request counters are written even at zero.
    mode: Mode,
    sessions: u64,
    /// The recorder's totals, in the record modes.
    recording: Option<&'a crate::record::RecordingTotals>,
}

impl Scrape<'_> {
    fn text(&self) -> String {
        let endpoints = self.metrics.endpoints.len();
        let mut out = String::with_capacity(endpoints * SCRAPE_BYTES_PER_ENDPOINT_MODE_MAX);
        self.requests(&mut out);
        self.durations(&mut out);
        header(
            &mut out,
            "ouli_response_bytes_total",
            "counter",
            "Response body bytes sent to clients.",
        );
        per_endpoint_lines(&mut out, "ouli_response_bytes_total", self.metrics, |c| {
            c.response_bytes.load(Ordering::Relaxed)
        });
        header(
            &mut out,
            "ouli_open_connections",
            "gauge",
            "Client connections open now.",
        );
        per_endpoint_lines(&mut out, "ouli_open_connections", self.metrics, |c| {
            c.open_connections.load(Ordering::Relaxed)
        });
        header(
            &mut out,
            "ouli_sessions",
            "gauge",
            "Sessions open now (seen since the start or the last end of each).",
        );
        let _ = writeln!(out, "ouli_sessions {}", self.sessions);
        self.recording_lines(&mut out);
        out
    }

    /// `ouli_requests_total`, every outcome of each mode counted in, the
    /// server's mode always.
    fn requests(&self, out: &mut String) {
        header(
            out,
            "ouli_requests_total",
            "counter",
            "Requests answered, by endpoint, mode and outcome.",
        );
        for (index, counters) in self.metrics.endpoints.iter().enumerate() {
            for mode in MODES_ALL {
                let row = &counters.requests[mode_index(mode)];
                let values: [u64; OUTCOMES] =
                    std::array::from_fn(|i| row[i].load(Ordering::Relaxed));
                if mode != self.mode && values.iter().all(|&v| v == 0) {
                    continue;
                }
                for (outcome, value) in Outcome::ALL.iter().zip(values) {
                    let _ = writeln!(
                        out,
                        "ouli_requests_total{{endpoint=\"{index}\",mode=\"{}\",outcome=\"{}\"}} {value}",
                        mode.as_str(),
                        outcome.as_str()
                    );
                }
            }
        }
    }

    /// `ouli_request_duration_seconds`: cumulative buckets, sum, count.
    fn durations(&self, out: &mut String) {
        const NAME: &str = "ouli_request_duration_seconds";
        header(
            out,
            NAME,
            "histogram",
            "Time from a request's arrival to its response head.",
        );
        for (index, counters) in self.metrics.endpoints.iter().enumerate() {
            let mut cumulative = 0u64;
            for (i, bucket) in counters.duration_buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = BUCKET_LABELS.get(i).copied().unwrap_or("+Inf");
                let _ = writeln!(
                    out,
                    "{NAME}_bucket{{endpoint=\"{index}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum_s = counters.duration_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{NAME}_sum{{endpoint=\"{index}\"}} {sum_s}");
            let _ = writeln!(out, "{NAME}_count{{endpoint=\"{index}\"}} {cumulative}");
        }
    }

    /// Bytes appended and syncs: record modes only (replay and passthrough
    /// write nothing).
    fn recording_lines(&self, out: &mut String) {
        let Some(totals) = self.recording else {
            return;
        };
        header(
            out,
            "ouli_recording_bytes_appended_total",
            "counter",
            "Bytes appended to recordings (records as written, headers and CRCs included).",
        );
        for index in 0..self.metrics.endpoints.len() {
            let _ = writeln!(
                out,
                "ouli_recording_bytes_appended_total{{endpoint=\"{index}\"}} {}",
                totals.bytes_appended(index)
            );
        }
        header(
            out,
            "ouli_recording_syncs_total",
            "counter",
            "fdatasync and fsync calls made on recordings (a group commit is one).",
        );
        let _ = writeln!(out, "ouli_recording_syncs_total {}", totals.syncs());
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn per_endpoint_lines(
    out: &mut String,
    name: &str,
    metrics: &Metrics,
    read: impl Fn(&EndpointMetrics) -> u64,
) {
    for (index, counters) in metrics.endpoints.iter().enumerate() {
        let _ = writeln!(out, "{name}{{endpoint=\"{index}\"}} {}", read(counters));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_labels_say_the_bounds() {
        for (bound_us, label) in BUCKET_BOUNDS_US.iter().zip(BUCKET_LABELS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e6).round() as u64, *bound_us, "{label}");
        }
        assert!(BUCKET_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_request_lands_in_the_first_bucket_it_fits() {
        let metrics = Metrics::new(2);
        metrics.count(1, Mode::Replay, Outcome::Hit, Duration::from_micros(100));
        metrics.count(1, Mode::Replay, Outcome::Miss, Duration::from_micros(101));
        metrics.count(1, Mode::Replay, Outcome::Hit, Duration::from_secs(11));
        let counters = metrics.endpoint(1);
        let bucket = |i: usize| counters.duration_buckets[i].load(Ordering::Relaxed);
        assert_eq!((bucket(0), bucket(1), bucket(BUCKETS)), (1, 1, 1));
        let hits = &counters.requests[mode_index(Mode::Replay)][Outcome::Hit as usize];
        assert_eq!(hits.load(Ordering::Relaxed), 2);
        assert_eq!(
            metrics.endpoint(0).duration_buckets[0].load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn outcomes_are_indexed_in_their_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as usize, i);
        }
        for (i, mode) in MODES_ALL.iter().enumerate() {
            assert_eq!(mode_index(*mode), i);
        }
    }

    #[test]
    fn the_scrape_writes_every_family_with_help_and_type() {
        let metrics = Metrics::new(1);
        metrics.count(0, Mode::Replay, Outcome::Hit, Duration::from_millis(3));
        let scrape = Scrape {
            metrics: &metrics,
            mode: Mode::Replay,
            sessions: 2,
            recording: None,
        };
        let text = scrape.text();
        assert!(
            text.contains(
                "ouli_requests_total{endpoint=\"0\",mode=\"replay\",outcome=\"hit\"} 1\n"
            )
        );
        assert!(
            text.contains("ouli_request_duration_seconds_bucket{endpoint=\"0\",le=\"0.0025\"} 0\n")
        );
        assert!(
            text.contains("ouli_request_duration_seconds_bucket{endpoint=\"0\",le=\"0.005\"} 1\n")
        );
        assert!(text.contains("ouli_request_duration_seconds_count{endpoint=\"0\"} 1\n"));
        assert!(text.contains("ouli_sessions 2\n"));
        assert!(
            !text.contains("mode=\"record\""),
            "an unused mode is left out"
        );
        for family in [
            "ouli_requests_total",
            "ouli_request_duration_seconds",
            "ouli_response_bytes_total",
            "ouli_open_connections",
            "ouli_sessions",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }
}
