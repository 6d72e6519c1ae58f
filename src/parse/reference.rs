//! Naive reference parsers for both formats, and property tests of the streaming parsers
//! against them.
//!
//! The references read a whole body at once, as plainly as the grammar can be written: the
//! OpenMetrics one line by line, the text one with one cursor over the body. They share no code
//! with the streaming parsers except the float reader ([`super::float`], tested on its own
//! against Go's forms) and the test support. They leave out the NUL byte quirks of Prometheus'
//! lexers (pinned by the tables and the live corpus instead), so the generated bodies hold no
//! NUL. A verdict is compared as accepted entries or "refused"; the refusal's message and
//! position belong to the tables.

use super::float::parse_value;
use super::testkit::{parse_chunks, random_cuts, Owned, Rng, OM_FRAGMENTS, TEXT_FRAGMENTS};
use super::{Format, MetricType};

type Verdict = Result<Vec<Owned>, ()>;

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    is_label_start(c) || c.is_ascii_digit()
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Resolves `\\`, `\"`, `\n` in a label value; other pairs stay as written.
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::new();
    let mut it = raw.iter().copied();
    while let Some(c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some(b'n') => out.push(b'\n'),
            Some(e @ (b'\\' | b'"')) => out.push(e),
            Some(other) => out.extend_from_slice(&[b'\\', other]),
            None => out.push(b'\\'),
        }
    }
    text_of(&out)
}

/// Resolves `\\` and `\n` in text-format help.
fn unescape_help(raw: &[u8]) -> String {
    text_of(raw)
        .replace("\\\\", "\u{1}")
        .replace("\\n", "\n")
        .replace('\u{1}', "\\")
}

fn series(name: &[u8], labels: Vec<(String, String)>, value: f64, ts: Option<i64>) -> Owned {
    Owned::Series {
        name: text_of(name),
        labels,
        value_bits: value.to_bits(),
        ts,
    }
}

// ------------------------------------------------------------------ OpenMetrics, by lines

/// `name="value"` pairs separated by single commas, as one string between braces.
fn om_labels(inner: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let name_len = rest.iter().take_while(|&&c| is_label_char(c)).count();
        if name_len == 0 || !is_label_start(rest[0]) {
            return None;
        }
        let name = &rest[..name_len];
        rest = rest[name_len..].strip_prefix(b"=\"")?;
        let mut end = 0;
        loop {
            match rest.get(end)? {
                b'"' => break,
                b'\\' => end += 2,
                _ => end += 1,
            }
        }
        let raw = rest.get(..end)?;
        std::str::from_utf8(raw).ok()?;
        out.push((text_of(name), unescape(raw)));
        rest = &rest[end + 1..];
        if !rest.is_empty() {
            rest = rest.strip_prefix(b",")?;
            if rest.is_empty() {
                return None;
            }
        }
    }
    Some(out)
}

/// Splits `{…}` off the front of `b`: the inside and the rest. Quotes may hold braces.
fn braces(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let b = b.strip_prefix(b"{")?;
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some((&b[..i], &b[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    None
}

fn om_seconds(b: &[u8]) -> Option<i64> {
    let ts = parse_value(b).ok()?;
    if !ts.is_finite() {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some((ts * 1000.0) as i64)
}

/// ` value[ ts]` after a sample or an exemplar's labels; `exemplar_allowed` lets
/// ` # {…} v[ ts]` follow.
fn om_value_tail(b: &[u8], exemplar_allowed: bool) -> Option<(f64, Option<i64>)> {
    let b = b.strip_prefix(b" ")?;
    let end = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
    let value = parse_value(&b[..end]).ok()?;
    let mut rest = &b[end..];
    let mut ts = None;
    if !rest.is_empty() && !rest.starts_with(b" # {") {
        let r = rest.strip_prefix(b" ")?;
        let end = r.iter().position(|&c| c == b' ').unwrap_or(r.len());
        ts = Some(om_seconds(&r[..end])?);
        rest = &r[end..];
    }
    if rest.is_empty() {
        return Some((value, ts));
    }
    if !exemplar_allowed {
        return None;
    }
    let (inner, after) = braces(rest.strip_prefix(b" # ")?)?;
    om_labels(inner)?;
    // The exemplar: a value and an optional timestamp, nothing more.
    let after = after.strip_prefix(b" ")?;
    let parts: Vec<&[u8]> = after.split(|&c| c == b' ').collect();
    match parts.as_slice() {
        [v] => parse_value(v).ok()?,
        [v, t] => {
            om_seconds(t)?;
            parse_value(v).ok()?
        }
        _ => return None,
    };
    Some((value, ts))
}

fn om_metadata(line: &[u8]) -> Option<Owned> {
    let (keyword, rest) = line.strip_prefix(b"# ")?.split_at_checked(5)?;
    let name_len = rest.iter().take_while(|&&c| is_name_char(c)).count();
    if name_len == 0 || !is_name_start(rest[0]) {
        return None;
    }
    let name = text_of(&rest[..name_len]);
    let text = rest[name_len..].strip_prefix(b" ")?;
    match keyword {
        b"HELP " => {
            let t = std::str::from_utf8(text).ok()?;
            // OpenMetrics help resolves the label-value escapes.
            Some(Owned::Help(name, unescape(t.as_bytes())))
        }
        b"TYPE " => {
            let kind = match text {
                b"counter" => MetricType::Counter,
                b"gauge" => MetricType::Gauge,
                b"histogram" => MetricType::Histogram,
                b"gaugehistogram" => MetricType::GaugeHistogram,
                b"summary" => MetricType::Summary,
                b"info" => MetricType::Info,
                b"stateset" => MetricType::Stateset,
                b"unknown" => MetricType::Unknown,
                _ => return None,
            };
            Some(Owned::Type(name, kind))
        }
        b"UNIT " => {
            let unit = text_of(text);
            if !unit.is_empty() && !name.ends_with(&format!("_{unit}")) {
                return None;
            }
            Some(Owned::Unit(name, unit))
        }
        _ => None,
    }
}

fn om_sample(line: &[u8]) -> Option<Owned> {
    let name_len = line.iter().take_while(|&&c| is_name_char(c)).count();
    if name_len == 0 || !is_name_start(line[0]) {
        return None;
    }
    let name = &line[..name_len];
    let mut rest = &line[name_len..];
    let mut labels = Vec::new();
    if rest.starts_with(b"{") {
        let (inner, after) = braces(rest)?;
        labels = om_labels(inner)?;
        rest = after;
    }
    let exemplar_allowed = name.ends_with(b"_total") || name.ends_with(b"_bucket");
    let (value, ts) = om_value_tail(rest, exemplar_allowed)?;
    Some(series(name, labels, value, ts))
}

/// OpenMetrics 1.0 as 2.42 reads it, line by line.
pub fn openmetrics(body: &[u8]) -> Verdict {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let (line, after) = match rest.iter().position(|&c| c == b'\n') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if line == b"# EOF" {
            return match after {
                None | Some(b"") => Ok(out),
                Some(_) => Err(()),
            };
        }
        // Every other line needs its newline.
        let after = after.ok_or(())?;
        let entry = if line.starts_with(b"#") {
            om_metadata(line)
        } else {
            om_sample(line)
        };
        out.push(entry.ok_or(())?);
        rest = after;
    }
}

// ------------------------------------------------------------------ text format, one cursor

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn at(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn blanks(&mut self) {
        while matches!(self.at(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn take(&mut self, f: impl Fn(u8) -> bool) -> &[u8] {
        let start = self.i;
        while self.at().is_some_and(&f) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    fn rest_of_line(&mut self) -> &[u8] {
        self.take(|c| c != b'\n')
    }
}

/// The text format 0.0.4 as 2.42 reads it. A body without a final newline reads as if it had
/// one.
pub fn text(body: &[u8]) -> Verdict {
    let mut owned = body.to_vec();
    if owned.last().is_some_and(|&c| c != b'\n') {
        owned.push(b'\n');
    }
    let mut cur = Cursor { b: &owned, i: 0 };
    let mut out = Vec::new();
    loop {
        let line_start = cur.i;
        cur.blanks();
        match cur.at() {
            None => return Ok(out),
            Some(b'\n') => cur.i += 1,
            Some(b'#') => {
                cur.i += 1;
                if let Some(entry) = text_comment(&mut cur)? {
                    out.push(entry);
                }
            }
            Some(c) if is_name_start(c) && cur.i == line_start => out.push(text_sample(&mut cur)?),
            Some(_) => return Err(()),
        }
    }
}

fn text_comment(cur: &mut Cursor<'_>) -> Result<Option<Owned>, ()> {
    let plain = |cur: &mut Cursor<'_>| {
        cur.rest_of_line();
        cur.i += 1;
        Ok(Some(Owned::Comment))
    };
    if !matches!(cur.at(), Some(b' ' | b'\t')) {
        return plain(cur);
    }
    cur.blanks();
    let rest = &cur.b[cur.i..];
    let keyword = if rest.starts_with(b"HELP") {
        b"HELP"
    } else if rest.starts_with(b"TYPE") {
        b"TYPE"
    } else {
        return plain(cur);
    };
    if !matches!(rest.get(4), Some(b' ' | b'\t')) {
        return plain(cur);
    }
    cur.i += 4;
    cur.blanks();
    if !cur.at().is_some_and(is_name_start) {
        return Err(());
    }
    let name = text_of(cur.take(is_name_char));
    let rest = cur.rest_of_line().to_vec();
    cur.i += 1;
    let text: &[u8] = if rest.len() <= 1 || rest.iter().all(|&c| c == b' ' || c == b'\t') {
        b""
    } else {
        &rest[1..]
    };
    if keyword == b"TYPE" {
        let kind = match text {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"summary" => MetricType::Summary,
            b"untyped" => MetricType::Untyped,
            _ => return Err(()),
        };
        return Ok(Some(Owned::Type(name, kind)));
    }
    std::str::from_utf8(text).map_err(|_| ())?;
    Ok(Some(Owned::Help(name, unescape_help(text))))
}

fn text_sample(cur: &mut Cursor<'_>) -> Result<Owned, ()> {
    let name = cur.take(is_name_char).to_vec();
    cur.blanks();
    let mut labels = Vec::new();
    if cur.at() == Some(b'{') {
        cur.i += 1;
        loop {
            cur.blanks();
            match cur.at() {
                Some(b'}') => {
                    cur.i += 1;
                    break;
                }
                Some(c) if is_label_start(c) => {}
                _ => return Err(()),
            }
            let label = text_of(cur.take(is_label_char));
            cur.blanks();
            if cur.at() != Some(b'=') {
                return Err(());
            }
            cur.i += 1;
            cur.blanks();
            if cur.at() != Some(b'"') {
                return Err(());
            }
            cur.i += 1;
            let start = cur.i;
            loop {
                match cur.at() {
                    None => return Err(()),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        // An escape takes any byte but a newline.
                        if matches!(cur.b.get(cur.i + 1), None | Some(b'\n')) {
                            return Err(());
                        }
                        cur.i += 2;
                    }
                    Some(_) => cur.i += 1,
                }
            }
            let raw = &cur.b[start..cur.i];
            std::str::from_utf8(raw).map_err(|_| ())?;
            labels.push((label, unescape(raw)));
            cur.i += 1;
            cur.blanks();
            if cur.at() == Some(b',') {
                cur.i += 1;
            }
        }
        cur.blanks();
    }
    let value = cur.take(|c| !matches!(c, b'{' | b' ' | b'\t' | b'\n'));
    if value.is_empty() {
        return Err(());
    }
    let value = parse_value(value).map_err(|_| ())?;
    cur.blanks();
    let digits = cur.take(|c| c.is_ascii_digit()).to_vec();
    let ts = if digits.is_empty() {
        None
    } else {
        Some(text_of(&digits).parse::<i64>().map_err(|_| ())?)
    };
    cur.blanks();
    if cur.at() != Some(b'\n') {
        return Err(());
    }
    cur.i += 1;
    Ok(series(&name, labels, value, ts))
}

// ------------------------------------------------------------------ property tests

/// Mutates `body` a few times: inserts a byte that matters to the grammar, deletes or
/// duplicates one.
fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    const BYTES: &[u8] = b" \t\"\\{},=#\n\r a1.e-+_:x";
    for _ in 0..rng.below(3) {
        if body.is_empty() {
            return;
        }
        let at = rng.below(body.len());
        match rng.below(3) {
            0 => body.insert(at, BYTES[rng.below(BYTES.len())]),
            1 => {
                body.remove(at);
            }
            _ => body.insert(at, body[at]),
        }
    }
}

fn verdict(got: Result<Vec<Owned>, super::ParseError>) -> Verdict {
    got.map_err(|_| ())
}

/// Generates bodies from `fragments`, mutated, and checks the streaming parser in random
/// windows against the reference. Returns (accepted, refused) counts.
fn check_against_reference(
    format: Format,
    fragments: &[&str],
    tail: &str,
    reference: fn(&[u8]) -> Verdict,
    seed: u64,
) -> (usize, usize) {
    let mut rng = Rng(seed);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..4000 {
        let mut body = Vec::new();
        for _ in 0..rng.below(6) + 1 {
            body.extend_from_slice(fragments[rng.below(fragments.len())].as_bytes());
        }
        if rng.below(5) != 0 {
            body.extend_from_slice(tail.as_bytes());
        }
        if round % 2 == 1 {
            mutate(&mut rng, &mut body);
        }
        let want = reference(&body);
        if want.is_ok() {
            accepted += 1;
        } else {
            refused += 1;
        }
        let whole = verdict(parse_chunks(format, &body, &[]));
        assert_eq!(whole, want, "{:?}", String::from_utf8_lossy(&body));
        let cuts = random_cuts(&mut rng, body.len());
        assert_eq!(
            verdict(parse_chunks(format, &body, &cuts)),
            want,
            "{:?} cut at {cuts:?}",
            String::from_utf8_lossy(&body)
        );
    }
    (accepted, refused)
}

#[test]
fn text_parser_agrees_with_the_naive_reference() {
    let (accepted, refused) = check_against_reference(
        Format::Text,
        TEXT_FRAGMENTS,
        "",
        text,
        0x0123_4567_89ab_cdef,
    );
    assert!(
        accepted > 500 && refused > 500,
        "both verdicts occur: {accepted} accepted, {refused} refused"
    );
}

#[test]
fn openmetrics_parser_agrees_with_the_naive_reference() {
    let (accepted, refused) = check_against_reference(
        Format::OpenMetrics,
        OM_FRAGMENTS,
        "# EOF\n",
        openmetrics,
        0xfedc_ba98_7654_3210,
    );
    assert!(
        accepted > 500 && refused > 500,
        "both verdicts occur: {accepted} accepted, {refused} refused"
    );
}

/// The references themselves are checked on the streaming parsers' own tables (a reference
/// that accepted everything would pass nothing above).
#[test]
fn references_agree_on_hand_picked_bodies() {
    let om: &[(&str, bool)] = &[
        ("a 1\n# EOF\n", true),
        ("a 1\n# EOF", true),
        ("a 1\n", false),
        ("a{x=\"1\",} 1\n# EOF\n", false),
        ("a_total 1 # {t=\"x\"} 1 2\n# EOF\n", true),
        ("a 1 # {t=\"x\"} 1\n# EOF\n", false),
        ("# UNIT a_s bytes\n# EOF\n", false),
        ("a 1 NaN\n# EOF\n", false),
        ("a 1\n# EOF\n\n", false),
    ];
    for (body, ok) in om {
        assert_eq!(openmetrics(body.as_bytes()).is_ok(), *ok, "{body:?}");
        assert_eq!(
            parse_chunks(Format::OpenMetrics, body.as_bytes(), &[]).is_ok(),
            *ok,
            "{body:?}"
        );
    }
    let tx: &[(&str, bool)] = &[
        ("m 1", true),
        ("  m 1\n", false),
        ("m{a=\"1\" b=\"2\"}3\n", true),
        ("m 1 -5\n", false),
        ("# TYPE m bogus\n", false),
        ("m{a=\"x\\\ny\"} 1\n", false),
        ("m 1\r\n", false),
    ];
    for (body, ok) in tx {
        assert_eq!(text(body.as_bytes()).is_ok(), *ok, "{body:?}");
        assert_eq!(
            parse_chunks(Format::Text, body.as_bytes(), &[]).is_ok(),
            *ok,
            "{body:?}"
        );
    }
}
