//! The ring file's bytes, as pure functions over slices: CRC32C, the header copies and the
//! record frame. No I/O here; [`super::Ring`], [`super::Consumer`] and [`super::Syncer`] move
//! these bytes in and out of the mapping.
//!
//! # Format
//! All integers little-endian.
//!
//! | bytes | what |
//! |---|---|
//! | `0..4096` | header copy A |
//! | `4096..8192` | header copy B |
//! | `8192..size` | the data region, `capacity = size - 8192` bytes |
//!
//! A header copy: magic `PROMLETR` (8), format version u32, cursor count u32, file size u64,
//! generation u64, head u64, tail u64, epoch u64, then `cursor count` × (key u64, offset u64),
//! then the CRC32C u32 of everything before it. It may be followed by the in-flight block:
//! magic `SEND` (4), `cursor count` × u64 (for each cursor, in order, the end of the records
//! of the request that endpoint had sent and not yet seen acknowledged), then the CRC32C u32
//! of the block. A reader that does not know the block (or finds it damaged) ignores it: the
//! header is valid without it, and the format version stays 2.
//! The valid copy (magic, version, CRC, size all check out)
//! with the higher generation wins; a header is written to the copy that does *not* hold the
//! winner, with generation + 1, so a torn header write always leaves the previous one intact.
//!
//! Records live at logical offsets that only grow; a record at logical offset `o` starts at
//! data byte `o % capacity`. A record is
//! `[len u32][crc32c u32][logical offset u64][type u8][payload: len - 1 bytes]`, its CRC over the
//! offset, type and payload; the offset word's low 48 bits are the logical offset, its top 16
//! bits the epoch of the process that wrote the record (see I7), and it occupies `16 + len` bytes rounded up to 8. A record never
//! wraps: when fewer than 24 bytes (the smallest record) are left before the region's end, the
//! next record starts at the next lap; when 24 or more are left but the record does not fit, a
//! padding record (type 0) fills them.
//!
//! # Invariants
//! - I1: a record is read only if its CRC checks out and its stored logical offset equals the
//!   offset it was looked up at (stale bytes of an earlier lap never pass: their offset is
//!   smaller). [`decode_record`]
//! - I2: `tail <= head`, `head - tail <= capacity`; every offset in `tail..head` that starts a
//!   record was written in this lap. [`super::Ring::append`] moves the tail past whole records
//!   and publishes it (a release fence) before the head may overwrite a byte of them, and
//!   publishes the new head only after the record's bytes.
//! - I3: a header is written only after the records it points past were flushed
//!   ([`super::Syncer::sync`]), and to the copy that is not the current one. Cursors in it are
//!   clamped to `tail..=head`. A *note* (a commit, a request in flight, an endpoint added or
//!   removed) writes a header into the mapping between syncs, without flushing it, at the
//!   last synced head: its cursors may be past that head (recovery clamps them to the head its
//!   scan finds), and the next sync flushes it.
//! - I4: opening never panics on any file content: a file that is not a ring or of another
//!   format version is a clear error; a damaged header falls back to the other copy, or to
//!   the newest record that checks out; damaged records are skipped and counted.
//! - I5: a reader on another thread never trusts bytes the head overwrote while it copied
//!   them: it copies the record out of the mapping, then (acquire fence) re-reads the tail;
//!   if the tail passed the record, the copy is dropped and the read starts again from the
//!   tail. [`super::Consumer::next_batch`]
//! - I6: a cursor moves only forward, and only by its own endpoint's commit: a record is
//!   behind a cursor only once that endpoint sent it (or counted it lost). Samples the head
//!   overwrites before an endpoint's consumer read them are counted for that endpoint
//!   (once read, they are sent from its memory, or counted there as failed or undecodable:
//!   delivered + lost adds up to what was appended).
//!   A commit is in a header at once (a note), so a `kill -9` never takes a cursor back; an
//!   endpoint's request in flight is noted before it goes out, so the next process knows
//!   what it may send a second time ([`super::Consumer::unacknowledged`]).
//! - I7: a logical offset may be written by more than one process (a recovery that stopped
//!   at damage leaves older records past its head), so records past the persisted head are
//!   recovered only if they carry the header's epoch: each process that opens the ring for
//!   writing persists a header with a new epoch before its first record, and stamps its
//!   records with it. Stale records of an earlier process never rejoin the ring.

/// Header copy size and the start of the data region.
pub const HEADER_SIZE: usize = 4096;
/// Start of the data region: two header copies.
pub const DATA_START: u64 = 2 * HEADER_SIZE as u64;
/// The header magic.
pub const MAGIC: &[u8; 8] = b"PROMLETR";
/// The format version this build writes and reads. 2: series-set payloads are snappy blocks
/// (version 1, never released, stored them raw; `tests/fixtures/wal/v1.ring` is one).
pub const VERSION: u32 = 2;
/// Cursors a header holds at most (one per `remote_write` entry).
pub const MAX_CURSORS: usize = 64;
/// Bytes of a header copy before its cursors (and, with them, before its CRC).
pub const HEADER_FIXED: usize = 56;
/// The magic of the in-flight block that may follow a header's CRC.
pub const SENDING_MAGIC: &[u8; 4] = b"SEND";
/// Bytes of a record before its type byte.
pub const RECORD_HEAD: usize = 16;
/// Record type of padding before the wrap.
pub const TYPE_PAD: u8 = 0;
/// The smallest record: a head and a type byte, 8-aligned.
pub const MIN_RECORD: usize = 24;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as ext4, iSCSI and Prometheus' WAL
/// use it. Table-driven, eight bytes a step ("slicing-by-8"), tables built at compile time.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Continues a CRC-32C over more bytes.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let [l0, l1, l2, l3] = lo.to_le_bytes();
        c = t[7][usize::from(l0)]
            ^ t[6][usize::from(l1)]
            ^ t[5][usize::from(l2)]
            ^ t[4][usize::from(l3)]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
    }
    for &b in chunks.remainder() {
        c = t[0][usize::from(c.to_le_bytes()[0] ^ b)] ^ (c >> 8);
    }
    !c
}

/// `CRC_TABLES[0]` is the classic byte table; table `k` advances a byte through `k` more
/// zero bytes.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// What a header copy holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The whole file's size in bytes.
    pub file_size: u64,
    /// Bumped on every header write.
    pub generation: u64,
    /// Logical offset where the next record goes.
    pub head: u64,
    /// Logical offset of the oldest record still held.
    pub tail: u64,
    /// Bumped by every process that opens the ring for writing, and written before its first
    /// record; its low 16 bits stamp each record that process writes.
    pub epoch: u64,
    /// Per remote_write endpoint: (key, logical offset up to which it has sent).
    pub cursors: Vec<(u64, u64)>,
    /// Per cursor, in the same order: the end of the records of the request the endpoint had
    /// in flight (sent, not yet acknowledged) when the header was written; at most the cursor
    /// when none. Empty when a header has no such block (see `# Format`).
    pub sending: Vec<u64>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Header {
    /// Writes this header into a copy slot (`HEADER_SIZE` bytes).
    pub fn encode(&self, out: &mut [u8]) {
        let n = self.cursors.len().min(MAX_CURSORS);
        out.fill(0);
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&u32::try_from(n).unwrap_or(0).to_le_bytes());
        out[16..24].copy_from_slice(&self.file_size.to_le_bytes());
        out[24..32].copy_from_slice(&self.generation.to_le_bytes());
        out[32..40].copy_from_slice(&self.head.to_le_bytes());
        out[40..48].copy_from_slice(&self.tail.to_le_bytes());
        out[48..56].copy_from_slice(&self.epoch.to_le_bytes());
        let mut at = HEADER_FIXED;
        for &(key, offset) in &self.cursors[..n] {
            out[at..at + 8].copy_from_slice(&key.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            at += 16;
        }
        let crc = crc32c(&out[..at]);
        out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        if self.sending.len() == n && n > 0 {
            let start = at + 4;
            out[start..start + 4].copy_from_slice(SENDING_MAGIC);
            let mut at = start + 4;
            for &end in &self.sending {
                out[at..at + 8].copy_from_slice(&end.to_le_bytes());
                at += 8;
            }
            let crc = crc32c(&out[start..at]);
            out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// Reads a copy slot; `None` unless magic, version and CRC check out.
    pub fn decode(b: &[u8]) -> Option<Header> {
        Header::decode_any_version(b)
            .filter(|(v, _)| *v == VERSION)
            .map(|(_, h)| h)
    }

    /// Reads a copy slot of any format version whose magic and CRC check out, with that
    /// version (so a ring written by another promlet version is named, not taken for damage).
    pub fn decode_any_version(b: &[u8]) -> Option<(u32, Header)> {
        if b.get(..8)? != MAGIC {
            return None;
        }
        let version = u32_at(b, 8)?;
        let n = usize::try_from(u32_at(b, 12)?).ok()?;
        if n > MAX_CURSORS {
            return None;
        }
        // Version 1 had no epoch: its cursors start 8 bytes earlier.
        let fixed = if version == 1 { 48 } else { HEADER_FIXED };
        let end = fixed + 16 * n;
        if u32_at(b, end)? != crc32c(b.get(..end)?) {
            return None;
        }
        let cursors = (0..n)
            .map(|i| Some((u64_at(b, fixed + 16 * i)?, u64_at(b, fixed + 8 + 16 * i)?)))
            .collect::<Option<Vec<_>>>()?;
        let header = Header {
            file_size: u64_at(b, 16)?,
            generation: u64_at(b, 24)?,
            head: u64_at(b, 32)?,
            tail: u64_at(b, 40)?,
            epoch: if version == 1 { 0 } else { u64_at(b, 48)? },
            sending: sending_block(b, end + 4, n).unwrap_or_default(),
            cursors,
        };
        Some((version, header))
    }
}

/// The in-flight block after a header's CRC at `start`, for `n` cursors: `None` when there is
/// none or it does not check out (the header is valid either way).
fn sending_block(b: &[u8], start: usize, n: usize) -> Option<Vec<u64>> {
    if n == 0 || b.get(start..start + 4)? != SENDING_MAGIC {
        return None;
    }
    let end = start + 4 + 8 * n;
    if u32_at(b, end)? != crc32c(b.get(start..end)?) {
        return None;
    }
    (0..n).map(|i| u64_at(b, start + 4 + 8 * i)).collect()
}

/// The bytes a record of `payload_len` payload bytes occupies (8-aligned).
pub fn record_size(payload_len: usize) -> usize {
    (RECORD_HEAD + 1 + payload_len).next_multiple_of(8)
}

/// Logical offsets fit 48 bits (256 TiB appended: 89 years at 100 KB/s); the stored word's top
/// 16 bits are the writer's epoch.
pub const MAX_OFFSET: u64 = (1 << 48) - 1;

/// The stored offset word of a record at `offset` written in `epoch`.
pub fn stamp(offset: u64, epoch: u64) -> u64 {
    (offset & MAX_OFFSET) | ((epoch & 0xffff) << 48)
}

/// Writes a record frame into `out` (at least `record_size(payload.len())` bytes).
pub fn encode_record(out: &mut [u8], offset: u64, epoch: u64, kind: u8, payload: &[u8]) {
    let head = record_head(offset, epoch, kind, payload);
    out[..head.len()].copy_from_slice(&head);
    out[head.len()..head.len() + payload.len()].copy_from_slice(payload);
    let end = record_size(payload.len());
    out[head.len() + payload.len()..end].fill(0);
}

/// The head of a record holding `payload` ([`encode_record`]'s first 17 bytes: length, CRC,
/// stamped offset, type), for writing it in place without assembling the record.
pub fn record_head(offset: u64, epoch: u64, kind: u8, payload: &[u8]) -> [u8; RECORD_HEAD + 1] {
    record_head_parts(offset, epoch, kind, &[payload])
}

/// [`record_head`] of a payload made of `parts`, back to back.
pub fn record_head_parts(
    offset: u64,
    epoch: u64,
    kind: u8,
    parts: &[&[u8]],
) -> [u8; RECORD_HEAD + 1] {
    let mut head = [0u8; RECORD_HEAD + 1];
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(payload_len + 1).unwrap_or(u32::MAX);
    head[8..16].copy_from_slice(&stamp(offset, epoch).to_le_bytes());
    head[16] = kind;
    let crc = parts
        .iter()
        .fold(crc32c(&head[8..17]), |crc, p| crc32c_append(crc, p));
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    head
}

/// Writes a padding record filling all of `out` (at least [`MIN_RECORD`] bytes, 8-aligned).
pub fn encode_pad(out: &mut [u8], offset: u64, epoch: u64) {
    let len = out.len() - RECORD_HEAD;
    out[RECORD_HEAD..].fill(0);
    out[8..16].copy_from_slice(&stamp(offset, epoch).to_le_bytes());
    out[RECORD_HEAD] = TYPE_PAD;
    let crc = crc32c(&out[8..]);
    out[..4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back: its type, its payload and the bytes it occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Record type (0 is padding).
    pub kind: u8,
    /// The payload.
    pub payload: &'a [u8],
    /// Bytes from this record's start to the next one's.
    pub size: usize,
    /// The low 16 bits of the epoch of the process that wrote it.
    pub epoch: u16,
}

/// The payload of a frame [`decode_record`] has accepted (no second CRC pass).
pub fn checked_payload(b: &[u8]) -> &[u8] {
    let len = u32_at(b, 0)
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(1);
    b.get(RECORD_HEAD + 1..RECORD_HEAD + len).unwrap_or(&[])
}

/// Why no record could be read at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The stored offset is not the one asked for: stale bytes of an earlier lap, or the end of
    /// what was written.
    Offset,
    /// The frame does not fit or its CRC does not match: damage.
    Damaged,
}

/// Reads the record at the start of `b` (the bytes up to the region's end), expected at
/// logical `offset` (invariant I1).
pub fn decode_record(b: &[u8], offset: u64) -> Result<RecordRef<'_>, Bad> {
    let stored = u64_at(b, 8).ok_or(Bad::Damaged)?;
    if stored & MAX_OFFSET != offset {
        return Err(Bad::Offset);
    }
    let len = usize::try_from(u32_at(b, 0).ok_or(Bad::Damaged)?).map_err(|_| Bad::Damaged)?;
    if len == 0 || RECORD_HEAD + len > b.len() {
        return Err(Bad::Damaged);
    }
    let crc = u32_at(b, 4).ok_or(Bad::Damaged)?;
    if crc32c(&b[8..RECORD_HEAD + len]) != crc {
        return Err(Bad::Damaged);
    }
    Ok(RecordRef {
        kind: b[RECORD_HEAD],
        payload: &b[RECORD_HEAD + 1..RECORD_HEAD + len],
        size: record_size(len - 1),
        epoch: u16::try_from(stored >> 48).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_in_place_is_the_assembled_record() {
        for payload in [&b""[..], b"hello", &[7u8; 1000][..]] {
            let n = record_size(payload.len());
            let mut whole = vec![0xAAu8; n];
            encode_record(&mut whole, 4096, 3, 4, payload);
            let mut parts = record_head(4096, 3, 4, payload).to_vec();
            parts.extend_from_slice(payload);
            parts.resize(n, 0);
            assert_eq!(parts, whole);
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // RFC 3720 appendix B.4 and the CRC catalogue's check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn the_in_flight_block_round_trips_and_its_damage_leaves_the_header_valid() {
        let h = Header {
            file_size: 1 << 20,
            generation: 7,
            head: 123_456,
            tail: 1000,
            epoch: 2,
            cursors: vec![(0xabc, 2000), (0xdef, 123_000)],
            sending: vec![2000, 124_000],
        };
        let mut slot = vec![0u8; HEADER_SIZE];
        h.encode(&mut slot);
        assert_eq!(Header::decode(&slot), Some(h.clone()));
        // The block follows the CRC; the header before it is byte for byte what a header
        // without it is (so a promlet that predates the block reads it unchanged).
        let mut plain = vec![0u8; HEADER_SIZE];
        Header {
            sending: Vec::new(),
            ..h.clone()
        }
        .encode(&mut plain);
        let end = HEADER_FIXED + 16 * 2 + 4;
        assert_eq!(slot[..end], plain[..end]);
        assert_eq!(&slot[end..end + 4], SENDING_MAGIC);
        for at in [end, end + 5, end + 12, end + 20, end + 21] {
            let mut bad = slot.clone();
            bad[at] ^= 1;
            let got = Header::decode(&bad).expect("the header itself is intact");
            assert_eq!(got.sending, Vec::<u64>::new(), "flip at {at}");
            assert_eq!(got.cursors, h.cursors);
        }
        // A block for another number of cursors is not written.
        let odd = Header {
            sending: vec![1],
            ..h.clone()
        };
        odd.encode(&mut slot);
        assert_eq!(slot[end..end + 4], [0; 4]);
    }

    #[test]
    fn header_round_trips_and_refuses_damage() {
        let h = Header {
            file_size: 1 << 20,
            generation: 7,
            head: 123_456,
            tail: 1000,
            epoch: 0x1_0003,
            cursors: vec![(0xabc, 2000), (0xdef, 123_000)],
            sending: Vec::new(),
        };
        let mut slot = vec![0u8; HEADER_SIZE];
        h.encode(&mut slot);
        assert_eq!(Header::decode(&slot), Some(h.clone()));
        for at in [0, 9, 20, 33, 50, 60, 70, 80, 90] {
            let mut bad = slot.clone();
            bad[at] ^= 1;
            assert_eq!(Header::decode(&bad), None, "flip at {at}");
        }
        assert_eq!(Header::decode(&[0u8; HEADER_SIZE]), None);
        assert_eq!(Header::decode(&[]), None);
    }

    #[test]
    fn records_round_trip_and_refuse_stale_or_damaged_bytes() {
        let mut buf = vec![0u8; 64];
        encode_record(&mut buf, 4096, 7, 3, b"hello");
        let r = decode_record(&buf, 4096).expect("valid");
        assert_eq!(
            (r.kind, r.payload, r.size, r.epoch),
            (3, &b"hello"[..], 24, 7)
        );
        // The epoch rides in the offset word's top 16 bits; the offset is compared without it.
        assert_eq!(
            u64::from_le_bytes(buf[8..16].try_into().expect("8")),
            (7 << 48) | 4096
        );
        assert_eq!(decode_record(&buf, 4096 + 64), Err(Bad::Offset));
        for at in [0, 4, 16, 18, 21] {
            let mut bad = buf.clone();
            bad[at] ^= 0x40;
            assert_eq!(decode_record(&bad, 4096), Err(Bad::Damaged), "flip at {at}");
        }
        assert_eq!(
            decode_record(&buf[..20], 4096),
            Err(Bad::Damaged),
            "cut short"
        );
        assert_eq!(record_size(0), 24);
        assert_eq!(record_size(7), 24);
        assert_eq!(record_size(8), 32);
    }
}
