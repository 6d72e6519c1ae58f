//! The scrape loop (DESIGN.md steps 1–4): one task per target on the smol executor.
//!
//! A [`Scraper`] is one target's whole state, kept across scrapes: its HTTP client, parser
//! window, label arena, relabel scratch, its place in the ring ([`Chain`]) and the hashes of
//! the series in its current series-set (8 bytes a series: the staleness state). A scrape
//! streams the body through the parser; each series is labelled, relabeled, checked against
//! the limits and hashed, and its value kept in a reused vector. A scrape whose series are the
//! set's, in the same order, becomes one samples record. When the set changes, the new set is
//! written first, from the ring's copy of the old set up to the first difference and the
//! labels kept from there on ([`series::SeriesList`]); series that vanished get a StaleNaN in
//! a small set of their own, their labels read back from the ring.
//!
//! As Prometheus 2.42's `scrape.go`:
//! - a series gets the scrape's start time, or its explicit timestamp under
//!   `honor_timestamps` (out-of-order and staleness rules: see [`Scraper`]);
//! - a failed scrape (HTTP error, timeout, body too large, parse error, a limit) appends no
//!   scraped sample and stale-marks every series of the last good scrape once;
//! - the five report series `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling`, `scrape_series_added` carry the target's labels
//!   and Prometheus' values in every case: counts are 0 when the HTTP side failed, and what was
//!   parsed up to the error when the body was refused;
//! - a duplicate series in one scrape keeps its first sample;
//! - a target removed on reload stale-marks all its series, report series included. On stop
//!   nothing is stale-marked (Prometheus does not either: the series may resume);
//! - `scrape_series_added` counts series the last good scrape did not have: like Prometheus'
//!   scrape cache, that memory outlives failed scrapes.
//!
//! Deliberate differences from 2.42 (`tests/agent_differential.rs` asserts each shape):
//! - a scrape refused in its body (parse error, a limit) stale-marks every series of the last
//!   good scrape, as the staleness docs say; 2.42 skips those parsed before the error (they
//!   count as seen in its cache), so they linger for the 5-minute lookback;
//! - a series refused by `sample_limit` that never reached storage gets no stale marker
//!   later; 2.42 writes one (prometheus/prometheus#16427);
//! - a reload that changes a kept target's job keeps its staleness state (its old series are
//!   stale-marked if they vanish, `scrape_series_added` counts only new ones); 2.42 starts
//!   that target with an empty cache when, for instance, its `static_configs` changed;
//! - a sample whose explicit timestamp is older than promlet's start is sent like any other;
//!   2.42's remote write skips it (its WAL watcher sends only samples newer than its start).
//!   And a stamp equal to the scrape's own millisecond counts as no stamp (for staleness).
//!
//! Scheduling: each target's first scrape comes within a second of start, spread by the
//! target's hash (Prometheus waits up to a whole interval; a new node should show up at once),
//! then at a stable offset within the interval, `hash mod interval` in wall-clock time, so a
//! restart keeps the phase and targets of one job do not scrape together.

pub mod clock;
pub mod http;
pub mod series;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};

use crate::auth::{Credentials, CredentialsError};
use crate::config::ScrapeConfig;
use crate::labels::{HonorLabels, LabelSet};
use crate::limits::{check_labels, LimitError, SampleCounter};
use crate::metadata;
use crate::parse::float::STALE_NAN_BITS;
use crate::parse::{Entry, Format, LabelSpan, ParseError, Parser, Step, Window};
use crate::relabel::{process_set, Scratch};
use crate::targets::Target;
use crate::wal::codec::ABSENT;
use crate::wal::{Chain, Ring, SetBlocks, WalError};
use clock::Clock;
use http::{Client, HttpError};
use series::SeriesList;

/// The report series, in the order they close every series-set: after the scrape's samples,
/// as Prometheus appends them, so a receiver that holds a scrape's `up` holds all of it (the
/// sender never reorders).
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];
const REPORTS: usize = REPORT_SERIES.len();

/// The window starts at 16 KiB and may grow to this for one entry (a line longer than 1 MiB
/// fails the scrape rather than growing memory without bound).
const WINDOW_MAX: usize = 1 << 20;
const WINDOW_START: usize = 16 << 10;

use crate::USER_AGENT;

/// Why a scrape failed. The target is down with this reason until a scrape succeeds.
#[derive(Debug)]
pub enum ScrapeError {
    /// The HTTP exchange failed.
    Http(HttpError),
    /// `scrape_timeout` passed.
    Timeout(Duration),
    /// The body did not parse.
    Parse(ParseError),
    /// A line was longer than the window may grow.
    LineTooLong(usize),
    /// A per-scrape limit was hit.
    Limit(LimitError),
    /// A series has no metric name after relabeling.
    NoName,
    /// A series has a label name twice.
    DuplicateLabel(String),
    /// The credentials file could not be read.
    Credentials(CredentialsError),
    /// The job has more targets than its `target_limit` (targets, limit): each of them fails
    /// without being asked, as Prometheus' scrape pool forces the error on its loops.
    TargetLimit(u64, u64),
}

impl fmt::Display for ScrapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScrapeError::Http(e) => e.fmt(f),
            ScrapeError::Timeout(d) => write!(
                f,
                "context deadline exceeded (scrape_timeout {})",
                crate::config::units::format_duration(*d)
            ),
            ScrapeError::Parse(e) => e.fmt(f),
            ScrapeError::LineTooLong(max) => {
                write!(f, "an entry is longer than {max} bytes")
            }
            ScrapeError::Limit(e) => e.fmt(f),
            ScrapeError::NoName => f.write_str("__name__ label is missing"),
            ScrapeError::DuplicateLabel(name) => write!(f, "label name {name:?} is not unique"),
            ScrapeError::Credentials(e) => e.fmt(f),
            ScrapeError::TargetLimit(n, limit) => write!(
                f,
                "target_limit exceeded (number of targets: {n}, limit: {limit})"
            ),
        }
    }
}

impl std::error::Error for ScrapeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScrapeError::Http(e) => Some(e),
            ScrapeError::Parse(e) => Some(e),
            ScrapeError::Limit(e) => Some(e),
            ScrapeError::Credentials(e) => Some(e),
            _ => None,
        }
    }
}

impl ScrapeError {
    /// Whether the body was being refused (Prometheus reports what was parsed up to there)
    /// rather than not fetched (it reports zeros).
    fn in_body(&self) -> bool {
        matches!(
            self,
            ScrapeError::Parse(_)
                | ScrapeError::LineTooLong(_)
                | ScrapeError::Limit(_)
                | ScrapeError::NoName
                | ScrapeError::DuplicateLabel(_)
        )
    }
}

/// What every scrape of the loop adds to, for the self-metrics (loop thread only).
#[derive(Debug, Default)]
pub struct ScrapeStats {
    /// Scrapes run.
    pub scrapes: Cell<u64>,
    /// Scrapes that failed.
    pub failed: Cell<u64>,
    /// Scrapes that hit `sample_limit` (`prometheus_target_scrapes_exceeded_sample_limit_total`).
    pub exceeded_sample_limit: Cell<u64>,
    /// Scrapes that hit `body_size_limit` (`prometheus_target_scrapes_exceeded_body_size_limit_total`).
    pub exceeded_body_size_limit: Cell<u64>,
    /// Scrapes that timed out.
    pub timeouts: Cell<u64>,
    /// Samples dropped as duplicates (`prometheus_target_scrapes_sample_duplicate_timestamp_total`).
    pub duplicates: Cell<u64>,
    /// Samples whose explicit timestamp was older than their series' last one
    /// (`prometheus_target_scrapes_sample_out_of_order_total`).
    pub out_of_order: Cell<u64>,
    /// Samples appended to the ring, report series and stale markers included.
    pub samples_appended: Cell<u64>,
    /// Samples lost because the ring refused an append.
    pub append_failures: Cell<u64>,
    /// The newest timestamp appended, ms (`prometheus_remote_storage_highest_timestamp_in_seconds`).
    pub highest_timestamp_ms: Cell<i64>,
    /// Series-sets written because a target's set changed.
    pub set_changes: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

/// The counts of one scrape, as the report series give them.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    scraped: u64,
    post_relabel: u64,
    added: u64,
}

/// A series without an explicit timestamp in [`Scraper`]'s timestamp vectors.
const NOT_EXPLICIT: i64 = i64::MIN + 1;

/// One target's state across scrapes.
///
/// Explicit timestamps (`honor_timestamps: true`, the default) are kept as 2.42 keeps them:
/// such a sample is appended at its own time, in a stamped samples record; one older than
/// its series' last sample is out of order, not sent and counted; and a series that carried
/// one gets no stale marker when it vanishes, when a scrape fails or when the target goes
/// (Prometheus tracks staleness only for series without). A target whose samples carry no
/// timestamp keeps no timestamp state at all.
pub struct Scraper {
    /// The target.
    pub target: Target,
    /// The job's targets and `target_limit` while it is exceeded: scrapes fail with it.
    pub forced: Option<(u64, u64)>,
    job: Rc<ScrapeConfig>,
    key: u64,
    client: Client,
    credentials: Credentials,
    window: Window,
    parser: Parser,
    set: LabelSet,
    scratch: Scratch,
    /// The report series' labels (the target's labels plus each name).
    reports: SeriesList,
    chain: Chain,
    /// The hashes of the set in the ring, report series first.
    set_hashes: Vec<u64>,
    /// The set's scraped series were all stale-marked (the last scrape failed).
    all_stale: bool,
    /// This scrape: hashes and values of the series kept, report series first.
    hashes: Vec<u64>,
    values: Vec<f64>,
    /// This scrape's explicit timestamps ([`NOT_EXPLICIT`] for none), parallel to `hashes`;
    /// empty while no sample of the scrape carried one.
    stamps: Vec<i64>,
    /// The timestamp column of the record being appended (reused).
    column: Vec<i64>,
    /// The last explicit timestamp appended per series of the set (parallel to
    /// `set_hashes`, [`NOT_EXPLICIT`] for a series without), empty if none had one.
    set_stamps: Vec<i64>,
    /// The time of the last scrape appended: the last timestamp of series without one.
    last_ts_ms: i64,
    /// This scrape's time, while it runs.
    ts_ms: i64,
    /// Index of the first series that differs from the set, once one did.
    differs_at: Option<usize>,
    /// Per series line of the last good scrape, a hash of its bytes up to its value
    /// ([`line_hash`]) with the low bit set if relabeling kept it: a line whose bytes are
    /// the same as last time, with every line before it the same, is the same series with
    /// the same outcome, so its label set is not built again (see [`Scraper::fetch`]).
    lines: Vec<u64>,
    /// The format `lines` were read in; `None` when they do not describe the last good scrape.
    lines_format: Option<Format>,
    fresh: SetBlocks,
    /// Scratch: this scrape's hashes, sorted (when the set changes).
    sorted: Vec<u64>,
    /// The series of the last good scrape, sorted: what `scrape_series_added` counts against.
    known: Vec<u64>,
    next_set: SetBlocks,
    /// The report series, compressed as a set's last blocks.
    report_blocks: SetBlocks,
    /// The target's health as last logged, and how many failures since.
    up: Option<bool>,
    failures: u64,
    /// Why the last scrape failed ("" after a good one), as Prometheus' `lastError`.
    last_error: String,
    /// HELP/TYPE/UNIT collection, when some endpoint sends metadata.
    metadata: Option<(Arc<metadata::Store>, metadata::Collector)>,
    stats: Rc<ScrapeStats>,
}

impl fmt::Debug for Scraper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scraper")
            .field("target", &self.target)
            .field("series", &self.set_hashes.len())
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Builds a scraped series' label set in `set` as Prometheus 2.42 does (target labels
/// merged per `honor_labels`, empty labels removed, `metric_relabel_configs`, the label
/// checks and limits): its hash, or `None` if relabeling dropped it.
fn build_series(
    set: &mut LabelSet,
    scratch: &mut Scratch,
    target: &[(String, String)],
    job: &ScrapeConfig,
    (data, name, labels): (&[u8], &[u8], &[LabelSpan]),
) -> Result<Option<u64>, ScrapeError> {
    let honor = if job.honor_labels {
        HonorLabels::Yes
    } else {
        HonorLabels::No
    };
    set.fill_series(data, name, labels);
    set.merge_target(target, honor);
    set.remove_empty();
    if !process_set(set, &job.metric_relabel_configs, scratch) || set.is_empty() {
        return Ok(None);
    }
    if set.get(b"__name__").is_none() {
        return Err(ScrapeError::NoName);
    }
    check_labels(set, &job.limits).map_err(ScrapeError::Limit)?;
    if let Some(dup) = set.duplicate_name() {
        return Err(ScrapeError::DuplicateLabel(
            String::from_utf8_lossy(dup).into_owned(),
        ));
    }
    Ok(Some(set.hash()))
}

/// Where a series line's bytes before its value end: after its name or its last label value.
fn series_end(data: &[u8], name: &[u8], labels: &[LabelSpan]) -> usize {
    let name_end = (name.as_ptr() as usize + name.len()).saturating_sub(data.as_ptr() as usize);
    labels
        .iter()
        .map(|l| usize::try_from(l.value_end).unwrap_or(usize::MAX))
        .fold(name_end, usize::max)
        .min(data.len())
}

/// A fast hash of a line's series bytes, 16 bytes a step (a folded 64×64→128-bit multiply,
/// as wyhash mixes). Kept in memory only, never persisted: it just has to tell two lines
/// apart, with the chance of two different lines agreeing about 2^-63.
fn line_hash(b: &[u8]) -> u64 {
    const S0: u64 = 0xa076_1d64_78bd_642f;
    const S1: u64 = 0xe703_7ed1_a0b4_28db;
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        #[allow(clippy::cast_possible_truncation)]
        let low = p as u64;
        low ^ u64::try_from(p >> 64).unwrap_or(0)
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let mut h = S0 ^ (b.len() as u64);
    let mut chunks = b.chunks_exact(16);
    for c in &mut chunks {
        h = fold(word(&c[..8]) ^ S1 ^ h, word(&c[8..]) ^ S0);
    }
    let rest = chunks.remainder();
    let (a, z) = rest.split_at(rest.len().min(8));
    fold(word(a) ^ S1 ^ h, word(z) ^ S0 ^ (b.len() as u64))
}

/// Sets `lines[i]`, the next line of the scrape (pushing it past the end).
fn put_line(lines: &mut Vec<u64>, i: usize, v: u64) {
    match lines.get_mut(i) {
        Some(l) => *l = v,
        None => lines.push(v),
    }
}

impl Scraper {
    /// The state of a new target (allocates its buffers once).
    pub fn new(target: Target, job: Rc<ScrapeConfig>, stats: Rc<ScrapeStats>) -> Scraper {
        let mut s = Scraper {
            forced: None,
            key: target.key(),
            client: Client::new(&target, &job.http),
            credentials: Credentials::default(),
            target,
            job,
            window: Window::new(WINDOW_START, WINDOW_MAX),
            parser: Parser::new(Format::Text),
            set: LabelSet::new(),
            scratch: Scratch::default(),
            reports: SeriesList::default(),
            chain: Chain::default(),
            set_hashes: Vec::new(),
            all_stale: false,
            hashes: Vec::new(),
            values: Vec::new(),
            stamps: Vec::new(),
            column: Vec::new(),
            set_stamps: Vec::new(),
            last_ts_ms: i64::MIN,
            ts_ms: 0,
            differs_at: None,
            lines: Vec::new(),
            lines_format: None,
            fresh: SetBlocks::default(),
            sorted: Vec::new(),
            known: Vec::new(),
            next_set: SetBlocks::default(),
            report_blocks: SetBlocks::default(),
            up: None,
            failures: 0,
            last_error: String::new(),
            metadata: None,
            stats,
        };
        s.build_reports();
        s
    }

    /// Takes a new config for the same target (a reload that changed its job's settings),
    /// keeping the staleness state.
    pub fn reconfigure(&mut self, target: Target, job: Rc<ScrapeConfig>) {
        if target.address != self.target.address
            || target.scheme != self.target.scheme
            || job.http != self.job.http
        {
            self.client = Client::new(&target, &job.http);
        }
        self.target = target;
        self.job = job;
        // Target labels or rules may have changed: every line is built afresh once.
        self.lines_format = None;
        self.build_reports();
    }

    /// Collects the target's metadata into `store` from the next scrape on (`None`: no
    /// endpoint sends metadata).
    pub fn set_metadata(&mut self, store: Option<Arc<metadata::Store>>) {
        match (store, &mut self.metadata) {
            (Some(s), Some((held, _))) if Arc::ptr_eq(&s, held) => {}
            (Some(s), _) => self.metadata = Some((s, metadata::Collector::default())),
            (None, _) => {
                if let Some((s, _)) = self.metadata.take() {
                    s.remove(self.key);
                }
            }
        }
    }

    fn build_reports(&mut self) {
        self.reports.clear();
        for name in REPORT_SERIES {
            self.set.clear();
            self.set.push(b"__name__", name.as_bytes());
            for (k, v) in &self.target.labels {
                self.set.push(k.as_bytes(), v.as_bytes());
            }
            self.set.sort();
            self.reports.push(self.set.iter());
        }
        self.report_blocks.clear();
        for i in 0..self.reports.len() {
            self.report_blocks.push(self.reports.get(i));
        }
        self.report_blocks.finish();
    }

    /// The target's key (labels and URL).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The hashes of the series the target had at its last scrape (report series first).
    pub fn series(&self) -> usize {
        self.set_hashes.len()
    }

    /// Whether the last scrape succeeded (`None` before the first).
    pub fn health(&self) -> Option<bool> {
        self.up
    }

    /// Why the last scrape failed; "" after a good one (Prometheus' `lastError`).
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    /// Fetches and parses one scrape, keeping its series in `hashes`/`values`; the counts
    /// so far travel with the error.
    async fn fetch(&mut self, counts: &mut Counts) -> Result<Format, ScrapeError> {
        let req =
            self.client
                .start_request(&self.target.path_and_query, self.target.timeout, USER_AGENT);
        let auth = self
            .credentials
            .authorization(&self.job.http.auth)
            .map_err(ScrapeError::Credentials)?;
        if let Some(value) = auth {
            req.extend_from_slice(b"Authorization: ");
            req.extend_from_slice(value.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        self.client.send().await.map_err(ScrapeError::Http)?;
        let format = Format::from_content_type(Some(self.client.content_type()));
        self.parser.reset(format);
        let openmetrics = matches!(format, Format::OpenMetrics);
        let mut meta = match &mut self.metadata {
            Some((store, c)) if store.wanted() => {
                c.begin();
                Some(c)
            }
            Some((_, c)) => {
                c.reset();
                None
            }
            None => None,
        };
        self.window.clear();
        let limits = self.job.limits;
        let mut samples = SampleCounter::new(&limits);
        // The lines of the last good scrape are known while this one's are the same; they
        // are rewritten as this scrape goes, and describe it only once it is committed.
        let mut same_lines = self.lines_format.take() == Some(format);
        let expected: &[u64] = if self.all_stale || self.set_hashes.len() < REPORTS {
            &[]
        } else {
            &self.set_hashes[..self.set_hashes.len() - REPORTS]
        };
        loop {
            match self.parser.next(self.window.data(), self.window.eof()) {
                Err(e) => {
                    self.client.disconnect();
                    return Err(ScrapeError::Parse(e));
                }
                Ok(Step::NeedMore) => {
                    let space = match self.window.space() {
                        Ok(s) => s,
                        Err(max) => {
                            self.client.disconnect();
                            return Err(ScrapeError::LineTooLong(max));
                        }
                    };
                    self.client
                        .fill(space, limits.body_size_limit)
                        .await
                        .map(|n| self.window.filled(n))
                        .map_err(ScrapeError::Http)?;
                }
                Ok(Step::End(_)) => break,
                Ok(Step::Entry(entry, used)) => {
                    if let Some(c) = meta.as_mut() {
                        match &entry {
                            Entry::Help { name, text } => c.help(name, text, openmetrics),
                            Entry::Type { name, kind } => c.kind(name, *kind),
                            Entry::Unit { name, unit } => c.unit(name, unit),
                            _ => {}
                        }
                    }
                    if let Entry::Series {
                        data,
                        name,
                        labels,
                        value,
                        timestamp_ms,
                    } = entry
                    {
                        let line = usize::try_from(counts.scraped).unwrap_or(usize::MAX);
                        counts.scraped += 1;
                        let bytes = line_hash(&data[..series_end(data, name, labels)]) & !1;
                        let known = match self.lines.get(line) {
                            Some(&l) if same_lines && l & !1 == bytes => {
                                if l & 1 == 0 {
                                    // Dropped by relabeling last time: dropped again.
                                    self.window.consume(used);
                                    continue;
                                }
                                expected.get(self.hashes.len()).copied()
                            }
                            _ => None,
                        };
                        let hash = match known {
                            Some(hash) => hash,
                            None => {
                                same_lines = false;
                                match build_series(
                                    &mut self.set,
                                    &mut self.scratch,
                                    &self.target.labels,
                                    &self.job,
                                    (data, name, labels),
                                )? {
                                    Some(hash) => {
                                        put_line(&mut self.lines, line, bytes | 1);
                                        hash
                                    }
                                    None => {
                                        put_line(&mut self.lines, line, bytes);
                                        self.window.consume(used);
                                        continue;
                                    }
                                }
                            }
                        };
                        samples.add(value);
                        counts.post_relabel += 1;
                        let i = self.hashes.len();
                        if self.differs_at.is_none() && expected.get(i) != Some(&hash) {
                            self.differs_at = Some(i);
                        }
                        if self.differs_at.is_some() {
                            // A known line matches `expected` and comes before any miss,
                            // so the set holds this line's labels.
                            debug_assert!(known.is_none());
                            self.fresh.push(self.set.iter());
                        }
                        match timestamp_ms.filter(|_| self.job.honor_timestamps) {
                            Some(t) => {
                                if self.stamps.is_empty() {
                                    self.stamps.resize(self.hashes.len(), NOT_EXPLICIT);
                                }
                                // A stamp equal to the scrape's own time reads as none.
                                self.stamps
                                    .push(if t == self.ts_ms { NOT_EXPLICIT } else { t });
                            }
                            None if !self.stamps.is_empty() => self.stamps.push(NOT_EXPLICIT),
                            None => {}
                        }
                        self.hashes.push(hash);
                        self.values.push(value);
                    }
                    self.window.consume(used);
                }
            }
        }
        // Over sample_limit, scrape_samples_post_metric_relabeling still counts every sample
        // relabeling kept (scrape.go: "increment added even if there's an error").
        samples.finish().map_err(ScrapeError::Limit)?;
        if self.differs_at.is_none() && self.hashes.len() + REPORTS != self.set_hashes.len() {
            self.differs_at = Some(self.hashes.len());
        }
        self.lines
            .truncate(usize::try_from(counts.scraped).unwrap_or(usize::MAX));
        Ok(format)
    }

    /// Runs one scrape at `ts_ms` and appends its result to the ring.
    pub async fn scrape(&mut self, ring: &RefCell<Ring>, clock: &Rc<Clock>, ts_ms: i64) {
        let started = Instant::now();
        self.hashes.clear();
        self.values.clear();
        self.stamps.clear();
        self.fresh.clear();
        self.differs_at = None;
        self.ts_ms = ts_ms;
        let mut counts = Counts::default();
        let timeout = self.target.timeout;
        let result = match self.forced {
            // Not asked at all: the failure stale-marks what the last scrape had.
            Some((n, limit)) => Err(ScrapeError::TargetLimit(n, limit)),
            None => {
                smol::future::or(self.fetch(&mut counts), async {
                    clock.sleep(timeout).await;
                    Err(ScrapeError::Timeout(timeout))
                })
                .await
            }
        };
        let duration = started.elapsed();
        let timed_out = matches!(result, Err(ScrapeError::Timeout(_)));
        // A deadline that passed during a DNS lookup is that lookup's failure, as Go's
        // resolver reports a lookup cut short by its context (`i/o timeout`).
        let result = match self.client.abandoned_lookup() {
            Some(e) if timed_out => Err(ScrapeError::Http(e)),
            _ => result,
        };
        let stats = Rc::clone(&self.stats);
        bump(&stats.scrapes, 1);
        if timed_out {
            bump(&stats.timeouts, 1);
        }
        if let Err(e) = &result {
            self.client.disconnect();
            bump(&stats.failed, 1);
            match e {
                ScrapeError::Http(HttpError::BodySize(_)) => {
                    bump(&stats.exceeded_body_size_limit, 1);
                }
                ScrapeError::Limit(LimitError::Samples { .. }) => {
                    bump(&stats.exceeded_sample_limit, 1);
                }
                _ => {}
            }
            if !e.in_body() {
                counts = Counts::default();
            }
        }
        let mut ring = ring.borrow_mut();
        let ok = result.is_ok();
        // This scrape's kept lines, in order, before duplicates are dropped.
        let kept_lines = self.hashes.len();
        if let (true, Some((store, c))) = (ok, &mut self.metadata) {
            if store.wanted() {
                if let Some(blob) = c.finish() {
                    store.publish(self.key, blob);
                }
            }
        }
        let appended = if ok {
            self.commit_success(&mut ring, ts_ms, &mut counts, duration)
        } else {
            self.commit_failure(&mut ring, ts_ms, counts, duration)
        };
        match appended {
            Ok(n) => {
                // The lines describe the set now in the ring if it lists their kept series
                // in order (duplicates dropped from it would shift the order).
                if let Ok(format) = &result {
                    if !self.all_stale && self.set_hashes.len() == kept_lines + REPORTS {
                        self.lines_format = Some(*format);
                    }
                }
                bump(&stats.samples_appended, n);
                if ts_ms > stats.highest_timestamp_ms.get() {
                    stats.highest_timestamp_ms.set(ts_ms);
                }
            }
            Err(e) => {
                bump(&stats.append_failures, 1);
                warn!("target {}: ring append failed: {e}", self.target.url());
                // Start over with a fresh set at the next scrape.
                self.chain = Chain::default();
                self.set_hashes.clear();
                self.set_stamps.clear();
            }
        }
        self.log_health(result.err());
    }

    fn log_health(&mut self, error: Option<ScrapeError>) {
        use std::fmt::Write;
        self.last_error.clear();
        if let Some(e) = &error {
            // The buffer is kept: a target that stays down does not allocate for it.
            let _ = write!(self.last_error, "{e}");
        }
        match (error, self.up) {
            (None, was) => {
                debug!("target {} scraped", self.target.url());
                if was == Some(false) {
                    info!(
                        "target {} is up again after {} failed scrapes",
                        self.target.url(),
                        self.failures
                    );
                }
                self.up = Some(true);
                self.failures = 0;
            }
            (Some(e), Some(false)) => {
                self.failures += 1;
                debug!("target {} still down: {e}", self.target.url());
            }
            (Some(e), _) => {
                self.failures = 1;
                self.up = Some(false);
                warn!("target {} is down: {e}", self.target.url());
            }
        }
    }

    fn report_values(&mut self, up: bool, duration: Duration, counts: Counts) {
        let v = [
            if up { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            counts.scraped as f64,
            counts.post_relabel as f64,
            counts.added as f64,
        ];
        self.values.extend_from_slice(&v);
    }

    /// Appends the report series' hashes to `hashes` (after the scrape's).
    fn report_hashes(&mut self) {
        for i in 0..REPORTS {
            self.set.clear();
            for (name, value) in self.reports.get(i) {
                self.set.push(name, value);
            }
            self.hashes.push(self.set.hash());
        }
    }

    /// Appends a good scrape: one samples record, or a new set (and stale markers for the
    /// series that vanished) when the series changed. Returns the samples appended.
    fn commit_success(
        &mut self,
        ring: &mut Ring,
        ts_ms: i64,
        counts: &mut Counts,
        duration: Duration,
    ) -> Result<u64, WalError> {
        self.column.clear();
        let same =
            self.differs_at.is_none() && !self.all_stale && self.chain.series_set().is_some();
        if same {
            self.report_values(true, duration, *counts);
            self.last_ts_ms = ts_ms;
            if self.stamps.is_empty() {
                self.set_stamps.clear();
                ring.append_samples(&mut self.chain, ts_ms, &self.values)?;
                return Ok(self.values.len() as u64);
            }
            let late = self.build_column(ts_ms, None);
            ring.append_stamped(&mut self.chain, ts_ms, &self.values, &self.column)?;
            return Ok(self.values.len() as u64 - late);
        }
        // The series before the first difference are the old set's: read their labels back.
        let differs_at = self.differs_at.unwrap_or(self.hashes.len());
        self.next_set.clear();
        let old_live = if self.all_stale || self.set_hashes.len() < REPORTS {
            &[][..]
        } else {
            &self.set_hashes[..self.set_hashes.len() - REPORTS]
        };
        // Vanished series: in the old set, not in this scrape.
        self.sorted.clear();
        self.sorted.extend_from_slice(&self.hashes);
        self.sorted.sort_unstable();
        let mut stale = SeriesList::default();
        let mut kept_old = 0usize;
        if let Some(old_set) = self.chain.series_set() {
            if differs_at > 0 || !old_live.is_empty() {
                match ring.series_set(old_set) {
                    Some((_, view)) => {
                        for (i, h) in old_live.iter().enumerate() {
                            let vanished = i >= differs_at
                                && self.sorted.binary_search(h).is_err()
                                && self.set_stamps.get(i).is_none_or(|&t| t == NOT_EXPLICIT);
                            if i >= differs_at && !vanished {
                                continue;
                            }
                            view.with_labels(i, |labels| {
                                let Some(labels) = labels else {
                                    return;
                                };
                                if i < differs_at {
                                    self.next_set.push(labels);
                                    kept_old += 1;
                                } else {
                                    stale.push(labels);
                                }
                            });
                        }
                    }
                    None => warn!(
                        "target {}: its previous series-set is gone from the ring; \
                         vanished series are not stale-marked",
                        self.target.url()
                    ),
                }
            }
        }
        if kept_old < differs_at {
            // The old set could not be read: nothing to build the unchanged part from. Drop
            // this scrape's samples and write a full set next time.
            self.set_hashes.clear();
            self.set_stamps.clear();
            self.chain = Chain::default();
            return Err(WalError::SetLost);
        }
        // Series added: not seen by the last good scrape. Like Prometheus' scrape cache, that
        // memory outlives failed scrapes: a target back after an outage adds nothing.
        counts.added = self
            .hashes
            .iter()
            .filter(|h| self.known.binary_search(h).is_err())
            .count() as u64;
        // Duplicates within the scrape keep their first sample (`sorted` still holds this
        // scrape's hashes).
        let fresh_start = differs_at;
        let mut dups = 0;
        let has_dups = self.sorted.windows(2).any(|w| w[0] == w[1]);
        if has_dups {
            let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
            let mut keep = vec![true; self.hashes.len()];
            for (i, h) in self.hashes.iter().enumerate() {
                if !seen.insert(*h) {
                    keep[i] = false;
                    dups += 1;
                }
            }
            let mut j = 0;
            self.hashes.retain(|_| {
                j += 1;
                keep[j - 1]
            });
            j = 0;
            self.values.retain(|_| {
                j += 1;
                keep[j - 1]
            });
            if !self.stamps.is_empty() {
                j = 0;
                self.stamps.retain(|_| {
                    j += 1;
                    keep[j - 1]
                });
            }
            self.fresh.finish();
            let mut deduped = SetBlocks::default();
            let read = self
                .fresh
                .copy_into(&mut deduped, |i| keep[fresh_start + i]);
            debug_assert!(read, "the scrape's own blocks read back");
            deduped.finish();
            self.fresh = deduped;
            counts.post_relabel -= dups;
            bump(&self.stats.duplicates, dups);
        }
        self.fresh.finish();
        self.next_set.finish();
        // Each series' last timestamp in the old set, by hash, for the out-of-order check.
        let late = if self.stamps.is_empty() {
            self.set_stamps.clear();
            0
        } else {
            let mut old: Vec<(u64, i64)> = self
                .set_hashes
                .iter()
                .copied()
                .zip(
                    self.set_stamps
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(NOT_EXPLICIT)),
                )
                .collect();
            old.sort_unstable();
            self.build_column(ts_ms, Some(&old))
        };
        self.report_hashes();
        self.report_values(true, duration, *counts);
        ring.append_series_blocks(
            &mut self.chain,
            self.key,
            &[&self.next_set, &self.fresh, &self.report_blocks],
        )?;
        bump(&self.stats.set_changes, 1);
        if self.column.is_empty() {
            ring.append_samples(&mut self.chain, ts_ms, &self.values)?;
        } else {
            ring.append_stamped(&mut self.chain, ts_ms, &self.values, &self.column)?;
        }
        self.last_ts_ms = ts_ms;
        let mut appended = self.values.len() as u64 - late;
        self.set_hashes.clear();
        self.set_hashes.extend_from_slice(&self.hashes);
        self.all_stale = false;
        // `sorted` holds this scrape's hashes (duplicates dropped below): the next `known`.
        self.sorted.dedup();
        std::mem::swap(&mut self.known, &mut self.sorted);
        // Only a change of the set needs it again (8 bytes a series).
        self.sorted = Vec::new();
        if !stale.is_empty() {
            appended += self.append_stale(ring, &stale, ts_ms)?;
        }
        self.next_set.release();
        self.fresh.release();
        ring.release_buffers();
        Ok(appended)
    }

    /// Builds the timestamp column of this scrape's record from `stamps` (the report series
    /// last, at `ts_ms`) and the set's next `set_stamps`; returns the samples out of order.
    /// `old` holds the old set's (hash, stamp) pairs, sorted, when the set changed; `None`:
    /// the series are the set's, in its order.
    fn build_column(&mut self, ts_ms: i64, old: Option<&[(u64, i64)]>) -> u64 {
        self.column.clear();
        match old {
            None if self.set_stamps.is_empty() => {
                self.set_stamps.resize(self.set_hashes.len(), NOT_EXPLICIT);
            }
            None => {}
            Some(_) => self.set_stamps.clear(),
        }
        let mut late = 0;
        for (i, &t) in self.stamps.iter().enumerate() {
            let before = match old {
                None => self.set_stamps.get(i).copied(),
                Some(old) => old
                    .binary_search_by_key(&self.hashes[i], |p| p.0)
                    .ok()
                    .map(|j| old[j].1),
            };
            let last = before.map(|b| {
                if b == NOT_EXPLICIT {
                    self.last_ts_ms
                } else {
                    b
                }
            });
            let (entry, kept) = if t == NOT_EXPLICIT {
                (ts_ms, NOT_EXPLICIT)
            } else if last.is_some_and(|l| t < l) {
                // As the agent's appender: older than the series' last sample.
                late += 1;
                (ABSENT, before.unwrap_or(NOT_EXPLICIT))
            } else {
                (t, t)
            };
            self.column.push(entry);
            match old {
                None => {
                    if let Some(s) = self.set_stamps.get_mut(i) {
                        *s = kept;
                    }
                }
                Some(_) => self.set_stamps.push(kept),
            }
        }
        self.column.extend(std::iter::repeat_n(ts_ms, REPORTS));
        if old.is_some() {
            self.set_stamps
                .extend(std::iter::repeat_n(NOT_EXPLICIT, REPORTS));
        }
        bump(&self.stats.out_of_order, late);
        late
    }

    /// The column that stale-marks the set's series without an explicit timestamp (the
    /// others get none, as in Prometheus), or empty when no series of the set had one.
    fn stale_column(&mut self, ts_ms: i64) {
        self.column.clear();
        if !self.set_stamps.is_empty() {
            self.column.extend(self.set_stamps.iter().map(|&t| {
                if t == NOT_EXPLICIT {
                    ts_ms
                } else {
                    ABSENT
                }
            }));
        }
    }

    /// Appends `values` at `ts_ms` with the column of [`Scraper::stale_column`] if any;
    /// returns the samples sent.
    fn append_marked(&mut self, ring: &mut Ring, ts_ms: i64) -> Result<u64, WalError> {
        if self.column.is_empty() {
            ring.append_samples(&mut self.chain, ts_ms, &self.values)?;
            return Ok(self.values.len() as u64);
        }
        ring.append_stamped(&mut self.chain, ts_ms, &self.values, &self.column)?;
        Ok(self.column.iter().filter(|&&t| t != ABSENT).count() as u64)
    }

    /// StaleNaN for each series of `list`, in a set of its own.
    fn append_stale(
        &mut self,
        ring: &mut Ring,
        list: &SeriesList,
        ts_ms: i64,
    ) -> Result<u64, WalError> {
        let mut chain = Chain::default();
        ring.append_series_set(&mut chain, self.key, list.iter())?;
        let values = vec![f64::from_bits(STALE_NAN_BITS); list.len()];
        ring.append_samples(&mut chain, ts_ms, &values)?;
        Ok(list.len() as u64)
    }

    /// Appends a failed scrape: the report series, and a StaleNaN for every series of the
    /// last good scrape (once).
    fn commit_failure(
        &mut self,
        ring: &mut Ring,
        ts_ms: i64,
        counts: Counts,
        duration: Duration,
    ) -> Result<u64, WalError> {
        self.hashes.clear();
        self.values.clear();
        let has_set = self.chain.series_set().is_some();
        if has_set && self.set_hashes.len() > REPORTS && !self.all_stale {
            // The old set's series get a StaleNaN on the old chain, before the report.
            let n = self.set_hashes.len() - REPORTS;
            self.values
                .extend(std::iter::repeat_n(f64::from_bits(STALE_NAN_BITS), n));
            self.report_values(false, duration, counts);
            self.stale_column(ts_ms);
            let appended = self.append_marked(ring, ts_ms)?;
            self.last_ts_ms = ts_ms;
            self.all_stale = true;
            return Ok(appended);
        }
        if !has_set || self.set_hashes.len() != REPORTS {
            self.report_hashes();
            ring.append_series_set(&mut self.chain, self.key, self.reports.iter())?;
            self.set_hashes.clear();
            self.set_hashes.extend_from_slice(&self.hashes);
            self.set_stamps.clear();
            self.all_stale = false;
        }
        self.report_values(false, duration, counts);
        ring.append_samples(&mut self.chain, ts_ms, &self.values)?;
        Ok(REPORTS as u64)
    }

    /// The target is gone (a reload removed it): a StaleNaN for every series it still has,
    /// report series included, as Prometheus' end-of-run staleness.
    pub fn stale_all(&mut self, ring: &mut Ring) {
        let ts_ms = now_ms();
        let stale = f64::from_bits(STALE_NAN_BITS);
        let result = if self.chain.series_set().is_none() {
            Ok(0)
        } else if self.all_stale {
            let reports = std::mem::take(&mut self.reports);
            let r = self.append_stale(ring, &reports, ts_ms);
            self.reports = reports;
            r
        } else {
            self.values.clear();
            self.values
                .extend(std::iter::repeat_n(stale, self.set_hashes.len()));
            self.stale_column(ts_ms);
            self.append_marked(ring, ts_ms)
        };
        match result {
            // Appended like any sample: sent, overwritten or lost, they add up with the rest.
            Ok(n) => bump(&self.stats.samples_appended, n),
            Err(e) => warn!(
                "target {}: stale markers not written: {e}",
                self.target.url()
            ),
        }
        self.chain = Chain::default();
        self.set_hashes.clear();
        self.set_stamps.clear();
        if let Some((store, c)) = &mut self.metadata {
            store.remove(self.key);
            c.reset();
        }
        ring.release_buffers();
    }
}

/// A flag the loop sets to stop a target's task, waking it (no allocation, no channel); and
/// the error its job forces on every scrape (`target_limit` exceeded).
#[derive(Default)]
pub struct StopSignal {
    stopped: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// (the job's targets, its `target_limit`) while the limit is exceeded.
    forced: Cell<Option<(u64, u64)>>,
}

impl fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSignal")
            .field("stopped", &self.stopped.get())
            .finish()
    }
}

impl StopSignal {
    /// Stops the task at its next wait.
    pub fn stop(&self) {
        self.stopped.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Sets (or clears) the error each scrape fails with: the job's target count and limit.
    pub fn force_target_limit(&self, exceeded: Option<(u64, u64)>) {
        self.forced.set(exceeded);
    }

    /// Whether it was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Completes once stopped.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        struct Wait<'a>(&'a StopSignal);
        impl Future for Wait<'_> {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                if self.0.stopped.get() {
                    return Poll::Ready(());
                }
                let w = match self.0.waker.take() {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                self.0.waker.set(Some(w));
                Poll::Pending
            }
        }
        Wait(self)
    }
}

/// When a target scrapes: its first scrape within a second of `start`, then at
/// `key mod interval` in wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    interval_ms: i64,
    offset_ms: i64,
}

impl Schedule {
    /// The schedule of a target with `key` and `interval`.
    pub fn new(key: u64, interval: Duration) -> Schedule {
        let interval_ms = i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let offset_ms = i64::try_from(key % interval_ms.unsigned_abs()).unwrap_or(0);
        Schedule {
            interval_ms,
            offset_ms,
        }
    }

    /// The delay before the first scrape: under a second (or the interval, if shorter).
    pub fn first(&self, key: u64) -> Duration {
        let spread = self.interval_ms.min(1000).unsigned_abs();
        Duration::from_millis(key % spread)
    }

    /// The wall-clock time of the next scrape after `now_ms`.
    pub fn next_after(&self, now_ms: i64) -> i64 {
        let since = (now_ms - self.offset_ms).rem_euclid(self.interval_ms);
        now_ms - since + self.interval_ms
    }
}

/// A target's task: scrapes on its schedule until `stop`, then hands its state back.
pub async fn run(
    mut scraper: Scraper,
    ring: Rc<RefCell<Ring>>,
    clock: Rc<Clock>,
    stop: Rc<StopSignal>,
) -> Scraper {
    let schedule = Schedule::new(scraper.key(), scraper.target.interval);
    let mut delay = schedule.first(scraper.key());
    loop {
        let stopped = smol::future::or(
            async {
                clock.sleep(delay).await;
                false
            },
            async {
                stop.wait().await;
                true
            },
        )
        .await;
        if stopped {
            return scraper;
        }
        let ts = now_ms();
        scraper.forced = stop.forced.get();
        scraper.scrape(&ring, &clock, ts).await;
        let now = now_ms();
        let next = schedule.next_after(now.max(ts));
        delay = Duration::from_millis(u64::try_from(next - now).unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_keeps_a_stable_offset() {
        let s = Schedule::new(12_345, Duration::from_secs(15));
        assert_eq!(s.offset_ms, 12_345);
        // From any time, the next scrape is at the offset within an interval.
        for now in [0i64, 1, 12_345, 12_346, 1_700_000_000_000] {
            let next = s.next_after(now);
            assert!(next > now && next - now <= 15_000, "{now} → {next}");
            assert_eq!((next - 12_345).rem_euclid(15_000), 0);
        }
        assert!(s.first(12_345) < Duration::from_secs(1));
        let fast = Schedule::new(777, Duration::from_millis(200));
        assert!(fast.first(777) < Duration::from_millis(200));
    }
}
