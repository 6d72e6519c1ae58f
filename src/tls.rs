//! TLS material for both HTTP clients: the system CA bundle, `tls_config` files read and
//! checked as rustls will take them, and, for scrapes, a rustls [`ClientConfig`] that follows
//! its files on disk ([`ClientTls`]).
//!
//! The remote-write side hands what it reads here to ureq, which builds its own rustls config;
//! the scrape side drives rustls itself over the loop's sockets (`scrape::http`), so it builds
//! the config here: CA file or the system bundle, client certificate and key, `server_name`,
//! `insecure_skip_verify`, `min_version`/`max_version`.
//!
//! Certificate errors read as Go's `crypto/x509` ones, which is what Prometheus shows for a
//! down target (`x509: certificate signed by unknown authority`, …), with the subject of the
//! certificate that was refused: rustls' own messages do not name it.
//!
//! # Rotation
//! cert-manager and the kubelet rotate certificates in place. [`ClientTls::current`] looks at
//! the files' size, modification time and inode at every scrape (three `stat` calls, no read)
//! and rebuilds the config only when one changed; the caller drops its kept-alive connection
//! then, as Prometheus' `tlsRoundTripper` closes its idle connections. Prometheus hashes the
//! files' contents on every request instead; a `stat` is cheaper and catches every rewrite
//! that changes size, time or inode (a Kubernetes secret volume swaps a symlink: a new inode).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::config::http::{TlsConfig, TlsVersion};

/// A `tls_config` file that could not be read or holds nothing rustls takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The key: `ca_file`, `cert_file` or `key_file` (or `ca_file` for the system bundle).
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "tls_config.{}: {}", self.key, self.reason)
        } else {
            write!(f, "tls_config.{} {}: {}", self.key, self.path, self.reason)
        }
    }
}

impl std::error::Error for TlsError {}

fn bad(key: &'static str, path: &str, reason: impl Into<String>) -> TlsError {
    TlsError {
        key,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| bad(key, path, e.to_string()))
}

/// Where Go's `crypto/x509` looks for the system's CA bundle on Linux (`root_linux.go`), in
/// its order; `SSL_CERT_FILE` comes first, as there.
const SYSTEM_CA_FILES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's CA certificates, as Prometheus (Go) trusts them when `ca_file` is unset.
/// promlet bundles no roots of its own (a FROM-scratch image has none unless one is mounted or
/// `ca_file` names one): none found (an empty list) means no https server verifies; the
/// caller says so once (a scrape fails with the reason, the sender logs it).
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    let from_env = std::env::var("SSL_CERT_FILE").ok();
    let candidates = from_env.iter().map(String::as_str).chain(SYSTEM_CA_FILES);
    for path in candidates {
        if let Ok(pem) = std::fs::read(path) {
            let roots: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(Result::ok)
                .collect();
            if !roots.is_empty() {
                return roots;
            }
        }
    }
    Vec::new()
}

/// The certificates of the PEM file `path` (`key` names it in errors); at least one.
pub fn read_certs(key: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(key, path, "no certificate in it"));
    }
    Ok(certs)
}

/// The client certificate chain and key of `tls`, if configured, checked as rustls (ring
/// provider) will check them: the leaf is X.509 v3 (webpki takes nothing else, and
/// `openssl x509 -req` without extensions writes v1), the key loads and matches it. ureq
/// panics on a pair rustls refuses, so the sender must know before it hands them over.
pub type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Reads `cert_file` and `key_file` (see [`Identity`]); `None` when neither is set.
pub fn client_identity(tls: &TlsConfig) -> Result<Option<Identity>, TlsError> {
    match (tls.cert_file.is_empty(), tls.key_file.is_empty()) {
        (true, true) => Ok(None),
        (true, false) => Err(bad(
            "key_file",
            &tls.key_file,
            "client key file specified without client cert file",
        )),
        (false, true) => Err(bad(
            "cert_file",
            &tls.cert_file,
            "client cert file specified without client key file",
        )),
        (false, false) => {
            let chain = read_certs("cert_file", &tls.cert_file)?;
            if x509_version(&chain[0]) != Some(3) {
                return Err(bad(
                    "cert_file",
                    &tls.cert_file,
                    "not an X.509 v3 certificate (rustls takes v3 only)",
                ));
            }
            let pem = read("key_file", &tls.key_file)?;
            // The error would quote nothing of the key, but say only that it failed.
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|_| bad("key_file", &tls.key_file, "no usable private key in it"))?;
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
                .map_err(|e| {
                    bad(
                        "key_file",
                        &tls.key_file,
                        format!("refused with cert_file: {e}"),
                    )
                })?;
            Ok(Some((chain, key)))
        }
    }
}

/// One DER TLV at the start of `b`: (tag, contents, rest). Short and long lengths.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, &x| acc << 8 | usize::from(x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The fields of `tbsCertificate`: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {…} …}`.
fn tbs(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = der(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = der(cert)? else {
        return None;
    };
    Some(tbs)
}

/// The X.509 version (1, 2 or 3) of a DER certificate, `None` if it does not parse:
/// `tbsCertificate ::= SEQUENCE { [0] EXPLICIT Version DEFAULT v1, … }` (RFC 5280 §4.1),
/// `Version ::= INTEGER { v1(0), v2(1), v3(2) }`.
pub fn x509_version(cert: &[u8]) -> Option<u8> {
    match der(tbs(cert)?)? {
        (0xa0, explicit, _) => match der(explicit)? {
            (0x02, [v], _) if *v <= 2 => Some(v + 1),
            _ => None,
        },
        // No version field: v1.
        (0x02, _, _) => Some(1),
        _ => None,
    }
}

/// The subject's common name of a DER certificate, if it has one:
/// `tbsCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
/// validity, subject Name, … }`, `Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value }`,
/// `id-at-commonName` is 2.5.4.3 (RFC 5280 §4.1.2.6, §A.1).
pub fn subject_common_name(cert: &[u8]) -> Option<&str> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let mut rest = tbs(cert)?;
    if let Some((0xa0, _, after)) = der(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (0x30, mut name, _) = der(rest)? else {
        return None;
    };
    while let Some((_, set, after)) = der(name) {
        name = after;
        let (0x30, pair, _) = der(set)? else {
            continue;
        };
        let (0x06, oid, value) = der(pair)? else {
            continue;
        };
        if oid == COMMON_NAME {
            return std::str::from_utf8(der(value)?.1).ok();
        }
    }
    None
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Whether `version` is allowed by `tls`'s `min_version`/`max_version` (the config loader
/// refuses TLS 1.0 and 1.1, which rustls does not speak).
fn allowed(tls: &TlsConfig, version: TlsVersion) -> bool {
    tls.min_version.is_none_or(|v| version >= v) && tls.max_version.is_none_or(|v| version <= v)
}

thread_local! {
    /// The system bundle's roots while some scrape config holds them: ~100 KB for Debian's
    /// 146 roots, built once however many https targets trust them. Scrape configs are built
    /// on the loop thread only; a thread-local needs no lock.
    static SYSTEM_ROOTS: std::cell::RefCell<std::sync::Weak<RootCertStore>> =
        const { std::cell::RefCell::new(std::sync::Weak::new()) };
}

/// The system bundle as a root store, shared (see [`SYSTEM_ROOTS`]). The bundle is read when
/// no config holds it any more, so a changed bundle is seen by configs built after that.
fn shared_system_roots() -> Arc<RootCertStore> {
    SYSTEM_ROOTS.with(|cell| {
        if let Some(roots) = cell.borrow().upgrade() {
            return roots;
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots());
        let roots = Arc::new(roots);
        *cell.borrow_mut() = Arc::downgrade(&roots);
        roots
    })
}

/// A scrape's rustls config from `tls`, files read now.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(provider());
    let mut versions = Vec::with_capacity(2);
    if allowed(tls, TlsVersion::Tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if allowed(tls, TlsVersion::Tls12) {
        versions.push(&rustls::version::TLS12);
    }
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| bad("min_version", "", e.to_string()))?;
    let webpki = if tls.insecure_skip_verify {
        None
    } else {
        let roots = if tls.ca_file.is_empty() {
            shared_system_roots()
        } else {
            let mut roots = RootCertStore::empty();
            for c in read_certs("ca_file", &tls.ca_file)? {
                roots
                    .add(c)
                    .map_err(|e| bad("ca_file", &tls.ca_file, e.to_string()))?;
            }
            Arc::new(roots)
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .build()
            .map_err(|e| {
                let reason = format!("{e} (no system CA bundle found: set ca_file)");
                bad("ca_file", &tls.ca_file, reason)
            })?;
        Some(webpki)
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, provider }));
    let mut config = match client_identity(tls)? {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("key_file", &tls.key_file, e.to_string()))?,
    };
    // HTTP/1.1 only (`enable_http2` is accepted and means nothing here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The file identity [`ClientTls`] compares: (size, modification time, inode).
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    if path.is_empty() {
        return None;
    }
    // `metadata` follows symlinks: a swapped secret-volume link shows the new file's inode.
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// A scrape client's TLS config, rebuilt when its files change (see the module docs).
pub struct ClientTls {
    tls: TlsConfig,
    built: Option<Arc<ClientConfig>>,
    /// ca_file, cert_file, key_file as they were when `built` was read.
    stamps: [Stamp; 3],
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("tls", &self.tls)
            .field("built", &self.built.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether [`ClientTls::current`] rebuilt the config (the caller drops kept-alive connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The same config as last time.
    Same,
    /// Built now: new files, or the first use.
    Rebuilt,
}

impl ClientTls {
    /// Nothing is read until [`ClientTls::current`].
    pub fn new(tls: &TlsConfig) -> ClientTls {
        ClientTls {
            tls: tls.clone(),
            built: None,
            stamps: [None, None, None],
        }
    }

    fn stamps_now(&self) -> [Stamp; 3] {
        [
            stamp(&self.tls.ca_file),
            stamp(&self.tls.cert_file),
            stamp(&self.tls.key_file),
        ]
    }

    /// The config to connect with: the one built before unless a file changed. A file that
    /// fails to load fails this call (the scrape, with the reason) and is tried again at the
    /// next; the old config is not used meanwhile, as Prometheus does not either.
    pub fn current(&mut self) -> Result<(Arc<ClientConfig>, Freshness), TlsError> {
        let now = self.stamps_now();
        if let Some(c) = &self.built {
            if now == self.stamps {
                return Ok((Arc::clone(c), Freshness::Same));
            }
        }
        let rotated = self.built.take().is_some();
        let c = client_config(&self.tls)?;
        if rotated {
            // Lifecycle, not per scrape: files change when certificates rotate.
            log::info!(
                "tls_config files changed on disk (ca_file {:?}, cert_file {:?}): reloaded",
                self.tls.ca_file,
                self.tls.cert_file
            );
        }
        self.stamps = now;
        self.built = Some(Arc::clone(&c));
        Ok((c, Freshness::Rebuilt))
    }
}

/// A certificate error as Go's `crypto/x509` words it, naming the subject of the refused
/// certificate (the leaf: the one the error is about in every case rustls reports).
#[derive(Debug)]
struct Refused {
    error: CertificateError,
    subject: Option<String>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        certificate(f, &self.error)?;
        if let Some(s) = &self.subject {
            write!(f, " (subject CN={s})")?;
        }
        Ok(())
    }
}

/// Writes a certificate error as Go's `crypto/x509` words it: the one wording of both HTTP
/// clients, the scrape side's (through [`Refused`]) and the sender's (through [`Reason`],
/// which gets rustls' error after ureq's handshake, without the certificate). No variant is
/// written in Debug form: an operator reads these, and alerts match Prometheus' text.
fn certificate(f: &mut fmt::Formatter<'_>, error: &CertificateError) -> fmt::Result {
    use CertificateError as E;
    match error {
        E::UnknownIssuer => f.write_str("x509: certificate signed by unknown authority"),
        E::ExpiredContext { time, not_after } => write!(
            f,
            "x509: certificate has expired or is not yet valid: current time {} is after {}",
            Rfc3339Seconds(*time),
            Rfc3339Seconds(*not_after)
        ),
        E::NotValidYetContext { time, not_before } => write!(
            f,
            "x509: certificate has expired or is not yet valid: current time {} is before {}",
            Rfc3339Seconds(*time),
            Rfc3339Seconds(*not_before)
        ),
        E::Expired | E::NotValidYet => {
            f.write_str("x509: certificate has expired or is not yet valid")
        }
        E::NotValidForNameContext {
            expected,
            presented,
        } => {
            f.write_str("x509: certificate is valid for ")?;
            let mut names = presented
                .iter()
                .filter_map(|n| presented_name(n))
                .peekable();
            if names.peek().is_none() {
                f.write_str("no names")?;
            }
            for (i, name) in names.enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
            }
            write!(f, ", not {}", server_name(expected))
        }
        E::NotValidForName => f.write_str("x509: certificate is not valid for the host"),
        E::BadSignature => f.write_str("x509: certificate signature is invalid"),
        E::BadEncoding => f.write_str("x509: malformed certificate"),
        E::UnhandledCriticalExtension => f.write_str("x509: unhandled critical extension"),
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            f.write_str("x509: certificate specifies an incompatible key usage")
        }
        // Go's `ErrUnsupportedAlgorithm`; rustls would print these in Debug form.
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext { .. }
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            f.write_str("x509: cannot verify signature: algorithm unimplemented")
        }
        E::Other(OtherError(inner)) => {
            if let Some(refused) = inner.downcast_ref::<Refused>() {
                return fmt::Display::fmt(refused, f);
            }
            match inner.downcast_ref::<webpki::Error>() {
                // Go's crypto/x509 has no such check: `Verify` looks at basicConstraints on
                // issuers only (`NotAuthorizedToSign`). For the same server Prometheus says
                // "signed by unknown authority" when the CA is not trusted (the common case:
                // `openssl req -x509` makes CA:TRUE certificates by default), and connects
                // when it is; webpki refuses both before it looks for an issuer. So Go's
                // words for the first case, and why, for whoever already trusts it.
                Some(webpki::Error::CaUsedAsEndEntity) => f.write_str(
                    "x509: certificate signed by unknown authority \
                     (a CA certificate presented as the server's own)",
                ),
                // Go's `NotAuthorizedToSign` and `TooManyIntermediates` (verify.go).
                Some(webpki::Error::EndEntityUsedAsCa) => {
                    f.write_str("x509: certificate is not authorized to sign other certificates")
                }
                Some(webpki::Error::PathLenConstraintViolated) => {
                    f.write_str("x509: too many intermediates for path length constraint")
                }
                // Rare, and with no Go counterpart: rustls' name for it, not its Debug form.
                _ => write!(f, "x509: certificate refused: {inner}"),
            }
        }
        other => write!(f, "x509: certificate refused: {other}"),
    }
}

impl std::error::Error for Refused {}

/// A name of the certificate as webpki presents it (its `GeneralName` Debug form:
/// `DnsName("a.example")`, `IpAddress(10.0.0.1)`) as Go lists it; other kinds are not listed.
fn presented_name(name: &str) -> Option<&str> {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| name.strip_prefix("IpAddress(")?.strip_suffix(')'))
}

/// A `UnixTime` as RFC 3339 in UTC, seconds (Go prints `time.Time` so in that message).
struct Rfc3339Seconds(UnixTime);

impl fmt::Display for Rfc3339Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = i64::try_from(self.0.as_secs()).unwrap_or(i64::MAX / 1000) * 1000;
        let full = crate::wal::inspect::Rfc3339(ms).to_string();
        // `…T12:34:56.000Z` → `…T12:34:56Z`.
        f.write_str(full.strip_suffix(".000Z").unwrap_or(&full))?;
        if full.ends_with(".000Z") {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The server certificate check: webpki's, its errors reworded ([`Refused`]); or none at
/// all under `insecure_skip_verify` (`webpki: None`), as Go's `InsecureSkipVerify`. The
/// handshake signatures are checked either way (the peer holds the key of the certificate it
/// sent), with the provider's algorithms, as webpki's verifier does.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(error) => {
                    let subject = subject_common_name(end_entity).map(str::to_owned);
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(Refused { error, subject }),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS failure as a scrape reports it (see [`Reason`]).
#[derive(Debug)]
pub struct Failure(pub rustls::Error);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Reason(&self.0), f)
    }
}

/// A TLS failure in the words of both HTTP clients: certificate errors in Go's words (see
/// [`certificate`]), alerts as Go prints them (`remote error: tls: bad certificate`), the
/// rest as rustls says, after `tls: `.
#[derive(Debug, Clone, Copy)]
pub struct Reason<'a>(pub &'a rustls::Error);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            rustls::Error::InvalidCertificate(e) => certificate(f, e),
            rustls::Error::AlertReceived(alert) => {
                f.write_str("remote error: tls: ")?;
                spaced(f, &format!("{alert:?}"))
            }
            other => write!(f, "tls: {other}"),
        }
    }
}

impl std::error::Error for Failure {}

/// `BadCertificate` → `bad certificate`.
fn spaced(f: &mut fmt::Formatter<'_>, camel: &str) -> fmt::Result {
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}", c.to_ascii_lowercase())?;
        } else {
            write!(f, "{c}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x509_version_is_read_from_the_der() {
        // Hand-built: SEQUENCE { SEQUENCE { [0] { INTEGER 2 }, INTEGER 1 } }.
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01,
        ];
        assert_eq!(x509_version(&v3), Some(3));
        // No version field: v1.
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&v1), Some(1));
        // Long-form lengths.
        let long = [0x30, 0x81, 0x05, 0x30, 0x81, 0x02, 0x02, 0x00];
        assert_eq!(x509_version(&long), Some(1));
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x30],
            &[0x31, 0x02, 0x30, 0x00],
            &[0x30, 0x02, 0x30, 0x00],
            &[0x30, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x02, 0x01, 0x07],
            &[0x30, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(x509_version(bad), None, "{bad:02x?}");
        }
    }

    /// A hand-built tbsCertificate: version, serial, algorithm, issuer, validity, subject.
    fn certificate(subject: &[u8]) -> Vec<u8> {
        let mut tbs = vec![0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01, 0x30, 0x00];
        tbs.extend([0x30, 0x00, 0x30, 0x00]);
        tbs.push(0x30);
        tbs.push(u8::try_from(subject.len()).expect("short"));
        tbs.extend_from_slice(subject);
        let mut inner = vec![0x30, u8::try_from(tbs.len()).expect("short")];
        inner.extend(tbs);
        let mut cert = vec![0x30, u8::try_from(inner.len()).expect("short")];
        cert.extend(inner);
        cert
    }

    #[test]
    fn the_subject_common_name_is_found_among_other_attributes() {
        // SET { SEQUENCE { OID 2.5.4.10 (O), UTF8String "org" } },
        // SET { SEQUENCE { OID 2.5.4.3 (CN), PrintableString "host" } }.
        let name = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x03, b'o', b'r', b'g',
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x04, b'h', b'o', b's',
            b't',
        ];
        assert_eq!(subject_common_name(&certificate(&name)), Some("host"));
        assert_eq!(subject_common_name(&certificate(&name[..14])), None);
        assert_eq!(subject_common_name(&certificate(&[])), None);
        assert_eq!(subject_common_name(&[0x30, 0x02, 0x30, 0x00]), None);
    }

    fn webpki_error(e: webpki::Error) -> CertificateError {
        CertificateError::Other(OtherError(Arc::new(e)))
    }

    #[test]
    fn certificate_errors_read_as_go_words_them() {
        let at = |secs| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let cases = [
            (
                CertificateError::UnknownIssuer,
                "x509: certificate signed by unknown authority (subject CN=srv)",
            ),
            (
                CertificateError::ExpiredContext {
                    time: at(1_700_000_000),
                    not_after: at(1_600_000_000),
                },
                "x509: certificate has expired or is not yet valid: current time \
                 2023-11-14T22:13:20Z is after 2020-09-13T12:26:40Z (subject CN=srv)",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("127.0.0.1").expect("ip"),
                    presented: vec![
                        "DnsName(\"other.example\")".to_owned(),
                        "DirectoryName".to_owned(),
                        "IpAddress(10.0.0.1)".to_owned(),
                    ],
                },
                "x509: certificate is valid for other.example, 10.0.0.1, not 127.0.0.1 \
                 (subject CN=srv)",
            ),
            // webpki's own errors, which rustls passes on as `Other`.
            (
                webpki_error(webpki::Error::CaUsedAsEndEntity),
                "x509: certificate signed by unknown authority \
                 (a CA certificate presented as the server's own) (subject CN=srv)",
            ),
            (
                webpki_error(webpki::Error::EndEntityUsedAsCa),
                "x509: certificate is not authorized to sign other certificates (subject CN=srv)",
            ),
            (
                webpki_error(webpki::Error::MaximumPathDepthExceeded),
                "x509: certificate refused: MaximumPathDepthExceeded (subject CN=srv)",
            ),
            (
                CertificateError::InvalidPurpose,
                "x509: certificate specifies an incompatible key usage (subject CN=srv)",
            ),
            (
                CertificateError::UnsupportedSignatureAlgorithmContext {
                    signature_algorithm_id: vec![6, 3, 43, 101, 112],
                    supported_algorithms: Vec::new(),
                },
                "x509: cannot verify signature: algorithm unimplemented (subject CN=srv)",
            ),
        ];
        for (error, want) in cases {
            // The sender's way: rustls' error as ureq hands it over, no subject known.
            let bare = Failure(rustls::Error::InvalidCertificate(error.clone())).to_string();
            assert_eq!(bare, want.replace(" (subject CN=srv)", ""));
            // The scrape's way: wrapped by `Verifier`, with the subject.
            let e = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                Arc::new(Refused {
                    error,
                    subject: Some("srv".to_owned()),
                }),
            )));
            let scrape = Failure(e).to_string();
            assert_eq!(scrape, want);
            for debug in ["Other(", "OtherError", "Context {"] {
                assert!(!scrape.contains(debug), "{scrape}");
            }
        }
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            Failure(alert).to_string(),
            "remote error: tls: bad certificate"
        );
    }

    #[test]
    fn the_system_roots_are_shared_while_held() {
        let a = shared_system_roots();
        let b = shared_system_roots();
        assert!(Arc::ptr_eq(&a, &b));
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(
            weak.upgrade().is_none(),
            "dropped with the last config holding them"
        );
    }

    #[test]
    fn versions_follow_min_and_max() {
        let mut tls = TlsConfig::default();
        assert!(allowed(&tls, TlsVersion::Tls12) && allowed(&tls, TlsVersion::Tls13));
        tls.min_version = Some(TlsVersion::Tls13);
        assert!(!allowed(&tls, TlsVersion::Tls12) && allowed(&tls, TlsVersion::Tls13));
        tls.min_version = None;
        tls.max_version = Some(TlsVersion::Tls12);
        assert!(allowed(&tls, TlsVersion::Tls12) && !allowed(&tls, TlsVersion::Tls13));
    }
}
