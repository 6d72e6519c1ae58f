//! The one place that maps the ring file (and so the crate's only `unsafe`).

use std::fs::File;

use memmap2::MmapMut;

/// Maps the whole of `file` read-write and shared, so that stores reach the page cache and
/// survive the process (a `kill -9` loses nothing written to the mapping).
#[allow(unsafe_code)]
pub fn map(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: memmap2's contract is that no one else truncates or remaps the file while it is
    // mapped, which would turn accesses into SIGBUS. The file is ours alone: the caller holds
    // an exclusive flock on the ring directory for the mapping's whole life (a second promlet
    // refuses to start), the file was fully allocated before mapping (no hole can fail to
    // allocate on a full disk), and promlet never resizes it while mapped.
    unsafe { MmapMut::map_mut(file) }
}
