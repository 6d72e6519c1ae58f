//! The Prometheus text format 0.0.4, accepted and refused as Prometheus 2.42 does.
//!
//! This is a hand-written copy of the *decisions* of Prometheus' generated lexer
//! (`model/textparse/promlex.l`) and parser (`promparse.go`): the same lexer states, the same
//! token boundaries, the same error for each unexpected token. The quirks are kept on purpose,
//! because a scrape that Prometheus accepts must not fail here and the reverse:
//! - white space (spaces, tabs) may stand between any two tokens, and before a line;
//! - labels need no comma between them (`{a="1" b="2"}`), a trailing comma is allowed;
//! - a label value may span lines (the lexer's `[^\\"]` takes a newline);
//! - the value needs no space after `}` (`m{a="1"}1`); CR is not white space, so CRLF fails;
//! - a timestamp is digits only (no sign);
//! - a body that does not end with a newline is read as if it did (what a scrape in 2.42 does:
//!   `m 1` and `# HELP m x` at the very end are accepted; checked against the real Prometheus);
//! - a NUL byte where an entry starts, or in a comment written without a space after `#`,
//!   ends the body (the lexer's `\0` rule; its `next()` skips NULs only in comment, help-text and
//!   label-value states); everything after it is ignored;
//! - white space before a metric name fails the scrape: 2.42 takes the name from where the
//!   line began, white space included, and then finds it invalid (before `#` or on a blank
//!   line it is harmless);
//! - `# HELP` and `# TYPE` need white space after the keyword, else the line is a comment;
//!   the help text is the rest of the line minus its first byte (all-blank rest: empty);
//! - `# TYPE` allows counter, gauge, histogram, summary and untyped.
//!
//! Errors give 1-based line and byte column, Prometheus' reason and a short excerpt.

use super::{
    count_newlines, excerpt_incomplete, located, to_u32, unexpected, value_at, BodyState, Entry,
    Kind, LabelSpan, MetricType, ParseError, Step, Stop, Tok,
};

/// A lexer over one call's data. `start..i` is the last token.
struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    start: usize,
    eof: bool,
    /// The body ends here without a newline: one is read at `b.len()`.
    virtual_newline: bool,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl Lexer<'_> {
    /// The byte at `i`; `Ok(None)` at the end of the body, `Err(More)` at the end of the data.
    fn peek(&self) -> Result<Option<u8>, Stop> {
        match self.b.get(self.i) {
            Some(&c) => Ok(Some(c)),
            None if self.eof && self.virtual_newline && self.i == self.b.len() => Ok(Some(b'\n')),
            None if self.eof => Ok(None),
            None => Err(Stop::More),
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Consumes a run of bytes matching `f`; asks for more if the run reaches the data's end.
    fn run(&mut self, f: impl Fn(u8) -> bool) -> Result<(), Stop> {
        while let Some(&c) = self.b.get(self.i) {
            if !f(c) {
                return Ok(());
            }
            self.i += 1;
        }
        if self.eof {
            Ok(())
        } else {
            Err(Stop::More)
        }
    }

    /// Next token in the states after a metric name or `}` (`sValue`).
    fn value_state(&mut self) -> Result<Tok, Stop> {
        self.skip_blanks();
        self.start = self.i;
        Ok(match self.peek()? {
            None => Tok::Eof,
            Some(b'{') => {
                self.i += 1;
                Tok::BraceOpen
            }
            Some(b'\n') => Tok::Invalid,
            Some(_) => {
                self.run(|c| !matches!(c, b'{' | b' ' | b'\t' | b'\n'))?;
                Tok::Value
            }
        })
    }

    /// Next token after a value (`sTimestamp`).
    fn timestamp_state(&mut self) -> Result<Tok, Stop> {
        self.skip_blanks();
        self.start = self.i;
        Ok(match self.peek()? {
            None => Tok::Eof,
            Some(b'\n') => {
                self.i += 1;
                Tok::Linebreak
            }
            Some(c) if c.is_ascii_digit() => {
                self.run(|c| c.is_ascii_digit())?;
                Tok::Timestamp
            }
            Some(_) => Tok::Invalid,
        })
    }

    /// Next token inside braces (`sLabels`).
    fn labels_state(&mut self) -> Result<Tok, Stop> {
        self.skip_blanks();
        self.start = self.i;
        let tok = match self.peek()? {
            None => return Ok(Tok::Eof),
            Some(b'}') => Tok::BraceClose,
            Some(b'=') => Tok::Equal,
            Some(b',') => Tok::Comma,
            Some(c) if is_label_start(c) => {
                self.run(is_label_char)?;
                return Ok(Tok::LName);
            }
            Some(_) => return Ok(Tok::Invalid),
        };
        self.i += 1;
        Ok(tok)
    }

    /// The quoted value after `=` (`sLValue`): `"(\\.|[^\\"])*"`.
    fn label_value(&mut self) -> Result<(Tok, bool), Stop> {
        self.skip_blanks();
        self.start = self.i;
        match self.peek()? {
            None => return Ok((Tok::Eof, false)),
            Some(b'"') => self.i += 1,
            Some(_) => return Ok((Tok::Invalid, false)),
        }
        let mut escaped = false;
        loop {
            let Some(at) = quote_or_backslash(&self.b[self.i.min(self.b.len())..]) else {
                // An unterminated value: the lexer finds no token (a newline the body's end
                // adds is no quote either).
                self.i = self.b.len();
                return if self.eof {
                    Ok((Tok::Invalid, false))
                } else {
                    Err(Stop::More)
                };
            };
            self.i += at;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok((Tok::LValue, escaped));
            }
            escaped = true;
            self.i += 1;
            match self.peek()? {
                // `.` does not match a newline, and nothing follows the body's end.
                None | Some(b'\n') => return Ok((Tok::Invalid, false)),
                Some(_) => self.i += 1,
            }
        }
    }
}

/// Where the first `"` or `\\` of `b` is: eight bytes a step (a word's bytes equal to either
/// are found with the carry trick, whose lowest flagged byte is always a true match), as label
/// values are long and hold neither in most of their bytes.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(LOW) & !x & HIGH;
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        let hit = zero_byte(x ^ (LOW * u64::from(b'"'))) | zero_byte(x ^ (LOW * u64::from(b'\\')));
        if hit != 0 {
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| at + p)
}

/// A reusable text-format parser: one per target, its label vector reused across scrapes.
#[derive(Debug, Default)]
pub struct TextParser {
    body: BodyState,
}

impl TextParser {
    /// A parser for a new body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new body, keeping the label vector's memory.
    pub fn reset(&mut self) {
        self.body.reset();
    }

    /// The entry at the front is incomplete. Blank lines before it are handed back as
    /// [`Entry::Blank`] (counted; the caller drops them), so that a long run of them never
    /// fills the window; with none, the caller keeps the data and calls again, and the lines
    /// passed in this call are counted then.
    fn more(&mut self, skipped: usize, first_line: u64) -> Step<'static> {
        if skipped > 0 {
            Step::Entry(Entry::Blank, skipped)
        } else {
            self.body.line = first_line;
            Step::NeedMore
        }
    }

    /// Parses the entry at the front of `data`. `eof` says no byte follows `data`. The data
    /// must start where the previous call's `used` bytes ended. Allocation-free except when
    /// the label vector grows past its largest earlier size, and on errors.
    pub fn next<'a>(&'a mut self, data: &'a [u8], eof: bool) -> Result<Step<'a>, ParseError> {
        let mut skipped = 0;
        let first_line = self.body.line;
        loop {
            let rest = &data[skipped..];
            let mut lx = Lexer {
                b: rest,
                i: 0,
                start: 0,
                eof,
                virtual_newline: eof && rest.last().is_some_and(|&c| c != b'\n'),
            };
            self.body.labels.clear();
            match parse_entry(&mut lx, &mut self.body.labels) {
                Ok(Parsed::Blank) => {
                    self.body.line += 1;
                    skipped += lx.i.min(rest.len());
                }
                Ok(Parsed::End) => return Ok(Step::End(data.len())),
                Ok(Parsed::Entry(kind)) => {
                    // The virtual newline is not in the data: never report it as used.
                    let used_here = lx.i.min(rest.len());
                    let used = skipped + used_here;
                    let entry_data = rest;
                    self.body.line += count_newlines(&entry_data[..used_here]);
                    return Ok(Step::Entry(kind.entry(entry_data, &self.body.labels), used));
                }
                Err(Stop::More) => return Ok(self.more(skipped, first_line)),
                Err(Stop::Error { at, reason }) => {
                    let rest = &data[skipped..];
                    if excerpt_incomplete(&rest[at.min(rest.len())..], eof) {
                        return Ok(self.more(skipped, first_line));
                    }
                    return Err(located(self.body.line, rest, at, reason));
                }
            }
        }
    }
}

enum Parsed {
    Blank,
    End,
    Entry(Kind),
}

/// One entry from the front of the lexer's data (promparse.go's `Next`).
fn parse_entry(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<Parsed, Stop> {
    lx.skip_blanks();
    let indented = lx.i > 0;
    lx.start = lx.i;
    match lx.peek()? {
        // promlex.l: `\0 return tEOF` in the initial state ends the body.
        None | Some(0) => Ok(Parsed::End),
        Some(b'\n') => {
            lx.i += 1;
            Ok(Parsed::Blank)
        }
        Some(b'#') => comment(lx),
        Some(c) if is_name_start(c) && indented => Err(Stop::Error {
            at: 0,
            reason: "invalid metric name: white space before the name".to_owned(),
        }),
        Some(c) if is_name_start(c) => series(lx, labels),
        Some(_) => Err(Stop::Error {
            at: lx.start,
            reason: format!("{:?} is not a valid start token", Tok::Invalid.name()),
        }),
    }
}

/// Consumes the rest of a comment line; the newline must follow. `NulEnds::Yes` for a comment
/// without white space after `#`: the lexer is still in its initial state there, where a NUL
/// reads as the end of the body; after `# ` it skips NULs.
fn consume_comment(lx: &mut Lexer<'_>, nul: NulEnds) -> Result<Parsed, Stop> {
    match nul {
        NulEnds::Yes => lx.run(|c| c != b'\n' && c != 0)?,
        NulEnds::No => lx.run(|c| c != b'\n')?,
    }
    match lx.peek()? {
        None | Some(0) => Ok(Parsed::End),
        Some(_) => {
            lx.i += 1;
            Ok(Parsed::Entry(Kind::Comment))
        }
    }
}

/// Whether a NUL byte ends the body inside a comment.
#[derive(Clone, Copy)]
enum NulEnds {
    Yes,
    No,
}

fn comment(lx: &mut Lexer<'_>) -> Result<Parsed, Stop> {
    lx.i += 1; // '#'
    if !matches!(lx.peek()?, Some(b' ' | b'\t')) {
        return consume_comment(lx, NulEnds::Yes);
    }
    lx.skip_blanks();
    // `HELP[\t ]+` / `TYPE[\t ]+`; anything else makes the line a plain comment.
    let is_help = lx.b[lx.i..].starts_with(b"HELP");
    let is_type = lx.b[lx.i..].starts_with(b"TYPE");
    let have = lx.b.len() - lx.i;
    if !lx.eof
        && have < 5
        && (b"HELP".starts_with(&lx.b[lx.i..]) || b"TYPE".starts_with(&lx.b[lx.i..]))
    {
        return Err(Stop::More);
    }
    if !(is_help || is_type) || !matches!(lx.b.get(lx.i + 4), Some(b' ' | b'\t')) {
        return consume_comment(lx, NulEnds::No);
    }
    let keyword = if is_help { "HELP" } else { "TYPE" };
    lx.i += 4;
    lx.run(|c| c == b' ' || c == b'\t')?;
    // sMeta1: the metric name.
    lx.start = lx.i;
    match lx.peek()? {
        Some(c) if is_name_start(c) => lx.run(is_name_char)?,
        other => {
            let got = if other.is_none() {
                Tok::Eof
            } else {
                Tok::Invalid
            };
            return Err(unexpected(
                &format!("expected metric name after {keyword}"),
                got,
                lx.start,
            ));
        }
    }
    let name = (lx.start, lx.i);
    // sMeta2: the rest of the line is the text, less its first byte.
    let rest_start = lx.i;
    lx.run(|c| c != b'\n')?;
    let rest = &lx.b[rest_start..lx.i];
    let text = if rest.iter().all(|&c| c == b' ' || c == b'\t') || rest.len() <= 1 {
        (lx.i, lx.i)
    } else {
        (rest_start + 1, lx.i)
    };
    let text_bytes = &lx.b[text.0..text.1];
    let kind = if is_type {
        let kind = match text_bytes {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" => MetricType::Untyped,
            other => {
                return Err(Stop::Error {
                    at: text.0,
                    reason: format!("invalid metric type {:?}", String::from_utf8_lossy(other)),
                })
            }
        };
        Kind::Type { name, kind }
    } else {
        if std::str::from_utf8(text_bytes).is_err() {
            return Err(Stop::Error {
                at: text.0,
                reason: "help text is not a valid utf8 string".to_owned(),
            });
        }
        Kind::Help { name, text }
    };
    lx.start = lx.i;
    match lx.peek()? {
        Some(b'\n') => {
            lx.i += 1;
            Ok(Parsed::Entry(kind))
        }
        _ => Err(unexpected(
            "linebreak expected after metadata",
            Tok::Eof,
            lx.start,
        )),
    }
}

fn series(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<Parsed, Stop> {
    let name_start = lx.i;
    lx.run(is_name_char)?;
    let name = (name_start, lx.i);
    let mut tok = lx.value_state()?;
    if tok == Tok::BraceOpen {
        label_list(lx, labels)?;
        tok = lx.value_state()?;
    }
    if tok != Tok::Value {
        return Err(unexpected("expected value after metric", tok, lx.start));
    }
    let value = value_at(&lx.b[lx.start..lx.i], lx.start)?;
    let mut timestamp_ms = None;
    match lx.timestamp_state()? {
        Tok::Linebreak => {}
        Tok::Timestamp => {
            let digits = &lx.b[lx.start..lx.i];
            let ts = std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Stop::Error {
                    at: lx.start,
                    reason: "timestamp out of range".to_owned(),
                })?;
            timestamp_ms = Some(ts);
            let after = lx.timestamp_state()?;
            if after != Tok::Linebreak {
                return Err(unexpected(
                    "expected next entry after timestamp",
                    after,
                    lx.start,
                ));
            }
        }
        other => {
            return Err(unexpected(
                "expected timestamp or new record",
                other,
                lx.start,
            ))
        }
    }
    Ok(Parsed::Entry(Kind::Series {
        name,
        value,
        timestamp_ms,
    }))
}

/// promparse.go's `parseLVals`: after `{`, up to and including `}`.
fn label_list(lx: &mut Lexer<'_>, labels: &mut Vec<LabelSpan>) -> Result<(), Stop> {
    let mut tok = lx.labels_state()?;
    loop {
        match tok {
            Tok::BraceClose => return Ok(()),
            Tok::LName => {}
            other => return Err(unexpected("expected label name", other, lx.start)),
        }
        let name = (lx.start, lx.i);
        let eq = lx.labels_state()?;
        if eq != Tok::Equal {
            return Err(unexpected("expected equal", eq, lx.start));
        }
        let (value_tok, escaped) = lx.label_value()?;
        if value_tok != Tok::LValue {
            return Err(unexpected("expected label value", value_tok, lx.start));
        }
        let (vs, ve) = (lx.start + 1, lx.i - 1);
        if !lx.b[vs..ve].is_ascii() && std::str::from_utf8(&lx.b[vs..ve]).is_err() {
            return Err(Stop::Error {
                at: lx.start,
                reason: "invalid UTF-8 label value".to_owned(),
            });
        }
        labels.push(LabelSpan {
            name_start: to_u32(name.0, name.0)?,
            name_end: to_u32(name.1, name.0)?,
            value_start: to_u32(vs, vs)?,
            value_end: to_u32(ve, vs)?,
            escaped,
        });
        // Free trailing commas are allowed, and so (in 2.42) is no comma at all.
        tok = lx.labels_state()?;
        if tok == Tok::Comma {
            tok = lx.labels_state()?;
        }
    }
}

#[cfg(test)]
mod tests;
