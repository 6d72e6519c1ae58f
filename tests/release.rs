//! The shipped binaries end to end, each run the way it ships: Debian's node_exporter scraped by
//! promlet, remote-written to Debian's Prometheus 2.42, all on 127.0.0.1; then a reload on
//! SIGHUP and a clean stop on SIGTERM. `./test.sh` runs this for the release binaries under
//! qemu-user and chrooted in the FROM-scratch image's root; it also traces a run and holds the
//! systemd unit's `SystemCallFilter=` and `RestrictAddressFamilies=` to what promlet really calls.
//!
//! What to run comes from the environment (`./test.sh` sets it):
//! - `PROMLET_E2E_BIN`: the binary, as the runner names it;
//! - `PROMLET_E2E_RUNNER`: the words run before it, split at spaces (`qemu-aarch64-static`,
//!   `chroot --userspec=65532:65532 ROOT /qemu-aarch64-static`);
//! - `PROMLET_E2E_ROOT`, `PROMLET_E2E_STORAGE`: when the runner chroots, its root on this machine
//!   and the ring's directory inside it (the image's volume); the config goes into `ROOT/e2e/`.
//!
//! Without them plain `cargo test` runs this build's own binary directly: the same checks, of the
//! build at hand and nothing else. Each test prints what it ran; a binary or runner that is
//! missing fails the test, it never skips.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::free_port;
use support::peers::{node_exporter, prometheus_receiver, Peer, Promlet, TempDir};

/// The ring's size in these runs: small, so a chroot's volume holds it anywhere.
const RING_BYTES: u64 = 4 << 20;

/// How the binary under test is run.
struct Launch {
    /// The binary, as the runner names it (a path inside the root when it chroots).
    bin: String,
    /// The words run before it.
    runner: Vec<String>,
    /// When the runner chroots: the root on this machine, and the ring's directory inside it.
    root: Option<(PathBuf, String)>,
}

impl Launch {
    /// From `PROMLET_E2E_*`, or this build's binary run directly.
    fn from_env() -> Launch {
        let bin = std::env::var("PROMLET_E2E_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_promlet").to_owned());
        let runner = std::env::var("PROMLET_E2E_RUNNER")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let root = std::env::var_os("PROMLET_E2E_ROOT").map(|root| {
            let storage = std::env::var("PROMLET_E2E_STORAGE")
                .expect("PROMLET_E2E_STORAGE: the ring's directory inside PROMLET_E2E_ROOT");
            (PathBuf::from(root), storage)
        });
        let launch = Launch { bin, runner, root };
        // A missing binary fails here, by name, rather than as the runner's own error.
        let on_host = launch.on_host(&launch.bin);
        assert!(on_host.is_file(), "{} does not exist", on_host.display());
        launch
    }

    /// Where `path`, as promlet sees it, is on this machine.
    fn on_host(&self, path: &str) -> PathBuf {
        match &self.root {
            Some((root, _)) => root.join(path.trim_start_matches('/')),
            None => PathBuf::from(path),
        }
    }

    /// The runner's file name when it is qemu-user (`qemu-arm-static`).
    fn qemu(&self) -> Option<&str> {
        let first = Path::new(self.runner.first()?).file_name()?.to_str()?;
        first.starts_with("qemu-").then_some(first)
    }

    /// The command line, for the report.
    fn describe(&self) -> String {
        let mut words = self.runner.clone();
        words.push(self.bin.clone());
        words.join(" ")
    }
}

/// How a run is traced, for the syscall check.
enum Trace {
    /// Not traced.
    Off,
    /// strace(1) follows every thread of a host binary into this file.
    Strace(PathBuf),
    /// qemu-user's `-strace` prints the guest's syscalls on stderr, into promlet's log.
    Qemu,
}

/// What a run showed.
struct Run {
    /// promlet's stderr (with qemu's trace, if any).
    log: String,
    /// Series of the node job at the receiver when they were all there.
    series: f64,
    /// From promlet's start to that moment.
    delivered_after: Duration,
    /// The ring file's size and owner after the stop.
    ring_bytes: u64,
    ring_uid: u32,
}

/// Now, in seconds since the epoch.
fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The value of an instant query that returns one series, if it does.
fn scalar(receiver: &Peer, q: &str) -> Option<f64> {
    let result = receiver.query(q, now_s());
    let [one] = result.as_slice() else {
        return None;
    };
    one.get("value").items().get(1)?.str().parse().ok()
}

/// node_exporter → promlet (as `launch` runs it) → Prometheus; SIGHUP; SIGTERM. The peers'
/// files go in a temp dir named for `test`.
fn end_to_end(test: &str, launch: &Launch, trace: &Trace) -> Run {
    let dir = TempDir::new(test);
    let prometheus = prometheus_receiver(&dir.0);
    let node = node_exporter();
    let port = free_port();

    // Inside a chroot the config must be inside the root, in a directory of its own that
    // is removed after the run.
    let (config, storage) = match &launch.root {
        Some((_, storage)) => ("/e2e/promlet.yml".to_owned(), storage.clone()),
        None => (
            dir.join("promlet.yml").display().to_string(),
            dir.join("data").display().to_string(),
        ),
    };
    let _config_dir = launch.root.as_ref().map(|(root, _)| {
        let d = TempDir(root.join("e2e"));
        std::fs::create_dir_all(&d.0).expect("config dir in the root");
        d
    });
    std::fs::write(
        launch.on_host(&config),
        format!(
            "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\n  external_labels:\n    node: edge-test\n\
             scrape_configs:\n\
             \x20 - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{}']}}]\n\
             \x20 - job_name: promlet\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
             remote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n",
            node.port, prometheus.port
        ),
    )
    .expect("config");

    let mut words = launch.runner.clone();
    match trace {
        Trace::Off => {}
        Trace::Strace(file) => {
            assert!(
                words.is_empty(),
                "strace traces a host binary, not a runner"
            );
            words = ["strace", "-f", "-qq", "-o"].map(str::to_owned).to_vec();
            words.push(file.display().to_string());
        }
        Trace::Qemu => {
            assert!(
                launch.qemu().is_some(),
                "-strace is a qemu-user flag: runner {:?}",
                launch.runner
            );
            words.insert(1, "-strace".to_owned());
        }
    }
    words.push(launch.bin.clone());
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]).args([
        format!("--config.file={config}"),
        format!("--storage.agent.path={storage}"),
        format!("--storage.agent.size={RING_BYTES}"),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--log.level=info".to_owned(),
    ]);
    let started = Instant::now();
    let mut promlet = Promlet::spawn(command, port, dir.join("promlet.log"));
    if let Trace::Strace(_) = trace {
        promlet.signal_the_runners_child();
    }

    // Everything node_exporter served in a scrape, plus the five report series, with the
    // target's labels and the external label; both targets up.
    let instance = format!("127.0.0.1:{}", node.port);
    let mut series = 0.0;
    promlet.wait_for(
        Duration::from_secs(90),
        "node_exporter's series at Prometheus",
        || {
            let q = format!("count({{job=\"node\",instance=\"{instance}\",node=\"edge-test\"}})");
            let served = scalar(
                &prometheus,
                "max(scrape_samples_post_metric_relabeling{job=\"node\"})",
            );
            let up = |job: &str| scalar(&prometheus, &format!("up{{job=\"{job}\"}}"));
            let arrived = scalar(&prometheus, &q).unwrap_or(0.0);
            series = arrived;
            matches!(served, Some(s) if s > 0.0 && arrived >= s + 5.0)
                && up("node") == Some(1.0)
                && up("promlet") == Some(1.0)
        },
    );
    let delivered_after = started.elapsed();

    promlet.signal("HUP");
    promlet.wait_for(Duration::from_secs(30), "a reload on SIGHUP", || {
        promlet.log().contains("config reloaded")
    });
    let log_file = promlet.log.clone();
    let code = promlet.stop();
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert_eq!(code, 0, "exit code after SIGTERM; log:\n{log}");
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");

    let ring = launch.on_host(&format!("{storage}/ring"));
    let meta = std::fs::metadata(&ring).unwrap_or_else(|e| panic!("{}: {e}", ring.display()));
    Run {
        log,
        series,
        delivered_after,
        ring_bytes: meta.len(),
        ring_uid: meta.uid(),
    }
}

#[test]
fn scrapes_node_exporter_and_remote_writes_to_prometheus() {
    let launch = Launch::from_env();
    let run = end_to_end("release-e2e", &launch, &Trace::Off);
    assert_eq!(run.ring_bytes, RING_BYTES);
    if launch.root.is_some() {
        // The image runs as a non-root user: the ring it wrote is that user's.
        assert_ne!(run.ring_uid, 0, "the ring in the image's volume is root's");
    }
    eprintln!(
        "{}: {} node_exporter series at Prometheus {:.1} s after start; reloaded on SIGHUP; \
         exit 0 on SIGTERM; ring {} bytes, uid {}",
        launch.describe(),
        run.series,
        run.delivered_after.as_secs_f64(),
        run.ring_bytes,
        run.ring_uid
    );
}

/// The syscalls `systemd/promlet.service` lets through: its first `SystemCallFilter=` (an
/// allow list), less every `~` line, groups expanded by `systemd-analyze syscall-filter`
/// (the installed systemd's own tables). And its `RestrictAddressFamilies=`.
fn units_filter() -> (BTreeSet<String>, BTreeSet<String>) {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/promlet.service"),
    )
    .expect("the unit");
    let tables = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze not runnable ({e}): ./test.sh installs it"));
    let tables = String::from_utf8(tables.stdout).expect("utf-8");
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for line in tables.lines() {
        if line.starts_with('@') {
            groups.push((line.trim().to_owned(), Vec::new()));
        } else if let (Some(name), Some((_, members))) =
            (line.strip_prefix("    "), groups.last_mut())
        {
            if !name.starts_with('#') {
                members.push(name.trim().to_owned());
            }
        }
    }
    fn expand(word: &str, groups: &[(String, Vec<String>)], out: &mut BTreeSet<String>) {
        if word.starts_with('@') {
            let (_, members) = groups
                .iter()
                .find(|(g, _)| g == word)
                .unwrap_or_else(|| panic!("systemd knows no group {word}"));
            for m in members {
                expand(m, groups, out);
            }
        } else {
            out.insert(word.to_owned());
        }
    }
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in unit.lines() {
        if let Some(value) = line.strip_prefix("SystemCallFilter=") {
            match value.strip_prefix('~') {
                Some(deny) => deny
                    .split_whitespace()
                    .for_each(|w| expand(w, &groups, &mut denied)),
                None => {
                    assert!(allowed.is_empty(), "one allow list: {line}");
                    value
                        .split_whitespace()
                        .for_each(|w| expand(w, &groups, &mut allowed));
                }
            }
        } else if let Some(value) = line.strip_prefix("RestrictAddressFamilies=") {
            families.extend(value.split_whitespace().map(str::to_owned));
        }
    }
    assert!(
        !allowed.is_empty() && !families.is_empty(),
        "the unit sets SystemCallFilter= and RestrictAddressFamilies="
    );
    (&allowed - &denied, families)
}

/// Syscalls qemu 7.2's `-strace` prints as `Unknown syscall N`, by guest: (qemu, N, name).
const UNNAMED_BY_QEMU: &[(&str, u32, &str)] = &[
    ("qemu-arm-static", 398, "rseq"),
    ("qemu-arm-static", 411, "timerfd_settime64"),
    ("qemu-aarch64-static", 293, "rseq"),
];

/// Syscall names and socket families in a trace: strace's `PID name(args) = ret` lines
/// (`<... name resumed>` halves skipped, their calls were counted when they started), or
/// qemu's, whose lines can also end up after the traced program's own output on one line.
fn traced(trace: &str, qemu: Option<&str>) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut calls = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in trace.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let rest = rest.trim_start();
        if let Some(number) = rest.strip_prefix("Unknown syscall ") {
            let number: u32 = number.trim().parse().expect("a syscall number");
            let name = UNNAMED_BY_QEMU
                .iter()
                .find(|(q, n, _)| Some(*q) == qemu && *n == number)
                .map(|(_, _, name)| *name)
                .unwrap_or_else(|| panic!("{qemu:?} printed syscall {number} without a name"));
            calls.insert(name.to_owned());
            continue;
        }
        let name_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if name_len == 0 || rest.as_bytes().get(name_len) != Some(&b'(') {
            continue;
        }
        let name = &rest[..name_len];
        if name == "socket" {
            let family = rest[name_len + 1..].split([',', ')']).next().unwrap_or("");
            // qemu spells the families PF_, strace and systemd AF_.
            let family = family.trim();
            families.insert(match family.strip_prefix("PF_") {
                Some(f) => format!("AF_{f}"),
                None => family.to_owned(),
            });
        }
        calls.insert(name.to_owned());
    }
    (calls, families)
}

#[test]
fn syscalls_and_socket_families_stay_inside_the_units_sandbox() {
    let launch = Launch::from_env();
    assert!(
        launch.root.is_none(),
        "traced runs are not chrooted: strace and qemu's trace run on this machine"
    );
    let dir = TempDir::new("release-strace");
    let qemu = launch.qemu();
    let (log, trace) = match qemu {
        Some(_) => {
            let run = end_to_end("release-trace", &launch, &Trace::Qemu);
            (run.log.clone(), run.log)
        }
        None => {
            assert!(
                launch.runner.is_empty(),
                "a runner other than qemu-user: {:?}",
                launch.runner
            );
            let file = dir.join("strace.log");
            let run = end_to_end("release-trace", &launch, &Trace::Strace(file.clone()));
            let trace = std::fs::read_to_string(&file).expect("strace's output");
            (run.log, trace)
        }
    };
    let (calls, families) = traced(&trace, qemu);
    let (allowed, allowed_families) = units_filter();
    // A trace that parsed to almost nothing would pass vacuously.
    assert!(
        calls.len() > 20 && calls.contains("msync") && calls.contains("connect"),
        "too few syscalls traced ({calls:?}); log:\n{log}"
    );
    let outside: Vec<&String> = calls.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "syscalls outside the unit's SystemCallFilter: {outside:?}"
    );
    let outside: Vec<&String> = families.difference(&allowed_families).collect();
    assert!(
        outside.is_empty(),
        "socket families outside the unit's RestrictAddressFamilies: {outside:?}"
    );
    eprintln!(
        "{}: {} distinct syscalls, all inside the unit's SystemCallFilter; sockets {families:?}",
        launch.describe(),
        calls.len()
    );
}
