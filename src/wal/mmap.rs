//! The one place that touches the ring's memory directly (and so the crate's only `unsafe`).
//!
//! The loop thread writes the ring while sender threads read it, and a reader may be lapped by
//! the writer mid-read. So the memory is never lent out as a slice: every access copies
//! through relaxed atomic loads and stores (four bytes at a time where aligned), which are
//! plain loads and stores on every target promlet builds for, and never a data race. Readers
//! tell a torn read from a good one by the ring's tail and the record CRC, not by this module.

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// What keeps the memory alive.
#[derive(Debug)]
enum Owner {
    Map(MmapRaw),
    /// An in-memory image (tests, and rings built from bytes); 8-aligned.
    Heap(#[allow(dead_code)] Box<[AtomicU64]>),
}

/// A fixed run of bytes shared between threads; see the module docs.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    owner: Owner,
}

// SAFETY: the pointer is only dereferenced through atomics (see `byte` and `word`), so sharing
// and sending the region across threads cannot race; the owner keeps the memory mapped.
#[allow(unsafe_code)]
unsafe impl Send for Region {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Region {}

impl Region {
    /// Maps the whole of `file` shared, so that stores reach the page cache and survive the
    /// process (a `kill -9` loses nothing written to the mapping). Read-only for inspection.
    #[allow(unsafe_code)]
    pub fn map(file: &File, writable: bool) -> std::io::Result<Region> {
        let map = if writable {
            MmapOptions::new().map_raw(file)?
        } else {
            MmapOptions::new().map_raw_read_only(file)?
        };
        Ok(Region {
            ptr: map.as_mut_ptr(),
            len: map.len(),
            writable,
            owner: Owner::Map(map),
        })
    }

    /// A region holding a copy of `bytes`, in memory.
    pub fn heap(bytes: &[u8]) -> Region {
        let words: Box<[AtomicU64]> = (0..bytes.len().div_ceil(8))
            .map(|_| AtomicU64::new(0))
            .collect();
        let region = Region {
            ptr: words.as_ptr().cast::<u8>().cast_mut(),
            len: bytes.len(),
            writable: true,
            owner: Owner::Heap(words),
        };
        region.write(0, bytes);
        region
    }

    /// Whether writes reach it (a read-only mapping ignores them).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    #[allow(unsafe_code)]
    fn byte(&self, at: usize) -> &AtomicU8 {
        debug_assert!(at < self.len);
        // SAFETY: `at` is in bounds (callers check against `len`), and the memory lives as long
        // as `self` (the owner); AtomicU8 has no alignment requirement.
        unsafe { AtomicU8::from_ptr(self.ptr.add(at)) }
    }

    #[allow(unsafe_code)]
    fn word(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at % 4 == 0 && at + 4 <= self.len);
        // SAFETY: in bounds as above; `at` is a multiple of 4 and the base is page-aligned (a
        // mapping) or 8-aligned (a heap image), so the AtomicU32 is aligned.
        unsafe { AtomicU32::from_ptr(self.ptr.add(at).cast::<u32>()) }
    }

    /// Copies bytes from `at` into `out`; bytes past the end read as zero.
    pub fn read(&self, at: usize, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            let p = at.saturating_add(i);
            if p >= self.len {
                out[i..].fill(0);
                return;
            }
            if p % 4 == 0 && out.len() - i >= 4 && p + 4 <= self.len {
                let w = self.word(p).load(Ordering::Relaxed);
                out[i..i + 4].copy_from_slice(&w.to_ne_bytes());
                i += 4;
            } else {
                out[i] = self.byte(p).load(Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// Copies `data` to `at`; bytes that would fall past the end are not written, and a
    /// read-only region is left alone.
    pub fn write(&self, at: usize, data: &[u8]) {
        if !self.writable {
            debug_assert!(false, "write to a read-only ring");
            return;
        }
        let mut i = 0;
        while i < data.len() {
            let p = at.saturating_add(i);
            if p >= self.len {
                return;
            }
            if p % 4 == 0 && data.len() - i >= 4 && p + 4 <= self.len {
                let w = u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                self.word(p).store(w, Ordering::Relaxed);
                i += 4;
            } else {
                self.byte(p).store(data[i], Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// Writes `at..at + len` back to the file and waits for it (`msync(MS_SYNC)`); nothing for
    /// an in-memory image.
    pub fn flush(&self, at: usize, len: usize) -> std::io::Result<()> {
        match &self.owner {
            Owner::Map(map) if self.writable && len > 0 => {
                let at = at.min(self.len);
                map.flush_range(at, len.min(self.len - at))
            }
            _ => Ok(()),
        }
    }

    /// A copy of all of it.
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        self.read(0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_at_any_alignment() {
        let r = Region::heap(&[0u8; 37]);
        let data: Vec<u8> = (1..=20).collect();
        for at in 0..17 {
            r.write(at, &data);
            let mut back = vec![0u8; 20];
            r.read(at, &mut back);
            assert_eq!(back, data, "at {at}");
        }
        // Past the end: reads give zeros, writes stop.
        r.write(30, &data);
        let mut tail = [9u8; 10];
        r.read(30, &mut tail);
        assert_eq!(tail, [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]);
        assert_eq!(r.to_vec().len(), 37);
    }
}
