//! The damage sweep of STYLE.md's WAL tests: a byte of a ring image flipped, or the end of the
//! file zeroed from a page boundary, and the ring opened again. Shared by the unit tests, which
//! try a sample of offsets (they also run under qemu), and `tests/wal_crash.rs`, which tries
//! every offset; it is `#[path]`-included there, so it uses only the public API.
//!
//! What a damaged copy must still deliver is predicted from the pristine image:
//! - a byte of a header copy: every record (the other copy is used, and the forward scan
//!   finds again what the damaged copy pointed past);
//! - a byte of a frame (head, payload, alignment; or a padding record) below the persisted
//!   head: every other record (the reader resyncs after it);
//! - a byte of a frame at or past the persisted head: every record before it. The recovery
//!   scan stops at the first frame that does not check out (a torn write and later damage
//!   look the same to it), so the records after it may be lost: they are allowed, not
//!   required;
//! - any other byte (stale bytes of earlier laps, the gap left at the wrap): every record.
//!
//! Whatever is delivered must be records of the pristine image, in order: damage never makes
//! up a record, and stale bytes never come back (invariant I1).

// Each of the two test crates that include this file uses a part of it.
#![allow(dead_code)]

use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use super::{format, Found, Ring};

/// The ring size of the images: the smallest ring.
pub const SIZE: u64 = 64 << 10;
const HEADER: usize = format::HEADER_SIZE;
const DATA: usize = 2 * format::HEADER_SIZE;

/// A record as compared: offset, kind, payload length and the payload's CRC32C.
pub type Rec = (u64, u8, usize, u32);

/// The record as compared.
pub fn rec(offset: u64, kind: u8, payload: &[u8]) -> Rec {
    (offset, kind, payload.len(), format::crc32c(payload))
}

/// Every record the ring delivers from its tail, in order.
pub fn delivered(ring: &mut Ring) -> Vec<Rec> {
    // A ring holds at most capacity / 24 records: any more and the reader is going round.
    let most = usize::try_from(ring.capacity() / 24).expect("fits") + 1;
    let mut out = Vec::new();
    let mut at = ring.tail();
    while let Found::Record { record, .. } = ring.read(at) {
        out.push(rec(record.offset, record.kind, record.payload));
        assert!(
            out.len() <= most,
            "more than {most} records: the reader loops"
        );
        at = record.next;
    }
    out
}

/// Payload `i`: `len` bytes that differ from one record to the next.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    let seed = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len as u64)
        .map(|j| (seed.wrapping_add(j.wrapping_mul(0x2545_f491)) >> 24).to_le_bytes()[0])
        .collect()
}

/// The payload length that makes a record of exactly `size` bytes (8-aligned, at least 24).
pub fn len_for(size: u64) -> usize {
    let len = usize::try_from(size).expect("fits") - format::RECORD_HEAD - 1;
    assert_eq!(format::record_size(len) as u64, size, "size {size}");
    len
}

fn data_left(ring: &Ring) -> u64 {
    ring.capacity() - ring.head() % ring.capacity()
}

/// Appends records until exactly `left` bytes remain before the data region's end (`left`
/// a multiple of 8, and the distance to it 0 or at least 24 bytes).
pub fn fill_until_left(ring: &mut Ring, left: u64, i: &mut u64) {
    while data_left(ring) != left {
        let rest = data_left(ring) - left;
        assert!(rest >= 24, "{rest} bytes cannot be filled");
        // 200-byte records, then one or two that land exactly (never a rest below 24).
        let size = match rest {
            425.. => 200,
            225..=424 => rest - 200,
            _ => rest,
        };
        ring.append(1, &payload(*i, len_for(size))).expect("append");
        *i += 1;
    }
}

/// A ring filled by the ring itself for one and a half laps: records of 0–600 bytes, a
/// padding record before the first wrap, a committed cursor, a sync every 40 records (both
/// header copies valid), and the last records past the persisted head. The ring file's bytes.
pub fn full_ring(dir: &Path) -> Vec<u8> {
    let mut ring = Ring::open(dir, SIZE).expect("open");
    let cap = ring.capacity();
    let endpoint = ring.consumer(0x5eed).expect("consumer");
    let mut i = 0u64;
    while ring.head() < cap + cap / 2 {
        let left = data_left(&ring);
        // Near the end of the first lap: a record 8 bytes too large for what is left.
        let len = if ring.head() < cap && (48..700).contains(&left) {
            usize::try_from(left).expect("fits") - format::RECORD_HEAD
        } else {
            usize::try_from(i * 37 % 600).expect("fits")
        };
        let kind = 1 + (i % 3).to_le_bytes()[0];
        let at = ring.append(kind, &payload(i, len)).expect("append");
        if i % 40 == 39 {
            endpoint.commit(at);
            ring.sync().expect("sync");
        }
        i += 1;
    }
    for _ in 0..5 {
        ring.append(2, &payload(i, 50)).expect("append");
        i += 1;
    }
    drop(endpoint);
    drop(ring);
    std::fs::read(dir.join("ring")).expect("read the ring")
}

/// A ring whose records fill a little over one lap and were then all dropped (tail = head,
/// written into both header copies by hand, as recovery leaves a ring whose two copies are
/// lost), then 2 KiB of new records written across the next wrap, with the 16 bytes left
/// before it skipped, two syncs and records past the persisted head. Every other byte of the
/// data region holds stale records of earlier laps. Few live records make opening it cheap
/// (~0.25 ms in a debug build, where a full ring takes ~2 ms), so that every offset can be
/// tried. The ring file's bytes.
pub fn small_live_ring(dir: &Path) -> Vec<u8> {
    let path = dir.join("ring");
    let mut i = 0u64;
    let (cap, head) = {
        let mut ring = Ring::open(dir, SIZE).expect("open");
        let cap = ring.capacity();
        while ring.head() < cap || data_left(&ring) > 1504 {
            ring.append(3, &payload(i, usize::try_from(i * 13 % 200).expect("fits")))
                .expect("append");
            i += 1;
        }
        ring.sync().expect("sync");
        (cap, ring.head())
    };
    let mut bytes = std::fs::read(&path).expect("read");
    let newest = (0..2)
        .filter_map(|c| format::Header::decode(&bytes[c * HEADER..(c + 1) * HEADER]))
        .max_by_key(|h| h.generation)
        .expect("a synced header");
    assert_eq!(newest.head, head);
    for c in 0..2 {
        let empty = format::Header {
            tail: head,
            generation: newest.generation + 1 + c as u64,
            ..newest.clone()
        };
        empty.encode(&mut bytes[c * HEADER..(c + 1) * HEADER]);
    }
    std::fs::write(&path, &bytes).expect("write");
    let mut ring = Ring::open(dir, SIZE).expect("reopen");
    assert_eq!((ring.tail(), ring.head()), (head, head), "emptied");
    fill_until_left(&mut ring, 16, &mut i);
    let skipped = ring.head();
    let at = ring.append(1, &payload(i, 100)).expect("append");
    assert_eq!(at, skipped + 16, "the 16 bytes before the wrap are skipped");
    assert_eq!(at % cap, 0);
    for k in 0..9 {
        ring.append(2, &payload(i + k, usize::try_from(k * 29).expect("fits")))
            .expect("append");
        if k == 2 || k == 5 {
            ring.sync().expect("sync");
        }
    }
    drop(ring);
    std::fs::read(&path).expect("read")
}

/// A frame of the pristine image between its tail and head: a record, or padding.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: u64,
    size: u64,
    record: Option<Rec>,
}

/// What a pristine ring image delivers and where its bytes are.
#[derive(Debug)]
pub struct Layout {
    pub capacity: u64,
    /// The records it delivers, in order.
    pub records: Vec<Rec>,
    /// What it delivers when its newer header copy is unreadable (a superset of `records`).
    older: Vec<Rec>,
    frames: Vec<Frame>,
    /// The head in the newer header copy: frames from it on are found by the recovery scan.
    pub persisted_head: u64,
    /// The newer header copy (0 = A, 1 = B).
    pub newer: usize,
}

/// What a damaged copy must deliver (`required`) and may deliver (`allowed`).
#[derive(Debug)]
pub struct Expect<'a> {
    pub required: Vec<Rec>,
    pub allowed: &'a [Rec],
    /// Which part of the file the damage hit.
    pub class: Class,
}

/// Which part of the file a byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    NewerHeader,
    OlderHeader,
    /// A record or padding frame below the persisted head.
    Frame,
    /// A frame at or past the persisted head.
    ScannedFrame,
    /// Stale bytes, the gap before the wrap, or unused bytes.
    Other,
}

impl Layout {
    /// Reads a pristine image: it must open, have two valid header copies, and deliver
    /// exactly the frames that format.rs alone finds between its tail and head.
    pub fn new(image: &[u8]) -> Layout {
        let mut ring = Ring::from_image(image).expect("the pristine image opens");
        let records = delivered(&mut ring);
        let (cap, tail, head) = (ring.capacity(), ring.tail(), ring.head());
        let mut frames = Vec::new();
        let mut at = tail;
        while at < head {
            let left = cap - at % cap;
            if left < format::MIN_RECORD as u64 {
                at += left;
                continue;
            }
            let pos = DATA + usize::try_from(at % cap).expect("fits");
            let end = pos + usize::try_from(left).expect("fits");
            let r = format::decode_record(&image[pos..end], at).expect("a pristine frame");
            let record = (r.kind != format::TYPE_PAD).then(|| rec(at, r.kind, r.payload));
            let size = r.size as u64;
            frames.push(Frame {
                offset: at,
                size,
                record,
            });
            at += size;
        }
        let walked: Vec<Rec> = frames.iter().filter_map(|f| f.record).collect();
        assert_eq!(
            walked, records,
            "the reader delivers the frames, nothing else"
        );
        let copies: Vec<format::Header> = (0..2)
            .map(|c| format::Header::decode(&image[c * HEADER..(c + 1) * HEADER]))
            .collect::<Option<_>>()
            .expect("both header copies are valid");
        let newer = usize::from(copies[1].generation > copies[0].generation);
        let mut broken = image.to_vec();
        // The generation: its CRC no longer checks out.
        broken[newer * HEADER + 24] ^= 0xff;
        let older = delivered(&mut Ring::from_image(&broken).expect("opens"));
        assert!(
            records.iter().all(|r| older.contains(r)),
            "the older copy and the scan find every record"
        );
        Layout {
            capacity: cap,
            records,
            older,
            frames,
            persisted_head: copies[newer].head,
            newer,
        }
    }

    /// Whether the pristine image has a padding record, a gap skipped before the wrap, and
    /// records on both sides of the persisted head: what a sweep should cover.
    pub fn shape(&self) -> (bool, bool, bool) {
        let pad = self.frames.iter().any(|f| f.record.is_none());
        let gap = self
            .frames
            .windows(2)
            .any(|w| w[0].offset + w[0].size != w[1].offset);
        let both = self
            .records
            .first()
            .is_some_and(|r| r.0 < self.persisted_head)
            && self
                .records
                .last()
                .is_some_and(|r| r.0 >= self.persisted_head);
        (pad, gap, both)
    }

    /// The file bytes a sampled sweep must not skip: in each header copy the fields, the
    /// CRC, the first unused byte and the last; in the first, last and padding frames and
    /// those on either side of the persisted head, the 16 head bytes, the type, the first
    /// payload byte and the last byte.
    pub fn sample(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for c in 0..2 {
            for at in [0, 7, 8, 12, 16, 24, 32, 40, 48, 56, 64, 67, 68, HEADER - 1] {
                out.push(c * HEADER + at);
            }
        }
        let scanned = self
            .frames
            .iter()
            .position(|f| f.offset >= self.persisted_head)
            .unwrap_or(self.frames.len());
        let mut picked: Vec<usize> = vec![0, self.frames.len().saturating_sub(1), scanned];
        picked.push(scanned.saturating_sub(1));
        picked.extend((0..self.frames.len()).filter(|&i| self.frames[i].record.is_none()));
        for f in picked.iter().filter_map(|&i| self.frames.get(i)) {
            let start = DATA + usize::try_from(f.offset % self.capacity).expect("fits");
            let size = usize::try_from(f.size).expect("fits");
            out.extend((0..18).map(|k| start + k));
            out.push(start + size - 1);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The frame holding data-region byte `pos` (frames never wrap).
    fn frame_at(&self, pos: u64) -> Option<&Frame> {
        self.frames.iter().find(|f| {
            let start = f.offset % self.capacity;
            (start..start + f.size).contains(&pos)
        })
    }

    fn except(&self, keep: impl Fn(&Rec) -> bool) -> Vec<Rec> {
        self.records.iter().copied().filter(keep).collect()
    }

    /// What must survive a flip of file byte `at`.
    pub fn flipped(&self, at: usize) -> Expect<'_> {
        if at < DATA {
            let newer = at / HEADER == self.newer;
            return Expect {
                required: self.records.clone(),
                allowed: if newer { &self.older } else { &self.records },
                class: if newer {
                    Class::NewerHeader
                } else {
                    Class::OlderHeader
                },
            };
        }
        let pos = (at - DATA) as u64;
        match self.frame_at(pos) {
            None => Expect {
                required: self.records.clone(),
                allowed: &self.records,
                class: Class::Other,
            },
            Some(f) if f.offset < self.persisted_head => Expect {
                required: self.except(|r| r.0 != f.offset),
                allowed: &self.records,
                class: Class::Frame,
            },
            Some(f) => Expect {
                required: self.except(|r| r.0 < f.offset),
                allowed: &self.records,
                class: Class::ScannedFrame,
            },
        }
    }

    /// What must survive zeroing the file from byte `from` to its end (a torn file): the
    /// records wholly before `from` that the reader or the scan can still reach.
    pub fn zeroed_from(&self, from: usize) -> Expect<'_> {
        if from < DATA {
            return Expect {
                required: Vec::new(),
                allowed: &self.older,
                class: Class::Other,
            };
        }
        let cut = (from - DATA) as u64;
        let before = |f: &Frame| f.offset % self.capacity + f.size <= cut;
        // The scan follows frames from the persisted head until the first one that is gone.
        let scanned_to = self
            .frames
            .iter()
            .find(|f| f.offset >= self.persisted_head && !before(f))
            .map_or(u64::MAX, |f| f.offset);
        let required = self
            .frames
            .iter()
            .filter(|f| before(f) && (f.offset < self.persisted_head || f.offset < scanned_to))
            .filter_map(|f| f.record)
            .collect();
        Expect {
            required,
            allowed: &self.records,
            class: Class::Other,
        }
    }

    /// Opens the damaged copy with `open` (in a panic guard), reads it all and checks it
    /// against `expect`; returns how many records it delivered.
    pub fn check<E: Display>(
        &self,
        expect: &Expect<'_>,
        open: impl FnOnce() -> Result<Ring, E>,
    ) -> Result<usize, String> {
        let got = catch_unwind(AssertUnwindSafe(|| {
            open()
                .map(|mut ring| delivered(&mut ring))
                .map_err(|e| e.to_string())
        }))
        .map_err(|_| "panicked".to_owned())?
        .map_err(|e| format!("refused: {e}"))?;
        if let Some(w) = got.windows(2).find(|w| w[0].0 >= w[1].0) {
            return Err(format!("out of order: {:?} then {:?}", w[0], w[1]));
        }
        let known = |r: &Rec| {
            let i = expect.allowed.binary_search_by_key(&r.0, |a| a.0);
            i.is_ok_and(|i| expect.allowed[i] == *r)
        };
        if let Some(r) = got.iter().find(|r| !known(r)) {
            return Err(format!("delivered {r:?}, not a record of the image"));
        }
        let missing: Vec<&Rec> = expect
            .required
            .iter()
            .filter(|r| got.binary_search_by_key(&r.0, |g| g.0).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} of {} records missing ({:?} damage), the first {:?}",
                missing.len(),
                expect.required.len(),
                expect.class,
                missing[0]
            ));
        }
        Ok(got.len())
    }
}
