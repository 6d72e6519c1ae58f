//! The running agent end to end, against real peers on 127.0.0.1: Debian's node_exporter
//! scraped by promlet, remote-written to Debian's Prometheus 2.42 and VictoriaMetrics at once
//! (two endpoints, each from its own cursor). Every series node_exporter served must arrive
//! at both with promlet's target labels and the external label, with the five report series,
//! one sample per scrape for every series (no gaps, no duplicates), at the scrape interval.
//! Also: the threads promlet runs, its health endpoints, its self-metrics, and a clean stop.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::http;
use support::peers::{
    node_exporter, prometheus_receiver, victoria_metrics, Peer, Promlet, TempDir,
};

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Label sets rendered `name{a="b",…}` (labels sorted), from a text-format body: an
/// independent reading of node_exporter's page (a line is `series value`, no timestamps).
fn series_of_exposition(body: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let map: BTreeMap<String, String> = series_labels(labels).into_iter().collect();
        out.insert(render(name, &map));
    }
    out
}

fn render(name: &str, labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The series a receiver holds for `job`, rendered as [`render`] does.
fn series_at(receiver: &Peer, job: &str, start: f64, end: f64) -> BTreeSet<String> {
    let q = support::peers::escape(&format!("{{job=\"{job}\"}}"));
    let j = receiver.get_json(&format!(
        "/api/v1/series?match[]={q}&start={start}&end={end}"
    ));
    j.get("data")
        .items()
        .iter()
        .map(|m| {
            let mut labels = m.labels();
            let name = labels.remove("__name__").unwrap_or_default();
            render(&name, &labels)
        })
        .collect()
}

/// Raw samples per series over `[end - window, end]` (a range selector's matrix).
fn counts(receiver: &Peer, selector: &str, window_s: u64, end: f64) -> BTreeMap<String, u64> {
    receiver
        .query(&format!("{selector}[{window_s}s]"), end)
        .iter()
        .map(|r| {
            let mut labels = r.get("metric").labels();
            let name = labels.remove("__name__").unwrap_or_default();
            (render(&name, &labels), r.get("values").items().len() as u64)
        })
        .collect()
}

#[test]
fn node_exporter_reaches_prometheus_and_victoria_metrics_complete() {
    let dir = TempDir::new("agent-e2e");
    std::fs::create_dir_all(dir.join("prom")).expect("dir");
    std::fs::create_dir_all(dir.join("vm")).expect("dir");
    let node = node_exporter();
    let prom = prometheus_receiver(&dir.join("prom"));
    let vm = victoria_metrics(&dir.join("vm"));
    let config = format!(
        "global:\n  scrape_interval: 1s\n  external_labels: {{cluster: edge-1}}\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n\
         remote_write:\n  - url: http://127.0.0.1:{}/api/v1/write\n    name: prom\n\
         \x20 - url: http://127.0.0.1:{}/api/v1/write\n    name: vm\n",
        node.port, prom.port, vm.port
    );
    let start = now_s();
    let started = Instant::now();
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=debug"]);
    // The first scrape comes within a second of start; the first request at once after it.
    promlet.wait_for(Duration::from_secs(10), "the first delivery", || {
        promlet
            .metric("prometheus_remote_storage_samples_total{remote_name=\"prom\"")
            .is_some()
            || promlet.log().contains("http 204")
    });
    let first_delivery = started.elapsed();
    // The loop, async-io's helper, one sender per endpoint: nothing else.
    let threads = promlet.threads();
    assert_eq!(
        threads,
        vec!["async-io", "promlet", "promlet-send-0", "promlet-send-1"],
        "threads of promlet"
    );
    assert_eq!(
        http(promlet.port, "GET /-/healthy HTTP/1.0", b"").map(|r| r.0),
        Some(200)
    );
    // What node_exporter serves, read by the test itself.
    let (_, page) = http(node.port, "GET /metrics HTTP/1.0", b"").expect("node_exporter");
    let served = series_of_exposition(&String::from_utf8(page).expect("utf-8"));
    assert!(served.len() > 100, "{} series", served.len());
    promlet.wait_for(Duration::from_secs(30), "6 scrapes", || {
        promlet
            .metric("promlet_target_scrapes_total")
            .unwrap_or(0.0)
            >= 6.0
    });
    let log = promlet.log();
    assert_eq!(promlet.stop(), 0, "a clean stop; log:\n{log}");
    // Every scrape was logged at debug level (one line per scrape).
    let scraped = promlet_log_scrapes(&dir) as u64;
    assert!(scraped >= 6, "{scraped} scrapes");
    let end = now_s() + 1.0;
    // Wider than the run: nothing older exists, and no edge of the window can cut a sample.
    let window = Duration::from_secs_f64(end - start).as_secs() + 31;

    // Every served series, with the target's labels and the external label, plus the report
    // series.
    let instance = format!("127.0.0.1:{}", node.port);
    let mut expected: BTreeSet<String> = served
        .iter()
        .map(|s| {
            let (name, rest) = s.split_once('{').expect("rendered");
            let inner = rest.trim_end_matches('}');
            let mut labels: BTreeMap<String, String> = BTreeMap::new();
            if !inner.is_empty() {
                for kv in series_labels(inner) {
                    labels.insert(kv.0, kv.1);
                }
            }
            // An empty value is no label (Prometheus' labels.Builder drops it).
            labels.retain(|_, v| !v.is_empty());
            labels.insert("cluster".into(), "edge-1".into());
            labels.insert("instance".into(), instance.clone());
            labels.insert("job".into(), "node".into());
            render(name, &labels)
        })
        .collect();
    for report in [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        let labels: BTreeMap<String, String> = [
            ("cluster", "edge-1"),
            ("instance", instance.as_str()),
            ("job", "node"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        expected.insert(render(report, &labels));
    }
    for (name, receiver) in [("prometheus", &prom), ("victoria-metrics", &vm)] {
        // VictoriaMetrics makes fresh data searchable within a few seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            let got = series_at(receiver, "node", start - 5.0, end);
            if got == expected || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        let missing: Vec<&String> = expected.difference(&got).take(10).collect();
        let extra: Vec<&String> = got.difference(&expected).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: {} series expected, {} arrived; missing {missing:#?}; unexpected {extra:#?}",
            expected.len(),
            got.len()
        );
        // One sample per scrape for every series: as many as promlet scraped (`up` counts
        // them). VictoriaMetrics may need a moment to make the last ones searchable.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (scrapes, all) = loop {
            let ups = counts(receiver, "up{job=\"node\"}", window, end);
            let scrapes = ups.values().next().copied().unwrap_or(0);
            let all = counts(receiver, "{job=\"node\"}", window, end);
            let complete = scrapes == scraped && all.values().all(|n| *n == scrapes);
            if complete || Instant::now() > deadline {
                break (scrapes, all);
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(
            scrapes, scraped,
            "{name}: up samples vs scrapes promlet made"
        );
        let gaps: Vec<(&String, &u64)> = all
            .iter()
            .filter(|(_, n)| **n != scrapes)
            .take(10)
            .collect();
        assert!(
            gaps.is_empty(),
            "{name}: series without {scrapes} samples: {gaps:#?}"
        );
        assert_eq!(all.len(), expected.len(), "{name}");
        eprintln!(
            "{name}: {} series × {scrapes} scrapes arrived complete; first delivery {:?} after start",
            all.len(),
            first_delivery
        );
    }
    // The scrapes came at the interval: raw `up` timestamps 1 s apart.
    let raw = prom.query(&format!("up{{job=\"node\"}}[{window}s]"), end);
    let times: Vec<f64> = raw[0]
        .get("values")
        .items()
        .iter()
        .map(|p| match &p.items()[0] {
            support::json::Json::Number(t) => *t,
            other => panic!("timestamp {other:?}"),
        })
        .collect();
    for w in times.windows(2).skip(1) {
        let gap = w[1] - w[0];
        assert!(
            (0.8..1.2).contains(&gap),
            "scrapes {gap} s apart: {times:?}"
        );
    }
}

/// The scrapes promlet logged for the node target (debug level: a line per scrape).
fn promlet_log_scrapes(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.join("promlet.log"))
        .expect("log")
        .lines()
        .filter(|l| {
            l.contains("/metrics scraped") || l.contains("is down") || l.contains("still down")
        })
        .count()
}

/// `a="b",c="d"`: the labels of an exposition line, or of a series [`render`] wrote (`\n`,
/// `\\` and `\"` are the escapes of both).
fn series_labels(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("quote");
            match c {
                '\\' => {
                    let (_, e) = chars.next().expect("escape");
                    value.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((k.to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

const STALE: u64 = 0x7ff0_0000_0000_0002;

/// A target answering `body` to every scrape; it counts its scrapes.
fn fixed_target(body: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use support::receiver::{serve, Answer};
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&hits);
    let port = serve(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(body.as_bytes())
    });
    (port, hits)
}

/// The samples (value bits) the receiver got for series `name` with label `label`.
fn samples_of(
    r: &support::receiver::Scripted,
    name: &str,
    label: Option<(&str, &str)>,
) -> Vec<(u64, i64)> {
    r.delivered()
        .into_iter()
        .filter(|(l, _)| {
            l.get("__name__").map(String::as_str) == Some(name)
                && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v))
        })
        .flat_map(|(_, s)| s)
        .collect()
}

fn job(name: &str, port: u16, stage: &str) -> String {
    format!(
        "  - job_name: {name}\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n\
         \x20   static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
         \x20   metric_relabel_configs: [{{target_label: stage, replacement: {stage}}}]\n"
    )
}

#[test]
fn reload_applies_targets_and_rules_and_keeps_the_old_config_when_refused() {
    use support::receiver::{Answer, Scripted};
    let dir = TempDir::new("agent-reload");
    let (a, _) = fixed_target("a_metric{x=\"1\"} 1\n");
    let (b, b_hits) = fixed_target("b_metric 2\n");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let head = "global: {scrape_interval: 1s}\nscrape_configs:\n";
    let tail = format!("remote_write:\n  - url: {}\n", receiver.url());
    let promlet = Promlet::start(
        &dir.0,
        &format!("{head}{}{tail}", job("a", a, "one")),
        &["--log.level=info"],
    );
    let arrived =
        |name: &str, stage: &str| !samples_of(&receiver, name, Some(("stage", stage))).is_empty();
    promlet.wait_for(Duration::from_secs(10), "a_metric{stage=one}", || {
        arrived("a_metric", "one")
    });

    // Reload: job a goes, job b comes.
    std::fs::write(
        dir.join("promlet.yml"),
        format!("{head}{}{tail}", job("b", b, "two")),
    )
    .expect("config");
    promlet.signal("HUP");
    promlet.wait_for(Duration::from_secs(10), "b_metric{stage=two}", || {
        arrived("b_metric", "two")
    });
    promlet.wait_for(Duration::from_secs(10), "a_metric's stale marker", || {
        samples_of(&receiver, "a_metric", None).last().map(|s| s.0) == Some(STALE)
    });
    let a_up = samples_of(&receiver, "up", Some(("job", "a")));
    assert_eq!(
        a_up.last().map(|s| s.0),
        Some(STALE),
        "a removed target's up is stale-marked"
    );

    // A changed rule on a kept target: the task keeps its staleness state, so the series
    // the old rule made are stale-marked when the new rule's appear.
    std::fs::write(
        dir.join("promlet.yml"),
        format!("{head}{}{tail}", job("b", b, "three")),
    )
    .expect("config");
    promlet.signal("HUP");
    promlet.wait_for(Duration::from_secs(10), "b_metric{stage=three}", || {
        arrived("b_metric", "three")
    });
    promlet.wait_for(Duration::from_secs(10), "b_metric{stage=two} stale", || {
        samples_of(&receiver, "b_metric", Some(("stage", "two")))
            .last()
            .map(|s| s.0)
            == Some(STALE)
    });
    let b_up = samples_of(&receiver, "up", Some(("job", "b")));
    assert!(
        b_up.iter().all(|s| s.0 != STALE),
        "b's up is never stale-marked: it was kept"
    );

    // A config promlet refuses: /-/reload answers 500 naming the key, the old config runs on.
    std::fs::write(
        dir.join("promlet.yml"),
        format!("{head}{}    bogus_key: 1\n{tail}", job("b", b, "four")),
    )
    .expect("config");
    let (status, body) = http(promlet.port, "POST /-/reload HTTP/1.0", b"").expect("reload");
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("bogus_key"), "{body}");
    assert_eq!(
        promlet.metric("prometheus_config_last_reload_successful"),
        Some(0.0)
    );
    let before = b_hits.load(std::sync::atomic::Ordering::SeqCst);
    promlet.wait_for(Duration::from_secs(10), "b scraped on", || {
        b_hits.load(std::sync::atomic::Ordering::SeqCst) >= before + 2
    });
    assert!(!arrived("b_metric", "four"));
    // A good config again: /-/reload answers 200.
    std::fs::write(
        dir.join("promlet.yml"),
        format!("{head}{}{tail}", job("b", b, "three")),
    )
    .expect("config");
    let (status, _) = http(promlet.port, "POST /-/reload HTTP/1.0", b"").expect("reload");
    assert_eq!(status, 200);
    assert_eq!(
        promlet.metric("prometheus_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(promlet.stop(), 0);
}

#[test]
fn secrets_never_reach_the_log() {
    use support::receiver::{serve, Answer, Scripted};
    let dir = TempDir::new("agent-secrets");
    let token = "s3cr3t-scrape-token-9f2c";
    let password = "p4ssw0rd-scrape-77aa";
    let rw_password = "rw-p4ssw0rd-file-5e1d";
    let rw_token = "rw-bearer-token-file-c0ffee";
    let expected_auth = format!("Bearer {token}");
    let guarded = serve(move |req| {
        if req.header("authorization") == Some(expected_auth.as_str()) {
            Answer::status("200 OK").body(b"guarded_metric 1\n")
        } else {
            Answer::status("401 Unauthorized").body(b"bad token")
        }
    });
    // A target that refuses the basic-auth password, so the failure path logs too.
    let refusing = serve(|_| Answer::status("401 Unauthorized"));
    let good = Scripted::start(Vec::new(), Answer::ok());
    let bad = Scripted::start(
        Vec::new(),
        Answer::status("401 Unauthorized").body(b"who are you"),
    );
    std::fs::write(dir.join("rw-password"), format!("{rw_password}\n")).expect("file");
    std::fs::write(dir.join("rw-token"), rw_token).expect("file");
    let config = format!(
        "global: {{scrape_interval: 500ms, scrape_timeout: 400ms}}\nscrape_configs:\n\
         \x20 - job_name: guarded\n    authorization: {{credentials: {token}}}\n\
         \x20   static_configs: [{{targets: ['127.0.0.1:{guarded}']}}]\n\
         \x20 - job_name: refusing\n    basic_auth: {{username: u, password: {password}}}\n\
         \x20   static_configs: [{{targets: ['127.0.0.1:{refusing}']}}]\n\
         remote_write:\n\
         \x20 - url: {}\n    basic_auth: {{username: rw, password_file: rw-password}}\n\
         \x20 - url: {}\n    authorization: {{credentials_file: rw-token}}\n",
        good.url(),
        bad.url()
    );
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=debug"]);
    promlet.wait_for(Duration::from_secs(10), "guarded_metric delivered", || {
        !samples_of(&good, "guarded_metric", None).is_empty()
            && !bad.writes().is_empty()
            && promlet.log().contains("is down")
    });
    assert_eq!(promlet.stop(), 0);
    // The secrets were used…
    let b64 = |s: &str| {
        let mut out = String::new();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for c in s.as_bytes().chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                out.push(if i <= c.len() {
                    char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize])
                } else {
                    '='
                });
            }
        }
        out
    };
    let rw_basic = b64(&format!("rw:{rw_password}"));
    let w = good.writes();
    assert_eq!(
        w[0].request.header("authorization"),
        Some(format!("Basic {rw_basic}").as_str())
    );
    assert_eq!(
        bad.writes()[0].request.header("authorization"),
        Some(format!("Bearer {rw_token}").as_str())
    );
    // …and none of them, nor their base64 forms, is in the log.
    let log = std::fs::read_to_string(dir.join("promlet.log")).expect("log");
    assert!(log.lines().count() > 20, "a debug log was written:\n{log}");
    for secret in [
        token.to_owned(),
        password.to_owned(),
        rw_password.to_owned(),
        rw_token.to_owned(),
        rw_basic,
        b64(&format!("u:{password}")),
    ] {
        assert!(!log.contains(&secret), "{secret} is in the log:\n{log}");
    }
}
