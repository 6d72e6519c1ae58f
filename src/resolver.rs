//! Host names of targets resolved off the loop (issue 17).
//!
//! `getaddrinfo` blocks, for as long as the name servers make it: glibc waits 5 s a try, two
//! tries, for each search domain. Called on the loop, one silent DNS server stalls every
//! target. So the loop never calls it: a [`Resolver`] hands names to one plain thread,
//! `promlet-resolve`, started when the first name needs it (a config of IP targets runs
//! without it), and awaits the answer on a channel while the loop goes on.
//!
//! - **One lookup per name in flight.** The first target that needs a name queues a
//!   request; every other target that needs it meanwhile awaits the same answer.
//! - **A cache per name**, for [`SUCCESS_TTL`] after an answer and [`FAILURE_TTL`] after a
//!   failure (the cache keeps names, not ports: `node:9100` and `node:9101` share an
//!   entry). A caller that could not connect to any address forgets a good answer
//!   ([`Resolver::forget`]), so its next scrape asks again.
//! - **A bounded queue** of [`QUEUE`] names: a lookup that finds it full fails at once
//!   with that reason and is asked again at the caller's next try; the loop never waits
//!   for room.
//!
//! Lookups run one at a time: a name whose servers are silent delays the names queued
//! behind it (each caller still gives up at its own deadline). A pool of threads was
//! rejected: the names of one node are a handful, they usually share their servers, and a
//! thread costs its stack on a 512 MiB board.
//!
//! Errors read as Go's `net.DNSError` (`lookup NAME: no such host`): getaddrinfo does not
//! say which server answered, so there is no `on SERVER:53`, exactly as Go's cgo resolver
//! words them; see [`DnsError`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::{self, Receiver, Sender};

/// How long an answer is used. glibc's getaddrinfo does not return the record's TTL;
/// 30 s is what CoreDNS's default Corefile caches for (`cache 30`), the usual server of
/// the Kubernetes service names promlet scrapes, so a changed record reaches promlet
/// about as soon as it reaches the pods of the cluster. A connection failure drops the
/// answer sooner ([`Resolver::forget`]).
pub const SUCCESS_TTL: Duration = Duration::from_secs(30);
/// How long a failure is kept: short, so a name that starts to resolve (a service just
/// created) is picked up within a few seconds, yet long enough that targets scraped every
/// second do not send a lookup each to a server that answers `no such host` at once.
pub const FAILURE_TTL: Duration = Duration::from_secs(5);
/// Names waiting for the resolver thread, beyond the one it is looking up. A node's config
/// names a few services; this many waiting means the servers are not answering, and a
/// longer queue would only make the last answer later.
pub const QUEUE: usize = 32;

/// Why a name did not resolve: Go's `DNSError.Err` where Go has words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `EAI_NONAME`/`EAI_NODATA`: Go's `no such host`.
    NotFound,
    /// `EAI_AGAIN`: the servers did not answer in time, or answered with a failure.
    Temporary,
    /// `EAI_FAIL`.
    Failed,
    /// An answer without any address (Go: `no suitable address found`).
    NoAddress,
    /// The caller's deadline (the scrape's timeout) passed while the lookup ran: Go maps a
    /// context deadline during a lookup to `i/o timeout`.
    Timeout,
    /// The queue of the resolver thread was full ([`QUEUE`]).
    QueueFull,
    /// The resolver thread could not be started, or is gone.
    Unavailable(Arc<str>),
    /// Any other failure, in the C library's (or the OS's) words.
    Other(Arc<str>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotFound => f.write_str("no such host"),
            Reason::Temporary => f.write_str("temporary failure in name resolution"),
            Reason::Failed => f.write_str("non-recoverable failure in name resolution"),
            Reason::NoAddress => f.write_str("no suitable address found"),
            Reason::Timeout => f.write_str("i/o timeout"),
            Reason::QueueFull => write!(
                f,
                "resolver queue full ({QUEUE} other names waiting); asked again at the next try"
            ),
            Reason::Unavailable(why) => write!(f, "no resolver thread: {why}"),
            Reason::Other(text) => f.write_str(text),
        }
    }
}

/// A name that did not resolve, displayed as Go's `net.DNSError`: `lookup NAME: REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsError {
    /// The name looked up (shared with the cache: cloning it does not allocate).
    pub name: Arc<str>,
    /// Why it failed.
    pub reason: Reason,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lookup {}: {}", self.name, self.reason)
    }
}

impl std::error::Error for DnsError {}

/// The texts glibc's and musl's `gai_strerror` give, and what each means. Rust's
/// `to_socket_addrs` hands over only the text (`failed to lookup address information:
/// TEXT`), and calling getaddrinfo for its code would take `unsafe`.
const GAI_TEXTS: [(&str, Reason); 8] = [
    ("Name or service not known", Reason::NotFound),
    ("No address associated with hostname", Reason::NotFound),
    ("Name does not resolve", Reason::NotFound),
    ("Name has no usable address", Reason::NotFound),
    ("Temporary failure in name resolution", Reason::Temporary),
    ("Try again", Reason::Temporary),
    ("Non-recoverable failure in name resolution", Reason::Failed),
    ("Non-recoverable error", Reason::Failed),
];

/// What a failed `to_socket_addrs` means, from its error.
pub fn reason_of(e: &io::Error) -> Reason {
    let text = e.to_string();
    let detail = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    GAI_TEXTS
        .iter()
        .find(|(t, _)| *t == detail)
        .map_or_else(|| Reason::Other(detail.into()), |(_, r)| r.clone())
}

/// Looks `name` up with the system's resolver (blocking: the resolver thread's job).
fn system_lookup(name: &str) -> Result<Vec<IpAddr>, Reason> {
    let found = (name, 0).to_socket_addrs().map_err(|e| reason_of(&e))?;
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in found {
        // getaddrinfo lists an address once per socket type unless told the type.
        if !ips.contains(&a.ip()) {
            ips.push(a.ip());
        }
    }
    if ips.is_empty() {
        return Err(Reason::NoAddress);
    }
    Ok(ips)
}

/// An answer of the resolver thread, stamped when it was made.
type Answer = (Result<Vec<IpAddr>, Reason>, Instant);

/// One name for the resolver thread and where its answer goes.
#[derive(Debug)]
pub struct Request {
    name: Arc<str>,
    reply: Sender<Answer>,
}

/// The resolver thread: answers requests one at a time until the loop side is gone.
fn serve(requests: mpsc::Receiver<Request>, lookup: fn(&str) -> Result<Vec<IpAddr>, Reason>) {
    for r in requests {
        let answer = lookup(&r.name);
        // The reply channel has room for its one answer; nobody waiting is fine too.
        let _ = r.reply.try_send((answer, Instant::now()));
    }
}

/// A cached name: being looked up, or answered until a deadline.
#[derive(Debug)]
enum Entry {
    /// The lookup's answer will come on this channel; every waiter holds a clone.
    Pending(Receiver<Answer>),
    /// The answer, used until `until`.
    Done {
        answer: Result<Rc<[IpAddr]>, DnsError>,
        until: Instant,
    },
}

/// The resolver thread, as far as the loop knows it.
#[derive(Debug)]
enum Thread {
    /// Not needed yet.
    NotStarted,
    /// Takes requests on this queue.
    Running(SyncSender<Request>),
}

/// What a lookup does next.
#[derive(Debug)]
enum Step {
    /// Answered from the cache, or failed without asking.
    Ready(Result<Rc<[IpAddr]>, DnsError>),
    /// Wait for this lookup's answer.
    Wait(Receiver<Answer>),
}

/// The loop's side of the resolver: the cache, and the queue to the thread. Loop thread
/// only (it is `!Send`); see the module doc.
#[derive(Debug)]
pub struct Resolver {
    cache: RefCell<HashMap<Arc<str>, Entry>>,
    thread: RefCell<Thread>,
}

thread_local! {
    /// The resolver of the loop running on this thread (promlet runs one loop, on main).
    static LOOP: Rc<Resolver> = Rc::new(Resolver::new());
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::new()
    }
}

impl Resolver {
    /// A resolver whose thread starts at the first name it is asked for.
    pub fn new() -> Resolver {
        Resolver {
            cache: RefCell::new(HashMap::new()),
            thread: RefCell::new(Thread::NotStarted),
        }
    }

    /// The resolver of this thread's loop, shared by every client on it.
    pub fn of_this_thread() -> Rc<Resolver> {
        LOOP.with(Rc::clone)
    }

    /// A resolver whose requests go to `queue` instead of a thread (tests answer them).
    #[cfg(test)]
    pub(crate) fn with_queue(queue: SyncSender<Request>) -> Resolver {
        Resolver {
            cache: RefCell::new(HashMap::new()),
            thread: RefCell::new(Thread::Running(queue)),
        }
    }

    /// The addresses of `name` (a host name, not an IP literal): from the cache, or from
    /// the resolver thread without blocking the loop. Cancel-safe: a caller dropped while it
    /// waits (its deadline passed) leaves the lookup running for the others and the cache.
    pub async fn lookup(&self, name: &str) -> Result<Rc<[IpAddr]>, DnsError> {
        loop {
            let rx = match self.begin(name, Instant::now()) {
                Step::Ready(answer) => return answer,
                Step::Wait(rx) => rx,
            };
            match rx.recv().await {
                Ok(answer) => return self.store(name, answer),
                // The answer went to another waiter, which cached it: read it from there.
                Err(_) if !self.is_pending_on(name, &rx) => {}
                // The thread dropped the request unanswered: it is gone.
                Err(_) => {
                    let key = self.key(name);
                    self.cache.borrow_mut().remove(name);
                    return Err(DnsError {
                        name: key,
                        reason: Reason::Unavailable("the resolver thread stopped".into()),
                    });
                }
            }
        }
    }

    /// Drops a good answer for `name` (its addresses refused connections): the next lookup
    /// asks again. A lookup under way is left alone.
    pub fn forget(&self, name: &str) {
        let mut cache = self.cache.borrow_mut();
        if matches!(cache.get(name), Some(Entry::Done { answer: Ok(_), .. })) {
            cache.remove(name);
        }
    }

    /// The error of a caller whose deadline passed while it waited for `name`.
    pub fn timed_out(&self, name: &str) -> DnsError {
        DnsError {
            name: self.key(name),
            reason: Reason::Timeout,
        }
    }

    /// The cache's copy of `name` if it has one (no allocation), else a new one.
    fn key(&self, name: &str) -> Arc<str> {
        self.cache
            .borrow()
            .get_key_value(name)
            .map_or_else(|| name.into(), |(k, _)| Arc::clone(k))
    }

    fn is_pending_on(&self, name: &str, rx: &Receiver<Answer>) -> bool {
        matches!(self.cache.borrow().get(name), Some(Entry::Pending(p)) if p.same_channel(rx))
    }

    /// A fresh cached answer, the lookup under way, or a new lookup queued.
    fn begin(&self, name: &str, now: Instant) -> Step {
        let mut cache = self.cache.borrow_mut();
        match cache.get(name) {
            Some(Entry::Done { answer, until }) if now < *until => {
                return Step::Ready(answer.clone())
            }
            Some(Entry::Pending(rx)) => return Step::Wait(rx.clone()),
            _ => {}
        }
        // A miss, at most once per name and TTL: the time to let go of names no target
        // asks for any more (reloads, redirects).
        cache.retain(|_, e| !matches!(e, Entry::Done { until, .. } if *until <= now));
        let key: Arc<str> = name.into();
        let (reply, rx) = channel::bounded(1);
        let request = Request {
            name: Arc::clone(&key),
            reply,
        };
        match self.send(request) {
            Ok(()) => {
                cache.insert(key, Entry::Pending(rx.clone()));
                Step::Wait(rx)
            }
            // Not cached: the next try asks again.
            Err(reason) => Step::Ready(Err(DnsError { name: key, reason })),
        }
    }

    /// Queues `request`, starting the thread if it is not running; never blocks.
    fn send(&self, request: Request) -> Result<(), Reason> {
        let mut thread = self.thread.borrow_mut();
        if let Thread::NotStarted = *thread {
            let (queue, requests) = mpsc::sync_channel(QUEUE);
            std::thread::Builder::new()
                .name("promlet-resolve".to_owned())
                .spawn(move || serve(requests, system_lookup))
                .map_err(|e| Reason::Unavailable(e.to_string().into()))?;
            *thread = Thread::Running(queue);
        }
        let Thread::Running(queue) = &*thread else {
            return Err(Reason::Unavailable("not started".into()));
        };
        match queue.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Reason::QueueFull),
            Err(TrySendError::Disconnected(_)) => {
                // Started again at the next lookup.
                *thread = Thread::NotStarted;
                Err(Reason::Unavailable("the resolver thread stopped".into()))
            }
        }
    }

    /// Caches the answer for `name` and returns it.
    fn store(&self, name: &str, (answer, at): Answer) -> Result<Rc<[IpAddr]>, DnsError> {
        let key = self.key(name);
        let (answer, ttl) = match answer {
            Ok(ips) => (Ok(Rc::from(ips)), SUCCESS_TTL),
            Err(reason) => (
                Err(DnsError {
                    name: Arc::clone(&key),
                    reason,
                }),
                FAILURE_TTL,
            ),
        };
        let until = at + ttl;
        self.cache.borrow_mut().insert(
            key,
            Entry::Done {
                answer: answer.clone(),
                until,
            },
        );
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::future::{block_on, poll_once};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A resolver with a queue of `bound` and the test's end of it.
    fn resolver(bound: usize) -> (Resolver, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::sync_channel(bound);
        (Resolver::with_queue(tx), rx)
    }

    #[test]
    fn answers_are_cached_for_their_ttl() {
        let (r, requests) = resolver(4);
        let t0 = Instant::now();
        let Step::Wait(rx) = r.begin("node", t0) else {
            panic!("a miss waits")
        };
        let asked = requests.try_recv().expect("one request");
        assert_eq!(&*asked.name, "node");
        let ok = r.store("node", (Ok(vec![ip(1)]), t0));
        assert_eq!(ok.as_deref(), Ok(&[ip(1)][..]));
        drop(rx);
        // Fresh until the TTL, then asked again.
        let just_before = t0 + SUCCESS_TTL - Duration::from_millis(1);
        assert!(matches!(r.begin("node", just_before), Step::Ready(Ok(a)) if *a == [ip(1)]));
        assert!(requests.try_recv().is_err());
        assert!(matches!(r.begin("node", t0 + SUCCESS_TTL), Step::Wait(_)));
        assert!(requests.try_recv().is_ok());
        // A failure is kept for FAILURE_TTL.
        let failed = r.store("node", (Err(Reason::NotFound), t0));
        assert_eq!(
            failed.map_err(|e| e.to_string()),
            Err("lookup node: no such host".to_owned())
        );
        let before = t0 + FAILURE_TTL - Duration::from_millis(1);
        assert!(matches!(
            r.begin("node", before),
            Step::Ready(Err(DnsError {
                reason: Reason::NotFound,
                ..
            }))
        ));
        assert!(requests.try_recv().is_err());
        assert!(matches!(r.begin("node", t0 + FAILURE_TTL), Step::Wait(_)));
        assert!(requests.try_recv().is_ok());
    }

    #[test]
    fn a_refused_connection_forgets_a_good_answer_only() {
        let (r, requests) = resolver(4);
        let t0 = Instant::now();
        let _ = r.store("a", (Ok(vec![ip(1)]), t0));
        let _ = r.store("b", (Err(Reason::NotFound), t0));
        r.forget("a");
        r.forget("b");
        assert!(matches!(r.begin("a", t0), Step::Wait(_)));
        assert!(matches!(r.begin("b", t0), Step::Ready(Err(_))));
        assert_eq!(requests.try_iter().count(), 1);
        // A lookup under way stays.
        r.forget("a");
        assert!(matches!(r.begin("a", t0), Step::Wait(_)));
        assert_eq!(requests.try_iter().count(), 0);
    }

    #[test]
    fn one_lookup_per_name_in_flight_answers_every_waiter() {
        let (r, requests) = resolver(4);
        let mut waiters: Vec<_> = (0..5).map(|_| Box::pin(r.lookup("svc.ns.svc"))).collect();
        let mut other = Box::pin(r.lookup("other"));
        for w in &mut waiters {
            assert!(block_on(poll_once(w.as_mut())).is_none());
        }
        assert!(block_on(poll_once(other.as_mut())).is_none());
        let asked: Vec<Request> = requests.try_iter().collect();
        let names: Vec<&str> = asked.iter().map(|q| &*q.name).collect();
        assert_eq!(names, ["svc.ns.svc", "other"]);
        // One waiter gives up (its deadline): the others still get the answer.
        drop(waiters.pop());
        let _ = asked[0]
            .reply
            .try_send((Ok(vec![ip(7), ip(8)]), Instant::now()));
        drop(asked);
        for w in waiters {
            assert_eq!(block_on(w).as_deref(), Ok(&[ip(7), ip(8)][..]));
        }
        // The other name's request was dropped unanswered: its thread is gone.
        let e = block_on(other).expect_err("no answer");
        assert_eq!(
            e.to_string(),
            "lookup other: no resolver thread: the resolver thread stopped"
        );
        // Cached: no new request.
        assert_eq!(
            block_on(r.lookup("svc.ns.svc")).as_deref(),
            Ok(&[ip(7), ip(8)][..])
        );
        assert!(requests.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_fails_the_lookup_at_once() {
        let (r, requests) = resolver(2);
        let mut a = Box::pin(r.lookup("a"));
        let mut b = Box::pin(r.lookup("b"));
        assert!(block_on(poll_once(a.as_mut())).is_none());
        assert!(block_on(poll_once(b.as_mut())).is_none());
        let e = block_on(r.lookup("c")).expect_err("full");
        assert_eq!(e.reason, Reason::QueueFull);
        assert_eq!(
            e.to_string(),
            "lookup c: resolver queue full (32 other names waiting); asked again at the next try"
        );
        // A name already queued is still shared, and `c` was not cached.
        let mut a2 = Box::pin(r.lookup("a"));
        assert!(block_on(poll_once(a2.as_mut())).is_none());
        let first = requests.try_recv().expect("a");
        let _ = first.reply.try_send((Ok(vec![ip(1)]), Instant::now()));
        // Answered: the thread lets go of the request, which closes the reply channel.
        drop(first);
        assert!(block_on(a).is_ok() && block_on(a2).is_ok());
        let mut c = Box::pin(r.lookup("c"));
        assert!(block_on(poll_once(c.as_mut())).is_none());
        let names: Vec<String> = requests.try_iter().map(|q| q.name.to_string()).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn errors_read_as_go_dns_errors() {
        let gai =
            |text: &str| io::Error::other(format!("failed to lookup address information: {text}"));
        let cases = [
            (gai("Name or service not known"), "no such host"),
            (gai("No address associated with hostname"), "no such host"),
            (gai("Name does not resolve"), "no such host"),
            (
                gai("Temporary failure in name resolution"),
                "temporary failure in name resolution",
            ),
            (gai("Try again"), "temporary failure in name resolution"),
            (
                gai("Non-recoverable failure in name resolution"),
                "non-recoverable failure in name resolution",
            ),
            (gai("Something new"), "Something new"),
        ];
        // Anything else in the C library's own words (glibc and musl word errno 24 apart).
        let emfile = io::Error::from_raw_os_error(24);
        let emfile_text = emfile.to_string();
        let cases = cases.into_iter().chain([(emfile, emfile_text.as_str())]);
        for (e, want) in cases {
            let d = DnsError {
                name: "kube-state-metrics.kube-system.svc".into(),
                reason: reason_of(&e),
            };
            assert_eq!(
                d.to_string(),
                format!("lookup kube-state-metrics.kube-system.svc: {want}"),
                "{e}"
            );
        }
        let r = Resolver::new();
        assert_eq!(r.timed_out("node").to_string(), "lookup node: i/o timeout");
        assert_eq!(
            DnsError {
                name: "n".into(),
                reason: Reason::NoAddress
            }
            .to_string(),
            "lookup n: no suitable address found"
        );
    }

    #[test]
    fn the_thread_answers_in_order_and_stops_with_its_queue() {
        fn fake(name: &str) -> Result<Vec<IpAddr>, Reason> {
            match name {
                "good" => Ok(vec![IpAddr::from([10, 0, 0, 1])]),
                _ => Err(Reason::NotFound),
            }
        }
        let (queue, requests) = mpsc::sync_channel(2);
        let (reply, answers) = channel::bounded(2);
        for name in ["good", "bad"] {
            queue
                .try_send(Request {
                    name: name.into(),
                    reply: reply.clone(),
                })
                .expect("room");
        }
        drop(queue);
        // Run on this thread: it returns once the queue is closed and drained.
        serve(requests, fake);
        let got: Vec<_> = std::iter::from_fn(|| answers.try_recv().ok())
            .map(|(a, _)| a)
            .collect();
        assert_eq!(got, [Ok(vec![ip(1)]), Err(Reason::NotFound)]);
    }
}
