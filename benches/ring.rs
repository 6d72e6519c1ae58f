//! The ring on the bench workload (issue 5): bytes per sample appended and written, append
//! and decode speed, all measured in one run.
//!
//! `cargo bench --bench ring` starts the bench workload on 127.0.0.1: `../shared/bench/
//! exporter.py` as the harness mixes it (cadvisor 6000, kube-state-metrics 2500, app 1500
//! series: about 10k; every value changes every scrape, the deliberate worst case) plus
//! Debian's `prometheus-node-exporter`, and scrapes each target 100 times. Then, on those
//! parsed scrapes:
//! - **append**: each target a [`Chain`] (a series-set, then samples records), into a 64 MiB
//!   ring, timed: ring bytes per sample (samples records alone, and all records), append
//!   samples/s and MB/s of ring;
//! - **decode**: a [`Consumer`](promlet::wal::Consumer) reads every scrape back, timed, and
//!   every value is checked bit for bit;
//! - **written**: the appends again on a fresh ring in simulated time (5 s interval, targets
//!   spread over it), synced every `--storage.agent.sync-interval` of 1 s, 5 s, 10 s and 30 s;
//!   `/proc/self/io` `write_bytes` per sample is what the disk was asked to write (the kernel's
//!   own write-back waits 30 s, longer than this runs, so the syncs are all of it).
//! - the same for node_exporter alone (30 real scrapes 1 s apart, simulated at 15 s).
//!
//! It prints the hours a 64 MiB ring holds for 10k series at 15 s, and a table of ring sizes
//! (256 KiB, 1 MiB, 8 MiB, 64 MiB) against one kube-state-metrics and one cadvisor target of
//! 5k and of 50k series each (issue
//! 17): ring bytes per sample with the set copies, the share of the ring the samples records
//! take, and the scrapes the ring holds, all and decodable from its tail. Under `cargo test`
//! (no `--bench`) it makes three scrapes of node_exporter: checked, not measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use promlet::labels::LabelSet;
use promlet::parse::{Entry, Format, Parser, Step};
use promlet::wal::{Chain, Consumer, Ring};
use support::{free_port, Killed};

/// GET `path` from 127.0.0.1:`port` as text 0.0.4; the body, or `None` if nothing answers.
fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    let head = format!("GET {path} HTTP/1.0\r\nAccept: text/plain;version=0.0.4");
    support::http(port, &head, b"").map(|(_, body)| body)
}

fn wait_up(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, path).is_none() {
        assert!(
            Instant::now() < deadline,
            "target on port {port} did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One series' labels, owned.
type Labels = Vec<(Vec<u8>, Vec<u8>)>;

/// One parsed scrape: label sets (sorted, `__name__` included) and values, in body order.
fn parse(body: &[u8]) -> (Vec<Labels>, Vec<f64>) {
    let mut parser = Parser::new(Format::Text);
    let mut set = LabelSet::new();
    let (mut sets, mut values) = (Vec::new(), Vec::new());
    let mut used_total = 0;
    loop {
        match parser
            .next(&body[used_total..], true)
            .expect("a valid body")
        {
            Step::Entry(entry, used) => {
                if let Entry::Series {
                    data,
                    name,
                    labels,
                    value,
                    ..
                } = entry
                {
                    set.fill_series(data, name, labels);
                    sets.push(set.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect());
                    values.push(value);
                }
                used_total += used;
            }
            Step::End(_) => return (sets, values),
            Step::NeedMore => unreachable!("eof is set"),
        }
    }
}

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| {
                    l.strip_prefix("write_bytes: ")
                        .map(|v| v.trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

/// A target's scrapes: its label sets (constant here) and each scrape's values.
struct Scrapes {
    sets: Vec<Labels>,
    values: Vec<Vec<f64>>,
}

fn scrape(port: u16, path: &str, times: usize, pause: Duration) -> Scrapes {
    let mut out = Scrapes {
        sets: Vec::new(),
        values: Vec::new(),
    };
    for i in 0..times {
        if i > 0 {
            std::thread::sleep(pause);
        }
        let (sets, values) = parse(&get(port, path).expect("scrape"));
        if out.sets.is_empty() {
            out.sets = sets;
        } else {
            assert_eq!(out.sets.len(), sets.len(), "a stable series list");
        }
        out.values.push(values);
    }
    out
}

/// What appending a workload did.
struct Appended {
    samples: u64,
    samples_bytes: u64,
    all_bytes: u64,
    sets_bytes: u64,
    seconds: f64,
    written: u64,
}

/// Appends every scrape round (targets in turn) into a fresh 64 MiB ring in `dir`. With
/// `sync = Some((interval, every))` time is simulated: round `k` spans `interval` seconds,
/// the targets spread over it, and the ring syncs at every multiple of `every`.
fn append(dir: &Path, targets: &[Scrapes], sync: Option<(f64, f64)>) -> (Appended, Ring, Consumer) {
    let _ = std::fs::remove_dir_all(dir);
    let mut ring = Ring::open(dir, 64 << 20).expect("ring");
    let consumer = ring.consumer(0xbe4c).expect("consumer");
    let mut chains: Vec<Chain> = targets.iter().map(|_| Chain::default()).collect();
    let mut a = Appended {
        samples: 0,
        samples_bytes: 0,
        all_bytes: 0,
        sets_bytes: 0,
        seconds: 0.0,
        written: 0,
    };
    for (t, (chain, s)) in chains.iter_mut().zip(targets).enumerate() {
        let before = ring.stats().bytes_appended;
        ring.append_series_set(
            chain,
            t as u64,
            s.sets
                .iter()
                .map(|l| l.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
        )
        .expect("set");
        a.sets_bytes += ring.stats().bytes_appended - before;
    }
    ring.sync().expect("sync");
    let disk_before = write_bytes();
    let rounds = targets.iter().map(|s| s.values.len()).min().unwrap_or(0);
    let mut next_sync = sync.map_or(f64::MAX, |(_, every)| every);
    let started = Instant::now();
    for k in 0..rounds {
        for (t, (chain, s)) in chains.iter_mut().zip(targets).enumerate() {
            if let Some((interval, every)) = sync {
                let now = (k as f64 + t as f64 / targets.len() as f64) * interval;
                while now >= next_sync {
                    ring.sync().expect("sync");
                    next_sync += every;
                }
            }
            let ts = 1_700_000_000_000 + i64::try_from(k).unwrap_or(0) * 15_000;
            let before = ring.stats().bytes_appended;
            ring.append_samples(chain, ts, &s.values[k])
                .expect("samples");
            a.samples_bytes += ring.stats().bytes_appended - before;
            a.samples += s.values[k].len() as u64;
        }
    }
    a.seconds = started.elapsed().as_secs_f64();
    if sync.is_some() {
        ring.sync().expect("sync");
    }
    a.written = write_bytes() - disk_before;
    a.all_bytes = ring.stats().bytes_appended;
    (a, ring, consumer)
}

/// Reads everything back through a consumer: checks it, returns samples/s.
fn decode(mut consumer: Consumer, targets: &[Scrapes]) -> f64 {
    let mut seen = vec![0usize; targets.len()];
    let (mut samples, started) = (0u64, Instant::now());
    while let Some(b) = consumer.next_batch() {
        let t = usize::try_from(b.target).expect("small");
        let want = &targets[t].values[seen[t]];
        assert!(
            b.values
                .iter()
                .zip(want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
                && b.values.len() == want.len(),
            "target {t} scrape {} decodes to what was scraped",
            seen[t]
        );
        seen[t] += 1;
        samples += b.values.len() as u64;
        let next = b.next;
        consumer.commit(next);
    }
    let rate = samples as f64 / started.elapsed().as_secs_f64();
    for (t, s) in targets.iter().enumerate() {
        assert_eq!(
            seen[t],
            s.values.len(),
            "every scrape of target {t} read back"
        );
    }
    rate
}

/// `../shared/bench/exporter.py` serving `series` series of `kind` on a free port.
fn start_exporter(exporter: &Path, kind: &str, series: usize) -> (Killed, u16) {
    let port = free_port();
    let process = Killed(
        Command::new("python3")
            .arg(exporter)
            .args(["--kind", kind, "--series", &series.to_string()])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs the bench exporter"),
    );
    (process, port)
}

/// One target's scrapes appended (values in rotation) into a ring of `size` bytes for four
/// laps; prints a row: ring B/sample over the last three laps, the samples records' share of
/// the bytes appended then, set copies, and the scrapes held at the end (all, and those whose
/// set is still held, so a reader at the tail decodes them).
fn ring_size_row(name: &str, size: u64, target: &Scrapes) {
    let mut ring =
        Ring::from_image(&vec![0u8; usize::try_from(size).expect("fits")]).expect("ring");
    let mut chain = Chain::default();
    let set = ring.append_series_set(
        &mut chain,
        1,
        target
            .sets
            .iter()
            .map(|l| l.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
    );
    if let Err(e) = set {
        println!("| {name} | {} KiB | {e} | | | | | |", size >> 10);
        return;
    }
    let mut k = 0usize;
    let mut append = |ring: &mut Ring| {
        let values = &target.values[k % target.values.len()];
        let ts = 1_700_000_000_000 + i64::try_from(k).unwrap_or(0) * 15_000;
        ring.append_samples(&mut chain, ts, values)
            .expect("samples");
        k += 1;
        values.len() as u64
    };
    while ring.head() < ring.capacity() {
        append(&mut ring);
    }
    let (before, head) = (ring.stats(), ring.head());
    let mut samples = 0u64;
    while ring.head() < head + 3 * ring.capacity() {
        samples += append(&mut ring);
    }
    let after = ring.stats();
    let appended = after.bytes_appended - before.bytes_appended;
    let copies = after.series_sets_rewritten - before.series_sets_rewritten;
    let (mut held, mut decodable, mut set_bytes) = (0u64, 0u64, 0u64);
    let (tail, mut at) = (ring.tail(), ring.tail());
    while let promlet::wal::Found::Record { record, .. } = ring.read(at) {
        if promlet::wal::record::is_samples(record.kind) {
            held += 1;
            if promlet::wal::record::samples_head(record.payload).is_some_and(|h| h.0 >= tail) {
                decodable += 1;
            }
        } else if promlet::wal::record::is_series_set(record.kind) {
            set_bytes = record.next - record.offset;
        }
        at = record.next;
    }
    println!(
        "| {name} | {} KiB | {set_bytes} | {:.2} | {:.1} % | {copies} | {held} | {decodable} |",
        size >> 10,
        appended as f64 / samples as f64,
        100.0 * (appended - copies * set_bytes) as f64 / appended as f64,
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root: PathBuf =
        std::env::temp_dir().join(format!("promlet-ring-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&root);
    // The bench exporter lives beside the repository (../shared/bench), so only `--bench` uses
    // it; the checked pass under `cargo test` needs only what ./test.sh installs.
    let mut exporters = Vec::new();
    let mut synthetic = Vec::new();
    if bench {
        let exporter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/exporter.py");
        for (kind, series, path) in [
            ("cadvisor", 6000, "/metrics/cadvisor"),
            ("ksm", 2500, "/metrics"),
            ("app", 1500, "/metrics"),
        ] {
            let (process, port) = start_exporter(&exporter, kind, series);
            exporters.push(process);
            synthetic.push((port, path));
        }
    }
    let node_port = free_port();
    let _node = Killed(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter runs (./test.sh installs it)"),
    );
    wait_up(node_port, "/metrics");
    if !bench {
        let node = [scrape(node_port, "/metrics", 3, Duration::from_millis(200))];
        let (_, ring, consumer) = append(&root.join("ring"), &node, Some((15.0, 10.0)));
        decode(consumer, &node);
        drop(ring);
        let _ = std::fs::remove_dir_all(&root);
        println!(
            "(cargo test: a few scrapes, checked; run `cargo bench --bench ring` for figures)"
        );
        return;
    }
    for (port, path) in &synthetic {
        wait_up(*port, path);
    }
    let mut workload: Vec<Scrapes> = synthetic
        .iter()
        .map(|(port, path)| scrape(*port, path, 100, Duration::ZERO))
        .collect();
    workload.push(scrape(node_port, "/metrics", 100, Duration::ZERO));
    let node_alone = [scrape(node_port, "/metrics", 30, Duration::from_secs(1))];
    let series: usize = workload.iter().map(|s| s.sets.len()).sum();
    println!(
        "bench workload: {series} series in {} targets, 100 scrapes each",
        workload.len()
    );
    println!();
    println!("| workload | samples | ring B/sample, samples records | ring B/sample, all records | series-sets, bytes | append Msamples/s | append ring MB/s | decode Msamples/s |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut sets_bytes = 0;
    let mut per_sample = 0.0;
    for (name, targets) in [
        ("bench workload (~10k series)", &workload[..]),
        ("node_exporter alone, 1 s apart", &node_alone[..]),
    ] {
        let (a, _ring, consumer) = append(&root.join("ring"), targets, None);
        let rate = decode(consumer, targets);
        println!(
            "| {name} | {} | {:.3} | {:.3} | {} | {:.2} | {:.1} | {:.2} |",
            a.samples,
            a.samples_bytes as f64 / a.samples as f64,
            a.all_bytes as f64 / a.samples as f64,
            a.sets_bytes,
            a.samples as f64 / a.seconds / 1e6,
            a.samples_bytes as f64 / a.seconds / 1e6,
            rate / 1e6,
        );
        if sets_bytes == 0 {
            sets_bytes = a.sets_bytes;
            per_sample = a.samples_bytes as f64 / a.samples as f64;
        }
    }
    println!();
    println!("| workload | scrape interval | sync interval | disk write_bytes/sample |");
    println!("|---|---|---|---|");
    for (name, targets, interval) in [
        ("bench workload", &workload[..], 5.0),
        ("node_exporter alone", &node_alone[..], 15.0),
    ] {
        for every in [1.0, 5.0, 10.0, 30.0] {
            let (a, _, _) = append(&root.join("ring"), targets, Some((interval, every)));
            println!(
                "| {name} | {interval} s | {every} s | {:.3} |",
                a.written as f64 / a.samples as f64
            );
        }
    }
    // A 64 MiB ring: an eighth may be unreadable for an endpoint a lap behind (its sets
    // overwritten), and each target's set is rewritten every eighth of the ring.
    let capacity = f64::from(64u32 << 20) - 8192.0;
    let usable = capacity * 7.0 / 8.0 - 8.0 * sets_bytes as f64 * 10_000.0 / series as f64;
    let hours = usable / (per_sample * 10_000.0 / 15.0) / 3600.0;
    println!();
    println!(
        "a 64 MiB ring holds {hours:.1} h of 10k series at 15 s ({per_sample:.3} B/sample; an eighth kept for sets, set rewrites counted)"
    );
    drop(workload);
    println!();
    println!("| target | ring | set record, bytes | ring B/sample | samples records' share | set copies in 3 laps | scrapes held | decodable from the tail |");
    println!("|---|---|---|---|---|---|---|---|");
    let exporter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/exporter.py");
    for (kind, path, series) in [
        ("ksm", "/metrics", 5_000usize),
        ("cadvisor", "/metrics/cadvisor", 5_000),
        ("ksm", "/metrics", 50_000),
        ("cadvisor", "/metrics/cadvisor", 50_000),
    ] {
        let (_exporter, port) = start_exporter(&exporter, kind, series);
        wait_up(port, path);
        let target = scrape(port, path, 10, Duration::ZERO);
        let name = format!("{kind}, {} series", target.sets.len());
        for size in [256u64 << 10, 1 << 20, 8 << 20, 64 << 20] {
            ring_size_row(&name, size, &target);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
