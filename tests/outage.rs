//! Issue 6's delivery requirement, end to end, against the real receiver: the `promlet`
//! binary scrapes a counter target every second and remote-writes to Debian's Prometheus 2.42
//! (`--web.enable-remote-write-receiver`) on 127.0.0.1. Prometheus is SIGKILLed for 60 s;
//! 25 s into that outage promlet itself is `kill -9`ed and started again on the same ring.
//! Then Prometheus comes back on the same port and tsdb, promlet catches up and is stopped
//! with SIGTERM. Every value the target served must be in Prometheus, once, in order, with an
//! `up` sample beside it, except the one scrape the `kill -9` may have caught between the
//! target's answer and the append (and one SIGTERM may catch the same way).
//!
//! The target's counter goes up by one on every request, so each scrape has its own value
//! and the target's count is the oracle: Prometheus must hold exactly `1..=served` (less
//! those two). About 90 s; children are killed by pid in `Drop`, temp dirs removed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::delivery::{
    assert_once_in_order, counter_config, delivered, log_file, missing, start_target, tail,
    wait_delivered, Prometheus,
};
use support::peers::TempDir;
use support::{free_port, http, Killed};

const PROMLET: &str = env!("CARGO_BIN_EXE_promlet");

/// The scrape job's name, in the config and in `up{job=…}`.
const JOB: &str = "outage";

/// How long Prometheus is down.
const OUTAGE: Duration = Duration::from_secs(60);

/// When, into the outage, promlet is `kill -9`ed.
const KILL_AT: Duration = Duration::from_secs(25);

/// When, into the outage, promlet's `/metrics` is read (twice, [`METRICS_GAP`] apart): before
/// the `kill -9`, so it is the first process that shows scraping going on.
const METRICS_AT: Duration = Duration::from_secs(20);
const METRICS_GAP: Duration = Duration::from_secs(3);

/// How long the receiver is fed before the outage.
const DELIVERY: Duration = Duration::from_secs(8);

/// One `promlet` process; its stderr goes to `log`.
struct Promlet {
    process: Killed,
    web_port: u16,
    log: PathBuf,
}

impl Promlet {
    /// Starts promlet on `config` and the ring in `storage`, and waits (at most 30 s) until
    /// `/-/ready` answers 200.
    fn start(config: &Path, storage: &Path, web_port: u16, log: &Path) -> Promlet {
        let child: Child = Command::new(PROMLET)
            .arg("--config.file")
            .arg(config)
            .arg("--storage.agent.path")
            .arg(storage)
            .args(["--storage.agent.size", "4MiB"])
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{web_port}"))
            .args(["--log.level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(log))
            .spawn()
            .expect("the promlet binary runs");
        let mut p = Promlet {
            process: Killed(child),
            web_port,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(web_port, "GET /-/ready HTTP/1.0", b"").map(|r| r.0) != Some(200) {
            let exited = p.process.0.try_wait().expect("try_wait");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "promlet did not get ready (exit: {exited:?})\n{}",
                p.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// Its `/metrics` page.
    fn metrics(&self) -> String {
        let (status, body) = http(self.web_port, "GET /metrics HTTP/1.0", b"")
            .unwrap_or_else(|| panic!("promlet's /metrics answers\n{}", self.tail()));
        assert_eq!(status, 200, "{}", self.tail());
        String::from_utf8(body).expect("utf-8 page")
    }

    /// SIGKILL (`Child::kill`), and reaped.
    fn kill_9(mut self) {
        self.process.0.kill().expect("kill -9 promlet");
        self.process.0.wait().expect("reap promlet");
    }

    /// SIGTERM by pid; waits (at most `limit`) for it to exit, and wants 0.
    fn terminate(mut self, limit: Duration) {
        let pid = self.process.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}: {sent}");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.process.0.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "promlet did not exit within {limit:?} of SIGTERM\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "promlet exited with {status} on SIGTERM\n{}",
            self.tail()
        );
    }
}

/// The value of the first sample of `name` on a `/metrics` page (any labels).
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} on the /metrics page:\n{page}"))
}

/// Sleeps until `at` (no-op if it is past): pacing only, never an assertion.
fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

#[test]
fn every_scrape_survives_a_receiver_outage_and_a_kill_9() {
    let dir = TempDir::new("outage");
    let storage = dir.0.join("agent");
    let promlet_log = dir.0.join("promlet.log");
    let (target_port, served) = start_target();
    let mut prometheus = Prometheus::new(&dir.0);
    prometheus.start();
    let config = dir.0.join("promlet.yml");
    std::fs::write(
        &config,
        counter_config(
            JOB,
            target_port,
            &prometheus,
            "{min_backoff: 100ms, max_backoff: 1s}",
        ),
    )
    .expect("promlet config");
    let web_port = free_port();
    let promlet = Promlet::start(&config, &storage, web_port, &promlet_log);
    let running = Instant::now();

    // Delivery works before anything breaks (at most 30 s: batch_send_deadline is 5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&prometheus).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nothing reached prometheus in 30 s\n{}",
            promlet.tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    sleep_until(running + DELIVERY);
    let before_outage = delivered(&prometheus).len();

    prometheus.kill();
    let outage = Instant::now();

    // Scraping goes on while the receiver is down.
    sleep_until(outage + METRICS_AT);
    let first = promlet.metrics();
    std::thread::sleep(METRICS_GAP);
    let second = promlet.metrics();
    let (appended_1, appended_2) = (
        metric(&first, "promlet_samples_appended_total"),
        metric(&second, "promlet_samples_appended_total"),
    );
    assert!(
        appended_2 > appended_1,
        "no samples appended in {METRICS_GAP:?} of the outage: {appended_1} then {appended_2}\n{}",
        promlet.tail()
    );
    let retried_1 = metric(&second, "prometheus_remote_storage_samples_retried_total");
    assert!(
        retried_1 > 0.0,
        "{:?} into the outage, nothing was retried\n{}",
        METRICS_AT + METRICS_GAP,
        promlet.tail()
    );

    sleep_until(outage + KILL_AT);
    promlet.kill_9();
    // Let a request promlet wrote just before it died reach the target's count, so `at_kill`
    // is the last value the first process could have seen.
    std::thread::sleep(Duration::from_millis(500));
    let at_kill = served.load(Ordering::SeqCst);
    let promlet = Promlet::start(&config, &storage, web_port, &promlet_log);

    sleep_until(outage + OUTAGE);
    prometheus.start();
    let outage_length = outage.elapsed();

    // Catch up: the backlog of the outage, every value served until Prometheus was back, gets
    // there (bounded, 60 s). Newer scrapes may still wait for their batch (batch_send_deadline
    // 5s); SIGTERM's drain sends those, and the final check counts them. `at_kill` may be
    // missing: see there.
    let backlog = served.load(Ordering::SeqCst);
    wait_delivered(
        &prometheus,
        backlog,
        Duration::from_secs(60),
        &|v| v == at_kill,
        &|| promlet.tail(),
    );
    let caught_up = outage.elapsed() - outage_length;
    let page = promlet.metrics();
    let retried_2 = metric(&page, "prometheus_remote_storage_samples_retried_total");
    let sent_2 = metric(&page, "prometheus_remote_storage_samples_total");
    let log = promlet.log.clone();
    // The default flush deadline is 1m; what is left to send is a few seconds of scrapes.
    promlet.terminate(Duration::from_secs(90));

    // Stopped: the target's count is final, and promlet drained before it exited.
    let total = served.load(Ordering::SeqCst);
    let got = delivered(&prometheus);
    let lost = missing(&got, total);
    eprintln!(
        "outage: served {total}, delivered {} ({before_outage} before the outage), missing {lost:?} \
         (kill -9 after value {at_kill}), outage {:.1} s, caught up {:.1} s later, samples retried {retried_1} by the first \
         process and {retried_2} by the second (which sent {sent_2})",
        got.len(),
        outage_length.as_secs_f64(),
        caught_up.as_secs_f64()
    );
    let fail = || format!("delivered {got:?}\n{}", tail(&log, 40));

    assert_once_in_order(&got, total, &fail);
    // At most two values may be missing, each for a scrape the target answered but promlet
    // never appended (it loses nothing it appended: the ring is a shared mapping, and
    // `kill -9` leaves the page cache alone). Scrapes of one target run one after another and
    // each appends before the next starts, so values below the last one served before a stop
    // were appended:
    // - `at_kill`, the last value served to the first process: `kill -9` may land between the
    //   target's answer and the append;
    // - `total`, the last value of all: SIGTERM ends scrape tasks at once (lifecycle.rs), so it
    //   may catch a scrape whose answer came but was not appended yet, as Prometheus' scrape
    //   loop drops a scrape cut short by its shutdown.
    assert!(
        lost.iter().all(|&v| v == at_kill || v == total),
        "lost values other than the scrape cut by kill -9 ({at_kill}) or SIGTERM ({total}): {lost:?}\n{}",
        fail()
    );

    // `up` has a sample at every delivered scrape and no other: no gap but the restart's.
    let up = prometheus.range(&format!("up{{job=\"{JOB}\"}}"));
    assert_eq!(up.len(), 1, "one up series: {up:?}");
    let up = &up[0];
    assert!(
        up.iter().all(|(_, v)| v == "1"),
        "a scrape failed: {up:?}\n{}",
        tail(&log, 40)
    );
    let up_ts: Vec<i64> = up.iter().map(|&(ts, _)| ts).collect();
    let counter_ts: Vec<i64> = got.iter().map(|&(ts, _)| ts).collect();
    assert_eq!(up_ts, counter_ts, "up and the counter at other scrapes");
    assert_eq!(
        u64::try_from(up.len()).expect("fits"),
        total - u64::try_from(lost.len()).expect("fits"),
        "up samples for {total} scrapes"
    );
}
