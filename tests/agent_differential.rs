//! Differential against the real Prometheus agent (issue 6): the same tricky targets scraped by
//! Debian's `prometheus --enable-feature=agent` (2.42) and by promlet, each remote-writing into
//! its own capture receiver on 127.0.0.1; the delivered series, values and stale markers must
//! match, timestamps aside. Both get the same prometheus.yml but for the remote_write URL, and
//! both are reloaded once (SIGHUP, a new file without the target `gone`).
//!
//! The targets (each a job, with a `t` target label naming it): a series vanishing and one
//! appearing (OpenMetrics); HTTP 500 for two scrapes; `sample_limit` and `label_limit` exceeded
//! for three; `honor_labels` true and false against a body with `job` and `instance`;
//! `relabel_configs` from `__address__` and `metric_relabel_configs` with drop, keep, labelmap
//! and hashmod; answers past `scrape_timeout` for two scrapes; a parse error from scrape 2 on;
//! and a job of two targets, one of which the reload removes.
//!
//! How the two runs are aligned. Every target is a fixture server whose answer depends only on
//! the scrape number `k`, counted per agent (the `User-Agent` tells the two apart), so both see
//! the same sequence of bodies even though they scrape at different instants and start at
//! different moments (Prometheus' first scrape comes 5–10 s after start, behind its discovery
//! and scrape-manager throttles; promlet's within a second: a documented promlet choice that
//! this alignment makes irrelevant). A sample's timestamp is mapped back to `k`: a scrape's
//! timestamp is that of its non-stale `up` sample, matched to the fixture's record of when
//! request `k` arrived; every other sample of the target at that same timestamp belongs to
//! scrape `k`. Samples at other instants (the stale markers of a removed target) are placed
//! after the scrape before them, or at `end` once the agent scraped the target for the last
//! time. Each series is then reduced to its sequence of values by position (StaleNaN shown as
//! `stale`, `scrape_duration_seconds` only as `dur` or `stale`), and the sequences are compared
//! over the scrapes both agents started before the end of the run, plus `end`. Metadata-only
//! requests (Prometheus sends them) decode to no series.
//!
//! One target, `stamped`, serves explicit timestamps (`honor_timestamps` is on by default):
//! a series stamped with the same instant every scrape (as cadvisor repeats a stamp until
//! its next housekeeping), one whose stamp steps a second a scrape, one whose stamp goes back
//! at scrape 4 (out of order: neither agent may send it), one that vanishes after scrape 2,
//! and a series without a stamp; scrape 6 answers 500. Stamped samples are compared as raw
//! (timestamp, value) lists, since their timestamps come from the body: the lists must be
//! equal, and no stamped series may get a stale marker, as 2.42 tracks staleness only for
//! series without one. The stamps count from 30 s after the test starts: 2.42's remote write
//! skips samples stamped before Prometheus started (its WAL watcher's start time). promlet
//! sends those too; `e_old`, stamped two minutes before the start, shows that one more
//! deliberate difference.
//!
//! Metadata: some families carry `# HELP`, `# TYPE` and `# UNIT` lines (with escapes, in both
//! formats), and both agents send metadata every 2 s (`metadata_config.send_interval`). The
//! distinct entries each receiver got over the run must be the same, and equal to the ones
//! written out from the bodies.
//!
//! What must match. Every series' sequence is the same in both agents, except the few below
//! where promlet differs from 2.42 on purpose (src/scrape/mod.rs, "Deliberate differences from
//! 2.42"): for those the test asserts each agent's exact sequence, so that a change on either
//! side is noticed (`PROMLET_DIFF_VERBOSE=1` prints every series' two sequences).
//! - An in-body failure (parse error, `label_limit`, `sample_limit`) from scrape 2 on: promlet
//!   stale-marks every series of the last good scrape at 2, as the staleness docs intend; 2.42
//!   writes nothing at 2 for the series parsed before the error (they were tracked in
//!   `seriesCur` before it, and the empty append that should stale-mark them compares against
//!   that). Series: `a` and `s1` of `limits`, `a` of `labellimit`, `a` and `b` of `parse`.
//! - `s2` of `limits`, refused by `sample_limit` in scrapes 2–4, never stored: 2.42 writes a
//!   StaleNaN for it at scrape 5 (prometheus/prometheus#16427, open); promlet writes nothing.
//! - `scrape_series_added` of `keep`, whose job's `static_configs` the reload changes: 2.42
//!   reports both its series as added on the first scrape of the new loop (`reusableCache` is
//!   false, so the loop starts with an empty cache); promlet keeps the target's state and
//!   reports 0. That scrape is the first of `keep` after the SIGHUP, or, when a scrape fell
//!   while the reload ran, the next one: the second `Completed loading of configuration file`
//!   line of Prometheus' log bounds it.
//!
//! Two earlier differences were promlet bugs, now fixed: `scrape_series_added` on the first
//! good scrape after failed ones counted every series (Prometheus' scrape cache keeps them
//! through failed scrapes, and only cache misses count), and
//! `scrape_samples_post_metric_relabeling` of a scrape over `sample_limit` was capped at the
//! limit (Prometheus counts every sample relabeling kept: "Increment added even if there's an
//! error", scrape.go `append`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::peers::{wait_ready, Promlet, TempDir};
use support::receiver::{serve, Answer, HttpRequest, Received, Scripted};
use support::{free_port, Killed};

/// Prometheus' StaleNaN (`model/value/value.go`).
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Each agent is reloaded once it has scraped the target `gone` this many times.
const RELOAD_AT: usize = 6;
/// The run ends once both agents scraped every remaining target this many times.
const END_AT: usize = 11;
/// The whole run, start to stop, stays under this.
const RUN_LIMIT: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Agent {
    Prometheus,
    Promlet,
}

const AGENTS: [Agent; 2] = [Agent::Prometheus, Agent::Promlet];

impl Agent {
    fn index(self) -> usize {
        match self {
            Agent::Prometheus => 0,
            Agent::Promlet => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Agent::Prometheus => "Prometheus",
            Agent::Promlet => "promlet",
        }
    }

    /// Who sent a scrape: `Prometheus/2.42.0+ds` or `promlet/0.1.0`.
    fn of(request: &HttpRequest) -> Option<Agent> {
        let ua = request.header("user-agent")?;
        if ua.starts_with("promlet/") {
            Some(Agent::Promlet)
        } else if ua.starts_with("Prometheus/") {
            Some(Agent::Prometheus)
        } else {
            None
        }
    }
}

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_millis()).expect("ms fit i64")
}

// ------------------------------------------------------------------------- the targets

fn reply(content_type: &str, body: &str) -> Answer {
    Answer::status("200 OK")
        .header("Content-Type", content_type)
        .body(body.as_bytes())
}

/// `b` in scrapes 0–2, gone from 3 on (one stale marker at 3); `c` from scrape 2 on.
/// OpenMetrics, so both parsers are exercised.
fn vanish(k: usize) -> Answer {
    let mut s = format!("# TYPE a gauge\na {k}\n");
    if k <= 2 {
        let _ = writeln!(s, "b{{x=\"1\"}} {}", 10 + k);
    }
    if k >= 2 {
        let _ = writeln!(s, "c {}", 100 + k);
    }
    s.push_str(
        "# TYPE d_bytes gauge\n# UNIT d_bytes bytes\n# HELP d_bytes Size \\\"in\\\" bytes \\\\ \\n.\nd_bytes 1\n",
    );
    s.push_str("# EOF\n");
    reply(OPENMETRICS, &s)
}

/// 200 for k < 2, 500 for k in 2..4, 200 again after.
fn failing(k: usize) -> Answer {
    if (2..4).contains(&k) {
        return Answer::status("500 Internal Server Error").body(b"oops\n");
    }
    reply(TEXT, &format!("a {k}\nf{{l=\"x\"}} {}\n", 2 * k))
}

/// Two samples, three for k in 2..5 (`sample_limit: 2` fails those scrapes).
fn limits(k: usize) -> Answer {
    let mut s = format!("a {k}\ns1 1\n");
    if (2..5).contains(&k) {
        s.push_str("s2 2\n");
    }
    reply(TEXT, &s)
}

/// For k in 2..5 a series with six labels (`label_limit: 5` fails those scrapes).
fn label_limit(k: usize) -> Answer {
    let mut s = format!("a {k}\n");
    if (2..5).contains(&k) {
        s.push_str("wide{p=\"1\",q=\"2\"} 1\n");
    }
    reply(TEXT, &s)
}

/// Series whose labels collide with the target's `job` and `instance`.
fn honor(k: usize) -> Answer {
    reply(
        TEXT,
        &format!("h{{job=\"x\",instance=\"i1\"}} {k}\nh2{{l=\"v\"}} {k}\n"),
    )
}

/// Series for the relabel job's metric_relabel_configs: one dropped by `drop`, one by `keep`,
/// two with labels for `labelmap` and `hashmod`.
fn relabel(k: usize) -> Answer {
    reply(
        TEXT,
        &format!(
            "a {k}\n# HELP drop_me Dropped, still described: \\\\ \\n \\x.\n# TYPE drop_me counter\n\
             drop_me {k}\nother {k}\n# TYPE keep_x untyped\n\
             keep_x{{meta_zone=\"z1\",id=\"alpha\"}} {k}\n\
             keep_y{{id=\"beta\",meta_rack=\"r2\"}} {}\n",
            k + 1000
        ),
    )
}

/// Answers after 1.5 s for k in 2..4 (past the 900 ms scrape_timeout), at once otherwise.
fn timeout(k: usize) -> Answer {
    let a = reply(TEXT, &format!("a {k}\nt1 1\n"));
    if (2..4).contains(&k) {
        a.after(Duration::from_millis(1500))
    } else {
        a
    }
}

/// From k = 2 on, an invalid third line after two good series.
fn parse_error(k: usize) -> Answer {
    if k < 2 {
        reply(TEXT, &format!("a {k}\nb 1\n"))
    } else {
        reply(TEXT, &format!("a {k}\nb 1\nbad line {{\nc 3\n"))
    }
}

/// The reload job's targets: `keep` stays, `gone` is removed by the reload.
fn keep(k: usize) -> Answer {
    reply(TEXT, &format!("a {k}\nk1 1\n"))
}

fn gone(k: usize) -> Answer {
    reply(TEXT, &format!("a {k}\ng1 1\n"))
}

/// The instant the `stamped` target's stamps count from (ms, set once per run).
static STAMP_ZERO: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

/// Explicit timestamps (module doc); 500 at scrape 6.
fn stamped(k: usize) -> Answer {
    if k == 6 {
        return Answer::status("500 Internal Server Error").body(b"oops\n");
    }
    let t0 = *STAMP_ZERO.get().expect("set before the fixtures start");
    let step = t0 + 1000 * i64::try_from(k).expect("small");
    let back = if k == 4 { t0 + 1000 } else { step };
    let old = t0 - 150_000;
    let mut s =
        format!("a {k}\ne_fixed 7 {t0}\ne_step {k} {step}\ne_back {k} {back}\ne_old 1 {old}\n");
    if k <= 2 {
        let _ = writeln!(s, "e_gone {k} {step}");
    }
    reply(TEXT, &s)
}

/// Whether a series is compared as raw samples (the stamped ones).
fn is_raw(labels: &BTreeMap<String, String>) -> bool {
    labels.get("t").map(String::as_str) == Some("stamped")
        && labels.get("__name__").is_some_and(|n| n.starts_with("e_"))
}

type Body = fn(usize) -> Answer;

/// (the target's `t` label, its body by scrape number).
const TARGETS: [(&str, Body); 12] = [
    ("vanish", vanish),
    ("failing", failing),
    ("limits", limits),
    ("labellimit", label_limit),
    ("honor_true", honor),
    ("honor_false", honor),
    ("relabel", relabel),
    ("timeout", timeout),
    ("parse", parse_error),
    ("keep", keep),
    ("gone", gone),
    ("stamped", stamped),
];

/// When each scrape request arrived (ms since the epoch), per agent; index = scrape number.
type Arrivals = Arc<Mutex<[Vec<i64>; 2]>>;

struct Fixture {
    port: u16,
    arrivals: Arrivals,
}

impl Fixture {
    fn start(body: Body) -> Fixture {
        let arrivals: Arrivals = Arc::default();
        let log = Arc::clone(&arrivals);
        let port = serve(move |request| {
            let Some(agent) = Agent::of(request) else {
                return Answer::status("404 Not Found");
            };
            let k = {
                let mut log = log.lock().expect("lock");
                let list = &mut log[agent.index()];
                list.push(now_ms());
                list.len() - 1
            };
            body(k)
        });
        Fixture { port, arrivals }
    }

    fn arrivals(&self, agent: Agent) -> Vec<i64> {
        self.arrivals.lock().expect("lock")[agent.index()].clone()
    }

    fn scrapes(&self, agent: Agent) -> usize {
        self.arrivals.lock().expect("lock")[agent.index()].len()
    }
}

/// The prometheus.yml both agents get (only the remote_write URL differs); `reloaded`: the
/// second version, without the target `gone`.
fn config(ports: &BTreeMap<&str, u16>, receiver_url: &str, reloaded: bool) -> String {
    let target = |t: &str| {
        format!(
            "{{targets: ['127.0.0.1:{}'], labels: {{t: {t}}}}}",
            ports[t]
        )
    };
    let job = |name: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n{extra}    static_configs: [{}]\n",
            target(name)
        )
    };
    let mut c =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n");
    c.push_str(&job("vanish", ""));
    c.push_str(&job("failing", ""));
    c.push_str(&job("limits", "    sample_limit: 2\n"));
    c.push_str(&job("labellimit", "    label_limit: 5\n"));
    c.push_str(&job("honor_true", "    honor_labels: true\n"));
    c.push_str(&job("honor_false", "    honor_labels: false\n"));
    c.push_str(&job(
        "relabel",
        "    relabel_configs:\n\
         \x20     - source_labels: [__address__]\n\
         \x20       regex: '127\\.0\\.0\\.1:(\\d+)'\n\
         \x20       target_label: port\n\
         \x20       replacement: 'p$1'\n\
         \x20   metric_relabel_configs:\n\
         \x20     - source_labels: [__name__]\n\
         \x20       regex: drop_me\n\
         \x20       action: drop\n\
         \x20     - source_labels: [__name__]\n\
         \x20       regex: 'a|keep_.+'\n\
         \x20       action: keep\n\
         \x20     - regex: 'meta_(.+)'\n\
         \x20       replacement: 'm_$1'\n\
         \x20       action: labelmap\n\
         \x20     - source_labels: [id]\n\
         \x20       modulus: 8\n\
         \x20       target_label: shard\n\
         \x20       action: hashmod\n",
    ));
    c.push_str(&job("timeout", ""));
    c.push_str(&job("parse", ""));
    c.push_str(&job("stamped", ""));
    c.push_str("  - job_name: reload\n    static_configs:\n");
    let _ = writeln!(c, "      - {}", target("keep"));
    if !reloaded {
        let _ = writeln!(c, "      - {}", target("gone"));
    }
    let _ = write!(
        c,
        "remote_write:\n  - url: {receiver_url}\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 50ms}}\n    metadata_config: {{send_interval: 2s}}\n"
    );
    c
}

// ------------------------------------------------------------------------ the Prometheus agent

/// Debian's Prometheus in agent mode, its WAL in `dir/data`, log in `dir/prometheus.log`.
struct PrometheusAgent {
    process: Killed,
    config: PathBuf,
    log: PathBuf,
}

impl PrometheusAgent {
    fn start(dir: &Path, config: &str) -> PrometheusAgent {
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("config");
        let port = free_port();
        let log = dir.join("prometheus.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let child = Command::new("prometheus")
            .arg("--enable-feature=agent")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.agent.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus not runnable ({e}): ./test.sh installs Debian's prometheus; this test never skips")
            });
        let p = PrometheusAgent {
            process: Killed(child),
            config: file,
            log,
        };
        wait_ready(port, "/-/ready");
        p
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.0.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} prometheus");
    }

    fn reload(&self, config: &str) {
        std::fs::write(&self.config, config).expect("config");
        self.signal("HUP");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (15 s at most) for it to exit.
    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.process.0.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "prometheus did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------- the analysis

type Labels = BTreeMap<String, String>;

/// Where a sample sits in a target's run: before, at or after scrape `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before,
    Scrape,
    After,
}

type Pos = (usize, Phase);

/// After the agent's last scrape of the target.
const END: Pos = (usize::MAX, Phase::Before);

fn show_pos(p: Pos) -> String {
    match p {
        END => "end".to_owned(),
        (k, Phase::Before) => format!("-{k}"),
        (k, Phase::Scrape) => format!("{k}"),
        (k, Phase::After) => format!("{k}+"),
    }
}

fn render(labels: &Labels) -> String {
    let name = labels.get("__name__").map_or("", String::as_str);
    let inner: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn is_stale(bits: u64) -> bool {
    bits == STALE_NAN
}

/// A value as compared: `stale`, other NaNs by their bits, numbers as Rust prints them;
/// `scrape_duration_seconds` only as `dur` (the agents' durations differ).
fn show_value(name: &str, bits: u64) -> String {
    let v = f64::from_bits(bits);
    if is_stale(bits) {
        "stale".to_owned()
    } else if v.is_nan() {
        format!("NaN({bits:#x})")
    } else if name == "scrape_duration_seconds" {
        "dur".to_owned()
    } else {
        format!("{v}")
    }
}

/// One agent's delivery, by series, each sample placed by scrape number.
struct Placed {
    /// (target, rendered series) → position → value bits (in timestamp order).
    series: BTreeMap<(String, String), BTreeMap<Pos, Vec<u64>>>,
    /// Samples removed as exact repeats (same timestamp and value): retries would cause them.
    repeats: usize,
    /// The stamped series ([`is_raw`]): rendered series → (timestamp, value bits), sorted,
    /// repeats removed (both agents send a repeated stamp again each scrape).
    raw: BTreeMap<String, Vec<(i64, u64)>>,
    /// What could not be placed (a test failure, whichever agent).
    problems: Vec<String>,
}

/// Places what `agent` delivered: scrape timestamps from `up`, matched to the fixture's
/// arrival times.
fn place(agent: Agent, delivered: Vec<Received>, fixtures: &BTreeMap<&str, Fixture>) -> Placed {
    let mut by_series: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
    let mut raw: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for (labels, samples) in delivered {
        if is_raw(&labels) {
            raw.entry(render(&labels))
                .or_default()
                .extend(samples.into_iter().map(|(bits, ts)| (ts, bits)));
            continue;
        }
        by_series
            .entry(labels)
            .or_default()
            .extend(samples.into_iter().map(|(bits, ts)| (ts, bits)));
    }
    let mut repeats = 0;
    for samples in by_series.values_mut() {
        samples.sort_unstable();
        let before = samples.len();
        samples.dedup();
        repeats += before - samples.len();
    }
    let mut problems = Vec::new();
    // Scrape timestamps per target: its non-stale `up` samples.
    let mut scrapes: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for (t, fixture) in fixtures {
        let arrivals = fixture.arrivals(agent);
        let mut map = BTreeMap::new();
        let up = by_series.iter().find(|(l, _)| {
            l.get("__name__").map(String::as_str) == Some("up")
                && l.get("t").map(String::as_str) == Some(*t)
        });
        for (ts, bits) in up.map(|(_, s)| s.as_slice()).unwrap_or(&[]) {
            if is_stale(*bits) {
                continue;
            }
            // The scrape's timestamp is taken just before its request goes out.
            let best = arrivals
                .iter()
                .enumerate()
                .filter(|(_, a)| (-50..=500).contains(&(**a - ts)))
                .min_by_key(|(_, a)| (**a - ts).abs());
            match best {
                Some((k, _)) if map.values().any(|&j| j == k) => {
                    problems.push(format!("{t}: two scrapes matched to request {k}"));
                }
                Some((k, _)) => {
                    map.insert(*ts, k);
                }
                None => problems.push(format!(
                    "{t}: a scrape at {ts} matches no request ({} requests)",
                    arrivals.len()
                )),
            }
        }
        scrapes.insert((*t).to_owned(), map);
    }
    let mut series = BTreeMap::new();
    for (labels, samples) in &by_series {
        let Some(t) = labels.get("t") else {
            problems.push(format!("a series without the target label t: {labels:?}"));
            continue;
        };
        let Some(fixture) = fixtures.get(t.as_str()) else {
            problems.push(format!("a series of an unknown target: {labels:?}"));
            continue;
        };
        let last_arrival = fixture.arrivals(agent).last().copied().unwrap_or(i64::MAX);
        let map = &scrapes[t];
        let placed: &mut BTreeMap<Pos, Vec<u64>> =
            series.entry((t.clone(), render(labels))).or_default();
        for (ts, bits) in samples {
            let pos = match map.get(ts) {
                Some(&k) => (k, Phase::Scrape),
                None if *ts >= last_arrival => END,
                None => match map.range(..*ts).next_back() {
                    Some((_, &k)) => (k, Phase::After),
                    None => (0, Phase::Before),
                },
            };
            placed.entry(pos).or_default().push(*bits);
        }
    }
    for samples in raw.values_mut() {
        samples.sort_unstable();
        samples.dedup();
    }
    Placed {
        series,
        repeats,
        raw,
        problems,
    }
}

/// A series' values by position, rendered `0:1 1:1 2:stale … end:stale`, over the positions
/// both agents cover: scrapes up to `k_hi`, and `end`.
fn sequence(name: &str, placed: Option<&BTreeMap<Pos, Vec<u64>>>, k_hi: usize) -> String {
    let Some(placed) = placed else {
        return "(absent)".to_owned();
    };
    let kept: Vec<String> = placed
        .iter()
        .filter(|(pos, _)| match pos {
            &&END => true,
            (k, Phase::Before | Phase::Scrape) => *k <= k_hi,
            (k, Phase::After) => *k < k_hi,
        })
        .map(|(pos, values)| {
            let v: Vec<String> = values.iter().map(|b| show_value(name, *b)).collect();
            format!("{}:{}", show_pos(*pos), v.join("|"))
        })
        .collect();
    if kept.is_empty() {
        "(absent)".to_owned()
    } else {
        kept.join(" ")
    }
}

/// The values of `series` (rendered) of target `t` at scrape `k`.
fn at(placed: &Placed, t: &str, series: &str, k: usize) -> Vec<u64> {
    placed
        .series
        .get(&(t.to_owned(), series.to_owned()))
        .and_then(|p| p.get(&(k, Phase::Scrape)))
        .cloned()
        .unwrap_or_default()
}

/// A sequence as [`sequence`] renders it, from (scrape number, value) pairs in order.
fn expect(entries: impl IntoIterator<Item = (usize, String)>) -> String {
    let kept: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    if kept.is_empty() {
        "(absent)".to_owned()
    } else {
        kept.join(" ")
    }
}

/// One series where promlet differs from 2.42 on purpose (the module doc): each agent's exact
/// sequence.
struct Deviation {
    /// Prometheus' sequence; more than one only where the reload's timing leaves a choice.
    prometheus: Vec<String>,
    promlet: String,
}

/// When each `Completed loading of configuration file` line of Prometheus' log was written, in
/// ms since the epoch (start, then every reload).
fn config_loads_ms(log: &str) -> Vec<i64> {
    log.lines()
        .filter(|l| l.contains("msg=\"Completed loading of configuration file\""))
        .map(|l| log_ts_ms(l).unwrap_or_else(|| panic!("no ts= in Prometheus' log line {l:?}")))
        .collect()
}

/// The `ts=2006-01-02T15:04:05.000Z` of a Prometheus log line (promlog's format, UTC), in ms
/// since the epoch.
fn log_ts_ms(line: &str) -> Option<i64> {
    let ts = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("ts="))?;
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let number = |s: &str| s.parse::<i64>().ok();
    let mut d = date.split('-').map(number);
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(number);
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let ms = number(
        &format!("{:0<3}", fraction)
            .chars()
            .take(3)
            .collect::<String>(),
    )?;
    Some(days_from_civil(y, m, day) * 86_400_000 + ((h * 60 + min) * 60 + sec) * 1000 + ms)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[test]
fn log_timestamps() {
    let line = "ts=2026-12-01T20:13:14.617Z caller=main.go:1229 level=info \
                msg=\"Completed loading of configuration file\" filename=p.yml";
    assert_eq!(log_ts_ms(line), Some(1_796_155_994_617));
    assert_eq!(log_ts_ms("ts=1970-01-01T00:00:01.5Z x"), Some(1500));
    assert_eq!(
        log_ts_ms("ts=2024-03-01T00:00:00Z"),
        Some(1_709_251_200_000)
    );
    assert_eq!(log_ts_ms("level=info"), None);
    assert_eq!(config_loads_ms(line), [1_796_155_994_617]);
}

/// The last `n` bytes of a log (at a line start), for panic messages.
fn tail(log: &str, n: usize) -> &str {
    if log.len() <= n {
        return log;
    }
    let mut from = log.len() - n;
    while !log.is_char_boundary(from) {
        from += 1;
    }
    let rest = &log[from..];
    rest.find('\n').map_or(rest, |i| &rest[i + 1..])
}

#[test]
fn same_targets_same_series_as_prometheus_agent() {
    let started = Instant::now();
    STAMP_ZERO.get_or_init(|| (now_ms() / 1000 + 30) * 1000);
    let dir = TempDir::new("agent-differential");
    for sub in ["prometheus", "promlet"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dir");
    }
    let fixtures: BTreeMap<&str, Fixture> = TARGETS
        .iter()
        .map(|(t, body)| (*t, Fixture::start(*body)))
        .collect();
    let ports: BTreeMap<&str, u16> = fixtures.iter().map(|(t, f)| (*t, f.port)).collect();
    let receivers = [
        Scripted::start(Vec::new(), Answer::ok()),
        Scripted::start(Vec::new(), Answer::ok()),
    ];
    let configs =
        |agent: Agent, reloaded: bool| config(&ports, &receivers[agent.index()].url(), reloaded);

    let prometheus =
        PrometheusAgent::start(&dir.join("prometheus"), &configs(Agent::Prometheus, false));
    let promlet = Promlet::start(
        &dir.join("promlet"),
        &configs(Agent::Promlet, false),
        &["--log.level=debug"],
    );
    let stale_up_of_gone = |agent: Agent| {
        receivers[agent.index()].delivered().iter().any(|(l, s)| {
            l.get("__name__").map(String::as_str) == Some("up")
                && l.get("t").map(String::as_str) == Some("gone")
                && s.iter().any(|(bits, _)| is_stale(*bits))
        })
    };
    let mut reloaded = [false; 2];
    // When Prometheus was sent its SIGHUP: its first scrape of `keep` from a new loop comes
    // after this.
    let mut prometheus_hup_ms = 0;
    loop {
        for agent in AGENTS {
            if !reloaded[agent.index()] && fixtures["gone"].scrapes(agent) >= RELOAD_AT {
                let text = configs(agent, true);
                match agent {
                    Agent::Prometheus => {
                        prometheus_hup_ms = now_ms();
                        prometheus.reload(&text);
                    }
                    Agent::Promlet => {
                        std::fs::write(dir.join("promlet").join("promlet.yml"), &text)
                            .expect("config");
                        promlet.signal("HUP");
                    }
                }
                reloaded[agent.index()] = true;
            }
        }
        let scraped_enough = AGENTS.iter().all(|&a| {
            fixtures
                .iter()
                .filter(|(t, _)| **t != "gone")
                .all(|(_, f)| f.scrapes(a) >= END_AT)
        });
        if reloaded.iter().all(|r| *r)
            && scraped_enough
            && AGENTS.iter().all(|&a| stale_up_of_gone(a))
        {
            break;
        }
        if started.elapsed() > RUN_LIMIT {
            let counts: Vec<String> = fixtures
                .iter()
                .map(|(t, f)| {
                    format!(
                        "{t}: {}/{}",
                        f.scrapes(Agent::Prometheus),
                        f.scrapes(Agent::Promlet)
                    )
                })
                .collect();
            panic!(
                "the run did not finish in {RUN_LIMIT:?}: reloaded {reloaded:?}, scrapes \
                 (Prometheus/promlet) {counts:?}, stale up of gone {}/{}\n\
                 Prometheus' log:\n{}\npromlet's log:\n{}",
                stale_up_of_gone(Agent::Prometheus),
                stale_up_of_gone(Agent::Promlet),
                tail(&prometheus.log(), 4000),
                tail(&promlet.log(), 4000)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Scrapes that started from here on are not compared: they may not all be delivered.
    let end_ms = now_ms();
    // Both send a partial batch within batch_send_deadline (1 s): wait for everything older
    // than `end_ms`, then stop both (neither writes anything on stop).
    std::thread::sleep(Duration::from_secs(3));
    let prometheus_log = prometheus.log();
    prometheus.stop();
    let promlet_log = promlet.log();
    assert_eq!(
        promlet.stop(),
        0,
        "a clean stop; log:\n{}",
        tail(&promlet_log, 4000)
    );
    let run = started.elapsed();

    let placed: Vec<Placed> = AGENTS
        .iter()
        .map(|&a| place(a, receivers[a.index()].delivered(), &fixtures))
        .collect();
    let (prom, mine) = (&placed[0], &placed[1]);
    let mut broken = Vec::new();
    for (agent, p) in AGENTS.iter().zip(&placed) {
        broken.extend(p.problems.iter().map(|e| format!("{}: {e}", agent.name())));
    }
    // The last scrape number both agents started before the end, per target.
    let k_hi: BTreeMap<&str, usize> = fixtures
        .iter()
        .map(|(t, f)| {
            let n = AGENTS
                .iter()
                .map(|&a| f.arrivals(a).iter().filter(|&&ms| ms < end_ms).count())
                .min()
                .unwrap_or(0);
            (*t, n.saturating_sub(1))
        })
        .collect();

    // The alignment itself: in every scrape, `a` (or `h`) is the scrape number, unless stale.
    for (agent, p) in AGENTS.iter().zip(&placed) {
        for (t, f) in &fixtures {
            let probe = match *t {
                "honor_true" => format!("h{{instance=\"i1\",job=\"x\",t=\"{t}\"}}"),
                "honor_false" => format!(
                    "h{{exported_instance=\"i1\",exported_job=\"x\",instance=\"127.0.0.1:{}\",job=\"{t}\",t=\"{t}\"}}",
                    f.port
                ),
                "relabel" => String::new(),
                "keep" | "gone" => format!("a{{instance=\"127.0.0.1:{}\",job=\"reload\",t=\"{t}\"}}", f.port),
                _ => format!("a{{instance=\"127.0.0.1:{}\",job=\"{t}\",t=\"{t}\"}}", f.port),
            };
            if probe.is_empty() {
                continue;
            }
            for k in 0..=k_hi[t] {
                let got: Vec<u64> = at(p, t, &probe, k)
                    .into_iter()
                    .filter(|b| !is_stale(*b))
                    .collect();
                let want = k as f64;
                if !got.is_empty() && got != [want.to_bits()] {
                    broken.push(format!(
                        "{}: {probe} at scrape {k} is {got:?}, not {k}: the alignment is off",
                        agent.name()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the run cannot be compared:\n{}\nPrometheus' log:\n{}\npromlet's log:\n{}",
        broken.join("\n"),
        tail(&prometheus_log, 4000),
        tail(&promlet_log, 4000)
    );

    // A timed-out scrape lasts the scrape_timeout (900 ms), not until the answer (1.5 s): a
    // bound on behaviour, loose enough for any machine.
    for (agent, p) in AGENTS.iter().zip(&placed) {
        let series = format!(
            "scrape_duration_seconds{{instance=\"127.0.0.1:{}\",job=\"timeout\",t=\"timeout\"}}",
            ports["timeout"]
        );
        for k in 2..4 {
            for bits in at(p, "timeout", &series, k) {
                let d = f64::from_bits(bits);
                assert!(
                    (0.85..1.45).contains(&d),
                    "{}: timed-out scrape {k} lasted {d} s",
                    agent.name()
                );
            }
        }
    }

    // Every write was answered 204: nothing may arrive twice.
    assert_eq!(mine.repeats, 0, "promlet delivered samples twice");

    // The deliberate differences (the module doc), each agent's sequence spelled out.
    let series_of = |name: &str, t: &str, job: &str| {
        (
            t.to_owned(),
            format!(
                "{name}{{instance=\"127.0.0.1:{}\",job=\"{job}\",t=\"{t}\"}}",
                ports[t]
            ),
        )
    };
    let mut deviations: BTreeMap<(String, String), Deviation> = BTreeMap::new();
    // An in-body failure from scrape 2 on: promlet stale-marks the last good scrape's series
    // at 2, Prometheus writes nothing there. `limits` and `labellimit` are good again from 5.
    for (t, name, value) in [
        ("limits", "a", None),
        ("limits", "s1", Some("1")),
        ("labellimit", "a", None),
        ("parse", "a", None),
        ("parse", "b", Some("1")),
    ] {
        let good_again = if t == "parse" { k_hi[t] + 1 } else { 5 };
        let good = (0..2)
            .chain(good_again..=k_hi[t])
            .map(|k| (k, value.map_or_else(|| k.to_string(), str::to_owned)));
        let prometheus = expect(good.clone());
        let promlet = expect(
            good.clone()
                .take(2)
                .chain([(2, "stale".to_owned())])
                .chain(good.skip(2)),
        );
        deviations.insert(
            series_of(name, t, t),
            Deviation {
                prometheus: vec![prometheus],
                promlet,
            },
        );
    }
    // `s2`, refused by sample_limit in scrapes 2–4: Prometheus stale-marks it at 5.
    deviations.insert(
        series_of("s2", "limits", "limits"),
        Deviation {
            prometheus: vec![expect([(5, "stale".to_owned())])],
            promlet: expect([]),
        },
    );
    // `keep` after the reload: Prometheus' new loop counts both series as added on its first
    // scrape, the first of `keep` after the SIGHUP unless one fell while the reload ran (then
    // possibly the next), and no later than the first after the reload completed.
    let loads = config_loads_ms(&prometheus_log);
    assert_eq!(
        loads.len(),
        2,
        "Prometheus loaded its configuration at start and at the reload; log:\n{}",
        tail(&prometheus_log, 4000)
    );
    let first_after = |ms: i64| {
        let arrivals = fixtures["keep"].arrivals(Agent::Prometheus);
        arrivals
            .iter()
            .position(|&a| a >= ms)
            .unwrap_or(arrivals.len())
    };
    let (k_hup, k_loaded) = (first_after(prometheus_hup_ms), first_after(loads[1]));
    assert!(
        0 < k_hup && k_hup <= k_loaded && k_loaded < k_hi["keep"],
        "Prometheus' reload is among the scrapes compared: SIGHUP before keep's scrape {k_hup}, \
         reloaded before {k_loaded}, compared up to {}",
        k_hi["keep"]
    );
    let added = |first: &[usize]| {
        expect(
            (0..=k_hi["keep"]).map(|k| (k, if first.contains(&k) { "2" } else { "0" }.to_owned())),
        )
    };
    deviations.insert(
        series_of("scrape_series_added", "keep", "reload"),
        Deviation {
            prometheus: (k_hup..=k_loaded).map(|k| added(&[0, k])).collect(),
            promlet: added(&[0]),
        },
    );

    // The comparison, series by series: equal, or each agent's sequence as a deviation says.
    let keys: BTreeSet<&(String, String)> = prom
        .series
        .keys()
        .chain(mine.series.keys())
        .chain(deviations.keys())
        .collect();
    let mut same = BTreeMap::<&str, usize>::new();
    let mut deviating = 0;
    let mut differences = Vec::new();
    for key in keys {
        let (t, series) = key;
        let name = series.split('{').next().unwrap_or("");
        let k = k_hi[t.as_str()];
        let want = sequence(name, prom.series.get(key), k);
        let got = sequence(name, mine.series.get(key), k);
        if std::env::var_os("PROMLET_DIFF_VERBOSE").is_some() {
            eprintln!("{series}\n    Prometheus: {want}\n    promlet:    {got}");
        }
        if let Some(d) = deviations.get(key) {
            if d.prometheus.contains(&want) && got == d.promlet {
                deviating += 1;
            } else {
                differences.push(format!(
                    "{series} (a deliberate difference, not as the module doc says)\n    \
                     Prometheus: {want}\n      expected: {}\n    \
                     promlet:    {got}\n      expected: {}",
                    d.prometheus.join("\n            or: "),
                    d.promlet
                ));
            }
        } else if want == got {
            if want != "(absent)" {
                *same.entry(t.as_str()).or_default() += 1;
            }
        } else {
            differences.push(format!(
                "{series}\n    Prometheus: {want}\n    promlet:    {got}"
            ));
        }
    }
    eprintln!(
        "agent differential: {:.1} s run; scrapes compared per target (0..=k): {k_hi:?}; \
         series matching per target: {same:?}; deliberate differences as expected: \
         {deviating}/{}; Prometheus' reload at keep's scrape {k_hup}..={k_loaded}; \
         repeats dropped: Prometheus {}, promlet {}; {} differences",
        run.as_secs_f64(),
        deviations.len(),
        prom.repeats,
        mine.repeats,
        differences.len()
    );
    // The stamped series: the same raw samples, over the scrapes compared, none stale.
    let t0 = STAMP_ZERO.get().copied().unwrap_or_default();
    let k_stamped = i64::try_from(k_hi["stamped"]).expect("small");
    let port = ports["stamped"];
    let stamped_series = |name: &str| {
        format!("{name}{{instance=\"127.0.0.1:{port}\",job=\"stamped\",t=\"stamped\"}}")
    };
    let raw_of = |p: &Placed, name: &str| -> Vec<(i64, u64)> {
        p.raw
            .get(&stamped_series(name))
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|(ts, _)| *ts <= t0 + 1000 * k_stamped)
                    .collect()
            })
            .unwrap_or_default()
    };
    let kv = |k: i64, v: i64| (t0 + 1000 * k, (v as f64).to_bits());
    // What 2.42's documented semantics give, written out, so that both agents are checked
    // against it and not only against each other.
    let steps = |skip: &[i64], upto: i64| -> Vec<(i64, u64)> {
        (0..=upto)
            .filter(|k| *k != 6 && !skip.contains(k))
            .map(|k| kv(k, k))
            .collect()
    };
    let written: [(&str, Vec<(i64, u64)>); 5] = [
        ("e_fixed", vec![kv(0, 7)]),
        ("e_step", steps(&[], k_stamped)),
        ("e_back", steps(&[4], k_stamped)),
        ("e_gone", steps(&[], 2)),
        ("e_old", vec![(t0 - 150_000, 1f64.to_bits())]),
    ];
    for (name, want) in &written {
        for (agent, p) in AGENTS.iter().zip(&placed) {
            let got = raw_of(p, name);
            // Stamped before Prometheus started: it never sends it (the module doc).
            let want = if *name == "e_old" && *agent == Agent::Prometheus {
                &Vec::new()
            } else {
                want
            };
            if &got != want {
                differences.push(format!(
                    "{}: stamped {name}: {got:?}, expected {want:?} (t0 {t0})",
                    agent.name()
                ));
            }
            if p.raw
                .get(&stamped_series(name))
                .is_some_and(|v| v.iter().any(|(_, b)| is_stale(*b)))
            {
                differences.push(format!(
                    "{}: stamped {name} got a stale marker",
                    agent.name()
                ));
            }
        }
    }
    for (agent, p) in AGENTS.iter().zip(&placed) {
        if let Some(extra) = p
            .raw
            .keys()
            .find(|k| !written.iter().any(|(n, _)| stamped_series(n) == **k))
        {
            differences.push(format!(
                "{}: an unexpected stamped series {extra}",
                agent.name()
            ));
        }
    }
    // Metadata: every distinct entry sent over the run, the same from both, as written.
    let want: BTreeSet<(u64, String, String, String)> = [
        (2, "a", "", ""),
        (2, "d_bytes", "Size \"in\" bytes \\ \n.", "bytes"),
        (1, "drop_me", "Dropped, still described: \\ \n \\x.", ""),
        (0, "keep_x", "", ""),
    ]
    .into_iter()
    .map(|(t, n, h, u)| (t, n.to_owned(), h.to_owned(), u.to_owned()))
    .collect();
    for agent in AGENTS {
        let got: BTreeSet<_> = receivers[agent.index()].metadata().into_iter().collect();
        if got != want {
            differences.push(format!(
                "{}: metadata sent {got:?}, expected {want:?}",
                agent.name()
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} series differ from Prometheus agent's:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
