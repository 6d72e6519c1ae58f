//! `kubernetes_sd_configs` roles `pod` and `node`: the objects are listed from the API
//! server, then watched, as client-go's reflector does for Prometheus' informers.
//!
//! One [`Informer`] per (role, namespace) runs as its own task on the loop:
//! 1. **List** `GET /api/v1/pods` (or `/namespaces/<ns>/pods`, or `/nodes`) with the
//!    config's `fieldSelector`/`labelSelector`; the list's `resourceVersion` is kept.
//! 2. **Watch** from that version (`watch=1`, `allowWatchBookmarks`, `timeoutSeconds` 5–10
//!    minutes as client-go picks it). Each event updates one object's groups; every event
//!    and bookmark moves the version on. A watch the server ends is started again from the
//!    version.
//! 3. **410 Gone** (the version is older than the server keeps, as an `ERROR` event or as the
//!    watch's HTTP status) lists again. Any other failure (refused or dropped connection, a
//!    status, a body that is not JSON) waits a backoff (1 s doubling to 30 s, reset by a good
//!    list or an event) and watches again from the version, or lists again if the list failed.
//!
//! The groups are those of Prometheus 2.42: a pod's are [`pods::groups`] (the kubelet's
//! `/pods` reader, the same code), a node's [`node_group`]. Failures keep the targets of the
//! objects known, are logged once, and logged again when the informer recovers. Bodies are
//! read as they stream, through a window, by the [`pods`] reader: nothing holds a list or an
//! event whole beyond the objects' kept fields.
//!
//! Not done: pagination (`limit`/`continue`; a list is read in one response, streamed),
//! `attach_metadata` and `kubeconfig_file` (refused by the config), roles `service`,
//! `endpoints`, `endpointslice` and `ingress` (refused).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::pods::{self, join_host_port, Doc, Pod, PodListError, PodListReader, WatchEvent, META};
use super::{MAX_POD_TOKEN, POD_WINDOW};
use crate::auth::Credentials;
use crate::config::http::{Auth, HttpClientConfig, Secret};
use crate::config::{KubeRole, KubernetesSdConfig, TargetGroup};
use crate::parse::Window;
use crate::scrape::clock::Clock;
use crate::scrape::http::{Client, HttpError};
use crate::targets::{self, query_escape, Target};

/// Where a pod finds its service account (`token`, `ca.crt`, `namespace`).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long a list may take.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest list body read (streamed: this bounds time, not memory).
pub const MAX_LIST_BODY: u64 = 1 << 30;

/// client-go's `minWatchTimeout`: a watch asks the server to end it after 1–2 times this.
pub const MIN_WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How long past its `timeoutSeconds` a watch may stay silent before it is dropped (a
/// connection lost without a FIN).
pub const WATCH_GRACE: Duration = Duration::from_secs(30);

/// How long a reload waits for a changed job's first list (as it waits for a kubelet).
pub const PRIME_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between attempts, as client-go's reflector caps it.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A watch that ends sooner than this without an event counts as a failure (so a server
/// that closes every watch at once is retried with backoff, not in a spin).
pub const SHORT_WATCH: Duration = Duration::from_secs(1);

/// The groups an informer publishes, shared with the job's discovery.
pub type Published = Rc<RefCell<Vec<TargetGroup>>>;

/// Why a list or a watch failed.
#[derive(Debug)]
pub enum KubeError {
    /// The HTTP exchange failed (a refused or dropped connection, a status).
    Http(HttpError),
    /// The token could not be read.
    Credentials(crate::auth::CredentialsError),
    /// No answer in time.
    Timeout(Duration),
    /// The body is not what was asked for.
    Body(PodListError),
    /// A list without a `resourceVersion` cannot be watched.
    NoVersion,
    /// An `ERROR` event other than 410.
    Status(String, String),
    /// An event `type` that is not one of Kubernetes'.
    EventType(String),
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeError::Http(e) => e.fmt(f),
            KubeError::Credentials(e) => e.fmt(f),
            KubeError::Timeout(d) => write!(f, "no answer within {}s", d.as_secs_f64()),
            KubeError::Body(e) => write!(f, "bad body: {e}"),
            KubeError::NoVersion => f.write_str("the list has no metadata.resourceVersion"),
            KubeError::Status(code, message) => {
                write!(f, "watch error {code}: {message}")
            }
            KubeError::EventType(t) => write!(f, "unknown watch event type {t:?}"),
        }
    }
}

impl std::error::Error for KubeError {}

/// How a watch ended without a failure.
#[derive(Debug, PartialEq, Eq)]
enum WatchEnd {
    /// The server (or the grace deadline) ended it: watch again from the version.
    Ended,
    /// 410 Gone: list again.
    Expired,
}

/// Where and how to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// `https` or `http`.
    pub scheme: String,
    /// `host:port`.
    pub authority: String,
    /// The URL's path, no trailing `/` (`/api/v1/…` follows it).
    pub base: String,
    /// Auth and TLS.
    pub http: HttpClientConfig,
}

/// client-go's `rest.InClusterConfig`: the service's host and port from the environment,
/// the service account's token (re-read per request) and CA in `dir`.
pub fn in_cluster(
    host: Option<&str>,
    port: Option<&str>,
    dir: &std::path::Path,
) -> Result<ApiServer, String> {
    let (Some(host), Some(port)) = (
        host.filter(|h| !h.is_empty()),
        port.filter(|p| !p.is_empty()),
    ) else {
        return Err(
            "unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and \
                    KUBERNETES_SERVICE_PORT must be defined"
                .to_owned(),
        );
    };
    let token = dir.join("token");
    if !token.exists() {
        return Err(format!(
            "open {}: no such file or directory",
            token.display()
        ));
    }
    let mut http = HttpClientConfig {
        auth: Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: Secret::File(token.to_string_lossy().into_owned()),
        },
        ..HttpClientConfig::default()
    };
    http.tls_config.ca_file = dir.join("ca.crt").to_string_lossy().into_owned();
    Ok(ApiServer {
        scheme: "https".to_owned(),
        authority: join_host_port(host, port),
        base: String::new(),
        http,
    })
}

/// The API server of `config`: its `api_server`, or the in-cluster one.
pub fn api_server(config: &KubernetesSdConfig) -> Result<ApiServer, String> {
    let Some(url) = &config.api_server else {
        return in_cluster(
            std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
            std::path::Path::new(SERVICE_ACCOUNT_DIR),
        );
    };
    let https = url.scheme == "https";
    let mut authority = url.host.clone();
    if !targets::has_port(&authority) {
        authority.push_str(if https { ":443" } else { ":80" });
    }
    Ok(ApiServer {
        scheme: url.scheme.clone(),
        authority,
        base: super::url_path(&url.text).trim_end_matches('/').to_owned(),
        http: config.http.clone(),
    })
}

/// The collections `config` watches: for role `pod`, one per namespace (all of them when
/// none is named); for role `node`, the nodes (namespaces do not apply).
pub fn collections(config: &KubernetesSdConfig, own_namespace: Option<&str>) -> Vec<String> {
    match config.role {
        KubeRole::Node => vec!["/api/v1/nodes".to_owned()],
        KubeRole::Pod => {
            let mut names: Vec<&str> = config.namespaces.iter().map(String::as_str).collect();
            if let Some(own) = own_namespace {
                names.push(own);
            }
            names.sort_unstable();
            names.dedup();
            if names.is_empty() {
                return vec!["/api/v1/pods".to_owned()];
            }
            names
                .iter()
                .map(|ns| {
                    let mut path = "/api/v1/namespaces/".to_owned();
                    query_escape(ns, &mut path);
                    path.push_str("/pods");
                    path
                })
                .collect()
        }
    }
}

/// A node's target group, as Prometheus 2.42's `buildNode`: its address is the first of its
/// addresses by type (InternalIP, InternalDNS, ExternalIP, ExternalDNS, LegacyHostIP,
/// Hostname) joined with the kubelet's port; `instance` is the node's name; each address
/// type gives `__meta_kubernetes_node_address_<type>` (its first address). A node without
/// any of those addresses has no target.
pub fn node_group(node: &Pod) -> Option<TargetGroup> {
    const PRIORITY: [&str; 6] = [
        "InternalIP",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
        "LegacyHostIP",
        "Hostname",
    ];
    let first = |kind: &str| {
        node.addresses
            .iter()
            .find(|(t, _)| t == kind)
            .map(|(_, a)| a.as_str())
    };
    let address = PRIORITY.iter().find_map(|kind| first(kind))?;
    // Go's zero value: a node that reports no kubelet endpoint gets port 0.
    let port = if node.kubelet_port.is_empty() {
        "0"
    } else {
        node.kubelet_port.as_str()
    };
    let mut labels: Vec<(String, String)> = Vec::new();
    labels.push((format!("{META}node_name"), node.name.clone()));
    labels.push((format!("{META}node_provider_id"), node.provider_id.clone()));
    pods::object_meta("node", node, &mut labels);
    let mut name = String::new();
    for (kind, _) in &node.addresses {
        name.clear();
        pods::sanitize(kind, &mut name);
        let label = format!("{META}node_address_{name}");
        if !labels.iter().any(|(l, _)| *l == label) {
            labels.push((label, first(kind).unwrap_or("").to_owned()));
        }
    }
    labels.push(("instance".to_owned(), node.name.clone()));
    pods::settle(&mut labels);
    Some(TargetGroup {
        targets: vec![join_host_port(address, port)],
        labels,
    })
}

/// One collection's list and watch, and the groups of its objects.
#[derive(Debug)]
pub struct Informer {
    role: KubeRole,
    /// `scheme://host` and the collection, for logs.
    origin: String,
    /// The collection's path, base included.
    path: String,
    /// `&fieldSelector=…&labelSelector=…`, escaped; empty without selectors.
    selectors: String,
    client: Client,
    auth: Auth,
    credentials: Credentials,
    window: Window,
    /// The groups of each object, by `namespace/name`.
    objects: BTreeMap<String, Vec<TargetGroup>>,
    /// The version to watch from; empty: list first.
    version: String,
    out: Published,
    notify: smol::channel::Sender<()>,
    failing: bool,
    backoff: Duration,
}

impl Informer {
    /// An informer for `collection` (from [`collections`]) of `server`; its groups go to
    /// `out`, and `notify` is told when they change.
    pub fn new(
        config: &KubernetesSdConfig,
        server: &ApiServer,
        collection: &str,
        out: Published,
        notify: smol::channel::Sender<()>,
    ) -> Informer {
        let target = Target {
            labels: Vec::new(),
            address: server.authority.clone(),
            scheme: server.scheme.clone(),
            path_and_query: String::new(),
            interval: LIST_TIMEOUT,
            timeout: LIST_TIMEOUT,
        };
        let mut selectors = String::new();
        for (key, value) in [
            ("fieldSelector", &config.field_selector),
            ("labelSelector", &config.label_selector),
        ] {
            if !value.is_empty() {
                selectors.push('&');
                selectors.push_str(key);
                selectors.push('=');
                query_escape(value, &mut selectors);
            }
        }
        let path = format!("{}{collection}", server.base);
        Informer {
            role: config.role,
            origin: format!("{}://{}{path}", server.scheme, server.authority),
            path,
            selectors,
            client: Client::new(&target, &server.http),
            auth: server.http.auth.clone(),
            credentials: Credentials::default(),
            window: Window::new(POD_WINDOW, MAX_POD_TOKEN),
            objects: BTreeMap::new(),
            version: String::new(),
            out,
            notify,
            failing: false,
            backoff: MIN_BACKOFF,
        }
    }

    /// `e`, or the API server's name lookup if the deadline passed during it.
    fn lookup_reason(&self, e: KubeError) -> KubeError {
        match (e, self.client.abandoned_lookup()) {
            (KubeError::Timeout(_), Some(lookup)) => KubeError::Http(lookup),
            (e, _) => e,
        }
    }

    /// Lists once, within [`PRIME_TIMEOUT`]: a reload that changed the job asks before it
    /// compares targets, so that the job's targets do not go meanwhile. [`Informer::run`]
    /// goes on from the list (or lists again, if it failed).
    pub async fn prime(&mut self, clock: &Rc<Clock>) {
        let listed = smol::future::or(self.list(), async {
            clock.sleep(PRIME_TIMEOUT).await;
            Err(KubeError::Timeout(PRIME_TIMEOUT))
        })
        .await
        .map_err(|e| self.lookup_reason(e));
        match listed {
            Ok(()) => self.recovered(),
            Err(e) => {
                self.client.disconnect();
                self.version.clear();
                self.failed("list", &e);
            }
        }
    }

    /// Lists and watches until dropped.
    pub async fn run(mut self, clock: Rc<Clock>) {
        loop {
            if self.version.is_empty() {
                let listed = smol::future::or(self.list(), async {
                    clock.sleep(LIST_TIMEOUT).await;
                    Err(KubeError::Timeout(LIST_TIMEOUT))
                })
                .await
                .map_err(|e| self.lookup_reason(e));
                if let Err(e) = listed {
                    self.client.disconnect();
                    self.failed("list", &e);
                    self.wait(&clock).await;
                    continue;
                }
                self.recovered();
            }
            let started = Instant::now();
            let timeout = watch_timeout();
            let mut events = 0u64;
            let watched = smol::future::or(self.watch(timeout, &mut events), async {
                clock.sleep(timeout + WATCH_GRACE).await;
                Ok(WatchEnd::Ended)
            })
            .await;
            self.shrink_window();
            match watched {
                Ok(WatchEnd::Ended) if events == 0 && started.elapsed() < SHORT_WATCH => {
                    self.client.disconnect();
                    self.failed("watch", &KubeError::Http(HttpError::Closed));
                    self.wait(&clock).await;
                }
                Ok(WatchEnd::Ended) => self.client.disconnect(),
                Ok(WatchEnd::Expired) => {
                    info!(
                        "kubernetes_sd {}: resource version {} is gone (410), listing again",
                        self.origin, self.version
                    );
                    self.client.disconnect();
                    self.version.clear();
                }
                Err(e) => {
                    self.client.disconnect();
                    self.failed("watch", &e);
                    self.wait(&clock).await;
                }
            }
        }
    }

    fn failed(&mut self, what: &str, e: &KubeError) {
        if !self.failing {
            warn!(
                "kubernetes_sd {} {what}: {e}; keeping the targets of the {} objects known, \
                 retrying with backoff",
                self.origin,
                self.objects.len()
            );
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            info!("kubernetes_sd {}: listed again", self.origin);
            self.failing = false;
        }
        self.backoff = MIN_BACKOFF;
    }

    async fn wait(&mut self, clock: &Rc<Clock>) {
        clock.sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn shrink_window(&mut self) {
        if self.window.capacity() > POD_WINDOW {
            self.window = Window::new(POD_WINDOW, MAX_POD_TOKEN);
        }
    }

    /// Sends a GET for `path_and_query`.
    async fn request(&mut self, path_and_query: &str) -> Result<(), KubeError> {
        let req = self
            .client
            .start_json_request(path_and_query, crate::USER_AGENT);
        super::authorize(req, &mut self.credentials, &self.auth).map_err(KubeError::Credentials)?;
        self.client.send().await.map_err(KubeError::Http)?;
        self.window.clear();
        Ok(())
    }

    /// The groups of one object.
    fn groups_of(&self, object: &Pod) -> Vec<TargetGroup> {
        match self.role {
            KubeRole::Pod => pods::groups(std::slice::from_ref(object)),
            KubeRole::Node => node_group(object).into_iter().collect(),
        }
    }

    fn publish(&self) {
        *self.out.borrow_mut() = self.objects.values().flatten().cloned().collect();
        // Full: the job's discovery has yet to look, and will see these too.
        let _ = self.notify.try_send(());
    }

    /// Lists the collection: its objects replace those known.
    async fn list(&mut self) -> Result<(), KubeError> {
        let mut path = self.path.clone();
        if let Some(rest) = self.selectors.strip_prefix('&') {
            path.push('?');
            path.push_str(rest);
        }
        self.request(&path).await?;
        let doc = match self.role {
            KubeRole::Pod => Doc::PodList,
            KubeRole::Node => Doc::NodeList,
        };
        let mut reader = PodListReader::of(doc);
        super::read_body(
            &mut reader,
            &mut self.window,
            &mut self.client,
            MAX_LIST_BODY,
        )
        .await
        .map_err(|e| match e {
            super::BodyError::Http(e) => KubeError::Http(e),
            super::BodyError::Body(e) => KubeError::Body(e),
        })?;
        self.shrink_window();
        let version = reader.list_version().to_owned();
        if version.is_empty() {
            return Err(KubeError::NoVersion);
        }
        let mut objects = BTreeMap::new();
        for object in reader.into_pods() {
            let groups = self.groups_of(&object);
            objects.insert(key_of(&object), groups);
        }
        let changed = objects != self.objects;
        self.objects = objects;
        self.version = version;
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// Watches from the version; `events` counts those applied.
    async fn watch(&mut self, timeout: Duration, events: &mut u64) -> Result<WatchEnd, KubeError> {
        let path = format!(
            "{}?allowWatchBookmarks=true&resourceVersion={}&timeoutSeconds={}&watch=true{}",
            self.path,
            self.version,
            timeout.as_secs(),
            self.selectors
        );
        match self.request(&path).await {
            Err(KubeError::Http(HttpError::Status(410))) => return Ok(WatchEnd::Expired),
            other => other?,
        }
        let mut reader = PodListReader::of(Doc::Events);
        loop {
            let used = reader
                .feed(self.window.data(), self.window.eof())
                .map_err(KubeError::Body)?;
            self.window.consume(used);
            let mut changed = false;
            let mut outcome = None;
            for event in reader.take_events() {
                match self.apply(event) {
                    Ok(c) => {
                        changed |= c;
                        *events += 1;
                    }
                    Err(end) => {
                        outcome = Some(end);
                        break;
                    }
                }
            }
            if changed {
                self.publish();
            }
            if *events > 0 {
                self.backoff = MIN_BACKOFF;
                if self.failing {
                    info!("kubernetes_sd {}: watching again", self.origin);
                    self.failing = false;
                }
            }
            if let Some(end) = outcome {
                return end;
            }
            if reader.is_done() {
                return Ok(WatchEnd::Ended);
            }
            let space = self
                .window
                .space()
                .map_err(|max| KubeError::Body(PodListError::TokenTooLong(max)))?;
            // No limit: the server ends a watch after `timeoutSeconds`.
            let n = self.client.fill(space, 0).await;
            self.window.filled(n.map_err(KubeError::Http)?);
        }
    }

    /// Applies one event: whether the groups changed, or how the watch ends.
    fn apply(&mut self, event: WatchEvent) -> Result<bool, Result<WatchEnd, KubeError>> {
        let changed = match event.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                let groups = self.groups_of(&event.object);
                let key = key_of(&event.object);
                if self.objects.get(&key) == Some(&groups) {
                    false
                } else {
                    self.objects.insert(key, groups);
                    true
                }
            }
            "DELETED" => self.objects.remove(&key_of(&event.object)).is_some(),
            "BOOKMARK" => false,
            "ERROR" if event.code == "410" => return Err(Ok(WatchEnd::Expired)),
            "ERROR" => return Err(Err(KubeError::Status(event.code, event.message))),
            _ => return Err(Err(KubeError::EventType(event.kind))),
        };
        if !event.version.is_empty() {
            self.version = event.version;
        }
        Ok(changed)
    }
}

/// `namespace/name`, as client-go's `MetaNamespaceKeyFunc` (a node's is its name).
fn key_of(object: &Pod) -> String {
    if object.namespace.is_empty() {
        object.name.clone()
    } else {
        format!("{}/{}", object.namespace, object.name)
    }
}

/// client-go's reflector: `timeoutSeconds` between [`MIN_WATCH_TIMEOUT`] and twice it, so
/// that many agents do not reconnect at once.
fn watch_timeout() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    MIN_WATCH_TIMEOUT + Duration::from_secs(u64::from(nanos) % MIN_WATCH_TIMEOUT.as_secs())
}

/// The informers of one `kubernetes_sd_configs` entry, each with the place it publishes to;
/// an entry that cannot run (no in-cluster config, an unreadable namespace file) is logged
/// and has none, as Prometheus fails to start that discoverer.
pub fn informers(
    config: &KubernetesSdConfig,
    notify: &smol::channel::Sender<()>,
) -> Vec<(Informer, Published)> {
    let server = match api_server(config) {
        Ok(s) => s,
        Err(e) => {
            error!("kubernetes_sd role {}: {e}", config.role.name());
            return Vec::new();
        }
    };
    let own = if config.own_namespace {
        let file = std::path::Path::new(SERVICE_ACCOUNT_DIR).join("namespace");
        match std::fs::read_to_string(&file) {
            Ok(ns) => Some(ns.trim().to_owned()),
            Err(e) => {
                error!(
                    "kubernetes_sd role {}: could not determine the pod's namespace: {}: {e}",
                    config.role.name(),
                    file.display()
                );
                return Vec::new();
            }
        }
    } else {
        None
    };
    collections(config, own.as_deref())
        .iter()
        .map(|c| {
            let out: Published = Rc::default();
            let informer = Informer::new(config, &server, c, Rc::clone(&out), notify.clone());
            (informer, out)
        })
        .collect()
}

#[cfg(test)]
mod tests;
