//! promlet: a tiny Prometheus agent for ARM edge nodes.
//!
//! It scrapes local exporters, keeps what it scraped in a fixed-size ring on disk, and ships it
//! with Prometheus remote write, reading the same `prometheus.yml` as `prometheus --agent`.
//!
//! # Threads
//! - **main**: one smol executor: scrape tasks, the self HTTP server, signals. Nothing on it
//!   blocks.
//! - **async-io**: the reactor helper thread async-io starts itself; mostly parked.
//! - **one sender per `remote_write`**: a plain thread with a blocking HTTP client.
//! - **promlet-resolve**: looks host names up with the system's (blocking) resolver for the
//!   loop ([`resolver`]); started when the first name needs it.
//!
//! # Data flow
//! scrape (HTTP) → parse → relabel → staleness and synthetic series → ring record → sender →
//! remote write. See `../shared/DESIGN.md` for the whole picture.
//!
//! # Memory
//! fixed + per-target state (about 8 bytes per series for the stale set, plus reused buffers) +
//! nothing per sample. Allocation happens at start and on reload only.
//!
//! # Modules
//! Config ([`config`], [`flags`]), targets ([`targets`]), the scrape loop ([`scrape`]: HTTP,
//! staleness, report series, the loop's [`scrape::clock`]), host names ([`resolver`]), parsing ([`parse`]), label sets
//! and relabeling ([`labels`], [`relabel`], [`limits`]), the ring ([`wal`]: producer,
//! per-endpoint consumers, syncer, inspector), remote write ([`send`]: encoding, the sender
//! thread, backoff), credentials ([`auth`]) and TLS material ([`tls`]), the self server and self-metrics ([`web`],
//! [`selfmetrics`]), and the running agent: start, reload, stop ([`lifecycle`]).

#![deny(unsafe_code)]

/// The `User-Agent` of scrapes and remote writes.
pub const USER_AGENT: &str = concat!("promlet/", env!("CARGO_PKG_VERSION"));

pub mod auth;
pub mod config;
pub mod discovery;
pub mod flags;
#[doc(hidden)]
pub mod fuzzing;
pub mod labels;
pub mod lifecycle;
pub mod limits;
pub mod metadata;
pub mod parse;
pub mod relabel;
pub mod resolver;
pub mod scrape;
pub mod selfmetrics;
pub mod send;
pub mod targets;
pub mod tls;
pub mod wal;
pub mod web;
