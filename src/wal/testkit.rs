//! Helpers the ring's unit tests share: temporary directories and small targets.

use std::path::PathBuf;

use super::{Chain, Ring};

/// A fresh directory under the system temp dir, named after the test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `promlet-wal-<pid>-<name>`, emptied.
    pub fn new(name: &str) -> TempDir {
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

/// Series `i` of a target: a name and two labels.
pub fn labels(target: u64, n: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    (0..n)
        .map(|i| {
            vec![
                (b"__name__".to_vec(), b"node_cpu_seconds_total".to_vec()),
                (b"cpu".to_vec(), format!("{i}").into_bytes()),
                (b"target".to_vec(), format!("t{target}").into_bytes()),
            ]
        })
        .collect()
}

/// Writes the series-set of [`labels`] for `target`; its offset.
pub fn write_set(ring: &mut Ring, chain: &mut Chain, target: u64, n: usize) -> u64 {
    let l = labels(target, n);
    ring.append_series_set(
        chain,
        target,
        l.iter()
            .map(|s| s.iter().map(|(a, b)| (a.as_slice(), b.as_slice()))),
    )
    .expect("set")
}
