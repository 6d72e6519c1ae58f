//! One endpoint's reader: from its cursor, decoded scrapes, on its sender thread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::codec::SeriesState;
use super::record::{self, SetIndex, SetView, KEY_FRAME, TYPE_SAMPLES, TYPE_SERIES_SET};
use super::{bump, payload_of, EndpointStats, Shared};

/// One scrape read back: a target's values at one timestamp, with their labels.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The samples record's offset.
    pub offset: u64,
    /// The offset after it: commit this once the batch is sent.
    pub next: u64,
    /// The target (as the producer numbered it in the series-set).
    pub target: u64,
    /// The scrape's timestamp, milliseconds.
    pub timestamp_ms: i64,
    /// Each series' labels, in the order of `values`.
    pub series: SetView<'a>,
    /// The values.
    pub values: &'a [f64],
}

/// The coding state of one chain as this reader has followed it.
#[derive(Debug, Default)]
struct ChainState {
    /// The last samples record decoded.
    last: u64,
    states: Vec<SeriesState>,
}

/// The reader of one `remote_write` endpoint; see the module docs of [`super`].
#[derive(Debug)]
pub struct Consumer {
    shared: Arc<Shared>,
    slot: usize,
    /// The next offset to read.
    at: u64,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    /// The series-set last read: its offset, frame, index and target.
    set_at: Option<u64>,
    set_frame: Vec<u8>,
    set_index: SetIndex,
    set_target: u64,
    /// Per series-set offset.
    chains: HashMap<u64, ChainState>,
    values: Vec<f64>,
    reads: u64,
}

impl Consumer {
    pub(super) fn new(shared: Arc<Shared>, slot: usize) -> Consumer {
        let s = &shared.slots[slot];
        let at = s
            .committed
            .load(Ordering::Acquire)
            .max(shared.tail.load(Ordering::Acquire));
        Consumer {
            shared,
            slot,
            at,
            frame: Vec::new(),
            scratch: Vec::new(),
            set_at: None,
            set_frame: Vec::new(),
            set_index: SetIndex::default(),
            set_target: 0,
            chains: HashMap::new(),
            values: Vec::new(),
            reads: 0,
        }
    }

    /// The endpoint's key.
    pub fn key(&self) -> u64 {
        self.shared.slots[self.slot].key.load(Ordering::Relaxed)
    }

    /// Where the next read starts: everything before it was handed out or skipped.
    pub fn position(&self) -> u64 {
        self.at
    }

    /// The endpoint's cursor and losses.
    pub fn stats(&self) -> EndpointStats {
        self.shared.slots[self.slot].stats()
    }

    /// Records that everything before `offset` was sent (or deliberately dropped); the next
    /// sync persists it. A cursor never moves back.
    pub fn commit(&self, offset: u64) {
        let head = self.shared.head.load(Ordering::Acquire);
        self.shared.slots[self.slot]
            .committed
            .fetch_max(offset.min(head), Ordering::AcqRel);
    }

    /// Sleeps until the producer appends past [`Consumer::position`] or `timeout` passes;
    /// returns whether there is something to read.
    pub fn wait(&self, timeout: Duration) -> bool {
        let slot = &self.shared.slots[self.slot];
        if let Ok(mut t) = slot.thread.lock() {
            if t.as_ref().map(std::thread::Thread::id) != Some(std::thread::current().id()) {
                *t = Some(std::thread::current());
            }
        }
        slot.waiting.store(true, Ordering::SeqCst);
        if self.shared.head.load(Ordering::SeqCst) <= self.at {
            std::thread::park_timeout(timeout);
        }
        slot.waiting.store(false, Ordering::SeqCst);
        self.shared.head.load(Ordering::Acquire) > self.at
    }

    fn undecodable(&self, n: usize) {
        bump(&self.shared.slots[self.slot].undecodable, n as u64);
    }

    /// The next scrape from [`Consumer::position`], or `None` at the head. Samples that
    /// cannot be decoded (their series-set or chain overwritten or damaged) are skipped and
    /// counted ([`EndpointStats::undecodable`]).
    pub fn next_batch(&mut self) -> Option<Batch<'_>> {
        loop {
            let meta = self.shared.read(self.at, &mut self.frame)?;
            self.at = meta.next;
            self.reads += 1;
            if self.reads % 256 == 0 {
                let tail = self.shared.tail.load(Ordering::Acquire);
                self.chains.retain(|&set, _| set >= tail);
            }
            if meta.kind != TYPE_SAMPLES {
                continue;
            }
            let Some((set, _, n, base)) = record::samples_head(payload_of(&self.frame)) else {
                continue;
            };
            let follows =
                base == KEY_FRAME || self.chains.get(&set).is_some_and(|c| c.last == base);
            if !self.load_set(set)
                || self.set_view().len() != n
                || !(follows || self.replay(set, meta.offset, base))
            {
                self.chains.remove(&set);
                self.undecodable(n);
                continue;
            }
            let chain = self.chains.entry(set).or_default();
            let payload = payload_of(&self.frame);
            match record::decode_samples_into(payload, &mut chain.states, &mut self.values) {
                Some((_, timestamp_ms, _)) => {
                    chain.last = meta.offset;
                    return Some(Batch {
                        offset: meta.offset,
                        next: meta.next,
                        target: self.set_target,
                        timestamp_ms,
                        series: SetView {
                            payload: payload_of(&self.set_frame),
                            index: &self.set_index,
                        },
                        values: &self.values,
                    });
                }
                None => {
                    self.chains.remove(&set);
                    self.undecodable(n);
                }
            }
        }
    }

    fn set_view(&self) -> SetView<'_> {
        SetView {
            payload: payload_of(&self.set_frame),
            index: &self.set_index,
        }
    }

    /// Reads the series-set at `set` unless it is the one held.
    fn load_set(&mut self, set: u64) -> bool {
        if self.set_at == Some(set) {
            return true;
        }
        self.set_at = None;
        match self.shared.read(set, &mut self.set_frame) {
            Some(m) if m.offset == set && m.kind == TYPE_SERIES_SET => {
                match self.set_index.decode(payload_of(&self.set_frame)) {
                    Some(target) => {
                        self.set_target = target;
                        self.set_at = Some(set);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// Rebuilds the coding state of the chain of `set` by decoding its samples records from
    /// the set up to `until`; true if that leaves it at `base`.
    fn replay(&mut self, set: u64, until: u64, base: u64) -> bool {
        let mut chain = ChainState {
            last: KEY_FRAME,
            states: self
                .chains
                .remove(&set)
                .map(|c| c.states)
                .unwrap_or_default(),
        };
        let mut at = set;
        while let Some(m) = self.shared.read(at, &mut self.scratch) {
            if m.offset >= until {
                break;
            }
            at = m.next;
            if m.kind != TYPE_SAMPLES {
                continue;
            }
            let payload = payload_of(&self.scratch);
            match record::samples_head(payload) {
                Some((s, _, _, b)) if s == set && (b == KEY_FRAME || b == chain.last) => {
                    if record::decode_samples_into(payload, &mut chain.states, &mut self.values)
                        .is_none()
                    {
                        return false;
                    }
                    chain.last = m.offset;
                }
                _ => {}
            }
        }
        let ok = chain.last == base;
        self.chains.insert(set, chain);
        ok
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.slots[self.slot]
            .claimed
            .store(false, Ordering::Release);
    }
}
