//! `prometheus.WriteRequest`, encoded by hand, then snappy-compressed: the body of a
//! remote-write 1.0 request.
//!
//! # Format
//! From the remote-write 1.0 specification (field numbers of `types.proto` and
//! `remote.proto`):
//! - `WriteRequest { repeated TimeSeries timeseries = 1; repeated MetricMetadata metadata = 3 }`
//! - `TimeSeries { repeated Label labels = 1; repeated Sample samples = 2 }`
//! - `Label { string name = 1; string value = 2 }`
//! - `Sample { double value = 1; int64 timestamp = 2 }` (milliseconds)
//! - `MetricMetadata { MetricType type = 1; string metric_family_name = 2; string help = 4;
//!   string unit = 5 }` (`MetricType`: UNKNOWN 0, COUNTER 1, GAUGE 2, HISTOGRAM 3,
//!   GAUGEHISTOGRAM 4, SUMMARY 5, INFO 6, STATESET 7)
//!
//! Labels go out sorted by name, with no repeated name and no empty value, as the spec
//! requires. [`WriteRequest::push`] merges the `external_labels` into each series' own
//! (sorted) labels; a label already on the series wins, as in Prometheus. Every length is
//! computed before it is written, so a request is built in one reused buffer: once warm,
//! encoding allocates nothing.

use crate::wal::record::put_varint;

/// The headers every remote-write 1.0 request carries, besides `User-Agent`.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

/// Wire type of a varint field.
const VARINT: u64 = 0;
/// Wire type of a 64-bit field.
const FIXED64: u64 = 1;
/// Wire type of a length-delimited field.
const BYTES: u64 = 2;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, field << 3 | wire);
}

/// Bytes of a length-delimited field (key of one byte: fields below 16) holding `n` bytes.
fn delimited_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn put_delimited(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, BYTES);
    put_varint(out, bytes.len() as u64);
    put_short(out, bytes);
}

/// `out.extend_from_slice(b)`, with label-sized slices copied in whole words: a call into
/// libc's memcpy per label name and value was the sender's largest cost (musl's x86_64 memcpy
/// starts a `rep movsq` for any copy of 8 bytes or more).
fn put_short(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() > 64 {
        out.extend_from_slice(b);
        return;
    }
    let end = out.len() + b.len();
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        out.extend_from_slice(&word);
    }
    let rest = words.remainder();
    let mut word = [0u8; 8];
    for (to, from) in word.iter_mut().zip(rest) {
        *to = *from;
    }
    out.extend_from_slice(&word);
    out.truncate(end);
}

/// A series' labels merged with the external labels, both sorted by name: the series' own
/// label wins a name both have.
fn merged<'a>(
    own: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    external: &'a [(Vec<u8>, Vec<u8>)],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let mut own = own.peekable();
    let mut ext = external
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .peekable();
    std::iter::from_fn(move || match (own.peek(), ext.peek()) {
        (Some(o), Some(e)) if e.0 < o.0 => ext.next(),
        (Some(o), Some(e)) if e.0 == o.0 => {
            ext.next();
            own.next()
        }
        (Some(_), _) => own.next(),
        (None, _) => ext.next(),
    })
    .filter(|(_, v)| !v.is_empty())
}

/// One `WriteRequest` being built, and its compressed form.
#[derive(Debug)]
pub struct WriteRequest {
    raw: Vec<u8>,
    packed: Vec<u8>,
    /// Kept: a new snappy encoder allocates its hash table for large inputs.
    snappy: snap::raw::Encoder,
    series: usize,
    samples: usize,
    metadata: usize,
}

impl Default for WriteRequest {
    fn default() -> Self {
        WriteRequest {
            raw: Vec::new(),
            packed: Vec::new(),
            snappy: snap::raw::Encoder::new(),
            series: 0,
            samples: 0,
            metadata: 0,
        }
    }
}

impl WriteRequest {
    /// Starts a new request (buffers kept).
    pub fn clear(&mut self) {
        self.raw.clear();
        self.series = 0;
        self.samples = 0;
        self.metadata = 0;
    }

    /// Series and samples in the request.
    pub fn len(&self) -> (usize, usize) {
        (self.series, self.samples)
    }

    /// Whether it holds no series.
    pub fn is_empty(&self) -> bool {
        self.series == 0
    }

    /// Adds one series: its labels sorted by name (as the ring keeps them), merged with
    /// `external` (sorted by name), and its samples as (timestamp ms, value), oldest first.
    pub fn push<'a, L>(
        &mut self,
        labels: L,
        external: &'a [(Vec<u8>, Vec<u8>)],
        samples: &[(i64, f64)],
    ) where
        L: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    {
        let label_len = |(n, v): (&[u8], &[u8])| delimited_len(n.len()) + delimited_len(v.len());
        let labels_len: usize = merged(labels.clone(), external)
            .map(|l| delimited_len(label_len(l)))
            .sum();
        let sample_len = |&(ts, _): &(i64, f64)| {
            let ts = u64::from_le_bytes(ts.to_le_bytes());
            1 + 8 + if ts == 0 { 0 } else { 1 + varint_len(ts) }
        };
        let samples_len: usize = samples.iter().map(|s| delimited_len(sample_len(s))).sum();
        let out = &mut self.raw;
        put_key(out, 1, BYTES);
        put_varint(out, (labels_len + samples_len) as u64);
        for l in merged(labels, external) {
            put_key(out, 1, BYTES);
            put_varint(out, label_len(l) as u64);
            put_delimited(out, 1, l.0);
            put_delimited(out, 2, l.1);
        }
        for s in samples {
            put_key(out, 2, BYTES);
            put_varint(out, sample_len(s) as u64);
            put_key(out, 1, FIXED64);
            out.extend_from_slice(&s.1.to_le_bytes());
            let ts = u64::from_le_bytes(s.0.to_le_bytes());
            // proto3 leaves a zero out.
            if ts != 0 {
                put_key(out, 2, VARINT);
                put_varint(out, ts);
            }
        }
        self.series += 1;
        self.samples += samples.len();
    }

    /// Adds one `MetricMetadata` (proto3: a zero type and empty strings are left out).
    pub fn push_metadata(&mut self, kind: u8, name: &[u8], help: &[u8], unit: &[u8]) {
        let field = |n: usize| if n == 0 { 0 } else { delimited_len(n) };
        let len = if kind == 0 { 0 } else { 2 }
            + field(name.len())
            + field(help.len())
            + field(unit.len());
        let out = &mut self.raw;
        put_key(out, 3, BYTES);
        put_varint(out, len as u64);
        if kind != 0 {
            put_key(out, 1, VARINT);
            put_varint(out, u64::from(kind));
        }
        for (f, b) in [(2, name), (4, help), (5, unit)] {
            if !b.is_empty() {
                put_delimited(out, f, b);
            }
        }
        self.metadata += 1;
    }

    /// Metadata entries in the request.
    pub fn metadata_len(&self) -> usize {
        self.metadata
    }

    /// The encoded `WriteRequest`, uncompressed.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The request body: the `WriteRequest` as one snappy block (raw format, as the spec
    /// requires, not the framed stream format).
    pub fn body(&mut self) -> &[u8] {
        self.packed
            .resize(snap::raw::max_compress_len(self.raw.len()), 0);
        let n = self
            .snappy
            .compress(&self.raw, &mut self.packed)
            .unwrap_or(0);
        &self.packed[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(l: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
        l.iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn metadata_encodes_to_the_bytes_the_spec_gives() {
        let mut w = WriteRequest::default();
        w.push_metadata(1, b"up", b"hi", b"");
        w.push_metadata(0, b"x", b"", b"s");
        // metadata(3) { type(1) 1, metric_family_name(2) "up", help(4) "hi" },
        // metadata(3) { metric_family_name(2) "x", unit(5) "s" }: worked out by hand.
        assert_eq!(
            w.raw(),
            [
                0x1a, 10, 0x08, 1, 0x12, 2, b'u', b'p', 0x22, 2, b'h', b'i', //
                0x1a, 6, 0x12, 1, b'x', 0x2a, 1, b's',
            ]
        );
        assert_eq!(w.metadata_len(), 2);
        assert!(w.is_empty(), "no series");
    }

    #[test]
    fn one_series_encodes_to_the_bytes_the_spec_gives() {
        let mut w = WriteRequest::default();
        let own = pairs(&[("__name__", "up"), ("job", "n")]);
        w.push(own.iter().copied(), &[], &[(1000, 1.0)]);
        // Worked out by hand from the field numbers: timeseries(1) { labels(1) { name(1),
        // value(2) } × 2, samples(2) { value(1) fixed64, timestamp(2) varint } }.
        let mut want = vec![0x0a, 40];
        want.extend_from_slice(&[0x0a, 14, 0x0a, 8]);
        want.extend_from_slice(b"__name__");
        want.extend_from_slice(&[0x12, 2]);
        want.extend_from_slice(b"up");
        want.extend_from_slice(&[0x0a, 8, 0x0a, 3]);
        want.extend_from_slice(b"job");
        want.extend_from_slice(&[0x12, 1]);
        want.extend_from_slice(b"n");
        want.extend_from_slice(&[0x12, 12, 0x09]);
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0xe8, 0x07]);
        assert_eq!(w.raw(), &want[..]);
        assert_eq!(w.len(), (1, 1));
        let body = w.body().to_vec();
        assert_eq!(
            snap::raw::Decoder::new()
                .decompress_vec(&body)
                .expect("snappy"),
            want
        );
    }

    #[test]
    fn external_labels_merge_sorted_and_the_series_own_label_wins() {
        let ext: Vec<(Vec<u8>, Vec<u8>)> = [("a", "x"), ("cluster", "edge-1"), ("zone", "z")]
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let own = pairs(&[("__name__", "m"), ("cluster", "mine"), ("job", "j")]);
        let got: Vec<(&[u8], &[u8])> = merged(own.iter().copied(), &ext).collect();
        assert_eq!(
            got,
            pairs(&[
                ("__name__", "m"),
                ("a", "x"),
                ("cluster", "mine"),
                ("job", "j"),
                ("zone", "z")
            ])
        );
        // An empty value is no label at all.
        let own = pairs(&[("__name__", "m"), ("b", "")]);
        let got: Vec<(&[u8], &[u8])> = merged(own.iter().copied(), &[]).collect();
        assert_eq!(got, pairs(&[("__name__", "m")]));
    }

    #[test]
    fn varint_lengths_match_the_encoder() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
        // Negative timestamps are ten-byte varints (int64 two's complement).
        let mut w = WriteRequest::default();
        w.push(
            pairs(&[("a", "b")]).into_iter(),
            &[],
            &[(-1, 0.5), (0, 2.0)],
        );
        assert_eq!(w.len(), (1, 2));
    }
}
