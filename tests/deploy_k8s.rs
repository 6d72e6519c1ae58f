//! The manifests in `deploy/k8s/` against promlet itself: each `prometheus.yml` a ConfigMap
//! carries passes `promlet check config`; the init containers' scripts, run with `sh`, write
//! file_sd files that give the local targets the node's (or the pod's) name; the
//! kubernetes-pods job's relabel rules turn a kubelet `/pods` list into the expected targets;
//! the containers' `args` are flags promlet takes, pointing at the mounts the pod has.
//! The manifests' Kubernetes schema is checked by `kubernetes-validate` in `test.sh`.
//!
//! `check config` requires the credentials files a scrape config names to exist, as promtool
//! does. The service-account files (`/var/run/secrets/...`) exist only in a pod, so the test
//! checks a copy whose absolute paths point into a temp dir holding stub files: everything but
//! the paths' prefixes is the manifest's text.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use promlet::config::yaml::{self, Node};
use promlet::config::{Config, ScrapeConfig, TargetGroup};
use promlet::flags::{Args, Parsed};
use promlet::targets::Target;
use support::peers::TempDir;

const PROMLET: &str = env!("CARGO_BIN_EXE_promlet");

/// Where a pod has its service-account token and CA.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the pods' init containers write the file_sd files.
const SD_DIR: &str = "/run/promlet/sd";

/// The documents of `deploy/k8s/<name>` (split at `---` lines; promlet's parser reads one).
fn documents(name: &str) -> Vec<Node> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("manifest");
    let mut docs = Vec::new();
    let mut doc = String::new();
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.extend(yaml::parse(&doc).expect("manifest YAML"));
            doc.clear();
        } else {
            doc.push_str(line);
        }
    }
    docs.extend(yaml::parse(&doc).expect("manifest YAML"));
    docs
}

/// The node at `path` below `node` (mapping keys); panics naming the path if absent.
fn at<'n>(node: &'n Node, path: &[&str]) -> &'n Node {
    let mut n = node;
    for key in path {
        n = n
            .entries(key)
            .expect("a mapping")
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key:?} in {path:?}"))
            .1;
    }
    n
}

fn string(node: &Node) -> String {
    node.string("").expect("a scalar")
}

fn strings(node: &Node) -> Vec<String> {
    node.items("").expect("a list").iter().map(string).collect()
}

/// The document of `kind`.
fn kind<'d>(docs: &'d [Node], kind: &str) -> &'d Node {
    docs.iter()
        .find(|d| string(at(d, &["kind"])) == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The item of the list at `path` whose `name` is `name`.
fn named<'n>(node: &'n Node, path: &[&str], name: &str) -> &'n Node {
    at(node, path)
        .items("")
        .expect("a list")
        .iter()
        .find(|c| string(at(c, &["name"])) == name)
        .unwrap_or_else(|| panic!("no {name:?} in {path:?}"))
}

const POD_SPEC: &[&str] = &["spec", "template", "spec"];

/// The `args` of the pod's `promlet` container, parsed by promlet's own flag parser.
fn promlet_args(workload: &Node) -> Args {
    let container = named(workload, &[POD_SPEC, &["containers"]].concat(), "promlet");
    match promlet::flags::parse(strings(at(container, &["args"]))) {
        Parsed::Run(args) => args,
        other => panic!("promlet refuses the manifest's args: {other:?}"),
    }
}

/// The `mountPath` at which `container` mounts volume `volume`.
fn mount_path(container: &Node, volume: &str) -> String {
    string(at(
        named(container, &["volumeMounts"], volume),
        &["mountPath"],
    ))
}

/// Runs the `sh -c` script of init container `name` (which mounts the file_sd volume
/// `volume`) as the kubelet would, with `env` for the downward API's values and `SD_DIR`
/// moved into `dir`.
fn run_init_script(workload: &Node, name: &str, volume: &str, env: &[(&str, &str)], dir: &Path) {
    let init = named(workload, &[POD_SPEC, &["initContainers"]].concat(), name);
    let command = strings(at(init, &["command"]));
    assert_eq!(command[..2], ["sh", "-c"], "{name}: a shell script");
    let sd_dir = named(init, &["env"], "SD_DIR");
    assert_eq!(string(at(sd_dir, &["value"])), SD_DIR);
    assert_eq!(mount_path(init, volume), SD_DIR);
    std::fs::create_dir_all(dir).expect("sd dir");
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command[2])
        .envs(env.iter().copied())
        .env("SD_DIR", dir)
        .status()
        .expect("runs sh");
    assert!(status.success(), "{name}: {status}");
}

/// The ConfigMap's `prometheus.yml`, with the service-account and file_sd paths moved into
/// `dir` (which gets stub token and CA files), written to `dir/prometheus.yml`.
fn relocated_config(configmap: &Node, dir: &Path) -> PathBuf {
    let text = string(at(configmap, &["data", "prometheus.yml"]));
    let sa = dir.join("serviceaccount");
    std::fs::create_dir_all(&sa).expect("sa dir");
    std::fs::write(sa.join("token"), "stub-token\n").expect("token");
    std::fs::write(sa.join("ca.crt"), "stub CA, never read by check config\n").expect("ca");
    let relocated = text
        .replace(SERVICE_ACCOUNT, &sa.to_string_lossy())
        .replace(SD_DIR, &dir.join("sd").to_string_lossy());
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, relocated).expect("config");
    path
}

/// `promlet check config FILE`: exit status and stdout + stderr.
fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(PROMLET)
        .args(["check", "config"])
        .arg(path)
        .output()
        .expect("runs promlet");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The ConfigMap's `prometheus.yml`, relocated into `dir` (whose file_sd files the init
/// script wrote), after `promlet check config` accepted it without a warning.
fn passes_check_config(configmap: &Node, dir: &Path) -> Config {
    let path = relocated_config(configmap, dir);
    let (ok, out) = check_config(&path);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS") && !out.contains("WARNING"), "{out}");
    Config::load(&path).expect("config")
}

/// The targets of job `name` from `groups`: (URL, labels).
fn targets(config: &Config, name: &str, groups: &[TargetGroup]) -> Vec<(String, Vec<String>)> {
    let sc: &ScrapeConfig = config
        .scrape_configs
        .iter()
        .find(|sc| sc.job_name == name)
        .unwrap_or_else(|| panic!("no job {name}"));
    let (targets, errors) = promlet::targets::build(groups, sc);
    assert!(errors.is_empty(), "{name}: {errors:?}");
    targets.iter().map(described).collect()
}

fn described(t: &Target) -> (String, Vec<String>) {
    let labels = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    (t.url(), labels)
}

/// The groups of the file_sd files job `name` reads.
fn file_sd_groups(config: &Config, name: &str) -> Vec<TargetGroup> {
    let sc = config
        .scrape_configs
        .iter()
        .find(|sc| sc.job_name == name)
        .unwrap_or_else(|| panic!("no job {name}"));
    let mut groups = Vec::new();
    for f in &sc.file_sd_configs {
        for pattern in &f.files {
            for path in promlet::targets::glob(pattern).expect("glob") {
                groups.extend(promlet::targets::read_file_sd(&path).expect("file_sd file"));
            }
        }
    }
    assert!(!groups.is_empty(), "{name}: no file_sd groups");
    groups
}

fn expect(url: &str, labels: &[&str]) -> (String, Vec<String>) {
    (
        url.to_owned(),
        labels.iter().map(|l| (*l).to_owned()).collect(),
    )
}

#[test]
fn daemonset_args_point_at_its_mounts_and_config() {
    let docs = documents("daemonset.yaml");
    let ds = kind(&docs, "DaemonSet");
    let args = promlet_args(ds);
    let container = named(ds, &[POD_SPEC, &["containers"]].concat(), "promlet");
    let config_dir = mount_path(container, "config");
    assert_eq!(
        args.config_file.as_deref(),
        Some(format!("{config_dir}/prometheus.yml").as_str())
    );
    assert_eq!(args.storage_agent_path, mount_path(container, "ring"));
    assert_eq!(mount_path(container, "sd"), SD_DIR);
    assert_eq!(args.storage_agent_size, 64 << 20);
    // The probes reach the loopback-only listener: the pod shares the host's network.
    assert_eq!(
        string(at(ds, &[POD_SPEC, &["hostNetwork"]].concat())),
        "true"
    );
    assert_eq!(args.web_listen_address, "127.0.0.1:9099");
    for (probe, path) in [
        ("readinessProbe", "/-/ready"),
        ("livenessProbe", "/-/healthy"),
    ] {
        let get = at(container, &[probe, "httpGet"]);
        assert_eq!(string(at(get, &["path"])), path);
        assert_eq!(string(at(get, &["host"])), "127.0.0.1");
        assert_eq!(string(at(get, &["port"])), "9099");
    }
    let ring = named(ds, &[POD_SPEC, &["volumes"]].concat(), "ring");
    assert_eq!(
        string(at(ring, &["hostPath", "path"])),
        args.storage_agent_path
    );
    let configmap = named(ds, &[POD_SPEC, &["volumes"]].concat(), "config");
    let cm_docs = documents("configmap.yaml");
    let cm = kind(&cm_docs, "ConfigMap");
    assert_eq!(
        string(at(configmap, &["configMap", "name"])),
        string(at(cm, &["metadata", "name"]))
    );
}

#[test]
fn daemonset_config_passes_check_config_and_labels_targets_with_the_node() {
    let dir = TempDir::new("deploy-k8s-daemonset");
    let cm_docs = documents("configmap.yaml");
    let cm = kind(&cm_docs, "ConfigMap");
    let original = string(at(cm, &["data", "prometheus.yml"]));
    assert!(original.contains(SERVICE_ACCOUNT) && original.contains(SD_DIR));

    // As written, in a pod; here the token is missing, and check config says so, as promtool.
    if !Path::new(SERVICE_ACCOUNT).join("token").exists() {
        let as_written = dir.join("as-written.yml");
        std::fs::write(&as_written, &original).expect("config");
        let (ok, out) = check_config(&as_written);
        assert!(!ok && out.contains("serviceaccount/token"), "{out}");
    }

    let ds_docs = documents("daemonset.yaml");
    let ds = kind(&ds_docs, "DaemonSet");
    run_init_script(
        ds,
        "node-labels",
        "sd",
        &[("NODE_NAME", "edge-node-1")],
        &dir.join("sd"),
    );
    let config = passes_check_config(cm, &dir.0);
    for (job, url) in [
        ("promlet", "http://127.0.0.1:9099/metrics"),
        ("node-exporter", "http://127.0.0.1:9100/metrics"),
        ("kubelet", "https://127.0.0.1:10250/metrics"),
        (
            "kubelet-cadvisor",
            "https://127.0.0.1:10250/metrics/cadvisor",
        ),
        ("kubelet-probes", "https://127.0.0.1:10250/metrics/probes"),
        (
            "kubelet-resource",
            "https://127.0.0.1:10250/metrics/resource",
        ),
    ] {
        let groups = file_sd_groups(&config, job);
        let job_label = format!("job={job}");
        let labels = ["instance=edge-node-1", &job_label, "node=edge-node-1"];
        assert_eq!(
            targets(&config, job, &groups),
            [expect(url, &labels)],
            "{job}"
        );
    }

    let pods = promlet::discovery::pods::read(POD_LIST.as_bytes()).expect("pod list");
    let groups = promlet::discovery::pods::groups(&pods);
    assert_eq!(
        targets(&config, "kubernetes-pods", &groups),
        [
            // Two declared ports, one annotated: one target.
            expect(
                "http://10.42.0.7:8080/metrics",
                &[
                    "app_kubernetes_io_name=kube-state-metrics",
                    "instance=10.42.0.7:8080",
                    "job=kubernetes-pods",
                    "namespace=kube-system",
                    "node=edge-node-1",
                    "pod=kube-state-metrics-5d8f7-x2x9q",
                ]
            ),
            // No declared port, an IPv6 pod IP, scheme and path from annotations.
            expect(
                "https://[fd00::5]:9443/custom/metrics",
                &[
                    "instance=[fd00::5]:9443",
                    "job=kubernetes-pods",
                    "namespace=apps",
                    "node=edge-node-1",
                    "pod=api-0",
                ]
            ),
        ]
    );
}

#[test]
fn sidecar_config_passes_check_config_and_labels_targets_with_the_pod() {
    let dir = TempDir::new("deploy-k8s-sidecar");
    let docs = documents("sidecar.yaml");
    let deployment = kind(&docs, "Deployment");
    let args = promlet_args(deployment);
    let container = named(deployment, &[POD_SPEC, &["containers"]].concat(), "promlet");
    assert_eq!(
        args.config_file.as_deref(),
        Some(format!("{}/prometheus.yml", mount_path(container, "promlet-config")).as_str())
    );
    assert_eq!(
        args.storage_agent_path,
        mount_path(container, "promlet-ring")
    );
    assert_eq!(mount_path(container, "promlet-sd"), SD_DIR);

    let pod = [
        ("POD_NAME", "example-app-6c9b7-k2j4d"),
        ("POD_NAMESPACE", "demo"),
    ];
    run_init_script(
        deployment,
        "promlet-labels",
        "promlet-sd",
        &pod,
        &dir.join("sd"),
    );
    let config = passes_check_config(kind(&docs, "ConfigMap"), &dir.0);
    for (job, url) in [
        ("example-app", "http://127.0.0.1:8080/metrics"),
        ("promlet", "http://127.0.0.1:9099/metrics"),
    ] {
        let groups = file_sd_groups(&config, job);
        let job_label = format!("job={job}");
        assert_eq!(
            targets(&config, job, &groups),
            [expect(
                url,
                &[
                    "instance=example-app-6c9b7-k2j4d",
                    &job_label,
                    "namespace=demo",
                    "pod=example-app-6c9b7-k2j4d",
                ]
            )],
            "{job}"
        );
    }
}

/// A kubelet `/pods` answer: kube-state-metrics (annotated, two ports), an annotated pod
/// without declared ports on IPv6, a pod without annotations and a finished annotated one.
const POD_LIST: &str = r#"{"kind": "PodList", "apiVersion": "v1", "items": [
  {"metadata": {"name": "kube-state-metrics-5d8f7-x2x9q", "namespace": "kube-system",
     "labels": {"app.kubernetes.io/name": "kube-state-metrics"},
     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
   "spec": {"nodeName": "edge-node-1", "containers": [{"name": "kube-state-metrics",
     "image": "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.10.0",
     "ports": [{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"},
               {"name": "telemetry", "containerPort": 8081, "protocol": "TCP"}]}]},
   "status": {"phase": "Running", "podIP": "10.42.0.7", "hostIP": "192.0.2.10"}},
  {"metadata": {"name": "api-0", "namespace": "apps",
     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9443",
       "prometheus.io/scheme": "https", "prometheus.io/path": "/custom/metrics"}},
   "spec": {"nodeName": "edge-node-1", "containers": [{"name": "api", "image": "api:1"}]},
   "status": {"phase": "Running", "podIP": "fd00::5", "hostIP": "192.0.2.10"}},
  {"metadata": {"name": "quiet", "namespace": "apps"},
   "spec": {"nodeName": "edge-node-1", "containers": [{"name": "q", "image": "q:1",
     "ports": [{"containerPort": 80}]}]},
   "status": {"phase": "Running", "podIP": "10.42.0.9", "hostIP": "192.0.2.10"}},
  {"metadata": {"name": "batch-1", "namespace": "apps",
     "annotations": {"prometheus.io/scrape": "true"}},
   "spec": {"nodeName": "edge-node-1", "containers": [{"name": "b", "image": "b:1"}]},
   "status": {"phase": "Succeeded", "podIP": "10.42.0.11", "hostIP": "192.0.2.10"}}
]}"#;
