//! OpenMetrics 1.0 text, accepted and refused as Prometheus 2.42 does.
//!
//! Like [`super::text`], this copies the *decisions* of Prometheus' generated lexer
//! (`model/textparse/openmetricslex.l` as of 2.42) and parser (`openmetricsparse.go`), not
//! their code: the same lexer states and longest-match token rules, the same order of checks,
//! the same reason for each refusal. OpenMetrics is strict where the text format is lenient:
//! - exactly one space between tokens; no tab, no leading or trailing white space;
//! - commas between labels, none before the first or after the last;
//! - no blank lines and no comments other than `# HELP`, `# TYPE`, `# UNIT` and `# EOF`;
//! - the body must end with `# EOF` (optionally followed by one newline) and nothing after;
//! - `# HELP`, `# TYPE` and `# UNIT` need a text after the name (`# UNIT m ` is an empty unit);
//!   a unit must be a `_`-separated suffix of the name;
//! - types are counter, gauge, histogram, gaugehistogram, summary, info, stateset, unknown;
//! - a timestamp is a float in seconds, stored as `int64(ts * 1000)` milliseconds;
//! - an exemplar (`# {labels} value [timestamp]`) may follow a sample of a name ending in
//!   `_total` or `_bucket`; it is checked and skipped.
//!
//! 2.42 does not check the family rules beyond that (`_created`, `_gcount`, stateset values):
//! such lines are ordinary series, as they are here. NUL bytes behave as in the lexer, where
//! NUL belongs to no character class and its `next()` skips NULs only while in a label value,
//! a HELP/TYPE/UNIT text or the comment keyword; at the end of the body it reads a NUL.

use super::{
    count_newlines, excerpt_incomplete, located, to_u32, unexpected, value_at, BodyState, Kind,
    LabelSpan, MetricType, ParseError, Step, Stop, Tok,
};

fn refuse(at: usize, reason: impl Into<String>) -> Stop {
    Stop::Error {
        at,
        reason: reason.into(),
    }
}

/// The lexer's start conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Comment,
    Meta1,
    Meta2,
    Labels,
    LValue,
    Value,
    Timestamp,
    Exemplar,
    EValue,
    ETimestamp,
}

fn is_m(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_l(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

/// `[^ \n]` (NUL is in no class).
fn is_v(c: u8) -> bool {
    !matches!(c, b' ' | b'\n' | 0)
}

/// The lexer over one call's data: `b[start..i]` is the last token, `c` the byte at `i` (the
/// lookahead the automaton stopped on).
struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    start: usize,
    eof: bool,
    state: State,
}

impl Lexer<'_> {
    /// The lexer's `next()`: one byte on, skipping NULs in the three states that allow them;
    /// a NUL at the end of the body; more data wanted at the end of the window.
    fn next(&mut self) -> Result<u8, Stop> {
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                None if self.eof => return Ok(0),
                None => return Err(Stop::More),
                Some(0) if matches!(self.state, State::LValue | State::Meta2 | State::Comment) => {
                    self.i += 1;
                }
                Some(&c) => return Ok(c),
            }
        }
    }

    /// Consumes `first` and every following byte matching `f`; returns the lookahead.
    fn run(&mut self, f: impl Fn(u8) -> bool) -> Result<u8, Stop> {
        loop {
            let c = self.next()?;
            if !f(c) {
                return Ok(c);
            }
        }
    }

    /// `"(\\.|[^\\"\n])*"` from the opening quote at `i`.
    fn quoted(&mut self) -> Result<Tok, Stop> {
        loop {
            match self.next()? {
                b'"' => {
                    self.next()?;
                    return Ok(Tok::LValue);
                }
                b'\\' => {
                    if matches!(self.next()?, b'\n' | 0) {
                        return Ok(Tok::Invalid);
                    }
                }
                b'\n' | 0 => return Ok(Tok::Invalid),
                _ => {}
            }
        }
    }

    /// Matches `word` (its first byte is `c`); the keyword's action happens on a match.
    fn keyword(&mut self, word: &[u8]) -> Result<bool, Stop> {
        for &want in &word[1..] {
            if self.next()? != want {
                return Ok(false);
            }
        }
        self.next()?;
        Ok(true)
    }

    /// One token (the generated `Lex()`).
    fn lex(&mut self) -> Result<Tok, Stop> {
        self.start = self.i;
        let Some(&first) = self.b.get(self.i) else {
            return if self.eof {
                Ok(Tok::Eof)
            } else {
                Err(Stop::More)
            };
        };
        let mut c = first;
        loop {
            let tok = match self.state {
                State::Init => match c {
                    b'#' => {
                        // `#{S}`: no token; go on in sComment from the lookahead.
                        if self.next()? != b' ' {
                            return Ok(Tok::Invalid);
                        }
                        c = self.next()?;
                        self.state = State::Comment;
                        continue;
                    }
                    c if is_m(c) => {
                        self.run(|c| is_m(c) || c.is_ascii_digit())?;
                        self.state = State::Value;
                        Tok::MName
                    }
                    _ => Tok::Invalid,
                },
                State::Comment => {
                    let (word, tok): (&[u8], Tok) = match c {
                        b'H' => (b"HELP ", Tok::Help),
                        b'T' => (b"TYPE ", Tok::Type),
                        b'U' => (b"UNIT ", Tok::Unit),
                        b'E' => (b"EOF", Tok::EofWord),
                        _ => return Ok(Tok::Invalid),
                    };
                    if tok == Tok::EofWord {
                        // `"EOF"\n?`
                        if self.next()? != b'O' || self.next()? != b'F' {
                            return Ok(Tok::Invalid);
                        }
                        if self.next()? == b'\n' {
                            self.next()?;
                        }
                        self.state = State::Init;
                        return Ok(tok);
                    }
                    if !self.keyword(word)? {
                        return Ok(Tok::Invalid);
                    }
                    self.state = State::Meta1;
                    tok
                }
                State::Meta1 => {
                    if !is_m(c) {
                        return Ok(Tok::Invalid);
                    }
                    self.run(|c| is_m(c) || c.is_ascii_digit())?;
                    self.state = State::Meta2;
                    Tok::MName
                }
                State::Meta2 => {
                    // `{S}{C}*\n`
                    if c != b' ' {
                        return Ok(Tok::Invalid);
                    }
                    match self.run(|c| c != b'\n' && c != 0)? {
                        b'\n' => {
                            self.next()?;
                            self.state = State::Init;
                            Tok::Text
                        }
                        _ => Tok::Invalid,
                    }
                }
                State::Labels | State::Exemplar => {
                    let exemplar = self.state == State::Exemplar;
                    match c {
                        c if is_l(c) => {
                            self.run(|c| is_l(c) || c.is_ascii_digit())?;
                            Tok::LName
                        }
                        b'}' => {
                            self.next()?;
                            self.state = if exemplar {
                                State::EValue
                            } else {
                                State::Value
                            };
                            Tok::BraceClose
                        }
                        b'=' => {
                            self.next()?;
                            self.state = if exemplar {
                                State::EValue
                            } else {
                                State::LValue
                            };
                            Tok::Equal
                        }
                        b',' => {
                            self.next()?;
                            Tok::Comma
                        }
                        _ => Tok::Invalid,
                    }
                }
                State::LValue => {
                    if c != b'"' {
                        return Ok(Tok::Invalid);
                    }
                    let tok = self.quoted()?;
                    if tok == Tok::LValue {
                        self.state = State::Labels;
                    }
                    tok
                }
                State::Value | State::EValue => match c {
                    b'{' if self.state == State::Value => {
                        self.next()?;
                        self.state = State::Labels;
                        Tok::BraceOpen
                    }
                    b'"' if self.state == State::EValue => {
                        let tok = self.quoted()?;
                        if tok == Tok::LValue {
                            self.state = State::Exemplar;
                        }
                        tok
                    }
                    b' ' => {
                        if !is_v(self.next()?) {
                            return Ok(Tok::Invalid);
                        }
                        self.run(is_v)?;
                        self.state = if self.state == State::Value {
                            State::Timestamp
                        } else {
                            State::ETimestamp
                        };
                        Tok::Value
                    }
                    _ => Tok::Invalid,
                },
                State::Timestamp | State::ETimestamp => match c {
                    b'\n' => {
                        self.next()?;
                        self.state = State::Init;
                        Tok::Linebreak
                    }
                    b' ' => {
                        let c = self.next()?;
                        if c == b'#' && self.state == State::Timestamp {
                            // `{S}#{S}\{` against `{S}[^ \n]+`: the longer match wins, and
                            // the automaton does not back up from `" # "` to `" #"`.
                            match self.next()? {
                                b' ' => {
                                    if self.next()? != b'{' {
                                        return Ok(Tok::Invalid);
                                    }
                                    self.next()?;
                                    self.state = State::Exemplar;
                                    return Ok(Tok::Comment);
                                }
                                c if is_v(c) => {
                                    self.run(is_v)?;
                                }
                                _ => {}
                            }
                            Tok::Timestamp
                        } else if is_v(c) {
                            self.run(is_v)?;
                            Tok::Timestamp
                        } else {
                            Tok::Invalid
                        }
                    }
                    _ => Tok::Invalid,
                },
            };
            return Ok(tok);
        }
    }

    /// The current token.
    fn buf(&self) -> &[u8] {
        &self.b[self.start..self.i.min(self.b.len())]
    }

    /// The byte Prometheus quotes in a bad start token's message (`l.cur()`).
    fn cur(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(b' ')
    }
}

/// A reusable OpenMetrics parser: one per target, its label vector reused across scrapes.
#[derive(Debug, Default)]
pub struct OpenMetricsParser {
    body: BodyState,
}

impl OpenMetricsParser {
    /// A parser for a new body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new body, keeping the label vector's memory.
    pub fn reset(&mut self) {
        self.body.reset();
    }

    /// Parses the entry at the front of `data`; `eof` says no byte follows `data`. Same
    /// contract as [`super::text::TextParser::next`]; [`Step::End`] comes after `# EOF` once
    /// it is sure nothing follows.
    pub fn next<'a>(&'a mut self, data: &'a [u8], eof: bool) -> Result<Step<'a>, ParseError> {
        let mut lx = Lexer {
            b: data,
            i: 0,
            start: 0,
            eof,
            state: State::Init,
        };
        self.body.labels.clear();
        match parse_entry(&mut lx, &mut self.body.labels) {
            Ok(Some(kind)) => {
                let used = lx.i.min(data.len());
                self.body.line += count_newlines(&data[..used]);
                Ok(Step::Entry(kind.entry(data, &self.body.labels), used))
            }
            Ok(None) => Ok(Step::End(data.len())),
            Err(Stop::More) => Ok(Step::NeedMore),
            Err(Stop::Error { at, reason }) => {
                if excerpt_incomplete(&data[at.min(data.len())..], eof) {
                    return Ok(Step::NeedMore);
                }
                Err(located(self.body.line, data, at, reason))
            }
        }
    }
}

/// The metric name a HELP, TYPE or UNIT line is about, and its text.
fn metadata(lx: &mut Lexer<'_>, keyword: Tok) -> Result<Kind, Stop> {
    let t = lx.lex()?;
    if t != Tok::MName {
        return Err(unexpected("expected metric name after HELP", t, lx.start));
    }
    let name = (lx.start, lx.i);
    let t = lx.lex()?;
    if t != Tok::Text {
        return Err(unexpected("expected text in HELP", t, lx.start));
    }
    // The token is `" text\n"`, less its first and last byte (a NUL skipped after the newline
    // counts as the last byte: 2.42 then keeps the newline in the text).
    let text = (lx.start + 1, lx.i.min(lx.b.len()) - 1);
    let text_bytes = &lx.b[text.0..text.1];
    match keyword {
        Tok::Type => {
            let kind = match text_bytes {
                b"counter" => MetricType::Counter,
                b"gauge" => MetricType::Gauge,
                b"histogram" => MetricType::Histogram,
                b"gaugehistogram" => MetricType::GaugeHistogram,
                b"summary" => MetricType::Summary,
                b"info" => MetricType::Info,
                b"stateset" => MetricType::Stateset,
                b"unknown" => MetricType::Unknown,
                other => {
                    return Err(refuse(
                        text.0,
                        format!("invalid metric type {:?}", String::from_utf8_lossy(other)),
                    ))
                }
            };
            Ok(Kind::Type { name, kind })
        }
        Tok::Unit => {
            let m = &lx.b[name.0..name.1];
            if !text_bytes.is_empty()
                && (!m.ends_with(text_bytes)
                    || m.len() < text_bytes.len() + 1
                    || m[m.len() - text_bytes.len() - 1] != b'_')
            {
                return Err(refuse(
                    text.0,
                    format!(
                        "unit not a suffix of metric {:?}",
                        String::from_utf8_lossy(m)
                    ),
                ));
            }
            Ok(Kind::Unit { name, unit: text })
        }
        _ => {
            if std::str::from_utf8(text_bytes).is_err() {
                return Err(refuse(text.0, "help text is not a valid utf8 string"));
            }
            Ok(Kind::Help { name, text })
        }
    }
}

/// One entry from the front of the data (openmetricsparse.go's `Next`); `None` after `# EOF`.
fn parse_entry(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<Option<Kind>, Stop> {
    let t = lx.lex()?;
    match t {
        Tok::EofWord => {
            if lx.lex()? != Tok::Eof {
                return Err(refuse(lx.start, "unexpected data after # EOF"));
            }
            Ok(None)
        }
        Tok::Eof => Err(refuse(lx.start, "data does not end with # EOF")),
        Tok::Help | Tok::Type | Tok::Unit => metadata(lx, t).map(Some),
        Tok::MName => series(lx, labels).map(Some),
        _ => Err(refuse(
            lx.start,
            format!(
                "{:?} {:?} is not a valid start token",
                t.name(),
                char::from(lx.cur()).to_string()
            ),
        )),
    }
}

/// A value token (`" 1.5"`) as a float; `after` names what it follows in the message.
fn float_value(lx: &Lexer<'_>, t: Tok, after: &str) -> Result<f64, Stop> {
    if t != Tok::Value {
        return Err(unexpected(
            &format!("expected value after {after}"),
            t,
            lx.start,
        ));
    }
    value_at(&lx.buf()[1..], lx.start + 1)
}

/// A timestamp token in seconds; `what` is "timestamp" or "exemplar timestamp".
fn seconds(lx: &Lexer<'_>, what: &str) -> Result<f64, Stop> {
    let ts = value_at(&lx.buf()[1..], lx.start + 1)?;
    if ts.is_nan() || ts.is_infinite() {
        return Err(refuse(lx.start + 1, format!("invalid {what}")));
    }
    Ok(ts)
}

fn series(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<Kind, Stop> {
    let name = (lx.start, lx.i);
    let mut t = lx.lex()?;
    if t == Tok::BraceOpen {
        label_list(lx, labels)?;
        t = lx.lex()?;
    }
    let value = float_value(lx, t, "metric")?;
    let mut timestamp_ms = None;
    let t = lx.lex()?;
    match t {
        Tok::Eof => return Err(refuse(lx.start, "data does not end with # EOF")),
        Tok::Linebreak => {}
        Tok::Comment => exemplar(lx, name, labels)?,
        Tok::Timestamp => {
            // Go's int64(ts * 1000) truncates toward zero; out of range it is undefined in
            // Go (amd64 gives the minimum), saturating here.
            #[allow(clippy::cast_possible_truncation)]
            let ms = (seconds(lx, "timestamp")? * 1000.0) as i64;
            timestamp_ms = Some(ms);
            match lx.lex()? {
                Tok::Linebreak => {}
                Tok::Comment => exemplar(lx, name, labels)?,
                other => {
                    return Err(unexpected(
                        "expected next entry after timestamp",
                        other,
                        lx.start,
                    ))
                }
            }
        }
        other => {
            return Err(unexpected(
                "expected timestamp or # symbol",
                other,
                lx.start,
            ))
        }
    }
    Ok(Kind::Series {
        name,
        value,
        timestamp_ms,
    })
}

/// `# {labels} value [timestamp]` after a sample: checked, then forgotten (2.42's agent does
/// not store exemplars). The labels are parsed into `labels` and cut off again.
fn exemplar(
    lx: &mut Lexer<'_>,
    name: (usize, usize),
    labels: &mut Vec<LabelSpan>,
) -> Result<(), Stop> {
    let metric = &lx.b[name.0..name.1];
    if !(metric.ends_with(b"_total") || metric.ends_with(b"_bucket")) {
        return Err(refuse(
            lx.start,
            format!(
                "metric name {} does not support exemplars",
                String::from_utf8_lossy(metric)
            ),
        ));
    }
    let keep = labels.len();
    let parsed = label_list(lx, labels);
    labels.truncate(keep);
    parsed?;
    let t = lx.lex()?;
    float_value(lx, t, "exemplar labels")?;
    match lx.lex()? {
        Tok::Eof => Err(refuse(lx.start, "data does not end with # EOF")),
        Tok::Linebreak => Ok(()),
        Tok::Timestamp => {
            seconds(lx, "exemplar timestamp")?;
            match lx.lex()? {
                Tok::Linebreak => Ok(()),
                other => Err(unexpected(
                    "expected next entry after exemplar timestamp",
                    other,
                    lx.start,
                )),
            }
        }
        other => Err(unexpected("expected timestamp or comment", other, lx.start)),
    }
}

/// openmetricsparse.go's `parseLVals`: after `{`, up to and including `}`; commas required
/// between labels and refused before the first or after the last.
fn label_list(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<(), Stop> {
    let mut first = true;
    loop {
        let mut t = lx.lex()?;
        match t {
            Tok::BraceClose => return Ok(()),
            Tok::Comma if first => {
                return Err(unexpected("expected label name or left brace", t, lx.start))
            }
            Tok::Comma => {
                t = lx.lex()?;
                if t != Tok::LName {
                    return Err(unexpected("expected label name", t, lx.start));
                }
            }
            Tok::LName if !first => return Err(unexpected("expected comma", t, lx.start)),
            Tok::LName => {}
            _ if first => return Err(unexpected("expected label name or left brace", t, lx.start)),
            _ => return Err(unexpected("expected comma or left brace", t, lx.start)),
        }
        first = false;
        let name = (lx.start, lx.i);
        let t = lx.lex()?;
        if t != Tok::Equal {
            return Err(unexpected("expected equal", t, lx.start));
        }
        let t = lx.lex()?;
        if t != Tok::LValue {
            return Err(unexpected("expected label value", t, lx.start));
        }
        let token = lx.buf();
        if !token.is_ascii() && std::str::from_utf8(token).is_err() {
            return Err(refuse(lx.start, "invalid UTF-8 label value"));
        }
        // The token less its first and last byte, as 2.42 takes it: NULs skipped after the
        // closing quote are part of the token, so the quote then ends up in the value.
        let (vs, ve) = (lx.start + 1, lx.i.min(lx.b.len()) - 1);
        labels.push(LabelSpan {
            name_start: to_u32(name.0, name.0)?,
            name_end: to_u32(name.1, name.0)?,
            value_start: to_u32(vs, vs)?,
            value_end: to_u32(ve, vs)?,
            escaped: lx.b[vs..ve].contains(&b'\\'),
        });
    }
}

#[cfg(test)]
mod tests;
