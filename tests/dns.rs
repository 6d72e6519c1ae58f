//! A DNS server that does not answer must not stall every target (issue 17).
//!
//! promlet runs in a mount namespace of its own (`unshare -m`) where `/etc/resolv.conf`,
//! `/etc/nsswitch.conf` and `/etc/hosts` are files of this test: the only name server is a
//! UDP server the test runs on 127.0.0.77:53 (a resolv.conf has no port; any address of
//! 127.0.0.0/8 is loopback). It drops every query at first, then answers `NAME` with an A
//! record for 127.0.0.1 (AAAA: no record, NOERROR; any other name: NXDOMAIN). Three targets,
//! every second: one by IP, one by `NAME`, one by IP whose page redirects to the named one.
//! While the server is silent the IP target must keep its schedule (each gap between the
//! requests reaching it within 1 s ± 100 ms) and the named ones must be down with the lookup
//! as the reason, logged once; once it answers, all three are up. Everything is on loopback;
//! promlet's glibc resolver uses its default timeouts (5 s a try, 2 tries).
//!
//! Needs root (binding port 53, mounting) and util-linux's `unshare`: without them the test
//! fails and says so, it never skips.

mod support;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::free_port;
use support::peers::{Promlet, TempDir};
use support::receiver::{serve, Answer, Scripted};

/// The made-up service name the test's DNS server knows (a Kubernetes-shaped one).
const NAME: &str = "kube-state-metrics.promlet-test.svc";
/// A name it answers NXDOMAIN for.
const MISSING: &str = "missing.promlet-test.svc";
/// Where the test's DNS server listens: a loopback address nothing else uses, port 53.
const DNS_ADDRESS: &str = "127.0.0.77:53";
/// How long the DNS server stays silent: more than one whole glibc lookup (2 × 5 s), so
/// promlet sees lookups time out, fail and be asked again.
const SILENT: Duration = Duration::from_secs(14);

/// One query the DNS server read: the name (lowercase), the type, and whether it was
/// answered.
#[derive(Debug, Clone)]
struct Query {
    name: String,
    qtype: u16,
    answered: bool,
}

/// The answer to one DNS query (RFC 1035 §4.1) as this server gives it, or `None` for a
/// packet it does not understand: the header with QR, AA, RA and the query's id and RD, the
/// question copied, and for an A question of `NAME` one A record, 127.0.0.1, TTL 30.
fn dns_answer(query: &[u8]) -> Option<(String, u16, Vec<u8>)> {
    let header = query.get(..12)?;
    if header[2] & 0x80 != 0 || u16::from_be_bytes([header[4], header[5]]) != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let n = usize::from(*query.get(at)?);
        at += 1;
        if n == 0 {
            break;
        }
        if n & 0xc0 != 0 {
            return None;
        }
        labels.push(std::str::from_utf8(query.get(at..at + n)?).ok()?);
        at += n;
    }
    let name = labels.join(".").to_ascii_lowercase();
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let end = at + 4;
    let question = query.get(12..end)?;
    let known = name == NAME;
    let with_a = known && qtype == 1;
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&header[..2]);
    r.push(0x84 | (header[2] & 0x01));
    r.push(if known { 0x80 } else { 0x83 });
    r.extend_from_slice(&[0, 1, 0, u8::from(with_a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if with_a {
        // A pointer to the question's name, type A, class IN, TTL 30, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]);
    }
    Some((name, qtype, r))
}

/// Runs the DNS server on [`DNS_ADDRESS`] for the rest of the test process: silent until
/// `answering` is set. Returns the log of queries.
fn dns_server(answering: Arc<AtomicBool>) -> Arc<Mutex<Vec<Query>>> {
    let socket = UdpSocket::bind(DNS_ADDRESS).unwrap_or_else(|e| {
        panic!("binding {DNS_ADDRESS} (UDP) failed: {e}; this test needs root and the address free")
    });
    let log: Arc<Mutex<Vec<Query>>> = Arc::default();
    let seen = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Some((name, qtype, reply)) = dns_answer(&buf[..n]) else {
                continue;
            };
            let answered = answering.load(Ordering::SeqCst);
            if answered {
                let _ = socket.send_to(&reply, from);
            }
            seen.lock().expect("lock").push(Query {
                name,
                qtype,
                answered,
            });
        }
    });
    log
}

/// Fails the test unless it runs as root with `unshare` and `mount` at hand.
fn require_root_and_unshare() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("an effective uid");
    assert_eq!(
        uid, "0",
        "tests/dns.rs must run as root (it binds port 53 and mounts in a namespace of its own)"
    );
    for tool in ["unshare", "mount"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "tests/dns.rs needs `{tool}` (Debian: util-linux and mount); it does not skip"
        );
    }
}

/// A target page: one series. Returns its port and the instants of the requests it got.
fn target() -> (u16, Arc<Mutex<Vec<Instant>>>) {
    let hits: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = Arc::clone(&hits);
    let port = serve(move |_| {
        log.lock().expect("lock").push(Instant::now());
        Answer::status("200 OK")
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(b"a 1\n")
    });
    (port, hits)
}

/// The bit patterns of `up` delivered for `job`, in order.
fn ups(receiver: &Scripted, job: &str) -> Vec<u64> {
    let all: BTreeMap<BTreeMap<String, String>, Vec<u64>> = receiver.ups();
    all.into_iter()
        .filter(|(labels, _)| labels.get("job").map(String::as_str) == Some(job))
        .flat_map(|(_, v)| v)
        .collect()
}

#[test]
fn a_silent_dns_server_stalls_only_the_targets_of_its_name() {
    require_root_and_unshare();
    let answering = Arc::new(AtomicBool::new(false));
    let queries = dns_server(Arc::clone(&answering));
    let (ip_port, ip_hits) = target();
    let (named_port, _) = target();
    let away = format!("http://{NAME}:{named_port}/metrics");
    let redirect_port = serve(move |_| Answer::status("302 Found").header("Location", &away));
    let receiver = Scripted::start(Vec::new(), Answer::ok());

    let dir = TempDir::new("dns");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.77\n").expect("resolv.conf");
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files dns\n").expect("nsswitch.conf");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    let config = dir.join("promlet.yml");
    let write_config = |more_jobs: &str| {
        let text = format!(
            "global: {{scrape_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: ip\n  static_configs: [{{targets: ['127.0.0.1:{ip_port}']}}]\n\
             - job_name: named\n  static_configs: [{{targets: ['{NAME}:{named_port}']}}]\n\
             - job_name: redirect\n  metrics_path: /away\n  \
               static_configs: [{{targets: ['127.0.0.1:{redirect_port}']}}]\n\
             {more_jobs}\
             remote_write:\n\
             - url: {}\n  queue_config: {{batch_send_deadline: 1s}}\n",
            receiver.url()
        );
        std::fs::write(&config, text).expect("config");
    };
    write_config("");
    let web_port = free_port();
    let mut command = Command::new("unshare");
    // The mounts exist in promlet's namespace only; `exec` keeps the pid the test kills.
    command
        .args(["-m", "sh", "-c"])
        .arg(
            "mount --bind \"$1\" /etc/resolv.conf && mount --bind \"$2\" /etc/nsswitch.conf \
             && mount --bind \"$3\" /etc/hosts && shift 3 && exec \"$@\"",
        )
        .arg("sh")
        .args([&resolv, &nsswitch, &hosts])
        .arg(env!("CARGO_BIN_EXE_promlet"))
        .arg("--config.file")
        .arg(&config)
        .arg("--storage.agent.path")
        .arg(dir.join("data"))
        .args(["--storage.agent.size", "4MiB"])
        .arg(format!("--web.listen-address=127.0.0.1:{web_port}"));
    let started = Instant::now();
    let promlet = Promlet::spawn(command, web_port, dir.join("promlet.log"));

    // The silent phase: the IP target on schedule, the named ones down.
    let silent_until = started + SILENT;
    while Instant::now() < silent_until {
        std::thread::sleep(Duration::from_millis(200));
    }
    answering.store(true, Ordering::SeqCst);
    let hits: Vec<Instant> = ip_hits
        .lock()
        .expect("lock")
        .iter()
        .copied()
        .filter(|&t| t < silent_until)
        .collect();
    // The first scrape comes at a hashed offset within a second of start, the second at
    // the target's phase: gaps are measured from the second one on.
    let gaps: Vec<Duration> = hits.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    let largest = gaps.iter().max().copied().unwrap_or_default();
    let offsets: Vec<Duration> = hits.iter().map(|&t| t - started).collect();
    eprintln!(
        "ip target while the DNS server was silent ({SILENT:?}): {} scrapes at {offsets:?}; \
         largest gap from the second on {largest:?}",
        hits.len(),
    );
    assert!(
        gaps.len() >= 10,
        "the IP target was scraped {} times in {SILENT:?}; promlet's log:\n{}",
        hits.len(),
        promlet.log()
    );
    for (i, g) in gaps.iter().enumerate() {
        assert!(
            (Duration::from_millis(900)..=Duration::from_millis(1100)).contains(g),
            "gap {i} of the IP target's scrapes is {g:?}: {gaps:?}"
        );
    }
    let silent_queries: Vec<Query> = queries.lock().expect("lock").clone();
    assert!(
        !silent_queries.is_empty() && silent_queries.iter().all(|q| !q.answered),
        "{silent_queries:?}"
    );
    let down = 0f64.to_bits();
    let up = 1f64.to_bits();
    for job in ["named", "redirect"] {
        let seen = receiver.wait_until(Duration::from_secs(10), |_| {
            ups(&receiver, job).contains(&down)
        });
        assert!(
            ups(&receiver, job).contains(&down),
            "no up 0 for {job} ({} writes); promlet's log:\n{}",
            seen.len(),
            promlet.log()
        );
    }
    assert!(
        ups(&receiver, "ip").iter().all(|&v| v == up),
        "{:?}",
        ups(&receiver, "ip")
    );

    // The server answers: every target is up.
    receiver.wait_until(Duration::from_secs(40), |_| {
        ["ip", "named", "redirect"]
            .iter()
            .all(|job| ups(&receiver, job).last() == Some(&up))
    });
    for job in ["ip", "named", "redirect"] {
        assert_eq!(
            ups(&receiver, job).last(),
            Some(&up),
            "{job} is not up after the DNS server answered; promlet's log:\n{}",
            promlet.log()
        );
    }
    eprintln!(
        "named target up {:?} after the DNS server started answering",
        Instant::now() - silent_until
    );
    let all_queries = queries.lock().expect("lock").clone();
    // Only the name was ever asked: IP targets and localhost never reach the resolver.
    assert!(
        all_queries.iter().all(|q| q.name == NAME),
        "{all_queries:?}"
    );
    assert!(
        all_queries.iter().any(|q| q.answered && q.qtype == 1),
        "{all_queries:?}"
    );
    // The lookups ran on a thread of their own.
    assert_eq!(
        promlet.threads(),
        ["async-io", "promlet", "promlet-resolve", "promlet-send-0"]
    );

    // A reload adds a target by a name the server does not know: built without a lookup,
    // then down with Go's words for NXDOMAIN.
    write_config(&format!(
        "- job_name: missing\n  static_configs: [{{targets: ['{MISSING}:{named_port}']}}]\n"
    ));
    promlet.signal("HUP");
    let missing = format!(
        "target http://{MISSING}:{named_port}/metrics is down: \
         dial tcp: lookup {MISSING}: no such host"
    );
    promlet.wait_for(
        Duration::from_secs(20),
        "the unknown name's target down",
        || promlet.log().contains(&missing),
    );

    // The log: each named target went down once, with the lookup as the reason.
    let log = promlet.log();
    for url in [
        format!("http://{NAME}:{named_port}/metrics"),
        format!("http://127.0.0.1:{redirect_port}/away"),
    ] {
        let down: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("target {url} is down: ")))
            .collect();
        assert_eq!(down.len(), 1, "{url}: {log}");
        eprintln!("{}", down[0]);
        assert!(
            down[0].contains(&format!("dial tcp: lookup {NAME}: ")),
            "{url}: {}",
            down[0]
        );
        assert!(
            log.contains(&format!("target {url} is up again after ")),
            "{url}: {log}"
        );
    }
    assert!(
        !log.contains(&format!(
            "target http://127.0.0.1:{ip_port}/metrics is down"
        )),
        "{log}"
    );
}
