//! Exposition parsing: a pull parser over a bounded window of the scrape body.
//!
//! The parser never sees the whole body. The caller keeps a [`Window`] that the HTTP body
//! fills; [`text::TextParser::next`] parses one entry from the front of the window's data and
//! says how many bytes it used, or asks for more ([`Step::NeedMore`]) when the entry is not
//! complete yet. Entries borrow the window: names, label names and raw label values are byte
//! ranges, never copies. Memory is the window (the longest entry, not the body) plus one
//! reused vector of label spans.
//!
//! This slice has the Prometheus text format 0.0.4 ([`text`]); OpenMetrics, the label arena
//! and the limits are the rest of issue 4.

pub mod float;
pub mod text;

use std::fmt;

/// A metric family's type as `# TYPE` declares it in the text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`.
    Untyped,
}

/// One label of a series: byte ranges into the window's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelSpan {
    /// Start of the name.
    pub name_start: u32,
    /// End of the name (exclusive).
    pub name_end: u32,
    /// Start of the raw value (inside the quotes).
    pub value_start: u32,
    /// End of the raw value (exclusive).
    pub value_end: u32,
    /// The raw value holds a backslash: use [`unescape_label_value`].
    pub escaped: bool,
}

impl LabelSpan {
    fn range(start: u32, end: u32) -> std::ops::Range<usize> {
        // u32 → usize never truncates on the 32- and 64-bit targets we build for.
        usize::try_from(start).unwrap_or(usize::MAX)..usize::try_from(end).unwrap_or(usize::MAX)
    }

    /// The label name.
    pub fn name<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[Self::range(self.name_start, self.name_end)]
    }

    /// The raw label value, escapes not resolved.
    pub fn raw_value<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        &data[Self::range(self.value_start, self.value_end)]
    }
}

/// One parsed entry; every slice borrows the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Entry<'a> {
    /// A sample line.
    Series {
        /// The window data the spans point into.
        data: &'a [u8],
        /// Metric name.
        name: &'a [u8],
        /// Labels in exposition order (not sorted, duplicates not removed).
        labels: &'a [LabelSpan],
        /// The value; NaN is always Prometheus' normal NaN.
        value: f64,
        /// Explicit timestamp in milliseconds, if the line has one.
        timestamp_ms: Option<i64>,
    },
    /// `# HELP name text`; `text` raw (escapes `\\` and `\n` not resolved).
    Help {
        /// Metric family name.
        name: &'a [u8],
        /// Raw help text.
        text: &'a [u8],
    },
    /// `# TYPE name type`.
    Type {
        /// Metric family name.
        name: &'a [u8],
        /// Declared type.
        kind: MetricType,
    },
    /// Any other `#` line.
    Comment,
}

/// What one call of a parser's `next` produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'a> {
    /// An entry, using the first `used` bytes of the data.
    Entry(Entry<'a>, usize),
    /// The entry at the front of the data is incomplete: keep the data, add more, call again.
    NeedMore,
    /// The body is over (only with `eof`); `used` trailing bytes (blank lines, a last comment)
    /// may be dropped.
    End(usize),
}

/// Why a body was refused: where, why, and a short excerpt. One bad line fails the whole scrape,
/// as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the offending byte.
    pub line: u64,
    /// 1-based byte column of the offending byte.
    pub col: u64,
    /// Prometheus' reason, e.g. `expected label name, got "INVALID"`.
    pub reason: String,
    /// At most 64 bytes of the line from the offending byte, lossily as UTF-8.
    pub excerpt: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {:?}",
            self.line, self.col, self.reason, self.excerpt
        )
    }
}

impl std::error::Error for ParseError {}

/// Resolves a label value's escapes as Prometheus does: `\\`, `\"` and `\n`; any other
/// backslash pair is kept as written. Appends to `out`.
pub fn unescape_label_value(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            match raw[i + 1] {
                b'\\' => out.push(b'\\'),
                b'"' => out.push(b'"'),
                b'n' => out.push(b'\n'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}

/// Resolves HELP text escapes as Prometheus' text format does: `\\` and `\n` only.
pub fn unescape_help(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() && matches!(raw[i + 1], b'\\' | b'n') {
            out.push(if raw[i + 1] == b'n' { b'\n' } else { b'\\' });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}

/// A reusable byte window over a body, with an explicit growth policy: it starts at
/// `initial` bytes, doubles only when one entry does not fit, and never exceeds `max` bytes
/// (an entry longer than that fails the scrape rather than growing memory without bound).
#[derive(Debug)]
pub struct Window {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
    eof: bool,
}

impl Window {
    /// A window of `initial` bytes that may grow to `max`.
    pub fn new(initial: usize, max: usize) -> Window {
        Window {
            buf: vec![0; initial.max(1)],
            start: 0,
            end: 0,
            max: max.max(initial.max(1)),
            eof: false,
        }
    }

    /// Empties the window for the next body, keeping its memory.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.eof = false;
    }

    /// The unparsed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True once the source said there is nothing more.
    pub fn eof(&self) -> bool {
        self.eof
    }

    /// Drops `n` parsed bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Current capacity in bytes (the peak memory of the window).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Makes room at the back (moving unparsed bytes to the front, growing if the data fills
    /// the whole buffer) and returns the free space to fill. Errors if the data already fills
    /// `max` bytes: one entry is longer than the window may grow.
    pub fn space(&mut self) -> Result<&mut [u8], usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.max {
                return Err(self.max);
            }
            let grown = (self.buf.len() * 2).min(self.max);
            self.buf.resize(grown, 0);
        }
        Ok(&mut self.buf[self.end..])
    }

    /// Records that `n` bytes were written into the space from [`Window::space`]; `n == 0`
    /// marks the end of the body.
    pub fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        }
        self.end = (self.end + n).min(self.buf.len());
    }
}
