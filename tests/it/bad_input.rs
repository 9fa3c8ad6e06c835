//! A catalog of bad input, through raw sockets, against the real binary in
//! replay and in record mode (record against a real hyper upstream that
//! keeps what it received).
//!
//! Every case is bytes written exactly (with pauses and half-closes where
//! the case is about time or closing), and what ouli must answer: the
//! status and `x-ouli-error` kind of the agreed table, with a JSON body
//! `{"error", "fault", "message"}`. After each case, whatever its answer:
//! the process is alive and answers a good request, no file appeared
//! outside the recording dir (nor, for a refused request, in it), no
//! secret is in any answer, log line or file, and in record mode nothing
//! reached the upstream that should not have, and what did went to the
//! configured upstream only.
//!
//! One server per mode and config runs every case, so the catalog takes
//! seconds; a failure names each failing case with what was observed.

mod support;

use self::support::{
    ANSWER_WAIT, Exchange, Ouli, SECRET, Step, UPSTREAM_MARK, Upstream, base64_lite, deep_json,
    exchange, files_with_forbidden, find_forbidden, peak_rss, snapshot, start_server,
};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The main server's timeouts: short, so the slow cases end quickly.
const TIMEOUT_MS: u64 = 1000;
/// The main server's body limit: the deep JSON (about 4 MB) fits.
const MAIN_BODY_MAX: usize = 16 << 20;
/// The main server's header limit: above hyper's URI limit (65,534 bytes),
/// so that a long target meets the URI limit first.
const MAIN_HEADER_MAX: usize = 128 << 10;
/// The limits server's body limit: bombs and oversize bodies go past it.
const SMALL_BODY_MAX: usize = 1 << 20;
const SMALL_HEADER_MAX: usize = 8 << 10;
const SMALL_HEADER_COUNT: usize = 32;
/// Idle connections opened against the limits server's `connections_max`
/// (a quarter of them; fewer of both if this
/// process's descriptor limit does not fit them).
const IDLE_CONNECTIONS: usize = 2000;
/// Fewest idle connections the case is run with: a smaller descriptor
/// limit fails the case, saying so.
const IDLE_CONNECTIONS_MIN: usize = 64;

/// (idle connections, `connections_max`): the same for both modes' runs,
/// which share this process's descriptors (a third for each, and room for
/// the rest of the suite).
fn idle_plan() -> (usize, usize) {
    static PLAN: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *PLAN.get_or_init(|| {
        let idle = IDLE_CONNECTIONS.min(descriptors_available() / 3);
        (idle, idle / 4)
    })
}
/// The limits server's head timeout: its idle connections must outlast
/// their opening (seconds on a loaded machine).
const IDLE_HEADER_TIMEOUT_MS: u64 = 60_000;
/// What a bomb decodes to: 64 times the limits server's body limit.
const BOMB_BYTES: usize = 64 << 20;
/// Peak memory the limits server may reach with every bomb decoded up to
/// its limit (not whole).
const BOMB_PEAK_RSS_MAX: u64 = 48 << 20;

/// The only answer the configured upstream's stand-in gives is marked; the
/// good request after every case must get a real answer.
const GOOD: &[u8] = b"GET /good HTTP/1.1\r\nHost: catalog.test\r\nTest-Name: good\r\n\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Replay,
    Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Srv {
    /// Short timeouts, large body limit.
    Main,
    /// Small body and header limits, few connections.
    Limits,
}

/// One acceptable answer.
#[derive(Clone, Copy, Debug)]
enum Alt {
    /// ouli's own answer: this status, this `x-ouli-error`, a JSON body.
    Error(u16, &'static str),
    /// A valid request, handled as any other: in replay a miss (404
    /// `replay-miss`) or a recorded answer; in record the upstream's answer.
    Served,
    /// A recorded (replay) or upstream (record) 200 whose body holds this.
    Hit(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    Both,
    Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    IdleConnections,
}

struct Case {
    name: &'static str,
    server: Srv,
    only: Only,
    steps: Vec<Step>,
    /// One entry per answer expected, in order: any of its alternatives.
    expect: Vec<&'static [Alt]>,
    /// The server closes the connection after those answers.
    close: bool,
    /// Run with the other slow cases, at the same time.
    slow: bool,
    /// Where a request this case makes must arrive upstream, if forwarded.
    upstream_target: Option<&'static str>,
    /// The body length the upstream must receive, if forwarded: what the
    /// client sent, neither decoded nor cut.
    upstream_body_len: Option<usize>,
    /// Paths (relative to the recording dir) this case may create.
    may_create: Vec<String>,
    peak_rss_max: Option<u64>,
    /// Forbidden values the answer may hold: the upstream's own answer,
    /// which the client in record mode gets as it is.
    answer_may_hold: &'static [&'static str],
    /// Most bytes the server's recording dir may hold after the case.
    recording_bytes_max: Option<u64>,
    special: Option<Special>,
}

impl Case {
    fn new(name: &'static str, bytes: impl Into<Vec<u8>>, expect: &'static [Alt]) -> Case {
        Case {
            name,
            server: Srv::Main,
            only: Only::Both,
            steps: vec![Step::Write(bytes.into())],
            expect: vec![expect],
            close: false,
            slow: false,
            upstream_target: None,
            upstream_body_len: None,
            may_create: Vec::new(),
            peak_rss_max: None,
            recording_bytes_max: None,
            answer_may_hold: &[],
            special: None,
        }
    }

    fn steps(name: &'static str, steps: Vec<Step>, expect: &'static [Alt]) -> Case {
        let mut case = Case::new(name, Vec::new(), expect);
        case.steps = steps;
        case
    }

    fn limits(mut self) -> Case {
        self.server = Srv::Limits;
        self
    }

    fn slow(mut self) -> Case {
        self.slow = true;
        self
    }

    fn closes(mut self) -> Case {
        self.close = true;
        self
    }

    fn upstream(mut self, target: &'static str) -> Case {
        self.upstream_target = Some(target);
        self
    }

    fn upstream_body(mut self, len: usize) -> Case {
        self.upstream_body_len = Some(len);
        self
    }

    fn creates(mut self, path: &str) -> Case {
        self.may_create.push(path.to_owned());
        self
    }

    fn record_only(mut self) -> Case {
        self.only = Only::Record;
        self
    }
}

const BAD_REQUEST: &[Alt] = &[Alt::Error(400, "bad-request")];
const BAD_BODY: &[Alt] = &[Alt::Error(400, "bad-body")];
const BAD_NAME: &[Alt] = &[Alt::Error(400, "bad-test-name")];
const BAD_WS: &[Alt] = &[Alt::Error(400, "bad-websocket-upgrade")];
const TOO_LARGE: &[Alt] = &[Alt::Error(413, "body-too-large")];
const HEADERS_TOO_LARGE: &[Alt] = &[Alt::Error(431, "headers-too-large")];
const VERSION: &[Alt] = &[Alt::Error(505, "http-version-not-supported")];
const SERVED: &[Alt] = &[Alt::Served];

/// A request head: `line`, a Host, the secret (in a header that takes no
/// part in matching, so replay's recordings still match), `headers`, the
/// blank line. Whatever ouli echoes of a request, the secret must not be in
/// it.
fn head(line: &str, headers: &[&str]) -> Vec<u8> {
    let mut out = format!("{line}\r\nHost: catalog.test\r\nX-Request-Id: {SECRET}\r\n");
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn session_header(name: &[u8]) -> Vec<u8> {
    join(&[
        b"GET /c/name HTTP/1.1\r\nHost: catalog.test\r\nX-Request-Id: ",
        SECRET.as_bytes(),
        b"\r\nTest-Name: ",
        name,
        b"\r\n\r\n",
    ])
}

fn control(method: &str, path: &str) -> Vec<u8> {
    head(&format!("{method} {path} HTTP/1.1"), &["Content-Length: 0"])
}

fn websocket(key: &str, version: &str) -> Vec<u8> {
    let mut headers = vec![
        "Test-Name: chat",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ];
    let key = format!("Sec-WebSocket-Key: {key}");
    let version = format!("Sec-WebSocket-Version: {version}");
    if !key.ends_with(": ") {
        headers.push(&key);
    }
    headers.push(&version);
    head("GET /c/ws HTTP/1.1", &headers)
}

/// `BOMB_BYTES` of zeros in `encoding`, made once for both modes' runs.
fn bomb(encoding: &'static str) -> Vec<u8> {
    static BOMBS: std::sync::Mutex<Vec<(&str, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut bombs = BOMBS.lock().unwrap();
    if let Some((_, bytes)) = bombs.iter().find(|(e, _)| *e == encoding) {
        return bytes.clone();
    }
    let bytes = compress_zeros(encoding);
    bombs.push((encoding, bytes.clone()));
    bytes
}

fn compress_zeros(encoding: &str) -> Vec<u8> {
    use std::io::Write as _;
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            for _ in 0..BOMB_BYTES / zeros.len() {
                encoder.write_all(&zeros).unwrap();
            }
            encoder.finish().unwrap();
        }
        "deflate" => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
            for _ in 0..BOMB_BYTES / zeros.len() {
                encoder.write_all(&zeros).unwrap();
            }
            encoder.finish().unwrap();
        }
        "br" => {
            let mut encoder = brotli::CompressorWriter::new(&mut out, 1 << 16, 1, 22);
            for _ in 0..BOMB_BYTES / zeros.len() {
                encoder.write_all(&zeros).unwrap();
            }
            encoder.flush().unwrap();
            drop(encoder);
        }
        "zstd" => {
            let mut encoder = zstd::Encoder::new(&mut out, 1).unwrap();
            for _ in 0..BOMB_BYTES / zeros.len() {
                encoder.write_all(&zeros).unwrap();
            }
            encoder.finish().unwrap();
        }
        other => unreachable!("no bomb for {other}"),
    }
    assert!(
        out.len() < SMALL_BODY_MAX,
        "{encoding} bomb: {} bytes",
        out.len()
    );
    out
}

fn bomb_case(name: &'static str, encoding: &'static str) -> Case {
    let body = bomb(encoding);
    let body_len = body.len();
    let mut bytes = head(
        "POST /c/bomb HTTP/1.1",
        &[
            "Test-Name: bomb",
            "Content-Type: application/octet-stream",
            &format!("Content-Encoding: {encoding}"),
            &format!("Content-Length: {}", body.len()),
        ],
    );
    bytes.extend_from_slice(&body);
    // Over its limit once decoded: refused, or kept as sent (encoded).
    let mut case = Case::new(
        name,
        bytes,
        &[Alt::Error(413, "body-too-large"), Alt::Served],
    )
    .limits()
    .upstream("/c/bomb");
    case.upstream_body_len = Some(body_len);
    case.may_create = vec!["bomb.ouli.partial".into()];
    case.peak_rss_max = Some(BOMB_PEAK_RSS_MAX);
    // Kept as sent (a few KiB each), never decoded whole onto the disk.
    case.recording_bytes_max = Some(2 * SMALL_BODY_MAX as u64);
    case
}

/// The catalog. `parent` is the temp dir holding the recording dir (a name
/// that escapes would land in it, where the snapshot sees it).
fn catalog(parent: &Path) -> Vec<Case> {
    let secret_header = format!("X-Catalog: {SECRET}");
    let long_target = format!("GET /c/{} HTTP/1.1", "u".repeat(70_000));
    let big_header = format!("X-Big: {}", "h".repeat(SMALL_HEADER_MAX + 1024));
    let many_headers: Vec<String> = (0..=SMALL_HEADER_COUNT)
        .map(|i| format!("X-Many-{i}: v"))
        .collect();
    let many_headers: Vec<&str> = many_headers.iter().map(String::as_str).collect();
    let deep = deep_json(1_000_000);
    let name_242 = "n".repeat(242);
    let absolute_name = format!("{}/abs-escape", parent.display());
    let basic = format!(
        "Authorization: Basic {}",
        base64_lite::encode(format!("catalog:{SECRET}").as_bytes())
    );
    let chunked_over: Vec<u8> = {
        let chunk = vec![b'b'; 64 << 10];
        let mut body = Vec::new();
        for _ in 0..(SMALL_BODY_MAX * 3 / 2) / chunk.len() {
            body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(&chunk);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        body
    };
    let chunk_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "a=b;".repeat(10_000));
    let h2_settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

    let mut cases = vec![
        // --- the request line ---
        Case::new("method with a space", head("GE T /c/m HTTP/1.1", &[]), BAD_REQUEST),
        Case::new("method with a control byte", b"G\x01T /c/m HTTP/1.1\r\nHost: catalog.test\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("method not ASCII", b"G\xc3\x89T /c/m HTTP/1.1\r\nHost: catalog.test\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("target with a space", head("GET /c/a b HTTP/1.1", &[]), BAD_REQUEST),
        Case::new("target with a control byte", b"GET /c/a\x01b HTTP/1.1\r\nHost: catalog.test\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("target with percent-encoded invalid UTF-8", head("GET /c/pct%FF%C3%28?q=%FE HTTP/1.1", &[]), SERVED).upstream("/c/pct%FF%C3%28?q=%FE"),
        Case::new("target with raw invalid UTF-8", b"GET /c/caf\xe9 HTTP/1.1\r\nHost: catalog.test\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("target * for GET", head("GET * HTTP/1.1", &[]), BAD_REQUEST),
        Case::new("target missing", head("GET  HTTP/1.1", &[]), BAD_REQUEST),
        Case::new("target too long", head(&long_target, &[]), &[Alt::Error(414, "uri-too-long")]),
        Case::new("version garbage", head("GET /c/v HTTPX/1.1", &[]), BAD_REQUEST),
        Case::new("HTTP/0.9 request", b"GET /c/09\r\n".to_vec(), &[Alt::Error(400, "bad-request"), Alt::Error(505, "http-version-not-supported")]),
        Case::new("HTTP/2.0 request line", head("GET /c/v2 HTTP/2.0", &[]), VERSION),
        // The HTTP/2 preface as a connection's first bytes is h2c, served
        // as HTTP/2 (h2_tls.rs: the_http2_preface_on_a_cleartext_port_is_served_as_h2c);
        // after an HTTP/1 request on the same connection it is not served:
        // the connection closes after the first answer (hyper reads the
        // two in one read; its 505 goes out only when bytes came after the
        // last answer, `protocol_errors.rs`).
        Case {
            expect: vec![&[Alt::Hit("good")]],
            close: true,
            ..Case::new("HTTP/2 preface after an HTTP/1 request", join(&[GOOD, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", h2_settings]), &[])
        },
        // --- header syntax ---
        Case::new("header without a colon", head("GET /c/h HTTP/1.1", &["NoColonHere"]), BAD_REQUEST),
        Case::new("header name with a space", head("GET /c/h HTTP/1.1", &["Bad Name: v"]), BAD_REQUEST),
        Case::new("header obs-fold", head("GET /c/h HTTP/1.1", &["X-Fold: a", " b"]), BAD_REQUEST),
        Case::new("header value with NUL", b"GET /c/h HTTP/1.1\r\nHost: catalog.test\r\nX-Nul: a\x00b\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("header value with a lone CR", b"GET /c/h HTTP/1.1\r\nHost: catalog.test\r\nX-Cr: a\rb\r\n\r\n".to_vec(), BAD_REQUEST),
        Case::new("header value invalid UTF-8 with the secret", join(&[b"GET /c/obs-text HTTP/1.1\r\nHost: catalog.test\r\nX-Obs: caf\xe9 ", SECRET.as_bytes(), b"\r\n\r\n"]), SERVED).upstream("/c/obs-text"),
        Case::new("head over header_bytes_max in one value", head("GET /c/big HTTP/1.1", &[&big_header]), HEADERS_TOO_LARGE).limits(),
        Case::new("head over header_count_max", head("GET /c/many HTTP/1.1", &many_headers), HEADERS_TOO_LARGE).limits(),
        Case::steps(
            "head over header_bytes_max in small writes",
            head("GET /c/trickled-big HTTP/1.1", &[&big_header])
                .chunks(512)
                .map(|c| Step::Write(c.to_vec()))
                .collect(),
            HEADERS_TOO_LARGE,
        )
        .limits(),
        // --- lengths and framing ---
        Case::new(
            "Content-Length and Transfer-Encoding together",
            join(&[&head("POST /c/clte HTTP/1.1", &["Content-Length: 4", "Transfer-Encoding: chunked"]), b"0\r\n\r\nGET /c/smuggled HTTP/1.1\r\nHost: catalog.test\r\n\r\n"]),
            // Refused, or read as chunked (RFC 9112 6.1); either way the
            // connection closes after it and the smuggled request is never read.
            &[Alt::Error(400, "bad-request"), Alt::Served],
        )
        .closes()
        .upstream("/c/clte"),
        Case::new("Transfer-Encoding not chunked", join(&[&head("POST /c/te HTTP/1.1", &["Transfer-Encoding: gzip"]), b"hello"]), BAD_REQUEST),
        Case::new("Transfer-Encoding in HTTP/1.0", join(&[&head("POST /c/te10 HTTP/1.0", &["Transfer-Encoding: chunked"]), b"0\r\n\r\n"]), BAD_REQUEST),
        Case::new("Content-Length twice, same value", join(&[&head("POST /c/cl2 HTTP/1.1", &["Content-Length: 5", "Content-Length: 5"]), b"hello"]), SERVED).upstream("/c/cl2"),
        Case::new("Content-Length twice, conflicting", join(&[&head("POST /c/cl HTTP/1.1", &["Content-Length: 5", "Content-Length: 6"]), b"hello!"]), BAD_REQUEST),
        Case::new("Content-Length list, conflicting", join(&[&head("POST /c/cl HTTP/1.1", &["Content-Length: 5, 6"]), b"hello!"]), BAD_REQUEST),
        Case::new("Content-Length negative", join(&[&head("POST /c/cl HTTP/1.1", &["Content-Length: -1"]), b"hello"]), BAD_REQUEST),
        Case::new("Content-Length not a number", join(&[&head("POST /c/cl HTTP/1.1", &["Content-Length: abc"]), b"hello"]), BAD_REQUEST),
        Case::new("Content-Length with a plus sign", join(&[&head("POST /c/cl HTTP/1.1", &["Content-Length: +5"]), b"hello"]), BAD_REQUEST),
        Case::new("Content-Length overflowing u64", head("POST /c/cl HTTP/1.1", &["Content-Length: 99999999999999999999999"]), BAD_REQUEST),
        Case::new("Content-Length u64::MAX", head("POST /c/cl HTTP/1.1", &["Content-Length: 18446744073709551615"]), &[Alt::Error(413, "body-too-large"), Alt::Error(400, "bad-request")]),
        // Nothing of the body is sent: only an answer at once can come.
        Case::new("body over the limit by Content-Length", head("POST /c/declared HTTP/1.1", &["Content-Length: 2000000", &secret_header]), TOO_LARGE).limits(),
        Case::new("body over the limit, sent with its length", join(&[&head("POST /c/sent HTTP/1.1", &[&format!("Content-Length: {}", SMALL_BODY_MAX + 1)]), &vec![b'b'; SMALL_BODY_MAX + 1]]), TOO_LARGE).limits(),
        Case::new("body over the limit by chunking", join(&[&head("POST /c/chunked-over HTTP/1.1", &["Transfer-Encoding: chunked"]), &chunked_over]), TOO_LARGE).limits(),
        Case::new("chunk size not hex", join(&[&head("POST /c/chunk HTTP/1.1", &["Transfer-Encoding: chunked"]), b"zz\r\nhello\r\n0\r\n\r\n"]), BAD_BODY),
        Case::new("chunk size negative", join(&[&head("POST /c/chunk HTTP/1.1", &["Transfer-Encoding: chunked"]), b"-5\r\nhello\r\n0\r\n\r\n"]), BAD_BODY),
        Case::new("chunk size overflowing u64", join(&[&head("POST /c/chunk HTTP/1.1", &["Transfer-Encoding: chunked"]), b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"]), BAD_BODY),
        Case::new("chunk data without its CRLF", join(&[&head("POST /c/chunk HTTP/1.1", &["Transfer-Encoding: chunked"]), b"5\r\nhelloXX0\r\n\r\n"]), BAD_BODY),
        Case::new("chunk extensions of 40 KB", join(&[&head("POST /c/chunk HTTP/1.1", &["Transfer-Encoding: chunked"]), chunk_extension.as_bytes()]), BAD_BODY),
        Case::steps(
            "body ends early (client half-closes)",
            vec![
                Step::Write(join(&[&head("POST /c/early HTTP/1.1", &["Content-Length: 100"]), b"0123456789"])),
                Step::ShutdownWrite,
            ],
            BAD_BODY,
        ),
        // --- time ---
        Case::new("slow headers: stalled head", b"GET /c/slow-head HTTP/1.1\r\nHost: catalog.test\r\n".to_vec(), &[Alt::Error(408, "header-timeout")]).slow(),
        Case::steps(
            "slow headers: one byte every 200 ms",
            std::iter::once(Step::Write(b"GET /c/trickle-head HTTP/1.1\r\nHost: catalog.test\r\nX-Slow: ".to_vec()))
                .chain((0..25).flat_map(|_| [Step::Pause(Duration::from_millis(200)), Step::Write(b"x".to_vec())]))
                .collect(),
            &[Alt::Error(408, "header-timeout")],
        )
        .slow(),
        Case::new("slow body: stalled after 10 of 100 bytes", join(&[&head("POST /c/slow-body HTTP/1.1", &["Content-Length: 100", &secret_header]), b"0123456789"]), &[Alt::Error(408, "body-timeout")]).slow(),
        Case::steps(
            "slow body: one byte every 200 ms",
            std::iter::once(Step::Write(head("POST /c/trickle-body HTTP/1.1", &["Content-Length: 100"])))
                .chain((0..25).flat_map(|_| [Step::Pause(Duration::from_millis(200)), Step::Write(b"x".to_vec())]))
                .collect(),
            &[Alt::Error(408, "body-timeout")],
        )
        .slow(),
        Case::new("slow body: open chunked body", join(&[&head("POST /c/open-chunked HTTP/1.1", &["Transfer-Encoding: chunked"]), b"5\r\nhello\r\n"]), &[Alt::Error(408, "body-timeout")]).slow(),
        // --- where a request goes ---
        Case::new(
            "absolute-form target to another host",
            head("GET http://elsewhere.example/c/abs?q=1 HTTP/1.1", &["Host: elsewhere.example"])[..].to_vec(),
            // Only to the configured upstream, with the path; or refused.
            &[Alt::Served, Alt::Error(400, "bad-request")],
        )
        .upstream("/c/abs?q=1"),
        Case::new(
            "absolute-form target with the secret as password",
            format!("GET https://user:{SECRET}@elsewhere.example:8443/c/abs2 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n").into_bytes(),
            &[Alt::Served, Alt::Error(400, "bad-request")],
        )
        .upstream("/c/abs2"),
        Case::new("Host pointing elsewhere", b"GET /c/host HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n".to_vec(), SERVED).upstream("/c/host"),
        // RFC 9112 3.2: more than one Host is answered with 400.
        Case::new("Host twice", head("GET /c/host2 HTTP/1.1", &["Host: elsewhere.example"]), BAD_REQUEST),
        // ouli is no forward proxy: CONNECT is refused, never tunnelled.
        Case::new(
            "CONNECT to another host",
            b"CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example:443\r\n\r\n".to_vec(),
            &[Alt::Error(405, "method-not-allowed"), Alt::Error(400, "bad-request")],
        ),
        // --- session names (header) ---
        Case::new("name with .. and the secret", session_header(format!("../{SECRET}").as_bytes()), BAD_NAME),
        Case::new("name climbing out", session_header(b"a/../../escape"), BAD_NAME),
        Case::new("name starting with / (absolute)", session_header(absolute_name.as_bytes()), BAD_NAME),
        Case::new("name with a backslash", session_header(b"..\\escape"), BAD_NAME),
        Case::new("name with NUL", session_header(b"a\x00b"), &[Alt::Error(400, "bad-test-name"), Alt::Error(400, "bad-request")]),
        Case::new("name with a tab", session_header(b"a\tb"), BAD_NAME),
        Case::new("name of 256 bytes", session_header("x".repeat(256).as_bytes()), BAD_NAME),
        Case::new("name with a segment of 243 bytes (no room for .ouli.partial)", session_header(format!("d/{}", "s".repeat(243)).as_bytes()), BAD_NAME),
        Case::new("name with an empty segment", session_header(b"a//b"), BAD_NAME),
        Case::new("name empty", b"GET /c/name HTTP/1.1\r\nHost: catalog.test\r\nTest-Name:\r\n\r\n".to_vec(), BAD_NAME),
        Case::new("name with a folder ending in .ouli", session_header(b"coll.ouli/x"), BAD_NAME),
        Case::new("name with a folder ending in .ouli.partial", session_header(b"x.ouli.partial/y"), BAD_NAME),
        Case::new("name not UTF-8", session_header(b"caf\xe9"), BAD_NAME),
        Case::new("name .. in X-Ouli-Test-Name", head("GET /c/name HTTP/1.1", &["X-Ouli-Test-Name: .."]), BAD_NAME),
        // --- bodies ---
        Case::new(
            "deep JSON request around a password",
            join(&[&head("POST /c/deep HTTP/1.1", &["Test-Name: deep", "Content-Type: application/json", &format!("Content-Length: {}", deep.len())]), &deep]),
            SERVED,
        )
        .upstream("/c/deep")
        .upstream_body(deep.len())
        .creates("deep.ouli.partial"),
        Case {
            answer_may_hold: &["deep JSON password"],
            ..Case::new("deep JSON response around a password", head("GET /c/deep-response HTTP/1.1", &["Test-Name: deep"]), SERVED)
        }
            .upstream("/c/deep-response")
            .creates("deep.ouli.partial")
            .record_only(),
        bomb_case("gzip bomb", "gzip"),
        bomb_case("deflate bomb", "deflate"),
        bomb_case("br bomb", "br"),
        bomb_case("zstd bomb", "zstd"),
        Case::new("secret in the query", head(&format!("GET /c/q?token={SECRET} HTTP/1.1"), &[]), SERVED),
        Case::new("secret percent-encoded in the query", head(&format!("GET /c/q2?k={} HTTP/1.1", SECRET.replace('-', "%2D")), &[]), SERVED),
        Case::new(
            "secret JSON-escaped in a body",
            {
                let body = format!(r#"{{"note":"{}"}}"#, SECRET.replace('-', "\\u002d"));
                join(&[&head("POST /c/json-escaped HTTP/1.1", &["Content-Type: application/json", &format!("Content-Length: {}", body.len())]), body.as_bytes()])
            },
            SERVED,
        )
        .upstream("/c/json-escaped"),
        Case::new("secret in Basic credentials", head("GET /c/basic HTTP/1.1", &[&basic]), SERVED).upstream("/c/basic"),
        // --- connections ---
        Case {
            expect: vec![&[Alt::Hit("/pipe/1")], &[Alt::Hit("/pipe/2")], &[Alt::Hit("/pipe/3")]],
            ..Case::new(
                "pipelining: three requests in one write",
                [1, 2, 3].map(|n| head(&format!("GET /pipe/{n} HTTP/1.1"), &["Test-Name: pipe"])).concat(),
                &[],
            )
        },
        Case {
            expect: vec![&[Alt::Hit("/pipe/1")], BAD_REQUEST],
            close: true,
            ..Case::new(
                "pipelining: a bad request between good ones",
                [
                    head("GET /pipe/1 HTTP/1.1", &["Test-Name: pipe"]),
                    head("GE T /pipe/2 HTTP/1.1", &["Test-Name: pipe"]),
                    head("GET /pipe/3 HTTP/1.1", &["Test-Name: pipe"]),
                ]
                .concat(),
                &[],
            )
        },
        Case::steps("half-close after a GET", vec![Step::Write(GOOD.to_vec()), Step::ShutdownWrite], &[Alt::Hit("good")]),
        Case::steps(
            "half-close after a POST with its body",
            vec![Step::Write(join(&[&head("POST /c/half-slow HTTP/1.1", &["Content-Length: 5"]), b"hello"])), Step::ShutdownWrite],
            SERVED,
        )
        .upstream("/c/half-slow"),
        Case {
            special: Some(Special::IdleConnections),
            ..Case::new("thousands of idle connections", Vec::new(), &[Alt::Error(503, "too-many-connections")]).limits().closes()
        },
        // --- control paths ---
        Case::new("control: unknown path", control("GET", "/__ouli/nope"), &[Alt::Error(404, "unknown-control-path")]),
        Case::new("control: GET on reset", control("GET", "/__ouli/sessions/good/reset"), &[Alt::Error(405, "method-not-allowed")]),
        Case::new("control: DELETE on end", control("DELETE", "/__ouli/sessions/good/end"), &[Alt::Error(405, "method-not-allowed")]),
        Case::new("control: name with .. and the secret", control("POST", &format!("/__ouli/sessions/..%2F{SECRET}/reset")), BAD_NAME),
        Case::new("control: name starting with /", control("POST", "/__ouli/sessions/%2Fetc/end"), BAD_NAME),
        Case::new("control: name with NUL", control("POST", "/__ouli/sessions/a%00b/end"), BAD_NAME),
        Case::new("control: name with a control byte", control("POST", "/__ouli/sessions/a%01b/reset"), BAD_NAME),
        Case::new("control: name not UTF-8", control("POST", "/__ouli/sessions/caf%E9/end"), BAD_NAME),
        Case::new("control: name with a folder ending in .ouli", control("POST", "/__ouli/sessions/coll.ouli%2Fx/end"), BAD_NAME),
        Case::new("control: empty name", control("POST", "/__ouli/sessions//end"), BAD_NAME),
        // --- WebSocket handshakes ---
        Case::new("WebSocket key not base64", websocket("not base64 at all!", "13"), BAD_WS),
        Case::new("WebSocket key of 8 bytes", websocket(&base64_lite::encode(&[7; 8]), "13"), BAD_WS),
        Case::new("WebSocket version 8", websocket(&base64_lite::encode(&[7; 16]), "8"), BAD_WS),
        Case::new("WebSocket without a key", websocket("", "13"), BAD_WS),
    ];
    let mut longest = Case::new(
        "name with a segment of 242 bytes (the longest storable)",
        session_header(name_242.as_bytes()),
        SERVED,
    )
    .upstream("/c/name");
    longest.may_create = vec![format!("{name_242}.ouli.partial")];
    cases.push(longest);
    cases
}

/// One mode's run: its servers, the upstream (record), what was seen.
struct Run {
    mode: Mode,
    parent: tempfile::TempDir,
    main: Ouli,
    limits: Ouli,
    upstream: Option<Upstream>,
    forbidden_seen: BTreeSet<(PathBuf, &'static str)>,
    lines: Vec<String>,
    failures: usize,
    /// Servers started again after a case brought one down.
    restarts: usize,
}

/// Starts one of a mode's servers (`generation` > 0: a replacement), writes
/// replay's recordings, and opens the sessions every case's good request
/// and served requests use, so that a case adds no file of its own.
fn launch(
    mode: Mode,
    parent: &Path,
    upstream: Option<&Upstream>,
    srv: Srv,
    generation: usize,
) -> Ouli {
    // Replay never dials: a port nothing listens on.
    let port = upstream.map_or(9, |u| u.addr.port());
    let (label, limits) = match srv {
        Srv::Main => (
            "main",
            format!(
                "  header_read_timeout_ms: {TIMEOUT_MS}\n  request_body_timeout_ms: {TIMEOUT_MS}\n  header_bytes_max: {MAIN_HEADER_MAX}\n  request_body_bytes_max: {MAIN_BODY_MAX}\n"
            ),
        ),
        Srv::Limits => (
            "limits",
            format!(
                "  header_read_timeout_ms: {IDLE_HEADER_TIMEOUT_MS}\n  request_body_bytes_max: {SMALL_BODY_MAX}\n  header_bytes_max: {SMALL_HEADER_MAX}\n  header_count_max: {SMALL_HEADER_COUNT}\n  connections_max: {}\n",
                idle_plan().1.max(1)
            ),
        ),
    };
    let label = match generation {
        0 => label.to_owned(),
        n => format!("{label}-restart{n}"),
    };
    let mode_name = match mode {
        Mode::Replay => "replay",
        Mode::Record => "record",
    };
    let server = start_server(mode_name, parent, &label, &yaml(port, &limits));
    if mode == Mode::Replay {
        write_replay_recordings(&server.recording_dir, port);
    }
    for bytes in [
        GOOD.to_vec(),
        head("GET /good HTTP/1.1", &[]),
        head("GET /pipe/0 HTTP/1.1", &["Test-Name: pipe"]),
    ] {
        let got = exchange(&server.addr, vec![Step::Write(bytes)], 1, false);
        assert_eq!(
            got.answers.first().map(|a| a.status),
            Some(200),
            "{mode:?} {label}: warm-up answer {got:?}"
        );
    }
    server
}

fn yaml(upstream_port: u16, limits: &str) -> String {
    format!(
        "endpoints:\n  - target_host: 127.0.0.1\n    target_type: http\n    target_port: {upstream_port}\n    source_port: 0\n    health: /health\non_chain_exhausted: repeat-last\nlimits:\n{limits}"
    )
}

impl Run {
    fn start(mode: Mode) -> Run {
        let parent = tempfile::tempdir().unwrap();
        let upstream = (mode == Mode::Record).then(Upstream::start);
        let main = launch(mode, parent.path(), upstream.as_ref(), Srv::Main, 0);
        let limits = launch(mode, parent.path(), upstream.as_ref(), Srv::Limits, 0);
        Run {
            mode,
            parent,
            main,
            limits,
            upstream,
            forbidden_seen: BTreeSet::new(),
            lines: Vec::new(),
            failures: 0,
            restarts: 0,
        }
    }

    /// A server a case brought down is replaced (with a recording dir of
    /// its own), so that the cases after it are still judged on their own.
    fn restart_if_dead(&mut self, srv: Srv) {
        if self.server(srv).alive().is_ok() {
            return;
        }
        self.restarts += 1;
        let fresh = launch(
            self.mode,
            self.parent.path(),
            self.upstream.as_ref(),
            srv,
            self.restarts,
        );
        *self.server(srv) = fresh;
    }

    fn server(&mut self, srv: Srv) -> &mut Ouli {
        match srv {
            Srv::Main => &mut self.main,
            Srv::Limits => &mut self.limits,
        }
    }

    fn addr(&self, srv: Srv) -> String {
        match srv {
            Srv::Main => self.main.addr.clone(),
            Srv::Limits => self.limits.addr.clone(),
        }
    }

    fn upstream_count(&self) -> usize {
        self.upstream.as_ref().map_or(0, |u| u.seen().len())
    }

    /// Every case of this mode: the slow ones together first, then the rest
    /// one by one; each checked as it ends.
    fn run_all(&mut self, cases: Vec<Case>) {
        let cases: Vec<Case> = cases
            .into_iter()
            .filter(|case| case.only == Only::Both || self.mode == Mode::Record)
            .collect();
        let (slow, quick): (Vec<Case>, Vec<Case>) = cases.into_iter().partition(|c| c.slow);
        let seen_before = self.upstream_count();
        let before = self.snapshots();
        let started = std::time::Instant::now();
        let exchanges: Vec<(Case, Exchange)> = std::thread::scope(|scope| {
            let handles: Vec<_> = slow
                .into_iter()
                .map(|case| {
                    let addr = self.addr(case.server);
                    scope.spawn(move || {
                        let got =
                            exchange(&addr, case.steps.clone(), case.expect.len(), case.close);
                        (case, got)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (case, got) in exchanges {
            self.judge(&case, got, Vec::new(), seen_before, &before, started);
        }
        for case in quick {
            self.restart_if_dead(case.server);
            let seen_before = self.upstream_count();
            let before = self.snapshots();
            let started = std::time::Instant::now();
            let (got, problems) = match case.special {
                Some(Special::IdleConnections) => self.idle_connections(&case),
                None => (
                    exchange(
                        &self.addr(case.server),
                        case.steps.clone(),
                        case.expect.len(),
                        case.close,
                    ),
                    Vec::new(),
                ),
            };
            self.judge(&case, got, problems, seen_before, &before, started);
        }
    }

    /// (outside the recording dirs, in the main one, in the limits one).
    fn snapshots(&self) -> [std::collections::BTreeMap<PathBuf, u64>; 3] {
        let dirs = [
            self.main.recording_dir.clone(),
            self.limits.recording_dir.clone(),
        ];
        let mut outside = snapshot(self.parent.path(), &dirs);
        // The logs grow; their names are what matters here.
        for size in outside.values_mut() {
            *size = 0;
        }
        [outside, snapshot(&dirs[0], &[]), snapshot(&dirs[1], &[])]
    }

    /// Opens `idle_plan().0` connections that send nothing, then checks
    /// that an admitted one is still served and that one more is refused
    /// with 503. Returns the refused one's exchange, and what else failed.
    fn idle_connections(&mut self, case: &Case) -> (Exchange, Vec<String>) {
        use std::io::Write as _;
        let addr = self.server(case.server).addr.clone();
        let (wanted, _) = idle_plan();
        let mut problems = Vec::new();
        if wanted < IDLE_CONNECTIONS_MIN {
            problems.push(format!(
                "only {wanted} idle connections fit this process's descriptor limit"
            ));
        }
        let opening = std::time::Instant::now();
        let mut idle = Vec::with_capacity(wanted);
        for _ in 0..wanted {
            match std::net::TcpStream::connect(&addr) {
                Ok(stream) => idle.push(stream),
                Err(error) => {
                    problems.push(format!("connection {} refused: {error}", idle.len() + 1));
                    break;
                }
            }
        }
        let note = format!(
            "{} idle connections opened in {} ms; ",
            idle.len(),
            opening.elapsed().as_millis()
        );
        // An admitted connection (the first) is still served.
        if let Some(first) = idle.first_mut() {
            let _ = first.write_all(GOOD);
            let got = support::read_answers(first, 1, false, ANSWER_WAIT);
            if got.answers.first().is_none_or(|a| a.status != 200) {
                problems.push(format!(
                    "the first idle connection's good request got {:?} ({})",
                    got.answers.first().map(|a| a.status),
                    got.note
                ));
            }
        }
        // One more, while the admitted ones are held: a 503. A burst of
        // refusals may be closed unanswered while earlier refused ones are
        // still being answered (that work is bounded), so a client that
        // is closed on tries again until the safety net.
        let deadline = std::time::Instant::now() + ANSWER_WAIT;
        let mut attempts = 0;
        let mut got = loop {
            attempts += 1;
            let got = exchange(&addr, vec![Step::Write(GOOD.to_vec())], 1, true);
            if !got.answers.is_empty() || std::time::Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let note = format!("{note}the extra one answered at attempt {attempts}; ");
        got.note = format!("{note}{}", got.note);
        drop(idle);
        (got, problems)
    }

    fn judge(
        &mut self,
        case: &Case,
        got: Exchange,
        mut problems: Vec<String>,
        seen_before: usize,
        before: &[std::collections::BTreeMap<PathBuf, u64>; 3],
        started: std::time::Instant,
    ) {
        let observed: Vec<String> = got
            .answers
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a.status,
                    a.header("x-ouli-error").unwrap_or_else(|| "-".into())
                )
            })
            .collect();
        let mut served = false;
        for (index, alts) in case.expect.iter().enumerate() {
            let Some(answer) = got.answers.get(index) else {
                problems.push(format!(
                    "answer {} missing (closed: {}, {})",
                    index + 1,
                    got.closed,
                    got.note
                ));
                break;
            };
            match alts
                .iter()
                .find_map(|alt| self.matches(alt, answer).ok().map(|()| alt))
            {
                Some(Alt::Served | Alt::Hit(_)) => served = true,
                Some(Alt::Error(..)) => {}
                None => {
                    let why: Vec<String> = alts
                        .iter()
                        .map(|alt| self.matches(alt, answer).unwrap_err())
                        .collect();
                    problems.push(format!("answer {}: {}", index + 1, why.join(" / ")));
                }
            }
        }
        if case.close
            && problems.is_empty()
            && got.answers.len() == case.expect.len()
            && !got.closed
        {
            problems.push(format!(
                "the connection was not closed after the answer ({})",
                got.note
            ));
        }
        if got.answers.len() > case.expect.len() {
            problems.push(format!(
                "{} answers, {} expected",
                got.answers.len(),
                case.expect.len()
            ));
        }
        for label in find_forbidden(&got.raw) {
            if !case.answer_may_hold.contains(&label) {
                problems.push(format!("the {label} is in the answer"));
            }
        }
        // Still alive, still serving.
        let srv = case.server;
        if let Err(error) = self.server(srv).alive() {
            problems.push(error);
        } else {
            let good = self.good_request(srv, case.special.is_some());
            for label in find_forbidden(&good.raw) {
                problems.push(format!("the {label} is in the good request's answer"));
            }
            match good.answers.first() {
                Some(answer) if answer.status == 200 && answer.header("x-ouli-error").is_none() => {
                }
                other => {
                    problems.push(format!(
                        "the good request after it got {:?} ({})",
                        other.map(|a| a.status),
                        good.note
                    ));
                    // A process that is aborting may still be there a moment.
                    let server = self.server(srv);
                    let deadline = std::time::Instant::now() + Duration::from_secs(2);
                    while server.alive().is_ok() && std::time::Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if let Err(error) = server.alive() {
                        problems.push(error);
                    }
                }
            }
        }
        if let Some(max) = case.peak_rss_max {
            let peak = peak_rss(self.server(srv));
            if peak > max {
                problems.push(format!(
                    "server peak memory {} MiB > {} MiB",
                    peak >> 20,
                    max >> 20
                ));
            }
        }
        if let Some(max) = case.recording_bytes_max {
            let dir = self.server(srv).recording_dir.clone();
            let total: u64 = snapshot(&dir, &[]).values().sum();
            if total > max {
                problems.push(format!("the recording dir holds {total} bytes > {max}"));
            }
        }
        problems.extend(self.check_files(case, before, served));
        problems.extend(self.check_upstream(case, seen_before, served));
        self.restart_if_dead(srv);
        let observed = if observed.is_empty() {
            format!("no answer (closed: {}; {})", got.closed, got.note)
        } else if case.special.is_some() {
            format!("{} ({})", observed.join(", "), got.note)
        } else {
            observed.join(", ")
        };
        let mode = format!("{:?}", self.mode).to_lowercase();
        let took = started.elapsed().as_millis();
        if problems.is_empty() {
            self.lines.push(format!(
                "PASS [{mode}] {} ({took} ms): {observed}",
                case.name
            ));
        } else {
            self.failures += 1;
            self.lines.push(format!(
                "FAIL [{mode}] {} ({took} ms): observed {observed}; {}",
                case.name,
                problems.join("; ")
            ));
        }
    }

    fn matches(&self, alt: &Alt, answer: &support::Answer) -> Result<(), String> {
        let kind = answer.header("x-ouli-error");
        let text = String::from_utf8_lossy(&answer.body);
        match *alt {
            Alt::Error(status, want) => {
                if answer.status != status || kind.as_deref() != Some(want) {
                    return Err(format!(
                        "want {status} {want}, got {} {}",
                        answer.status,
                        kind.as_deref().unwrap_or("(no x-ouli-error)")
                    ));
                }
                let body: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("{status} {want}: body not JSON ({e}): {text:.200}"))?;
                let fault_ok = body["fault"]
                    .as_str()
                    .is_some_and(|f| ["client", "upstream", "recording"].contains(&f));
                if body["error"] != want || !fault_ok || !body["message"].is_string() {
                    return Err(format!(
                        "{status} {want}: body lacks error/fault/message: {text:.200}"
                    ));
                }
                Ok(())
            }
            Alt::Served => match self.mode {
                Mode::Replay if answer.status == 404 && kind.as_deref() == Some("replay-miss") => {
                    serde_json::from_slice::<serde_json::Value>(&answer.body)
                        .map(|_| ())
                        .map_err(|e| format!("replay-miss body not JSON: {e}"))
                }
                Mode::Replay if answer.status == 200 && kind.is_none() => Ok(()),
                Mode::Record if answer.status == 200 && answer.header(UPSTREAM_MARK).is_some() => {
                    Ok(())
                }
                _ => Err(format!(
                    "want it served, got {} {}",
                    answer.status,
                    kind.as_deref().unwrap_or("(no x-ouli-error)")
                )),
            },
            Alt::Hit(needle) => {
                if answer.status == 200 && kind.is_none() && text.contains(needle) {
                    Ok(())
                } else {
                    Err(format!(
                        "want 200 with {needle:?}, got {} {}: {text:.120}",
                        answer.status,
                        kind.as_deref().unwrap_or("-")
                    ))
                }
            }
        }
    }

    /// The good request, on a new connection; after the idle connections,
    /// retried while their slots are given back.
    fn good_request(&mut self, srv: Srv, retry: bool) -> Exchange {
        let addr = self.server(srv).addr.clone();
        let deadline = std::time::Instant::now() + ANSWER_WAIT;
        loop {
            let got = exchange(&addr, vec![Step::Write(GOOD.to_vec())], 1, false);
            let ok = got.answers.first().is_some_and(|a| a.status == 200);
            if ok || !retry || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_files(
        &mut self,
        case: &Case,
        before: &[std::collections::BTreeMap<PathBuf, u64>; 3],
        served: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let after = self.snapshots();
        let outside_new: Vec<_> = after[0]
            .keys()
            .filter(|k| !before[0].contains_key(*k))
            .collect();
        if !outside_new.is_empty() {
            problems.push(format!(
                "files written outside the recording dirs: {outside_new:?}"
            ));
        }
        for dir in 1..3 {
            let new: Vec<&PathBuf> = after[dir]
                .keys()
                .filter(|k| !before[dir].contains_key(*k))
                .filter(|k| {
                    // A folder on the way to an allowed recording is allowed,
                    // and the recording's writer lock (held while the run
                    // has the session open, removed when it finishes).
                    !(served
                        && case.may_create.iter().any(|allowed| {
                            Path::new(allowed).starts_with(k)
                                || allowed.strip_suffix(".partial").is_some_and(|file| {
                                    k.as_os_str().to_str() == Some(format!("{file}.lock").as_str())
                                })
                        }))
                })
                .collect();
            if !new.is_empty() {
                problems.push(format!("new in the recording dir: {new:?}"));
            }
            if self.mode == Mode::Replay && after[dir] != before[dir] {
                problems.push("replay changed its recording dir".into());
            }
        }
        for hit in files_with_forbidden(self.parent.path()) {
            if self.forbidden_seen.insert(hit.clone()) {
                problems.push(format!("the {} is in {}", hit.1, hit.0.display()));
            }
        }
        problems
    }

    fn check_upstream(&self, case: &Case, seen_before: usize, served: bool) -> Vec<String> {
        let Some(upstream) = &self.upstream else {
            return Vec::new();
        };
        let authority = upstream.addr.to_string();
        let new: Vec<_> = upstream.seen()[seen_before..]
            .iter()
            .filter(|s| !s.target.starts_with("/good"))
            .cloned()
            .collect();
        let mut problems = Vec::new();
        if !served && !new.is_empty() {
            problems.push(format!("forwarded although refused: {new:?}"));
        }
        for seen in &new {
            if seen.host != authority {
                problems.push(format!(
                    "upstream saw Host {:?}, not {authority}",
                    seen.host
                ));
            }
            if seen.target.contains("smuggled") || seen.method == "CONNECT" {
                problems.push(format!("upstream saw {} {}", seen.method, seen.target));
            }
            if let Some(target) = case.upstream_target
                && seen.target != target
            {
                problems.push(format!("upstream saw {:?}, want {target:?}", seen.target));
            }
            if let Some(len) = case.upstream_body_len
                && seen.body_len != len
            {
                problems.push(format!(
                    "upstream got a body of {} bytes, sent {len}",
                    seen.body_len
                ));
            }
        }
        if served && self.mode == Mode::Record && new.is_empty() && case.upstream_target.is_some() {
            problems.push("served, but the upstream saw nothing".into());
        }
        problems
    }

    /// Stops both servers: each must exit 0 (recordings closed); then no
    /// secret in any file, and no recording under another host.
    fn finish(mut self) -> (Vec<String>, usize) {
        let mode = format!("{:?}", self.mode).to_lowercase();
        for (label, server) in [("main", self.main), ("limits", self.limits)] {
            let status = server.stop().status;
            if !status.success() {
                self.failures += 1;
                self.lines
                    .push(format!("FAIL [{mode}] {label} server exit: {status}"));
            }
        }
        for problem in recorded_elsewhere(self.parent.path()) {
            self.failures += 1;
            self.lines
                .push(format!("FAIL [{mode}] recording: {problem}"));
        }
        for hit in files_with_forbidden(self.parent.path()) {
            if self.forbidden_seen.insert(hit.clone()) {
                self.failures += 1;
                self.lines.push(format!(
                    "FAIL [{mode}] after stop: the {} is in {}",
                    hit.1,
                    hit.0.display()
                ));
            }
        }
        (self.lines, self.failures)
    }
}

/// Descriptors this process may still open (soft limit less those open).
fn descriptors_available() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    soft.saturating_sub(open)
}

/// Every record of every recording under `dir` names the configured
/// upstream only, in its identity and its target.
fn recorded_elsewhere(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (relative, _) in snapshot(dir, &[]) {
        let path = dir.join(&relative);
        if !path.is_file() || path.extension().is_none_or(|e| e != "ouli") {
            continue;
        }
        let recording =
            match ouli::recording::Recording::open(&path, ouli::recording::ReadBackend::Mmap) {
                Ok(recording) => recording,
                Err(error) => {
                    problems.push(format!("{}: {error}", relative.display()));
                    continue;
                }
            };
        for record in recording.iter() {
            let Ok(interaction) = record.and_then(|r| r.to_interaction()) else {
                problems.push(format!("{}: a record cannot be read", relative.display()));
                continue;
            };
            for (what, bytes) in [
                ("identity", &interaction.canonical),
                ("target", &interaction.request.target),
            ] {
                if memchr::memmem::find(bytes, b"elsewhere").is_some() {
                    problems.push(format!("{}: {what} names another host", relative.display()));
                }
            }
        }
    }
    problems
}

/// The replay servers' recordings: the good request (sessions `good` and
/// `default`), the pipelined ones, and a WebSocket conversation.
fn write_replay_recordings(dir: &Path, port: u16) {
    use ouli::chain::{ChainMode, ChainState};
    use ouli::fingerprint::{MatchRules, Matcher, RequestParts, Target};
    use ouli::interaction::{BodyChunk, Exchange, Interaction, RecordedRequest, RecordedResponse};
    use ouli::recording::{Durability, RecordingWriter};
    use ouli::session_name::SessionName;
    let target = Target {
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port,
    };
    let matcher = Matcher::new(&MatchRules::default());
    let sessions: [(&str, &[&str]); 3] = [
        ("good", &["/good"]),
        ("default", &["/good"]),
        ("pipe", &["/pipe/0", "/pipe/1", "/pipe/2", "/pipe/3"]),
    ];
    for (session, paths) in sessions {
        let path = SessionName::parse(session).unwrap().recording_path(dir);
        let mut writer = RecordingWriter::create(&path, Durability::OnClose).unwrap();
        let mut chain = ChainState::new(ChainMode::Request);
        for request_path in paths {
            let mut canonical = Vec::new();
            matcher.canonical_form(
                &target,
                &RequestParts {
                    method: b"GET",
                    path_and_query: request_path.as_bytes(),
                    headers: &http::HeaderMap::new(),
                    body: b"",
                },
                &mut canonical,
            );
            let step = chain.peek(&canonical);
            chain.commit(&step);
            let body = serde_json::json!({ "recorded": "good", "path": request_path }).to_string();
            writer
                .append(&Interaction {
                    fingerprint: step.fingerprint,
                    chain_link: step.link,
                    canonical: Bytes::from(canonical),
                    endpoint: 0,
                    recorded_at_unix_us: 1,
                    request: RecordedRequest {
                        method: Bytes::from_static(b"GET"),
                        target: Bytes::copy_from_slice(request_path.as_bytes()),
                        headers: Vec::new(),
                        body: Bytes::new(),
                        trailers: Vec::new(),
                    },
                    exchange: Exchange::Http(RecordedResponse {
                        status: 200,
                        headers: vec![(
                            Bytes::from_static(b"content-type"),
                            Bytes::from_static(b"application/json"),
                        )],
                        chunks: vec![BodyChunk {
                            offset_us: 0,
                            data: Bytes::from(body),
                        }],
                        original_encoding: Bytes::new(),
                        ..Default::default()
                    }),
                })
                .unwrap();
        }
        writer.finish().unwrap();
    }
    std::fs::write(dir.join("chat.websocket.log"), ">6 hello\n<6 world\n").unwrap();
}

fn run_catalog(mode: Mode) {
    let mut run = Run::start(mode);
    let cases = catalog(run.parent.path());
    let total = cases.len();
    run.run_all(cases);
    let (lines, failures) = run.finish();
    // The whole table, for whoever reads the run: what each case observed.
    for line in &lines {
        eprintln!("{line}");
    }
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failures == 0,
        "{mode:?}: {failures} of {total} case(s) failed:\n{}",
        failed
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn bad_input_catalog_in_replay_mode() {
    run_catalog(Mode::Replay);
}

#[test]
fn bad_input_catalog_in_record_mode() {
    run_catalog(Mode::Record);
}
