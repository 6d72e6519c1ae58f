//! Unit tests of discovery: pods → groups against hand-written label sets (pod.go's
//! semantics), and file_sd polling on files in a temporary directory.

use std::collections::BTreeMap;

use super::*;

type Labels = BTreeMap<String, String>;

/// Each group as one label set, `__address__` included.
fn flatten(groups: &[TargetGroup]) -> Vec<Labels> {
    groups
        .iter()
        .map(|g| {
            assert_eq!(g.targets.len(), 1, "{g:?}");
            assert!(
                g.labels.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted: {g:?}"
            );
            let mut m: Labels = g.labels.iter().cloned().collect();
            m.insert("__address__".to_owned(), g.targets[0].clone());
            m
        })
        .collect()
}

/// `__meta_kubernetes_<name>` labels from `(name, value)` pairs, and `__address__`.
fn meta(address: &str, pairs: &[&[(&str, &str)]]) -> Labels {
    let mut m = Labels::new();
    m.insert("__address__".to_owned(), address.to_owned());
    for part in pairs {
        for (k, v) in *part {
            m.insert(format!("__meta_kubernetes_{k}"), (*v).to_owned());
        }
    }
    m
}

const COREDNS: &[(&str, &str)] = &[
    ("namespace", "kube-system"),
    ("pod_name", "coredns-5d78c9869d-x7kq2"),
    ("pod_ip", "127.0.0.11"),
    ("pod_ready", "true"),
    ("pod_phase", "Running"),
    ("pod_node_name", "edge-1"),
    ("pod_host_ip", "127.0.0.2"),
    ("pod_uid", "8f0e2b1c-6a1d-4c51-9d7e-0c3b8f6a2e11"),
    ("pod_controller_kind", "ReplicaSet"),
    ("pod_controller_name", "coredns-5d78c9869d"),
    ("pod_label_k8s_app", "kube-dns"),
    ("pod_labelpresent_k8s_app", "true"),
    ("pod_label_pod_template_hash", "5d78c9869d"),
    ("pod_labelpresent_pod_template_hash", "true"),
    ("pod_annotation_prometheus_io_scrape", "true"),
    ("pod_annotationpresent_prometheus_io_scrape", "true"),
    ("pod_annotation_prometheus_io_port", "9153"),
    ("pod_annotationpresent_prometheus_io_port", "true"),
    (
        "pod_annotation_kubernetes_io_config_seen",
        "2026-11-30T08:12:44.112Z",
    ),
    ("pod_annotationpresent_kubernetes_io_config_seen", "true"),
    ("pod_container_name", "coredns"),
    (
        "pod_container_id",
        "containerd://5b3f0a9c2e7d41b8a6c1f0e9d8b7a6c5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9",
    ),
    (
        "pod_container_image",
        "registry.k8s.io/coredns/coredns:v1.10.1",
    ),
    ("pod_container_init", "false"),
];

const NODE_EXPORTER: &[(&str, &str)] = &[
    ("namespace", "monitoring"),
    ("pod_name", "node-exporter-4lq9p"),
    ("pod_ip", "127.0.0.2"),
    ("pod_ready", "true"),
    ("pod_phase", "Running"),
    ("pod_node_name", "edge-1"),
    ("pod_host_ip", "127.0.0.2"),
    ("pod_uid", "2c9a4e7b-1f3d-4b8e-a6c2-9e1d7f5b3a40"),
    ("pod_controller_kind", "DaemonSet"),
    ("pod_controller_name", "node-exporter"),
    ("pod_label_app_kubernetes_io_name", "node-exporter"),
    ("pod_labelpresent_app_kubernetes_io_name", "true"),
    ("pod_label_controller_revision_hash", "6b9c8d7f5"),
    ("pod_labelpresent_controller_revision_hash", "true"),
    ("pod_label_pod_template_generation", "1"),
    ("pod_labelpresent_pod_template_generation", "true"),
    ("pod_annotation_prometheus_io_scrape", "true"),
    ("pod_annotationpresent_prometheus_io_scrape", "true"),
];

const WEB: &[(&str, &str)] = &[
    ("namespace", "default"),
    ("pod_name", "web-7c9f6d8b5-m2n4p"),
    ("pod_ip", "127.0.0.13"),
    ("pod_ready", "false"),
    ("pod_phase", "Running"),
    ("pod_node_name", "edge-1"),
    ("pod_host_ip", "127.0.0.2"),
    ("pod_uid", "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"),
    ("pod_controller_kind", "ReplicaSet"),
    ("pod_controller_name", "web-7c9f6d8b5"),
    ("pod_label_app_kubernetes_io_name", "web"),
    ("pod_labelpresent_app_kubernetes_io_name", "true"),
    ("pod_annotation_prometheus_io_scrape", "false"),
    ("pod_annotationpresent_prometheus_io_scrape", "true"),
];

fn port(
    number: &'static str,
    name: &'static str,
    protocol: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("pod_container_port_number", number),
        ("pod_container_port_name", name),
        ("pod_container_port_protocol", protocol),
    ]
}

/// Every target of the fixture, in pod.go's order: containers, then init containers, one
/// per port; the pending pod (no IP) has none.
fn fixture_targets() -> Vec<Labels> {
    vec![
        meta("127.0.0.11:53", &[COREDNS, &port("53", "dns", "UDP")]),
        meta("127.0.0.11:53", &[COREDNS, &port("53", "dns-tcp", "TCP")]),
        meta("127.0.0.11:9153", &[COREDNS, &port("9153", "metrics", "TCP")]),
        meta(
            "127.0.0.2:9100",
            &[
                NODE_EXPORTER,
                &[
                    ("pod_container_name", "node-exporter"),
                    (
                        "pod_container_id",
                        "containerd://9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
                    ),
                    ("pod_container_image", "quay.io/prometheus/node-exporter:v1.7.0"),
                    ("pod_container_init", "false"),
                ],
                &port("9100", "metrics", "TCP"),
            ],
        ),
        meta(
            "127.0.0.2",
            &[
                NODE_EXPORTER,
                &[
                    ("pod_container_name", "init-textfile"),
                    (
                        "pod_container_id",
                        "containerd://0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
                    ),
                    ("pod_container_image", "busybox:1.36"),
                    ("pod_container_init", "true"),
                ],
            ],
        ),
        meta(
            "127.0.0.13:8080",
            &[
                WEB,
                &[
                    ("pod_container_name", "web"),
                    (
                        "pod_container_id",
                        "containerd://ffffeeeeddddccccbbbbaaaa0000999988887777666655554444333322221111",
                    ),
                    ("pod_container_image", "ghcr.io/example/web:2.3.1"),
                    ("pod_container_init", "false"),
                ],
                &port("8080", "", "TCP"),
            ],
        ),
        meta(
            "127.0.0.13",
            &[
                WEB,
                &[
                    ("pod_container_name", "log-shipper"),
                    (
                        "pod_container_id",
                        "containerd://1111222233334444555566667777888899990000aaaabbbbccccddddeeeeffff",
                    ),
                    ("pod_container_image", "fluent/fluent-bit:2.2"),
                    ("pod_container_init", "false"),
                ],
            ],
        ),
        // No status for it: the id is empty, as findPodContainerID leaves it.
        meta(
            "127.0.0.13",
            &[
                WEB,
                &[
                    ("pod_container_name", "migrate"),
                    ("pod_container_id", ""),
                    ("pod_container_image", "ghcr.io/example/web-migrate:2.3.1"),
                    ("pod_container_init", "true"),
                ],
            ],
        ),
    ]
}

fn parse(text: &str) -> Node {
    yaml::parse(text).expect("parses").expect("a document")
}

#[test]
fn pods_become_targets_as_prometheus_role_pod_builds_them() {
    let list = parse(include_str!("../../tests/fixtures/kubelet/pods.json"));
    let got = flatten(&pod_groups(&list).expect("a pod list"));
    let want = fixture_targets();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "target {i}");
    }
}

#[test]
fn pod_edge_cases() {
    // No Ready condition: "unknown"; a non-controller owner gives no controller labels;
    // an IPv6 pod IP is bracketed; label names are sanitised, odd keys alike keep one.
    let list = parse(
        r#"{"kind":"PodList","items":[{"metadata":{"name":"p","namespace":"n","uid":"u",
        "labels":{"a.b":"1","ä":"2"},
        "ownerReferences":[{"kind":"Node","name":"edge-1"}]},
        "spec":{"containers":[{"name":"c","ports":[{"containerPort":80}]},{"name":"d"}]},
        "status":{"podIP":"fd00::1","phase":"Running"}}]}"#,
    );
    let got = flatten(&pod_groups(&list).expect("a pod list"));
    let pod: &[(&str, &str)] = &[
        ("namespace", "n"),
        ("pod_name", "p"),
        ("pod_ip", "fd00::1"),
        ("pod_ready", "unknown"),
        ("pod_phase", "Running"),
        ("pod_node_name", ""),
        ("pod_host_ip", ""),
        ("pod_uid", "u"),
        ("pod_label_a_b", "1"),
        ("pod_labelpresent_a_b", "true"),
        ("pod_label__", "2"),
        ("pod_labelpresent__", "true"),
    ];
    let c: &[(&str, &str)] = &[
        ("pod_container_name", "c"),
        ("pod_container_id", ""),
        ("pod_container_image", ""),
        ("pod_container_init", "false"),
    ];
    let d: &[(&str, &str)] = &[
        ("pod_container_name", "d"),
        ("pod_container_id", ""),
        ("pod_container_image", ""),
        ("pod_container_init", "false"),
    ];
    assert_eq!(
        got,
        vec![
            meta("[fd00::1]:80", &[pod, c, &port("80", "", "")]),
            meta("[fd00::1]", &[pod, d]),
        ]
    );
}

#[test]
fn what_is_not_a_pod_list_is_refused() {
    for (text, want) in [
        ("[]", "not a JSON object"),
        (
            r#"{"kind":"Status","status":"Failure"}"#,
            "kind \"Status\", not PodList",
        ),
    ] {
        assert_eq!(pod_groups(&parse(text)).expect_err(text), want);
    }
    // An empty list has no targets.
    assert!(pod_groups(&parse(r#"{"kind":"PodList","items":[]}"#))
        .expect("valid")
        .is_empty());
}

#[test]
fn url_paths() {
    assert_eq!(url_path("https://localhost:10250"), "");
    assert_eq!(url_path("https://localhost:10250/"), "/");
    assert_eq!(
        url_path("http://h/api/v1/nodes/n/proxy?x=1"),
        "/api/v1/nodes/n/proxy"
    );
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("promlet-sd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (address, `__meta_filepath`, job label) of every group's targets.
fn listing(sd: &FileSd) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in sd.groups() {
        let get = |n: &str| {
            g.labels
                .iter()
                .find(|(k, _)| k == n)
                .map_or(String::new(), |(_, v)| v.clone())
        };
        for t in &g.targets {
            out.push((t.clone(), get(FILEPATH_LABEL), get("team")));
        }
    }
    out
}

#[test]
fn file_sd_reads_json_and_yaml_through_a_glob_and_follows_changes() {
    let dir = Dir::new("poll");
    let (a, b) = (dir.file("a.json"), dir.file("b.yml"));
    std::fs::write(&a, r#"[{"targets":["h1:1","h2:2"],"labels":{"team":"x"}}]"#).expect("write");
    std::fs::write(&b, "- targets: [h3:3]\n").expect("write");
    std::fs::write(dir.file("c.txt"), "not matched").expect("write");
    let config = FileSdConfig {
        files: vec![dir.file("*.json"), dir.file("b.yml")],
        refresh_interval: Duration::from_secs(300),
    };
    let mut sd = FileSd::new(&config);
    assert_eq!(sd.poll_every, FILE_POLL);
    assert!(sd.poll());
    let t =
        |addr: &str, file: &str, team: &str| (addr.to_owned(), file.to_owned(), team.to_owned());
    assert_eq!(
        listing(&sd),
        vec![t("h1:1", &a, "x"), t("h2:2", &a, "x"), t("h3:3", &b, "")]
    );
    // Nothing changed: nothing read, nothing to apply.
    assert!(!sd.poll());
    // A change (another size) is read.
    std::fs::write(&b, "- targets: [h3:3, h4:4]\n").expect("write");
    assert!(sd.poll());
    assert_eq!(listing(&sd).len(), 4);
    // A malformed version keeps the last good targets; fixing it is read again.
    std::fs::write(&a, r#"[{"targets":["h1:1"],"#).expect("write");
    assert!(!sd.poll());
    assert_eq!(listing(&sd).len(), 4);
    assert!(sd.failing_files() == 1);
    std::fs::write(&a, r#"[{"targets":["h9:9"]}]"#).expect("write");
    assert!(sd.poll());
    assert_eq!(sd.failing_files(), 0);
    assert_eq!(
        listing(&sd),
        vec![t("h9:9", &a, ""), t("h3:3", &b, ""), t("h4:4", &b, "")]
    );
    // A new file the glob matches is read; a deleted one drops its targets.
    let n = dir.file("n.json");
    std::fs::write(&n, r#"[{"targets":["h5:5"]}]"#).expect("write");
    assert!(sd.poll());
    assert_eq!(listing(&sd).len(), 4);
    std::fs::remove_file(&a).expect("rm");
    assert!(sd.poll());
    assert_eq!(
        listing(&sd),
        vec![t("h3:3", &b, ""), t("h4:4", &b, ""), t("h5:5", &n, "")]
    );
}

#[test]
fn file_sd_rereads_every_refresh_interval_even_unchanged() {
    let dir = Dir::new("full");
    let a = dir.file("a.yml");
    std::fs::write(&a, "- targets: [h1:1]\n").expect("write");
    let config = FileSdConfig {
        files: vec![a.clone()],
        refresh_interval: Duration::ZERO,
    };
    let mut sd = FileSd::new(&config);
    assert!(sd.poll());
    // Same size, and the stamp forced to what it was: only the full re-read sees it.
    let before = sd.files[0].stamp;
    std::fs::write(&a, "- targets: [h2:2]\n").expect("write");
    sd.files[0].stamp = stamp_of(std::path::Path::new(&a));
    assert!(sd.poll(), "refresh_interval 0: every poll reads the file");
    assert_eq!(listing(&sd)[0].0, "h2:2");
    assert!(before.is_some());
}
