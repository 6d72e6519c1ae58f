//! Test support shared by both formats' tests: entries copied out of the window, feeding a
//! body in chunks, printing entries back, and a deterministic random generator.

use super::{
    unescape_help, unescape_label_value, Entry, Format, MetricType, ParseError, Parser, Step,
};

/// An entry copied out of the window, for comparisons (label values and help unescaped).
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Series {
        name: String,
        labels: Vec<(String, String)>,
        value_bits: u64,
        ts: Option<i64>,
    },
    Help(String, String),
    Type(String, MetricType),
    Unit(String, String),
    Comment,
    Blank,
}

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The entry copied out; help text is unescaped as `format` defines it (OpenMetrics help
/// takes the label-value escapes, the text format only `\\` and `\n`).
pub fn own(format: Format, e: &Entry<'_>) -> Owned {
    match *e {
        Entry::Series {
            data,
            name,
            labels,
            value,
            timestamp_ms,
        } => Owned::Series {
            name: s(name),
            labels: labels
                .iter()
                .map(|l| {
                    let mut v = Vec::new();
                    unescape_label_value(l.raw_value(data), &mut v);
                    (s(l.name(data)), s(&v))
                })
                .collect(),
            value_bits: value.to_bits(),
            ts: timestamp_ms,
        },
        Entry::Help { name, text } => {
            let mut t = Vec::new();
            if format == Format::OpenMetrics {
                unescape_label_value(text, &mut t);
            } else {
                unescape_help(text, &mut t);
            }
            Owned::Help(s(name), s(&t))
        }
        Entry::Type { name, kind } => Owned::Type(s(name), kind),
        Entry::Unit { name, unit } => Owned::Unit(s(name), s(unit)),
        Entry::Comment => Owned::Comment,
        Entry::Blank => Owned::Blank,
    }
}

pub fn series(name: &str, labels: &[(&str, &str)], value: f64, ts: Option<i64>) -> Owned {
    Owned::Series {
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value_bits: value.to_bits(),
        ts,
    }
}

/// Parses `body` fed in chunks that end at `cuts` (ascending offsets), as a scrape would.
pub fn parse_chunks(format: Format, body: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, ParseError> {
    let mut parser = Parser::new(format);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut cuts = cuts.iter().copied().chain(std::iter::once(body.len()));
    let mut out = Vec::new();
    loop {
        let eof = fed == body.len();
        match parser.next(&buf, eof)? {
            Step::Entry(e, used) => {
                // Blank runs come back only where a chunk ends: not part of the body's entries.
                if e != Entry::Blank {
                    out.push(own(format, &e));
                }
                buf.drain(..used);
            }
            Step::End(_) => return Ok(out),
            Step::NeedMore => {
                assert!(!eof, "NeedMore at eof");
                let to = cuts
                    .next()
                    .expect("a chunk is left")
                    .max(fed + 1)
                    .min(body.len());
                buf.extend_from_slice(&body[fed..to]);
                fed = to;
            }
        }
    }
}

fn print_value(bits: u64) -> String {
    let v = f64::from_bits(bits);
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// Prints entries back in `format` (canonical spacing, escapes restored; OpenMetrics
/// timestamps in seconds, and the closing `# EOF`).
pub fn print(format: Format, entries: &[Owned]) -> String {
    let mut out = String::new();
    for e in entries {
        match e {
            Owned::Series {
                name,
                labels,
                value_bits,
                ts,
            } => {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let v = v
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        out.push_str(&format!("{k}=\"{v}\""));
                    }
                    out.push('}');
                }
                out.push_str(&format!(" {}", print_value(*value_bits)));
                match (ts, format) {
                    (Some(ts), Format::OpenMetrics) => {
                        // Seconds, half a millisecond away from zero: Prometheus truncates
                        // `ts * 1000`, so this reads back as the same milliseconds.
                        let sign = if *ts < 0 { "-" } else { "" };
                        let abs = ts.unsigned_abs();
                        out.push_str(&format!(" {sign}{}.{:03}5", abs / 1000, abs % 1000));
                    }
                    (Some(ts), _) => out.push_str(&format!(" {ts}")),
                    (None, _) => {}
                }
                out.push('\n');
            }
            Owned::Help(name, text) => {
                let mut t = text.replace('\\', "\\\\").replace('\n', "\\n");
                if format == Format::OpenMetrics {
                    t = t.replace('"', "\\\"");
                }
                out.push_str(&format!("# HELP {name} {t}\n"));
            }
            Owned::Type(name, kind) => {
                let k = format!("{kind:?}").to_lowercase();
                out.push_str(&format!("# TYPE {name} {k}\n"));
            }
            Owned::Unit(name, unit) => out.push_str(&format!("# UNIT {name} {unit}\n")),
            Owned::Comment => out.push_str("# comment\n"),
            Owned::Blank => out.push('\n'),
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A small deterministic generator (xorshift64*): the property tests need no dependency and
/// replay the same bodies on every run and platform.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("fits")).expect("fits")
    }
}

/// Up to four random cut offsets in a body of `len` bytes, ascending.
pub fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.below(5)).map(|_| rng.below(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Builds 2000 bodies from `fragments` (then `tail`, three times in four, then sometimes
/// without the last byte) and checks that each parses the same whole and in random windows,
/// and that what it accepts prints and parses back the same. Returns (accepted, refused).
pub fn random_bodies_agree(
    format: Format,
    fragments: &[&str],
    tail: &str,
    seed: u64,
) -> (usize, usize) {
    let mut rng = Rng(seed);
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..2000 {
        let mut body = String::new();
        for _ in 0..=rng.below(8) {
            body.push_str(fragments[rng.below(fragments.len())]);
        }
        if rng.below(4) != 0 {
            body.push_str(tail);
        }
        if rng.below(4) == 0 {
            body.pop();
        }
        let bytes = body.as_bytes();
        let whole = parse_chunks(format, bytes, &[]);
        if whole.is_ok() {
            valid += 1;
        } else {
            invalid += 1;
        }
        for _ in 0..3 {
            let cuts = random_cuts(&mut rng, bytes.len());
            assert_eq!(
                parse_chunks(format, bytes, &cuts),
                whole,
                "{body:?} cut at {cuts:?}"
            );
        }
        if let Ok(entries) = &whole {
            let printed = print(format, entries);
            assert_eq!(
                parse_chunks(format, printed.as_bytes(), &[]).as_ref(),
                Ok(entries),
                "{body:?} → {printed:?}"
            );
        }
    }
    (valid, invalid)
}

/// Text-format lines random bodies are built from: mostly valid, some broken, no NUL (the
/// reference parsers leave NUL out).
pub const TEXT_FRAGMENTS: &[&str] = &[
    "m 1\n",
    "m{a=\"1\"} 2\n",
    "m{a=\"1\",b=\"x y\"} 3 1700000000000\n",
    "m{a=\"q\\\"\\\\\\n\"} 4\n",
    "m{a=\"line\nbreak\"} 5\n",
    "m\t{ a = \"1\" , } 6 \n",
    "  m 1\n",
    "m{a=\"1\" b=\"2\"}7\n",
    "# HELP m help \\n \\\\ text\n",
    "# TYPE m counter\n",
    "# TYPE m summary\n",
    "# comment\n",
    "#x\n",
    "\n",
    "m NaN\n",
    "m -Inf\n",
    "m 1e-3\n",
    "m{a=\"ü\"} 8\n",
    "m_total{le=\"+Inf\"} 9 1\n",
    "m 1 -5\n",
    "m{a=1} 1\n",
    "m 1\r\n",
    "{a=\"1\"} 1\n",
    "# TYPE m bogus\n",
    "m{a=\"1\",,} 1\n",
    "m 0x1p1\n",
];

/// OpenMetrics lines random bodies are built from, as [`TEXT_FRAGMENTS`].
pub const OM_FRAGMENTS: &[&str] = &[
    "a 1\n",
    "a{x=\"1\"} 2\n",
    "a{x=\"1\",y=\"x y\"} 3 1700000000.5\n",
    "a{x=\"q\\\"\\\\\\n\"} 4\n",
    "a_total 5 # {t=\"x\"} 1\n",
    "a_bucket{le=\"1\"} 6 1.5 # {} 2 3\n",
    "a_total 7 # {t=\"}\",u=\"\"} 1 -2.5\n",
    "# HELP a help \\n \\\" text\n",
    "# TYPE a counter\n",
    "# TYPE a stateset\n",
    "# UNIT a_s s\n",
    "# UNIT a \n",
    "a NaN\n",
    "a -Inf -1.5\n",
    "a{x=\"ü\"} 8\n",
    "a{} 9\n",
    "a  1\n",
    "a{x=\"1\",} 1\n",
    "# comment\n",
    "\n",
    "a 1 NaN\n",
    "# TYPE a untyped\n",
    "a 1 # {t=\"x\"} 1\n",
    "# EOF\n",
];

/// `body` split into two windows at every offset, and fed byte by byte, parses exactly as
/// the whole body does (same entries, or the same error).
pub fn every_split_agrees(format: Format, body: &str) {
    let bytes = body.as_bytes();
    let whole = parse_chunks(format, bytes, &[]);
    for cut in 0..=bytes.len() {
        assert_eq!(
            parse_chunks(format, bytes, &[cut]),
            whole,
            "{body:?} cut at {cut}"
        );
    }
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(
        parse_chunks(format, bytes, &every_byte),
        whole,
        "{body:?} byte by byte"
    );
}
