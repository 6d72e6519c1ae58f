//! Helpers shared by the integration tests and benches that run real peers on loopback
//! (included with `mod support;`, or `#[path]` from benches/).

// Each test crate uses some of these.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Child;

pub mod apiserver;
pub mod delivery;
pub mod harness;
pub mod json;
pub mod kubelet;
pub mod peers;
pub mod receiver;
pub mod tls;

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

/// A cadvisor-shaped body in `format`: OpenMetrics gets seconds timestamps, an exemplar on
/// every tenth series and the closing `# EOF`.
pub fn cadvisor_body(format: promlet::parse::Format, series: usize) -> Vec<u8> {
    let mut body = String::from(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n\
         # TYPE container_cpu_usage_seconds_total counter\n",
    );
    let om = format == promlet::parse::Format::OpenMetrics;
    for i in 0..series {
        let ts = if om {
            format!("1700000000.{:03}", i % 1000)
        } else {
            format!("1700000000{:03}", i % 1000)
        };
        let exemplar = if om && i % 10 == 0 {
            " # {trace_id=\"4bf92f3577b34da6\"} 0.5 1700000000.5"
        } else {
            ""
        };
        body.push_str(&format!(
            "container_cpu_usage_seconds_total{{container=\"app-{i}\",cpu=\"total\",id=\"/kubepods/burstable/pod{i}/c{i}\",image=\"registry.example/app:1.{i}\",name=\"k8s_app_{i}\",namespace=\"ns-{}\",pod=\"app-{i}-7d4b9c\"}} {}.25 {ts}{exemplar}\n",
            i % 20,
            i * 3,
        ));
    }
    if om {
        body.push_str("# EOF\n");
    }
    body.into_bytes()
}
