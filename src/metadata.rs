//! HELP/TYPE/UNIT metadata, as Prometheus 2.42 sends it with remote write
//! (`metadata_config`): each scrape's `# HELP`, `# TYPE` and `# UNIT` lines are collected per
//! target by the loop ([`Collector`]); every sender whose `metadata_config.send` is on sends
//! the entries of all targets, each distinct entry once, every `send_interval`, in
//! metadata-only `WriteRequest`s of at most `max_samples_per_send` entries.
//!
//! Metadata is not in the ring: like Prometheus' scrape cache it is the current state of the
//! live targets, resent whole every interval. A target's entries are one compact blob, built
//! in a reused buffer while its body is parsed and published to the [`Store`] only when it
//! differs from the last one published: a steady scrape neither allocates nor locks.
//!
//! Where promlet differs from 2.42: a family is dropped from the entries at the first good
//! scrape without it (Prometheus keeps it for ten more scrapes); a failed scrape keeps the
//! last good scrape's entries, as Prometheus does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::parse::{unescape_help, unescape_label_value, MetricType};
use crate::wal::record::{put_bytes, take_bytes};

/// `prometheus.MetricMetadata.MetricType` of a declared type (the text format's `untyped`
/// is Prometheus' `unknown`).
pub fn proto_type(t: MetricType) -> u8 {
    match t {
        MetricType::Untyped | MetricType::Unknown => 0,
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::GaugeHistogram => 4,
        MetricType::Summary => 5,
        MetricType::Info => 6,
        MetricType::Stateset => 7,
    }
}

/// One metadata entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry<'a> {
    /// `prometheus.MetricMetadata.MetricType`.
    pub kind: u8,
    /// The metric family's name.
    pub name: &'a [u8],
    /// The help text, unescaped.
    pub help: &'a [u8],
    /// The unit (OpenMetrics), or empty.
    pub unit: &'a [u8],
}

/// The entries of a blob a [`Collector`] built: per entry the type byte, then the name,
/// help and unit, each as a varint length and bytes.
pub fn entries(mut blob: &[u8]) -> impl Iterator<Item = Entry<'_>> {
    std::iter::from_fn(move || {
        let (&kind, rest) = blob.split_first()?;
        blob = rest;
        let name = take_bytes(&mut blob)?;
        let help = take_bytes(&mut blob)?;
        let unit = take_bytes(&mut blob)?;
        Some(Entry {
            kind,
            name,
            help,
            unit,
        })
    })
}

/// One target's metadata as its scrapes find it (loop thread).
#[derive(Debug, Default)]
pub struct Collector {
    building: Vec<u8>,
    /// The family whose lines are being read, not yet in `building`.
    open: bool,
    name: Vec<u8>,
    kind: u8,
    help: Vec<u8>,
    unit: Vec<u8>,
    published: Option<Arc<[u8]>>,
}

impl Collector {
    /// Starts a scrape's entries (buffers kept).
    pub fn begin(&mut self) {
        self.building.clear();
        self.open = false;
    }

    fn family(&mut self, name: &[u8]) {
        if self.open && self.name == name {
            return;
        }
        self.close();
        self.open = true;
        self.name.clear();
        self.name.extend_from_slice(name);
        self.kind = 0;
        self.help.clear();
        self.unit.clear();
    }

    fn close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        self.building.push(self.kind);
        put_bytes(&mut self.building, &self.name);
        put_bytes(&mut self.building, &self.help);
        put_bytes(&mut self.building, &self.unit);
    }

    /// A `# HELP` line; `raw` as the parser gives it (escapes resolved here).
    pub fn help(&mut self, name: &[u8], raw: &[u8], openmetrics: bool) {
        self.family(name);
        self.help.clear();
        if openmetrics {
            unescape_label_value(raw, &mut self.help);
        } else {
            unescape_help(raw, &mut self.help);
        }
    }

    /// A `# TYPE` line.
    pub fn kind(&mut self, name: &[u8], kind: MetricType) {
        self.family(name);
        self.kind = proto_type(kind);
    }

    /// A `# UNIT` line.
    pub fn unit(&mut self, name: &[u8], unit: &[u8]) {
        self.family(name);
        self.unit.clear();
        self.unit.extend_from_slice(unit);
    }

    /// Ends a good scrape: its entries, if they differ from the last ones published.
    pub fn finish(&mut self) -> Option<Arc<[u8]>> {
        self.close();
        if self.published.as_deref() == Some(self.building.as_slice()) {
            return None;
        }
        let blob: Arc<[u8]> = Arc::from(self.building.as_slice());
        self.published = Some(Arc::clone(&blob));
        Some(blob)
    }

    /// Forgets what was published (the target restarts, or metadata is switched off).
    pub fn reset(&mut self) {
        self.published = None;
    }
}

/// The live targets' metadata, shared by the loop (which publishes) and the senders (which
/// read it every `send_interval`).
#[derive(Debug, Default)]
pub struct Store {
    targets: Mutex<HashMap<u64, Arc<[u8]>>>,
    /// Some endpoint sends metadata: the loop collects it.
    wanted: AtomicBool,
}

impl Store {
    /// Whether the loop should collect metadata.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Turns collection on or off (off forgets every target's entries).
    pub fn set_wanted(&self, on: bool) {
        self.wanted.store(on, Ordering::Relaxed);
        if !on {
            self.targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Sets target `key`'s entries.
    pub fn publish(&self, key: u64, blob: Arc<[u8]>) {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, blob);
    }

    /// The target is gone.
    pub fn remove(&self, key: u64) {
        self.targets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    /// Every target's entries, sorted by target key.
    pub fn snapshot(&self) -> Vec<Arc<[u8]>> {
        let map = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<(&u64, &Arc<[u8]>)> = map.iter().collect();
        keys.sort_by_key(|(k, _)| **k);
        keys.into_iter().map(|(_, b)| Arc::clone(b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(c: &Collector) -> Vec<(u8, String, String, String)> {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        entries(c.published.as_deref().unwrap_or(&[]))
            .map(|e| (e.kind, s(e.name), s(e.help), s(e.unit)))
            .collect()
    }

    #[test]
    fn families_collect_their_lines_and_publish_only_changes() {
        let mut c = Collector::default();
        let scrape = |c: &mut Collector, help: &[u8]| {
            c.begin();
            c.help(b"node_cpu_seconds_total", help, false);
            c.kind(b"node_cpu_seconds_total", MetricType::Counter);
            c.kind(b"temp", MetricType::Untyped);
            c.unit(b"size", b"bytes");
            c.kind(b"size", MetricType::Gauge);
            c.finish()
        };
        assert!(scrape(&mut c, b"Seconds the CPUs spent.").is_some());
        assert_eq!(
            collected(&c),
            [
                (
                    1,
                    "node_cpu_seconds_total".into(),
                    "Seconds the CPUs spent.".into(),
                    String::new()
                ),
                (0, "temp".into(), String::new(), String::new()),
                (2, "size".into(), String::new(), "bytes".into()),
            ]
        );
        // The same again: nothing to publish.
        assert!(scrape(&mut c, b"Seconds the CPUs spent.").is_none());
        // Escapes resolved as the text format defines them.
        assert!(scrape(&mut c, br"a\nb\\c").is_some());
        assert_eq!(collected(&c)[0].2, "a\nb\\c");
    }

    #[test]
    fn damaged_blobs_end_the_iteration() {
        let mut c = Collector::default();
        c.begin();
        c.help(b"x", b"hello", false);
        let blob = c.finish().expect("published");
        for cut in 0..blob.len() {
            assert_eq!(entries(&blob[..cut]).count(), 0, "cut at {cut}");
        }
        assert_eq!(entries(&blob).count(), 1);
    }

    #[test]
    fn the_store_keeps_one_blob_per_target() {
        let s = Store::default();
        s.publish(2, Arc::from(&b"b"[..]));
        s.publish(1, Arc::from(&b"a"[..]));
        s.publish(2, Arc::from(&b"c"[..]));
        let got: Vec<Vec<u8>> = s.snapshot().iter().map(|b| b.to_vec()).collect();
        assert_eq!(got, [b"a".to_vec(), b"c".to_vec()]);
        s.remove(1);
        assert_eq!(s.snapshot().len(), 1);
    }
}
