//! The command-line contract: dotted and dashed flags, exit codes, `check config`, the
//! built-in config, and a running agent that reloads on SIGHUP and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

const PROMLET: &str = env!("CARGO_BIN_EXE_promlet");

fn promlet(args: &[&str]) -> Output {
    Command::new(PROMLET)
        .args(args)
        .output()
        .expect("runs promlet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "promlet-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, content).expect("write");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const VALID: &str = "scrape_configs:\n  - job_name: node\n    static_configs: [{targets: ['127.0.0.1:9100']}]\nremote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n";
const INVALID: &str = "scrape_configs:\n  - job_name: node\n    scrape_interval: 15\nremote_write:\n  - url: http://127.0.0.1:9090/api/v1/write\n";

#[test]
fn version_prints_the_crate_version() {
    let out = promlet(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("promlet {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_shows_prometheus_flag_names() {
    let out = promlet(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--config.file",
        "--storage.agent.path",
        "--storage.agent.size",
        "--storage.agent.sync-interval",
        "--web.listen-address",
        "--log.level",
        "--version",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_and_values_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["--no-such-flag"], "--no-such-flag"),
        (&["--storage.agent.size=12XB"], "--storage.agent.size"),
        (&["--storage.agent.size", "10"], "below the minimum"),
        (&["--log.level=loud"], "--log.level"),
        (&["--web.listen-address=:http"], "--web.listen-address"),
        (&["--storage.agent.sync-interval=5"], "not a valid duration"),
    ];
    for (args, needle) in cases {
        let out = promlet(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn check_config_exit_codes_and_one_line_per_file() {
    let dir = TempDir::new();
    let good = dir.file("good.yml", VALID);
    let bad = dir.file("bad.yml", INVALID);
    let out = promlet(&["check", "config", &good]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with(&format!("SUCCESS: {good} is valid")));

    let out = promlet(&["check", "config", &good, &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("SUCCESS: "), "{stdout}");
    assert_eq!(
        lines[1],
        format!("FAILED: {bad}:3: scrape_configs[0].scrape_interval: not a valid duration string: \"15\"")
    );

    let missing = dir.0.join("missing.yml").to_string_lossy().into_owned();
    let out = promlet(&["check", "config", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("cannot read config"));

    let out = promlet(&["check", "config"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_refuses_an_endless_file_at_the_size_cap() {
    // Under a 256 MiB address-space cap: reading /dev/zero to its end would need gigabytes,
    // so only a read that stops at the 4 MiB cap gets to print the reason.
    let out = Command::new("prlimit")
        .arg("--as=268435456")
        .arg(env!("CARGO_BIN_EXE_promlet"))
        .args(["check", "config", "/dev/zero"])
        .output()
        .expect("prlimit runs promlet");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "FAILED: /dev/zero: larger than 4194304 bytes\n"
    );
}

#[test]
fn the_default_config_prints_and_checks_valid() {
    let out = promlet(&["--print-default-config"]);
    assert!(out.status.success());
    let dir = TempDir::new();
    let file = dir.file("default.yml", &text(&out.stdout));
    let out = promlet(&["check", "config", &file]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("2 scrape configs, 1 remote_write"));
}

#[test]
fn a_bad_config_is_refused_at_start_with_file_line_and_key() {
    let dir = TempDir::new();
    let bad = dir.file("bad.yml", INVALID);
    let out = promlet(&["--config.file", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{bad}:3: scrape_configs[0].scrape_interval")),
        "{err}"
    );
}

/// A running promlet, killed by pid if a test ends early.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(PROMLET)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn promlet");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines }
    }

    /// Waits (at most 10 s) for a log line containing `needle`; returns it.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?} within 10 s: {e}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("promlet did not exit within 10 s");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_agent_runs_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = TempDir::new();
    let config = dir.file("prometheus.yml", VALID);
    let mut agent = Agent::start(&[
        "--config.file",
        &config,
        "--storage.agent.path",
        &dir.0.join("data").to_string_lossy(),
        // A reload logs one line at info; the jobs it runs, at debug.
        "--log.level=debug",
        "--web.listen-address=127.0.0.1:0",
    ]);
    agent.wait_for("listening on");

    std::fs::write(&config, INVALID).expect("write");
    agent.signal("HUP");
    let refused = agent.wait_for("reload refused");
    assert!(
        refused.contains("prometheus.yml:3: scrape_configs[0].scrape_interval"),
        "{refused}"
    );

    std::fs::write(&config, VALID.replace("node", "node2")).expect("write");
    agent.signal("HUP");
    agent.wait_for("config reloaded");
    agent.wait_for("job \"node2\"");

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(), Some(0));
}

#[test]
fn the_agent_starts_on_the_builtin_config_with_dashed_flags() {
    let dir = TempDir::new();
    let mut agent = Agent::start(&[
        "--storage-agent-path",
        &dir.0.join("data").to_string_lossy(),
        "--web-listen-address",
        "127.0.0.1:0",
    ]);
    let line = agent.wait_for("config <built-in>");
    assert!(
        line.contains("2 scrape configs, 1 remote_write endpoints"),
        "{line}"
    );
    agent.wait_for("listening on");
    agent.signal("INT");
    assert_eq!(agent.wait_exit(), Some(0));
}

#[test]
fn a_second_agent_on_the_same_storage_is_refused_naming_the_first() {
    let dir = TempDir::new();
    let data = dir.0.join("data").to_string_lossy().into_owned();
    let args = [
        "--storage.agent.path",
        data.as_str(),
        "--storage.agent.size=1MiB",
        "--web.listen-address=127.0.0.1:0",
    ];
    let mut first = Agent::start(&args);
    first.wait_for("listening on");
    let ring = std::fs::metadata(dir.0.join("data/ring")).expect("ring file");
    assert_eq!(
        ring.len(),
        1 << 20,
        "the ring is exactly --storage.agent.size"
    );

    let second = promlet(&args);
    assert_eq!(second.status.code(), Some(1));
    let err = text(&second.stderr);
    assert!(
        err.contains("in use by another promlet")
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );

    // The first one still runs; once it stops, the directory is free again.
    first.signal("TERM");
    assert_eq!(first.wait_exit(), Some(0));
    let mut again = Agent::start(&args);
    again.wait_for("listening on");
    again.signal("TERM");
    assert_eq!(again.wait_exit(), Some(0));

    // Another size on the same ring is refused with both sizes named.
    let other = promlet(&[
        "--storage.agent.path",
        data.as_str(),
        "--storage.agent.size=2MiB",
    ]);
    assert_eq!(other.status.code(), Some(1));
    let err = text(&other.stderr);
    assert!(
        err.contains("is 1048576 bytes") && err.contains("2097152"),
        "{err}"
    );
}

#[test]
fn wal_inspect_prints_what_a_ring_holds_and_exit_1_without_one() {
    use promlet::wal::{Chain, Ring, MIN_SIZE};

    let dir = TempDir::new();
    let data = dir.0.join("data");
    {
        let mut ring = Ring::open(&data, MIN_SIZE).expect("open");
        let mut chain = Chain::default();
        let values: [&[u8]; 3] = [b"0", b"1", b"2"];
        let series: Vec<[(&[u8], &[u8]); 2]> = values
            .iter()
            .map(|&v| {
                [
                    (b"__name__".as_slice(), b"up".as_slice()),
                    (b"i".as_slice(), v),
                ]
            })
            .collect();
        ring.append_series_set(&mut chain, 1, series.iter().map(|s| s.iter().copied()))
            .expect("set");
        // 2023-11-14T22:13:20Z, then every 15 s.
        for k in 0..10 {
            ring.append_samples(&mut chain, 1_700_000_000_000 + k * 15_000, &[1.0, 0.0, 1.0])
                .expect("samples");
        }
        ring.sync().expect("sync");
    }
    let data = data.to_string_lossy().into_owned();
    let out = promlet(&["wal", "inspect", &data]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "header A: valid, generation 1, head 0,",
        "header B: valid, generation 2,",
        "in use: header B (generation 2)",
        "records: 11 (series-set 1, samples 10, other 0, malformed 0)",
        "series: 1 target, 3 series in their newest series-sets",
        "samples: 30, oldest 2023-11-14T22:13:20.000Z, newest 2023-11-14T22:15:35.000Z",
        "bytes per sample: ",
        "damage: 0 damaged skips, 0 bytes lost",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "{line:?} in:\n{stdout}"
        );
    }

    let missing = dir.0.join("missing").to_string_lossy().into_owned();
    let out = promlet(&["wal", "inspect", &missing]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("promlet: open {missing}/ring: ")) && err.ends_with('\n'),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = promlet(&["wal", "inspect"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_ring_of_the_first_format_version_is_refused_by_name_not_overwritten() {
    // tests/fixtures/wal/v1.ring: a 64 KiB ring written by format version 1 (series-sets not
    // yet compressed): one series-set and five scrapes, synced.
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wal/v1.ring");
    let old = std::fs::read(fixture).expect("fixture");
    let dir = TempDir::new();
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("ring"), &old).expect("copy");
    let data = data.to_string_lossy().into_owned();
    // Bounded: were the ring taken, the agent would run until signalled.
    let mut child = Command::new(PROMLET)
        .args(["--storage.agent.path", &data, "--storage.agent.size=64KiB"])
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs promlet");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("promlet took the version 1 ring and ran");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is a ring of format version 1, and this promlet reads version 2"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.0.join("data/ring")).expect("ring"),
        old,
        "left as it was"
    );
    let out = promlet(&["wal", "inspect", &data]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("format version 1"),
        "{}",
        text(&out.stderr)
    );
}
