//! Replays every committed fuzz input (`fuzz/regressions/<target>/`: crashers found by
//! `cargo +nightly fuzz run <target>` and a sample of its corpus) through the same checks the
//! fuzz targets run (`promlet::fuzzing`), under stable `cargo test`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read input");
        check(&data);
        n += 1;
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn text_parser_inputs() {
    replay("text_parser", promlet::fuzzing::text);
}

#[test]
fn openmetrics_parser_inputs() {
    replay("openmetrics_parser", promlet::fuzzing::openmetrics);
}

#[test]
fn config_inputs() {
    replay("config", promlet::fuzzing::config);
}

#[test]
fn relabel_inputs() {
    replay("relabel", promlet::fuzzing::relabel);
}

#[test]
fn pod_list_inputs() {
    replay("pod_list", promlet::fuzzing::pod_list);
}
