//! Issue 17, "Also": the ring file and its disk, with the real binary. The ring file
//! truncated (`truncate -s 0`) or removed (`rm`) under a running promlet; a ring directory on
//! a full or a read-only filesystem at start. The filesystems are tmpfs mounts in a private
//! mount namespace (`unshare -m`, as root), so the machine's mounts are untouched.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::peers::{Promlet, TempDir};
use support::receiver::{serve, Answer};
use support::{free_port, http};

/// A target and a remote-write receiver in one: GET is a small page, POST is accepted.
fn start_peer() -> u16 {
    serve(|request| {
        if request.line.starts_with("POST ") {
            return Answer::status("204 No Content");
        }
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(b"promlet_ring_file_gauge{a=\"1\"} 1\npromlet_ring_file_gauge{a=\"2\"} 2\n")
    })
}

fn config(port: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: t\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n"
    )
}

fn start(dir: &TempDir) -> Promlet {
    let port = start_peer();
    let p = Promlet::start(&dir.0, &config(port), &["--storage.agent.sync-interval=1s"]);
    p.wait_for(Duration::from_secs(20), "records appended", || {
        p.metric("promlet_wal_records_total").unwrap_or(0.0) >= 2.0
    });
    p
}

/// Samples sent, over every endpoint.
fn sent(p: &Promlet) -> f64 {
    let (_, body) = http(p.port, "GET /metrics HTTP/1.0", b"").expect("/metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with("prometheus_remote_storage_samples_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until records are appended and samples sent past what they are now.
fn goes_on(p: &Promlet) {
    let records = p.metric("promlet_wal_records_total").unwrap_or(0.0);
    let samples = sent(p);
    p.wait_for(Duration::from_secs(20), "more records sent", || {
        p.metric("promlet_wal_records_total").unwrap_or(0.0) > records && sent(p) > samples
    });
}

fn healthy(p: &Promlet) -> bool {
    http(p.port, "GET /-/healthy HTTP/1.0", b"").is_some_and(|(status, _)| status == 200)
}

#[test]
fn a_ring_truncated_under_promlet_is_restored_logged_and_counted() {
    let dir = TempDir::new("ring-truncated");
    let p = start(&dir);
    let ring = dir.0.join("data/ring");
    let ok = Command::new("truncate")
        .args(["-s", "0"])
        .arg(&ring)
        .status()
        .expect("truncate runs")
        .success();
    assert!(ok, "truncate -s 0 {}", ring.display());
    let truncated = "promlet_wal_file_problems_total{kind=\"truncated\"}";
    p.wait_for(Duration::from_secs(20), "the truncation counted", || {
        p.metric(truncated).unwrap_or(0.0) >= 1.0
    });
    let line = format!(
        "ring: {} was truncated to 0 bytes under promlet; restored its length of 4194304 bytes, but the ring's contents were lost",
        ring.display()
    );
    assert!(p.log().contains(&line), "{}", p.log());
    assert_eq!(std::fs::metadata(&ring).expect("ring").len(), 4 << 20);
    // Appending and sending go on; the target's scrape after the truncation found its
    // series-set gone and was dropped, the next wrote it again.
    goes_on(&p);
    assert!(healthy(&p), "{}", p.log());
    assert_eq!(p.metric("promlet_ring_append_failures_total"), Some(1.0));
    assert_eq!(p.metric("promlet_wal_sync_failures_total"), Some(0.0));
    let log = p.log();
    assert_eq!(log.matches("was truncated").count(), 1, "{log}");
    assert_eq!(p.stop(), 0);
    // What it left is a ring again.
    let inspect = Command::new(env!("CARGO_BIN_EXE_promlet"))
        .args(["wal", "inspect"])
        .arg(dir.0.join("data"))
        .output()
        .expect("inspect runs");
    assert!(inspect.status.success(), "{inspect:?}");
}

#[test]
fn a_ring_removed_under_promlet_is_logged_and_counted_and_promlet_goes_on() {
    let dir = TempDir::new("ring-removed");
    let p = start(&dir);
    let ring = dir.0.join("data/ring");
    std::fs::remove_file(&ring).expect("rm the ring");
    let removed = "promlet_wal_file_problems_total{kind=\"removed\"}";
    p.wait_for(Duration::from_secs(20), "the removal counted", || {
        p.metric(removed) == Some(1.0)
    });
    let line = format!(
        "ring: {} was removed under promlet; it goes on in the unlinked file, but its backlog is lost at stop",
        ring.display()
    );
    assert!(p.log().contains(&line), "{}", p.log());
    goes_on(&p);
    assert!(healthy(&p));
    assert_eq!(p.log().matches("was removed").count(), 1);
    assert_eq!(p.stop(), 0);
    assert!(!ring.exists(), "the backlog went with the process");
}

/// Runs `mount_options` tmpfs on `dir/data` in a private mount namespace, then promlet with
/// its ring there; returns promlet's exit code, its log and what was left in the directory
/// (listed inside the namespace, before the mount goes with it).
fn start_on_tmpfs(dir: &TempDir, mount_options: &str) -> (i32, String, String) {
    let unshare = ["/usr/bin/unshare", "/bin/unshare"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("this test needs unshare(1) (util-linux) and root"));
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let config = dir.0.join("promlet.yml");
    std::fs::write(&config, config_text()).expect("config");
    let script = "mount -t tmpfs -o \"$1\" tmpfs \"$2\" || exit 99; \"$3\" --config.file \"$4\" --storage.agent.path \"$2\" --storage.agent.size 4MiB --web.listen-address=127.0.0.1:\"$5\"; rc=$?; echo \"left:$(ls -A \"$2\")\"; exit $rc";
    let out = Command::new(unshare)
        .args(["-m", "sh", "-c", script, "sh", mount_options])
        .arg(&data)
        .arg(env!("CARGO_BIN_EXE_promlet"))
        .arg(&config)
        .arg(free_port().to_string())
        .output()
        .expect("unshare runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code, 99,
        "mount -t tmpfs -o {mount_options} failed (root needed): {log}"
    );
    let left = stdout
        .lines()
        .find_map(|l| l.strip_prefix("left:"))
        .unwrap_or_else(|| panic!("no listing: {stdout} {log}"))
        .to_owned();
    (code, log, left)
}

fn config_text() -> String {
    "scrape_configs: []\n".to_owned()
}

/// [`start_on_tmpfs`], which must refuse to start: exit 1, one error line, nothing left in
/// the directory. Returns the log.
fn refused_on_tmpfs(dir: &TempDir, mount_options: &str) -> String {
    let (code, log, left) = start_on_tmpfs(dir, mount_options);
    assert_eq!(code, 1, "{log}");
    let errors = log.lines().filter(|l| l.starts_with("ERROR")).count();
    assert_eq!(errors, 1, "one error line: {log}");
    assert_eq!(left.trim(), "", "nothing left behind");
    log
}

#[test]
fn a_full_filesystem_at_start_is_refused_naming_the_ring_and_leaves_nothing() {
    let dir = TempDir::new("ring-full");
    let log = refused_on_tmpfs(&dir, "size=512k");
    let want = format!(
        "refusing to start: cannot allocate 4194304 bytes for the ring at {} (free disk space, or a smaller --storage.agent.size): No space left on device",
        dir.0.join("data/ring").display()
    );
    assert!(log.contains(&want), "{log}");
}

#[test]
fn a_read_only_filesystem_at_start_is_refused_naming_the_directory_and_leaves_nothing() {
    let dir = TempDir::new("ring-ro");
    let log = refused_on_tmpfs(&dir, "ro");
    let want = format!(
        "refusing to start: open {}: Read-only file system",
        dir.0.join("data/promlet.lock").display()
    );
    assert!(log.contains(&want), "{log}");
}
