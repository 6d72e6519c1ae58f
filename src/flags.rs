//! Command-line flags, with Prometheus agent's names so a unit file or DaemonSet can swap
//! binaries.
//!
//! argh refuses dots in flag names, so [`rewrite`] turns a leading `--a.b` into `--a-b` before
//! parsing (both spellings work) and [`dotted`] turns help and error text back into the
//! dotted spelling that Prometheus documents.

use std::time::Duration;

use argh::FromArgs;

use crate::config::units::{parse_duration, parse_ring_size};

/// The flags whose Prometheus spelling has dots, dashed form first.
const DOTTED: &[(&str, &str)] = &[
    (
        "--storage-agent-sync-interval",
        "--storage.agent.sync-interval",
    ),
    ("--storage-agent-path", "--storage.agent.path"),
    (
        "--storage-remote-flush-deadline",
        "--storage.remote.flush-deadline",
    ),
    ("--storage-agent-size", "--storage.agent.size"),
    ("--web-listen-address", "--web.listen-address"),
    ("--config-file", "--config.file"),
    ("--log-level", "--log.level"),
];

/// promlet: scrape local exporters, buffer in a fixed-size ring on disk, remote-write.
#[derive(FromArgs, Debug, PartialEq)]
pub struct Args {
    /// prometheus.yml to load (default: the built-in config, see --print-default-config)
    #[argh(option)]
    pub config_file: Option<String>,

    /// directory of the ring file (default: data-agent/)
    #[argh(option, default = "String::from(\"data-agent/\")")]
    pub storage_agent_path: String,

    /// ring size: 64MiB, 512KiB, 1GB or plain bytes (default: 64MiB)
    #[argh(option, default = "64 << 20", from_str_fn(ring_size))]
    pub storage_agent_size: u64,

    /// longest time appended data may wait for msync: what a power cut can lose (default: 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(duration))]
    pub storage_agent_sync_interval: Duration,

    /// longest time senders flush what the ring holds on shutdown; a failing receiver ends it at once, the rest is sent at the next start (default: 1m)
    #[argh(option, default = "Duration::from_secs(60)", from_str_fn(duration))]
    pub storage_remote_flush_deadline: Duration,

    /// address of promlet's own HTTP server (default: 0.0.0.0:9099)
    #[argh(
        option,
        default = "String::from(\"0.0.0.0:9099\")",
        from_str_fn(listen_address)
    )]
    pub web_listen_address: String,

    /// log level: debug, info, warn or error (default: info)
    #[argh(option, default = "log::LevelFilter::Info", from_str_fn(log_level))]
    pub log_level: log::LevelFilter,

    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// print the built-in configuration and exit
    #[argh(switch)]
    pub print_default_config: bool,

    #[argh(subcommand)]
    /// a subcommand
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    /// `check …`
    Check(Check),
    /// `wal …`
    Wal(Wal),
}

/// check configuration files (like promtool check)
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "check")]
pub struct Check {
    #[argh(subcommand)]
    /// what to check
    pub what: CheckWhat,
}

/// What `check` checks.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum CheckWhat {
    /// `check config FILE…`
    Config(CheckConfig),
}

/// validate prometheus.yml files as `promtool check config --agent` does; exit 0 only if all
/// are valid
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "config")]
pub struct CheckConfig {
    /// config files
    #[argh(positional, greedy)]
    pub files: Vec<String>,
}

/// look into the ring file (the write-ahead log in --storage.agent.path)
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "wal")]
pub struct Wal {
    #[argh(subcommand)]
    /// what to do with the ring
    pub command: WalCommand,
}

/// What `wal` does.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
pub enum WalCommand {
    /// `wal inspect DIR`
    Inspect(Inspect),
}

/// print what the ring in a storage directory holds: header copies, records, samples,
/// damage. Read-only and without the lock, so it works while promlet runs; exit 1 if there is
/// no readable ring
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "inspect")]
pub struct Inspect {
    /// the ring's directory (a --storage.agent.path)
    #[argh(positional)]
    pub dir: String,
}

fn ring_size(text: &str) -> Result<u64, String> {
    let bytes = parse_ring_size(text)?;
    // One header page pair plus room for records; a smaller ring cannot hold a scrape.
    const MIN_RING_BYTES: u64 = 64 << 10;
    if bytes < MIN_RING_BYTES {
        return Err(format!("ring size {text:?} is below the minimum of 64KiB"));
    }
    Ok(bytes)
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

fn listen_address(text: &str) -> Result<String, String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not HOST:PORT"))
    }
}

fn log_level(text: &str) -> Result<log::LevelFilter, String> {
    Ok(match text {
        "debug" => log::LevelFilter::Debug,
        "info" => log::LevelFilter::Info,
        "warn" => log::LevelFilter::Warn,
        "error" => log::LevelFilter::Error,
        _ => return Err(format!("{text:?} is not one of debug, info, warn, error")),
    })
}

/// Rewrites Prometheus' dotted flags for argh: `--config.file=x` becomes `--config-file x`,
/// `--config.file x` becomes `--config-file x`. Anything after a bare `--` is left alone.
pub fn rewrite(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest || !arg.starts_with("--") {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        out.push(format!("--{}", name[2..].replace('.', "-")));
        out.extend(value);
    }
    out
}

/// Turns argh's dashed flag names in help and error text back into Prometheus' dotted ones.
pub fn dotted(text: &str) -> String {
    let mut out = text.to_owned();
    for (dashed, dot) in DOTTED {
        out = out.replace(dashed, dot);
    }
    out
}

/// What parsing the command line decided.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these flags.
    Run(Args),
    /// Print this to stdout and exit 0 (`--help`).
    Help(String),
    /// Print this to stderr and exit 2 (a usage error).
    Usage(String),
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Parsed {
    let args = rewrite(args);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match Args::from_args(&["promlet"], &refs) {
        Ok(a) => Parsed::Run(a),
        Err(exit) => {
            let text = dotted(&exit.output);
            if exit.status.is_ok() {
                Parsed::Help(text)
            } else {
                Parsed::Usage(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Args {
        match parse(args.iter().map(|s| (*s).to_owned())) {
            Parsed::Run(a) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn dotted_and_dashed_spellings_agree() {
        let a = run(&[
            "--config.file=p.yml",
            "--storage.agent.path",
            "d",
            "--log.level=debug",
        ]);
        let b = run(&[
            "--config-file",
            "p.yml",
            "--storage-agent-path=d",
            "--log-level",
            "debug",
        ]);
        assert_eq!(a, b);
        assert_eq!(a.config_file.as_deref(), Some("p.yml"));
        assert_eq!(a.storage_agent_path, "d");
        assert_eq!(a.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn defaults_match_the_readme() {
        let a = run(&[]);
        assert_eq!(a.config_file, None);
        assert_eq!(a.storage_agent_path, "data-agent/");
        assert_eq!(a.storage_agent_size, 64 << 20);
        assert_eq!(a.storage_agent_sync_interval, Duration::from_secs(10));
        assert_eq!(a.storage_remote_flush_deadline, Duration::from_secs(60));
        assert_eq!(a.web_listen_address, "0.0.0.0:9099");
        assert_eq!(a.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(
            run(&["--storage.agent.size=512KiB"]).storage_agent_size,
            512 << 10
        );
        assert_eq!(
            run(&["--storage.agent.size", "1048576"]).storage_agent_size,
            1 << 20
        );
        assert_eq!(
            run(&["--storage.agent.sync-interval=1m30s"]).storage_agent_sync_interval,
            Duration::from_secs(90)
        );
        assert_eq!(
            run(&["--storage.remote.flush-deadline", "5s"]).storage_remote_flush_deadline,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_dotted_flag() {
        for args in [
            &["--storage.agent.size=12XB"][..],
            &["--storage.agent.size=1KiB"],
            &["--log.level=verbose"],
            &["--web.listen-address=nohost"],
            &["--no-such-flag"],
        ] {
            match parse(args.iter().map(|s| (*s).to_owned())) {
                Parsed::Usage(text) => {
                    assert!(!text.contains("--storage-agent"), "{text}");
                    assert!(!text.is_empty());
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn help_shows_dotted_names() {
        let Parsed::Help(text) = parse(["--help".to_owned()]) else {
            panic!("help");
        };
        assert!(text.contains("--config.file"), "{text}");
        assert!(text.contains("--storage.agent.sync-interval"), "{text}");
        assert!(!text.contains("--config-file"), "{text}");
    }

    #[test]
    fn check_config_takes_files() {
        let a = run(&["check", "config", "a.yml", "b.yml"]);
        assert_eq!(
            a.command,
            Some(Command::Check(Check {
                what: CheckWhat::Config(CheckConfig {
                    files: vec!["a.yml".to_owned(), "b.yml".to_owned()]
                })
            }))
        );
    }

    #[test]
    fn wal_inspect_takes_a_dir() {
        let a = run(&["wal", "inspect", "data-agent/"]);
        assert_eq!(
            a.command,
            Some(Command::Wal(Wal {
                command: WalCommand::Inspect(Inspect {
                    dir: "data-agent/".to_owned()
                })
            }))
        );
        // Flags before the subcommand still apply; the dir is required, and only one.
        let a = run(&["--log.level=debug", "wal", "inspect", "d"]);
        assert_eq!(a.log_level, log::LevelFilter::Debug);
        for args in [
            &["wal", "inspect"][..],
            &["wal", "inspect", "a", "b"],
            &["wal"],
        ] {
            match parse(args.iter().map(|s| (*s).to_owned())) {
                Parsed::Usage(text) => assert!(!text.is_empty()),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
