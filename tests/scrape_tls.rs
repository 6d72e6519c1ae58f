//! Scrapes over https against real peers on 127.0.0.1: a rustls server (tests/support/tls.rs)
//! with certificates made by `openssl`, and a plain HTTP server. What the ring holds after
//! each scrape (read back as a sender reads it) and the target's last error are checked: a
//! certificate problem marks the target down with Go's words for it, never crashes.

mod support;

use std::net::TcpStream;
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
