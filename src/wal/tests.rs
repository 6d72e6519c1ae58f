//! The ring on real files in a temporary directory: creation, locking, round trips across
//! reopen, crash recovery, wrap-around, damage, and arbitrary file contents.

// Test data is made of small counters cut to bytes on purpose.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::parse::testkit::Rng;

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("promlet-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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
                        let _ = ring.append(1, &payload(i, rng.below(300)));
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
