//! The remote-write encoding against a real receiver: scrapes written to the ring, read back
//! by a consumer, encoded as `prometheus.WriteRequest` + snappy by `promlet::send::encode`,
//! and POSTed to Debian's Prometheus 2.42 (`--web.enable-remote-write-receiver`) on
//! 127.0.0.1. Its query API must then give back every sample with the series' labels plus
//! the external label (a series' own `cluster` label winning), and a StaleNaN must end the
//! series as Prometheus' own staleness does. The same for Debian's VictoriaMetrics. Last, the
//! whole path: ring → `promlet::send::sender::Sender` on its thread → Prometheus.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use promlet::config::Config;
use promlet::send::encode::{WriteRequest, HEADERS};
use promlet::send::sender::{endpoint_key, Control, Sender, SenderStats};
use promlet::wal::{Chain, Ring, MIN_SIZE};
use support::http;
use support::peers::{prometheus_receiver, victoria_metrics, Peer, TempDir};

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Series `i`'s labels, sorted by name; series 2 has its own `cluster`.
fn labels(i: usize) -> Vec<(&'static str, String)> {
    let mut l = vec![("__name__", "promlet_rw_test".to_owned())];
    if i == 2 {
        l.push(("cluster", "mine".to_owned()));
    }
    l.push(("i", i.to_string()));
    l.push(("job", "rw".to_owned()));
    l
}

fn query(port: u16, q: &str, at_s: i64) -> String {
    let q: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http(
        port,
        &format!("GET /api/v1/query?query={q}&time={at_s} HTTP/1.0"),
        b"",
    )
    .expect("the query API answers");
    let body = String::from_utf8(body).expect("utf-8");
    assert_eq!(status, 200, "{body}");
    body
}

/// A receiver we started: its port and how it shows a stale marker.
struct Receiver {
    port: u16,
    /// Whether a raw range query shows a StaleNaN as a `NaN` point (VictoriaMetrics 1.79)
    /// rather than leaving it out (Prometheus).
    shows_stale_nan: bool,
    _process: Peer,
}

/// Both receivers take remote write here.
const WRITE_PATH: &str = "/api/v1/write";

fn start_prometheus(dir: &std::path::Path) -> Receiver {
    let peer = prometheus_receiver(dir);
    Receiver {
        port: peer.port,
        shows_stale_nan: false,
        _process: peer,
    }
}

fn start_victoria_metrics(dir: &std::path::Path) -> Receiver {
    let peer = victoria_metrics(dir);
    Receiver {
        port: peer.port,
        shows_stale_nan: true,
        _process: peer,
    }
}

fn now_s() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs(),
    )
    .expect("fits")
}

/// Scrape `k`'s value of series `i`; series 2 goes stale at the last scrape.
fn value(i: usize, k: usize) -> f64 {
    if i == 2 && k == 4 {
        f64::from_bits(STALE_NAN)
    } else {
        (i * 10 + k) as f64 + 0.5
    }
}

/// Five scrapes of three series, 15 s apart from `first_s`, written to `ring` (whose
/// endpoints were registered before: a new endpoint starts at the head).
fn write_scrapes(ring: &mut Ring, first_s: i64) {
    let mut chain = Chain::default();
    let sets: Vec<Vec<(&str, String)>> = (0..3).map(labels).collect();
    ring.append_series_set(
        &mut chain,
        7,
        sets.iter()
            .map(|l| l.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))),
    )
    .expect("set");
    for k in 0..5 {
        let values: Vec<f64> = (0..3).map(|i| value(i, k)).collect();
        let ts = (first_s + 15 * i64::try_from(k).expect("small")) * 1000;
        ring.append_samples(&mut chain, ts, &values)
            .expect("samples");
    }
}

/// The scrapes of [`write_scrapes`], written to a ring in `dir`, read back by a consumer and
/// sent by hand, one request per scrape.
fn send_scrapes(dir: &std::path::Path, first_s: i64, to: &Receiver) {
    let mut ring = Ring::open(&dir.join("ring"), MIN_SIZE).expect("ring");
    let mut consumer = ring.consumer(1).expect("consumer");
    write_scrapes(&mut ring, first_s);
    let external = vec![(b"cluster".to_vec(), b"edge-1".to_vec())];
    let mut request = WriteRequest::default();
    let mut sent = 0;
    while let Some(batch) = consumer.next_batch() {
        request.clear();
        for (i, &v) in batch.values.iter().enumerate() {
            batch.series.with_labels(i, |labels| {
                request.push(
                    labels.expect("a series of the set"),
                    &external,
                    &[(batch.timestamp_ms, v)],
                );
            });
        }
        let headers: String = HEADERS
            .iter()
            .map(|(k, v)| format!("\r\n{k}: {v}"))
            .collect();
        let head = format!(
            "POST {} HTTP/1.0{headers}\r\nUser-Agent: promlet-test",
            WRITE_PATH
        );
        let (status, body) = http(to.port, &head, request.body()).expect("the receiver answers");
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        let next = batch.next;
        consumer.commit(next);
        sent += 1;
    }
    assert_eq!(sent, 5);
}

/// One series of a query result: its labels sorted, then its points, as text.
fn series_of(json: &str) -> Vec<String> {
    json.split("{\"metric\":{")
        .skip(1)
        .map(|part| {
            let (labels, rest) = part.split_once('}').unwrap_or((part, ""));
            let mut labels: Vec<&str> = labels.split(',').collect();
            labels.sort_unstable();
            let points = rest
                .split_once("[[")
                .and_then(|(_, p)| p.split_once("]]"))
                .map_or("", |(p, _)| p);
            format!("{} => {points}", labels.join(","))
        })
        .collect()
}

/// What a range query over all of it must give, series by series (sorted).
fn expected_series(first_s: i64, shows_stale_nan: bool) -> Vec<String> {
    let mut want: Vec<String> = (0..3)
        .map(|i| {
            let cluster = if i == 2 { "mine" } else { "edge-1" };
            let points: Vec<String> = (0..5)
                .filter(|&k| shows_stale_nan || !(i == 2 && k == 4))
                .map(|k| {
                    let v = value(i, k);
                    let v = if v.is_nan() {
                        "NaN".to_owned()
                    } else {
                        v.to_string()
                    };
                    format!("{},\"{v}\"", first_s + 15 * k as i64)
                })
                .collect();
            let mut labels = [
                "\"__name__\":\"promlet_rw_test\"".to_owned(),
                format!("\"cluster\":\"{cluster}\""),
                format!("\"i\":\"{i}\""),
                "\"job\":\"rw\"".to_owned(),
            ];
            labels.sort_unstable();
            format!("{} => {}", labels.join(","), points.join("],["))
        })
        .collect();
    want.sort_unstable();
    want
}

/// Sends by hand, then checks what the receiver stored.
fn check_receiver(dir: &TempDir, to: &Receiver) {
    let now = now_s();
    let first_s = now - 60 - 4 * 15;
    send_scrapes(&dir.0, first_s, to);
    expect_stored(to, first_s, now);
}

/// Polls the range query as of `now` (for at most 30 s: a receiver may make new data
/// searchable a little later) until every series of [`write_scrapes`] is there; then checks
/// the stale marker.
fn expect_stored(to: &Receiver, first_s: i64, now: i64) {
    let want = expected_series(first_s, to.shows_stale_nan);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got, json) = loop {
        let json = query(to.port, "promlet_rw_test[10m]", now);
        let mut got = series_of(&json);
        got.sort_unstable();
        if got == want || Instant::now() > deadline {
            break (got, json);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(got, want, "{json}");
    if !to.shows_stale_nan {
        // At the last scrape, series 2 is stale: an instant query no longer finds it.
        let last = query(to.port, "promlet_rw_test", first_s + 60);
        assert_eq!(series_of(&last).len(), 2, "{last}");
        assert!(!last.contains("\"i\":\"2\""), "{last}");
    }
}

fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("rw-{name}"))
}

#[test]
fn a_real_prometheus_receives_what_the_ring_held() {
    let dir = temp_dir("prometheus");
    let receiver = start_prometheus(&dir.0);
    check_receiver(&dir, &receiver);
}

#[test]
fn victoria_metrics_receives_what_the_ring_held() {
    let dir = temp_dir("victoria");
    let receiver = start_victoria_metrics(&dir.0);
    check_receiver(&dir, &receiver);
}

#[test]
fn the_sender_thread_delivers_the_ring_to_a_real_prometheus() {
    let dir = temp_dir("sender");
    let receiver = start_prometheus(&dir.0);
    // Requests of at most 4 samples: the 15 samples take several requests, split mid-scrape.
    let text = format!(
        "global:\n  external_labels: {{cluster: edge-1}}\nremote_write:\n  - url: http://127.0.0.1:{}{WRITE_PATH}\n    queue_config: {{max_samples_per_send: 4, batch_send_deadline: 200ms}}\n",
        receiver.port
    );
    let config = Config::parse(
        &text,
        std::path::Path::new("rw.yml"),
        std::path::Path::new("/"),
    )
    .expect("config");
    let rw = &config.remote_write[0];
    let mut ring = Ring::open(&dir.0.join("ring"), MIN_SIZE).expect("ring");
    let consumer = ring.consumer(endpoint_key(rw)).expect("consumer");
    let now = now_s();
    let first_s = now - 60 - 4 * 15;
    write_scrapes(&mut ring, first_s);
    let (stats, control) = (Arc::<SenderStats>::default(), Arc::<Control>::default());
    let sender = Sender::new(
        rw,
        &config.global.external_labels,
        consumer,
        Arc::clone(&stats),
        Arc::clone(&control),
    )
    .expect("sender");
    let thread = sender.spawn("promlet-send-0".to_owned()).expect("spawn");
    expect_stored(&receiver, first_s, now);
    control.stop(Instant::now() + Duration::from_secs(10));
    thread.join().expect("the sender returns");
    assert_eq!(stats.samples_total.load(Ordering::Relaxed), 15);
    assert_eq!(stats.samples_failed_total.load(Ordering::Relaxed), 0);
    assert!(stats.sent_batches_total.load(Ordering::Relaxed) >= 4);
    assert_eq!(
        ring.endpoint(endpoint_key(rw)).expect("endpoint").cursor,
        ring.head()
    );
}
