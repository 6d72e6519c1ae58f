//! The ring on real files in a temporary directory and on in-memory images: creation,
//! locking, round trips across reopen, crash recovery, wrap-around, damage, arbitrary file
//! contents; hand-built images (torn header and record, bad CRC, the three ways to wrap, a
//! record too large, a foreign file, another format version); a random-operation model
//! test against a `VecDeque`; and the damage sweep on a sample of offsets ([`damage`]).

// Test data is made of small counters cut to bytes on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::collections::VecDeque;

use super::*;
use crate::parse::testkit::Rng;

mod damage;
mod file;

use super::testkit::TempDir;

const SIZE: u64 = 64 << 10;

/// A record as the tests compare it: offset, kind, payload length and CRC (short to print).
type Rec = (u64, u8, usize, u32);

fn rec(offset: u64, kind: u8, payload: &[u8]) -> Rec {
    (offset, kind, payload.len(), format::crc32c(payload))
}

/// Every record from the tail on.
fn all(ring: &mut Ring) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = ring.tail();
    while let Found::Record { record, .. } = ring.read(at) {
        out.push(rec(record.offset, record.kind, record.payload));
        at = record.next;
    }
    out
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// Appends and returns the record as compared.
fn put(ring: &mut Ring, kind: u8, p: &[u8]) -> Rec {
    rec(ring.append(kind, p).expect("append"), kind, p)
}

#[test]
fn a_new_ring_is_fully_allocated_and_locked() {
    let dir = TempDir::new("new");
    let ring = Ring::open(&dir.0, SIZE).expect("open");
    let meta = std::fs::metadata(dir.0.join(RING_FILE)).expect("stat");
    assert_eq!(meta.len(), SIZE);
    use std::os::unix::fs::MetadataExt;
    assert!(meta.blocks() * 512 >= SIZE, "allocated, not sparse");
    let pid = std::fs::read_to_string(dir.0.join(LOCK_FILE)).expect("lock file");
    assert_eq!(pid.trim(), std::process::id().to_string());
    match Ring::open(&dir.0, SIZE) {
        Err(e @ WalError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("in use by another promlet"), "{msg}");
            assert!(
                msg.contains(&format!("pid {}", std::process::id())),
                "{msg}"
            );
        }
        other => panic!("second open: {other:?}"),
    }
    drop(ring);
    Ring::open(&dir.0, SIZE).expect("the lock goes with the ring");
}

#[test]
fn sizes_are_checked() {
    let dir = TempDir::new("sizes");
    let e = Ring::open(&dir.0, 1000).expect_err("too small");
    assert!(e.to_string().contains("below the minimum"), "{e}");
    drop(Ring::open(&dir.0, SIZE).expect("open"));
    let e = Ring::open(&dir.0, 2 * SIZE).expect_err("other size");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("is {SIZE} bytes")) && msg.contains(&(2 * SIZE).to_string()),
        "{msg}"
    );
}

#[test]
fn records_survive_sync_and_reopen_with_cursors() {
    let dir = TempDir::new("reopen");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let beef = ring.consumer(0xbeef).expect("consumer");
    let mut written = Vec::new();
    for i in 0..50 {
        let p = payload(i, (i as usize * 7) % 90);
        written.push(put(&mut ring, 1 + (i % 3) as u8, &p));
    }
    assert_eq!(all(&mut ring), written);
    let c = ring.consumer(0xfeed).expect("consumer");
    assert_eq!(
        c.position(),
        ring.head(),
        "a new endpoint starts at the head"
    );
    drop(c);
    beef.commit(written[10].0);
    beef.commit(written[5].0);
    ring.sync().expect("sync");
    drop(beef);
    drop(ring);
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    assert_eq!(all(&mut ring), written);
    assert_eq!(ring.endpoint(0xbeef).map(|e| e.cursor), Some(written[10].0));
    assert_eq!(
        ring.consumer(0xbeef).expect("again").position(),
        written[10].0
    );
    assert_eq!(ring.stats().recovered_records, 0);
}

/// Issue 17: an endpoint new to the ring, in a process killed before its first sync, is known
/// to the next process at the head where it started, so it is sent what the dead process
/// appended (it used to start after it, as a new endpoint again).
#[test]
fn a_new_endpoint_killed_before_the_first_sync_is_sent_what_that_process_appended() {
    let dir = TempDir::new("new-endpoint-crash");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let before = put(&mut ring, 1, &payload(0, 20));
    let start = ring.head();
    let c = ring.consumer(0xfeed).expect("consumer");
    assert_eq!(c.position(), start);
    let mut written = Vec::new();
    for i in 1..12 {
        written.push(put(&mut ring, 1, &payload(i, 30)));
    }
    // `kill -9`: the mapping as it is, no sync, no drop.
    let image = ring.image();
    std::mem::forget(c);
    let mut ring = Ring::from_image(&image).expect("reopen");
    assert_eq!(ring.endpoint(0xfeed).map(|e| e.cursor), Some(start));
    let c = ring.consumer(0xfeed).expect("consumer again");
    assert_eq!(c.position(), start, "not at the new head {}", ring.head());
    let mut got = Vec::new();
    let mut at = c.position();
    while let Found::Record { record, .. } = ring.read(at) {
        got.push(rec(record.offset, record.kind, record.payload));
        at = record.next;
    }
    assert_eq!(got, written);
    assert_ne!(got.first(), Some(&before));
}

/// A commit is in a header at once (kill-safe), a request in flight too; the next process
/// sees where that request ended until a commit passes it.
#[test]
fn commits_and_the_request_in_flight_survive_a_crash_without_a_sync() {
    let dir = TempDir::new("commit-crash");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let c = ring.consumer(0xbeef).expect("consumer");
    let written: Vec<Rec> = (0..20)
        .map(|i| put(&mut ring, 1, &payload(i, 25)))
        .collect();
    ring.sync().expect("sync");
    assert_eq!(
        ring.endpoint(0xbeef).map(|e| e.cursor),
        Some(0),
        "nothing committed yet"
    );
    let more: Vec<Rec> = (20..30)
        .map(|i| put(&mut ring, 2, &payload(i, 9)))
        .collect();
    c.commit(written[12].0);
    c.in_flight().set(more[3].0);
    let image = ring.image();
    drop(c);
    let mut ring = Ring::from_image(&image).expect("reopen");
    assert_eq!(ring.endpoint(0xbeef).map(|e| e.cursor), Some(written[12].0));
    let c = ring.consumer(0xbeef).expect("consumer again");
    assert_eq!(c.position(), written[12].0);
    assert_eq!(c.unacknowledged(), Some(more[3].0));
    // Acknowledged: the next process has nothing in flight.
    c.commit(more[3].0);
    let image = ring.image();
    drop(c);
    let mut ring = Ring::from_image(&image).expect("reopen again");
    let c = ring.consumer(0xbeef).expect("consumer");
    assert_eq!(c.position(), more[3].0);
    assert_eq!(c.unacknowledged(), None);
}

/// An endpoint a reload removed is forgotten in a header at once: added back, even after a
/// crash, it is a new endpoint and starts at the head.
#[test]
fn a_removed_endpoint_is_forgotten_at_once_and_added_back_starts_at_the_head() {
    let dir = TempDir::new("removed-endpoint");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    drop(ring.consumer(0xaaaa).expect("consumer"));
    drop(ring.consumer(0xbbbb).expect("consumer"));
    for i in 0..5 {
        put(&mut ring, 1, &payload(i, 25));
    }
    ring.retain_cursors(&[0xbbbb]);
    let image = ring.image();
    let mut ring = Ring::from_image(&image).expect("reopen");
    assert_eq!(ring.endpoint(0xaaaa), None);
    assert_eq!(ring.endpoint(0xbbbb).map(|e| e.cursor), Some(0));
    let head = ring.head();
    assert_eq!(ring.consumer(0xaaaa).expect("added back").position(), head);
}

/// The largest `n` whose [`testkit::labels`] set takes at most `bytes` in a ring.
fn series_for_set_bytes(bytes: u64) -> (usize, u64) {
    let mut ring = Ring::from_image(&vec![0u8; 16 << 20]).expect("ring");
    let (mut n, mut got) = (16usize, 0);
    loop {
        let mut chain = Chain::default();
        let at = super::testkit::write_set(&mut ring, &mut chain, 9, n + 16);
        let size = ring.head() - at;
        if size > bytes {
            return (n, got);
        }
        (n, got) = (n + 16, size);
    }
}

/// One target's scrapes into a ring of `size` bytes whose set takes `set_bytes`: the share of
/// the bytes appended (after the first lap) that samples records take, and the set copies.
fn samples_share(size: u64, set_bytes: u64) -> (f64, u64) {
    let (n, _) = series_for_set_bytes(set_bytes);
    let mut ring =
        Ring::from_image(&vec![0u8; usize::try_from(size).expect("fits")]).expect("ring");
    let mut chain = Chain::default();
    super::testkit::write_set(&mut ring, &mut chain, 9, n);
    let mut k = 0u64;
    let mut scrape = |ring: &mut Ring, chain: &mut Chain| {
        // Every value changes every scrape: the samples records are as large as they get.
        let values: Vec<f64> = (0..n).map(|i| ((k * 7 + i as u64) as f64).sin()).collect();
        ring.append_samples(chain, i64::try_from(k).expect("fits") * 15_000, &values)
            .expect("samples");
        k += 1;
    };
    while ring.head() < 2 * ring.capacity() {
        scrape(&mut ring, &mut chain);
    }
    let (before, head) = (ring.stats(), ring.head());
    while ring.head() < head + 4 * ring.capacity() {
        scrape(&mut ring, &mut chain);
    }
    let after = ring.stats();
    let copies = after.series_sets_rewritten - before.series_sets_rewritten;
    let appended = after.bytes_appended - before.bytes_appended;
    let set_record = chain.set_bytes;
    #[allow(clippy::cast_precision_loss)]
    let share = 1.0 - (copies * set_record) as f64 / appended as f64;
    (share, copies)
}

/// Issue 17 item 3: samples records keep at least 80 % of any ring at least 8 times its
/// targets' sets (DESIGN.md's budget); a set larger than an eighth of the ring is no longer
/// copied at every scrape.
#[test]
fn samples_keep_four_fifths_of_a_ring_eight_times_the_sets() {
    let size = 256 << 10;
    let capacity = size - format::DATA_START;
    for eighths in [1u64, 2, 4] {
        let set_bytes = capacity / 8 / eighths;
        let (share, copies) = samples_share(size, set_bytes);
        assert!(
            share >= 0.80,
            "a set of {set_bytes} bytes in a {size}-byte ring: samples take {share:.3} ({copies} set copies)"
        );
    }
    // Under eight times (the ring is four times the set): fewer copies than scrapes, and a
    // fixed eighth would have copied the set at every scrape.
    let (share, copies) = samples_share(size, capacity / 4);
    assert!(
        share >= 0.55,
        "samples take {share:.3} ({copies} set copies)"
    );
}

#[test]
fn the_copy_distance_is_five_times_the_sets_within_an_eighth_and_five_eighths() {
    let c = 1 << 20;
    assert_eq!(rewrite_distance(c, 0), c / 8);
    assert_eq!(rewrite_distance(c, c / 100), c / 8);
    assert_eq!(rewrite_distance(c, c / 10), c / 10 * 5);
    assert_eq!(rewrite_distance(c, c / 8), c / 8 * 5);
    assert_eq!(rewrite_distance(c, c), c / 8 * 5);
    assert_eq!(capacity_for_sets(c / 8), c);
}

#[test]
fn records_appended_after_the_last_sync_are_recovered() {
    let dir = TempDir::new("crash");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(put(&mut ring, 1, &payload(i, 40)));
    }
    ring.sync().expect("sync");
    for i in 10..25 {
        written.push(put(&mut ring, 2, &payload(i, 13)));
    }
    // A crash: no sync, no header write; the mapping's pages are in the page cache.
    drop(ring);
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    assert_eq!(ring.stats().recovered_records, 15);
    assert_eq!(all(&mut ring), written);
    let last = written.last().expect("written").0;
    assert_eq!(ring.head(), last + format::record_size(13) as u64);
}

#[test]
fn a_full_ring_drops_the_oldest_records_and_counts_them() {
    let dir = TempDir::new("wrap");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let mut rng = Rng(42);
    let mut written = Vec::new();
    for i in 0..3000 {
        let p = payload(i, rng.below(700));
        written.push(put(&mut ring, 3, &p));
        // Syncs (every second in promlet) come well within a lap (here ~18 KB of a 56 KB ring).
        if i % 50 == 0 {
            ring.sync().expect("sync");
        }
    }
    let held = all(&mut ring);
    assert!(held.len() > 100, "{} held", held.len());
    // What is held is exactly the newest records, in order, nothing missing between them.
    assert_eq!(held[..], written[written.len() - held.len()..]);
    let stats = ring.stats();
    assert_eq!(
        stats.records_overwritten as usize,
        written.len() - held.len()
    );
    assert!(ring.head() - ring.tail() <= ring.capacity());
    assert!(ring.head() > 4 * ring.capacity(), "wrapped several times");
    // A reader behind the tail starts at the tail and is told how much it lost.
    match ring.read(0) {
        Found::Record { record, lost } => {
            assert_eq!(record.offset, held[0].0);
            assert_eq!(lost, held[0].0);
        }
        Found::End => panic!("records are held"),
    }
    // And it all comes back after a crash mid-lap (up to 49 records since the last sync).
    drop(ring);
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    assert_eq!(all(&mut ring), held);
}

#[test]
fn a_damaged_record_is_skipped_and_counted() {
    let dir = TempDir::new("damage");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(put(&mut ring, 1, &payload(i, 50)));
    }
    ring.sync().expect("sync");
    drop(ring);
    // Flip a payload byte of record 7 on disk.
    let path = dir.0.join(RING_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = usize::try_from(DATA_START + written[7].0).expect("fits") + 20;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    let mut expected = written.clone();
    expected.remove(7);
    assert_eq!(all(&mut ring), expected);
    assert_eq!(ring.stats().damaged_skips, 1);
}

#[test]
fn a_torn_header_falls_back_to_the_other_copy() {
    let dir = TempDir::new("header");
    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
    let mut written = Vec::new();
    for round in 0..3 {
        for i in 0..5 {
            let n = round * 5 + i;
            written.push(put(&mut ring, 1, &payload(n, 30)));
        }
        ring.sync().expect("sync");
    }
    let newest = ring.w.shared.sync.lock().expect("lock").slot;
    drop(ring);
    let path = dir.0.join(RING_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[newest * HEADER_SIZE + 33] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let mut ring = Ring::open(&dir.0, SIZE).expect("reopen");
    // The older copy points five records earlier; the scan finds them again.
    assert_eq!(ring.stats().recovered_records, 5);
    assert_eq!(all(&mut ring), written);
}

#[test]
fn any_file_content_opens_without_panicking() {
    let dir = TempDir::new("garbage");
    drop(Ring::open(&dir.0, SIZE).expect("create"));
    let path = dir.0.join(RING_FILE);
    let mut rng = Rng(7);
    for round in 0..20 {
        let mut bytes = vec![0u8; usize::try_from(SIZE).expect("fits")];
        match round % 3 {
            // Pure noise is not a ring: refused. With the magic in place it is a damaged one.
            0 => {
                bytes.iter_mut().for_each(|b| *b = rng.next() as u8);
                std::fs::write(&path, &bytes).expect("write");
                let e = Ring::open(&dir.0, SIZE).expect_err("noise");
                assert!(e.to_string().contains("is not a promlet ring"), "{e}");
                bytes[..8].copy_from_slice(format::MAGIC);
            }
            // A valid ring with noise sprinkled over it.
            _ => {
                std::fs::write(&path, &bytes).expect("reset");
                {
                    let mut ring = Ring::open(&dir.0, SIZE).expect("open");
                    for i in 0..200 {
                        ring.append(1, &payload(i, rng.below(300))).expect("append");
                    }
                    ring.sync().expect("sync");
                }
                bytes = std::fs::read(&path).expect("read");
                for _ in 0..rng.below(50) + 1 {
                    let at = rng.below(bytes.len());
                    bytes[at] = rng.next() as u8;
                }
            }
        }
        std::fs::write(&path, &bytes).expect("write");
        let mut ring = Ring::open(&dir.0, SIZE).expect("opens");
        let held = all(&mut ring);
        for w in held.windows(2) {
            assert!(w[0].0 < w[1].0, "offsets grow");
        }
        // Appending over whatever was there works and reads back.
        let after = put(&mut ring, 9, b"after");
        assert!(all(&mut ring).contains(&after));
    }
}

/// A fresh ring of `SIZE` bytes in memory.
fn fresh() -> Ring {
    Ring::from_image(&vec![0u8; SIZE as usize]).expect("ring")
}

/// The ring as `kill -9` leaves it: every byte of the mapping, the header of the last sync.
fn crash(ring: &Ring) -> Ring {
    Ring::from_image(&ring.image()).expect("reopen")
}

/// The header copy the ring last wrote, or read when it opened.
fn header_copy(ring: &Ring) -> usize {
    ring.w.shared.sync.lock().expect("lock").slot
}

/// Where the record at logical `offset` starts in the file.
fn file_pos(ring: &Ring, offset: u64) -> usize {
    (DATA_START + offset % ring.capacity()) as usize
}

/// Appends records of 30–129 bytes, numbered from `*i`.
fn put_some(ring: &mut Ring, written: &mut Vec<Rec>, n: u64, i: &mut u64) {
    for _ in 0..n {
        written.push(put(ring, 1, &payload(*i, 30 + (*i as usize * 7) % 100)));
        *i += 1;
    }
}

/// I3: a header write cut short (only its first bytes new) leaves the other copy in charge,
/// whichever copy was being written: the scan finds the records appended since the other
/// copy's sync, and the header written on open goes to the torn copy, never over the good one.
#[test]
fn a_torn_header_write_to_either_copy_leaves_the_other_in_charge() {
    for torn in [0, 1] {
        let mut ring = fresh();
        let (mut written, mut i) = (Vec::new(), 0);
        // The first sync writes copy A (a new ring reads as if B were current).
        while 1 - header_copy(&ring) != torn || ring.stats().syncs < 2 {
            put_some(&mut ring, &mut written, 5, &mut i);
            ring.sync().expect("sync");
        }
        put_some(&mut ring, &mut written, 7, &mut i);
        let before = ring.image();
        ring.sync().expect("sync");
        let after = ring.image();
        let copy = torn * HEADER_SIZE..(torn + 1) * HEADER_SIZE;
        assert_ne!(
            before[copy.clone()],
            after[copy.clone()],
            "the sync wrote copy {torn}"
        );
        // No cursors: a header's bytes are 48 of fields and 4 of CRC. Cut after part of the
        // magic, the version, the head, all but the CRC, part of the CRC.
        for cut in [4, 12, 36, 48, 50] {
            let mut image = before.clone();
            image[copy.start..copy.start + cut]
                .copy_from_slice(&after[copy.start..copy.start + cut]);
            let mut ring = Ring::from_image(&image).expect("opens");
            // Opening wrote its epoch's header over the torn copy, never over the good one.
            assert_eq!(
                header_copy(&ring),
                torn,
                "copy {torn} cut at {cut}: rewritten"
            );
            assert_eq!(all(&mut ring), written, "copy {torn} cut at {cut}");
            assert_eq!(ring.stats().recovered_records, 7);
            let good = image[(1 - torn) * HEADER_SIZE..(2 - torn) * HEADER_SIZE].to_vec();
            let now = ring.image();
            assert_eq!(
                now[(1 - torn) * HEADER_SIZE..(2 - torn) * HEADER_SIZE],
                good[..]
            );
            put(&mut ring, 1, b"after");
            ring.sync().expect("sync");
            assert_eq!(header_copy(&ring), 1 - torn, "then the copies alternate");
        }
    }
}

/// A record only partly written when the process died (its first `cut` bytes new, the rest
/// what was there: zeros, or an earlier lap): recovery stops before it, delivers everything
/// before it, and the next record goes where it was.
#[test]
fn a_torn_last_record_ends_recovery_before_it() {
    for lap in [0, 1] {
        // A 200-byte payload: 16 bytes of head, the type, 200 of payload, 7 of alignment.
        for cut in [4, 12, 16, 17, 100, 216] {
            let mut ring = fresh();
            let (mut written, mut i) = (Vec::new(), 0);
            while ring.head() < lap * ring.capacity() + 3000 {
                put_some(&mut ring, &mut written, 1, &mut i);
            }
            ring.sync().expect("sync");
            put_some(&mut ring, &mut written, 3, &mut i);
            let before = ring.image();
            let last = put(&mut ring, 2, &payload(999, 200));
            let at = file_pos(&ring, last.0);
            let mut image = before;
            image[at..at + cut].copy_from_slice(&ring.image()[at..at + cut]);
            let mut ring = Ring::from_image(&image).expect("opens");
            let held = all(&mut ring);
            let want: Vec<Rec> = written
                .iter()
                .copied()
                .filter(|r| r.0 >= held[0].0)
                .collect();
            assert_eq!(held, want, "lap {lap}, cut {cut}");
            assert_eq!(
                *held.last().expect("held"),
                *written.last().expect("written")
            );
            assert_eq!(ring.head(), last.0, "lap {lap}, cut {cut}");
            assert_eq!(ring.stats().recovered_records, 3);
            let again = put(&mut ring, 3, b"again");
            assert_eq!(again.0, last.0);
            assert_eq!(all(&mut ring).last(), Some(&again));
        }
    }
}

/// I1: a record whose CRC field does not match its (intact) bytes is not read. Below the
/// persisted head the reader skips it, counts it, reports the bytes lost, and delivers the
/// next one. Past the persisted head the recovery scan stops at it: everything before it is
/// delivered.
#[test]
fn a_record_with_a_bad_crc_is_skipped_and_counted() {
    let mut ring = fresh();
    let (mut written, mut i) = (Vec::new(), 0);
    put_some(&mut ring, &mut written, 20, &mut i);
    ring.sync().expect("sync");
    put_some(&mut ring, &mut written, 5, &mut i);
    let image = ring.image();
    let crc_of = |k: usize| file_pos(&ring, written[k].0) + 4;

    let mut bad = image.clone();
    bad[crc_of(7)] ^= 0x01;
    let mut damaged = Ring::from_image(&bad).expect("opens");
    let mut want = written.clone();
    want.remove(7);
    assert_eq!(all(&mut damaged), want);
    assert_eq!(damaged.stats().damaged_skips, 1);
    match damaged.read(written[7].0) {
        Found::Record { record, lost } => {
            assert_eq!(record.offset, written[8].0);
            assert_eq!(lost, written[8].0 - written[7].0);
        }
        Found::End => panic!("the next record"),
    }

    let mut bad = image.clone();
    bad[crc_of(22)] ^= 0x01;
    let mut scanned = Ring::from_image(&bad).expect("opens");
    let held = all(&mut scanned);
    assert_eq!(held[..22], written[..22]);
    assert!(!held.contains(&written[22]));
}

/// A record never wraps (format.rs). One that ends exactly at the data region's end is
/// followed by the next lap's first record at data byte 0; fewer than 24 bytes left are
/// skipped and left as they were; 24 or more that the record does not fit get a padding
/// record. Each seen by the reader, by the recovery scan across the wrap after a crash, and
/// in the bytes.
#[test]
fn records_wrap_by_an_exact_fit_a_skip_or_a_padding_record() {
    // (bytes left before the region's end, size of the next record)
    for (left, size) in [
        (24, 24),
        (200, 200),
        (8, 24),
        (16, 200),
        (24, 32),
        (40, 48),
        (200, 208),
    ] {
        let mut ring = fresh();
        let cap = ring.capacity();
        let mut i = 0;
        // Past the first lap, so that skipped bytes hold an earlier lap's.
        while ring.head() < cap + 1000 {
            ring.append(1, &payload(i, 150)).expect("append");
            i += 1;
        }
        damage::fill_until_left(&mut ring, left, &mut i);
        ring.sync().expect("sync");
        let start = ring.head();
        let before = ring.image();
        let record = put(&mut ring, 5, &payload(77, damage::len_for(size)));
        let next = put(&mut ring, 6, b"the next one");
        let image = ring.image();
        let end = SIZE as usize;
        let case = format!("{left} left, a record of {size}");
        if size <= left {
            assert_eq!(record.0, start, "{case}");
            let frame = format::decode_record(&image[end - left as usize..end], start);
            assert_eq!(frame.map(|f| f.size as u64), Ok(size), "{case}");
            if size == left {
                assert_eq!(next.0, start + size, "{case}: exact fit");
                assert_eq!(next.0 % cap, 0, "{case}");
            }
        } else {
            assert_eq!(record.0, start + left, "{case}");
            assert_eq!(record.0 % cap, 0, "{case}: at data byte 0");
            let gap = &image[end - left as usize..end];
            if left < format::MIN_RECORD as u64 {
                assert_eq!(gap, &before[end - left as usize..end], "{case}: left alone");
            } else {
                let pad = format::decode_record(gap, start).expect("a padding record");
                assert_eq!(
                    (pad.kind, pad.size as u64),
                    (format::TYPE_PAD, left),
                    "{case}"
                );
            }
            let at = DATA_START as usize;
            let frame = format::decode_record(&image[at..end], record.0).expect("frame");
            assert_eq!(frame.payload.len(), damage::len_for(size), "{case}");
        }
        match ring.read(start) {
            Found::Record { record: r, lost } => {
                assert_eq!((r.offset, lost), (record.0, record.0 - start), "{case}");
            }
            Found::End => panic!("{case}: nothing read"),
        }
        let held = all(&mut ring);
        assert_eq!(held[held.len() - 2..], [record, next], "{case}");
        let mut again = crash(&ring);
        assert_eq!(
            again.stats().recovered_records,
            2,
            "{case}: the scan crosses the wrap"
        );
        assert_eq!(all(&mut again), held, "{case}");
        assert_eq!(again.head(), ring.head(), "{case}");
    }
}

/// A record larger than half the ring is refused before anything moves, on a full ring that
/// would have to drop records for it: no byte written, head, tail, counters and records as
/// they were. A record of exactly half the ring is accepted.
#[test]
fn a_record_larger_than_half_the_ring_is_refused_and_changes_nothing() {
    let mut ring = fresh();
    let cap = ring.capacity();
    let mut i = 0;
    while ring.head() < 2 * cap {
        ring.append(1, &payload(i, 300)).expect("append");
        i += 1;
    }
    let (image, head, tail, stats) = (ring.image(), ring.head(), ring.tail(), ring.stats());
    let held = all(&mut ring);
    for len in [
        damage::len_for(cap / 2) + 1,
        damage::len_for(cap / 2 + 8),
        3 * cap as usize,
    ] {
        match ring.append(1, &vec![7; len]) {
            Err(e @ WalError::TooLarge(n)) => {
                assert_eq!(n, len);
                let msg = e.to_string();
                assert!(msg.contains(&format!("a record of {len} bytes")), "{msg}");
            }
            other => panic!("{len} bytes: {other:?}"),
        }
        assert!(ring.image() == image, "{len} bytes: a byte changed");
        assert_eq!(
            (ring.head(), ring.tail(), ring.stats()),
            (head, tail, stats)
        );
        assert_eq!(all(&mut ring), held);
    }
    let half = put(&mut ring, 1, &vec![7; damage::len_for(cap / 2)]);
    assert_eq!(all(&mut ring).last(), Some(&half));
}

/// A ring file synced twice, then its bytes.
fn synced_ring_file(dir: &Path) -> (Vec<u8>, Vec<Rec>) {
    let mut ring = Ring::open(dir, SIZE).expect("open");
    let (mut written, mut i) = (Vec::new(), 0);
    for _ in 0..2 {
        put_some(&mut ring, &mut written, 10, &mut i);
        ring.sync().expect("sync");
    }
    drop(ring);
    (std::fs::read(dir.join(RING_FILE)).expect("read"), written)
}

/// I4: a file whose header copies do not start with the magic is not a promlet ring:
/// refused, naming the file, and left as it was. One copy with the magic is a ring.
#[test]
fn a_file_without_the_magic_is_refused_naming_it() {
    let dir = TempDir::new("magic");
    let (good, written) = synced_ring_file(&dir.0);
    let path = dir.0.join(RING_FILE);
    let mut bytes = good.clone();
    bytes[..8].copy_from_slice(b"PROMLETX");
    bytes[HEADER_SIZE..HEADER_SIZE + 8].copy_from_slice(b"NOTARING");
    std::fs::write(&path, &bytes).expect("write");
    for e in [
        Ring::open(&dir.0, SIZE).expect_err("not a ring"),
        Ring::open_read_only(&dir.0).expect_err("not a ring"),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, WalError::Foreign(_)), "{e:?}");
        assert!(
            msg.contains(&format!("{} is not a promlet ring", path.display())),
            "{msg}"
        );
    }
    assert!(
        std::fs::read(&path).expect("read") == bytes,
        "left as it was"
    );
    let mut one = good;
    one[..8].copy_from_slice(b"PROMLETX");
    assert_eq!(all(&mut Ring::from_image(&one).expect("copy B")), written);
}

/// Both header copies valid (CRC and all) but of another format version, as a newer promlet
/// would write them: refused with both versions and the file named, and the file left as it
/// was. (Version 1, whose header was 8 bytes shorter, is a real fixture: tests/cli.rs.)
#[test]
fn a_ring_of_another_format_version_is_refused_naming_the_version() {
    let dir = TempDir::new("version");
    let (good, _) = synced_ring_file(&dir.0);
    let path = dir.0.join(RING_FILE);
    for version in [format::VERSION + 1, format::VERSION + 7] {
        let mut bytes = good.clone();
        for c in 0..2 {
            let copy = &mut bytes[c * HEADER_SIZE..(c + 1) * HEADER_SIZE];
            let header = Header::decode(copy).expect("valid");
            copy[8..12].copy_from_slice(&version.to_le_bytes());
            let end = format::HEADER_FIXED + 16 * header.cursors.len();
            let crc = format::crc32c(&copy[..end]);
            copy[end..end + 4].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(Header::decode_any_version(copy), Some((version, header)));
        }
        std::fs::write(&path, &bytes).expect("write");
        let e = Ring::open(&dir.0, SIZE).expect_err("another version");
        let msg = e.to_string();
        assert!(matches!(e, WalError::Foreign(_)), "{e:?}");
        let want = format!(
            "{} is a ring of format version {version}, and this promlet reads version {}",
            path.display(),
            format::VERSION
        );
        assert!(msg.contains(&want), "{msg}");
        assert!(
            std::fs::read(&path).expect("read") == bytes,
            "left as it was"
        );
    }
}

/// What the ring must hold, computed from format.rs alone: records, oldest first.
#[derive(Debug, Default)]
struct Model {
    capacity: u64,
    head: u64,
    held: VecDeque<(u64, u8, Vec<u8>)>,
}

impl Model {
    /// Where a record of `payload` goes, and how many records leave the front for it; `None`
    /// if it is larger than half the ring. It never wraps: fewer than 24 bytes left before
    /// the region's end are skipped, more are padding. A record leaves when the new bytes
    /// reach its bytes of the lap before: when it starts less than a capacity before the new
    /// record's end.
    fn append(&mut self, kind: u8, payload: &[u8]) -> Option<(u64, u64)> {
        let size = format::record_size(payload.len()) as u64;
        if size > self.capacity / 2 {
            return None;
        }
        let left = self.capacity - self.head % self.capacity;
        let offset = if size > left {
            self.head + left
        } else {
            self.head
        };
        let end = offset + size;
        let mut gone = 0;
        while self.held.front().is_some_and(|r| r.0 + self.capacity < end) {
            self.held.pop_front();
            gone += 1;
        }
        self.held.push_back((offset, kind, payload.to_vec()));
        self.head = end;
        Some((offset, gone))
    }

    fn records(&self) -> Vec<Rec> {
        self.held.iter().map(|(o, k, p)| rec(*o, *k, p)).collect()
    }

    /// The records from `offset` on.
    fn from(&self, offset: u64) -> Vec<Rec> {
        let from = self.held.partition_point(|r| r.0 < offset);
        self.held
            .range(from..)
            .map(|(o, k, p)| rec(*o, *k, p))
            .collect()
    }
}

/// The endpoint the model test commits for.
const MODEL_ENDPOINT: u64 = 0xc0ffee;

/// Random operations against [`Model`]: appends of random sizes (up to half the ring, and
/// refused ones beyond; some steered to land exactly on the wrap or just short of it), reads
/// from a cursor, commits, syncs, reopening after a sync, and crashes (reopening the bytes as
/// they are, which recovery must take back to the last record appended, as long as less than
/// a lap was appended since the last sync). After every operation the ring delivers from its
/// tail exactly what the model holds, its head is the model's, its tail is at or before the
/// model's oldest record and within a capacity of the head (I2), and the records it counts
/// dropped are the ones that left the model's front. Endpoint cursors survive syncs and
/// crashes as last committed (a commit is written into a header copy at once).
#[test]
fn random_operations_match_a_vecdeque_model() {
    // Each operation reads the whole ring back (~1 ms in a debug build on the host, ten times
    // that under qemu-user, where the ARM unit tests run): 2400 operations on the host, 300
    // on ARM.
    let (seeds, steps) = if cfg!(any(target_arch = "arm", target_arch = "aarch64")) {
        (&[1][..], 300)
    } else {
        (&[1, 2, 3][..], 800)
    };
    for &seed in seeds {
        let mut rng = Rng(seed);
        let mut ring = fresh();
        let cap = ring.capacity();
        let mut model = Model {
            capacity: cap,
            ..Model::default()
        };
        let mut endpoint = Some(ring.consumer(MODEL_ENDPOINT).expect("consumer"));
        ring.sync().expect("sync");
        // Cursor committed in memory, and as the last sync wrote it; the head at that sync;
        // records dropped since the ring was opened.
        let (mut committed, mut persisted, mut synced, mut dropped) = (0u64, 0u64, 0u64, 0u64);
        let (mut appends, mut reopens, mut crashes, mut refused) = (0, 0, 0, 0);
        for step in 0..steps {
            let op = rng.below(100);
            match op {
                0..=59 => {
                    let left = cap - model.head % cap;
                    let len = match rng.below(40) {
                        0 => damage::len_for(cap / 2) - rng.below(64),
                        1 => damage::len_for(cap / 2) + 1 + rng.below(64),
                        2..=5 => rng.below(6000),
                        // Near the region's end: land exactly on it, or 8, 16, 24 or 32
                        // bytes short of it, or overshoot it by 8 (a skip or a padding).
                        6..=15 if left < 3000 => {
                            let short = [0, 8, 16, 24, 32][rng.below(5)];
                            match left.checked_sub(short).filter(|&s| s >= 24) {
                                Some(size) if rng.below(4) > 0 => damage::len_for(size),
                                _ => damage::len_for((left + 8).max(24)),
                            }
                        }
                        _ => rng.below(400),
                    };
                    let kind = 1 + rng.below(250) as u8;
                    let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    match (ring.append(kind, &p), model.append(kind, &p)) {
                        (Ok(at), Some((want, gone))) => {
                            assert_eq!(at, want, "seed {seed} step {step}: offset");
                            dropped += gone;
                            appends += 1;
                        }
                        (Err(WalError::TooLarge(n)), None) => {
                            assert_eq!(n, len);
                            refused += 1;
                        }
                        (got, want) => panic!("seed {seed} step {step}: {got:?}, want {want:?}"),
                    }
                }
                60..=69 => {
                    // A cursor at a record, at the head, or behind the tail.
                    let at = match (rng.below(3), model.held.len()) {
                        (0, n) if n > 0 => model.held[rng.below(n)].0,
                        (1, _) => model.head,
                        _ => model
                            .held
                            .front()
                            .map_or(model.head, |r| r.0)
                            .saturating_sub(rng.below(3000) as u64),
                    };
                    let want = model.from(at);
                    match ring.read(at) {
                        Found::Record { record, lost } => {
                            assert_eq!(rec(record.offset, record.kind, record.payload), want[0]);
                            assert_eq!(lost, want[0].0 - at);
                        }
                        Found::End => assert!(want.is_empty(), "seed {seed} step {step}"),
                    }
                }
                70..=79 => {
                    let at = match model.held.len() {
                        0 => model.head,
                        n => model.held[rng.below(n)].0,
                    };
                    endpoint.as_ref().expect("endpoint").commit(at);
                    committed = committed.max(at);
                    // A commit is in a header at once: a crash keeps it.
                    persisted = committed;
                }
                80..=87 => {
                    ring.sync().expect("sync");
                    persisted = committed.clamp(ring.tail(), ring.head());
                    synced = ring.head();
                }
                _ => {
                    let clean = op < 94;
                    if clean {
                        ring.sync().expect("sync");
                        persisted = committed.clamp(ring.tail(), ring.head());
                        synced = ring.head();
                    } else if model.head - synced > cap {
                        continue;
                    }
                    let image = ring.image();
                    drop(endpoint.take());
                    ring = Ring::from_image(&image).expect("reopen");
                    let recovered = model.held.iter().filter(|r| r.0 >= synced).count();
                    assert_eq!(ring.stats().recovered_records, recovered as u64);
                    committed = persisted.clamp(ring.tail(), ring.head());
                    assert_eq!(
                        ring.endpoint(MODEL_ENDPOINT).map(|e| e.cursor),
                        Some(committed),
                        "seed {seed} step {step}: the cursor as last committed"
                    );
                    let c = ring.consumer(MODEL_ENDPOINT).expect("consumer");
                    assert_eq!(c.position(), committed.max(ring.tail()));
                    endpoint = Some(c);
                    // Opening persisted a header with the new epoch (invariant I7).
                    persisted = committed;
                    synced = ring.head();
                    dropped = 0;
                    if clean {
                        reopens += 1;
                    } else {
                        crashes += 1;
                    }
                }
            }
            let held = damage::delivered(&mut ring);
            assert!(
                held == model.records(),
                "seed {seed} step {step} (op {op}): the ring holds {} records from {:?}, the model {} from {:?}",
                held.len(),
                held.first(),
                model.held.len(),
                model.held.front().map(|r| r.0)
            );
            assert_eq!(ring.head(), model.head, "seed {seed} step {step}");
            assert!(ring.tail() <= model.held.front().map_or(model.head, |r| r.0));
            assert!(ring.head() - ring.tail() <= cap);
            assert_eq!(
                ring.stats().records_overwritten,
                dropped,
                "seed {seed} step {step}"
            );
        }
        let laps = ring.head() / cap;
        assert!(laps >= 3, "seed {seed}: went round {laps} times");
        assert!(
            appends > steps / 3 && reopens > steps / 100 && crashes > steps / 100 && refused > 0,
            "seed {seed}: {appends} appends, {refused} refused, {reopens} reopens, {crashes} crashes"
        );
    }
}

/// I1, I4: STYLE.md's damage sweep on a sample of offsets (every offset of a ring file is
/// tried by tests/wal_crash.rs, which does not run under qemu; [`damage`] says what must
/// survive a flip where): every field of both header copies, the frames at the tail, at the
/// wrap and on either side of the persisted head, and random bytes. No panic, no record lost
/// but the one holding the byte, nothing delivered that was not a record.
#[test]
fn a_flipped_byte_loses_no_other_record_sampled() {
    for (name, build) in [
        ("full", damage::full_ring as fn(&Path) -> Vec<u8>),
        ("small", damage::small_live_ring),
    ] {
        let dir = TempDir::new(&format!("flip-{name}"));
        let image = build(&dir.0);
        let layout = damage::Layout::new(&image);
        let mut offsets = layout.sample();
        let mut rng = Rng(11);
        offsets.extend((0..16).map(|_| rng.below(image.len())));
        for &at in &offsets {
            let mut bad = image.clone();
            bad[at] ^= 0xff;
            if let Err(e) = layout.check(&layout.flipped(at), || Ring::from_image(&bad)) {
                panic!("{name} ring, byte {at}: {e}");
            }
        }
        assert!(offsets.len() > 100, "{name}: {} offsets", offsets.len());
    }
}

/// I4: a torn file. Cut at a page boundary it is refused by `Ring::open`, both sizes named
/// (an empty file is a new ring), and by `Ring::from_image`. Zeroed from the boundary on (pages
/// that never reached the disk), it opens and delivers every record wholly before the
/// boundary that the reader or the recovery scan can reach.
#[test]
fn a_file_cut_at_a_page_boundary_is_refused_or_keeps_what_comes_before() {
    let dir = TempDir::new("cut");
    let image = damage::full_ring(&dir.0);
    let layout = damage::Layout::new(&image);
    let path = dir.0.join(RING_FILE);
    let mut kept = Vec::new();
    for cut in (0..image.len()).step_by(format::HEADER_SIZE) {
        std::fs::write(&path, &image[..cut]).expect("write");
        match Ring::open(&dir.0, SIZE) {
            Ok(mut ring) if cut == 0 => assert_eq!((all(&mut ring), ring.head()), (vec![], 0)),
            Err(e @ WalError::Size(_)) => {
                let msg = e.to_string();
                let want = format!("is {cut} bytes but --storage.agent.size is {SIZE}");
                assert!(msg.contains(&want), "{msg}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
        let e = Ring::from_image(&image[..cut]).expect_err("too short");
        assert!(
            e.to_string().contains(&format!("an image of {cut} bytes")),
            "{e}"
        );
        let mut torn = image.clone();
        torn[cut..].fill(0);
        let expect = layout.zeroed_from(cut);
        match layout.check(&expect, || Ring::from_image(&torn)) {
            Ok(n) => kept.push((cut, expect.required.len(), n)),
            Err(e) => panic!("zeroed from {cut}: {e}"),
        }
    }
    // Past the headers, more and more of the records are wholly before the cut.
    assert!(
        kept.windows(2).skip(2).all(|w| w[0].1 <= w[1].1),
        "{kept:?}"
    );
    assert!(
        kept.last().is_some_and(|k| k.1 > layout.records.len() / 2),
        "{kept:?}"
    );
}

/// Bug, reported (issue 5): after the 8 or 16 bytes before a wrap were skipped, a record of
/// the next lap that ends within those bytes' span (here exactly at the region's end) finds
/// the tail inside the skipped gap, and `Writer::evict_oldest` moves it from
/// `skip_wrap(tail)` past the first record of the lap after, which the new record does not
/// overwrite: a record dropped, and counted overwritten, for nothing. I2 allows the tail to
/// stop at that record. Run with `--ignored`.
#[test]
fn a_record_ending_at_the_wrap_drops_only_what_it_overwrites() {
    let mut ring = fresh();
    let cap = ring.capacity();
    let mut i = 0;
    damage::fill_until_left(&mut ring, 64, &mut i);
    put(&mut ring, 1, &payload(900, damage::len_for(48)));
    let first = put(&mut ring, 1, &payload(901, damage::len_for(48)));
    assert_eq!(first.0, cap, "the 16 bytes before the wrap are skipped");
    damage::fill_until_left(&mut ring, 48, &mut i);
    assert_eq!(ring.tail(), cap - 16, "the tail is in the skipped gap");
    let overwritten = ring.stats().records_overwritten;
    let last = put(&mut ring, 1, &payload(902, damage::len_for(48)));
    assert_eq!(
        last.0 + 48,
        2 * cap,
        "an exact fit: data bytes from 0 on are not written"
    );
    assert_eq!(
        all(&mut ring).first(),
        Some(&first),
        "the first record of the lap is whole and must be held"
    );
    assert_eq!(ring.stats().records_overwritten, overwritten);
}

/// Bug, reported (issue 5): recovery can leave the head *before* records still whole in the
/// file. Its scan stops at the first frame past the persisted head that does not check out (a
/// page that never reached the disk before a power cut, a flipped byte), dropping the records
/// after it. New records then go where those were; once one ends where a dropped record
/// starts (same sizes here; a restarted target rewrites the same series-sets), the next
/// recovery, even after a clean stop, scans on into the dropped records: records from before
/// the first crash come back after newer ones, and samples records among them are decoded
/// against sets and bases their offsets no longer hold. I1 ("stale bytes have smaller
/// offsets") does not hold once the head has moved back. Run with `--ignored`.
#[test]
fn records_dropped_by_recovery_never_come_back() {
    let mut ring = fresh();
    let (mut written, mut i) = (Vec::new(), 0);
    for _ in 0..5 {
        written.push(put(&mut ring, 1, &payload(i, 100)));
        i += 1;
    }
    ring.sync().expect("sync");
    let dropped: Vec<Rec> = (0..10)
        .map(|k| put(&mut ring, 1, &payload(100 + k, 100)))
        .collect();
    let mut image = ring.image();
    image[file_pos(&ring, dropped[0].0) + 20] ^= 0xff;
    let mut ring = Ring::from_image(&image).expect("recovers");
    assert_eq!(
        ring.head(),
        dropped[0].0,
        "the scan stops at the damaged record"
    );
    assert_eq!(all(&mut ring), written);
    for k in 0..3 {
        written.push(put(&mut ring, 1, &payload(200 + k, 100)));
    }
    assert_eq!(
        ring.head(),
        dropped[3].0,
        "the head is where a dropped record starts"
    );
    ring.sync().expect("a clean stop");
    let mut ring = crash(&ring);
    assert_eq!(all(&mut ring), written, "the dropped records stay dropped");
}

/// Bug, reported (issue 5): when the last record ends fewer than 24 bytes before the region's
/// end, recovery (even after a clean stop) puts the head at the next lap's start — `recover`
/// keeps the `skip_wrap` of its scan, against its own comment — not at the end of the last
/// record. The next record still lands right, but an endpoint that had read everything now
/// sees `head > position` with nothing to read: `Consumer::wait` never parks, and its sender
/// spins until the producer appends again. Run with `--ignored`.
#[test]
fn recovery_leaves_the_head_at_the_end_of_the_last_record() {
    let mut ring = fresh();
    let mut endpoint = ring.consumer(7).expect("consumer");
    let mut i = 0;
    damage::fill_until_left(&mut ring, 8, &mut i);
    let end = ring.head();
    // Not samples records: read and passed over.
    assert!(endpoint.next_batch().is_none());
    assert_eq!(endpoint.position(), end);
    endpoint.commit(end);
    ring.sync().expect("a clean stop");
    drop(endpoint);
    let mut ring = crash(&ring);
    let mut endpoint = ring.consumer(7).expect("consumer");
    assert_eq!(endpoint.position(), end);
    assert!(endpoint.next_batch().is_none());
    assert!(
        !endpoint.wait(std::time::Duration::ZERO),
        "nothing to read, yet wait() says there is"
    );
    assert_eq!(ring.head(), end, "the head is the end of the last record");
}
