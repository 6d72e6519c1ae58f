//! The promlet binary: flags, logging, wiring, exit codes. Logic worth a test lives in the
//! library.
//!
//! Exit codes: 0 success; 1 a config was refused (at start or by `check config`), or `wal
//! inspect` found no readable ring; 2 a usage error (unknown flag, bad flag value).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use promlet::config::{units::format_duration, Config, ConfigError, DEFAULT_CONFIG};
use promlet::flags::{self, Args, CheckWhat, Command, Parsed, WalCommand};
use promlet::lifecycle::Agent;
use promlet::wal::Ring;
use promlet::web;
use std::rc::Rc;

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

/// Reloads start at most this often; requests that come sooner wait and are served by one
/// reload. A reload parses the file and reconciles every target (milliseconds to a second with
/// Kubernetes discovery's lists), and a SIGHUP or `POST /-/reload` costs the caller nothing, so
/// a loop or a misbehaving sidecar could otherwise keep the agent reloading and logging
/// flat out. Config reloaders (prometheus-config-reloader, configmap-reload) poll every few
/// seconds or more, so an honest caller never waits; the first request after a quiet second is
/// served at once.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Logs what `config` runs: a line for the file, then one per job and endpoint at `detail`
/// (info at start, debug on reload, where one summary line is logged at info).
fn describe(config: &Config, detail: log::Level) {
    let source = if config.file.as_os_str().is_empty() {
        "<built-in>".to_owned()
    } else {
        config.file.display().to_string()
    };
    log::log!(
        detail,
        "config {source}: {} scrape configs, {} remote_write endpoints, scrape_interval {}",
        config.scrape_configs.len(),
        config.remote_write.len(),
        format_duration(config.global.scrape_interval)
    );
    for sc in &config.scrape_configs {
        log::log!(
            detail,
            "job {:?}: every {} (timeout {}), {} static targets, {} file_sd, {} kubelet_sd, {} kubernetes_sd",
            sc.job_name,
            format_duration(sc.scrape_interval),
            format_duration(sc.scrape_timeout),
            sc.static_configs
                .iter()
                .map(|g| g.targets.len())
                .sum::<usize>(),
            sc.file_sd_configs.len(),
            sc.kubelet_sd_configs.len(),
            sc.kubernetes_sd_configs.len()
        );
    }
    for rw in &config.remote_write {
        // The URL may carry userinfo; log scheme and host only.
        log::log!(detail, "remote_write {}://{}", rw.url.scheme, rw.url.host);
    }
}

/// Runs the agent: the loop (scrape tasks, the self HTTP server, signals), one sender thread
/// per `remote_write`. SIGHUP and `POST /-/reload` reload, coalesced and at most once per
/// [`RELOAD_INTERVAL`] (a bad config is refused and the old one kept); SIGTERM or SIGINT
/// stop: scraping ends, senders flush up to `--storage.remote.flush-deadline`, the ring is
/// synced.
fn run(args: &Args) -> ExitCode {
    let level = args.log_level;
    // ureq's debug lines are the wire (connections, pooled sockets, redacted request heads):
    // trace in promlet's contract, which --log.level does not offer. Its warnings stay.
    let wire = level.min(log::LevelFilter::Info);
    let logger = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_module_level("ureq", wire)
        .with_module_level("ureq_proto", wire);
    if let Err(e) = logger.init() {
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
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    describe(&config, log::Level::Info);
    if config.remote_write.is_empty() {
        warn!("no remote_write endpoint: nothing will be sent");
    }
    let ring = match Ring::open(Path::new(&args.storage_agent_path), args.storage_agent_size) {
        Ok(r) => r,
        Err(e) => {
            error!("refusing to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        "ring {} bytes in {:?}: {} bytes held, {} records recovered past the last sync; sync every {}",
        args.storage_agent_size,
        args.storage_agent_path,
        ring.head() - ring.tail(),
        ring.stats().recovered_records,
        format_duration(args.storage_agent_sync_interval),
    );
    let listener = match std::net::TcpListener::bind(&args.web_listen_address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(smol::net::TcpListener::try_from)
    {
        Ok(l) => l,
        Err(e) => {
            error!(
                "refusing to start: cannot listen on {}: {e}",
                args.web_listen_address
            );
            return ExitCode::FAILURE;
        }
    };
    info!("listening on {}", args.web_listen_address);
    let ex = Rc::new(smol::LocalExecutor::new());
    let mut agent = Agent::start(
        config,
        ring,
        Rc::clone(&ex),
        args.storage_agent_sync_interval,
    );
    let (reload_tx, reload_rx) =
        smol::channel::bounded::<smol::channel::Sender<Result<(), String>>>(1);
    let web_stats = Rc::new(web::WebStats::default());
    let render_agent = agent.metrics_renderer();
    let render_stats = Rc::clone(&web_stats);
    let web = Rc::new(web::Web {
        metrics: Box::new(move |out| {
            render_agent(out);
            render_stats.render(out);
        }),
        // The ring is open and the config loaded: ready.
        ready: Rc::new(std::cell::Cell::new(true)),
        reload: reload_tx,
        stats: web_stats,
    });
    let server = ex.spawn({
        let serving = web::serve(listener, Rc::clone(&web), Rc::clone(&ex));
        async move {
            let e = serving.await;
            error!("the web server stopped: {e}");
        }
    });
    let discovered = agent.discovery_changes();
    smol::block_on(ex.run(async {
        use smol::stream::StreamExt;
        enum Event {
            Signal(Option<std::io::Result<async_signal::Signal>>),
            Reload(Option<smol::channel::Sender<Result<(), String>>>),
            Discovered,
            ReloadDue,
        }
        // Reload requests are coalesced: one that comes while a reload is pending joins it;
        // one that comes while a reload runs (the loop is in `reload`, so it waits in its
        // channel) makes one more reload pending. A pending reload starts RELOAD_INTERVAL
        // after the last one started, at once if that has passed. So every request is served
        // by a reload that starts after it, and a storm runs one reload a second.
        let mut reload_due = smol::Timer::never();
        let mut pending = false;
        let mut last_start: Option<Instant> = None;
        // The `POST /-/reload` callers the pending reload answers: one per waiting
        // connection, so at most the web server's connection cap.
        let mut callers: Vec<smol::channel::Sender<Result<(), String>>> = Vec::new();
        loop {
            // The due reload first: a stream of signals must not hold it back.
            let event = smol::future::or(
                async {
                    (&mut reload_due).await;
                    Event::ReloadDue
                },
                smol::future::or(
                    smol::future::or(async { Event::Signal(signals.next().await) }, async {
                        Event::Reload(reload_rx.recv().await.ok())
                    }),
                    async {
                        // The agent holds a sender: this never closes while it runs.
                        let _ = discovered.recv().await;
                        Event::Discovered
                    },
                ),
            )
            .await;
            let mut requested = false;
            match event {
                Event::Discovered => agent.rediscover().await,
                Event::Signal(Some(Ok(async_signal::Signal::Hup))) => requested = true,
                Event::Reload(Some(reply)) => {
                    callers.push(reply);
                    requested = true;
                }
                Event::Reload(None) => {}
                Event::ReloadDue => {
                    reload_due = smol::Timer::never();
                    pending = false;
                    last_start = Some(Instant::now());
                    let result = reload(args, &mut agent).await;
                    for caller in callers.drain(..) {
                        // Each caller's channel holds one answer and waits for it.
                        let _ = caller.try_send(result.clone());
                    }
                }
                Event::Signal(Some(Ok(other))) => {
                    info!("{other:?} received, stopping");
                    break;
                }
                Event::Signal(Some(Err(e))) => {
                    error!("signal stream failed: {e}");
                    break;
                }
                Event::Signal(None) => break,
            }
            if requested && !pending {
                pending = true;
                let now = Instant::now();
                let at = last_start.map_or(now, |t| (t + RELOAD_INTERVAL).max(now));
                reload_due.set_at(at);
            }
        }
    }));
    drop(server);
    web.ready.set(false);
    match agent.stop(args.storage_remote_flush_deadline) {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("ring: final sync failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config again and applies it, or keeps the running one. Logs one line either
/// way: `config reloaded (N targets, M endpoints)` at info (the details at debug), or why
/// the config was refused at error.
async fn reload(args: &Args, agent: &mut Agent) -> Result<(), String> {
    match load(args) {
        Ok(c) => {
            agent.apply(c).await;
            let targets: usize = agent.shared.discovered.borrow().iter().map(|j| j.1).sum();
            info!(
                "config reloaded ({targets} targets, {} endpoints)",
                agent.config.remote_write.len()
            );
            describe(&agent.config, log::Level::Debug);
            Ok(())
        }
        Err(e) => {
            error!("reload refused, keeping the running config: {e}");
            agent.shared.reload_ok.set(false);
            agent
                .shared
                .reload_failures
                .set(agent.shared.reload_failures.get() + 1);
            Err(e.to_string())
        }
    }
}
