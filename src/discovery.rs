//! Discovery at run time: `file_sd_configs` and promlet's `kubelet_sd_configs`, turned into
//! target groups that [`crate::targets::build`] makes targets of, exactly as static groups.
//!
//! Both run on the loop, driven by the [`Clock`] (no thread, no busy loop); the agent
//! (`lifecycle`) runs one task per job that has any, and re-applies that job's targets when
//! its groups change, through the same path as a config reload (kept targets keep their
//! scraper and staleness state, removed ones are stale-marked).
//!
//! # file_sd
//! Prometheus (`discovery/file/file.go`) watches the files' directories with inotify and also
//! re-reads every file each `refresh_interval`. promlet polls instead: every
//! [`FILE_POLL`] (or `refresh_interval` if shorter) it expands the patterns again and `stat`s
//! each match, and re-reads only a file whose inode, size or modification time changed, or
//! that appeared. So a change is seen within 5 s, where Prometheus sees it at once; rejected:
//! inotify (a file descriptor and a watch per directory, and Linux-only code for a few seconds
//! of latency). A `stat` is a few microseconds; reading a file is the blocking I/O the loop
//! does here, as it reads bearer token files: small files on a local disk.
//!
//! A file that cannot be read or parsed keeps the targets of its last good version, and is
//! logged once per version (the next change reads it again); a file that is gone, or that the
//! patterns no longer match, drops its targets. Every group gets `__meta_filepath`.
//!
//! # kubelet_sd
//! A promlet extension: `GET <url>/pods` on the node's kubelet (a `v1.PodList`), every
//! `refresh_interval`, with the loop's non-blocking [`Client`]. Each pod becomes the targets
//! Prometheus 2.42's `kubernetes_sd_configs` role `pod` makes of it (`discovery/kubernetes/
//! pod.go`, `buildPod`): see [`pod_groups`]. A failed fetch keeps the last good targets and
//! is logged once, until a fetch succeeds again. The body is parsed with the config's YAML
//! parser (JSON is YAML): that builds a tree, about ten times the body's size, for the moment
//! of the parse; a node of 110 pods sends 1–3 MB. Bodies above [`MAX_PODS_BODY`] fail.

pub mod json;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::auth::Credentials;
use crate::config::http::{Auth, HttpClientConfig, Secret};
use crate::config::yaml::{self, Kind, Node};
use crate::config::{FileSdConfig, KubeletSdConfig, TargetGroup};
use crate::scrape::clock::Clock;
use crate::scrape::http::{Client, HttpError};
use crate::targets::{self, Target};

/// The longest a changed file_sd file goes unnoticed (see the module docs).
pub const FILE_POLL: Duration = Duration::from_secs(5);

/// The shortest poll period, whatever `refresh_interval` says (0 would spin the loop).
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// The largest `/pods` body read: 32 MiB is ten times what a full node (110 pods) sends.
pub const MAX_PODS_BODY: u64 = 32 << 20;

/// How long one `/pods` request may take, at most (or the refresh interval if shorter).
pub const KUBELET_TIMEOUT: Duration = Duration::from_secs(10);

/// The service-account token a pod gets, used when a kubelet_sd config sets no auth.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The service-account CA, trusted when a kubelet_sd config sets no `ca_file` (and does not
/// skip verification).
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// What identifies one version of a file: a rewrite in place changes the size or the
/// modification time, an atomic rename the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

fn stamp_of(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.size(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec(),
    })
}

/// One matched file and the groups of its last good version.
#[derive(Debug)]
struct WatchedFile {
    path: PathBuf,
    /// The version last read (good or not).
    stamp: Option<Stamp>,
    /// The version that last failed, logged once.
    failed: Option<Stamp>,
    groups: Vec<TargetGroup>,
}

/// One `file_sd_configs` entry's files.
#[derive(Debug)]
pub struct FileSd {
    patterns: Vec<String>,
    /// How often [`FileSd::poll`] should run: `refresh_interval`, within
    /// [`MIN_POLL`]..=[`FILE_POLL`].
    pub poll_every: Duration,
    /// `refresh_interval`: every file is read again this often, changed or not, as
    /// Prometheus does (a rewrite of the same size within one tick of the file system's
    /// clock leaves the stamp as it was).
    refresh_every: Duration,
    next_full: Instant,
    /// Sorted by path.
    files: Vec<WatchedFile>,
}

/// `__meta_filepath`, as file.go names it.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

impl FileSd {
    /// Nothing read yet: call [`FileSd::poll`].
    pub fn new(config: &FileSdConfig) -> FileSd {
        FileSd {
            patterns: config.files.clone(),
            poll_every: config.refresh_interval.clamp(MIN_POLL, FILE_POLL),
            refresh_every: config.refresh_interval,
            next_full: Instant::now(),
            files: Vec::new(),
        }
    }

    /// Expands the patterns, stats the matches, re-reads what changed (blocking file I/O).
    /// Returns whether the groups changed.
    pub fn poll(&mut self) -> bool {
        let mut matched: Vec<PathBuf> = Vec::new();
        for p in &self.patterns {
            // `glob` only fails on a pattern the config load refused already.
            matched.extend(targets::glob(p).unwrap_or_default());
        }
        matched.sort();
        matched.dedup();
        let now = Instant::now();
        let full = now >= self.next_full;
        if full {
            self.next_full = now + self.refresh_every;
        }
        let mut changed = false;
        self.files.retain(|f| {
            let keep = matched.binary_search(&f.path).is_ok();
            if !keep && !f.groups.is_empty() {
                info!(
                    "file_sd {}: no longer there, its targets are dropped",
                    f.path.display()
                );
                changed = true;
            }
            keep
        });
        for path in matched {
            let at = match self.files.binary_search_by(|f| f.path.cmp(&path)) {
                Ok(i) => i,
                Err(i) => {
                    self.files.insert(
                        i,
                        WatchedFile {
                            path,
                            stamp: None,
                            failed: None,
                            groups: Vec::new(),
                        },
                    );
                    i
                }
            };
            let file = &mut self.files[at];
            let Some(stamp) = stamp_of(&file.path) else {
                // Gone between the listing and the stat: dropped as a deleted file.
                changed |= !file.groups.is_empty();
                self.files.remove(at);
                continue;
            };
            if file.stamp == Some(stamp) && !full {
                continue;
            }
            file.stamp = Some(stamp);
            match targets::read_file_sd(&file.path) {
                Ok(mut groups) => {
                    let path = file.path.to_string_lossy();
                    for g in &mut groups {
                        set_label(&mut g.labels, FILEPATH_LABEL, &path);
                    }
                    if file.failed.take().is_some() {
                        info!("file_sd {}: read again", file.path.display());
                    }
                    if groups != file.groups {
                        file.groups = groups;
                        changed = true;
                    }
                }
                Err(e) => {
                    if file.failed != Some(stamp) {
                        warn!(
                            "file_sd {}: {e}; keeping the {} targets of its last good version",
                            file.path.display(),
                            file.groups.iter().map(|g| g.targets.len()).sum::<usize>()
                        );
                        file.failed = Some(stamp);
                    }
                }
            }
        }
        changed
    }

    /// Files whose current version could not be read or parsed.
    pub fn failing_files(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.failed.is_some() && f.failed == f.stamp)
            .count()
    }

    /// The groups of every file, by path.
    pub fn groups(&self) -> impl Iterator<Item = &TargetGroup> {
        self.files.iter().flat_map(|f| f.groups.iter())
    }
}

/// Sets `name` in sorted `labels`, replacing a value already there.
fn set_label(labels: &mut Vec<(String, String)>, name: &str, value: &str) {
    match labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
        Ok(i) => value.clone_into(&mut labels[i].1),
        Err(i) => labels.insert(i, (name.to_owned(), value.to_owned())),
    }
}

/// Why a `/pods` fetch failed.
#[derive(Debug)]
pub enum KubeletError {
    /// The HTTP exchange failed.
    Http(HttpError),
    /// The credentials could not be read.
    Credentials(crate::auth::CredentialsError),
    /// No answer within the timeout.
    Timeout(Duration),
    /// The body is not a pod list.
    Body(String),
}

impl std::fmt::Display for KubeletError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeletError::Http(e) => e.fmt(f),
            KubeletError::Credentials(e) => e.fmt(f),
            KubeletError::Timeout(d) => write!(f, "no answer within {}s", d.as_secs_f64()),
            KubeletError::Body(why) => write!(f, "bad pod list: {why}"),
        }
    }
}

impl std::error::Error for KubeletError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KubeletError::Http(e) => Some(e),
            KubeletError::Credentials(e) => Some(e),
            _ => None,
        }
    }
}

/// One `kubelet_sd_configs` entry: its client and the groups of its last good fetch.
#[derive(Debug)]
pub struct KubeletSd {
    /// The kubelet's URL, for logs (no userinfo: the config's host only).
    origin: String,
    path: String,
    /// `refresh_interval`.
    pub refresh_every: Duration,
    timeout: Duration,
    auth: Auth,
    client: Client,
    credentials: Credentials,
    body: Vec<u8>,
    groups: Vec<TargetGroup>,
    /// The last fetch failed (it was logged).
    failing: bool,
}

/// The path part of an `http(s)://host/path?query` URL, without the query.
fn url_path(text: &str) -> &str {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    rest.find('/').map_or("", |i| &rest[i..])
}

impl KubeletSd {
    /// A client for `config` (resolves `localhost` or an IP literal; other names block once,
    /// here, as a scrape target's do).
    pub fn new(config: &KubeletSdConfig) -> KubeletSd {
        let mut http: HttpClientConfig = config.http.clone();
        let mut auth = http.auth.clone();
        // In a pod, the service account is what the kubelet accepts (see the README).
        if auth == Auth::None && std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
            auth = Auth::Authorization {
                kind: "Bearer".to_owned(),
                credentials: Secret::File(SERVICE_ACCOUNT_TOKEN.to_owned()),
            };
        }
        let tls = &mut http.tls_config;
        if tls.ca_file.is_empty()
            && !tls.insecure_skip_verify
            && std::path::Path::new(SERVICE_ACCOUNT_CA).exists()
        {
            SERVICE_ACCOUNT_CA.clone_into(&mut tls.ca_file);
        }
        let mut path = url_path(&config.url.text).trim_end_matches('/').to_owned();
        path.push_str("/pods");
        let mut address = config.url.host.clone();
        let https = config.url.scheme == "https";
        if !targets::has_port(&address) {
            address.push_str(if https { ":443" } else { ":80" });
        }
        let target = Target {
            labels: Vec::new(),
            address,
            scheme: config.url.scheme.clone(),
            path_and_query: path.clone(),
            interval: config.refresh_interval,
            timeout: config.refresh_interval.min(KUBELET_TIMEOUT),
        };
        KubeletSd {
            origin: format!("{}://{}", config.url.scheme, config.url.host),
            client: Client::new(&target, &http),
            path,
            refresh_every: config.refresh_interval.max(MIN_POLL),
            timeout: target.timeout,
            auth,
            credentials: Credentials::default(),
            body: Vec::new(),
            groups: Vec::new(),
            failing: false,
        }
    }

    /// Fetches `/pods` once. Returns whether the groups changed; a failure keeps the last
    /// good ones (logged once until a fetch succeeds).
    pub async fn refresh(&mut self, clock: &Rc<Clock>) -> bool {
        let timeout = self.timeout;
        let fetched = smol::future::or(self.fetch(), async {
            clock.sleep(timeout).await;
            Err(KubeletError::Timeout(timeout))
        })
        .await;
        let parsed = fetched.and_then(|()| {
            let text = std::str::from_utf8(&self.body)
                .map_err(|_| KubeletError::Body("not UTF-8".to_owned()))?;
            let root = yaml::parse(text)
                .map_err(|e| KubeletError::Body(format!("{}:{}: {}", e.line, e.col, e.reason)))?;
            let root = root.ok_or_else(|| KubeletError::Body("empty body".to_owned()))?;
            pod_groups(&root).map_err(KubeletError::Body)
        });
        // The tree is gone; the body buffer is kept unless it is far larger than the next
        // one is likely to be.
        if self.body.capacity() > 4 * self.body.len().max(1 << 20) {
            self.body = Vec::new();
        }
        match parsed {
            Ok(groups) => {
                if self.failing {
                    info!("kubelet_sd {}: pods read again", self.origin);
                    self.failing = false;
                }
                if groups == self.groups {
                    return false;
                }
                self.groups = groups;
                true
            }
            Err(e) => {
                self.client.disconnect();
                if !self.failing {
                    warn!(
                        "kubelet_sd {}{}: {e}; keeping the {} targets of the last good fetch",
                        self.origin,
                        self.path,
                        self.groups.len()
                    );
                    self.failing = true;
                }
                false
            }
        }
    }

    async fn fetch(&mut self) -> Result<(), KubeletError> {
        let req = self
            .client
            .start_request(&self.path, self.timeout, crate::USER_AGENT);
        if let Some(value) = self
            .credentials
            .authorization(&self.auth)
            .map_err(KubeletError::Credentials)?
        {
            req.extend_from_slice(b"Authorization: ");
            req.extend_from_slice(value.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        self.client.send().await.map_err(KubeletError::Http)?;
        self.body.clear();
        loop {
            let len = self.body.len();
            self.body.resize(len + (64 << 10), 0);
            let n = self
                .client
                .fill(&mut self.body[len..], MAX_PODS_BODY)
                .await
                .map_err(KubeletError::Http);
            self.body.truncate(len + *n.as_ref().unwrap_or(&0));
            if n? == 0 {
                return Ok(());
            }
        }
    }

    /// The groups of the last good fetch: one per target.
    pub fn groups(&self) -> &[TargetGroup] {
        &self.groups
    }
}

/// Prometheus' `strutil.SanitizeLabelName`: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize(name: &str, out: &mut String) {
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// A mapping's value for `key`, if the node is a mapping that has it.
fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.kind {
        Kind::Map(entries) => entries.iter().find_map(|(k, v)| match &k.kind {
            Kind::Scalar { text, .. } if text == key => Some(v),
            _ => None,
        }),
        _ => None,
    }
}

/// A scalar's text ("" for anything else, as Go leaves a missing string field empty).
fn text(node: Option<&Node>) -> &str {
    match node.map(|n| &n.kind) {
        Some(Kind::Scalar { text, plain }) if !(*plain && text == "null") => text,
        _ => "",
    }
}

/// `node.key` as text.
fn field<'n>(node: Option<&'n Node>, key: &str) -> &'n str {
    text(node.and_then(|n| get(n, key)))
}

/// A sequence's items (none for anything else).
fn items(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items,
        _ => &[],
    }
}

/// A mapping's entries as text (none for anything else).
fn string_map(node: Option<&Node>) -> Vec<(&str, &str)> {
    match node.map(|n| &n.kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .map(|(k, v)| (text(Some(k)), text(Some(v))))
            .collect(),
        _ => Vec::new(),
    }
}

const META: &str = "__meta_kubernetes_";

/// The target groups of a `v1.PodList`, one per target, as Prometheus 2.42's role `pod`
/// builds them (pod.go `buildPod`): a pod without an IP has none; every container, then every
/// init container, gives one target per declared port (`podIP:port`) or, without ports, one
/// at the pod IP. The pod's labels (`__meta_kubernetes_pod_*`, `..._namespace`) and the
/// container's labels are merged into each group's labels, sorted; `__address__` is the
/// group's one target. Empty values are kept, as Prometheus keeps them until relabeling.
pub fn pod_groups(list: &Node) -> Result<Vec<TargetGroup>, String> {
    if !matches!(list.kind, Kind::Map(_)) {
        return Err("not a JSON object".to_owned());
    }
    let kind = text(get(list, "kind"));
    if !kind.is_empty() && kind != "PodList" {
        return Err(format!("kind {kind:?}, not PodList"));
    }
    let mut out = Vec::new();
    for pod in items(get(list, "items")) {
        let meta = get(pod, "metadata");
        let spec = get(pod, "spec");
        let status = get(pod, "status");
        let pod_ip = text(status.and_then(|s| get(s, "podIP")));
        if pod_ip.is_empty() {
            continue;
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut put = |name: &str, value: &str| {
            labels.push((format!("{META}{name}"), value.to_owned()));
        };
        put("namespace", field(meta, "namespace"));
        put("pod_name", field(meta, "name"));
        put("pod_ip", pod_ip);
        let ready = items(status.and_then(|s| get(s, "conditions")))
            .iter()
            .find(|c| text(get(c, "type")) == "Ready")
            .map_or("unknown".to_owned(), |c| {
                text(get(c, "status")).to_ascii_lowercase()
            });
        put("pod_ready", &ready);
        put("pod_phase", field(status, "phase"));
        put("pod_node_name", field(spec, "nodeName"));
        put("pod_host_ip", field(status, "hostIP"));
        put("pod_uid", field(meta, "uid"));
        // GetControllerOf: the first owner reference with `controller: true`.
        let controller = items(meta.and_then(|m| get(m, "ownerReferences")))
            .iter()
            .find(|r| matches!(get(r, "controller").map(|c| &c.kind), Some(Kind::Scalar { text, plain: true }) if text == "true"));
        if let Some(c) = controller {
            for (name, key) in [
                ("pod_controller_kind", "kind"),
                ("pod_controller_name", "name"),
            ] {
                let v = text(get(c, key));
                if !v.is_empty() {
                    put(name, v);
                }
            }
        }
        let mut name = String::new();
        for (prefix, present, key) in [
            ("pod_label_", "pod_labelpresent_", "labels"),
            ("pod_annotation_", "pod_annotationpresent_", "annotations"),
        ] {
            for (k, v) in string_map(meta.and_then(|m| get(m, key))) {
                name.clear();
                sanitize(k, &mut name);
                put(&format!("{prefix}{name}"), v);
                put(&format!("{present}{name}"), "true");
            }
        }
        // Two keys that sanitise alike: Go's map keeps one of them (which is unspecified);
        // we keep the last written.
        labels.reverse();
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|b, a| a.0 == b.0);
        let containers = items(spec.and_then(|s| get(s, "containers")));
        let inits = items(spec.and_then(|s| get(s, "initContainers")));
        let statuses = items(status.and_then(|s| get(s, "containerStatuses")));
        let init_statuses = items(status.and_then(|s| get(s, "initContainerStatuses")));
        let all = containers
            .iter()
            .map(|c| (c, false, statuses))
            .chain(inits.iter().map(|c| (c, true, init_statuses)));
        for (c, init, statuses) in all {
            let cname = text(get(c, "name"));
            let id = statuses
                .iter()
                .find(|s| text(get(s, "name")) == cname)
                .map_or("", |s| text(get(s, "containerID")));
            let container = [
                ("pod_container_name", cname),
                ("pod_container_id", id),
                ("pod_container_image", text(get(c, "image"))),
                ("pod_container_init", if init { "true" } else { "false" }),
            ];
            let ports = items(get(c, "ports"));
            if ports.is_empty() {
                let address = if pod_ip.contains(':') {
                    format!("[{pod_ip}]")
                } else {
                    pod_ip.to_owned()
                };
                out.push(group(&labels, address, &container));
                continue;
            }
            for port in ports {
                let number = text(get(port, "containerPort"));
                let address = if pod_ip.contains(':') {
                    format!("[{pod_ip}]:{number}")
                } else {
                    format!("{pod_ip}:{number}")
                };
                let mut with_port = container.to_vec();
                with_port.extend([
                    ("pod_container_port_number", number),
                    ("pod_container_port_name", text(get(port, "name"))),
                    ("pod_container_port_protocol", text(get(port, "protocol"))),
                ]);
                out.push(group(&labels, address, &with_port));
            }
        }
    }
    Ok(out)
}

fn group(pod: &[(String, String)], address: String, extra: &[(&str, &str)]) -> TargetGroup {
    let mut labels = pod.to_vec();
    for (name, value) in extra {
        set_label(&mut labels, &format!("{META}{name}"), value);
    }
    TargetGroup {
        targets: vec![address],
        labels,
    }
}

/// The discovery of one job: its providers, polled on their own schedules.
#[derive(Debug)]
pub struct JobDiscovery {
    files: Vec<(FileSd, Instant)>,
    kubelets: Vec<(KubeletSd, Instant)>,
}

impl JobDiscovery {
    /// The providers of `file_sd` and `kubelet_sd`; file_sd files are read now (blocking),
    /// the kubelets are asked at the first [`JobDiscovery::step`].
    pub fn new(file_sd: &[FileSdConfig], kubelet_sd: &[KubeletSdConfig]) -> JobDiscovery {
        let now = Instant::now();
        let files = file_sd
            .iter()
            .map(|c| {
                let mut f = FileSd::new(c);
                f.poll();
                let next = now + f.poll_every;
                (f, next)
            })
            .collect();
        let kubelets = kubelet_sd
            .iter()
            .map(|c| (KubeletSd::new(c), now))
            .collect();
        JobDiscovery { files, kubelets }
    }

    /// Runs the providers that are due; returns whether any group changed.
    pub async fn step(&mut self, clock: &Rc<Clock>) -> bool {
        let mut changed = false;
        let now = Instant::now();
        for (f, next) in &mut self.files {
            if *next <= now {
                changed |= f.poll();
                *next = Instant::now() + f.poll_every;
            }
        }
        for (k, next) in &mut self.kubelets {
            if *next <= now {
                changed |= k.refresh(clock).await;
                *next = Instant::now() + k.refresh_every;
            }
        }
        changed
    }

    /// When the next provider is due.
    pub fn next_due(&self) -> Option<Instant> {
        let files = self.files.iter().map(|(_, n)| *n);
        files.chain(self.kubelets.iter().map(|(_, n)| *n)).min()
    }

    /// Every group discovered now, file_sd first, in config order.
    pub fn groups(&self) -> Vec<TargetGroup> {
        let mut out: Vec<TargetGroup> = Vec::new();
        for (f, _) in &self.files {
            out.extend(f.groups().cloned());
        }
        for (k, _) in &self.kubelets {
            out.extend(k.groups().iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests;
