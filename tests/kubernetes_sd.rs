//! `kubernetes_sd_configs` end to end: promlet against an API-server fixture over TLS with a
//! bearer token (tests/support/apiserver.rs), roles `pod` (with a `spec.nodeName` field
//! selector, as a DaemonSet runs it) and `node`. Pods come and go while promlet watches; the
//! watch is cut, ended, and answered 410 Gone; what promlet discovers is read back from
//! what it remote-writes (each target's `up`, and the stale markers of targets that went).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::apiserver::{ApiServer, PodSpec};
use support::peers::{Promlet, TempDir};
use support::receiver::{Answer, Scripted};
use support::tls::{make_certificates, server_config};

const STALE: u64 = 0x7ff0_0000_0000_0002;

type Labels = BTreeMap<String, String>;

/// The `up` series of the pod `name`.
fn pod_ups(r: &Scripted, name: &str) -> Vec<Vec<u64>> {
    r.ups()
        .into_iter()
        .filter(|(l, _)| l.get("k8s_pod_name").map(String::as_str) == Some(name))
        .map(|(_, v)| v)
        .collect()
}

fn arrived(r: &Scripted, name: &str) -> bool {
    pod_ups(r, name)
        .iter()
        .any(|v| v.iter().any(|&b| b != STALE))
}

fn stale(r: &Scripted, name: &str) -> bool {
    let found = pod_ups(r, name);
    !found.is_empty() && found.iter().all(|v| v.last() == Some(&STALE))
}

fn pod<'a>(name: &'a str, node: &'a str, ip: &'a str) -> PodSpec<'a> {
    PodSpec {
        namespace: "shop",
        name,
        node,
        ip,
        port: 8080,
        scrape: true,
    }
}

/// Requests for the pods collection: (lists, watches).
fn pod_requests(api: &ApiServer) -> (usize, usize) {
    let pods: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|l| l.starts_with("GET /api/v1/pods"))
        .collect();
    let watches = pods.iter().filter(|l| l.contains("watch=true")).count();
    (pods.len() - watches, watches)
}

#[test]
fn pod_and_node_targets_follow_the_api_server_through_cuts_and_410() {
    let dir = TempDir::new("kubernetes-sd");
    make_certificates(&dir.0);
    std::fs::write(dir.join("token"), "sa-t0ken-9f2c\n").expect("token");
    let api = ApiServer::start(
        server_config(&dir.join("srv.pem"), &dir.join("srv.key"), None),
        "sa-t0ken-9f2c",
    );
    // Before promlet starts: two pods on this node (one not annotated for scraping), one on
    // another node, and the node itself.
    api.put_pod(&pod("web-a", "edge-1", "127.0.0.31"));
    api.put_pod(&pod("elsewhere", "edge-2", "127.0.0.32"));
    api.put_pod(&PodSpec {
        scrape: false,
        ..pod("quiet", "edge-1", "127.0.0.33")
    });
    api.put_node("edge-1", "127.0.0.41");

    let receiver = Scripted::start(Vec::new(), Answer::ok());
    let sd = |role: &str, selectors: &str| {
        format!(
            "    kubernetes_sd_configs:\n      - role: {role}\n        api_server: https://127.0.0.1:{}\n\
             \x20       bearer_token_file: token\n        tls_config: {{ca_file: ca.pem}}\n{selectors}",
            api.port
        )
    };
    let config = format!(
        "scrape_configs:\n  - job_name: pods\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n{}\
         \x20   relabel_configs:\n\
         \x20     - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: 'true'}}\n\
         \x20     - {{action: labelmap, regex: '__meta_kubernetes_(.+)', replacement: 'k8s_$1'}}\n\
         \x20 - job_name: nodes\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n{}\
         \x20   relabel_configs:\n\
         \x20     - {{action: labelmap, regex: '__meta_kubernetes_(.+)', replacement: 'k8s_$1'}}\n\
         \x20     - {{source_labels: [__address__], target_label: address}}\n\
         remote_write:\n  - url: {}\n",
        sd("pod", "        selectors: [{role: pod, field: spec.nodeName=edge-1}]\n"),
        sd("node", ""),
        receiver.url()
    );
    std::fs::write(dir.join("check.yml"), &config).expect("config");
    let promlet = Promlet::start(&dir.0, &config, &["--log.level=info"]);
    let long = Duration::from_secs(20);

    // The list: this node's annotated pod only; the node with node.go's labels.
    promlet.wait_for(long, "web-a and the node", || {
        arrived(&receiver, "web-a") && receiver.ups().keys().any(|l| l["job"] == "nodes")
    });
    let all = receiver.ups();
    let web_a: Vec<&Labels> = all
        .keys()
        .filter(|l| l.get("k8s_pod_name").map(String::as_str) == Some("web-a"))
        .collect();
    assert_eq!(web_a.len(), 1, "{all:#?}");
    let want_pod: Labels = [
        ("instance", "127.0.0.31:8080"),
        ("job", "pods"),
        ("k8s_namespace", "shop"),
        ("k8s_pod_annotation_prometheus_io_port", "8080"),
        ("k8s_pod_annotation_prometheus_io_scrape", "true"),
        ("k8s_pod_annotationpresent_prometheus_io_port", "true"),
        ("k8s_pod_annotationpresent_prometheus_io_scrape", "true"),
        ("k8s_pod_container_id", "containerd://c-web-a"),
        ("k8s_pod_container_image", "registry.example/web-a:1.0"),
        ("k8s_pod_container_init", "false"),
        ("k8s_pod_container_name", "app"),
        ("k8s_pod_container_port_name", "metrics"),
        ("k8s_pod_container_port_number", "8080"),
        ("k8s_pod_container_port_protocol", "TCP"),
        ("k8s_pod_controller_kind", "ReplicaSet"),
        ("k8s_pod_controller_name", "web-a-6d4b9"),
        ("k8s_pod_host_ip", "192.168.1.21"),
        ("k8s_pod_ip", "127.0.0.31"),
        ("k8s_pod_label_app_kubernetes_io_name", "web-a"),
        ("k8s_pod_label_pod_template_hash", "6d4b9"),
        ("k8s_pod_labelpresent_app_kubernetes_io_name", "true"),
        ("k8s_pod_labelpresent_pod_template_hash", "true"),
        ("k8s_pod_name", "web-a"),
        ("k8s_pod_node_name", "edge-1"),
        ("k8s_pod_phase", "Running"),
        ("k8s_pod_ready", "true"),
        ("k8s_pod_uid", "uid-web-a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(web_a, vec![&want_pod]);
    assert!(
        pod_ups(&receiver, "elsewhere").is_empty(),
        "another node's pod"
    );
    assert!(
        pod_ups(&receiver, "quiet").is_empty(),
        "dropped by the keep rule"
    );
    let nodes: Vec<&Labels> = all.keys().filter(|l| l["job"] == "nodes").collect();
    let want_node: Labels = [
        ("address", "127.0.0.41:10250"),
        ("instance", "edge-1"),
        ("job", "nodes"),
        ("k8s_node_address_Hostname", "edge-1"),
        ("k8s_node_address_InternalIP", "127.0.0.41"),
        ("k8s_node_annotation_k3s_io_internal_ip", "127.0.0.41"),
        ("k8s_node_annotationpresent_k3s_io_internal_ip", "true"),
        ("k8s_node_label_kubernetes_io_arch", "arm64"),
        ("k8s_node_label_kubernetes_io_hostname", "edge-1"),
        ("k8s_node_labelpresent_kubernetes_io_arch", "true"),
        ("k8s_node_labelpresent_kubernetes_io_hostname", "true"),
        ("k8s_node_name", "edge-1"),
        ("k8s_node_provider_id", "k3s://edge-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        nodes,
        vec![&want_node],
        "the node's address is 127.0.0.41:10250"
    );
    assert_eq!(pod_requests(&api).0, 1, "one list");
    // Counted before relabeling: web-a and quiet (the keep rule drops quiet).
    let discovered = "prometheus_sd_discovered_targets{config=\"pods\",name=\"scrape\"}";
    assert_eq!(promlet.metric(discovered), Some(2.0));
    assert!(
        api.requests()
            .iter()
            .filter(|l| l.starts_with("GET /api/v1/pods"))
            .all(|l| l.contains("fieldSelector=spec.nodeName%3Dedge-1")),
        "{:#?}",
        api.requests()
    );

    // Churn on the watch: a pod added, one deleted (stale-marked), one moved to this node.
    api.put_pod(&pod("web-b", "edge-1", "127.0.0.34"));
    api.delete_pod(&pod("web-a", "edge-1", "127.0.0.31"));
    promlet.wait_for(long, "web-b up, web-a stale", || {
        arrived(&receiver, "web-b") && stale(&receiver, "web-a")
    });

    // The watch is cut mid-stream: promlet watches again from its version, no new list,
    // and sees what changed meanwhile.
    api.drop_watches();
    api.put_pod(&pod("web-c", "edge-1", "127.0.0.35"));
    promlet.wait_for(long, "web-c after a cut", || arrived(&receiver, "web-c"));
    // The server ends the watch (its timeoutSeconds): the same.
    api.end_watches();
    api.put_pod(&pod("web-d", "edge-1", "127.0.0.36"));
    promlet.wait_for(long, "web-d after an end", || arrived(&receiver, "web-d"));
    let (lists, watches) = pod_requests(&api);
    assert_eq!(lists, 1, "resumed, not listed again: {:#?}", api.requests());
    assert!(watches >= 3, "{watches} watches");

    // 410 Gone: the version promlet holds is compacted away while its watch is cut. It
    // lists again, and finds the pod added meanwhile.
    api.compact();
    api.drop_watches();
    api.put_pod(&pod("web-e", "edge-1", "127.0.0.37"));
    promlet.wait_for(long, "web-e after 410", || arrived(&receiver, "web-e"));
    assert_eq!(pod_requests(&api).0, 2, "listed again after 410");
    for kept in ["web-b", "web-c", "web-d"] {
        let series = pod_ups(&receiver, kept);
        assert!(
            series.iter().all(|v| !v.contains(&STALE)),
            "{kept} kept through the cuts and the relist"
        );
    }
    let log = promlet.log();
    assert!(log.contains("(410), listing again"), "{log}");
    let cut = log
        .lines()
        .filter(|l| l.contains("kubernetes_sd") && l.contains("watch:"))
        .count();
    assert!(cut >= 1, "a cut is logged: {log}");
    // A reload that changes the pod job's discovery (a label selector too) lists anew before
    // it compares targets: the pods that stay keep their targets, never stale-marked.
    let reloaded = config.replace(
        "field: spec.nodeName=edge-1}",
        "field: spec.nodeName=edge-1, label: 'pod-template-hash=6d4b9'}",
    );
    assert_ne!(reloaded, config);
    std::fs::write(dir.join("promlet.yml"), &reloaded).expect("config");
    promlet.signal("HUP");
    promlet.wait_for(long, "reloaded", || {
        promlet.log().contains("config reloaded")
    });
    assert_eq!(pod_requests(&api).0, 3, "the changed job listed once more");
    assert!(
        api.requests()
            .iter()
            .any(|l| l.contains("labelSelector=pod-template-hash%3D6d4b9")),
        "{:#?}",
        api.requests()
    );
    let e_before = pod_ups(&receiver, "web-e")
        .iter()
        .map(Vec::len)
        .sum::<usize>();
    promlet.wait_for(long, "web-e scraped after the reload", || {
        pod_ups(&receiver, "web-e")
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            >= e_before + 3
    });
    for kept in ["web-b", "web-c", "web-d", "web-e"] {
        let series = pod_ups(&receiver, kept);
        assert!(
            series.iter().all(|v| !v.contains(&STALE)),
            "{kept} kept through the reload: {series:?}"
        );
    }
    assert_eq!(api.unauthorized(), 0, "every request had the token");
    assert!(!log.contains("sa-t0ken"), "the token is never logged");
    assert_eq!(promlet.stop(), 0);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_promlet"))
        .args(["check", "config"])
        .arg(dir.join("check.yml"))
        .output()
        .expect("check config runs");
    assert!(check.status.success(), "{check:?}");
}
