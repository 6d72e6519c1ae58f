//! The payloads of the ring's two data records (DESIGN.md step 5).
//!
//! # Format
//! Integers are little-endian; `varint` is LEB128.
//!
//! A **series-set** record ([`TYPE_SERIES_BLOCKS`]) holds a target's label sets, in the order
//! its samples records list values: `target u64`, `count varint`, then blocks to the end of
//! the payload, each `series varint`, `length varint` and that many bytes: a snappy block
//! (raw format) of, per series, `labels varint` and per label one tag byte:
//! - `0`: the same name and value as the label at this index in the series before;
//! - `1`: the same name, then a new value (`varint length`, bytes);
//! - `2`: a new name and value (each `varint length`, bytes).
//!
//! The first series of a block refers to nothing before it, so a reader decompresses one
//! block at a time (a block closes past [`BLOCK_BYTES`] of labels): a sender reading a
//! 60k-series cadvisor set holds its compressed payload and one block, not the ~20 MB of its
//! labels. The older layout ([`TYPE_SERIES_SET`]: `target u64`, then one snappy block of
//! `count varint` and the series) is still read.
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

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::codec::{self, BitReader, BitWriter, SeriesState};

/// Record type of a series-set in one snappy block (written before blocked sets; read still).
pub const TYPE_SERIES_SET: u8 = 1;
/// Record type of a series-set in blocks of a few series each.
pub const TYPE_SERIES_BLOCKS: u8 = 4;

/// Whether records of type `kind` hold a series-set (either layout).
pub fn is_series_set(kind: u8) -> bool {
    kind == TYPE_SERIES_SET || kind == TYPE_SERIES_BLOCKS
}

/// A block is closed once its labels take this many bytes uncompressed: a reader holds one
/// block decompressed at a time. Snappy finds repeats within 64 KiB fragments anyway, so
/// blocks of that size compress as well as one block of the whole set (32 KiB blocks took
/// twice the bytes of a cadvisor set).
const BLOCK_BYTES: usize = 64 << 10;
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

/// Appends `v` as LEB128 (the ring's records, metadata blobs and protobuf share it).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v.to_le_bytes()[0] | 0x80);
        v >>= 7;
    }
    out.push(v.to_le_bytes()[0]);
}

/// Appends `b` after its length as a varint.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over a payload; every read checks bounds.
/// Takes what [`put_bytes`] wrote from the front of `b`; `None` if it is cut short.
pub(crate) fn take_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut c = Cursor { b, at: 0 };
    let n = c.len()?;
    let out = c.take(n)?;
    *b = &b[c.at..];
    Some(out)
}

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

/// A series-set's blocks ([`TYPE_SERIES_BLOCKS`]' layout after its count), written one
/// series at a time: a block is compressed as soon as it closes, so a large set (the first
/// scrape of a 60k-series cadvisor target, or its change when pods come and go) is held
/// compressed while it is built, never as its ~20 MB of labels. A set record is the target,
/// the count and the blocks of one or more of these, back to back
/// ([`super::Ring::append_series_blocks`]).
#[derive(Debug, Default, Clone)]
pub struct SetBlocks {
    /// The closed blocks.
    blocks: Vec<u8>,
    /// The open block's labels, uncompressed.
    raw: Vec<u8>,
    /// Series in the open block, and in all.
    in_block: u64,
    count: usize,
    /// The series before (in the open block) and the one being added: label bytes, and per
    /// label (name start, value start, value end) in them.
    prev: (Vec<u8>, Vec<(u32, u32, u32)>),
    cur: (Vec<u8>, Vec<(u32, u32, u32)>),
    /// Compression scratch.
    packed: Vec<u8>,
}

impl SetBlocks {
    /// Appends one series' labels (sorted by name, as readers want them).
    pub fn push<'s>(&mut self, labels: impl Iterator<Item = (&'s [u8], &'s [u8])>) {
        let to = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let at = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let (bytes, spans) = &mut self.cur;
        bytes.clear();
        spans.clear();
        for (name, value) in labels {
            let n = to(bytes.len());
            bytes.extend_from_slice(name);
            let v = to(bytes.len());
            bytes.extend_from_slice(value);
            spans.push((n, v, to(bytes.len())));
        }
        put_varint(&mut self.raw, spans.len() as u64);
        let (prev_bytes, prev) = &self.prev;
        for (i, &(n, v, e)) in spans.iter().enumerate() {
            let (name, value) = (&bytes[at(n)..at(v)], &bytes[at(v)..at(e)]);
            let before = prev
                .get(i)
                .map(|&(n, v, e)| (&prev_bytes[at(n)..at(v)], &prev_bytes[at(v)..at(e)]));
            match before {
                Some((n, v)) if n == name && v == value => self.raw.push(0),
                Some((n, _)) if n == name => {
                    self.raw.push(1);
                    put_bytes(&mut self.raw, value);
                }
                _ => {
                    self.raw.push(2);
                    put_bytes(&mut self.raw, name);
                    put_bytes(&mut self.raw, value);
                }
            }
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        self.in_block += 1;
        self.count += 1;
        if self.raw.len() >= BLOCK_BYTES {
            self.finish();
        }
    }

    /// Closes the open block: [`SetBlocks::blocks`] then holds every series pushed.
    pub fn finish(&mut self) {
        if self.in_block == 0 {
            return;
        }
        self.packed
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        // The output is sized for the worst case, the one way compress can fail.
        let n = snap::raw::Encoder::new()
            .compress(&self.raw, &mut self.packed)
            .unwrap_or(0);
        put_varint(&mut self.blocks, self.in_block);
        put_bytes(&mut self.blocks, &self.packed[..n]);
        self.raw.clear();
        self.in_block = 0;
        // The first series of a block refers to nothing.
        self.prev.0.clear();
        self.prev.1.clear();
    }

    /// Series pushed.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The closed blocks (after [`SetBlocks::finish`]: all of them).
    pub fn blocks(&self) -> &[u8] {
        &self.blocks
    }

    /// Empties it, keeping its memory.
    pub fn clear(&mut self) {
        self.blocks.clear();
        self.raw.clear();
        self.in_block = 0;
        self.count = 0;
        self.prev.0.clear();
        self.prev.1.clear();
    }

    /// Empties it and gives back the memory of a large set.
    pub fn release(&mut self) {
        *self = SetBlocks::default();
    }

    /// The series of this (finished) list that `keep` accepts by index, pushed to `out`;
    /// false if its blocks do not read (they always do: it wrote them).
    pub fn copy_into(&self, out: &mut SetBlocks, mut keep: impl FnMut(usize) -> bool) -> bool {
        let mut payload = set_head(0, self.count);
        payload.extend_from_slice(&self.blocks);
        let mut index = SetIndex::default();
        if index.decode(TYPE_SERIES_BLOCKS, &payload).is_none() {
            return false;
        }
        let view = SetView { index: &index };
        (0..view.len())
            .all(|i| !keep(i) || view.with_labels(i, |l| l.map(|l| out.push(l)).is_some()))
    }
}

/// The start of a series-set payload: `target u64` and `count varint`.
pub fn set_head(target: u64, count: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(18);
    head.extend_from_slice(&target.to_le_bytes());
    put_varint(&mut head, count as u64);
    head
}

/// Encodes a series-set payload ([`TYPE_SERIES_BLOCKS`]) into `out` (cleared): `series`
/// yields each series' labels in order, each as (name, value) pairs. Tests only: the ring
/// writes sets from [`SetBlocks`] in place ([`super::Ring::append_series_blocks`]).
#[cfg(test)]
pub fn encode_series_set<'s, S, L>(target: u64, series: S, out: &mut Vec<u8>)
where
    S: Iterator<Item = L>,
    L: Iterator<Item = (&'s [u8], &'s [u8])>,
{
    let mut blocks = SetBlocks::default();
    for labels in series {
        blocks.push(labels);
    }
    blocks.finish();
    out.clear();
    out.extend_from_slice(&set_head(target, blocks.len()));
    out.extend_from_slice(blocks.blocks());
}

/// A decoded series-set: its target and each series' labels.
pub type SeriesSet = (u64, Vec<Vec<(Vec<u8>, Vec<u8>)>>);

/// Decodes a series-set payload; `None` if it is malformed.
pub fn decode_series_set(kind: u8, payload: &[u8]) -> Option<SeriesSet> {
    let mut index = SetIndex::default();
    let target = index.decode(kind, payload)?;
    let view = SetView { index: &index };
    let mut labels = Vec::with_capacity(view.len());
    for i in 0..view.len() {
        let one = view.with_labels(i, |l| {
            l.map(|l| l.map(|(a, b)| (a.to_vec(), b.to_vec())).collect::<Vec<_>>())
        })?;
        labels.push(one);
    }
    Some((target, labels))
}

/// A series-set record read back, and a walk over its series. A series' labels refer to the
/// series before it, so they are resolved in order: [`SetView::with_labels`] keeps where the
/// last call ended, which makes reading the series in order a step each, and keeps no
/// per-series index. A blocked set stays compressed but for the block being read. Reused from
/// one set to the next, so reading a set back allocates nothing once warm.
#[derive(Debug, Clone, Default)]
pub struct SetIndex {
    /// The record (a ring frame) or payload the set was read from; empty for a set read in
    /// place ([`Bytes::Ring`]).
    packed: Vec<u8>,
    /// Where the set's bytes are.
    bytes: Bytes,
    /// Blocked: where the first block starts (in `packed`, or in the ring record's payload),
    /// and where the payload ends. Legacy: unused (the labels are all in the walk's block).
    first: usize,
    end: usize,
    blocked: bool,
    count: usize,
    /// Series whose labels could not be read since [`SetIndex::take_unread`] (their block
    /// damaged, or overwritten in the ring while it was read).
    unread: Cell<u64>,
    walk: RefCell<Walk>,
}

/// Where a set's bytes are read from.
#[derive(Debug, Clone, Default)]
enum Bytes {
    /// In the index's `packed`.
    #[default]
    Held,
    /// In place in the ring, in the payload of the record at this offset: each block is
    /// copied out when the walk reaches it, and is good only if the tail has not passed the
    /// record by the end of the copy. A sender then holds one block of a large set, not the
    /// set.
    Ring(Arc<super::Shared>, u64),
}

/// Bytes peeked at a block's start: its two varints and the start of its snappy block, whose
/// first varint is the decompressed length.
const PEEK: usize = 32;

/// Where a walk over a set's series stands.
#[derive(Debug, Clone, Default)]
struct Walk {
    /// The series whose labels are in `cur`.
    at: Option<usize>,
    /// The decompressed labels of the block being read (a legacy set: all of them).
    block: Vec<u8>,
    /// Where the series after `at` starts in `block`, and how many series of it are left.
    next: usize,
    left: usize,
    /// Blocked: where the block after this one starts in the index's bytes.
    next_block: usize,
    /// A block copied out of the ring ([`Bytes::Ring`]).
    copied: Vec<u8>,
    /// Per label of the series before and of this one: name start, name end, value start,
    /// value end (offsets in `block`).
    prev: Vec<[u32; 4]>,
    cur: Vec<[u32; 4]>,
    /// The series of the last damaged block the walk met (those of it that did not read):
    /// they read as `None` at once, and the walk goes on with the next block, so a damaged
    /// block costs its own series only, and each costs no second walk from the start.
    lost: std::ops::Range<usize>,
}

/// What [`SetIndex::next_block`] found.
enum NextBlock {
    /// Read: its series are next.
    Read,
    /// Its bytes do not decompress: its `n` series are lost, the walk may go on after it.
    Damaged(usize),
    /// No block there, or its head is gone (the ring overwrote the set): nothing after reads.
    Gone,
}

/// A decompressed block may be at most this many times its compressed bytes (snappy's best
/// ratio is below it): a damaged length cannot ask for gigabytes.
const MAX_RATIO: usize = 64;

/// Decompresses `packed` into `out` (resized); `None` if it does not decompress whole.
fn unpack(packed: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let n = snap::raw::decompress_len(packed).ok()?;
    if n > packed.len().saturating_mul(MAX_RATIO) {
        return None;
    }
    out.clear();
    // Exactly: blocks differ a little in size, and doubling would keep twice the largest.
    out.reserve_exact(n);
    out.resize(n, 0);
    (snap::raw::Decoder::new().decompress(packed, out).ok()? == n).then_some(())
}

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
        self.packed = Vec::new();
        self.bytes = Bytes::Held;
        self.count = 0;
        *self.walk.get_mut() = Walk::default();
    }

    /// The bytes the index holds of its set (tests: a set read in place holds one block).
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        let walk = self.walk.borrow();
        self.packed.capacity() + walk.block.capacity() + walk.copied.capacity()
    }

    /// How many series could not be read since the last call (a damaged block, or a set
    /// overwritten in the ring while it was walked).
    pub fn take_unread(&self) -> u64 {
        self.unread.replace(0)
    }

    /// Reads the series-set record at ring offset `record` in place: its CRC is checked in
    /// pieces, and a blocked set is then walked block by block from the ring, so the index
    /// holds one block, not the set (a legacy set is copied, as it is one block). Returns its
    /// target; `None` if there is no valid series-set record at `record`. `verified`: an
    /// earlier open checked this record's CRC (see [`super::Shared::check_in_place`]).
    pub(super) fn open_in_ring(
        &mut self,
        shared: &Arc<super::Shared>,
        record: u64,
        verified: bool,
    ) -> Option<u64> {
        self.count = 0;
        self.bytes = Bytes::Held;
        let (kind, len) = shared.check_in_place(record, verified).ok()?;
        match kind {
            TYPE_SERIES_BLOCKS => {
                self.packed = Vec::new();
                self.bytes = Bytes::Ring(Arc::clone(shared), record);
            }
            TYPE_SERIES_SET => {
                self.packed.clear();
                self.packed.reserve_exact(len);
                self.packed.resize(len, 0);
                if !shared.copy_payload(record, 0, &mut self.packed) {
                    return None;
                }
            }
            _ => return None,
        }
        self.open(kind, 0, len)
    }

    /// Copies the index's bytes `at..` into `out` (as many as are left, up to its length);
    /// returns how many, or `None` if they are gone from the ring.
    fn peek(&self, at: usize, out: &mut [u8]) -> Option<usize> {
        let n = out.len().min(self.end.checked_sub(at)?);
        match &self.bytes {
            Bytes::Held => out[..n].copy_from_slice(self.packed.get(at..at + n)?),
            Bytes::Ring(shared, record) => {
                if !shared.copy_payload(*record, at, &mut out[..n]) {
                    return None;
                }
            }
        }
        Some(n)
    }

    /// Reads a series-set payload of record type `kind` (up to 4 GiB, as records are);
    /// returns its target, or `None` if it is malformed.
    pub fn decode(&mut self, kind: u8, payload: &[u8]) -> Option<u64> {
        self.packed.clear();
        self.packed.extend_from_slice(payload);
        self.bytes = Bytes::Held;
        self.open(kind, 0, payload.len())
    }

    /// Checks the set in `packed[start..end]`: a legacy one whole (it is decompressed once),
    /// a blocked one by its block list (each block is checked when it is read).
    fn open(&mut self, kind: u8, start: usize, end: usize) -> Option<u64> {
        self.count = 0;
        let walk = self.walk.get_mut();
        walk.at = None;
        walk.lost = 0..0;
        self.end = end;
        let mut peeked = [0u8; PEEK];
        let n = self.peek(start, &mut peeked)?;
        let mut c = Cursor {
            b: &peeked[..n],
            at: 0,
        };
        let target = c.u64()?;
        match kind {
            TYPE_SERIES_BLOCKS => {
                let count = c.len()?;
                let first = start + c.at;
                let mut at = first;
                let mut seen = 0usize;
                while at < end {
                    let n = self.peek(at, &mut peeked)?;
                    let mut c = Cursor {
                        b: &peeked[..n],
                        at: 0,
                    };
                    let series = c.len()?;
                    let len = c.len()?;
                    if len > end - at - c.at {
                        return None;
                    }
                    let raw = snap::raw::decompress_len(&peeked[c.at..n]).ok()?;
                    // Each series takes at least a byte.
                    if series == 0 || series > raw || raw > len.saturating_mul(MAX_RATIO) {
                        return None;
                    }
                    seen = seen.checked_add(series)?;
                    at += c.at + len;
                }
                if seen != count {
                    return None;
                }
                self.blocked = true;
                self.first = first;
                self.count = count;
            }
            TYPE_SERIES_SET => {
                let walk = self.walk.get_mut();
                let payload = self.packed.get(start..end)?;
                unpack(&payload[8..], &mut walk.block)?;
                let mut c = Cursor {
                    b: &walk.block,
                    at: 0,
                };
                let count = c.len()?;
                if count > walk.block.len() {
                    return None;
                }
                let first = c.at;
                for _ in 0..count {
                    std::mem::swap(&mut walk.prev, &mut walk.cur);
                    step(&mut c, &walk.prev, &mut walk.cur)?;
                }
                if c.at != walk.block.len() {
                    return None;
                }
                self.blocked = false;
                self.first = first;
                self.count = count;
            }
            _ => return None,
        }
        Some(target)
    }

    /// Moves `walk` to series `i` (from the start if it is behind); false if it is past the
    /// end or the set does not read there. A damaged block fails its own series only: the
    /// walk resumes with the block after it (blocks start afresh, and `open` checked where
    /// each one is); a legacy set, one block, was read whole by `open`.
    fn seek(&self, walk: &mut Walk, i: usize) -> bool {
        if i >= self.count || walk.lost.contains(&i) {
            return false;
        }
        if walk.at.is_some_and(|a| a > i) {
            walk.at = None;
        }
        if walk.at.is_none() {
            walk.cur.clear();
            if self.blocked {
                walk.next_block = self.first;
                walk.left = 0;
            } else {
                walk.next = self.first;
                walk.left = self.count;
            }
        }
        while walk.at != Some(i) {
            let next = walk.at.map_or(0, |a| a + 1);
            if walk.left == 0 {
                if !self.blocked {
                    walk.at = None;
                    return false;
                }
                match self.next_block(walk) {
                    NextBlock::Read => {}
                    NextBlock::Damaged(n) if n > 0 && n <= self.count - next => {
                        walk.lost = next..next + n;
                        walk.at = Some(next + n - 1);
                        if walk.lost.contains(&i) {
                            return false;
                        }
                        continue;
                    }
                    NextBlock::Damaged(_) | NextBlock::Gone => {
                        walk.lost = next..self.count;
                        walk.at = None;
                        return false;
                    }
                }
            }
            std::mem::swap(&mut walk.prev, &mut walk.cur);
            let mut c = Cursor {
                b: &walk.block,
                at: walk.next,
            };
            if step(&mut c, &walk.prev, &mut walk.cur).is_none() {
                if !self.blocked {
                    walk.at = None;
                    return false;
                }
                // The block decompressed but does not parse from here: the rest of it is
                // lost, the next block reads on its own.
                walk.lost = next..next + walk.left;
                walk.at = Some(next + walk.left - 1);
                walk.left = 0;
                if walk.lost.contains(&i) {
                    return false;
                }
                continue;
            }
            walk.next = c.at;
            walk.left -= 1;
            walk.at = Some(next);
        }
        true
    }

    /// Decompresses the walk's next block (see [`NextBlock`]).
    fn next_block(&self, walk: &mut Walk) -> NextBlock {
        let mut peeked = [0u8; PEEK];
        let Some(got) = self.peek(walk.next_block, &mut peeked) else {
            return NextBlock::Gone;
        };
        let mut c = Cursor {
            b: &peeked[..got],
            at: 0,
        };
        // `open` checked that every block holds a series (a set in the ring is copied out
        // checked, so its bytes are those `open` saw); a block of none is not one.
        let (Some(n @ 1..), Some(len)) = (c.len(), c.len()) else {
            return NextBlock::Gone;
        };
        let start = walk.next_block + c.at;
        if len > self.end.saturating_sub(start) {
            return NextBlock::Gone;
        }
        let block = match &self.bytes {
            Bytes::Held => match self.packed.get(start..start + len) {
                Some(b) => b,
                None => return NextBlock::Gone,
            },
            Bytes::Ring(..) => {
                // Exactly: blocks differ a little in size (as in `unpack`).
                walk.copied.clear();
                walk.copied.reserve_exact(len);
                walk.copied.resize(len, 0);
                if self.peek(start, &mut walk.copied) != Some(len) {
                    return NextBlock::Gone;
                }
                &walk.copied
            }
        };
        walk.next_block = start + len;
        // The first series of a block refers to nothing.
        walk.cur.clear();
        walk.next = 0;
        walk.left = 0;
        if unpack(block, &mut walk.block).is_none() {
            return NextBlock::Damaged(n);
        }
        walk.left = n;
        NextBlock::Read
    }
}

/// A read series-set: each series' labels by position.
#[derive(Debug, Clone, Copy)]
pub struct SetView<'a> {
    /// The set, from [`SetIndex::decode`].
    pub index: &'a SetIndex,
}

/// The labels of one series of a set, as (name, value).
#[derive(Debug, Clone)]
pub struct Labels<'w> {
    block: &'w [u8],
    positions: std::slice::Iter<'w, [u32; 4]>,
}

impl<'w> Iterator for Labels<'w> {
    type Item = (&'w [u8], &'w [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let l = *self.positions.next()?;
        let r = |a: u32, b: u32| match (usize::try_from(a), usize::try_from(b)) {
            (Ok(a), Ok(b)) => self.block.get(a..b).unwrap_or(&[]),
            _ => &[],
        };
        Some((r(l[0], l[1]), r(l[2], l[3])))
    }
}

impl SetView<'_> {
    /// How many series.
    pub fn len(&self) -> usize {
        self.index.count
    }

    /// Whether it has no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels of series `i`, copied (tests and the inspector); empty past the end.
    pub fn owned(&self, i: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.with_labels(i, |l| {
            l.map(|l| l.map(|(a, b)| (a.to_vec(), b.to_vec())).collect())
                .unwrap_or_default()
        })
    }

    /// Calls `f` with the labels of series `i`, as (name, value), or with `None` past the end
    /// or where the set does not read. Reading the series in order costs a step each; going
    /// back starts again from the first series. Called from inside `f`, it walks a copy.
    pub fn with_labels<R>(&self, i: usize, f: impl FnOnce(Option<Labels<'_>>) -> R) -> R {
        let index = self.index;
        let mut own;
        let mut held = index.walk.try_borrow_mut();
        let walk: &mut Walk = match held.as_deref_mut() {
            Ok(w) => w,
            Err(_) => {
                own = Walk::default();
                &mut own
            }
        };
        if !index.seek(walk, i) {
            if i < index.count {
                index.unread.set(index.unread.get() + 1);
            }
            return f(None);
        }
        f(Some(Labels {
            block: &walk.block,
            positions: walk.cur.iter(),
        }))
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

    /// The older layout ([`TYPE_SERIES_SET`]), written as earlier versions wrote it.
    fn legacy_set(target: u64, s: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Vec<u8> {
        let mut raw = Vec::new();
        put_varint(&mut raw, s.len() as u64);
        let all: Vec<Vec<(&[u8], &[u8])>> = s
            .iter()
            .map(|l| {
                l.iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect()
            })
            .collect();
        // Written here from the documented tags, independently of `SetBlocks`.
        for (k, labels) in all.iter().enumerate() {
            put_varint(&mut raw, labels.len() as u64);
            for (j, &(name, value)) in labels.iter().enumerate() {
                match k.checked_sub(1).and_then(|p| all[p].get(j)) {
                    Some(&(n, v)) if n == name && v == value => raw.push(0),
                    Some(&(n, _)) if n == name => {
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
        }
        let mut out = target.to_le_bytes().to_vec();
        out.extend_from_slice(&snap::raw::Encoder::new().compress_vec(&raw).expect("packs"));
        out
    }

    /// cadvisor-like series with long, mostly unique values: a set of many blocks.
    fn long_sets(n: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        (0..n)
            .map(|i| {
                vec![
                    (
                        b"__name__".to_vec(),
                        b"container_memory_usage_bytes".to_vec(),
                    ),
                    (
                        b"id".to_vec(),
                        format!("/kubepods/burstable/pod{i:08x}-5c1e/{:064x}", i * 7919)
                            .into_bytes(),
                    ),
                    (b"namespace".to_vec(), format!("ns-{}", i % 7).into_bytes()),
                    (b"pod".to_vec(), format!("app-{i}-7d4b9c").into_bytes()),
                ]
            })
            .collect()
    }

    #[test]
    fn blocked_sets_read_in_order_back_and_forth_holding_one_block() {
        let s = long_sets(3000);
        let bytes = encode_sets(9, &s);
        let mut index = SetIndex::default();
        assert_eq!(index.decode(TYPE_SERIES_BLOCKS, &bytes), Some(9));
        let view = SetView { index: &index };
        assert_eq!(view.len(), 3000);
        for (i, want) in s.iter().enumerate() {
            assert_eq!(&view.owned(i), want, "series {i}");
        }
        let blocks = index.walk.borrow().block.capacity();
        let raw: usize = s.iter().flatten().map(|(a, b)| a.len() + b.len()).sum();
        assert!(raw > 300_000, "{raw} bytes of labels: several blocks");
        assert!(
            blocks < 2 * BLOCK_BYTES,
            "one block held ({blocks} bytes), not the {raw} bytes of the set"
        );
        // Backwards, and from inside a call (a copy walks then).
        for i in [2999, 0, 1500, 1499, 2] {
            assert_eq!(&view.owned(i), &s[i], "series {i}");
        }
        let nested = view.with_labels(10, |outer| {
            let outer: Vec<(Vec<u8>, Vec<u8>)> = outer
                .expect("there")
                .map(|(a, b)| (a.to_vec(), b.to_vec()))
                .collect();
            (outer, view.owned(2500))
        });
        assert_eq!((&nested.0, &nested.1), (&s[10], &s[2500]));
        assert!(view.with_labels(3000, |l| l.is_none()), "past the end");
        // The older layout reads the same.
        let legacy = legacy_set(9, &s);
        let mut old = SetIndex::default();
        assert_eq!(old.decode(TYPE_SERIES_SET, &legacy), Some(9));
        let view = SetView { index: &old };
        for i in [0, 1, 2999, 7] {
            assert_eq!(&view.owned(i), &s[i], "legacy series {i}");
        }
        // Either layout through the copy-out decoder.
        assert_eq!(
            decode_series_set(TYPE_SERIES_SET, &legacy).map(|d| d.1),
            Some(s.clone())
        );
        assert_eq!(
            decode_series_set(TYPE_SERIES_BLOCKS, &bytes).map(|d| d.1),
            Some(s)
        );
    }

    /// The blocks of a blocked set payload: (first byte, end, first series, series), read
    /// from the documented layout.
    fn blocks_of(payload: &[u8]) -> Vec<(usize, usize, usize, usize)> {
        let mut c = Cursor { b: payload, at: 8 };
        c.len().expect("count");
        let (mut out, mut series) = (Vec::new(), 0);
        while c.at < payload.len() {
            let start = c.at;
            let n = c.len().expect("series");
            let len = c.len().expect("length");
            c.take(len).expect("block");
            out.push((start, c.at, series, n));
            series += n;
        }
        out
    }

    #[test]
    fn a_damaged_block_reads_as_none_not_a_panic() {
        let s = long_sets(2000);
        let good = encode_sets(1, &s);
        let blocks = blocks_of(&good);
        assert!(blocks.len() >= 4, "{} blocks: a set of many", blocks.len());
        let mut rng = Rng(11);
        let (mut refused, mut damaged) = (0, 0);
        for _ in 0..300 {
            let mut bad = good.clone();
            let at = 8 + rng.below(bad.len() - 8);
            bad[at] ^= 1 << rng.below(8);
            let mut index = SetIndex::default();
            let Some(target) = index.decode(TYPE_SERIES_BLOCKS, &bad) else {
                refused += 1;
                continue;
            };
            // The target is before the flip; a damaged count or series count does not add
            // up to the blocks' and is refused, so a set that opens has all its series.
            assert_eq!(target, 1, "flip at {at}");
            let view = SetView { index: &index };
            assert_eq!(view.len(), s.len(), "flip at {at}");
            let hit = blocks
                .iter()
                .position(|&(start, end, _, _)| (start..end).contains(&at))
                .expect("a flip after the count is in a block");
            let (_, _, first, n) = blocks[hit];
            let mut none = 0u64;
            for (i, want) in s.iter().enumerate() {
                let got = view.with_labels(i, |l| {
                    l.map(|l| l.map(|(a, b)| (a.to_vec(), b.to_vec())).collect::<Vec<_>>())
                });
                let in_damaged = (first..first + n).contains(&i);
                match got {
                    // Only the damaged block's series are lost: those before it and after it
                    // read (blocks start afresh).
                    None => {
                        assert!(in_damaged, "series {i} unread, flip at {at} in {first}+{n}");
                        none += 1;
                    }
                    // A series of the damaged block may read, garbled or not (snappy keeps no
                    // checksum: the record's CRC is what catches this in the ring).
                    Some(_) if in_damaged => {}
                    Some(got) => assert_eq!(&got, want, "series {i}, flip at {at}"),
                }
            }
            // Each lost series is counted once.
            assert_eq!(index.take_unread(), none, "flip at {at}");
            // Read again from the start: the same series are lost, counted again.
            let again = (0..s.len())
                .filter(|&i| view.with_labels(i, |l| l.is_none()))
                .count();
            assert_eq!(u64::try_from(again).expect("fits"), none, "flip at {at}");
            assert_eq!(index.take_unread(), none);
            damaged += usize::from(none > 0);
        }
        assert!(damaged > 0, "no flip lost a series: {refused} refused");
        // A damaged count, or a block's series count, does not add up: refused whole.
        for at in [8, blocks[1].0] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let mut index = SetIndex::default();
            assert_eq!(index.decode(TYPE_SERIES_BLOCKS, &bad), None, "flip at {at}");
        }
    }

    #[test]
    fn series_sets_round_trip_and_share_repeated_labels() {
        for n in [0, 1, 2, 100] {
            let s = sets(n);
            let bytes = encode_sets(42, &s);
            let (target, got) = decode_series_set(TYPE_SERIES_BLOCKS, &bytes).expect("decodes");
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
        let (_, got) = decode_series_set(TYPE_SERIES_BLOCKS, &bytes).expect("decodes");
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
        /// How each decoder reads one payload: (blocked set, legacy set, samples, stamped).
        type Read = (
            Option<SeriesSet>,
            Option<SeriesSet>,
            Option<Samples>,
            Option<Vec<i64>>,
        );
        let read = |b: &[u8]| -> Read {
            let (mut values, mut ts) = (Vec::new(), Vec::new());
            let stamped = decode_stamped_into(b, &mut Vec::new(), &mut values, &mut ts);
            (
                decode_series_set(TYPE_SERIES_BLOCKS, b),
                decode_series_set(TYPE_SERIES_SET, b),
                decode_samples(b, &mut Vec::new()),
                stamped.map(|_| ts),
            )
        };
        // Samples a decoder accepts are whole: the values their count says, a timestamp each.
        let whole = |b: &[u8], (_, _, samples, stamps): &Read| {
            if let Some(got) = samples {
                let (_, _, n, _) = samples_head(b).expect("a decoded head");
                assert_eq!(got.values.len(), n);
            }
            if let Some(ts) = stamps {
                assert_eq!(Some(ts.len()), samples_head(b).map(|h| h.2));
            }
        };
        let originals = read(&good).0.expect("set");
        let mut rng = Rng(3);
        let mut changed = 0;
        for _ in 0..3000 {
            for (which, base) in [(0, &good), (1, &samples), (2, &stamped)] {
                let mut bad = base.clone();
                match rng.below(3) {
                    0 => {
                        // Cut short: refused by the decoder of its kind.
                        bad.truncate(rng.below(bad.len()));
                        let got = read(&bad);
                        match which {
                            0 => assert!(got.0.is_none(), "cut set at {}", bad.len()),
                            1 => assert!(got.2.is_none(), "cut samples at {}", bad.len()),
                            _ => assert!(got.3.is_none(), "cut stamped at {}", bad.len()),
                        }
                        whole(&bad, &got);
                    }
                    1 => {
                        let at = rng.below(bad.len());
                        bad[at] = rng.next().to_le_bytes()[0];
                        let got = read(&bad);
                        whole(&bad, &got);
                        if bad == *base {
                            assert_eq!(got, read(base), "the same bytes read the same");
                        } else if which == 0 && got.0.as_ref() != Some(&originals) {
                            changed += 1;
                        }
                    }
                    _ => {
                        bad.push(rng.next().to_le_bytes()[0]);
                        let got = read(&bad);
                        whole(&bad, &got);
                        match which {
                            // A byte past the blocks is a block head cut short.
                            0 => assert!(got.0.is_none(), "set with a byte more"),
                            // Samples end in padding bits: a byte more is not seen, and the
                            // values read as written (the record's length and CRC catch it).
                            1 => assert_eq!(got.2, read(base).2),
                            _ => assert_eq!(got.3, read(base).3),
                        }
                    }
                }
            }
        }
        // Some bytes replaced in a set made it read differently or not at all.
        assert!(changed > 0);
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
        view.owned(i)
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

    #[test]
    fn series_sets_are_encoded_as_the_released_format_wrote_them() {
        // Readers of rings written by earlier builds, and the other way round: the bytes of a
        // many-block set, hashed (FNV-1a), pinned to those the format's first release wrote.
        let s = long_sets(3000);
        let bytes = encode_sets(7, &s);
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!((bytes.len(), hash), (61_942, 0xd2c2_8c62_2c22_315d));
    }

    #[test]
    fn a_set_built_in_parts_reads_as_their_series_in_order() {
        // The scrape loop's set: the old set's unchanged series, this scrape's new ones
        // (duplicates filtered out) and the report series, each compressed as it came.
        let s = long_sets(4000);
        let push = |b: &mut SetBlocks, l: &Vec<(Vec<u8>, Vec<u8>)>| {
            b.push(l.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        };
        let (mut old, mut fresh, mut reports) = (
            SetBlocks::default(),
            SetBlocks::default(),
            SetBlocks::default(),
        );
        s[..1000].iter().for_each(|l| push(&mut old, l));
        s[1000..3995].iter().for_each(|l| push(&mut fresh, l));
        s[3995..].iter().for_each(|l| push(&mut reports, l));
        for b in [&mut old, &mut fresh, &mut reports] {
            b.finish();
        }
        let mut odd = SetBlocks::default();
        assert!(fresh.copy_into(&mut odd, |i| i % 2 == 1));
        odd.finish();
        let want: Vec<&Vec<(Vec<u8>, Vec<u8>)>> = s[..1000]
            .iter()
            .chain(s[1000..3995].iter().skip(1).step_by(2))
            .chain(&s[3995..])
            .collect();
        let mut payload = set_head(3, old.len() + odd.len() + reports.len());
        for b in [&old, &odd, &reports] {
            payload.extend_from_slice(b.blocks());
        }
        let (target, got) = decode_series_set(TYPE_SERIES_BLOCKS, &payload).expect("reads");
        assert_eq!(target, 3);
        assert_eq!(got.len(), want.len());
        assert!(got.iter().zip(&want).all(|(g, w)| g == *w));
        // Blocks held compressed while built: a fraction of the labels' bytes.
        let raw: usize = s[1000..3995]
            .iter()
            .flat_map(|l| l.iter().map(|(n, v)| n.len() + v.len()))
            .sum();
        assert!(
            fresh.blocks().len() * 3 < raw,
            "{} of {raw}",
            fresh.blocks().len()
        );
        fresh.release();
        assert!(fresh.is_empty() && fresh.blocks().is_empty());
    }
}
