//! Ring bytes per sample on real scrapes: how compact the records of issue 5 are today.
//!
//! `cargo bench --bench ring` scrapes two targets on 127.0.0.1 a dozen times each:
//! - `../shared/bench/exporter.py --kind cadvisor` (every value changes every scrape: the bench
//!   workload's deliberate worst case);
//! - Debian's `prometheus-node-exporter` (real values, scraped once a second).
//!
//! Each scrape is parsed, written as a samples record (a key frame first, then each coded
//! against the scrape before) after one series-set record, into a 64 MiB ring in a temporary
//! directory, synced after every scrape as promlet's sync cadence would. It prints per target
//! the ring bytes appended per sample (steady state: samples records after the first; and all
//! records), and the bytes the kernel counted as written (`/proc/self/io` `write_bytes`) per
//! sample. Every record is read back and decoded to the parsed values, bit for bit. Under
//! `cargo test` (no `--bench`) it makes three scrapes of node_exporter: checked, not measured.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use promlet::labels::LabelSet;
use promlet::parse::{Entry, Format, Parser, Step};
use promlet::wal::codec::BitWriter;
use promlet::wal::record::{self, TYPE_SAMPLES, TYPE_SERIES_SET};
use promlet::wal::{Found, Ring};
use support::{free_port, Killed};

/// GET `path` from 127.0.0.1:`port` (HTTP/1.0); the body, or `None` if nothing answers.
fn get(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n"
    )
    .ok()?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).ok()?;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(all[split + 4..].to_vec())
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

struct Outcome {
    samples: u64,
    steady_samples: u64,
    steady_bytes: u64,
    all_bytes: u64,
    disk_bytes: u64,
}

/// Scrapes `scrapes` times (`pause` apart) into a fresh ring; checks every record decodes.
fn run(dir: &Path, port: u16, path: &str, scrapes: usize, pause: Duration) -> Outcome {
    let _ = std::fs::remove_dir_all(dir);
    let mut ring = Ring::open(dir, 64 << 20).expect("ring");
    let mut bits = BitWriter::default();
    let mut payload = Vec::new();
    // The offset of the target's last samples record, and the coding states it left.
    let mut previous: Option<u64> = None;
    let mut states = Vec::new();
    let mut set_offset = 0;
    let mut first_sets: Option<Vec<Labels>> = None;
    let mut expected: Vec<(u64, Vec<f64>)> = Vec::new();
    let (mut samples, mut steady_samples, mut steady_bytes) = (0, 0, 0);
    let disk_before = write_bytes();
    for i in 0..scrapes {
        if i > 0 {
            std::thread::sleep(pause);
        }
        let body = get(port, path).expect("scrape");
        let (sets, values) = parse(&body);
        if first_sets.as_ref() != Some(&sets) {
            // A new or changed series list: a series-set record and a key frame.
            record::encode_series_set(
                7,
                sets.iter()
                    .map(|l| l.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))),
                &mut payload,
            );
            set_offset = ring.append(TYPE_SERIES_SET, &payload).expect("append");
            first_sets = Some(sets);
            previous = None;
        }
        let base = previous;
        let ts = 1_700_000_000_000 + i64::try_from(i).unwrap_or(0) * 15_000;
        record::encode_samples(
            set_offset,
            ts,
            base,
            &mut states,
            &values,
            &mut bits,
            &mut payload,
        );
        let before = ring.stats().bytes_appended;
        let offset = ring.append(TYPE_SAMPLES, &payload).expect("append");
        if previous.is_some() {
            steady_bytes += ring.stats().bytes_appended - before;
            steady_samples += values.len() as u64;
        }
        samples += values.len() as u64;
        ring.sync().expect("sync");
        expected.push((offset, values));
        previous = Some(offset);
    }
    let disk_bytes = write_bytes() - disk_before;
    // Read everything back in order, as a sender does: each samples record decodes with the
    // states the one before it left, bit for bit.
    let mut at = ring.tail();
    let mut decoded: Vec<(u64, Vec<f64>)> = Vec::new();
    let mut states = Vec::new();
    while let Found::Record { record: r, .. } = ring.read(at) {
        if r.kind == TYPE_SAMPLES {
            let s = record::decode_samples(r.payload, &mut states).expect("decodes");
            decoded.push((r.offset, s.values));
        }
        at = r.next;
    }
    let bits = |v: &[(u64, Vec<f64>)]| -> Vec<(u64, Vec<u64>)> {
        v.iter()
            .map(|(o, x)| (*o, x.iter().map(|f| f.to_bits()).collect()))
            .collect()
    };
    assert_eq!(
        bits(&decoded),
        bits(&expected),
        "the ring gives back what was scraped"
    );
    Outcome {
        samples,
        steady_samples,
        steady_bytes,
        all_bytes: ring.stats().bytes_appended,
        disk_bytes,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scrapes = if bench { 12 } else { 3 };
    let root: PathBuf =
        std::env::temp_dir().join(format!("promlet-ring-bench-{}", std::process::id()));
    // The bench exporter lives beside the repository (../shared/bench), so only `--bench` uses
    // it; the checked pass under `cargo test` needs only what ./test.sh installs.
    let port = free_port();
    let _synthetic = bench.then(|| {
        let exporter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/exporter.py");
        let port = port.to_string();
        Killed(
            Command::new("python3")
                .arg(&exporter)
                .args(["--kind", "cadvisor", "--series", "2000", "--port", &port])
                .stdout(Stdio::null())
                .spawn()
                .expect("python3 runs the bench exporter"),
        )
    });
    let node_port = free_port();
    let _node = Killed(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter runs (./test.sh installs it)"),
    );
    if bench {
        wait_up(port, "/metrics");
    }
    wait_up(node_port, "/metrics");
    println!("| target | scrapes | samples | ring B/sample, steady | ring B/sample, all records | disk write_bytes/sample |");
    println!("|---|---|---|---|---|---|");
    for (name, p, pause) in [
        (
            "bench exporter, cadvisor 2000 (all values change)",
            port,
            Duration::ZERO,
        ),
        (
            "node_exporter, 1 s apart",
            node_port,
            Duration::from_secs(1),
        ),
    ] {
        if p == port && !bench {
            continue;
        }
        let o = run(&root.join("ring"), p, "/metrics", scrapes, pause);
        println!(
            "| {name} | {scrapes} | {} | {:.3} | {:.3} | {:.3} |",
            o.samples,
            o.steady_bytes as f64 / o.steady_samples as f64,
            o.all_bytes as f64 / o.samples as f64,
            o.disk_bytes as f64 / o.samples as f64,
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    if !bench {
        println!(
            "(cargo test: a few scrapes, checked; run `cargo bench --bench ring` for figures)"
        );
    }
}
