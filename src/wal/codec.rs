//! Value compression for samples records: each series' value coded against its previous
//! scrape, with state carried from record to record ([`SeriesState`]).
//!
//! A value that is an exact integer multiple of a decimal scale (1, 0.1, …, 1e-9) — counters,
//! byte gauges, the decimals exporters print — is coded by the change of its step (delta of
//! delta, as Prometheus codes timestamps): a steady counter costs one bit. Anything else is
//! XOR-ed with the previous value's bits in Gorilla's layout (as Prometheus' chunks code
//! values). NaN payloads, StaleNaN and `-0` survive bit for bit. A key frame restarts the
//! states; a reader decodes a target's records in order from one. Encoding and decoding reuse
//! their buffers: nothing is allocated once they have grown.

/// Bits appended to a reused byte buffer, most significant first.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = it is full, or there is none).
    used: u32,
}

impl BitWriter {
    /// Empties the buffer, keeping its memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.used = 0;
    }

    /// Appends the low `n` bits of `value` (n ≤ 64).
    pub fn write(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let room = 8 - self.used;
            let take = room.min(left);
            let shift = left - take;
            let mask = if take == 64 {
                u64::MAX
            } else {
                (1u64 << take) - 1
            };
            let chunk = (value >> shift) & mask;
            if let Some(last) = self.bytes.last_mut() {
                *last |= u8::try_from(chunk << (room - take)).unwrap_or(0);
            }
            self.used = (self.used + take) % 8;
            left -= take;
        }
    }

    /// The bytes written (the last one padded with zero bits).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads what a [`BitWriter`] wrote.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl<'a> BitReader<'a> {
    /// A reader from the first bit of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, bit: 0 }
    }

    /// The next `n` bits (n ≤ 64), or `None` past the end.
    pub fn read(&mut self, n: u32) -> Option<u64> {
        let mut out = 0u64;
        for _ in 0..n {
            let byte = *self.bytes.get(self.bit / 8)?;
            let b = (byte >> (7 - self.bit % 8)) & 1;
            out = (out << 1) | u64::from(b);
            self.bit += 1;
        }
        Some(out)
    }
}

/// Gorilla's XOR layout for a non-zero XOR, after a leading `1` the caller writes: `0` + the
/// meaningful bits (fits the window of the last new window in this record) or `1` + 5 bits of
/// leading zeros + 6 bits of length − 1 + the meaningful bits.
#[derive(Debug, Default)]
struct Xor {
    window: Option<(u32, u32)>,
}

impl Xor {
    fn write(&mut self, x: u64, out: &mut BitWriter) {
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match self.window {
            Some((wl, wlen)) if lead >= wl && trail >= 64 - wl - wlen => {
                out.write(0, 1);
                out.write(x >> (64 - wl - wlen), wlen);
            }
            _ => {
                let len = 64 - lead - trail;
                out.write(1, 1);
                out.write(u64::from(lead), 5);
                out.write(u64::from(len - 1), 6);
                out.write(x >> trail, len);
                self.window = Some((lead, len));
            }
        }
    }

    fn read(&mut self, bits: &mut BitReader<'_>) -> Option<u64> {
        if bits.read(1)? == 0 {
            let (wl, wlen) = self.window?;
            return Some(bits.read(wlen)? << (64 - wl - wlen));
        }
        let lead = u32::try_from(bits.read(5)?).ok()?;
        let len = u32::try_from(bits.read(6)?).ok()? + 1;
        if lead + len > 64 {
            return None;
        }
        self.window = Some((lead, len));
        Some(bits.read(len)? << (64 - lead - len))
    }
}

/// Decimal scales a value may be an exact integer multiple of (1, 0.1, …, 1e-9).
const SCALES: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// `v` as an integer `n` with `n / SCALES[scale] == v` bit for bit, if it is one (|n| < 2^53,
/// so `n` is exact as a float; -0, NaN and infinities never are).
fn as_int(v: f64, scale: usize) -> Option<i64> {
    let s = *SCALES.get(scale)?;
    let scaled = (v * s).round();
    if !scaled.is_finite() || scaled.abs() >= 9_007_199_254_740_992.0 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    let n = scaled as i64;
    #[allow(clippy::cast_precision_loss)]
    let back = n as f64 / s;
    (back.to_bits() == v.to_bits()).then_some(n)
}

/// What the coding of one series carries from one scrape to the next, in 16 bytes (the loop
/// and every reader keep one per series): the last value's bits, and in one word the last
/// integer step (above the low byte) and the scale the last value is an integer at (the low
/// byte, [`NO_SCALE`] if none). The integer itself is recomputed from the bits: it is
/// `as_int(last, scale)` by construction, and a step fits 56 bits since integers are below
/// 2^53 in magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesState {
    /// The last value's bits.
    prev: u64,
    /// `step << 8 | scale`.
    step_scale: i64,
}

/// The scale byte of a value that is an integer at no scale.
const NO_SCALE: u8 = 0xff;

impl Default for SeriesState {
    fn default() -> Self {
        SeriesState {
            prev: 0,
            step_scale: i64::from(NO_SCALE),
        }
    }
}

impl SeriesState {
    /// The state after `v`: with `step` if `v` continues the integer domain at `scale`, else
    /// restarting it at the finest scale that represents `v` (if any) with no step.
    fn after(v: f64, continued: Option<u8>, step: i64) -> SeriesState {
        let (scale, step) = match continued {
            Some(s) => (s, step),
            None => (
                (0..SCALES.len())
                    .find(|&s| as_int(v, s).is_some())
                    .and_then(|s| u8::try_from(s).ok())
                    .unwrap_or(NO_SCALE),
                0,
            ),
        };
        SeriesState {
            prev: v.to_bits(),
            step_scale: step.wrapping_shl(8) | i64::from(scale),
        }
    }

    /// The last value as an integer at the scale, when it is one.
    fn int(&self) -> Option<(i64, u8)> {
        let scale = u8::try_from(self.step_scale & 0xff).unwrap_or(NO_SCALE);
        if scale == NO_SCALE {
            return None;
        }
        as_int(f64::from_bits(self.prev), usize::from(scale)).map(|n| (n, scale))
    }

    /// The last integer step (0 after a key frame or a value outside the integer domain).
    fn step(&self) -> i64 {
        self.step_scale >> 8
    }
}

fn zigzag(v: i64) -> u64 {
    u64::from_le_bytes(((v << 1) ^ (v >> 63)).to_le_bytes())
}

fn unzigzag(v: u64) -> i64 {
    i64::from_le_bytes((v >> 1).to_le_bytes()) ^ -i64::from_le_bytes((v & 1).to_le_bytes())
}

/// Delta-of-delta buckets after `10`: a 2-bit selector, then the zigzagged value in 7, 12, 20
/// or 64 bits.
const BUCKETS: [u32; 4] = [7, 12, 20, 64];

/// `v` zigzagged in the smallest bucket that holds it, after its 2-bit selector.
fn write_bucketed(v: i64, out: &mut BitWriter) {
    let z = zigzag(v);
    let sel = BUCKETS
        .iter()
        .position(|&b| b == 64 || z < (1 << b))
        .unwrap_or(3);
    out.write(u64::try_from(sel).unwrap_or(3), 2);
    out.write(z, BUCKETS[sel]);
}

/// What [`write_bucketed`] wrote.
fn read_bucketed(bits: &mut BitReader<'_>) -> Option<i64> {
    let sel = usize::try_from(bits.read(2)?).ok()?;
    Some(unzigzag(bits.read(BUCKETS[sel])?))
}

/// Resizes `states` to `n`, growing its memory to exactly `n` (16 bytes a series, kept for
/// as long as the target lives: doubling would keep up to twice that).
fn fit(states: &mut Vec<SeriesState>, n: usize) {
    if n > states.capacity() {
        states.reserve_exact(n - states.len());
    }
    states.resize(n, SeriesState::default());
}

/// Writes `values` of one scrape against `states` (one per series; empty or shorter: a key
/// frame for the rest) and updates them. Per value:
/// - `0`: an integer at the series' scale whose step equals the last step (counters with a
///   steady rate, unchanged integers);
/// - `10` + bucket: an integer at the series' scale, with its step's change (delta of delta);
/// - `110`: the same bits as the last value;
/// - `111` + the XOR layout against the last value's bits: anything else (the series then
///   restarts its integer domain at the finest scale that represents this value).
pub fn encode_series(states: &mut Vec<SeriesState>, values: &[f64], out: &mut BitWriter) {
    fit(states, values.len());
    let mut xor = Xor::default();
    for (state, &v) in states.iter_mut().zip(values) {
        let int = state
            .int()
            .and_then(|(n0, s)| as_int(v, usize::from(s)).map(|n| (n0, n, s)));
        match int {
            Some((n0, n, s)) => {
                let delta = n.wrapping_sub(n0);
                let dod = delta.wrapping_sub(state.step());
                if dod == 0 {
                    out.write(0, 1);
                } else {
                    out.write(0b10, 2);
                    write_bucketed(dod, out);
                }
                *state = SeriesState::after(v, Some(s), delta);
            }
            None => {
                let x = v.to_bits() ^ state.prev;
                if x == 0 {
                    out.write(0b110, 3);
                } else {
                    out.write(0b111, 3);
                    xor.write(x, out);
                }
                *state = SeriesState::after(v, None, 0);
            }
        }
    }
}

/// Reads `n` values written by [`encode_series`] against the same `states` (updated as the
/// encoder updated them), into `out` (cleared). `None` if the bits end early or contradict
/// the states.
pub fn decode_series(
    states: &mut Vec<SeriesState>,
    n: usize,
    bits: &mut BitReader<'_>,
    out: &mut Vec<f64>,
) -> Option<()> {
    out.clear();
    fit(states, n);
    let mut xor = Xor::default();
    for state in states.iter_mut() {
        // `0`: integer, same step; `10`: integer, changed step; `11…`: bits.
        let integer = if bits.read(1)? == 0 {
            Some(false)
        } else if bits.read(1)? == 0 {
            Some(true)
        } else {
            None
        };
        let v = if let Some(changed_step) = integer {
            let (n0, s) = state.int()?;
            let dod = if changed_step {
                read_bucketed(bits)?
            } else {
                0
            };
            let delta = state.step().wrapping_add(dod);
            let n = n0.wrapping_add(delta);
            #[allow(clippy::cast_precision_loss)]
            let v = n as f64 / SCALES[usize::from(s)];
            *state = SeriesState::after(v, Some(s), delta);
            v
        } else {
            let x = if bits.read(1)? == 0 {
                0
            } else {
                xor.read(bits)?
            };
            let v = f64::from_bits(state.prev ^ x);
            *state = SeriesState::after(v, None, 0);
            v
        };
        out.push(v);
    }
    Some(())
}

/// A timestamp column entry: this series has no sample in the record (an out-of-order
/// explicit timestamp, or a series that gets no stale marker); the reader skips it.
pub const ABSENT: i64 = i64::MIN;

/// Writes a samples record's timestamp column (explicit timestamps, `honor_timestamps`)
/// after its values: per series, against the previous series' timestamp (the record's own
/// timestamp before the first):
/// - `0`: the same timestamp as the series before (an exporter stamps a group alike);
/// - `10`: the record's timestamp (no explicit one);
/// - `110`: [`ABSENT`];
/// - `111` + bucket: the zigzagged difference from the series before, as in the values.
pub fn encode_timestamps(record_ts: i64, timestamps: &[i64], out: &mut BitWriter) {
    let mut prev = record_ts;
    for &t in timestamps {
        if t == ABSENT {
            out.write(0b110, 3);
        } else if t == prev {
            out.write(0, 1);
        } else if t == record_ts {
            out.write(0b10, 2);
            prev = t;
        } else {
            out.write(0b111, 3);
            write_bucketed(t.wrapping_sub(prev), out);
            prev = t;
        }
    }
}

/// Reads `n` timestamps written by [`encode_timestamps`] into `out` (cleared); `None` if the
/// bits end early.
pub fn decode_timestamps(
    record_ts: i64,
    n: usize,
    bits: &mut BitReader<'_>,
    out: &mut Vec<i64>,
) -> Option<()> {
    out.clear();
    let mut prev = record_ts;
    for _ in 0..n {
        let t = if bits.read(1)? == 0 {
            prev
        } else if bits.read(1)? == 0 {
            prev = record_ts;
            record_ts
        } else if bits.read(1)? == 0 {
            ABSENT
        } else {
            prev = prev.wrapping_add(read_bucketed(bits)?);
            prev
        };
        out.push(t);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::float::STALE_NAN_BITS;
    use crate::parse::testkit::Rng;

    /// Codes `values` after `previous` (a key frame first); returns the bytes of `values`.
    fn round_trip(previous: &[f64], values: &[f64]) -> usize {
        series_round_trip(&[previous.to_vec(), values.to_vec()])[1]
    }

    #[test]
    fn a_series_state_takes_16_bytes() {
        // The loop and every reader keep one per series.
        assert_eq!(std::mem::size_of::<SeriesState>(), 16);
    }

    #[test]
    fn timestamp_columns_round_trip() {
        let ts = 1_700_000_000_000i64;
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![ts, ts, ts],
            vec![
                ts - 12_345,
                ts - 12_345,
                ts - 12_345,
                ABSENT,
                ts,
                ts - 9_000,
                i64::MAX,
                0,
            ],
            vec![ABSENT, ABSENT, ts + 1, i64::MAX - 1, ts],
        ];
        for c in cases {
            let mut w = BitWriter::default();
            encode_timestamps(ts, &c, &mut w);
            // A trailing marker proves the reader stops where the writer did.
            w.write(0b1011, 4);
            let mut r = BitReader::new(w.bytes());
            let mut out = vec![7];
            decode_timestamps(ts, c.len(), &mut r, &mut out).expect("decodes");
            assert_eq!(out, c);
            assert_eq!(r.read(4), Some(0b1011));
        }
        // A run an exporter stamped alike costs a bit a series.
        let run = vec![ts - 15_000; 800];
        let mut w = BitWriter::default();
        encode_timestamps(ts, &run, &mut w);
        assert!(w.bytes().len() <= 110, "{} bytes", w.bytes().len());
        // Cut short: refused, not invented.
        let mut r = BitReader::new(&w.bytes()[..10]);
        assert!(decode_timestamps(ts, run.len(), &mut r, &mut Vec::new()).is_none());
    }

    #[test]
    fn bits_round_trip() {
        let mut w = BitWriter::default();
        let items: &[(u64, u32)] = &[
            (1, 1),
            (0, 1),
            (0b101, 3),
            (u64::MAX, 64),
            (0x1234, 13),
            (7, 64),
        ];
        for &(v, n) in items {
            w.write(v, n);
        }
        let mut r = BitReader::new(w.bytes());
        for &(v, n) in items {
            let mask = if n == 64 { u64::MAX } else { (1 << n) - 1 };
            assert_eq!(r.read(n), Some(v & mask));
        }
        assert_eq!(
            w.bytes().len(),
            (1 + 1 + 3 + 64 + 13 + 64_usize).div_ceil(8)
        );
    }

    /// Values whose bits are easy to lose.
    const SPECIAL: [f64; 12] = [
        0.0,
        -0.0,
        f64::NAN,
        f64::from_bits(STALE_NAN_BITS),
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        5e-324,
        f64::MAX,
        1.0,
        103_527.4,
        1e300,
    ];

    #[test]
    fn values_round_trip_bit_for_bit() {
        let special = SPECIAL;
        round_trip(&[], &special);
        round_trip(&special, &special);
        let mut rng = Rng(99);
        for _ in 0..500 {
            let n = rng.below(40);
            let prev: Vec<f64> = (0..n).map(|_| f64::from_bits(rng.next())).collect();
            let cur: Vec<f64> = prev
                .iter()
                .map(|&p| match rng.below(4) {
                    0 => p,
                    1 => p + 1.0,
                    2 => f64::from_bits(p.to_bits() ^ (rng.next() >> rng.below(64))),
                    _ => special[rng.below(special.len())],
                })
                .collect();
            round_trip(&prev, &cur);
            round_trip(&prev[..n / 2], &cur);
        }
    }

    /// Runs scrapes through both sides of the series coding, states carried; returns bytes
    /// per scrape after the first.
    fn series_round_trip(scrapes: &[Vec<f64>]) -> Vec<usize> {
        let (mut enc, mut dec) = (Vec::new(), Vec::new());
        let mut w = BitWriter::default();
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        for values in scrapes {
            w.clear();
            encode_series(&mut enc, values, &mut w);
            decode_series(
                &mut dec,
                values.len(),
                &mut BitReader::new(w.bytes()),
                &mut out,
            )
            .expect("decodes");
            let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
            let got: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want);
            assert_eq!(enc, dec, "both sides carry the same state");
            sizes.push(w.bytes().len());
        }
        sizes
    }

    #[test]
    fn series_coding_round_trips_bit_for_bit() {
        let mut rng = Rng(17);
        let special = SPECIAL;
        for _ in 0..200 {
            let n = rng.below(30) + 1;
            let mut values: Vec<f64> = (0..n)
                .map(|i| f64::from(u32::try_from(i).unwrap_or(0)))
                .collect();
            let steps: Vec<f64> = (0..n)
                .map(|_| [1.0, 0.25, 0.001, 7.0][rng.below(4)])
                .collect();
            let mut scrapes = Vec::new();
            for _ in 0..10 {
                for (v, step) in values.iter_mut().zip(&steps) {
                    *v = match rng.below(10) {
                        0 => special[rng.below(special.len())],
                        1 => f64::from_bits(rng.next()),
                        2 => (*v * 1000.0 + 1.0).round() / 1000.0,
                        _ if v.is_finite() => *v + step,
                        _ => 1.0,
                    };
                }
                scrapes.push(values.clone());
            }
            // Now and then the series list shrinks or grows between scrapes.
            if rng.below(3) == 0 {
                scrapes[5].truncate(n / 2);
            }
            series_round_trip(&scrapes);
        }
    }

    #[test]
    fn steady_counters_and_gauges_cost_a_bit_each() {
        // The bench exporter's shapes: integer and micro-decimal counters with steady steps,
        // and gauges that step until they wrap.
        let scrapes: Vec<Vec<f64>> = (0..20)
            .map(|g: i64| {
                (0..1000i64)
                    .map(|i| {
                        let x = match i % 4 {
                            0 => 1000 + i * 3 + 17 * g,
                            1 => return ((5_000_000 + 1234 * g) as f64) / 1e6,
                            2 => 50 + (7 * g) % 997,
                            _ => 9 + (13 * g + i) % 9973,
                        };
                        x as f64
                    })
                    .collect()
            })
            .collect();
        let sizes = series_round_trip(&scrapes);
        // From the third scrape on, steps are known: about a bit a value (gauges that wrap
        // cost more, once).
        let steady: usize = sizes[2..].iter().sum();
        let per_value = steady as f64 / (18.0 * 1000.0);
        assert!(per_value < 0.3, "{per_value} bytes a value");
    }

    #[test]
    fn garbage_series_bits_never_panic() {
        let mut rng = Rng(23);
        let mut out = Vec::new();
        for _ in 0..2000 {
            let mut states = Vec::new();
            let seed: Vec<f64> = (0..5).map(f64::from).collect();
            let mut w = BitWriter::default();
            encode_series(&mut states, &seed, &mut w);
            let bytes: Vec<u8> = (0..rng.below(16))
                .map(|_| rng.next().to_le_bytes()[0])
                .collect();
            let n = rng.below(30);
            // Garbage reads as some values or as none, never as a wrong count of them.
            if decode_series(&mut states, n, &mut BitReader::new(&bytes), &mut out).is_some() {
                assert_eq!(out.len(), n);
                assert_eq!(states.len(), n);
            }
        }
    }

    /// Unchanged values cost one bit.
    #[test]
    fn unchanged_values_cost_one_bit() {
        let prev: Vec<f64> = (0..10_000).map(|i| f64::from(i) * 1.5).collect();
        assert_eq!(round_trip(&prev, &prev), 10_000 / 8);
    }

    #[test]
    fn encoded_bits_stay_those_of_the_released_format() {
        // Rings written by earlier builds must decode the same: the coding of a fixed mix of
        // counters, decimals, large integers near 2^53, specials and random bits, hashed
        // (FNV-1a) against the bits the format's first release wrote.
        let mut rng = Rng(99);
        let mut values: Vec<f64> = (0..64).map(|i| f64::from(i) * 3.0).collect();
        let mut states = Vec::new();
        let mut w = BitWriter::default();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for k in 0..40 {
            for (i, v) in values.iter_mut().enumerate() {
                *v = match (i % 8, rng.below(12)) {
                    (_, 0) => SPECIAL[rng.below(SPECIAL.len())],
                    (_, 1) => f64::from_bits(rng.next()),
                    (0, _) => *v + 1.0,
                    (1, _) => (*v * 1e6 + 7.0).round() / 1e6,
                    (2, _) => 9_007_199_254_740_000.0 + f64::from(k * 3),
                    (3, _) => -(f64::from(k) * 0.25),
                    (4, _) => *v,
                    (5, _) => f64::from(u32::try_from(rng.below(1000)).unwrap_or(0)),
                    _ => (*v + 0.1) * 1.5,
                };
            }
            w.clear();
            encode_series(&mut states, &values, &mut w);
            for &b in w.bytes() {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(hash, 0x6769_d8de_c0d0_a78c);
    }
}
