//! promlet under abuse, as a process on loopback: config bombs sent by reload. Every loop is bounded in count
//! and time; promlet is killed by pid when a test ends.

mod support;

use std::time::Duration;

use support::peers::{Promlet, TempDir};
use support::receiver::{Answer, Scripted};
use support::{free_port, http};

/// A config with `targets` static targets that refuse connections (nothing listens on their
/// ports) and one remote_write to `receiver`.
fn config(receiver: &Scripted, targets: usize) -> String {
    let list: Vec<String> = (0..targets)
        .map(|_| format!("'127.0.0.1:{}'", free_port()))
        .collect();
    format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: j\n    \
         static_configs: [{{targets: [{}]}}]\nremote_write:\n  - url: {}\n",
        list.join(", "),
        receiver.url()
    )
}

/// `RssAnon` of `pid` in bytes.
fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("RssAnon");
    kb * 1024
}

/// A billion-laughs document: nine levels, each a list of nine aliases of the one before.
fn bomb() -> String {
    let mut text = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    for (prev, next) in ('a'..='h').zip('b'..='i') {
        let items = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("{next}: &{next} [{items}]\n"));
    }
    text
}

#[test]
fn refused_alias_bombs_give_their_memory_back_and_the_old_config_runs_on() {
    let dir = TempDir::new("abuse-bomb");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let good = config(&receiver, 2);
    let promlet = Promlet::start(&dir.0, &good, &[]);
    // Warm up: a few scrapes and sends, and one good reload, before the baseline.
    let (status, _) = http(promlet.port, "POST /-/reload HTTP/1.0", b"").expect("reload");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let before = rss_anon(promlet.pid());
    let mut peak = before;
    for _ in 0..5 {
        std::fs::write(dir.join("promlet.yml"), bomb()).expect("bomb");
        let (status, body) = http(promlet.port, "POST /-/reload HTTP/1.0", b"").expect("reload");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 500, "{body}");
        assert!(
            body.contains(":5:1: yaml: aliases expand to more than 65536 nodes"),
            "{body}"
        );
        peak = peak.max(rss_anon(promlet.pid()));
    }
    // Freed memory goes back at the next free that consolidates the heap; give the loop a
    // few scrapes.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_anon(promlet.pid());
    println!("RssAnon before {before}, highest seen {peak}, after five bombs {after}");
    assert!(
        after <= before + (2 << 20),
        "RssAnon grew from {before} to {after} bytes"
    );
    assert_eq!(
        promlet.metric("promlet_config_reload_failures_total"),
        Some(5.0)
    );
    assert_eq!(
        promlet.metric("prometheus_sd_discovered_targets{config=\"j\",name=\"scrape\"}"),
        Some(2.0),
        "the old config's two targets"
    );
    assert_eq!(promlet.stop(), 0);
}
