//! Issue 17, item 1: many short lives on one ring, each ended by `kill -9` at a random moment,
//! lose nothing. The `promlet` binary scrapes a counter target every second
//! (`support::delivery`: each scrape has its own value) and remote-writes to Debian's
//! Prometheus on 127.0.0.1. Processes are started one after another on the same ring and
//! SIGKILLed after a random life: some before the first sync, some during start-up, some
//! across and after syncs. The receiver is down for most of it; it comes up for the last
//! lives (so kills also land while requests are in flight) and a last process drains the
//! ring and is stopped with SIGTERM.
//!
//! Every value the target served must be in Prometheus once, in order, except at most the
//! scrape in flight at each kill (the target answered, promlet died before appending) and the
//! one SIGTERM may cut short.
//!
//! `PROMLET_KILL_SEED=N` replays a run; `PROMLET_KILL_LIVES=N` sets the number of lives (the
//! soak by hand: `PROMLET_KILL_LIVES=400 cargo test --release --test kill_loop -- --nocapture
//! --exact forty_kill_9s_at_random_moments_lose_no_scrape`).

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::delivery::{
    assert_once_in_order, counter_config, delivered, log_file, missing, start_target, tail,
    wait_delivered, Prometheus,
};
use support::peers::{wait_ready, TempDir};
use support::{free_port, http, Killed};

const PROMLET: &str = env!("CARGO_BIN_EXE_promlet");

/// A small xorshift generator: the kill moments, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn seeded() -> (Rng, u64) {
        let seed = std::env::var("PROMLET_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970");
                now.as_secs() ^ u64::from(now.subsec_nanos())
            });
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in `from..to`, uniform at millisecond steps.
    fn between(&mut self, from: Duration, to: Duration) -> Duration {
        let span = u64::try_from((to - from).as_millis()).expect("short span");
        from + Duration::from_millis(self.next() % span.max(1))
    }
}

/// How the lives are drawn.
struct Plan {
    lives: usize,
    /// `None`: the default `--storage.agent.sync-interval`.
    sync_interval: Option<&'static str>,
    /// The longest life.
    longest: Duration,
    /// The receiver comes up before the last this many lives.
    lives_with_receiver: usize,
}

fn lives_from_env(default: usize) -> usize {
    std::env::var("PROMLET_KILL_LIVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn run(name: &str, plan: &Plan) {
    let (mut rng, seed) = Rng::seeded();
    let dir = TempDir::new(name);
    let storage = dir.0.join("agent");
    let log = dir.0.join("promlet.log");
    let (target_port, served) = start_target();
    let mut prometheus = Prometheus::new(&dir.0);
    let config = dir.0.join("promlet.yml");
    std::fs::write(
        &config,
        counter_config(
            "kill",
            target_port,
            &prometheus,
            "{min_backoff: 100ms, max_backoff: 1s, batch_send_deadline: 1s}",
        ),
    )
    .expect("promlet config");
    let command = |port: u16| {
        let mut c = Command::new(PROMLET);
        c.arg("--config.file")
            .arg(&config)
            .arg("--storage.agent.path")
            .arg(&storage)
            .args(["--storage.agent.size", "4MiB"])
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--log.level", "info"]);
        if let Some(every) = plan.sync_interval {
            c.arg(format!("--storage.agent.sync-interval={every}"));
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&log));
        c
    };

    // The scrape each kill may have caught between the target's answer and the append.
    let mut in_flight = Vec::new();
    let mut lived = Vec::new();
    let started = Instant::now();
    for life in 0..plan.lives {
        if life + plan.lives_with_receiver == plan.lives {
            prometheus.start();
        }
        // One life in five ends in start-up or just after it (before any scrape or sync).
        let length = if rng.next() % 5 == 0 {
            rng.between(Duration::from_millis(5), Duration::from_millis(300))
        } else {
            rng.between(Duration::from_millis(300), plan.longest)
        };
        let mut child = Killed(
            command(free_port())
                .spawn()
                .expect("the promlet binary runs"),
        );
        std::thread::sleep(length);
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!(
                "life {life} exited by itself with {status}\n{}",
                tail(&log, 40)
            );
        }
        child.0.kill().expect("kill -9 promlet");
        child.0.wait().expect("reap promlet");
        // A request written just before the kill reaches the target's count first.
        std::thread::sleep(Duration::from_millis(300));
        in_flight.push(served.load(Ordering::SeqCst));
        lived.push(length);
    }
    if plan.lives_with_receiver == 0 {
        prometheus.start();
    }
    let backlog = served.load(Ordering::SeqCst);
    let port = free_port();
    let mut last = Killed(command(port).spawn().expect("the promlet binary runs"));
    // Its signal handlers are in place once it is ready: SIGTERM then means a clean stop.
    wait_ready(port, "/-/ready");

    // Catch up (bounded): every value served before the last process started arrives.
    wait_delivered(
        &prometheus,
        backlog,
        Duration::from_secs(120),
        &|v| in_flight.contains(&v),
        &|| format!("seed {seed}\n{}", tail(&log, 60)),
    );
    let sent = http(port, "GET /metrics HTTP/1.0", b"")
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let pid = last.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs")
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = last.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no exit on SIGTERM\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "exit {status} on SIGTERM\n{}",
        tail(&log, 40)
    );

    let total = served.load(Ordering::SeqCst);
    let got = delivered(&prometheus);
    let lost = missing(&got, total);
    let short = lived
        .iter()
        .filter(|d| **d < Duration::from_millis(300))
        .count();
    let resent = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("a request was in flight when")
        .count();
    let failed = sent
        .lines()
        .find(|l| l.starts_with("prometheus_remote_storage_samples_failed_total"))
        .unwrap_or("");
    eprintln!(
        "{name}: seed {seed}, {} lives in {:.0} s ({short} shorter than 0.3 s), served {total}, delivered {}, missing {lost:?} (in flight at a kill: {in_flight:?}); {resent} starts resent a request in flight; last process: {failed}",
        plan.lives,
        started.elapsed().as_secs_f64(),
        got.len(),
    );
    let fail = || format!("seed {seed}: delivered {got:?}\n{}", tail(&log, 60));
    assert_once_in_order(&got, total, &fail);
    assert!(
        lost.iter().all(|v| in_flight.contains(v) || *v == total),
        "lost values other than a scrape in flight at a kill or at SIGTERM: {lost:?}\n{}",
        fail()
    );
    assert!(
        lost.len() <= plan.lives + 1,
        "more values lost than kills: {}",
        fail()
    );
}

#[test]
fn forty_kill_9s_at_random_moments_lose_no_scrape() {
    run(
        "kill-loop",
        &Plan {
            lives: lives_from_env(40),
            sync_interval: Some("2s"),
            longest: Duration::from_secs(5),
            lives_with_receiver: 10,
        },
    );
}

#[test]
fn kill_9s_with_the_default_sync_interval_lose_no_scrape() {
    run(
        "kill-loop-default-sync",
        &Plan {
            lives: lives_from_env(10),
            sync_interval: None,
            longest: Duration::from_secs(14),
            lives_with_receiver: 3,
        },
    );
}
