//! Value compression for samples records: each scrape's values XOR-ed against the same series'
//! values in the previous scrape, written with Gorilla's bit layout (as Prometheus' chunks do).
//!
//! Per value, with `x = bits(value) ^ bits(previous value of that series)`:
//! - `0`: the same value (1 bit);
//! - `10` + the meaningful bits: `x` fits the window (leading/trailing zero counts) of the
//!   value written before it in this record;
//! - `11` + 5 bits of leading zeros (at most 31) + 6 bits of meaningful length − 1 + the
//!   meaningful bits: a new window.
//!
//! The window starts empty in every record, so a record decodes from the previous values alone
//! (a key frame encodes against all-zero bits). NaN payloads, StaleNaN and `-0` survive bit for
//! bit. Encoding and decoding reuse their buffers: nothing is allocated once they have grown.

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

/// Writes `values`, each against the same index of `previous` (missing or shorter: zero bits,
/// a key frame).
pub fn encode(previous: &[f64], values: &[f64], out: &mut BitWriter) {
    // The current window: (leading zeros, meaningful bits); none at the start of a record.
    let mut window: Option<(u32, u32)> = None;
    for (i, v) in values.iter().enumerate() {
        let prev = previous.get(i).map_or(0, |p| p.to_bits());
        let x = v.to_bits() ^ prev;
        if x == 0 {
            out.write(0, 1);
            continue;
        }
        let lead = x.leading_zeros().min(31);
        let trail = x.trailing_zeros();
        match window {
            Some((wl, wlen)) if lead >= wl && trail >= 64 - wl - wlen => {
                out.write(0b10, 2);
                out.write(x >> (64 - wl - wlen), wlen);
            }
            _ => {
                let len = 64 - lead - trail;
                out.write(0b11, 2);
                out.write(u64::from(lead), 5);
                out.write(u64::from(len - 1), 6);
                out.write(x >> trail, len);
                window = Some((lead, len));
            }
        }
    }
}

/// Reads `n` values written by [`encode`] against the same `previous`, into `out` (cleared).
/// `None` if the bits end early or name an impossible window.
pub fn decode(
    previous: &[f64],
    n: usize,
    bits: &mut BitReader<'_>,
    out: &mut Vec<f64>,
) -> Option<()> {
    out.clear();
    let mut window: Option<(u32, u32)> = None;
    for i in 0..n {
        let prev = previous.get(i).map_or(0, |p| p.to_bits());
        let x = if bits.read(1)? == 0 {
            0
        } else if bits.read(1)? == 0 {
            let (wl, wlen) = window?;
            bits.read(wlen)? << (64 - wl - wlen)
        } else {
            let lead = u32::try_from(bits.read(5)?).ok()?;
            let len = u32::try_from(bits.read(6)?).ok()? + 1;
            if lead + len > 64 {
                return None;
            }
            window = Some((lead, len));
            bits.read(len)? << (64 - lead - len)
        };
        out.push(f64::from_bits(prev ^ x));
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::float::STALE_NAN_BITS;
    use crate::parse::testkit::Rng;

    fn round_trip(previous: &[f64], values: &[f64]) -> usize {
        let mut w = BitWriter::default();
        encode(previous, values, &mut w);
        let mut out = Vec::new();
        decode(
            previous,
            values.len(),
            &mut BitReader::new(w.bytes()),
            &mut out,
        )
        .expect("decodes");
        let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
        let got: Vec<u64> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
        w.bytes().len()
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

    #[test]
    fn values_round_trip_bit_for_bit() {
        let special = [
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
        ];
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

    #[test]
    fn truncated_or_garbage_bits_never_panic() {
        let mut rng = Rng(5);
        let prev = [1.0, 2.0, 3.0];
        let mut out = Vec::new();
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..rng.below(12))
                .map(|_| rng.next().to_le_bytes()[0])
                .collect();
            let _ = decode(
                &prev,
                3 + rng.below(20),
                &mut BitReader::new(&bytes),
                &mut out,
            );
        }
    }

    /// Unchanged values cost one bit; counters that grow by small integers cost a few bytes.
    #[test]
    fn steady_series_cost_what_the_layout_promises() {
        let prev: Vec<f64> = (0..10_000).map(|i| f64::from(i) * 1.5).collect();
        assert_eq!(round_trip(&prev, &prev), 10_000 / 8);
        let grown: Vec<f64> = prev.iter().map(|v| v + 1.0).collect();
        let bytes = round_trip(&prev, &grown);
        assert!(bytes < 10_000 * 4, "{bytes} bytes for 10k small increments");
    }
}
