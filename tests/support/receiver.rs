//! Remote-write receivers for tests: a hand-written `prometheus.WriteRequest` decoder (the
//! oracle for promlet's encoder and for what Prometheus sends), a tiny HTTP/1.1 server on
//! 127.0.0.1 (keep-alive, a thread per connection), a capturing receiver, and a scripted one
//! that injects faults (statuses, `Retry-After`, slow answers) and records every request.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Protobuf varint at `*i`.
pub fn varint(b: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while *i < b.len() {
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

/// Iterates the fields of one protobuf message: (field number, wire type, payload bytes or
/// the varint/fixed value as 8 little-endian bytes).
pub fn fields(b: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i);
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, wire, varint(b, &mut i).to_le_bytes().to_vec())),
            1 => {
                out.push((field, wire, b[i..i + 8].to_vec()));
                i += 8;
            }
            2 => {
                let n = usize::try_from(varint(b, &mut i)).expect("length");
                out.push((field, wire, b[i..i + n].to_vec()));
                i += n;
            }
            5 => {
                out.push((field, wire, b[i..i + 4].to_vec()));
                i += 4;
            }
            other => panic!("unexpected wire type {other}"),
        }
    }
    out
}

/// A decoded remote-write time series: labels and (value bits, timestamp ms) samples.
pub type Received = (BTreeMap<String, String>, Vec<(u64, i64)>);

/// Decodes `prometheus.WriteRequest` (remote-write 1.0):
/// `message WriteRequest { repeated TimeSeries timeseries = 1; … }`,
/// `message TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; … }`,
/// `message Label { string name = 1; string value = 2; }`,
/// `message Sample { double value = 1; int64 timestamp = 2; }`.
pub fn decode_write_request(b: &[u8]) -> Vec<Received> {
    let mut out = Vec::new();
    for (field, _, ts) in fields(b) {
        if field != 1 {
            continue;
        }
        let mut labels = BTreeMap::new();
        let mut samples = Vec::new();
        for (f, _, v) in fields(&ts) {
            match f {
                1 => {
                    let (mut name, mut value) = (String::new(), String::new());
                    for (lf, _, lv) in fields(&v) {
                        let s = String::from_utf8(lv).expect("utf8 label");
                        if lf == 1 {
                            name = s;
                        } else if lf == 2 {
                            value = s;
                        }
                    }
                    labels.insert(name, value);
                }
                2 => {
                    let (mut bits, mut t) = (0u64, 0i64);
                    for (sf, _, sv) in fields(&v) {
                        let mut raw = [0u8; 8];
                        raw.copy_from_slice(&sv[..8]);
                        if sf == 1 {
                            bits = u64::from_le_bytes(raw);
                        } else if sf == 2 {
                            t = i64::from_le_bytes(raw);
                        }
                    }
                    samples.push((bits, t));
                }
                _ => {}
            }
        }
        out.push((labels, samples));
    }
    out
}

/// One `MetricMetadata`: (type, metric family name, help, unit).
pub type Metadata = (u64, String, String, String);

/// The metadata of a `prometheus.WriteRequest` (`repeated MetricMetadata metadata = 3`;
/// `MetricMetadata { MetricType type = 1; string metric_family_name = 2; string help = 4;
/// string unit = 5; }`).
#[allow(dead_code)]
pub fn decode_metadata(b: &[u8]) -> Vec<Metadata> {
    let mut out = Vec::new();
    for (field, _, m) in fields(b) {
        if field != 3 {
            continue;
        }
        let mut entry: Metadata = (0, String::new(), String::new(), String::new());
        for (f, _, v) in fields(&m) {
            let text = || String::from_utf8(v.clone()).expect("utf8 metadata");
            match f {
                1 => entry.0 = u64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
                2 => entry.1 = text(),
                4 => entry.2 = text(),
                5 => entry.3 = text(),
                _ => {}
            }
        }
        out.push(entry);
    }
    out
}

/// One HTTP request as read: request line, headers (names lowercased, in order), body.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// `POST /api/v1/write HTTP/1.1`, without the line end.
    pub line: String,
    /// (lowercased name, value).
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` framing).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request from a connection; `None` at its end or on garbage.
pub fn read_request(reader: &mut impl BufRead) -> Option<HttpRequest> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if line.is_empty() {
        return None;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
            if k == "content-length" {
                length = v.parse().ok()?;
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        line: line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// Writes one response with `Content-Length`; `close` adds `Connection: close`.
pub fn respond(
    stream: &mut (impl Write + ?Sized),
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// An answer of a scripted receiver.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status line after `HTTP/1.1 `, e.g. `204 No Content`.
    pub status: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// `status` with no headers, no body, no delay.
    pub fn status(status: &str) -> Answer {
        Answer {
            status: status.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// 204, what Prometheus answers a good write.
    pub fn ok() -> Answer {
        Answer::status("204 No Content")
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &[u8]) -> Answer {
        self.body = body.to_vec();
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    fn code(&self) -> u16 {
        self.status
            .get(..3)
            .and_then(|c| c.parse().ok())
            .expect("a status line starts with its code")
    }
}

/// A connection a test server speaks HTTP on: a TCP stream, or TLS over one.
pub trait Stream: Read + Write + Send {}

impl<T: Read + Write + Send> Stream for T {}

/// Serves HTTP/1.1 on an ephemeral 127.0.0.1 port, a thread per connection, keep-alive:
/// `answer` is called for each request. Returns the port. The threads live as long as the
/// test process.
pub fn serve<F>(answer: F) -> u16
where
    F: Fn(&HttpRequest) -> Answer + Send + Sync + 'static,
{
    serve_wrapped(|tcp| Some(Box::new(tcp) as Box<dyn Stream>), answer)
}

/// [`serve`] with each accepted connection wrapped by `wrap` first (TLS); `None` drops it.
pub fn serve_wrapped<W, F>(wrap: W, answer: F) -> u16
where
    W: Fn(TcpStream) -> Option<Box<dyn Stream>> + Send + Sync + 'static,
    F: Fn(&HttpRequest) -> Answer + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answer = Arc::new(answer);
    let wrap = Arc::new(wrap);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let answer = Arc::clone(&answer);
            let wrap = Arc::clone(&wrap);
            std::thread::spawn(move || {
                let Some(stream) = wrap(stream) else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                while let Some(request) = read_request(&mut reader) {
                    let a = answer(&request);
                    std::thread::sleep(a.delay);
                    let close = request
                        .header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                        || request.line.ends_with("HTTP/1.0");
                    let stream = reader.get_mut();
                    if respond(stream, &a.status, &a.headers, &a.body, close).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Receives remote writes, answering 204; returns the port and the shared list of series
/// received.
pub fn capture_receiver() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = Arc::clone(&got);
    let port = serve(move |request| {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&request.body)
            .expect("snappy");
        sink.lock()
            .expect("lock")
            .extend(decode_write_request(&raw));
        Answer::ok()
    });
    (port, got)
}

/// A remote-write request a [`Scripted`] receiver got.
#[derive(Debug, Clone)]
pub struct Posted {
    /// When it had been read.
    pub at: Instant,
    /// The request itself.
    pub request: HttpRequest,
    /// Its series, decoded (snappy, then protobuf).
    pub series: Vec<Received>,
    /// The status code it was answered with.
    pub answered: u16,
}

#[derive(Debug)]
struct Script {
    answers: VecDeque<Answer>,
    /// Once the script runs out.
    otherwise: Answer,
    writes: Vec<Posted>,
}

/// A receiver that answers from a script, then with a default answer, and records every
/// request (fault injection for the sender tests).
#[derive(Debug, Clone)]
pub struct Scripted {
    /// Its port on 127.0.0.1.
    pub port: u16,
    script: Arc<Mutex<Script>>,
}

impl Scripted {
    /// Answers `answers` in order, then `otherwise` for ever.
    pub fn start(answers: Vec<Answer>, otherwise: Answer) -> Scripted {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            otherwise,
            writes: Vec::new(),
        }));
        let shared = Arc::clone(&script);
        let port = serve(move |request| {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&request.body)
                .expect("a snappy block body");
            let series = decode_write_request(&raw);
            let mut s = shared.lock().expect("lock");
            let answer = s.answers.pop_front().unwrap_or_else(|| s.otherwise.clone());
            s.writes.push(Posted {
                at: Instant::now(),
                request: request.clone(),
                series,
                answered: answer.code(),
            });
            answer
        });
        Scripted { port, script }
    }

    /// The write URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Every request so far.
    pub fn writes(&self) -> Vec<Posted> {
        self.script.lock().expect("lock").writes.clone()
    }

    /// The series of the requests answered 2xx, in order.
    pub fn delivered(&self) -> Vec<Received> {
        self.writes()
            .into_iter()
            .filter(|w| (200..300).contains(&w.answered))
            .flat_map(|w| w.series)
            .collect()
    }

    /// Every `up` series delivered (labels without `__name__`), with its values' bits.
    pub fn ups(&self) -> BTreeMap<BTreeMap<String, String>, Vec<u64>> {
        let mut out: BTreeMap<BTreeMap<String, String>, Vec<u64>> = BTreeMap::new();
        for (mut labels, samples) in self.delivered() {
            if labels.remove("__name__").as_deref() != Some("up") {
                continue;
            }
            out.entry(labels)
                .or_default()
                .extend(samples.iter().map(|s| s.0));
        }
        out
    }

    /// The metadata entries of the requests answered 2xx, in order.
    #[allow(dead_code)]
    pub fn metadata(&self) -> Vec<Metadata> {
        self.writes()
            .into_iter()
            .filter(|w| (200..300).contains(&w.answered))
            .flat_map(|w| {
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(&w.request.body)
                    .expect("a snappy block body");
                decode_metadata(&raw)
            })
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for the requests; returns them.
    pub fn wait_until(&self, limit: Duration, done: impl Fn(&[Posted]) -> bool) -> Vec<Posted> {
        let deadline = Instant::now() + limit;
        loop {
            let w = self.writes();
            if done(&w) || Instant::now() > deadline {
                return w;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
