//! One endpoint's reader: from its cursor, decoded scrapes, on its sender thread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::codec::SeriesState;
use super::record::{self, SetIndex, SetView, KEY_FRAME, TYPE_SAMPLES_STAMPED};
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
    /// Each value's timestamp when the scrape carried explicit ones, else empty (all are
    /// `timestamp_ms`); [`super::codec::ABSENT`] marks a value not to send.
    pub timestamps: &'a [i64],
}

impl Batch<'_> {
    /// The timestamp of value `i`, or `None` if it is not to be sent.
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        match self.timestamps.get(i) {
            None => Some(self.timestamp_ms),
            Some(&super::codec::ABSENT) => None,
            Some(&t) => Some(t),
        }
    }
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
    set_index: SetIndex,
    set_target: u64,
    /// Per series-set offset.
    chains: HashMap<u64, ChainState>,
    /// Series-sets whose CRC was checked, newest last: a sender alternating between its
    /// targets' sets checks each once, not at every scrape.
    verified: Vec<u64>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
    reads: u64,
    /// The end of the request an earlier process had in flight from this cursor.
    unacknowledged: Option<u64>,
}

/// Where an endpoint's request in flight ends, kept in the ring's header so that the next
/// process knows what it may be sending a second time ([`Consumer::unacknowledged`]).
#[derive(Debug, Clone)]
pub struct InFlight {
    shared: Arc<Shared>,
    slot: usize,
}

impl InFlight {
    /// The request about to go out holds samples of records before `end`: written into a
    /// header copy now, without waiting for the disk (it survives `kill -9`, and the next
    /// sync makes it survive power loss).
    pub fn set(&self, end: u64) {
        let s = &self.shared.slots[self.slot];
        if s.sending.swap(end, Ordering::AcqRel) != end {
            self.shared.note();
        }
    }
}

impl Consumer {
    pub(super) fn new(shared: Arc<Shared>, slot: usize) -> Consumer {
        let s = &shared.slots[slot];
        let at = s
            .committed
            .load(Ordering::Acquire)
            .max(shared.tail.load(Ordering::Acquire));
        let unacknowledged = Some(s.sending.load(Ordering::Acquire)).filter(|&end| end > at);
        s.read.store(at, Ordering::Release);
        Consumer {
            shared,
            slot,
            at,
            frame: Vec::new(),
            scratch: Vec::new(),
            set_at: None,
            set_index: SetIndex::default(),
            set_target: 0,
            chains: HashMap::new(),
            verified: Vec::new(),
            values: Vec::new(),
            timestamps: Vec::new(),
            reads: 0,
            unacknowledged,
        }
    }

    /// The end of the records of the request that the last process to send from this cursor
    /// had sent and not seen acknowledged when it died (`kill -9`, power loss), if any. The
    /// receiver may hold it already; a sender sends those records again in requests of their
    /// own, so that a receiver that refuses what it holds (Prometheus answers 400 to a
    /// sample older than the newest of its series) refuses nothing new with them.
    pub fn unacknowledged(&self) -> Option<u64> {
        self.unacknowledged
    }

    /// The handle that records this endpoint's request in flight.
    pub fn in_flight(&self) -> InFlight {
        InFlight {
            shared: Arc::clone(&self.shared),
            slot: self.slot,
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

    /// Records that everything before `offset` was sent (or deliberately dropped), in a
    /// header copy at once (it survives `kill -9`; the next sync makes it survive power
    /// loss), so a restart sends none of it again. A cursor never moves back.
    pub fn commit(&self, offset: u64) {
        let head = self.shared.head.load(Ordering::Acquire);
        let to = offset.min(head);
        if self.shared.slots[self.slot]
            .committed
            .fetch_max(to, Ordering::AcqRel)
            < to
        {
            self.shared.note();
        }
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
        // Not a byte of the mapping is read past a truncation of the file (module docs).
        if !self.shared.check_file() {
            return None;
        }
        // Series of the last batch whose labels did not read (overwritten while sent).
        let unread = self.set_index.take_unread();
        if unread > 0 {
            self.undecodable(usize::try_from(unread).unwrap_or(usize::MAX));
        }
        loop {
            let meta = self
                .shared
                .read_if(self.at, &mut self.frame, record::is_samples)?;
            self.at = meta.next;
            self.shared.slots[self.slot]
                .read
                .store(meta.next, Ordering::Release);
            self.reads += 1;
            if self.reads % 256 == 0 {
                let tail = self.shared.tail.load(Ordering::Acquire);
                self.chains.retain(|&set, _| set >= tail);
                self.verified.retain(|&set| set >= tail);
            }
            if !record::is_samples(meta.kind) {
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
            let decoded = if meta.kind == TYPE_SAMPLES_STAMPED {
                record::decode_stamped_into(
                    payload,
                    &mut chain.states,
                    &mut self.values,
                    &mut self.timestamps,
                )
            } else {
                self.timestamps.clear();
                record::decode_samples_into(payload, &mut chain.states, &mut self.values)
            };
            match decoded {
                Some((_, timestamp_ms, _)) => {
                    chain.last = meta.offset;
                    return Some(Batch {
                        offset: meta.offset,
                        next: meta.next,
                        target: self.set_target,
                        timestamp_ms,
                        series: SetView {
                            index: &self.set_index,
                        },
                        values: &self.values,
                        timestamps: &self.timestamps,
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
            index: &self.set_index,
        }
    }

    /// Reads the series-set at `set` unless it is the one held.
    fn load_set(&mut self, set: u64) -> bool {
        if self.set_at == Some(set) {
            return true;
        }
        /// Sets remembered as checked: more than a node's targets.
        const VERIFIED: usize = 256;
        self.set_at = None;
        let verified = self.verified.contains(&set);
        match self.set_index.open_in_ring(&self.shared, set, verified) {
            Some(target) => {
                if !verified {
                    if self.verified.len() >= VERIFIED {
                        self.verified.remove(0);
                    }
                    self.verified.push(set);
                }
                self.set_target = target;
                self.set_at = Some(set);
                true
            }
            None => false,
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
        while let Some(m) = self
            .shared
            .read_if(at, &mut self.scratch, record::is_samples)
        {
            if m.offset >= until {
                break;
            }
            at = m.next;
            if !record::is_samples(m.kind) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::testkit::{labels, write_set};
    use super::super::{Chain, Ring, MIN_SIZE};
    use super::Batch;

    fn empty_ring(size: u64) -> Ring {
        Ring::from_image(&vec![0u8; usize::try_from(size).expect("fits")]).expect("ring")
    }

    /// Scrape `k` of series `i`: counters, gauges, and now and then a StaleNaN.
    fn value(target: u64, k: u64, i: usize) -> f64 {
        match i % 4 {
            0 => (k * 15 + target) as f64,
            1 => (k as f64).sin() * 100.0,
            2 if k % 7 == 3 => f64::from_bits(0x7ff0_0000_0000_0002),
            _ => 0.25 * i as f64,
        }
    }

    fn values(target: u64, k: u64, n: usize) -> Vec<f64> {
        (0..n).map(|i| value(target, k, i)).collect()
    }

    /// (target, timestamp, labels of series 1, value bits) of a batch.
    fn seen(b: &Batch<'_>) -> (u64, i64, Vec<u8>, Vec<u64>) {
        let cpu = b
            .series
            .owned(1)
            .into_iter()
            .nth(1)
            .map(|l| l.1)
            .unwrap_or_default();
        (
            b.target,
            b.timestamp_ms,
            cpu,
            b.values.iter().map(|v| v.to_bits()).collect(),
        )
    }

    fn expected(target: u64, k: u64, n: usize) -> (u64, i64, Vec<u8>, Vec<u64>) {
        (
            target,
            i64::try_from(k).expect("small") * 15_000,
            b"1".to_vec(),
            values(target, k, n).iter().map(|v| v.to_bits()).collect(),
        )
    }

    #[test]
    fn a_consumer_on_its_own_thread_is_woken_for_every_scrape_in_order() {
        let mut ring = empty_ring(4 << 20);
        let mut consumer = ring.consumer(7).expect("consumer");
        let (targets, scrapes, n) = (3u64, 40u64, 50usize);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while (got.len() as u64) < targets * scrapes && Instant::now() < deadline {
                while let Some(b) = consumer.next_batch() {
                    got.push(seen(&b));
                    let next = b.next;
                    consumer.commit(next);
                }
                consumer.wait(Duration::from_secs(1));
            }
            (got, consumer.stats())
        });
        let mut chains: Vec<Chain> = (0..targets).map(|_| Chain::default()).collect();
        for (t, chain) in chains.iter_mut().enumerate() {
            write_set(&mut ring, chain, t as u64, n);
        }
        for k in 0..scrapes {
            for (t, chain) in chains.iter_mut().enumerate() {
                let ts = i64::try_from(k).expect("small") * 15_000;
                ring.append_samples(chain, ts, &values(t as u64, k, n))
                    .expect("samples");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (got, stats) = reader.join().expect("reader");
        let want: Vec<_> = (0..scrapes)
            .flat_map(|k| (0..targets).map(move |t| expected(t, k, n)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(stats.cursor, ring.head());
        assert_eq!((stats.overwritten, stats.undecodable), (0, 0));
    }

    #[test]
    fn a_reader_that_starts_mid_chain_replays_it_from_the_set() {
        let mut ring = empty_ring(1 << 20);
        let mut consumer = ring.consumer(1).expect("consumer");
        let mut chain = Chain::default();
        write_set(&mut ring, &mut chain, 9, 20);
        for k in 0..10u32 {
            ring.append_samples(&mut chain, i64::from(k) * 15_000, &values(9, k.into(), 20))
                .expect("samples");
        }
        for k in 0..4 {
            let b = consumer.next_batch().expect("batch");
            assert_eq!(seen(&b), expected(9, k, 20));
            let next = b.next;
            consumer.commit(next);
        }
        drop(consumer);
        // A crash: the image as it is, nothing synced. The cursor stays in memory only, so
        // the reopened ring starts the endpoint from the last synced cursor: sync first.
        ring.sync().expect("sync");
        let mut ring = Ring::from_image(&ring.image()).expect("reopen");
        let mut consumer = ring.consumer(1).expect("consumer again");
        for k in 4..10 {
            let b = consumer.next_batch().expect("batch after restart");
            assert_eq!(seen(&b), expected(9, k, 20), "scrape {k}");
        }
        assert!(consumer.next_batch().is_none());
        // The producer's chain goes on after the restart with a new set: the old chain is
        // not in its memory.
        let mut chain = Chain::default();
        write_set(&mut ring, &mut chain, 9, 20);
        ring.append_samples(&mut chain, 10 * 15_000, &values(9, 10, 20))
            .expect("samples");
        let b = consumer.next_batch().expect("after the new set");
        assert_eq!(seen(&b), expected(9, 10, 20));
    }

    #[test]
    fn sets_are_copied_forward_and_every_lost_sample_is_counted() {
        let mut ring = empty_ring(MIN_SIZE);
        let mut keeping_up = ring.consumer(1).expect("consumer");
        let lagging = ring.consumer(2).expect("consumer");
        let (n, scrapes) = (40usize, 2000u64);
        let mut chains = [Chain::default(), Chain::default()];
        for (t, chain) in chains.iter_mut().enumerate() {
            write_set(&mut ring, chain, t as u64, n);
        }
        let mut delivered = Vec::new();
        for k in 0..scrapes {
            for (t, chain) in chains.iter_mut().enumerate() {
                let ts = i64::try_from(k).expect("small") * 15_000;
                ring.append_samples(chain, ts, &values(t as u64, k, n))
                    .expect("samples");
            }
            while let Some(b) = keeping_up.next_batch() {
                delivered.push(seen(&b));
                let next = b.next;
                keeping_up.commit(next);
            }
        }
        let want: Vec<_> = (0..scrapes)
            .flat_map(|k| (0..2).map(move |t| expected(t, k, n)))
            .collect();
        assert_eq!(delivered, want, "a reader that keeps up gets everything");
        let stats = ring.stats();
        assert!(stats.series_sets_rewritten > 10, "{stats:?}");
        assert!(
            ring.head() > 3 * ring.capacity(),
            "wrapped: {}",
            ring.head()
        );
        // The lagging endpoint: what the head overwrote was counted for it alone, and what
        // is left is either delivered or counted as undecodable.
        assert_eq!(keeping_up.stats().overwritten, 0);
        let mut lagging = lagging;
        let mut late = 0;
        while let Some(b) = lagging.next_batch() {
            late += b.values.len() as u64;
            let next = b.next;
            lagging.commit(next);
        }
        let s = lagging.stats();
        let total = 2 * scrapes * n as u64;
        assert!(s.overwritten > total / 2, "{s:?}");
        assert_eq!(s.overwritten + s.undecodable + late, total, "{s:?}");
        assert!(late > 0);
        assert_eq!(stats.samples_overwritten, s.overwritten);
    }

    #[test]
    fn a_large_set_is_walked_in_place_and_an_overwrite_mid_walk_is_counted() {
        let mut ring = empty_ring(4 << 20);
        let mut consumer = ring.consumer(3).expect("consumer");
        let n = 120_000;
        let mut chain = Chain::default();
        let set = write_set(&mut ring, &mut chain, 4, n);
        let set_bytes = match ring.read(set) {
            super::super::Found::Record { record, .. } => record.payload.len(),
            super::super::Found::End => panic!("the set is there"),
        };
        for k in 0..2 {
            ring.append_samples(&mut chain, k * 15_000, &values(4, k.unsigned_abs(), n))
                .expect("samples");
        }
        let want = labels(4, n);
        {
            let b = consumer.next_batch().expect("batch");
            for i in (0..n).chain([0, n / 2, n - 1]) {
                assert_eq!(b.series.owned(i), want[i], "series {i}");
            }
            let held = b.series.index.held_bytes();
            assert!(
                held < set_bytes / 4,
                "holds {held} bytes of a {set_bytes}-byte set"
            );
            let next = b.next;
            consumer.commit(next);
        }
        let b = consumer.next_batch().expect("the second scrape");
        assert_eq!(b.series.owned(0), want[0]);
        // Another target's scrapes overwrite the set while this batch is being walked: the
        // series of the block in hand still read, the rest read as none, and are counted.
        let mut other = Chain::default();
        write_set(&mut ring, &mut other, 5, 100);
        let in_use = chain.series_set().expect("the set of the batch in hand");
        let mut k = 0;
        while ring.tail() <= in_use || k < 3000 {
            ring.append_samples(&mut other, k * 15_000, &values(5, k.unsigned_abs(), 100))
                .expect("samples");
            k += 1;
        }
        // The scrape in hand was read: its values are not lost with its record (issue 17:
        // a request retried from memory was counted as overwritten too).
        assert_eq!(ring.endpoint(3).map(|e| e.overwritten), Some(0));
        let (mut read, mut unread) = (0, 0);
        for (i, want) in want.iter().enumerate().skip(1) {
            let got = b.series.owned(i);
            if got.is_empty() {
                unread += 1;
            } else {
                assert_eq!(&got, want, "series {i}");
                read += 1;
            }
        }
        assert!(
            read > 0 && unread > n / 2,
            "{read} read, {unread} not; tail {} set {set} k {k}",
            ring.tail()
        );
        let before = consumer.stats().undecodable;
        while let Some(b) = consumer.next_batch() {
            let next = b.next;
            consumer.commit(next);
        }
        assert_eq!(consumer.stats().undecodable - before, unread as u64);
    }

    #[test]
    fn the_producer_reads_a_targets_previous_labels_back_from_the_ring() {
        // Staleness (DESIGN.md step 4) needs the labels of series that vanished: they are in
        // the target's last series-set record, not in RAM.
        let mut ring = empty_ring(MIN_SIZE);
        let mut chain = Chain::default();
        write_set(&mut ring, &mut chain, 5, 30);
        let at = chain.series_set().expect("written");
        let (target, set) = ring.series_set(at).expect("readable");
        assert_eq!(target, 5);
        assert_eq!(set.len(), 30);
        let want = labels(5, 30);
        for (i, l) in want.iter().enumerate() {
            let got: Vec<(Vec<u8>, Vec<u8>)> = set.owned(i);
            assert_eq!(&got, l, "series {i}");
        }
        // Not a set, or gone: `None`, not a panic.
        let samples = ring
            .append_samples(&mut chain, 0, &values(5, 0, 30))
            .expect("samples");
        assert!(ring.series_set(samples).is_none());
        assert!(ring.series_set(at + 8).is_none());
    }
}
