//! Discovery at run time, end to end: promlet on `file_sd_configs` files that change under
//! it, and on an HTTPS kubelet `/pods` fixture that asks for a bearer token. What it
//! discovers is read back from what it remote-writes: the `up` series of every target, with
//! its labels, and the stale markers of the targets that went.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::peers::{Promlet, TempDir};
use support::receiver::{serve, Answer, Scripted};

const STALE: u64 = 0x7ff0_0000_0000_0002;

type Labels = BTreeMap<String, String>;

/// A target answering one series to every scrape; it counts its scrapes.
fn fixed_target() -> (u16, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&hits);
    let port = serve(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(b"m 1\n")
    });
    (port, hits)
}

/// The `up` series whose labels include all of `want`.
fn up_of(r: &Scripted, want: &[(&str, &str)]) -> Vec<(Labels, Vec<u64>)> {
    r.ups()
        .into_iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn is_stale(r: &Scripted, want: &[(&str, &str)]) -> bool {
    let found = up_of(r, want);
    !found.is_empty() && found.iter().all(|(_, v)| v.last() == Some(&STALE))
}

fn arrived(r: &Scripted, want: &[(&str, &str)]) -> bool {
    up_of(r, want)
        .iter()
        .any(|(_, v)| v.iter().any(|&b| b != STALE))
}

fn never_stale(r: &Scripted, want: &[(&str, &str)]) -> bool {
    up_of(r, want)
        .iter()
        .all(|(_, v)| v.iter().all(|&b| b != STALE))
}

#[test]
fn file_sd_targets_follow_their_files() {
    let dir = TempDir::new("discovery-file-sd");
    let sd = dir.join("sd");
    std::fs::create_dir_all(&sd).expect("sd dir");
    let (a, _) = fixed_target();
    let (b, b_hits) = fixed_target();
    let (c, _) = fixed_target();
    let (ia, ib, ic) = (
        format!("127.0.0.1:{a}"),
        format!("127.0.0.1:{b}"),
        format!("127.0.0.1:{c}"),
    );
    std::fs::write(
        sd.join("one.json"),
        format!(r#"[{{"targets": ["{ia}"], "labels": {{"team": "x"}}}}]"#),
    )
    .expect("one.json");
    std::fs::write(sd.join("extra.yml"), format!("- targets: ['{ib}']\n")).expect("extra.yml");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    // The file's base name and its full path, as labels, from __meta_filepath.
    let config = format!(
        "scrape_configs:\n  - job_name: fsd\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n\
         \x20   file_sd_configs:\n      - files: ['sd/*.json', sd/extra.yml]\n        refresh_interval: 1s\n\
         \x20   relabel_configs:\n\
         \x20     - {{source_labels: [__meta_filepath], regex: '.*/([^/]+)', target_label: file}}\n\
         \x20     - {{source_labels: [__meta_filepath], target_label: path}}\n\
         remote_write:\n  - url: {}\n",
        receiver.url()
    );
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=info"]);
    let long = Duration::from_secs(15);
    let one_path = sd.join("one.json").to_string_lossy().into_owned();
    promlet.wait_for(long, "a and b scraped", || {
        arrived(
            &receiver,
            &[("instance", &ia), ("team", "x"), ("file", "one.json")],
        ) && arrived(&receiver, &[("instance", &ib), ("file", "extra.yml")])
    });
    // Full label sets: __meta_filepath is the matched file's absolute path.
    let a_labels: Vec<Labels> = up_of(&receiver, &[("instance", &ia)])
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    let want: Labels = [
        ("file", "one.json"),
        ("instance", ia.as_str()),
        ("job", "fsd"),
        ("path", one_path.as_str()),
        ("team", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(a_labels, vec![want]);
    let discovered = "prometheus_sd_discovered_targets{config=\"fsd\",name=\"scrape\"}";
    assert_eq!(promlet.metric(discovered), Some(2.0));

    // A changed label: the old target is stale-marked, the new one scraped; b is untouched.
    std::fs::write(
        sd.join("one.json"),
        format!(r#"[{{"targets": ["{ia}"], "labels": {{"team": "yy"}}}}]"#),
    )
    .expect("one.json");
    promlet.wait_for(long, "a{team=yy}, a{team=x} stale", || {
        arrived(&receiver, &[("instance", &ia), ("team", "yy")])
            && is_stale(&receiver, &[("instance", &ia), ("team", "x")])
    });

    // A malformed file keeps its last good targets (logged once); a new file is read.
    std::fs::write(sd.join("extra.yml"), "- targets: ['unclosed\n").expect("extra.yml");
    std::fs::write(sd.join("two.json"), format!(r#"[{{"targets": ["{ic}"]}}]"#)).expect("two.json");
    promlet.wait_for(long, "c scraped", || {
        arrived(&receiver, &[("instance", &ic), ("file", "two.json")])
    });
    // Several polls (1 s) later, b is still scraped and warned about once.
    let before = b_hits.load(Ordering::SeqCst);
    promlet.wait_for(long, "b scraped on", || {
        b_hits.load(Ordering::SeqCst) >= before + 6
    });
    let warned = promlet
        .log()
        .lines()
        .filter(|l| l.contains("extra.yml") && l.contains("keeping the 1 targets"))
        .count();
    assert_eq!(warned, 1, "{}", promlet.log());
    assert_eq!(promlet.metric(discovered), Some(3.0));

    // A deleted file drops its targets: stale-marked as a reload removes them.
    std::fs::remove_file(sd.join("extra.yml")).expect("rm extra.yml");
    promlet.wait_for(long, "b stale", || {
        is_stale(&receiver, &[("instance", &ib)])
    });
    assert_eq!(promlet.metric(discovered), Some(2.0));

    // A reload of the same config keeps every target as it runs.
    promlet.signal("HUP");
    promlet.wait_for(long, "reloaded", || {
        promlet.log().contains("config reloaded")
    });
    let c_before = up_of(&receiver, &[("instance", &ic)])
        .first()
        .map_or(0, |(_, v)| v.len());
    promlet.wait_for(long, "c scraped after the reload", || {
        up_of(&receiver, &[("instance", &ic)])
            .first()
            .is_some_and(|(_, v)| v.len() >= c_before + 3)
    });
    assert!(never_stale(&receiver, &[("instance", &ic)]));
    assert!(never_stale(&receiver, &[("instance", &ia), ("team", "yy")]));

    // A reload that changes the job's file_sd patterns reads them anew: two.json is no
    // longer matched, so c goes (stale-marked) and a stays.
    std::fs::write(
        dir.join("promlet.yml"),
        config.replace("'sd/*.json', sd/extra.yml", "sd/one.json"),
    )
    .expect("config");
    promlet.signal("HUP");
    promlet.wait_for(long, "c stale after the reload", || {
        is_stale(&receiver, &[("instance", &ic)])
    });
    assert_eq!(promlet.metric(discovered), Some(1.0));
    assert!(never_stale(&receiver, &[("instance", &ia), ("team", "yy")]));
    assert_eq!(promlet.stop(), 0);
}

/// The fixture with the coredns pod taken out (as a kubelet lists pods after one went).
fn without_coredns(pods: &str) -> String {
    let start = pods
        .find("    {\n      \"metadata\": {\n        \"name\": \"coredns")
        .expect("coredns");
    let end = pods
        .find("    {\n      \"metadata\": {\n        \"name\": \"node-exporter")
        .expect("node-exporter");
    format!("{}{}", &pods[..start], &pods[end..])
}

#[test]
fn kubelet_sd_discovers_pods_over_https_with_a_bearer_token() {
    use support::tls::{make_certificates, serve_tls, server_config};
    let dir = TempDir::new("discovery-kubelet");
    make_certificates(&dir.0);
    std::fs::write(dir.join("token"), "s3cr3t-token\n").expect("token");
    let pods = include_str!("fixtures/kubelet/pods.json");
    let gone = Arc::new(AtomicBool::new(false));
    let coredns_gone = Arc::clone(&gone);
    let broken = Arc::new(AtomicUsize::new(0));
    let failing = Arc::clone(&broken);
    let later = without_coredns(pods);
    let refused = Arc::new(AtomicUsize::new(0));
    let refused_count = Arc::clone(&refused);
    // Every pod, until the test takes coredns out.
    let port = serve_tls(
        server_config(&dir.join("srv.pem"), &dir.join("srv.key"), None),
        move |req| {
            if req.header("authorization") != Some("Bearer s3cr3t-token")
                || req.line != "GET /pods HTTP/1.1"
            {
                refused_count.fetch_add(1, Ordering::SeqCst);
                return Answer::status("401 Unauthorized");
            }
            if failing.load(Ordering::SeqCst) > 0 {
                failing.fetch_add(1, Ordering::SeqCst);
                return Answer::status("500 Internal Server Error");
            }
            let body = if coredns_gone.load(Ordering::SeqCst) {
                later.as_str()
            } else {
                pods
            };
            Answer::status("200 OK")
                .header("Content-Type", "application/json")
                .body(body.as_bytes())
        },
    );
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    // The usual annotation rules: keep `prometheus.io/scrape: "true"`, take the port from
    // `prometheus.io/port`; every meta label is mapped to `k8s_*` to be seen.
    let config = format!(
        "scrape_configs:\n  - job_name: pods\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n\
         \x20   kubelet_sd_configs:\n      - url: https://127.0.0.1:{port}\n        refresh_interval: 1s\n\
         \x20       bearer_token_file: token\n        tls_config: {{ca_file: ca.pem}}\n\
         \x20   relabel_configs:\n\
         \x20     - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: 'true'}}\n\
         \x20     - {{source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], action: replace, regex: '([^:]+)(?::\\d+)?;(\\d+)', replacement: '$1:$2', target_label: __address__}}\n\
         \x20     - {{action: labelmap, regex: '__meta_kubernetes_(.+)', replacement: 'k8s_$1'}}\n\
         remote_write:\n  - url: {}\n",
        receiver.url()
    );
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=info"]);
    let long = Duration::from_secs(20);
    // coredns: three ports, all moved to 9153 by the annotation; node-exporter (host
    // network): its port and its init container; web (`scrape: "false"`) dropped.
    let want_instances = [
        "127.0.0.11:9153",
        "127.0.0.11:9153",
        "127.0.0.11:9153",
        "127.0.0.2:9100",
        "127.0.0.2:80",
    ];
    promlet.wait_for(long, "five pod targets", || {
        let all = receiver.ups();
        all.len() >= want_instances.len()
    });
    let all = receiver.ups();
    let mut instances: Vec<&str> = all.keys().map(|l| l["instance"].as_str()).collect();
    instances.sort_unstable();
    let mut want_sorted = want_instances.to_vec();
    want_sorted.sort_unstable();
    assert_eq!(instances, want_sorted, "{all:#?}");
    assert!(
        all.keys().all(|l| l["k8s_namespace"] != "default"),
        "web and backup dropped"
    );
    // One full label set, hand-written: the coredns metrics port. Empty meta labels are
    // dropped with the target's other empty labels.
    let metrics: Vec<&Labels> = all
        .keys()
        .filter(|l| {
            l.get("k8s_pod_container_port_name").map(String::as_str) == Some("metrics")
                && l["k8s_namespace"] == "kube-system"
        })
        .collect();
    let want: Labels = [
        ("instance", "127.0.0.11:9153"),
        ("job", "pods"),
        ("k8s_namespace", "kube-system"),
        (
            "k8s_pod_annotation_kubernetes_io_config_seen",
            "2026-11-30T08:12:44.112Z",
        ),
        ("k8s_pod_annotation_prometheus_io_port", "9153"),
        ("k8s_pod_annotation_prometheus_io_scrape", "true"),
        (
            "k8s_pod_annotationpresent_kubernetes_io_config_seen",
            "true",
        ),
        ("k8s_pod_annotationpresent_prometheus_io_port", "true"),
        ("k8s_pod_annotationpresent_prometheus_io_scrape", "true"),
        (
            "k8s_pod_container_id",
            "containerd://5b3f0a9c2e7d41b8a6c1f0e9d8b7a6c5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9",
        ),
        (
            "k8s_pod_container_image",
            "registry.k8s.io/coredns/coredns:v1.10.1",
        ),
        ("k8s_pod_container_init", "false"),
        ("k8s_pod_container_name", "coredns"),
        ("k8s_pod_container_port_name", "metrics"),
        ("k8s_pod_container_port_number", "9153"),
        ("k8s_pod_container_port_protocol", "TCP"),
        ("k8s_pod_controller_kind", "ReplicaSet"),
        ("k8s_pod_controller_name", "coredns-5d78c9869d"),
        ("k8s_pod_host_ip", "127.0.0.2"),
        ("k8s_pod_ip", "127.0.0.11"),
        ("k8s_pod_label_k8s_app", "kube-dns"),
        ("k8s_pod_label_pod_template_hash", "5d78c9869d"),
        ("k8s_pod_labelpresent_k8s_app", "true"),
        ("k8s_pod_labelpresent_pod_template_hash", "true"),
        ("k8s_pod_name", "coredns-5d78c9869d-x7kq2"),
        ("k8s_pod_node_name", "edge-1"),
        ("k8s_pod_phase", "Running"),
        ("k8s_pod_ready", "true"),
        ("k8s_pod_uid", "8f0e2b1c-6a1d-4c51-9d7e-0c3b8f6a2e11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(metrics, vec![&want]);
    let init: Vec<&Labels> = all
        .keys()
        .filter(|l| l.get("k8s_pod_container_init").map(String::as_str) == Some("true"))
        .collect();
    assert_eq!(init.len(), 1, "{init:#?}");
    assert_eq!(init[0]["k8s_pod_container_name"], "init-textfile");
    assert_eq!(init[0]["instance"], "127.0.0.2:80");
    // Counted before relabeling, as Prometheus counts them: the 8 targets of the 3 pods with
    // an IP (coredns 3 ports, node-exporter a port and an init container, web 3), of which
    // the keep rule leaves 5.
    let discovered = "prometheus_sd_discovered_targets{config=\"pods\",name=\"scrape\"}";
    assert_eq!(promlet.metric(discovered), Some(8.0));

    // coredns goes: its three targets are stale-marked; node-exporter's run on.
    gone.store(true, Ordering::SeqCst);
    promlet.wait_for(long, "coredns stale", || {
        is_stale(&receiver, &[("k8s_pod_name", "coredns-5d78c9869d-x7kq2")])
    });
    assert_eq!(
        up_of(&receiver, &[("k8s_pod_name", "coredns-5d78c9869d-x7kq2")]).len(),
        3
    );
    assert!(never_stale(
        &receiver,
        &[("k8s_pod_name", "node-exporter-4lq9p")]
    ));
    assert_eq!(promlet.metric(discovered), Some(5.0));

    // A kubelet that fails keeps the last good targets, logged once.
    broken.store(1, Ordering::SeqCst);
    promlet.wait_for(long, "three failed fetches", || {
        broken.load(Ordering::SeqCst) >= 4
    });
    assert!(never_stale(
        &receiver,
        &[("k8s_pod_name", "node-exporter-4lq9p")]
    ));
    assert_eq!(promlet.metric(discovered), Some(5.0));
    let warned = promlet
        .log()
        .lines()
        .filter(|l| l.contains("kubelet_sd") && l.contains("HTTP status 500"))
        .count();
    assert_eq!(warned, 1, "{}", promlet.log());
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "every request had the token"
    );
    assert!(!promlet.log().contains("s3cr3t"));
    assert_eq!(promlet.stop(), 0);
}

/// The bits of a float sample.
fn bits(v: f64) -> u64 {
    v.to_bits()
}

#[test]
fn a_job_over_its_target_limit_reports_every_target_down_until_it_fits() {
    let dir = TempDir::new("discovery-target-limit");
    let sd = dir.join("sd");
    std::fs::create_dir_all(&sd).expect("sd dir");
    let (a, a_hits) = fixed_target();
    let (b, b_hits) = fixed_target();
    let (ia, ib) = (format!("127.0.0.1:{a}"), format!("127.0.0.1:{b}"));
    std::fs::write(
        sd.join("t.json"),
        format!(r#"[{{"targets": ["{ia}", "{ib}"]}}]"#),
    )
    .expect("t.json");
    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let config = format!(
        "scrape_configs:\n  - job_name: lim\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n\
         \x20   target_limit: 1\n\
         \x20   file_sd_configs:\n      - files: [sd/t.json]\n        refresh_interval: 1s\n\
         remote_write:\n  - url: {}\n",
        receiver.url()
    );
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=info"]);
    let long = Duration::from_secs(15);
    // Two targets, limit 1: as Prometheus' scrape pool, both stay, every scrape fails with
    // the forced error (`up` 0) and neither target is asked.
    let down = |inst: &str| {
        up_of(&receiver, &[("instance", inst)])
            .iter()
            .any(|(_, v)| v.len() >= 3 && v.iter().all(|&x| x == bits(0.0)))
    };
    promlet.wait_for(long, "a and b down three times", || down(&ia) && down(&ib));
    assert_eq!(
        a_hits.load(Ordering::SeqCst),
        0,
        "not scraped while over the limit"
    );
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);
    assert!(
        promlet
            .log()
            .contains("target_limit exceeded (number of targets: 2, limit: 1)"),
        "{}",
        promlet.log()
    );
    let discovered = "prometheus_sd_discovered_targets{config=\"lim\",name=\"scrape\"}";
    assert_eq!(promlet.metric(discovered), Some(2.0));
    let hit = "prometheus_target_scrape_pool_exceeded_target_limit_total";
    assert!(
        promlet.metric(hit) >= Some(1.0),
        "{:?}",
        promlet.metric(hit)
    );

    // One target goes: the job fits, a is scraped again (up 1), b is stale-marked.
    std::fs::write(sd.join("t.json"), format!(r#"[{{"targets": ["{ia}"]}}]"#)).expect("t.json");
    promlet.wait_for(long, "a up, b stale", || {
        up_of(&receiver, &[("instance", &ia)])
            .iter()
            .any(|(_, v)| v.contains(&bits(1.0)))
            && is_stale(&receiver, &[("instance", &ib)])
    });
    assert!(a_hits.load(Ordering::SeqCst) > 0);
    assert_eq!(promlet.stop(), 0);
}
