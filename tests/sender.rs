//! The sender thread against a fault-injecting receiver on 127.0.0.1: scrapes written to a
//! ring, a `Sender` on its own thread, and a scripted receiver (tests/support/receiver.rs)
//! that decodes every request and answers as told (5xx, 429 with `Retry-After`, 400, slow
//! answers). Each test checks what arrived (order, exactly once, labels), what was counted,
//! and where the ring cursor ended. Every wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use promlet::config::{Config, RemoteWriteConfig};
use promlet::send::sender::{endpoint_key, Control, Sender, SenderStats};
use promlet::wal::{Chain, Ring, MIN_SIZE};
use support::receiver::{Answer, Posted, Received, Scripted};

/// Every bounded wait of these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// The first scrape's timestamp, ms.
const BASE_MS: i64 = 1_700_000_000_000;

// ------------------------------------------------------------------------ captured logs

/// Every log line of this test process, so tests can check what is (not) logged.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LINES.lock().expect("lock").push(line);
    }

    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("the only logger");
        // Up to debug, promlet's most verbose per-request level. ureq's trace level dumps the
        // wire bytes, headers included: promlet's logger must never enable it for ureq.
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn logs() -> Vec<String> {
    LINES.lock().expect("lock").clone()
}

// ------------------------------------------------------------------------ the node side

/// Series `i`'s labels, sorted by name; series 2 has its own `cluster`.
fn labels(i: usize) -> Vec<(String, String)> {
    let mut l = vec![("__name__".to_owned(), "promlet_send_test".to_owned())];
    if i == 2 {
        l.push(("cluster".to_owned(), "mine".to_owned()));
    }
    l.push(("i".to_owned(), i.to_string()));
    l.push(("job".to_owned(), "send".to_owned()));
    l
}

fn value(i: usize, k: u64) -> f64 {
    (i as f64) * 100.0 + k as f64 + 0.25
}

fn ts(k: u64) -> i64 {
    BASE_MS + 15_000 * i64::try_from(k).expect("small")
}

/// A temporary directory with a ring and one target's chain of `n` series.
struct Node {
    dir: PathBuf,
    ring: Ring,
    chain: Chain,
    n: usize,
}

impl Node {
    fn new(name: &str, n: usize) -> Node {
        let dir =
            std::env::temp_dir().join(format!("promlet-sender-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut ring = Ring::open(&dir.join("ring"), 16 * MIN_SIZE).expect("ring");
        let mut chain = Chain::default();
        let sets: Vec<Vec<(String, String)>> = (0..n).map(labels).collect();
        ring.append_series_set(
            &mut chain,
            1,
            sets.iter()
                .map(|l| l.iter().map(|(a, b)| (a.as_bytes(), b.as_bytes()))),
        )
        .expect("set");
        Node {
            dir,
            ring,
            chain,
            n,
        }
    }

    /// Writes scrape `k`.
    fn scrape(&mut self, k: u64) {
        let values: Vec<f64> = (0..self.n).map(|i| value(i, k)).collect();
        self.ring
            .append_samples(&mut self.chain, ts(k), &values)
            .expect("samples");
    }

    /// Makes the ring know `rw`'s endpoint: a new endpoint starts at the head, so this comes
    /// before the scrapes it must be sent.
    fn register(&mut self, rw: &RemoteWriteConfig) {
        drop(self.ring.consumer(endpoint_key(rw)).expect("consumer"));
    }

    fn cursor(&self, key: u64) -> u64 {
        self.ring.endpoint(key).expect("endpoint").cursor
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the receiver must see for series `i` of scrape `k` (external label `cluster=edge-1`
/// unless the series has its own), plus `extra` labels.
fn expected(i: usize, k: u64, extra: &[(&str, String)]) -> Received {
    let mut l: BTreeMap<String, String> = labels(i).into_iter().collect();
    l.entry("cluster".to_owned())
        .or_insert_with(|| "edge-1".to_owned());
    for (n, v) in extra {
        l.insert((*n).to_owned(), v.clone());
    }
    (l, vec![(value(i, k).to_bits(), ts(k))])
}

fn all(n: usize, scrapes: std::ops::Range<u64>) -> Vec<Received> {
    scrapes
        .flat_map(|k| (0..n).map(move |i| expected(i, k, &[])))
        .collect()
}

/// A `remote_write` entry for `url` with `extra` YAML lines (indented four spaces), and
/// `external_labels: {cluster: edge-1}`.
fn config(url: &str, extra: &str) -> (RemoteWriteConfig, Vec<(String, String)>) {
    let text = format!(
        "global:\n  external_labels: {{cluster: edge-1}}\nremote_write:\n  - url: {url}\n{extra}"
    );
    let cfg = Config::parse(&text, Path::new("sender-test.yml"), Path::new("/"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    (
        cfg.remote_write[0].clone(),
        cfg.global.external_labels.clone(),
    )
}

/// A sender running on its thread.
struct Running {
    handle: Option<JoinHandle<()>>,
    control: Arc<Control>,
    stats: Arc<SenderStats>,
    key: u64,
}

impl Running {
    fn start(node: &mut Node, rw: &RemoteWriteConfig, external: &[(String, String)]) -> Running {
        Running::start_with(node, rw, external, None)
    }

    fn start_with(
        node: &mut Node,
        rw: &RemoteWriteConfig,
        external: &[(String, String)],
        sync_every: Option<Duration>,
    ) -> Running {
        capture_logs();
        let key = endpoint_key(rw);
        let consumer = node.ring.consumer(key).expect("consumer");
        let (stats, control) = (Arc::<SenderStats>::default(), Arc::<Control>::default());
        let mut sender = Sender::new(
            rw,
            external,
            consumer,
            Arc::clone(&stats),
            Arc::clone(&control),
        )
        .expect("sender");
        if let Some(every) = sync_every {
            sender = sender.with_sync(node.ring.syncer(), every);
        }
        let handle = sender.spawn("promlet-send-test".to_owned()).expect("spawn");
        Running {
            handle: Some(handle),
            control,
            stats,
            key,
        }
    }

    /// Stops with `deadline` from now; returns how long the sender took to return.
    fn stop(&mut self, deadline: Duration) -> Duration {
        let t = Instant::now();
        self.control.stop(t + deadline);
        if let Some(h) = self.handle.take() {
            h.join().expect("the sender thread does not panic");
        }
        t.elapsed()
    }

    fn stat(&self, pick: fn(&SenderStats) -> u64) -> u64 {
        pick(&self.stats)
    }

    /// Waits until `pick` counts at least `n`, or [`LIMIT`] passed (the caller asserts).
    fn wait_for(&self, pick: fn(&SenderStats) -> u64, n: u64) {
        let deadline = Instant::now() + LIMIT;
        while self.stat(pick) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test must not leave a sender behind.
        if self.handle.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

fn samples(w: &[Posted]) -> usize {
    w.iter()
        .map(|p| p.series.iter().map(|s| s.1.len()).sum::<usize>())
        .sum()
}

const FAST: &str = "    queue_config: {batch_send_deadline: 100ms}\n";

// ------------------------------------------------------------------------ the tests

#[test]
fn every_sample_arrives_once_in_order_with_external_labels_split_at_max_samples_per_send() {
    let receiver = Scripted::start(vec![], Answer::ok());
    let mut node = Node::new("order", 25);
    let (rw, ext) = config(
        &receiver.url(),
        "    queue_config: {max_samples_per_send: 10, batch_send_deadline: 100ms}\n",
    );
    node.register(&rw);
    for k in 0..4 {
        node.scrape(k);
    }
    let mut run = Running::start(&mut node, &rw, &ext);
    // More while it runs: the producer wakes the sender.
    for k in 4..8 {
        std::thread::sleep(Duration::from_millis(30));
        node.scrape(k);
    }
    let writes = receiver.wait_until(LIMIT, |w| samples(w) >= 200);
    run.stop(LIMIT);
    assert_eq!(receiver.delivered(), all(25, 0..8));
    let sizes: Vec<usize> = writes
        .iter()
        .map(|w| samples(std::slice::from_ref(w)))
        .collect();
    assert!(sizes.iter().all(|&s| (1..=10).contains(&s)), "{sizes:?}");
    // The four scrapes already in the ring went out as full requests.
    assert!(
        sizes.iter().filter(|&&s| s == 10).count() >= 10,
        "{sizes:?}"
    );
    let s = &run.stats;
    assert_eq!(load(&s.samples_total), 200);
    assert_eq!(
        load(&s.sent_batches_total),
        u64::try_from(writes.len()).expect("fits")
    );
    assert!(load(&s.sent_bytes_total) > 0);
    assert_eq!(load(&s.samples_pending), 0);
    assert_eq!(load(&s.failed_requests_total), 0);
    assert_eq!(
        s.highest_sent_timestamp_ms
            .load(std::sync::atomic::Ordering::Relaxed),
        ts(7)
    );
    assert_eq!(node.cursor(run.key), node.ring.head());
    // One keep-alive connection would do; at least the requests were not one per series.
    assert!(writes.len() <= 40, "{}", writes.len());
}

#[test]
fn a_5xx_is_retried_and_the_samples_are_delivered_once() {
    let receiver = Scripted::start(
        vec![Answer::status("500 Internal Server Error").body(b"try later")],
        Answer::ok(),
    );
    let mut node = Node::new("5xx", 5);
    let (rw, ext) = config(&receiver.url(), FAST);
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 2);
    run.stop(LIMIT);
    let answered: Vec<u16> = writes.iter().map(|w| w.answered).collect();
    assert_eq!(answered, [500, 204]);
    assert_eq!(writes[0].series, writes[1].series, "the same request again");
    assert_eq!(receiver.delivered(), all(5, 0..1));
    assert_eq!(run.stat(|s| load(&s.samples_retried_total)), 5);
    assert_eq!(run.stat(|s| load(&s.failed_requests_total)), 1);
    assert_eq!(run.stat(|s| load(&s.samples_total)), 5);
    assert_eq!(node.cursor(run.key), node.ring.head());
}

#[test]
fn retry_after_on_429_and_503_is_honoured() {
    let receiver = Scripted::start(
        vec![
            Answer::status("429 Too Many Requests").header("Retry-After", "1"),
            Answer::status("503 Service Unavailable").header("Retry-After", "1"),
        ],
        Answer::ok(),
    );
    let mut node = Node::new("429", 3);
    // min_backoff 30ms (the default): without Retry-After the retries would come at once.
    let (rw, ext) = config(&receiver.url(), FAST);
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 3);
    run.stop(LIMIT);
    assert_eq!(
        writes.iter().map(|w| w.answered).collect::<Vec<_>>(),
        [429, 503, 204]
    );
    for pair in writes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    }
    assert_eq!(receiver.delivered(), all(3, 0..1));
    assert_eq!(run.stat(|s| load(&s.samples_retried_total)), 6);
}

#[test]
fn a_429_is_dropped_when_retry_on_http_429_is_false() {
    let receiver = Scripted::start(vec![Answer::status("429 Too Many Requests")], Answer::ok());
    let mut node = Node::new("429-off", 4);
    let (rw, ext) = config(
        &receiver.url(),
        "    queue_config: {batch_send_deadline: 100ms, retry_on_http_429: false}\n",
    );
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    receiver.wait_until(LIMIT, |w| !w.is_empty());
    node.scrape(1);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 2);
    run.stop(LIMIT);
    assert_eq!(
        writes.iter().map(|w| w.answered).collect::<Vec<_>>(),
        [429, 204]
    );
    assert_eq!(receiver.delivered(), all(4, 1..2));
    assert_eq!(run.stat(|s| load(&s.samples_failed_total)), 4);
    assert_eq!(run.stat(|s| load(&s.samples_retried_total)), 0);
}

#[test]
fn a_400_drops_the_request_counts_it_and_later_samples_still_arrive() {
    let mut body = b"out of order sample; ".to_vec();
    body.resize(64, b'.');
    body.extend_from_slice(b"TAIL-NOT-LOGGED");
    let receiver = Scripted::start(
        vec![Answer::status("400 Bad Request").body(&body)],
        Answer::ok(),
    );
    let mut node = Node::new("400", 6);
    let (rw, ext) = config(&receiver.url(), FAST);
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    receiver.wait_until(LIMIT, |w| !w.is_empty());
    node.scrape(1);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 2);
    run.stop(LIMIT);
    assert_eq!(
        writes.iter().map(|w| w.answered).collect::<Vec<_>>(),
        [400, 204]
    );
    assert_eq!(receiver.delivered(), all(6, 1..2));
    assert_eq!(run.stat(|s| load(&s.samples_failed_total)), 6);
    assert_eq!(run.stat(|s| load(&s.samples_total)), 6);
    assert_eq!(run.stat(|s| load(&s.failed_requests_total)), 1);
    assert_eq!(
        node.cursor(run.key),
        node.ring.head(),
        "the cursor passed the drop"
    );
    let logs = logs();
    assert!(
        logs.iter().any(|l| l.starts_with("WARN")
            && l.contains("http 400")
            && l.contains("out of order sample")),
        "{logs:#?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("TAIL-NOT-LOGGED")),
        "at most 64 bytes of a body"
    );
}

#[test]
fn a_receiver_slower_than_remote_timeout_is_retried() {
    let receiver = Scripted::start(
        vec![Answer::ok().after(Duration::from_secs(2))],
        Answer::ok(),
    );
    let mut node = Node::new("slow", 4);
    let (rw, ext) = config(
        &receiver.url(),
        "    remote_timeout: 500ms\n    queue_config: {batch_send_deadline: 100ms}\n",
    );
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 2);
    run.wait_for(|s| load(&s.samples_total), 4);
    run.stop(LIMIT);
    assert!(writes.len() >= 2, "{}", writes.len());
    assert_eq!(writes[0].series, writes[1].series, "the same request again");
    assert!(run.stat(|s| load(&s.failed_requests_total)) >= 1);
    assert!(run.stat(|s| load(&s.samples_retried_total)) >= 4);
    // Acknowledged once, by the second answer.
    assert_eq!(run.stat(|s| load(&s.samples_total)), 4);
    assert_eq!(node.cursor(run.key), node.ring.head());
}

#[test]
fn headers_and_a_token_file_read_fresh_for_every_request() {
    let receiver = Scripted::start(vec![], Answer::ok());
    let mut node = Node::new("headers", 2);
    let token = node.dir.join("token");
    std::fs::write(&token, "tok-first-5ecret\n").expect("token");
    let (rw, ext) = config(
        &receiver.url(),
        &format!(
            "    headers: {{X-Scope-OrgID: tenant-1}}\n    authorization: {{credentials_file: {}}}\n{FAST}",
            token.display()
        ),
    );
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    receiver.wait_until(LIMIT, |w| !w.is_empty());
    std::fs::write(&token, "tok-second-5ecret\n").expect("token");
    node.scrape(1);
    let writes = receiver.wait_until(LIMIT, |w| w.len() >= 2);
    run.stop(LIMIT);
    assert_eq!(writes.len(), 2);
    for (w, tok) in writes.iter().zip(["tok-first-5ecret", "tok-second-5ecret"]) {
        let r = &w.request;
        assert!(
            r.line.starts_with("POST /api/v1/write HTTP/1.1"),
            "{}",
            r.line
        );
        let want_agent = format!("promlet/{}", env!("CARGO_PKG_VERSION"));
        assert_eq!(r.header("user-agent"), Some(want_agent.as_str()));
        assert_eq!(r.header("content-encoding"), Some("snappy"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
        assert_eq!(r.header("x-scope-orgid"), Some("tenant-1"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {tok}").as_str())
        );
    }
    assert_eq!(receiver.delivered(), all(2, 0..2));
    let logs = logs();
    assert!(!logs.iter().any(|l| l.contains("5ecret")), "{logs:#?}");
}

#[test]
fn basic_auth_goes_out_as_rfc_7617_says() {
    let receiver = Scripted::start(vec![], Answer::ok());
    let mut node = Node::new("basic", 1);
    let (rw, ext) = config(
        &receiver.url(),
        &format!("    basic_auth: {{username: Aladdin, password: open sesame}}\n{FAST}"),
    );
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    let writes = receiver.wait_until(LIMIT, |w| !w.is_empty());
    run.stop(LIMIT);
    assert_eq!(
        writes[0].request.header("authorization"),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
}

#[test]
fn write_relabel_configs_see_external_labels_and_drops_are_counted() {
    let receiver = Scripted::start(vec![], Answer::ok());
    let mut node = Node::new("relabel", 5);
    let (rw, ext) = config(
        &receiver.url(),
        &format!(
            "    write_relabel_configs:\n      - {{source_labels: [i], regex: '1|3', action: drop}}\n      - {{source_labels: [cluster], target_label: from_ext}}\n{FAST}"
        ),
    );
    node.register(&rw);
    node.scrape(0);
    node.scrape(1);
    let mut run = Running::start(&mut node, &rw, &ext);
    receiver.wait_until(LIMIT, |w| samples(w) >= 6);
    run.stop(LIMIT);
    let want: Vec<Received> = (0..2)
        .flat_map(|k| {
            [0, 2, 4].into_iter().map(move |i| {
                let cluster = if i == 2 { "mine" } else { "edge-1" };
                expected(i, k, &[("from_ext", cluster.to_owned())])
            })
        })
        .collect();
    assert_eq!(receiver.delivered(), want);
    assert_eq!(run.stat(|s| load(&s.samples_dropped_total)), 4);
    assert_eq!(run.stat(|s| load(&s.samples_total)), 6);
    assert_eq!(node.cursor(run.key), node.ring.head());
}

#[test]
fn stop_sends_what_waits_for_the_batch_deadline_then_returns_and_syncs() {
    let receiver = Scripted::start(vec![], Answer::ok());
    let mut node = Node::new("drain", 3);
    let (rw, ext) = config(
        &receiver.url(),
        "    queue_config: {batch_send_deadline: 1h}\n",
    );
    node.register(&rw);
    let syncs = node.ring.stats().syncs;
    node.scrape(0);
    let mut run = Running::start_with(&mut node, &rw, &ext, Some(Duration::from_millis(50)));
    // The first request goes out at once, deadline or not.
    receiver.wait_until(LIMIT, |w| !w.is_empty());
    node.scrape(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        receiver.writes().len(),
        1,
        "the second waits for batch_send_deadline"
    );
    assert!(run.stat(|s| load(&s.samples_pending)) > 0);
    let took = run.stop(LIMIT);
    assert!(took < LIMIT / 2, "returned after {took:?}");
    assert_eq!(receiver.delivered(), all(3, 0..2));
    assert_eq!(node.cursor(run.key), node.ring.head());
    assert_eq!(run.stat(|s| load(&s.samples_pending)), 0);
    assert!(
        node.ring.stats().syncs > syncs,
        "the sender ran the ring's sync"
    );
}

#[test]
fn stop_with_a_dead_receiver_returns_at_its_next_failure_without_committing() {
    let receiver = Scripted::start(vec![], Answer::status("503 Service Unavailable"));
    let mut node = Node::new("dead", 3);
    let (rw, ext) = config(&receiver.url(), FAST);
    node.register(&rw);
    node.scrape(0);
    let before = {
        let mut run = Running::start(&mut node, &rw, &ext);
        receiver.wait_until(LIMIT, |w| w.len() >= 3);
        let before = node.cursor(run.key);
        // A failure while stopping ends the stop at once (the ring keeps the data), well
        // before the 10 s deadline.
        let took = run.stop(Duration::from_secs(10));
        assert!(took < Duration::from_secs(3), "returned after {took:?}");
        assert_eq!(run.stat(|s| load(&s.samples_total)), 0);
        assert!(run.stat(|s| load(&s.samples_retried_total)) >= 6);
        before
    };
    let key = endpoint_key(&rw);
    assert_eq!(node.cursor(key), before, "nothing committed");
    assert!(before < node.ring.head());
    // The data is still there for the next start: a new reader under the same key gets it.
    let mut again = node.ring.consumer(key).expect("consumer again");
    let batch = again.next_batch().expect("the unsent scrape");
    assert_eq!((batch.timestamp_ms, batch.values.len()), (ts(0), 3));
}

#[test]
fn no_secret_or_userinfo_reaches_the_log() {
    let port = support::free_port();
    let mut node = Node::new("userinfo", 1);
    let (rw, ext) = config(
        &format!("http://someone:hunter2-pw@127.0.0.1:{port}/secret-path/api/v1/write"),
        &format!("    bearer_token: tok-inline-5ecret\n{FAST}"),
    );
    node.register(&rw);
    node.scrape(0);
    let mut run = Running::start(&mut node, &rw, &ext);
    run.wait_for(|s| load(&s.failed_requests_total), 2);
    run.stop(Duration::ZERO);
    assert!(run.stat(|s| load(&s.failed_requests_total)) >= 2);
    let logs = logs();
    let mine: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains(&format!("127.0.0.1:{port}")))
        .collect();
    assert!(!mine.is_empty(), "{logs:#?}");
    for l in &logs {
        for secret in ["hunter2", "someone", "secret-path", "5ecret"] {
            assert!(!l.contains(secret), "{secret} logged: {l}");
        }
    }
}

// ------------------------------------------------------------------------ TLS

use support::tls::make_certificates;

/// Runs a sender for `rw` (an https receiver on 127.0.0.1:`port` it cannot verify) until its
/// first failed attempt, stops it, and asserts nothing was delivered. Returns the warning it
/// logged about the failure.
fn first_failure(
    node: &mut Node,
    rw: &RemoteWriteConfig,
    external: &[(String, String)],
    port: u16,
) -> String {
    let mut run = Running::start(node, rw, external);
    run.wait_for(|s| load(&s.failed_requests_total), 1);
    run.stop(Duration::ZERO);
    assert_eq!(run.stat(|s| load(&s.samples_total)), 0);
    assert!(run.stat(|s| load(&s.failed_requests_total)) >= 1);
    let origin = format!("https://127.0.0.1:{port}: no answer: ");
    let logs = logs();
    let warned = logs
        .iter()
        .find(|l| l.starts_with("WARN") && l.contains(&origin));
    match warned {
        Some(w) => w.clone(),
        None => panic!("no warning for {origin}: {logs:#?}"),
    }
}

#[test]
fn tls_verifies_the_receiver_with_ca_file_and_presents_a_client_certificate() {
    let mut node = Node::new("tls", 2);
    let dir = node.dir.clone();
    make_certificates(&dir);
    let port = support::free_port();
    // `openssl s_server` as the receiver: it demands a client certificate signed by the CA,
    // prints what it receives, and sends what it reads from stdin.
    let mut server = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            "srv.pem",
        ])
        .args([
            "-key", "srv.key", "-Verify", "1", "-CAfile", "ca.pem", "-quiet",
        ])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let mut answer = server.stdin.take().expect("stdin");
    let printed = server.stdout.take().expect("stdout");
    let _server = support::Killed(server);
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut lines = std::io::BufReader::new(printed);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if line.starts_with(b"POST ") || line.starts_with(b"user-agent:") {
                let _ = seen_tx.send(line.clone());
            }
            if line.starts_with(b"POST ") {
                let _ = answer.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
                let _ = answer.flush();
            }
            line.clear();
        }
    });
    // Listening before the senders start, so their first failure is about certificates.
    let deadline = Instant::now() + LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("https://127.0.0.1:{port}/api/v1/write");
    // Without the CA the receiver's certificate does not verify: retried, never delivered.
    let (untrusted, ext) = config(&format!("{url}?untrusted"), FAST);
    let (rw, _) = config(
        &url,
        &format!(
            "    tls_config: {{ca_file: {0}/ca.pem, cert_file: {0}/cli.pem, key_file: {0}/cli.key}}\n{FAST}",
            dir.display()
        ),
    );
    node.register(&untrusted);
    node.register(&rw);
    node.scrape(0);
    let warned = first_failure(&mut node, &untrusted, &ext, port);
    assert!(
        warned.contains("no answer: x509: certificate signed by unknown authority; retrying"),
        "{warned}"
    );
    let mut run = Running::start(&mut node, &rw, &ext);
    run.wait_for(|s| load(&s.samples_total), 2);
    run.stop(LIMIT);
    assert_eq!(run.stat(|s| load(&s.samples_total)), 2);
    assert_eq!(node.cursor(run.key), node.ring.head());
    let seen: Vec<String> = seen_rx
        .try_iter()
        .map(|l| String::from_utf8_lossy(&l).trim_end().to_owned())
        .collect();
    assert!(
        seen.iter().any(|l| l == "POST /api/v1/write HTTP/1.1"),
        "{seen:?}"
    );
}

#[test]
fn tls_files_and_unsupported_settings_are_refused_by_name() {
    capture_logs();
    let mut node = Node::new("tls-refused", 1);
    let dir = node.dir.clone();
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").expect("write");
    let (base, ext) = config("https://127.0.0.1:1/api/v1/write", "");
    let refuse = |node: &mut Node, change: &dyn Fn(&mut RemoteWriteConfig)| -> String {
        let mut rw = base.clone();
        change(&mut rw);
        let consumer = node.ring.consumer(endpoint_key(&rw)).expect("consumer");
        match Sender::new(&rw, &ext, consumer, Arc::default(), Arc::default()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let missing = dir.join("missing.pem").display().to_string();
    let empty = dir.join("empty.pem").display().to_string();
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.ca_file = missing.clone()
    });
    assert!(
        e.starts_with(&format!("tls_config.ca_file {missing}: ")),
        "{e}"
    );
    let e = refuse(&mut node, &|rw| rw.http.tls_config.ca_file = empty.clone());
    assert_eq!(
        e,
        format!("tls_config.ca_file {empty}: no certificate in it")
    );
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.cert_file = empty.clone()
    });
    assert_eq!(
        e,
        format!("tls_config.cert_file {empty}: client cert file specified without client key file")
    );
    make_certificates(&dir);
    let v1 = dir.join("v1.pem").display().to_string();
    let key = dir.join("cli.key").display().to_string();
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.cert_file = v1.clone();
        rw.http.tls_config.key_file = key.clone();
    });
    assert_eq!(
        e,
        format!("tls_config.cert_file {v1}: not an X.509 v3 certificate (rustls takes v3 only)")
    );
    // A key that is not the certificate's: refused here, where ureq would panic at the first
    // connection (and abort the process).
    let cli = dir.join("cli.pem").display().to_string();
    let other_key = dir.join("srv.key").display().to_string();
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.cert_file = cli.clone();
        rw.http.tls_config.key_file = other_key.clone();
    });
    assert!(
        e.starts_with(&format!(
            "tls_config.key_file {other_key}: refused with cert_file: "
        )),
        "{e}"
    );
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.cert_file = cli.clone();
        rw.http.tls_config.key_file = empty.clone();
    });
    assert_eq!(
        e,
        format!("tls_config.key_file {empty}: no usable private key in it")
    );
    let e = refuse(&mut node, &|rw| {
        rw.http.tls_config.server_name = "other".to_owned()
    });
    assert!(
        e.starts_with("tls_config.server_name: not supported"),
        "{e}"
    );
    let e = refuse(&mut node, &|rw| {
        rw.headers
            .push(("X-Bad".to_owned(), "line\nbreak".to_owned()));
    });
    assert_eq!(e, "headers: X-Bad: not a valid http header");
}

#[test]
fn certificate_failures_are_logged_in_gos_words_not_rustls_debug_form() {
    use support::receiver::Answer;
    use support::tls::{serve_tls, server_config};
    let mut node = Node::new("tls-words", 1);
    let dir = node.dir.clone();
    make_certificates(&dir);
    let server = |cert: &str, key: &str| {
        let config = server_config(&dir.join(cert), &dir.join(key), None);
        serve_tls(config, |_| Answer::status("204 No Content"))
    };
    let trusting = |ca: &str| {
        format!(
            "    tls_config: {{ca_file: {}}}\n{FAST}",
            dir.join(ca).display()
        )
    };
    let cases = [
        // Signed by a CA the sender does not trust.
        (
            server("srv.pem", "srv.key"),
            trusting("other-ca.pem"),
            vec!["no answer: x509: certificate signed by unknown authority; retrying"],
        ),
        // Valid on 2020-01-01 only.
        (
            server("expired.pem", "srv.key"),
            trusting("ca.pem"),
            vec![
                "x509: certificate has expired or is not yet valid: current time ",
                " is after 2020-01-02T00:00:00Z",
            ],
        ),
        // The CA's own certificate as the server's (issue 17's `CaUsedAsEndEntity`).
        (
            server("ca.pem", "ca.key"),
            trusting("ca.pem"),
            vec!["x509: certificate signed by unknown authority (a CA certificate presented as the server's own)"],
        ),
        // Valid for other.example only.
        (
            server("wrongname.pem", "srv.key"),
            trusting("ca.pem"),
            vec!["x509: certificate is valid for other.example, not 127.0.0.1"],
        ),
    ];
    for (port, tls, words) in cases {
        let (rw, ext) = config(&format!("https://127.0.0.1:{port}/api/v1/write"), &tls);
        node.register(&rw);
        node.scrape(0);
        let warned = first_failure(&mut node, &rw, &ext, port);
        for w in &words {
            assert!(warned.contains(w), "{w:?} not in {warned}");
        }
        for debug in [
            "Other(",
            "OtherError",
            "CaUsedAsEndEntity",
            "Context {",
            "io: ",
        ] {
            assert!(!warned.contains(debug), "{debug:?} in {warned}");
        }
    }
}
