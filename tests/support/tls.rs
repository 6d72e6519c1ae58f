//! Test certificates made with Debian's `openssl`, and a TLS server on 127.0.0.1 built on
//! rustls' server side (the same crate promlet's client side uses, another implementation of
//! nothing: the handshake is real, the peer is ours).

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::receiver::{serve_wrapped, Answer, HttpRequest, Stream};

/// Runs Debian's `openssl` with `args` in `dir`; panics if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl not runnable ({e}): ./test.sh installs it; this test never skips")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

/// A self-signed CA `name`.pem / `name`.key with common name `cn`.
fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (key, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC);
    ca.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
    openssl(dir, &ca);
}

/// `pem`, signed by CA `ca` for the request `csr`, with extensions from the file `ext`,
/// valid for `days` (-1: expired since yesterday).
fn sign(dir: &Path, csr: &str, ca: &str, pem: &str, ext: &str, days: &str) {
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            pem,
            "-days",
            days,
            "-extfile",
            ext,
        ],
    );
}

/// `pem`, signed by `ca` for `csr`, valid on 2020-01-01 only: `openssl x509 -req` cannot
/// set dates (`-days -1` gives notAfter before notBefore, a different error), `openssl ca`
/// can, with a minimal CA config.
fn expired(dir: &Path, csr: &str, pem: &str) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n",
    )
    .expect("ca.cnf");
    std::fs::write(dir.join("index.txt"), "").expect("index");
    std::fs::write(dir.join("serial"), "01\n").expect("serial");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            csr,
            "-out",
            pem,
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            "ext",
            "-notext",
        ],
    );
}

/// Certificates as PEM files in `dir`:
/// - `ca.pem`/`ca.key`: the CA everything is signed by, `other-ca.pem`: one that signed none
///   of the server certificates;
/// - `srv.key` with `srv.pem` (for 127.0.0.1 and localhost), `expired.pem` (the same names,
///   expired), `wrongname.pem` (for `other.example` only);
/// - `cli.key` with `cli.pem` (a client certificate of `ca`), `cli-other.pem` (the same key,
///   signed by `other-ca`), and `v1.pem` (an X.509 v1 certificate of the client key).
pub fn make_certificates(dir: &Path) {
    make_ca(dir, "ca", "promlet-test-ca");
    make_ca(dir, "other-ca", "promlet-other-ca");
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    std::fs::write(dir.join("other-ext"), "subjectAltName=DNS:other.example\n").expect("ext");
    std::fs::write(dir.join("cli-ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, cn) in [("srv", "/CN=127.0.0.1"), ("cli", "/CN=promlet-client")] {
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut req = vec!["req"];
        req.extend(EC);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", cn]);
        openssl(dir, &req);
    }
    sign(dir, "srv.csr", "ca", "srv.pem", "ext", "2");
    expired(dir, "srv.csr", "expired.pem");
    sign(dir, "srv.csr", "ca", "wrongname.pem", "other-ext", "2");
    sign(dir, "cli.csr", "ca", "cli.pem", "cli-ext", "2");
    sign(dir, "cli.csr", "other-ca", "cli-other.pem", "cli-ext", "2");
    // Without extensions `openssl x509 -req` writes an X.509 v1 certificate.
    openssl(
        dir,
        &[
            "x509", "-req", "-in", "cli.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out",
            "v1.pem", "-days", "2",
        ],
    );
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("cert file")
        .map(|c| c.expect("cert"))
        .collect()
}

/// A rustls server config with `cert`/`key`; with `client_ca`, a client certificate signed
/// by it is required.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca) {
                roots.add(c).expect("client ca");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    Arc::new(
        builder
            .with_single_cert(certs(cert), key)
            .expect("server cert"),
    )
}

/// Serves HTTP/1.1 over TLS with `config` on an ephemeral 127.0.0.1 port, as
/// [`super::receiver::serve`] does over TCP. Returns the port.
pub fn serve_tls<F>(config: Arc<rustls::ServerConfig>, answer: F) -> u16
where
    F: Fn(&HttpRequest) -> Answer + Send + Sync + 'static,
{
    serve_wrapped(
        move |tcp: TcpStream| {
            let conn = rustls::ServerConnection::new(Arc::clone(&config)).ok()?;
            Some(Box::new(rustls::StreamOwned::new(conn, tcp)) as Box<dyn Stream>)
        },
        answer,
    )
}
