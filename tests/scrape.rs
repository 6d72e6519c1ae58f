//! The scrape loop's semantics, one scrape at a time, against a scripted HTTP target on
//! 127.0.0.1: what each scrape appends to the ring (read back through a consumer, as a sender
//! reads it) must be what Prometheus 2.42's scrape loop appends — report series with its
//! values, StaleNaN for vanished series and for every series of a failed scrape (once), the
//! first of duplicate series, stale-marking on removal — whatever the framing (length,
//! chunked, close) and encoding (gzip).

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promlet::config::Config;
use promlet::scrape::{ScrapeStats, Scraper};
use promlet::wal::{Consumer, Ring};
use support::peers::TempDir;
use support::receiver::{serve, Answer};

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// A target that answers the scripted answers in turn (the last one from then on).
fn target(answers: Vec<Answer>) -> (u16, Arc<Mutex<Vec<support::receiver::HttpRequest>>>) {
    let script = Arc::new(Mutex::new(answers));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let port = serve(move |req| {
        log.lock().expect("lock").push(req.clone());
        let mut s = script.lock().expect("lock");
        if s.len() > 1 {
            s.remove(0)
        } else {
            s[0].clone()
        }
    });
    (port, seen)
}

fn body(text: &str) -> Answer {
    Answer::status("200 OK")
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(text.as_bytes())
}

/// What one scrape appended: labels (rendered `{a="b",…}`) → value bits.
type Scrape = BTreeMap<String, u64>;

struct Harness {
    _dir: TempDir,
    ring: RefCell<Ring>,
    consumer: Consumer,
    scraper: Scraper,
    stats: Rc<ScrapeStats>,
    clock: Rc<promlet::scrape::clock::Clock>,
    ts: i64,
}

impl Harness {
    /// A scraper for the one target of `job` (YAML of one scrape config, `ADDRESS` replaced by
    /// the fixture's address).
    fn new(name: &str, job: &str, port: u16) -> Harness {
        let dir = TempDir::new(&format!("scrape-{name}"));
        let text = format!(
            "scrape_configs:\n{}",
            job.replace("ADDRESS", &format!("127.0.0.1:{port}"))
        );
        let config = Config::parse(&text, Path::new("t.yml"), Path::new(".")).expect("config");
        let sc = config.scrape_configs[0].clone();
        let (targets, errors) = promlet::targets::build(&sc.static_configs, &sc);
        assert!(errors.is_empty(), "{errors:?}");
        let mut ring = Ring::open(&dir.0, 1 << 20).expect("ring");
        let consumer = ring.consumer(7).expect("consumer");
        let stats = Rc::new(ScrapeStats::default());
        let scraper = Scraper::new(
            targets.into_iter().next().expect("one target"),
            Rc::new(sc),
            Rc::clone(&stats),
        );
        Harness {
            _dir: dir,
            ring: RefCell::new(ring),
            consumer,
            scraper,
            stats,
            clock: promlet::scrape::clock::Clock::new(),
            ts: 1_700_000_000_000,
        }
    }

    /// Runs one scrape; returns what it appended.
    fn scrape(&mut self) -> Scrape {
        self.ts += 1000;
        promlet::scrape::clock::block_on(
            &self.clock,
            self.scraper.scrape(&self.ring, &self.clock, self.ts),
        );
        self.read()
    }

    fn read(&mut self) -> Scrape {
        let mut out = Scrape::new();
        while let Some(b) = self.consumer.next_batch() {
            assert_eq!(
                b.timestamp_ms, self.ts,
                "every sample gets the scrape's time"
            );
            for (i, v) in b.values.iter().enumerate() {
                let labels: Vec<String> = b
                    .series
                    .owned(i)
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "{}={:?}",
                            String::from_utf8_lossy(n),
                            String::from_utf8_lossy(v)
                        )
                    })
                    .collect();
                let key = format!("{{{}}}", labels.join(","));
                assert!(
                    out.insert(key.clone(), v.to_bits()).is_none(),
                    "{key} twice in one scrape"
                );
            }
            let next = b.next;
            self.consumer.commit(next);
        }
        out
    }
}

fn get(s: &Scrape, key: &str) -> f64 {
    let some: Vec<&String> = s.keys().take(12).collect();
    f64::from_bits(
        *s.get(key)
            .unwrap_or_else(|| panic!("{key} missing from {} series: {some:#?}", s.len())),
    )
}

fn series(name: &str, port: u16, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    format!("{{__name__=\"{name}\",instance=\"127.0.0.1:{port}\",job=\"j\"{extra}}}")
}

const JOB: &str = "  - job_name: j\n    static_configs:\n      - targets: [ADDRESS]\n";

#[test]
fn steady_scrapes_vanished_series_and_failures() {
    let (port, requests) = target(vec![
        body("a 1\nb{x=\"1\"} 2\nb{x=\"2\"} 3\n"),
        body("a 2\nb{x=\"1\"} 3\nb{x=\"2\"} 4\n"),
        // b{x="2"} vanishes, c appears.
        body("a 3\nb{x=\"1\"} 4\nc 5\n"),
        Answer::status("500 Internal Server Error"),
        Answer::status("500 Internal Server Error"),
        body("a 9\n"),
    ]);
    let mut h = Harness::new("steady", JOB, port);
    let up = series("up", port, "");
    let scraped = series("scrape_samples_scraped", port, "");
    let post = series("scrape_samples_post_metric_relabeling", port, "");
    let added = series("scrape_series_added", port, "");
    let duration = series("scrape_duration_seconds", port, "");
    let a = series("a", port, "");
    let b1 = series("b", port, "x=\"1\"");
    let b2 = series("b", port, "x=\"2\"");
    let c = series("c", port, "");

    let s1 = h.scrape();
    assert_eq!(s1.len(), 8, "{s1:#?}");
    assert_eq!(get(&s1, &up), 1.0);
    assert_eq!(get(&s1, &scraped), 3.0);
    assert_eq!(get(&s1, &post), 3.0);
    assert_eq!(get(&s1, &added), 3.0);
    assert!(get(&s1, &duration) > 0.0);
    assert_eq!(get(&s1, &b2), 3.0);
    let sets = h.stats.set_changes.get();

    let s2 = h.scrape();
    assert_eq!(get(&s2, &a), 2.0);
    assert_eq!(get(&s2, &added), 0.0);
    assert_eq!(h.stats.set_changes.get(), sets, "same series: no new set");

    let s3 = h.scrape();
    assert_eq!(
        s3.len(),
        9,
        "5 reports, a, b1, c, and b2's stale marker: {s3:#?}"
    );
    assert_eq!(s3[&b2], STALE);
    assert_eq!(get(&s3, &c), 5.0);
    assert_eq!(get(&s3, &b1), 4.0);
    assert_eq!(get(&s3, &added), 1.0);

    let s4 = h.scrape();
    assert_eq!(get(&s4, &up), 0.0);
    assert_eq!(get(&s4, &scraped), 0.0);
    for k in [&a, &b1, &c] {
        assert_eq!(s4[k], STALE, "{k} stale after a failed scrape");
    }
    assert!(!s4.contains_key(&b2), "stale-marked once only");

    let s5 = h.scrape();
    assert_eq!(s5.len(), 5, "a second failure: reports only: {s5:#?}");
    assert_eq!(get(&s5, &up), 0.0);

    let s6 = h.scrape();
    assert_eq!(s6.len(), 6, "{s6:#?}");
    assert_eq!(get(&s6, &up), 1.0);
    assert_eq!(get(&s6, &a), 9.0);
    // `a` was in the last good scrape: Prometheus' scrape cache outlives failures.
    assert_eq!(get(&s6, &added), 0.0);

    // The requests carried Prometheus' scrape headers.
    let reqs = requests.lock().expect("lock");
    let r = &reqs[0];
    assert_eq!(r.line, "GET /metrics HTTP/1.1");
    assert_eq!(r.header("accept"), Some(promlet::parse::ACCEPT_HEADER));
    assert_eq!(r.header("accept-encoding"), Some("gzip"));
    assert_eq!(r.header("x-prometheus-scrape-timeout-seconds"), Some("10"));
    assert!(r
        .header("user-agent")
        .is_some_and(|u| u.starts_with("promlet/")));
}

#[test]
fn parse_errors_and_limits_fail_the_scrape_with_prometheus_counts() {
    let (port, _) = target(vec![
        body("a 1\nb 2\n"),
        // Line 2 is bad: Prometheus reports the one series parsed before it.
        body("a 1\nb{ 2\nc 3\n"),
        body("a 1\nb 2\nc 3\nd 4\n"),
    ]);
    let mut h = Harness::new("errors", &format!("{JOB}    sample_limit: 3\n"), port);
    let up = series("up", port, "");
    let scraped = series("scrape_samples_scraped", port, "");
    let post = series("scrape_samples_post_metric_relabeling", port, "");
    h.scrape();
    let s = h.scrape();
    assert_eq!(get(&s, &up), 0.0);
    assert_eq!(get(&s, &scraped), 1.0, "{s:#?}");
    assert_eq!(s[&series("a", port, "")], STALE);
    let s = h.scrape();
    assert_eq!(get(&s, &up), 0.0, "sample_limit 3 with 4 samples");
    assert_eq!(get(&s, &scraped), 4.0);
    // Every sample relabeling kept, over the limit too (scrape.go counts them).
    assert_eq!(get(&s, &post), 4.0);
    assert_eq!(h.stats.exceeded_sample_limit.get(), 1);
}

/// RFC 1952 gzip of `data`, with a file name in the header.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut out = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(b"metrics.txt\0");
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_le_bytes());
    out
}

/// `data` in chunks of `size` bytes, as `Transfer-Encoding: chunked` frames it.
fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(size) {
        out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
    out
}

#[test]
fn gzip_and_chunked_bodies_stream_through_the_window() {
    // 20,000 series, about 900 KB: more than the socket buffer and the first window.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "container_cpu_usage_seconds_total{{id=\"/kubepods/pod{i}/c{i}\",cpu=\"total\"}} {i}\n"
        ));
    }
    let gz = gzip(text.as_bytes());
    let (port, _) = target(vec![
        body(&text),
        Answer::status("200 OK")
            .header("Content-Encoding", "gzip")
            .body(&gz),
        Answer::status("200 OK")
            .header("Transfer-Encoding", "chunked")
            .body(&chunked(text.as_bytes(), 7000)),
        Answer::status("200 OK")
            .header("Transfer-Encoding", "chunked")
            .header("Content-Encoding", "gzip")
            .body(&chunked(&gz, 333)),
        // A gzip bomb under body_size_limit's watch: 10 MB of comments after a valid line.
        Answer::status("200 OK")
            .header("Content-Encoding", "gzip")
            .body(&gzip(
                &[b"a 1\n".as_slice(), &b"# bomb\n".repeat(10 << 17)].concat(),
            )),
    ]);
    let mut h = Harness::new("gzip", &format!("{JOB}    body_size_limit: 2MB\n"), port);
    let up = series("up", port, "");
    let scraped = series("scrape_samples_scraped", port, "");
    let one = format!(
        "{{__name__=\"container_cpu_usage_seconds_total\",cpu=\"total\",\
         id=\"/kubepods/pod19999/c19999\",instance=\"127.0.0.1:{port}\",job=\"j\"}}"
    );
    for round in 0..4 {
        let s = h.scrape();
        assert_eq!(get(&s, &up), 1.0, "round {round}");
        assert_eq!(get(&s, &scraped), 20_000.0, "round {round}");
        assert_eq!(get(&s, &one), 19_999.0, "round {round}");
    }
    let s = h.scrape();
    assert_eq!(get(&s, &up), 0.0, "the bomb fails at body_size_limit");
    assert_eq!(
        get(&s, &scraped),
        0.0,
        "a body refused while read reports zeros"
    );
    assert_eq!(h.stats.exceeded_body_size_limit.get(), 1);
}

#[test]
fn timeouts_duplicates_and_honor_labels() {
    let (port, _) = target(vec![
        body("a{job=\"mine\"} 1\na{job=\"mine\"} 2\nb 1\n"),
        body("a 1\n").after(Duration::from_millis(1500)),
        body("a 1\n"),
    ]);
    let mut h = Harness::new(
        "timeout",
        &format!(
            "{JOB}    honor_labels: true\n    scrape_interval: 2s\n    scrape_timeout: 500ms\n"
        ),
        port,
    );
    let s = h.scrape();
    let mine = format!("{{__name__=\"a\",instance=\"127.0.0.1:{port}\",job=\"mine\"}}");
    assert_eq!(
        get(&s, &mine),
        1.0,
        "the first of two duplicates wins: {s:#?}"
    );
    assert_eq!(h.stats.duplicates.get(), 1);
    assert_eq!(
        get(
            &s,
            &series("scrape_samples_post_metric_relabeling", port, "")
        ),
        2.0
    );
    let s = h.scrape();
    assert_eq!(get(&s, &series("up", port, "")), 0.0, "timed out");
    assert_eq!(h.stats.timeouts.get(), 1);
    let d = get(&s, &series("scrape_duration_seconds", port, ""));
    assert!((0.5..1.4).contains(&d), "duration {d}");
    // The next scrape needs a fresh connection (the timed-out one was dropped).
    let s = h.scrape();
    assert_eq!(get(&s, &series("up", port, "")), 1.0);
}

#[test]
fn a_removed_target_stale_marks_everything() {
    let (port, _) = target(vec![body("a 1\nb 2\n")]);
    let mut h = Harness::new("removed", JOB, port);
    h.scrape();
    h.scraper.stale_all(&mut h.ring.borrow_mut());
    let mut out = Scrape::new();
    while let Some(b) = h.consumer.next_batch() {
        for v in b.values {
            out.insert(format!("{}", out.len()), v.to_bits());
        }
    }
    assert_eq!(out.len(), 7, "2 series and 5 report series");
    assert!(out.values().all(|&v| v == STALE));
}

/// What a scrape appended, explicit timestamps kept: rendered series → (timestamp, bits),
/// values not to send left out.
fn read_stamped(h: &mut Harness) -> BTreeMap<String, (i64, u64)> {
    let mut out = BTreeMap::new();
    while let Some(b) = h.consumer.next_batch() {
        for (i, v) in b.values.iter().enumerate() {
            let Some(ts) = b.timestamp(i) else {
                continue;
            };
            let name = b
                .series
                .owned(i)
                .into_iter()
                .find(|(n, _)| n == b"__name__")
                .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default();
            out.insert(name, (ts, v.to_bits()));
        }
        let next = b.next;
        h.consumer.commit(next);
    }
    out
}

#[test]
fn explicit_timestamps_are_honoured_ordered_and_never_stale_marked() {
    let (port, _) = target(vec![
        body("a 1\ne 5 1000\ngone 1 1000\n"),
        body("a 2\ne 6 900\n"),
        body("a 3\ne 7 2000\n"),
    ]);
    let mut h = Harness::new("stamped", JOB, port);
    let run = |h: &mut Harness| {
        h.ts += 1000;
        promlet::scrape::clock::block_on(&h.clock, h.scraper.scrape(&h.ring, &h.clock, h.ts));
        read_stamped(h)
    };
    let first = run(&mut h);
    assert_eq!(first["e"], (1000, 5f64.to_bits()));
    assert_eq!(first["gone"], (1000, 1f64.to_bits()));
    assert_eq!(first["a"], (h.ts, 1f64.to_bits()));
    assert_eq!(first["up"], (h.ts, 1f64.to_bits()));
    // 900 is older than e's last sample: out of order, not sent, counted; `gone` vanished
    // but carried a stamp: no stale marker.
    let second = run(&mut h);
    assert!(!second.contains_key("e"), "{second:?}");
    assert!(!second.contains_key("gone"), "{second:?}");
    assert_eq!(second["a"], (h.ts, 2f64.to_bits()));
    assert_eq!(get_u(&second, "scrape_samples_scraped"), 2.0);
    assert_eq!(h.stats.out_of_order.get(), 1);
    let third = run(&mut h);
    assert_eq!(third["e"], (2000, 7f64.to_bits()));
    // Removed: the series without a stamp and the report series get StaleNaN, `e` nothing.
    h.scraper.stale_all(&mut h.ring.borrow_mut());
    let gone = read_stamped(&mut h);
    assert_eq!(gone.len(), 6, "{gone:?}");
    assert!(!gone.contains_key("e"));
    assert!(gone.values().all(|&(_, v)| v == STALE));

    // honor_timestamps: false: the scrape's time for everything.
    let (port, _) = target(vec![body("a 1\ne 5 1000\n")]);
    let job = format!("{JOB}    honor_timestamps: false\n");
    let mut h = Harness::new("unstamped", &job, port);
    let got = run(&mut h);
    assert_eq!(got["e"], (h.ts, 5f64.to_bits()));
}

fn get_u(s: &BTreeMap<String, (i64, u64)>, name: &str) -> f64 {
    f64::from_bits(s[name].1)
}
