//! A pull tokenizer for JSON (RFC 8259) over a window of bytes, for bodies too large to
//! hold as a tree (the kubelet's `/pods`).
//!
//! [`Lexer::next`] reads one token from the front of the data it is given and says how many
//! bytes it used, or asks for more ([`Step::NeedMore`]) when the token is not complete yet,
//! as the exposition parser does (`crate::parse`): the caller keeps a window that the HTTP
//! body fills, drops what was used, and calls again with the rest. Tokens borrow the window;
//! a string is its raw text between the quotes, unescaped only by a caller that wants it
//! ([`Str::unescape_into`]), so skipping a value costs nothing but the scan.
//!
//! The lexer checks the whole grammar (commas, colons, brackets, escapes, UTF-8, numbers)
//! with no recursion: open containers are bits in a fixed array of [`MAX_DEPTH`] bits, and a
//! document nested deeper fails. Its state is a few words; it never allocates.

use std::fmt;

/// The deepest nesting accepted. A pod's deepest part is its `managedFields` trie (`f:spec`
/// → `f:containers` → `k:{…}` → `f:env` → …), some 20 levels below the list; 256 levels
/// cost 32 bytes of bits. Go's `encoding/json` allows 10,000, a depth only hostile input has.
pub const MAX_DEPTH: usize = 256;

/// One token, borrowing the data it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'w> {
    /// `{`.
    BeginObject,
    /// `}`.
    EndObject,
    /// `[`.
    BeginArray,
    /// `]`.
    EndArray,
    /// An object's key (its `:` is consumed with it).
    Key(Str<'w>),
    /// A string value.
    String(Str<'w>),
    /// A number, as written (checked against the grammar, not converted).
    Number(&'w str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A string's raw text between its quotes: valid UTF-8, escapes checked but not resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str<'w> {
    raw: &'w str,
    escaped: bool,
}

impl<'w> Str<'w> {
    /// The text as written, escapes included.
    pub fn raw(&self) -> &'w str {
        self.raw
    }

    /// Appends the string's value to `out`: escapes resolved, a `\uXXXX` surrogate pair
    /// joined into one character. A lone surrogate becomes U+FFFD, as Go's `encoding/json`
    /// (`decode.go`, `unquote`) makes it: the kubelet's own decoder accepts it, so we do too.
    pub fn unescape_into(&self, out: &mut String) {
        if !self.escaped {
            out.push_str(self.raw);
            return;
        }
        let mut rest = self.raw;
        while let Some(at) = rest.find('\\') {
            out.push_str(&rest[..at]);
            let esc = &rest.as_bytes()[at + 1..];
            let (c, len) = match esc.first() {
                Some(b'b') => ('\u{8}', 1),
                Some(b'f') => ('\u{c}', 1),
                Some(b'n') => ('\n', 1),
                Some(b'r') => ('\r', 1),
                Some(b't') => ('\t', 1),
                Some(b'u') => unicode_escape(&esc[1..]),
                // `"`, `\` and `/` stand for themselves (the lexer let no other through).
                Some(&b) => (char::from(b), 1),
                None => break,
            };
            out.push(c);
            rest = rest.get(at + 1 + len..).unwrap_or("");
        }
        out.push_str(rest);
    }

    /// The value: the raw text itself when it has no escapes, else unescaped into `scratch`
    /// (cleared first).
    pub fn text<'s>(&self, scratch: &'s mut String) -> &'s str
    where
        'w: 's,
    {
        if !self.escaped {
            return self.raw;
        }
        scratch.clear();
        self.unescape_into(scratch);
        scratch
    }
}

/// The four hex digits at the front of `hex` as a number.
fn hex4(hex: &[u8]) -> Option<u32> {
    let digits = hex.get(..4)?;
    digits
        .iter()
        .try_fold(0, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}

/// The character of a `\u` escape whose digits start `hex`, and how many bytes after the
/// backslash it takes (5, or 11 for a surrogate pair).
fn unicode_escape(hex: &[u8]) -> (char, usize) {
    let Some(high) = hex4(hex) else {
        return (char::REPLACEMENT_CHARACTER, 1);
    };
    if (0xD800..0xDC00).contains(&high) && hex.get(4..6) == Some(b"\\u") {
        if let Some(low) = hex.get(6..).and_then(hex4) {
            if (0xDC00..0xE000).contains(&low) {
                let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 11);
            }
        }
    }
    (
        char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER),
        5,
    )
}

/// What one call of [`Lexer::next`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'w> {
    /// A token, and the bytes it used from the front of the data (white space and `,`
    /// before it included).
    Token(Token<'w>, usize),
    /// The data ends inside a token (or holds only white space and punctuation): drop the
    /// bytes said (those before the token) and call again with more.
    NeedMore(usize),
    /// The document ended, and nothing but white space followed it.
    End,
}

/// Why the data is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing but white space.
    NoValue,
    /// The data ended inside the document.
    Truncated,
    /// A byte where something else was expected.
    Unexpected {
        /// The byte found.
        found: u8,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A raw control character (below U+0020) inside a string.
    ControlCharacter(u8),
    /// A backslash not followed by one of `"\/bfnrt` or `u` and four hex digits.
    BadEscape,
    /// Bytes inside a string that are not UTF-8.
    InvalidUtf8,
    /// A number that breaks the grammar (`-`, `1.`, `01`, `1e`).
    BadNumber,
    /// A word that is not `true`, `false` or `null`.
    BadLiteral,
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than white space after the document's value.
    TrailingData,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoValue => f.write_str("no JSON value"),
            Reason::Truncated => f.write_str("unexpected end of the document"),
            Reason::Unexpected { found, expected } => {
                if found.is_ascii_graphic() {
                    write!(f, "expected {expected}, found '{}'", char::from(*found))
                } else {
                    write!(f, "expected {expected}, found byte 0x{found:02x}")
                }
            }
            Reason::ControlCharacter(b) => {
                write!(f, "control character 0x{b:02x} in a string")
            }
            Reason::BadEscape => f.write_str("invalid escape in a string"),
            Reason::InvalidUtf8 => f.write_str("invalid UTF-8 in a string"),
            Reason::BadNumber => f.write_str("invalid number"),
            Reason::BadLiteral => f.write_str("invalid literal"),
            Reason::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Reason::TrailingData => f.write_str("data after the document"),
        }
    }
}

/// A document that is not JSON, and where: the byte offset from the start of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Offset of the offending byte or of the token it is in.
    pub offset: u64,
    /// What is wrong there.
    pub reason: Reason,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for JsonError {}

/// What the grammar allows next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The document's value; nothing read yet.
    Document,
    /// A value: after `:`, or after `,` in an array.
    Value,
    /// A value or `]`, just after `[`.
    FirstItem,
    /// A key or `}`, just after `{`.
    FirstKey,
    /// A key, after `,` in an object.
    Key,
    /// `,` or the innermost container's closing bracket.
    CommaOrClose,
    /// After the document's value: white space only.
    Trailer,
}

/// The tokenizer's state between calls: where it is in the grammar, the open containers,
/// and the offset of the data's front (for errors). Fixed size; never allocates.
#[derive(Debug, Clone)]
pub struct Lexer {
    expect: Expect,
    /// Bit `i` is set when the container at depth `i` (0 outermost) is an object.
    objects: [u64; MAX_DEPTH / 64],
    /// Open containers; never above [`MAX_DEPTH`].
    depth: usize,
    /// Bytes used before the data of the current call.
    offset: u64,
}

impl Default for Lexer {
    fn default() -> Lexer {
        Lexer::new()
    }
}

/// Why a token could not be read from the data at hand.
enum Scan {
    /// The data ends inside it: more is needed.
    Short,
    /// It is wrong: the reason, and the offset within the data.
    Bad(Reason, usize),
}

impl Lexer {
    /// At the start of a document.
    pub fn new() -> Lexer {
        Lexer {
            expect: Expect::Document,
            objects: [0; MAX_DEPTH / 64],
            depth: 0,
            offset: 0,
        }
    }

    /// Bytes used so far: the offset of the next call's data in the document.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After a document's value: another document may follow (a watch stream's next
    /// event), where [`Lexer::next`] would otherwise refuse anything but white space.
    pub fn next_document(&mut self) {
        if self.expect == Expect::Trailer {
            self.expect = Expect::Document;
        }
    }

    /// Open containers.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects[(self.depth - 1) / 64] & (1 << ((self.depth - 1) % 64)) != 0
    }

    fn open(&mut self, object: bool) -> Result<(), Reason> {
        if self.depth == MAX_DEPTH {
            return Err(Reason::TooDeep);
        }
        let (word, bit) = (self.depth / 64, 1 << (self.depth % 64));
        if object {
            self.objects[word] |= bit;
        } else {
            self.objects[word] &= !bit;
        }
        self.depth += 1;
        self.expect = if object {
            Expect::FirstKey
        } else {
            Expect::FirstItem
        };
        Ok(())
    }

    fn after_value(&mut self) {
        self.expect = if self.depth == 0 {
            Expect::Trailer
        } else {
            Expect::CommaOrClose
        };
    }

    fn error(&self, at: usize, reason: Reason) -> JsonError {
        JsonError {
            offset: self.offset + at as u64,
            reason,
        }
    }

    /// Reads the next token from the front of `data`; `eof` says no more data will follow.
    /// `data` must start where the last call's used bytes ended. Errors are final: the
    /// document is not JSON (the lexer's state is then unspecified; start a new one).
    pub fn next<'w>(&mut self, data: &'w [u8], eof: bool) -> Result<Step<'w>, JsonError> {
        let mut i = 0;
        loop {
            while i < data.len() && matches!(data[i], b' ' | b'\t' | b'\n' | b'\r') {
                i += 1;
            }
            let Some(&b) = data.get(i) else {
                if !eof {
                    self.offset += i as u64;
                    return Ok(Step::NeedMore(i));
                }
                return match self.expect {
                    Expect::Trailer => {
                        self.offset += i as u64;
                        Ok(Step::End)
                    }
                    Expect::Document => Err(self.error(i, Reason::NoValue)),
                    _ => Err(self.error(i, Reason::Truncated)),
                };
            };
            let token = match self.expect {
                Expect::Trailer => return Err(self.error(i, Reason::TrailingData)),
                Expect::CommaOrClose | Expect::FirstItem | Expect::FirstKey
                    if matches!(b, b']' | b'}') =>
                {
                    let object = self.in_object();
                    let fits = match self.expect {
                        Expect::FirstItem => b == b']',
                        Expect::FirstKey => b == b'}',
                        _ => (b == b'}') == object,
                    };
                    if !fits {
                        let expected = self.wanted();
                        return Err(self.error(i, Reason::Unexpected { found: b, expected }));
                    }
                    self.depth -= 1;
                    self.after_value();
                    i += 1;
                    if object {
                        Token::EndObject
                    } else {
                        Token::EndArray
                    }
                }
                Expect::CommaOrClose if b == b',' => {
                    self.expect = if self.in_object() {
                        Expect::Key
                    } else {
                        Expect::Value
                    };
                    i += 1;
                    continue;
                }
                Expect::CommaOrClose => {
                    let expected = self.wanted();
                    return Err(self.error(i, Reason::Unexpected { found: b, expected }));
                }
                Expect::FirstKey | Expect::Key => {
                    if b != b'"' {
                        let expected = self.wanted();
                        return Err(self.error(i, Reason::Unexpected { found: b, expected }));
                    }
                    match key(data, i) {
                        Ok((s, end)) => {
                            self.expect = Expect::Value;
                            i = end;
                            Token::Key(s)
                        }
                        Err(scan) => return self.short(scan, i, data.len(), eof),
                    }
                }
                Expect::Document | Expect::Value | Expect::FirstItem => match b {
                    b'{' | b'[' => {
                        self.open(b == b'{').map_err(|r| self.error(i, r))?;
                        i += 1;
                        if b == b'{' {
                            Token::BeginObject
                        } else {
                            Token::BeginArray
                        }
                    }
                    _ => match value(data, i, eof) {
                        Ok((t, end)) => {
                            self.after_value();
                            i = end;
                            t
                        }
                        Err(scan) => return self.short(scan, i, data.len(), eof),
                    },
                },
            };
            self.offset += i as u64;
            return Ok(Step::Token(token, i));
        }
    }

    /// The answer for a token that starts at `start` and could not be read.
    fn short<'w>(
        &mut self,
        scan: Scan,
        start: usize,
        len: usize,
        eof: bool,
    ) -> Result<Step<'w>, JsonError> {
        match scan {
            Scan::Bad(reason, at) => Err(self.error(at, reason)),
            Scan::Short if eof => Err(self.error(len, Reason::Truncated)),
            Scan::Short => {
                self.offset += start as u64;
                Ok(Step::NeedMore(start))
            }
        }
    }

    /// What [`Reason::Unexpected`] says was expected, from the state.
    fn wanted(&self) -> &'static str {
        match (self.expect, self.in_object()) {
            (Expect::FirstKey, _) => "a key or '}'",
            (Expect::Key, _) => "a key",
            (Expect::CommaOrClose, true) => "',' or '}'",
            (Expect::CommaOrClose, false) => "',' or ']'",
            (Expect::FirstItem, _) => "a value or ']'",
            _ => "a value",
        }
    }
}

/// A key at `data[start]` (a `"`) and its `:`: the string, and the offset after the colon.
fn key(data: &[u8], start: usize) -> Result<(Str<'_>, usize), Scan> {
    let (s, mut end) = string(data, start)?;
    while end < data.len() && matches!(data[end], b' ' | b'\t' | b'\n' | b'\r') {
        end += 1;
    }
    match data.get(end) {
        None => Err(Scan::Short),
        Some(b':') => Ok((s, end + 1)),
        Some(&found) => Err(Scan::Bad(
            Reason::Unexpected {
                found,
                expected: "':' after a key",
            },
            end,
        )),
    }
}

/// A scalar value at `data[start]`, and the offset after it.
fn value(data: &[u8], start: usize, eof: bool) -> Result<(Token<'_>, usize), Scan> {
    match data[start] {
        b'"' => string(data, start).map(|(s, end)| (Token::String(s), end)),
        b'-' | b'0'..=b'9' => number(data, start, eof),
        b't' => literal(data, start, b"true", Token::Bool(true)),
        b'f' => literal(data, start, b"false", Token::Bool(false)),
        b'n' => literal(data, start, b"null", Token::Null),
        found => Err(Scan::Bad(
            Reason::Unexpected {
                found,
                expected: "a value",
            },
            start,
        )),
    }
}

fn literal<'w>(
    data: &'w [u8],
    start: usize,
    word: &[u8],
    token: Token<'w>,
) -> Result<(Token<'w>, usize), Scan> {
    let have = &data[start..data.len().min(start + word.len())];
    if !word.starts_with(have) {
        return Err(Scan::Bad(Reason::BadLiteral, start));
    }
    if have.len() < word.len() {
        return Err(Scan::Short);
    }
    Ok((token, start + word.len()))
}

/// A string at `data[start]` (a `"`): its raw text, and the offset after the closing quote.
fn string(data: &[u8], start: usize) -> Result<(Str<'_>, usize), Scan> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        let Some(&b) = data.get(i) else {
            return Err(Scan::Short);
        };
        match b {
            b'"' => break,
            b'\\' => {
                escaped = true;
                match data.get(i + 1) {
                    None => return Err(Scan::Short),
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => {
                        for k in i + 2..i + 6 {
                            match data.get(k) {
                                None => return Err(Scan::Short),
                                Some(d) if d.is_ascii_hexdigit() => {}
                                Some(_) => return Err(Scan::Bad(Reason::BadEscape, i)),
                            }
                        }
                        i += 6;
                    }
                    Some(_) => return Err(Scan::Bad(Reason::BadEscape, i)),
                }
            }
            0..=0x1f => return Err(Scan::Bad(Reason::ControlCharacter(b), i)),
            _ => i += 1,
        }
    }
    let raw = std::str::from_utf8(&data[start + 1..i])
        .map_err(|e| Scan::Bad(Reason::InvalidUtf8, start + 1 + e.valid_up_to()))?;
    Ok((Str { raw, escaped }, i + 1))
}

/// A number at `data[start]`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number(data: &[u8], start: usize, eof: bool) -> Result<(Token<'_>, usize), Scan> {
    let digits = |from: usize| {
        let mut i = from;
        while data.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let bad = Err(Scan::Bad(Reason::BadNumber, start));
    let mut i = start + usize::from(data[start] == b'-');
    match data.get(i) {
        Some(b'0') => {
            i += 1;
            if data.get(i).is_some_and(u8::is_ascii_digit) {
                return bad;
            }
        }
        Some(b'1'..=b'9') => i = digits(i),
        Some(_) => return bad,
        None => {}
    }
    if data.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 && end < data.len() {
            return bad;
        }
        i = end;
    }
    if matches!(data.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(data.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(i);
        if end == i && end < data.len() {
            return bad;
        }
        i = end;
    }
    if i == data.len() {
        // The number may go on in the next data; at the end, it must be complete.
        if !eof {
            return Err(Scan::Short);
        }
        let last = data[i - 1];
        if !last.is_ascii_digit() {
            return bad;
        }
    }
    let text = std::str::from_utf8(&data[start..i]).expect("a number's bytes are ASCII");
    Ok((Token::Number(text), i))
}

#[cfg(test)]
mod tests;
