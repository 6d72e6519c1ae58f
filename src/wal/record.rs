//! The payloads of the ring's two data records (DESIGN.md step 5).
//!
//! # Format
//! Integers are little-endian; `varint` is LEB128.
//!
//! A **series-set** record ([`TYPE_SERIES_SET`]) holds a target's label sets, in the order its
//! samples records list values: `target u64`, then a snappy block (raw format) of
//! `count varint`, then per series `labels varint` and per label one tag byte:
//! - `0`: the same name and value as the label at this index in the series before;
//! - `1`: the same name, then a new value (`varint length`, bytes);
//! - `2`: a new name and value (each `varint length`, bytes).
//!
//! A **samples** record ([`TYPE_SAMPLES`]) holds one scrape's values: `series-set offset u64`,
//! `timestamp ms i64`, `count varint`, `base offset u64`, then the values coded by
//! [`super::codec::encode_series`] against the series states after the samples record at
//! `base offset` (the same target's previous scrape), or from fresh states when `base offset` is
//! [`KEY_FRAME`]. A reader decodes a target's samples records in order from a key frame.
//!
//! A **stamped samples** record ([`TYPE_SAMPLES_STAMPED`]) is a samples record whose bits go
//! on after the values with a timestamp per series ([`super::codec::encode_timestamps`]): the
//! explicit timestamps of a `honor_timestamps` target, or [`codec::ABSENT`] for a series
//! with no sample in it. Targets without explicit timestamps never write one.

use std::cell::{Ref, RefCell};

use super::codec::{self, BitReader, BitWriter, SeriesState};

/// Record type of a series-set.
pub const TYPE_SERIES_SET: u8 = 1;
/// Record type of a samples record.
pub const TYPE_SAMPLES: u8 = 2;
/// Record type of a samples record with a timestamp per series.
pub const TYPE_SAMPLES_STAMPED: u8 = 3;

/// Whether records of type `kind` hold samples (either layout).
pub fn is_samples(kind: u8) -> bool {
    kind == TYPE_SAMPLES || kind == TYPE_SAMPLES_STAMPED
}
/// The base offset of a samples record coded against nothing.
pub const KEY_FRAME: u64 = u64::MAX;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a payload; every read checks bounds.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.take(1)?.first()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }
}

/// Encodes a series-set payload into `out` (cleared): `series` yields each series' labels in
/// order, each as (name, value) pairs.
pub fn encode_series_set<'s, S, L>(target: u64, series: S, out: &mut Vec<u8>)
where
    S: ExactSizeIterator<Item = L> + Clone,
    L: Iterator<Item = (&'s [u8], &'s [u8])> + Clone,
{
    // Sets are written when a target's series change, not per scrape: a buffer of its own.
    let mut raw = Vec::new();
    put_varint(&mut raw, series.len() as u64);
    let mut previous: Option<L> = None;
    for labels in series {
        put_varint(&mut raw, labels.clone().count() as u64);
        let mut prev = previous.clone();
        for (name, value) in labels.clone() {
            let before = prev.as_mut().and_then(Iterator::next);
            match before {
                Some((n, v)) if n == name && v == value => raw.push(0),
                Some((n, _)) if n == name => {
                    raw.push(1);
                    put_bytes(&mut raw, value);
                }
                _ => {
                    raw.push(2);
                    put_bytes(&mut raw, name);
                    put_bytes(&mut raw, value);
                }
            }
        }
        previous = Some(labels);
    }
    out.clear();
    out.extend_from_slice(&target.to_le_bytes());
    out.resize(8 + snap::raw::max_compress_len(raw.len()), 0);
    let n = snap::raw::Encoder::new()
        .compress(&raw, &mut out[8..])
        .unwrap_or(0);
    out.truncate(8 + n);
}

/// A decoded series-set: its target and each series' labels.
pub type SeriesSet = (u64, Vec<Vec<(Vec<u8>, Vec<u8>)>>);

/// Decodes a series-set payload; `None` if it is malformed.
pub fn decode_series_set(payload: &[u8]) -> Option<SeriesSet> {
    let mut index = SetIndex::default();
    let target = index.decode(payload)?;
    let view = SetView { index: &index };
    let labels = (0..view.len())
        .map(|i| {
            view.labels(i)
                .map(|(a, b)| (a.to_vec(), b.to_vec()))
                .collect()
        })
        .collect();
    Some((target, labels))
}

/// A series-set payload read back: the decompressed labels, checked whole, and a walk over
/// its series. A series' labels refer to the series before it, so they are resolved in
/// order: [`SetView::labels`] keeps where the last call ended, which makes reading the series
/// in order cost one step each, and keeps no per-series index (a sender holds the set of its
/// largest target; 16 bytes a label would be most of its memory). Reused from one set to the
/// next, so reading a set back allocates nothing once warm.
#[derive(Debug, Clone, Default)]
pub struct SetIndex {
    /// The decompressed labels.
    raw: Vec<u8>,
    /// Where the first series starts in `raw`, and how many there are.
    first: usize,
    count: usize,
    walk: RefCell<Walk>,
}

/// Where a walk over a set's series stands.
#[derive(Debug, Clone, Default)]
struct Walk {
    /// The series whose labels are in `cur`.
    at: Option<usize>,
    /// Where the series after it starts in the raw labels.
    next: usize,
    /// Per label of the series before and of this one: name start, name end, value start,
    /// value end (offsets in the raw labels).
    prev: Vec<[u32; 4]>,
    cur: Vec<[u32; 4]>,
}

/// A decompressed set may be at most this many times its compressed bytes (snappy's best
/// ratio is below it): a damaged length cannot ask for gigabytes.
const MAX_RATIO: usize = 64;

/// Reads the series that starts at `c` into `cur`, resolving its references to `prev`.
fn step(c: &mut Cursor<'_>, prev: &[[u32; 4]], cur: &mut Vec<[u32; 4]>) -> Option<()> {
    cur.clear();
    let pos = |c: &Cursor<'_>| u32::try_from(c.at).ok();
    let n = c.len()?;
    if n > c.b.len() {
        return None;
    }
    for i in 0..n {
        let before = prev.get(i).copied();
        let label = match c.take(1)?.first()? {
            0 => before?,
            1 => {
                let len = c.len()?;
                let start = pos(c)?;
                c.take(len)?;
                let [a, b, _, _] = before?;
                [a, b, start, pos(c)?]
            }
            2 => {
                let len = c.len()?;
                let a = pos(c)?;
                c.take(len)?;
                let b = pos(c)?;
                let len = c.len()?;
                let start = pos(c)?;
                c.take(len)?;
                [a, b, start, pos(c)?]
            }
            _ => return None,
        };
        cur.push(label);
    }
    Some(())
}

impl SetIndex {
    /// Gives back the memory of a large set (the producer reads sets back only when a target's
    /// series change).
    pub fn release(&mut self) {
        self.raw = Vec::new();
        self.count = 0;
        *self.walk.get_mut() = Walk::default();
    }

    /// Reads a series-set payload (up to 4 GiB, as records are) and checks all of it;
    /// returns its target, or `None` if it is malformed.
    pub fn decode(&mut self, payload: &[u8]) -> Option<u64> {
        self.raw.clear();
        self.count = 0;
        self.walk.get_mut().at = None;
        let target = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let packed = &payload[8..];
        let n = snap::raw::decompress_len(packed).ok()?;
        if n > packed.len().saturating_mul(MAX_RATIO) {
            return None;
        }
        self.raw.resize(n, 0);
        if snap::raw::Decoder::new()
            .decompress(packed, &mut self.raw)
            .ok()?
            != n
        {
            return None;
        }
        let mut c = Cursor {
            b: &self.raw,
            at: 0,
        };
        let count = c.len()?;
        // Each series takes at least a byte: a count beyond the bytes is damage.
        if count > self.raw.len() {
            return None;
        }
        let first = c.at;
        let walk = self.walk.get_mut();
        for _ in 0..count {
            std::mem::swap(&mut walk.prev, &mut walk.cur);
            step(&mut c, &walk.prev, &mut walk.cur)?;
        }
        if c.at != self.raw.len() {
            return None;
        }
        self.first = first;
        self.count = count;
        Some(target)
    }

    /// Moves `walk` to series `i` (from the start if it is behind); false if it is past the
    /// end or the set does not read.
    fn seek(&self, walk: &mut Walk, i: usize) -> bool {
        if i >= self.count {
            return false;
        }
        if walk.at.is_some_and(|a| a > i) {
            walk.at = None;
        }
        if walk.at.is_none() {
            walk.next = self.first;
            walk.cur.clear();
        }
        while walk.at != Some(i) {
            std::mem::swap(&mut walk.prev, &mut walk.cur);
            let mut c = Cursor {
                b: &self.raw,
                at: walk.next,
            };
            if step(&mut c, &walk.prev, &mut walk.cur).is_none() {
                walk.at = None;
                return false;
            }
            walk.next = c.at;
            walk.at = Some(walk.at.map_or(0, |a| a + 1));
        }
        true
    }
}

/// A read series-set: each series' labels by position.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    /// The set, from [`SetIndex::decode`].
    pub index: &'a SetIndex,
}

/// Where the labels of one series are: in the index's walk, or a copy.
#[derive(Debug)]
enum Positions<'a> {
    Walk(Ref<'a, Walk>),
    Own(Vec<[u32; 4]>),
}

impl Clone for Positions<'_> {
    fn clone(&self) -> Self {
        match self {
            Positions::Walk(r) => Positions::Walk(Ref::clone(r)),
            Positions::Own(v) => Positions::Own(v.clone()),
        }
    }
}

/// The labels of one series of a set, as (name, value).
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    raw: &'a [u8],
    positions: Positions<'a>,
    i: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let list = match &self.positions {
            Positions::Walk(w) => &w.cur[..],
            Positions::Own(v) => &v[..],
        };
        let l = *list.get(self.i)?;
        self.i += 1;
        let r = |a: u32, b: u32| match (usize::try_from(a), usize::try_from(b)) {
            (Ok(a), Ok(b)) => self.raw.get(a..b).unwrap_or(&[]),
            _ => &[],
        };
        Some((r(l[0], l[1]), r(l[2], l[3])))
    }
}

impl<'a> SetView<'a> {
    /// How many series.
    pub fn len(&self) -> usize {
        self.index.count
    }

    /// Whether it has no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels of series `i` (none past the end), as (name, value). Reading the series in
    /// order costs a step each; going back starts again from the first series. Drop the
    /// labels before asking for the next series: while they live, another call walks a copy.
    pub fn labels(&self, i: usize) -> Labels<'a> {
        let index = self.index;
        let raw = index.raw.as_slice();
        if let Ok(mut walk) = index.walk.try_borrow_mut() {
            let found = index.seek(&mut walk, i);
            drop(walk);
            if found {
                if let Ok(walk) = index.walk.try_borrow() {
                    return Labels {
                        raw,
                        positions: Positions::Walk(walk),
                        i: 0,
                    };
                }
            }
            return Labels {
                raw,
                positions: Positions::Own(Vec::new()),
                i: 0,
            };
        }
        let mut own = Walk::default();
        let positions = if index.seek(&mut own, i) {
            own.cur
        } else {
            Vec::new()
        };
        Labels {
            raw,
            positions: Positions::Own(positions),
            i: 0,
        }
    }
}

/// One scrape's values as a samples record holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Offset of the series-set record the values follow.
    pub series_set: u64,
    /// The scrape's timestamp in milliseconds.
    pub timestamp_ms: i64,
    /// Offset of the samples record the values are coded against, or [`KEY_FRAME`].
    pub base: u64,
    /// The values, in the series-set's order.
    pub values: Vec<f64>,
}

/// Encodes a samples payload into `out` (cleared). `base` is the offset of the samples record
/// `states` were left by, `None` for a key frame (states restart). `states` are updated for
/// the next record; `bits` is a reused buffer. `timestamps`, one per value or empty, makes
/// the payload a [`TYPE_SAMPLES_STAMPED`] one.
#[allow(clippy::too_many_arguments)]
pub fn encode_samples(
    series_set: u64,
    timestamp_ms: i64,
    base: Option<u64>,
    states: &mut Vec<SeriesState>,
    values: &[f64],
    timestamps: &[i64],
    bits: &mut BitWriter,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&series_set.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    put_varint(out, values.len() as u64);
    if base.is_none() {
        states.clear();
    }
    out.extend_from_slice(&base.unwrap_or(KEY_FRAME).to_le_bytes());
    bits.clear();
    codec::encode_series(states, values, bits);
    if !timestamps.is_empty() {
        codec::encode_timestamps(timestamp_ms, timestamps, bits);
    }
    out.extend_from_slice(bits.bytes());
}

/// The fixed part of a samples payload: (series-set offset, timestamp, count, base offset).
pub fn samples_head(payload: &[u8]) -> Option<(u64, i64, usize, u64)> {
    head(payload).map(|(h, _)| h)
}

/// The fixed part and where the coded values start.
fn head(payload: &[u8]) -> Option<((u64, i64, usize, u64), usize)> {
    let mut c = Cursor { b: payload, at: 0 };
    let set = c.u64()?;
    let ts = i64::from_le_bytes(c.take(8)?.try_into().ok()?);
    let n = c.len()?;
    let base = c.u64()?;
    Some(((set, ts, n, base), c.at))
}

/// Decodes a samples payload with the states its base record left (a key frame restarts
/// them), updating them; `None` if it is malformed.
pub fn decode_samples(payload: &[u8], states: &mut Vec<SeriesState>) -> Option<Samples> {
    let mut values = Vec::new();
    let (series_set, timestamp_ms, base) = decode_samples_into(payload, states, &mut values)?;
    Some(Samples {
        series_set,
        timestamp_ms,
        base,
        values,
    })
}

/// [`decode_samples`] into a reused `values` buffer (cleared); returns the series-set offset,
/// the timestamp and the base offset.
pub fn decode_samples_into(
    payload: &[u8],
    states: &mut Vec<SeriesState>,
    values: &mut Vec<f64>,
) -> Option<(u64, i64, u64)> {
    decode_any_into(payload, states, values, None)
}

/// [`decode_samples_into`] for a [`TYPE_SAMPLES_STAMPED`] payload: also each value's
/// timestamp into `timestamps` (cleared; [`codec::ABSENT`] for a value not to send).
pub fn decode_stamped_into(
    payload: &[u8],
    states: &mut Vec<SeriesState>,
    values: &mut Vec<f64>,
    timestamps: &mut Vec<i64>,
) -> Option<(u64, i64, u64)> {
    decode_any_into(payload, states, values, Some(timestamps))
}

fn decode_any_into(
    payload: &[u8],
    states: &mut Vec<SeriesState>,
    values: &mut Vec<f64>,
    timestamps: Option<&mut Vec<i64>>,
) -> Option<(u64, i64, u64)> {
    let ((series_set, timestamp_ms, n, base), start) = head(payload)?;
    // Each value takes at least a bit.
    if n > payload.len().saturating_mul(8) {
        return None;
    }
    if base == KEY_FRAME {
        states.clear();
    }
    let mut bits = BitReader::new(payload.get(start..)?);
    codec::decode_series(states, n, &mut bits, values)?;
    if let Some(out) = timestamps {
        codec::decode_timestamps(timestamp_ms, n, &mut bits, out)?;
    }
    Some((series_set, timestamp_ms, base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::testkit::Rng;

    fn sets(n: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        (0..n)
            .map(|i| {
                vec![
                    (
                        b"__name__".to_vec(),
                        b"container_cpu_usage_seconds_total".to_vec(),
                    ),
                    (b"container".to_vec(), format!("app-{}", i / 4).into_bytes()),
                    (b"cpu".to_vec(), format!("cpu{}", i % 4).into_bytes()),
                    (b"namespace".to_vec(), b"default".to_vec()),
                ]
            })
            .collect()
    }

    fn encode_sets(target: u64, s: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_series_set(
            target,
            s.iter()
                .map(|l| l.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))),
            &mut out,
        );
        out
    }

    #[test]
    fn series_sets_round_trip_and_share_repeated_labels() {
        for n in [0, 1, 2, 100] {
            let s = sets(n);
            let bytes = encode_sets(42, &s);
            let (target, got) = decode_series_set(&bytes).expect("decodes");
            assert_eq!(target, 42);
            let got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = got
                .iter()
                .map(|l| l.iter().map(|(a, b)| (a.to_vec(), b.to_vec())).collect())
                .collect();
            assert_eq!(got, s);
            if n == 100 {
                let raw: usize = s.iter().flatten().map(|(a, b)| a.len() + b.len()).sum();
                assert!(
                    bytes.len() * 4 < raw,
                    "{} bytes for {raw} bytes of labels",
                    bytes.len()
                );
            }
        }
        // Sets of different shapes (fewer, more, other names) round trip too.
        let mixed = vec![
            vec![(b"a".to_vec(), b"1".to_vec())],
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec()),
            ],
            vec![(b"c".to_vec(), b"".to_vec())],
            vec![],
            vec![(b"c".to_vec(), b"".to_vec())],
        ];
        let bytes = encode_sets(1, &mixed);
        let (_, got) = decode_series_set(&bytes).expect("decodes");
        assert_eq!(got.len(), mixed.len());
        for (g, m) in got.iter().zip(&mixed) {
            let g: Vec<(Vec<u8>, Vec<u8>)> =
                g.iter().map(|(a, b)| (a.to_vec(), b.to_vec())).collect();
            assert_eq!(&g, m);
        }
    }

    #[test]
    fn samples_round_trip_as_key_frames_and_deltas() {
        let mut bits = BitWriter::default();
        let mut out = Vec::new();
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        let first: Vec<f64> = (0..1000).map(|i| f64::from(i) * 10.5).collect();
        encode_samples(
            4096,
            1_700_000_000_000,
            None,
            &mut enc,
            &first,
            &[],
            &mut bits,
            &mut out,
        );
        let key = decode_samples(&out, &mut dec).expect("key frame");
        assert_eq!(key.base, KEY_FRAME);
        assert_eq!(key.values, first);
        let second: Vec<f64> = first
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 10 == 0 { v + 1.0 } else { *v })
            .collect();
        encode_samples(
            4096,
            1_700_000_015_000,
            Some(8192),
            &mut enc,
            &second,
            &[],
            &mut bits,
            &mut out,
        );
        let delta = decode_samples(&out, &mut dec).expect("delta");
        assert_eq!(
            (delta.series_set, delta.timestamp_ms, delta.base),
            (4096, 1_700_000_015_000, 8192)
        );
        assert_eq!(delta.values, second);
        // 900 unchanged values at a bit each, 100 changed ones: far below 8 bytes a value.
        assert!(out.len() < 1000, "{} bytes for 1000 values", out.len());
        assert_eq!(
            samples_head(&out),
            Some((4096, 1_700_000_015_000, 1000, 8192))
        );
    }

    #[test]
    fn stamped_samples_carry_a_timestamp_per_value() {
        let mut bits = BitWriter::default();
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        let values: Vec<f64> = (0..300).map(f64::from).collect();
        let ts = 1_700_000_000_000;
        // cadvisor-like: groups stamped alike, one series without, one not to send.
        let stamps: Vec<i64> = (0..300)
            .map(|i| match i {
                7 => ts,
                8 => codec::ABSENT,
                _ => ts - 10_000 - (i / 20) * 250,
            })
            .collect();
        let mut plain = Vec::new();
        encode_samples(
            64,
            ts,
            None,
            &mut enc.clone(),
            &values,
            &[],
            &mut bits,
            &mut plain,
        );
        let mut out = Vec::new();
        encode_samples(
            64, ts, None, &mut enc, &values, &stamps, &mut bits, &mut out,
        );
        let (mut got_v, mut got_t) = (Vec::new(), Vec::new());
        let head = decode_stamped_into(&out, &mut dec, &mut got_v, &mut got_t).expect("decodes");
        assert_eq!(head, (64, ts, KEY_FRAME));
        assert_eq!(got_v, values);
        assert_eq!(got_t, stamps);
        // The column costs about a bit a series where groups share a stamp.
        assert!(
            out.len() - plain.len() < 300 / 8 + 60,
            "{} vs {}",
            out.len(),
            plain.len()
        );
        // The values alone read the same from either layout (a reader replaying states).
        let mut again = Vec::new();
        decode_samples_into(&out, &mut Vec::new(), &mut again).expect("values");
        assert_eq!(again, values);
    }

    #[test]
    fn damaged_payloads_decode_to_none_not_a_panic() {
        let s = sets(20);
        let good = encode_sets(7, &s);
        let mut bits = BitWriter::default();
        let mut samples = Vec::new();
        let values: Vec<f64> = (0..20).map(f64::from).collect();
        encode_samples(
            1,
            2,
            None,
            &mut Vec::new(),
            &values,
            &[],
            &mut bits,
            &mut samples,
        );
        let stamps: Vec<i64> = (0..20)
            .map(|i| if i % 3 == 0 { codec::ABSENT } else { 1000 - i })
            .collect();
        let mut stamped = Vec::new();
        encode_samples(
            1,
            2,
            None,
            &mut Vec::new(),
            &values,
            &stamps,
            &mut bits,
            &mut stamped,
        );
        let mut rng = Rng(3);
        for _ in 0..3000 {
            for base in [&good, &samples, &stamped] {
                let mut bad = base.clone();
                match rng.below(3) {
                    0 => bad.truncate(rng.below(bad.len())),
                    1 => {
                        let at = rng.below(bad.len());
                        bad[at] = rng.next().to_le_bytes()[0];
                    }
                    _ => bad.push(rng.next().to_le_bytes()[0]),
                }
                let _ = decode_series_set(&bad);
                let _ = decode_samples(&bad, &mut Vec::new());
                let _ =
                    decode_stamped_into(&bad, &mut Vec::new(), &mut Vec::new(), &mut Vec::new());
            }
        }
    }

    /// Value bits a careless coder loses: StaleNaN and other NaN payloads, the infinities,
    /// both zeros, subnormals, the extremes, integers beyond 2^53, decimals.
    const SPECIAL: [u64; 24] = [
        0x7ff0_0000_0000_0002, // StaleNaN
        0x7ff8_0000_0000_0001, // Prometheus' NormalNaN
        0x7ff8_0000_0000_0000, // the quiet NaN Rust makes
        0xfff8_0000_0000_0000, // a negative quiet NaN
        0x7ff0_0000_0000_0001, // a signalling NaN, the smallest payload
        0x7fff_ffff_ffff_ffff, // every payload bit set
        0xffff_ffff_ffff_ffff, // and the sign
        0x7ff0_0000_0000_0000, // +Inf
        0xfff0_0000_0000_0000, // -Inf
        0x8000_0000_0000_0000, // -0.0
        0x0000_0000_0000_0000, // +0.0
        0x0000_0000_0000_0001, // the smallest subnormal
        0x000f_ffff_ffff_ffff, // the largest subnormal
        0x8000_0000_0000_0001, // a negative subnormal
        0x0010_0000_0000_0000, // f64::MIN_POSITIVE
        0x7fef_ffff_ffff_ffff, // f64::MAX
        0xffef_ffff_ffff_ffff, // f64::MIN
        0x3cb0_0000_0000_0000, // f64::EPSILON
        0x43f0_0000_0000_0000, // 2^64
        0x4340_0000_0000_0001, // 2^54 + 2, an integer with no decimal scale
        0x3fb9_9999_9999_999a, // 0.1
        0xbff0_0000_0000_0000, // -1.0
        0x4059_0000_0000_0000, // 100.0
        0x7e37_e43c_8800_759c, // 1e300
    ];

    /// A series-set of `n` series with `labels` labels each: names and values of many
    /// lengths, labels shared with the series before (tag 0), same names with new values (tag
    /// 1), new names (tag 2), bytes that need escaping elsewhere (NUL, 0xff, quote, newline),
    /// an empty value, a series without labels, one shorter than the one before, and a 16 KiB
    /// value.
    fn big_set(n: usize, labels: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        (0..n)
            .map(|i| match i % 7 {
                3 => Vec::new(),
                4 => vec![(b"__name__".to_vec(), b"short".to_vec())],
                _ => (0..labels)
                    .map(|j| {
                        let name = format!("label_{:03}_{}", j, "n".repeat(j % 40)).into_bytes();
                        let value = match (i + j) % 9 {
                            0 => Vec::new(),
                            1 => vec![0, 0xff, b'"', b'\n', b'\\', 0x80],
                            2 if j % 3 == 0 => format!("same-{j}").into_bytes(),
                            _ if i == 5 && j == 50 => vec![b'x'; 16 << 10],
                            _ => format!("{i}-{j}-")
                                .repeat(1 + (i * 31 + j * 17) % 40)
                                .into_bytes(),
                        };
                        (name, value)
                    })
                    .collect(),
            })
            .collect()
    }

    /// Scrape `k`'s value of series `i`: special bits in turn (so every series goes from one
    /// to another, and to and from counters), counters, gauges, and a series flipping between
    /// -0.0 and +0.0.
    fn special_value(k: usize, i: usize) -> f64 {
        match (i + k) % 4 {
            _ if i == 1 => f64::from_bits(if k % 2 == 0 { 0x8000_0000_0000_0000 } else { 0 }),
            0 | 1 => f64::from_bits(SPECIAL[(i * 5 + k) % SPECIAL.len()]),
            2 => (1000 * i + 15 * k) as f64,
            _ => (k as f64 * 0.37 + i as f64).sin() * 1e6,
        }
    }

    fn labels_of(view: &SetView<'_>, i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        view.labels(i)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    /// Samples and series-sets through the ring and a consumer, bit for bit: every special
    /// value of [`SPECIAL`] as a key frame and as a delta from every other kind of value, and
    /// series-sets of 100 labels a series with long values; then again after a restart, where
    /// the consumer replays the chain from its set.
    #[test]
    fn samples_and_series_sets_round_trip_through_the_ring_bit_for_bit() {
        use crate::wal::{Chain, Ring};

        let mut ring = Ring::from_image(&vec![0u8; 4 << 20]).expect("ring");
        let mut consumer = ring.consumer(1).expect("consumer");
        // An endpoint that sends nothing until the restart below.
        let lagging = ring.consumer(2).expect("consumer");
        let targets = [(7u64, big_set(40, 100)), (u64::MAX, big_set(9, 3))];
        let mut chains = [Chain::default(), Chain::default()];
        for ((target, set), chain) in targets.iter().zip(&mut chains) {
            ring.append_series_set(
                chain,
                *target,
                set.iter()
                    .map(|s| s.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))),
            )
            .expect("set");
        }
        let scrapes = 2 * SPECIAL.len();
        let timestamp = |k: usize| i64::try_from(k).expect("small") * 15_000 - 1_000_000;
        let mut sent = Vec::new();
        for k in 0..scrapes {
            for ((target, set), chain) in targets.iter().zip(&mut chains) {
                let values: Vec<f64> = (0..set.len()).map(|i| special_value(k, i)).collect();
                ring.append_samples(chain, timestamp(k), &values)
                    .expect("samples");
                let b = consumer.next_batch().expect("a batch");
                assert_eq!((b.target, b.timestamp_ms), (*target, timestamp(k)));
                let bits: Vec<u64> = b.values.iter().map(|v| v.to_bits()).collect();
                let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, want, "target {target}, scrape {k}");
                assert_eq!(b.series.len(), set.len());
                for (i, labels) in set.iter().enumerate() {
                    assert!(
                        labels_of(&b.series, i) == *labels,
                        "target {target}, series {i}"
                    );
                }
                sent.push((b.offset, *target, timestamp(k), bits));
                let next = b.next;
                consumer.commit(next);
            }
        }
        assert!(consumer.next_batch().is_none());
        assert_eq!(consumer.stats().undecodable, 0);

        // A restart with a cursor a third of the way in: the consumer decodes mid-chain.
        let from = sent[sent.len() / 3].0;
        lagging.commit(from);
        drop((consumer, lagging));
        ring.sync().expect("sync");
        let mut ring = Ring::from_image(&ring.image()).expect("reopen");
        let mut again = ring.consumer(2).expect("consumer");
        assert_eq!(again.position(), from);
        for want in &sent[sent.len() / 3..] {
            let b = again.next_batch().expect("a batch after the restart");
            let bits: Vec<u64> = b.values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                (b.offset, b.target, b.timestamp_ms, &bits),
                (want.0, want.1, want.2, &want.3)
            );
        }
        assert!(again.next_batch().is_none());
    }
}
