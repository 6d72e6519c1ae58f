//! promlet under abuse, as a process on loopback: a slowloris flood against its web server,
//! a storm of reload requests, and config bombs sent by reload. Every loop is bounded in count
//! and time; promlet is killed by pid when a test ends.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::peers::{Promlet, TempDir};
use support::receiver::{Answer, Scripted};
use support::{free_port, http};

/// The head timeout the README promises.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// A config of static targets on `ports` (where nothing listens: they refuse connections) and
/// one remote_write to `receiver`.
fn config(receiver: &Scripted, ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: j\n    \
         static_configs: [{{targets: [{}]}}]\nremote_write:\n  - url: {}\n",
        list.join(", "),
        receiver.url()
    )
}

/// One `GET path` on a fresh connection, every step bounded by `limit`: the status, or
/// `None` if the connection closed or timed out without one.
fn probe(port: u16, path: &str, limit: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

/// Sets its flag when dropped (a panic included).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Holds `n` slowloris connections to `port` until `stop`: each sends a request line and then
/// one header byte a second, never the blank line; one that is closed is opened again.
/// Returns how many were opened in all.
fn slowloris(port: u16, n: usize, stop: &AtomicBool) -> usize {
    let open = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").ok()?;
        Some(s)
    };
    let mut opened = 0;
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    // Bounded: the test stops it within seconds; 60 s is the backstop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        for c in conns.iter_mut() {
            let alive = c.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
            if !alive {
                *c = open();
                opened += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    opened
}

#[test]
fn health_probes_answer_through_a_slowloris_flood_and_slow_heads_are_cut() {
    let dir = TempDir::new("abuse-flood");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let promlet = Promlet::start(&dir.0, &config(&receiver, &[free_port()]), &[]);
    let port = promlet.port;
    let stop = AtomicBool::new(false);
    let mut slowest = Duration::ZERO;
    let opened = std::thread::scope(|s| {
        let flood = s.spawn(|| slowloris(port, 40, &stop));
        // A failed probe ends the flood too, so the test fails at once.
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(500));
        // Eight rounds a second apart: past the head timeout, so the flood has been cut and
        // opened again while the probes ran.
        for round in 0..8 {
            for path in ["/-/healthy", "/-/ready"] {
                let started = Instant::now();
                let status = probe(port, path, Duration::from_secs(1));
                let took = started.elapsed();
                assert_eq!(status, Some(200), "round {round}: {path} after {took:?}");
                assert!(
                    took < Duration::from_secs(1),
                    "round {round}: {path} {took:?}"
                );
                slowest = slowest.max(took);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        stop.store(true, Ordering::SeqCst);
        flood.join().expect("the flood thread")
    });
    println!("slowest probe during the flood: {slowest:?}; {opened} slow connections opened");
    assert!(opened > 40, "the flood was cut and opened again: {opened}");

    // Alone, a client that never finishes its head is closed after the head timeout.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .expect("write");
    let mut byte = [0u8; 1];
    let closed_after = loop {
        assert!(
            started.elapsed() < HEAD_TIMEOUT * 3,
            "a slow head still open after {:?}",
            started.elapsed()
        );
        let _ = slow.write_all(b"a");
        match slow.read(&mut byte) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("an answer to a request never finished"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
    };
    println!("a slow head was closed after {closed_after:?}");
    assert!(
        closed_after >= HEAD_TIMEOUT - Duration::from_millis(100),
        "closed before the head timeout: {closed_after:?}"
    );
    assert!(
        closed_after < HEAD_TIMEOUT + Duration::from_secs(2),
        "closed long after the head timeout: {closed_after:?}"
    );
    assert_eq!(promlet.stop(), 0);
}

/// The `config reloaded (…)` lines of `log`.
fn reload_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("config reloaded ("))
        .collect()
}

#[test]
fn a_reload_storm_runs_few_reloads_one_log_line_each() {
    let dir = TempDir::new("abuse-reload");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let ports = [free_port(), free_port()];
    let promlet = Promlet::start(&dir.0, &config(&receiver, &ports), &["--log.level=info"]);
    // Let start-up lines (a target going down) pass before the storm is measured.
    std::thread::sleep(Duration::from_secs(2));
    let log_before = promlet.log().len();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..100 {
                promlet.signal("HUP");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // 200 POSTs from 25 clients, 8 each, every one answered 200.
        let clients: Vec<_> = (0..25)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..8 {
                        let answer = http(promlet.port, "POST /-/reload HTTP/1.0", b"");
                        assert_eq!(answer.map(|a| a.0), Some(200));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("a reload client");
        }
    });
    // The last request: a changed config (one target fewer: a new one would log that it is
    // down) and one more SIGHUP; a reload must load it.
    std::fs::write(dir.join("promlet.yml"), config(&receiver, &ports[..1])).expect("config");
    promlet.signal("HUP");
    let storm = started.elapsed();
    promlet.wait_for(
        Duration::from_secs(10),
        "the reload after the last request",
        || {
            reload_lines(&promlet.log()[log_before..])
                .last()
                .is_some_and(|l| l.contains("(1 targets, 1 endpoints)"))
        },
    );
    // Nothing else was reloading: let a late one finish before counting.
    std::thread::sleep(Duration::from_millis(1500));
    let log = promlet.log();
    let grown = &log[log_before..];
    let reloads = reload_lines(grown).len();
    println!(
        "{reloads} reloads for 301 requests in {storm:?}; {} log bytes",
        grown.len()
    );
    // At most one reload starts a second, plus the one running when the storm began and the
    // one for the last request.
    let bound = usize::try_from(storm.as_secs()).expect("seconds") + 3;
    assert!(
        (1..=bound).contains(&reloads),
        "{reloads} reloads in {storm:?}:\n{grown}"
    );
    assert_eq!(
        grown.lines().count(),
        reloads,
        "one line per reload:\n{grown}"
    );
    assert_eq!(promlet.stop(), 0);
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
    let good = config(&receiver, &[free_port(), free_port()]);
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
