//! Helpers shared by the integration tests and benches that run real peers on loopback
//! (included with `mod support;`, or `#[path]` from benches/).

use std::net::TcpListener;
use std::process::Child;

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
