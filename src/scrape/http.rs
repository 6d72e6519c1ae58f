//! The scrape's HTTP/1.1 GET over TCP or TLS on the loop (smol's `Async` sockets, rustls).
//!
//! One [`Client`] per target keeps its connection alive between scrapes, as Prometheus' HTTP
//! client does, and its buffers: the request, a fixed socket buffer, the gzip inflater. The
//! body is never held whole: [`Client::fill`] hands out decoded bytes (decrypted, de-chunked,
//! then inflated) straight into the parser's window, so a 38 MB cadvisor page needs the
//! window and the socket buffer, nothing more. `body_size_limit` counts decompressed bytes, so
//! a gzip bomb fails the scrape at the limit; with no limit it still streams through the
//! bounded window.
//!
//! Framing is ours (Content-Length, chunked, or until close) over httparse's zero-copy head
//! parser: the crates that do all of it (hyper, ureq) either want a runtime of their own or
//! block. Once the buffers are warm, a plain-http scrape allocates nothing here.
//!
//! # https
//! [`Conn`] drives a `rustls::ClientConnection` over the non-blocking socket itself:
//! `read_tls`/`write_tls` run inside async-io's `read_with`/`write_with`, so rustls reads
//! straight from the socket into its own buffer and the loop never blocks. Rejected:
//! `futures-rustls` (a dependency for forty lines), and rustls' unbuffered API, which in 0.23
//! copies each record into a fresh `Vec` just as the buffered one does. So an https scrape
//! allocates once per TLS record received (a 16 KiB record: about 64 allocations per MiB of
//! body, freed at once) and once per request written; nothing per sample. The TLS config
//! (`tls_config`) is [`crate::tls::ClientTls`]: rebuilt when its files change on disk, and a
//! kept-alive connection is dropped then.
//!
//! # Redirects and proxies
//! With `follow_redirects` (the default) a 301, 302, 303, 307 or 308 with a `Location` is
//! followed, relative or absolute, http or https, at most 10 times (as Go's client: the 10th
//! redirect fails the scrape), all within `scrape_timeout`. Each hop opens a connection of its
//! own; the next scrape starts again at the target. A hop to a host name is resolved like a
//! target's ([`crate::resolver`]). The `Authorization` header goes with every hop, as
//! Prometheus' round tripper adds it to each request.
//!
//! `proxy_url` (http:// only): plain targets are asked through it in absolute form
//! (`GET http://host/path`), https targets through a `CONNECT` tunnel; user info in the URL
//! becomes a `Proxy-Authorization: Basic` header, as Go's transport sends it. A proxy named by
//! host name is resolved as a target is; the target's name is then the proxy's to resolve.
//!
//! # Host names
//! IP literals and `localhost` are addresses as they stand. Any other host (target, redirect,
//! proxy) is resolved when a connection to it is opened, by the loop's
//! [`crate::resolver::Resolver`]: answers are cached per name, and a lookup the cache cannot
//! answer runs on the resolver thread while the loop awaits it, so a silent DNS server holds
//! up only the scrapes that need its names, each until its `scrape_timeout`. Building a
//! client resolves nothing. A kept-alive connection needs no lookup; a connection refused at
//! every address drops the cached answer, so the next scrape asks again.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use crate::config::http::HttpClientConfig;
use crate::parse::ACCEPT_HEADER;
use crate::resolver::{DnsError, Resolver};
use crate::targets::Target;
use crate::tls::{ClientTls, Failure, Freshness, TlsError};

/// Size of the socket buffer: response heads must fit in it (Go's default limit is 1 MiB, but
/// no exporter sends more than a few hundred bytes), and body bytes pass through it.
const SOCKET_BUFFER: usize = 16 << 10;
/// Headers parsed per response; exporters send fewer than ten.
const MAX_HEADERS: usize = 32;
/// Go's `http.Client` stops at the 10th redirect (`defaultCheckRedirect`).
pub const MAX_REDIRECTS: usize = 10;

/// Why a scrape's HTTP exchange failed. Messages follow what Prometheus logs where one exists.
#[derive(Debug)]
pub enum HttpError {
    /// The host (target, redirect or proxy) could not be resolved.
    Resolve(DnsError),
    /// No connection could be made.
    Connect(io::Error),
    /// The connection failed while writing or reading.
    Io(io::Error),
    /// The connection closed before the response was complete.
    Closed,
    /// The response head did not parse or exceeded the buffer.
    BadResponse(&'static str),
    /// A status other than 200.
    Status(u16),
    /// A `Content-Encoding` other than gzip or identity.
    Encoding,
    /// The gzip stream was malformed.
    Gzip(&'static str),
    /// The (decompressed) body reached `body_size_limit`.
    BodySize(u64),
    /// The TLS handshake or a record failed: a certificate refused, an alert, bad data.
    Tls(Failure),
    /// An https target answered the handshake in plain HTTP.
    PlainHttp,
    /// A `tls_config` file could not be read or used.
    TlsConfig(TlsError),
    /// The 10th redirect in a row.
    Redirects,
    /// A redirect that cannot be followed (a bad `Location`).
    Redirect(String),
    /// `proxy_url` cannot be used for scrapes.
    Proxy(&'static str),
    /// The proxy answered `CONNECT` with this status.
    ProxyConnect(u16),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Go's dial error around its net.DNSError.
            HttpError::Resolve(e) => write!(f, "dial tcp: {e}"),
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Io(e) => write!(f, "read: {e}"),
            HttpError::Closed => f.write_str("unexpected EOF"),
            HttpError::BadResponse(why) => write!(f, "malformed HTTP response: {why}"),
            HttpError::Status(code) => {
                write!(f, "server returned HTTP status {code} {}", reason(*code))
            }
            HttpError::Encoding => f.write_str("unsupported Content-Encoding"),
            HttpError::Gzip(why) => write!(f, "gzip: {why}"),
            HttpError::BodySize(limit) => {
                write!(f, "body size limit exceeded ({limit} bytes)")
            }
            HttpError::Tls(e) => e.fmt(f),
            // Go's net/http words it so.
            HttpError::PlainHttp => f.write_str("http: server gave HTTP response to HTTPS client"),
            HttpError::TlsConfig(e) => e.fmt(f),
            HttpError::Redirects => write!(f, "stopped after {MAX_REDIRECTS} redirects"),
            HttpError::Redirect(why) => write!(f, "redirect: {why}"),
            HttpError::Proxy(why) => write!(f, "proxy_url: {why}"),
            HttpError::ProxyConnect(code) => write!(
                f,
                "proxyconnect: proxy returned HTTP status {code} {}",
                reason(*code)
            ),
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Connect(e) | HttpError::Io(e) => Some(e),
            HttpError::Resolve(e) => Some(e),
            HttpError::Tls(e) => Some(e),
            HttpError::TlsConfig(e) => Some(e),
            _ => None,
        }
    }
}

/// The reason phrase Go's `http.StatusText` gives the common codes (Prometheus prints it).
fn reason(code: u16) -> &'static str {
    match code {
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Whether Go's client follows `code` (`http.Client.Do`: 301, 302, 303, 307, 308).
fn is_redirect(code: u16) -> bool {
    matches!(code, 301 | 302 | 303 | 307 | 308)
}

/// One connection: a socket, and the TLS session on it for https.
struct Conn {
    tcp: Async<TcpStream>,
    tls: Option<Box<ClientConnection>>,
}

impl Conn {
    /// Writes what rustls has queued (handshake messages, records, alerts).
    async fn flush_tls(tcp: &Async<TcpStream>, tls: &mut ClientConnection) -> io::Result<()> {
        while tls.wants_write() {
            tcp.write_with(|mut s| tls.write_tls(&mut s)).await?;
        }
        Ok(())
    }

    /// Reads TLS bytes from the socket into rustls and processes them; `Ok(0)` at the
    /// socket's end. A TLS error queues an alert, which is sent before the error returns.
    async fn receive_tls(
        tcp: &Async<TcpStream>,
        tls: &mut ClientConnection,
    ) -> Result<usize, HttpError> {
        let n = tcp
            .read_with(|mut s| tls.read_tls(&mut s))
            .await
            .map_err(HttpError::Io)?;
        if let Err(e) = tls.process_new_packets() {
            let _ = Conn::flush_tls(tcp, tls).await;
            return Err(HttpError::Tls(Failure(e)));
        }
        Ok(n)
    }

    /// Runs the TLS handshake to its end (nothing to do for plain TCP).
    async fn handshake(&mut self) -> Result<(), HttpError> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(());
        };
        let mut first = true;
        while tls.is_handshaking() {
            Conn::flush_tls(&self.tcp, tls)
                .await
                .map_err(HttpError::Io)?;
            if first {
                // As Go's transport: a first record that reads `HTTP/` is a plain server.
                let mut head = [0u8; 5];
                let n = self
                    .tcp
                    .read_with(|s| s.peek(&mut head))
                    .await
                    .map_err(HttpError::Io)?;
                if head[..n] == b"HTTP/"[..n] && n > 0 {
                    return Err(HttpError::PlainHttp);
                }
                first = false;
            }
            if tls.is_handshaking() && Conn::receive_tls(&self.tcp, tls).await? == 0 {
                return Err(HttpError::Closed);
            }
        }
        Conn::flush_tls(&self.tcp, tls).await.map_err(HttpError::Io)
    }

    async fn write_all(&mut self, data: &[u8]) -> Result<(), HttpError> {
        match self.tls.as_deref_mut() {
            None => self.tcp.write_all(data).await.map_err(HttpError::Io),
            Some(tls) => {
                tls.writer().write_all(data).map_err(HttpError::Io)?;
                Conn::flush_tls(&self.tcp, tls).await.map_err(HttpError::Io)
            }
        }
    }

    /// Reads plaintext into `out`; `Ok(0)` at the end of the stream. A TLS peer that closes
    /// without `close_notify` ends the stream like a TCP close: the framing decides whether
    /// the body was complete, as it does for plain http.
    async fn read(&mut self, out: &mut [u8]) -> Result<usize, HttpError> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.tcp.read(out).await.map_err(HttpError::Io);
        };
        loop {
            match tls.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(HttpError::Io(e)),
            }
            Conn::flush_tls(&self.tcp, tls)
                .await
                .map_err(HttpError::Io)?;
            Conn::receive_tls(&self.tcp, tls).await?;
        }
    }
}

/// A URL the client is at: the target, or where a redirect sent it.
#[derive(Debug, Default)]
struct Place {
    https: bool,
    /// `host:port`.
    authority: String,
    path_and_query: String,
    /// The address when the host is an IP literal or `localhost`; `None` for a name.
    literal: Option<SocketAddr>,
}

/// The default port of a scheme, for a `Location` without one.
fn default_port(https: bool) -> u16 {
    if https {
        443
    } else {
        80
    }
}

/// Whether `host[:port]` has a port (`[v6]` alone has none).
fn has_port(authority: &str) -> bool {
    authority
        .rfind(':')
        .is_some_and(|i| !authority[i..].contains(']'))
}

/// The host of `host:port` (`[v6]:port` without its brackets).
fn host_of(authority: &str) -> &str {
    let host = match authority.rfind(':') {
        Some(i) if has_port(authority) => &authority[..i],
        _ => authority,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Addresses of `authority` without a DNS lookup: IP literals and `localhost`; `None` for a
/// name that needs the resolver.
fn literal_addrs(authority: &str) -> Option<SocketAddr> {
    if let Ok(a) = authority.parse::<SocketAddr>() {
        return Some(a);
    }
    let port = authority
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The port of `host:port`, as Go's `net.SplitHostPort` reads it.
fn port_of(authority: &str) -> Result<u16, HttpError> {
    let bad = |why| HttpError::Connect(io::Error::new(io::ErrorKind::InvalidInput, why));
    if !has_port(authority) {
        return Err(bad("missing port in address"));
    }
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("invalid port"))
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length` bytes left.
    Length(u64),
    /// Chunked: bytes left in the current chunk, 0 between chunks.
    Chunked(u64),
    /// Until the server closes.
    Close,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
    /// The body is over (the last chunk and trailers are read).
    Done,
}

/// The gzip layer: the header, the deflate stream, the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gzip {
    /// Not compressed.
    Identity,
    /// Reading the header.
    Header,
    /// Inflating.
    Deflate,
    /// The deflate stream ended; the 8-byte trailer is skipped.
    Trailer,
}

/// The `proxy_url` of a scrape config: where to connect instead of the target.
struct Proxy {
    authority: String,
    /// As [`Place::literal`].
    literal: Option<SocketAddr>,
    /// `Proxy-Authorization` for the URL's user info, as Go's transport sends it; a secret.
    authorization: Option<String>,
}

/// The `Proxy-Authorization` value for the user info of `url` (`user[:password]@`), each part
/// percent-decoded as Go's `url.User` holds it: `Basic base64(user:password)`.
fn proxy_authorization(url: &str) -> Option<String> {
    let after = &url[url.find("//")? + 2..];
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut joined = percent_decode(user);
    joined.push(b':');
    joined.extend(percent_decode(password));
    let mut value = "Basic ".to_owned();
    crate::auth::base64_into(&mut value, &joined);
    Some(value)
}

/// `%XX` escapes decoded (the config loader already refused bad ones, as Go does).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'%' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// One target's HTTP state, kept across scrapes.
pub struct Client {
    /// The target's URL (scheme, address); its path comes with each request
    /// ([`Client::start_request`]).
    target: Place,
    /// Where a redirect sent this scrape; unused while `redirected` is false.
    hop: Place,
    redirected: bool,
    /// The open connection, and whether it is to the target (not to a redirect's host).
    conn: Option<Conn>,
    conn_at_target: bool,
    tls: ClientTls,
    /// `tls_config.server_name`: the name verified instead of the host.
    server_name: String,
    proxy: Option<Proxy>,
    /// `proxy_url` could not be used: every scrape fails with this.
    proxy_error: Option<&'static str>,
    follow_redirects: bool,
    /// The loop's resolver, for host names.
    resolver: Rc<Resolver>,
    /// A connection is waiting for a host name's lookup (left set when the exchange is
    /// dropped at its deadline: see [`Client::abandoned_lookup`]).
    resolving: Cell<bool>,
    /// Header lines after `Host` (the caller's included), then the blank line.
    headers: Vec<u8>,
    /// The request as written: request line, `Host`, `headers`.
    request: Vec<u8>,
    /// The `Location` of the last response head, if any.
    location: Vec<u8>,
    /// Socket bytes at `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    framing: Framing,
    gzip: Gzip,
    inflater: Option<Box<InflateState>>,
    keep_alive: bool,
    /// Decoded body bytes handed out so far.
    body_bytes: u64,
    content_type: Vec<u8>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.target.authority)
            .field("https", &self.target.https)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether a connection is worth reusing after a failure: a kept-alive connection the server
/// closed meanwhile fails at once, and one retry on a fresh connection is what Go's transport
/// does for idempotent requests.
fn retry_on_fresh(e: &HttpError) -> bool {
    matches!(e, HttpError::Closed | HttpError::Io(_))
}

impl Client {
    /// A client for `target` with its job's HTTP settings. Nothing is resolved and nothing of
    /// `tls_config` is read until the first connection needs it.
    pub fn new(target: &Target, http: &HttpClientConfig) -> Client {
        let (proxy, proxy_error) = match &http.proxy_url {
            None => (None, None),
            Some(url) if url.scheme != "http" => {
                (None, Some("only http:// proxies are supported for scrapes"))
            }
            Some(url) if url.host.is_empty() => (None, Some("the proxy url has no host")),
            Some(url) => {
                let mut authority = url.host.clone();
                if !has_port(&authority) {
                    authority.push_str(":80");
                }
                (
                    Some(Proxy {
                        literal: literal_addrs(&authority),
                        authority,
                        authorization: if url.has_userinfo {
                            proxy_authorization(&url.text)
                        } else {
                            None
                        },
                    }),
                    None,
                )
            }
        };
        Client {
            target: Place {
                https: target.scheme == "https",
                authority: target.address.clone(),
                path_and_query: String::new(),
                literal: literal_addrs(&target.address),
            },
            hop: Place::default(),
            redirected: false,
            conn: None,
            conn_at_target: true,
            tls: ClientTls::new(&http.tls_config),
            server_name: http.tls_config.server_name.clone(),
            proxy,
            proxy_error,
            follow_redirects: http.follow_redirects,
            resolver: Resolver::of_this_thread(),
            resolving: Cell::new(false),
            headers: Vec::new(),
            request: Vec::new(),
            location: Vec::new(),
            buf: vec![0; SOCKET_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            framing: Framing::Done,
            gzip: Gzip::Identity,
            inflater: None,
            keep_alive: false,
            body_bytes: 0,
            content_type: Vec::new(),
        }
    }

    /// The request being built: the caller writes extra header lines (auth) into the result,
    /// then calls [`Client::send`].
    pub fn start_request(
        &mut self,
        path_and_query: &str,
        timeout: Duration,
        user_agent: &str,
    ) -> &mut Vec<u8> {
        let r = self.begin(path_and_query, user_agent, ACCEPT_HEADER);
        // Writing into a Vec cannot fail.
        let _ = write!(
            r,
            "X-Prometheus-Scrape-Timeout-Seconds: {}\r\n",
            // As Prometheus: strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64).
            timeout.as_secs_f64()
        );
        r
    }

    /// Like [`Client::start_request`], for a JSON API (the Kubernetes API server): asks for
    /// `application/json`, without the scrape's headers.
    pub fn start_json_request(&mut self, path_and_query: &str, user_agent: &str) -> &mut Vec<u8> {
        self.begin(path_and_query, user_agent, "application/json")
    }

    /// A request for `path_and_query`: its first header lines, for the caller to add to.
    fn begin(&mut self, path_and_query: &str, user_agent: &str, accept: &str) -> &mut Vec<u8> {
        self.target.path_and_query.clear();
        self.target.path_and_query.push_str(path_and_query);
        let r = &mut self.headers;
        r.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            r,
            "User-Agent: {user_agent}\r\nAccept: {accept}\r\nAccept-Encoding: gzip\r\n"
        );
        r
    }

    /// Where the client is: the target, or a redirect's place.
    fn place(&self) -> &Place {
        if self.redirected {
            &self.hop
        } else {
            &self.target
        }
    }

    /// Sends the request, following redirects, and reads the response head. Returns once the
    /// body can be read with [`Client::fill`]; its Content-Type is [`Client::content_type`].
    pub async fn send(&mut self) -> Result<(), HttpError> {
        if let Some(why) = self.proxy_error {
            return Err(HttpError::Proxy(why));
        }
        self.headers.extend_from_slice(b"\r\n");
        self.redirected = false;
        self.resolving.set(false);
        if !self.conn_at_target {
            self.conn = None;
        }
        if self.conn.is_some() && self.target.https {
            // Rotated files: new connections, as Prometheus closes its idle ones.
            let (_, fresh) = self.tls.current().map_err(HttpError::TlsConfig)?;
            if fresh == Freshness::Rebuilt {
                self.conn = None;
            }
        }
        let mut redirects = 0;
        loop {
            match self.exchange_once().await {
                Err(HttpError::Status(code))
                    if self.follow_redirects && is_redirect(code) && !self.location.is_empty() =>
                {
                    redirects += 1;
                    if redirects >= MAX_REDIRECTS {
                        return Err(HttpError::Redirects);
                    }
                    self.conn = None;
                    self.follow_location()?;
                }
                other => return other,
            }
        }
    }

    /// One request at the current place, retried once on a fresh connection if a kept-alive
    /// one turned out closed.
    async fn exchange_once(&mut self) -> Result<(), HttpError> {
        let reused = self.conn.is_some();
        match self.exchange().await {
            Err(e) if reused && retry_on_fresh(&e) => {
                self.conn = None;
                self.exchange().await
            }
            other => other,
        }
        .inspect_err(|_| self.conn = None)
    }

    /// Moves to the `Location` of the last response, resolved against the current place
    /// (RFC 3986 §5.2 for the forms servers send: absolute, `//host/…`, `/path`, `path`).
    fn follow_location(&mut self) -> Result<(), HttpError> {
        let location = std::str::from_utf8(&self.location)
            .map_err(|_| HttpError::Redirect("Location is not UTF-8".to_owned()))?
            .trim();
        // The fragment stays with the client (RFC 9110 §10.2.2).
        let location = location.split('#').next().unwrap_or("");
        let from = self.place();
        let mut https = from.https;
        let mut authority = from.authority.clone();
        let mut path = String::new();
        let scheme_end = location.find("://").filter(|&i| {
            location[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        });
        let rest = if let Some(i) = scheme_end {
            https = match location[..i].to_ascii_lowercase().as_str() {
                "http" => false,
                "https" => true,
                other => {
                    return Err(HttpError::Redirect(format!(
                        "unsupported protocol scheme {other:?}"
                    )))
                }
            };
            Some(&location[i + 1..])
        } else {
            location.strip_prefix("//").map(|_| location)
        };
        if let Some(rest) = rest {
            let after = &rest[2..];
            let end = after.find(['/', '?']).unwrap_or(after.len());
            let host = &after[..end];
            // Never quoted: user info in a Location may be a secret.
            if host.is_empty() || host.contains('@') {
                return Err(HttpError::Redirect(
                    "a Location without a host, or with user info, is not followed".to_owned(),
                ));
            }
            authority.clear();
            authority.push_str(host);
            if !has_port(host) {
                authority.push(':');
                authority.push_str(&default_port(https).to_string());
            }
            path.push_str(&after[end..]);
        } else if location.starts_with('/') {
            path.push_str(location);
        } else {
            // Relative to the current path's directory.
            let current = from.path_and_query.split('?').next().unwrap_or("/");
            let dir = &current[..current.rfind('/').map_or(0, |i| i + 1)];
            path.push_str(if dir.is_empty() { "/" } else { dir });
            path.push_str(location);
        }
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let literal = literal_addrs(&authority);
        self.hop = Place {
            https,
            authority,
            path_and_query: path,
            literal,
        };
        self.redirected = true;
        Ok(())
    }

    /// Where the TCP connection goes: the proxy's authority, or the current place's, and
    /// its address if it is a literal.
    fn dial_target(&self) -> (&str, Option<SocketAddr>) {
        match &self.proxy {
            Some(p) => (&p.authority, p.literal),
            None => {
                let place = self.place();
                (&place.authority, place.literal)
            }
        }
    }

    /// The error to report for an exchange dropped at its deadline while it waited for a
    /// host name (Go's `dial tcp: lookup NAME: i/o timeout`); `None` if it was not waiting.
    pub fn abandoned_lookup(&self) -> Option<HttpError> {
        if !self.resolving.get() {
            return None;
        }
        let e = self.resolver.timed_out(host_of(self.dial_target().0));
        Some(HttpError::Resolve(e))
    }

    /// A TCP connection to [`Client::dial_target`]: a host name is resolved first, off the
    /// loop, and its addresses are tried in order.
    async fn dial(&self) -> Result<Async<TcpStream>, HttpError> {
        let (authority, literal) = self.dial_target();
        if let Some(a) = literal {
            return Async::<TcpStream>::connect(a)
                .await
                .map_err(HttpError::Connect);
        }
        let port = port_of(authority)?;
        let host = host_of(authority);
        self.resolving.set(true);
        let found = self.resolver.lookup(host).await;
        self.resolving.set(false);
        let mut last = None;
        for ip in found.map_err(HttpError::Resolve)?.iter() {
            match Async::<TcpStream>::connect(SocketAddr::new(*ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        // The name may point elsewhere now: the next connection asks again.
        self.resolver.forget(host);
        Err(HttpError::Connect(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no address")
        })))
    }

    /// Connects to the current place (through the proxy, if any), TLS included.
    async fn connect(&mut self) -> Result<(), HttpError> {
        let tcp = self.dial().await?;
        let _ = tcp.get_ref().set_nodelay(true);
        let mut conn = Conn { tcp, tls: None };
        let https = self.place().https;
        if https {
            if self.proxy.is_some() {
                self.tunnel(&mut conn).await?;
            }
            let (config, _) = self.tls.current().map_err(HttpError::TlsConfig)?;
            let name = if self.server_name.is_empty() {
                host_of(&self.place().authority)
            } else {
                self.server_name.as_str()
            };
            let name = ServerName::try_from(name.to_owned()).map_err(|_| {
                HttpError::TlsConfig(TlsError {
                    key: "server_name",
                    path: String::new(),
                    reason: format!("{name:?} is not a valid DNS name or IP address"),
                })
            })?;
            let session = ClientConnection::new(Arc::clone(&config), name)
                .map_err(|e| HttpError::Tls(Failure(e)))?;
            conn.tls = Some(Box::new(session));
            conn.handshake().await?;
        }
        self.conn = Some(conn);
        self.conn_at_target = !self.redirected;
        Ok(())
    }

    /// Asks the proxy for a tunnel to the current place (`CONNECT host:port`).
    async fn tunnel(&mut self, conn: &mut Conn) -> Result<(), HttpError> {
        let authority = if self.redirected {
            &self.hop.authority
        } else {
            &self.target.authority
        };
        self.request.clear();
        let _ = write!(
            self.request,
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        );
        if let Some(value) = self.proxy.as_ref().and_then(|p| p.authorization.as_ref()) {
            let _ = write!(self.request, "Proxy-Authorization: {value}\r\n");
        }
        self.request.extend_from_slice(b"\r\n");
        conn.write_all(&self.request).await?;
        let mut have = 0;
        loop {
            let n = conn.read(&mut self.buf[have..]).await?;
            if n == 0 {
                return Err(HttpError::Closed);
            }
            have += n;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[..have]) {
                Ok(httparse::Status::Complete(used)) => {
                    let code = resp.code.unwrap_or(0);
                    if !(200..300).contains(&code) {
                        return Err(HttpError::ProxyConnect(code));
                    }
                    if used != have {
                        return Err(HttpError::BadResponse("bytes after the CONNECT answer"));
                    }
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if have < self.buf.len() => {}
                _ => return Err(HttpError::BadResponse("bad CONNECT answer")),
            }
        }
    }

    /// Writes the request line, `Host` and the headers into `request`.
    fn build_request(&mut self) {
        let place = if self.redirected {
            &self.hop
        } else {
            &self.target
        };
        let r = &mut self.request;
        r.clear();
        r.extend_from_slice(b"GET ");
        if self.proxy.is_some() && !place.https {
            // Absolute form through a proxy (RFC 9112 §3.2.2).
            r.extend_from_slice(b"http://");
            r.extend_from_slice(place.authority.as_bytes());
        }
        r.extend_from_slice(place.path_and_query.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        r.extend_from_slice(place.authority.as_bytes());
        r.extend_from_slice(b"\r\n");
        if let Some(Proxy {
            authorization: Some(value),
            ..
        }) = &self.proxy
        {
            if !place.https {
                r.extend_from_slice(b"Proxy-Authorization: ");
                r.extend_from_slice(value.as_bytes());
                r.extend_from_slice(b"\r\n");
            }
        }
        r.extend_from_slice(&self.headers);
    }

    async fn exchange(&mut self) -> Result<(), HttpError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        self.build_request();
        self.start = 0;
        self.end = 0;
        let conn = self.conn.as_mut().ok_or(HttpError::Closed)?;
        conn.write_all(&self.request).await?;
        self.read_head().await
    }

    async fn read_more(&mut self) -> Result<usize, HttpError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            return Err(HttpError::BadResponse("line longer than the buffer"));
        }
        let conn = self.conn.as_mut().ok_or(HttpError::Closed)?;
        let n = conn.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    async fn read_head(&mut self) -> Result<(), HttpError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(used)) => {
                    let code = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(0);
                    let mut framing = Framing::Close;
                    let mut gzip = Gzip::Identity;
                    let mut close = version == 0;
                    self.content_type.clear();
                    self.location.clear();
                    for h in resp.headers.iter() {
                        let name = h.name;
                        if name.eq_ignore_ascii_case("content-length") {
                            let n = crate::parse::decimal(h.value.trim_ascii())
                                .ok_or(HttpError::BadResponse("bad Content-Length"))?;
                            if framing == Framing::Close {
                                framing = Framing::Length(n);
                            }
                        } else if name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.eq_ignore_ascii_case(b"chunked") {
                                framing = Framing::Chunked(0);
                            } else if !h.value.eq_ignore_ascii_case(b"identity") {
                                return Err(HttpError::BadResponse(
                                    "unsupported Transfer-Encoding",
                                ));
                            }
                        } else if name.eq_ignore_ascii_case("content-encoding") {
                            if h.value.eq_ignore_ascii_case(b"gzip") {
                                gzip = Gzip::Header;
                            } else if !h.value.eq_ignore_ascii_case(b"identity") {
                                return Err(HttpError::Encoding);
                            }
                        } else if name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if name.eq_ignore_ascii_case("content-type") {
                            self.content_type.extend_from_slice(h.value);
                        } else if name.eq_ignore_ascii_case("location") {
                            self.location.extend_from_slice(h.value);
                        }
                    }
                    self.start += used;
                    if code != 200 {
                        return Err(HttpError::Status(code));
                    }
                    self.keep_alive = !close && framing != Framing::Close;
                    self.framing = framing;
                    self.gzip = gzip;
                    self.body_bytes = 0;
                    if gzip == Gzip::Header {
                        let state = self
                            .inflater
                            .get_or_insert_with(|| InflateState::new_boxed(DataFormat::Raw));
                        state.reset(DataFormat::Raw);
                    }
                    return Ok(());
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(HttpError::BadResponse("bad response head")),
            }
            if self.read_more().await? == 0 {
                return Err(HttpError::Closed);
            }
        }
    }

    /// The response's Content-Type, empty if none.
    pub fn content_type(&self) -> &[u8] {
        &self.content_type
    }

    /// Socket body bytes available now (de-chunked), reading more when there are none; an
    /// empty range at the end of the body.
    async fn transfer(&mut self) -> Result<(usize, usize), HttpError> {
        loop {
            let have = self.end - self.start;
            let framing = self.framing;
            match framing {
                Framing::Done => return Ok((self.start, self.start)),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    continue;
                }
                Framing::Length(left) | Framing::Chunked(left) if left > 0 && have > 0 => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(have);
                    return Ok((self.start, self.start + n));
                }
                Framing::Close if have > 0 => return Ok((self.start, self.end)),
                Framing::Chunked(0) if self.chunk_line()? => continue,
                Framing::Trailer => {
                    let data = &self.buf[self.start..self.end];
                    if let Some(eol) = data.iter().position(|&b| b == b'\n') {
                        let empty = eol == 0 || (eol == 1 && data[0] == b'\r');
                        self.start += eol + 1;
                        if empty {
                            self.framing = Framing::Done;
                        }
                        continue;
                    }
                }
                _ => {}
            }
            if self.read_more().await? == 0 {
                if self.framing == Framing::Close {
                    self.framing = Framing::Done;
                    continue;
                }
                return Err(HttpError::Closed);
            }
        }
    }

    /// Between chunks: parses the CRLF after a chunk, a size line, or the trailer. Returns
    /// false when more bytes are needed.
    fn chunk_line(&mut self) -> Result<bool, HttpError> {
        let data = &self.buf[self.start..self.end];
        let Some(eol) = data.iter().position(|&b| b == b'\n') else {
            return Ok(false);
        };
        let line = data[..eol].strip_suffix(b"\r").unwrap_or(&data[..eol]);
        self.start += eol + 1;
        if line.is_empty() {
            // The CRLF that ends a chunk's data.
            return Ok(true);
        }
        let hex = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
            .ok_or(HttpError::BadResponse("bad chunk size"))?;
        if size == 0 {
            self.framing = Framing::Trailer;
            return Ok(true);
        }
        self.framing = Framing::Chunked(size);
        Ok(true)
    }

    fn consume_transfer(&mut self, n: usize) {
        self.start += n;
        let n = n as u64;
        match &mut self.framing {
            Framing::Length(left) | Framing::Chunked(left) => *left -= n.min(*left),
            _ => {}
        }
    }

    /// Fills `out` with decoded body bytes; 0 at the end of the body. Fails once the body
    /// reaches `limit` bytes (0: no limit).
    pub async fn fill(&mut self, out: &mut [u8], limit: u64) -> Result<usize, HttpError> {
        loop {
            let (from, to) = self.transfer().await?;
            let n = if from == to {
                if self.gzip == Gzip::Deflate || self.gzip == Gzip::Header {
                    return Err(HttpError::Gzip("unexpected end of stream"));
                }
                self.finish();
                0
            } else {
                match self.gzip {
                    Gzip::Identity => {
                        let n = (to - from).min(out.len());
                        out[..n].copy_from_slice(&self.buf[from..from + n]);
                        self.consume_transfer(n);
                        n
                    }
                    Gzip::Header => {
                        self.gzip_header().await?;
                        continue;
                    }
                    Gzip::Trailer => {
                        // CRC and size: the parser already refused what a bad body would be,
                        // and the deflate stream's own checks passed.
                        let n = to - from;
                        self.consume_transfer(n);
                        continue;
                    }
                    Gzip::Deflate => {
                        let state = self
                            .inflater
                            .as_mut()
                            .ok_or(HttpError::Gzip("no inflater"))?;
                        let r = inflate(state, &self.buf[from..to], out, MZFlush::None);
                        let consumed = r.bytes_consumed;
                        let written = r.bytes_written;
                        match r.status {
                            Ok(MZStatus::StreamEnd) => self.gzip = Gzip::Trailer,
                            Ok(_) => {}
                            Err(_) => return Err(HttpError::Gzip("invalid deflate data")),
                        }
                        self.consume_transfer(consumed);
                        if written == 0 {
                            continue;
                        }
                        written
                    }
                }
            };
            self.body_bytes += n as u64;
            if limit > 0 && self.body_bytes >= limit {
                self.conn = None;
                return Err(HttpError::BodySize(limit));
            }
            return Ok(n);
        }
    }
}

/// The length of the gzip member header at the front of `h` (RFC 1952 §2.3): `None` while
/// incomplete, an error if it is not gzip.
fn gzip_header_len(h: &[u8]) -> Option<Result<usize, &'static str>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if h.len() < 10 {
        return None;
    }
    if h[0] != 0x1f || h[1] != 0x8b {
        return Some(Err("invalid header"));
    }
    if h[2] != 8 {
        return Some(Err("unsupported compression method"));
    }
    let flags = h[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(u16::from_le_bytes([*h.get(at)?, *h.get(at + 1)?]));
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let zero = h.get(at..)?.iter().position(|&b| b == 0)?;
            at += zero + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > h.len() {
        return None;
    }
    Some(Ok(at))
}

impl Client {
    /// Reads the gzip member header (RFC 1952 §2.3) from the transfer bytes.
    async fn gzip_header(&mut self) -> Result<(), HttpError> {
        // The header is at most a few hundred bytes in practice (names); it must fit the
        // socket buffer.
        loop {
            let (from, to) = self.transfer().await?;
            let h = &self.buf[from..to];
            match gzip_header_len(h) {
                Some(Ok(n)) => {
                    self.consume_transfer(n);
                    self.gzip = Gzip::Deflate;
                    return Ok(());
                }
                Some(Err(why)) => return Err(HttpError::Gzip(why)),
                None => {
                    // Incomplete within what is available: wait for more socket bytes. A
                    // header split across chunks is not supported (no exporter does that).
                    if to < self.end || self.read_more().await? == 0 {
                        return Err(HttpError::Gzip("truncated header"));
                    }
                }
            }
        }
    }

    /// Ends the exchange: the connection stays for the next scrape if the body was read to
    /// its end and the server keeps it alive.
    fn finish(&mut self) {
        if !self.keep_alive || self.framing != Framing::Done || self.start != self.end {
            self.conn = None;
        }
    }

    /// Drops the connection (after a failed or abandoned scrape).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(address: &str, path: &str) -> Client {
        let target = Target {
            labels: Vec::new(),
            address: address.to_owned(),
            scheme: "http".to_owned(),
            path_and_query: path.to_owned(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        };
        let mut c = Client::new(&target, &HttpClientConfig::default());
        c.start_request(path, target.timeout, "t");
        c
    }

    /// Where `location`, answered at `path` of 127.0.0.1:9100, leads: (https, authority,
    /// path and query, literal address).
    fn follow(
        path: &str,
        location: &str,
    ) -> Result<(bool, String, String, Option<SocketAddr>), String> {
        let mut c = client("127.0.0.1:9100", path);
        c.location = location.as_bytes().to_vec();
        c.follow_location().map_err(|e| e.to_string())?;
        let p = c.place();
        Ok((
            p.https,
            p.authority.clone(),
            p.path_and_query.clone(),
            p.literal,
        ))
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let here: SocketAddr = "127.0.0.1:9100".parse().expect("addr");
        let cases = [
            ("/a/b?x=1", "c", false, "127.0.0.1:9100", "/a/c"),
            ("/a/b", "c?y=2#frag", false, "127.0.0.1:9100", "/a/c?y=2"),
            (
                "/metrics",
                "/other/path",
                false,
                "127.0.0.1:9100",
                "/other/path",
            ),
            (
                "/m",
                "http://127.0.0.1:9100/x",
                false,
                "127.0.0.1:9100",
                "/x",
            ),
            ("/m", "HTTPS://127.0.0.1:9100", true, "127.0.0.1:9100", "/"),
            ("/m", "https://127.0.0.1/x", true, "127.0.0.1:443", "/x"),
            ("/m", "//127.0.0.2:81?q", false, "127.0.0.2:81", "/?q"),
            ("/m", "http://[::1]/x", false, "[::1]:80", "/x"),
            (
                "/m",
                "http://localhost:8080/x",
                false,
                "localhost:8080",
                "/x",
            ),
            // A name: resolved when the hop connects.
            (
                "/m",
                "http://node.example:9100/x",
                false,
                "node.example:9100",
                "/x",
            ),
        ];
        for (path, location, https, authority, to) in cases {
            let got = follow(path, location).expect(location);
            assert_eq!(
                (got.0, got.1.as_str(), got.2.as_str()),
                (https, authority, to),
                "{location}"
            );
            let addr = match authority {
                "127.0.0.1:9100" => Some(here),
                "node.example:9100" => None,
                _ => Some(literal_addrs(authority).expect("literal")),
            };
            assert_eq!(got.3, addr, "{location}");
        }
        for (location, why) in [
            (
                "ftp://127.0.0.1/x",
                "redirect: unsupported protocol scheme \"ftp\"",
            ),
            (
                "http://user:secret@127.0.0.1/x",
                "redirect: a Location without a host, or with user info",
            ),
            ("http:///x", "redirect: a Location without a host"),
        ] {
            let e = follow("/m", location).expect_err(location);
            assert!(e.starts_with(why), "{location}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn hosts_and_ports_of_authorities() {
        assert_eq!(host_of("127.0.0.1:9100"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
        assert_eq!(host_of("node"), "node");
        assert!(has_port("node:1") && !has_port("[::1]") && !has_port("node"));
        assert_eq!(
            literal_addrs("localhost:9"),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(literal_addrs("node:9"), None);
        assert_eq!(port_of("node:9").ok(), Some(9));
        assert_eq!(
            port_of("node").map_err(|e| e.to_string()).err().as_deref(),
            Some("connect: missing port in address")
        );
    }

    #[test]
    fn a_scrape_abandoned_during_a_lookup_reports_the_lookup() {
        // The resolver's queue is held here: nothing is looked up for real.
        let (queue, requests) = std::sync::mpsc::sync_channel(4);
        let resolver = Rc::new(Resolver::with_queue(queue));
        let mut c = client("kube-state-metrics.kube-system.svc:8080", "/metrics");
        c.resolver = resolver;
        assert!(c.abandoned_lookup().is_none());
        {
            let mut send = Box::pin(c.send());
            assert!(smol::block_on(smol::future::poll_once(send.as_mut())).is_none());
        }
        assert_eq!(requests.try_iter().count(), 1);
        let e = c.abandoned_lookup().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("dial tcp: lookup kube-state-metrics.kube-system.svc: i/o timeout")
        );
        // A proxy's name is what the connection waits for.
        c.proxy = Some(Proxy {
            authority: "proxy.example:3128".to_owned(),
            literal: None,
            authorization: None,
        });
        c.start_request("/metrics", Duration::from_secs(1), "t");
        {
            let mut send = Box::pin(c.send());
            assert!(smol::block_on(smol::future::poll_once(send.as_mut())).is_none());
        }
        let e = c.abandoned_lookup().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("dial tcp: lookup proxy.example: i/o timeout")
        );
        assert_eq!(requests.try_iter().count(), 1);
        // A literal target has its address without the resolver.
        let lit = client("127.0.0.1:9100", "/metrics");
        assert_eq!(lit.dial_target().1, literal_addrs("127.0.0.1:9100"));
    }

    #[test]
    fn the_request_line_is_absolute_through_a_proxy() {
        // Built for a literal (no resolver in unit tests), then named.
        let mut c = client("127.0.0.1:9100", "/metrics?a=b");
        "node.example:9100".clone_into(&mut c.target.authority);
        c.headers.extend_from_slice(b"\r\n");
        c.build_request();
        assert!(c.request.starts_with(
            b"GET /metrics?a=b HTTP/1.1\r\nHost: node.example:9100\r\nUser-Agent: t\r\n"
        ));
        c.proxy = Some(Proxy {
            authority: "127.0.0.1:3128".to_owned(),
            literal: literal_addrs("127.0.0.1:3128"),
            authorization: proxy_authorization("http://Aladdin:open%20sesame@127.0.0.1:3128/"),
        });
        c.build_request();
        assert!(c.request.starts_with(
            b"GET http://node.example:9100/metrics?a=b HTTP/1.1\r\nHost: node.example:9100\r\n\
              Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"
        ));
        assert_eq!(proxy_authorization("http://127.0.0.1:3128"), None);
        assert_eq!(
            proxy_authorization("http://u@h:1/x@y").as_deref(),
            Some("Basic dTo=")
        );
        assert!(c.request.ends_with(b"\r\n\r\n"));
    }
}
