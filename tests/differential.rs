//! promlet's verdict on every config of the corpus equals `promtool check config --agent`'s
//! (Debian's Prometheus 2.42, installed by ./test.sh), run live; the deliberate deviations in
//! `deviations/DEVIATIONS` hold in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs")
}

fn promtool() -> String {
    let found = Command::new("promtool").arg("--version").output();
    match found {
        Ok(out) if out.status.success() => "promtool".to_owned(),
        _ => panic!(
            "promtool not found: the differential test needs Debian's `prometheus` package \
             (./test.sh installs it); it never skips"
        ),
    }
}

/// Runs `program args… file` in `dir`; true if it exited 0.
fn valid(program: &str, args: &[&str], dir: &Path, file: &str) -> bool {
    let out = Command::new(program)
        .args(args)
        .arg(file)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    out.status.success()
}

fn yml_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

fn verdict(v: bool) -> &'static str {
    if v {
        "valid"
    } else {
        "invalid"
    }
}

#[test]
fn promlet_and_promtool_agree_on_every_corpus_config() {
    let promtool = promtool();
    let promlet = env!("CARGO_BIN_EXE_promlet");
    let dir = corpus();
    let files = yml_files(&dir);
    assert!(
        files.len() >= 40,
        "the corpus must hold at least 40 configs, has {}",
        files.len()
    );
    let recorded = std::fs::read_to_string(dir.join("VERDICTS")).expect("VERDICTS");
    let mut mismatches = Vec::new();
    let (mut n_valid, mut n_invalid) = (0, 0);
    for file in &files {
        let theirs = valid(&promtool, &["check", "config", "--agent"], &dir, file);
        let ours = valid(promlet, &["check", "config"], &dir, file);
        if theirs {
            n_valid += 1;
        } else {
            n_invalid += 1;
        }
        if theirs != ours {
            mismatches.push(format!(
                "{file}: promtool {}, promlet {}",
                verdict(theirs),
                verdict(ours)
            ));
        }
        let line = format!("{file} {}", verdict(theirs));
        if !recorded.lines().any(|l| l == line) {
            mismatches.push(format!("{file}: VERDICTS does not say `{line}`"));
        }
    }
    eprintln!(
        "differential: {} configs ({n_valid} valid, {n_invalid} invalid per promtool), {} disagreements",
        files.len(),
        mismatches.len()
    );
    assert!(
        n_valid >= 10 && n_invalid >= 10,
        "the corpus needs both sides"
    );
    assert!(
        mismatches.is_empty(),
        "verdicts differ:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn deliberate_deviations_hold_both_ways() {
    let promtool = promtool();
    let promlet = env!("CARGO_BIN_EXE_promlet");
    let dir = corpus().join("deviations");
    let list = std::fs::read_to_string(dir.join("DEVIATIONS")).expect("DEVIATIONS");
    let mut listed = Vec::new();
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut words = line.split_whitespace();
        let (file, theirs_want, ours_want) = (
            words.next().expect("file"),
            words.next().expect("promtool verdict"),
            words.next().expect("promlet verdict"),
        );
        assert!(
            words.next().is_some(),
            "{file}: DEVIATIONS must give a reason"
        );
        assert_ne!(theirs_want, ours_want, "{file}: a deviation must differ");
        let theirs = verdict(valid(
            &promtool,
            &["check", "config", "--agent"],
            &dir,
            file,
        ));
        let ours = verdict(valid(promlet, &["check", "config"], &dir, file));
        assert_eq!((theirs, ours), (theirs_want, ours_want), "{file}");
        listed.push(file.to_owned());
    }
    listed.sort();
    assert_eq!(
        listed,
        yml_files(&dir),
        "every deviation file is listed, and only those"
    );
}
