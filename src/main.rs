//! The promlet binary: flags, logging, wiring, exit codes. Logic worth a test lives in the
//! library.
//!
//! Exit codes: 0 success; 1 a config was refused (at start or by `check config`), or `wal
//! inspect` found no readable ring; 2 a usage error (unknown flag, bad flag value).

use std::path::Path;
use std::process::ExitCode;

use log::{error, info, warn};
use promlet::config::{units::format_duration, Config, ConfigError, DEFAULT_CONFIG};
use promlet::flags::{self, Args, CheckWhat, Command, Parsed, WalCommand};
use promlet::wal::Ring;

fn main() -> ExitCode {
    let args = match flags::parse(std::env::args().skip(1)) {
        Parsed::Run(args) => args,
        Parsed::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Parsed::Usage(text) => {
            eprintln!("{}", text.trim_end());
            eprintln!("Run promlet --help for more information.");
            return ExitCode::from(2);
        }
    };
    if args.version {
        println!("promlet {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.print_default_config {
        print!("{DEFAULT_CONFIG}");
        return ExitCode::SUCCESS;
    }
    match &args.command {
        Some(Command::Check(check)) => match &check.what {
            CheckWhat::Config(c) => check_config(&c.files),
        },
        Some(Command::Wal(wal)) => match &wal.command {
            WalCommand::Inspect(i) => wal_inspect(Path::new(&i.dir)),
        },
        None => run(&args),
    }
}

/// `promlet check config FILE…`: one line per file, as promtool prints them.
fn check_config(files: &[String]) -> ExitCode {
    if files.is_empty() {
        eprintln!("check config: no files given");
        return ExitCode::from(2);
    }
    let mut all_valid = true;
    for file in files {
        let result = Config::load(Path::new(file)).and_then(|c| c.check_files().map(|w| (c, w)));
        match result {
            Ok((config, warnings)) => {
                for w in warnings {
                    println!("  WARNING: {w}");
                }
                println!(
                    "SUCCESS: {file} is valid ({} scrape configs, {} remote_write)",
                    config.scrape_configs.len(),
                    config.remote_write.len()
                );
            }
            Err(e) => {
                all_valid = false;
                println!("FAILED: {e}");
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `promlet wal inspect DIR`: the report on stdout, or why the ring cannot be read on stderr
/// and exit 1.
fn wal_inspect(dir: &Path) -> ExitCode {
    match promlet::wal::inspect::inspect(dir) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("promlet: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    match &args.config_file {
        Some(file) => Config::load(Path::new(file)),
        None => Ok(Config::builtin()),
    }
}

fn describe(config: &Config) {
    let source = if config.file.as_os_str().is_empty() {
        "<built-in>".to_owned()
    } else {
        config.file.display().to_string()
    };
    info!(
        "config {source}: {} scrape configs, {} remote_write endpoints, scrape_interval {}",
        config.scrape_configs.len(),
        config.remote_write.len(),
        format_duration(config.global.scrape_interval)
    );
    for sc in &config.scrape_configs {
        info!(
            "job {:?}: every {} (timeout {}), {} static targets, {} file_sd",
            sc.job_name,
            format_duration(sc.scrape_interval),
            format_duration(sc.scrape_timeout),
            sc.static_configs
                .iter()
                .map(|g| g.targets.len())
                .sum::<usize>(),
            sc.file_sd_configs.len()
        );
    }
    for rw in &config.remote_write {
        // The URL may carry userinfo; log scheme and host only.
        info!("remote_write {}://{}", rw.url.scheme, rw.url.host);
    }
    if config.remote_write.is_empty() {
        warn!("no remote_write endpoint: nothing will be sent");
    }
}

/// Runs the agent. Until the scrape loop and sender land (issues 5–6), it loads the config,
/// opens the ring (locking its directory), logs both, and waits: SIGHUP reloads (a bad config
/// is refused and the old one kept), SIGTERM or SIGINT syncs the ring and stops.
fn run(args: &Args) -> ExitCode {
    let level = args.log_level;
    if let Err(e) = simple_logger::SimpleLogger::new().with_level(level).init() {
        eprintln!("cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    info!("promlet {} starting", env!("CARGO_PKG_VERSION"));
    // Handlers first: a signal that arrives while the config loads must not kill us.
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Int,
        async_signal::Signal::Hup,
    ]);
    let mut signals = match signals {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    describe(&config);
    let mut ring = match Ring::open(Path::new(&args.storage_agent_path), args.storage_agent_size) {
        Ok(r) => r,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "ring {} bytes in {:?}: {} bytes held, {} records recovered past the last sync",
        args.storage_agent_size,
        args.storage_agent_path,
        ring.head() - ring.tail(),
        ring.stats().recovered_records
    );
    info!(
        "sync every {}, listening on {} — scraping and remote write are not built yet; \
         waiting for a signal",
        format_duration(args.storage_agent_sync_interval),
        args.web_listen_address
    );
    // Until the senders of issue 6 take the periodic sync over, a thread of its own runs it:
    // msync waits for the disk, which the loop must never do.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let syncing = {
        let (syncer, stop) = (ring.syncer(), std::sync::Arc::clone(&stop));
        let every = args.storage_agent_sync_interval;
        std::thread::Builder::new()
            .name("promlet-sync".into())
            .spawn(move || syncer.run(every, &stop))
    };
    smol::block_on(async {
        use smol::stream::StreamExt;
        while let Some(signal) = signals.next().await {
            match signal {
                Ok(async_signal::Signal::Hup) => match load(args) {
                    Ok(c) => {
                        config = c;
                        info!("config reloaded");
                        describe(&config);
                    }
                    Err(e) => error!("reload refused, keeping the running config: {e}"),
                },
                Ok(other) => {
                    info!("{other:?} received, stopping");
                    break;
                }
                Err(e) => {
                    error!("signal stream failed: {e}");
                    break;
                }
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Ok(t) = syncing {
        t.thread().unpark();
        let _ = t.join();
    }
    if let Err(e) = ring.sync() {
        error!("ring: final sync failed: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
