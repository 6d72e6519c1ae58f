//! The delivery oracle of the outage and kill tests: a target whose counter goes up by one on
//! every scrape (so each scrape has its own value, and the count it served is what must
//! arrive), and Debian's Prometheus as a receiver on a fixed port and TSDB, so it can be
//! killed and started again and still hold what it had.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::receiver::{serve, Answer};
use super::{free_port, http, Killed};

/// The last `n` lines of `path`, for a failure message.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

/// A file to append a child's output to (both promlet runs share one log).
pub fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

/// The scrape target: every GET answers `promlet_delivery_counter N` with N = 1, 2, 3, … ;
/// `served` is how many it answered.
pub fn start_target() -> (u16, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&served);
    let port = serve(move |request| {
        if !request.line.starts_with("GET ") {
            return Answer::status("405 Method Not Allowed");
        }
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(format!("promlet_delivery_counter {n}\n").as_bytes())
    });
    (port, served)
}

/// Debian's Prometheus as the remote-write receiver, on a fixed port and tsdb so a restart
/// finds what it had.
pub struct Prometheus {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    process: Option<Killed>,
}

impl Prometheus {
    pub fn new(dir: &Path) -> Prometheus {
        std::fs::write(dir.join("prometheus.yml"), "global: {}\n").expect("config");
        Prometheus {
            port: free_port(),
            dir: dir.to_path_buf(),
            process: None,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("prometheus.log")
    }

    /// Starts it and waits (at most 60 s) until `/-/ready` answers 200.
    pub fn start(&mut self) {
        let log = log_file(&self.log());
        let child = Command::new("prometheus")
            .arg("--web.enable-remote-write-receiver")
            .arg(format!("--config.file={}", self.dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus not runnable ({e}): ./test.sh installs Debian's prometheus; this test never skips")
            });
        self.process = Some(Killed(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(self.port, "GET /-/ready HTTP/1.0", b"").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus on {} did not get ready in 60 s\n{}",
                self.port,
                tail(&self.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, and reaped: from here on its port refuses connections.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }

    /// The raw samples of `selector` over the last hour (a soak of hundreds of lives runs
    /// longer than ten minutes), as of now: one entry per series, each its (timestamp ms,
    /// value text) points in Prometheus' (time) order.
    pub fn range(&self, selector: &str) -> Vec<Vec<(i64, String)>> {
        let q: String = format!("{selector}[1h]")
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        // A second past now: the last scrape is inside the range whatever the clock rounding.
        let at_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            + 1;
        let (status, body) = http(
            self.port,
            &format!("GET /api/v1/query?query={q}&time={at_s} HTTP/1.0"),
            b"",
        )
        .expect("the query API answers");
        let body = String::from_utf8(body).expect("utf-8");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"resultType\":\"matrix\""), "{body}");
        matrix(&body)
    }
}

/// The series of a matrix result, each its `[ts, "value"]` points. Prometheus writes a
/// timestamp as seconds with up to three decimals, trailing zeros left out.
pub fn matrix(json: &str) -> Vec<Vec<(i64, String)>> {
    json.split("\"values\":[[")
        .skip(1)
        .map(|part| {
            let points = part.split_once("]]").map_or(part, |(p, _)| p);
            points
                .split("],[")
                .map(|point| {
                    let (ts, value) = point.split_once(',').expect("[ts,\"value\"]");
                    let (s, frac) = ts.split_once('.').unwrap_or((ts, ""));
                    let ms = format!("{frac:0<3}");
                    let ts_ms = s.parse::<i64>().expect("seconds") * 1000
                        + ms.parse::<i64>().expect("milliseconds");
                    (ts_ms, value.trim_matches('"').to_owned())
                })
                .collect()
        })
        .collect()
}

/// The counter values Prometheus holds, in its order: (timestamp ms, value).
pub fn delivered(prometheus: &Prometheus) -> Vec<(i64, u64)> {
    let series = prometheus.range("promlet_delivery_counter");
    assert!(series.len() <= 1, "one series wanted: {series:?}");
    series
        .into_iter()
        .flatten()
        .map(|(ts, v)| (ts, v.parse().unwrap_or_else(|_| panic!("a count: {v}"))))
        .collect()
}

/// Values of `1..=served` not in `got`.
pub fn missing(got: &[(i64, u64)], served: u64) -> Vec<u64> {
    let have: BTreeSet<u64> = got.iter().map(|&(_, v)| v).collect();
    (1..=served).filter(|v| !have.contains(v)).collect()
}

/// Each of `got` once, in order, and served: Prometheus returns a series' points by time, so
/// the values must climb with it, and stay within `1..=served`. `fail` says more on failure.
pub fn assert_once_in_order(got: &[(i64, u64)], served: u64, fail: &dyn Fn() -> String) {
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "out of order or duplicated: {}",
        fail()
    );
    assert!(
        got.iter().all(|&(_, v)| (1..=served).contains(&v)),
        "values the target never served: {}",
        fail()
    );
}

/// Waits (at most `limit`) until Prometheus holds every value of `1..=served` but those
/// `excused` takes; `context` is printed on failure.
pub fn wait_delivered(
    prometheus: &Prometheus,
    served: u64,
    limit: Duration,
    excused: &dyn Fn(u64) -> bool,
    context: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let lost = missing(&delivered(prometheus), served);
        if lost.iter().all(|&v| excused(v)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{limit:?} on, {} of the {served} values served are missing: {:?}\n{}\n{}",
            lost.len(),
            &lost[..lost.len().min(40)],
            context(),
            tail(&prometheus.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A promlet config that scrapes the counter target on `target_port` every second as job
/// `job` and writes to `prometheus` with the `queue_config` flow mapping `queue`.
pub fn counter_config(job: &str, target_port: u16, prometheus: &Prometheus, queue: &str) -> String {
    format!(
        "scrape_configs:\n  - job_name: {job}\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\nremote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n    queue_config: {queue}\n",
        prometheus.port
    )
}
