//! Issue 17, item 3: what a small ring loses is counted exactly, end to end. The `promlet`
//! binary scrapes a 5,000-series target (every value changes every scrape) every second into
//! a 256 KiB ring and remote-writes to Debian's Prometheus on 127.0.0.1. Prometheus is down
//! for 60 s, far longer than the ring holds; then it comes back, promlet catches up, and a
//! reload removes the target (its series are stale-marked, and nothing more is appended).
//! Then what promlet appended must equal what it sent plus what it counted lost (overwritten
//! before it was read, undecodable, refused), to the sample; and Prometheus must hold every
//! sample promlet says it sent. The request in flight when the receiver went down is retried
//! from memory and delivered: it used to be counted as overwritten too.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::delivery::{tail, Prometheus};
use support::peers::{escape, Promlet, TempDir};
use support::receiver::{serve, Answer};
use support::{free_port, http};

const SERIES: u64 = 5_000;

/// The target: `SERIES` gauges whose values all change at every scrape.
fn start_target() -> (u16, Arc<AtomicU64>) {
    let served = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&served);
    let port = serve(move |request| {
        if !request.line.starts_with("GET ") {
            return Answer::status("405 Method Not Allowed");
        }
        let k = count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = String::with_capacity(64 * 5_000);
        for i in 0..SERIES {
            body.push_str(&format!(
                "promlet_loss_gauge{{pod=\"pod-{:04}\",container=\"c{}\"}} {}\n",
                i / 4,
                i % 4,
                (k * 7919 + i * 104_729) % 1_000_003
            ));
        }
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body.as_bytes())
    });
    (port, served)
}

/// The sum of every sample of `name` (any labels) on a `/metrics` page.
fn total(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = v as u64;
            n
        })
        .sum()
}

fn page(promlet: &Promlet) -> String {
    let (status, body) = http(promlet.port, "GET /metrics HTTP/1.0", b"").expect("/metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8")
}

/// (appended, sent, failed, overwritten, undecodable, pending) as one page says.
fn ledger(page: &str) -> [u64; 6] {
    [
        total(page, "promlet_samples_appended_total"),
        total(page, "prometheus_remote_storage_samples_total"),
        total(page, "prometheus_remote_storage_samples_failed_total"),
        total(page, "promlet_wal_endpoint_overwritten_samples_total"),
        total(page, "promlet_wal_endpoint_undecodable_samples_total"),
        total(page, "prometheus_remote_storage_samples_pending"),
    ]
}

/// Samples of the job Prometheus holds (stale markers are not counted by queries), a query
/// per metric name (`count_over_time` drops the name, and the report series share labels).
fn held(prometheus: &Prometheus) -> u64 {
    [
        "promlet_loss_gauge",
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ]
    .iter()
    .map(|name| {
        let q = escape(&format!(
            "sum(count_over_time({name}{{job=\"loss\"}}[15m]))"
        ));
        let (status, body) = http(
            prometheus.port,
            &format!("GET /api/v1/query?query={q} HTTP/1.0"),
            b"",
        )
        .expect("the query API answers");
        let body = String::from_utf8(body).expect("utf-8");
        assert_eq!(status, 200, "{body}");
        body.rsplit_once(",\"")
            .and_then(|(_, v)| v.split('"').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("a count: {body}"))
    })
    .sum()
}

#[test]
fn delivered_plus_counted_losses_equal_what_a_small_ring_appended() {
    let dir = TempDir::new("ring-loss");
    let (target, served) = start_target();
    let mut prometheus = Prometheus::new(&dir.0);
    prometheus.start();
    let scrape = format!(
        "scrape_configs:\n  - job_name: loss\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    );
    let write = format!(
        "remote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n    queue_config: {{min_backoff: 100ms, max_backoff: 1s, batch_send_deadline: 1s}}\n",
        prometheus.port
    );
    let config = dir.join("promlet.yml");
    std::fs::write(&config, format!("{scrape}{write}")).expect("config");
    let port = free_port();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_promlet"));
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.agent.path={}",
            dir.join("data").display()
        ))
        .arg("--storage.agent.size=256KiB")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let promlet = Promlet::spawn(command, port, dir.join("promlet.log"));
    promlet.wait_for(Duration::from_secs(30), "a delivery", || {
        ledger(&page(&promlet))[1] > 0
    });
    std::thread::sleep(Duration::from_secs(4));
    prometheus.kill();
    std::thread::sleep(Duration::from_secs(60));
    prometheus.start();
    let prometheus_log = prometheus.log();
    let ring_log = || format!("{}\n{}", promlet.log(), tail(&prometheus_log, 10));
    // Stop appending: a reload without the job stale-marks its series, counted as appended.
    // The sender goes on catching up meanwhile.
    std::fs::write(dir.join("promlet.yml"), &write).expect("config");
    promlet.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(90);
    let settled = loop {
        let l = ledger(&page(&promlet));
        let [appended, sent, failed, overwritten, undecodable, pending] = l;
        if promlet.log().contains("config reloaded")
            && pending == 0
            && appended == sent + failed + overwritten + undecodable
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "appended {appended} != sent {sent} + failed {failed} + overwritten {overwritten} + undecodable {undecodable} (pending {pending})\n{}",
            ring_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let [appended, sent, failed, overwritten, undecodable, _] = settled;
    // The stale markers of the removed target (its series and five report series) are sent
    // but not counted by queries.
    let stale = SERIES + 5;
    let at_prometheus = held(&prometheus);
    eprintln!(
        "ring loss: served {} scrapes, appended {appended}, sent {sent} (Prometheus holds {at_prometheus} + {stale} stale markers), failed {failed}, overwritten {overwritten}, undecodable {undecodable}",
        served.load(Ordering::SeqCst)
    );
    assert!(overwritten > 0, "the outage overflowed the ring");
    assert_eq!(failed, 0, "{}", ring_log());
    assert_eq!(at_prometheus + stale, sent, "{}", ring_log());
}
