//! Scrapes over https, through redirects and through a proxy, against real peers on
//! 127.0.0.1: a rustls server (tests/support/tls.rs) with certificates made by `openssl`, a
//! plain HTTP server, and a small proxy written here. What the ring holds after each scrape
//! (read back as a sender reads it) and the target's last error are checked: a certificate
//! problem marks the target down with Go's words for it, never crashes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use promlet::parse::Format;
use support::harness::Harness;
use support::peers::TempDir;
use support::receiver::{serve, serve_wrapped, Answer, HttpRequest, Stream};
use support::tls::{make_certificates, serve_tls, server_config};

/// What one scrape appended: the value of `up` and how many samples.
#[derive(Debug, PartialEq)]
struct Scraped {
    up: f64,
    samples: usize,
}

impl Harness {
    /// A scraper for the one target of `job` (YAML of one scrape config).
    fn new(name: &str, job: &str) -> Harness {
        Harness::from_config(
            &format!("tls-{name}"),
            &format!("scrape_configs:\n{job}"),
            64 << 20,
        )
    }

    /// Runs one scrape; returns what it appended.
    fn scrape(&mut self) -> Scraped {
        self.run();
        let mut up = None;
        let mut samples = 0;
        while let Some(b) = self.consumer.next_batch() {
            for (i, v) in b.values.iter().enumerate() {
                let labels = b.series.owned(i);
                let name = labels
                    .iter()
                    .find(|(n, _)| n == b"__name__")
                    .map(|(_, v)| v.clone());
                if name.as_deref() == Some(b"up".as_slice()) {
                    up = Some(*v);
                }
                samples += 1;
            }
            let next = b.next;
            self.consumer.commit(next);
        }
        Scraped {
            up: up.expect("every scrape appends up"),
            samples,
        }
    }

    /// Scrapes once and asserts the target went down with an error containing `reason`.
    fn down_with(&mut self, reason: &str) {
        let s = self.scrape();
        assert_eq!(s.up, 0.0, "{}", self.scraper.last_error());
        let e = self.scraper.last_error();
        assert!(e.contains(reason), "{e:?} lacks {reason:?}");
    }

    /// Scrapes once and asserts it succeeded with `samples` scraped series (report series
    /// not counted).
    fn up_with(&mut self, samples: usize) {
        let s = self.scrape();
        assert_eq!(s.up, 1.0, "{}", self.scraper.last_error());
        assert_eq!(s.samples, samples + 5, "{}", self.scraper.last_error());
        assert_eq!(self.scraper.last_error(), "");
    }
}

fn text(body: &str) -> Answer {
    Answer::status("200 OK")
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body.as_bytes())
}

/// A job scraping `address` over `scheme` with extra keys `extra` (indented 4).
fn job(scheme: &str, address: &str, extra: &str) -> String {
    format!(
        "  - job_name: j\n    scheme: {scheme}\n    scrape_timeout: 5s\n{extra}    static_configs:\n      - targets: ['{address}']\n"
    )
}

/// An https server with `cert` (in `dir`) answering `a 1`.
fn simple_tls(dir: &Path, cert: &str) -> u16 {
    let config = server_config(&dir.join(cert), &dir.join("srv.key"), None);
    serve_tls(config, |_| text("a 1\n"))
}

#[test]
fn https_streams_a_cadvisor_body_keeps_the_connection_and_reads_the_rotated_token() {
    let certs = TempDir::new("tls-cadvisor");
    make_certificates(&certs.0);
    let body = support::cadvisor_body(Format::Text, 20_000);
    assert!(
        body.len() > 4 << 20,
        "a cadvisor-sized page: {}",
        body.len()
    );
    let token = Arc::new(Mutex::new("first".to_owned()));
    let expected = Arc::clone(&token);
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    let config = server_config(&certs.join("srv.pem"), &certs.join("srv.key"), None);
    let port = serve_wrapped(
        move |tcp: TcpStream| {
            counted.fetch_add(1, Ordering::SeqCst);
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).ok()?;
            Some(Box::new(rustls::StreamOwned::new(conn, tcp)) as Box<dyn Stream>)
        },
        move |req: &HttpRequest| {
            let want = format!("Bearer {}", expected.lock().expect("lock"));
            if req.header("authorization") != Some(want.as_str()) {
                return Answer::status("401 Unauthorized");
            }
            Answer::status("200 OK")
                .header("Content-Type", "text/plain; version=0.0.4")
                .body(&body)
        },
    );
    let token_file = certs.join("token");
    std::fs::write(&token_file, "first\n").expect("token");
    let mut h = Harness::new(
        "cadvisor",
        &job(
            "https",
            &format!("127.0.0.1:{port}"),
            &format!(
                "    bearer_token_file: {}\n    tls_config: {{ca_file: {}}}\n",
                token_file.display(),
                certs.join("ca.pem").display()
            ),
        ),
    );
    h.up_with(20_000);
    h.up_with(20_000);
    // The token rotates on disk and at the server at once: the next scrape carries it.
    std::fs::write(&token_file, "second\n").expect("token");
    *token.lock().expect("lock") = "second".to_owned();
    h.up_with(20_000);
    assert_eq!(h.stats.failed.get(), 0);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one kept-alive connection for every scrape"
    );
    // A token the server does not take: a failed scrape with the status.
    std::fs::write(&token_file, "third\n").expect("token");
    h.down_with("server returned HTTP status 401 Unauthorized");
}

#[test]
fn certificate_problems_mark_the_target_down_with_gos_reasons_and_skip_verify_ignores_them() {
    let certs = TempDir::new("tls-bad-certs");
    let dir = &certs.0;
    make_certificates(dir);
    let good = simple_tls(dir, "srv.pem");
    let expired = simple_tls(dir, "expired.pem");
    let wrong_name = simple_tls(dir, "wrongname.pem");
    // The CA's own certificate as the server's: webpki refuses it even from ca_file.
    let ca_as_leaf = serve_tls(
        server_config(&dir.join("ca.pem"), &dir.join("ca.key"), None),
        |_| text("a 1\n"),
    );
    let ca = |file: &str| {
        format!(
            "    tls_config: {{ca_file: {}}}\n",
            dir.join(file).display()
        )
    };
    let cases = [
        (
            good,
            ca("other-ca.pem"),
            "x509: certificate signed by unknown authority (subject CN=127.0.0.1)",
        ),
        (
            expired,
            ca("ca.pem"),
            "x509: certificate has expired or is not yet valid: current time ",
        ),
        (
            expired,
            ca("ca.pem"),
            " is after 2020-01-02T00:00:00Z (subject CN=127.0.0.1)",
        ),
        (
            wrong_name,
            ca("ca.pem"),
            "x509: certificate is valid for other.example, not 127.0.0.1 (subject CN=127.0.0.1)",
        ),
        (
            ca_as_leaf,
            ca("ca.pem"),
            "x509: certificate signed by unknown authority \
             (a CA certificate presented as the server's own) (subject CN=promlet-test-ca)",
        ),
        // No ca_file: the system bundle, which knows nothing of the test CA.
        (
            good,
            String::new(),
            "x509: certificate signed by unknown authority",
        ),
    ];
    for (i, (port, tls, reason)) in cases.iter().enumerate() {
        let address = format!("127.0.0.1:{port}");
        let mut h = Harness::new(&format!("bad-{i}"), &job("https", &address, tls));
        h.down_with(reason);
        h.down_with(reason);
        let skip = format!(
            "    tls_config: {{insecure_skip_verify: true, ca_file: {}}}\n",
            dir.join("other-ca.pem").display()
        );
        let mut h = Harness::new(&format!("skip-{i}"), &job("https", &address, &skip));
        h.up_with(1);
    }
    // server_name names what is verified (and sent as SNI) instead of the address.
    let named = format!(
        "    tls_config: {{ca_file: {}, server_name: other.example}}\n",
        dir.join("ca.pem").display()
    );
    let mut h = Harness::new(
        "named",
        &job("https", &format!("127.0.0.1:{wrong_name}"), &named),
    );
    h.up_with(1);
    // TLS 1.2 only, and 1.3 only, both speak to a server offering both.
    for versions in ["max_version: TLS12", "min_version: TLS13"] {
        let tls = format!(
            "    tls_config: {{ca_file: {}, {versions}}}\n",
            dir.join("ca.pem").display()
        );
        let mut h = Harness::new(
            "versions",
            &job("https", &format!("localhost:{good}"), &tls),
        );
        h.up_with(1);
    }
    // Plain http to a TLS port fails like any bad response, and https to a plain port too.
    let plain = serve(|_| text("a 1\n"));
    let mut h = Harness::new(
        "http-to-tls",
        &job("http", &format!("127.0.0.1:{good}"), ""),
    );
    assert_eq!(h.scrape().up, 0.0);
    let mut h = Harness::new(
        "tls-to-http",
        &job("https", &format!("127.0.0.1:{plain}"), &ca("ca.pem")),
    );
    assert_eq!(h.scrape().up, 0.0);
    assert_ne!(h.scraper.last_error(), "");
    // A server that answers the ClientHello in HTTP, as Go's net/http does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let go_like = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().map_while(Result::ok) {
            let _ = std::io::Read::read(&mut c, &mut [0; 512]);
            let _ = std::io::Write::write_all(
                &mut c,
                b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
            );
        }
    });
    let mut h = Harness::new(
        "tls-to-go-http",
        &job("https", &format!("127.0.0.1:{go_like}"), &ca("ca.pem")),
    );
    h.down_with("http: server gave HTTP response to HTTPS client");
}

#[test]
fn client_certificates_and_rotated_files_are_used_without_restart() {
    let certs = TempDir::new("tls-mtls");
    let dir = &certs.0;
    make_certificates(dir);
    let config = server_config(
        &dir.join("srv.pem"),
        &dir.join("srv.key"),
        Some(&dir.join("ca.pem")),
    );
    let port = serve_tls(config, |_| text("a 1\nb 2\n"));
    let address = format!("127.0.0.1:{port}");
    // Files the test rewrites in place, as cert-manager does.
    let (ca, cert) = (dir.join("live-ca.pem"), dir.join("live-cli.pem"));
    std::fs::copy(dir.join("other-ca.pem"), &ca).expect("copy");
    std::fs::copy(dir.join("cli-other.pem"), &cert).expect("copy");
    let tls = format!(
        "    tls_config: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
        ca.display(),
        cert.display(),
        dir.join("cli.key").display()
    );
    let mut h = Harness::new("mtls", &job("https", &address, &tls));
    h.down_with("x509: certificate signed by unknown authority");
    // The right CA on disk: the server verifies now, but refuses the client certificate.
    std::fs::copy(dir.join("ca.pem"), &ca).expect("copy");
    h.down_with("remote error: tls: ");
    // The right client certificate on disk: up, no restart.
    std::fs::copy(dir.join("cli.pem"), &cert).expect("copy");
    h.up_with(2);
    h.up_with(2);
    // Without a client certificate the server refuses the connection.
    let no_cert = format!(
        "    tls_config: {{ca_file: {}}}\n",
        dir.join("ca.pem").display()
    );
    let mut h = Harness::new("mtls-none", &job("https", &address, &no_cert));
    h.down_with("remote error: tls: certificate required");
    // A cert file that stops loading fails the scrape with its name, then recovers.
    let mut h = Harness::new("mtls-broken", &job("https", &address, &tls));
    h.up_with(2);
    std::fs::write(&cert, "garbage\n").expect("write");
    h.down_with(&format!(
        "tls_config.cert_file {}: no certificate in it",
        cert.display()
    ));
    std::fs::copy(dir.join("cli.pem"), &cert).expect("copy");
    h.up_with(2);
}

/// A plain server answering `/hop/N` with a redirect to `/hop/N-1` (relative), `/hop/0`
/// with a body, `/abs` with an absolute redirect to `/hop/0`, `/away` with one to `target`.
fn redirector(target: String) -> u16 {
    let cell: Arc<Mutex<u16>> = Arc::new(Mutex::new(0));
    let me = Arc::clone(&cell);
    let port = serve(move |req| {
        let path = req.line.split(' ').nth(1).unwrap_or("");
        let port = *me.lock().expect("lock");
        let to = |location: &str| Answer::status("302 Found").header("Location", location);
        match path {
            "/hop/0" => text("a 1\n"),
            "/abs" => to(&format!("http://127.0.0.1:{port}/hop/0")),
            "/moved" => Answer::status("301 Moved Permanently").header("Location", "hop/0"),
            "/away" => to(&target),
            "/nolocation" => Answer::status("307 Temporary Redirect"),
            "/toslow" => to("/slow"),
            "/slow" => text("a 1\n").after(std::time::Duration::from_secs(2)),
            p => match p.strip_prefix("/hop/").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => to(&format!("{}", n - 1)),
                None => Answer::status("404 Not Found"),
            },
        }
    });
    *cell.lock().expect("lock") = port;
    port
}

fn redirect_job(port: u16, path: &str, extra: &str) -> String {
    format!(
        "  - job_name: j\n    metrics_path: {path}\n    scrape_timeout: 5s\n{extra}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    )
}

#[test]
fn redirects_are_followed_up_to_go_limit_and_refused_when_off() {
    let certs = TempDir::new("tls-redirect");
    make_certificates(&certs.0);
    let tls_port = simple_tls(&certs.0, "srv.pem");
    let port = redirector(format!("https://localhost:{tls_port}/metrics"));
    let ca = format!(
        "    tls_config: {{ca_file: {}}}\n",
        certs.join("ca.pem").display()
    );
    // Nine relative redirects then the page: ten requests, as Go's client allows.
    for path in ["/hop/9", "/abs", "/moved", "/hop/0"] {
        let mut h = Harness::new("follow", &redirect_job(port, path, ""));
        h.up_with(1);
        h.up_with(1);
    }
    // The tenth redirect fails the scrape.
    let mut h = Harness::new("ten", &redirect_job(port, "/hop/10", ""));
    h.down_with("stopped after 10 redirects");
    // To https on another port (localhost needs no resolver), verified with the job's CA.
    let mut h = Harness::new("away", &redirect_job(port, "/away", &ca));
    h.up_with(1);
    // A redirect to a host name: tests/dns.rs (its resolver is the test's own).
    // A redirect without Location is the answer itself.
    let mut h = Harness::new("nolocation", &redirect_job(port, "/nolocation", ""));
    h.down_with("server returned HTTP status 307 Temporary Redirect");
    // The hops share the scrape's timeout.
    let job = redirect_job(port, "/toslow", "").replace("scrape_timeout: 5s", "scrape_timeout: 1s");
    let mut h = Harness::new("slow", &job);
    h.down_with("context deadline exceeded (scrape_timeout 1s)");
    let off = "    follow_redirects: false\n";
    let mut h = Harness::new("off", &redirect_job(port, "/abs", off));
    h.down_with("server returned HTTP status 302 Found");
    let mut h = Harness::new("off-moved", &redirect_job(port, "/moved", off));
    h.down_with("server returned HTTP status 301 Moved Permanently");
}

/// An HTTP proxy on 127.0.0.1: absolute-form GETs are answered by the proxy itself, CONNECT
/// is tunnelled to the port asked for. Returns the port and, per request, its line, `Host` and
/// `Proxy-Authorization`.
fn proxy() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut client = client;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut host = String::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = h.strip_prefix("Host: ") {
                            host = v.trim().to_owned();
                        }
                        if let Some(v) = h.strip_prefix("Proxy-Authorization: ") {
                            host.push_str(" | ");
                            host.push_str(v.trim());
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                    }
                    let line = line.trim_end().to_owned();
                    log.lock().expect("lock").push(format!("{line} | {host}"));
                    if let Some(to) = line
                        .strip_prefix("CONNECT ")
                        .and_then(|l| l.split(' ').next())
                    {
                        let Ok(upstream) = TcpStream::connect(to) else {
                            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                            return;
                        };
                        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        let mut up_read = upstream.try_clone().expect("clone");
                        let mut down = client.try_clone().expect("clone");
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut up_read, &mut down);
                        });
                        let mut upstream = upstream;
                        let _ = upstream.write_all(reader.buffer());
                        let mut inner = reader.into_inner();
                        let _ = std::io::copy(&mut inner, &mut upstream);
                        return;
                    }
                    let body = "proxied 1\n";
                    let _ = write!(
                        client,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    (port, seen)
}

/// RFC 7617's example credentials, as the proxy sees them.
const AUTH: &str = " | Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==";

#[test]
fn proxy_url_sends_absolute_form_for_http_and_tunnels_https() {
    let certs = TempDir::new("tls-proxy");
    make_certificates(&certs.0);
    let tls_port = simple_tls(&certs.0, "srv.pem");
    let (proxy_port, seen) = proxy();
    // User info in the proxy url: Go's transport sends it as Proxy-Authorization.
    let via = format!("    proxy_url: http://Aladdin:open%20sesame@127.0.0.1:{proxy_port}\n");
    let mut h = Harness::new("proxy-http", &job("http", "node.example:9100", &via));
    h.up_with(1);
    h.up_with(1);
    let ca = format!(
        "    tls_config: {{ca_file: {}}}\n{via}",
        certs.join("ca.pem").display()
    );
    let mut h = Harness::new(
        "proxy-https",
        &job("https", &format!("127.0.0.1:{tls_port}"), &ca),
    );
    h.up_with(1);
    h.up_with(1);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [
            format!("GET http://node.example:9100/metrics HTTP/1.1 | node.example:9100{AUTH}"),
            format!("GET http://node.example:9100/metrics HTTP/1.1 | node.example:9100{AUTH}"),
            format!("CONNECT 127.0.0.1:{tls_port} HTTP/1.1 | 127.0.0.1:{tls_port}{AUTH}"),
        ],
        "one kept-alive tunnel for both https scrapes"
    );
    // A proxy that is not http:// is refused by name at every scrape.
    let socks = "    proxy_url: socks5://127.0.0.1:1080\n";
    let mut h = Harness::new("proxy-socks", &job("http", "127.0.0.1:1", socks));
    h.down_with("proxy_url: only http:// proxies are supported for scrapes");
}

#[test]
fn openssl_s_server_answers_over_tls_12_and_13_until_close() {
    // Another TLS stack than the client's: OpenSSL's test server, `-WWW` serving a file in
    // HTTP/1.0 (no Content-Length: the body ends when the TLS session closes).
    let certs = TempDir::new("tls-openssl");
    let dir = &certs.0;
    make_certificates(dir);
    std::fs::write(dir.join("metrics"), "a 1\nb{x=\"y\"} 2\n").expect("page");
    let port = support::free_port();
    let server = std::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", "srv.pem", "-key", "srv.key", "-WWW", "-quiet"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server: ./test.sh installs openssl; this test never skips");
    let _server = support::Killed(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openssl s_server did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for versions in ["max_version: TLS12", "min_version: TLS13"] {
        let tls = format!(
            "    tls_config: {{ca_file: {}, {versions}}}\n",
            dir.join("ca.pem").display()
        );
        let mut h = Harness::new("openssl", &job("https", &format!("127.0.0.1:{port}"), &tls));
        h.up_with(2);
        h.up_with(2);
    }
}
