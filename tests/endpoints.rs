//! Which scrapes a `remote_write` endpoint is sent when it joins a ring that already holds
//! data (README, "Endpoints and the ring"): an endpoint added by a reload is sent what is
//! scraped from the reload on, and keeps that start through a `kill -9` before any sync; one
//! removed and added back is a new endpoint again, sent nothing of the scrapes in between.
//! The `promlet` binary scrapes a counter target every second (each scrape its own value)
//! and writes to two capture receivers on 127.0.0.1.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::delivery::start_target;
use support::peers::{Promlet, TempDir};
use support::receiver::{Answer, Scripted};

/// The counter values `rx` acknowledged, in the order they came.
fn counter_values(rx: &Scripted) -> Vec<u64> {
    rx.delivered()
        .into_iter()
        .filter(|(labels, _)| {
            labels.get("__name__").map(String::as_str) == Some("promlet_delivery_counter")
        })
        .flat_map(|(_, samples)| samples.into_iter().map(|(bits, _)| f64::from_bits(bits)))
        .map(|v| {
            assert!(v >= 1.0 && v.fract() == 0.0, "a count: {v}");
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = v as u64;
            n
        })
        .collect()
}

fn config(target: u16, receivers: &[&Scripted]) -> String {
    let mut c = format!(
        "scrape_configs:\n  - job_name: endpoints\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\nremote_write:\n"
    );
    for rx in receivers {
        c.push_str(&format!(
            "  - url: {}\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 1s, max_backoff: 1s}}\n",
            rx.url()
        ));
    }
    c
}

/// Waits (at most 30 s) until the target has served `n` more scrapes; returns the count.
fn scrapes(served: &AtomicU64, n: u64) -> u64 {
    let until = served.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    while served.load(Ordering::SeqCst) < until {
        assert!(Instant::now() < deadline, "the target was not scraped");
        std::thread::sleep(Duration::from_millis(50));
    }
    served.load(Ordering::SeqCst)
}

/// Waits (at most 30 s) until `rx` holds every value up to `last`; returns its values.
fn holds_up_to(rx: &Scripted, last: u64, log: &dyn Fn() -> String) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = counter_values(rx);
        if got.last().is_some_and(|&v| v >= last) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "value {last} never arrived: {got:?}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reloads `promlet` on `text` and waits until it says so.
fn reload(promlet: &Promlet, dir: &TempDir, text: &str) {
    let before = promlet.log().matches("config reloaded").count();
    std::fs::write(dir.join("promlet.yml"), text).expect("config");
    promlet.signal("HUP");
    promlet.wait_for(Duration::from_secs(10), "the reload", || {
        promlet.log().matches("config reloaded").count() > before
    });
}

#[test]
fn an_added_endpoint_starts_at_its_reload_and_one_added_back_skips_its_absence() {
    let dir = TempDir::new("endpoints");
    let (target, served): (u16, Arc<AtomicU64>) = start_target();
    let a = Scripted::start(Vec::new(), Answer::ok());
    // B refuses its first requests (retried a second apart): it still has everything from
    // its start to send when the first process is killed.
    let b = Scripted::start(
        (0..5)
            .map(|_| Answer::status("503 Service Unavailable"))
            .collect(),
        Answer::ok(),
    );
    // A sync interval longer than the test: every cursor a restart finds was written when the
    // endpoint was added or sent something, never by a sync.
    let slow_sync = ["--storage.agent.sync-interval=1h"];
    let promlet = Promlet::start(&dir.0, &config(target, &[&a]), &slow_sync);
    scrapes(&served, 3);

    // Added by a reload, then `kill -9` before any sync while B still refuses: the next
    // process sends B everything from the reload on, and misses nothing but the scrape the
    // kill may catch.
    let before_add = served.load(Ordering::SeqCst);
    reload(&promlet, &dir, &config(target, &[&a, &b]));
    scrapes(&served, 3);
    assert!(
        counter_values(&b).is_empty(),
        "B refuses for 5 s: {:?}",
        b.writes().iter().map(|w| w.answered).collect::<Vec<_>>()
    );
    drop(promlet);
    std::thread::sleep(Duration::from_millis(300));
    let at_kill = served.load(Ordering::SeqCst);
    let promlet = Promlet::start(&dir.0, &config(target, &[&a, &b]), &slow_sync);
    let log = || promlet.log();
    let after_restart = scrapes(&served, 3);
    let got_b = holds_up_to(&b, after_restart - 1, &log);
    let first_b = got_b[0];
    assert!(
        (before_add..=before_add + 2).contains(&first_b),
        "B's first value {first_b}, the reload after value {before_add}: {got_b:?}"
    );
    let want: Vec<u64> = (first_b..=*got_b.last().expect("some"))
        .filter(|&v| v != at_kill || got_b.contains(&v))
        .collect();
    assert_eq!(got_b, want, "B across the kill (at value {at_kill})");

    // Removed, then added back: nothing of its absence, everything after.
    reload(&promlet, &dir, &config(target, &[&a]));
    let removed_at = served.load(Ordering::SeqCst);
    scrapes(&served, 3);
    let before_return = served.load(Ordering::SeqCst);
    reload(&promlet, &dir, &config(target, &[&a, &b]));
    let back = scrapes(&served, 3);
    let got_b = holds_up_to(&b, back - 1, &log);
    let gap: Vec<u64> = got_b
        .iter()
        .copied()
        .filter(|&v| v > removed_at + 1 && v < before_return)
        .collect();
    assert!(
        gap.is_empty(),
        "B was sent values of its absence ({removed_at}..{before_return}): {gap:?}"
    );
    let returned: Vec<u64> = got_b
        .iter()
        .copied()
        .filter(|&v| v > before_return + 2)
        .collect();
    assert_eq!(
        returned,
        (before_return + 3..=*got_b.last().expect("some")).collect::<Vec<_>>(),
        "B after its return"
    );

    // A, there all along, has every value but the one the kill may have caught.
    let last = scrapes(&served, 1);
    let got_a = holds_up_to(&a, last - 1, &log);
    let want: Vec<u64> = (1..=*got_a.last().expect("some"))
        .filter(|&v| v != at_kill || got_a.contains(&v))
        .collect();
    assert_eq!(got_a, want);
    eprintln!(
        "endpoints: B added after value {before_add} (first {first_b}), kill -9 at {at_kill}, removed after {removed_at}, back after {before_return}; A holds {} values",
        got_a.len()
    );
}
