//! Spec and error tables for OpenMetrics, every window split against the whole body, print →
//! parse round trips and random bodies.

use super::*;
use crate::parse::float::NORMAL_NAN_BITS;
use crate::parse::testkit::{
    every_split_agrees, print, random_bodies_agree, series, Owned, OM_FRAGMENTS,
};
use crate::parse::Format;

fn parse_chunks(body: &[u8], cuts: &[usize]) -> Result<Vec<Owned>, ParseError> {
    crate::parse::testkit::parse_chunks(Format::OpenMetrics, body, cuts)
}

fn parse_all(body: &str) -> Result<Vec<Owned>, ParseError> {
    parse_chunks(body.as_bytes(), &[])
}

fn spec_cases() -> Vec<(&'static str, Vec<Owned>)> {
    let a1 = || series("a", &[], 1.0, None);
    vec![
        ("# EOF\n", vec![]),
        ("# EOF", vec![]),
        ("a 1\n# EOF\n", vec![a1()]),
        ("a 1\n# EOF", vec![a1()]),
        (
            "a{x=\"1\",y=\"\"} 2\n# EOF\n",
            vec![series("a", &[("x", "1"), ("y", "")], 2.0, None)],
        ),
        ("a{} 1\n# EOF\n", vec![a1()]),
        (
            "a{x=\"q\\\"b\\\\s\\nn\",y=\"\\t\"} 1\n# EOF\n",
            vec![series("a", &[("x", "q\"b\\s\nn"), ("y", "\\t")], 1.0, None)],
        ),
        (
            "a:b 1\n_c 2\n# EOF\n",
            vec![series("a:b", &[], 1.0, None), series("_c", &[], 2.0, None)],
        ),
        ("a 1 1.5\n# EOF\n", vec![series("a", &[], 1.0, Some(1500))]),
        ("a 1 -1.5\n# EOF\n", vec![series("a", &[], 1.0, Some(-1500))]),
        (
            "a 1 1.6e9\n# EOF\n",
            vec![series("a", &[], 1.0, Some(1_600_000_000_000))],
        ),
        // int64(1.001 * 1000) truncates 1000.9999999999999.
        ("a 1 1.001\n# EOF\n", vec![series("a", &[], 1.0, Some(1000))]),
        (
            "a NaN\n# EOF\n",
            vec![Owned::Series {
                name: "a".into(),
                labels: vec![],
                value_bits: NORMAL_NAN_BITS,
                ts: None,
            }],
        ),
        ("a -Inf\n# EOF\n", vec![series("a", &[], f64::NEG_INFINITY, None)]),
        (
            "# TYPE a counter\n# HELP a Some \\\"help\\\" \\\\ \\n.\na_total 1\na_created 1.6e9\n# EOF\n",
            vec![
                Owned::Type("a".into(), MetricType::Counter),
                Owned::Help("a".into(), "Some \"help\" \\ \n.".into()),
                series("a_total", &[], 1.0, None),
                series("a_created", &[], 1.6e9, None),
            ],
        ),
        (
            "# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n# EOF\n",
            vec![
                Owned::Type("a_seconds".into(), MetricType::Gauge),
                Owned::Unit("a_seconds".into(), "seconds".into()),
                series("a_seconds", &[], 1.0, None),
            ],
        ),
        (
            "# UNIT a \n# HELP a \n# EOF\n",
            vec![
                Owned::Unit("a".into(), String::new()),
                Owned::Help("a".into(), String::new()),
            ],
        ),
        (
            "# HELP a  two\n# EOF\n",
            vec![Owned::Help("a".into(), " two".into())],
        ),
        (
            "# TYPE a gaugehistogram\n# TYPE b info\n# TYPE c stateset\n# TYPE d unknown\n\
             # TYPE e histogram\n# TYPE f summary\n# EOF\n",
            vec![
                Owned::Type("a".into(), MetricType::GaugeHistogram),
                Owned::Type("b".into(), MetricType::Info),
                Owned::Type("c".into(), MetricType::Stateset),
                Owned::Type("d".into(), MetricType::Unknown),
                Owned::Type("e".into(), MetricType::Histogram),
                Owned::Type("f".into(), MetricType::Summary),
            ],
        ),
        // Exemplars are checked and skipped; the sample stays.
        (
            "a_total 1 # {trace_id=\"abc\",s=\"x\"} 0.5 1.6e9\nh_bucket{le=\"1\"} 2 # {} 1\n# EOF\n",
            vec![
                series("a_total", &[], 1.0, None),
                series("h_bucket", &[("le", "1")], 2.0, None),
            ],
        ),
        (
            "a_total 1 1.5 # {t=\"x\"} 1\n# EOF\n",
            vec![series("a_total", &[], 1.0, Some(1500))],
        ),
        // NULs: skipped after a metadata line's newline (the last one then counts as the
        // text's last byte, so the newline stays in the text), after `# EOF`, after a label
        // value (its closing quote then stays in the value) and inside the comment keyword.
        (
            "# HELP a x\n\0a 1\n# EOF\n",
            vec![Owned::Help("a".into(), "x\n".into()), series("a", &[], 1.0, None)],
        ),
        ("a 1\n# EOF\n\0\0", vec![a1()]),
        (
            "a{x=\"v\"\0} 1\n# EOF\n",
            vec![series("a", &[("x", "v\"")], 1.0, None)],
        ),
        (
            "# HE\0LP a x\n# EOF\n",
            vec![Owned::Help("a".into(), "x".into())],
        ),
        (
            "a{x=\"p\0q\"} 1\n# EOF\n",
            vec![series("a", &[("x", "p\0q")], 1.0, None)],
        ),
    ]
}

#[test]
fn spec_table() {
    for (body, want) in spec_cases() {
        match parse_all(body) {
            Ok(got) => assert_eq!(got, want, "body {body:?}"),
            Err(e) => panic!("{body:?}: {e}"),
        }
    }
}

fn error_cases() -> Vec<(&'static str, &'static str)> {
    vec![
        ("", "1:1: data does not end with # EOF: \"\""),
        ("a 1\n", "2:1: data does not end with # EOF: \"\""),
        ("a 1", "1:4: data does not end with # EOF: \"\""),
        (
            "a 1\n\n# EOF\n",
            "2:1: \"INVALID\" \"\\n\" is not a valid start token: \"\"",
        ),
        (
            "# hello\n# EOF\n",
            "1:1: \"INVALID\" \"h\" is not a valid start token: \"# hello\"",
        ),
        (
            "#hello\n# EOF\n",
            "1:1: \"INVALID\" \"h\" is not a valid start token: \"#hello\"",
        ),
        (
            " a 1\n# EOF\n",
            "1:1: \"INVALID\" \" \" is not a valid start token: \" a 1\"",
        ),
        (
            "a  1\n# EOF\n",
            "1:2: expected value after metric, got \"INVALID\": \"  1\"",
        ),
        (
            "a\t1\n# EOF\n",
            "1:2: expected value after metric, got \"INVALID\": \"\\t1\"",
        ),
        (
            "a 1 \n# EOF\n",
            "1:4: expected timestamp or # symbol, got \"INVALID\": \" \"",
        ),
        (
            "a{x=\"1\", y=\"2\"} 1\n# EOF\n",
            "1:9: expected label name, got \"INVALID\": \" y=\\\"2\\\"} 1\"",
        ),
        (
            "a{x=\"1\",} 1\n# EOF\n",
            "1:9: expected label name, got \"BRACE_CLOSE\": \"} 1\"",
        ),
        (
            "a{x=\"1\"y=\"2\"} 1\n# EOF\n",
            "1:8: expected comma, got \"LNAME\": \"y=\\\"2\\\"} 1\"",
        ),
        (
            "a{,x=\"1\"} 1\n# EOF\n",
            "1:3: expected label name or left brace, got \"COMMA\": \",x=\\\"1\\\"} 1\"",
        ),
        (
            "a 1\r\n# EOF\n",
            "1:3: strconv.ParseFloat: parsing \"1\\r\": invalid syntax: \"1\\r\"",
        ),
        (
            "# TYPE a untyped\n# EOF\n",
            "1:10: invalid metric type \"untyped\": \"untyped\"",
        ),
        (
            "# TYPE a counter \n# EOF\n",
            "1:10: invalid metric type \"counter \": \"counter \"",
        ),
        (
            "# TYPE a\n# EOF\n",
            "1:9: expected text in HELP, got \"INVALID\": \"\"",
        ),
        (
            "# HELP a\tx\n# EOF\n",
            "1:9: expected text in HELP, got \"INVALID\": \"\\tx\"",
        ),
        (
            "# HELP 1a x\n# EOF\n",
            "1:8: expected metric name after HELP, got \"INVALID\": \"1a x\"",
        ),
        (
            "# UNIT a_seconds bytes\n# EOF\n",
            "1:18: unit not a suffix of metric \"a_seconds\": \"bytes\"",
        ),
        (
            "# UNIT seconds seconds\n# EOF\n",
            "1:16: unit not a suffix of metric \"seconds\": \"seconds\"",
        ),
        (
            "# UNIT aseconds seconds\n# EOF\n",
            "1:17: unit not a suffix of metric \"aseconds\": \"seconds\"",
        ),
        (
            "a 1 # {t=\"x\"} 1\n# EOF\n",
            "1:4: metric name a does not support exemplars: \" # {t=\\\"x\\\"} 1\"",
        ),
        (
            "a_total 1 # {t=\"x\"}\n# EOF\n",
            "1:20: expected value after exemplar labels, got \"INVALID\": \"\"",
        ),
        (
            "a_total 1 # {t=\"x\"} 1 NaN\n# EOF\n",
            "1:23: invalid exemplar timestamp: \"NaN\"",
        ),
        (
            "a_total 1 # {t=\"x\"} 1 2 3\n# EOF\n",
            "1:24: expected next entry after exemplar timestamp, got \"TIMESTAMP\": \" 3\"",
        ),
        ("a 1 NaN\n# EOF\n", "1:5: invalid timestamp: \"NaN\""),
        (
            "a 1 1_0\n# EOF\n",
            "1:5: unsupported character in float: \"1_0\"",
        ),
        (
            "a 1 2 3\n# EOF\n",
            "1:6: expected next entry after timestamp, got \"TIMESTAMP\": \" 3\"",
        ),
        (
            "a 1\n# EOF\nb 2\n",
            "3:1: unexpected data after # EOF: \"b 2\"",
        ),
        ("a 1\n# EOF\n\n", "3:1: unexpected data after # EOF: \"\""),
        ("a 1\n# EOFx\n", "2:6: unexpected data after # EOF: \"x\""),
        (
            "#  HELP a x\n# EOF\n",
            "1:1: \"INVALID\" \" \" is not a valid start token: \"#  HELP a x\"",
        ),
        (
            "a{x=\"1\"}\n# EOF\n",
            "1:9: expected value after metric, got \"INVALID\": \"\"",
        ),
        (
            "a{x=\"a\nb\"} 1\n# EOF\n",
            "1:5: expected label value, got \"INVALID\": \"\\\"a\"",
        ),
        (
            "{x=\"1\"} 1\n# EOF\n",
            "1:1: \"INVALID\" \"{\" is not a valid start token: \"{x=\\\"1\\\"} 1\"",
        ),
        (
            "# TYPE a gauge\n\0a 1\n# EOF\n",
            "1:10: invalid metric type \"gauge\\n\": \"gauge\"",
        ),
    ]
}

#[test]
fn error_table() {
    let mut wrong = Vec::new();
    for (body, want) in error_cases() {
        match parse_all(body) {
            Ok(entries) => wrong.push(format!("{body:?} parsed: {entries:?}")),
            Err(e) if e.to_string() != want => {
                wrong.push(format!(
                    "{body:?}\n  got  {:?}\n  want {want:?}",
                    e.to_string()
                ));
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn invalid_utf8_is_refused_in_label_values_help_and_exemplars() {
    let e = parse_chunks(b"a{x=\"\xff\"} 1\n# EOF\n", &[]).expect_err("bad utf8");
    assert_eq!(e.reason, "invalid UTF-8 label value");
    let e = parse_chunks(b"# HELP a \xff\n# EOF\n", &[]).expect_err("bad utf8");
    assert_eq!(e.reason, "help text is not a valid utf8 string");
    let e = parse_chunks(b"a_total 1 # {t=\"\xff\"} 1\n# EOF\n", &[]).expect_err("bad utf8");
    assert_eq!(e.reason, "invalid UTF-8 label value");
    assert!(
        parse_chunks(b"# UNIT a_\xff \xff\n# EOF\n", &[]).is_err(),
        "a name is ASCII"
    );
}

const REALISTIC: &str = "# TYPE http_requests counter\n\
# HELP http_requests Requests served.\n\
http_requests_total{code=\"200\",path=\"/api\"} 1027 # {trace_id=\"4bf92f3577b34da6\"} 1 1700000000.123\n\
http_requests_created{code=\"200\",path=\"/api\"} 1.7e9\n\
# TYPE latency_seconds histogram\n\
# UNIT latency_seconds seconds\n\
latency_seconds_bucket{le=\"0.1\"} 5\n\
latency_seconds_bucket{le=\"+Inf\"} 9 # {trace_id=\"a\"} 0.7\n\
latency_seconds_sum 1.2\n\
latency_seconds_count 9\n\
# TYPE build info\n\
build_info{version=\"1.2.3\",revision=\"abc\"} 1\n\
# TYPE feature stateset\n\
feature{feature=\"a\"} 1\n\
feature{feature=\"b\"} 0\n\
# EOF\n";

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
        every_split_agrees(Format::OpenMetrics, body);
    }
}

#[test]
fn parse_print_parse_round_trips() {
    let mut bodies: Vec<&str> = spec_cases()
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| !b.contains('\0'))
        .collect();
    bodies.push(REALISTIC);
    for body in bodies {
        let first = parse_all(body).expect("valid");
        let printed = print(Format::OpenMetrics, &first);
        let second = parse_all(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
        assert_eq!(first, second, "{body:?} → {printed:?}");
    }
}

#[test]
fn random_bodies_parse_the_same_in_any_windows() {
    // The shared fragments plus a NUL, skipped in places in OpenMetrics.
    let fragments: Vec<&str> = OM_FRAGMENTS.iter().copied().chain(["\0"]).collect();
    let (valid, invalid) = random_bodies_agree(
        Format::OpenMetrics,
        &fragments,
        "# EOF\n",
        0x2545_f491_4f6c_dd1d,
    );
    assert!(
        valid > 200 && invalid > 200,
        "both verdicts occur: {valid} valid, {invalid} invalid"
    );
}
