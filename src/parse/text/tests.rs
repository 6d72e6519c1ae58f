//! Spec and error tables, every window split against the whole body, print → parse round
//! trips, and the window's bounded growth.

use super::*;
use crate::parse::float::NORMAL_NAN_BITS;
use crate::parse::testkit::{
    every_split_agrees, print, random_bodies_agree, series, Owned, TEXT_FRAGMENTS,
};
use crate::parse::{Format, Window};

fn parse_chunks(body: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, ParseError> {
    crate::parse::testkit::parse_chunks(Format::Text, body, cuts)
}

fn parse_all(body: &str) -> Result<Vec<Owned>, ParseError> {
    parse_chunks(body.as_bytes(), &[])
}

fn spec_cases() -> Vec<(&'static str, Vec<Owned>)> {
    vec![
        ("", vec![]),
        ("\n\n\n", vec![]),
        ("m 1\n", vec![series("m", &[], 1.0, None)]),
        (
            "m 1 1700000000000\n",
            vec![series("m", &[], 1.0, Some(1_700_000_000_000))],
        ),
        ("m\t 1  \n", vec![series("m", &[], 1.0, None)]),
        (
            "  # indented comment\n  \t\nm 1\n",
            vec![Owned::Comment, series("m", &[], 1.0, None)],
        ),
        (
            "# a\0b\nm 1\n",
            vec![Owned::Comment, series("m", &[], 1.0, None)],
        ),
        ("#a\0b\nm 1\n", vec![]),
        ("m 1 5 \n", vec![series("m", &[], 1.0, Some(5))]),
        ("a:b_c:d 2\n", vec![series("a:b_c:d", &[], 2.0, None)]),
        (
            "m{a=\"1\",b=\"2\"} 3\n",
            vec![series("m", &[("a", "1"), ("b", "2")], 3.0, None)],
        ),
        (
            "m{a=\"1\",} 3\n",
            vec![series("m", &[("a", "1")], 3.0, None)],
        ),
        (
            "m{a=\"1\" b=\"2\"} 3\n",
            vec![series("m", &[("a", "1"), ("b", "2")], 3.0, None)],
        ),
        (
            "m { a = \"1\" } 3\n",
            vec![series("m", &[("a", "1")], 3.0, None)],
        ),
        ("m{} 3\n", vec![series("m", &[], 3.0, None)]),
        ("m{a=\"1\"}3\n", vec![series("m", &[("a", "1")], 3.0, None)]),
        ("m{a=\"\"} 3\n", vec![series("m", &[("a", "")], 3.0, None)]),
        (
            "m{a=\"1\",a=\"2\"} 3\n",
            vec![series("m", &[("a", "1"), ("a", "2")], 3.0, None)],
        ),
        (
            "m{a=\"x\\\\y\\\"z\\nw\\tq\"} 1\n",
            vec![series("m", &[("a", "x\\y\"z\nw\\tq")], 1.0, None)],
        ),
        (
            "m{a=\"multi\nline\"} 1\n",
            vec![series("m", &[("a", "multi\nline")], 1.0, None)],
        ),
        (
            "\n\nm{a=\"\\xff\"} 1\n",
            vec![series("m", &[("a", "\\xff")], 1.0, None)],
        ),
        (
            "m{a=\"ü€\"} 1\n",
            vec![series("m", &[("a", "ü€")], 1.0, None)],
        ),
        ("m +Inf\n", vec![series("m", &[], f64::INFINITY, None)]),
        ("m -inf\n", vec![series("m", &[], f64::NEG_INFINITY, None)]),
        (
            "m NaN\n",
            vec![series("m", &[], f64::from_bits(NORMAL_NAN_BITS), None)],
        ),
        ("m 1e3\n", vec![series("m", &[], 1000.0, None)]),
        ("m .5\n", vec![series("m", &[], 0.5, None)]),
        (
            "# HELP m Some help.\n",
            vec![Owned::Help("m".into(), "Some help.".into())],
        ),
        (
            "# HELP m  two\n",
            vec![Owned::Help("m".into(), " two".into())],
        ),
        ("# HELP m\n", vec![Owned::Help("m".into(), String::new())]),
        (
            "# HELP m    \n",
            vec![Owned::Help("m".into(), String::new())],
        ),
        (
            "# HELP m a\\\\b\\nc\\\"\n",
            vec![Owned::Help("m".into(), "a\\b\nc\\\"".into())],
        ),
        (
            "#\tHELP\tm\ttab\n",
            vec![Owned::Help("m".into(), "tab".into())],
        ),
        (
            "# TYPE m counter\n",
            vec![Owned::Type("m".into(), MetricType::Counter)],
        ),
        (
            "# TYPE m untyped\n",
            vec![Owned::Type("m".into(), MetricType::Untyped)],
        ),
        (
            "# TYPE m histogram\n",
            vec![Owned::Type("m".into(), MetricType::Histogram)],
        ),
        ("# a comment\n", vec![Owned::Comment]),
        ("#comment\n", vec![Owned::Comment]),
        ("# HELPX m x\n", vec![Owned::Comment]),
        ("# HELP\n", vec![Owned::Comment]),
        ("# EOF\n", vec![Owned::Comment]),
        (
            "m 1\n# trailing comment",
            vec![series("m", &[], 1.0, None), Owned::Comment],
        ),
        ("#", vec![Owned::Comment]),
        ("m 1", vec![series("m", &[], 1.0, None)]),
        ("m 1 5 ", vec![series("m", &[], 1.0, Some(5))]),
        ("# HELP m x", vec![Owned::Help("m".into(), "x".into())]),
        (
            "# TYPE m gauge",
            vec![Owned::Type("m".into(), MetricType::Gauge)],
        ),
        ("m 1\n\0n 2\n", vec![series("m", &[], 1.0, None)]),
        ("  \0m 1\n", vec![]),
        (
            "m{a=\"x\0y\"} 1\n",
            vec![series("m", &[("a", "x\0y")], 1.0, None)],
        ),
        (
            "# TYPE m counter\nm 1\n# TYPE m counter\n",
            vec![
                Owned::Type("m".into(), MetricType::Counter),
                series("m", &[], 1.0, None),
                Owned::Type("m".into(), MetricType::Counter),
            ],
        ),
    ]
}

#[test]
fn spec_table() {
    for (body, want) in spec_cases() {
        assert_eq!(parse_all(body).as_ref(), Ok(&want), "body {body:?}");
    }
}

fn error_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "  m 1\n",
            "1:1: invalid metric name: white space before the name: \"  m 1\"",
        ),
        (
            "m 1\n\tn 2\n",
            "2:1: invalid metric name: white space before the name: \"\\tn 2\"",
        ),
        (
            "m\n",
            "1:2: expected value after metric, got \"INVALID\": \"\"",
        ),
        (
            "m",
            "1:2: expected value after metric, got \"INVALID\": \"\"",
        ),
        (
            "m{a=\"1\"",
            "1:8: expected label name, got \"INVALID\": \"\"",
        ),
        (
            "m 1\r\n",
            "1:3: strconv.ParseFloat: parsing \"1\\r\": invalid syntax: \"1\\r\"",
        ),
        (
            "m 1 2\r\n",
            "1:6: expected next entry after timestamp, got \"INVALID\": \"\\r\"",
        ),
        (
            "m 1 -2\n",
            "1:5: expected timestamp or new record, got \"INVALID\": \"-2\"",
        ),
        (
            "m 1 2 3\n",
            "1:7: expected next entry after timestamp, got \"TIMESTAMP\": \"3\"",
        ),
        (
            "m 1 1.5\n",
            "1:6: expected next entry after timestamp, got \"INVALID\": \".5\"",
        ),
        (
            "m 0x1p3\n",
            "1:3: unsupported character in float: \"0x1p3\"",
        ),
        ("m 1_0\n", "1:3: unsupported character in float: \"1_0\""),
        (
            "m 1e400\n",
            "1:3: strconv.ParseFloat: parsing \"1e400\": value out of range: \"1e400\"",
        ),
        (
            "m -NaN\n",
            "1:3: strconv.ParseFloat: parsing \"-NaN\": invalid syntax: \"-NaN\"",
        ),
        (
            "m{a=\"1\"}{b=\"2\"} 1\n",
            "1:9: expected value after metric, got \"BRACE_OPEN\": \"{b=\\\"2\\\"} 1\"",
        ),
        (
            "m{,} 1\n",
            "1:3: expected label name, got \"COMMA\": \",} 1\"",
        ),
        (
            "m{a=\"1\",,} 1\n",
            "1:9: expected label name, got \"COMMA\": \",} 1\"",
        ),
        (
            "m{a:b=\"1\"} 1\n",
            "1:4: expected equal, got \"INVALID\": \":b=\\\"1\\\"} 1\"",
        ),
        (
            "m{1a=\"1\"} 1\n",
            "1:3: expected label name, got \"INVALID\": \"1a=\\\"1\\\"} 1\"",
        ),
        (
            "m{a=1} 1\n",
            "1:5: expected label value, got \"INVALID\": \"1} 1\"",
        ),
        (
            "m{a='1'} 1\n",
            "1:5: expected label value, got \"INVALID\": \"'1'} 1\"",
        ),
        (
            "m{a=\"1} 1\n",
            "1:5: expected label value, got \"INVALID\": \"\\\"1} 1\"",
        ),
        (
            "m{a=\"x\\\ny\"} 1\n",
            "1:5: expected label value, got \"INVALID\": \"\\\"x\\\\\"",
        ),
        (
            "m{a=\"1\" 1\n",
            "1:9: expected label name, got \"INVALID\": \"1\"",
        ),
        (
            "{a=\"1\"} 1\n",
            "1:1: \"INVALID\" is not a valid start token: \"{a=\\\"1\\\"} 1\"",
        ),
        (
            "1m 1\n",
            "1:1: \"INVALID\" is not a valid start token: \"1m 1\"",
        ),
        (
            "m 1\n-m 1\n",
            "2:1: \"INVALID\" is not a valid start token: \"-m 1\"",
        ),
        (
            "# TYPE m counters\n",
            "1:10: invalid metric type \"counters\": \"counters\"",
        ),
        ("# TYPE m\n", "1:9: invalid metric type \"\": \"\""),
        (
            "# TYPE m Counter\n",
            "1:10: invalid metric type \"Counter\": \"Counter\"",
        ),
        (
            "# HELP 1m x\n",
            "1:8: expected metric name after HELP, got \"INVALID\": \"1m x\"",
        ),
        (
            "# TYPE \n",
            "1:8: expected metric name after TYPE, got \"INVALID\": \"\"",
        ),
        (
            "m{a=\"\u{fffd}\"} 1\nm{a=\"\\",
            "2:5: expected label value, got \"INVALID\": \"\\\"\\\\\"",
        ),
    ]
}

#[test]
fn error_table() {
    for (body, want) in error_cases() {
        match parse_all(body) {
            Ok(entries) => panic!("{body:?} parsed: {entries:?}"),
            Err(e) => assert_eq!(e.to_string(), want, "body {body:?}"),
        }
    }
}

#[test]
fn invalid_utf8_is_refused_in_label_values_and_help() {
    let e = parse_chunks(b"m{a=\"\xff\"} 1\n", &[]).expect_err("bad utf8");
    assert_eq!(e.reason, "invalid UTF-8 label value");
    assert_eq!((e.line, e.col), (1, 5));
    let e = parse_chunks(b"# HELP m \xff\n", &[]).expect_err("bad utf8");
    assert_eq!(e.reason, "help text is not a valid utf8 string");
    assert!(
        parse_chunks(b"# comment \xff\n", &[]).is_ok(),
        "comments are not checked"
    );
}

/// Every body of both tables, split into two windows at every offset and fed byte by byte,
/// parses exactly as the whole body does (same entries, or the same error).
#[test]
fn every_window_split_agrees_with_the_whole_body() {
    let bodies: Vec<&str> = spec_cases()
        .iter()
        .map(|(b, _)| *b)
        .chain(error_cases().iter().map(|(b, _)| *b))
        .chain(std::iter::once(REALISTIC))
        .collect();
    for body in bodies {
        every_split_agrees(Format::Text, body);
    }
}

const REALISTIC: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 103527.4
node_cpu_seconds_total{cpu="0",mode="iowait"} 12.58
# HELP container_memory_working_set_bytes Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",id="/kubepods/burstable/pod1/abc",image="registry.example/app:1.2",name="abc",namespace="default",pod="app-7d4b9c-x2x"} 2.4576e+07 1700000000123

# HELP http_request_duration_seconds A histogram.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 5
http_request_duration_seconds_bucket{le="+Inf"} 9
http_request_duration_seconds_sum 1.2
http_request_duration_seconds_count 9
"#;

#[test]
fn parse_print_parse_round_trips() {
    let mut bodies: Vec<&str> = spec_cases().iter().map(|(b, _)| *b).collect();
    bodies.push(REALISTIC);
    for body in bodies {
        let first = parse_all(body).expect("valid");
        let printed = print(Format::Text, &first);
        let second = parse_all(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
        assert_eq!(first, second, "{body:?} → {printed:?}");
    }
}

#[test]
fn a_large_body_parses_in_a_window_the_size_of_its_longest_line() {
    let mut body = String::new();
    for i in 0..20_000 {
        body.push_str(&format!(
            "container_cpu_usage_seconds_total{{container=\"c{i}\",namespace=\"ns\",pod=\"p{i}\"}} {i}.5 1700000000000\n"
        ));
    }
    let longest = body.lines().map(str::len).max().unwrap_or(0) + 1;
    let mut window = Window::new(64, 4096);
    let mut parser = TextParser::new();
    let mut src = body.as_bytes();
    let mut n = 0;
    loop {
        let step = parser.next(window.data(), window.eof()).expect("valid");
        match step {
            Step::Entry(_, used) => {
                n += 1;
                window.consume(used);
            }
            Step::End(_) => break,
            Step::NeedMore => {
                let space = window.space().expect("lines fit in 4 KiB");
                let k = space.len().min(src.len());
                space[..k].copy_from_slice(&src[..k]);
                src = &src[k..];
                window.filled(k);
            }
        }
    }
    assert_eq!(n, 20_000);
    assert!(window.capacity() >= longest);
    assert!(
        window.capacity() <= 2 * longest.next_power_of_two(),
        "{}",
        window.capacity()
    );
    assert!(
        body.len() > 100 * window.capacity(),
        "the window is a small part of the body"
    );
}

#[test]
fn a_line_longer_than_the_window_limit_is_refused_not_grown() {
    let mut window = Window::new(16, 64);
    let body = format!("m{{a=\"{}\"}} 1\n", "x".repeat(200));
    let mut src = body.as_bytes();
    let mut parser = TextParser::new();
    loop {
        match parser
            .next(window.data(), window.eof())
            .expect("no parse error")
        {
            Step::NeedMore => match window.space() {
                Ok(space) => {
                    let k = space.len().min(src.len());
                    space[..k].copy_from_slice(&src[..k]);
                    src = &src[k..];
                    window.filled(k);
                }
                Err(max) => {
                    assert_eq!(max, 64);
                    assert_eq!(window.capacity(), 64);
                    return;
                }
            },
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn random_bodies_parse_the_same_in_any_windows() {
    // The shared fragments plus a NUL, which ends a text body.
    let fragments: Vec<&str> = TEXT_FRAGMENTS.iter().copied().chain(["\0"]).collect();
    let (valid, invalid) = random_bodies_agree(Format::Text, &fragments, "", 0x9e37_79b9_7f4a_7c15);
    assert!(
        valid > 200 && invalid > 200,
        "both verdicts occur: {valid} valid, {invalid} invalid"
    );
}

/// Feeds `body` through a 16..64-byte window; returns the series names or the error's line.
fn through_small_window(body: &[u8]) -> Result<Vec<String>, u64> {
    let mut window = Window::new(16, 64);
    let mut src = body;
    let mut parser = TextParser::new();
    let mut names = Vec::new();
    loop {
        match parser.next(window.data(), window.eof()) {
            Err(e) => return Err(e.line),
            Ok(Step::Entry(e, used)) => {
                if let Entry::Series { name, .. } = e {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
                window.consume(used);
            }
            Ok(Step::End(_)) => return Ok(names),
            Ok(Step::NeedMore) => {
                let space = window.space().expect("every line fits in 64 bytes");
                let k = space.len().min(src.len());
                space[..k].copy_from_slice(&src[..k]);
                src = &src[k..];
                window.filled(k);
            }
        }
    }
}

#[test]
fn blank_line_runs_longer_than_the_window_pass_and_keep_line_numbers() {
    let body = format!(
        "{}a 1\n{}# c\n{}b 2\n",
        "\n".repeat(10_000),
        "\n".repeat(777),
        "\n \n".repeat(300)
    );
    assert_eq!(
        through_small_window(body.as_bytes()),
        Ok(vec!["a".to_owned(), "b".to_owned()])
    );
    // The line of an error after the runs counts every blank line.
    let bad = format!("{}a 1\n{}b x\n", "\n".repeat(5_000), "\n".repeat(123));
    assert_eq!(
        through_small_window(bad.as_bytes()),
        Err(5_000 + 1 + 123 + 1)
    );
    // A run that ends the body.
    let tail = format!("a 1\n{}", "\n".repeat(4_000));
    assert_eq!(
        through_small_window(tail.as_bytes()),
        Ok(vec!["a".to_owned()])
    );
}

#[test]
fn the_word_scan_finds_the_first_quote_or_backslash_as_a_byte_scan_does() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..40 {
        for _ in 0..300 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly plain bytes, now and then a quote, a backslash or a high byte.
                    match x % 40 {
                        0 => b'"',
                        1 => b'\\',
                        2 => 0x80 | x.to_le_bytes()[1],
                        3 => b'"' + 1,
                        _ => b'a' + x.to_le_bytes()[2] % 26,
                    }
                })
                .collect();
            let want = b.iter().position(|&c| c == b'"' || c == b'\\');
            assert_eq!(super::quote_or_backslash(&b), want, "{b:?}");
        }
    }
}
