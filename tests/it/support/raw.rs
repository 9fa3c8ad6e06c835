//! HTTP/1.1 over a bare socket: what a client library would refuse to send,
//! and answers read byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Safety net on every read: far longer than any limit the tests set.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection to `addr` whose reads give up after `timeout`.
pub fn connect(addr: &str, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream
}

/// One HTTP/1.1 answer read off a socket.
#[derive(Debug)]
pub struct Answer {
    /// 0 when nothing came.
    pub status: u16,
    /// The head as it came (status line, headers, blank line).
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn from_head(head: String, body: Vec<u8>) -> Answer {
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_owned(), value.trim().to_owned()))
            })
            .collect();
        Answer {
            status,
            head,
            headers,
            body,
        }
    }

    /// The first header of that name, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// A JSON error of `kind` with that `x-ouli-error`.
    pub fn assert_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("x-ouli-error"), Some(kind), "{self:?}");
        assert_eq!(self.json()["error"], kind, "{self:?}");
    }

    /// ouli's own error answer of `kind` with `status`: `error`, `fault`
    /// and a `message`.
    pub fn assert_ouli_error(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("x-ouli-error"), Some(kind), "{self:?}");
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert_eq!(json["error"], kind, "{json}");
        assert!(json["fault"].is_string(), "{json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
}

/// Reads one answer on a kept-alive connection: its head, then a chunked
/// body (chunks joined, trailers skipped) or `content-length` bytes (none
/// without one).
pub fn read_answer(reader: &mut BufReader<TcpStream>) -> Answer {
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(
        head.split_whitespace().nth(1).is_some(),
        "no status line: {head:?}"
    );
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut answer = Answer::from_head(head, Vec::new());
    let chunked = answer
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    answer.body = if chunked {
        read_chunked(reader)
    } else {
        let length: usize = answer
            .header("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        body
    };
    answer
}

/// A chunked body, its chunks joined (trailers are skipped).
pub fn read_chunked(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim_end().split(';').next().unwrap(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size:?}: {e}"));
        if size == 0 {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            return body;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..size]);
    }
}

/// Reads one answer as it comes: its head, then `content-length` bytes or
/// everything up to the end of the stream (a chunked body stays framed).
/// An empty answer (closed, or reset, at once) is status 0.
pub fn read_to_close(stream: &mut impl Read) -> Answer {
    let mut received = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => break received.len(),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break received.len(),
            Err(e) => panic!(
                "no answer: {e} (got {:?})",
                String::from_utf8_lossy(&received)
            ),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut answer = Answer::from_head(head, received[head_end..].to_vec());
    let length = answer.header("content-length").and_then(|v| v.parse().ok());
    loop {
        if length.is_some_and(|length| answer.body.len() >= length) {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.body.extend_from_slice(&chunk[..n]),
        }
    }
    answer
}

/// Sends `bytes` on a new connection (then shuts the sending side if
/// `half_close`) and reads one answer with [`read_to_close`].
pub fn exchange(addr: &str, bytes: &[u8], half_close: bool) -> Answer {
    let mut stream = connect(addr, READ_TIMEOUT);
    // The server may answer (and close) before taking all of an oversized
    // request: a failed write is not the test's failure, the answer is.
    let _ = stream.write_all(bytes);
    if half_close {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    read_to_close(&mut stream)
}

/// Whether the server closes the connection (end of stream or reset)
/// rather than sending more.
pub fn is_closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// One request on its own connection (`Connection: close`, a
/// `Content-Length`), the target sent byte for byte: the status and the
/// whole answer (head and body) as it came.
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = connect(addr, Duration::from_secs(30));
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}
