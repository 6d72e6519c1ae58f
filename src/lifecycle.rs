//! The running agent: start, reload, stop (DESIGN.md, threads and lifecycle).
//!
//! [`Agent`] owns what the loop runs: one task per target, one sender thread per
//! `remote_write`, the self HTTP server. A reload (SIGHUP or `POST /-/reload`) loads and
//! validates the file first and keeps running on the old config if it is refused. A good
//! config is applied as Prometheus applies one: targets that are still there keep their task
//! and staleness state (a changed job setting restarts the task with its state), removed
//! targets stale-mark their series, new ones start. Senders whose endpoint settings changed
//! are restarted from their cursor; removed endpoints forget theirs.
//!
//! Stop (SIGTERM, SIGINT): scrape tasks end at once (appends are never half done: they run
//! between awaits), senders get `--storage.remote.flush-deadline` to send what the ring holds,
//! then the ring is synced. What was not sent is sent at the next start, from the cursors.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};

use crate::config::{
    Config, FileSdConfig, KubeletSdConfig, KubernetesSdConfig, RemoteWriteConfig, ScrapeConfig,
    TargetGroup,
};
use crate::discovery::JobDiscovery;
use crate::metadata;
use crate::scrape::clock::Clock;
use crate::scrape::{self, ScrapeStats, Scraper, StopSignal};
use crate::selfmetrics::Kind;
use crate::send::sender::{endpoint_key, Control, Sender, SenderStats};
use crate::targets::{self, Target};
use crate::wal::Ring;

/// A target's running task.
#[derive(Debug)]
struct Running {
    stop: Rc<StopSignal>,
    task: smol::Task<Scraper>,
    job: Rc<ScrapeConfig>,
    target: Target,
}

/// One job's discovery task and what it found last.
#[derive(Debug)]
struct Discovery {
    /// The configs it runs: a reload that changes them starts it anew.
    file_sd: Vec<FileSdConfig>,
    kubelet_sd: Vec<KubeletSdConfig>,
    kubernetes_sd: Vec<KubernetesSdConfig>,
    groups: Rc<RefCell<Vec<TargetGroup>>>,
    _task: smol::Task<()>,
    /// Its Kubernetes informers, one task each.
    _informers: Vec<smol::Task<()>>,
}

impl Discovery {
    /// Whether it runs exactly the discovery configs of `sc`.
    fn runs(&self, sc: &ScrapeConfig) -> bool {
        self.file_sd == sc.file_sd_configs
            && self.kubelet_sd == sc.kubelet_sd_configs
            && self.kubernetes_sd == sc.kubernetes_sd_configs
    }
}

/// Whether `sc` discovers targets at run time.
fn discovers(sc: &ScrapeConfig) -> bool {
    !sc.file_sd_configs.is_empty()
        || !sc.kubelet_sd_configs.is_empty()
        || !sc.kubernetes_sd_configs.is_empty()
}

/// The discovery of `sc`'s job (its file_sd files read now).
fn job_discovery(sc: &ScrapeConfig) -> JobDiscovery {
    JobDiscovery::new(
        &sc.file_sd_configs,
        &sc.kubelet_sd_configs,
        &sc.kubernetes_sd_configs,
    )
}

/// Runs a job's discovery until dropped: each time its groups change they are published
/// and the agent is told (a full channel means it has yet to look: one notice is enough).
async fn discover(
    mut d: JobDiscovery,
    out: Rc<RefCell<Vec<TargetGroup>>>,
    changed: smol::channel::Sender<()>,
    clock: Rc<Clock>,
) {
    let mut informed = false;
    loop {
        if d.step(&clock).await || informed {
            *out.borrow_mut() = d.groups();
            let _ = changed.try_send(());
        }
        informed = match d.next_due() {
            Some(at) => {
                smol::future::or(
                    async {
                        clock.sleep_until(at).await;
                        false
                    },
                    async {
                        d.informed().await;
                        true
                    },
                )
                .await
            }
            None => {
                d.informed().await;
                true
            }
        };
    }
}

/// One endpoint's sender thread.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint's config.
    pub config: RemoteWriteConfig,
    /// Its ring cursor key.
    pub key: u64,
    /// Its counters.
    pub stats: Arc<SenderStats>,
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

/// What the self-metrics read: shared on the loop thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// Scrape counters.
    pub scrapes: Rc<ScrapeStats>,
    /// The running endpoints.
    pub endpoints: RefCell<Vec<Endpoint>>,
    /// Targets per job, as discovered.
    pub discovered: RefCell<Vec<(String, usize)>>,
    /// Whether the last reload succeeded.
    pub reload_ok: Cell<bool>,
    /// When the config was last loaded, seconds since the epoch.
    pub reload_time_s: Cell<f64>,
    /// Reloads refused.
    pub reload_failures: Cell<u64>,
    /// Target syncs that found a job over its `target_limit`.
    pub exceeded_target_limit: Cell<u64>,
}

/// How long a stop waits for a receiver that answers nothing at all (no request finishes,
/// acknowledged or not) before it leaves that sender's request in the ring: a request to a
/// receiver that works takes well under a second, even over a slow edge uplink (a 2,000-sample
/// request is about 20 KB compressed).
const STOP_STALL: Duration = Duration::from_secs(5);

/// The ring's periodic sync when no sender runs it (a config with no `remote_write`).
#[derive(Debug)]
struct SyncThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    /// The config in force.
    pub config: Config,
    ring: Rc<RefCell<Ring>>,
    ex: Rc<smol::LocalExecutor<'static>>,
    clock: Rc<Clock>,
    _clock_driver: smol::Task<()>,
    running: HashMap<u64, Running>,
    /// What the self-metrics read.
    pub shared: Rc<Shared>,
    sync_every: Duration,
    sync_thread: Option<SyncThread>,
    /// The targets' HELP/TYPE/UNIT, for the senders that send it.
    metadata: Arc<metadata::Store>,
    /// Discovery per job name, for the jobs that discover targets at run time.
    discoveries: HashMap<String, Discovery>,
    /// Discovery tasks say here that groups changed; see [`Agent::discovery_changes`].
    discovered_tx: smol::channel::Sender<()>,
    discovered_rx: smol::channel::Receiver<()>,
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A target and the scrape config it came from.
type JobTarget = (Target, Rc<ScrapeConfig>);

/// Renders the `/metrics` page into a buffer.
pub type Render = Box<dyn Fn(&mut Vec<u8>)>;

/// One per-endpoint family: name, help, type, and how to read it.
type EndpointFamily = (
    &'static str,
    &'static str,
    Kind,
    fn(&Endpoint, &Ring) -> f64,
);

/// Every target of `config` (static, and discovered as `discoveries` hold them now), with
/// its job. Targets the relabel rules drop are left out; targets Prometheus would refuse are
/// logged and left out.
/// What the jobs want: their targets, each job's discovered count, and the jobs over their
/// `target_limit` (job name → (targets, limit)).
type Wanted = (
    Vec<JobTarget>,
    Vec<(String, usize)>,
    HashMap<String, (u64, u64)>,
);

fn wanted(config: &Config, discoveries: &HashMap<String, Discovery>) -> Wanted {
    let mut all = Vec::new();
    let mut per_job = Vec::new();
    let mut exceeded = HashMap::new();
    for sc in &config.scrape_configs {
        let job = Rc::new(sc.clone());
        let mut groups = sc.static_configs.clone();
        if let Some(d) = discoveries.get(&sc.job_name) {
            groups.extend(d.groups.borrow().iter().cloned());
        }
        // As Prometheus' discovery manager counts them: every target of every group, before
        // relabeling and target_limit.
        let discovered = groups.iter().map(|g| g.targets.len()).sum();
        let (targets, errors) = targets::build(&groups, sc);
        for e in errors {
            warn!("{e}");
        }
        let limit = sc.limits.target_limit;
        if limit > 0 && targets.len() as u64 > limit {
            // As Prometheus' scrape pool: the targets stay, and every scrape of each fails
            // with the error (`up` 0, the last scrape's series stale-marked).
            warn!(
                "job {:?}: {} targets exceed target_limit {limit}; each scrape fails until they fit",
                sc.job_name,
                targets.len()
            );
            exceeded.insert(sc.job_name.clone(), (targets.len() as u64, limit));
        }
        per_job.push((sc.job_name.clone(), discovered));
        all.extend(targets.into_iter().map(|t| (t, Rc::clone(&job))));
    }
    (all, per_job, exceeded)
}

impl Agent {
    /// Starts the agent on `config`: scrape tasks on `ex`, sender threads.
    pub fn start(
        config: Config,
        ring: Ring,
        ex: Rc<smol::LocalExecutor<'static>>,
        sync_every: Duration,
    ) -> Agent {
        let shared = Rc::new(Shared::default());
        shared.reload_ok.set(true);
        shared.reload_time_s.set(now_s());
        let clock = Clock::new();
        let driver = ex.spawn(Rc::clone(&clock).drive());
        let (discovered_tx, discovered_rx) = smol::channel::bounded(1);
        let mut agent = Agent {
            config: config.clone(),
            ring: Rc::new(RefCell::new(ring)),
            ex,
            clock,
            _clock_driver: driver,
            running: HashMap::new(),
            shared,
            sync_every,
            sync_thread: None,
            metadata: Arc::default(),
            discoveries: HashMap::new(),
            discovered_tx,
            discovered_rx,
        };
        // Endpoints first: a new endpoint's reader starts at the head, so it must exist
        // before the first scrape is appended.
        agent.start_senders();
        for sc in &config.scrape_configs {
            if discovers(sc) {
                // file_sd files are read now, so their targets start with the static ones;
                // the kubelets and API servers are asked as soon as the loop runs.
                agent.add_discovery(sc, job_discovery(sc));
            }
        }
        agent.start_targets(&config);
        agent
    }

    /// Ready when a discovery task found new groups: then call [`Agent::rediscover`].
    pub fn discovery_changes(&self) -> smol::channel::Receiver<()> {
        self.discovered_rx.clone()
    }

    /// Publishes `d`'s groups for `sc`'s job and runs it as a task.
    fn add_discovery(&mut self, sc: &ScrapeConfig, mut d: JobDiscovery) {
        let informers = d
            .take_informers()
            .into_iter()
            .map(|i| self.ex.spawn(i.run(Rc::clone(&self.clock))))
            .collect();
        let groups = Rc::new(RefCell::new(d.groups()));
        let task = self.ex.spawn(discover(
            d,
            Rc::clone(&groups),
            self.discovered_tx.clone(),
            Rc::clone(&self.clock),
        ));
        self.discoveries.insert(
            sc.job_name.clone(),
            Discovery {
                file_sd: sc.file_sd_configs.clone(),
                kubelet_sd: sc.kubelet_sd_configs.clone(),
                kubernetes_sd: sc.kubernetes_sd_configs.clone(),
                groups,
                _task: task,
                _informers: informers,
            },
        );
    }

    /// Applies what discovery found: targets added start, removed ones are stopped and
    /// stale-marked, unchanged ones keep running, exactly as at a reload.
    pub async fn rediscover(&mut self) {
        let (targets, per_job, exceeded) = wanted(&self.config, &self.discoveries);
        *self.shared.discovered.borrow_mut() = per_job;
        let (added, removed, restarted) = self.reconcile(targets).await;
        self.force_target_limits(&exceeded);
        if added + removed + restarted > 0 {
            info!("discovery: targets: {added} added, {removed} removed (stale-marked), {restarted} restarted with new settings");
        }
    }

    /// The ring, shared with the scrape tasks.
    pub fn ring(&self) -> &Rc<RefCell<Ring>> {
        &self.ring
    }

    fn spawn(&mut self, target: Target, job: Rc<ScrapeConfig>, scraper: Option<Scraper>) {
        let scraper = match scraper {
            Some(mut s) => {
                s.reconfigure(target.clone(), Rc::clone(&job));
                s
            }
            None => Scraper::new(
                target.clone(),
                Rc::clone(&job),
                Rc::clone(&self.shared.scrapes),
            ),
        };
        let mut scraper = scraper;
        scraper.set_metadata(Some(Arc::clone(&self.metadata)));
        let key = scraper.key();
        let stop = Rc::new(StopSignal::default());
        let task = self.ex.spawn(scrape::run(
            scraper,
            Rc::clone(&self.ring),
            Rc::clone(&self.clock),
            Rc::clone(&stop),
        ));
        self.running.insert(
            key,
            Running {
                stop,
                task,
                job,
                target,
            },
        );
    }

    fn start_targets(&mut self, config: &Config) {
        let (targets, per_job, exceeded) = wanted(config, &self.discoveries);
        *self.shared.discovered.borrow_mut() = per_job;
        for (t, job) in targets {
            if !self.running.contains_key(&t.key()) {
                self.spawn(t, job, None);
            }
        }
        self.force_target_limits(&exceeded);
    }

    /// Tells every running target whether its job is over its `target_limit` (before its
    /// next scrape: no task runs between a spawn and this).
    fn force_target_limits(&self, exceeded: &HashMap<String, (u64, u64)>) {
        let count = &self.shared.exceeded_target_limit;
        count.set(count.get() + exceeded.len() as u64);
        for r in self.running.values() {
            r.stop
                .force_target_limit(exceeded.get(&r.job.job_name).copied());
        }
    }

    /// Applies a new config (already validated). See the module docs.
    pub async fn apply(&mut self, config: Config) {
        // A job whose discovery configs are unchanged keeps its task and what it found (a
        // kubelet or an API server is not asked again); others start anew, and are asked once
        // (a list, for an API server) before the targets are compared, so that a changed job
        // does not lose its targets meanwhile.
        let mut old = std::mem::take(&mut self.discoveries);
        for sc in &config.scrape_configs {
            if !discovers(sc) {
                continue;
            }
            match old.remove(&sc.job_name) {
                Some(d) if d.runs(sc) => {
                    self.discoveries.insert(sc.job_name.clone(), d);
                }
                _ => {
                    let mut d = job_discovery(sc);
                    d.step(&self.clock).await;
                    d.prime(&self.clock).await;
                    self.add_discovery(sc, d);
                }
            }
        }
        drop(old);
        let (targets, per_job, exceeded) = wanted(&config, &self.discoveries);
        *self.shared.discovered.borrow_mut() = per_job;
        let (added, removed, restarted) = self.reconcile(targets).await;
        self.force_target_limits(&exceeded);
        log::debug!("targets: {added} added, {removed} removed (stale-marked), {restarted} restarted with new settings");
        // Where an entry stands in the file is not a setting: a reload that only moves it
        // keeps its sender (and the request it has in flight).
        let at_line_0 = |c: &Config| {
            c.remote_write
                .iter()
                .map(|rw| RemoteWriteConfig {
                    line: 0,
                    ..rw.clone()
                })
                .collect::<Vec<_>>()
        };
        let endpoints_changed = at_line_0(&self.config) != at_line_0(&config)
            || self.config.global.external_labels != config.global.external_labels;
        self.config = config;
        if endpoints_changed {
            self.stop_senders(Instant::now());
            // Threads stopped with a deadline of now return within one request; wait
            // without blocking the loop.
            loop {
                let done = self
                    .shared
                    .endpoints
                    .borrow()
                    .iter()
                    .all(|e| e.thread.as_ref().is_none_or(JoinHandle::is_finished));
                if done {
                    break;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            self.join_senders();
            self.start_senders();
        }
        self.shared.reload_ok.set(true);
        self.shared.reload_time_s.set(now_s());
    }

    /// Brings the running targets to `targets`: unchanged ones keep their task, changed
    /// settings restart a task with its state, removed ones stale-mark their series, new ones
    /// start. Returns (added, removed, restarted).
    async fn reconcile(&mut self, targets: Vec<JobTarget>) -> (usize, usize, usize) {
        let mut keep: HashMap<u64, (Target, Rc<ScrapeConfig>)> = targets
            .into_iter()
            .map(|(t, j)| (t.key(), (t, j)))
            .collect();
        let keys: Vec<u64> = self.running.keys().copied().collect();
        let (mut removed, mut restarted) = (0, 0);
        for key in keys {
            let same = match (self.running.get(&key), keep.get(&key)) {
                (Some(r), Some((t, j))) => *r.job == **j && r.target == *t,
                _ => false,
            };
            if same {
                keep.remove(&key);
                continue;
            }
            let Some(r) = self.running.remove(&key) else {
                continue;
            };
            r.stop.stop();
            let mut scraper = r.task.await;
            match keep.remove(&key) {
                Some((t, j)) => {
                    restarted += 1;
                    self.spawn(t, j, Some(scraper));
                }
                None => {
                    removed += 1;
                    scraper.stale_all(&mut self.ring.borrow_mut());
                }
            }
        }
        let added = keep.len();
        for (_, (t, j)) in keep {
            self.spawn(t, j, None);
        }
        (added, removed, restarted)
    }

    fn start_senders(&mut self) {
        let mut ring = self.ring.borrow_mut();
        let keys: Vec<u64> = self.config.remote_write.iter().map(endpoint_key).collect();
        ring.retain_cursors(&keys);
        let mut endpoints = self.shared.endpoints.borrow_mut();
        endpoints.clear();
        self.metadata.set_wanted(
            self.config
                .remote_write
                .iter()
                .any(|rw| rw.metadata_config.send),
        );
        for (i, rw) in self.config.remote_write.iter().enumerate() {
            let key = keys[i];
            let stats = Arc::new(SenderStats::default());
            let control = Arc::new(Control::default());
            let origin = format!("{}://{}", rw.url.scheme, rw.url.host);
            let thread = ring
                .consumer(key)
                .map_err(|e| e.to_string())
                .and_then(|consumer| {
                    Sender::new(
                        rw,
                        &self.config.global.external_labels,
                        consumer,
                        Arc::clone(&stats),
                        Arc::clone(&control),
                    )
                    .map_err(|e| e.to_string())
                })
                .and_then(|sender| {
                    let sender = sender.with_metadata(Arc::clone(&self.metadata));
                    let sender = if i == 0 {
                        sender.with_sync(ring.syncer(), self.sync_every)
                    } else {
                        sender
                    };
                    sender
                        .spawn(format!("promlet-send-{i}"))
                        .map_err(|e| e.to_string())
                });
            let thread = match thread {
                Ok(t) => Some(t),
                Err(e) => {
                    error!("remote_write {origin}: cannot start its sender: {e}");
                    None
                }
            };
            endpoints.push(Endpoint {
                config: rw.clone(),
                key,
                stats,
                control,
                thread,
            });
        }
        let syncing = endpoints.first().is_some_and(|e| e.thread.is_some());
        drop(endpoints);
        if syncing {
            if let Some(s) = self.sync_thread.take() {
                s.stop.store(true, Ordering::SeqCst);
                s.thread.thread().unpark();
                let _ = s.thread.join();
            }
        } else if self.sync_thread.is_none() {
            // No sender runs the periodic sync: a thread of its own does (msync waits for
            // the disk, which the loop must never do).
            let stop = Arc::new(AtomicBool::new(false));
            let syncer = ring.syncer();
            let every = self.sync_every;
            let flag = Arc::clone(&stop);
            match std::thread::Builder::new()
                .name("promlet-sync".into())
                .spawn(move || syncer.run(every, &flag))
            {
                Ok(thread) => self.sync_thread = Some(SyncThread { stop, thread }),
                Err(e) => error!("cannot start the ring's sync thread: {e}"),
            }
        }
    }

    fn stop_senders(&self, deadline: Instant) {
        for e in self.shared.endpoints.borrow().iter() {
            e.control.stop(deadline);
        }
    }

    fn join_senders(&self) {
        for e in self.shared.endpoints.borrow_mut().iter_mut() {
            if let Some(t) = e.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Waits for the stopping senders until each is done, the flush `deadline` passes, or its
    /// receiver has answered nothing (no request finished, either way) for [`STOP_STALL`]:
    /// a receiver that accepts and never answers would otherwise hold the stop for
    /// `remote_timeout` (30 s by default). A sender left behind is not joined: its request
    /// in flight is in the ring's header, and the next start sends it again
    /// ([`crate::wal::Consumer::unacknowledged`]); the process exits around it.
    fn join_senders_while_answered(&self, deadline: Instant) {
        let answers = |s: &SenderStats| {
            s.sent_batches_total.load(Ordering::Relaxed)
                + s.failed_requests_total.load(Ordering::Relaxed)
        };
        let mut endpoints = self.shared.endpoints.borrow_mut();
        let start = Instant::now();
        let mut seen: Vec<(u64, Instant)> = endpoints
            .iter()
            .map(|e| (answers(&e.stats), start))
            .collect();
        loop {
            let now = Instant::now();
            let mut waiting = false;
            for (e, (n, since)) in endpoints.iter_mut().zip(&mut seen) {
                let Some(thread) = e.thread.as_ref() else {
                    continue;
                };
                if thread.is_finished() {
                    if let Some(t) = e.thread.take() {
                        let _ = t.join();
                    }
                    continue;
                }
                let now_n = answers(&e.stats);
                if now_n != *n {
                    (*n, *since) = (now_n, now);
                }
                if now >= deadline || now.duration_since(*since) >= STOP_STALL {
                    warn!(
                        "remote write {}://{}: no answer for {:.1} s while stopping; what it has not sent stays in the ring for the next start",
                        e.config.url.scheme,
                        e.config.url.host,
                        now.duration_since(*since).as_secs_f64()
                    );
                    e.thread = None;
                    continue;
                }
                waiting = true;
            }
            if !waiting {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops: scrape tasks end now, senders flush until `flush_deadline`, the ring is synced.
    pub fn stop(mut self, flush_deadline: Duration) -> Result<(), crate::wal::WalError> {
        self.discoveries.clear();
        for (_, r) in self.running.drain() {
            drop(r.task);
        }
        let deadline = Instant::now() + flush_deadline;
        self.stop_senders(deadline);
        // The loop is over: blocking here is what stopping means.
        self.join_senders_while_answered(deadline);
        if let Some(s) = self.sync_thread.take() {
            s.stop.store(true, Ordering::SeqCst);
            s.thread.thread().unpark();
            let _ = s.thread.join();
        }
        let result = self.ring.borrow_mut().sync();
        result
    }
}

impl Agent {
    /// The `/metrics` page: Prometheus' names where the meaning is the same, `promlet_*` for
    /// the ring. It reads counters only (atomics, cells), so rendering never waits.
    pub fn metrics_renderer(&self) -> Render {
        let shared = Rc::clone(&self.shared);
        let ring = Rc::clone(&self.ring);
        let scratch = RefCell::new(Vec::new());
        Box::new(move |out| {
            render(out, &shared, &ring.borrow());
            crate::selfmetrics::process(out, &mut scratch.borrow_mut());
        })
    }
}

/// Writes the agent's own series (see [`Agent::metrics_renderer`]).
fn render(out: &mut Vec<u8>, shared: &Shared, ring: &Ring) {
    use crate::selfmetrics::{family, sample, sample_u64};
    // Unlabelled series: name, help, type, value (counters go through f64 as client_golang's
    // do, see selfmetrics::sample_u64).
    let plain = |out: &mut Vec<u8>, series: &[(&str, &str, Kind, f64)]| {
        for (name, help, kind, value) in series {
            family(out, name, help, *kind);
            sample(out, name, &[], *value);
        }
    };
    let (s, rs) = (&shared.scrapes, ring.stats());
    let n = |v: u64| v as f64;
    plain(
        out,
        &[
            (
                "prometheus_config_last_reload_successful",
                "Whether the last configuration reload attempt was successful.",
                Kind::Gauge,
                n(u64::from(shared.reload_ok.get())),
            ),
            (
                "prometheus_config_last_reload_success_timestamp_seconds",
                "Timestamp of the last successful configuration reload.",
                Kind::Gauge,
                shared.reload_time_s.get(),
            ),
            (
                "promlet_config_reload_failures_total",
                "Configuration reloads refused.",
                Kind::Counter,
                n(shared.reload_failures.get()),
            ),
        ],
    );
    family(
        out,
        "prometheus_sd_discovered_targets",
        "Current number of discovered targets.",
        Kind::Gauge,
    );
    for (job, count) in shared.discovered.borrow().iter() {
        sample_u64(
            out,
            "prometheus_sd_discovered_targets",
            &[("config", job), ("name", "scrape")],
            *count as u64,
        );
    }
    plain(
        out,
        &[
            ("promlet_target_scrapes_total", "Scrapes run.", Kind::Counter, n(s.scrapes.get())),
            (
                "promlet_target_scrapes_failed_total",
                "Scrapes that failed.",
                Kind::Counter,
                n(s.failed.get()),
            ),
            (
                "prometheus_target_scrapes_exceeded_sample_limit_total",
                "Total number of scrapes that hit the sample limit and were rejected.",
                Kind::Counter,
                n(s.exceeded_sample_limit.get()),
            ),
            (
                "prometheus_target_scrape_pool_exceeded_target_limit_total",
                "Total number of times scrape pools hit the target limit, during sync or config reload.",
                Kind::Counter,
                n(shared.exceeded_target_limit.get()),
            ),
            (
                "prometheus_target_scrapes_exceeded_body_size_limit_total",
                "Total number of scrapes that hit the body size limit",
                Kind::Counter,
                n(s.exceeded_body_size_limit.get()),
            ),
            (
                "prometheus_target_scrapes_sample_duplicate_timestamp_total",
                "Total number of samples rejected due to duplicate timestamps but different values.",
                Kind::Counter,
                n(s.duplicates.get()),
            ),
            (
                "prometheus_target_scrapes_sample_out_of_order_total",
                "Total number of samples rejected due to not being out of the expected order.",
                Kind::Counter,
                n(s.out_of_order.get()),
            ),
            (
                "promlet_target_scrape_timeouts_total",
                "Scrapes that reached scrape_timeout.",
                Kind::Counter,
                n(s.timeouts.get()),
            ),
            (
                "promlet_samples_appended_total",
                "Samples appended to the ring, report series and stale markers included.",
                Kind::Counter,
                n(s.samples_appended.get()),
            ),
            (
                "promlet_ring_append_failures_total",
                "Scrapes the ring refused to append (a series-set record over half the ring).",
                Kind::Counter,
                n(s.append_failures.get()),
            ),
            (
                "promlet_series_set_changes_total",
                "Series-sets written because a target's series changed.",
                Kind::Counter,
                n(s.set_changes.get()),
            ),
            (
                "prometheus_remote_storage_highest_timestamp_in_seconds",
                "Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.",
                Kind::Gauge,
                s.highest_timestamp_ms.get() as f64 / 1000.0,
            ),
            (
                "promlet_wal_bytes_written_total",
                "Bytes of records appended to the ring.",
                Kind::Counter,
                n(rs.bytes_appended),
            ),
            (
                "promlet_wal_records_total",
                "Records appended to the ring.",
                Kind::Counter,
                n(rs.records_appended),
            ),
            (
                "promlet_wal_overwritten_samples_total",
                "Samples the ring's head overwrote before an endpoint had sent them.",
                Kind::Counter,
                n(rs.samples_overwritten),
            ),
            (
                "promlet_wal_damaged_skips_total",
                "Times damaged ring bytes were skipped.",
                Kind::Counter,
                n(rs.damaged_skips),
            ),
            ("promlet_wal_syncs_total", "Ring header writes (msync).", Kind::Counter, n(rs.syncs)),
            (
                "promlet_wal_sync_failures_total",
                "Ring syncs (msync) that failed.",
                Kind::Counter,
                n(rs.sync_failures),
            ),
            ("promlet_wal_capacity_bytes", "Size of the ring.", Kind::Gauge, n(ring.capacity())),
            (
                "promlet_wal_used_bytes",
                "Bytes the ring holds.",
                Kind::Gauge,
                n(ring.head() - ring.tail()),
            ),
        ],
    );
    let problems = "promlet_wal_file_problems_total";
    family(out, problems, "Times the ring file was found truncated (its length restored, its records lost) or removed under promlet.", Kind::Counter);
    sample_u64(out, problems, &[("kind", "truncated")], rs.file_truncations);
    sample_u64(out, problems, &[("kind", "removed")], rs.file_removals);
    let endpoints = shared.endpoints.borrow();
    let per_endpoint: [EndpointFamily; 12] = [
        (
            "prometheus_remote_storage_samples_total",
            "Total number of samples sent to remote storage.",
            Kind::Counter,
            |e, _| e.stats.samples_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_samples_failed_total",
            "Total number of samples which failed on send to remote storage, non-recoverable errors.",
            Kind::Counter,
            |e, _| e.stats.samples_failed_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_samples_retried_total",
            "Total number of samples which failed on send to remote storage but were retried because the send error was recoverable.",
            Kind::Counter,
            |e, _| e.stats.samples_retried_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_metadata_total",
            "Total number of metadata entries sent to remote storage.",
            Kind::Counter,
            |e, _| e.stats.metadata_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_metadata_failed_total",
            "Total number of metadata entries which failed on send to remote storage, non-recoverable errors.",
            Kind::Counter,
            |e, _| e.stats.metadata_failed_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_metadata_bytes_total",
            "The total number of bytes of metadata sent by the queue after compression.",
            Kind::Counter,
            |e, _| e.stats.metadata_bytes_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_samples_dropped_total",
            "Total number of samples which were dropped after being read from the WAL before being sent via remote write, either via relabelling or unintentionally because of an unknown reference ID.",
            Kind::Counter,
            |e, _| e.stats.samples_dropped_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_samples_pending",
            "The number of samples pending in the queues shards to be sent to the remote storage.",
            Kind::Gauge,
            |e, _| e.stats.samples_pending.load(Ordering::Relaxed) as f64,
        ),
        (
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            "Timestamp from a WAL sample, the highest timestamp successfully sent by this queue, in seconds since epoch.",
            Kind::Gauge,
            |e, _| e.stats.highest_sent_timestamp_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ),
        (
            "prometheus_remote_storage_bytes_total",
            "The total number of bytes of data (not metadata) sent by the queue after compression.",
            Kind::Counter,
            |e, _| e.stats.sent_bytes_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "promlet_wal_endpoint_overwritten_samples_total",
            "Samples overwritten in the ring before this endpoint read them.",
            Kind::Counter,
            |e, r| r.endpoint(e.key).map_or(0, |s| s.overwritten) as f64,
        ),
        (
            "promlet_wal_endpoint_undecodable_samples_total",
            "Samples this endpoint could not decode (their series-set was overwritten).",
            Kind::Counter,
            |e, r| r.endpoint(e.key).map_or(0, |s| s.undecodable) as f64,
        ),
    ];
    for (name, help, kind, value) in per_endpoint {
        family(out, name, help, kind);
        for e in endpoints.iter() {
            let remote_name = if e.config.name.is_empty() {
                format!("{:016x}", e.key)
            } else {
                e.config.name.clone()
            };
            sample(
                out,
                name,
                &[("remote_name", &remote_name), ("url", &e.config.url.host)],
                value(e, ring),
            );
        }
    }
}
