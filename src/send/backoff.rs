//! How long a sender waits before it tries a failed request again.
//!
//! Capped exponential backoff as Prometheus 2.42's `queue_manager.go` (`sendWriteRequestWithBackoff`)
//! does it — start at `min_backoff`, double after each failure, never above `max_backoff` —
//! plus jitter, which Prometheus does not add: a fleet of edge nodes that lost the same
//! receiver at the same moment would otherwise come back in lock step. A `Retry-After` answer
//! (seconds or an HTTP-date, RFC 9110 §10.2.3) replaces the backoff for that attempt.
//!
//! No `rand` crate: the jitter comes from a xorshift64 seeded from the clock, which is all a
//! spread of retry times needs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a `Retry-After` is obeyed, unless `max_backoff` is longer: a receiver asking
/// for an hour (or a clock far off) must not park an edge node's only sender that long; a
/// minute still takes the pressure off the receiver. Prometheus 2.42 does not cap it.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// Jitter spreads each wait over `[1 - JITTER, 1 + JITTER]` of its nominal value, in
/// thousandths (±25 %).
const JITTER_PER_MILLE: u64 = 250;

/// The state of one endpoint's backoff. Allocation-free.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The nominal wait of the next failure.
    current: Duration,
    /// xorshift64 state, never zero.
    rng: u64,
}

impl Backoff {
    /// A backoff from `min` doubling up to `max` (a `max` below `min` is raised to it), with
    /// jitter seeded by `seed` (0 is replaced: xorshift must not start at zero).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
            rng: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    /// As [`Backoff::new`], seeded from the clock (nanoseconds since the epoch).
    pub fn from_clock(min: Duration, max: Duration) -> Backoff {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            d.subsec_nanos() ^ u32::try_from(d.as_secs() & 0xffff_ffff).unwrap_or(0)
        });
        Backoff::new(
            min,
            max,
            u64::from(nanos).wrapping_mul(0x2545_f491_4f6c_dd1d),
        )
    }

    /// The wait before the next attempt: the current nominal wait with jitter, at most `max`.
    /// Then the nominal wait doubles (up to `max`).
    pub fn next_wait(&mut self) -> Duration {
        let nominal = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        self.jittered(nominal).min(self.max)
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// `d` spread over ±25 %.
    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64 (Marsaglia 2003).
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let per_mille = 1000 - JITTER_PER_MILLE + x % (2 * JITTER_PER_MILLE + 1);
        let nanos = d.as_nanos() * u128::from(per_mille) / 1000;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The wait a `Retry-After` asks for, capped at [`RETRY_AFTER_CAP`] or `max`, whichever is
    /// longer; `None` if it asks for no wait at all (then the backoff applies).
    pub fn capped(&self, retry_after: Duration) -> Option<Duration> {
        (!retry_after.is_zero()).then(|| retry_after.min(RETRY_AFTER_CAP.max(self.max)))
    }
}

/// The wait a `Retry-After` header value asks for, as of `now`: `delay-seconds` (digits
/// only) or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, the one HTTP-date form a
/// sender must accept); a date in the past is no wait. `None` for anything else: a
/// garbled header falls back to the backoff rather than failing the request.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate a huge number; the caller caps it anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate: `Day, DD Mon YYYY HH:MM:SS GMT`. The obsolete RFC 850 and asctime
/// forms are not accepted (no receiver in use sends them; garbage is ignored, not guessed).
pub fn http_date(text: &str) -> Option<SystemTime> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = text.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let weekday = DAYS.iter().position(|d| d.as_bytes() == &b[..3])?;
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let sep = |i: usize, c: u8| b[i] == c;
    if !(sep(7, b' ') && sep(11, b' ') && sep(16, b' ') && sep(19, b':') && sep(22, b':')) {
        return None;
    }
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[8..11])?;
    let year = num(12..16)?;
    let (hour, minute, second) = (num(17..19)?, num(20..22)?, num(23..25)?);
    let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let last = month_days[month] + u64::from(month == 1 && leap);
    if year < 1970 || day == 0 || day > last || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_since_epoch(year, u64::try_from(month).ok()? + 1, day);
    // 1970-01-01 was a Thursday (index 3); a wrong weekday means a wrong date.
    if usize::try_from((days + 3) % 7).ok()? != weekday {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian, year ≥ 1970), after
/// Howard Hinnant's `days_from_civil`.
fn days_since_epoch(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    // 719_468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_nominal_wait_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(30 * MS, 1000 * MS, 1);
        let nominal: Vec<Duration> = (0..8)
            .map(|_| {
                let n = b.current;
                b.next_wait();
                n
            })
            .collect();
        let want: Vec<Duration> = [30, 60, 120, 240, 480, 960, 1000, 1000]
            .iter()
            .map(|&m| m * MS)
            .collect();
        assert_eq!(nominal, want);
        b.reset();
        assert_eq!(b.current, 30 * MS);
        // A max below min is raised to min.
        let b = Backoff::new(100 * MS, 10 * MS, 1);
        assert_eq!(b.max, 100 * MS);
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_never_passes_the_cap() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 1..200u64 {
            let mut b = Backoff::new(100 * MS, 400 * MS, seed);
            for nominal in [100u64, 200, 400, 400] {
                let w = b.next_wait();
                let lo = Duration::from_millis(nominal * 3 / 4);
                let hi = Duration::from_millis(nominal * 5 / 4).min(400 * MS);
                assert!(w >= lo && w <= hi, "seed {seed}: {w:?} for {nominal} ms");
                seen.insert(w);
            }
        }
        // It really spreads: many distinct waits, not one.
        assert!(seen.len() > 100, "{}", seen.len());
        // Zero seeds are replaced, not stuck at zero.
        let mut b = Backoff::new(100 * MS, 400 * MS, 0);
        assert!(b.next_wait() >= 75 * MS);
    }

    #[test]
    fn retry_after_takes_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_takes_an_http_date() {
        // RFC 9110's example: 784111777 seconds after the epoch.
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        // A leap day.
        assert_eq!(
            http_date("Thu, 29 Feb 2024 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_208_000))
        );
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        // In the past: no wait.
        let later = UNIX_EPOCH + Duration::from_secs(784_111_800);
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_retry_after_is_ignored() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        for bad in [
            "",
            "soon",
            "-1",
            "1.5",
            "+3",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Now 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 0x Nov 1994 08:49:37 GMT",
            "Thu, 01 Jan 1969 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:3é GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn a_retry_after_is_capped_and_zero_means_the_backoff() {
        let b = Backoff::new(30 * MS, Duration::from_secs(5), 1);
        assert_eq!(b.capped(Duration::ZERO), None);
        assert_eq!(
            b.capped(Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.capped(Duration::from_secs(3600)), Some(RETRY_AFTER_CAP));
        let long = Backoff::new(30 * MS, Duration::from_secs(600), 1);
        assert_eq!(
            long.capped(Duration::from_secs(3600)),
            Some(Duration::from_secs(600))
        );
    }
}
