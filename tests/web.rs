//! promlet's own HTTP server over real loopback sockets: `serve` runs on a `LocalExecutor` in a
//! thread of its own, the test talks to it with `std::net::TcpStream` (127.0.0.1, an ephemeral
//! port, every read bounded by a timeout).

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use promlet::web::{serve, Web, WebStats, HEAD_TIMEOUT, MAX_CONNECTIONS};

/// What the test asks of the server's loop thread; each is acknowledged once applied.
enum Control {
    /// Sets `Web::ready`.
    Ready(bool),
    /// The agent's next reload answers: `None` for success, else the error's text.
    Reload(Option<String>),
}

/// A `serve` on its own thread, stopped and joined when dropped.
struct Server {
    port: u16,
    control: smol::channel::Sender<(Control, smol::channel::Sender<()>)>,
    stop: smol::channel::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (control, control_rx) =
            smol::channel::unbounded::<(Control, smol::channel::Sender<()>)>();
        let (stop, stop_rx) = smol::channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let ex = Rc::new(smol::LocalExecutor::new());
            let listener =
                smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
            let port = listener.local_addr().expect("local address").port();
            port_tx.send(port).expect("the test waits for the port");
            let stats = Rc::new(WebStats::default());
            let ready = Rc::new(Cell::new(false));
            let (reload, reload_rx) = smol::channel::bounded(1);
            let render_stats = Rc::clone(&stats);
            let web = Rc::new(Web {
                metrics: Box::new(move |out| {
                    out.extend_from_slice(
                        b"# HELP test_up A test gauge.\n# TYPE test_up gauge\ntest_up 1\n",
                    );
                    render_stats.render(out);
                }),
                ready: Rc::clone(&ready),
                reload,
                stats,
            });
            let failure: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
            let answer = Rc::clone(&failure);
            ex.spawn(async move {
                while let Ok((control, ack)) = control_rx.recv().await {
                    match control {
                        Control::Ready(r) => ready.set(r),
                        Control::Reload(f) => *failure.borrow_mut() = f,
                    }
                    let _ = ack.send(()).await;
                }
            })
            .detach();
            // The agent's side of /-/reload.
            ex.spawn(async move {
                while let Ok(reply) = reload_rx.recv().await {
                    let result = match answer.borrow().clone() {
                        None => Ok(()),
                        Some(e) => Err(e),
                    };
                    let _ = reply.send(result).await;
                }
            })
            .detach();
            let serving = serve(listener, Rc::clone(&web), Rc::clone(&ex));
            smol::block_on(ex.run(smol::future::or(
                async {
                    let _ = stop_rx.recv().await;
                },
                async {
                    let e = serving.await;
                    panic!("serve stopped: {e}");
                },
            )));
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server thread reports its port");
        Server {
            port,
            control,
            stop,
            thread: Some(thread),
        }
    }

    fn control(&self, c: Control) {
        let (ack, done) = smol::channel::bounded(1);
        smol::block_on(async {
            self.control.send((c, ack)).await.expect("server running");
            done.recv().await.expect("control applied");
        });
    }

    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// One request on a fresh connection.
    fn request(&self, raw: &str) -> Response {
        let mut c = self.client();
        c.send(raw.as_bytes());
        c.response(raw.starts_with("HEAD "))
    }

    /// The /metrics page, retried until it answers (a connection can be refused while the
    /// server is at its limit).
    fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = self.client();
            c.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
            if let Some(r) = c.try_response(false) {
                assert_eq!(r.status, 200);
                return String::from_utf8(r.body).expect("utf-8 page");
            }
            assert!(Instant::now() < deadline, "no /metrics answer within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        Client {
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("send");
    }

    fn response(&mut self, head_only: bool) -> Response {
        self.try_response(head_only)
            .expect("a response before the connection closed")
    }

    /// The next response; `None` if the connection closes (or resets) before one.
    fn try_response(&mut self, head_only: bool) -> Option<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{line:?}");
        let status: u16 = parts.next()?.parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("header line");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').expect("name: value");
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_only && status != 100 {
            let len: usize = r
                .header("content-length")
                .expect("every answer has a Content-Length")
                .parse()
                .expect("a length");
            r.body = vec![0; len];
            self.reader.read_exact(&mut r.body).expect("body");
        }
        Some(r)
    }

    /// Whether the server closed the connection: EOF (or a reset) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

#[test]
fn routes_answer_as_prometheus() {
    let server = Server::start();

    let r = server.request("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.text().starts_with("# HELP test_up A test gauge.\n"),
        "{}",
        r.text()
    );
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
    // Nothing was counted before this first request was answered.
    assert!(
        !r.text().contains("prometheus_http_requests_total"),
        "{}",
        r.text()
    );

    let r = server.request("GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, "promlet is Healthy.\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = server.request("GET /-/ready HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text()), (503, "Service Unavailable"));
    server.control(Control::Ready(true));
    let r = server.request("GET /-/ready HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, "promlet is Ready.\n"));
    server.control(Control::Ready(false));
    let r = server.request("HEAD /-/ready HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 503);

    let r = server.request("GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text()), (404, "404 page not found\n"));
    let r = server.request("GET /metrics/ HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404);

    let r = server.request("GET /-/reload HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        (r.status, r.text()),
        (405, "Only POST or PUT requests allowed")
    );
    let r = server.request("DELETE /-/reload HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST, PUT")));
    for raw in [
        "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        "PUT /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n",
        "OPTIONS /-/ready HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let r = server.request(raw);
        assert_eq!((r.status, r.text()), (405, "Method Not Allowed\n"), "{raw}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }

    // The counts, as Prometheus labels them.
    let page = server.metrics();
    for line in [
        "prometheus_http_requests_total{code=\"200\",handler=\"/-/healthy\"} 1\n",
        "prometheus_http_requests_total{code=\"200\",handler=\"/-/ready\"} 1\n",
        "prometheus_http_requests_total{code=\"200\",handler=\"/metrics\"} 1\n",
        "prometheus_http_requests_total{code=\"404\",handler=\"other\"} 2\n",
        "prometheus_http_requests_total{code=\"405\",handler=\"/-/reload\"} 2\n",
        "prometheus_http_requests_total{code=\"503\",handler=\"/-/ready\"} 2\n",
        "promlet_web_rejected_connections_total 0\n",
        "promlet_web_evicted_connections_total 0\n",
    ] {
        assert!(page.contains(line), "{line} missing from:\n{page}");
    }
}

#[test]
fn head_sends_the_length_but_no_body() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = c.response(true);
    assert_eq!(head.status, 200);
    // The next answer on the connection starts right after the head: no body came.
    c.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let get = c.response(false);
    assert_eq!(get.status, 200);
    // The GET page is longer by the line counting the HEAD (answered in between), so the
    // HEAD's length is the page's as it was then: shorter, not empty.
    let head_len: usize = head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("a Content-Length on HEAD");
    assert!(head_len > 0 && head_len < get.body.len(), "{head_len}");
    c.send(b"HEAD /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("20")));
}

#[test]
fn keep_alive_and_pipelining() {
    let server = Server::start();
    let mut c = server.client();
    for _ in 0..3 {
        c.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response(false);
        assert_eq!((r.status, r.header("connection")), (200, None));
    }
    // Three requests in one write are answered in order.
    c.send(
        b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /-/ready HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(c.response(false).status, 200);
    assert_eq!(c.response(false).status, 404);
    let last = c.response(false);
    assert_eq!(
        (last.status, last.header("connection")),
        (503, Some("close"))
    );
    assert!(c.closed());
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let server = Server::start();
    let mut c = server.client();
    c.send(b"GET /-/healthy HTTP/1.0\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed());

    let mut c = server.client();
    c.send(b"GET /-/healthy HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /-/healthy HTTP/1.0\r\n\r\n");
    assert_eq!(c.response(false).header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn reload_success_failure_and_bodies() {
    let server = Server::start();
    let r = server.request("POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, ""));

    server.control(Control::Reload(Some(
        "prometheus.yml:3: scrape_interval: not a duration".to_string(),
    )));
    let r = server.request("PUT /-/reload HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "failed to reload config: prometheus.yml:3: scrape_interval: not a duration\n"
    );
    server.control(Control::Reload(None));

    // A body is read and dropped; the connection goes on with the next request.
    let mut c = server.client();
    c.send(b"POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    assert_eq!(c.response(false).text(), "promlet is Healthy.\n");

    // A body larger than the read buffer, sent in pieces.
    let body = vec![b'x'; 20_000];
    c.send(
        format!(
            "PUT /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for piece in body.chunks(3_000) {
        c.send(piece);
    }
    assert_eq!(c.response(false).status, 200);

    // Expect: 100-continue is answered before the body is sent.
    c.send(
        b"POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(c.response(true).status, 100);
    c.send(b"abc");
    assert_eq!(c.response(false).status, 200);
    c.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 200);

    let page = server.metrics();
    assert!(
        page.contains("prometheus_http_requests_total{code=\"200\",handler=\"/-/reload\"} 4\n"),
        "{page}"
    );
    assert!(
        page.contains("prometheus_http_requests_total{code=\"500\",handler=\"/-/reload\"} 1\n"),
        "{page}"
    );
}

#[test]
fn refusals_close_the_connection() {
    let server = Server::start();
    let cases: [(Vec<u8>, u16); 6] = [
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n".to_vec(), 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: nope\r\n\r\n".to_vec(), 400),
        (
            format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9_000)).into_bytes(),
            431,
        ),
        (
            (0..100)
                .map(|i| format!("X-{i}: y\r\n"))
                .fold("GET /metrics HTTP/1.1\r\n".to_string(), |a, h| a + &h)
                .into_bytes()
                .into_iter()
                .chain(b"\r\n".iter().copied())
                .collect(),
            431,
        ),
        (
            b"POST /-/reload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            411,
        ),
        (
            b"POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 65537\r\n\r\n".to_vec(),
            413,
        ),
    ];
    for (raw, status) in cases {
        let mut c = server.client();
        c.send(&raw);
        let r = c.response(false);
        assert_eq!(
            r.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&raw[..40.min(raw.len())])
        );
        assert_eq!(r.header("connection"), Some("close"));
        assert!(r.text().starts_with(&status.to_string()), "{}", r.text());
        assert!(c.closed());
    }
    // Still serving.
    assert_eq!(
        server.request("GET /-/healthy HTTP/1.1\r\n\r\n").status,
        200
    );
    let page = server.metrics();
    assert!(
        page.contains("prometheus_http_requests_total{code=\"400\",handler=\"other\"} 2\n"),
        "{page}"
    );
    assert!(
        page.contains("prometheus_http_requests_total{code=\"431\",handler=\"other\"} 2\n"),
        "{page}"
    );
    assert!(
        page.contains("prometheus_http_requests_total{code=\"411\",handler=\"/-/reload\"} 1\n"),
        "{page}"
    );
    assert!(
        page.contains("prometheus_http_requests_total{code=\"413\",handler=\"/-/reload\"} 1\n"),
        "{page}"
    );
}

#[test]
fn random_bytes_never_stop_the_server() {
    let server = Server::start();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for round in 0..40 {
        let mut c = server.client();
        let mut bytes = Vec::new();
        let prefix: &[u8] = if round % 2 == 0 {
            b"GET /metrics HTTP/1.1\r\n"
        } else {
            b""
        };
        bytes.extend_from_slice(prefix);
        for _ in 0..(64 + round * 37) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x.to_le_bytes()[0]);
        }
        bytes.extend_from_slice(b"\r\n\r\n");
        c.send(&bytes);
        // Whatever it answers (400 mostly), it answers or closes, within the read timeout.
        if let Some(r) = c.try_response(false) {
            assert!(r.status >= 400, "{r:?}");
        }
    }
    assert_eq!(
        server.request("GET /-/healthy HTTP/1.1\r\n\r\n").status,
        200
    );
}

/// The value of `series` on a `/metrics` page.
fn value(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from:\n{page}"))
        .parse()
        .expect("a count")
}

/// [`MAX_CONNECTIONS`] connections, opened one after the other, each sent `request` and
/// answered `status` (its head only) before the next connects.
fn fill(server: &Server, request: &[u8], status: u16) -> Vec<Client> {
    let limit = usize::try_from(MAX_CONNECTIONS).expect("a small number");
    (0..limit)
        .map(|_| {
            let mut c = server.client();
            c.send(request);
            let r = c.response(status != 200);
            assert_eq!(r.status, status);
            c
        })
        .collect()
}

#[test]
fn a_connection_over_the_limit_evicts_the_one_waiting_longest() {
    let server = Server::start();
    // Each is answered, so each holds a place, idle since its answer, before the next.
    let mut held = fill(&server, b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n", 200);
    let mut over = server.client();
    over.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        over.response(false).status,
        200,
        "the new connection is served"
    );
    assert!(held[0].closed(), "the longest idle connection is closed");
    held[1].send(b"GET /-/ready HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(held[1].response(false).status, 503, "the others stay open");
    over.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let page = String::from_utf8(over.response(false).body).expect("utf-8");
    assert_eq!(value(&page, "promlet_web_evicted_connections_total"), 1);
    assert_eq!(value(&page, "promlet_web_rejected_connections_total"), 0);
    assert_eq!(value(&page, "promlet_web_open_connections"), 32);
}

#[test]
fn connections_over_the_limit_are_closed_and_counted_when_all_are_busy() {
    let server = Server::start();
    // The 100 Continue says the head was read: each connection now waits for its body.
    let mut busy = fill(
        &server,
        b"POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        100,
    );
    let mut over = server.client();
    assert!(over.closed(), "the connection over the limit stays open");

    // A body sent: answered, and that connection waits for a head again, so a new connection
    // takes its place.
    busy[0].send(b"{}");
    assert_eq!(busy[0].response(false).status, 200);
    let page = server.metrics();
    assert_eq!(value(&page, "promlet_web_rejected_connections_total"), 1);
    assert_eq!(value(&page, "promlet_web_evicted_connections_total"), 1);
    assert!(busy[0].closed(), "evicted for the /metrics connection");
}

#[test]
fn connections_closing_after_their_answer_make_room_first() {
    let server = Server::start();
    // Answered and closing: each lingers (500 ms) for its client, which keeps it open.
    let mut closing = fill(&server, b"GET /-/healthy HTTP/1.0\r\n\r\n", 200);
    let mut waiting = server.client();
    waiting.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(
        waiting.response(false).status,
        200,
        "a closing one made room"
    );
    assert!(closing[0].closed());
    // The connection waiting for its next request outranks those still closing.
    let page = server.metrics();
    assert_eq!(value(&page, "promlet_web_evicted_connections_total"), 2);
    waiting.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(waiting.response(false).status, 200);
}

#[test]
fn the_head_timeout_cuts_slow_requests_not_idle_connections() {
    let server = Server::start();
    let mut idle = server.client();
    idle.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response(false).status, 200);
    // A whole head whose body never comes.
    let mut no_body = server.client();
    no_body.send(b"POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n");
    let started = Instant::now();
    std::thread::sleep(HEAD_TIMEOUT + Duration::from_millis(500));
    assert!(no_body.closed(), "a body not sent within the head timeout");
    assert!(started.elapsed() < HEAD_TIMEOUT * 2);
    // Idle between requests for longer than the head timeout: still served.
    idle.send(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.response(false).status, 200);
}

#[test]
fn a_request_sent_a_byte_at_a_time_is_served() {
    let server = Server::start();
    let mut c = server.client();
    c.reader.get_mut().set_nodelay(true).expect("nodelay");
    for &b in b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\nGET /-/healthy HTTP/1.1\n\n".iter() {
        c.send(&[b]);
    }
    assert_eq!(c.response(false).text(), "promlet is Healthy.\n");
    // Bare `\n` line ends are taken, as Go's server takes them.
    assert_eq!(c.response(false).text(), "promlet is Healthy.\n");
}
