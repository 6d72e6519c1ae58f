//! Exposition parsing: a pull parser over a bounded window of the scrape body.
//!
//! The parser never sees the whole body. The caller keeps a [`Window`] that the HTTP body
//! fills; [`text::TextParser::next`] parses one entry from the front of the window's data and
//! says how many bytes it used, or asks for more ([`Step::NeedMore`]) when the entry is not
//! complete yet. Entries borrow the window: names, label names and raw label values are byte
//! ranges, never copies. Memory is the window (the longest entry, not the body) plus one
//! reused vector of label spans.
//!
//! Two formats, chosen per response by [`Format::from_content_type`] as Prometheus 2.42 does:
//! the Prometheus text format 0.0.4 ([`text`]) and OpenMetrics 1.0 ([`openmetrics`]). A
//! [`Parser`] holds both and parses with the one the response asked for.

pub mod float;
mod media;
pub mod openmetrics;
#[cfg(test)]
mod reference;
#[cfg(test)]
pub(crate) mod testkit;
pub mod text;

pub use media::{Format, ACCEPT_HEADER};

use std::fmt;

/// A metric family's type as `# TYPE` declares it.
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
    /// `untyped` (text format only).
    Untyped,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    Stateset,
    /// `unknown` (OpenMetrics only).
    Unknown,
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
    /// `# HELP name text`; `text` raw: resolve it with [`unescape_help`] (text format) or
    /// [`unescape_label_value`] (OpenMetrics, whose help takes the label-value escapes).
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
    /// `# UNIT name unit` (OpenMetrics only).
    Unit {
        /// Metric family name.
        name: &'a [u8],
        /// The unit, possibly empty.
        unit: &'a [u8],
    },
    /// Any other `#` line (text format only).
    Comment,
    /// A run of blank lines that reaches the end of the data (text format only): the caller
    /// drops them and adds more, so a run of any length never has to fit the window.
    Blank,
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

/// What a parser keeps across the entries of one body: the reused label vector and the line
/// number of the next call's first byte (1-based).
#[derive(Debug)]
pub(crate) struct BodyState {
    pub(crate) labels: Vec<LabelSpan>,
    pub(crate) line: u64,
}

impl Default for BodyState {
    fn default() -> Self {
        BodyState {
            labels: Vec::new(),
            line: 1,
        }
    }
}

impl BodyState {
    /// Starts a new body, keeping the label vector's memory.
    pub(crate) fn reset(&mut self) {
        self.labels.clear();
        self.line = 1;
    }
}

/// The lexers' tokens (both formats), named as Prometheus names them in its error messages
/// (`got "INVALID"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Invalid,
    Eof,
    Linebreak,
    Help,
    Type,
    Unit,
    EofWord,
    Text,
    Comment,
    BraceOpen,
    BraceClose,
    LName,
    LValue,
    MName,
    Comma,
    Equal,
    Timestamp,
    Value,
}

impl Tok {
    fn name(self) -> &'static str {
        match self {
            Tok::Invalid => "INVALID",
            Tok::Eof => "EOF",
            Tok::Linebreak => "LINEBREAK",
            Tok::Help => "HELP",
            Tok::Type => "TYPE",
            Tok::Unit => "UNIT",
            Tok::EofWord => "EOFWORD",
            Tok::Text => "TEXT",
            Tok::Comment => "COMMENT",
            Tok::BraceOpen => "BRACE_OPEN",
            Tok::BraceClose => "BRACE_CLOSE",
            Tok::LName => "LNAME",
            Tok::LValue => "LVALUE",
            Tok::MName => "MNAME",
            Tok::Comma => "COMMA",
            Tok::Equal => "EQUAL",
            Tok::Timestamp => "TIMESTAMP",
            Tok::Value => "VALUE",
        }
    }
}

pub(crate) fn unexpected(expected: &str, got: Tok, at: usize) -> Stop {
    Stop::Error {
        at,
        reason: format!("{expected}, got {:?}", got.name()),
    }
}

/// Why an entry could not be finished (shared by both formats' parsers).
pub(crate) enum Stop {
    /// The data ended inside the entry; more is coming.
    More,
    /// The body is refused at byte `at` of the data.
    Error { at: usize, reason: String },
}

/// An entry as byte ranges of the data, before it is lent out as an [`Entry`].
pub(crate) enum Kind {
    Series {
        name: (usize, usize),
        value: f64,
        timestamp_ms: Option<i64>,
    },
    Help {
        name: (usize, usize),
        text: (usize, usize),
    },
    Type {
        name: (usize, usize),
        kind: MetricType,
    },
    Unit {
        name: (usize, usize),
        unit: (usize, usize),
    },
    Comment,
}

impl Kind {
    /// The entry over `data`; a series' labels are `labels`.
    pub(crate) fn entry<'a>(self, data: &'a [u8], labels: &'a [LabelSpan]) -> Entry<'a> {
        match self {
            Kind::Series {
                name,
                value,
                timestamp_ms,
            } => Entry::Series {
                data,
                name: &data[name.0..name.1],
                labels,
                value,
                timestamp_ms,
            },
            Kind::Help { name, text } => Entry::Help {
                name: &data[name.0..name.1],
                text: &data[text.0..text.1],
            },
            Kind::Type { name, kind } => Entry::Type {
                name: &data[name.0..name.1],
                kind,
            },
            Kind::Unit { name, unit } => Entry::Unit {
                name: &data[name.0..name.1],
                unit: &data[unit.0..unit.1],
            },
            Kind::Comment => Entry::Comment,
        }
    }
}

/// A byte offset of the window as a label span bound (a window never reaches 4 GiB: its
/// growth is capped far below).
pub(crate) fn to_u32(n: usize, at: usize) -> Result<u32, Stop> {
    u32::try_from(n).map_err(|_| Stop::Error {
        at,
        reason: "window larger than 4 GiB".to_owned(),
    })
}

pub(crate) fn count_newlines(b: &[u8]) -> u64 {
    b.iter().map(|&c| u64::from(c == b'\n')).sum()
}

/// The error excerpt shows up to 64 bytes of the line from the offending byte: before giving
/// an error, wait for them (or the line's end), so that an error reads the same however the
/// body was split into windows.
pub(crate) fn excerpt_incomplete(tail: &[u8], eof: bool) -> bool {
    !eof && tail.len() < 64 && !tail.contains(&b'\n')
}

/// The error for byte `at` of `data`, whose first byte is on line `line`.
pub(crate) fn located(line: u64, data: &[u8], at: usize, reason: String) -> ParseError {
    let at = at.min(data.len());
    let before = &data[..at];
    let line = line + count_newlines(before);
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    let rest = &data[at..];
    let line_end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
    let excerpt = &rest[..line_end.min(64)];
    ParseError {
        line,
        col: u64::try_from(at - line_start + 1).unwrap_or(u64::MAX),
        reason,
        excerpt: String::from_utf8_lossy(excerpt).into_owned(),
    }
}

/// A sample value or timestamp as Prometheus reads it, with its error message.
pub(crate) fn value_at(b: &[u8], at: usize) -> Result<f64, Stop> {
    float::parse_value(b).map_err(|e| Stop::Error {
        at,
        reason: if e == float::UNSUPPORTED {
            e.to_owned()
        } else {
            format!(
                "strconv.ParseFloat: parsing {:?}: {e}",
                String::from_utf8_lossy(b)
            )
        },
    })
}

/// A parser for either format, switched per body: one per target, reused across scrapes.
#[derive(Debug)]
pub struct Parser {
    format: Format,
    text: text::TextParser,
    openmetrics: openmetrics::OpenMetricsParser,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(Format::Text)
    }
}

impl Parser {
    /// A parser for a body in `format`.
    pub fn new(format: Format) -> Self {
        Parser {
            format,
            text: text::TextParser::new(),
            openmetrics: openmetrics::OpenMetricsParser::new(),
        }
    }

    /// Starts a new body in `format`, keeping the memory of earlier ones.
    pub fn reset(&mut self, format: Format) {
        self.format = format;
        self.text.reset();
        self.openmetrics.reset();
    }

    /// The format of the current body.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Parses the entry at the front of `data` (see [`text::TextParser::next`]).
    pub fn next<'a>(&'a mut self, data: &'a [u8], eof: bool) -> Result<Step<'a>, ParseError> {
        match self.format {
            Format::Text => self.text.next(data, eof),
            Format::OpenMetrics => self.openmetrics.next(data, eof),
            Format::Protobuf => Err(ParseError {
                line: 1,
                col: 1,
                reason: "the protobuf exposition format is not supported (promlet does not ask \
                         for it); serve text or OpenMetrics"
                    .to_owned(),
                excerpt: String::new(),
            }),
        }
    }
}

/// A decimal `u64` of ASCII digits only (no sign, no space, no `+`, as Go's
/// `strconv.ParseUint(s, 10, 64)` reads a `Content-Length` or a `/proc` field); `None` on
/// anything else or on overflow.
pub fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

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
