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
//! pod.go`, `buildPod`): see [`pods::groups`]. A failed fetch keeps the last good targets and
//! is logged once, until a fetch succeeds again. A node of 110 pods sends 1–3 MB; the body is
//! read as it streams, through a [`POD_WINDOW`]-byte window, by the pull tokenizer of
//! [`json`] and the [`pods`] reader that keeps only the fields the labels are made of: neither
//! the body nor a tree of it is held (rejected: the config's YAML parser on the held body,
//! as promlet first did, a tree ten times the body's size every `refresh_interval`; the
//! README's Discovery section has the measured peaks). Bodies above [`MAX_PODS_BODY`], and
//! tokens above [`MAX_POD_TOKEN`], fail.

pub mod json;
pub mod kubernetes;
pub mod pods;
#[cfg(test)]
mod tree;

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::auth::Credentials;
use crate::config::http::{Auth, HttpClientConfig, Secret};
#[cfg(test)]
use crate::config::yaml::{self, Node};
use crate::config::{FileSdConfig, KubeletSdConfig, KubernetesSdConfig, TargetGroup};
use crate::parse::Window;
use crate::scrape::clock::Clock;
use crate::scrape::http::{Client, HttpError};
use crate::targets::{self, Target};
use pods::{Pod, PodListError, PodListReader};
#[cfg(test)]
use tree::pod_groups;

/// The longest a changed file_sd file goes unnoticed (see the module docs).
pub const FILE_POLL: Duration = Duration::from_secs(5);

/// The shortest poll period, whatever `refresh_interval` says (0 would spin the loop).
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// The largest `/pods` body read: 32 MiB is ten times what a full node (110 pods) sends.
pub const MAX_PODS_BODY: u64 = 32 << 20;

/// The window a `/pods` body streams through: a few body reads' worth.
pub const POD_WINDOW: usize = 64 << 10;

/// The longest one token of a `/pods` body may be (the window grows to it only for such a
/// token, and shrinks back after the fetch). Kubernetes caps a pod's annotations at 256 KiB
/// in all (apimachinery `TotalAnnotationSizeLimitB`), the longest strings a pod has.
pub const MAX_POD_TOKEN: usize = 1 << 20;

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
    Body(PodListError),
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
            KubeletError::Body(e) => Some(e),
            KubeletError::Timeout(_) => None,
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
    /// The body streams through it; back to [`POD_WINDOW`] bytes after a fetch that grew it.
    window: Window,
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
            window: Window::new(POD_WINDOW, MAX_POD_TOKEN),
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
        .await
        .map_err(|e| match (e, self.client.abandoned_lookup()) {
            // The deadline passed during the lookup of the kubelet's name: say so.
            (KubeletError::Timeout(_), Some(lookup)) => KubeletError::Http(lookup),
            (e, _) => e,
        });
        let parsed = fetched.map(|pods| pods::groups(&pods));
        if self.window.capacity() > POD_WINDOW {
            self.window = Window::new(POD_WINDOW, MAX_POD_TOKEN);
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

    /// Asks for `/pods` and reads the pods from the body as it comes.
    async fn fetch(&mut self) -> Result<Vec<Pod>, KubeletError> {
        let req = self
            .client
            .start_request(&self.path, self.timeout, crate::USER_AGENT);
        authorize(req, &mut self.credentials, &self.auth).map_err(KubeletError::Credentials)?;
        self.client.send().await.map_err(KubeletError::Http)?;
        let mut reader = PodListReader::new();
        read_body(
            &mut reader,
            &mut self.window,
            &mut self.client,
            MAX_PODS_BODY,
        )
        .await
        .map_err(|e| match e {
            BodyError::Http(e) => KubeletError::Http(e),
            BodyError::Body(e) => KubeletError::Body(e),
        })?;
        Ok(reader.into_pods())
    }

    /// The groups of the last good fetch: one per target.
    pub fn groups(&self) -> &[TargetGroup] {
        &self.groups
    }
}

/// Adds the `Authorization` header of `auth` to a request being built (token files are read
/// now: they rotate).
fn authorize(
    req: &mut Vec<u8>,
    credentials: &mut Credentials,
    auth: &Auth,
) -> Result<(), crate::auth::CredentialsError> {
    if let Some(value) = credentials.authorization(auth)? {
        req.extend_from_slice(b"Authorization: ");
        req.extend_from_slice(value.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Why a streamed body could not be read.
#[derive(Debug)]
enum BodyError {
    Http(HttpError),
    Body(PodListError),
}

/// Reads a whole list body (the response [`Client::send`] got) into `reader`, through
/// `window`: at most `limit` bytes (0: no limit).
async fn read_body(
    reader: &mut PodListReader,
    window: &mut Window,
    client: &mut Client,
    limit: u64,
) -> Result<(), BodyError> {
    window.clear();
    loop {
        let used = reader
            .feed(window.data(), window.eof())
            .map_err(BodyError::Body)?;
        window.consume(used);
        if reader.is_done() {
            // Only at the body's end: white space after the document is read to it.
            return Ok(());
        }
        let space = window
            .space()
            .map_err(|max| BodyError::Body(PodListError::TokenTooLong(max)))?;
        let n = client.fill(space, limit).await;
        window.filled(n.map_err(BodyError::Http)?);
    }
}

/// The discovery of one job: its providers, polled on their own schedules, and the groups
/// its Kubernetes informers publish (they run as tasks of their own: [`JobDiscovery::take_informers`]).
#[derive(Debug)]
pub struct JobDiscovery {
    files: Vec<(FileSd, Instant)>,
    kubelets: Vec<(KubeletSd, Instant)>,
    informers: Vec<kubernetes::Informer>,
    published: Vec<kubernetes::Published>,
    /// Told by the informers when their groups change.
    informed: smol::channel::Receiver<()>,
}

impl JobDiscovery {
    /// The providers of `file_sd`, `kubelet_sd` and `kubernetes_sd`; file_sd files are read
    /// now (blocking), the kubelets are asked at the first [`JobDiscovery::step`], the API
    /// servers once the informers run.
    pub fn new(
        file_sd: &[FileSdConfig],
        kubelet_sd: &[KubeletSdConfig],
        kubernetes_sd: &[KubernetesSdConfig],
    ) -> JobDiscovery {
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
        let (notify, informed) = smol::channel::bounded(1);
        let (informers, published) = kubernetes_sd
            .iter()
            .flat_map(|c| kubernetes::informers(c, &notify))
            .unzip();
        JobDiscovery {
            files,
            kubelets,
            informers,
            published,
            informed,
        }
    }

    /// Lists once from every informer (a reload's first look; see [`kubernetes::Informer::prime`]).
    pub async fn prime(&mut self, clock: &Rc<Clock>) {
        for i in &mut self.informers {
            i.prime(clock).await;
        }
    }

    /// The informers, to run as tasks (each until dropped) while this polls the rest.
    pub fn take_informers(&mut self) -> Vec<kubernetes::Informer> {
        std::mem::take(&mut self.informers)
    }

    /// Waits until an informer's groups change (never, if there are none).
    pub async fn informed(&self) {
        if self.published.is_empty() || self.informed.recv().await.is_err() {
            std::future::pending::<()>().await;
        }
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

    /// Every group discovered now: file_sd, kubelet_sd, kubernetes_sd, each in config order.
    pub fn groups(&self) -> Vec<TargetGroup> {
        let mut out: Vec<TargetGroup> = Vec::new();
        for (f, _) in &self.files {
            out.extend(f.groups().cloned());
        }
        for (k, _) in &self.kubelets {
            out.extend(k.groups().iter().cloned());
        }
        for p in &self.published {
            out.extend(p.borrow().iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests;
