//! One target's scraper driven a scrape at a time, with its ring and a consumer reading what
//! each scrape appended, as a sender would (the scrape tests' fixture).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use promlet::config::Config;
use promlet::scrape::clock::{block_on, Clock};
use promlet::scrape::{ScrapeStats, Scraper};
use promlet::wal::{Consumer, Ring};

use super::peers::TempDir;

/// A scraper for the one target of a config, its ring and the ring's reader.
pub struct Harness {
    /// Holds the ring file.
    pub dir: TempDir,
    /// The ring the scrapes append to.
    pub ring: RefCell<Ring>,
    /// Reads what they appended.
    pub consumer: Consumer,
    /// The target's state.
    pub scraper: Scraper,
    /// The loop's counters.
    pub stats: Rc<ScrapeStats>,
    /// The loop's clock (timeouts).
    pub clock: Rc<Clock>,
    /// The last scrape's timestamp, ms.
    pub ts: i64,
}

impl Harness {
    /// A scraper for the first target of the first job of `config` (prometheus.yml text),
    /// with a ring of `ring_bytes`.
    pub fn from_config(name: &str, config: &str, ring_bytes: u64) -> Harness {
        let dir = TempDir::new(&format!("scrape-{name}"));
        let config = Config::parse(config, Path::new("t.yml"), Path::new(".")).expect("config");
        let sc = config.scrape_configs[0].clone();
        let (targets, errors) = promlet::targets::build(&sc.static_configs, &sc);
        assert!(errors.is_empty(), "{errors:?}");
        let mut ring = Ring::open(&dir.0, ring_bytes).expect("ring");
        let consumer = ring.consumer(7).expect("consumer");
        let stats = Rc::new(ScrapeStats::default());
        let scraper = Scraper::new(
            targets.into_iter().next().expect("one target"),
            Rc::new(sc),
            Rc::clone(&stats),
        );
        Harness {
            dir,
            ring: RefCell::new(ring),
            consumer,
            scraper,
            stats,
            clock: Clock::new(),
            ts: 1_700_000_000_000,
        }
    }

    /// Runs one scrape, a second after the last.
    pub fn run(&mut self) {
        self.ts += 1000;
        block_on(
            &self.clock,
            self.scraper.scrape(&self.ring, &self.clock, self.ts),
        );
    }
}
