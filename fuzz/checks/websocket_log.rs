//! `websocket_log`: a test-server `.websocket.log` parsed. Nothing panics; an
//! error names an entry and an offset inside the log; the frames parsed,
//! written back in the log's own format, parse to the same frames.

use ouli::interaction::WsDirection;
use ouli::testserver::websocket;

pub fn check(data: &[u8]) {
    match websocket::parse(data) {
        Ok(frames) => {
            let payload: usize = frames.iter().map(|f| f.payload.len() + 1).sum();
            assert!(payload <= data.len(), "frames hold more than the log");
            let mut log = Vec::new();
            for frame in &frames {
                log.push(match frame.direction {
                    WsDirection::ClientToServer => b'>',
                    WsDirection::ServerToClient => b'<',
                });
                log.extend_from_slice(format!("{} ", frame.payload.len() + 1).as_bytes());
                log.extend_from_slice(&frame.payload);
                log.push(b'\n');
            }
            let again = websocket::parse(&log).expect("a written log parses");
            assert_eq!(again, frames, "written back, the log reads otherwise");
        }
        Err(error) => {
            assert!(
                error.offset < data.len(),
                "error offset past the log: {error}"
            );
            assert!(!error.to_string().is_empty());
        }
    }
}
