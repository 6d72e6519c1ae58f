//! `promlet wal inspect DIR`: what a ring file holds, read without disturbing a promlet that
//! runs on it.
//!
//! [`inspect`] opens the ring read-only and without its lock ([`Ring::open_read_only`], which
//! recovers as a start would: it picks the header copy and scans past its head), reads both
//! header copies from the file, then [`examine`] walks every record from the tail to the head
//! once. The [`Report`] prints itself ([`fmt::Display`]), one fact a line:
//!
//! ```text
//! ring data-agent/ring: 1048576 bytes, capacity 1040384
//! header A: valid, generation 11, head 256672, tail 0, 1 cursor
//!   endpoint 0x1f2e3d4c5b6a7988: offset 250432, 7736 bytes behind the head
//! header B: valid, generation 10, head 232352, tail 0, 1 cursor
//!   endpoint 0x1f2e3d4c5b6a7988: offset 0, 258168 bytes behind the head
//! in use: header A (generation 11)
//! held: 258168 bytes of 1040384 (24.8%), offsets 0..258168
//! recovered past the persisted head: 3 records
//! records: 1209 (series-set 6, samples 1203, other 0, malformed 0)
//! series: 3 targets, 460 series in their newest series-sets
//! series-sets: 4120 bytes, each target's newest; their copies take at most a fifth of a ring of 41152 bytes or more
//! samples: 184460, oldest 2023-11-14T22:13:20.000Z, newest 2023-11-14T23:53:20.000Z
//! bytes per sample: 1.39
//! undecodable: 0 samples in 0 records (series-set gone or not matching)
//! damage: 0 damaged skips, 0 bytes lost
//! ```
//!
//! Cursors are measured against the ring's head as recovered (the `held` line), not against
//! the head their copy recorded: that is what the endpoint has left to send.
//!
//! While a promlet appends, the file moves under the walk: records its head overwrites while
//! they are read count as damage, and the header copies (read from the file after the
//! mapping was recovered) may be newer than the one in use. Stop promlet for an exact
//! picture. Not a hot path: the walk keeps a map entry per series-set and per target.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::format::{self, Header, DATA_START, HEADER_SIZE, MAGIC};
use super::record::{
    self, TYPE_SAMPLES, TYPE_SAMPLES_STAMPED, TYPE_SERIES_BLOCKS, TYPE_SERIES_SET,
};
use super::{io, Found, Ring, WalError, RING_FILE};

/// Why the ring cannot use a header copy; the checks [`Ring::open`] makes, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// All zeros: never written (a ring syncs to copy A first, then alternates).
    Blank,
    /// It does not start with the magic: not a promlet ring header.
    NoMagic,
    /// Its CRC or cursor count does not check out: a torn or damaged write.
    Checksum,
    /// A ring of this other format version.
    Version(u32),
    /// Written for a file of this many bytes, not the file's size.
    FileSize(u64),
    /// Its tail is past its head, or more than the capacity behind it.
    Offsets,
}

/// One header copy as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCopy {
    /// What decoded, with its format version; `None` when the magic or the CRC does not
    /// check out.
    pub decoded: Option<(u32, Header)>,
    /// Why the ring cannot use it; `None` when it can.
    pub unusable: Option<Unusable>,
}

impl HeaderCopy {
    /// Judges the copy in `bytes` (at least [`HEADER_SIZE`]) for a file of `file_size` bytes
    /// with `capacity` data bytes, as the ring's recovery does.
    pub fn judge(bytes: &[u8], file_size: u64, capacity: u64) -> HeaderCopy {
        let decoded = Header::decode_any_version(bytes);
        let unusable = match &decoded {
            None if bytes.iter().all(|&b| b == 0) => Some(Unusable::Blank),
            None if !bytes.starts_with(MAGIC) => Some(Unusable::NoMagic),
            None => Some(Unusable::Checksum),
            Some((v, _)) if *v != format::VERSION => Some(Unusable::Version(*v)),
            Some((_, h)) if h.file_size != file_size => Some(Unusable::FileSize(h.file_size)),
            Some((_, h)) if h.tail > h.head || h.head - h.tail > capacity => {
                Some(Unusable::Offsets)
            }
            Some(_) => None,
        };
        HeaderCopy { decoded, unusable }
    }

    /// The header, if the ring can use it.
    pub fn usable(&self) -> Option<&Header> {
        match (&self.decoded, self.unusable) {
            (Some((_, h)), None) => Some(h),
            _ => None,
        }
    }
}

/// What a ring holds: see the module docs for how it prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The ring file.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub file_size: u64,
    /// Data bytes (the file less the two header copies, 8-aligned).
    pub capacity: u64,
    /// Header copies A and B.
    pub copies: [HeaderCopy; 2],
    /// The copy the ring was recovered from (0 for A): the usable one with the higher
    /// generation. `None` when neither is usable.
    pub in_use: Option<usize>,
    /// Logical offset of the next record, after recovery.
    pub head: u64,
    /// Logical offset of the oldest record held.
    pub tail: u64,
    /// Records found past the persisted head (appended after the last sync).
    pub recovered_records: u64,
    /// Series-set records held.
    pub series_set_records: u64,
    /// Samples records held.
    pub samples_records: u64,
    /// Records of any other type (padding is not a record here).
    pub other_records: u64,
    /// Series-set or samples records whose CRC checks out but whose payload does not decode.
    pub malformed_records: u64,
    /// Distinct targets among the series-sets held.
    pub targets: u64,
    /// Bytes of the records of each target's newest series-set, added up: what the copy rule
    /// counts ([`super::rewrite_distance`]).
    pub sets_bytes: u64,
    /// Series in each target's newest series-set, summed.
    pub series: u64,
    /// Values in the samples records held.
    pub samples: u64,
    /// The oldest sample timestamp, milliseconds since the epoch.
    pub oldest_ms: Option<i64>,
    /// The newest sample timestamp, milliseconds since the epoch.
    pub newest_ms: Option<i64>,
    /// Samples records whose series-set is not held, or lists another number of series: no
    /// endpoint can decode them.
    pub undecodable_records: u64,
    /// The samples in those records.
    pub undecodable_samples: u64,
    /// Times reading skipped damaged bytes (at open and on the walk).
    pub damaged_skips: u64,
    /// Bytes skipped at damage on the walk (padding and wrap gaps are not counted).
    pub damaged_bytes: u64,
}

impl Report {
    /// Bytes from the tail to the head.
    pub fn held(&self) -> u64 {
        self.head - self.tail.min(self.head)
    }

    /// Bytes held per sample in hundredths (`None` without samples): integers, so that the
    /// printed figure is exact on every target.
    pub fn bytes_per_sample_x100(&self) -> Option<u128> {
        (self.samples > 0).then(|| u128::from(self.held()) * 100 / u128::from(self.samples))
    }
}

/// Inspects the ring in `dir` (`--storage.agent.path`): read-only, without the lock, so it
/// works while a promlet runs there. Errors: no ring file, a file that is not a ring, a ring
/// of another format version, a failed read. Allocates freely.
pub fn inspect(dir: &Path) -> Result<Report, WalError> {
    let mut ring = Ring::open_read_only(dir)?;
    let path = dir.join(RING_FILE);
    let mut file = File::open(&path).map_err(io(format!("open {}", path.display())))?;
    let file_size = file
        .metadata()
        .map_err(io(format!("stat {}", path.display())))?
        .len();
    // The mapping could give these bytes too, but the ring does not lend it out; two pages
    // through std::fs cost nothing here.
    let mut headers = vec![0u8; 2 * HEADER_SIZE];
    file.read_exact(&mut headers)
        .map_err(io(format!("read the headers of {}", path.display())))?;
    Ok(examine(&mut ring, &headers, file_size, &path))
}

/// The report on an open `ring` whose file is `file_size` bytes and starts with `headers`
/// (both copies, `2 * HEADER_SIZE` bytes; fewer read as zeros). Walks the records from the
/// tail to the head once; never panics on any content (invariant I4).
pub fn examine(ring: &mut Ring, headers: &[u8], file_size: u64, path: &Path) -> Report {
    let capacity = ring.capacity();
    let copy = |i: usize| {
        let mut bytes = [0u8; HEADER_SIZE];
        let have = headers.get(i * HEADER_SIZE..).unwrap_or(&[]);
        let n = have.len().min(HEADER_SIZE);
        bytes[..n].copy_from_slice(&have[..n]);
        HeaderCopy::judge(&bytes, file_size, capacity)
    };
    let copies = [copy(0), copy(1)];
    // As recovery picks: on equal generations the later copy wins (max_by_key).
    let in_use = (0..2)
        .filter_map(|i| Some((i, copies[i].usable()?.generation)))
        .max_by_key(|&(_, generation)| generation)
        .map(|(i, _)| i);
    let (head, tail) = (ring.head(), ring.tail());
    let mut report = Report {
        path: path.to_owned(),
        file_size,
        capacity,
        copies,
        in_use,
        head,
        tail,
        recovered_records: ring.stats().recovered_records,
        series_set_records: 0,
        samples_records: 0,
        other_records: 0,
        malformed_records: 0,
        targets: 0,
        sets_bytes: 0,
        series: 0,
        samples: 0,
        oldest_ms: None,
        newest_ms: None,
        undecodable_records: 0,
        undecodable_samples: 0,
        damaged_skips: 0,
        damaged_bytes: 0,
    };
    let mut walk = Walk::default();
    let mut at = tail;
    loop {
        let skips = ring.stats().damaged_skips;
        let next = match ring.read(at) {
            Found::End => None,
            Found::Record { record, lost } => {
                walk.count(&mut report, record.offset, record.kind, record.payload);
                Some((record.next, lost))
            }
        };
        // `lost` also covers padding and the gap before a wrap; only a read that skipped
        // damage (the counter moved) lost bytes to it.
        let damaged = ring.stats().damaged_skips > skips;
        match next {
            Some((next, lost)) => {
                if damaged {
                    report.damaged_bytes += lost;
                }
                at = next;
            }
            None => {
                if damaged {
                    report.damaged_bytes += head - at.min(head);
                }
                break;
            }
        }
    }
    report.damaged_skips = ring.stats().damaged_skips;
    report.targets = len_u64(walk.targets.len());
    report.sets_bytes = walk
        .set_bytes
        .values()
        .fold(0u64, |sum, &n| sum.saturating_add(n));
    report.series = walk
        .targets
        .values()
        .fold(0u64, |sum, &n| sum.saturating_add(n));
    report
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What the walk remembers between records.
#[derive(Debug, Default)]
struct Walk {
    /// Series count of each series-set held, by offset.
    sets: BTreeMap<u64, u64>,
    /// Series count of each target's newest series-set.
    targets: BTreeMap<u64, u64>,
    /// Record bytes of each target's newest series-set.
    set_bytes: BTreeMap<u64, u64>,
}

impl Walk {
    fn count(&mut self, report: &mut Report, offset: u64, kind: u8, payload: &[u8]) {
        match kind {
            TYPE_SERIES_SET | TYPE_SERIES_BLOCKS => {
                report.series_set_records += 1;
                // A set is decoded into vectors of its own: sets are few (one per target and
                // eighth of a ring), and this keeps the inspector off the index's internals.
                match record::decode_series_set(kind, payload) {
                    Some((target, series)) => {
                        let n = len_u64(series.len());
                        self.sets.insert(offset, n);
                        self.targets.insert(target, n);
                        self.set_bytes
                            .insert(target, len_u64(format::record_size(payload.len())));
                    }
                    None => report.malformed_records += 1,
                }
            }
            TYPE_SAMPLES | TYPE_SAMPLES_STAMPED => {
                report.samples_records += 1;
                let Some((set, ts_ms, n, _)) = record::samples_head(payload) else {
                    report.malformed_records += 1;
                    return;
                };
                let n = len_u64(n);
                report.samples = report.samples.saturating_add(n);
                report.oldest_ms = Some(report.oldest_ms.map_or(ts_ms, |o| o.min(ts_ms)));
                report.newest_ms = Some(report.newest_ms.map_or(ts_ms, |o| o.max(ts_ms)));
                // A set precedes its samples, so the walk has met it if it is held.
                if self.sets.get(&set) != Some(&n) {
                    report.undecodable_records += 1;
                    report.undecodable_samples = report.undecodable_samples.saturating_add(n);
                }
            }
            _ => report.other_records += 1,
        }
    }
}

/// A timestamp in milliseconds printed as RFC 3339 in UTC with milliseconds
/// (`2023-11-14T22:13:20.000Z`). Years past 9999 or before 0 print with more digits or a sign:
/// no value panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAY_MS: i64 = 86_400_000;
        let (days, ms) = (self.0.div_euclid(DAY_MS), self.0.rem_euclid(DAY_MS));
        let (y, m, d) = civil_from_days(days);
        let s = ms / 1000;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            ms % 1000
        )
    }
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<http://howardhinnant.github.io/date_algorithms.html>). It counts in
/// 400-year eras of 146097 days from 0000-03-01, so that leap days fall at the end of a year.
/// Chosen over a date crate: a dozen lines against a dependency for one subcommand. Any `days`
/// from an `i64` of milliseconds stays far from overflow (|days| < 1.1e11).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `1 cursor`, `2 cursors`.
struct Count(u64, &'static str);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
}

impl Report {
    fn fmt_copy(&self, f: &mut fmt::Formatter<'_>, i: usize) -> fmt::Result {
        let copy = &self.copies[i];
        let name = if i == 0 { 'A' } else { 'B' };
        write!(f, "header {name}: ")?;
        match copy.unusable {
            None => f.write_str("valid")?,
            Some(Unusable::Blank) => return writeln!(f, "blank (never written)"),
            Some(Unusable::NoMagic) => {
                return writeln!(
                    f,
                    "unusable: no {} magic, not a promlet ring header",
                    String::from_utf8_lossy(MAGIC)
                )
            }
            Some(Unusable::Checksum) => {
                return writeln!(
                    f,
                    "unusable: CRC or cursor count does not check out (a torn or damaged write)"
                )
            }
            Some(Unusable::Version(v)) => write!(
                f,
                "unusable: format version {v}, this promlet reads {}",
                format::VERSION
            )?,
            Some(Unusable::FileSize(n)) => write!(
                f,
                "unusable: written for a file of {n} bytes, the file is {}",
                self.file_size
            )?,
            Some(Unusable::Offsets) => write!(
                f,
                "unusable: tail past the head or more than the capacity behind it"
            )?,
        }
        let Some((_, h)) = &copy.decoded else {
            return writeln!(f);
        };
        writeln!(
            f,
            ", generation {}, head {}, tail {}, {}",
            h.generation,
            h.head,
            h.tail,
            Count(len_u64(h.cursors.len()), "cursor")
        )?;
        for &(key, offset) in &h.cursors {
            write!(f, "  endpoint {key:#018x}: offset {offset}, ")?;
            if offset > self.head {
                writeln!(f, "past the head")?;
            } else {
                let behind = self.head - offset;
                let lapped = if offset < self.tail {
                    " (behind the tail: overwritten before it was sent)"
                } else {
                    ""
                };
                writeln!(f, "{behind} bytes behind the head{lapped}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ring {}: {} bytes, capacity {}",
            self.path.display(),
            self.file_size,
            self.capacity
        )?;
        self.fmt_copy(f, 0)?;
        self.fmt_copy(f, 1)?;
        match self.in_use {
            Some(i) => {
                let generation = self.copies[i].usable().map_or(0, |h| h.generation);
                let name = if i == 0 { 'A' } else { 'B' };
                writeln!(f, "in use: header {name} (generation {generation})")?;
            }
            None if self
                .copies
                .iter()
                .all(|c| c.unusable == Some(Unusable::Blank)) =>
            {
                writeln!(
                    f,
                    "in use: none, both copies blank (never synced): records scanned from offset 0"
                )?
            }
            None => writeln!(
                f,
                "in use: none, no usable copy: recovered from the newest valid record, cursors lost"
            )?,
        }
        let held = self.held();
        let permille = u128::from(held) * 1000 / u128::from(self.capacity.max(1));
        writeln!(
            f,
            "held: {held} bytes of {} ({}.{}%), offsets {}..{}",
            self.capacity,
            permille / 10,
            permille % 10,
            self.tail,
            self.head
        )?;
        writeln!(
            f,
            "recovered past the persisted head: {}",
            Count(self.recovered_records, "record")
        )?;
        writeln!(
            f,
            "records: {} (series-set {}, samples {}, other {}, malformed {})",
            self.series_set_records
                .saturating_add(self.samples_records)
                .saturating_add(self.other_records),
            self.series_set_records,
            self.samples_records,
            self.other_records,
            self.malformed_records
        )?;
        writeln!(
            f,
            "series: {}, {} series in their newest series-sets",
            Count(self.targets, "target"),
            self.series
        )?;
        let need = super::capacity_for_sets(self.sets_bytes);
        write!(
            f,
            "series-sets: {} bytes, each target's newest; their copies take at most a fifth of a ring of {} bytes or more",
            self.sets_bytes,
            need + DATA_START
        )?;
        if need > self.capacity {
            write!(
                f,
                " (this one is smaller: give it --storage.agent.size={})",
                need + DATA_START
            )?;
        }
        writeln!(f)?;
        write!(f, "samples: {}", self.samples)?;
        if let (Some(oldest), Some(newest)) = (self.oldest_ms, self.newest_ms) {
            write!(
                f,
                ", oldest {}, newest {}",
                Rfc3339(oldest),
                Rfc3339(newest)
            )?;
        }
        writeln!(f)?;
        match self.bytes_per_sample_x100() {
            Some(x) => writeln!(f, "bytes per sample: {}.{:02}", x / 100, x % 100)?,
            None => writeln!(f, "bytes per sample: n/a (no samples)")?,
        }
        writeln!(
            f,
            "undecodable: {} samples in {} (series-set gone or not matching)",
            self.undecodable_samples,
            Count(self.undecodable_records, "record")
        )?;
        writeln!(
            f,
            "damage: {}, {} bytes lost",
            Count(self.damaged_skips, "damaged skip"),
            self.damaged_bytes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::testkit::Rng;

    use crate::wal::testkit::{write_set, TempDir};
    use crate::wal::{Chain, MIN_SIZE};

    /// 2023-11-14T22:13:20Z.
    const T0_MS: i64 = 1_700_000_000_000;

    /// Scrape `k` of a target with `n` series: counters that grow by 1.
    fn write_scrape(ring: &mut Ring, chain: &mut Chain, k: i64, n: usize) -> u64 {
        let values: Vec<f64> = (0..n).map(|i| (k * 100) as f64 + i as f64).collect();
        ring.append_samples(chain, T0_MS + k * 15_000, &values)
            .expect("samples")
    }

    /// Two targets (10 and 4 series), 20 scrapes each, 15 s apart; an endpoint that sent up to
    /// the 5th record. Returns the dir, its ring's head and the endpoint's cursor.
    fn two_targets(name: &str) -> (TempDir, u64, u64) {
        let dir = TempDir::new(name);
        let mut ring = Ring::open(&dir.0, MIN_SIZE).expect("open");
        let consumer = ring.consumer(0xbeef).expect("consumer");
        let (mut a, mut b) = (Chain::default(), Chain::default());
        write_set(&mut ring, &mut a, 1, 10);
        write_set(&mut ring, &mut b, 2, 4);
        let mut cursor = 0;
        for k in 0..20 {
            write_scrape(&mut ring, &mut a, k, 10);
            let at = write_scrape(&mut ring, &mut b, k, 4);
            if k == 1 {
                cursor = at;
            }
        }
        consumer.commit(cursor);
        ring.sync().expect("sync");
        let head = ring.head();
        (dir, head, cursor)
    }

    #[test]
    fn a_ring_of_scrapes_is_counted_dated_and_printed() {
        let (dir, head, cursor) = two_targets("scrapes");
        let r = inspect(&dir.0).expect("inspect");
        assert_eq!((r.head, r.tail, r.held()), (head, 0, head));
        assert_eq!(r.file_size, MIN_SIZE);
        assert_eq!(r.capacity, MIN_SIZE - DATA_START);
        assert_eq!(
            r.in_use,
            Some(1),
            "opening writes copy A, the new endpoint B, its commit A, the sync B"
        );
        let a = r.copies[0].usable().expect("copy A");
        assert_eq!(
            (a.generation, a.head, a.cursors.clone()),
            (3, 0, vec![(0xbeef, cursor)]),
            "the commit is in a header before the sync, at the synced head"
        );
        let b = r.copies[1].usable().expect("copy B");
        assert_eq!(
            (b.generation, b.head, b.cursors.clone()),
            (4, head, vec![(0xbeef, cursor)])
        );
        assert_eq!(
            (
                r.series_set_records,
                r.samples_records,
                r.other_records,
                r.malformed_records
            ),
            (2, 40, 0, 0)
        );
        assert_eq!((r.targets, r.series), (2, 14));
        assert_eq!(r.samples, 20 * 14);
        assert_eq!(r.oldest_ms, Some(T0_MS));
        assert_eq!(r.newest_ms, Some(T0_MS + 19 * 15_000));
        assert_eq!((r.undecodable_records, r.undecodable_samples), (0, 0));
        assert_eq!(
            (r.recovered_records, r.damaged_skips, r.damaged_bytes),
            (0, 0, 0)
        );
        let per_sample = u128::from(head) * 100 / 280;
        assert_eq!(r.bytes_per_sample_x100(), Some(per_sample));

        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        let path = dir.0.join(RING_FILE);
        let expected = [
            format!(
                "ring {}: {MIN_SIZE} bytes, capacity {}",
                path.display(),
                MIN_SIZE - DATA_START
            ),
            "header A: valid, generation 3, head 0, tail 0, 1 cursor".to_owned(),
            format!(
                "  endpoint 0x000000000000beef: offset {cursor}, {} bytes behind the head",
                head - cursor
            ),
            format!("header B: valid, generation 4, head {head}, tail 0, 1 cursor"),
            format!(
                "  endpoint 0x000000000000beef: offset {cursor}, {} bytes behind the head",
                head - cursor
            ),
            "in use: header B (generation 4)".to_owned(),
            format!(
                "held: {head} bytes of {} ({}.{}%), offsets 0..{head}",
                r.capacity,
                u128::from(head) * 1000 / u128::from(r.capacity) / 10,
                u128::from(head) * 1000 / u128::from(r.capacity) % 10
            ),
            "recovered past the persisted head: 0 records".to_owned(),
            "records: 42 (series-set 2, samples 40, other 0, malformed 0)".to_owned(),
            "series: 2 targets, 14 series in their newest series-sets".to_owned(),
            format!(
                "series-sets: {} bytes, each target's newest; their copies take at most a fifth of a ring of {} bytes or more",
                r.sets_bytes,
                8 * r.sets_bytes + DATA_START
            ),
            "samples: 280, oldest 2023-11-14T22:13:20.000Z, newest 2023-11-14T22:18:05.000Z"
                .to_owned(),
            format!(
                "bytes per sample: {}.{:02}",
                per_sample / 100,
                per_sample % 100
            ),
            "undecodable: 0 samples in 0 records (series-set gone or not matching)".to_owned(),
            "damage: 0 damaged skips, 0 bytes lost".to_owned(),
        ];
        assert_eq!(lines, expected, "\n{text}");
    }

    /// Issue 17 item 3: a ring under eight times its targets' sets says so, with the size
    /// that would do.
    #[test]
    fn a_ring_too_small_for_its_sets_says_what_size_would_do() {
        let dir = TempDir::new("small-for-sets");
        {
            let mut ring = Ring::open(&dir.0, MIN_SIZE).expect("open");
            let mut c = Chain::default();
            write_set(&mut ring, &mut c, 1, 3000);
            for k in 0..3 {
                write_scrape(&mut ring, &mut c, k, 3000);
            }
            ring.sync().expect("sync");
        }
        let r = inspect(&dir.0).expect("inspect");
        assert!(
            8 * r.sets_bytes > r.capacity,
            "{} bytes of sets",
            r.sets_bytes
        );
        let need = 8 * r.sets_bytes + DATA_START;
        let text = r.to_string();
        assert!(
            text.contains(&format!(
                "of a ring of {need} bytes or more (this one is smaller: give it --storage.agent.size={need})\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn records_after_the_last_sync_are_reported_as_recovered() {
        let (dir, synced, _) = two_targets("recovered");
        {
            let mut ring = Ring::open(&dir.0, MIN_SIZE).expect("reopen");
            let mut c = Chain::default();
            write_set(&mut ring, &mut c, 3, 2);
            for k in 20..25 {
                write_scrape(&mut ring, &mut c, k, 2);
            }
            ring.sync().expect("sync");
            // Three more, then a crash: no sync, no header write.
            for k in 25..28 {
                write_scrape(&mut ring, &mut c, k, 2);
            }
        }
        let r = inspect(&dir.0).expect("inspect");
        assert_eq!(r.recovered_records, 3);
        assert_eq!(r.in_use, Some(1), "the second sync writes copy B");
        // Each open writes a header too: generations 1 to 4 by the first (two of them notes of
        // the endpoint), 5 and 6 here.
        let (a, b) = (
            r.copies[0].usable().expect("A"),
            r.copies[1].usable().expect("B"),
        );
        assert_eq!((a.generation, a.head), (5, synced));
        assert_eq!(b.generation, 6);
        assert!(r.head > b.head, "the head moved past the persisted one");
        assert_eq!((r.series_set_records, r.samples_records), (3, 48));
        assert_eq!((r.targets, r.series), (3, 16));
        assert_eq!(r.samples, 280 + 8 * 2);
        assert_eq!(r.newest_ms, Some(T0_MS + 27 * 15_000));
        let text = r.to_string();
        assert!(
            text.contains("\nin use: header B (generation 6)\n"),
            "{text}"
        );
        assert!(
            text.contains("\nrecovered past the persisted head: 3 records\n"),
            "{text}"
        );
    }

    #[test]
    fn a_damaged_record_is_counted_with_the_bytes_skipped() {
        let (dir, _, _) = two_targets("damage");
        // Flip a payload byte of the 11th samples record (target 1, scrape 5): the walk skips
        // exactly that record.
        let (offset, size) = {
            let mut ring = Ring::open_read_only(&dir.0).expect("open");
            let mut at = ring.tail();
            let mut seen = Vec::new();
            while let Found::Record { record, .. } = ring.read(at) {
                seen.push((record.offset, record.next - record.offset));
                at = record.next;
            }
            seen[2 + 10]
        };
        let path = dir.0.join(RING_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = usize::try_from(DATA_START + offset).expect("fits") + 30;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let r = inspect(&dir.0).expect("inspect");
        assert_eq!((r.damaged_skips, r.damaged_bytes), (1, size));
        assert_eq!(r.samples_records, 39);
        assert_eq!(r.samples, 280 - 10);
        assert!(
            r.to_string()
                .contains(&format!("\ndamage: 1 damaged skip, {size} bytes lost\n")),
            "{r}"
        );
    }

    #[test]
    fn padding_wraps_and_overwritten_series_sets_are_not_damage() {
        let dir = TempDir::new("wrap");
        {
            let mut ring = Ring::open(&dir.0, MIN_SIZE).expect("open");
            let mut c = Chain::default();
            write_set(&mut ring, &mut c, 1, 37);
            // Records of ~100 to ~400 bytes over a 56 KiB ring: several laps, with padding
            // before most wraps; the set is copied forward every eighth of the ring.
            let mut rng = Rng(5);
            for k in 0..2000 {
                let values: Vec<f64> = (0..37).map(|_| rng.next() as f64).collect();
                ring.append_samples(&mut c, T0_MS + k * 1000, &values)
                    .expect("samples");
                if k % 50 == 0 {
                    ring.sync().expect("sync");
                }
            }
            ring.sync().expect("sync");
            assert!(ring.head() > 3 * ring.capacity(), "wrapped");
        }
        let mut ring = Ring::open_read_only(&dir.0).expect("open");
        // The raw `lost` of the walk is not zero: it counts the padding and wrap gaps.
        let (mut at, mut lost_total) = (ring.tail(), 0);
        while let Found::Record { record, lost } = ring.read(at) {
            lost_total += lost;
            at = record.next;
        }
        assert!(lost_total > 0, "some padding was walked over");
        let r = inspect(&dir.0).expect("inspect");
        assert_eq!((r.damaged_skips, r.damaged_bytes), (0, 0));
        assert_eq!(r.samples, r.samples_records * 37);
        assert_eq!(r.newest_ms, Some(T0_MS + 1999 * 1000));
        assert!(
            r.oldest_ms > Some(T0_MS),
            "the oldest scrapes were overwritten"
        );
        // Samples records before the oldest series-set held lost their set.
        assert_eq!(r.undecodable_samples, r.undecodable_records * 37);
        assert!(r.undecodable_records < r.samples_records / 4, "{r}");
        assert_eq!(r.targets, 1);
    }

    /// A format version this build does not read.
    const OTHER: u32 = format::VERSION + 1;

    /// A copy holding `h` with `version` patched in and the CRC fixed.
    fn header_bytes(h: &Header, version: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        h.encode(&mut b);
        b[8..12].copy_from_slice(&version.to_le_bytes());
        let end = format::HEADER_FIXED + 16 * h.cursors.len();
        let crc = format::crc32c(&b[..end]);
        b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn each_header_copy_says_why_it_is_not_used() {
        let capacity = MIN_SIZE - DATA_START;
        let good = Header {
            file_size: MIN_SIZE,
            generation: 4,
            head: 800,
            tail: 0,
            epoch: 1,
            cursors: vec![(0xabc, 400)],
            sending: Vec::new(),
        };
        let judge = |b: &[u8]| HeaderCopy::judge(b, MIN_SIZE, capacity).unusable;
        assert_eq!(judge(&header_bytes(&good, format::VERSION)), None);
        assert_eq!(judge(&[0u8; HEADER_SIZE]), Some(Unusable::Blank));
        assert_eq!(judge(&[7u8; HEADER_SIZE]), Some(Unusable::NoMagic));
        let mut torn = header_bytes(&good, format::VERSION);
        torn[33] ^= 1;
        assert_eq!(judge(&torn), Some(Unusable::Checksum));
        assert_eq!(
            judge(&header_bytes(&good, OTHER)),
            Some(Unusable::Version(OTHER))
        );
        let sized = Header {
            file_size: 2 * MIN_SIZE,
            ..good.clone()
        };
        assert_eq!(
            judge(&header_bytes(&sized, format::VERSION)),
            Some(Unusable::FileSize(2 * MIN_SIZE))
        );
        for (head, tail) in [(10, 20), (capacity + 8, 0)] {
            let h = Header {
                head,
                tail,
                ..good.clone()
            };
            assert_eq!(
                judge(&header_bytes(&h, format::VERSION)),
                Some(Unusable::Offsets)
            );
        }

        // In a ring, the report says why for each copy, with what the copy holds.
        let size = usize::try_from(MIN_SIZE).expect("fits");
        let at_zero = Header {
            file_size: MIN_SIZE,
            generation: 9,
            cursors: vec![(0xabc, 0)],
            ..Header::default()
        };
        let other_version = format!(
            "header B: unusable: format version {OTHER}, this promlet reads {}, generation 10, head 0, tail 0, 1 cursor",
            format::VERSION
        );
        // Copy A, copy B, the copy in use, lines the report prints.
        type Case<'a> = (&'a [u8], Vec<u8>, Option<usize>, &'a [&'a str]);
        let cases: [Case<'_>; 3] = [
            (
                &torn,
                header_bytes(&sized, format::VERSION),
                None,
                &[
                    "header A: unusable: CRC or cursor count does not check out (a torn or damaged write)",
                    "header B: unusable: written for a file of 131072 bytes, the file is 65536, generation 4, head 800, tail 0, 1 cursor",
                    "  endpoint 0x0000000000000abc: offset 400, past the head",
                    "in use: none, no usable copy: recovered from the newest valid record, cursors lost",
                ],
            ),
            (
                &[7u8; HEADER_SIZE],
                header_bytes(&at_zero, format::VERSION),
                Some(1),
                &[
                    "header A: unusable: no PROMLETR magic, not a promlet ring header",
                    "header B: valid, generation 9, head 0, tail 0, 1 cursor",
                    "  endpoint 0x0000000000000abc: offset 0, 0 bytes behind the head",
                    "in use: header B (generation 9)",
                ],
            ),
            (
                &header_bytes(&at_zero, format::VERSION),
                header_bytes(&Header { generation: 10, ..at_zero.clone() }, OTHER),
                Some(0),
                &[
                    "header A: valid, generation 9, head 0, tail 0, 1 cursor",
                    &other_version,
                    "in use: header A (generation 9)",
                ],
            ),
        ];
        for (a, b, in_use, lines) in cases {
            let mut image = vec![0u8; size];
            image[..HEADER_SIZE].copy_from_slice(a);
            image[HEADER_SIZE..2 * HEADER_SIZE].copy_from_slice(&b);
            let mut ring = Ring::from_image(&image).expect("a usable ring");
            let r = examine(&mut ring, &image, MIN_SIZE, Path::new("img"));
            assert_eq!(r.in_use, in_use, "{r}");
            let text = r.to_string();
            for line in lines {
                assert!(text.lines().any(|l| l == *line), "{line:?} in\n{text}");
            }
        }
    }

    #[test]
    fn an_empty_ring_prints_without_samples() {
        let dir = TempDir::new("empty");
        drop(Ring::open(&dir.0, MIN_SIZE).expect("a new ring"));
        let r = inspect(&dir.0).expect("inspect");
        assert_eq!((r.head, r.samples, r.bytes_per_sample_x100()), (0, 0, None));
        let text = r.to_string();
        for line in [
            "held: 0 bytes of 57344 (0.0%), offsets 0..0",
            "records: 0 (series-set 0, samples 0, other 0, malformed 0)",
            "samples: 0",
            "bytes per sample: n/a (no samples)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn what_is_not_a_readable_ring_is_an_error_naming_the_file() {
        let dir = TempDir::new("errors");
        let missing = dir.0.join("missing");
        let e = inspect(&missing).expect_err("no dir");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("open {}", missing.join(RING_FILE).display())),
            "{msg}"
        );
        std::fs::create_dir_all(&dir.0).expect("dir");
        let path = dir.0.join(RING_FILE);
        std::fs::write(
            &path,
            vec![0x5au8; usize::try_from(MIN_SIZE).expect("fits")],
        )
        .expect("write");
        let msg = inspect(&dir.0).expect_err("noise").to_string();
        assert!(msg.contains("is not a promlet ring"), "{msg}");
        // All zeros: an allocated file that never got a header (promlet writes one before
        // it names a new file `ring`), not an empty ring.
        std::fs::write(&path, vec![0u8; usize::try_from(MIN_SIZE).expect("fits")]).expect("write");
        let msg = inspect(&dir.0).expect_err("zeros").to_string();
        let want = format!(
            "{} is not a promlet ring: both header copies are zeros",
            path.display()
        );
        assert!(msg.contains(&want), "{msg}");
        let mut image = vec![0u8; usize::try_from(MIN_SIZE).expect("fits")];
        let foreign = Header {
            file_size: MIN_SIZE,
            ..Header::default()
        };
        image[..HEADER_SIZE].copy_from_slice(&header_bytes(&foreign, OTHER));
        std::fs::write(&path, &image).expect("write");
        let msg = inspect(&dir.0).expect_err("other version").to_string();
        assert!(
            msg.contains(&format!("is a ring of format version {OTHER}")),
            "{msg}"
        );
        std::fs::write(&path, b"short").expect("write");
        let msg = inspect(&dir.0).expect_err("short").to_string();
        assert!(msg.contains("not a ring"), "{msg}");
    }

    /// Invariant I4 for the inspector: bytes flipped in the headers and across the records
    /// give a report, never a panic, and the report's sums hold.
    #[test]
    fn i4_any_damage_gives_a_report_not_a_panic() {
        let (dir, _, _) = two_targets("i4");
        let clean = std::fs::read(dir.0.join(RING_FILE)).expect("read");
        let mut rng = Rng(11);
        let offsets = (0..120)
            .chain(HEADER_SIZE..HEADER_SIZE + 40)
            .chain((0..300).map(|_| 2 * HEADER_SIZE + rng.below(4000)))
            .collect::<Vec<_>>();
        for at in offsets {
            let mut image = clean.clone();
            image[at] ^= rng.next().to_le_bytes()[0] | 1;
            let Ok(mut ring) = Ring::from_image(&image) else {
                continue;
            };
            let r = examine(&mut ring, &image, MIN_SIZE, Path::new("img"));
            assert!(r.damaged_bytes <= r.held(), "flip at {at}: {r}");
            assert!(r.undecodable_samples <= r.samples, "flip at {at}");
            // The report prints, and says what it found where.
            let text = r.to_string();
            assert!(text.starts_with("ring img: "), "flip at {at}: {text}");
            let held = format!("offsets {}..{}", r.tail, r.head);
            assert!(text.contains(&held), "flip at {at}: {text}");
        }
    }

    /// The naive calendar: the day after (y, m, d).
    fn next_day((y, m, d): (i64, i64, i64)) -> (i64, i64, i64) {
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        match (d < month_days, m < 12) {
            (true, _) => (y, m, d + 1),
            (false, true) => (y, m + 1, 1),
            (false, false) => (y + 1, 1, 1),
        }
    }

    #[test]
    fn civil_from_days_matches_a_naive_calendar() {
        // Every day of one 400-year era on each side of the epoch, and through year 0,
        // walked once alongside (400 Gregorian years are exactly 146097 days).
        let mut day = (1570, 1, 1);
        for days in -146_097..146_097 {
            assert_eq!(civil_from_days(days), day, "day {days}");
            day = next_day(day);
        }
        assert_eq!(day, (2370, 1, 1));
        let mut day = (-1, 1, 1);
        for days in -719_893..-719_000 {
            assert_eq!(civil_from_days(days), day, "day {days}");
            day = next_day(day);
        }
        for (days, ymd) in [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (-719_468, (0, 3, 1)),
        ] {
            assert_eq!(civil_from_days(days), ymd, "day {days}");
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (T0_MS, "2023-11-14T22:13:20.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(Rfc3339(ms).to_string(), text, "{ms}");
        }
        // The extremes print something, without overflow.
        for ms in [i64::MIN, i64::MAX] {
            assert!(Rfc3339(ms).to_string().ends_with('Z'));
        }
    }
}
