//! The catalog's harness: the real binary with its output captured, a real
//! hyper upstream that keeps what it received, a raw-socket client that
//! writes bytes exactly and reads answers as they come, and the checks run
//! after every case (files, secrets, liveness).

pub use crate::support::ouli::Ouli;
use crate::support::ouli::{Log, Start};
use crate::support::upstream::{self, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret given to the server (`TEST_SERVER_SECRETS`) and put into bad
/// inputs: it must never be in an answer, a log line or a file.
pub const SECRET: &str = "ouli-catalog-s3cr3t-Zq9";
/// The value of a sensitive JSON key (`password`) buried in deep JSON: not a
/// configured secret, so only key redaction can keep it off the disk.
pub const DEEP_PASSWORD: &str = "deep-pw-7Hq2xK";

/// Safety net for one answer; a server that holds a connection silently
/// fails the case after this long (never a timed assertion).
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What must appear nowhere: the secret, its `user:secret` Basic form, and
/// the deep JSON's password value.
pub fn forbidden() -> Vec<(&'static str, Vec<u8>)> {
    use base64_lite::encode;
    vec![
        ("secret", SECRET.as_bytes().to_vec()),
        (
            "basic-auth form of the secret",
            encode(format!("catalog:{SECRET}").as_bytes()).into_bytes(),
        ),
        ("deep JSON password", DEEP_PASSWORD.as_bytes().to_vec()),
    ]
}

/// Standard base64 (for Basic credentials and WebSocket keys), small enough
/// not to need a crate.
pub mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Starts `ouli <mode>` with `yaml` as its config, in `parent`, named
/// `label` (its config and log files carry the label): stdout and stderr go
/// to files beside (not in) the recording dir, so the catalog can read them.
pub fn start_server(mode: &str, parent: &Path, label: &str, yaml: &str) -> Ouli {
    Start::new(mode, parent, yaml)
        .config_at(&parent.join(format!("{label}.yaml")))
        .recording_dir(&parent.join(format!("{label}-recordings")))
        .create_recording_dir()
        .global_arg("--log-level")
        .global_arg("info,ouli=debug")
        .env("TEST_SERVER_SECRETS", SECRET)
        .env_remove("OULI_SECRETS")
        .env_remove("OULI_SECRETS_FILE")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .log(Log::Create(parent.join(format!("{label}.stderr.log"))))
        .stdout_to(&parent.join(format!("{label}.stdout.log")))
        .spawn()
}

/// Peak resident memory of the server so far (`VmHWM`), in bytes.
pub fn peak_rss(server: &Ouli) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub host: String,
    pub body_len: usize,
}

/// A real hyper HTTP/1.1 server standing in for the upstream: it keeps every
/// request it received and answers 200 with the path it saw (so answers can
/// be told apart), or, for `/c/deep-response`, a JSON body a million levels
/// deep around a password; a path ending in `-slow` is answered after a
/// pause.
pub struct Upstream {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

/// The header every upstream answer carries: an answer with it came from the
/// upstream, not from ouli.
pub const UPSTREAM_MARK: &str = "x-catalog-upstream";

impl Upstream {
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let kept = seen.clone();
        let addr = {
            // `serve` spawns on the runtime it is called in.
            let _inside = runtime.enter();
            upstream::serve(listener, Options::default(), move |_, request| {
                let kept = kept.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request, &kept).await) }
            })
            .addr
        };
        Upstream {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    request: http::Request<hyper::body::Incoming>,
    kept: &Mutex<Vec<Seen>>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |p| p.as_str().to_owned());
    kept.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        host: parts
            .headers
            .get(http::header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        body_len: body.len(),
    });
    // A slow answer: the client's half-close arrives while ouli waits.
    if parts.uri.path().ends_with("-slow") {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let body = if parts.uri.path() == "/c/deep-response" {
        Bytes::from(deep_json(1_000_000))
    } else {
        // The path only: what the upstream says is not ouli's to redact,
        // and the query may hold the secret.
        Bytes::from(
            serde_json::json!({ "upstream": "catalog", "path": parts.uri.path() }).to_string(),
        )
    };
    http::Response::builder()
        .header("content-type", "application/json")
        .header(UPSTREAM_MARK, "1")
        .body(Full::new(body))
        .unwrap()
}

/// `levels` levels of `[` and `{"a":` (alternating) around
/// `{"password":"<DEEP_PASSWORD>"}`.
pub fn deep_json(levels: usize) -> Vec<u8> {
    let inner = format!(r#"{{"password":"{DEEP_PASSWORD}"}}"#);
    let mut out = Vec::with_capacity(levels * 4 + inner.len());
    for level in 0..levels {
        out.extend_from_slice(if level % 2 == 0 { b"[" } else { br#"{"a":"# });
    }
    out.extend_from_slice(inner.as_bytes());
    for level in (0..levels).rev() {
        out.push(if level % 2 == 0 { b']' } else { b'}' });
    }
    out
}

/// What a raw client does on its connection, in order.
#[derive(Clone, Debug)]
pub enum Step {
    Write(Vec<u8>),
    Pause(Duration),
    /// Half-close: no more bytes from the client, its side still reads.
    ShutdownWrite,
}

/// One answer as read off the wire.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What the connection gave back: answers parsed in order, whether the
/// server closed it (EOF or reset) and every byte read.
#[derive(Debug, Default)]
pub struct Exchange {
    pub answers: Vec<Answer>,
    pub closed: bool,
    pub raw: Vec<u8>,
    pub note: String,
}

/// Connects, runs `steps` on a writer thread (write errors ignored: a server
/// may close early) while reading here; stops after `want` answers (and,
/// with `want_close`, the close after them) or at the safety net.
pub fn exchange(addr: &str, steps: Vec<Step>, want: usize, want_close: bool) -> Exchange {
    let stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(error) => {
            return Exchange {
                note: format!("connect failed: {error}"),
                closed: true,
                ..Exchange::default()
            };
        }
    };
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        for step in steps {
            match step {
                Step::Write(bytes) => {
                    if writer.write_all(&bytes).is_err() {
                        return;
                    }
                }
                Step::Pause(pause) => std::thread::sleep(pause),
                Step::ShutdownWrite => {
                    let _ = writer.shutdown(Shutdown::Write);
                }
            }
        }
    });
    let result = read_answers(&stream, want, want_close, ANSWER_WAIT);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writing.join();
    result
}

/// Reads answers from `stream` until `want` are parsed (then the close, if
/// `want_close`), EOF, or `wait` has passed since the last byte.
pub fn read_answers(stream: &TcpStream, want: usize, want_close: bool, wait: Duration) -> Exchange {
    let mut result = Exchange::default();
    let mut reader = stream;
    let mut offset = 0;
    let mut deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some((answer, used)) = parse_answer(&result.raw[offset..]) {
            offset += used;
            result.answers.push(answer);
        }
        if result.answers.len() >= want && !want_close {
            return result;
        }
        let now = Instant::now();
        if now >= deadline {
            result.note = format!(
                "no more bytes within {wait:?} ({} answer(s), {} unparsed byte(s))",
                result.answers.len(),
                result.raw.len() - offset
            );
            return result;
        }
        stream.set_read_timeout(Some(deadline - now)).unwrap();
        match reader.read(&mut buf) {
            Ok(0) => {
                result.closed = true;
                // A body delimited by the close.
                if offset < result.raw.len()
                    && let Some(answer) = parse_answer_at_eof(&result.raw[offset..])
                {
                    result.answers.push(answer);
                }
                return result;
            }
            Ok(n) => {
                result.raw.extend_from_slice(&buf[..n]);
                deadline = Instant::now() + wait;
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => {
                result.closed = true;
                result.note = format!("read failed: {error}");
                return result;
            }
        }
    }
}

/// An answer's status, headers (names lower-cased) and head length.
type Head = (u16, Vec<(String, Vec<u8>)>, usize);

fn head_of(bytes: &[u8]) -> Option<Head> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &bytes[..end - 4];
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next()?).into_owned();
    let status = status_line.split(' ').nth(1)?.trim().parse().ok()?;
    let headers = lines
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line[colon + 1..].trim_ascii().to_vec();
            Some((name, value))
        })
        .collect();
    Some((status, headers, end))
}

/// One complete answer at the start of `bytes` and its length, if all of it
/// is there (Content-Length or chunked; 1xx and 204/304 have no body).
fn parse_answer(bytes: &[u8]) -> Option<(Answer, usize)> {
    let (status, headers, end) = head_of(bytes)?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let rest = &bytes[end..];
    if status < 200 || status == 204 || status == 304 {
        return Some((
            Answer {
                status,
                headers,
                body: Vec::new(),
            },
            end,
        ));
    }
    if find("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        let (body, used) = dechunk(rest)?;
        return Some((
            Answer {
                status,
                headers,
                body,
            },
            end + used,
        ));
    }
    let length: usize = find("content-length")?.trim().parse().ok()?;
    let body = rest.get(..length)?.to_vec();
    Some((
        Answer {
            status,
            headers,
            body,
        },
        end + length,
    ))
}

/// An answer without a length, its body ended by the close.
fn parse_answer_at_eof(bytes: &[u8]) -> Option<Answer> {
    let (status, headers, end) = head_of(bytes)?;
    Some(Answer {
        status,
        headers,
        body: bytes[end..].to_vec(),
    })
}

fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[at..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // No trailers from a server we read.
            bytes.get(at..at + 2)?;
            return Some((body, at + 2));
        }
        body.extend_from_slice(bytes.get(at..at + size)?);
        at += size + 2;
        bytes.get(..at)?;
    }
}

/// Every file and folder under `root` (relative), with its size, `skip`
/// subtrees left out.
pub fn snapshot(root: &Path, skip: &[PathBuf]) -> std::collections::BTreeMap<PathBuf, u64> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if skip.contains(&path) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            if meta.is_dir() {
                found.insert(relative, 0);
                stack.push(path);
            } else {
                found.insert(relative, meta.len());
            }
        }
    }
    found
}

/// Every forbidden value found in `haystack`, by its label.
pub fn find_forbidden(haystack: &[u8]) -> Vec<&'static str> {
    forbidden()
        .into_iter()
        .filter(|(_, needle)| memchr::memmem::find(haystack, needle).is_some())
        .map(|(label, _)| label)
        .collect()
}

/// Every file under `root` that holds a forbidden value: `(file, label)`.
pub fn files_with_forbidden(root: &Path) -> Vec<(PathBuf, &'static str)> {
    snapshot(root, &[])
        .into_keys()
        .flat_map(|relative| {
            let bytes = std::fs::read(root.join(&relative)).unwrap_or_default();
            find_forbidden(&bytes)
                .into_iter()
                .map(move |label| (relative.clone(), label))
        })
        .collect()
}
