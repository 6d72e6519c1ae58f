//! Parse throughput on real payload shapes, and the window a 38 MB cadvisor body needs.
//!
//! `cargo bench --bench parse` measures, per payload (the node_exporter, kube-state-metrics,
//! cadvisor and app snapshots of `tests/fixtures/expo/prom/`, and the node_exporter and cadvisor
//! ones rewritten as OpenMetrics):
//! - parse: the parser alone, 64 KiB windows;
//! - parse+labels+relabel: as a scrape does it, with each series' label set built, the target's
//!   labels merged, a four-rule `metric_relabel_configs` chain applied, and hashed.
//!
//! It reports MB/s and samples/s for each, the time ratio of the full path with every relabel
//! regex run against the same with the literal/prefix shortcuts, and the ratio between the two (quote ratios, not
//! absolutes: the machines are shared). Then it parses a 38 MB cadvisor body from
//! `../shared/bench/exporter.py` and reports the window's peak size. Under `cargo test` (no
//! `--bench` flag) it makes one quick pass so that it is checked, not timed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use promlet::config::relabel::{FastMatch, RelabelConfig};
use promlet::config::Config;
use promlet::labels::{HonorLabels, LabelSet};
use promlet::parse::{Entry, Format, Parser, Step, Window};
use promlet::relabel::{process_set, Scratch};

/// Everything a scrape keeps between scrapes.
struct Scraper {
    window: Window,
    format: Format,
    parser: Parser,
    set: LabelSet,
    scratch: Scratch,
    target: Vec<(String, String)>,
    rules: Vec<RelabelConfig>,
}

impl Scraper {
    fn new(format: Format, max_window: usize) -> Self {
        let config = Config::parse(
            "scrape_configs:\n  - job_name: c\n    metric_relabel_configs:\n\
             \x20     - {source_labels: [__name__], regex: 'go_.*', action: drop}\n\
             \x20     - {source_labels: [pod], target_label: shard, modulus: 16, action: hashmod}\n\
             \x20     - {regex: 'id|image', action: labeldrop}\n\
             \x20     - {source_labels: [namespace], regex: '(kube-.*)', target_label: system, replacement: '$1'}\n",
            Path::new("bench.yml"),
            Path::new("."),
        )
        .expect("valid rules");
        Scraper {
            window: Window::new(4 << 10, max_window),
            format,
            parser: Parser::new(format),
            set: LabelSet::new(),
            scratch: Scratch::default(),
            target: vec![
                ("instance".to_owned(), "10.0.0.7:10250".to_owned()),
                ("job".to_owned(), "kubelet".to_owned()),
            ],
            rules: config.scrape_configs[0].metric_relabel_configs.clone(),
        }
    }

    /// One scrape of `body` in 64 KiB reads; returns (samples, kept series, hash checksum).
    fn scrape(&mut self, body: &[u8], full: bool) -> (u64, u64, u64) {
        self.window.clear();
        self.parser.reset(self.format);
        let (mut samples, mut kept, mut checksum) = (0u64, 0u64, 0u64);
        let mut src = body;
        loop {
            match self
                .parser
                .next(self.window.data(), self.window.eof())
                .expect("valid body")
            {
                Step::Entry(entry, used) => {
                    if let Entry::Series {
                        data, name, labels, ..
                    } = entry
                    {
                        samples += 1;
                        if full {
                            self.set.fill_series(data, name, labels);
                            self.set.merge_target(&self.target, HonorLabels::No);
                            if process_set(&mut self.set, &self.rules, &mut self.scratch) {
                                kept += 1;
                                checksum ^= self.set.hash();
                            }
                        }
                    }
                    self.window.consume(used);
                }
                Step::End(_) => return (samples, kept, checksum),
                Step::NeedMore => {
                    let space = self.window.space().expect("lines fit the window");
                    let k = space.len().min(src.len()).min(64 << 10);
                    space[..k].copy_from_slice(&src[..k]);
                    src = &src[k..];
                    self.window.filled(k);
                }
            }
        }
    }
}

/// Runs `f` until `budget` has passed (at least once); returns runs and elapsed time.
fn time(budget: Duration, mut f: impl FnMut()) -> (u32, Duration) {
    let start = Instant::now();
    let mut runs = 0;
    while runs == 0 || start.elapsed() < budget {
        f();
        runs += 1;
    }
    (runs, start.elapsed())
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/expo/prom")
}

/// A text-format body as OpenMetrics: HELP and TYPE kept (`untyped` as `unknown`), other
/// comments and blank lines dropped, `# EOF` added. Sample lines are already valid
/// OpenMetrics in these snapshots (single spaces, commas between labels).
fn to_openmetrics(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(body.len() + 8);
    for line in text.lines() {
        let metadata = line.starts_with("# HELP ") || line.starts_with("# TYPE ");
        if line.is_empty() || (line.starts_with('#') && !metadata) {
            continue;
        }
        if line.starts_with("# TYPE ") && line.ends_with(" untyped") {
            out.push_str(&line.replace(" untyped", " unknown"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push_str("# EOF\n");
    out.into_bytes()
}

fn snapshot(name: &str) -> Vec<u8> {
    let file = std::fs::read_dir(corpus())
        .expect("corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("{name}.prom")))
        .unwrap_or_else(|| panic!("no snapshot {name}"));
    std::fs::read(file).expect("read")
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let budget = if bench {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    println!("| payload | bytes | series | parse MB/s | parse Msamples/s | +labels+relabel MB/s | Msamples/s | full/parse time | regex-only/shortcut time |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, format) in [
        ("snapshot-node-exporter", Format::Text),
        ("snapshot-kube-state-metrics", Format::Text),
        ("snapshot-cadvisor", Format::Text),
        ("snapshot-app", Format::Text),
        ("snapshot-node-exporter", Format::OpenMetrics),
        ("snapshot-cadvisor", Format::OpenMetrics),
    ] {
        let mut body = snapshot(name);
        let mut name = name.to_owned();
        if format == Format::OpenMetrics {
            body = to_openmetrics(&body);
            name.push_str(" (OpenMetrics)");
        }
        let mut scraper = Scraper::new(format, 1 << 20);
        let (series, _, _) = scraper.scrape(&body, false);
        let (kept, _) = (scraper.scrape(&body, true).1, ());
        assert!(
            series > 100 && kept > 0,
            "{name}: {series} series, {kept} kept"
        );
        let (n1, t1) = time(budget, || {
            std::hint::black_box(scraper.scrape(&body, false));
        });
        let (n2, t2) = time(budget, || {
            std::hint::black_box(scraper.scrape(&body, true));
        });
        // The same full path with every rule forced through its regex (no FastMatch
        // shortcut), timed in the same run, for the shortcut's ratio.
        let mut regex_only = Scraper::new(format, 1 << 20);
        for rule in &mut regex_only.rules {
            rule.fast = FastMatch::Regex;
        }
        assert_eq!(regex_only.scrape(&body, true), scraper.scrape(&body, true));
        let (n3, t3) = time(budget, || {
            std::hint::black_box(regex_only.scrape(&body, true));
        });
        let mb = body.len() as f64 / 1e6;
        let per1 = t1.as_secs_f64() / f64::from(n1);
        let per2 = t2.as_secs_f64() / f64::from(n2);
        let per3 = t3.as_secs_f64() / f64::from(n3);
        println!(
            "| {name} | {} | {series} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2}x | {:.2}x |",
            body.len(),
            mb / per1,
            series as f64 / per1 / 1e6,
            mb / per2,
            series as f64 / per2 / 1e6,
            per2 / per1,
            per3 / per2
        );
    }
    if !bench {
        println!("(cargo test: one pass each; run `cargo bench --bench parse` for figures)");
        return;
    }
    // A 38 MB cadvisor page (the bench's 200k-series node), parsed through a window that may
    // grow to 1 MiB: how much of it does the window need?
    let exporter = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/exporter.py");
    let out = std::process::Command::new("python3")
        .arg(&exporter)
        .args([
            "--kind", "cadvisor", "--series", "120000", "--port", "0", "--dump",
        ])
        .output()
        .expect("python3 runs the bench exporter");
    assert!(out.status.success(), "exporter.py --dump failed");
    let body = out.stdout;
    let mut scraper = Scraper::new(Format::Text, 1 << 20);
    let start = Instant::now();
    let (series, kept, _) = scraper.scrape(&body, true);
    let elapsed = start.elapsed();
    println!(
        "\ncadvisor body {:.1} MB, {series} series ({kept} kept after relabel): window peak {} KiB ({:.4} % of the body), {:.2} s for parse+labels+relabel",
        body.len() as f64 / 1e6,
        scraper.window.capacity() / 1024,
        100.0 * scraper.window.capacity() as f64 / body.len() as f64,
        elapsed.as_secs_f64()
    );
}
