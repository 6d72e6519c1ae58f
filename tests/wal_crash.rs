//! The ring against crashes and damage, on real files. Integration tests do not run under
//! qemu (test.sh runs only the unit tests there), so the long sweeps live here.
//!
//! - A producer process SIGKILLed at random moments, over and over on the same ring: every
//!   record it reported appended is there after each kill, intact and in order.
//! - A byte flipped at every offset of a ring file, and the ring opened again: no panic, and
//!   no record lost but the one holding the byte (the unit tests try a sample of offsets;
//!   `src/wal/tests/damage.rs` says what must survive where).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use promlet::wal::{format, Found, Ring};

#[path = "../src/wal/tests/damage.rs"]
mod damage;
// The process guard.
mod support;

use damage::{Class, Layout};
use support::Killed;

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("promlet-walc-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Flips each byte of `image` that `offsets` picks, in turn, in a ring file holding `image`,
/// opens it read-only (the same recovery as `Ring::from_image`, without copying 64 KiB per
/// offset: 4x faster in a debug build), checks what it delivers against `layout`, and flips
/// the byte back. Two threads, each on its own file. Returns the offsets tried, the first
/// failures, and per class of byte the offsets and those that lost no record at all.
fn sweep(
    name: &str,
    image: &[u8],
    layout: &Layout,
    offsets: impl Fn(usize) -> bool + Sync,
) -> (usize, Vec<String>, Vec<(Class, usize, usize)>) {
    const THREADS: usize = 2;
    let dirs: Vec<TempDir> = (0..THREADS)
        .map(|t| TempDir::new(&format!("{name}-{t}")))
        .collect();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(t, dir)| {
                let offsets = &offsets;
                s.spawn(move || {
                    let path = dir.0.join("ring");
                    std::fs::write(&path, image).expect("write the image");
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .expect("open the image");
                    let (mut tried, mut failures, mut outcomes) = (0, Vec::new(), Vec::new());
                    for at in (t..image.len()).step_by(THREADS).filter(|&at| offsets(at)) {
                        let put = |b: u8| file.write_all_at(&[b], at as u64).expect("write");
                        put(image[at] ^ 0xff);
                        let expect = layout.flipped(at);
                        match layout.check(&expect, || Ring::open_read_only(&dir.0)) {
                            Ok(n) => outcomes.push((expect.class, n)),
                            Err(e) if failures.len() < 10 => {
                                failures.push(format!("byte {at}: {e}"));
                            }
                            Err(_) => {}
                        }
                        put(image[at]);
                        tried += 1;
                    }
                    assert!(
                        std::fs::read(&path).expect("read") == image,
                        "opening wrote to the file"
                    );
                    (tried, failures, outcomes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    let mut tried = 0;
    let mut failures = Vec::new();
    // Per class: offsets, and those that still delivered every record.
    let mut classes: Vec<(Class, usize, usize)> = Vec::new();
    for (n, f, outcomes) in results {
        tried += n;
        failures.extend(f);
        for (class, got) in outcomes {
            let i = match classes.iter().position(|c| c.0 == class) {
                Some(i) => i,
                None => {
                    classes.push((class, 0, 0));
                    classes.len() - 1
                }
            };
            classes[i].1 += 1;
            classes[i].2 += usize::from(got >= layout.records.len());
        }
    }
    classes.sort();
    (tried, failures, classes)
}

/// Prints a sweep's figures, then fails on its failures.
fn report(
    name: &str,
    started: Instant,
    tried: usize,
    failures: &[String],
    classes: &[(Class, usize, usize)],
) {
    println!(
        "{name}: {tried} offsets flipped in {:.1?}; per class (offsets, of which every record survived): {classes:?}",
        started.elapsed()
    );
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

/// I1, I4: every one of the 65,536 bytes of a ring file flipped in turn (a ring that went
/// round, few live records across a skipped gap at the wrap, records past the persisted head;
/// see `damage::small_live_ring`): it opens without a panic and loses no record but the one
/// holding the byte (and past the persisted head, those after it).
#[test]
fn a_byte_flipped_at_every_offset_loses_no_other_record() {
    let started = Instant::now();
    let dir = TempDir::new("every");
    let image = damage::small_live_ring(&dir.0);
    let layout = Layout::new(&image);
    let (pad, gap, both) = layout.shape();
    assert!(
        gap && both,
        "the live records cross a skipped gap and the persisted head"
    );
    assert!(!pad);
    let (tried, failures, classes) = sweep("every", &image, &layout, |_| true);
    assert_eq!(tried, image.len());
    report("every offset", started, tried, &failures, &classes);
}

/// I1, I4: the same on a full ring with a padding record at the wrap, for a sample of ~1,300
/// offsets.
#[test]
fn a_byte_flipped_in_a_full_ring_loses_no_other_record() {
    let started = Instant::now();
    let dir = TempDir::new("full");
    let image = damage::full_ring(&dir.0);
    let layout = Layout::new(&image);
    let (pad, _, both) = layout.shape();
    assert!(
        pad && both,
        "a padding record and records past the persisted head"
    );
    // Every byte of the two header copies' used part (one cursor: 68 bytes), of the first 64
    // bytes of the data region and of the 400 around the persisted head, then one byte in 97
    // (prime to the 8-byte alignment: every position in a frame gets its turn). A full ring
    // costs ~2 ms an offset to open and read in a debug build: every offset would take
    // minutes; `a_byte_flipped_at_every_offset_loses_no_other_record` tries them all on a
    // ring with few live records.
    let cap = layout.capacity;
    let near = |at: usize| {
        let pos = (at - 2 * format::HEADER_SIZE) as u64;
        let head = layout.persisted_head % cap;
        pos < 64 || (head.saturating_sub(200)..head + 200).contains(&pos)
    };
    let (tried, failures, classes) = sweep("full", &image, &layout, |at| {
        let header = at < 2 * format::HEADER_SIZE;
        (header && at % format::HEADER_SIZE < 68) || (!header && near(at)) || at % 97 == 0
    });
    report("full ring", started, tried, &failures, &classes);
}

/// Set in the child's environment: the ring directory, which makes the test the producer.
const CHILD_DIR: &str = "PROMLET_WAL_CRASH_DIR";
/// Set in the child's environment: the round, which seeds its payloads.
const CHILD_ROUND: &str = "PROMLET_WAL_CRASH_ROUND";
const CRASH_TEST: &str = "a_producer_killed_at_random_loses_no_record_it_reported";
/// 128 KiB: with payloads of 1–1500 bytes the rounds go round the ring dozens of times.
const CRASH_SIZE: u64 = 128 << 10;
const ROUNDS: u64 = 200;
/// Longest wait for the child's reports in a round (it needs milliseconds).
const ROUND_LIMIT: Duration = Duration::from_secs(20);

/// SplitMix64's finaliser: the randomness of a round, from the round and a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Payload `seq` of round `round`: the two numbers, then 1–1500 bytes derived from them. It
/// can be checked without knowing its offset ([`intact`]).
fn crash_payload(round: u64, seq: u64) -> Vec<u8> {
    let h = mix(round << 32 | seq);
    let len = usize::try_from(1 + h % 1500).expect("small");
    let mut p = Vec::with_capacity(16 + len);
    p.extend_from_slice(&round.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend((0..len as u64).map(|j| mix(h ^ j).to_le_bytes()[0]));
    p
}

/// Whether a payload is the one its first 16 bytes name.
fn intact(p: &[u8]) -> bool {
    let n = |at: usize| {
        p.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    };
    matches!((n(0), n(8)), (Some(round), Some(seq)) if crash_payload(round, seq) == p)
}

/// The child: appends records to the ring in `dir` until killed (or for 30 s), printing
/// `appended <offset> <crc32c>` after each append returns, and syncing now and then (always
/// within a quarter of the ring: recovery scans at most a lap past the last header).
fn produce(dir: &Path, round: u64) {
    let mut ring = Ring::open(dir, CRASH_SIZE).expect("child: open the ring");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = std::io::stdout().lock();
    let (mut seq, mut unsynced) = (0, 0);
    while Instant::now() < deadline {
        let p = crash_payload(round, seq);
        let at = ring.append(1, &p).expect("child: append");
        let line = writeln!(out, "appended {at} {}", format::crc32c(&p));
        if line.and_then(|()| out.flush()).is_err() {
            return;
        }
        seq += 1;
        unsynced += p.len() as u64;
        if mix(round << 32 | seq) % 16 == 0 || unsynced > CRASH_SIZE / 4 {
            ring.sync().expect("child: sync");
            unsynced = 0;
        }
    }
}

/// A producer (this test binary run again as the child) SIGKILLed at random moments — after a
/// random number of reported appends and a random pause of up to 3 ms, or before it reported
/// anything — 200 times over on the same ring. After each kill the ring reopens and holds,
/// intact and in order, every record the child reported appended that the tail has not passed,
/// the newest one always; nothing it holds is damaged; no offset is handed out twice.
#[test]
fn a_producer_killed_at_random_loses_no_record_it_reported() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let round = std::env::var(CHILD_ROUND).ok().and_then(|r| r.parse().ok());
        produce(Path::new(&dir), round.expect("the round"));
        return;
    }
    let started = Instant::now();
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().expect("the test binary");
    // Every record reported, in all rounds: offset and payload CRC.
    let mut reported: Vec<(u64, u32)> = Vec::new();
    let (mut held_last, mut early_kills) = (0, 0);
    for round in 0..ROUNDS {
        let mut child = Killed(
            Command::new(&exe)
                .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR, &dir.0)
                .env(CHILD_ROUND, round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the child"),
        );
        let stdout = child.0.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.strip_prefix("appended ").unwrap_or("").split(' ');
                let at = words.next().and_then(|w| w.parse::<u64>().ok());
                let crc = words.next().and_then(|w| w.parse::<u32>().ok());
                if let (Some(at), Some(crc)) = (at, crc) {
                    if tx.send((at, crc)).is_err() {
                        return;
                    }
                }
            }
        });
        let r = |k: u64| mix(round << 40 | 1 << 39 | k);
        let wanted = r(0) % 60;
        let deadline = Instant::now() + ROUND_LIMIT;
        let mut got = Vec::new();
        if wanted == 0 {
            early_kills += 1;
            std::thread::sleep(Duration::from_millis(r(1) % 20));
        } else {
            while (got.len() as u64) < wanted {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(rec) => got.push(rec),
                    Err(e) => {
                        let _ = child.0.kill();
                        let mut err = String::new();
                        if let Some(mut s) = child.0.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut s, &mut err);
                        }
                        let why = match e {
                            RecvTimeoutError::Timeout => "reported too few records in time",
                            RecvTimeoutError::Disconnected => "exited",
                        };
                        panic!("round {round}: the child {why}; its stderr:\n{err}");
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(r(2) % 3000));
        }
        child.0.kill().expect("kill the child");
        child.0.wait().expect("reap the child");
        reader.join().expect("the reader");
        got.extend(rx.try_iter());
        if let (Some(new), Some(old)) = (got.first(), reported.last()) {
            assert!(
                new.0 > old.0,
                "round {round}: offset {} handed out again",
                new.0
            );
        }
        reported.extend(got);

        let mut ring = Ring::open(&dir.0, CRASH_SIZE).expect("reopen after the kill");
        let tail = ring.tail();
        let mut held = Vec::new();
        let mut at = tail;
        while let Found::Record { record, .. } = ring.read(at) {
            assert!(
                intact(record.payload),
                "round {round}: damaged record at {}",
                record.offset
            );
            held.push((record.offset, format::crc32c(record.payload)));
            at = record.next;
            assert!(held.len() < 1 << 16, "round {round}: the reader loops");
        }
        assert!(
            held.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: out of order"
        );
        for rec in reported.iter().filter(|r| r.0 >= tail) {
            match held.binary_search_by_key(&rec.0, |h| h.0) {
                Ok(i) if held[i] == *rec => {}
                Ok(i) => panic!("round {round}: {rec:?} reported, {:?} held", held[i]),
                Err(_) => panic!(
                    "round {round}: {rec:?} reported, not held (tail {tail}, head {}, {} held from {:?}, stats {:?})",
                    ring.head(),
                    held.len(),
                    held.first(),
                    ring.stats()
                ),
            }
        }
        if let Some(newest) = reported.last() {
            assert!(
                newest.0 >= tail && held.contains(newest),
                "round {round}: {newest:?}"
            );
        }
        held_last = held.len();
    }
    let laps = reported.last().map_or(0, |r| r.0) / (CRASH_SIZE - 2 * format::HEADER_SIZE as u64);
    println!(
        "{ROUNDS} rounds survived in {:.1?}: {} records reported, {laps} laps, {early_kills} \
         kills before any report, {held_last} records held at the end",
        started.elapsed(),
        reported.len()
    );
    assert!(laps >= 10, "{laps} laps");
}
