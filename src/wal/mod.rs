//! The ring: one fixed-size, memory-mapped file in `--storage.agent.path` that holds what was
//! scraped until every `remote_write` endpoint has sent it (DESIGN.md, steps 5–6).
//!
//! The byte layout and the invariants are in [`format`]. This module owns the file:
//! - [`Ring::open`] takes an exclusive lock on the directory (a second promlet refuses to
//!   start and names the holder's pid), creates the file at exactly the configured size, fully
//!   allocated (a full disk is an error at start, never a SIGBUS later), maps it, picks the
//!   newer valid header copy and scans forward from its head for records appended after it
//!   (a crash between appends and the next header write loses nothing the mapping held);
//! - [`Ring::append`] writes a record at the head, first moving the tail past the oldest
//!   records when the ring is full (counted: [`Stats::records_overwritten`]);
//! - [`Ring::read`] reads the record at or after a logical offset, skipping padding, and
//!   resynchronising past damaged bytes (counted: [`Stats::damaged_skips`]);
//! - [`Ring::sync`] flushes the records appended since the last sync, then writes the header
//!   (invariant I3): power loss takes at most what was appended after the last sync.
//!
//! A ring file of another size than configured is refused with both sizes named: promlet does
//! not resize a ring that may hold unsent data; the operator moves it away or sets the old
//! size.
//!
//! This slice is single-threaded (`&mut self`); the producer/consumer split across the loop
//! and sender threads, the compact series-set and samples records, and the cursors' use by
//! senders come with the rest of issue 5.

pub mod codec;
pub mod format;
mod mmap;
pub mod record;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;
use rustix::fs::{FallocateFlags, FlockOperation};

use format::{Bad, Header, DATA_START, HEADER_SIZE, MIN_RECORD, TYPE_PAD};

/// The ring file's name in the storage directory.
pub const RING_FILE: &str = "ring";
/// The lock file's name; it holds the pid of the promlet that has the directory.
pub const LOCK_FILE: &str = "promlet.lock";
/// The smallest ring accepted.
pub const MIN_SIZE: u64 = 64 << 10;

/// Why the ring could not be opened or written.
#[derive(Debug)]
pub enum WalError {
    /// Another process holds the directory's lock.
    Locked {
        /// The storage directory.
        dir: PathBuf,
        /// The holder's pid, as its lock file says.
        pid: String,
    },
    /// The configured size cannot work.
    Size(String),
    /// A file operation failed.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The system's error.
        error: std::io::Error,
    },
    /// A record larger than half the ring.
    TooLarge(usize),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Locked { dir, pid } => write!(
                f,
                "{} is in use by another promlet (pid {pid}); stop it or give this one another --storage.agent.path",
                dir.display()
            ),
            WalError::Size(why) => f.write_str(why),
            WalError::Io { what, error } => write!(f, "{what}: {error}"),
            WalError::TooLarge(n) => write!(f, "a record of {n} bytes does not fit half the ring"),
        }
    }
}

impl std::error::Error for WalError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WalError {
    let what = what.into();
    move |error| WalError::Io { what, error }
}

/// What the ring has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of records (padding included) appended.
    pub bytes_appended: u64,
    /// Records appended (padding not counted).
    pub records_appended: u64,
    /// Records the head overwrote before every reader was past them.
    pub records_overwritten: u64,
    /// Times a reader or the recovery scan skipped damaged bytes.
    pub damaged_skips: u64,
    /// Records found after the persisted head when the ring was opened.
    pub recovered_records: u64,
}

/// One record read from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its logical offset.
    pub offset: u64,
    /// The offset of the record after it.
    pub next: u64,
    /// Its type.
    pub kind: u8,
    /// Its payload, borrowed from the mapping.
    pub payload: &'a [u8],
}

/// What [`Ring::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A record at or after the offset asked for. `lost` counts bytes skipped before it because
    /// the head had overwritten them or they were damaged.
    Record {
        /// The record.
        record: Record<'a>,
        /// Logical bytes between the offset asked for and the record.
        lost: u64,
    },
    /// Nothing at or after the offset yet.
    End,
}

/// The ring file, mapped.
#[derive(Debug)]
pub struct Ring {
    map: MmapMut,
    _ring: File,
    _lock: File,
    capacity: u64,
    header: Header,
    /// The header slot holding `header` as last written (0 or 1).
    slot: usize,
    /// Logical range appended since the last sync.
    dirty: Option<(u64, u64)>,
    stats: Stats,
}

/// Opens `path` for reading and writing, creating it empty if needed.
fn open_rw(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(format!("open {}", path.display())))
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let mut lock = open_rw(&path)?;
    if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut pid = String::new();
        let _ = lock.read_to_string(&mut pid);
        return Err(WalError::Locked {
            dir: dir.to_owned(),
            pid: pid.trim().to_owned(),
        });
    }
    lock.set_len(0)
        .and_then(|()| writeln!(lock, "{}", std::process::id()))
        .map_err(io(format!("write {}", path.display())))?;
    Ok(lock)
}

/// Allocates `size` bytes for a new ring file; filesystems without fallocate get zeros written.
fn allocate(file: &mut File, size: u64, path: &Path) -> Result<(), WalError> {
    let what = || {
        format!(
            "cannot allocate {size} bytes for the ring at {} (free disk space, or a smaller --storage.agent.size)",
            path.display()
        )
    };
    match rustix::fs::fallocate(&*file, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            let zeros = vec![0u8; 1 << 16];
            let mut left = size;
            while left > 0 {
                let n = usize::try_from(left.min(1 << 16)).unwrap_or(1 << 16);
                file.write_all(&zeros[..n]).map_err(io(what()))?;
                left -= n as u64;
            }
            file.sync_all().map_err(io(what()))
        }
        Err(e) => Err(WalError::Io {
            what: what(),
            error: e.into(),
        }),
    }
}

impl Ring {
    /// Opens (or creates) the ring in `dir` at `size` bytes; see the module docs.
    pub fn open(dir: &Path, size: u64) -> Result<Ring, WalError> {
        if size < MIN_SIZE {
            return Err(WalError::Size(format!(
                "--storage.agent.size {size} is below the minimum of {MIN_SIZE} bytes"
            )));
        }
        if usize::try_from(size).is_err() {
            return Err(WalError::Size(format!(
                "--storage.agent.size {size} does not fit this machine's address space"
            )));
        }
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(RING_FILE);
        let mut file = open_rw(&path)?;
        let len = file
            .metadata()
            .map_err(io(format!("stat {}", path.display())))?
            .len();
        if len == 0 {
            allocate(&mut file, size, &path)?;
        } else if len != size {
            return Err(WalError::Size(format!(
                "{} is {len} bytes but --storage.agent.size is {size}: promlet does not resize a ring that may hold unsent data; start with --storage.agent.size={len}, or move the file away to start empty",
                path.display()
            )));
        }
        let map = mmap::map(&file).map_err(io(format!("map {}", path.display())))?;
        let capacity = (size - DATA_START) / 8 * 8;
        let mut ring = Ring {
            map,
            _ring: file,
            _lock: lock,
            capacity,
            header: Header::default(),
            slot: 1,
            dirty: None,
            stats: Stats::default(),
        };
        ring.recover(size);
        Ok(ring)
    }

    /// Picks the header and scans past its head (invariant I4).
    fn recover(&mut self, size: u64) {
        let copies = [
            Header::decode(&self.map[..HEADER_SIZE]),
            Header::decode(&self.map[HEADER_SIZE..2 * HEADER_SIZE]),
        ];
        let best = copies
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().filter(|h| h.file_size == size).map(|h| (i, h)))
            .max_by_key(|(_, h)| h.generation);
        match best {
            Some((slot, h)) if h.tail <= h.head && h.head - h.tail <= self.capacity => {
                self.header = h.clone();
                self.slot = slot;
            }
            _ => {
                if self.map[..2 * HEADER_SIZE].iter().any(|&b| b != 0) {
                    log::error!(
                        "ring: both header copies are damaged; starting the ring empty (its old records are not read)"
                    );
                    self.stats.damaged_skips += 1;
                }
                self.header = Header {
                    file_size: size,
                    ..Header::default()
                };
                self.slot = 1;
            }
        }
        // Records appended after the last header write: follow them while they check out, for
        // at most one lap (syncs come every second; a lap appended between two of them would
        // have overwritten its own start, which then reads as the end).
        let mut head = self.header.head;
        while head - self.header.head < self.capacity {
            head = self.skip_wrap(head);
            match self.frame(head) {
                Ok((kind, size)) => {
                    if kind != TYPE_PAD {
                        self.stats.recovered_records += 1;
                    }
                    head += size;
                }
                Err(_) => break,
            }
        }
        if head != self.header.head {
            // Skipping to the next lap without a record after it does not move the head.
            self.header.head = head.max(self.header.head);
            // The head may have overwritten the persisted tail: find the first whole record
            // a capacity behind it.
            let floor = self.header.head.saturating_sub(self.capacity);
            if self.header.tail < floor {
                self.header.tail = self.resync(floor, self.header.head);
            }
            self.dirty = Some((self.header.head, self.header.head));
        }
    }

    /// The type and size of the record at `offset`.
    fn frame(&self, offset: u64) -> Result<(u8, u64), Bad> {
        format::decode_record(self.bytes_at(offset), offset).map(|r| (r.kind, r.size as u64))
    }

    /// The data bytes from logical offset `offset` to the region's end.
    fn bytes_at(&self, offset: u64) -> &[u8] {
        let pos = usize::try_from(DATA_START + offset % self.capacity).unwrap_or(usize::MAX);
        let end = usize::try_from(DATA_START + self.capacity).unwrap_or(usize::MAX);
        &self.map[pos.min(end)..end]
    }

    /// The offset where a record at `offset` really starts: the next lap when fewer than the
    /// smallest record's bytes are left before the region's end.
    fn skip_wrap(&self, offset: u64) -> u64 {
        let left = self.capacity - offset % self.capacity;
        if left < MIN_RECORD as u64 {
            offset + left
        } else {
            offset
        }
    }

    /// The first offset in `from..until` (8-aligned) holding a valid record, or `until`.
    fn resync(&self, from: u64, until: u64) -> u64 {
        let mut at = from.next_multiple_of(8);
        while at < until {
            if format::decode_record(self.bytes_at(at), at).is_ok() {
                return at;
            }
            at += 8;
        }
        until
    }

    /// Usable data bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Logical offset of the next record.
    pub fn head(&self) -> u64 {
        self.header.head
    }

    /// Logical offset of the oldest record held.
    pub fn tail(&self) -> u64 {
        self.header.tail
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Appends a record; returns its logical offset. Never blocks: when the ring is full the
    /// oldest records go.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64, WalError> {
        let size = format::record_size(payload.len()) as u64;
        if size > self.capacity / 2 || kind == TYPE_PAD {
            return Err(WalError::TooLarge(payload.len()));
        }
        let left = self.capacity - self.header.head % self.capacity;
        let pad = if left < size { left } else { 0 };
        // Make room for the padding and the record (invariant I2).
        while self.header.head + pad + size - self.header.tail > self.capacity {
            self.evict_oldest();
        }
        let start = self.header.head;
        if pad >= MIN_RECORD as u64 {
            let at = self.position(start);
            let n = usize::try_from(pad).unwrap_or(0);
            format::encode_pad(&mut self.map[at..at + n], start);
        }
        let offset = start + pad;
        let at = self.position(offset);
        let n = usize::try_from(size).unwrap_or(0);
        format::encode_record(&mut self.map[at..at + n], offset, kind, payload);
        self.header.head = offset + size;
        self.stats.bytes_appended += pad + size;
        self.stats.records_appended += 1;
        self.dirty = Some(match self.dirty {
            Some((from, _)) => (from, self.header.head),
            None => (start, self.header.head),
        });
        Ok(offset)
    }

    fn position(&self, offset: u64) -> usize {
        usize::try_from(DATA_START + offset % self.capacity).unwrap_or(usize::MAX)
    }

    /// Moves the tail past the oldest record (or past damage, to the next valid one).
    fn evict_oldest(&mut self) {
        let tail = self.skip_wrap(self.header.tail);
        if tail >= self.header.head {
            self.header.tail = self.header.head;
            return;
        }
        match self.frame(tail) {
            Ok((kind, size)) => {
                if kind != TYPE_PAD {
                    self.stats.records_overwritten += 1;
                }
                self.header.tail = tail + size;
            }
            Err(_) => {
                self.stats.damaged_skips += 1;
                self.header.tail = self.resync(tail + 8, self.header.head);
            }
        }
    }

    /// The first record at or after `offset`: padding skipped; an offset the tail has passed
    /// starts at the tail; damaged bytes are skipped to the next valid record (counted).
    pub fn read(&mut self, offset: u64) -> Found<'_> {
        let mut at = offset.max(self.header.tail);
        // Each frame's CRC is checked once, here; the payload is then taken by its length.
        let size = loop {
            at = self.skip_wrap(at);
            if at >= self.header.head {
                return Found::End;
            }
            match self.frame(at) {
                Ok((TYPE_PAD, size)) => at += size,
                Ok((_, size)) => break size,
                Err(Bad::Offset | Bad::Damaged) => {
                    self.stats.damaged_skips += 1;
                    at = self.resync(at + 8, self.header.head);
                }
            }
        };
        let b = self.bytes_at(at);
        Found::Record {
            record: Record {
                offset: at,
                next: at + size,
                kind: b[format::RECORD_HEAD],
                payload: format::checked_payload(b),
            },
            lost: at - offset.min(at),
        }
    }

    /// The cursor of the endpoint `key`; a new endpoint starts at the head (it is sent what is
    /// scraped from now on, as a new remote_write queue in Prometheus is).
    pub fn cursor(&mut self, key: u64) -> u64 {
        if let Some(&(_, at)) = self.header.cursors.iter().find(|(k, _)| *k == key) {
            return at.max(self.header.tail);
        }
        let head = self.header.head;
        self.header.cursors.push((key, head));
        head
    }

    /// Records that endpoint `key` has sent everything before `offset`; persisted by the next
    /// [`Ring::sync`].
    pub fn commit(&mut self, key: u64, offset: u64) {
        let offset = offset.min(self.header.head);
        match self.header.cursors.iter_mut().find(|(k, _)| *k == key) {
            Some(c) => c.1 = c.1.max(offset),
            None => self.header.cursors.push((key, offset)),
        }
    }

    /// Forgets endpoints not in `keys` (after a reload removed them).
    pub fn retain_cursors(&mut self, keys: &[u64]) {
        self.header.cursors.retain(|(k, _)| keys.contains(k));
    }

    /// Flushes the records appended since the last sync, then writes the header to the other
    /// copy (invariant I3).
    pub fn sync(&mut self) -> Result<(), WalError> {
        if let Some((from, to)) = self.dirty.take() {
            let len = to - from;
            if len >= self.capacity {
                self.map
                    .flush_range(
                        usize::try_from(DATA_START).unwrap_or(0),
                        usize::try_from(self.capacity).unwrap_or(0),
                    )
                    .map_err(io("msync the ring"))?;
            } else {
                let start = from % self.capacity;
                let first = len.min(self.capacity - start);
                self.flush(start, first)?;
                if first < len {
                    self.flush(0, len - first)?;
                }
            }
        }
        self.header.generation += 1;
        self.slot = 1 - self.slot;
        let at = self.slot * HEADER_SIZE;
        self.header.encode(&mut self.map[at..at + HEADER_SIZE]);
        self.map
            .flush_range(at, HEADER_SIZE)
            .map_err(io("msync the ring header"))
    }

    fn flush(&self, start: u64, len: u64) -> Result<(), WalError> {
        let start = usize::try_from(DATA_START + start).unwrap_or(0);
        let len = usize::try_from(len).unwrap_or(0);
        self.map
            .flush_range(start, len)
            .map_err(io("msync the ring"))
    }
}

#[cfg(test)]
mod tests;
