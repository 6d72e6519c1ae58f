//! The scrape's HTTP/1.1 GET over a plain TCP connection on the loop (smol's async-net).
//!
//! One [`Client`] per target keeps its connection alive between scrapes, as Prometheus' HTTP
//! client does, and its buffers: the request, a fixed socket buffer, the gzip inflater. The
//! body is never held whole: [`Client::fill`] hands out decoded bytes (de-chunked, then
//! inflated) straight into the parser's window, so a 38 MB cadvisor page needs the window and
//! the socket buffer, nothing more. `body_size_limit` counts decompressed bytes, so a gzip bomb
//! fails the scrape at the limit; with no limit it still streams through the bounded window.
//!
//! Framing is ours (Content-Length, chunked, or until close) over httparse's zero-copy head
//! parser: the crates that do all of it (hyper, ureq) either want a runtime of their own or
//! block. Once the buffers are warm, a scrape allocates nothing here.
//!
//! Host names are resolved when the target is built (config load or reload), never on the
//! loop's scrape path: a DNS lookup blocks. A connection failure resolves again at the next
//! scrape through [`Client::resolve`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::parse::ACCEPT_HEADER;

/// Size of the socket buffer: response heads must fit in it (Go's default limit is 1 MiB, but
/// no exporter sends more than a few hundred bytes), and body bytes pass through it.
const SOCKET_BUFFER: usize = 16 << 10;
/// Headers parsed per response; exporters send fewer than ten.
const MAX_HEADERS: usize = 32;

/// Why a scrape's HTTP exchange failed. Messages follow what Prometheus logs where one exists.
#[derive(Debug)]
pub enum HttpError {
    /// The target's host could not be resolved.
    Resolve(String),
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
    /// `https` targets need TLS, which the scrape side gets with issue 7.
    Tls,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Resolve(e) => write!(f, "cannot resolve the target's host: {e}"),
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
            HttpError::Tls => {
                f.write_str("https scrape targets are not supported yet (TLS comes with issue 7)")
            }
        }
    }
}

impl std::error::Error for HttpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HttpError::Connect(e) | HttpError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The reason phrase Go's `http.StatusText` gives the common codes (Prometheus prints it).
fn reason(code: u16) -> &'static str {
    match code {
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
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

/// One target's HTTP state, kept across scrapes.
pub struct Client {
    addrs: Vec<SocketAddr>,
    host: String,
    conn: Option<TcpStream>,
    request: Vec<u8>,
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
            .field("host", &self.host)
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
    /// A client for `host:port`, resolved now (blocking, at target build time only).
    pub fn new(address: &str) -> Client {
        let mut c = Client {
            addrs: Vec::new(),
            host: address.to_owned(),
            conn: None,
            request: Vec::new(),
            buf: vec![0; SOCKET_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            framing: Framing::Done,
            gzip: Gzip::Identity,
            inflater: None,
            keep_alive: false,
            body_bytes: 0,
            content_type: Vec::new(),
        };
        let _ = c.resolve();
        c
    }

    /// Resolves the host again. IP literals and `localhost` never touch the resolver.
    pub fn resolve(&mut self) -> Result<(), HttpError> {
        self.addrs.clear();
        if let Ok(a) = self.host.parse::<SocketAddr>() {
            self.addrs.push(a);
            return Ok(());
        }
        if let Some(port) = self.host.strip_prefix("localhost:") {
            if let Ok(port) = port.parse::<u16>() {
                self.addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
                return Ok(());
            }
        }
        match self.host.to_socket_addrs() {
            Ok(found) => {
                self.addrs.extend(found);
                Ok(())
            }
            Err(e) => Err(HttpError::Resolve(e.to_string())),
        }
    }

    /// The request being built: the caller writes extra header lines (auth) with
    /// [`Client::start_request`]'s result, then calls [`Client::send`].
    pub fn start_request(
        &mut self,
        path_and_query: &str,
        timeout: Duration,
        user_agent: &str,
    ) -> &mut Vec<u8> {
        use std::io::Write;
        let r = &mut self.request;
        r.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            r,
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {user_agent}\r\n\
             Accept: {ACCEPT_HEADER}\r\nAccept-Encoding: gzip\r\n\
             X-Prometheus-Scrape-Timeout-Seconds: {}\r\n",
            self.host,
            // As Prometheus: strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64).
            timeout.as_secs_f64()
        );
        r
    }

    /// Sends the request and reads the response head. Returns once the body can be read with
    /// [`Client::fill`]; its Content-Type is [`Client::content_type`].
    pub async fn send(&mut self) -> Result<(), HttpError> {
        self.request.extend_from_slice(b"\r\n");
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

    async fn exchange(&mut self) -> Result<(), HttpError> {
        if self.conn.is_none() {
            if self.addrs.is_empty() {
                self.resolve()?;
            }
            let mut last = None;
            for a in &self.addrs {
                match TcpStream::connect(*a).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        self.conn = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if self.conn.is_none() {
                self.addrs.clear();
                return Err(HttpError::Connect(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "no address")
                })));
            }
        }
        self.start = 0;
        self.end = 0;
        let conn = self.conn.as_mut().ok_or(HttpError::Closed)?;
        conn.write_all(&self.request).await.map_err(HttpError::Io)?;
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
        let n = conn
            .read(&mut self.buf[self.end..])
            .await
            .map_err(HttpError::Io)?;
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
