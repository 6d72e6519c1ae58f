//! An ordered list of label sets in one arena: what a scrape hands the ring when its
//! series-set changes (DESIGN.md step 5).
//!
//! It is filled only while a set is changing (from the first series that differs from the
//! set in the ring), so a steady scrape keeps no labels in memory; the labels before that
//! point are copied back from the ring's previous set.

/// Label sets back to back: names and values in `bytes`, one `(name, value_start, value_end)`
/// per label, one end index into `labels` per series.
#[derive(Debug, Default, Clone)]
pub struct SeriesList {
    bytes: Vec<u8>,
    labels: Vec<(u32, u32, u32)>,
    series: Vec<u32>,
}

fn index(n: usize) -> u32 {
    // The arena holds one scrape's labels: far below 4 GiB, which body_size_limit and the
    // window cap bound long before.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn at(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl SeriesList {
    /// Empties the list, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.labels.clear();
        self.series.clear();
    }

    /// Gives back the memory of a large change once it is written (a set change is rare, its
    /// labels are not worth keeping).
    pub fn release(&mut self) {
        self.clear();
        self.bytes.shrink_to(4 << 10);
        self.labels.shrink_to(256);
        self.series.shrink_to(64);
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Appends one series' labels (sorted by name, as the ring wants them).
    pub fn push<'a>(&mut self, labels: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
        for (name, value) in labels {
            let n = index(self.bytes.len());
            self.bytes.extend_from_slice(name);
            let v = index(self.bytes.len());
            self.bytes.extend_from_slice(value);
            self.labels.push((n, v, index(self.bytes.len())));
        }
        self.series.push(index(self.labels.len()));
    }

    /// Series `i`'s labels.
    pub fn get(&self, i: usize) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        let start = if i == 0 { 0 } else { at(self.series[i - 1]) };
        let end = at(self.series[i]);
        self.labels[start..end]
            .iter()
            .map(move |&(n, v, e)| (&self.bytes[at(n)..at(v)], &self.bytes[at(v)..at(e)]))
    }

    /// Every series, in order, for [`crate::wal::Ring::append_series_set`].
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = impl Iterator<Item = (&[u8], &[u8])> + Clone + '_> + Clone + '_
    {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// The series whose index `keep` accepts, appended to `out`.
    pub fn copy_into(&self, out: &mut SeriesList, mut keep: impl FnMut(usize) -> bool) {
        for i in 0..self.len() {
            if keep(i) {
                out.push(self.get(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_come_back_in_order() {
        let mut l = SeriesList::default();
        l.push([(&b"__name__"[..], &b"up"[..]), (b"job", b"j")].into_iter());
        l.push(std::iter::empty());
        l.push([(&b"a"[..], &b""[..])].into_iter());
        assert_eq!(l.len(), 3);
        let all: Vec<Vec<(&[u8], &[u8])>> = l.iter().map(Iterator::collect).collect();
        assert_eq!(
            all,
            vec![
                vec![(&b"__name__"[..], &b"up"[..]), (b"job", b"j")],
                vec![],
                vec![(&b"a"[..], &b""[..])],
            ]
        );
        let mut odd = SeriesList::default();
        l.copy_into(&mut odd, |i| i != 1);
        assert_eq!(odd.len(), 2);
        assert_eq!(odd.get(1).count(), 1);
        l.release();
        assert!(l.is_empty());
    }
}
