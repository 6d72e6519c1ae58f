//! The real peers the integration tests run on 127.0.0.1 — Debian's Prometheus (as a
//! remote-write receiver), VictoriaMetrics, node_exporter — and promlet itself as a process:
//! started on free ports, waited for, queried, and killed by pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::json::Json;
use super::{free_port, http, Killed};

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named for the test.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("promlet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until GET `path` on `port` answers 200 (60 s at most).
pub fn wait_ready(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some((200, _)) = http(port, &format!("GET {path} HTTP/1.0"), b"") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("127.0.0.1:{port}{path} never answered 200");
}

/// Query-string escaping for `q`.
pub fn escape(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A peer process we started.
pub struct Peer {
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    /// The process, killed when dropped.
    pub process: Killed,
}

impl Peer {
    fn spawn(program: &str, args: &[String], port: u16, ready: &str) -> Peer {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} not runnable ({e}): ./test.sh installs it; this test never skips")
            });
        let process = Killed(child);
        wait_ready(port, ready);
        Peer { port, process }
    }

    /// GET `path_and_query` as JSON (panics unless 200).
    pub fn get_json(&self, path_and_query: &str) -> Json {
        let (status, body) = http(self.port, &format!("GET {path_and_query} HTTP/1.0"), b"")
            .expect("the query API answers");
        let text = String::from_utf8(body).expect("utf-8");
        assert_eq!(status, 200, "{path_and_query}: {text}");
        Json::parse(&text)
    }

    /// An instant query at `at_s` (seconds): its `data.result`.
    pub fn query(&self, q: &str, at_s: f64) -> Vec<Json> {
        let j = self.get_json(&format!("/api/v1/query?query={}&time={at_s}", escape(q)));
        j.get("data").get("result").items().to_vec()
    }
}

/// Debian's Prometheus 2.42 as a remote-write receiver, its TSDB in `dir`.
pub fn prometheus_receiver(dir: &Path) -> Peer {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global: {}\n").expect("config");
    let port = free_port();
    let args = [
        "--web.enable-remote-write-receiver".to_owned(),
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=warn".to_owned(),
    ];
    Peer::spawn("prometheus", &args, port, "/-/ready")
}

/// Debian's VictoriaMetrics, its data in `dir`, with no query cache or latency offset (the
/// tests read back what was just written).
pub fn victoria_metrics(dir: &Path) -> Peer {
    let port = free_port();
    let args = [
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-storageDataPath={}", dir.join("vm").display()),
        "-search.latencyOffset=0s".to_owned(),
        "-search.disableCache".to_owned(),
        "-loggerLevel=ERROR".to_owned(),
    ];
    Peer::spawn("victoria-metrics", &args, port, "/health")
}

/// Debian's node_exporter on a free port.
pub fn node_exporter() -> Peer {
    let port = free_port();
    let args = [format!("--web.listen-address=127.0.0.1:{port}")];
    Peer::spawn("prometheus-node-exporter", &args, port, "/metrics")
}

/// promlet itself as a process, stderr kept in a log file.
pub struct Promlet {
    /// Its web port.
    pub port: u16,
    /// The process.
    pub process: Killed,
    /// Its log file.
    pub log: PathBuf,
    /// The pid signals go to: the process's own, or the child a runner that does not exec
    /// (strace) started; see [`Promlet::signal_the_runners_child`].
    pid: u32,
}

impl Promlet {
    /// Starts promlet from the test build on `config` (YAML text, written to
    /// `dir/promlet.yml`), its ring in `dir/data`, with `extra` flags, stderr kept in
    /// `dir/promlet.log`; waits for `/-/ready`.
    pub fn start(dir: &Path, config: &str, extra: &[&str]) -> Promlet {
        let file = dir.join("promlet.yml");
        std::fs::write(&file, config).expect("config");
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_promlet"));
        command
            .arg("--config.file")
            .arg(&file)
            .arg("--storage.agent.path")
            .arg(dir.join("data"))
            .args(["--storage.agent.size", "4MiB"])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra);
        Promlet::spawn(command, port, dir.join("promlet.log"))
    }

    /// Spawns `command`, a whole promlet command line (any binary, behind any runner) that
    /// serves on 127.0.0.1:`port`, its stderr appended to `log`; waits for `/-/ready`.
    pub fn spawn(mut command: Command, port: u16, log: PathBuf) -> Promlet {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} not runnable: {e}"));
        let pid = child.id();
        let p = Promlet {
            port,
            process: Killed(child),
            log,
            pid,
        };
        wait_ready(port, "/-/ready");
        p
    }

    /// Sends signals to the one child of the process from now on: a runner such as strace
    /// forks promlet rather than becoming it, and a signal to the runner would not reach it.
    pub fn signal_the_runners_child(&mut self) {
        let runner = self.process.0.id();
        let children = std::fs::read_to_string(format!("/proc/{runner}/task/{runner}/children"))
            .expect("the runner's children");
        let pids: Vec<u32> = children
            .split_whitespace()
            .map(|p| p.parse().expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 1, "the runner {runner} has children {pids:?}");
        self.pid = pids[0];
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The names of its threads, sorted.
    pub fn threads(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .expect("task dir")
            .map(|t| {
                let path = t.expect("task").path().join("comm");
                std::fs::read_to_string(path)
                    .expect("comm")
                    .trim()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` (`TERM`, `HUP`) to it, by pid.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// SIGTERM, then waits (30 s at most) for it to exit; returns its exit code.
    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.0.try_wait().expect("wait") {
                // Exited: nothing is left for `Drop` to kill by that pid.
                self.pid = self.process.0.id();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "promlet did not stop: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One sample of its `/metrics` page: the value of the line that starts with `series`
    /// (name and labels as written), if any.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = http(self.port, "GET /metrics HTTP/1.0", b"")?;
        let text = String::from_utf8(body).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (up to `limit`) until `done` holds, polling every 200 ms; panics with the log.
    pub fn wait_for(&self, limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; promlet's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Promlet {
    /// A runner's child is killed too: a tracer killed by `Killed` leaves its tracee running.
    fn drop(&mut self) {
        if self.pid != self.process.0.id() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}
