//! The ring: one fixed-size, memory-mapped file in `--storage.agent.path` that holds what was
//! scraped until every `remote_write` endpoint has sent it (DESIGN.md, steps 5–6).
//!
//! The byte layout and the invariants are in [`format`](mod@format); the record payloads in [`record`].
//! Three handles share the mapping:
//! - [`Ring`], the single producer on the loop thread. [`Ring::open`] takes an exclusive lock
//!   on the directory (a second promlet refuses to start and names the holder's pid), creates
//!   the file at exactly the configured size, fully allocated (a full disk is an error at
//!   start, never a SIGBUS later), maps it, picks the newer valid header copy and scans
//!   forward from its head for records appended after it with its epoch (a crash between
//!   appends and the next header write loses nothing the mapping held), then writes a header
//!   with a new epoch before the first record (invariant I7). [`Ring::append`] writes a record at
//!   the head, first moving the tail past the oldest records when the ring is full; it never
//!   blocks and, once its buffers are warm, never allocates. [`Ring::append_series_set`] and
//!   [`Ring::append_samples`] write a target's records through its [`Chain`].
//! - [`Consumer`], one per `remote_write` endpoint, on that endpoint's sender thread: it reads
//!   from the endpoint's cursor, hands back decoded scrapes ([`Batch`]), and commits what was
//!   sent. It sleeps in [`Consumer::wait`] (park) until the producer appends (unpark).
//! - [`Syncer`], on whichever thread runs the periodic `msync`
//!   (`--storage.agent.sync-interval`): it flushes the records appended since the last sync,
//!   then writes the header to the other copy (invariant I3).
//!
//! The threads share the mapping, the head and tail offsets and per-endpoint slots, all
//! atomics; the only lock is the syncer's own and each slot's parked-thread handle, taken
//! only when a consumer sleeps.
//!
//! # Series-sets and key frames
//! A samples record is coded against the previous samples record of its [`Chain`] (the same
//! target, the same series-set). A chain starts with a series-set record followed by a key
//! frame. The producer starts a new chain, copying the set forward, once the set is more than
//! [`rewrite_distance`] behind the head: five times the bytes of the targets' current sets,
//! within an eighth and five eighths of the ring ([`Stats::series_sets_rewritten`]). So set
//! copies take at most a fifth of what is appended to a ring at least eight times its sets
//! ([`capacity_for_sets`]; a smaller ring logs a warning once per target), and every samples
//! record is less than that distance after its set and its key frame. A consumer that
//! starts mid-chain (after a restart, or after records were overwritten) replays the chain
//! from its set to rebuild the coding state. Samples whose set or chain the head has already
//! overwritten cannot be decoded: they are counted per endpoint
//! ([`EndpointStats::undecodable`]), never dropped silently. So at most the oldest
//! [`rewrite_distance`] of a full ring (an eighth, for sets under a fortieth of it) is at risk
//! for an endpoint that lags a whole lap.

//! A ring file of another size than configured is refused with both sizes named: promlet does
//! not resize a ring that may hold unsent data; the operator moves it away or sets the old
//! size. A file that is not a ring (no magic in either header copy) or a ring of another
//! format version is refused with a clear error, never overwritten.
//!
//! A new ring is allocated as [`NEW_RING_FILE`], given an empty ring's header (so a file named
//! `ring` always has one, and a file whose header copies are both zeros is not a ring to
//! [`Ring::open_read_only`]), and renamed to [`RING_FILE`] only then: a start that fails (a
//! full disk) or is killed while allocating leaves no empty or partial ring, and the next
//! start removes the `ring.new` it left. An empty `ring` (older promlets left one when the
//! allocation failed) is replaced as a missing one is. A failed [`Ring::open`] also removes
//! the lock file if it made it.
//!
//! # The file under promlet
//! The mapping is only as good as the file under it. Truncated (`truncate -s 0 ring`), every
//! mapped page past the new end faults at its next touch (SIGBUS: the process dies, nothing
//! logged); removed (`rm ring`), the mapping keeps the unlinked file alive, and its backlog
//! goes with the process. So [`Shared::check_file`] compares the file's size and link count
//! (`fstat`: 0.3 µs here, measured in a release build against appends of one target's
//! samples records: 27 % of a 10-series record's 1.1 µs, 14 % of a 100-series one's, 3 % of
//! a 1,000-series one's; one syscall beside the several each scrape makes) with the ring's,
//! before each touch: the producer before each append and each read
//! back ([`Writer::guard`]), each consumer before each [`Consumer::next_batch`], a note
//! before it writes a header, and the syncer before each sync. A file shorter than the ring
//! gets its length back, fully allocated ([`Shared::restore`], once, whichever thread finds
//! it first): its pages then read as zeros instead of faulting. The records are given up
//! (the tail moves to the head; the producer follows at its next append, its chains' sets
//! read as lost, so each target writes its set again), the next sync writes a header even if
//! nothing changed, and it is logged once and counted ([`Stats::file_truncations`]). If the
//! length cannot be restored, nothing touches the mapping again: appends fail with
//! [`WalError::Truncated`], consumers read nothing, syncs fail. A removed file is logged once
//! and counted ([`Stats::file_removals`]); the ring goes on in the unlinked file, whose
//! backlog is lost at stop: Linux links an open file back (`linkat` of `/proc/self/fd/N`)
//! only if it was made with `O_TMPFILE`, so it cannot be linked back.
//!
//! The window that is left: a truncation after a thread's check and before its touch of the
//! mapping still faults: the microseconds of one append, of one sync, or of one batch read
//! and encoded by a sender (its labels are read from the mapping while it encodes). Closing
//! it would take a SIGBUS handler that jumps out of the faulting copy (not sound in Rust) or
//! a write lease on the file (`F_SETLEASE`, which breaks on any other opener, `promlet wal
//! inspect` included); neither is worth it for an operator's mistake.

pub mod codec;
mod consumer;
pub mod format;
pub mod inspect;
mod mmap;
pub mod record;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use rustix::fs::{FallocateFlags, FlockOperation};

pub use consumer::{Batch, Consumer, InFlight};

/// A series-set rewrite leaves the producer's buffers as they were up to this size (so a
/// rewrite of a small target allocates nothing), and gives them back above it.
const REWRITE_KEEP: usize = 1 << 20;
use format::{Bad, Header, DATA_START, HEADER_SIZE, MAGIC, MAX_CURSORS, MIN_RECORD, TYPE_PAD};
use mmap::Region;
pub use record::SetBlocks;
use record::{SetIndex, SetView, TYPE_SAMPLES, TYPE_SAMPLES_STAMPED, TYPE_SERIES_BLOCKS};

/// The ring file's name in the storage directory.
pub const RING_FILE: &str = "ring";
/// The name a new ring file is allocated under before it is renamed to [`RING_FILE`].
pub const NEW_RING_FILE: &str = "ring.new";
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
    /// The file is not a ring this promlet reads.
    Foreign(String),
    /// A file operation failed.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The system's error.
        error: std::io::Error,
    },
    /// A record larger than half the ring.
    TooLarge(usize),
    /// A chain whose series-set record can no longer be read: write the set again.
    SetLost,
    /// Every cursor slot of the header is taken.
    TooManyEndpoints,
    /// The endpoint already has a consumer.
    Claimed(u64),
    /// The ring file was truncated under promlet and its length could not be restored: the
    /// mapping is not touched any more.
    Truncated(PathBuf),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Locked { dir, pid } => write!(
                f,
                "{} is in use by another promlet (pid {pid}); stop it or give this one another --storage.agent.path",
                dir.display()
            ),
            WalError::Size(why) | WalError::Foreign(why) => f.write_str(why),
            WalError::Io { what, error } => write!(f, "{what}: {error}"),
            WalError::TooLarge(n) => write!(f, "a record of {n} bytes does not fit half the ring"),
            WalError::SetLost => f.write_str("the chain's series-set record is no longer readable"),
            WalError::TooManyEndpoints => {
                write!(f, "the ring holds cursors for at most {MAX_CURSORS} remote_write endpoints")
            }
            WalError::Claimed(key) => write!(f, "endpoint {key:#x} already has a reader"),
            WalError::Truncated(path) => write!(
                f,
                "{} was truncated under promlet and its length could not be restored",
                path.display()
            ),
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
    /// Records the head overwrote.
    pub records_overwritten: u64,
    /// Samples the head overwrote before some endpoint had sent them (or with no endpoint).
    pub samples_overwritten: u64,
    /// Times a reader or the recovery scan skipped damaged bytes.
    pub damaged_skips: u64,
    /// Records found after the persisted head when the ring was opened.
    pub recovered_records: u64,
    /// Series-set records copied forward before the head could reach them.
    pub series_sets_rewritten: u64,
    /// Header writes.
    pub syncs: u64,
    /// Syncs that failed (`msync` returned an error).
    pub sync_failures: u64,
    /// Times the ring file was found shorter than the ring under promlet (module docs).
    pub file_truncations: u64,
    /// 1 once the ring file was found removed (unlinked) under promlet.
    pub file_removals: u64,
}

#[derive(Debug, Default)]
struct Counters {
    bytes_appended: AtomicU64,
    records_appended: AtomicU64,
    records_overwritten: AtomicU64,
    samples_overwritten: AtomicU64,
    damaged_skips: AtomicU64,
    recovered_records: AtomicU64,
    series_sets_rewritten: AtomicU64,
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    file_truncations: AtomicU64,
    file_removals: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            bytes_appended: g(&self.bytes_appended),
            records_appended: g(&self.records_appended),
            records_overwritten: g(&self.records_overwritten),
            samples_overwritten: g(&self.samples_overwritten),
            damaged_skips: g(&self.damaged_skips),
            recovered_records: g(&self.recovered_records),
            series_sets_rewritten: g(&self.series_sets_rewritten),
            syncs: g(&self.syncs),
            sync_failures: g(&self.sync_failures),
            file_truncations: g(&self.file_truncations),
            file_removals: g(&self.file_removals),
        }
    }
}

/// One endpoint's standing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Everything before this offset was sent.
    pub cursor: u64,
    /// Samples the head overwrote before this endpoint had sent them.
    pub overwritten: u64,
    /// Samples this endpoint read but could not decode (their set or chain overwritten or
    /// damaged).
    pub undecodable: u64,
}

/// One endpoint's cursor slot.
#[derive(Debug, Default)]
struct Slot {
    used: AtomicBool,
    key: AtomicU64,
    committed: AtomicU64,
    /// The end of the records of the request in flight (at most `committed` when none).
    sending: AtomicU64,
    /// Records before it were read by the endpoint's consumer (at least `committed`): their
    /// values are in its memory, so the head overwriting them loses nothing of them.
    read: AtomicU64,
    overwritten: AtomicU64,
    undecodable: AtomicU64,
    claimed: AtomicBool,
    waiting: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

/// What the header copies need between syncs.
#[derive(Debug, Default)]
struct SyncState {
    /// The copy last written (0 or 1).
    slot: usize,
    generation: u64,
    /// Records before this offset are on disk.
    synced_head: u64,
    /// The header last written, generation 0 (to skip writing an unchanged one).
    last: Option<Header>,
    /// The header being built (its vectors reused: a note allocates nothing once warm).
    next: Header,
    /// The copy last written was not flushed yet (a note, [`Shared::note`]).
    unflushed: bool,
    buf: Vec<u8>,
}

/// How a header write is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Flushed (`msync`) after the records it points past: survives power loss.
    Synced,
    /// Written into the mapping only: survives the process, not power loss.
    Noted,
}

/// A record as [`Shared::read`] found it; its frame is in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    offset: u64,
    next: u64,
    kind: u8,
    lost: u64,
}

/// What the producer, the consumers and the syncer share.
#[derive(Debug)]
struct Shared {
    region: Region,
    capacity: u64,
    file_size: u64,
    /// Records before it are written; stored after the bytes (Release), loaded before reading
    /// them (Acquire).
    head: AtomicU64,
    /// Records before it may be overwritten; stored before the bytes are overwritten, checked
    /// again after a reader copied them (a torn read is detected, then retried).
    tail: AtomicU64,
    slots: Vec<Slot>,
    slots_used: AtomicUsize,
    /// The epoch this process stamps its records with (invariant I7).
    epoch: u64,
    counters: Counters,
    sync: Mutex<SyncState>,
    /// The logical offset of the last damage logged (each is logged once).
    logged_damage: AtomicU64,
    /// The ring file and the directory lock, kept open as long as anyone maps the file.
    _files: Option<(File, File)>,
    /// The ring file's path, for log lines about it.
    path: PathBuf,
    /// What became of the file under promlet ([`Shared::check_file`]).
    watch: FileWatch,
}

/// What the threads know of the ring file changing under promlet (module docs, "The file
/// under promlet").
#[derive(Debug, Default)]
struct FileWatch {
    /// Bumped each time a truncated file's length was restored and the ring's records given
    /// up: the producer moves its own tail to its head when it sees a new value.
    resets: AtomicU64,
    /// The file's length could not be restored: nobody touches the mapping any more.
    broken: AtomicBool,
    /// The removal was logged (it is logged and counted once).
    removed: AtomicBool,
    /// The header copies read as zeros since a restore: the next header write must happen
    /// even if the header did not change.
    header_lost: AtomicBool,
    /// Serialises repairs: one thread restores, the others then find the length back.
    repair: Mutex<()>,
    /// The errno of the last failed sync, 0 after a sync that worked: a failure is logged
    /// once per kind ([`Syncer::sync_logged`]).
    sync_errno: std::sync::atomic::AtomicI32,
    /// An errno the next flushes fail with instead of flushing (tests).
    #[cfg(test)]
    inject: Mutex<Option<i32>>,
    /// A restore fails as on a full disk (tests).
    #[cfg(test)]
    fail_restore: AtomicBool,
}

/// The payload of a frame in a buffer that [`Shared::frame`] filled.
fn payload_of(frame: &[u8]) -> &[u8] {
    format::checked_payload(frame)
}

impl Shared {
    fn pos(&self, offset: u64) -> usize {
        usize::try_from(DATA_START + offset % self.capacity).unwrap_or(usize::MAX)
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

    /// Copies the record at `offset` into `buf` and checks it (invariant I1): its type and the
    /// bytes it occupies.
    fn frame(&self, offset: u64, buf: &mut Vec<u8>) -> Result<(u8, u64), Bad> {
        self.stamped_frame(offset, buf)
            .map(|(kind, size, _)| (kind, size))
    }

    /// [`Shared::frame`], with the record's epoch.
    fn stamped_frame(&self, offset: u64, buf: &mut Vec<u8>) -> Result<(u8, u64, u16), Bad> {
        let len = self.frame_head(offset, &mut [0u8; format::RECORD_HEAD])?;
        let n = usize::try_from(len).map_err(|_| Bad::Damaged)? + format::RECORD_HEAD;
        // Exactly: a reader keeps the buffer of the largest record it read (a target's set),
        // and doubling would keep up to twice that.
        if n > buf.capacity() {
            buf.reserve_exact(n - buf.len());
        }
        // Only bytes past the last read's length are zeroed: the copy overwrites them all.
        buf.resize(n, 0);
        self.region.read(self.pos(offset), &mut buf[..n]);
        format::decode_record(&buf[..n], offset).map(|r| (r.kind, r.size as u64, r.epoch))
    }

    /// Checks the record at `offset` where it lies (invariant I1, as [`Shared::frame`]), its
    /// CRC computed over pieces copied to the stack, and that the tail has not passed it by
    /// the end: its type and payload length. A reader of a large series-set then copies none
    /// of it ([`record::SetIndex::open_in_ring`]).
    /// With `verified`, the record's CRC was checked by an earlier call (its bytes cannot have
    /// changed while the tail has not passed it) and is not computed again.
    fn check_in_place(&self, offset: u64, verified: bool) -> Result<(u8, usize), Bad> {
        const PIECE: usize = 4 << 10;
        let mut head = [0u8; format::RECORD_HEAD + 1];
        let len = self.frame_head(offset, &mut head)?;
        let end = format::RECORD_HEAD + usize::try_from(len).map_err(|_| Bad::Damaged)?;
        let mut crc = format::crc32c(&head[8..]);
        let mut piece = [0u8; PIECE];
        let mut at = if verified { end } else { head.len() };
        while at < end {
            let n = PIECE.min(end - at);
            self.region.read(self.pos(offset) + at, &mut piece[..n]);
            crc = format::crc32c_append(crc, &piece[..n]);
            at += n;
        }
        fence(Ordering::Acquire);
        if self.tail.load(Ordering::Relaxed) > offset {
            return Err(Bad::Offset);
        }
        if !verified && crc != u32::from_le_bytes([head[4], head[5], head[6], head[7]]) {
            return Err(Bad::Damaged);
        }
        Ok((head[format::RECORD_HEAD], end - head.len()))
    }

    /// Copies `out.len()` bytes of the payload of the record at `record`, from its byte `at`;
    /// false if the tail has passed the record by the end of the copy (its bytes may be of a
    /// newer lap). The caller keeps `at + out.len()` within the payload.
    fn copy_payload(&self, record: u64, at: usize, out: &mut [u8]) -> bool {
        let from = self
            .pos(record)
            .saturating_add(format::RECORD_HEAD + 1)
            .saturating_add(at);
        self.region.read(from, out);
        // Pairs with the producer's fence between moving the tail and overwriting.
        fence(Ordering::Acquire);
        self.tail.load(Ordering::Relaxed) <= record
    }

    /// Copies the first `head.len()` bytes (at least the record head) of the record at
    /// `offset` and checks what can be checked without its CRC: its stored offset, and a
    /// length that fits before the region's end. Returns that length (type byte + payload).
    fn frame_head(&self, offset: u64, head: &mut [u8]) -> Result<u64, Bad> {
        self.region.read(self.pos(offset), head);
        let word = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(head.get(at..at + n).unwrap_or(&[0u8; 8][..n]));
            u64::from_le_bytes(b)
        };
        if word(8, 8) & format::MAX_OFFSET != offset {
            return Err(Bad::Offset);
        }
        let len = word(0, 4);
        if len == 0 || format::RECORD_HEAD as u64 + len > self.capacity - offset % self.capacity {
            return Err(Bad::Damaged);
        }
        Ok(len)
    }

    /// The first offset in `from..until` (8-aligned) holding a valid record, or `until`.
    fn resync(&self, from: u64, until: u64, buf: &mut Vec<u8>) -> u64 {
        let mut at = from.next_multiple_of(8);
        while at < until {
            if self.frame(at, buf).is_ok() {
                return at;
            }
            at += 8;
        }
        until
    }

    fn damaged(&self, at: u64, resumed: u64) {
        bump(&self.counters.damaged_skips, 1);
        if self.logged_damage.fetch_max(at + 1, Ordering::Relaxed) <= at {
            log::warn!(
                "ring: damaged record at logical offset {at} (file byte {}); skipped to offset {resumed}",
                self.pos(at)
            );
        }
    }

    /// The first record at or after `offset`, copied into `buf`: padding skipped; an offset
    /// the tail has passed starts at the tail; damaged bytes are skipped to the next valid
    /// record (counted). `None` at the head.
    fn read(&self, offset: u64, buf: &mut Vec<u8>) -> Option<Meta> {
        self.read_if(offset, buf, |_| true)
    }

    /// [`Shared::read`], copying (and checking) only records whose type `wanted` takes: for
    /// the others only the head is read, so a reader passing a target's large series-set
    /// copies none of it. Their payload is not CRC-checked; a damaged length lands on bytes
    /// that are not a record, which the next read resyncs past.
    fn read_if(&self, offset: u64, buf: &mut Vec<u8>, wanted: impl Fn(u8) -> bool) -> Option<Meta> {
        let mut at = offset;
        loop {
            at = self.skip_wrap(at.max(self.tail.load(Ordering::Acquire)));
            let head = self.head.load(Ordering::Acquire);
            if at >= head {
                return None;
            }
            let mut peek = [0u8; format::RECORD_HEAD + 1];
            if let Ok(len) = self.frame_head(at, &mut peek) {
                let kind = peek[format::RECORD_HEAD];
                if kind != TYPE_PAD && !wanted(kind) {
                    fence(Ordering::Acquire);
                    if self.tail.load(Ordering::Relaxed) > at {
                        continue;
                    }
                    let size = format::record_size(usize::try_from(len - 1).unwrap_or(0)) as u64;
                    return Some(Meta {
                        offset: at,
                        next: at + size,
                        kind,
                        lost: at - offset.min(at),
                    });
                }
            }
            let found = self.frame(at, buf);
            // Pairs with the producer's fence between moving the tail and overwriting: bytes
            // of a newer lap read above imply the newer tail is seen here.
            fence(Ordering::Acquire);
            if self.tail.load(Ordering::Relaxed) > at {
                continue;
            }
            match found {
                Ok((TYPE_PAD, size)) => at += size,
                Ok((kind, size)) => {
                    return Some(Meta {
                        offset: at,
                        next: at + size,
                        kind,
                        lost: at - offset.min(at),
                    })
                }
                Err(_) => {
                    let next = self.resync(at + 8, head, buf);
                    self.damaged(at, next);
                    at = next;
                }
            }
        }
    }

    fn slots(&self) -> &[Slot] {
        &self.slots[..self
            .slots_used
            .load(Ordering::Acquire)
            .min(self.slots.len())]
    }

    /// Wakes the consumers asleep in [`Consumer::wait`].
    fn wake(&self) {
        for slot in self.slots() {
            if slot.waiting.load(Ordering::SeqCst) {
                if let Some(t) = slot.thread.lock().ok().as_ref().and_then(|t| t.as_ref()) {
                    t.unpark();
                }
            }
        }
    }

    /// Builds in `st.next` the header of `head` and `tail` with every endpoint's cursor and
    /// request in flight. A synced header clamps cursors to `tail..=head` (invariant I3); a
    /// note keeps a cursor past its head (the synced one): recovery clamps it to the head it
    /// finds by scanning.
    fn fill_header(&self, st: &mut SyncState, head: u64, tail: u64, how: Persist) {
        let next = &mut st.next;
        next.file_size = self.file_size;
        next.generation = 0;
        next.head = head;
        next.tail = tail;
        next.epoch = self.epoch;
        next.cursors.clear();
        next.sending.clear();
        for s in self
            .slots()
            .iter()
            .filter(|s| s.used.load(Ordering::Acquire))
        {
            let at = s.committed.load(Ordering::Acquire).max(tail);
            let at = match how {
                Persist::Synced => at.min(head),
                Persist::Noted => at,
            };
            next.cursors.push((s.key.load(Ordering::Relaxed), at));
            next.sending.push(s.sending.load(Ordering::Acquire).max(at));
        }
    }

    /// Writes `st.next` to the copy that does not hold the last header (generation + 1),
    /// flushing it if `how` says so; an unchanged header is not written again.
    fn put_header(&self, st: &mut SyncState, how: Persist) -> Result<bool, WalError> {
        let flush = how == Persist::Synced;
        if self.watch.header_lost.swap(false, Ordering::AcqRel) {
            // Both copies read as zeros since a restore: write one even if unchanged.
            st.last = None;
        }
        if st.last.as_ref() == Some(&st.next) {
            if flush && st.unflushed {
                self.region
                    .flush(st.slot * HEADER_SIZE, HEADER_SIZE)
                    .map_err(io("msync the ring header"))?;
                st.unflushed = false;
                bump(&self.counters.syncs, 1);
                return Ok(true);
            }
            return Ok(false);
        }
        let slot = 1 - st.slot;
        st.next.generation = st.generation + 1;
        st.buf.resize(HEADER_SIZE, 0);
        st.next.encode(&mut st.buf);
        st.next.generation = 0;
        self.region.write(slot * HEADER_SIZE, &st.buf);
        if flush {
            self.region
                .flush(slot * HEADER_SIZE, HEADER_SIZE)
                .map_err(io("msync the ring header"))?;
            bump(&self.counters.syncs, 1);
        }
        st.unflushed = !flush;
        st.slot = slot;
        st.generation += 1;
        match st.last.as_mut() {
            Some(last) => std::mem::swap(last, &mut st.next),
            None => st.last = Some(std::mem::take(&mut st.next)),
        }
        Ok(true)
    }

    /// Writes the endpoints' cursors and requests in flight into a header copy now, without
    /// waiting for the disk: a `kill -9` from here on finds them (the mapping outlives the
    /// process), and the next sync flushes them. The header's head is the last synced one, so
    /// it never points past records that were not flushed (invariant I3); records after it
    /// are found by recovery's scan (I7).
    fn note(&self) {
        if !self.region.writable() || !self.check_file() {
            return;
        }
        let mut guard = self
            .sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *guard;
        let head = st.synced_head;
        let tail = self.tail.load(Ordering::Acquire).min(head);
        self.fill_header(st, head, tail, Persist::Noted);
        // Nothing is flushed: a note cannot fail.
        let _ = self.put_header(st, Persist::Noted);
    }

    /// Whether the mapping may be touched: checks the ring file's size and link count
    /// (`fstat`, 0.3 µs; module docs) against the ring. A file shorter than the ring (the
    /// pages past its end would fault, SIGBUS) gets its length back, its records given up
    /// ([`Shared::restore`]); a removed file is logged once and the ring goes on in the
    /// unlinked file. False only when the length could not be restored: then nothing may
    /// touch the mapping again. An in-memory image, and a ring opened read-only, are not
    /// checked.
    fn check_file(&self) -> bool {
        if self.watch.broken.load(Ordering::Acquire) {
            return false;
        }
        let Some((file, _)) = self._files.as_ref().filter(|_| self.region.writable()) else {
            return true;
        };
        let Ok(st) = rustix::fs::fstat(file) else {
            return true;
        };
        if st.st_nlink == 0 && !self.watch.removed.swap(true, Ordering::AcqRel) {
            bump(&self.counters.file_removals, 1);
            log::error!(
                "ring: {} was removed under promlet; it goes on in the unlinked file, but its backlog is lost at stop (a removed file cannot be linked back): restart promlet to start a new ring file",
                self.path.display()
            );
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        len >= self.file_size || self.restore(file)
    }

    /// Gives a truncated ring file its length back (the mapped pages then read as zeros
    /// instead of faulting) and gives up the ring's records: the tail moves to the head, the
    /// producer follows ([`FileWatch::resets`]), the next sync writes a header. False if the
    /// length cannot be restored (a full disk): the ring is then broken for good.
    fn restore(&self, file: &File) -> bool {
        let _one = self
            .watch
            .repair
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let len = rustix::fs::fstat(file).map_or(0, |st| u64::try_from(st.st_size).unwrap_or(0));
        if len >= self.file_size {
            // Another thread restored it while this one waited.
            return !self.watch.broken.load(Ordering::Acquire);
        }
        bump(&self.counters.file_truncations, 1);
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire).min(head);
        #[cfg(test)]
        let allocated = if self.watch.fail_restore.load(Ordering::Relaxed) {
            Err(WalError::Io {
                what: "allocate (injected)".into(),
                error: std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            })
        } else {
            allocate(file, self.file_size, &self.path)
        };
        #[cfg(not(test))]
        let allocated = allocate(file, self.file_size, &self.path);
        if let Err(e) = allocated {
            self.watch.broken.store(true, Ordering::Release);
            log::error!(
                "ring: {} was truncated to {len} bytes under promlet, and its length could not be restored ({e}): the ring's contents were lost and nothing more is appended or sent; restart promlet",
                self.path.display()
            );
            return false;
        }
        // Readers skip to the head now; the producer moves its own tail at its next append.
        self.tail.fetch_max(head, Ordering::AcqRel);
        self.watch.header_lost.store(true, Ordering::Release);
        self.watch.resets.fetch_add(1, Ordering::AcqRel);
        log::error!(
            "ring: {} was truncated to {len} bytes under promlet; restored its length of {} bytes, but the ring's contents were lost ({} bytes of records, offsets {tail}..{head}); appending goes on",
            self.path.display(),
            self.file_size,
            head - tail
        );
        true
    }

    fn flush(&self, from: u64, to: u64) -> Result<(), WalError> {
        #[cfg(test)]
        if let Some(errno) = *self
            .watch
            .inject
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(WalError::Io {
                what: "msync the ring".into(),
                error: std::io::Error::from_raw_os_error(errno),
            });
        }
        let data = |start: u64, len: u64| {
            let at = usize::try_from(DATA_START + start).unwrap_or(usize::MAX);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            self.region.flush(at, len).map_err(io("msync the ring"))
        };
        let len = to - from.min(to);
        if len >= self.capacity {
            return data(0, self.capacity);
        }
        let start = from % self.capacity;
        let first = len.min(self.capacity - start);
        data(start, first)?;
        if first < len {
            data(0, len - first)?;
        }
        Ok(())
    }
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

/// Writes the header of an empty ring (generation 0) into copy B of a new ring file of
/// `size` bytes and makes it durable, before the file is renamed into place: a file named
/// `ring` always has a header, so a file whose header copies are both zeros is not a ring
/// (inspection says so). Copy B, as a blank file's header counts as: the first header write
/// goes to copy A either way.
fn first_header(file: &File, size: u64, path: &Path) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; HEADER_SIZE];
    Header {
        file_size: size,
        ..Header::default()
    }
    .encode(&mut buf);
    file.write_all_at(&buf, HEADER_SIZE as u64)
        .and_then(|()| file.sync_all())
        .map_err(io(format!("write {}", path.display())))
}

/// Allocates `size` bytes for a ring file (a new one, or one whose length is restored);
/// filesystems without fallocate get zeros written where the file is shorter.
fn allocate(file: &File, size: u64, path: &Path) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    let what = || {
        format!(
            "cannot allocate {size} bytes for the ring at {} (free disk space, or a smaller --storage.agent.size)",
            path.display()
        )
    };
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            let zeros = vec![0u8; 1 << 16];
            let mut at = file.metadata().map_err(io(what()))?.len().min(size);
            while at < size {
                let n = usize::try_from((size - at).min(1 << 16)).unwrap_or(1 << 16);
                file.write_all_at(&zeros[..n], at).map_err(io(what()))?;
                at += n as u64;
            }
            file.sync_all().map_err(io(what()))
        }
        Err(e) => Err(WalError::Io {
            what: what(),
            error: e.into(),
        }),
    }
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
    /// Its payload, copied out of the mapping.
    pub payload: &'a [u8],
}

/// What [`Ring::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a> {
    /// A record at or after the offset asked for. `lost` counts the logical bytes skipped
    /// before it: overwritten by the head, damaged, or padding and the gap at the wrap.
    Record {
        /// The record.
        record: Record<'a>,
        /// Logical bytes between the offset asked for and the record.
        lost: u64,
    },
    /// Nothing at or after the offset yet.
    End,
}

/// A target's place in the ring: its current series-set and the coding state of its samples.
/// The scrape loop keeps one per target and passes it to [`Ring::append_series_set`] and
/// [`Ring::append_samples`].
#[derive(Debug, Clone, Default)]
pub struct Chain {
    set: Option<u64>,
    last: Option<u64>,
    states: Vec<codec::SeriesState>,
    /// The target its set was written for, and the bytes the set's record takes.
    target: u64,
    set_bytes: u64,
}

impl Chain {
    /// The offset of the chain's series-set record, once one was written.
    pub fn series_set(&self) -> Option<u64> {
        self.set
    }
}

/// The writing half: owns the head, moves the tail.
#[derive(Debug)]
struct Writer {
    shared: Arc<Shared>,
    head: u64,
    tail: u64,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    /// The [`FileWatch::resets`] this writer has followed.
    resets: u64,
}

impl Writer {
    /// Checks the ring file before the producer touches the mapping ([`Shared::check_file`]);
    /// after a restore, moves the tail to the head: the records before it read as zeros.
    fn guard(&mut self) -> Result<(), WalError> {
        if !self.shared.check_file() {
            return Err(WalError::Truncated(self.shared.path.clone()));
        }
        let resets = self.shared.watch.resets.load(Ordering::Acquire);
        if resets != self.resets {
            self.resets = resets;
            self.tail = self.head;
            self.shared.tail.fetch_max(self.head, Ordering::AcqRel);
        }
        Ok(())
    }

    fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64, WalError> {
        self.append_parts(kind, &[payload])
    }

    /// [`Writer::append`] of a payload made of `parts`, back to back: each is written in
    /// place, none is copied into one buffer first.
    fn append_parts(&mut self, kind: u8, parts: &[&[u8]]) -> Result<u64, WalError> {
        self.guard()?;
        let cap = self.shared.capacity;
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let size = format::record_size(payload_len) as u64;
        if size > cap / 2 || kind == TYPE_PAD {
            return Err(WalError::TooLarge(payload_len));
        }
        if self.head + cap > format::MAX_OFFSET {
            return Err(WalError::Size(
                "the ring's 48-bit logical offsets are used up: move the ring file away".into(),
            ));
        }
        let start = self.head;
        let left = cap - start % cap;
        let pad = if left < size { left } else { 0 };
        // Make room for the padding and the record (invariant I2), and tell readers before a
        // byte is overwritten.
        let tail = self.tail;
        while start + pad + size - self.tail > cap {
            self.evict_oldest();
        }
        if self.tail != tail {
            // A maximum, not a store: a restore ([`Shared::restore`]) on another thread may
            // have moved it past this writer's tail already.
            self.shared.tail.fetch_max(self.tail, Ordering::Relaxed);
            fence(Ordering::Release);
        }
        let region = &self.shared.region;
        if pad >= MIN_RECORD as u64 {
            let n = usize::try_from(pad).unwrap_or(0);
            self.frame.resize(n, 0);
            format::encode_pad(&mut self.frame[..n], start, self.shared.epoch);
            region.write(self.shared.pos(start), &self.frame[..n]);
        }
        let offset = start + pad;
        let n = usize::try_from(size).unwrap_or(0);
        // In place, head, payload and zero padding: a set's record is not copied first.
        let head = format::record_head_parts(offset, self.shared.epoch, kind, parts);
        let at = self.shared.pos(offset);
        region.write(at, &head);
        let mut written = head.len();
        for part in parts {
            region.write(at + written, part);
            written += part.len();
        }
        region.write(at + written, &[0u8; 8][..n.saturating_sub(written).min(8)]);
        self.head = offset + size;
        self.shared.head.store(self.head, Ordering::SeqCst);
        let c = &self.shared.counters;
        bump(&c.bytes_appended, pad + size);
        bump(&c.records_appended, 1);
        self.shared.wake();
        Ok(offset)
    }

    /// Moves the tail past the oldest record (or past damage, to the next valid one), counting
    /// the samples of each endpoint that had not sent them. Reads only the record's head and
    /// the samples count, into a fixed buffer: no allocation, no second CRC pass (readers
    /// check CRCs).
    fn evict_oldest(&mut self) {
        let shared = &*self.shared;
        let t = shared.skip_wrap(self.tail);
        if t != self.tail {
            // The gap before the wrap: passing it may already make the room asked for.
            self.tail = t.min(self.head);
            return;
        }
        if t >= self.head {
            self.tail = self.head;
            return;
        }
        let mut head = [0u8; format::RECORD_HEAD + 1 + 34];
        let Ok(len) = shared.frame_head(t, &mut head) else {
            self.tail = shared.resync(t + 8, self.head, &mut self.scratch);
            shared.damaged(t, self.tail);
            return;
        };
        let kind = head[format::RECORD_HEAD];
        if kind != TYPE_PAD {
            bump(&shared.counters.records_overwritten, 1);
        }
        if record::is_samples(kind) {
            let end = (format::RECORD_HEAD as u64 + len).min(head.len() as u64);
            let payload = &head[format::RECORD_HEAD + 1..usize::try_from(end).unwrap_or(0)];
            let n = record::samples_head(payload).map_or(0, |h| h.2) as u64;
            let mut unsent = shared
                .slots()
                .iter()
                .all(|s| !s.used.load(Ordering::Acquire));
            for slot in shared.slots() {
                // Records the consumer has read are sent from its memory (or counted as
                // failed or undecodable there): only unread ones are lost here, so
                // delivered + lost adds up to what was appended.
                let read = slot.read.load(Ordering::Acquire);
                if slot.used.load(Ordering::Acquire)
                    && read.max(slot.committed.load(Ordering::Acquire)) <= t
                {
                    bump(&slot.overwritten, n);
                    unsent = true;
                }
            }
            if unsent {
                bump(&shared.counters.samples_overwritten, n);
            }
        }
        self.tail = t + format::record_size(usize::try_from(len - 1).unwrap_or(0)) as u64;
    }
}

/// The ring file, mapped; the producer half (see the module docs).
#[derive(Debug)]
pub struct Ring {
    w: Writer,
    /// Payloads being built, and records read back.
    payload: Vec<u8>,
    bits: codec::BitWriter,
    read_buf: Vec<u8>,
    set_index: SetIndex,
    /// A chain whose set is this far behind the head starts over ([`rewrite_distance`]).
    rewrite_after: u64,
    /// Each target's current series-set: where its record is and the bytes it takes.
    sets: std::collections::HashMap<u64, LiveSet>,
    /// The bytes of the sets in `sets`.
    sets_bytes: u64,
    /// Set writes since `sets` was last pruned of sets the tail passed.
    since_prune: u32,
}

/// A target's current series-set, as the copy rule counts it.
#[derive(Debug, Clone, Copy)]
struct LiveSet {
    at: u64,
    bytes: u64,
    /// The ring's size was logged as too small for the sets when this one was written.
    warned: bool,
}

/// How far behind the head a chain's series-set may fall before the next samples record
/// copies it forward, for a ring of `capacity` data bytes whose targets' current sets take
/// `sets_bytes`: five times the sets, so that their copies take at most a fifth of what is
/// appended (each set is copied once per distance), but at least an eighth of the ring (small
/// sets: fewer copies cost nothing) and at most five eighths (the set must still be held when
/// the samples that use it are appended; at exactly eight times the sets that is the fifth).
/// The distance is also the most of a ring's oldest data an endpoint lagging a whole lap
/// behind cannot decode (its chain's set and key frame gone). Issue 17: a fixed eighth copied
/// a set larger than an eighth of the ring at every scrape.
pub fn rewrite_distance(capacity: u64, sets_bytes: u64) -> u64 {
    sets_bytes
        .saturating_mul(5)
        .clamp(capacity / 8, capacity / 8 * 5)
}

/// The data capacity under which copies of series-sets of `sets_bytes` take more than a fifth
/// of a ring: eight times the sets.
pub fn capacity_for_sets(sets_bytes: u64) -> u64 {
    sets_bytes.saturating_mul(8)
}

/// Runs `msync` and writes the header; any thread may hold one (see the module docs).
#[derive(Debug, Clone)]
pub struct Syncer {
    shared: Arc<Shared>,
}

/// Picks the header and scans past its head (invariant I4). Returns the header and the copy
/// it came from.
fn recover(shared: &Shared, path: &Path) -> Result<(Header, usize), WalError> {
    let mut copies = [vec![0u8; HEADER_SIZE], vec![0u8; HEADER_SIZE]];
    for (i, c) in copies.iter_mut().enumerate() {
        shared.region.read(i * HEADER_SIZE, c);
    }
    let best = copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, Header::decode(c)?)))
        .filter(|(_, h)| {
            h.file_size == shared.file_size
                && h.tail <= h.head
                && h.head - h.tail <= shared.capacity
        })
        .max_by_key(|(_, h)| h.generation);
    let mut buf = Vec::new();
    let (mut header, slot) = match best {
        Some(found) => (found.1, found.0),
        None => {
            if let Some(v) = copies
                .iter()
                .filter_map(|c| Header::decode_any_version(c))
                .map(|(v, _)| v)
                .find(|&v| v != format::VERSION)
            {
                return Err(WalError::Foreign(format!(
                    "{} is a ring of format version {v}, and this promlet reads version {}: run the promlet that wrote it until it has sent its data, or move the file away to start an empty ring",
                    path.display(),
                    format::VERSION
                )));
            }
            let blank = copies.iter().all(|c| c.iter().all(|&b| b == 0));
            if blank && !shared.region.writable() {
                // Opening for writing makes a blank file a new ring; a reader (inspection)
                // says what it is instead of reporting an empty ring.
                return Err(WalError::Foreign(format!(
                    "{} is not a promlet ring: both header copies are zeros (no ring was ever written to it)",
                    path.display()
                )));
            }
            if !blank && copies.iter().all(|c| !c.starts_with(MAGIC)) {
                return Err(WalError::Foreign(format!(
                    "{} is not a promlet ring (neither header copy starts with {}); move it away to start an empty ring",
                    path.display(),
                    String::from_utf8_lossy(MAGIC)
                )));
            }
            let mut header = Header {
                file_size: shared.file_size,
                ..Header::default()
            };
            if !blank {
                // Both copies damaged: find the newest record that checks out and go on from
                // it. Cursors are lost; endpoints start again at the head.
                let (head, epoch) = newest(shared, &mut buf).unwrap_or((0, 0));
                (header.head, header.tail, header.epoch) = (head, head, epoch.into());
                log::error!(
                    "ring: both header copies of {} are damaged; recovered from the records (newest at offset {}), cursors lost",
                    path.display(),
                    header.head
                );
                bump(&shared.counters.damaged_skips, 1);
            }
            (header, 1)
        }
    };
    // Records appended after the last header write: follow them while they check out and
    // carry the header's epoch (invariant I7), for at most one lap (a lap appended between two
    // syncs would have overwritten its own start, which then reads as the end). The head is
    // the end of the last one found.
    let epoch = u16::try_from(header.epoch & 0xffff).unwrap_or(0);
    let (mut at, mut end) = (header.head, header.head);
    while at - header.head < shared.capacity {
        at = shared.skip_wrap(at);
        match shared.stamped_frame(at, &mut buf) {
            Ok((kind, size, e)) if e == epoch => {
                if kind != TYPE_PAD {
                    bump(&shared.counters.recovered_records, 1);
                }
                at += size;
                end = at;
            }
            _ => break,
        }
    }
    header.head = end;
    // The head may have overwritten the persisted tail (records appended after the last sync
    // moved it on, and a record being written when the process died may have overwritten the
    // oldest one): the tail is the first record that checks out, at most a capacity behind
    // the head.
    let floor = header.head.saturating_sub(shared.capacity);
    let persisted = header.tail >= floor;
    let from = shared.skip_wrap(header.tail.max(floor)).min(header.head);
    header.tail = shared.resync(from, header.head, &mut buf);
    if persisted && header.tail != from {
        shared.damaged(from, header.tail);
    }
    Ok((header, slot))
}

/// The logical offset and epoch of the newest valid record anywhere in the data region.
fn newest(shared: &Shared, buf: &mut Vec<u8>) -> Option<(u64, u16)> {
    let mut best: Option<(u64, u16)> = None;
    let mut head = [0u8; format::RECORD_HEAD];
    for p in (0..shared.capacity).step_by(8) {
        shared
            .region
            .read(usize::try_from(DATA_START + p).ok()?, &mut head);
        let stored = u64::from_le_bytes(head[8..16].try_into().ok()?) & format::MAX_OFFSET;
        if stored % shared.capacity == p && best.is_none_or(|b| stored > b.0) {
            if let Ok((_, _, epoch)) = shared.stamped_frame(stored, buf) {
                best = Some((stored, epoch));
            }
        }
    }
    best
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
        let lock_path = dir.join(LOCK_FILE);
        let had_lock = lock_path.exists();
        let lock = lock_dir(dir)?;
        let opened = Ring::open_locked(dir, size, lock);
        if opened.is_err() && !had_lock {
            // A failed start leaves nothing behind (we still hold the lock: no one else uses
            // the directory).
            let _ = std::fs::remove_file(&lock_path);
        }
        opened
    }

    /// [`Ring::open`] once the directory is locked.
    fn open_locked(dir: &Path, size: u64, lock: File) -> Result<Ring, WalError> {
        let path = dir.join(RING_FILE);
        // A ring is made under a temporary name and renamed into place only when fully
        // allocated: a start that fails (a full disk) or is killed while allocating leaves
        // no empty or partial `ring`, and the next start removes what it left.
        let new = dir.join(NEW_RING_FILE);
        match std::fs::remove_file(&new) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(WalError::Io {
                    what: format!("remove {}", new.display()),
                    error: e,
                })
            }
            _ => {}
        }
        let existing = match std::fs::metadata(&path) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(WalError::Io {
                    what: format!("stat {}", path.display()),
                    error: e,
                })
            }
        };
        // An empty `ring` holds nothing (an older promlet left it when allocation failed):
        // it is replaced like a missing one.
        if existing.unwrap_or(0) == 0 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&new)
                .map_err(io(format!("create {}", new.display())))?;
            let made = allocate(&file, size, &path)
                .and_then(|()| first_header(&file, size, &new))
                .and_then(|()| {
                    std::fs::rename(&new, &path).map_err(io(format!(
                        "rename {} to {}",
                        new.display(),
                        path.display()
                    )))
                })
                .and_then(|()| {
                    // The rename itself is durable before the ring is used.
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io(format!("sync {}", dir.display())))
                });
            if let Err(e) = made {
                let _ = std::fs::remove_file(&new);
                return Err(e);
            }
        }
        let file = open_rw(&path)?;
        let len = file
            .metadata()
            .map_err(io(format!("stat {}", path.display())))?
            .len();
        if len != size {
            return Err(WalError::Size(format!(
                "{} is {len} bytes but --storage.agent.size is {size}: promlet does not resize a ring that may hold unsent data; start with --storage.agent.size={len}, or move the file away to start empty",
                path.display()
            )));
        }
        let region = Region::map(&file, true).map_err(io(format!("map {}", path.display())))?;
        Ring::start(region, Some((file, lock)), &path)
    }

    /// Opens the ring in `dir` read-only, without its lock, for inspection (a running promlet
    /// may hold it). Nothing is written: appends and syncs go nowhere.
    pub fn open_read_only(dir: &Path) -> Result<Ring, WalError> {
        let path = dir.join(RING_FILE);
        let file = File::open(&path).map_err(io(format!("open {}", path.display())))?;
        let len = file
            .metadata()
            .map_err(io(format!("stat {}", path.display())))?
            .len();
        if len < MIN_SIZE || usize::try_from(len).is_err() {
            return Err(WalError::Size(format!(
                "{} is {len} bytes: not a ring (the smallest is {MIN_SIZE})",
                path.display()
            )));
        }
        let region = Region::map(&file, false).map_err(io(format!("map {}", path.display())))?;
        let lock = File::open(&path).map_err(io(format!("open {}", path.display())))?;
        Ring::start(region, Some((file, lock)), &path)
    }

    /// A ring over an in-memory copy of a ring file's bytes (tests and inspection).
    pub fn from_image(bytes: &[u8]) -> Result<Ring, WalError> {
        let size = bytes.len() as u64;
        if size < MIN_SIZE {
            return Err(WalError::Size(format!(
                "an image of {size} bytes is below the minimum of {MIN_SIZE} bytes"
            )));
        }
        Ring::start(Region::heap(bytes), None, Path::new("(image)"))
    }

    fn start(region: Region, files: Option<(File, File)>, path: &Path) -> Result<Ring, WalError> {
        let file_size = region.len() as u64;
        let capacity = (file_size - DATA_START) / 8 * 8;
        let mut shared = Shared {
            region,
            capacity,
            file_size,
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..MAX_CURSORS).map(|_| Slot::default()).collect(),
            slots_used: AtomicUsize::new(0),
            epoch: 0,
            counters: Counters::default(),
            sync: Mutex::new(SyncState::default()),
            logged_damage: AtomicU64::new(0),
            _files: files,
            path: path.to_owned(),
            watch: FileWatch::default(),
        };
        let persisted = recover(&shared, path)?;
        let (header, slot) = persisted;
        let synced = Header::decode(&{
            let mut c = vec![0u8; HEADER_SIZE];
            shared.region.read(slot * HEADER_SIZE, &mut c);
            c
        })
        .map_or(0, |h| h.head.min(header.head));
        shared.head = AtomicU64::new(header.head);
        shared.tail = AtomicU64::new(header.tail);
        shared.epoch = header.epoch + 1;
        for (i, (s, &(key, at))) in shared.slots.iter().zip(&header.cursors).enumerate() {
            let at = at.clamp(header.tail, header.head);
            let sending = header
                .sending
                .get(i)
                .map_or(at, |&e| e.clamp(at, header.head));
            s.key.store(key, Ordering::Relaxed);
            s.committed.store(at, Ordering::Relaxed);
            s.sending.store(sending, Ordering::Relaxed);
            s.read.store(at, Ordering::Relaxed);
            s.used.store(true, Ordering::Relaxed);
        }
        shared.slots_used = AtomicUsize::new(header.cursors.len().min(MAX_CURSORS));
        shared.sync = Mutex::new(SyncState {
            slot,
            generation: header.generation,
            synced_head: synced,
            last: None,
            next: Header::default(),
            unflushed: false,
            buf: vec![0u8; HEADER_SIZE],
        });
        let writable = shared.region.writable();
        let mut ring = Ring {
            w: Writer {
                shared: Arc::new(shared),
                head: header.head,
                tail: header.tail,
                frame: Vec::new(),
                scratch: Vec::new(),
                resets: 0,
            },
            payload: Vec::new(),
            bits: codec::BitWriter::default(),
            read_buf: Vec::new(),
            set_index: SetIndex::default(),
            rewrite_after: rewrite_distance(capacity, 0),
            sets: std::collections::HashMap::new(),
            sets_bytes: 0,
            since_prune: 0,
        };
        if writable {
            // The new epoch is on disk before any record stamped with it (invariant I7).
            ring.sync()?;
        }
        Ok(ring)
    }

    /// Usable data bytes.
    pub fn capacity(&self) -> u64 {
        self.w.shared.capacity
    }

    /// Logical offset of the next record.
    pub fn head(&self) -> u64 {
        self.w.head
    }

    /// Logical offset of the oldest record held.
    pub fn tail(&self) -> u64 {
        self.w.tail
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        self.w.shared.counters.snapshot()
    }

    /// Appends a record; returns its logical offset. Never blocks: when the ring is full the
    /// oldest records go.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<u64, WalError> {
        self.w.append(kind, payload)
    }

    /// Writes a target's series-set (its series' labels, in the order its samples will come)
    /// and starts a new chain: the next samples record is a key frame.
    pub fn append_series_set<'s, S, L>(
        &mut self,
        chain: &mut Chain,
        target: u64,
        series: S,
    ) -> Result<u64, WalError>
    where
        S: Iterator<Item = L>,
        L: Iterator<Item = (&'s [u8], &'s [u8])>,
    {
        let mut blocks = SetBlocks::default();
        for labels in series {
            blocks.push(labels);
        }
        blocks.finish();
        self.append_series_blocks(chain, target, &[&blocks])
    }

    /// [`Ring::append_series_set`] of a set built in [`SetBlocks`]: its series are those of
    /// `parts`, in order, and their compressed blocks go to the ring as they are.
    pub fn append_series_blocks(
        &mut self,
        chain: &mut Chain,
        target: u64,
        parts: &[&SetBlocks],
    ) -> Result<u64, WalError> {
        let head = record::set_head(target, parts.iter().map(|p| p.len()).sum());
        let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        slices.push(&head);
        slices.extend(parts.iter().map(|p| p.blocks()));
        chain.last = None;
        chain.set = None;
        let at = self.w.append_parts(TYPE_SERIES_BLOCKS, &slices)?;
        chain.set = Some(at);
        chain.target = target;
        chain.set_bytes = self.w.head - at;
        self.track_set(target, at, chain.set_bytes);
        Ok(at)
    }

    /// Counts `target`'s set at `at` among the current ones and sets the copy distance from
    /// their bytes; logs once per target that writes a set while the ring is under
    /// [`capacity_for_sets`].
    fn track_set(&mut self, target: u64, at: u64, bytes: u64) {
        self.since_prune += 1;
        if self.since_prune >= 64 {
            // Sets the tail passed belong to targets that are gone (a live one's set is
            // copied before that, or written again when it is lost).
            self.since_prune = 0;
            let tail = self.w.tail;
            self.sets.retain(|_, s| s.at >= tail);
            self.sets_bytes = self.sets.values().map(|s| s.bytes).sum();
        }
        let entry = self.sets.entry(target).or_insert(LiveSet {
            at,
            bytes: 0,
            warned: false,
        });
        self.sets_bytes = self.sets_bytes - entry.bytes.min(self.sets_bytes) + bytes;
        entry.at = at;
        entry.bytes = bytes;
        let capacity = self.w.shared.capacity;
        self.rewrite_after = rewrite_distance(capacity, self.sets_bytes);
        let need = capacity_for_sets(self.sets_bytes);
        if need > capacity && !entry.warned {
            entry.warned = true;
            log::warn!(
                "ring: the targets' label sets take {} bytes, so copying them forward takes more than a fifth of a {}-byte ring; give --storage.agent.size at least {} bytes (target {target:#018x}'s set: {bytes} bytes)",
                self.sets_bytes,
                self.w.shared.file_size,
                need + DATA_START
            );
        }
    }

    /// The distance behind the head at which a series-set is copied forward now
    /// ([`rewrite_distance`] of the targets' current sets).
    pub fn rewrite_after(&self) -> u64 {
        self.rewrite_after
    }

    /// Writes one scrape's values for the chain's series-set, in its order. When the set is
    /// an eighth of the ring behind the head it is first copied forward (module docs).
    /// [`WalError::SetLost`] when the set can no longer be read: write it again.
    pub fn append_samples(
        &mut self,
        chain: &mut Chain,
        timestamp_ms: i64,
        values: &[f64],
    ) -> Result<u64, WalError> {
        self.append_stamped(chain, timestamp_ms, values, &[])
    }

    /// [`Ring::append_samples`] with a timestamp per value (`timestamps` as long as `values`;
    /// [`codec::ABSENT`] for a value not to send), or none when `timestamps` is empty.
    pub fn append_stamped(
        &mut self,
        chain: &mut Chain,
        timestamp_ms: i64,
        values: &[f64],
        timestamps: &[i64],
    ) -> Result<u64, WalError> {
        debug_assert!(timestamps.is_empty() || timestamps.len() == values.len());
        self.w.guard()?;
        let mut set = chain.set.ok_or(WalError::SetLost)?;
        if set < self.w.tail || self.w.head - set > self.rewrite_after {
            chain.last = None;
            chain.set = None;
            let kind = match self.w.shared.frame(set, &mut self.payload) {
                Ok((kind, _)) if record::is_series_set(kind) && set >= self.w.tail => kind,
                _ => return Err(WalError::SetLost),
            };
            set = self.w.append(kind, payload_of(&self.payload))?;
            bump(&self.w.shared.counters.series_sets_rewritten, 1);
            self.track_set(chain.target, set, chain.set_bytes);
            // The copy of a large set is not kept until the next rewrite.
            if self.payload.capacity() > REWRITE_KEEP {
                self.release_buffers();
            }
            chain.set = Some(set);
        }
        record::encode_samples(
            set,
            timestamp_ms,
            chain.last,
            &mut chain.states,
            values,
            timestamps,
            &mut self.bits,
            &mut self.payload,
        );
        let kind = if timestamps.is_empty() {
            TYPE_SAMPLES
        } else {
            TYPE_SAMPLES_STAMPED
        };
        match self.w.append(kind, &self.payload) {
            Ok(at) => {
                chain.last = Some(at);
                Ok(at)
            }
            Err(e) => {
                chain.last = None;
                Err(e)
            }
        }
    }

    /// The series-set record at `offset` read back (staleness reads a target's previous
    /// labels this way): its target and its series' labels. `None` if it is gone or damaged.
    pub fn series_set(&mut self, offset: u64) -> Option<(u64, SetView<'_>)> {
        self.w.guard().ok()?;
        let target = self.set_index.open_in_ring(&self.w.shared, offset, false)?;
        Some((
            target,
            SetView {
                index: &self.set_index,
            },
        ))
    }

    /// Shrinks the producer's buffers back to what a samples record needs, after a target's
    /// series-set was written or read back: a set of 10k series needs about a megabyte to
    /// encode or index, and sets change rarely, so keeping that memory between changes would
    /// cost more RSS than re-growing it costs time.
    pub fn release_buffers(&mut self) {
        // (`REWRITE_KEEP` is larger: a set rewrite below it keeps its buffer.)
        const KEEP: usize = 64 << 10;
        self.payload.shrink_to(KEEP);
        self.read_buf.shrink_to(KEEP);
        self.w.frame.shrink_to(KEEP);
        self.set_index.release();
    }

    /// The first record at or after `offset` (see [`Found`]).
    pub fn read(&mut self, offset: u64) -> Found<'_> {
        if self.w.guard().is_err() {
            return Found::End;
        }
        match self.w.shared.read(offset, &mut self.read_buf) {
            None => Found::End,
            Some(m) => Found::Record {
                record: Record {
                    offset: m.offset,
                    next: m.next,
                    kind: m.kind,
                    payload: payload_of(&self.read_buf),
                },
                lost: m.lost,
            },
        }
    }

    /// The reader of endpoint `key` (a hash of its URL and name). A new endpoint starts at the
    /// head (it is sent what is scraped from now on, as a new remote_write queue in Prometheus
    /// is); a known one at its cursor.
    pub fn consumer(&mut self, key: u64) -> Result<Consumer, WalError> {
        let shared = &self.w.shared;
        let used = shared.slots_used.load(Ordering::Acquire);
        let find = |want: Option<u64>| {
            shared.slots[..used].iter().position(|s| match want {
                Some(k) => s.used.load(Ordering::Acquire) && s.key.load(Ordering::Relaxed) == k,
                None => !s.used.load(Ordering::Acquire),
            })
        };
        let index = match find(Some(key)) {
            Some(i) => i,
            None => {
                let i = match find(None) {
                    Some(i) => i,
                    None if used < MAX_CURSORS => used,
                    None => return Err(WalError::TooManyEndpoints),
                };
                let s = &shared.slots[i];
                s.key.store(key, Ordering::Relaxed);
                s.committed.store(self.w.head, Ordering::Relaxed);
                s.sending.store(self.w.head, Ordering::Relaxed);
                s.read.store(self.w.head, Ordering::Relaxed);
                s.overwritten.store(0, Ordering::Relaxed);
                s.undecodable.store(0, Ordering::Relaxed);
                s.used.store(true, Ordering::Release);
                if i == used {
                    shared.slots_used.store(used + 1, Ordering::Release);
                }
                // Where it starts is in a header before anything is appended for it: a
                // `kill -9` before the first sync must not make it a new endpoint again,
                // starting after what this process appended.
                shared.note();
                i
            }
        };
        if shared.slots[index].claimed.swap(true, Ordering::AcqRel) {
            return Err(WalError::Claimed(key));
        }
        Ok(Consumer::new(Arc::clone(shared), index))
    }

    /// Endpoint `key`'s cursor and losses, if the ring knows it.
    pub fn endpoint(&self, key: u64) -> Option<EndpointStats> {
        self.w
            .shared
            .slots()
            .iter()
            .find(|s| s.used.load(Ordering::Acquire) && s.key.load(Ordering::Relaxed) == key)
            .map(Slot::stats)
    }

    /// Forgets endpoints not in `keys` that have no reader (after a reload removed them), in
    /// a header at once.
    pub fn retain_cursors(&mut self, keys: &[u64]) {
        let mut forgot = false;
        for s in self.w.shared.slots() {
            if s.used.load(Ordering::Acquire)
                && !keys.contains(&s.key.load(Ordering::Relaxed))
                && !s.claimed.load(Ordering::Acquire)
            {
                s.used.store(false, Ordering::Release);
                forgot = true;
            }
        }
        if forgot {
            self.w.shared.note();
        }
    }

    /// A handle for the thread that runs the periodic sync.
    pub fn syncer(&self) -> Syncer {
        Syncer {
            shared: Arc::clone(&self.w.shared),
        }
    }

    /// Syncs now, on this thread (at stop, and in tests).
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.syncer().sync().map(|_| ())
    }

    /// A copy of the whole ring file as it is now (tests).
    #[cfg(test)]
    #[allow(dead_code)]
    pub(crate) fn image(&self) -> Vec<u8> {
        self.w.shared.region.to_vec()
    }
}

impl Slot {
    fn stats(&self) -> EndpointStats {
        EndpointStats {
            cursor: self.committed.load(Ordering::Acquire),
            overwritten: self.overwritten.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
        }
    }
}

impl Syncer {
    /// Flushes the records appended since the last sync, then writes the header to the other
    /// copy (invariant I3); an unchanged header is not written again (but flushed, if a note
    /// wrote it). Returns whether anything was written. It waits for the disk (`msync`), so
    /// it never runs on the loop.
    pub fn sync(&self) -> Result<bool, WalError> {
        let result = self.sync_once();
        if result.is_err() {
            bump(&self.shared.counters.sync_failures, 1);
        }
        result
    }

    fn sync_once(&self) -> Result<bool, WalError> {
        let shared = &*self.shared;
        if !shared.check_file() {
            return Err(WalError::Truncated(shared.path.clone()));
        }
        let mut guard = shared
            .sync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *guard;
        let head = shared.head.load(Ordering::Acquire);
        let tail = shared.tail.load(Ordering::Acquire).min(head);
        let mut wrote = false;
        if head > st.synced_head {
            shared.flush(
                st.synced_head.max(head.saturating_sub(shared.capacity)),
                head,
            )?;
            wrote = true;
        }
        st.synced_head = head;
        shared.fill_header(st, head, tail, Persist::Synced);
        Ok(shared.put_header(st, Persist::Synced)? || wrote)
    }

    /// Syncs every `every` until `stop` is set (and this thread unparked), logging failures.
    pub fn run(&self, every: std::time::Duration, stop: &AtomicBool) {
        let mut due = std::time::Instant::now() + every;
        while !stop.load(Ordering::SeqCst) {
            let now = std::time::Instant::now();
            if now < due {
                std::thread::park_timeout(due - now);
                continue;
            }
            due = now + every;
            self.sync_logged();
        }
    }

    /// [`Syncer::sync`] for the periodic sync: a failure is logged when its kind (its errno)
    /// differs from the last failure's, not at every interval, and a sync that works after
    /// failures is logged once; every failure is counted ([`Stats::sync_failures`]). The
    /// mapping stays as it was: scraping and sending go on. Returns whether it logged.
    pub fn sync_logged(&self) -> bool {
        let watch = &self.shared.watch;
        match self.sync() {
            Ok(_) => {
                let was = watch.sync_errno.swap(0, Ordering::AcqRel);
                if was != 0 {
                    log::info!("ring: sync works again");
                }
                was != 0
            }
            Err(e) => {
                let kind = match &e {
                    WalError::Io { error, .. } => error.raw_os_error().unwrap_or(-1),
                    _ => -2,
                };
                let was = watch.sync_errno.swap(kind, Ordering::AcqRel);
                if was == kind {
                    log::debug!("ring: sync failed again: {e}");
                } else {
                    log::error!("ring: sync failed: {e} (logged once until it fails otherwise or works again; promlet_wal_sync_failures_total counts each)");
                }
                was != kind
            }
        }
    }

    /// Counters of the ring (for self-metrics on a thread without the producer).
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
