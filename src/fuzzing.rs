//! Checks the fuzz targets (`fuzz/`) run on arbitrary bytes, shared with `tests/fuzz_replay.rs`,
//! which replays every committed crash and seed under stable `cargo test`.
//!
//! Each check must never panic; beyond that each asserts a property: each parser gives the
//! same result however the body is split into windows.

use std::path::Path;

use crate::config::Config;
use crate::discovery::pods::PodListReader;
use crate::labels::{HonorLabels, LabelSet};
use crate::parse::text::TextParser;
use crate::parse::{Entry, Format, ParseError, Parser, Step};
use crate::relabel::{process_set, Scratch};

/// A parse outcome that can be compared: per series its name, label count, value bits and
/// timestamp; or the error.
type Outcome = Result<Vec<(Vec<u8>, usize, u64, Option<i64>)>, ParseError>;

fn parse_split(format: Format, body: &[u8], cut: usize) -> Outcome {
    let mut parser = Parser::new(format);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        let eof = fed == body.len();
        match parser.next(&buf, eof)? {
            Step::Entry(entry, used) => {
                if let Entry::Series {
                    name,
                    labels,
                    value,
                    timestamp_ms,
                    ..
                } = entry
                {
                    out.push((name.to_vec(), labels.len(), value.to_bits(), timestamp_ms));
                }
                buf.drain(..used);
            }
            Step::End(_) => return Ok(out),
            Step::NeedMore => {
                assert!(!eof, "NeedMore at the end of the body");
                let to = if fed < cut { cut } else { body.len() }
                    .max(fed + 1)
                    .min(body.len());
                buf.extend_from_slice(&body[fed..to]);
                fed = to;
            }
        }
    }
}

/// The text parser on arbitrary bytes: the first two bytes pick a split point, the rest is the
/// body; split and whole parses must agree.
pub fn text(data: &[u8]) {
    split_agrees(Format::Text, data);
}

/// The OpenMetrics parser on arbitrary bytes, as [`text`].
pub fn openmetrics(data: &[u8]) {
    split_agrees(Format::OpenMetrics, data);
}

fn split_agrees(format: Format, data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let body = &data[2..];
    let cut = usize::from(u16::from_le_bytes([data[0], data[1]])) % (body.len() + 1);
    let whole = parse_split(format, body, body.len());
    let split = parse_split(format, body, cut);
    assert_eq!(whole, split, "split at {cut} changed the result");
}

/// The config loader on arbitrary text: never panics.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("fuzz.yml"), Path::new("."));
    }
}

/// The kubelet `/pods` reader on arbitrary bytes: the first two bytes pick a cut, the rest
/// is the body. Read whole and fed in two parts, the pods (or the error) must be the same,
/// and their groups must build; never panics.
pub fn pod_list(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let body = &data[2..];
    let cut = usize::from(u16::from_le_bytes([data[0], data[1]])) % (body.len() + 1);
    let whole = crate::discovery::pods::read(body);
    let mut reader = PodListReader::new();
    let mut window: Vec<u8> = body[..cut].to_vec();
    let mut rest = &body[cut..];
    let split = loop {
        let eof = rest.is_empty();
        match reader.feed(&window, eof) {
            Err(e) => break Err(e),
            Ok(_) if reader.is_done() => break Ok(reader.into_pods()),
            Ok(used) => {
                assert!(!eof, "the reader stopped short of the end");
                window.drain(..used);
                window.extend_from_slice(rest);
                rest = &[];
            }
        }
    };
    assert_eq!(whole, split, "split at {cut} changed the result");
    if let Ok(pods) = whole {
        let _ = crate::discovery::pods::groups(&pods);
    }
}

/// Relabeling on arbitrary rules and series: the input is `rules YAML`, a `\n---\n` line, then
/// an exposition body. Rules that load are applied to every series; never panics.
pub fn relabel(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((rules, body)) = text.split_once("\n---\n") else {
        return;
    };
    let indented: String = rules.lines().map(|l| format!("      {l}\n")).collect();
    let config_text =
        format!("scrape_configs:\n  - job_name: f\n    metric_relabel_configs:\n{indented}");
    let Ok(config) = Config::parse(&config_text, Path::new("fuzz.yml"), Path::new(".")) else {
        return;
    };
    let Some(sc) = config.scrape_configs.first() else {
        return;
    };
    let target = [("job".to_owned(), "f".to_owned())];
    let mut parser = TextParser::new();
    let mut set = LabelSet::new();
    let mut scratch = Scratch::default();
    let body = body.as_bytes();
    let mut used_total = 0;
    while let Ok(step) = parser.next(&body[used_total..], true) {
        match step {
            Step::Entry(entry, used) => {
                if let Entry::Series {
                    data, name, labels, ..
                } = entry
                {
                    set.fill_series(data, name, labels);
                    set.merge_target(&target, HonorLabels::No);
                    let _ = process_set(&mut set, &sc.metric_relabel_configs, &mut scratch);
                    let _ = set.hash();
                }
                used_total += used;
            }
            Step::End(_) | Step::NeedMore => return,
        }
    }
}
