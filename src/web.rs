//! promlet's own HTTP/1.1 server: `/metrics`, `/-/healthy`, `/-/ready` and `/-/reload`,
//! answered as Prometheus 2.42's `web/web.go` answers them, on the loop thread's
//! `LocalExecutor` (one task per connection, nothing blocks).
//!
//! # Routes
//! | request | answer |
//! |---|---|
//! | `GET`/`HEAD /metrics` | 200, `text/plain; version=0.0.4; charset=utf-8`, what [`Web::metrics`] renders |
//! | `GET`/`HEAD /-/healthy` | 200 `promlet is Healthy.\n` |
//! | `GET`/`HEAD /-/ready` | 200 `promlet is Ready.\n` once [`Web::ready`] is set, else 503 `Service Unavailable` |
//! | `POST`/`PUT /-/reload` | 200 (empty) when the agent reloaded, else 500 `failed to reload config: <error>\n` |
//! | `GET /-/reload` | 405 `Only POST or PUT requests allowed` |
//! | another method on a route | 405 `Method Not Allowed\n` with `Allow` (httprouter's answer) |
//! | another path | 404 `404 page not found\n` (Go's `http.NotFound`) |
//!
//! A query string is ignored. `/-/reload` always reloads: promlet has no
//! `--web.enable-lifecycle` (Prometheus answers 403 without it); `main` decides whether to
//! serve at all.
//!
//! # Framing
//! Keep-alive is HTTP/1.1's default; `Connection: close` closes after the answer, and HTTP/1.0
//! closes unless it asked for `Connection: keep-alive`. Pipelined requests are answered in
//! order. A request body (`Content-Length`) is read and dropped, at most [`MAX_BODY_BYTES`]
//! (more: 413 and close); `Expect: 100-continue` gets its `100 Continue`. A chunked (any
//! `Transfer-Encoding`) body is answered 411 and the connection closed: nothing promlet serves
//! takes a body, and skipping chunks would be a second parser to harden for no use (Go's server
//! would read it). A malformed head is 400 and close; a head over [`MAX_HEAD_BYTES`] or with more
//! than 64 header lines is 431 and close. Answers carry `Content-Length` and `Date`, never a body
//! on `HEAD` (its `Content-Length` is the `GET` body's).
//!
//! # Bounds
//! A request (head and body) must arrive whole within [`HEAD_TIMEOUT`] of its first byte — of
//! the connection's opening, for its first request — as Go's `ReadHeaderTimeout` bounds a head;
//! a keep-alive connection may wait [`TIMEOUT`] idle for that first byte, and has [`TIMEOUT`]
//! to take each answer. Past a bound the connection is closed without an answer.
//!
//! At most [`MAX_CONNECTIONS`] connections at once. A connection accepted over that closes one
//! lingering after its last answer if there is one, else the one that has waited longest for
//! a request head — idle keep-alive, or a client still trickling its head (slowloris) —
//! counted in [`WebStats::evicted_connections`]. Only when every connection is busy with a
//! request (reading its body, waiting for a reload, taking its answer) is the new one closed
//! at once instead ([`WebStats::rejected_connections`]). So a flood of slow or idle
//! connections never starves a client that sends its request at once, such as a kubelet's
//! `/-/healthy` or `/-/ready` probe: it takes the slot of the slowest, and its head is read
//! before it could itself be the longest waiting (the accept loop lets every connection task
//! run between two accepts). A flood could take a slot from a probe only by opening
//! [`MAX_CONNECTIONS`] connections between the probe's connect and the arrival of its head. A
//! busy slot is held at most [`HEAD_TIMEOUT`] by a slow body, [`TIMEOUT`] by a client that
//! does not read its answer, and by a `/-/reload` until the reload serving it ends (reloads
//! start at most once a second, one serving all that wait). Rejected alternatives: a slot reserved for probes (the path is only known once the
//! head is read, which is what a slowloris withholds), and answering probes over the cap (a
//! flood of those would be unbounded).
//!
//! Memory per connection: one
//! read buffer (1 KiB, doubled up to [`MAX_HEAD_BYTES`] when a head needs it, then kept), the
//! answer's head, and the `/metrics` page while it is being sent, all reused for the
//! connection's next request.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::io::{self, Write as _};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};

use crate::parse::decimal;
use crate::selfmetrics::{family, sample_u64, Kind};

/// The largest request head (request line, headers, blank line) read: 8 KiB holds any header
/// a scraper or `curl` sends many times over; Go's 1 MiB default is for browsers with cookies.
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// The largest request body read (and dropped): nothing served takes a body, so this only has
/// to cover a client that posts a small one to `/-/reload`.
pub const MAX_BODY_BYTES: u64 = 64 << 10;
/// Connections served at once. The clients are a Prometheus or two, a kubelet probe and an
/// operator's `curl`; 32 leaves room for all with keep-alive and caps the memory a flood can take
/// (32 × 8 KiB of read buffers). Over it, the connection waiting longest for a head is closed
/// (module doc, Bounds).
pub const MAX_CONNECTIONS: u64 = 32;
/// Time a request has, from its first byte (from the connection's opening, for the first
/// request), to arrive whole: head and the small body promlet reads. A scraper's or probe's
/// request is one ~200-byte segment; 5 s covers four TCP retransmissions of it (0.2 + 0.4 +
/// 0.8 + 1.6 s) on a lossy link, and is well inside a kubelet liveness probe's failure window
/// (3 failures 10 s apart by default), so a client that withholds its head holds a slot for
/// 5 s, not [`TIMEOUT`]. Go's `http.Server` has the idea (`ReadHeaderTimeout`), without a
/// default.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection is kept waiting for its next request's first byte,
/// and the time a connection has to take an answer. Longer than any scrape interval a node
/// would use would keep connections forever; 30 s outlives the common 15 s interval, so a
/// scraper's keep-alive holds.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Header lines a request may have (httparse needs a fixed array; 64 × 32 bytes on the stack).
const MAX_HEADERS: usize = 64;
/// The read buffer a connection starts with: a scraper's request is about 200 bytes.
const FIRST_BUFFER_BYTES: usize = 1 << 10;
/// How long a closing connection reads and drops what the client still sends, after our half of
/// the connection is shut: closing with unread input makes the kernel send a reset, which can
/// destroy the answer before the client reads it. Go's server waits the same 500 ms
/// (`rstAvoidanceDelay`).
const LINGER: Duration = Duration::from_millis(500);
/// At most this much is read while lingering.
const LINGER_BYTES: usize = 256 << 10;
/// The first pause after a transient accept failure (`EMFILE` and kin), doubled up to
/// [`ACCEPT_BACKOFF_MAX`]: the listener stays readable while the error lasts, so retrying at
/// once would spin the loop. Go's `http.Server.Serve` backs off the same way.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between accept retries.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The `/metrics` content type, as client_golang's `promhttp` sends the text format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What Go's `http.Error` and `fmt.Fprintf` answers are sniffed or declared as.
const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Renders the `/metrics` page into the buffer it is given (see [`Web::metrics`]).
pub type Renderer = dyn Fn(&mut Vec<u8>);

/// What the server needs from the agent. All of it lives on the loop thread (`Rc`, not `Arc`).
pub struct Web {
    /// Renders the `/metrics` page (text format 0.0.4) into `out`, which the server clears
    /// first. Called once per `GET` or `HEAD /metrics`; the request being answered is not in
    /// [`Web::stats`] yet (Prometheus counts a request when its handler returns).
    pub metrics: Box<Renderer>,
    /// Set once the ring is open and the config loaded; `/-/ready` answers 503 until then.
    pub ready: Rc<Cell<bool>>,
    /// A `POST`/`PUT /-/reload` sends a reply channel here and waits, without a time limit (as
    /// Prometheus does), for the agent to reload and answer `Ok` or the error's text. The
    /// agent may answer several requests with one reload, one that started after each of them.
    pub reload: smol::channel::Sender<smol::channel::Sender<Result<(), String>>>,
    /// The server's counters; the `metrics` callback can share the `Rc` and call
    /// [`WebStats::render`].
    pub stats: Rc<WebStats>,
}

impl fmt::Debug for Web {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Web")
            .field("ready", &self.ready.get())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Why [`serve`] stopped.
#[derive(Debug)]
pub enum WebError {
    /// Accepting failed in a way retrying cannot cure (the listener is broken: `EBADF`,
    /// `EINVAL`, `ENOTSOCK`, `EFAULT`, or not an OS error).
    Accept(io::Error),
}

impl fmt::Display for WebError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebError::Accept(e) => write!(f, "accepting web connections: {e}"),
        }
    }
}

impl std::error::Error for WebError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebError::Accept(e) => Some(e),
        }
    }
}

/// The routes requests are counted by, named as Prometheus' `handler` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/-/healthy`.
    Healthy,
    /// `/-/ready`.
    Ready,
    /// `/-/reload`.
    Reload,
    /// `/metrics`.
    Metrics,
    /// Any other path, and requests whose head could not be read.
    Other,
}

impl Route {
    /// Every route, in the order their `handler` labels sort (the order samples are written).
    pub const ALL: [Route; 5] = [
        Route::Healthy,
        Route::Ready,
        Route::Reload,
        Route::Metrics,
        Route::Other,
    ];

    /// The `handler` label value: the path, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Healthy => "/-/healthy",
            Route::Ready => "/-/ready",
            Route::Reload => "/-/reload",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }

    fn index(self) -> usize {
        match self {
            Route::Healthy => 0,
            Route::Ready => 1,
            Route::Reload => 2,
            Route::Metrics => 3,
            Route::Other => 4,
        }
    }

    /// The route of a request target; the query string is ignored.
    fn of(target: &str) -> Route {
        let path = target.split('?').next().unwrap_or(target);
        match path {
            "/-/healthy" => Route::Healthy,
            "/-/ready" => Route::Ready,
            "/-/reload" => Route::Reload,
            "/metrics" => Route::Metrics,
            _ => Route::Other,
        }
    }
}

/// The statuses the server answers with (`100 Continue` aside, which is not an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    PayloadTooLarge,
    HeaderFieldsTooLarge,
    InternalServerError,
    ServiceUnavailable,
}

impl Status {
    /// Every status, by code (the order samples are written).
    const ALL: [Status; 9] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::LengthRequired,
        Status::PayloadTooLarge,
        Status::HeaderFieldsTooLarge,
        Status::InternalServerError,
        Status::ServiceUnavailable,
    ];

    fn index(self) -> usize {
        match self {
            Status::Ok => 0,
            Status::BadRequest => 1,
            Status::NotFound => 2,
            Status::MethodNotAllowed => 3,
            Status::LengthRequired => 4,
            Status::PayloadTooLarge => 5,
            Status::HeaderFieldsTooLarge => 6,
            Status::InternalServerError => 7,
            Status::ServiceUnavailable => 8,
        }
    }

    /// The code, as the status line and the `code` label write it.
    fn code(self) -> &'static str {
        match self {
            Status::Ok => "200",
            Status::BadRequest => "400",
            Status::NotFound => "404",
            Status::MethodNotAllowed => "405",
            Status::LengthRequired => "411",
            Status::PayloadTooLarge => "413",
            Status::HeaderFieldsTooLarge => "431",
            Status::InternalServerError => "500",
            Status::ServiceUnavailable => "503",
        }
    }

    /// The reason phrase, as Go's `http.StatusText` words it.
    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::PayloadTooLarge => "Request Entity Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::InternalServerError => "Internal Server Error",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// What the server has done, read by the agent's `/metrics` callback (same thread, so plain
/// `Cell`s). Rendered by [`WebStats::render`] as Prometheus' `prometheus_http_requests_total`
/// plus two `promlet_web_*` families.
#[derive(Debug, Default)]
pub struct WebStats {
    /// Answers given, by route and status (`Route::index`, `Status::index`).
    requests: [[Cell<u64>; Status::ALL.len()]; Route::ALL.len()],
    /// Connections closed at once because [`MAX_CONNECTIONS`] were open and busy.
    rejected_connections: Cell<u64>,
    /// Connections closed, waiting for a head, to make room for a new one.
    evicted_connections: Cell<u64>,
    /// Connections being served now.
    open_connections: Cell<u64>,
}

impl WebStats {
    /// Answers given on `route` with status `code` (0 for a code the server never answers).
    pub fn requests(&self, route: Route, code: u16) -> u64 {
        Status::ALL
            .iter()
            .find(|s| s.code().parse() == Ok(code))
            .map_or(0, |s| self.cell(route, *s).get())
    }

    /// Connections accepted and closed at once because [`MAX_CONNECTIONS`] were open and
    /// none of them waited for a request head.
    pub fn rejected_connections(&self) -> u64 {
        self.rejected_connections.get()
    }

    /// Connections closed while they waited for a request head, to make room for a new one.
    pub fn evicted_connections(&self) -> u64 {
        self.evicted_connections.get()
    }

    /// Connections being served now.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.get()
    }

    /// Appends the server's families: `prometheus_http_requests_total{code,handler}` (only the
    /// pairs answered at least once, and the family only if there is one, as client_golang
    /// leaves out a vector's untouched children), `promlet_web_rejected_connections_total`,
    /// `promlet_web_evicted_connections_total` and `promlet_web_open_connections`. No
    /// allocation once `out` has room.
    pub fn render(&self, out: &mut Vec<u8>) {
        const REQUESTS: &str = "prometheus_http_requests_total";
        let mut header = false;
        for status in Status::ALL {
            for route in Route::ALL {
                let n = self.cell(route, status).get();
                if n == 0 {
                    continue;
                }
                if !header {
                    family(out, REQUESTS, "Counter of HTTP requests.", Kind::Counter);
                    header = true;
                }
                let labels = [("code", status.code()), ("handler", route.as_str())];
                sample_u64(out, REQUESTS, &labels, n);
            }
        }
        const REJECTED: &str = "promlet_web_rejected_connections_total";
        family(
            out,
            REJECTED,
            "Web connections closed as soon as accepted because 32 were already open and busy.",
            Kind::Counter,
        );
        sample_u64(out, REJECTED, &[], self.rejected_connections.get());
        const EVICTED: &str = "promlet_web_evicted_connections_total";
        family(
            out,
            EVICTED,
            "Web connections closed while waiting for a request, to make room for a new one.",
            Kind::Counter,
        );
        sample_u64(out, EVICTED, &[], self.evicted_connections.get());
        const OPEN: &str = "promlet_web_open_connections";
        family(out, OPEN, "Web connections being served.", Kind::Gauge);
        sample_u64(out, OPEN, &[], self.open_connections.get());
    }

    fn cell(&self, route: Route, status: Status) -> &Cell<u64> {
        &self.requests[route.index()][status.index()]
    }

    fn count(&self, route: Route, status: Status) {
        let cell = self.cell(route, status);
        cell.set(cell.get().saturating_add(1));
    }
}

/// Serves connections from `listener` until accepting fails fatally, and returns that error;
/// each connection is a task spawned (and detached) on `ex`, so this future and `ex` must run
/// on the same thread (`ex.run(serve(..))`).
///
/// Transient accept errors (a full fd table, a connection reset while queued) are retried
/// after a pause that doubles from 5 ms to 1 s; the first of a run is logged at warn, the rest
/// at debug. The [`MAX_CONNECTIONS`] bound counts the connections of this call; over it, the
/// one waiting longest for a request head is closed (module doc, Bounds).
pub async fn serve(
    listener: TcpListener,
    web: Rc<Web>,
    ex: Rc<LocalExecutor<'static>>,
) -> WebError {
    // The connections holding a slot; one whose task has ended holds the last reference.
    let mut open: Vec<Rc<Tracked>> = Vec::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(e) => {
                if !transient(&e) {
                    return WebError::Accept(e);
                }
                if backoff == ACCEPT_BACKOFF_MIN {
                    log::warn!("web: accepting a connection: {e}; retrying");
                } else {
                    log::debug!("web: accepting a connection: {e}; retrying");
                }
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let stats = &web.stats;
        open.retain(|t| Rc::strong_count(t) > 1);
        if u64::try_from(open.len()).unwrap_or(u64::MAX) >= MAX_CONNECTIONS {
            let longest = open
                .iter()
                .enumerate()
                .map(|(i, t)| (t.phase.get(), i))
                .filter(|(phase, _)| *phase != Phase::Busy)
                .min();
            match longest {
                Some((_, i)) => {
                    // Its slot is free from here; the task closes the socket when it next runs.
                    open.swap_remove(i).evict.close();
                    let evicted = &stats.evicted_connections;
                    evicted.set(evicted.get().saturating_add(1));
                }
                None => {
                    let rejected = &stats.rejected_connections;
                    rejected.set(rejected.get().saturating_add(1));
                    log::debug!(
                        "web: {peer}: {MAX_CONNECTIONS} connections busy, closing this one"
                    );
                    drop(stream);
                    continue;
                }
            }
        }
        // Taken here, not in the task, so the bound holds before the task first runs.
        let slot = Slot::take(Rc::clone(&web));
        let (evict, notice) = smol::channel::bounded(1);
        let tracked = Rc::new(Tracked {
            phase: Cell::new(Phase::Waiting(Instant::now())),
            evict,
        });
        open.push(Rc::clone(&tracked));
        ex.spawn(async move {
            let conn = Conn {
                web: &slot.0,
                tracked: &tracked,
                notice,
            };
            if let Err(e) = connection(stream, conn).await {
                log::debug!("web: {peer}: {e}");
            }
        })
        .detach();
        // Let the new connection read what it was sent (and every other task run) before the
        // next accept: a burst of accepts must not evict a probe before it read its head.
        smol::future::yield_now().await;
    }
}

/// A connection as the accept loop sees it.
struct Tracked {
    /// What it is doing; the accept loop evicts the least of those not [`Phase::Busy`].
    phase: Cell<Phase>,
    /// Closed to evict the connection: its wait for a head (or its linger) ends and it closes.
    evict: smol::channel::Sender<()>,
}

/// What a connection is doing, in the order connections are evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Answered for the last time, lingering before the close ([`LINGER`]): nothing is lost.
    Closing,
    /// Waiting for a request head since then (its opening, or its last answer): the longest
    /// waiting first.
    Waiting(Instant),
    /// Serving a request (reading its body, waiting for a reload, writing its answer).
    Busy,
}

/// What a connection's task holds: the server, its own [`Tracked`], and the receiving end of
/// its eviction notice.
struct Conn<'a> {
    web: &'a Web,
    tracked: &'a Tracked,
    notice: smol::channel::Receiver<()>,
}

impl Conn<'_> {
    /// Resolves once the accept loop has evicted this connection (never before).
    async fn evicted(&self) {
        // Nothing is ever sent: the channel only closes.
        let _ = self.notice.recv().await;
    }
}

/// One of the [`MAX_CONNECTIONS`] places, given back when the connection's task ends (or is
/// dropped with the executor).
struct Slot(Rc<Web>);

impl Slot {
    fn take(web: Rc<Web>) -> Slot {
        let open = &web.stats.open_connections;
        open.set(open.get() + 1);
        Slot(web)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = &self.0.stats.open_connections;
        open.set(open.get().saturating_sub(1));
    }
}

/// Whether an accept error is worth retrying: everything but a broken listener. Linux passes
/// pending network errors of the new connection to `accept` (accept(2) says to retry them), and
/// `EMFILE`/`ENFILE`/`ENOBUFS`/`ENOMEM` pass when other connections close.
fn transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    match Errno::from_io_error(e) {
        Some(errno) => ![Errno::BADF, Errno::INVAL, Errno::NOTSOCK, Errno::FAULT].contains(&errno),
        None => false,
    }
}

/// A request head, reduced to what the server acts on (nothing borrowed from the buffer, which
/// is read into again for the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    method: Method,
    route: Route,
    /// Whether the connection stays open after the answer.
    keep_alive: bool,
    /// HTTP/1.0 (else 1.1): a kept-alive 1.0 connection is answered `Connection: keep-alive`.
    http10: bool,
    body: Body,
    /// `Expect: 100-continue`.
    expect_continue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// `Content-Length` bytes (0 without the header).
    Length(u64),
    /// A `Transfer-Encoding`: not read (411).
    Chunked,
}

/// Why a head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// 400: not HTTP/1.x, or a `Content-Length` that is not one number.
    Malformed,
    /// 431: more than [`MAX_HEADERS`] header lines.
    TooLarge,
}

/// Parses the head at the start of `buf`: `Ok(None)` if it is not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        _ => Method::Other,
    };
    let route = Route::of(request.path.unwrap_or(""));
    let http10 = request.version == Some(0);
    let (mut close, mut keep) = (false, false);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = decimal(header.value.trim_ascii()).ok_or(Refusal::Malformed)?;
            // Two different lengths would let a proxy and us frame the body differently.
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = header
                .value
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue");
        }
    }
    // Both framings at once is how requests are smuggled; Go refuses it too.
    if chunked && length.is_some() {
        return Err(Refusal::Malformed);
    }
    Ok(Some(Head {
        len,
        method,
        route,
        keep_alive: !close && (!http10 || keep),
        http10,
        body: if chunked {
            Body::Chunked
        } else {
            Body::Length(length.unwrap_or(0))
        },
        expect_continue,
    }))
}

/// Whether `bytes` hold the blank line that ends a head (`\n\n` or `\n\r\n`; httparse takes
/// bare `\n` line ends as Go does).
fn ends_head(bytes: &[u8]) -> bool {
    bytes
        .windows(2)
        .enumerate()
        .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n')))
}

/// What a well-framed request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 with the `/metrics` page.
    Metrics,
    /// Ask the agent to reload: 200 or 500.
    Reload,
    /// A fixed answer.
    Fixed {
        status: Status,
        body: &'static str,
        /// The `Allow` header of a 405.
        allow: Option<&'static str>,
    },
}

/// Routes a request as Prometheus 2.42's router does (`web.go`, httprouter under it).
fn answer(method: Method, route: Route, ready: bool) -> Answer {
    const NOT_ALLOWED: &str = "Method Not Allowed\n";
    let fixed = |status, body| Answer::Fixed {
        status,
        body,
        allow: None,
    };
    let read_only = matches!(method, Method::Get | Method::Head);
    match route {
        Route::Metrics if read_only => Answer::Metrics,
        Route::Healthy if read_only => fixed(Status::Ok, "promlet is Healthy.\n"),
        Route::Ready if read_only && ready => fixed(Status::Ok, "promlet is Ready.\n"),
        Route::Ready if read_only => fixed(Status::ServiceUnavailable, "Service Unavailable"),
        Route::Metrics | Route::Healthy | Route::Ready => Answer::Fixed {
            status: Status::MethodNotAllowed,
            body: NOT_ALLOWED,
            allow: Some("GET, HEAD"),
        },
        Route::Reload => match method {
            Method::Post | Method::Put => Answer::Reload,
            // web.go registers GET /-/reload itself, with its own words.
            Method::Get => fixed(
                Status::MethodNotAllowed,
                "Only POST or PUT requests allowed",
            ),
            _ => Answer::Fixed {
                status: Status::MethodNotAllowed,
                body: NOT_ALLOWED,
                allow: Some("GET, POST, PUT"),
            },
        },
        Route::Other => fixed(Status::NotFound, "404 page not found\n"),
    }
}

/// How the answer leaves the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// HTTP/1.1 keep-alive: no header needed.
    Persist,
    /// A kept-alive HTTP/1.0 connection: `Connection: keep-alive`.
    KeepAlive10,
    /// `Connection: close`, then the server closes.
    Close,
}

/// One answer, ready to be written.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    status: Status,
    body: &'a [u8],
    allow: Option<&'static str>,
    content_type: &'static str,
}

impl Reply<'static> {
    /// The answer to a head that is refused before routing; the body is the status itself, as
    /// Go's `conn.serve` writes it.
    fn refusal(status: Status) -> Reply<'static> {
        let body: &'static str = match status {
            Status::BadRequest => "400 Bad Request",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Request Entity Too Large",
            _ => "431 Request Header Fields Too Large",
        };
        Reply {
            status,
            body: body.as_bytes(),
            allow: None,
            content_type: TEXT_CONTENT_TYPE,
        }
    }
}

/// Serves one connection until it closes, times out, breaks or is evicted.
async fn connection(mut stream: TcpStream, conn: Conn<'_>) -> io::Result<()> {
    let web = conn.web;
    // The head and the body go out as two writes; without this, Nagle holds the body until the
    // client's delayed ACK of the head (40 ms on Linux).
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; FIRST_BUFFER_BYTES];
    let mut filled = 0;
    let mut out = Vec::new();
    let mut page = Vec::new();
    let mut timer = Timer::never();
    let mut first_request = true;
    loop {
        let now = Instant::now();
        conn.tracked.phase.set(Phase::Waiting(now));
        // The request clock starts now when its first byte is here (pipelined) or this is the
        // connection's first request; else the connection idles until a byte comes.
        let head_started = first_request || filled > 0;
        first_request = false;
        timer.set_at(now + if head_started { HEAD_TIMEOUT } else { TIMEOUT });
        // Parsing again after every read would cost O(head²) against a client that sends a
        // byte at a time; a head can only complete in a read that brings its blank line, so
        // only such reads (and the first, which refuses garbage at once) parse.
        let mut parse_now = filled > 0;
        let mut scanned: usize = 0;
        let head = loop {
            if parse_now {
                match parse_head(&buf[..filled]) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(refusal) => {
                        let status = match refusal {
                            Refusal::Malformed => Status::BadRequest,
                            Refusal::TooLarge => Status::HeaderFieldsTooLarge,
                        };
                        web.stats.count(Route::Other, status);
                        let reply = Reply::refusal(status);
                        return refuse(&mut stream, &mut out, &mut buf, &mut timer, reply, &conn)
                            .await;
                    }
                }
            }
            if filled == buf.len() {
                if buf.len() >= MAX_HEAD_BYTES {
                    let status = Status::HeaderFieldsTooLarge;
                    web.stats.count(Route::Other, status);
                    let reply = Reply::refusal(status);
                    return refuse(&mut stream, &mut out, &mut buf, &mut timer, reply, &conn).await;
                }
                buf.resize((buf.len() * 2).min(MAX_HEAD_BYTES), 0);
            }
            let read = timed(&mut timer, stream.read(&mut buf[filled..]));
            let evicted = async {
                conn.evicted().await;
                Err(io::Error::other(
                    "closed while waiting for a request head: a new connection needed the slot",
                ))
            };
            match smol::future::or(read, evicted).await {
                // The client closed: between requests that is the normal end; within a head
                // there is no one left to answer.
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let first = filled == 0;
                    if first && !head_started {
                        timer.set_at(Instant::now() + HEAD_TIMEOUT);
                    }
                    filled += n;
                    // Two bytes back: a blank line may straddle two reads.
                    parse_now = first || ends_head(&buf[scanned.saturating_sub(2)..filled]);
                    scanned = filled;
                }
                // An idle keep-alive connection timing out is the normal end too.
                Err(e) if e.kind() == io::ErrorKind::TimedOut && filled == 0 => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        conn.tracked.phase.set(Phase::Busy);

        let length = match head.body {
            Body::Length(n) if n <= MAX_BODY_BYTES => n,
            Body::Length(_) | Body::Chunked => {
                let status = match head.body {
                    Body::Chunked => Status::LengthRequired,
                    Body::Length(_) => Status::PayloadTooLarge,
                };
                web.stats.count(head.route, status);
                let reply = Reply::refusal(status);
                return refuse(&mut stream, &mut out, &mut buf, &mut timer, reply, &conn).await;
            }
        };
        let mut start = head.len;
        if length > 0 {
            let here = u64::try_from(filled - start).unwrap_or(u64::MAX);
            if head.expect_continue && !head.http10 && here < length {
                timed(
                    &mut timer,
                    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"),
                )
                .await?;
            }
            start = skip_body(
                &mut stream,
                &mut buf,
                &mut filled,
                start,
                length,
                &mut timer,
            )
            .await?;
        }

        let reply = match answer(head.method, head.route, web.ready.get()) {
            Answer::Metrics => {
                page.clear();
                (web.metrics)(&mut page);
                Reply {
                    status: Status::Ok,
                    body: &page,
                    allow: None,
                    content_type: METRICS_CONTENT_TYPE,
                }
            }
            Answer::Reload => {
                page.clear();
                let status = match reload(web).await {
                    Ok(()) => Status::Ok,
                    Err(e) => {
                        // As web.go's reload: http.Error(w, "failed to reload config: "+err, 500).
                        let _ = writeln!(page, "failed to reload config: {e}");
                        Status::InternalServerError
                    }
                };
                Reply {
                    status,
                    body: &page,
                    allow: None,
                    content_type: TEXT_CONTENT_TYPE,
                }
            }
            Answer::Fixed {
                status,
                body,
                allow,
            } => Reply {
                status,
                body: body.as_bytes(),
                allow,
                content_type: TEXT_CONTENT_TYPE,
            },
        };
        web.stats.count(head.route, reply.status);
        let connection = match (head.keep_alive, head.http10) {
            (false, _) => Connection::Close,
            (true, true) => Connection::KeepAlive10,
            (true, false) => Connection::Persist,
        };
        let body_too = head.method != Method::Head;
        write_reply(
            &mut stream,
            &mut out,
            &mut timer,
            reply,
            connection,
            body_too,
        )
        .await?;
        if connection == Connection::Close {
            linger(&mut stream, &mut buf, &mut timer, &conn).await;
            return Ok(());
        }
        // Keep what the client pipelined after this request.
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

/// Reads and drops a body of `length` bytes whose first bytes may already be in
/// `buf[start..filled]`; returns where the input after it starts in `buf` (up to `filled`).
async fn skip_body(
    stream: &mut TcpStream,
    buf: &mut [u8],
    filled: &mut usize,
    start: usize,
    length: u64,
    timer: &mut Timer,
) -> io::Result<usize> {
    let mut start = start;
    let mut left = length;
    loop {
        let here = *filled - start;
        let take = usize::try_from(left).map_or(here, |l| l.min(here));
        start += take;
        left -= u64::try_from(take).unwrap_or(left);
        if left == 0 {
            return Ok(start);
        }
        let n = timed(timer, stream.read(buf)).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed within a request body",
            ));
        }
        *filled = n;
        start = 0;
    }
}

/// Sends the agent a reload request and waits for its answer.
async fn reload(web: &Web) -> Result<(), String> {
    let (reply, answer) = smol::channel::bounded(1);
    if web.reload.send(reply).await.is_err() {
        return Err("the agent takes no reload requests".to_string());
    }
    match answer.recv().await {
        Ok(result) => result,
        Err(_) => Err("the agent dropped the reload request unanswered".to_string()),
    }
}

/// Writes a refusal with `Connection: close`, then closes.
async fn refuse(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    buf: &mut [u8],
    timer: &mut Timer,
    reply: Reply<'_>,
    conn: &Conn<'_>,
) -> io::Result<()> {
    write_reply(stream, out, timer, reply, Connection::Close, true).await?;
    linger(stream, buf, timer, conn).await;
    Ok(())
}

/// Writes the status line, headers and (when `body_too`) the body, within [`TIMEOUT`].
async fn write_reply(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    timer: &mut Timer,
    reply: Reply<'_>,
    connection: Connection,
    body_too: bool,
) -> io::Result<()> {
    out.clear();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    write_head(out, &reply, connection, now);
    timer.set_at(Instant::now() + TIMEOUT);
    timed(timer, stream.write_all(out)).await?;
    if body_too && !reply.body.is_empty() {
        timed(timer, stream.write_all(reply.body)).await?;
    }
    Ok(())
}

/// The status line and headers of `reply`, blank line included; `now` is Unix seconds.
fn write_head(out: &mut Vec<u8>, reply: &Reply<'_>, connection: Connection, now: u64) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(reply.status.code().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reply.status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
    if !reply.body.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(reply.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Writing into a Vec cannot fail; `write!` formats on the stack.
    let _ = write!(out, "Content-Length: {}\r\nDate: ", reply.body.len());
    http_date(out, now);
    out.extend_from_slice(b"\r\n");
    if let Some(allow) = reply.allow {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match connection {
        Connection::Persist => {}
        Connection::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Connection::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// `secs` (Unix time) as an HTTP date, `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
fn http_date(out: &mut Vec<u8>, secs: u64) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (a Thursday).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = DAYS[usize::try_from(days % 7).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    let _ = write!(
        out,
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    );
}

/// Shuts our half of the connection and reads what the client still sends, for at most
/// [`LINGER`] and [`LINGER_BYTES`], so the answer is not lost to a reset (see [`LINGER`]).
/// The connection is the first a new one evicts meanwhile, which ends the linger.
async fn linger(stream: &mut TcpStream, buf: &mut [u8], timer: &mut Timer, conn: &Conn<'_>) {
    conn.tracked.phase.set(Phase::Closing);
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    timer.set_at(Instant::now() + LINGER);
    let mut left = LINGER_BYTES;
    while left > 0 {
        let read = timed(timer, stream.read(buf));
        let evicted = async {
            conn.evicted().await;
            Ok(0)
        };
        match smol::future::or(read, evicted).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Runs `op` until `timer` fires, which ends it with `TimedOut`.
async fn timed<T>(timer: &mut Timer, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    smol::future::or(op, async {
        timer.await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes()) {
            Ok(Some(h)) => h,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn parses_heads() {
        let h = head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET");
        assert_eq!(h.len, 38);
        assert_eq!((h.method, h.route), (Method::Get, Route::Metrics));
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
        assert_eq!(h.body, Body::Length(0));

        let h = head("POST /-/reload HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\ncontent-length: 12\r\nExpect: 100-Continue\r\n\r\n");
        assert_eq!((h.method, h.route), (Method::Post, Route::Reload));
        assert!(!h.keep_alive && h.expect_continue);
        assert_eq!(h.body, Body::Length(12));

        let h = head("GET /-/ready HTTP/1.0\r\n\r\n");
        assert!(h.http10 && !h.keep_alive);
        let h = head("HEAD /-/healthy HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.http10 && h.keep_alive);
        assert_eq!((h.method, h.route), (Method::Head, Route::Healthy));

        let h = head("DELETE /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            (h.method, h.route, h.body),
            (Method::Other, Route::Other, Body::Chunked)
        );
        // The same length twice is one length.
        let h = head("PUT /-/reload HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body, Body::Length(3));
    }

    #[test]
    fn finds_the_end_of_a_head() {
        assert!(ends_head(b"Host: a\r\n\r\n"));
        assert!(ends_head(b"\n\r\n"));
        assert!(ends_head(b"x\n\nGET"));
        assert!(!ends_head(b"Host: a\r\n\r"));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!ends_head(b""));
    }

    #[test]
    fn partial_and_refused_heads() {
        assert_eq!(parse_head(b""), Ok(None));
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost:"), Ok(None));
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert_eq!(parse_head(bad), Err(Refusal::Malformed), "{bad:?}");
        }
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse_head(many.as_bytes()), Err(Refusal::TooLarge));
    }

    #[test]
    fn parse_never_panics_on_prefixes_and_flipped_bytes() {
        let good = b"POST /-/reload?a HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello";
        for end in 0..=good.len() {
            let _ = parse_head(&good[..end]);
        }
        for at in 0..good.len() {
            for flip in [0x01u8, 0x20, 0x80, 0xff] {
                let mut bytes = good.to_vec();
                bytes[at] ^= flip;
                let _ = parse_head(&bytes);
            }
        }
    }

    #[test]
    fn routes_as_prometheus() {
        use Method::*;
        let fixed = |m, r, ready| match answer(m, r, ready) {
            Answer::Fixed {
                status,
                body,
                allow,
            } => (status, body, allow),
            other => panic!("{other:?}"),
        };
        assert_eq!(answer(Get, Route::Metrics, false), Answer::Metrics);
        assert_eq!(answer(Head, Route::Metrics, false), Answer::Metrics);
        assert_eq!(answer(Post, Route::Reload, false), Answer::Reload);
        assert_eq!(answer(Put, Route::Reload, true), Answer::Reload);
        assert_eq!(
            fixed(Get, Route::Healthy, false),
            (Status::Ok, "promlet is Healthy.\n", None)
        );
        assert_eq!(
            fixed(Head, Route::Ready, true),
            (Status::Ok, "promlet is Ready.\n", None)
        );
        assert_eq!(
            fixed(Get, Route::Ready, false),
            (Status::ServiceUnavailable, "Service Unavailable", None)
        );
        assert_eq!(
            fixed(Get, Route::Reload, true),
            (
                Status::MethodNotAllowed,
                "Only POST or PUT requests allowed",
                None
            )
        );
        assert_eq!(
            fixed(Post, Route::Metrics, true),
            (
                Status::MethodNotAllowed,
                "Method Not Allowed\n",
                Some("GET, HEAD")
            )
        );
        assert_eq!(
            fixed(Other, Route::Reload, true),
            (
                Status::MethodNotAllowed,
                "Method Not Allowed\n",
                Some("GET, POST, PUT")
            )
        );
        assert_eq!(
            fixed(Get, Route::Other, true),
            (Status::NotFound, "404 page not found\n", None)
        );
    }

    #[test]
    fn writes_heads() {
        let mut out = Vec::new();
        let reply = Reply {
            status: Status::MethodNotAllowed,
            body: b"Method Not Allowed\n",
            allow: Some("GET, HEAD"),
            content_type: TEXT_CONTENT_TYPE,
        };
        write_head(&mut out, &reply, Connection::Close, 784_111_777);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nAllow: GET, HEAD\r\n\
             Connection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        let empty = Reply {
            status: Status::Ok,
            body: b"",
            allow: None,
            content_type: TEXT_CONTENT_TYPE,
        };
        write_head(&mut out, &empty, Connection::KeepAlive10, 0);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
             Connection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn http_dates() {
        let date = |secs| {
            let mut out = Vec::new();
            http_date(&mut out, secs);
            String::from_utf8(out).expect("ascii")
        };
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn stats_count_and_render() {
        let stats = WebStats::default();
        let mut out = Vec::new();
        stats.render(&mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(!text.contains("prometheus_http_requests_total"), "{text}");
        stats.count(Route::Metrics, Status::Ok);
        stats.count(Route::Metrics, Status::Ok);
        stats.count(Route::Other, Status::NotFound);
        stats.count(Route::Healthy, Status::Ok);
        stats.rejected_connections.set(3);
        stats.evicted_connections.set(5);
        assert_eq!(stats.requests(Route::Metrics, 200), 2);
        assert_eq!(stats.requests(Route::Metrics, 418), 0);
        assert_eq!(stats.rejected_connections(), 3);
        assert_eq!(stats.evicted_connections(), 5);
        let mut out = Vec::new();
        stats.render(&mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "# HELP prometheus_http_requests_total Counter of HTTP requests.\n\
             # TYPE prometheus_http_requests_total counter\n\
             prometheus_http_requests_total{code=\"200\",handler=\"/-/healthy\"} 1\n\
             prometheus_http_requests_total{code=\"200\",handler=\"/metrics\"} 2\n\
             prometheus_http_requests_total{code=\"404\",handler=\"other\"} 1\n\
             # HELP promlet_web_rejected_connections_total Web connections closed as soon as accepted because 32 were already open and busy.\n\
             # TYPE promlet_web_rejected_connections_total counter\n\
             promlet_web_rejected_connections_total 3\n\
             # HELP promlet_web_evicted_connections_total Web connections closed while waiting for a request, to make room for a new one.\n\
             # TYPE promlet_web_evicted_connections_total counter\n\
             promlet_web_evicted_connections_total 5\n\
             # HELP promlet_web_open_connections Web connections being served.\n\
             # TYPE promlet_web_open_connections gauge\n\
             promlet_web_open_connections 0\n"
        );
    }

    #[test]
    fn routes_and_statuses_are_listed_in_label_order() {
        let names: Vec<&str> = Route::ALL.iter().map(|r| r.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        let codes: Vec<&str> = Status::ALL.iter().map(|s| s.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn broken_listener_errors_are_fatal() {
        use rustix::io::Errno;
        assert!(!transient(&io::Error::from_raw_os_error(
            Errno::BADF.raw_os_error()
        )));
        assert!(!transient(&io::Error::other("not an os error")));
        assert!(transient(&io::Error::from_raw_os_error(
            Errno::MFILE.raw_os_error()
        )));
        assert!(transient(&io::Error::from_raw_os_error(
            Errno::CONNABORTED.raw_os_error()
        )));
    }
}
