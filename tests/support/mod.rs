//! Helpers shared by the integration tests and benches that run real peers on loopback
//! (included with `mod support;`, or `#[path]` from benches/).

// Each test crate uses some of these.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Child;

pub mod json;
pub mod peers;
pub mod receiver;

/// A child process we started, killed and reaped when dropped (never by name).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One HTTP/1.0 exchange with 127.0.0.1:`port`: `head` is the request line and headers
/// (without the blank line); a `Content-Length` is added for `body`. Returns the status code
/// and the response body, or `None` if nothing answers.
pub fn http(port: u16, head: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok()?;
    write!(
        s,
        "{head}\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(all.get(9..12)?).ok()?.parse().ok()?;
    Some((status, all[split + 4..].to_vec()))
}
