//! Label sets: one series' labels in a reused arena, sorted, hashed stably, merged with the
//! target's labels the way Prometheus 2.42's scrape loop does (`mutateSampleLabels`).
//!
//! A [`LabelSet`] owns two vectors that are cleared, never dropped, between series: the bytes
//! of every name and value back to back, and one span per label. After the first scrapes have
//! grown them, building, sorting, merging and hashing a series allocates nothing.

use crate::parse::{unescape_label_value, LabelSpan};

/// Where one label's name and value sit in a set's arena (see [`LabelSet::slice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Arena range of the name.
    pub name: (u32, u32),
    /// Arena range of the value.
    pub value: (u32, u32),
}

/// Whether scraped labels win over the target's (`honor_labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HonorLabels {
    /// `honor_labels: true`: a scraped label keeps its value; the target's is added only when
    /// the series lacks that label.
    Yes,
    /// `honor_labels: false` (default): the target's value wins; the scraped value moves to
    /// `exported_<name>` (more prefixes until the name is free).
    No,
}

/// One series' labels. Cleared and refilled per series; see the module doc for allocation.
#[derive(Debug, Default, Clone)]
pub struct LabelSet {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// Spare spans for merging, kept to avoid allocating per series.
    scratch: Vec<(Span, usize)>,
}

fn r(range: (u32, u32)) -> std::ops::Range<usize> {
    // u32 → usize never truncates on the 32- and 64-bit targets promlet builds for.
    usize::try_from(range.0).unwrap_or(usize::MAX)..usize::try_from(range.1).unwrap_or(usize::MAX)
}

/// The separator of [`LabelSet::hash`]: a byte that valid UTF-8 never contains.
const SEP: u8 = 0xff;

impl LabelSet {
    /// An empty set.
    pub fn new() -> Self {
        LabelSet::default()
    }

    /// Empties the set, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True with no labels.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn append(&mut self, b: &[u8]) -> (u32, u32) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        // A series over 4 GiB of label bytes cannot pass body_size_limit; saturate rather
        // than wrap if one ever did.
        (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
        )
    }

    /// Adds a label (not sorted yet; call [`LabelSet::sort`]).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name = self.append(name);
        let value = self.append(value);
        self.spans.push(Span { name, value });
    }

    /// Adds a label parsed from an exposition, resolving its value's escapes.
    pub fn push_parsed(&mut self, data: &[u8], span: &LabelSpan) {
        let name = self.append(span.name(data));
        let start = self.bytes.len();
        if span.escaped {
            unescape_label_value(span.raw_value(data), &mut self.bytes);
        } else {
            self.bytes.extend_from_slice(span.raw_value(data));
        }
        let value = (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
        );
        self.spans.push(Span { name, value });
    }

    /// Refills the set with one parsed series: `__name__`, then its labels with escapes
    /// resolved, sorted. Allocation-free once the arena has grown.
    pub fn fill_series(&mut self, data: &[u8], name: &[u8], labels: &[LabelSpan]) {
        self.clear();
        self.push(b"__name__", name);
        for l in labels {
            self.push_parsed(data, l);
        }
        self.sort();
    }

    /// Sorts by name (byte order), stable, allocation-free for small sets and in-place
    /// insertion for the rest.
    pub fn sort(&mut self) {
        let bytes = &self.bytes;
        // Insertion sort: label sets are short (a dozen labels), it is stable, and unlike
        // slice::sort it never allocates a merge buffer.
        for i in 1..self.spans.len() {
            let mut j = i;
            while j > 0 && bytes[r(self.spans[j - 1].name)] > bytes[r(self.spans[j].name)] {
                self.spans.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    /// The labels in their current order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|s| (&self.bytes[r(s.name)], &self.bytes[r(s.value)]))
    }

    /// The spans of the labels, in their current order.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The arena bytes of a span's `name` or `value` range. Ranges stay valid until
    /// [`LabelSet::clear`]: the arena only grows while a series is built.
    pub fn slice(&self, range: (u32, u32)) -> &[u8] {
        &self.bytes[r(range)]
    }

    /// Sets `name` to `value` as `labels.Builder.Set` does: every label of that name goes, and
    /// an empty value leaves none.
    pub fn set_value(&mut self, name: &[u8], value: &[u8]) {
        if value.is_empty() {
            let bytes = &self.bytes;
            self.spans.retain(|s| &bytes[r(s.name)] != name);
        } else {
            self.set(name, value);
        }
    }

    /// Keeps the labels whose name `keep` accepts.
    pub fn retain_by_name(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let bytes = &self.bytes;
        self.spans.retain(|s| keep(&bytes[r(s.name)]));
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// After [`LabelSet::sort`]: the first name that occurs twice.
    pub fn duplicate_name(&self) -> Option<&[u8]> {
        self.spans
            .windows(2)
            .find(|w| self.bytes[r(w[0].name)] == self.bytes[r(w[1].name)])
            .map(|w| &self.bytes[r(w[0].name)])
    }

    /// Removes every label whose name has an empty value anywhere in the set: Prometheus'
    /// `labels.Builder` (which every scraped series passes through) puts the names of
    /// empty-valued labels on its delete list, so `{x="", x="1"}` loses both (seen on a real
    /// Prometheus 2.42; `tests/expo_differential.rs`).
    pub fn remove_empty(&mut self) {
        while let Some(i) = self.spans.iter().position(|s| s.value.0 == s.value.1) {
            self.remove_all(self.spans[i].name);
        }
    }

    /// A 64-bit hash of the sorted set: FNV-1a over `name 0xff value 0xff` for each label.
    /// The same on every platform and in every run (it keys staleness sets and persisted
    /// state), so it must never change; a test pins its values.
    pub fn hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        let mut eat = |b: u8| {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        };
        for (name, value) in self.iter() {
            name.iter().copied().for_each(&mut eat);
            eat(SEP);
            value.iter().copied().for_each(&mut eat);
            eat(SEP);
        }
        h
    }

    /// Merges the target's labels into this (sorted) series as Prometheus 2.42's
    /// `mutateSampleLabels` does, then sorts again. As its `labels.Builder`, setting a target
    /// label removes every scraped label of that name, duplicates included. `target` is sorted by name, no empty
    /// values. Allocation-free once the arena and scratch have grown.
    pub fn merge_target(&mut self, target: &[(String, String)], honor: HonorLabels) {
        match honor {
            HonorLabels::Yes => {
                for (name, value) in target {
                    if self.position(name.as_bytes()).is_none() {
                        self.push(name.as_bytes(), value.as_bytes());
                    }
                }
            }
            HonorLabels::No => {
                self.scratch.clear();
                for (name, value) in target {
                    if let Some(i) = self.position(name.as_bytes()) {
                        let old = self.spans[i];
                        if old.value.0 != old.value.1 {
                            // The scraped value is kept aside to be re-added as exported_*.
                            self.scratch.push((old, 0));
                        }
                    }
                    self.set(name.as_bytes(), value.as_bytes());
                }
                self.resolve_conflicts(target);
            }
        }
        self.sort();
    }

    fn position(&self, name: &[u8]) -> Option<usize> {
        self.spans
            .iter()
            .position(|s| &self.bytes[r(s.name)] == name)
    }

    /// Prometheus' `resolveConflictingExposedLabels`: shortest names first, each gets
    /// `exported_` prefixes until the name is used neither by the scraped labels, nor by the
    /// target, nor by an earlier renamed label.
    fn resolve_conflicts(&mut self, target: &[(String, String)]) {
        // Stable sort of the conflicts by name length (insertion sort, no allocation).
        for i in 1..self.scratch.len() {
            let mut j = i;
            let len = |s: &(Span, usize)| s.0.name.1 - s.0.name.0;
            while j > 0 && len(&self.scratch[j - 1]) > len(&self.scratch[j]) {
                self.scratch.swap(j - 1, j);
                j -= 1;
            }
        }
        const PREFIX: &[u8] = b"exported_";
        for i in 0..self.scratch.len() {
            let (old, _) = self.scratch[i];
            let mut prefixes = 0;
            loop {
                prefixes += 1;
                if !self.exported_name_taken(old.name, prefixes, i, target) {
                    break;
                }
            }
            // Write "exported_" × prefixes + name into the arena.
            let start = self.bytes.len();
            for _ in 0..prefixes {
                self.bytes.extend_from_slice(PREFIX);
            }
            self.bytes.extend_from_within(r(old.name));
            let name = (
                u32::try_from(start).unwrap_or(u32::MAX),
                u32::try_from(self.bytes.len()).unwrap_or(u32::MAX),
            );
            self.scratch[i] = (
                Span {
                    name,
                    value: old.value,
                },
                prefixes,
            );
        }
        for i in 0..self.scratch.len() {
            let (span, _) = self.scratch[i];
            self.remove_all(span.name);
            self.spans.push(span);
        }
    }

    /// Prometheus' `labels.Builder.Set`: every label of that name goes (duplicates too), then
    /// the new one is added.
    fn set(&mut self, name: &[u8], value: &[u8]) {
        let name = self.append(name);
        let value = self.append(value);
        self.remove_all(name);
        self.spans.push(Span { name, value });
    }

    /// Removes every label whose name equals the arena bytes at `name`.
    fn remove_all(&mut self, name: (u32, u32)) {
        let bytes = &self.bytes;
        let wanted = &bytes[r(name)];
        self.spans.retain(|s| &bytes[r(s.name)] != wanted);
    }

    /// Is `exported_`×`prefixes` + the name at `name` already used?
    fn exported_name_taken(
        &self,
        name: (u32, u32),
        prefixes: usize,
        before: usize,
        target: &[(String, String)],
    ) -> bool {
        let base = &self.bytes[r(name)];
        let matches = |candidate: &[u8]| -> bool {
            let p = b"exported_".len() * prefixes;
            candidate.len() == p + base.len()
                && candidate[..p].chunks(9).all(|c| c == b"exported_")
                && &candidate[p..] == base
        };
        // The scraped labels as exposed: conflicts kept their scraped values in the scratch,
        // and every name in the set existed before or is a target label (checked next).
        self.spans.iter().any(|s| matches(&self.bytes[r(s.name)]))
            || target.iter().any(|(n, _)| matches(n.as_bytes()))
            || self.scratch[..before]
                .iter()
                .any(|(s, _)| matches(&self.bytes[r(s.name)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        let mut s = LabelSet::new();
        for (k, v) in pairs {
            s.push(k.as_bytes(), v.as_bytes());
        }
        s.sort();
        s
    }

    fn pairs(s: &LabelSet) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    fn owned(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sorts_by_name_and_finds_duplicates() {
        let s = set(&[("b", "2"), ("__name__", "m"), ("a", "1"), ("a", "3")]);
        assert_eq!(
            pairs(&s),
            owned(&[("__name__", "m"), ("a", "1"), ("a", "3"), ("b", "2")])
        );
        assert_eq!(s.duplicate_name(), Some(&b"a"[..]));
        assert_eq!(set(&[("a", "1")]).duplicate_name(), None);
    }

    #[test]
    fn the_hash_is_pinned() {
        // These values must never change: they key persisted state.
        assert_eq!(set(&[]).hash(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(
            set(&[("__name__", "up")]).hash(),
            set(&[("__name__", "up")]).hash()
        );
        let a = set(&[("__name__", "up"), ("job", "node")]).hash();
        // Cross-checked with an independent FNV-1a computation (Python, same byte sequence).
        assert_eq!(a, 0x7bfe_d626_35f6_4858, "{a:#x}");
        // The separator keeps `a=bc` and `ab=c` apart.
        assert_ne!(set(&[("a", "bc")]).hash(), set(&[("ab", "c")]).hash());
    }

    #[test]
    fn honor_labels_false_moves_scraped_values_to_exported() {
        let target = owned(&[("instance", "10.0.0.1:9100"), ("job", "node")]);
        let mut s = set(&[
            ("__name__", "m"),
            ("job", "app"),
            ("instance", "x"),
            ("exported_job", "taken"),
        ]);
        s.merge_target(&target, HonorLabels::No);
        assert_eq!(
            pairs(&s),
            owned(&[
                ("__name__", "m"),
                ("exported_exported_job", "app"),
                ("exported_instance", "x"),
                ("exported_job", "taken"),
                ("instance", "10.0.0.1:9100"),
                ("job", "node"),
            ])
        );
    }

    #[test]
    fn honor_labels_true_keeps_scraped_values() {
        let target = owned(&[("instance", "10.0.0.1:9100"), ("job", "node")]);
        let mut s = set(&[("__name__", "m"), ("job", "app")]);
        s.merge_target(&target, HonorLabels::Yes);
        assert_eq!(
            pairs(&s),
            owned(&[
                ("__name__", "m"),
                ("instance", "10.0.0.1:9100"),
                ("job", "app")
            ])
        );
    }

    #[test]
    fn setting_a_target_label_removes_every_duplicate() {
        let target = owned(&[("job", "node")]);
        let mut s = set(&[("__name__", "m"), ("job", "a"), ("job", "b")]);
        s.merge_target(&target, HonorLabels::No);
        assert_eq!(
            pairs(&s),
            owned(&[("__name__", "m"), ("exported_job", "a"), ("job", "node")])
        );
        assert_eq!(s.duplicate_name(), None);
        let mut s = set(&[("__name__", "m"), ("job", "a"), ("job", "b")]);
        s.merge_target(&target, HonorLabels::Yes);
        assert_eq!(s.duplicate_name(), Some(&b"job"[..]));
    }

    #[test]
    fn an_empty_value_removes_every_label_of_its_name() {
        let mut s = set(&[("__name__", "m"), ("x", ""), ("x", "1"), ("y", "2")]);
        s.remove_empty();
        assert_eq!(pairs(&s), owned(&[("__name__", "m"), ("y", "2")]));
    }

    #[test]
    fn an_empty_scraped_value_is_no_conflict() {
        let target = owned(&[("job", "node")]);
        let mut s = set(&[("__name__", "m"), ("job", "")]);
        s.merge_target(&target, HonorLabels::No);
        assert_eq!(pairs(&s), owned(&[("__name__", "m"), ("job", "node")]));
        // With honor_labels the empty scraped label stays and hides the target's (then it is
        // dropped as empty): what Prometheus does.
        let mut s = set(&[("__name__", "m"), ("job", "")]);
        s.merge_target(&target, HonorLabels::Yes);
        s.remove_empty();
        assert_eq!(pairs(&s), owned(&[("__name__", "m")]));
    }
}
