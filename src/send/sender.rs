//! The sender thread of one `remote_write` entry: ring → `WriteRequest` → HTTP POST, until
//! told to stop.
//!
//! # The loop
//! [`Sender::run`] reads scrapes ([`Batch`]) from its [`Consumer`], encodes each series as a
//! `TimeSeries` of one sample (as Prometheus 2.42's `queue_manager.go` does), and POSTs a
//! request whenever it holds `max_samples_per_send` samples — a scrape of 100k series goes
//! out as many requests while it is read. Requests go one at a time: the next is built only
//! once the previous one was acknowledged (2xx) or dropped, so no series is ever reordered.
//! The cursor moves (`Consumer::commit`) to the end of a scrape only once every sample of it
//! was acknowledged or deliberately dropped (ring invariant: a cursor never passes a record
//! that was not).
//!
//! When the consumer has caught up with the ring's head, a partial request waits until its
//! first sample is `batch_send_deadline` old, then goes out. **Deviation from Prometheus:**
//! the first request after start, and every request while stopping, go out as soon as the
//! consumer has caught up, so the first sample reaches the receiver within about a second of
//! start (DESIGN.md's budget is 1.5 s; Prometheus' own agent takes 5 s, the default
//! deadline), and a stop does not wait out the deadline. While stopping, a request that
//! fails is not retried: it stays in the ring for the next start, so a receiver that is down
//! does not hold a stop for `--storage.remote.flush-deadline`. The thread sleeps in
//! `Consumer::wait` (woken by the producer, by [`Control::stop`], or when the flush or the
//! ring's periodic sync is due): it never polls.
//!
//! # Answers
//! - 2xx: acknowledged.
//! - 5xx, 429, and no answer at all (connect, TLS, timeout, a broken connection): the same
//!   request again after a wait ([`super::backoff`]): capped exponential backoff with
//!   jitter, or what `Retry-After` asks on a 429 or 5xx (capped at
//!   [`super::backoff::RETRY_AFTER_CAP`] or `max_backoff`, the longer). 429 is retried unless
//!   `retry_on_http_429: false` (DESIGN.md: our default differs from Prometheus 2.42's).
//! - Any other status: the request is dropped and its samples counted
//!   ([`SenderStats::samples_failed_total`]), as the spec says for 4xx.
//!
//! # Logs
//! debug: one line per request. warn: the first failure of a kind (a status, or "network"),
//! with at most 64 bytes of the body; repeats are counted and summarised later (when the kind
//! changes, when delivery works again, and every ten minutes for rejections). URLs are logged
//! as `scheme://host` only: no path, no userinfo, no header, no credential.
//!
//! # Allocation
//! The `WriteRequest` buffers, the relabel set and scratch, and the credential buffers are
//! reused: building a request allocates nothing once warm. ureq allocates per request (its
//! request and header map, the response head); that is accepted on the sender thread, which
//! is off the scrape path and sends at most one request per `max_samples_per_send` samples.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::backoff::{self, Backoff};
use super::encode::{WriteRequest, HEADERS};
use crate::auth::{Credentials, CredentialsError};
use crate::config::http::{Auth, TlsConfig, TlsVersion};
use crate::config::RemoteWriteConfig;
use crate::labels::LabelSet;
use crate::metadata::{self, Store};
use crate::relabel::{process_set, Scratch};
use crate::wal::{Batch, Consumer, InFlight, Syncer};

/// The `User-Agent` of every request.
use crate::USER_AGENT;

/// At most this much of a response body is kept for a log line (STYLE.md).
const EXCERPT_BYTES: usize = 64;

/// A response body is read (and thrown away) up to this size so the connection can be
/// reused; a longer one is left unread and ureq closes the connection instead.
const DRAIN_BYTES: usize = 64 << 10;

/// The longest the thread sleeps with nothing to do: the producer, a stop or a due flush wake
/// it earlier; this only bounds how stale a missed wake-up can leave it.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// How often repeated rejections (same status) are summarised in the log.
const REJECTION_SUMMARY: Duration = Duration::from_secs(600);

/// The stable 64-bit key of an endpoint, the ring's cursor key: FNV-1a over the URL as
/// written, a 0xff byte, and the `name`. Never change it: a ring persists cursors by it.
pub fn endpoint_key(rw: &RemoteWriteConfig) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let bytes = rw
        .url
        .text
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(rw.name.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// One endpoint's counters, shared with the self-metrics renderer. Written by the sender
/// thread only, read anywhere; all `Relaxed` (each is a count on its own).
#[derive(Debug, Default)]
pub struct SenderStats {
    /// Samples acknowledged by the receiver (2xx): `prometheus_remote_storage_samples_total`.
    pub samples_total: AtomicU64,
    /// Samples dropped after an answer that must not be retried (4xx other than a retried
    /// 429): `prometheus_remote_storage_samples_failed_total`.
    pub samples_failed_total: AtomicU64,
    /// Samples in requests that were retried, once per retry:
    /// `prometheus_remote_storage_samples_retried_total`.
    pub samples_retried_total: AtomicU64,
    /// Samples dropped by `write_relabel_configs`:
    /// `prometheus_remote_storage_samples_dropped_total`.
    pub samples_dropped_total: AtomicU64,
    /// Newest sample timestamp acknowledged, ms (0 before the first):
    /// `prometheus_remote_storage_queue_highest_sent_timestamp_seconds`.
    pub highest_sent_timestamp_ms: AtomicI64,
    /// Requests acknowledged (2xx).
    pub sent_batches_total: AtomicU64,
    /// Compressed body bytes of acknowledged requests.
    pub sent_bytes_total: AtomicU64,
    /// Attempts that got no 2xx: any status or no answer.
    pub failed_requests_total: AtomicU64,
    /// Samples read from the ring and not yet acknowledged or dropped (0 once stopped).
    pub samples_pending: AtomicU64,
    /// Metadata entries acknowledged: `prometheus_remote_storage_metadata_total`.
    pub metadata_total: AtomicU64,
    /// Metadata entries in requests that got no 2xx:
    /// `prometheus_remote_storage_metadata_failed_total`.
    pub metadata_failed_total: AtomicU64,
    /// Compressed bytes of acknowledged metadata requests:
    /// `prometheus_remote_storage_metadata_bytes_total`.
    pub metadata_bytes_total: AtomicU64,
}

/// A sender's share of the metadata (`metadata_config.send`).
#[derive(Debug)]
struct MetadataSend {
    store: Arc<Store>,
    every: Duration,
    due: Instant,
    /// `metadata_config.max_samples_per_send`, at least 1.
    max: usize,
    request: WriteRequest,
}

fn bump(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Tells senders to stop: each finishes what is in the ring, sending partial requests at
/// once, and returns when it has caught up — or at the deadline, whatever it is doing then
/// (what was not acknowledged stays in the ring for the next start). One `Control` may be
/// shared by several senders.
#[derive(Debug, Default)]
pub struct Control {
    stopping: AtomicBool,
    deadline: Mutex<Option<Instant>>,
    /// The sender threads to wake, registered by [`Sender::run`].
    threads: Mutex<Vec<std::thread::Thread>>,
}

impl Control {
    /// Asks every sender on this control to stop by `deadline` (an earlier deadline than one
    /// already set wins), and wakes them.
    pub fn stop(&self, deadline: Instant) {
        {
            let mut d = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
            *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        }
        self.stopping.store(true, Ordering::SeqCst);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            t.unpark();
        }
    }

    /// Whether [`Control::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The stop deadline, once stopping.
    fn deadline(&self) -> Option<Instant> {
        if !self.stopping() {
            return None;
        }
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stopping, and the deadline has passed.
    fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn register(&self) {
        let me = std::thread::current();
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        if !threads.iter().any(|t| t.id() == me.id()) {
            threads.push(me);
        }
    }
}

/// What went wrong building a sender or sending a request. Messages are lowercase and never
/// hold a secret, a URL path or userinfo.
#[derive(Debug)]
pub enum SendError {
    /// A `tls_config` file could not be read or holds nothing usable.
    Tls(crate::tls::TlsError),
    /// `proxy_url` cannot be used.
    Proxy(&'static str),
    /// A configured header name or value is not valid HTTP.
    Header {
        /// The header name as configured.
        name: String,
    },
    /// A setting Prometheus accepts that this client cannot honour (refused, not ignored).
    Unsupported {
        /// The config key.
        key: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A credentials or password file could not be read. Retryable: a rotated token may be
    /// back in a moment, and the data waits in the ring.
    Credentials {
        /// The file.
        path: String,
        /// The read error.
        source: std::io::Error,
    },
    /// No answer: connect, TLS, timeout, a broken connection. Retryable.
    Network(ureq::Error),
    /// A 5xx answer. Retryable.
    Server {
        /// The status.
        status: u16,
        /// At most 64 bytes of the body.
        excerpt: String,
        /// What `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// A 429 answer. Retryable unless `retry_on_http_429: false`.
    TooManyRequests {
        /// At most 64 bytes of the body.
        excerpt: String,
        /// What `Retry-After` asked for.
        retry_after: Option<Duration>,
        /// Whether the config retries 429.
        retry: bool,
    },
    /// Any other non-2xx answer: the request is dropped.
    Rejected {
        /// The status.
        status: u16,
        /// At most 64 bytes of the body.
        excerpt: String,
    },
}

impl SendError {
    /// Whether the same request should be sent again (the remote-write 1.0 rules).
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Credentials { .. } | SendError::Network(_) | SendError::Server { .. } => {
                true
            }
            SendError::TooManyRequests { retry, .. } => *retry,
            SendError::Tls(_)
            | SendError::Proxy(_)
            | SendError::Header { .. }
            | SendError::Unsupported { .. }
            | SendError::Rejected { .. } => false,
        }
    }

    /// The wait the receiver asked for with `Retry-After`, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Server { retry_after, .. }
            | SendError::TooManyRequests { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Server { status, .. } | SendError::Rejected { status, .. } => Some(*status),
            SendError::TooManyRequests { .. } => Some(429),
            _ => None,
        }
    }

    /// The kind, for logging a change once.
    fn trouble(&self) -> Trouble {
        match (self.status(), self) {
            (Some(s), _) => Trouble::Status(s),
            (None, SendError::Credentials { .. }) => Trouble::Credentials,
            _ => Trouble::Network,
        }
    }
}

/// ureq's message, except where it would quote the URL (which may hold userinfo), and TLS
/// failures, which read as a scrape's do (Go's words, [`crate::tls::Reason`]) rather than as
/// ureq's `io: invalid peer certificate: Other(OtherError(…))`.
struct Redacted<'a>(&'a ureq::Error);

/// The rustls error inside `e`: ureq returns it as is when a connection cannot be set up,
/// and inside an `io::Error` (rustls' `complete_io`, a read or write) when the handshake or
/// the stream fails.
fn rustls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = rustls_error(self.0) {
            return write!(f, "{}", crate::tls::Reason(e));
        }
        match self.0 {
            ureq::Error::BadUri(_) => f.write_str("bad url"),
            ureq::Error::RequireHttpsOnly(_) => f.write_str("https required"),
            ureq::Error::ConnectProxyFailed(_) => f.write_str("proxy CONNECT failed"),
            other => write!(f, "{other}"),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Tls(e) => e.fmt(f),
            SendError::Proxy(reason) => write!(f, "proxy_url: {reason}"),
            SendError::Header { name } => write!(f, "headers: {name}: not a valid http header"),
            SendError::Unsupported { key, reason } => write!(f, "{key}: {reason}"),
            SendError::Credentials { path, source } => {
                write!(f, "read credentials file {path}: {source}")
            }
            SendError::Network(e) => write!(f, "no answer: {}", Redacted(e)),
            SendError::Server {
                status, excerpt, ..
            }
            | SendError::Rejected { status, excerpt } => write!(f, "http {status}: {excerpt:?}"),
            SendError::TooManyRequests { excerpt, .. } => {
                write!(f, "http 429 (too many requests): {excerpt:?}")
            }
        }
    }
}

impl From<crate::tls::TlsError> for SendError {
    fn from(e: crate::tls::TlsError) -> Self {
        SendError::Tls(e)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Credentials { source, .. } => Some(source),
            // Not ureq's error itself: its Display may quote the URL (see `Redacted`).
            _ => None,
        }
    }
}

/// How an attempt ended, for the per-request debug line (formatted only when enabled).
struct Outcome<'a>(&'a Result<u16, SendError>);

impl fmt::Display for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(status) => write!(f, "http {status}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

/// A failure kind: the log says so once when it starts, not per attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    Status(u16),
    Network,
    Credentials,
}

/// Log throttling: state changes are logged, repeats counted and summarised.
#[derive(Debug)]
struct Health {
    /// `scheme://host`, the only form of the URL that is logged.
    origin: String,
    /// The retryable failure going on, and how many attempts failed since it started.
    failing: Option<(Trouble, u64)>,
    /// The last status requests were dropped for, how many more since it was logged, and
    /// when it was last logged.
    rejected: Option<(u16, u64, Instant)>,
}

impl Health {
    fn retrying(&mut self, e: &SendError, wait: Duration) {
        let t = e.trouble();
        match &mut self.failing {
            Some((kind, n)) if *kind == t => {
                *n += 1;
                log::debug!("remote write {}: {e}; retrying in {wait:?}", self.origin);
            }
            other => {
                if let Some((_, n)) = other {
                    log::info!(
                        "remote write {}: the previous failure repeated on {n} attempts",
                        self.origin
                    );
                }
                *other = Some((t, 1));
                log::warn!(
                    "remote write {}: {e}; retrying (repeats are logged at debug)",
                    self.origin
                );
            }
        }
    }

    fn answered(&mut self) {
        if let Some((_, n)) = self.failing.take() {
            log::info!(
                "remote write {}: the receiver answers again after {n} failed attempts",
                self.origin
            );
        }
    }

    fn dropped(&mut self, e: &SendError, samples: usize) {
        self.answered();
        let status = e.status().unwrap_or(0);
        let now = Instant::now();
        match &mut self.rejected {
            Some((s, n, at)) if *s == status => {
                *n += 1;
                log::debug!(
                    "remote write {}: {e}; dropped {samples} samples",
                    self.origin
                );
                if now.duration_since(*at) >= REJECTION_SUMMARY {
                    log::warn!(
                        "remote write {}: {n} more requests dropped with http {status} in the last {:?}",
                        self.origin,
                        now.duration_since(*at)
                    );
                    (*n, *at) = (0, now);
                }
            }
            other => {
                Health::summarise(&self.origin, other.as_ref());
                *other = Some((status, 0, now));
                log::warn!(
                    "remote write {}: {e}; dropped {samples} samples (not retryable; repeats are counted)",
                    self.origin
                );
            }
        }
    }

    /// Logs how many rejections went unlogged since the last line about them.
    fn summarise(origin: &str, rejected: Option<&(u16, u64, Instant)>) {
        if let Some((s, n, _)) = rejected {
            if *n > 0 {
                log::warn!("remote write {origin}: {n} more requests were dropped with http {s}");
            }
        }
    }
}

/// The ring's periodic msync, run by one sender (`--storage.agent.sync-interval`).
#[derive(Debug)]
struct Periodic {
    syncer: Syncer,
    every: Duration,
    due: Instant,
}

impl Periodic {
    /// Syncs if due (or `force`); logs a failure once, and the recovery.
    fn tick(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now < self.due {
            return;
        }
        self.due = now + self.every;
        // Logged once per kind of failure, and counted, by the ring.
        self.syncer.sync_logged();
    }
}

/// Sleeps until `until`, running the periodic sync when due; returns false (early) if the
/// stop deadline comes first.
fn pause(control: &Control, sync: &mut Option<Periodic>, until: Instant) -> bool {
    loop {
        if let Some(s) = sync.as_mut() {
            s.tick(false);
        }
        let now = Instant::now();
        let deadline = control.deadline();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if now >= until {
            return true;
        }
        let mut wake = until;
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if let Some(s) = sync.as_ref() {
            wake = wake.min(s.due);
        }
        // Spurious wake-ups (a stale unpark token) just go round the loop again.
        std::thread::park_timeout(wake.saturating_duration_since(now));
    }
}

/// The HTTP side: one keep-alive agent and the buffers of per-request credentials.
struct Client {
    agent: ureq::Agent,
    url: String,
    /// The `Authorization` values (secrets: never logged).
    credentials: Credentials,
}

impl fmt::Debug for Client {
    // Holds credentials: show nothing of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// The `Authorization` value for this request, if any (files read now).
    fn authorization(&mut self, auth: &Auth) -> Result<Option<&str>, SendError> {
        self.credentials
            .authorization(auth)
            .map_err(|CredentialsError { path, source }| SendError::Credentials { path, source })
    }

    /// One POST of `body`. `timeout` overrides `remote_timeout` (while stopping, the time left).
    fn post(
        &mut self,
        rw: &RemoteWriteConfig,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u16, SendError> {
        let mut request = self.agent.post(&self.url);
        for (name, value) in HEADERS {
            request = request.header(name, value);
        }
        for (name, value) in &rw.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(value) = self.authorization(&rw.http.auth)? {
            request = request.header("Authorization", value);
        }
        if let Some(t) = timeout {
            request = request.config().timeout_global(Some(t)).build();
        }
        let mut response = request.send(body).map_err(SendError::Network)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::retry_after(v, SystemTime::now()));
        let mut kept = [0u8; EXCERPT_BYTES];
        let n = drain(response.body_mut(), &mut kept);
        if (200..300).contains(&status) {
            return Ok(status);
        }
        let excerpt = String::from_utf8_lossy(&kept[..n])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_owned();
        Err(match status {
            429 => SendError::TooManyRequests {
                excerpt,
                retry_after,
                retry: rw.queue_config.retry_on_http_429 != Some(false),
            },
            500..=599 => SendError::Server {
                status,
                excerpt,
                retry_after,
            },
            _ => SendError::Rejected { status, excerpt },
        })
    }
}

/// Reads the body to its end (up to [`DRAIN_BYTES`]) so the connection can be reused,
/// keeping its first bytes in `kept`; returns how many were kept.
fn drain(body: &mut ureq::Body, kept: &mut [u8]) -> usize {
    let mut reader = body.as_reader();
    let mut buf = [0u8; 1024];
    let (mut n_kept, mut total) = (0, 0);
    while total < DRAIN_BYTES {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let take = n.min(kept.len() - n_kept);
                kept[n_kept..n_kept + take].copy_from_slice(&buf[..take]);
                n_kept += take;
                total += n;
            }
        }
    }
    n_kept
}

/// ureq's TLS settings from `tls_config`: files read and checked now by [`crate::tls`] (ureq
/// builds its rustls config at the first connection and panics, with `panic = "abort"` the
/// process dies, if rustls refuses the client certificate or key).
fn tls_config(tls: &TlsConfig, https: bool) -> Result<ureq::tls::TlsConfig, SendError> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};
    // ureq builds its rustls config itself: it offers neither a server-name override nor a
    // version range. Refused rather than ignored (DESIGN.md's compatibility contract).
    if !tls.server_name.is_empty() {
        return Err(SendError::Unsupported {
            key: "tls_config.server_name",
            reason: "not supported by promlet's remote-write client (the url's host is verified)",
        });
    }
    if tls.min_version == Some(TlsVersion::Tls13) || tls.max_version == Some(TlsVersion::Tls12) {
        return Err(SendError::Unsupported {
            key: "tls_config.min_version/max_version",
            reason: "not supported by promlet's remote-write client: it offers TLS 1.2 and 1.3",
        });
    }
    let ureq_certs =
        |certs: Vec<rustls::pki_types::CertificateDer<'static>>| -> Vec<Certificate<'static>> {
            certs
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect()
        };
    let mut builder =
        ureq::tls::TlsConfig::builder().disable_verification(tls.insecure_skip_verify);
    let roots = if !tls.ca_file.is_empty() {
        crate::tls::read_certs("ca_file", &tls.ca_file)?
    } else if https && !tls.insecure_skip_verify {
        // Only an https endpoint pays for the system bundle (some hundred KB parsed and kept).
        let roots = crate::tls::system_roots();
        if roots.is_empty() {
            log::warn!("no system CA bundle found: https receivers need tls_config.ca_file");
        }
        roots
    } else {
        Vec::new()
    };
    builder = builder.root_certs(RootCerts::new_with_certs(&ureq_certs(roots)));
    if let Some((chain, _)) = crate::tls::client_identity(tls)? {
        // ureq takes keys as PEM only (its key kind is private): the file once more.
        let unusable = || {
            SendError::Tls(crate::tls::TlsError {
                key: "key_file",
                path: tls.key_file.clone(),
                reason: "no usable private key in it".to_owned(),
            })
        };
        let pem = std::fs::read(&tls.key_file).map_err(|_| unusable())?;
        let key = PrivateKey::from_pem(&pem).map_err(|_| unusable())?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&ureq_certs(chain), key)));
    }
    Ok(builder.build())
}

/// The request being built: what it holds and what its acknowledgement settles.
#[derive(Debug)]
struct Pending {
    /// When its first sample was added.
    since: Option<Instant>,
    /// Its newest sample timestamp, ms.
    max_ts_ms: i64,
    /// Samples added since `samples_pending` was last updated.
    uncounted: usize,
    /// The end of the last scrape all of whose samples are in it (or before it): committed
    /// once it is acknowledged or dropped.
    complete: Option<u64>,
    /// The end of the last scrape with a sample in it: recorded in the ring as in flight
    /// while it is sent.
    reach: u64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            since: None,
            max_ts_ms: i64::MIN,
            uncounted: 0,
            complete: None,
            reach: 0,
        }
    }
}

/// The stop deadline passed with a request unacknowledged: it stays in the ring.
#[derive(Debug)]
struct Abandoned;

/// Everything of a sender but its consumer (so a [`Batch`], which borrows the consumer, can
/// be encoded while this is borrowed mutably).
#[derive(Debug)]
struct Link {
    rw: RemoteWriteConfig,
    /// `external_labels` sorted by name.
    external: Vec<(Vec<u8>, Vec<u8>)>,
    client: Client,
    request: WriteRequest,
    pending: Pending,
    /// `write_relabel_configs` work buffers.
    set: LabelSet,
    scratch: Scratch,
    /// `max_samples_per_send`, at least 1.
    max_samples: usize,
    backoff: Backoff,
    stats: Arc<SenderStats>,
    control: Arc<Control>,
    sync: Option<Periodic>,
    health: Health,
    /// A request went out (acknowledged or dropped) since start: later partial requests wait
    /// for `batch_send_deadline`.
    sent_once: bool,
    /// Acknowledged up to here, not committed yet (the consumer is borrowed by a batch).
    to_commit: Option<u64>,
    metadata: Option<MetadataSend>,
    /// Records each request's extent in the ring before it goes out.
    in_flight: InFlight,
    /// Records before this offset may be at the receiver already (an earlier process died
    /// with them in flight): they go out in requests of their own.
    resend_until: Option<u64>,
}

impl Link {
    /// Encodes one scrape, sending each request that fills up. Leaves the rest pending.
    fn take(&mut self, batch: &Batch<'_>) -> Result<(), Abandoned> {
        for (i, &value) in batch.values.iter().enumerate() {
            // A value the scrape did not append (an out-of-order explicit timestamp).
            let Some(ts) = batch.timestamp(i) else {
                continue;
            };
            let sample = [(ts, value)];
            if self.rw.write_relabel_configs.is_empty() {
                let (request, external) = (&mut self.request, &self.external);
                let pushed = batch.series.with_labels(i, |labels| {
                    labels.map(|l| request.push(l, external, &sample)).is_some()
                });
                if !pushed {
                    continue;
                }
            } else {
                // As Prometheus' `StoreSeries`: external labels first (the series' own
                // label wins), then the rules see the whole set.
                self.set.clear();
                let set = &mut self.set;
                let read = batch.series.with_labels(i, |labels| {
                    labels
                        .map(|l| l.for_each(|(n, v)| set.push(n, v)))
                        .is_some()
                });
                if !read {
                    continue;
                }
                for (n, v) in &self.external {
                    if self.set.get(n).is_none() {
                        self.set.push(n, v);
                    }
                }
                self.set.sort();
                if !process_set(
                    &mut self.set,
                    &self.rw.write_relabel_configs,
                    &mut self.scratch,
                ) || self.set.is_empty()
                {
                    self.stats
                        .samples_dropped_total
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let set = &self.set;
                let labels = set
                    .spans()
                    .iter()
                    .map(move |s| (set.slice(s.name), set.slice(s.value)));
                self.request.push(labels, &[], &sample);
            }
            self.pending.since.get_or_insert_with(Instant::now);
            self.pending.max_ts_ms = self.pending.max_ts_ms.max(ts);
            self.pending.uncounted += 1;
            self.pending.reach = batch.next;
            if self.request.len().1 >= self.max_samples {
                self.flush()?;
            }
        }
        bump(
            &self.stats.samples_pending,
            std::mem::take(&mut self.pending.uncounted),
        );
        if self.request.is_empty() {
            self.to_commit = Some(batch.next);
        } else {
            self.pending.complete = Some(batch.next);
        }
        Ok(())
    }

    /// When the pending request is due without more samples.
    fn flush_due(&self) -> Option<Instant> {
        self.pending
            .since
            .map(|s| s + self.rw.queue_config.batch_send_deadline)
    }

    /// Sends the pending request until it is acknowledged or dropped (retrying as the answer
    /// says), or the stop deadline passes (`Abandoned`: nothing of it is committed).
    fn flush(&mut self) -> Result<(), Abandoned> {
        bump(
            &self.stats.samples_pending,
            std::mem::take(&mut self.pending.uncounted),
        );
        if self.request.is_empty() {
            self.settle();
            return Ok(());
        }
        let (series, samples) = self.request.len();
        // Before a byte goes out: a process that dies before the answer leaves this in the
        // ring, and the next one sends these records alone (`resend_until`).
        self.in_flight.set(self.pending.reach);
        let body = self.request.body();
        loop {
            let timeout = match self.control.deadline() {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Abandoned);
                    }
                    // Stopping: no request may outlast the deadline.
                    Some(match self.rw.remote_timeout {
                        t if t.is_zero() => left,
                        t => left.min(t),
                    })
                }
                None => None,
            };
            let started = Instant::now();
            let answer = self.client.post(&self.rw, body, timeout);
            log::debug!(
                "remote write {}: {series} series, {samples} samples, {} bytes: {} in {:?}",
                self.health.origin,
                body.len(),
                Outcome(&answer),
                started.elapsed()
            );
            match answer {
                Ok(_) => {
                    let s = &self.stats;
                    bump(&s.samples_total, samples);
                    bump(&s.sent_bytes_total, body.len());
                    s.sent_batches_total.fetch_add(1, Ordering::Relaxed);
                    s.highest_sent_timestamp_ms
                        .fetch_max(self.pending.max_ts_ms, Ordering::Relaxed);
                    self.health.answered();
                    break;
                }
                Err(e) if e.is_retryable() => {
                    self.stats
                        .failed_requests_total
                        .fetch_add(1, Ordering::Relaxed);
                    if self.control.stopping() {
                        // The ring keeps what was not acknowledged, and the next start sends
                        // it: a stop does not wait out the flush deadline for a receiver that
                        // is down (Prometheus does, because its queue is lost on exit).
                        return Err(Abandoned);
                    }
                    bump(&self.stats.samples_retried_total, samples);
                    let wait = e
                        .retry_after()
                        .and_then(|d| self.backoff.capped(d))
                        .unwrap_or_else(|| self.backoff.next_wait());
                    self.health.retrying(&e, wait);
                    if !pause(&self.control, &mut self.sync, Instant::now() + wait) {
                        return Err(Abandoned);
                    }
                }
                Err(e) => {
                    self.stats
                        .failed_requests_total
                        .fetch_add(1, Ordering::Relaxed);
                    bump(&self.stats.samples_failed_total, samples);
                    self.health.dropped(&e, samples);
                    break;
                }
            }
        }
        // Each request starts its backoff afresh, as Prometheus' does.
        self.backoff.reset();
        self.stats.samples_pending.fetch_sub(
            u64::try_from(samples).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.request.clear();
        self.sent_once = true;
        self.settle();
        Ok(())
    }

    /// Sends every distinct metadata entry of the live targets, in requests of at most
    /// `max_samples_per_send` entries. Each request is tried once: a failure is counted
    /// and the rest waits for the next interval, which resends everything anyway (unlike
    /// Prometheus, which retries it; samples share this thread and must not wait on it).
    fn send_metadata(&mut self) {
        let Some(mut m) = self.metadata.take() else {
            return;
        };
        m.due = Instant::now() + m.every;
        let blobs = m.store.snapshot();
        let mut seen: HashSet<metadata::Entry<'_>> = HashSet::new();
        m.request.clear();
        let mut ok = true;
        for e in blobs.iter().flat_map(|b| metadata::entries(b)) {
            if !seen.insert(e) {
                continue;
            }
            m.request.push_metadata(e.kind, e.name, e.help, e.unit);
            if m.request.metadata_len() >= m.max {
                ok = self.post_metadata(&mut m.request);
                if !ok {
                    break;
                }
            }
        }
        if ok && m.request.metadata_len() > 0 {
            self.post_metadata(&mut m.request);
        }
        m.request.clear();
        self.metadata = Some(m);
    }

    /// One metadata request; true if it was acknowledged.
    fn post_metadata(&mut self, request: &mut WriteRequest) -> bool {
        let n = request.metadata_len();
        let body = request.body();
        let answer = self.client.post(&self.rw, body, None);
        log::debug!(
            "remote write {}: {n} metadata entries, {} bytes: {}",
            self.health.origin,
            body.len(),
            Outcome(&answer)
        );
        let ok = answer.is_ok();
        if ok {
            bump(&self.stats.metadata_total, n);
            bump(&self.stats.metadata_bytes_total, body.len());
        } else {
            bump(&self.stats.metadata_failed_total, n);
        }
        request.clear();
        ok
    }

    /// The request is done: what it completed may be committed; start a new one.
    fn settle(&mut self) {
        if let Some(c) = self.pending.complete.take() {
            self.to_commit = Some(c);
        }
        self.pending = Pending::default();
    }
}

/// One `remote_write` endpoint's sender; see the module docs.
#[derive(Debug)]
pub struct Sender {
    consumer: Consumer,
    link: Link,
}

impl Sender {
    /// A sender for `rw` reading from `consumer`. Builds the HTTP agent: TLS files are read
    /// here (credentials files are read on every request instead). Errors name the key.
    pub fn new(
        rw: &RemoteWriteConfig,
        external_labels: &[(String, String)],
        consumer: Consumer,
        stats: Arc<SenderStats>,
        control: Arc<Control>,
    ) -> Result<Sender, SendError> {
        for (name, value) in &rw.headers {
            let ok = ureq::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && ureq::http::HeaderValue::from_str(value).is_ok();
            if !ok {
                return Err(SendError::Header { name: name.clone() });
            }
        }
        let proxy = match &rw.http.proxy_url {
            None => None,
            Some(url) if url.scheme == "http" || url.scheme == "https" => Some(
                ureq::Proxy::new(&url.text)
                    .map_err(|_| SendError::Proxy("not a usable http(s) proxy url"))?,
            ),
            Some(_) => {
                return Err(SendError::Unsupported {
                    key: "proxy_url",
                    reason:
                        "only http and https proxies are supported by promlet's remote-write client",
                })
            }
        };
        let timeout = (!rw.remote_timeout.is_zero()).then_some(rw.remote_timeout);
        let config = ureq::Agent::config_builder()
            // Statuses are answers to classify, not errors.
            .http_status_as_error(false)
            .timeout_global(timeout)
            .user_agent(USER_AGENT)
            // Prometheus 2.42 uses `proxy_url` only, never the environment.
            .proxy(proxy)
            .tls_config(tls_config(&rw.http.tls_config, rw.url.scheme == "https")?)
            .max_redirects(if rw.http.follow_redirects { 10 } else { 0 })
            .max_redirects_will_error(false)
            // ureq's defaults are 128 KiB each way, per connection. Answers to a remote write
            // are a status line and a few headers; the body goes out in 16 KiB writes.
            .input_buffer_size(8 << 10)
            .output_buffer_size(16 << 10)
            .build();
        let mut external: Vec<(Vec<u8>, Vec<u8>)> = external_labels
            .iter()
            .map(|(n, v)| (n.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        external.sort();
        let q = &rw.queue_config;
        let max_samples = usize::try_from(q.max_samples_per_send.max(1)).unwrap_or(usize::MAX);
        let in_flight = consumer.in_flight();
        let resend_until = consumer.unacknowledged();
        Ok(Sender {
            consumer,
            link: Link {
                rw: rw.clone(),
                external,
                client: Client {
                    agent: ureq::Agent::new_with_config(config),
                    url: rw.url.text.clone(),
                    credentials: Credentials::default(),
                },
                request: WriteRequest::default(),
                pending: Pending::default(),
                set: LabelSet::new(),
                scratch: Scratch::default(),
                max_samples,
                backoff: Backoff::from_clock(q.min_backoff, q.max_backoff),
                stats,
                control,
                sync: None,
                health: Health {
                    origin: format!("{}://{}", rw.url.scheme, rw.url.host),
                    failing: None,
                    rejected: None,
                },
                sent_once: false,
                to_commit: None,
                metadata: None,
                in_flight,
                resend_until,
            },
        })
    }

    /// Makes this sender run the ring's periodic sync every `every` too (one sender does,
    /// instead of a thread of its own), and once more when it returns. A sync is late by at
    /// most one request (`remote_timeout`) when the receiver is slow.
    pub fn with_sync(mut self, syncer: Syncer, every: Duration) -> Sender {
        self.link.sync = Some(Periodic {
            syncer,
            every,
            due: Instant::now() + every,
        });
        self
    }

    /// Makes this sender send the targets' metadata from `store` every
    /// `metadata_config.send_interval`, the first time one interval after start, as
    /// Prometheus' metadata watcher does (nothing if `metadata_config.send` is off).
    pub fn with_metadata(mut self, store: Arc<Store>) -> Sender {
        let m = &self.link.rw.metadata_config;
        if m.send && !m.send_interval.is_zero() {
            self.link.metadata = Some(MetadataSend {
                store,
                every: m.send_interval,
                due: Instant::now() + m.send_interval,
                max: usize::try_from(m.max_samples_per_send.max(1)).unwrap_or(usize::MAX),
                request: WriteRequest::default(),
            });
        }
        self
    }

    /// The loop (see the module docs). Returns after [`Control::stop`]: once caught up with
    /// the ring and everything acknowledged or dropped, or at the deadline.
    pub fn run(mut self) {
        self.link.control.register();
        log::info!("remote write {}: sender started", self.link.health.origin);
        if let Some(end) = self.link.resend_until {
            log::info!(
                "remote write {}: a request was in flight when this endpoint's sender last stopped (ring offsets {} to {end}); it goes again on its own, and a receiver that holds it already may refuse it",
                self.link.health.origin,
                self.consumer.stats().cursor
            );
        }
        let drained = self.drive().is_ok();
        if let Some(c) = self.link.to_commit.take() {
            self.consumer.commit(c);
        }
        if let Some(s) = self.link.sync.as_mut() {
            s.tick(true);
        }
        let health = &self.link.health;
        Health::summarise(&health.origin, health.rejected.as_ref());
        self.link.stats.samples_pending.store(0, Ordering::Relaxed);
        if drained {
            log::info!(
                "remote write {}: sender stopped, all sent",
                self.link.health.origin
            );
        } else {
            log::warn!(
                "remote write {}: stop deadline reached; unsent data stays in the ring (cursor at offset {})",
                self.link.health.origin,
                self.consumer.stats().cursor
            );
        }
    }

    /// Runs [`Sender::run`] on a thread called `name` (e.g. `promlet-send-0`).
    pub fn spawn(self, name: String) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())
    }

    fn commit(&mut self) {
        if let Some(c) = self.link.to_commit.take() {
            self.consumer.commit(c);
        }
    }

    /// Until stopped: `Ok` once drained, `Err` at the deadline.
    fn drive(&mut self) -> Result<(), Abandoned> {
        loop {
            if self.link.control.expired() {
                return Err(Abandoned);
            }
            while let Some(batch) = self.consumer.next_batch() {
                let next = batch.next;
                let taken = self.link.take(&batch);
                self.commit();
                taken?;
                if self.link.resend_until.is_some_and(|end| next >= end) {
                    // The last of what an earlier process had in flight: it goes out without
                    // anything newer.
                    self.link.resend_until = None;
                    let flushed = self.link.flush();
                    self.commit();
                    flushed?;
                }
                if let Some(s) = self.link.sync.as_mut() {
                    s.tick(false);
                }
                if self.link.control.expired() {
                    return Err(Abandoned);
                }
            }
            // Caught up with the head.
            let stopping = self.link.control.stopping();
            let now = Instant::now();
            if let Some(due) = self.link.flush_due() {
                if !self.link.sent_once || stopping || now >= due {
                    let flushed = self.link.flush();
                    self.commit();
                    flushed?;
                    continue;
                }
            }
            self.commit();
            if stopping {
                return Ok(());
            }
            let mut wake = now + IDLE_WAIT;
            if let Some(due) = self.link.flush_due() {
                wake = wake.min(due);
            }
            if let Some(s) = self.link.sync.as_ref() {
                wake = wake.min(s.due);
            }
            if let Some(due) = self.link.metadata.as_ref().map(|m| m.due) {
                if now >= due {
                    self.link.send_metadata();
                    continue;
                }
                wake = wake.min(due);
            }
            self.consumer.wait(wake.saturating_duration_since(now));
            if let Some(s) = self.link.sync.as_mut() {
                s.tick(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::http::Secret;

    #[test]
    fn basic_auth_joins_user_and_the_trimmed_password_file() {
        let dir = std::env::temp_dir().join(format!("promlet-basic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pass");
        std::fs::write(&file, "open sesame\n").expect("write");
        let mut client = Client {
            agent: ureq::Agent::new_with_defaults(),
            url: String::new(),
            credentials: Credentials::default(),
        };
        let auth = Auth::Basic {
            username: "Aladdin".to_owned(),
            password: Secret::File(file.to_string_lossy().into_owned()),
        };
        let v = client
            .authorization(&auth)
            .expect("read")
            .map(str::to_owned);
        assert_eq!(v.as_deref(), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        // Twice: the buffers are reused, not appended to.
        let v = client
            .authorization(&auth)
            .expect("read")
            .map(str::to_owned);
        assert_eq!(v.as_deref(), Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        let bearer = Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: Secret::Inline("t0k".to_owned()),
        };
        assert_eq!(
            client.authorization(&bearer).expect("inline"),
            Some("Bearer t0k")
        );
        let missing = Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: Secret::File(dir.join("nope").to_string_lossy().into_owned()),
        };
        let e = client.authorization(&missing).expect_err("missing file");
        assert!(e.is_retryable());
        assert!(e.to_string().starts_with("read credentials file "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retry_policy_lives_on_the_error() {
        let server = SendError::Server {
            status: 503,
            excerpt: String::new(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(server.is_retryable());
        assert_eq!(server.retry_after(), Some(Duration::from_secs(2)));
        let throttled = |retry| SendError::TooManyRequests {
            excerpt: "slow down".to_owned(),
            retry_after: None,
            retry,
        };
        assert!(throttled(true).is_retryable());
        assert!(!throttled(false).is_retryable());
        assert_eq!(
            throttled(true).to_string(),
            "http 429 (too many requests): \"slow down\""
        );
        let rejected = SendError::Rejected {
            status: 400,
            excerpt: "out of order sample".to_owned(),
        };
        assert!(!rejected.is_retryable());
        assert_eq!(rejected.to_string(), "http 400: \"out of order sample\"");
        let net = SendError::Network(ureq::Error::BadUri(
            "http://user:hunter2@example.com/x".to_owned(),
        ));
        assert!(net.is_retryable());
        assert_eq!(net.to_string(), "no answer: bad url");
    }

    #[test]
    fn tls_failures_read_as_a_scrape_words_them() {
        use rustls::{CertificateError, OtherError};
        let ca_as_leaf = || {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                webpki::Error::CaUsedAsEndEntity,
            ))))
        };
        let cases = [
            // As ureq returns them: inside an io::Error from the handshake, or bare.
            (
                ureq::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    ca_as_leaf(),
                )),
                "no answer: x509: certificate signed by unknown authority \
                 (a CA certificate presented as the server's own)",
            ),
            (
                ureq::Error::Rustls(rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                )),
                "no answer: x509: certificate signed by unknown authority",
            ),
            (
                ureq::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                )),
                "no answer: remote error: tls: certificate required",
            ),
        ];
        for (error, want) in cases {
            let said = SendError::Network(error).to_string();
            assert_eq!(said, want);
            assert!(!said.contains("Other") && !said.contains("io: "), "{said}");
        }
    }

    #[test]
    fn the_endpoint_key_is_pinned() {
        let cfg = crate::config::Config::parse(
            "remote_write:\n  - url: http://r:9090/api/v1/write\n    name: a\n",
            std::path::Path::new("t.yml"),
            std::path::Path::new("."),
        )
        .expect("config");
        let rw = &cfg.remote_write[0];
        // FNV-1a of "http://r:9090/api/v1/write\xffa", computed independently (Python). A ring
        // keeps cursors by this value: it must never change.
        assert_eq!(endpoint_key(rw), 0x10c1_2747_0ee0_4c44);
        let mut other = rw.clone();
        other.name = "b".to_owned();
        assert_ne!(endpoint_key(&other), endpoint_key(rw));
    }
}
