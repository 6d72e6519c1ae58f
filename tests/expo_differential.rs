//! promlet's parsers (text 0.0.4 and OpenMetrics 1.0) against the real Prometheus (Debian's 2.42 in
//! agent mode).
//!
//! How the expected files are made (`PROMLET_RECORD=1 cargo test --test expo_differential`):
//! every payload in `tests/fixtures/expo/prom/` (written by `make_payloads.py` there) is served on
//! 127.0.0.1, one scrape job per payload: `NNN-name.prom` as `text/plain; version=0.0.4`,
//! `NNN-name.om` as `application/openmetrics-text; version=1.0.0`, or with the Content-Type in
//! `NNN-name.ctype` when there is one (empty: no Content-Type header); `prometheus --enable-feature=agent`
//! scrapes them every second and remote-writes to a capture receiver in this test, which
//! decodes the snappy protobuf and keeps, per job, `up` and every scraped series (target labels
//! and synthetic series removed). That is written as `NNN-name.expected`.
//!
//! Two tests:
//! - `parser_matches_recorded_prometheus` (fast): promlet's parser, plus the model of what a
//!   scrape appends (`appended`), gives exactly each `.expected` file.
//! - `recordings_match_live_prometheus`: runs Prometheus now and checks the recordings still
//!   hold (so they cannot go stale); with `PROMLET_RECORD=1` it rewrites them instead.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use promlet::config::relabel::RelabelConfig;
use promlet::config::{Config, Limits};
use promlet::labels::{HonorLabels, LabelSet};
use promlet::limits::{check_body_size, check_labels, SampleCounter};
use promlet::parse::{Entry, Format, Parser, Step, ACCEPT_HEADER};
use promlet::relabel::{process_set, Scratch};
use support::receiver::{capture_receiver, read_request, respond};
use support::{free_port, Killed};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/expo/prom")
}

/// One scrape body and the Content-Type it is served with (`None`: no such header).
#[derive(Clone)]
struct Payload {
    name: String,
    body: Vec<u8>,
    content_type: Option<String>,
}

fn payloads() -> Vec<Payload> {
    let mut files: Vec<String> = std::fs::read_dir(corpus())
        .expect("corpus")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".prom") || n.ends_with(".om"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let body = std::fs::read(corpus().join(&f)).expect("read payload");
            let (name, own_type) = match f.strip_suffix(".om") {
                Some(name) => (
                    name,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                None => (
                    f.trim_end_matches(".prom"),
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
            };
            let content_type = match std::fs::read_to_string(corpus().join(format!("{name}.ctype")))
            {
                Ok(t) if t.is_empty() => None,
                Ok(t) => Some(t),
                Err(_) => Some(own_type.to_owned()),
            };
            Payload {
                name: name.to_owned(),
                body,
                content_type,
            }
        })
        .collect()
}

/// The payload's `metric_relabel_configs` (YAML list in `NNN-name.relabel.yml`), if any.
fn relabel_text(name: &str) -> Option<String> {
    std::fs::read_to_string(corpus().join(format!("{name}.relabel.yml"))).ok()
}

/// Indents a YAML list to sit under a scrape config's `metric_relabel_configs:` key.
fn indented(rules: &str) -> String {
    rules.lines().map(|l| format!("      {l}\n")).collect()
}

/// The payload's scrape-config limit keys (YAML lines in `NNN-name.limits.yml`), if any.
fn limits_text(name: &str) -> Option<String> {
    std::fs::read_to_string(corpus().join(format!("{name}.limits.yml"))).ok()
}

/// The payload job's extra keys, as a scrape config's YAML lines.
fn job_extras(name: &str) -> String {
    let mut out = String::new();
    if let Some(limits) = limits_text(name) {
        out.extend(limits.lines().map(|l| format!("    {l}\n")));
    }
    if let Some(rules) = relabel_text(name) {
        out.push_str("    metric_relabel_configs:\n");
        out.push_str(&indented(&rules));
    }
    out
}

/// The job's relabel rules and limits as promlet's config loader reads them.
fn job_settings(name: &str) -> (Vec<RelabelConfig>, Limits) {
    let text = format!("scrape_configs:\n  - job_name: x\n{}", job_extras(name));
    let config = Config::parse(&text, Path::new(name), Path::new("."))
        .unwrap_or_else(|e| panic!("{name}: promlet refuses what Prometheus took: {e}"));
    let sc = &config.scrape_configs[0];
    (sc.metric_relabel_configs.clone(), sc.limits)
}

/// One series as the receiver sees it: sorted labels (with `__name__`), value bits, and the
/// timestamp when the payload gave one.
type Line = String;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render(labels: &BTreeMap<String, String>, value_bits: u64, ts: Option<i64>) -> Line {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    match ts {
        Some(ts) => format!("{{{}}} {value_bits:#018x} @{ts}", inner.join(", ")),
        None => format!("{{{}}} {value_bits:#018x}", inner.join(", ")),
    }
}

/// Target labels as the recordings spell them: the values change per run (port), so both
/// sides write placeholders.
const TARGET_JOB: &str = "<job>";
const TARGET_INSTANCE: &str = "<instance>";

/// Payloads scraped with `honor_labels: true`.
fn honor(name: &str) -> HonorLabels {
    if name.contains("-honor-") {
        HonorLabels::Yes
    } else {
        HonorLabels::No
    }
}

/// What Prometheus 2.42's scrape loop appends for a body, by promlet's parser and label set:
/// `up` 0 and nothing on a parse error; otherwise every series (repeats included, as the
/// agent keeps them) with the target's labels merged (`honor`), empty-valued labels dropped,
/// and the scrape failed if a label name is then given twice. Series with an explicit
/// timestamp are left out: the agent forwards only samples newer than its WAL watcher's start,
/// so a payload's fixed timestamps never reach a receiver and cannot be compared.
///
/// This is the scrape-level behaviour the scrape loop (issue 6) must implement; it lives here
/// until then, checked against the real Prometheus by the recordings.
fn appended(
    name: &str,
    body: &[u8],
    format: Format,
    honor: HonorLabels,
    rules: &[RelabelConfig],
    limits: &Limits,
) -> (bool, BTreeSet<Line>) {
    if check_body_size(u64::try_from(body.len()).expect("fits"), limits).is_err() {
        return (false, BTreeSet::new());
    }
    let mut scratch = Scratch::default();
    let mut samples = SampleCounter::new(limits);
    // The live run's target labels: job and instance as placeholders, and `payload`, which
    // counts for the label limits and is removed before rendering.
    let target = [
        ("instance".to_owned(), TARGET_INSTANCE.to_owned()),
        ("job".to_owned(), TARGET_JOB.to_owned()),
        ("payload".to_owned(), name.to_owned()),
    ];
    let mut parser = Parser::new(format);
    let mut set = LabelSet::new();
    let mut used_total = 0;
    let mut out = BTreeSet::new();
    loop {
        let step = match parser.next(&body[used_total..], true) {
            Ok(s) => s,
            Err(_) => return (false, BTreeSet::new()),
        };
        match step {
            Step::Entry(entry, used) => {
                if let Entry::Series {
                    data,
                    name,
                    labels,
                    value,
                    timestamp_ms,
                } = entry
                {
                    set.fill_series(data, name, labels);
                    set.merge_target(&target, honor);
                    set.remove_empty();
                    if !process_set(&mut set, rules, &mut scratch) || set.is_empty() {
                        // Dropped by a rule (or left empty): skipped, the scrape goes on.
                        used_total += used;
                        continue;
                    }
                    if set.get(b"__name__").is_none() {
                        // scrape.go: errNameLabelMandatory fails the whole scrape.
                        return (false, BTreeSet::new());
                    }
                    if check_labels(&set, limits).is_err() {
                        return (false, BTreeSet::new());
                    }
                    if set.duplicate_name().is_some() {
                        // The agent's appender refuses the set; the scrape fails.
                        return (false, BTreeSet::new());
                    }
                    samples.add(value);
                    if timestamp_ms.is_none() {
                        let mut map: BTreeMap<String, String> = set
                            .iter()
                            .map(|(k, v)| {
                                (
                                    String::from_utf8_lossy(k).into_owned(),
                                    String::from_utf8_lossy(v).into_owned(),
                                )
                            })
                            .collect();
                        map.remove("payload");
                        // Remote write is proto3: a zero double is not encoded, so -0 (equal
                        // to 0) arrives as +0. promlet's encoder (issue 6) must do the same.
                        let bits = if value == 0.0 { 0 } else { value.to_bits() };
                        out.insert(render(&map, bits, None));
                    }
                }
                used_total += used;
            }
            Step::End(_) => {
                return match samples.finish() {
                    Ok(_) => (true, out),
                    Err(_) => (false, BTreeSet::new()),
                }
            }
            Step::NeedMore => unreachable!("eof is set"),
        }
    }
}

fn expected_text(up: bool, series: &BTreeSet<Line>) -> String {
    let mut s = format!("up {}\n", u8::from(up));
    for l in series {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[test]
fn parser_matches_recorded_prometheus() {
    let payloads = payloads();
    assert!(
        payloads.len() >= 150,
        "the corpus must hold at least 150 payloads, has {}",
        payloads.len()
    );
    let mut mismatches = Vec::new();
    for Payload {
        name,
        body,
        content_type,
    } in &payloads
    {
        let path = corpus().join(format!("{name}.expected"));
        let Ok(want) = std::fs::read_to_string(&path) else {
            mismatches.push(format!(
                "{name}: no recording (run PROMLET_RECORD=1 cargo test --test expo_differential)"
            ));
            continue;
        };
        let (rules, limits) = job_settings(name);
        let format = Format::from_content_type(content_type.as_deref().map(str::as_bytes));
        let (up, series) = appended(name, body, format, honor(name), &rules, &limits);
        let got = expected_text(up, &series);
        if got != want {
            mismatches.push(format!("{name}:\n--- Prometheus\n{want}--- promlet\n{got}"));
        }
    }
    eprintln!(
        "expo differential: {} payloads, {} disagreements with the Prometheus recordings",
        payloads.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

// ---------------------------------------------------------------- the live Prometheus side

/// Serves each payload at `/p/<name>`; returns the port and the `Accept` headers the
/// scrapes sent.
fn serve_payloads(payloads: Vec<Payload>) -> (u16, Arc<Mutex<BTreeSet<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let payloads: Arc<BTreeMap<String, Payload>> =
        Arc::new(payloads.into_iter().map(|p| (p.name.clone(), p)).collect());
    let accepts: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let seen = Arc::clone(&accepts);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let payloads = Arc::clone(&payloads);
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut stream = stream;
                let Ok(read_half) = stream.try_clone() else {
                    return;
                };
                if let Some(request) = read_request(&mut BufReader::new(read_half)) {
                    let accept = request.header("accept").unwrap_or("").to_owned();
                    seen.lock().expect("lock").insert(accept);
                    let path = request.line.split_whitespace().nth(1).unwrap_or("");
                    let content_type = |t: &str| vec![("Content-Type".to_owned(), t.to_owned())];
                    let _ = match path.strip_prefix("/p/").and_then(|n| payloads.get(n)) {
                        Some(p) => {
                            let headers = p.content_type.as_deref().map(content_type);
                            respond(
                                &mut stream,
                                "200 OK",
                                headers.as_deref().unwrap_or(&[]),
                                &p.body,
                                true,
                            )
                        }
                        None => respond(
                            &mut stream,
                            "404 Not Found",
                            &content_type("text/plain"),
                            b"no such payload\n",
                            true,
                        ),
                    };
                }
            });
        }
    });
    (port, accepts)
}

const SYNTHETIC: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Runs Prometheus over the corpus; returns per payload the expected-file text, and the
/// `Accept` headers its scrapes sent.
fn record_with_prometheus() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let payloads = payloads();
    let names: Vec<String> = payloads.iter().map(|p| p.name.clone()).collect();
    let (target_port, accepts) = serve_payloads(payloads);
    let (receiver_port, received) = capture_receiver();
    let dir = std::env::temp_dir().join(format!("promlet-expo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut config =
        String::from("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n");
    for n in &names {
        let honor_labels = honor(n) == HonorLabels::Yes;
        config.push_str(&format!(
            // The `payload` target label files every received series under its payload,
            // whatever job label honor_labels leaves on it; it is removed again below.
            "  - job_name: '{n}'\n    honor_labels: {honor_labels}\n    metrics_path: /p/{n}\n    static_configs: [{{targets: ['127.0.0.1:{target_port}'], labels: {{payload: '{n}'}}}}]\n"
        ));
        config.push_str(&job_extras(n));
    }
    config.push_str(&format!(
        "remote_write:\n  - url: http://127.0.0.1:{receiver_port}/api/v1/write\n    queue_config: {{batch_send_deadline: 1s, max_samples_per_send: 5000}}\n    metadata_config: {{send: false}}\n"
    ));
    // Samples stamped before this come from the payload (explicit timestamps); scrapes are
    // stamped after it.
    let started_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("fits i64")
        - 60_000;
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, config).expect("config");
    let child = Command::new("prometheus")
        .arg("--enable-feature=agent")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.agent.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("prometheus not runnable ({e}): ./test.sh installs Debian's prometheus; this test never skips"));
    let _guard = Killed(child);

    // Wait until every job has reported `up` at least three times (so its first scrape's
    // series have surely arrived), for at most 90 s.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ups: BTreeMap<String, usize> = {
            let got = received.lock().expect("lock");
            let mut ups = BTreeMap::new();
            for (labels, samples) in got.iter() {
                if labels.get("__name__").map(String::as_str) == Some("up") {
                    *ups.entry(labels.get("payload").cloned().unwrap_or_default())
                        .or_insert(0) += samples.len();
                }
            }
            ups
        };
        if names.iter().all(|n| ups.get(n).copied().unwrap_or(0) >= 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report every job within 90 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = received.lock().expect("lock").clone();
    let _ = std::fs::remove_dir_all(&dir);
    let mut per_job: BTreeMap<String, (bool, BTreeSet<Line>)> = names
        .iter()
        .map(|n| (n.clone(), (false, BTreeSet::new())))
        .collect();
    let target_instance = format!("127.0.0.1:{target_port}");
    for (mut labels, samples) in got {
        let payload = labels.remove("payload").unwrap_or_default();
        let Some((up, series)) = per_job.get_mut(&payload) else {
            continue;
        };
        if labels.get("job") == Some(&payload) {
            labels.insert("job".to_owned(), TARGET_JOB.to_owned());
        }
        if labels.get("instance") == Some(&target_instance) {
            labels.insert("instance".to_owned(), TARGET_INSTANCE.to_owned());
        }
        let name = labels.get("__name__").cloned().unwrap_or_default();
        if name == "up" {
            *up |= samples.iter().any(|(bits, _)| f64::from_bits(*bits) == 1.0);
            continue;
        }
        if SYNTHETIC.contains(&name.as_str()) {
            continue;
        }
        for (bits, ts) in samples {
            // A timestamp is part of the recording only when the payload gave one.
            let explicit = (ts < started_ms).then_some(ts);
            series.insert(render(&labels, bits, explicit));
        }
    }
    let recordings = per_job
        .into_iter()
        .map(|(n, (up, s))| (n, expected_text(up, &s)))
        .collect();
    let accepts = accepts.lock().expect("lock").clone();
    (recordings, accepts)
}

#[test]
fn recordings_match_live_prometheus() {
    let (live, accepts) = record_with_prometheus();
    assert_eq!(
        accepts,
        BTreeSet::from([ACCEPT_HEADER.to_owned()]),
        "the Accept header Prometheus sends is promlet's ACCEPT_HEADER"
    );
    let record = std::env::var_os("PROMLET_RECORD").is_some();
    let mut stale = Vec::new();
    for (name, text) in &live {
        let path = corpus().join(format!("{name}.expected"));
        if record {
            std::fs::write(&path, text).expect("write recording");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(format!("{name}: live Prometheus now says:\n{text}"));
        }
    }
    assert!(
        stale.is_empty(),
        "recordings differ from the live Prometheus:\n{}",
        stale.join("\n")
    );
}
